//! One step: journal `running` -> spawn -> wait (hang detection) -> classify the ending ->
//! verify the data -> journal the outcome.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use sha2::{Digest, Sha256};

use super::command::{self};
use super::prepare::*;
use super::stop::*;
use super::UpgradeOptions;
use crate::error::{Error, Result};
use crate::git::GitRepo;
use crate::plan::Plan;
use crate::release_map::{Exits, Fingerprint};
use crate::runner::process::{self, ChildSpec, Ending, FinishProbe, ProbeAnswer, Watch};
use crate::store::fingerprint::{self, EvalOptions, FpState};
use crate::store::journal::{Journal, StepEnd, StepStart, StepStatus};
use crate::store::Store;
use crate::ui::events::{Reporter, RunEvent};

/// The data check used to recognise a finished script that never exits.
pub(super) struct DataProbe {
    pub(super) db: mongodb::Database,
    pub(super) fingerprint: Fingerprint,
    pub(super) time_limit: Duration,
}

impl FinishProbe for DataProbe {
    fn finished(&mut self) -> BoxFuture<'_, ProbeAnswer> {
        Box::pin(async move {
            if matches!(self.fingerprint, Fingerprint::Unknown { .. }) {
                return ProbeAnswer::Unknown;
            }
            let opts = EvalOptions {
                time_limit: self.time_limit,
                count_limit: None,
            };
            match fingerprint::evaluate(&self.db, &self.fingerprint, opts)
                .await
                .state
            {
                s if s.nothing_pending() => ProbeAnswer::Finished,
                FpState::Pending => ProbeAnswer::NotYet,
                _ => ProbeAnswer::Unknown,
            }
        })
    }
}

/// sha256 of the script at its tag (pinned algorithm: compared across upstep versions).
pub(super) fn script_sha256(repo: &GitRepo, commit: &str, script: &str) -> Result<String> {
    let bytes = repo.read_file_at(commit, script)?.ok_or_else(|| {
        Error::repository(
            format!("{script} does not exist at commit {commit}"),
            "check the release map against the repository: `upstep map check --repo ...`",
        )
    })?;
    Ok(hex::encode(Sha256::digest(&bytes)))
}

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

