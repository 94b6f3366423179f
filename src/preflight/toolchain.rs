//! node and pnpm at the versions a tag was built with.
//!
//! A wrong node version only makes pnpm print a warning, and the build or script then fails in
//! obscure ways, so upstep enforces the versions itself. A tool at the wrong version is not a
//! blocker while npx can provision the right one (`npx -p node@X`).

use std::ffi::OsStr;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use backon::{BlockingRetryable, ConstantBuilder};
use semver::Version;

use super::CheckResult;
use crate::npm_range::NpmRange;

/// How long `<tool> --version` may take (a cold npx can be slow; a hung shim must not hang us).
const VERSION_TIMEOUT: Duration = Duration::from_secs(10);

/// A tool a tag needs. `exact` wins over `range` when both are given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolRequirement {
    /// `node` or `pnpm`.
    pub tool: String,
    /// An exact version (`.nvmrc`, `packageManager`), without a leading `v`.
    pub exact: Option<String>,
    /// An npm range (`engines`).
    pub range: Option<String>,
    /// The tag that needs it, e.g. `v0.18.0`.
    pub for_tag: String,
}

impl ToolRequirement {
    /// What to ask npx for: the exact version, else the range, else the latest.
    fn npx_spec(&self) -> String {
        match (&self.exact, &self.range) {
            (Some(exact), _) => format!("{}@{}", self.tool, exact.trim_start_matches('v')),
            (None, Some(range)) => format!("{}@\"{range}\"", self.tool),
            (None, None) => self.tool.clone(),
        }
    }

    fn wanted(&self) -> String {
        match (&self.exact, &self.range) {
            (Some(exact), _) => exact.trim_start_matches('v').to_string(),
            (None, Some(range)) => range.clone(),
            (None, None) => "any version".to_string(),
        }
    }

    /// How to install it by hand.
    fn install_fix(&self) -> String {
        let version = self.exact.as_deref().map(|v| v.trim_start_matches('v'));
        match (self.tool.as_str(), version, &self.range) {
            ("node", Some(v), _) => format!("install node {v}: nvm install {v} && nvm use {v}"),
            ("node", None, Some(range)) => {
                format!("install a node matching \"{range}\" (e.g. with nvm install)")
            }
            ("pnpm", Some(v), _) => {
                format!("npm i -g pnpm@{v} (or: corepack prepare pnpm@{v} --activate)")
            }
            ("pnpm", None, Some(range)) => format!("npm i -g pnpm@\"{range}\""),
            (tool, _, _) => format!("install {tool} {}", self.wanted()),
        }
    }
}

enum Found {
    Missing,
    /// On PATH but `--version` failed, timed out or printed no version.
    Unusable {
        path: PathBuf,
        problem: String,
    },
    Version {
        path: PathBuf,
        version: Version,
    },
}

/// Checks `req.tool` as found on `path_env` (the PATH scripts will run with). `npm_available`
/// says whether npx can provision a missing or wrong version (see `check_npx`).
pub fn check_tool(req: &ToolRequirement, path_env: &OsStr, npm_available: bool) -> CheckResult {
    let id = format!("{}@{}", req.tool, req.for_tag);
    let title = format!("{} {} for {}", req.tool, req.wanted(), req.for_tag);

    // A requirement that does not parse is a bug in the release map, not in the machine.
    let exact = match req.exact.as_deref().map(parse_exact).transpose() {
        Ok(exact) => exact,
        Err(e) => {
            return CheckResult::blocker(
                id,
                title,
                format!("the release map's {} version is invalid: {e}", req.tool),
                "fix the release map (node/pnpm fields of this release)",
            )
        }
    };
    let range = match req.range.as_deref().map(NpmRange::parse).transpose() {
        Ok(range) => range,
        Err(e) => {
            return CheckResult::blocker(
                id,
                title,
                format!("the release map's {} range is invalid: {e}", req.tool),
                "fix the release map (node_engines of this release)",
            )
        }
    };
    let satisfied = |v: &Version| match (&exact, &range) {
        (Some(exact), _) => same_version(v, exact),
        (None, Some(range)) => range.matches(v),
        (None, None) => true,
    };

    let found = find_version(&req.tool, path_env);
    let (what_is_wrong, details) = match &found {
        Found::Version { path, version } if satisfied(version) => {
            return CheckResult::ok(
                id,
                title,
                format!("{} {version} at {}", req.tool, path.display()),
            );
        }
        Found::Version { path, version } => (
            format!(
                "{} {version} is on PATH, {} needs {}",
                req.tool,
                req.for_tag,
                req.wanted()
            ),
            vec![format!("found {}", path.display())],
        ),
        Found::Unusable { path, problem } => (
            format!("{} at {} is unusable: {problem}", req.tool, path.display()),
            vec![],
        ),
        Found::Missing => (format!("{} is not on PATH", req.tool), vec![]),
    };

    if npm_available {
        let spec = req.npx_spec();
        CheckResult::warning(
            id,
            title,
            format!("{what_is_wrong}: will be provisioned with npx -p {spec}"),
            format!("nothing to do; to skip provisioning, {}", req.install_fix()),
        )
        .with_details(details)
    } else {
        CheckResult::blocker(
            id,
            title,
            format!("{what_is_wrong}, and without npm/npx upstep cannot provision it"),
            req.install_fix(),
        )
        .with_details(details)
    }
}

