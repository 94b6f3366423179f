//! A tag's setup (install, build): cached by a stamp, logged, its failures explained.

use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::{Digest, Sha256};

use super::build_outputs;
use super::command;
use super::effects::{Effects, RunStore};
use super::lockfile::RepairedLockfile;
use super::stop::Stops;
use super::UpgradeOptions;
use crate::error::{Error, Result};
use crate::runner::process::{ChildSpec, Ending, Watch};
use crate::ui::events::RunEvent;

/// What one tag's setup runs: the chosen commands, the lockfile the map says to repair, and
/// the toolchain they run with.
pub(super) struct SetupPlan<'a> {
    pub(super) git_ref: &'a str,
    pub(super) era: &'a crate::release_map::Era,
    pub(super) choice: crate::release_map::SetupChoice<'a>,
    pub(super) repair_lockfile: Option<&'a str>,
    /// The map's stand-ins this run applies at the tag (`stand_ins.rs`).
    pub(super) stand_ins: Vec<crate::release_map::StandIn>,
    pub(super) commit: &'a str,
    pub(super) node_version: &'a str,
    pub(super) pnpm: Option<&'a str>,
    /// This node's headers, for native modules the install compiles (node-gyp's `nodedir`).
    pub(super) node_headers: Option<PathBuf>,
}

/// Where the setup runs: the tag's worktree, with the toolchain first on PATH.
pub(super) struct SetupAt<'a> {
    pub(super) worktree: &'a Path,
    pub(super) path_prefix: &'a [PathBuf],
}

/// How many of a failed command's last lines the error shows.
const SETUP_TAIL_SHOWN: usize = 12;

/// At most one progress event per this interval while a setup command prints.
const SETUP_LINE_EVERY: Duration = Duration::from_millis(500);

/// The tag's setup commands, skipped when a stamp shows they already ran for this exact
/// (commit, node, pnpm, commands, lockfile repair) combination. Every command's output goes
/// to one log (appended, with a header per command); the latest line is reported while it
/// runs; a failure names the tag, the command, its last lines, the log and the fix.
pub(super) async fn run_setup(
    opts: &UpgradeOptions,
    setup: &SetupPlan<'_>,
    at: &SetupAt<'_>,
    stops: &Stops,
    fx: &mut Effects<'_>,
) -> Result<()> {
    let commands = setup.choice.commands;
    if commands.is_empty() {
        return Ok(());
    }
    let git_ref = setup.git_ref;
    let stamp_value = stamp_of(setup);
    let stamp = at.worktree.join(".upstep-setup.stamp");
    let profile = match setup.choice.profile {
        Some(p) => format!("the {p} setup profile"),
        None => "the full setup".to_string(),
    };
    if std::fs::read_to_string(&stamp).is_ok_and(|s| s.trim() == stamp_value) {
        fx.reporter.report(&RunEvent::Setup {
            git_ref: git_ref.into(),
            status: "cached".into(),
            phase: "setup".into(),
            detail: format!("{profile}: installed and built earlier for this commit and toolchain; reused, no setup command ran"),
            duration_ms: 0,
        });
        super::stand_ins::report_cached(setup, fx);
        return Ok(());
    }
    let _ = std::fs::remove_file(&stamp);
    let started = fx.clock.now();
    let log = opts
        .state_dir
        .join("logs")
        .join(&fx.store.actor().run_id)
        .join(format!("setup-{git_ref}.log"));
    let mut setup_log = SetupLog::create(&log)?;
    setup_log.write(&format!(
        "# upstep setup of {git_ref} (commit {}), node {}, pnpm {}, {profile}\n",
        setup.commit,
        setup.node_version,
        setup.pnpm.unwrap_or("-")
    ))?;
    // Only a lockfile the map names is repaired, for the setup only: dropping `repaired`
    // (success, failure or interruption) puts the released file back.
    let repaired = match setup.repair_lockfile {
        Some(file) => Some(repair_lockfile(setup, file, at, &mut setup_log, fx).await?),
        None => None,
    };
    // After the repair (it reads the released specifiers), restored before it.
    let stood_in = super::stand_ins::apply(&opts.map.source, setup, at, &mut setup_log, fx).await?;
    for (n, argv) in commands.iter().enumerate() {
        let command = SetupCommand {
            argv,
            number: n + 1,
            of: commands.len(),
        };
        if setup.era.keep_build_outputs && phase_of(argv) == "build" {
            let key = build_outputs::key(&stamp_value, n, argv);
            let kept = KeptBuild {
                key: &key,
                command: &command,
            };
            if restore_build(opts, setup, at, &kept, &mut setup_log, fx)? {
                continue;
            }
            let before = build_outputs::snapshot(at.worktree);
            run_command(opts, setup, at, &command, &mut setup_log, stops, fx).await?;
            keep_build(opts, at, &kept, before, &mut setup_log)?;
        } else {
            run_command(opts, setup, at, &command, &mut setup_log, stops, fx).await?;
        }
    }
    stood_in.restore()?;
    if let Some(repaired) = repaired {
        repaired.restore()?;
    }
    std::fs::write(&stamp, &stamp_value).map_err(|e| {
        Error::repository(
            format!("cannot write {}: {e}", stamp.display()),
            "check the disk",
        )
    })?;
    fx.reporter.report(&RunEvent::Setup {
        git_ref: git_ref.into(),
        status: "done".into(),
        phase: "setup".into(),
        detail: format!("{profile} (log: {})", log.display()),
        duration_ms: (fx.clock.now() - started).as_millis() as u64,
    });
    Ok(())
}

