//! The commands that touch the target database: `upgrade`, `status`, `mark`, `unlock`.

use std::collections::BTreeSet;
use std::io::IsTerminal;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use super::interactive;
use super::{load_map_from, open_repo_spec, runtime};
use crate::cli::{ConnectOpts, MarkArgs, StatusArgs, UnlockArgs, UpgradeArgs};
use crate::doctor::{self, DoctorInputs};
use crate::error::{Error, ExitCode, Result};
use crate::executor::approval::{self, Approvals};
use crate::executor::command::Connection;
use crate::executor::decide::{Action, Flags};
use crate::executor::{self, DataStates, KnownFacts, UpgradeOptions};
use crate::preflight::Severity;
use crate::release_map::{Need, ReleaseMap};
use crate::runner::signals::{SignalPolicy, SignalWatcher};
use crate::settings::{self, FlagValues, Settings};
use crate::store::journal::{Actor, Journal, StepStatus};
use crate::store::lock::{Acquire, RunLock};
use crate::store::mirror::{state_dir, Mirror};
use crate::store::Store;
use crate::tunnel::Tunnel;
use crate::ui::events::{JsonReporter, Reporter, RunEvent, TextReporter};
use crate::ui::progress::ProgressReporter;
use crate::ui::{self, Styler};

/// Interactive means a person on both ends: stdin and stdout are terminals and no --yes.
pub fn is_interactive(yes: bool) -> bool {
    !yes && std::io::stdin().is_terminal() && std::io::stdout().is_terminal()
}

pub(super) fn resolve_settings(
    connect: &ConnectOpts,
    repo: &crate::cli::RepoOpts,
    map: &crate::cli::MapOpts,
) -> Result<Settings> {
    let env = |name: &str| std::env::var(name).ok();
    let flags = FlagValues::from_opts(
        &connect.mongo,
        &connect.redis,
        repo,
        map,
        &connect.ssh,
        &env,
    );
    settings::resolve(
        &flags,
        &env,
        connect.profile.config.as_deref(),
        connect.profile.profile.as_deref(),
    )
}

/// A database connection, through an SSH tunnel when the settings ask for one. The tunnel
/// (if any) must live as long as the connection is used.
pub(super) struct Connected {
    pub(super) store: Store,
    /// The URI the scripts use (rewritten to the tunnel's local end).
    pub(super) uri: String,
    pub(super) tunnel: Option<Tunnel>,
}

pub(super) async fn connect(settings: &Settings, batch_mode: bool) -> Result<Connected> {
    let uri = settings.mongo_uri.as_ref().map(|s| s.value.clone()).ok_or_else(|| {
        Error::usage(
            "no MongoDB URI: upstep needs the database to migrate (and keeps its journal there)",
            "pass --mongo-uri mongodb://host:27017/<database>, set MONGO_URL, or name it in an upstep.toml profile",
        )
    })?;
    let (uri, tunnel) = match &settings.ssh {
        Some(ssh) => {
            let spec = ssh.tunnel_spec(Some(&uri), batch_mode)?;
            let tunnel = crate::tunnel::open(spec).await?;
            (tunnel.rewrite_mongo_uri(&uri)?, Some(tunnel))
        }
        None => (uri, None),
    };
    let store = Store::connect(&uri).await?;
    Ok(Connected { store, uri, tunnel })
}

