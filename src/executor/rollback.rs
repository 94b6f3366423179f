//! `upstep rollback --to VERSION`: undo the applied steps of the releases after VERSION, newest
//! first, each at its own tag with its own toolchain and setup, by the `down` the map declares
//! (a command such as `migrate-mongo down`, or a down script). Journalled like an upgrade's
//! steps (`direction: "down"`, ending `rolled-back`), under the same lock and heartbeat,
//! verified against the data (a tool's journal must no longer record the migration), and
//! resumable: an interrupted or failed down needs --retry, like a step of an upgrade.
//!
//! Nothing runs while any step to undo has no declared down (unless --skip-missing-down), or
//! while one needs a decision.

use std::collections::BTreeMap;

use semver::Version;
use serde::Serialize;

use super::effects::{Effects, Workspace};
use super::prepare::{self, group_era};
use super::stop::{StepCtx, Stops};
use super::{lock, recovery, report, step, Summary, UpgradeOptions};
use crate::error::{Error, Result};
use crate::plan::{Plan, PlanRequest};
use crate::release_map::tools::{down_of, file_name, names_its_migration};
use crate::release_map::{Down, Exits, Migration, Mode, RunKind, ToolJournal};
use crate::runner::process::{self, ChildSpec, Ending, StopRequest, Watch};
use crate::store::down_journal;
use crate::store::fingerprint::FpState;
use crate::store::journal::{EndedBy, Journal, JournalEntry, StepEnd, StepStart, StepStatus};
use crate::store::Store;
use crate::ui::events::RunEvent;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum DownAction {
    /// Its down runs.
    Undo,
    /// Nothing to undo (not applied, already rolled back), or left applied on purpose.
    Skip,
    /// Applied, and the map declares no down: the rollback refuses to go through it.
    NoDown,
    /// Needs --retry or `upstep mark` (a failed or interrupted down, an unknown state).
    Block,
}

/// One step of a rollback, newest first.
#[derive(Debug, Clone, Serialize)]
pub struct DownStep {
    pub id: String,
    pub git_ref: String,
    #[serde(skip)]
    pub group: usize,
    pub action: DownAction,
    pub reason: String,
    /// How it is undone (absent: no declared down).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub down: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RollbackPlan {
    pub schema: &'static str,
    pub to: String,
    pub steps: Vec<DownStep>,
}

/// What the user asked for.
#[derive(Debug, Clone)]
pub struct RollbackRequest {
    /// Undo every step of the releases after this one.
    pub to: Version,
    /// Leave applied steps without a declared down as they are, instead of refusing.
    pub skip_missing_down: bool,
}

/// Every step of the map up to its newest release: the rollback picks those after `--to`.
pub fn full_plan(opts: &UpgradeOptions) -> Result<Plan> {
    crate::plan::plan(
        &opts.map,
        &PlanRequest {
            from: Version::new(0, 0, 0),
            to: opts.map.newest_version()?,
            include_unreleased: false,
        },
    )
}

/// How a planned step is undone, if at all.
fn down_for(opts: &UpgradeOptions, plan: &Plan, group: usize, id: &str) -> Option<Down> {
    let g = &plan.groups[group];
    let step = g.steps.iter().find(|s| s.id == id)?;
    let era = opts.map.eras.get(&g.era)?;
    down_of(opts.map.migration(id)?.down.as_ref(), era, &step.mode)
}