/// A build command whose outputs are kept, and their key.
struct KeptBuild<'a> {
    key: &'a str,
    command: &'a SetupCommand<'a>,
}

/// Restores the outputs an earlier preparation of this tag kept for this build command, instead
/// of running it; false when none are kept (or they cannot be restored: then it builds).
fn restore_build(
    opts: &UpgradeOptions,
    setup: &SetupPlan<'_>,
    at: &SetupAt<'_>,
    kept: &KeptBuild<'_>,
    setup_log: &mut SetupLog,
    fx: &mut Effects<'_>,
) -> Result<bool> {
    let started = fx.clock.now();
    let shown = kept.command.argv.join(" ");
    let restored = match build_outputs::restore(&opts.cache_root, kept.key, at.worktree) {
        Ok(Some(restored)) => restored,
        Ok(None) => return Ok(false),
        Err(e) => {
            setup_log.write(&format!("\n# {e}; building instead\n"))?;
            return Ok(false);
        }
    };
    let took = fx.clock.now() - started;
    let detail = format!(
        "{shown}: restored what it built for this commit and toolchain earlier ({}, {:.0} MB) in {:.1} s; not run",
        crate::words::count(restored.entries, "output"),
        restored.bytes as f64 / 1e6,
        took.as_secs_f64()
    );
    setup_log.write(&format!(
        "\n===== [{}/{}] {detail} =====\n",
        kept.command.number, kept.command.of
    ))?;
    fx.reporter.report(&RunEvent::Setup {
        git_ref: setup.git_ref.into(),
        status: "restored".into(),
        phase: "build".into(),
        detail,
        duration_ms: took.as_millis() as u64,
    });
    Ok(true)
}

/// Keeps what the build command just made, when that is all it did (else says why not in the
/// log); a failure to keep it is only logged: the tag is built either way.
fn keep_build(
    opts: &UpgradeOptions,
    at: &SetupAt<'_>,
    kept: &KeptBuild<'_>,
    before: Result<build_outputs::Snapshot>,
    setup_log: &mut SetupLog,
) -> Result<()> {
    let made = before.and_then(|before| {
        let after = build_outputs::snapshot(at.worktree)?;
        Ok(build_outputs::made_by_build(&before, &after))
    });
    let note = match made.unwrap_or_else(|e| Err(e.to_string())) {
        Ok(entries) => match build_outputs::save(&opts.cache_root, kept.key, at.worktree, &entries)
        {
            Ok(saved) => format!(
                "kept its outputs ({}, {:.0} MB) in {} for the next preparation of this tag",
                crate::words::count(saved.entries, "output"),
                saved.bytes as f64 / 1e6,
                crate::shared_cache::kept_builds(&opts.cache_root).display()
            ),
            Err(e) => format!("its outputs were not kept: {e}"),
        },
        Err(why) => format!("its outputs were not kept: {why}"),
    };
    setup_log.write(&format!("# {note}\n"))
}

