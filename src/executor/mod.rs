//! The executor: runs the steps of an upgrade, one run at a time, journalled, verified and
//! resumable.
//!
//! Order of a run: connect -> take the run lock (lease renewed by heartbeat) -> settle what a
//! dead run left `running` (ending its orphaned process group first) -> read the journal and
//! the data -> decide every step -> per tag: worktree, toolchain, setup (cached) -> per step:
//! journal `running` -> spawn -> journal the child's group -> wait (hang detection) -> verify
//! the data -> journal the outcome -> release the lock.

pub mod approval;
pub mod command;
pub mod decide;
pub mod lockfile;

mod facts;
mod lock;
mod prepare;
mod recovery;
mod setup;
mod step;
mod stop;

pub use facts::{
    decide_all, decide_steps, full_plan, plan_event, read_data, DataStates, KnownFacts,
};
pub use recovery::tunnel_rerun_is_safe;
pub use setup::setup_fix;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::git::{GitRepo, Worktrees};
use crate::plan::Plan;
use crate::release_map::ReleaseMap;
use crate::runner::process::StopRequest;
use crate::runner::signals::SignalWatcher;
use crate::runner::toolchain::{self, ToolchainPolicy, ToolchainRequest};
use crate::store::fingerprint::FpState;
use crate::store::journal::{Actor, Journal, StepStatus};
use crate::store::lock::RunLock;
use crate::store::mirror::Mirror;
use crate::store::Store;
use crate::tunnel::Tunnel;
use crate::ui::events::{Reporter, RunEvent};
use command::Connection;
use decide::{Action, Decision, Flags};
use facts::*;
use lock::*;
use prepare::*;
use recovery::*;
use setup::*;
use step::*;
use stop::*;

/// Everything a run needs, resolved by the command layer.
pub struct UpgradeOptions {
    pub map: ReleaseMap,
    /// `--from`; None: the journal and the data decide every step.
    pub from: Option<semver::Version>,
    pub to: semver::Version,
    pub include_unreleased: bool,
    pub repo: Option<GitRepo>,
    pub connection: Connection,
    pub flags: Flags,
    pub dry_run: bool,
    pub keep_worktrees: bool,
    /// Reset worktrees with local changes to their tag.
    pub repair_worktrees: bool,
    /// Back up the database here before the first step runs.
    pub backup_dir: Option<PathBuf>,
    pub toolchain: ToolchainPolicy,
    pub allow_provision: bool,
    /// Overrides the map's quiet window for scripts that never exit.
    pub quiet_secs: Option<u64>,
    pub step_timeout: Option<Duration>,
    pub grace: Duration,
    pub lease: Duration,
    pub lock_wait: Duration,
    pub cache_root: PathBuf,
    pub state_dir: PathBuf,
    pub check_time_limit: Duration,
    /// What the operator approved (`--yes`, `--approve`, answers at the terminal).
    pub approvals: approval::Approvals,
}

/// One step with everything decided about it.
#[derive(Debug, Clone)]
pub struct DecidedStep {
    pub group: usize,
    pub id: String,
    pub git_ref: String,
    pub decision: Decision,
    /// What its data check said (None: the step is not in the map).
    pub data: Option<FpState>,
}

#[derive(Debug, Clone, Default)]
pub struct Summary {
    pub ran: usize,
    pub succeeded: usize,
    pub skipped: usize,
    pub failed: usize,
}

/// The run: everything after the options are resolved. `known`: the facts a decision before
/// the run was made from (the guided flow's), reused when the journal has not changed.
pub async fn run_upgrade(
    opts: &UpgradeOptions,
    store: &Store,
    watcher: Arc<SignalWatcher>,
    reporter: &mut dyn Reporter,
    tunnel: Option<&mut Tunnel>,
    known: Option<KnownFacts>,
) -> Result<Summary> {
    let started = Instant::now();
    let plan = full_plan(opts)?;
    let mirror = Mirror::for_database(&opts.state_dir, &store.redacted_uri);
    let actor = Actor::current();
    let journal = Journal::new(store, actor.clone(), mirror).with_heartbeat_lease(opts.lease);

    if opts.dry_run {
        // Reads only: no lock, no journal write, no script.
        let entries = crate::store::journal::read_entries(store).await?;
        let decided = decide_steps(opts, &plan, store, &entries).await;
        reporter.report(&plan_event(&decided));
        for step in approval::risky_steps(&opts.map, &plan, &decided)
            .iter()
            .filter(|r| r.needs_approval && !opts.approvals.steps.contains(&r.id))
        {
            reporter.report(&RunEvent::Notice {
                message: format!(
                    "{} would need --approve {}: not idempotent, and no data check can tell \
                     whether it ran",
                    step.id, step.id
                ),
            });
        }
        // In a dry run, `ran` counts the steps that would run.
        let summary = Summary {
            ran: decided
                .iter()
                .filter(|d| d.decision.action == Action::Run)
                .count(),
            skipped: decided
                .iter()
                .filter(|d| d.decision.action == Action::Skip)
                .count(),
            ..Summary::default()
        };
        return Ok(summary);
    }

    // A journal or lock from a newer upstep is refused before anything is written.
    crate::store::journal::ensure_readable(store).await?;
    let lock = RunLock::new(store);
    take_lock(&lock, &journal, opts, reporter).await?;
    let lost = Arc::new(AtomicBool::new(false));
    let heartbeat = spawn_heartbeat(
        store,
        actor.clone(),
        opts.lease,
        watcher.clone(),
        lost.clone(),
    );
    // Owned here so a failed run still reports what it did.
    let mut summary = Summary::default();
    let result = run_locked(
        opts,
        &plan,
        store,
        &journal,
        &watcher,
        &lost,
        reporter,
        tunnel,
        known,
        &mut summary,
    )
    .await;
    heartbeat.abort();
    // Release even after a failure; a lost lock is not ours to release.
    if !lost.load(Ordering::SeqCst) {
        if let Err(e) = lock.release(&actor).await {
            tracing::warn!("could not release the run lock: {e}");
        }
    }
    if matches!(&result, Err(Error::StepFailed(_))) {
        summary.failed += 1;
    }
    let status = match &result {
        Ok(_) => "succeeded".to_string(),
        Err(e) => e.code().name().to_string(),
    };
    reporter.report(&RunEvent::Summary {
        ran: summary.ran,
        succeeded: summary.succeeded,
        skipped: summary.skipped,
        failed: summary.failed,
        status,
        duration_ms: started.elapsed().as_millis() as u64,
    });
    result
}

