//! Where the project's repository is (`--repo`, `UPSTEP_REPO`, a profile's `repo`): a local
//! folder, or a URL that may carry a password or an access token.
//!
//! [`RepoLocation`] is the only form in which upstep holds that value. Its `Display`, `Debug`
//! and `Serialize` never show a password or a token, so whatever prints, logs, journals or
//! writes a repository location cannot leak one. The credentials themselves leave it only
//! through [`RepoLocation::credentials`], which the clone hands to git in its environment.

use std::ffi::OsString;
use std::fmt;
use std::path::Path;

use secrecy::SecretString;

use crate::redact::Uri;

/// A repository given as a local path or a URL (`https://`, `ssh://`, `file://`, `git@host:path`).
///
/// Shown as `https://****@host/x` for `https://TOKEN@host/x`, `https://user:****@host/x` for
/// `https://user:secret@host/x`, with the values of query parameters named like secrets
/// masked too. An ssh login name (`ssh://git@host`, `git@host:x`) is not a secret and is kept.
#[derive(Clone, PartialEq, Eq)]
pub struct RepoLocation {
    spec: String,
}

/// The user name and password (or token) a URL carries, percent-decoded, for git's credential
/// helper. Never printed: it has no `Debug`.
pub(crate) struct UrlCredentials {
    pub username: String,
    pub password: SecretString,
}

impl RepoLocation {
    pub fn new(spec: impl Into<String>) -> Self {
        RepoLocation { spec: spec.into() }
    }

    pub fn is_empty(&self) -> bool {
        self.spec.is_empty()
    }

    /// Whether this names a remote repository (to clone into upstep's cache) rather than a
    /// local folder.
    pub fn is_remote(&self) -> bool {
        super::clone::is_remote_spec(&self.spec)
    }

    /// The folder, when this is a local path.
    pub fn local_path(&self) -> Option<&Path> {
        (!self.is_remote()).then(|| Path::new(&self.spec))
    }

    /// The URL git is given (in its argv, and as the cached clone's `origin`): without the
    /// password or token, which git gets from [`RepoLocation::credentials`] instead. An ssh login
    /// name is kept. A local path is returned as it is.
    pub fn git_url(&self) -> String {
        match self.uri() {
            Some(uri) if uri.has_userinfo() => uri.without_credentials(),
            _ => self.spec.clone(),
        }
    }

    /// The credentials in an http(s)-style URL's user info (`https://TOKEN@host`: the token as
    /// the user name and an empty password, as git itself would send it). `None` for local
    /// paths, URLs without user info and ssh URLs (ssh authenticates with keys, not with the URL).
    pub(crate) fn credentials(&self) -> Option<UrlCredentials> {
        let uri = self.uri().filter(|uri| !uri.user_is_login())?;
        let (username, password) = uri.credentials()?;
        Some(UrlCredentials { username, password })
    }

    /// Every secret this location carries, raw and percent-decoded, to scrub from text an
    /// outside program (git) printed.
    pub(crate) fn secrets(&self) -> Vec<String> {
        self.uri().map(|uri| uri.secrets()).unwrap_or_default()
    }

    /// The URL, parsed; `None` for a local path.
    fn uri(&self) -> Option<Uri> {
        self.is_remote().then(|| Uri::new(self.spec.as_str()))
    }

    fn redacted(&self) -> String {
        self.uri()
            .map_or_else(|| self.spec.clone(), |uri| uri.redacted())
    }
}

/// Whether a `--repo` value in `args` (upstep's own argv) carries a password or token.
pub fn credentials_on_command_line(args: &[OsString]) -> bool {
    let values = args
        .windows(2)
        .filter(|pair| pair[0] == "--repo")
        .map(|pair| pair[1].to_string_lossy().into_owned());
    let inline = args.iter().filter_map(|arg| {
        arg.to_str()
            .and_then(|a| a.strip_prefix("--repo="))
            .map(str::to_string)
    });
    values
        .chain(inline)
        .any(|value| !RepoLocation::from(value).secrets().is_empty())
}

impl fmt::Display for RepoLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl fmt::Debug for RepoLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("RepoLocation")
            .field(&self.redacted())
            .finish()
    }
}

impl serde::Serialize for RepoLocation {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.redacted())
    }
}

impl From<String> for RepoLocation {
    fn from(spec: String) -> Self {
        RepoLocation::new(spec)
    }
}