/// The decision for one step (pure: the journal, the data, the map, the flags).
pub fn decide_one(
    entry: Option<&JournalEntry>,
    data: FpState,
    reads_tool_journal: bool,
    has_down: bool,
    req: &RollbackRequest,
    retry: bool,
) -> (DownAction, String) {
    use DownAction::*;
    if entry.is_some_and(|e| e.running_elsewhere()) {
        return (Block, crate::executor::decide::RUNNING_ELSEWHERE.into());
    }
    let status = entry.map(|e| e.status);
    let undoing = entry.is_some_and(|e| e.direction.as_deref() == Some(down_journal::DOWN));
    let unfinished = matches!(
        status,
        Some(StepStatus::Failed | StepStatus::Interrupted | StepStatus::Running)
    );
    if undoing && unfinished {
        let what = format!(
            "its down is recorded as {}",
            status.map_or("?", |s| s.as_str())
        );
        if reads_tool_journal && data == FpState::Pending {
            return (
                Skip,
                format!("{what}, but its tool's journal no longer records it: undone"),
            );
        }
        if !retry {
            return (Block, format!("{what}; re-run the rollback with --retry, or record it with `upstep mark <id> --applied|--pending`"));
        }
        return (Undo, format!("retry after {what} (--retry)"));
    }
    let applied = if reads_tool_journal {
        match data {
            FpState::Applied => true,
            FpState::Pending | FpState::NotApplicable => false,
            FpState::Failed => {
                return (Skip, "its tool's journal records a failed run: nothing applied to undo".into())
            }
            FpState::Unknown => {
                return (Block, "its tool's journal cannot be read (see `upstep status`): whether it is applied is unknown".into())
            }
        }
    } else {
        match status {
            Some(s) if s.is_done() => true,
            Some(StepStatus::RolledBack) => false,
            Some(StepStatus::Pending) => false,
            Some(s @ (StepStatus::Failed | StepStatus::Interrupted | StepStatus::Running | StepStatus::EndedUnverified)) => {
                return (Block, format!("journal: {} (its upgrade did not finish): `upstep mark` it applied or pending first", s.as_str()))
            }
            _ => match data {
                FpState::Applied => true,
                FpState::Pending | FpState::NotApplicable => false,
                _ => return (Block, "neither the journal nor its data check can tell whether it is applied: `upstep mark` it first".into()),
            },
        }
    };
    if !applied {
        let why = if status == Some(StepStatus::RolledBack) {
            "already rolled back"
        } else {
            "not applied"
        };
        return (Skip, why.into());
    }
    if !has_down {
        if req.skip_missing_down {
            return (
                Skip,
                "applied, with no declared down: left applied (--skip-missing-down)".into(),
            );
        }
        return (
            NoDown,
            "applied, and the release map declares no down for it".into(),
        );
    }
    let basis = if reads_tool_journal {
        "its tool's journal records it"
    } else {
        "applied"
    };
    (Undo, format!("{basis}: its down runs"))
}

/// Decide every step after `req.to`, newest first, from the journal and the data.
pub async fn decide_rollback(
    opts: &UpgradeOptions,
    plan: &Plan,
    store: &Store,
    req: &RollbackRequest,
    entries: &BTreeMap<String, JournalEntry>,
) -> Vec<DownStep> {
    let data = super::read_data(opts, plan, store, super::DataStates::default()).await;
    let mut out = Vec::new();
    for (g, group) in plan.groups.iter().enumerate().rev() {
        let after = group
            .version
            .as_deref()
            .and_then(|v| Version::parse(v).ok())
            .is_none_or(|v| v > req.to);
        if !after {
            continue;
        }
        for step in group.steps.iter().rev() {
            let Some(m) = opts.map.migration(&step.id) else {
                continue;
            };
            let down = down_for(opts, plan, g, &step.id);
            let (action, reason) = decide_one(
                entries.get(&step.id),
                data.get(&step.id).unwrap_or(FpState::Unknown),
                m.tool_journal().is_some(),
                down.is_some(),
                req,
                opts.flags.retry,
            );
            out.push(DownStep {
                id: step.id.clone(),
                git_ref: group.git_ref.clone(),
                group: g,
                action,
                reason,
                down: down.map(|d| d.describe()),
            });
        }
    }
    out
}

/// The refusal when a step to undo has no down, or a step needs a decision: nothing runs.
pub fn refusal(steps: &[DownStep]) -> Option<Error> {
    let no_down: Vec<&DownStep> = steps
        .iter()
        .filter(|s| s.action == DownAction::NoDown)
        .collect();
    if !no_down.is_empty() {
        let list: Vec<String> = no_down
            .iter()
            .map(|s| format!("{} (at {})", s.id, s.git_ref))
            .collect();
        return Some(Error::NeedsDecision(format!(
            "cannot roll back through {} applied step(s) with no declared down: {}; nothing was undone\n  fix: declare how to undo each (`down = [...]` or `down_script = \"...\"` on the migration, or `down` on its era, see docs/release-map.md), or pass --skip-missing-down to leave them applied",
            list.len(),
            list.join(", ")
        )));
    }
    let blocked: Vec<String> = steps
        .iter()
        .filter(|s| s.action == DownAction::Block)
        .map(|s| format!("{}: {}", s.id, s.reason))
        .collect();
    (!blocked.is_empty()).then(|| {
        Error::NeedsDecision(format!(
            "the rollback needs a decision before it can go on; nothing was undone:\n  {}",
            blocked.join("\n  ")
        ))
    })
}

