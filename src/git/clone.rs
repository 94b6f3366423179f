//! Cloning and fetching remote repositories into upstep's cache, through the system `git`.
//!
//! libgit2 is built without network support on purpose: shelling out to `git` lets users'
//! credential helpers, ssh agents, proxies and `insteadOf` rules work unchanged.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

use super::location::UrlCredentials;
use super::{GitRepo, RepoLocation};
use crate::error::{Error, Result};

/// How many of git's last output lines an error message quotes.
const STDERR_TAIL_LINES: usize = 4;

/// The environment variables that carry a URL's credentials to [`CREDENTIAL_HELPER`].
const USERNAME_ENV: &str = "UPSTEP_GIT_USERNAME";
const PASSWORD_ENV: &str = "UPSTEP_GIT_PASSWORD";

/// A git credential helper (run by git through `sh`, with the action as its argument) that
/// answers `get` from the environment. It is the only way a URL's credentials reach git: git's
/// argv holds the credential-free URL (argv is visible to every local user), and nothing is
/// written to disk. Other actions (`store`, `erase`) are ignored.
const CREDENTIAL_HELPER: &str = "!f() { while read -r _; do :; done; \
test \"$1\" = get || return 0; \
printf 'username=%s\\npassword=%s\\n' \"$UPSTEP_GIT_USERNAME\" \"$UPSTEP_GIT_PASSWORD\"; }; f";

impl GitRepo {
    /// Opens `location` when it is a local path; when it is a URL (`file://`, `https://`,
    /// `ssh://`, `git@host:path`, ...), clones it into `<cache_root>/repos/<name>` with the
    /// system `git` (`clone --no-checkout`), or, when that clone already exists, fetches its
    /// tags (`fetch --tags --force`) and opens it.
    ///
    /// `show_progress` draws a progress bar on stderr; when false, git is also told not to ask
    /// for a password on the terminal (credential helpers and ssh agents still work).
    /// Credentials embedded in the URL never appear in messages, in git's argv or in the cached
    /// clone (whose `origin` is the credential-free URL): git gets them from its environment,
    /// through [`CREDENTIAL_HELPER`]. A failed clone leaves nothing behind that looks like a
    /// valid clone. A failed fetch of an existing clone only warns and uses the cached copy, so
    /// upstep still works offline.
    pub fn open_or_clone(
        location: &RepoLocation,
        cache_root: &Path,
        show_progress: bool,
    ) -> Result<GitRepo> {
        if let Some(path) = location.local_path() {
            return GitRepo::open(path);
        }
        let git_url = location.git_url();
        let repos_dir = cache_root.join("repos");
        let destination = repos_dir.join(cache_dir_name(&git_url));
        if destination.exists() {
            return open_cached_clone(location, &destination, show_progress);
        }
        std::fs::create_dir_all(&repos_dir).map_err(|err| {
            Error::repository(
                format!(
                    "cannot create the cache folder {}: {err}",
                    repos_dir.display()
                ),
                format!(
                    "make it writable, or point {} at another folder",
                    super::CACHE_DIR_ENV
                ),
            )
        })?;
        let partial = partial_clone_dir(&destination);
        // A leftover from a run that was killed mid-clone: never valid, safe to discard.
        remove_dir_if_present(&partial);
        let mut args = vec![
            "clone",
            "--no-checkout",
            "--progress",
            "--",
            git_url.as_str(),
        ];
        let partial_arg = partial.to_string_lossy();
        args.push(&partial_arg);
        let outcome = run_git(
            &args,
            None,
            location,
            &format!("Cloning {location}"),
            show_progress,
        );
        if let Err(failure) = outcome {
            remove_dir_if_present(&partial);
            return Err(Error::repository(
                format!("cannot clone {location}: {failure}"),
                format!(
                    "check the URL, your network and your credentials (try `git ls-remote {git_url}`), or pass --repo a local clone"
                ),
            ));
        }
        std::fs::rename(&partial, &destination).map_err(|err| {
            remove_dir_if_present(&partial);
            Error::repository(
                format!(
                    "cloned {location} but cannot move it to {}: {err}",
                    destination.display()
                ),
                "check the cache folder's permissions and free space, then run again",
            )
        })?;
        GitRepo::open(&destination)
    }
}

fn open_cached_clone(
    location: &RepoLocation,
    destination: &Path,
    show_progress: bool,
) -> Result<GitRepo> {
    let repo = GitRepo::open(destination).map_err(|_| {
        Error::repository(
            format!(
                "the cached clone of {location} at {} is not a valid repository",
                destination.display()
            ),
            format!(
                "delete {} and run again to clone afresh",
                destination.display()
            ),
        )
    })?;
    forget_stored_credentials(&repo, &location.git_url())?;
    let fetched = run_git(
        &["fetch", "--tags", "--force", "--progress", "origin"],
        Some(destination),
        location,
        &format!("Fetching {location}"),
        show_progress,
    );
    if let Err(failure) = fetched {
        tracing::warn!(
            "cannot fetch {location} ({failure}); using the cached clone at {}, whose tags may be out of date",
            destination.display()
        );
    }
    Ok(repo)
}