/// Redis for the scripts: the configured one, or a throwaway local redis-server.
fn redis_connection(url: &str, conn: &mut Connection) -> Result<()> {
    let (tls, rest) = if let Some(r) = url.strip_prefix("rediss://") {
        (true, r)
    } else if let Some(r) = url.strip_prefix("redis://") {
        (false, r)
    } else {
        return Err(Error::usage(
            format!(
                "--redis-url {} is not a redis:// URL",
                crate::redact::redact_uri(url)
            ),
            "pass redis://[:password@]host:port[/db], rediss:// for TLS, or auto",
        ));
    };
    let (auth, hostpart) = match rest.rsplit_once('@') {
        Some((auth, host)) => (Some(auth), host),
        None => (None, rest),
    };
    let (hostport, db) = match hostpart.split_once('/') {
        Some((hp, db)) => (hp, db.parse::<u32>().ok()),
        None => (hostpart, None),
    };
    let (host, port) = match hostport.rsplit_once(':') {
        Some((h, p)) => (h.to_string(), p.parse::<u16>().ok()),
        None => (hostport.to_string(), Some(6379)),
    };
    conn.redis_host = Some(host);
    conn.redis_port = Some(port.ok_or_else(|| {
        Error::usage(
            format!("--redis-url {}: bad port", crate::redact::redact_uri(url)),
            "pass redis://host:port",
        )
    })?);
    conn.redis_password = auth
        .map(|a| a.split_once(':').map_or(a, |(_, pw)| pw).to_string())
        .filter(|p| !p.is_empty());
    conn.redis_db = db;
    conn.redis_tls = tls;
    Ok(())
}

pub fn upgrade_command(args: &UpgradeArgs) -> Result<ExitCode> {
    upgrade_with(args, super::rehearse::RunHooks::default())
}