impl From<&str> for RepoLocation {
    fn from(spec: &str) -> Self {
        RepoLocation::new(spec)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    const CANARY: &str = "ghp_Canary7f3a9";

    #[test]
    fn shows_no_password_or_token() {
        let table: &[(&str, &str)] = &[
            (
                "https://ghp_Canary7f3a9@github.com/novuhq/novu.git",
                "https://****@github.com/novuhq/novu.git",
            ),
            (
                "https://me:ghp_Canary7f3a9@github.com/x",
                "https://me:****@github.com/x",
            ),
            (
                "https://oauth2:ghp_Canary7f3a9@gitlab.example:8443/x",
                "https://oauth2:****@gitlab.example:8443/x",
            ),
            // Unencoded `@` and `/` in the password.
            ("https://me:ghp@Canary7f3a9@h/x", "https://me:****@h/x"),
            ("HTTP://me:ghp/Canary7f3a9@h/x", "HTTP://me:****@h/x"),
            (
                "https://h/x.git?private_token=ghp_Canary7f3a9&a=1",
                "https://h/x.git?private_token=****&a=1",
            ),
            // ssh login names are kept; an ssh password is not.
            ("ssh://git@github.com/x", "ssh://git@github.com/x"),
            ("ssh://git:ghp_Canary7f3a9@h/x", "ssh://git:****@h/x"),
            (
                "git@github.com:novuhq/novu.git",
                "git@github.com:novuhq/novu.git",
            ),
            ("me:ghp_Canary7f3a9@h:x/y", "me:****@h:x/y"),
            // Nothing to hide.
            ("https://github.com/a@b", "https://github.com/a@b"),
            ("file:///tmp/repo", "file:///tmp/repo"),
            ("/home/me/novu", "/home/me/novu"),
        ];
        for (spec, shown) in table {
            let location = RepoLocation::from(*spec);
            assert_eq!(location.to_string(), *shown, "{spec}");
            assert_eq!(format!("{location:?}"), format!("RepoLocation({shown:?})"));
            assert_eq!(
                serde_json::to_string(&location).unwrap(),
                format!("{shown:?}")
            );
        }
    }

    #[test]
    fn the_git_url_carries_no_credentials() {
        let table: &[(&str, &str)] = &[
            (
                "https://ghp_Canary7f3a9@github.com/x.git",
                "https://github.com/x.git",
            ),
            ("https://me:pw%40x@h:8080/x", "https://h:8080/x"),
            ("ssh://git:pw@h/x", "ssh://git@h/x"),
            ("ssh://git@h/x", "ssh://git@h/x"),
            ("git@github.com:x/y.git", "git@github.com:x/y.git"),
            ("https://github.com/x", "https://github.com/x"),
            ("/srv/novu", "/srv/novu"),
        ];
        for (spec, url) in table {
            assert_eq!(RepoLocation::from(*spec).git_url(), *url, "{spec}");
        }
    }

    #[test]
    fn credentials_are_decoded_and_only_for_http_style_urls() {
        let token = RepoLocation::from(format!("https://{CANARY}@h/x"))
            .credentials()
            .unwrap();
        assert_eq!(
            (token.username.as_str(), token.password.expose_secret()),
            (CANARY, "")
        );
        let pair = RepoLocation::from("https://me%2Bx:p%40ss@h/x")
            .credentials()
            .unwrap();
        assert_eq!(
            (pair.username.as_str(), pair.password.expose_secret()),
            ("me+x", "p@ss")
        );
        assert!(RepoLocation::from("ssh://git:pw@h/x")
            .credentials()
            .is_none());
        assert!(RepoLocation::from("git@h:x").credentials().is_none());
        assert!(RepoLocation::from("https://h/x").credentials().is_none());
        assert!(RepoLocation::from("/srv/x").credentials().is_none());
    }

    #[test]
    fn secrets_are_listed_raw_and_decoded() {
        assert_eq!(
            RepoLocation::from("https://me:p%40ss@h/x").secrets(),
            vec!["p%40ss", "p@ss"]
        );
        assert_eq!(
            RepoLocation::from(format!("https://{CANARY}@h/x")).secrets(),
            vec![CANARY]
        );
        assert!(RepoLocation::from("ssh://git@h/x").secrets().is_empty());
        assert!(RepoLocation::from("https://h/x").secrets().is_empty());
    }

    #[test]
    fn notices_credentials_given_as_a_flag() {
        let args = |list: &[&str]| -> Vec<OsString> { list.iter().map(OsString::from).collect() };
        assert!(credentials_on_command_line(&args(&[
            "upstep",
            "plan",
            "--repo",
            "https://t@h/x"
        ])));
        assert!(credentials_on_command_line(&args(&[
            "upstep",
            "--repo=https://u:p@h/x"
        ])));
        assert!(!credentials_on_command_line(&args(&[
            "upstep",
            "--repo",
            "https://h/x"
        ])));
        assert!(!credentials_on_command_line(&args(&[
            "upstep", "--repo", "git@h:x"
        ])));
    }

    #[test]
    fn local_paths_are_not_remote() {
        assert_eq!(
            RepoLocation::from("/srv/novu").local_path(),
            Some(Path::new("/srv/novu"))
        );
        assert!(RepoLocation::from("https://h/x").local_path().is_none());
    }
}