/// The stamp's value: what the setup ran for (commit, toolchain, commands, lockfile repair,
/// stand-ins).
fn stamp_of(setup: &SetupPlan<'_>) -> String {
    let mut key = Sha256::new();
    for part in [
        setup.commit,
        setup.node_version,
        setup.pnpm.unwrap_or("-"),
        setup.repair_lockfile.unwrap_or("-"),
    ] {
        key.update(part.as_bytes());
        key.update([0]);
    }
    key.update(
        serde_json::to_string(&(setup.choice.commands, &setup.era.setup_env))
            .unwrap_or_default()
            .as_bytes(),
    );
    // A worktree prepared without (or with other) stand-ins is another preparation.
    for stand_in in &setup.stand_ins {
        key.update([1]);
        key.update(stand_in.file.as_bytes());
        for edit in &stand_in.edits {
            for part in [&edit.text, &edit.with] {
                key.update((part.len() as u64).to_le_bytes());
                key.update(part.as_bytes());
            }
        }
    }
    hex::encode(key.finalize())
}

/// Reconcile the lockfile the map names (for the setup only), and say so in the log, the
/// journal and the output.
async fn repair_lockfile(
    setup: &SetupPlan<'_>,
    file: &str,
    at: &SetupAt<'_>,
    setup_log: &mut SetupLog,
    fx: &mut Effects<'_>,
) -> Result<RepairedLockfile> {
    let git_ref = setup.git_ref;
    let repaired = RepairedLockfile::apply(at.worktree, file)?;
    let detail = format!(
        "{file}: reconciled {} with the package.json files (external dependencies stay pinned; the file is restored after the setup)",
        crate::words::count(repaired.edits.len(), "stale workspace-link specifier")
    );
    setup_log.write(&format!("\n# {detail}\n"))?;
    for edit in &repaired.edits {
        setup_log.write(&format!("#   {}\n", edit.describe()))?;
    }
    let listed: Vec<String> = repaired.edits.iter().map(|e| e.describe()).collect();
    fx.store
        .event(
            "lockfile-repaired",
            None,
            bson::doc! { "tag": git_ref, "commit": setup.commit, "file": file, "edits": listed.len() as i64, "specifiers": listed },
        )
        .await?;
    fx.reporter.report(&RunEvent::Setup {
        git_ref: git_ref.into(),
        status: "lockfile-repaired".into(),
        phase: "install".into(),
        detail,
        duration_ms: 0,
    });
    Ok(repaired)
}

/// One setup command and its place in the list.
struct SetupCommand<'a> {
    argv: &'a [String],
    number: usize,
    of: usize,
}

/// Run one setup command into the log; a stop or a failure ends the setup.
async fn run_command(
    opts: &UpgradeOptions,
    setup: &SetupPlan<'_>,
    at: &SetupAt<'_>,
    command: &SetupCommand<'_>,
    setup_log: &mut SetupLog,
    stops: &Stops,
    fx: &mut Effects<'_>,
) -> Result<()> {
    stops.check()?;
    let (git_ref, total, argv) = (setup.git_ref, command.of, command.argv);
    let shown = argv.join(" ");
    setup_log.write(&format!(
        "\n===== [{}/{total}] {shown} (cwd: the worktree of {git_ref}) =====\n",
        command.number
    ))?;
    fx.reporter.report(&RunEvent::Setup {
        git_ref: git_ref.into(),
        status: "running".into(),
        phase: phase_of(argv).into(),
        detail: shown.clone(),
        duration_ms: 0,
    });
    let spec = ChildSpec {
        program: PathBuf::from(&argv[0]),
        args: argv[1..].to_vec(),
        cwd: at.worktree.to_path_buf(),
        env: setup_env(setup, argv, &opts.cache_root),
        env_remove: opts.connection.private_env.clone(),
        path_prefix: at.path_prefix.to_vec(),
        log_file: setup_log.path.clone(),
        log_append: true,
        secrets: Vec::new(),
    };
    let log = setup_log.path.clone();
    let child = match fx.children.spawn(&spec) {
        Ok(child) => child,
        Err(e) => {
            let _ = setup_log.write(&format!("===== could not start: {e} =====\n"));
            let why = e.to_string();
            return Err(setup_failed(fx.store.as_ref(), git_ref, &shown, &why, &[], &log).await);
        }
    };
    let clock = fx.clock.clone();
    let mut last_report = clock.now() - SETUP_LINE_EVERY;
    let reporter = &mut *fx.reporter;
    let outcome = child
        .wait(
            Watch {
                grace: opts.grace,
                ..Watch::default()
            },
            stops.watcher.stop_receiver(),
            None,
            &mut |line| {
                if clock.now() - last_report >= SETUP_LINE_EVERY && !line.text.trim().is_empty() {
                    last_report = clock.now();
                    reporter.report(&RunEvent::SetupOutput {
                        git_ref: git_ref.into(),
                        line: line.text,
                    });
                }
            },
        )
        .await?;
    let secs = outcome.duration.as_secs_f64();
    let ended = match (&outcome.ending, outcome.exit_code, outcome.signal) {
        (Ending::Stopped { signal }, _, _) => format!("stopped by signal {signal}"),
        (_, Some(code), _) => format!("exit {code}"),
        (_, None, Some(signal)) => format!("killed by signal {signal}"),
        _ => "ended abnormally".to_string(),
    };
    setup_log.write(&format!("===== {ended} after {secs:.1} s =====\n"))?;
    if let Ending::Stopped { .. } = outcome.ending {
        return Err(stops.error());
    }
    if outcome.exit_code != Some(0) {
        let why = format!(
            "{ended} after {secs:.1} s (command {} of {total})",
            command.number
        );
        let store = fx.store.as_ref();
        return Err(setup_failed(store, git_ref, &shown, &why, &outcome.tail, &log).await);
    }
    fx.reporter.report(&RunEvent::Setup {
        git_ref: git_ref.into(),
        status: "finished".into(),
        phase: phase_of(argv).into(),
        detail: format!("{shown} ({secs:.1} s)"),
        duration_ms: outcome.duration.as_millis() as u64,
    });
    Ok(())
}