/// Points the cached clone's `origin` at `git_url` (credential-free). A clone made by an older
/// upstep holds the URL it was given, token included, in `.git/config`; older versions of git
/// also wrote it into the reflogs and `FETCH_HEAD`. The URL is rewritten and those files, which
/// upstep never reads, are removed.
fn forget_stored_credentials(repo: &GitRepo, git_url: &str) -> Result<()> {
    let stored = repo
        .repo
        .find_remote("origin")
        .ok()
        .and_then(|remote| remote.url().map(str::to_string));
    if stored.as_deref() == Some(git_url) {
        return Ok(());
    }
    let cannot = |what: String| {
        Error::repository(
            what,
            format!(
                "delete {} and run again to clone afresh",
                repo.repo.path().display()
            ),
        )
    };
    repo.repo.remote_set_url("origin", git_url).map_err(|err| {
        cannot(format!(
            "cannot update the cached clone's origin: {}",
            err.message()
        ))
    })?;
    let had_credentials =
        stored.is_some_and(|url| !RepoLocation::from(url.as_str()).secrets().is_empty());
    if had_credentials {
        let logs = repo.repo.path().join("logs");
        if logs.exists() {
            std::fs::remove_dir_all(&logs)
                .map_err(|err| cannot(format!("cannot remove {}: {err}", logs.display())))?;
        }
        let fetch_head = repo.repo.path().join("FETCH_HEAD");
        if fetch_head.exists() {
            std::fs::remove_file(&fetch_head)
                .map_err(|err| cannot(format!("cannot remove {}: {err}", fetch_head.display())))?;
        }
    }
    Ok(())
}

/// Runs `git <args>` (in `cwd` when given), showing its progress, and returns git's last error
/// lines (redacted) when it fails. The location's credentials, if any, reach git only through
/// its environment and [`CREDENTIAL_HELPER`].
fn run_git(
    args: &[&str],
    cwd: Option<&Path>,
    location: &RepoLocation,
    label: &str,
    show_progress: bool,
) -> std::result::Result<(), String> {
    let mut command = Command::new("git");
    if let Some(UrlCredentials { username, password }) = location.credentials() {
        // The empty value first clears the user's own helpers: the URL's credentials win, and a
        // `store` helper never writes them to disk.
        command
            .args(["-c", "credential.helper="])
            .args(["-c", &format!("credential.helper={CREDENTIAL_HELPER}")])
            .env(USERNAME_ENV, username)
            .env(
                PASSWORD_ENV,
                secrecy::ExposeSecret::expose_secret(&password),
            );
    } else {
        command.env_remove(USERNAME_ENV).env_remove(PASSWORD_ENV);
    }
    command.args(args);
    if let Some(cwd) = cwd {
        command.current_dir(cwd);
    }
    // Progress lines are parsed, so they must not be translated.
    command.env("LC_ALL", "C");
    if !show_progress {
        // Unattended: fail instead of waiting for a password nobody will type.
        command.env("GIT_TERMINAL_PROMPT", "0");
    }
    command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = crate::child::spawn_std(command, crate::child::Lifetime::WithUpstep).map_err(|err| {
        if err.kind() == std::io::ErrorKind::NotFound {
            "the `git` program is not installed or not on PATH (upstep uses it to clone and fetch)"
                .to_string()
        } else {
            format!("cannot start git: {err}")
        }
    })?;

    let secrets = location.secrets();
    let bar = progress_bar(label, show_progress);
    let mut tail: Vec<String> = Vec::new();
    if let Some(mut stderr) = child.stderr.take() {
        let mut chunk = [0u8; 4096];
        let mut pending = Vec::new();
        // git separates progress updates with `\r` and messages with `\n`.
        while let Ok(read) = stderr.read(&mut chunk) {
            if read == 0 {
                break;
            }
            for &byte in &chunk[..read] {
                if byte == b'\r' || byte == b'\n' {
                    take_line(&mut pending, &secrets, &bar, &mut tail);
                } else {
                    pending.push(byte);
                }
            }
        }
        take_line(&mut pending, &secrets, &bar, &mut tail);
    }
    let status = child
        .wait()
        .map_err(|err| format!("cannot wait for git: {err}"))?;
    bar.finish_and_clear();
    if status.success() {
        return Ok(());
    }
    // git's `fatal:`/`error:` lines say what went wrong; the rest is advice or progress.
    let errors: Vec<&str> = tail
        .iter()
        .filter_map(|line| {
            line.strip_prefix("fatal: ")
                .or_else(|| line.strip_prefix("error: "))
        })
        .collect();
    let shown: Vec<&str> = if errors.is_empty() {
        tail.iter()
            .map(String::as_str)
            .filter(|line| parse_progress(line).is_none())
            .collect()
    } else {
        errors
    };
    let start = shown.len().saturating_sub(STDERR_TAIL_LINES);
    let summary = shown[start..].join("; ");
    if summary.is_empty() {
        Err(format!("git exited with {status}"))
    } else {
        Err(summary)
    }
}

