//! `upstep rollback --to VERSION` and `upstep plan --rollback --to VERSION`.

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::LocalBoxFuture;

use super::run::{connect, is_interactive, read_only_options, resolve_settings};
use super::upgrade::redis_connection;
use super::{load_map_from, open_repo_spec, runtime};
use crate::cli::{ConnectOpts, MapOpts, OutputOpts, PlanArgs, RepoOpts, RollbackArgs};
use crate::error::{Error, ExitCode, Result};
use crate::executor::command::Connection;
use crate::executor::decide::Flags;
use crate::executor::effects::{Effects, Surroundings, Workspace};
use crate::executor::real::{GitWorkspace, MongoRunStore, ProcessChildren, SystemClock};
use crate::executor::rollback::{self, DownAction, RollbackPlan, RollbackRequest};
use crate::executor::UpgradeOptions;
use crate::plan::Plan;
use crate::release_map::{Need, ReleaseMap};
use crate::runner::signals::{SignalPolicy, SignalWatcher};
use crate::ui::events::{JsonReporter, Reporter, TextReporter};
use crate::ui::{self, Styler};
use crate::version::{display, parse_user_version};

fn rollback_target(map: &ReleaseMap, to: &str) -> Result<semver::Version> {
    let to = parse_user_version(to, "--to")?.resolve(map);
    if map.release(&to).is_none() {
        return Err(Error::usage(
            format!(
                "--to {}: the release map {} lists no such release",
                display(&to),
                map.source
            ),
            "name a release of the map (`upstep map show` lists them)",
        ));
    }
    Ok(to)
}

fn render(plan: &RollbackPlan, database: &str) -> String {
    let st = Styler::for_stdout();
    let mut out = format!(
        "{} {database} to {} (newest first)\n",
        st.bold("Rollback of"),
        plan.to
    );
    let width = plan.steps.iter().map(|s| s.id.len()).max().unwrap_or(0);
    for s in &plan.steps {
        let action = match s.action {
            DownAction::Undo => st.warn("undo"),
            DownAction::Skip => st.dim("skip"),
            DownAction::NoDown => st.bad("no down"),
            DownAction::Block => st.bad("blocked"),
        };
        let down = s
            .down
            .as_deref()
            .map(|d| format!(" [{d}]"))
            .unwrap_or_default();
        out.push_str(&format!(
            "  {}  {:<8}  {action:<8}  {}{}\n",
            ui::pad(&s.id, width),
            s.git_ref,
            st.dim(&s.reason),
            st.dim(&down)
        ));
    }
    let undo = plan
        .steps
        .iter()
        .filter(|s| s.action == DownAction::Undo)
        .count();
    out.push_str(&format!("{undo} step(s) to undo\n"));
    out
}

pub fn plan_rollback_command(args: &PlanArgs) -> Result<ExitCode> {
    plan_rollback(
        &args.connect,
        &args.repo,
        &args.map,
        args.range.to.as_deref(),
        args.skip_missing_down,
        &args.output,
    )
}

fn plan_rollback(
    connect_opts: &ConnectOpts,
    repo: &RepoOpts,
    map_opts: &MapOpts,
    to: Option<&str>,
    skip_missing_down: bool,
    output: &OutputOpts,
) -> Result<ExitCode> {
    let settings = resolve_settings(connect_opts, repo, map_opts)?;
    let map = load_map_from(settings.map.as_ref().map(|m| m.value.as_path()))?;
    let to = rollback_target(&map, to.unwrap_or_default())?;
    let req = RollbackRequest {
        to: to.clone(),
        skip_missing_down,
    };
    let opts = read_only_options(map, to.clone());
    let (steps, database) = runtime()?.block_on(async {
        let connected = connect(&settings, !is_interactive(false)).await?;
        let store = &connected.store;
        let plan = rollback::full_plan(&opts)?;
        let entries = crate::store::journal::read_entries(store).await?;
        let steps = rollback::decide_rollback(&opts, &plan, store, &req, &entries).await;
        Ok::<_, Error>((steps, store.redacted_uri.clone()))
    })?;
    let plan = RollbackPlan {
        schema: crate::json_schemas::ROLLBACK_PLAN,
        to: display(&to),
        steps,
    };
    if output.json {
        ui::print_json(&plan)?;
    } else {
        ui::print_text(&render(&plan, &database))?;
    }
    // The plan is shown; the exit code says the rollback would refuse.
    match rollback::refusal(&plan.steps) {
        Some(refused) => Err(refused),
        None => Ok(ExitCode::Success),
    }
}

/// The run options a rollback has no use for are refused, not ignored.
fn refuse_upgrade_only_flags(args: &RollbackArgs) -> Result<()> {
    let given: Vec<&str> = [
        (args.run.force, "--force"),
        (!args.run.approve.is_empty(), "--approve"),
    ]
    .into_iter()
    .filter_map(|(set, flag)| set.then_some(flag))
    .collect();
    if given.is_empty() {
        return Ok(());
    }
    Err(Error::usage(
        format!("{} only appl{} to upgrade", given.join(" and "), if given.len() == 1 { "ies" } else { "y" }),
        "remove it: a rollback undoes only applied steps with a declared down; --retry repeats a failed or interrupted down",
    ))
}