/// Which phase of a tag's setup a command is: the package install, the build, or other
/// (writing env files, ...). Judged by its words: `pnpm install`, `npm ci`, `pnpm i`;
/// `nx build`, `run-many --target=build`, `pnpm build`.
pub(super) fn phase_of(argv: &[String]) -> &'static str {
    let words = || argv.iter().skip(1).map(String::as_str);
    if words().any(|w| matches!(w, "install" | "i" | "ci" | "add")) {
        "install"
    } else if words().any(|w| w == "build" || w.starts_with("build:") || w.ends_with("=build")) {
        "build"
    } else {
        "other"
    }
}

/// A setup command's environment: the era's `setup_env`, plus node-gyp's `nodedir` pointing
/// at the tag's node headers (unless the map or the user set one), so native modules build
/// against the node that runs them without downloading headers from nodejs.org, plus the
/// shared package store and build cache (`src/shared_cache.rs`), plus, for the install, one
/// libuv thread (`INSTALL_THREADS`).
fn setup_env(setup: &SetupPlan<'_>, argv: &[String], cache_root: &Path) -> Vec<(String, String)> {
    let mut env = command::setup_env(setup.era);
    let set = |env: &[(String, String)], key: &str| {
        env.iter().any(|(k, _)| k.eq_ignore_ascii_case(key))
            || std::env::var_os(key).is_some()
            || std::env::var_os(key.to_ascii_uppercase()).is_some()
            || std::env::var_os(key.to_ascii_lowercase()).is_some()
    };
    if let Some(headers) = &setup.node_headers {
        if !set(&env, "npm_config_nodedir") {
            env.push(("npm_config_nodedir".into(), headers.display().to_string()));
        }
    }
    if phase_of(argv) == "install" && !set(&env, INSTALL_THREADS.0) {
        env.push((INSTALL_THREADS.0.into(), INSTALL_THREADS.1.into()));
    }
    let shared = crate::shared_cache::setup_env(cache_root, &|key| set(&env, key));
    env.extend(shared);
    env
}

/// One libuv thread for the package install, so the same tag installs to the same tree every
/// time. pnpm (seen with 7.33.4 at Novu v0.18.0) collects a filtered install's projects in the
/// order their `.npmrc` reads finish, and of two versions of a package it privately hoists the
/// one the first project depends on: with libuv's default four threads that order, and so the
/// hoisted version, changed from install to install (ioredis 5.3.1 or 5.3.2). nx hashes the
/// hoisted versions into every task's key, so the tag's build missed the shared cache on every
/// run. With one thread the reads finish in the order they were made; a warm install measured
/// no slower (28-36 s against 27-30 s).
const INSTALL_THREADS: (&str, &str) = ("UV_THREADPOOL_SIZE", "1");

/// The setup log: a header per command, every command's output appended below its header.
pub(super) struct SetupLog {
    pub(super) path: PathBuf,
}