#[allow(clippy::too_many_arguments)]
async fn run_locked(
    opts: &UpgradeOptions,
    plan: &Plan,
    store: &Store,
    journal: &Journal,
    watcher: &Arc<SignalWatcher>,
    lost: &Arc<AtomicBool>,
    reporter: &mut dyn Reporter,
    mut tunnel: Option<&mut Tunnel>,
    known: Option<KnownFacts>,
    summary: &mut Summary,
) -> Result<Summary> {
    journal
        .event(
            "run-started",
            None,
            bson::doc! { "to": plan.to.clone(), "dry_run": false },
        )
        .await?;
    settle_abandoned(journal, opts).await?;
    let entries = journal.entries().await?;
    // One decision: the data read before the run is reused while the journal is unchanged.
    let data = match known {
        Some(known) if same_journal(&known.entries, &entries) => known.data,
        _ => DataStates::default(),
    };
    let data = read_data(opts, plan, store, data).await;
    let decided = decide_all(opts, plan, &entries, &data);
    reporter.report(&plan_event(&decided));
    if let Some(repo) = opts.repo.as_ref() {
        check_journalled_scripts(plan, repo, &entries, &decided, journal, reporter).await?;
    }

    let blocked: Vec<&DecidedStep> = decided
        .iter()
        .filter(|d| d.decision.action == Action::Block)
        .collect();
    if !blocked.is_empty() {
        let list: Vec<String> = blocked
            .iter()
            .map(|d| format!("{}: {}", d.id, d.decision.reason))
            .collect();
        return Err(Error::NeedsDecision(format!(
            "the journal needs a decision before the upgrade can go on:\n  {}",
            list.join("\n  ")
        )));
    }
    approval::check(
        &approval::risky_steps(&opts.map, plan, &decided),
        &opts.approvals,
    )?;
    for d in decided
        .iter()
        .filter(|d| d.decision.unknown && d.decision.action == Action::Run)
    {
        reporter.report(&RunEvent::Notice {
            message: format!(
                "{}: no data check can tell whether it is applied; running it as planned",
                d.id
            ),
        });
    }

    summary.skipped = decided
        .iter()
        .filter(|d| d.decision.action == Action::Skip)
        .count();
    let to_run: Vec<&DecidedStep> = decided
        .iter()
        .filter(|d| d.decision.action == Action::Run)
        .collect();
    if to_run.is_empty() {
        reporter.report(&RunEvent::Notice {
            message: "nothing to run: every step is applied".into(),
        });
        return Ok(summary.clone());
    }
    let repo = opts.repo.as_ref().ok_or_else(|| {
        Error::usage(
            "running scripts needs the project's code",
            "pass --repo <path or URL of the project's repository>",
        )
    })?;
    stop_requested(watcher, lost)?;
    check_downloads(opts, plan, repo, &to_run).await?;
    let backup = until_stopped(watcher, lost, take_backup(opts, journal, reporter)).await?;
    let worktrees = Worktrees::new(&opts.cache_root);
    let total = to_run.len();
    let mut index = 0;

    for (g, group) in plan.groups.iter().enumerate() {
        let steps: Vec<&&DecidedStep> = to_run.iter().filter(|d| d.group == g).collect();
        if steps.is_empty() {
            continue;
        }
        stop_requested(watcher, lost)?;
        let tag = crate::repo_facts::resolve_group_ref(repo, group)?;
        let worktree = until_stopped(
            watcher,
            lost,
            prepare_worktree(&worktrees, repo, &tag, opts.repair_worktrees, reporter),
        )
        .await?;
        let era = group_era(&opts.map, group)?;
        stop_requested(watcher, lost)?;
        let choice = setup_choice(era, group, &steps);
        // Dropping the resolution (on a stop) ends its npm install's group.
        let toolchain = until_stopped(
            watcher,
            lost,
            toolchain::resolve(
                &ToolchainRequest {
                    node: group.node.clone(),
                    node_range: group.node_engines.clone(),
                    pnpm: if choice.commands.is_empty() {
                        None
                    } else {
                        group.pnpm.clone()
                    },
                    policy: opts.toolchain,
                },
                &opts.cache_root,
                &std::env::var_os("PATH").unwrap_or_default(),
                opts.allow_provision,
            ),
        )
        .await?;
        reporter.report(&RunEvent::Notice {
            message: format!(
                "{}: node {} from {}",
                group.git_ref, toolchain.node_version, toolchain.node_source
            ),
        });
        let mut path_prefix = vec![toolchain.node_dir.clone()];
        path_prefix.extend(toolchain.pnpm_dir.clone());
        let setup_plan = SetupPlan {
            git_ref: &group.git_ref,
            era,
            choice,
            repair_lockfile: group.repair_lockfile.as_deref(),
            commit: &tag.commit,
            node_version: &toolchain.node_version,
            pnpm: group.pnpm.as_deref(),
            node_headers: toolchain::node_headers_prefix(&toolchain.node_dir),
        };
        let setup = run_setup(
            opts,
            &setup_plan,
            &worktree.path,
            &path_prefix,
            journal,
            watcher,
            lost,
            reporter,
        )
        .await;
        if let Err(e) = setup {
            // A failed setup leaves a half-installed tree that no later run may build on (an
            // interrupted one has no setup stamp either, and a stop must stay quick).
            if !opts.keep_worktrees && !matches!(e, Error::Interrupted | Error::Terminated) {
                remove_worktree(&worktrees, repo, &tag, reporter);
            }
            return Err(e);
        }

        for step in steps {
            // A stop that came between steps (or during the setup) starts no further step.
            stop_requested(watcher, lost)?;
            index += 1;
            let at = StepAt {
                group_index: g,
                commit: &tag.commit,
                worktree: &worktree.path,
                path_prefix: &path_prefix,
                backup: backup.as_deref(),
                index,
                total,
            };
            let outcome = loop {
                let dropped = Arc::new(AtomicBool::new(false));
                let tunnel_rx = tunnel.as_ref().map(|t| t.watch());
                let (stop, forwarder) =
                    step_stop_channel(watcher, tunnel_rx.clone(), dropped.clone());
                let ctx = StepCtx {
                    stop,
                    tunnel_dropped: &dropped,
                    tunnel: tunnel_rx,
                };
                let outcome = run_step(
                    opts, plan, &step.id, &at, &ctx, repo, store, journal, lost, reporter,
                )
                .await;
                forwarder.abort();
                let outcome = outcome?;
                match (outcome, tunnel.as_deref_mut()) {
                    (StepStatus::Interrupted, Some(t)) if dropped.load(Ordering::SeqCst) => {
                        recover_after_tunnel_drop(t, opts, store, journal, &step.id, reporter)
                            .await?;
                    }
                    (outcome, _) => break outcome,
                }
            };
            summary.ran += 1;
            match outcome {
                StepStatus::Succeeded => summary.succeeded += 1,
                StepStatus::EndedUnverified => {
                    return Err(Error::NeedsDecision(format!(
                        "{id} never exited and was ended after its quiet window, but nothing proves it had finished (no done line, no data check); later steps were not run.\n  choices: `upstep mark {id} --applied` if its work is done, re-run with --retry to run it again, or stop here",
                        id = step.id
                    )));
                }
                StepStatus::Interrupted => {
                    return Err(if lost.load(Ordering::SeqCst) {
                        Error::Locked("the run lock was lost mid-step (another run took over after the lease expired); the step is recorded as interrupted".into())
                    } else {
                        stop_error(watcher, lost)
                    });
                }
                _ => {
                    return Err(Error::StepFailed(format!(
                        "step {} failed; later steps were not run. See its log and `upstep status`; fix the cause, then re-run with --retry",
                        step.id
                    )));
                }
            }
            if watcher.current() == StopRequest::AfterStep {
                return Err(Error::Interrupted);
            }
        }
        // Its steps are settled: free its disk (a prepared tag holds gigabytes of
        // node_modules) before the next tag is prepared. A failed step returned above and
        // keeps its tag's worktree for the retry.
        let needed_later = plan.groups[g + 1..].iter().zip(g + 1..).any(|(later, h)| {
            later.git_ref == group.git_ref && to_run.iter().any(|d| d.group == h)
        });
        if !opts.keep_worktrees && !needed_later {
            remove_worktree(&worktrees, repo, &tag, reporter);
        }
    }
    journal
        .event(
            "run-finished",
            None,
            bson::doc! { "ran": summary.ran as i64, "skipped": summary.skipped as i64 },
        )
        .await?;
    Ok(summary.clone())
}
