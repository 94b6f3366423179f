//! Cloning and fetching remote repositories into upstep's cache, through the system `git`.
//!
//! libgit2 is built without network support on purpose: shelling out to `git` lets users'
//! credential helpers, ssh agents, proxies and `insteadOf` rules work unchanged.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

use super::GitRepo;
use crate::error::{Error, Result};

/// How many of git's last output lines an error message quotes.
const STDERR_TAIL_LINES: usize = 4;

impl GitRepo {
    /// Opens `spec` when it is a local path; when it is a URL (`file://`, `https://`,
    /// `ssh://`, `git@host:path`, ...), clones it into `<cache_root>/repos/<name>` with the
    /// system `git` (`clone --no-checkout`), or, when that clone already exists, fetches its
    /// tags (`fetch --tags --force`) and opens it.
    ///
    /// `show_progress` draws a progress bar on stderr; when false, git is also told not to ask
    /// for a password on the terminal (credential helpers and ssh agents still work).
    /// Credentials embedded in the URL never appear in messages. A failed clone leaves nothing
    /// behind that looks like a valid clone. A failed fetch of an existing clone only warns and
    /// uses the cached copy, so upstep still works offline.
    pub fn open_or_clone(spec: &str, cache_root: &Path, show_progress: bool) -> Result<GitRepo> {
        if !is_remote_spec(spec) {
            return GitRepo::open(Path::new(spec));
        }
        let shown_url = redact_url(spec);
        let repos_dir = cache_root.join("repos");
        let destination = repos_dir.join(cache_dir_name(spec));
        if destination.exists() {
            return open_cached_clone(spec, &destination, show_progress);
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
        let outcome = run_git(
            &["clone", "--no-checkout", "--progress", "--", spec],
            Some(&partial),
            None,
            spec,
            &format!("Cloning {shown_url}"),
            show_progress,
        );
        if let Err(failure) = outcome {
            remove_dir_if_present(&partial);
            return Err(Error::repository(
                format!("cannot clone {shown_url}: {failure}"),
                format!(
                    "check the URL, your network and your credentials (try `git ls-remote {shown_url}`), or pass --repo a local clone"
                ),
            ));
        }
        std::fs::rename(&partial, &destination).map_err(|err| {
            remove_dir_if_present(&partial);
            Error::repository(
                format!(
                    "cloned {shown_url} but cannot move it to {}: {err}",
                    destination.display()
                ),
                "check the cache folder's permissions and free space, then run again",
            )
        })?;
        GitRepo::open(&destination)
    }
}

fn open_cached_clone(spec: &str, destination: &Path, show_progress: bool) -> Result<GitRepo> {
    let shown_url = redact_url(spec);
    let repo = GitRepo::open(destination).map_err(|_| {
        Error::repository(
            format!(
                "the cached clone of {shown_url} at {} is not a valid repository",
                destination.display()
            ),
            format!(
                "delete {} and run again to clone afresh",
                destination.display()
            ),
        )
    })?;
    let fetched = run_git(
        &["fetch", "--tags", "--force", "--progress", "origin"],
        None,
        Some(destination),
        spec,
        &format!("Fetching {shown_url}"),
        show_progress,
    );
    if let Err(failure) = fetched {
        tracing::warn!(
            "cannot fetch {shown_url} ({failure}); using the cached clone at {}, whose tags may be out of date",
            destination.display()
        );
    }
    Ok(repo)
}

/// Runs `git <args> [target]` (in `cwd` when given), showing its progress, and returns git's
/// last error lines (redacted) when it fails.
fn run_git(
    args: &[&str],
    target: Option<&Path>,
    cwd: Option<&Path>,
    url: &str,
    label: &str,
    show_progress: bool,
) -> std::result::Result<(), String> {
    let mut command = Command::new("git");
    command.args(args);
    if let Some(target) = target {
        command.arg(target);
    }
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
    let mut child = command.spawn().map_err(|err| {
        if err.kind() == std::io::ErrorKind::NotFound {
            "the `git` program is not installed or not on PATH (upstep uses it to clone and fetch)"
                .to_string()
        } else {
            format!("cannot start git: {err}")
        }
    })?;

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
                    take_line(&mut pending, url, &bar, &mut tail);
                } else {
                    pending.push(byte);
                }
            }
        }
        take_line(&mut pending, url, &bar, &mut tail);
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