impl SetupLog {
    fn create(path: &Path) -> Result<SetupLog> {
        let fail = |e: std::io::Error| {
            Error::StepFailed(format!(
                "cannot create the setup log {}: {e}\n  fix: make the state directory writable",
                path.display()
            ))
        };
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(fail)?;
        }
        std::fs::write(path, b"").map_err(fail)?;
        Ok(SetupLog {
            path: path.to_path_buf(),
        })
    }

    pub(super) fn write(&mut self, text: &str) -> Result<()> {
        use std::io::Write;
        std::fs::OpenOptions::new()
            .append(true)
            .open(&self.path)
            .and_then(|mut f| f.write_all(text.as_bytes()))
            .map_err(|e| {
                Error::StepFailed(format!(
                    "cannot write the setup log {}: {e}\n  fix: check the disk",
                    self.path.display()
                ))
            })
    }
}

/// The fix for a failed setup command, from what its last lines say.
pub fn setup_fix(tail: &[String]) -> String {
    let text = tail.join("\n");
    let has = |needle: &str| text.contains(needle);
    if has("ERR_PNPM_OUTDATED_LOCKFILE") {
        "the tag's lockfile does not match its package.json files: if only workspace-link specifiers are stale (a version bump), declare repair_lockfile for this release in the release map (docs/release-map.md); otherwise the tag cannot be installed as released".into()
    } else if has("ERR_PNPM_UNEXPECTED_STORE") {
        "the tag's node_modules was installed with another package store (an older upstep used pnpm's default one; upstep now shares <cache>/pnpm-store): remove that tag's folder under <cache>/worktrees, then run again".into()
    } else if has("ENOSPC") || has("no space left") {
        "free disk space (each prepared tag takes several GB), then run again".into()
    } else if has("github.com") || has("codeload.github.com") {
        "the install fetches a package from GitHub: give this machine HTTPS access to github.com (or set HTTPS_PROXY), then run again".into()
    } else if has("ERR_INVALID_THIS") {
        "this pnpm does not work under this node: check the release's node and pnpm in the release map".into()
    } else if has("ENOTFOUND")
        || has("ETIMEDOUT")
        || has("ECONNREFUSED")
        || has("ECONNRESET")
        || has("EAI_AGAIN")
    {
        "a download failed: check network access to the package registry (or its proxy settings), then run again".into()
    } else {
        "read the setup log for the cause and fix it (network, disk, or the era's setup in the release map), then run again: the setup of this tag starts over".into()
    }
}

/// Journal a failed setup and build the error that names the tag, the command, its last
/// lines, the log and the fix. No step of the tag was started.
async fn setup_failed(
    store: &dyn RunStore,
    git_ref: &str,
    command: &str,
    why: &str,
    tail: &[String],
    log: &Path,
) -> Error {
    let log_text = log.display().to_string();
    let _ = store
        .event(
            "setup-failed",
            None,
            bson::doc! { "tag": git_ref, "command": command, "why": why, "log": &log_text },
        )
        .await;
    let lines: Vec<&String> = tail.iter().filter(|l| !l.trim().is_empty()).collect();
    let last = &lines[lines.len().saturating_sub(SETUP_TAIL_SHOWN)..];
    let shown = if last.is_empty() {
        "(no output)".to_string()
    } else {
        last.iter()
            .map(|l| l.as_str())
            .collect::<Vec<_>>()
            .join("\n    ")
    };
    Error::StepFailed(format!(
        "the setup of {git_ref} failed: `{command}` {why}; no step of {git_ref} was started\n  last lines:\n    {shown}\n  full log: {log_text}\n  fix: {}",
        setup_fix(tail)
    ))
}

#[cfg(test)]
mod tests {
    use super::phase_of;

    fn argv(words: &str) -> Vec<String> {
        words.split(' ').map(String::from).collect()
    }

    #[test]
    fn a_node_modules_from_another_store_is_named_with_its_fix() {
        let tail = ["ERR_PNPM_UNEXPECTED_STORE  Unexpected store location".to_string()];
        assert!(
            super::setup_fix(&tail).contains("remove that tag's folder under <cache>/worktrees")
        );
    }

    #[test]
    fn a_setup_command_s_phase_comes_from_its_words() {
        for (command, phase) in [
            (
                "pnpm install --frozen-lockfile --filter @novu/api...",
                "install",
            ),
            ("pnpm i", "install"),
            ("npm ci", "install"),
            ("pnpm nx build @novu/api", "build"),
            (
                "pnpm nx run-many --target=build --projects=@novu/dal",
                "build",
            ),
            ("pnpm run build:api", "build"),
            ("node scripts/setup-env-files.js", "other"),
            // The program's own name is not a word of the command.
            ("build", "other"),
        ] {
            assert_eq!(phase_of(&argv(command)), phase, "{command}");
        }
    }
}