pub fn rollback_command(args: &RollbackArgs) -> Result<ExitCode> {
    refuse_upgrade_only_flags(args)?;
    if args.run.dry_run {
        // Deciding without touching anything is what `plan --rollback` does.
        return plan_rollback(
            &args.connect,
            &args.repo,
            &args.map,
            Some(args.to.as_str()),
            args.skip_missing_down,
            &args.output,
        );
    }
    if args.run.backup.is_none() && !args.run.no_backup {
        return Err(Error::usage(
            "a rollback must say whether to back up the database first",
            "pass --backup DIR (recommended: a down changes data too) or --no-backup",
        ));
    }
    let settings = resolve_settings(&args.connect, &args.repo, &args.map)?;
    let map = load_map_from(settings.map.as_ref().map(|m| m.value.as_path()))?;
    let to = rollback_target(&map, &args.to)?;
    let repo = match settings.repo.as_ref() {
        Some(spec) => Some(open_repo_spec(&spec.value)?),
        None => None,
    };
    let req = RollbackRequest {
        to: to.clone(),
        skip_missing_down: args.skip_missing_down,
    };
    let key_var = settings.encryption_key_env.value.clone();
    let interactive = is_interactive(args.run.yes);
    let mut reporter: Box<dyn Reporter> = if args.output.json {
        Box::new(JsonReporter)
    } else {
        Box::new(TextReporter {
            styler: Styler::for_stderr(),
            echo_output: tracing::enabled!(tracing::Level::DEBUG),
        })
    };
    let newest = map.newest_version()?;
    let summary = runtime()?.block_on(async {
        let connected = connect(&settings, !interactive).await?;
        let mut connection = Connection {
            mongo_uri: connected.uri.clone(),
            encryption_key: std::env::var(&key_var)
                .ok()
                .filter(|k| !k.is_empty())
                .map(Into::into),
            private_env: settings.private_env_vars(),
            ..Connection::default()
        };
        let mut opts = read_only_options(map, newest);
        opts.flags = Flags {
            retry: args.run.retry,
            force: false,
        };
        opts.dry_run = false;
        opts.keep_worktrees = args.run.keep_worktrees;
        opts.repair_worktrees = args.run.repair;
        opts.toolchain = args.run_env.toolchain;
        opts.allow_provision = !args.run.no_provision;
        opts.quiet_secs = args.run.quiet_secs;
        opts.step_timeout = args.run.step_timeout.map(Duration::from_secs);
        opts.grace = Duration::from_secs(args.run.grace_secs);
        opts.lease = Duration::from_secs(args.run.lease_secs.max(1));
        opts.lock_wait = Duration::from_secs(args.run.lock_wait_secs);
        opts.backup_dir = args.run.backup.clone();
        // A throwaway Redis lives for this run only, when a step to undo boots the app.
        let mut _throwaway = None;
        let plan = rollback::full_plan(&opts)?;
        if plan.steps().any(|(_, s)| s.needs.contains(&Need::Redis)) {
            let url = if settings.redis_is_auto() {
                let redis = crate::redis_auto::start_throwaway_redis(&opts.state_dir).await?;
                let url = crate::redact::Uri::new(redis.url.as_str());
                _throwaway = Some(redis);
                url
            } else {
                settings.redis_url.value.clone()
            };
            redis_connection(&url, &mut connection)?;
        }
        opts.connection = connection;
        let run_store = MongoRunStore::new(
            &connected.store,
            &connected.uri,
            &opts.state_dir,
            opts.lease,
        );
        let workspace = repo
            .as_ref()
            .map(|repo| GitWorkspace::new(repo, &opts.cache_root, opts.allow_provision));
        // A rollback asks nothing (`--force`/`--approve` are refused above).
        let unattended = opts.approvals.clone();
        let mut surroundings = RollbackSurroundings { interactive };
        let mut fx = Effects {
            store: Arc::new(run_store),
            workspace: workspace.as_ref().map(|w| w as &dyn Workspace),
            children: &ProcessChildren,
            clock: Arc::new(SystemClock),
            tunnel: None,
            prompt: &unattended,
            surroundings: &mut surroundings,
            reporter: reporter.as_mut(),
        };
        let result = rollback::run_rollback(&opts, &req, &connected.store, &mut fx).await;
        drop(fx);
        if let Some(t) = connected.tunnel {
            t.close().await;
        }
        result
    })?;
    if !args.output.json {
        ui::print_text(&format!(
            "Rollback to {} done: {} undone, {} skipped.\n",
            display(&to),
            summary.succeeded,
            summary.skipped
        ))?;
    }
    Ok(ExitCode::Success)
}

/// What surrounds a rollback: the signal handlers (its services and checks are set up by
/// `rollback_command` before it starts).
struct RollbackSurroundings {
    interactive: bool,
}

impl Surroundings for RollbackSurroundings {
    fn prepare<'a>(
        &'a mut self,
        _opts: &'a mut UpgradeOptions,
        _full: &'a Plan,
        _to_run: &'a Plan,
        _reporter: &'a mut dyn crate::ui::events::Reporter,
    ) -> LocalBoxFuture<'a, Result<()>> {
        Box::pin(async { Ok(()) })
    }

    fn watch_signals(&mut self) -> Result<Arc<SignalWatcher>> {
        Ok(Arc::new(SignalWatcher::install(if self.interactive {
            SignalPolicy::Interactive
        } else {
            SignalPolicy::Unattended
        })?))
    }
}