/// `upgrade`, with what a rehearsal changes in it (`hooks`; see commands/rehearse.rs).
pub(super) fn upgrade_with(
    args: &UpgradeArgs,
    mut hooks: super::rehearse::RunHooks,
) -> Result<ExitCode> {
    let mut settings = resolve_settings(&args.connect, &args.repo, &args.map)?;
    let interactive = is_interactive(args.run.yes);
    if settings.mongo_uri.is_none() && interactive && !args.output.json {
        let uri = interactive::ask_mongo_uri()?;
        settings.mongo_uri = Some(crate::settings::Sourced::new(
            uri,
            crate::settings::Source::Flag,
        ));
    }
    let map = load_map_from(settings.map.as_ref().map(|m| m.value.as_path()))?;
    let (from, to) = super::range_versions(&map, &args.range)?;
    let repo = match settings.repo.as_ref() {
        Some(spec) => Some(open_repo_spec(&spec.value)?),
        None => None,
    };
    let approved = approved_steps(&map, &args.run.approve)?;
    let backup_dir = choose_backup(args, interactive)?;
    let key_var = settings.encryption_key_env.value.clone();
    let json = args.output.json;
    let mut multi = None;
    let mut reporter: Box<dyn Reporter> = if json {
        Box::new(JsonReporter)
    } else if interactive {
        let progress = ProgressReporter::new();
        multi = Some(progress.multi());
        Box::new(progress)
    } else {
        Box::new(TextReporter {
            styler: Styler::for_stderr(),
            echo_output: tracing::enabled!(tracing::Level::DEBUG),
        })
    };
    if let Some(wrap) = hooks.wrap_reporter.take() {
        reporter = wrap(reporter);
    }

    let rt = runtime()?;
    let result = rt.block_on(async {
        let connected = connect(&settings, !interactive).await?;
        let connected_uri = settings
            .mongo_uri
            .as_ref()
            .map(|s| s.value.clone())
            .unwrap_or_default();
        let mut connection = Connection {
            mongo_uri: connected.uri.clone(),
            encryption_key: std::env::var(&key_var).ok().filter(|k| !k.is_empty()),
            private_env: [settings.private_env_vars(), hooks.private_env.clone()].concat(),
            ..Connection::default()
        };
        let mut opts = UpgradeOptions {
            map,
            from,
            to,
            include_unreleased: args.range.include_unreleased,
            repo,
            connection: Connection::default(),
            flags: Flags {
                retry: args.run.retry,
                force: args.run.force,
            },
            dry_run: args.run.dry_run,
            keep_worktrees: args.run.keep_worktrees,
            repair_worktrees: args.run.repair,
            backup_dir: backup_dir.clone(),
            toolchain: args.run_env.toolchain,
            allow_provision: !args.run.no_provision,
            quiet_secs: args.run.quiet_secs,
            step_timeout: args.run.step_timeout.map(Duration::from_secs),
            grace: Duration::from_secs(args.run.grace_secs),
            lease: Duration::from_secs(args.run.lease_secs.max(1)),
            lock_wait: Duration::from_secs(args.run.lock_wait_secs),
            cache_root: crate::git::default_cache_root(),
            state_dir: state_dir(),
            check_time_limit: Duration::from_secs(30),
            approvals: Approvals {
                routine: args.run.yes,
                steps: approved,
            },
        };
        // The guided flow's decision: its facts feed the questions and the run, so the data
        // is read once.
        let mut guided = None;
        if interactive && !opts.dry_run {
            guided = Some(guided_flow(args, &mut opts, &connected.store, reporter.as_mut()).await?);
        }
        let plan = executor::full_plan(&opts)?;
        hooks.at_plan(&opts, &plan, &connected_uri, reporter.as_mut());
        let needs_redis = plan.steps().any(|(_, s)| s.needs.contains(&Need::Redis));

        // A throwaway Redis lives for this run only (dropped at the end of this block).
        let mut _throwaway = None;
        // The Redis the scripts get (None: this plan needs none), checked by the preflight.
        let mut redis_url = None;
        if needs_redis && !opts.dry_run {
            let url = if settings.redis_is_auto() {
                let redis = crate::redis_auto::start_throwaway_redis(&opts.state_dir).await?;
                let url = redis.url.clone();
                _throwaway = Some(redis);
                url
            } else {
                settings.redis_url.value.clone()
            };
            redis_connection(&url, &mut connection)?;
            redis_url = Some(url);
        }
        opts.connection = connection;

        // The preflight checks the tags an upgrade from --from sets up (disk, toolchains):
        // scripts older than --from are applied in all but unusual cases.
        let mut preflight_plan = plan.clone();
        if let Some(from) = &opts.from {
            preflight_plan.retain_steps(|s| {
                s.introduced_in
                    .as_deref()
                    .and_then(|v| semver::Version::parse(v).ok())
                    .is_none_or(|v| &v > from)
            });
        }
        if !opts.dry_run {
            preflight(
                &opts,
                &preflight_plan,
                redis_url.as_deref(),
                &key_var,
                reporter.as_mut(),
            )
            .await?;
        }
        let watcher = Arc::new(SignalWatcher::install(if interactive {
            SignalPolicy::Interactive
        } else {
            SignalPolicy::Unattended
        })?);
        if interactive {
            interactive::spawn_stop_prompt(watcher.clone(), multi.clone());
        }
        let mut known = None;
        if let Some((decided, facts)) = guided {
            confirm_risky_steps(&mut opts, &plan, &decided, reporter.as_mut()).await?;
            known = Some(facts);
        }
        let mut tunnel = connected.tunnel;
        let summary = loop {
            let result = executor::run_upgrade(
                &opts,
                &connected.store,
                watcher.clone(),
                reporter.as_mut(),
                tunnel.as_mut(),
                // The guided flow's facts serve the first attempt only: a decision changes the
                // journal.
                known.take(),
            )
            .await;
            // A step ended with nothing proving it finished: at a terminal, ask now and go on.
            let undecided = interactive
                && matches!(result, Err(Error::NeedsDecision(_)))
                && watcher.current() == crate::runner::StopRequest::None;
            if undecided && decide_unverified(&mut opts, &connected.store).await? {
                continue;
            }
            break result;
        };
        let summary = match summary {
            Ok(summary) if !args.then.is_empty() => crate::promote::after_run(
                &args.then,
                &opts,
                &connected.store,
                &watcher,
                reporter.as_mut(),
            )
            .await
            .map(|()| summary),
            other => other,
        };
        if let Some(t) = tunnel {
            t.close().await;
        }
        summary
    });
    let summary = result?;
    if !json && !hooks.is_rehearsal() {
        let text = if args.run.dry_run {
            format!(
                "Dry run: {} step(s) would run, {} would be skipped; nothing was touched.\n",
                summary.ran, summary.skipped
            )
        } else {
            format!(
                "Upgrade done: {} ran ({} succeeded), {} skipped.\n",
                summary.ran, summary.succeeded, summary.skipped
            )
        };
        ui::print_text(&text)?;
    }
    Ok(ExitCode::Success)
}