/// The rollback: lock, decide, then each tag's downs, newest first. `store` is the database
/// `fx.store` journals in: the downs' records (`direction: "down"`) are written there as the
/// run lock's holder.
pub async fn run_rollback(
    opts: &UpgradeOptions,
    req: &RollbackRequest,
    store: &Store,
    fx: &mut Effects<'_>,
) -> Result<Summary> {
    let started = fx.clock.now();
    let plan = full_plan(opts)?;
    let watcher = fx.surroundings.watch_signals()?;
    let (stops, heartbeat) = lock::take_and_keep(opts, watcher, fx).await?;
    let journal = Journal::new(store, fx.store.actor().clone(), fx.store.mirror().clone())
        .with_heartbeat_lease(opts.lease);
    let mut summary = Summary::default();
    let result = rollback_locked(opts, req, &plan, store, &journal, &stops, &mut summary, fx)
        .await
        .map(|()| summary.clone());
    drop(heartbeat);
    lock::release(fx.store.as_ref(), &stops).await;
    report::report_summary(&result, &summary, started, fx);
    result
}

#[allow(clippy::too_many_arguments)]
async fn rollback_locked(
    opts: &UpgradeOptions,
    req: &RollbackRequest,
    plan: &Plan,
    store: &Store,
    journal: &Journal,
    stops: &Stops,
    summary: &mut Summary,
    fx: &mut Effects<'_>,
) -> Result<()> {
    fx.store
        .event(
            "rollback-started",
            None,
            bson::doc! { "to": req.to.to_string() },
        )
        .await?;
    recovery::settle_abandoned(opts, fx).await?;
    let entries = fx.store.entries().await?;
    let steps = decide_rollback(opts, plan, store, req, &entries).await;
    for s in &steps {
        fx.reporter.report(&RunEvent::Notice {
            message: format!("{} at {}: {:?} ({})", s.id, s.git_ref, s.action, s.reason)
                .to_lowercase(),
        });
    }
    if let Some(refused) = refusal(&steps) {
        return Err(refused);
    }
    summary.skipped = steps
        .iter()
        .filter(|s| s.action == DownAction::Skip)
        .count();
    let to_undo: Vec<&DownStep> = steps
        .iter()
        .filter(|s| s.action == DownAction::Undo)
        .collect();
    if to_undo.is_empty() {
        fx.reporter.report(&RunEvent::Notice {
            message: format!("nothing to roll back: no applied step after {}", req.to),
        });
        return Ok(());
    }
    let workspace = fx.workspace.ok_or_else(|| {
        Error::usage(
            "undoing steps needs the project's code",
            "pass --repo <path or URL of the project's repository>",
        )
    })?;
    stops.check()?;
    // `--backup DIR`: the database as it was before the first down.
    stops.until(prepare::take_backup(opts, fx)).await?;
    let total = to_undo.len();
    let mut index = 0;
    // Groups newest first, in the order the decision listed them.
    let mut groups: Vec<usize> = to_undo.iter().map(|s| s.group).collect();
    groups.dedup();
    for g in groups {
        let group = &plan.groups[g];
        let steps: Vec<&&DownStep> = to_undo.iter().filter(|s| s.group == g).collect();
        let ids: Vec<&str> = steps.iter().map(|s| s.id.as_str()).collect();
        // Checked out, its toolchain found, set up for the steps it undoes.
        let tag = prepare::prepare_tag_for(opts, group, &ids, stops, fx).await?;
        for step in steps {
            stops.check()?;
            index += 1;
            let ctx = StepCtx::new(&stops.watcher, None);
            let at = DownAt {
                plan,
                group: g,
                commit: &tag.tag.commit,
                worktree: &tag.worktree,
                path_prefix: &tag.path_prefix,
                index,
                total,
            };
            let outcome = run_down(
                opts, &step.id, &at, &ctx, workspace, store, journal, stops, fx,
            )
            .await;
            drop(ctx);
            summary.ran += 1;
            match outcome? {
                StepStatus::RolledBack => summary.succeeded += 1,
                StepStatus::Interrupted => return Err(stops.error()),
                _ => {
                    summary.failed += 1;
                    return Err(Error::StepFailed(format!(
                        "the down of {} failed; earlier steps were not undone. See its log and `upstep status`; fix the cause, then re-run the rollback with --retry",
                        step.id
                    )));
                }
            }
            if stops.current() == StopRequest::AfterStep {
                return Err(Error::Interrupted);
            }
        }
        if !opts.keep_worktrees {
            prepare::remove_worktree(workspace, &tag.tag, fx.reporter);
        }
    }
    fx.store
        .event(
            "rollback-finished",
            None,
            bson::doc! { "to": req.to.to_string(), "undone": summary.ran as i64 },
        )
        .await?;
    Ok(())
}

