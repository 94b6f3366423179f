//! [`Uri`]: a connection string or URL taken apart once (scheme, user info, hosts, path,
//! query), shown only redacted. The one rule for hiding the secrets a URI carries lives here:
//!
//! - a password in the user info is masked (`user:****@`), even with unencoded `:`, `@` or `/`;
//! - a user name alone is kept where it is a login name (`mongodb`, `redis`, `ssh`, and git's
//!   scp-like `user@host:path`) and masked where it is a token (`https://TOKEN@github.com`);
//! - the values of query parameters named like secrets (`password`, `secret`, `token`, `key`,
//!   `authMechanismProperties`) are masked.
//!
//! `Display`, `Debug` and `Serialize` all show that form; the real string leaves only through
//! [`Uri::expose`], for the driver or child that needs it.

use std::fmt;

/// What a hidden secret is shown as.
pub const MASK: &str = "****";

/// Query parameters whose values are secrets (matched case-insensitively, by substring).
/// `authMechanismProperties` may carry an AWS session token.
const SECRET_PARAMS: [&str; 5] = [
    "password",
    "secret",
    "token",
    "key",
    "authmechanismproperties",
];

/// Schemes whose user name alone is a login name, not a secret. A URI without a scheme is
/// git's scp-like `user@host:path` (ssh), so its user is a login name too.
const LOGIN_SCHEMES: [&str; 7] = [
    "mongodb",
    "mongodb+srv",
    "redis",
    "rediss",
    "ssh",
    "git+ssh",
    "ssh+git",
];

/// A connection string or URL. Parsing never fails: whatever does not fit the shape
/// `scheme://[user[:password]@]hosts[/path][?query]` lands in the nearest part, and the
/// callers that need a part say what they do without it. The default is the empty string's.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Uri {
    raw: String,
    /// As written, without `://` (`None`: no `://` in the string).
    scheme: Option<String>,
    /// The user name as written (percent-encoded), when there is user info.
    user: Option<String>,
    /// The password as written (percent-encoded), when the user info has a `:`.
    password: Option<String>,
    /// `host[:port]` list as written, e.g. `a:1,b:2` (for scp-like specs, `host:path...`).
    hosts: String,
    /// From the `/` after the hosts up to the `?` (empty when there is none).
    path: String,
    /// After the `?` (the fragment, if any, included).
    query: Option<String>,
}

impl Uri {
    pub fn new(raw: impl Into<String>) -> Uri {
        let raw = raw.into();
        let (scheme, rest) = match raw.find("://") {
            Some(at) => (Some(raw[..at].to_string()), &raw[at + 3..]),
            None => (None, raw.as_str()),
        };
        let (user, password, after_userinfo) = match userinfo_end(rest) {
            Some(at) => {
                let (user, password) = match rest[..at].split_once(':') {
                    Some((user, password)) => (user, Some(password.to_string())),
                    None => (&rest[..at], None),
                };
                (Some(user.to_string()), password, &rest[at + 1..])
            }
            None => (None, None, rest),
        };
        let (before_query, query) = match after_userinfo.split_once('?') {
            Some((before, query)) => (before, Some(query.to_string())),
            None => (after_userinfo, None),
        };
        let hosts_end = before_query.find(['/', '#']).unwrap_or(before_query.len());
        Uri {
            scheme,
            user,
            password,
            hosts: before_query[..hosts_end].to_string(),
            path: before_query[hosts_end..].to_string(),
            query,
            raw,
        }
    }

    /// The real string, password and all: only for the driver or child that connects with it.
    pub fn expose(&self) -> &str {
        &self.raw
    }

    /// The scheme as written (`mongodb+srv`), without `://`.
    pub fn scheme(&self) -> Option<&str> {
        self.scheme.as_deref()
    }

    /// Whether the scheme is `name` (case-insensitively).
    pub fn has_scheme(&self, name: &str) -> bool {
        self.scheme
            .as_deref()
            .is_some_and(|s| s.eq_ignore_ascii_case(name))
    }

    /// The host list as written (`user:pw@a:1,b:2/db` -> `a:1,b:2`).
    pub fn hosts(&self) -> &str {
        &self.hosts
    }

    /// Each host of the list (`a:1,b:2` -> `["a:1", "b:2"]`), empty entries left out.
    pub fn host_list(&self) -> Vec<&str> {
        self.hosts.split(',').filter(|h| !h.is_empty()).collect()
    }

    /// The first host's name, without port or brackets (`[::1]:6379` -> `::1`).
    pub fn host_name(&self) -> Option<&str> {
        let first = self.host_list().into_iter().next()?;
        let name = match first.strip_prefix('[') {
            Some(inner) => inner.split(']').next().unwrap_or(inner),
            None => first.split(':').next().unwrap_or(first),
        };
        (!name.is_empty()).then_some(name)
    }