/// `--approve <id>`: each id must be a migration of the map (a typo would approve nothing).
fn approved_steps(map: &ReleaseMap, ids: &[String]) -> Result<BTreeSet<String>> {
    for id in ids {
        if map.migration(id).is_none() {
            return Err(Error::usage(
                format!(
                    "--approve {id}: the release map {} has no migration {id:?}",
                    map.source
                ),
                "use an id from `upstep plan` or `upstep map show`",
            ));
        }
    }
    Ok(ids.iter().cloned().collect())
}

/// Legacy migrations cannot be undone, so a run either takes a backup or says it will not:
/// `--backup DIR`, `--no-backup`, or (at a terminal) the answer to a question that defaults
/// to yes. Unattended runs must choose explicitly.
fn choose_backup(args: &UpgradeArgs, interactive: bool) -> Result<Option<std::path::PathBuf>> {
    if let Some(dir) = &args.run.backup {
        return Ok(Some(dir.clone()));
    }
    if args.run.no_backup || args.run.dry_run {
        return Ok(None);
    }
    if !interactive {
        return Err(Error::usage(
            "an unattended upgrade must say whether to back up the database first",
            "pass --backup DIR (recommended: legacy migrations cannot be undone) or --no-backup",
        ));
    }
    // At a terminal the question comes in the guided flow, after the plan is shown.
    Ok(None)
}

/// The interactive flow before a run: where the data stands, the target, the plan, what to
/// do about unfinished steps, the go-ahead, and the backup. Returns its decision and the facts
/// it was made from (each data check read once: by the detection when it runs).
async fn guided_flow(
    args: &UpgradeArgs,
    opts: &mut UpgradeOptions,
    store: &Store,
    reporter: &mut dyn Reporter,
) -> Result<(Vec<executor::DecidedStep>, KnownFacts)> {
    let mut entries = crate::store::journal::read_entries(store).await?;
    let mut data = DataStates::default();
    if args.range.to.is_none() {
        // Where the data stands, with its evidence and gaps, before choosing where to go.
        let detect_opts = crate::detect::DetectOptions {
            from: opts.from.clone(),
            to: opts.map.newest_version()?,
            to_source: crate::detect::TargetSource::NewestInMap,
            time_limit: opts.check_time_limit,
            count_limit: 1000,
            include_unreleased: opts.include_unreleased,
        };
        let report = crate::detect::detect(&opts.map, store, detect_opts, &|_, _| {}).await?;
        eprint!(
            "{}",
            crate::ui::detect_text::render(&report, &Styler::for_stderr())
        );
        let detected = report
            .detected
            .as_deref()
            .and_then(|v| semver::Version::parse(v).ok());
        data = report
            .migrations
            .iter()
            .map(|m| (m.id.clone(), m.data))
            .collect();
        opts.to = interactive::choose_target(&opts.map, detected.as_ref())?;
    }
    let plan = executor::full_plan(opts)?;
    let data = executor::read_data(opts, &plan, store, data).await;
    let mut decided = executor::decide_all(opts, &plan, &entries, &data);
    reporter.report(&executor::plan_event(&decided));
    let blocked: Vec<&executor::DecidedStep> = decided
        .iter()
        .filter(|d| d.decision.action == Action::Block)
        .collect();
    if !blocked.is_empty() {
        match interactive::resolve_blocked(&blocked)? {
            interactive::BlockedChoice::Retry => opts.flags.retry = true,
            interactive::BlockedChoice::MarkApplied => {
                let ids: Vec<String> = blocked.iter().map(|d| d.id.clone()).collect();
                for id in &ids {
                    mark_locked(
                        store,
                        id,
                        StepStatus::MarkedApplied,
                        "marked applied at the interactive prompt",
                    )
                    .await?;
                }
            }
            interactive::BlockedChoice::Stop => {
                return Err(Error::NeedsDecision(
                    "stopped at the interactive prompt; nothing was run".into(),
                ));
            }
        }
        // The answer changed the journal or the flags, not the data.
        entries = crate::store::journal::read_entries(store).await?;
        decided = executor::decide_all(opts, &plan, &entries, &data);
    }
    let facts = KnownFacts { entries, data };
    let to_run = decided
        .iter()
        .filter(|d| d.decision.action == Action::Run)
        .count();
    if to_run == 0 {
        return Ok((decided, facts));
    }
    if !interactive::confirm_run(to_run)? {
        return Err(Error::usage(
            "not confirmed: nothing was run",
            "run `upstep upgrade` again when ready",
        ));
    }
    if args.run.backup.is_none() && !args.run.no_backup {
        opts.backup_dir = interactive::ask_backup()?;
    }
    Ok((decided, facts))
}