#[allow(clippy::too_many_arguments)]
pub(super) async fn run_step(
    opts: &UpgradeOptions,
    plan: &Plan,
    id: &str,
    at: &StepAt<'_>,
    ctx: &StepCtx<'_>,
    repo: &GitRepo,
    store: &Store,
    journal: &Journal,
    lost: &Arc<AtomicBool>,
    reporter: &mut dyn Reporter,
) -> Result<StepStatus> {
    let StepAt {
        group_index,
        commit,
        worktree,
        path_prefix,
        backup,
        index,
        total,
    } = *at;
    let group = &plan.groups[group_index];
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
    let sha = script_sha256(repo, commit, &step.script)?;

    journal
        .begin_step(&StepStart {
            id,
            tag: &group.git_ref,
            commit,
            script: &step.script,
            script_sha256: &sha,
            backup,
        })
        .await?;
    reporter.report(&RunEvent::StepStarted {
        index,
        total,
        id: id.into(),
        git_ref: group.git_ref.clone(),
        runs_as: step.runs_as.clone(),
    });

    let cmd = command::step_command(worktree, era, &step.mode, &step.script, id)?;
    let log_file = opts
        .state_dir
        .join("logs")
        .join(&journal.actor().run_id)
        .join(format!("{index:02}-{id}.log"));
    let spec = ChildSpec {
        program: cmd.program.clone(),
        args: cmd.args.clone(),
        cwd: cmd.cwd.clone(),
        env: command::era_env(era, &opts.connection),
        env_remove: opts.connection.private_env.clone(),
        path_prefix: path_prefix.to_vec(),
        log_file: log_file.clone(),
        log_append: false,
        secrets: opts.connection.secrets(),
    };
    let started = Instant::now();
    let child = match process::spawn_child(&spec) {
        Ok(child) => child,
        Err(e) => {
            let end = StepEnd {
                ended_by: "spawn-failed".into(),
                reason: e.to_string(),
                ..StepEnd::default()
            };
            journal.settle(id, StepStatus::Failed, &end).await?;
            return Err(e);
        }
    };
    journal.record_child(id, child.pid(), child.pgid()).await?;

    let mut done_lines = era.done_lines.clone();
    done_lines.extend(step.mode.done_line.clone());
    let quiet = step
        .mode
        .quiet_secs
        .or(opts.quiet_secs)
        .unwrap_or(opts.map.project.quiet_secs);
    let watch = Watch {
        finish_detection: step.mode.exits != Exits::Yes,
        quiet_window: Duration::from_secs(quiet),
        done_lines,
        timeout: opts.step_timeout,
        grace: opts.grace,
    };
    let mut probe = DataProbe {
        db: store.db.clone(),
        fingerprint: migration.fingerprint.clone(),
        time_limit: opts.check_time_limit,
    };
    // Output goes to the reporter as it comes (a spinner's latest line, JSON events).
    let outcome = child
        .wait(watch, ctx.stop.clone(), Some(&mut probe), &mut |line| {
            let stream = match line.stream {
                process::Stream::Stdout => "stdout",
                process::Stream::Stderr => "stderr",
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
    let outcome = match outcome {
        Ok(o) => o,
        Err(e) => {
            let end = StepEnd {
                ended_by: "error".into(),
                reason: e.to_string(),
                duration_ms: started.elapsed().as_millis() as i64,
                ..StepEnd::default()
            };
            journal.settle(id, StepStatus::Failed, &end).await?;
            return Err(e);
        }
    };

    let ended_badly = !matches!(
        outcome.ending,
        Ending::Exited
            | Ending::DoneLine { .. }
            | Ending::QuietAndFinished
            | Ending::QuietUnverified
    ) || outcome.exit_code.is_some_and(|c| c != 0)
        || (outcome.ending == Ending::Exited && outcome.exit_code.is_none());
    let tunnel_down = ended_badly && tunnel_went_down(ctx).await;
    let (status, ended_by, mut reason) = match &outcome.ending {
        _ if tunnel_down => (
            StepStatus::Interrupted,
            "tunnel-dropped".to_string(),
            format!(
                "ended ({}) when the SSH tunnel to the database dropped",
                match (outcome.exit_code, outcome.signal) {
                    (Some(c), _) => format!("exit {c}"),
                    (None, Some(sig)) => format!("signal {sig}"),
                    _ => "stopped".to_string(),
                }
            ),
        ),
        Ending::Stopped { signal } if ctx.tunnel_dropped.load(Ordering::SeqCst) => (
            StepStatus::Interrupted,
            "tunnel-dropped".to_string(),
            format!("stopped (signal {signal}): the SSH tunnel to the database dropped"),
        ),
        Ending::Stopped { signal } if lost.load(Ordering::SeqCst) => (
            StepStatus::Interrupted,
            "lease-lost".to_string(),
            format!("stopped (signal {signal}): the run lock was lost"),
        ),
        Ending::Stopped { signal } => (
            StepStatus::Interrupted,
            "signal".to_string(),
            format!("stopped by signal {signal}"),
        ),
        Ending::TimedOut => (
            StepStatus::Failed,
            "timeout".to_string(),
            format!(
                "ran longer than {:?}",
                opts.step_timeout.unwrap_or_default()
            ),
        ),
        Ending::Exited if outcome.exit_code != Some(0) => (
            StepStatus::Failed,
            "exited".to_string(),
            match (outcome.exit_code, outcome.signal) {
                (Some(code), _) => format!("exited with code {code}"),
                (None, Some(sig)) => format!("killed by signal {sig}"),
                _ => "ended abnormally".to_string(),
            },
        ),
        Ending::Exited => (
            StepStatus::Succeeded,
            "exited".to_string(),
            "exited 0".to_string(),
        ),
        Ending::DoneLine { line } => (
            StepStatus::Succeeded,
            "done-line".to_string(),
            format!("printed {line:?}; ended by upstep"),
        ),
        Ending::QuietAndFinished => (
            StepStatus::Succeeded,
            "quiet-window".to_string(),
            format!("silent and idle for {quiet}s with nothing pending; ended by upstep"),
        ),
        // Nothing proves it finished: the operator decides (`upstep mark` or --retry).
        Ending::QuietUnverified => (
            StepStatus::EndedUnverified,
            "quiet-window".to_string(),
            format!("silent and idle for {quiet}s, with no done line and no data check to prove it had finished; ended by upstep"),
        ),
    };

    // Verify: a script that "succeeded" but left pending documents did not migrate.
    let mut status = status;
    if status == StepStatus::Succeeded {
        let report = fingerprint::evaluate(
            &store.db,
            &migration.fingerprint,
            EvalOptions {
                time_limit: opts.check_time_limit,
                count_limit: Some(1000),
            },
        )
        .await;
        let detail = match report.state {
            FpState::Pending => {
                let count = report.checks.iter().filter_map(|c| c.count).sum::<u64>();
                status = StepStatus::Failed;
                reason = format!("{reason}, but it did not migrate: its data check still finds {count} pending document(s)");
                format!("{count} pending")
            }
            FpState::Unknown => {
                reason = format!(
                    "{reason}; not verified: {}",
                    report
                        .reason
                        .clone()
                        .unwrap_or_else(|| "a check could not run".into())
                );
                "unknown".to_string()
            }
            _ => {
                reason = format!("{reason}; verified by its data check");
                String::new()
            }
        };
        reporter.report(&RunEvent::Verification {
            id: id.into(),
            state: report.state.as_str().into(),
            detail,
        });
    }
    let end = StepEnd {
        exit_code: outcome.exit_code,
        signal: outcome.signal,
        ended_by: ended_by.clone(),
        reason: reason.clone(),
        duration_ms: outcome.duration.as_millis() as i64,
        output_tail: outcome.tail.clone(),
    };
    if let Err(e) = journal.settle(id, status, &end).await {
        if !ctx.tunnel_dropped.load(Ordering::SeqCst) {
            return Err(e);
        }
        // The database is out of reach with the tunnel: the local mirror keeps the record
        // until the tunnel is back (see `recover_after_tunnel_drop`).
        journal.mirror().append(&bson::doc! {
            "at": bson::DateTime::now(), "run_id": &journal.actor().run_id, "kind": "step-interrupted",
            "migration": id, "details": { "ended_by": &ended_by, "reason": &reason },
        });
    }
    reporter.report(&RunEvent::StepFinished {
        id: id.into(),
        status: status.as_str().into(),
        ended_by,
        reason: format!("{reason} (log: {})", log_file.display()),
        duration_ms: outcome.duration.as_millis() as u64,
    });
    Ok(status)
}