struct DownAt<'a> {
    plan: &'a Plan,
    group: usize,
    commit: &'a str,
    worktree: &'a std::path::Path,
    path_prefix: &'a [std::path::PathBuf],
    index: usize,
    total: usize,
}

/// A down that does not name its migration (`migrate-mongo down` undoes the newest applied
/// migration of the tag's folder): refused unless that is this step's.
async fn check_undoes_this_one(
    store: &Store,
    workspace: &dyn Workspace,
    commit: &str,
    git_ref: &str,
    m: &Migration,
    argv: &[String],
) -> Result<()> {
    if names_its_migration(argv) {
        return Ok(());
    }
    let Some((ToolJournal::MigrateMongo, collection)) = m.tool_journal() else {
        return Ok(());
    };
    let ours = file_name(&m.script);
    let dir = m.script.rsplit_once('/').map_or("", |(d, _)| d);
    let later: Vec<bson::Document> = {
        use futures_util::TryStreamExt;
        store
            .db
            .collection::<bson::Document>(collection)
            .find(bson::doc! { "fileName": { "$gt": ours } })
            .await
            .map_err(|e| crate::store::mongo_error(&e, &store.redacted_uri, ""))?
            .try_collect()
            .await
            .map_err(|e| crate::store::mongo_error(&e, &store.redacted_uri, ""))?
    };
    for record in later {
        let Ok(other) = record.get_str("fileName") else {
            continue;
        };
        let path = if dir.is_empty() {
            other.to_string()
        } else {
            format!("{dir}/{other}")
        };
        if workspace.read_file_at(commit, &path)?.is_some() {
            return Err(Error::Preflight(format!(
                "{}: at {git_ref}, `{}` undoes the newest applied migration, which is {other}, not {ours}; nothing was undone for {}\n  fix: undo {other} first (roll back to the release before it, with a down declared for it), or give {} a down that names its migration",
                m.id,
                argv.join(" "),
                m.id,
                m.id
            )));
        }
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn run_down(
    opts: &UpgradeOptions,
    id: &str,
    at: &DownAt<'_>,
    ctx: &StepCtx,
    workspace: &dyn Workspace,
    store: &Store,
    journal: &Journal,
    stops: &Stops,
    fx: &mut Effects<'_>,
) -> Result<StepStatus> {
    let group = &at.plan.groups[at.group];
    let step = group
        .steps
        .iter()
        .find(|s| s.id == id)
        .ok_or_else(|| Error::Internal(format!("{id} not in its group")))?;
    let m = opts
        .map
        .migration(id)
        .ok_or_else(|| Error::Internal(format!("{id} not in the map")))?;
    let era = group_era(&opts.map, group)?;
    let down = down_for(opts, at.plan, at.group, id)
        .ok_or_else(|| Error::Internal(format!("{id} has no down")))?;
    let (cmd, recorded_file) = match &down {
        Down::Command(argv) => {
            check_undoes_this_one(store, workspace, at.commit, &group.git_ref, m, argv).await?;
            (
                super::command_step::command_in(at.worktree, era, argv, &step.script, &m.name),
                step.script.clone(),
            )
        }
        Down::Script(path) => {
            let mode = Mode {
                run: RunKind::File,
                export: None,
                shim: None,
                command: None,
                ..step.mode.clone()
            };
            (
                super::command::step_command(at.worktree, era, &mode, path, id)?,
                path.clone(),
            )
        }
    };
    if let Some(problem) = super::command_step::tool_problem(&cmd, at.worktree, at.path_prefix) {
        return Err(Error::Preflight(format!(
            "{id}: its down cannot start at {}: {problem}; nothing was undone for {id}\n  fix: make the era's setup install the tool at {}, or correct the down in the release map",
            group.git_ref, group.git_ref
        )));
    }
    let sha = step::script_sha256(workspace, at.commit, &recorded_file)?;
    down_journal::begin_down(
        journal,
        store,
        &StepStart {
            id,
            tag: &group.git_ref,
            commit: at.commit,
            script: &recorded_file,
            script_sha256: &sha,
            backup: None,
        },
    )
    .await?;
    fx.reporter.report(&RunEvent::StepStarted {
        index: at.index,
        total: at.total,
        id: id.into(),
        git_ref: group.git_ref.clone(),
        runs_as: format!("down: {}", down.describe()),
        // The map's warnings are about running the migration, not about undoing it.
        warnings: Vec::new(),
    });
    let log_file = opts
        .state_dir
        .join("logs")
        .join(&journal.actor().run_id)
        .join(format!("{:02}-{id}-down.log", at.index));
    let spec = ChildSpec {
        program: cmd.program.clone(),
        args: cmd.args.clone(),
        cwd: cmd.cwd.clone(),
        env: super::command::era_env(era, &opts.connection),
        env_remove: opts.connection.private_env.clone(),
        path_prefix: at.path_prefix.to_vec(),
        log_file: log_file.clone(),
        log_append: false,
        secrets: opts.connection.secrets(),
    };
    let child = match fx.children.spawn(&spec) {
        Ok(child) => child,
        Err(e) => {
            let end = StepEnd::without_outcome(EndedBy::SpawnFailed, format!("down: {e}"));
            down_journal::settle_down(journal, store, id, StepStatus::Failed, &end).await?;
            return Err(e);
        }
    };
    journal.record_child(id, child.pid(), child.pgid()).await?;
    let script_down = matches!(down, Down::Script(_));
    let exits = if script_down {
        step.mode.exits
    } else {
        Exits::Yes
    };
    let mut done_lines = era.done_lines.clone();
    done_lines.extend(step.mode.done_line.clone());
    let quiet = step
        .mode
        .quiet_secs
        .or(opts.quiet_secs)
        .unwrap_or(opts.map.project.quiet_secs);
    let watch = Watch {
        finish_detection: exits != Exits::Yes,
        quiet_window: std::time::Duration::from_secs(quiet),
        done_lines,
        timeout: opts.step_timeout,
        grace: opts.grace,
    };
    let outcome = child
        .wait(watch, ctx.stop.clone(), None, &mut |line| {
            fx.reporter.report(&RunEvent::Output {
                id: id.into(),
                stream: match line.stream {
                    process::Stream::Stdout => "stdout".into(),
                    process::Stream::Stderr => "stderr".into(),
                },
                line: line.text,
            });
        })
        .await;
    let outcome = match outcome {
        Ok(o) => o,
        Err(e) => {
            let end = StepEnd::without_outcome(EndedBy::Error, format!("down: {e}"));
            down_journal::settle_down(journal, store, id, StepStatus::Failed, &end).await?;
            return Err(e);
        }
    };
    let finished = matches!(
        outcome.ending,
        Ending::Exited | Ending::DoneLine { .. } | Ending::QuietAndFinished
    ) && outcome.exit_code.is_none_or(|c| c == 0)
        && !(outcome.ending == Ending::Exited && outcome.exit_code.is_none());
    let (mut status, ended_by, mut reason) = match &outcome.ending {
        Ending::Stopped { signal } if stops.lock_lost() => (
            StepStatus::Interrupted,
            EndedBy::LeaseLost,
            format!("down stopped (signal {signal}): the run lock was lost"),
        ),
        Ending::Stopped { signal } => (
            StepStatus::Interrupted,
            EndedBy::Signal,
            format!("down stopped by signal {signal}"),
        ),
        Ending::TimedOut => (
            StepStatus::Failed,
            EndedBy::Timeout,
            "down ran too long".to_string(),
        ),
        _ if finished => (
            StepStatus::RolledBack,
            EndedBy::Exited,
            "down exited 0".to_string(),
        ),
        _ => (
            StepStatus::Failed,
            EndedBy::Exited,
            match (outcome.exit_code, outcome.signal) {
                (Some(c), _) => format!("down exited with code {c}"),
                (None, Some(s)) => format!("down killed by signal {s}"),
                _ => "down ended abnormally".to_string(),
            },
        ),
    };
    if status == StepStatus::RolledBack {
        let report = fx
            .store
            .checks()
            .check(&m.fingerprint, opts.pending_check())
            .await;
        let tool = m.tool_journal().is_some();
        match report.state {
            FpState::Applied | FpState::Failed if tool => {
                status = StepStatus::Failed;
                reason =
                    format!("{reason}, but its tool's journal still records it: it was not undone");
            }
            FpState::Pending if tool => {
                reason = format!("{reason}; verified: its tool's journal no longer records it")
            }
            state => reason = format!("{reason}; its data check now says {}", state.as_str()),
        }
        fx.reporter.report(&RunEvent::Verification {
            id: id.into(),
            state: report.state.as_str().into(),
            detail: String::new(),
        });
    }
    let end = StepEnd {
        exit_code: outcome.exit_code,
        signal: outcome.signal,
        ended_by,
        reason: reason.clone(),
        duration_ms: outcome.duration.as_millis() as i64,
        output_tail: outcome.tail.clone(),
    };
    down_journal::settle_down(journal, store, id, status, &end).await?;
    fx.reporter.report(&RunEvent::StepFinished {
        id: id.into(),
        status: status.as_str().into(),
        ended_by: ended_by.as_str().into(),
        reason: format!("{reason} (log: {})", log_file.display()),
        duration_ms: outcome.duration.as_millis() as u64,
    });
    Ok(status)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(skip: bool) -> RollbackRequest {
        RollbackRequest {
            to: Version::new(1, 0, 0),
            skip_missing_down: skip,
        }
    }

    #[test]
    fn the_tool_s_journal_decides_what_is_undone() {
        let (a, _) = decide_one(None, FpState::Applied, true, true, &req(false), false);
        assert_eq!(a, DownAction::Undo);
        let (a, _) = decide_one(None, FpState::Pending, true, true, &req(false), false);
        assert_eq!(a, DownAction::Skip);
        let (a, why) = decide_one(None, FpState::Applied, true, false, &req(false), false);
        assert_eq!(a, DownAction::NoDown, "{why}");
        let (a, _) = decide_one(None, FpState::Applied, true, false, &req(true), false);
        assert_eq!(a, DownAction::Skip);
        let (a, _) = decide_one(None, FpState::Unknown, true, true, &req(false), false);
        assert_eq!(a, DownAction::Block);
        // Without a tool journal, upstep's journal says what ran; unknown data blocks.
        let (a, _) = decide_one(None, FpState::Unknown, false, true, &req(false), false);
        assert_eq!(a, DownAction::Block);
        let (a, _) = decide_one(
            None,
            FpState::NotApplicable,
            false,
            true,
            &req(false),
            false,
        );
        assert_eq!(a, DownAction::Skip);
    }

    #[test]
    fn an_unfinished_down_needs_retry_unless_the_tool_shows_it_undone() {
        let entry: JournalEntry = bson::from_document(bson::doc! {
            "_id": "a", "status": "interrupted", "direction": "down",
        })
        .unwrap();
        let (a, _) = decide_one(
            Some(&entry),
            FpState::Applied,
            true,
            true,
            &req(false),
            false,
        );
        assert_eq!(a, DownAction::Block);
        let (a, _) = decide_one(
            Some(&entry),
            FpState::Applied,
            true,
            true,
            &req(false),
            true,
        );
        assert_eq!(a, DownAction::Undo);
        let (a, _) = decide_one(
            Some(&entry),
            FpState::Pending,
            true,
            true,
            &req(false),
            false,
        );
        assert_eq!(a, DownAction::Skip);
    }
}