    /// The port of the first host as written (`h:6379` -> `6379`), when one is written.
    pub fn port_text(&self) -> Option<&str> {
        let first = self.host_list().into_iter().next()?;
        match first.strip_prefix('[') {
            Some(inner) => inner.split_once("]:").map(|(_, port)| port),
            None => first.rsplit_once(':').map(|(_, port)| port),
        }
    }

    /// The path from its `/` (`/novu-db`), empty when the URI has none.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The database the path names (`mongodb://h/db?x` -> `db`, `redis://h/2` -> `2`).
    pub fn database(&self) -> Option<&str> {
        let db = self.path.strip_prefix('/')?;
        let db = db.split('#').next().unwrap_or(db);
        (!db.is_empty()).then_some(db)
    }

    /// The query, without its `?`.
    pub fn query(&self) -> Option<&str> {
        self.query.as_deref()
    }

    /// Everything after the user info, without the scheme (`h:1/db?x`).
    pub fn after_userinfo(&self) -> String {
        let mut out = format!("{}{}", self.hosts, self.path);
        if let Some(query) = &self.query {
            out.push('?');
            out.push_str(query);
        }
        out
    }

    /// Whether the user name alone is a login name (kept when shown) rather than a token.
    pub fn user_is_login(&self) -> bool {
        match &self.scheme {
            None => true,
            Some(scheme) => LOGIN_SCHEMES.iter().any(|s| scheme.eq_ignore_ascii_case(s)),
        }
    }

    /// Whether the URI carries user info (`user@`, `user:pw@`, `TOKEN@`).
    pub fn has_userinfo(&self) -> bool {
        self.user.is_some()
    }

    /// The user name and password, percent-decoded (an empty password when there is none):
    /// for a driver or credential helper that takes them apart from the URL.
    pub fn credentials(&self) -> Option<(String, secrecy::SecretString)> {
        let user = self.user.as_deref()?;
        let password = percent_decode(self.password.as_deref().unwrap_or(""));
        Some((percent_decode(user), password.into()))
    }

    /// The password, percent-decoded, when there is a non-empty one.
    pub fn password(&self) -> Option<secrecy::SecretString> {
        let password = self.password.as_deref().filter(|p| !p.is_empty())?;
        Some(percent_decode(password).into())
    }

    /// Every secret the URI carries (its password, or a user name that is a token), as written
    /// and percent-decoded, to scrub from text a driver or child printed.
    pub fn secrets(&self) -> Vec<String> {
        let raw = match (&self.user, &self.password) {
            (_, Some(password)) => password.as_str(),
            (Some(user), None) if !self.user_is_login() => user.as_str(),
            _ => return Vec::new(),
        };
        let mut secrets = vec![raw.to_string(), percent_decode(raw)];
        secrets.dedup();
        secrets.retain(|s| !s.is_empty());
        secrets
    }

    /// The same URI with another database in its path (credentials, hosts, options kept);
    /// `None` when the URI has no path (`mongodb://host` or `mongodb://host?x`).
    pub fn with_database(&self, db: &str) -> Option<Uri> {
        if self.path.is_empty() {
            return None;
        }
        Some(self.rebuilt(&self.hosts, &format!("/{db}"), self.query.as_deref()))
    }

    /// The same URI with other hosts, path and query (scheme and user info kept).
    pub fn rebuilt(&self, hosts: &str, path: &str, query: Option<&str>) -> Uri {
        let mut out = String::new();
        if let Some(scheme) = &self.scheme {
            out.push_str(scheme);
            out.push_str("://");
        }
        if let Some(user) = &self.user {
            out.push_str(user);
            if let Some(password) = &self.password {
                out.push(':');
                out.push_str(password);
            }
            out.push('@');
        }
        out.push_str(hosts);
        out.push_str(path);
        if let Some(query) = query {
            out.push('?');
            out.push_str(query);
        }
        Uri::new(out)
    }

    /// The URI for a child's argv: no password, and no user name that is a token (a login
    /// name is kept), so the child gets its credentials some other way.
    pub fn without_credentials(&self) -> String {
        self.shown(false)
    }

    /// The URI as upstep shows it anywhere: secrets masked by the rule above.
    pub fn redacted(&self) -> String {
        self.shown(true)
    }

    fn shown(&self, mask: bool) -> String {
        let mut out = String::with_capacity(self.raw.len());
        if let Some(scheme) = &self.scheme {
            out.push_str(scheme);
            out.push_str("://");
        }
        if let Some(user) = &self.user {
            let login = self.user_is_login();
            match (&self.password, mask) {
                (Some(_), true) => out.push_str(&format!("{user}:{MASK}@")),
                (None, true) if !login => out.push_str(&format!("{MASK}@")),
                _ if login => out.push_str(&format!("{user}@")),
                // Not shown at all: the child gets a token user some other way.
                _ => {}
            }
        }
        out.push_str(&self.hosts);
        out.push_str(&self.path);
        if let Some(query) = &self.query {
            out.push('?');
            out.push_str(&redact_query(query));
        }
        out
    }
}