/// After a run stopped on a step journalled `ended-unverified`: asks the operator to mark it
/// applied, retry it, or stop. True when the run should go on.
async fn decide_unverified(opts: &mut UpgradeOptions, store: &Store) -> Result<bool> {
    let entries = crate::store::journal::read_entries(store).await?;
    let plan = executor::full_plan(opts)?;
    let decided = executor::decide_steps(opts, &plan, store, &entries).await;
    let blocked: Vec<&executor::DecidedStep> = decided
        .iter()
        .filter(|d| {
            d.decision.action == Action::Block
                && entries
                    .get(&d.id)
                    .is_some_and(|e| e.status == StepStatus::EndedUnverified)
        })
        .collect();
    if blocked.is_empty() {
        return Ok(false);
    }
    match interactive::resolve_blocked(&blocked)? {
        interactive::BlockedChoice::Retry => opts.flags.retry = true,
        interactive::BlockedChoice::MarkApplied => {
            for d in &blocked {
                mark_locked(
                    store,
                    &d.id,
                    StepStatus::MarkedApplied,
                    "marked applied at the interactive prompt after it ended unverified",
                )
                .await?;
            }
        }
        interactive::BlockedChoice::Stop => return Ok(false),
    }
    Ok(true)
}

/// Record a mark while holding the run lock, so it never lands in the middle of a run.
async fn mark_locked(store: &Store, id: &str, status: StepStatus, reason: &str) -> Result<()> {
    let actor = Actor::current();
    let lock = RunLock::new(store);
    match lock.try_acquire(&actor, Duration::from_secs(30)).await? {
        Acquire::Acquired { .. } => {}
        Acquire::Held(holder) => {
            return Err(Error::Locked(format!(
                "an upgrade is running ({}); mark after it ends",
                holder.describe()
            )));
        }
    }
    let journal = Journal::new(
        store,
        actor.clone(),
        Mirror::for_database(&state_dir(), &store.redacted_uri),
    );
    let result = journal.mark(id, status, reason).await;
    lock.release(&actor).await?;
    result
}

