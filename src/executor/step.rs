//! One step: journal `running` -> spawn -> journal the child's group -> wait (hang detection)
//! -> classify the ending -> verify the data (`verify.rs`) -> journal the outcome. A step
//! stopped by a dropped tunnel runs again once the tunnel is back, when that is safe.

use std::path::{Path, PathBuf};
use std::time::Duration;

use futures_util::future::BoxFuture;
use sha2::{Digest, Sha256};

use super::command::{self, StepCommand};
use super::effects::{DataChecks, Effects, Workspace};
use super::prepare::group_era;
use super::recovery::recover_after_tunnel_drop;
use super::stop::{StepCtx, Stops};
use super::verify::verify;
use super::UpgradeOptions;
use crate::error::{Error, Result};
use crate::plan::{Plan, PlanStep};
use crate::release_map::{Era, Exits, Fingerprint, Migration};
use crate::runner::process::{
    ChildSpec, Ending, FinishProbe, ProbeAnswer, RunOutcome, Stream, Watch,
};
use crate::store::fingerprint::{EvalOptions, FpState};
use crate::store::journal::{EndedBy, StepEnd, StepStart, StepStatus};
use crate::ui::events::RunEvent;

/// Where and as what a step runs.
pub(super) struct StepAt<'a> {
    pub(super) group_index: usize,
    pub(super) commit: &'a str,
    pub(super) worktree: &'a Path,
    pub(super) path_prefix: &'a [PathBuf],
    pub(super) backup: Option<&'a str>,
    pub(super) index: usize,
    pub(super) total: usize,
}

/// How a step ended for the run, once the journal has its outcome.
pub(super) enum Settled {
    /// Its script ran to an ending, journalled with this status.
    Ended(StepStatus),
    /// Its script could not be started or watched to its end: journalled failed, and this
    /// error (what went wrong) stops the run.
    FailedToRun(Error),
}

impl Settled {
    /// The status the journal holds for the step.
    pub(super) fn status(&self) -> StepStatus {
        match self {
            Settled::Ended(status) => *status,
            Settled::FailedToRun(_) => StepStatus::Failed,
        }
    }
}

/// Run one step until it is settled: a step interrupted by a dropped tunnel is settled in the
/// journal once the tunnel is back, and runs again when repeating it is safe.
pub(super) async fn run_until_settled(
    opts: &UpgradeOptions,
    plan: &Plan,
    id: &str,
    at: &StepAt<'_>,
    stops: &Stops,
    fx: &mut Effects<'_>,
) -> Result<Settled> {
    loop {
        let ctx = StepCtx::new(&stops.watcher, fx.tunnel.as_ref().map(|t| t.watch()));
        let settled = run_step(opts, plan, id, at, &ctx, stops, fx).await?;
        let dropped = ctx.tunnel_dropped();
        drop(ctx);
        if settled.status() == StepStatus::Interrupted && dropped && fx.tunnel.is_some() {
            recover_after_tunnel_drop(opts, id, fx).await?;
            continue;
        }
        return Ok(settled);
    }
}

/// What a settled step means for the run: go on, or stop with the operator's choices.
pub(super) fn go_on_after(settled: Settled, id: &str, stops: &Stops) -> Result<()> {
    let status = match settled {
        Settled::Ended(status) => status,
        Settled::FailedToRun(e) => return Err(e),
    };
    match status {
        StepStatus::Succeeded => Ok(()),
        StepStatus::EndedUnverified => Err(Error::NeedsDecision(format!(
            "{id} never exited and was ended after its quiet window, but nothing proves it had finished (no done line, no data check); later steps were not run.\n  choices: `upstep mark {id} --applied` if its work is done, re-run with --retry to run it again, or stop here"
        ))),
        StepStatus::Interrupted if stops.lock_lost() => Err(Error::Locked(
            "the run lock was lost mid-step (another run took over after the lease expired); the step is recorded as interrupted".into(),
        )),
        StepStatus::Interrupted => Err(stops.error()),
        _ => Err(Error::StepFailed(format!(
            "step {id} failed; later steps were not run. See its log and `upstep status`; fix the cause, then re-run with --retry"
        ))),
    }
}

/// The step's plan entry, its migration and its era.
struct StepDef<'p> {
    step: &'p PlanStep,
    git_ref: &'p str,
    migration: &'p Migration,
    era: &'p Era,
}