/// Where the user info ends (the `@` before the host) in what follows `scheme://`, if there is
/// user info.
fn userinfo_end(rest: &str) -> Option<usize> {
    // Normal case: the last `@` before the first `/`, `?` or `#` (hosts never contain them).
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    if let Some(at) = rest[..authority_end].rfind('@') {
        return Some(at);
    }
    // A raw password containing `/` or `?` breaks that rule: `user:pa/ss@host`. Then the last
    // `@` anywhere ends the user info, unless what follows the `:` is a port (`host:8080/a@b`).
    let at = rest.rfind('@')?;
    let (_, after_colon) = rest[..authority_end].split_once(':')?;
    let is_port = !after_colon.is_empty() && after_colon.bytes().all(|b| b.is_ascii_digit());
    (!is_port).then_some(at)
}

/// `a=1&token=x` -> `a=1&token=****`.
fn redact_query(query: &str) -> String {
    query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((name, _)) if is_secret_param(name) => format!("{name}={MASK}"),
            _ => pair.to_string(),
        })
        .collect::<Vec<_>>()
        .join("&")
}

fn is_secret_param(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    SECRET_PARAMS.iter().any(|secret| name.contains(secret))
}

/// `%40` -> `@`; a stray `%` is kept as it is.
pub(crate) fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = (hex_value(bytes[i + 1]), hex_value(bytes[i + 2]));
            if let (Some(high), Some(low)) = hex {
                out.push(high * 16 + low);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex_value(byte: u8) -> Option<u8> {
    (byte as char).to_digit(16).map(|d| d as u8)
}

impl fmt::Display for Uri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl fmt::Debug for Uri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Uri").field(&self.redacted()).finish()
    }
}

impl serde::Serialize for Uri {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.redacted())
    }
}

/// Read as the string it is written as (a settings file's `mongo_uri`, `redis_url`, `repo`).
impl<'de> serde::Deserialize<'de> for Uri {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Uri, D::Error> {
        String::deserialize(d).map(Uri::new)
    }
}

impl From<&str> for Uri {
    fn from(raw: &str) -> Uri {
        Uri::new(raw)
    }
}

impl From<String> for Uri {
    fn from(raw: String) -> Uri {
        Uri::new(raw)
    }
}

#[cfg(test)]
mod tests {
    use secrecy::ExposeSecret;

    use super::*;

    #[test]
    fn parses_each_part_once() {
        let uri = Uri::new("mongodb://novu:pw@db1:27017,db2:27018/novu-db?replicaSet=rs0");
        assert_eq!(uri.scheme(), Some("mongodb"));
        assert_eq!(uri.hosts(), "db1:27017,db2:27018");
        assert_eq!(uri.host_list(), vec!["db1:27017", "db2:27018"]);
        assert_eq!(uri.host_name(), Some("db1"));
        assert_eq!(uri.port_text(), Some("27017"));
        assert_eq!(uri.database(), Some("novu-db"));
        assert_eq!(uri.query(), Some("replicaSet=rs0"));
        assert_eq!(
            uri.after_userinfo(),
            "db1:27017,db2:27018/novu-db?replicaSet=rs0"
        );

        let srv = Uri::new("mongodb+srv://u:p@cluster0.example.net/db");
        assert!(srv.has_scheme("MONGODB+SRV"));
        assert_eq!(srv.host_list(), vec!["cluster0.example.net"]);
        assert_eq!(srv.port_text(), None);

        let bare = Uri::new("mongodb://127.0.0.1:27017");
        assert!(!bare.has_userinfo());
        assert_eq!(bare.database(), None);
        assert_eq!(bare.with_database("x"), None);

        let v6 = Uri::new("redis://[::1]:6380/2");
        assert_eq!(v6.host_name(), Some("::1"));
        assert_eq!(v6.port_text(), Some("6380"));
        assert_eq!(v6.database(), Some("2"));
    }