/// The same checks as `doctor`, for the steps of this run; a blocker stops it before
/// anything is touched.
async fn preflight(
    opts: &UpgradeOptions,
    plan: &crate::plan::Plan,
    redis_url: Option<&str>,
    key_var: &str,
    reporter: &mut dyn Reporter,
) -> Result<()> {
    let inputs = DoctorInputs {
        map: &opts.map,
        plan,
        mongo_uri: Some(&opts.connection.mongo_uri),
        redis_url,
        encryption_key_var: key_var,
        encryption_key: opts.connection.encryption_key.as_deref(),
        path_env: std::env::var_os("PATH").unwrap_or_default(),
        cache_dir: opts.cache_root.clone(),
        toolchain: opts.toolchain,
        keep_worktrees: opts.keep_worktrees,
        probe_downloads: false,
    };
    let report = doctor::run_checks(&inputs).await;
    for check in report.checks.iter().filter(|c| c.severity != Severity::Ok) {
        reporter.report(&RunEvent::Notice {
            message: format!(
                "preflight {}: {} {}",
                check.id,
                check.reason,
                check
                    .fix
                    .as_deref()
                    .map(|f| format!("(fix: {f})"))
                    .unwrap_or_default()
            ),
        });
    }
    if report.blockers > 0 {
        let list: Vec<String> = report
            .checks
            .iter()
            .filter(|c| c.severity == Severity::Blocker)
            .map(|c| {
                format!(
                    "{}: {}\n    fix: {}",
                    c.id,
                    c.reason,
                    c.fix.as_deref().unwrap_or("-")
                )
            })
            .collect();
        return Err(Error::Preflight(format!(
            "preflight found {} blocker(s); nothing was run:\n  {}",
            report.blockers,
            list.join("\n  ")
        )));
    }
    Ok(())
}

/// At the terminal, the steps that need a yes are asked about: one question for each step
/// that needs an approval of its own (not idempotent and unverifiable) unless `--approve`
/// named it, then one for the routine ones. The answers become the run's approvals, which the
/// executor checks against its decision (unattended runs get theirs from --yes / --approve).
async fn confirm_risky_steps(
    opts: &mut UpgradeOptions,
    plan: &crate::plan::Plan,
    decided: &[executor::DecidedStep],
    reporter: &mut dyn Reporter,
) -> Result<()> {
    let risky = approval::risky_steps(&opts.map, plan, decided);
    let to_approve: Vec<&approval::RiskyStep> = risky
        .iter()
        .filter(|r| r.needs_approval && !opts.approvals.steps.contains(&r.id))
        .collect();
    for step in to_approve {
        reporter.report(&RunEvent::Notice {
            message: format!(
                "{}\n  It is not idempotent, and no data check can tell whether it already ran: \
                 a repeat or a partial run would go unnoticed. Check `upstep status` and its \
                 warnings first.",
                step.describe()
            ),
        });
        if !interactive::approve_step(&step.id).await? {
            return Err(Error::NeedsDecision(format!(
                "{} was not approved; nothing was run. Approve it when you are sure it has not \
                 run on this database (at this prompt, or with --approve {})",
                step.id, step.id
            )));
        }
        opts.approvals.steps.insert(step.id.clone());
    }
    let routine: Vec<String> = risky
        .iter()
        .filter(|r| !r.needs_approval && !opts.approvals.steps.contains(&r.id))
        .map(|r| r.describe())
        .collect();
    if !routine.is_empty() {
        reporter.report(&RunEvent::Notice {
            message: format!(
                "Steps that need your confirmation:\n  {}",
                routine.join("\n  ")
            ),
        });
        if !interactive::confirm_risky().await? {
            return Err(Error::usage(
                "not confirmed: nothing was run",
                "re-run when ready, or record steps with `upstep mark`",
            ));
        }
    }
    opts.approvals.routine = true;
    Ok(())
}

#[derive(Serialize)]
struct StatusRow {
    id: String,
    release: String,
    journal: Option<String>,
    data: Option<String>,
    state: String,
    detail: String,
    /// The journal's record of the step's last run (where, when, by whom, how it ended).
    journal_entry: Option<crate::store::journal::EntryView>,
}

#[derive(Serialize)]
struct StatusReport {
    schema: &'static str,
    database: String,
    to: String,
    pending: usize,
    lock: Option<String>,
    /// The backup taken before the last run that took one: directory and time.
    last_backup: Option<String>,
    migrations: Vec<StatusRow>,
}

