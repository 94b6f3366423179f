//! The questions of a run, asked through the `Prompt` effect: before it (where the data stands
//! and where to go, unfinished steps, the go-ahead, the backup, the risky steps) and after a
//! step ended with nothing proving it finished.

use crate::error::{Error, Result};
use crate::plan::Plan;
use crate::store::journal::StepStatus;
use crate::ui::events::RunEvent;

use super::approval::{self, RiskyStep};
use super::decide::Action;
use super::effects::{Blocked, Effects};
use super::facts::{decide_all, decide_steps, full_plan, plan_event, read_data};
use super::{DataStates, DecidedStep, KnownFacts, Questions, UpgradeOptions};

/// The decision before a run: where the data stands, the target, the plan, what to do about
/// unfinished steps, the go-ahead, and the backup. Returns the decision and the facts it was
/// made from (each data check read once: by the detection when it runs).
pub(super) async fn decide_before(
    asks: Questions,
    opts: &mut UpgradeOptions,
    fx: &mut Effects<'_>,
) -> Result<(Vec<DecidedStep>, KnownFacts)> {
    let mut entries = fx.store.entries().await?;
    let mut data = DataStates::default();
    if asks.target {
        data = choose_target(opts, fx).await?;
    }
    let plan = full_plan(opts)?;
    let data = read_data(opts, &plan, fx.store.checks(), data).await;
    let mut decided = decide_all(opts, &plan, &entries, &data);
    fx.reporter.report(&plan_event(&decided));
    let blocked: Vec<&DecidedStep> = decided
        .iter()
        .filter(|d| d.decision.action == Action::Block)
        .collect();
    if !blocked.is_empty() {
        let ids: Vec<String> = blocked.iter().map(|d| d.id.clone()).collect();
        match fx.prompt.blocked(&blocked)? {
            Blocked::Retry => opts.flags.retry = true,
            Blocked::MarkApplied => {
                let reason = "marked applied at the interactive prompt";
                mark_applied(&ids, reason, fx).await?;
            }
            Blocked::Stop => {
                return Err(Error::NeedsDecision(
                    "stopped at the interactive prompt; nothing was run".into(),
                ));
            }
        }
        // The answer changed the journal or the flags, not the data.
        entries = fx.store.entries().await?;
        decided = decide_all(opts, &plan, &entries, &data);
    }
    let facts = KnownFacts { entries, data };
    let to_run = decided
        .iter()
        .filter(|d| d.decision.action == Action::Run)
        .count();
    if to_run == 0 {
        return Ok((decided, facts));
    }
    if !fx.prompt.confirm_run(to_run)? {
        return Err(Error::usage(
            "not confirmed: nothing was run",
            "run `upstep upgrade` again when ready",
        ));
    }
    if asks.backup {
        opts.backup_dir = fx.prompt.backup()?;
    }
    Ok((decided, facts))
}

/// Where the data stands, with its evidence and gaps, before choosing where to go. Returns
/// what the detection read of the data.
async fn choose_target(opts: &mut UpgradeOptions, fx: &mut Effects<'_>) -> Result<DataStates> {
    let detect_opts = crate::detect::DetectOptions {
        from: opts.from.clone(),
        to: opts.map.newest_version()?,
        to_source: crate::detect::TargetSource::NewestInMap,
        time_limit: opts.check_time_limit,
        count_limit: 1000,
        include_unreleased: opts.include_unreleased,
    };
    let report = fx.store.detect(&opts.map, detect_opts).await?;
    opts.to = fx.prompt.target(&opts.map, &report)?;
    Ok(report
        .migrations
        .iter()
        .map(|m| (m.id.clone(), m.data))
        .collect())
}

async fn mark_applied(ids: &[String], reason: &str, fx: &mut Effects<'_>) -> Result<()> {
    for id in ids {
        fx.store.mark(id, StepStatus::MarkedApplied, reason).await?;
    }
    Ok(())
}

/// The steps that need a yes are asked about: one question for each step that needs an
/// approval of its own (not idempotent and unverifiable) unless `--approve` named it, then one
/// for the routine ones. The answers become the run's approvals, which the run checks against
/// its decision (unattended runs get theirs from --yes / --approve).
pub(super) async fn confirm_risky_steps(
    opts: &mut UpgradeOptions,
    plan: &Plan,
    decided: &[DecidedStep],
    fx: &mut Effects<'_>,
) -> Result<()> {
    let risky = approval::risky_steps(&opts.map, plan, decided);
    let to_approve: Vec<&RiskyStep> = risky
        .iter()
        .filter(|r| r.needs_approval && !opts.approvals.steps.contains(&r.id))
        .collect();
    for step in to_approve {
        fx.reporter.report(&RunEvent::Notice {
            message: format!(
                "{}\n  It is not idempotent, and no data check can tell whether it already ran: \
                 a repeat or a partial run would go unnoticed. Check `upstep status` and its \
                 warnings first.",
                step.describe()
            ),
        });
        if !fx.prompt.approve_step(&step.id).await? {
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
        fx.reporter.report(&RunEvent::Notice {
            message: format!(
                "Steps that need your confirmation:\n  {}",
                routine.join("\n  ")
            ),
        });
        if !fx.prompt.confirm_risky().await? {
            return Err(Error::usage(
                "not confirmed: nothing was run",
                "re-run when ready, or record steps with `upstep mark`",
            ));
        }
    }
    opts.approvals.routine = true;
    Ok(())
}

/// After a run stopped on a step journalled `ended-unverified`: asks whether to mark it
/// applied, retry it, or stop. True when the run should go on.
pub(super) async fn decide_unverified(
    opts: &mut UpgradeOptions,
    fx: &mut Effects<'_>,
) -> Result<bool> {
    let entries = fx.store.entries().await?;
    let plan = full_plan(opts)?;
    let decided = decide_steps(opts, &plan, fx.store.checks(), &entries).await;
    let blocked: Vec<&DecidedStep> = decided
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
    let ids: Vec<String> = blocked.iter().map(|d| d.id.clone()).collect();
    match fx.prompt.blocked(&blocked)? {
        Blocked::Retry => opts.flags.retry = true,
        Blocked::MarkApplied => {
            let reason = "marked applied at the interactive prompt after it ended unverified";
            mark_applied(&ids, reason, fx).await?;
        }
        Blocked::Stop => return Ok(false),
    }
    Ok(true)
}