    #[test]
    fn one_redaction_rule_for_every_kind_of_uri() {
        let table: &[(&str, &str)] = &[
            (
                "mongodb://novu:CanaryPw-7f3a9@db.example:27017/db?authSource=admin",
                "mongodb://novu:****@db.example:27017/db?authSource=admin",
            ),
            (
                "mongodb+srv://u:CanaryPw-7f3a9@cluster0.example.net/db",
                "mongodb+srv://u:****@cluster0.example.net/db",
            ),
            (
                "mongodb://u:CanaryPw-7f3a9@a:1,b:2,c:3/db?replicaSet=rs0",
                "mongodb://u:****@a:1,b:2,c:3/db?replicaSet=rs0",
            ),
            // No user info; a user with no password (a login name, kept).
            ("mongodb://a:1,b:2/db", "mongodb://a:1,b:2/db"),
            ("mongodb://novu@h/db", "mongodb://novu@h/db"),
            // Percent-encoded `@` and `:` in the password, and the same unencoded.
            ("mongodb://u:Canary%40Pw%3A7f@h/db", "mongodb://u:****@h/db"),
            ("mongodb://u:Canary@Pw:7f@h/db", "mongodb://u:****@h/db"),
            ("redis://:CanaryPw-7f3a9@h:6379/2", "redis://:****@h:6379/2"),
            (
                "rediss://default:CanaryPw-7f3a9@h",
                "rediss://default:****@h",
            ),
            // A token as the user name of an https URL is a secret.
            (
                "https://ghp_CanaryPw7f3a9@github.com/novuhq/novu.git",
                "https://****@github.com/novuhq/novu.git",
            ),
            (
                "https://oauth2:CanaryPw-7f3a9@gitlab.example/x",
                "https://oauth2:****@gitlab.example/x",
            ),
            ("ssh://git@github.com/x", "ssh://git@github.com/x"),
            (
                "git@github.com:novuhq/novu.git",
                "git@github.com:novuhq/novu.git",
            ),
            // Secrets in the query.
            (
                "mongodb://h/db?tlsCertificateKeyFilePassword=CanaryPw-7f3a9&w=1",
                "mongodb://h/db?tlsCertificateKeyFilePassword=****&w=1",
            ),
            (
                "https://h/x?private_token=CanaryPw-7f3a9&api_key=CanaryPw-7f3a9",
                "https://h/x?private_token=****&api_key=****",
            ),
        ];
        for (raw, shown) in table {
            let uri = Uri::new(*raw);
            assert_eq!(uri.redacted(), *shown, "{raw}");
            assert_eq!(uri.to_string(), *shown, "{raw}");
            assert_eq!(format!("{uri:?}"), format!("Uri({shown:?})"), "{raw}");
            assert_eq!(serde_json::to_string(&uri).unwrap(), format!("{shown:?}"));
            for secret in ["CanaryPw", "Canary%40", "Canary@"] {
                assert!(!format!("{uri} {uri:?} {uri:#?}").contains(secret), "{raw}");
            }
            // The real string is still there for the driver.
            assert_eq!(uri.expose(), *raw);
        }
    }

    #[test]
    fn credentials_and_secrets_are_decoded() {
        let uri = Uri::new("mongodb://me%2Bx:Canary%40Pw%3A7f@h/db");
        let (user, password) = uri.credentials().unwrap();
        assert_eq!(
            (user.as_str(), password.expose_secret()),
            ("me+x", "Canary@Pw:7f")
        );
        assert_eq!(uri.password().unwrap().expose_secret(), "Canary@Pw:7f");
        assert_eq!(uri.secrets(), vec!["Canary%40Pw%3A7f", "Canary@Pw:7f"]);
        assert_eq!(Uri::new("redis://:pw@h:1").secrets(), vec!["pw"]);
        assert_eq!(Uri::new("redis://:@h:1").password().map(|_| ()), None);
        assert_eq!(Uri::new("https://TOKEN@h/x").secrets(), vec!["TOKEN"]);
        assert!(Uri::new("mongodb://novu@h/db").secrets().is_empty());
        assert!(Uri::new("mongodb://h/db").secrets().is_empty());
    }

    #[test]
    fn rebuilding_keeps_credentials_and_options() {
        let uri = Uri::new("mongodb://u:p%40w@h1:1,h2:2/novu?authSource=admin");
        assert_eq!(
            uri.with_database("scratch").unwrap().expose(),
            "mongodb://u:p%40w@h1:1,h2:2/scratch?authSource=admin"
        );
        assert_eq!(
            uri.rebuilt("127.0.0.1:5", "/novu", Some("x=1")).expose(),
            "mongodb://u:p%40w@127.0.0.1:5/novu?x=1"
        );
        assert_eq!(
            Uri::new("https://me:pw@h:8080/x").without_credentials(),
            "https://h:8080/x"
        );
        assert_eq!(
            Uri::new("ssh://git:pw@h/x").without_credentials(),
            "ssh://git@h/x"
        );
    }

    #[test]
    fn text_that_is_no_uri_is_kept() {
        for text in ["", "not a uri", "/home/a@b/novu", "https://h:8080/a@b"] {
            assert_eq!(Uri::new(text).redacted(), text);
        }
    }
}