fn take_line(pending: &mut Vec<u8>, url: &str, bar: &ProgressBar, tail: &mut Vec<String>) {
    if pending.is_empty() {
        return;
    }
    let line = redact_text(String::from_utf8_lossy(pending).trim(), url);
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

/// `spec` with any password or token removed, for messages and logs:
/// `https://user:secret@host/x` -> `https://user:***@host/x`, `https://token@host/x` ->
/// `https://***@host/x`. ssh user names (`ssh://git@host`, `git@host:x`) are kept.
pub fn redact_url(spec: &str) -> String {
    let Some(scheme_end) = spec.find("://") else {
        return spec.to_string();
    };
    let scheme = &spec[..scheme_end];
    let after_scheme = &spec[scheme_end + 3..];
    let authority_end = after_scheme.find('/').unwrap_or(after_scheme.len());
    let authority = &after_scheme[..authority_end];
    let Some(at) = authority.rfind('@') else {
        return spec.to_string();
    };
    let userinfo = &authority[..at];
    let redacted = match userinfo.split_once(':') {
        Some((user, _secret)) => format!("{user}:***"),
        None if scheme.starts_with("http") => "***".to_string(),
        None => userinfo.to_string(),
    };
    format!(
        "{scheme}://{redacted}@{}{}",
        &authority[at + 1..],
        &after_scheme[authority_end..]
    )
}

/// Removes the URL's credentials from any text git printed.
fn redact_text(text: &str, url: &str) -> String {
    let redacted_url = redact_url(url);
    if redacted_url == url {
        return text.to_string();
    }
    let mut out = text.replace(url, &redacted_url);
    // git may print the URL re-assembled; drop the raw user-info wherever it appears.
    if let Some(userinfo) = userinfo_of(url) {
        out = out.replace(userinfo, "***");
    }
    out
}

fn userinfo_of(url: &str) -> Option<&str> {
    let after_scheme = &url[url.find("://")? + 3..];
    let authority = &after_scheme[..after_scheme.find('/').unwrap_or(after_scheme.len())];
    let at = authority.rfind('@')?;
    Some(&authority[..at])
}

/// The cache folder name for a clone of `spec`: host and path, without credentials, scheme or
/// `.git`, e.g. `github.com-novuhq-novu` for `https://github.com/novuhq/novu.git` and for
/// `git@github.com:novuhq/novu.git`.
pub(crate) fn cache_dir_name(spec: &str) -> String {
    let (without_scheme, authority_ends_at): (&str, &[char]) = match spec.find("://") {
        Some(i) => (&spec[i + 3..], &['/']),
        // scp-like `user@host:path`: the host ends at the colon.
        None => (spec, &['/', ':']),
    };
    let authority_end = without_scheme
        .find(authority_ends_at)
        .unwrap_or(without_scheme.len());
    let without_user = match without_scheme[..authority_end].rfind('@') {
        Some(at) => &without_scheme[at + 1..],
        None => without_scheme,
    };
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
    fn redacts_passwords_and_tokens() {
        assert_eq!(
            redact_url("https://me:s3cret@github.com/novuhq/novu.git"),
            "https://me:***@github.com/novuhq/novu.git"
        );
        assert_eq!(
            redact_url("https://ghp_token@github.com/x"),
            "https://***@github.com/x"
        );
        assert_eq!(
            redact_url("ssh://git@github.com/x"),
            "ssh://git@github.com/x"
        );
        assert_eq!(redact_url("git@github.com:x/y"), "git@github.com:x/y");
        assert_eq!(
            redact_url("https://github.com/a@b"),
            "https://github.com/a@b"
        );
    }

    #[test]
    fn redacts_git_output() {
        let url = "https://me:s3cret@host/repo";
        let text = redact_text(
            "fatal: unable to access 'https://me:s3cret@host/repo/'",
            url,
        );
        assert!(!text.contains("s3cret"), "{text}");
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