pub fn status_command(args: &StatusArgs) -> Result<ExitCode> {
    let settings = resolve_settings(&args.connect, &crate::cli::RepoOpts::default(), &args.map)?;
    let map = load_map_from(settings.map.as_ref().map(|m| m.value.as_path()))?;
    let to = super::to_version(&map, args.to.as_deref(), None, false)?;
    let report = runtime()?.block_on(async {
        let connected = connect(&settings, !is_interactive(false)).await?;
        let store = &connected.store;
        let opts = read_only_options(map, to);
        let plan = executor::full_plan(&opts)?;
        let entries = crate::store::journal::read_entries(store).await?;
        let decided = executor::decide_steps(&opts, &plan, store, &entries).await;
        let lock = RunLock::new(store).current().await?.map(|l| l.describe());
        let last_backup = crate::store::journal::last_event(store, "backup-taken")
            .await?
            .and_then(|e| {
                let d = e.get_document("details").ok()?;
                Some(format!(
                    "{} (taken {})",
                    d.get_str("backup").ok()?,
                    d.get_str("created_at").unwrap_or("?")
                ))
            });
        let mut rows = Vec::new();
        for (group, step) in plan.steps() {
            let d = decided.iter().find(|d| d.id == step.id);
            let entry = entries.get(&step.id);
            let state = match (entry.map(|e| e.status), d.map(|d| d.decision.action)) {
                (Some(s), _) if s.is_done() && d.is_some_and(|d| d.decision.regressed) => {
                    "regressed".to_string()
                }
                (Some(s), _) => s.as_str().to_string(),
                (None, Some(Action::Skip)) => "applied (per data)".to_string(),
                (None, _) => "pending".to_string(),
            };
            rows.push(StatusRow {
                id: step.id.clone(),
                release: group.git_ref.clone(),
                journal: entry.map(|e| e.status.as_str().to_string()),
                data: None,
                detail: entry
                    .map(|e| e.summary())
                    .filter(|s| !s.is_empty())
                    .or_else(|| d.map(|d| d.decision.reason.clone()))
                    .unwrap_or_default(),
                journal_entry: entry.map(|e| e.view()),
                state,
            });
        }
        Ok::<_, Error>(StatusReport {
            schema: "upstep.status/1",
            database: store.redacted_uri.clone(),
            to: crate::version::display(&opts.to),
            pending: rows
                .iter()
                .filter(|r| {
                    !(r.state.starts_with("succeeded")
                        || r.state.starts_with("marked-applied")
                        || r.state.starts_with("applied"))
                })
                .count(),
            lock,
            last_backup,
            migrations: rows,
        })
    })?;
    if args.output.json {
        ui::print_json(&report)?;
    } else {
        let st = Styler::for_stdout();
        let width = report
            .migrations
            .iter()
            .map(|r| r.id.len())
            .max()
            .unwrap_or(0);
        let mut out = format!(
            "{} {} (up to {})\n",
            st.bold("Migrations in"),
            report.database,
            report.to
        );
        for r in &report.migrations {
            let state = match r.state.as_str() {
                s if s.starts_with("succeeded")
                    || s.starts_with("marked")
                    || s.starts_with("applied") =>
                {
                    st.good(s)
                }
                s @ ("failed" | "interrupted" | "ended-unverified" | "regressed" | "running") => {
                    st.bad(s)
                }
                s => st.warn(s),
            };
            out.push_str(&format!(
                "  {}  {:<8}  {:<18}  {}\n",
                ui::pad(&r.id, width),
                r.release,
                state,
                st.dim(&r.detail)
            ));
        }
        if let Some(backup) = &report.last_backup {
            out.push_str(&format!("Backup before the last run: {backup}\n"));
        }
        if let Some(lock) = &report.lock {
            out.push_str(&format!("Run lock: {lock}\n"));
        }
        out.push_str(&format!(
            "{} of {} pending\n",
            report.pending,
            report.migrations.len()
        ));
        ui::print_text(&out)?;
    }
    if args.check && report.pending > 0 {
        return Err(Error::Pending(format!(
            "{} migration(s) are not applied (status --check)",
            report.pending
        )));
    }
    Ok(ExitCode::Success)
}