fn step_def<'p>(
    opts: &'p UpgradeOptions,
    plan: &'p Plan,
    at: &StepAt<'_>,
    id: &str,
) -> Result<StepDef<'p>> {
    let group = &plan.groups[at.group_index];
    let step = group
        .steps
        .iter()
        .find(|s| s.id == id)
        .ok_or_else(|| Error::Internal(format!("{id} not in its group")))?;
    let migration = opts
        .map
        .migration(id)
        .ok_or_else(|| Error::Internal(format!("{id} not in the map")))?;
    let era = group_era(&opts.map, group)?;
    Ok(StepDef {
        step,
        git_ref: &group.git_ref,
        migration,
        era,
    })
}

#[allow(clippy::too_many_arguments)]
async fn run_step(
    opts: &UpgradeOptions,
    plan: &Plan,
    id: &str,
    at: &StepAt<'_>,
    ctx: &StepCtx,
    stops: &Stops,
    fx: &mut Effects<'_>,
) -> Result<Settled> {
    let def = step_def(opts, plan, at, id)?;
    begin(&def, id, at, fx).await?;
    let cmd = super::command_step::step_command(
        at.worktree,
        def.era,
        &def.step.mode,
        &def.step.script,
        id,
        &def.migration.name,
    )?;
    let log_file = opts
        .state_dir
        .join("logs")
        .join(&fx.store.actor().run_id)
        .join(format!("{:02}-{id}.log", at.index));
    let quiet = def
        .step
        .mode
        .quiet_secs
        .or(opts.quiet_secs)
        .unwrap_or(opts.map.project.quiet_secs);
    let launch = Launch {
        cmd: &cmd,
        log_file: &log_file,
        quiet,
        path_prefix: at.path_prefix,
    };
    let outcome = match run_child(opts, &def, id, &launch, ctx, fx).await? {
        Ok(outcome) => outcome,
        Err(e) => return Ok(Settled::FailedToRun(e)),
    };
    let ended_badly = ended_badly(&outcome);
    let tunnel_down = ended_badly && ctx.tunnel_went_down().await;
    let ending = Classify {
        tunnel_down,
        tunnel_dropped: ctx.tunnel_dropped(),
        lock_lost: stops.lock_lost(),
        quiet,
        step_timeout: opts.step_timeout,
    }
    .classify(&outcome);
    let (status, reason) = verify(
        opts,
        id,
        &def.migration.fingerprint,
        ending.status,
        ending.reason,
        fx,
    )
    .await;
    let end = StepEnd {
        exit_code: outcome.exit_code,
        signal: outcome.signal,
        ended_by: ending.ended_by,
        reason: reason.clone(),
        duration_ms: outcome.duration.as_millis() as i64,
        output_tail: outcome.tail.clone(),
    };
    settle(id, status, &end, ctx, fx).await?;
    fx.reporter.report(&RunEvent::StepFinished {
        id: id.into(),
        status: status.as_str().into(),
        ended_by: ending.ended_by.as_str().into(),
        reason: format!("{reason} (log: {})", log_file.display()),
        duration_ms: outcome.duration.as_millis() as u64,
    });
    Ok(Settled::Ended(status))
}

/// Journal the step as running (with the script's checksum), then say so.
async fn begin(def: &StepDef<'_>, id: &str, at: &StepAt<'_>, fx: &mut Effects<'_>) -> Result<()> {
    let workspace = fx
        .workspace
        .ok_or_else(|| Error::Internal("a step runs without the project's code".into()))?;
    let sha = script_sha256(workspace, at.commit, &def.step.script)?;
    fx.store
        .begin_step(&StepStart {
            id,
            tag: def.git_ref,
            commit: at.commit,
            script: &def.step.script,
            script_sha256: &sha,
            backup: at.backup,
        })
        .await?;
    fx.reporter.report(&RunEvent::StepStarted {
        index: at.index,
        total: at.total,
        id: id.into(),
        git_ref: def.git_ref.into(),
        runs_as: def.step.runs_as.clone(),
        warnings: def.step.warnings.clone(),
    });
    Ok(())
}

/// How a step's script is started and watched.
struct Launch<'a> {
    cmd: &'a StepCommand,
    log_file: &'a Path,
    quiet: u64,
    path_prefix: &'a [PathBuf],
}

