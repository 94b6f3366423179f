//! What a run reports about itself as a whole: the summary, and the dry run (the decision
//! and what it would ask, with nothing touched).

use std::time::Instant;

use super::approval;
use super::decide::Action;
use super::effects::Effects;
use super::facts::{count, decide_steps, plan_event};
use super::UpgradeOptions;
use crate::error::{Result, RunReport, SettledStep};
use crate::plan::Plan;
use crate::store::journal::StepStatus;
use crate::ui::events::RunEvent;

#[derive(Debug, Clone, Default)]
pub struct Summary {
    pub ran: usize,
    pub succeeded: usize,
    pub skipped: usize,
    pub failed: usize,
    /// The stand-ins the tags that ran were installed with (`StandIn::describe`, per tag).
    pub stand_ins: Vec<String>,
    /// The steps this run settled, in order: what a failed run's error reports.
    pub settled: Vec<SettledStep>,
}

impl Summary {
    /// Count a step this run settled in the journal (`ran` counts each, whatever its end).
    pub(super) fn settled(&mut self, id: &str, tag: &str, status: StepStatus) {
        self.ran += 1;
        match status {
            StepStatus::Succeeded => self.succeeded += 1,
            StepStatus::Failed => self.failed += 1,
            _ => {}
        }
        self.settled.push(SettledStep {
            id: id.into(),
            tag: tag.into(),
            status: status.as_str().into(),
        });
    }

    /// What the run had done, for the error of a run that failed.
    pub(super) fn report(&self) -> RunReport {
        RunReport {
            steps: self.settled.clone(),
        }
    }
}

/// Reads only: no lock, no journal write, no script. `ran` counts the steps that would run.
pub(super) async fn dry_run(
    opts: &UpgradeOptions,
    plan: &Plan,
    fx: &mut Effects<'_>,
) -> Result<Summary> {
    let entries = fx.store.entries().await?;
    let decided = decide_steps(opts, plan, fx.store.checks(), &entries).await;
    fx.reporter.report(&plan_event(&decided));
    for step in approval::risky_steps(&opts.map, plan, &decided)
        .iter()
        .filter(|r| r.needs_approval && !opts.approvals.steps.contains(&r.id))
    {
        fx.reporter.report(&RunEvent::Notice {
            message: format!(
                "{} would need --approve {}: not idempotent, and no data check can tell \
                 whether it ran",
                step.id, step.id
            ),
        });
    }
    Ok(Summary {
        ran: count(&decided, Action::Run),
        skipped: count(&decided, Action::Skip),
        ..Summary::default()
    })
}

/// The summary event that ends every run that took the lock, failed or not.
pub(super) fn report_summary(
    result: &Result<Summary>,
    summary: &Summary,
    started: Instant,
    fx: &mut Effects<'_>,
) {
    let status = match result {
        Ok(_) => "succeeded".to_string(),
        Err(e) => e.code().name().to_string(),
    };
    fx.reporter.report(&RunEvent::Summary {
        ran: summary.ran,
        succeeded: summary.succeeded,
        skipped: summary.skipped,
        failed: summary.failed,
        status,
        duration_ms: (fx.clock.now() - started).as_millis() as u64,
        stand_ins: summary.stand_ins.clone(),
    });
}