fn take_line(pending: &mut Vec<u8>, secrets: &[String], bar: &ProgressBar, tail: &mut Vec<String>) {
    if pending.is_empty() {
        return;
    }
    // git is never given the secrets, so cannot print them; scrubbed anyway, as every outside
    // program's text is.
    let line = crate::redact::scrub(String::from_utf8_lossy(pending).trim(), secrets);
    pending.clear();
    if line.is_empty() {
        return;
    }
    match parse_progress(&line) {
        Some((phase, percent)) => {
            bar.set_message(phase.to_string());
            bar.set_position(percent);
        }
        None => bar.set_message(line.clone()),
    }
    tail.push(line);
    if tail.len() > 64 {
        tail.remove(0);
    }
}

fn progress_bar(label: &str, show: bool) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(100);
    if let Ok(style) =
        ProgressStyle::with_template("{spinner} {prefix} [{bar:25}] {pos:>3}% {wide_msg}")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_prefix(label.to_string());
    bar.enable_steady_tick(Duration::from_millis(120));
    bar
}

/// `"Receiving objects:  45% (123/456)"` -> `("Receiving objects", 45)`.
fn parse_progress(line: &str) -> Option<(&str, u64)> {
    let line = line.strip_prefix("remote: ").unwrap_or(line);
    let (phase, rest) = line.split_once(':')?;
    let percent = rest.trim_start().split_once('%')?.0.trim();
    let percent: u64 = percent.parse().ok()?;
    Some((phase.trim(), percent.min(100)))
}

/// Whether `spec` names a remote repository rather than a local folder: anything with a
/// scheme (`https://`, `ssh://`, `file://`, ...) or git's scp-like `user@host:path`.
pub(crate) fn is_remote_spec(spec: &str) -> bool {
    if spec.contains("://") {
        return true;
    }
    // scp-like syntax, as git decides it: a colon before any slash.
    match spec.find(':') {
        Some(colon) => !spec[..colon].contains('/') && colon > 0 && !Path::new(spec).exists(),
        None => false,
    }
}

/// The cache folder name for a clone of `spec`: host and path, without credentials, scheme or
/// `.git`, e.g. `github.com-novuhq-novu` for `https://github.com/novuhq/novu.git` and for
/// `git@github.com:novuhq/novu.git`.
pub(crate) fn cache_dir_name(spec: &str) -> String {
    let without_user = crate::redact::Uri::new(spec).after_userinfo();
    let trimmed = without_user.trim_end_matches('/');
    let trimmed = trimmed.strip_suffix(".git").unwrap_or(trimmed);
    super::sanitise_for_path(trimmed)
}

fn partial_clone_dir(destination: &Path) -> PathBuf {
    let name = destination
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    destination.with_file_name(format!(".partial-{name}-{}", std::process::id()))
}

fn remove_dir_if_present(dir: &Path) {
    if dir.exists() {
        if let Err(err) = std::fs::remove_dir_all(dir) {
            tracing::warn!("cannot remove {}: {err}", dir.display());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_remote_specs() {
        assert!(is_remote_spec("https://github.com/novuhq/novu.git"));
        assert!(is_remote_spec("file:///tmp/repo"));
        assert!(is_remote_spec("ssh://git@github.com/novuhq/novu"));
        assert!(is_remote_spec("git@github.com:novuhq/novu.git"));
        assert!(!is_remote_spec("/home/me/novu"));
        assert!(!is_remote_spec("./novu"));
        assert!(!is_remote_spec("../a:b"));
        assert!(!is_remote_spec("novu"));
    }

    #[test]
    fn cache_names_ignore_scheme_user_and_suffix() {
        assert_eq!(
            cache_dir_name("https://github.com/novuhq/novu.git"),
            "github.com-novuhq-novu"
        );
        assert_eq!(
            cache_dir_name("git@github.com:novuhq/novu.git"),
            "github.com-novuhq-novu"
        );
        assert_eq!(
            cache_dir_name("https://me:pw@github.com/novuhq/novu/"),
            "github.com-novuhq-novu"
        );
        assert_eq!(cache_dir_name("file:///tmp/x/repo"), "tmp-x-repo");
    }

    #[test]
    fn parses_git_progress_lines() {
        assert_eq!(
            parse_progress("Receiving objects:  45% (123/456), 1.2 MiB"),
            Some(("Receiving objects", 45))
        );
        assert_eq!(
            parse_progress("remote: Counting objects: 100% (5/5), done."),
            Some(("Counting objects", 100))
        );
        assert_eq!(parse_progress("fatal: repository not found"), None);
    }
}