/// Options for commands that only read (status, doctor): nothing here runs a script.
pub(super) fn read_only_options(map: ReleaseMap, to: semver::Version) -> UpgradeOptions {
    UpgradeOptions {
        map,
        from: None,
        to,
        include_unreleased: false,
        repo: None,
        connection: Connection::default(),
        flags: Flags::default(),
        dry_run: true,
        keep_worktrees: true,
        repair_worktrees: false,
        backup_dir: None,
        toolchain: Default::default(),
        allow_provision: false,
        quiet_secs: None,
        step_timeout: None,
        grace: Duration::from_secs(10),
        lease: Duration::from_secs(60),
        lock_wait: Duration::from_secs(0),
        cache_root: crate::git::default_cache_root(),
        state_dir: state_dir(),
        check_time_limit: Duration::from_secs(30),
        approvals: Approvals::default(),
    }
}

pub fn mark_command(args: &MarkArgs) -> Result<ExitCode> {
    let settings = resolve_settings(&args.connect, &crate::cli::RepoOpts::default(), &args.map)?;
    let map = load_map_from(settings.map.as_ref().map(|m| m.value.as_path()))?;
    if map.migration(&args.id).is_none() {
        return Err(Error::usage(
            format!("no migration {:?} in {}", args.id, map.source),
            "use an id from `upstep map show`",
        ));
    }
    let status = if args.applied {
        StepStatus::MarkedApplied
    } else {
        StepStatus::Pending
    };
    let reason = args.reason.clone().unwrap_or_else(|| {
        format!(
            "marked {} by hand",
            if args.applied { "applied" } else { "pending" }
        )
    });
    runtime()?.block_on(async {
        let connected = connect(&settings, true).await?;
        mark_locked(&connected.store, &args.id, status, &reason).await
    })?;
    if !args.output.json {
        ui::print_text(&format!("{}: recorded as {}\n", args.id, status.as_str()))?;
    } else {
        ui::print_json(
            &serde_json::json!({ "schema": "upstep.mark/1", "id": args.id, "status": status.as_str() }),
        )?;
    }
    Ok(ExitCode::Success)
}

pub fn unlock_command(args: &UnlockArgs) -> Result<ExitCode> {
    let settings = resolve_settings(
        &args.connect,
        &crate::cli::RepoOpts::default(),
        &crate::cli::MapOpts { map: None },
    )?;
    let removed = runtime()?.block_on(async {
        let connected = connect(&settings, true).await?;
        let store = &connected.store;
        let removed = RunLock::new(store).force_unlock().await?;
        if let Some(holder) = &removed {
            let journal = Journal::new(
                store,
                Actor::current(),
                Mirror::for_database(&state_dir(), &store.redacted_uri),
            );
            journal
                .event(
                    "unlocked",
                    None,
                    bson::doc! { "removed": holder.describe() },
                )
                .await?;
        }
        Ok::<_, Error>(removed)
    })?;
    let text = match &removed {
        Some(holder)
            if !holder.holder.is_dead_local_process()
                && holder.holder.host == crate::store::journal::hostname() =>
        {
            format!("removed the run lock of {}\nwarning: that process still runs on this host; it will stop when it fails to renew its lease\n", holder.describe())
        }
        Some(holder) => format!("removed the run lock of {}\n", holder.describe()),
        None => "no run lock was held\n".to_string(),
    };
    if args.output.json {
        ui::print_json(
            &serde_json::json!({ "schema": "upstep.unlock/1", "removed": removed.map(|h| h.describe()) }),
        )?;
    } else {
        ui::print_text(&text)?;
    }
    Ok(ExitCode::Success)
}
