//! `upstep upgrade`: resolve the settings into a run, then run it.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use super::interactive;
use super::run::{connect, is_interactive, mark_locked, resolve_settings};
use super::{load_map_from, open_repo_spec, runtime};
use crate::cli::UpgradeArgs;
use crate::doctor::{self, DoctorInputs};
use crate::error::{Error, ExitCode, Result};
use crate::executor::approval::{self, Approvals};
use crate::executor::command::Connection;
use crate::executor::decide::{Action, Flags};
use crate::executor::{self, DataStates, KnownFacts, UpgradeOptions};
use crate::preflight::Severity;
use crate::release_map::{Need, ReleaseMap};
use crate::runner::signals::{SignalPolicy, SignalWatcher};
use crate::store::journal::StepStatus;
use crate::store::mirror::state_dir;
use crate::store::Store;
use crate::ui::events::{JsonReporter, Reporter, RunEvent, TextReporter};
use crate::ui::progress::ProgressReporter;
use crate::ui::{self, Styler};

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

    let rt = runtime()?;
    let result = rt.block_on(async {
        let connected = connect(&settings, !interactive).await?;
        let mut connection = Connection {
            mongo_uri: connected.uri.clone(),
            encryption_key: std::env::var(&key_var).ok().filter(|k| !k.is_empty()),
            private_env: settings.private_env_vars(),
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
        if let Some(t) = tunnel {
            t.close().await;
        }
        summary
    });
    let summary = result?;
    if !json {
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