/// Spawn the script, journal its group, stream its output until it ends. A script that could
/// not start, or a wait that failed, is settled as failed: the inner error says why.
async fn run_child(
    opts: &UpgradeOptions,
    def: &StepDef<'_>,
    id: &str,
    launch: &Launch<'_>,
    ctx: &StepCtx,
    fx: &mut Effects<'_>,
) -> Result<Result<RunOutcome, Error>> {
    let cmd = launch.cmd;
    let spec = ChildSpec {
        program: cmd.program.clone(),
        args: cmd.args.clone(),
        cwd: cmd.cwd.clone(),
        env: command::era_env(def.era, &opts.connection),
        env_remove: opts.connection.private_env.clone(),
        path_prefix: launch.path_prefix.to_vec(),
        log_file: launch.log_file.to_path_buf(),
        log_append: false,
        secrets: opts.connection.secrets(),
    };
    let started = fx.clock.now();
    let child = match fx.children.spawn(&spec) {
        Ok(child) => child,
        Err(e) => {
            return fail(id, EndedBy::SpawnFailed, e, Duration::ZERO, fx)
                .await
                .map(Err)
        }
    };
    fx.store.record_child(id, child.pid(), child.pgid()).await?;
    // A script whose output never reaches us cannot print a done line: its quiet window and
    // data check end it (a declared done line would disable the quiet window).
    let mut done_lines = if def.step.mode.prints_nothing {
        Vec::new()
    } else {
        def.era.done_lines.clone()
    };
    done_lines.extend(def.step.mode.done_line.clone());
    let watch = Watch {
        finish_detection: def.step.mode.exits != Exits::Yes,
        quiet_window: Duration::from_secs(launch.quiet),
        done_lines,
        timeout: opts.step_timeout,
        grace: opts.grace,
    };
    let store = fx.store.clone();
    let mut probe = DataProbe {
        checks: store.checks(),
        fingerprint: def.migration.fingerprint.clone(),
        time_limit: opts.check_time_limit,
    };
    // Output goes to the reporter as it comes (a spinner's latest line, JSON events).
    let reporter = &mut *fx.reporter;
    let outcome = child
        .wait(watch, ctx.stop.clone(), Some(&mut probe), &mut |line| {
            let stream = match line.stream {
                Stream::Stdout => "stdout",
                Stream::Stderr => "stderr",
            };
            reporter.report(&RunEvent::Output {
                id: id.into(),
                stream: stream.into(),
                line: line.text,
            });
        })
        .await;
    if let Some(shim) = &cmd.shim {
        let _ = std::fs::remove_file(shim);
    }
    match outcome {
        Ok(outcome) => Ok(Ok(outcome)),
        Err(e) => {
            let ran = fx.clock.now() - started;
            fail(id, EndedBy::Error, e, ran, fx).await.map(Err)
        }
    }
}

/// Settle a step that failed before it could be watched to its end, and say so; returns the
/// error once the journal has the failure (or the journal's own error when it could not be
/// written).
async fn fail(
    id: &str,
    ended_by: EndedBy,
    e: Error,
    ran: Duration,
    fx: &mut Effects<'_>,
) -> Result<Error> {
    let end = StepEnd {
        duration_ms: ran.as_millis() as i64,
        ..StepEnd::without_outcome(ended_by, e.to_string())
    };
    fx.store.settle(id, StepStatus::Failed, &end).await?;
    fx.reporter.report(&RunEvent::StepFinished {
        id: id.into(),
        status: StepStatus::Failed.as_str().into(),
        ended_by: ended_by.as_str().into(),
        reason: end.reason,
        duration_ms: ran.as_millis() as u64,
    });
    Ok(e)
}

/// Whether the script ended in a way that is not a success (a dropped tunnel may explain it).
fn ended_badly(outcome: &RunOutcome) -> bool {
    !matches!(
        outcome.ending,
        Ending::Exited
            | Ending::DoneLine { .. }
            | Ending::QuietAndFinished
            | Ending::QuietUnverified
    ) || outcome.exit_code.is_some_and(|c| c != 0)
        || (outcome.ending == Ending::Exited && outcome.exit_code.is_none())
}

/// What the run knew when the script ended, to name how it ended.
pub(super) struct Classify {
    pub(super) tunnel_down: bool,
    pub(super) tunnel_dropped: bool,
    pub(super) lock_lost: bool,
    pub(super) quiet: u64,
    pub(super) step_timeout: Option<Duration>,
}

/// How a script ended, before its data is verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Ended {
    pub(super) status: StepStatus,
    pub(super) ended_by: EndedBy,
    pub(super) reason: String,
}