/// Whether npx (which provisions tool versions) works on `path_env`.
pub fn check_npx(path_env: &OsStr) -> CheckResult {
    const ID: &str = "npx";
    let title = "npx (provisions node/pnpm versions)";
    let fix = "install npm, which ships npx (it comes with node: https://nodejs.org, or \
               apt-get install npm)";
    match find_version("npx", path_env) {
        Found::Version { path, version } => {
            CheckResult::ok(ID, title, format!("npx {version} at {}", path.display()))
        }
        Found::Unusable { path, problem } => CheckResult::warning(
            ID,
            title,
            format!(
                "npx at {} is unusable ({problem}): every tool must already be at the exact \
                 version",
                path.display()
            ),
            fix,
        ),
        Found::Missing => CheckResult::warning(
            ID,
            title,
            "npx is not on PATH: every tool must already be at the exact version",
            fix,
        ),
    }
}

fn parse_exact(text: &str) -> Result<Version, String> {
    let text = text.trim();
    Version::parse(text.trim_start_matches('v')).map_err(|e| format!("{text:?}: {e}"))
}

/// Equal as npm sees it: build metadata does not count.
fn same_version(a: &Version, b: &Version) -> bool {
    (a.major, a.minor, a.patch, &a.pre) == (b.major, b.minor, b.patch, &b.pre)
}

fn find_version(tool: &str, path_env: &OsStr) -> Found {
    let Some(path) = find_on_path(tool, path_env) else {
        return Found::Missing;
    };
    match run_version(&path, path_env) {
        Ok(output) => match parse_version_output(&output) {
            Some(version) => Found::Version { path, version },
            None => {
                let shown: String = output.trim().chars().take(80).collect();
                Found::Unusable {
                    path,
                    problem: format!("`{tool} --version` printed {shown:?}, not a version"),
                }
            }
        },
        Err(problem) => Found::Unusable { path, problem },
    }
}

/// The first executable file named `tool` in the directories of `path_env`.
fn find_on_path(tool: &str, path_env: &OsStr) -> Option<PathBuf> {
    crate::child::find_on_path(tool, path_env)
}

/// The first `x.y.z` (optionally `v`-prefixed) token in the output.
fn parse_version_output(output: &str) -> Option<Version> {
    output
        .split_whitespace()
        .map(|token| token.trim_start_matches('v'))
        .find_map(|token| Version::parse(token).ok())
}

/// Runs `<path> --version` with PATH = `path_env` (so a `#!/usr/bin/env node` script such as
/// pnpm finds the same node), its own process group (killed whole on timeout), and a deadline.
fn run_version(path: &Path, path_env: &OsStr) -> Result<String, String> {
    let command = || {
        let mut command = Command::new(path);
        command
            .arg("--version")
            .env("PATH", path_env)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        command
    };
    // A script written a moment ago can be briefly "busy" while another thread's fork still
    // holds it open for writing; that passes within milliseconds.
    let mut child = (|| crate::child::spawn_std(command(), crate::child::Lifetime::WithUpstep))
        .retry(
            ConstantBuilder::default()
                .with_delay(Duration::from_millis(25))
                .with_max_times(20),
        )
        .sleep(std::thread::sleep)
        .when(|e| e.raw_os_error() == Some(nix::errno::Errno::ETXTBSY as i32))
        .call()
        .map_err(|e| format!("cannot run it: {e}"))?;
    // Read on a thread so a chatty child cannot block on a full pipe while we wait.
    let mut stdout = child.stdout.take().expect("stdout is piped");
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stdout.read_to_string(&mut text);
        let _ = sender.send(text);
    });
    let deadline = Instant::now() + VERSION_TIMEOUT;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() >= deadline => {
                // Not reaped yet, so the group id still names our child's group.
                kill_group(child.id());
                let _ = child.wait();
                return Err(format!(
                    "`--version` did not finish within {}s",
                    VERSION_TIMEOUT.as_secs()
                ));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            Err(e) => return Err(format!("cannot wait for it: {e}")),
        }
    };
    // A grandchild left behind may hold the pipe open: take what arrived, do not wait forever.
    let output = receiver
        .recv_timeout(Duration::from_secs(1))
        .unwrap_or_default();
    if !status.success() {
        return Err(format!("`--version` failed ({status})"));
    }
    Ok(output)
}

fn kill_group(pid: u32) {
    crate::child::signal_child_group(pid, nix::sys::signal::Signal::SIGKILL);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_output_parsing() {
        assert_eq!(
            parse_version_output("v16.15.1\n"),
            Some(Version::new(16, 15, 1))
        );
        assert_eq!(parse_version_output("7.33.4"), Some(Version::new(7, 33, 4)));
        assert_eq!(
            parse_version_output("WARN something\n8.9.0\n"),
            Some(Version::new(8, 9, 0))
        );
        assert_eq!(parse_version_output(""), None);
        assert_eq!(parse_version_output("garbage"), None);
    }

    #[test]
    fn npx_specs_and_fixes() {
        let req = ToolRequirement {
            tool: "node".into(),
            exact: Some("v16.15.1".into()),
            range: Some(">=13.0.0 <17.0.0".into()),
            for_tag: "v0.18.0".into(),
        };
        assert_eq!(req.npx_spec(), "node@16.15.1");
        assert!(req.install_fix().contains("nvm install 16.15.1"));
        let pnpm = ToolRequirement {
            tool: "pnpm".into(),
            exact: Some("7.33.4".into()),
            range: None,
            for_tag: "v0.18.0".into(),
        };
        assert!(pnpm.install_fix().starts_with("npm i -g pnpm@7.33.4"));
    }

    #[test]
    fn invalid_requirements_are_blockers_not_panics() {
        let req = ToolRequirement {
            tool: "node".into(),
            exact: Some("sixteen".into()),
            range: None,
            for_tag: "v0.18.0".into(),
        };
        let result = check_tool(&req, OsStr::new(""), true);
        assert_eq!(result.severity, super::super::Severity::Blocker);
    }
}