impl Classify {
    pub(super) fn classify(&self, outcome: &RunOutcome) -> Ended {
        let ended = |status, ended_by, reason: String| Ended {
            status,
            ended_by,
            reason,
        };
        let quiet = self.quiet;
        match &outcome.ending {
            _ if self.tunnel_down => ended(
                StepStatus::Interrupted,
                EndedBy::TunnelDropped,
                format!(
                    "ended ({}) when the SSH tunnel to the database dropped",
                    match (outcome.exit_code, outcome.signal) {
                        (Some(c), _) => format!("exit {c}"),
                        (None, Some(sig)) => format!("signal {sig}"),
                        _ => "stopped".to_string(),
                    }
                ),
            ),
            Ending::Stopped { signal } if self.tunnel_dropped => ended(
                StepStatus::Interrupted,
                EndedBy::TunnelDropped,
                format!("stopped (signal {signal}): the SSH tunnel to the database dropped"),
            ),
            Ending::Stopped { signal } if self.lock_lost => ended(
                StepStatus::Interrupted,
                EndedBy::LeaseLost,
                format!("stopped (signal {signal}): the run lock was lost"),
            ),
            Ending::Stopped { signal } => ended(
                StepStatus::Interrupted,
                EndedBy::Signal,
                format!("stopped by signal {signal}"),
            ),
            Ending::TimedOut => ended(
                StepStatus::Failed,
                EndedBy::Timeout,
                format!("ran longer than {:?}", self.step_timeout.unwrap_or_default()),
            ),
            Ending::Exited if outcome.exit_code != Some(0) => ended(
                StepStatus::Failed,
                EndedBy::Exited,
                match (outcome.exit_code, outcome.signal) {
                    (Some(code), _) => format!("exited with code {code}"),
                    (None, Some(sig)) => format!("killed by signal {sig}"),
                    _ => "ended abnormally".to_string(),
                },
            ),
            Ending::Exited => ended(StepStatus::Succeeded, EndedBy::Exited, "exited 0".to_string()),
            Ending::DoneLine { line } => ended(
                StepStatus::Succeeded,
                EndedBy::DoneLine,
                format!("printed {line:?}; ended by upstep"),
            ),
            Ending::QuietAndFinished => ended(
                StepStatus::Succeeded,
                EndedBy::QuietWindow,
                format!("silent and idle for {quiet}s with nothing pending; ended by upstep"),
            ),
            // Nothing proves it finished: the operator decides (`upstep mark` or --retry).
            Ending::QuietUnverified => ended(
                StepStatus::EndedUnverified,
                EndedBy::QuietWindow,
                format!("silent and idle for {quiet}s, with no done line and no data check to prove it had finished; ended by upstep"),
            ),
        }
    }
}

/// Journal the outcome. With the tunnel down the database is out of reach: the local mirror
/// keeps the record until the tunnel is back (see `recover_after_tunnel_drop`).
async fn settle(
    id: &str,
    status: StepStatus,
    end: &StepEnd,
    ctx: &StepCtx,
    fx: &mut Effects<'_>,
) -> Result<()> {
    if let Err(e) = fx.store.settle(id, status, end).await {
        if !ctx.tunnel_dropped() {
            return Err(e);
        }
        fx.store.mirror().append(&bson::doc! {
            "at": bson::DateTime::now(), "run_id": &fx.store.actor().run_id, "kind": "step-interrupted",
            "migration": id, "details": { "ended_by": end.ended_by.as_str(), "reason": &end.reason },
        });
    }
    Ok(())
}

/// The data check used to recognise a finished script that never exits.
struct DataProbe<'a> {
    checks: &'a dyn DataChecks,
    fingerprint: Fingerprint,
    time_limit: Duration,
}

impl FinishProbe for DataProbe<'_> {
    fn finished(&mut self) -> BoxFuture<'_, ProbeAnswer> {
        Box::pin(async move {
            if matches!(self.fingerprint, Fingerprint::Unknown { .. }) {
                return ProbeAnswer::Unknown;
            }
            let opts = EvalOptions {
                time_limit: self.time_limit,
                count_limit: None,
            };
            match self.checks.check(&self.fingerprint, opts).await.state {
                s if s.nothing_pending() => ProbeAnswer::Finished,
                FpState::Pending => ProbeAnswer::NotYet,
                _ => ProbeAnswer::Unknown,
            }
        })
    }
}

/// sha256 of the script at its tag (pinned algorithm: compared across upstep versions).
pub(super) fn script_sha256(repo: &dyn Workspace, commit: &str, script: &str) -> Result<String> {
    let bytes = repo.read_file_at(commit, script)?.ok_or_else(|| {
        Error::repository(
            format!("{script} does not exist at commit {commit}"),
            "check the release map against the repository: `upstep map check --repo ...`",
        )
    })?;
    Ok(hex::encode(Sha256::digest(&bytes)))
}
