//! After a script says it succeeded: its data check must agree. A script that "succeeded" but
//! left pending documents did not migrate; one no check can read is reported as unverified.

use super::effects::Effects;
use super::UpgradeOptions;
use crate::release_map::Fingerprint;
use crate::store::fingerprint::{EvalOptions, FingerprintReport, FpState};
use crate::store::journal::StepStatus;
use crate::ui::events::RunEvent;

/// The step's status and reason once its data is verified (only a success is checked).
pub(super) async fn verify(
    opts: &UpgradeOptions,
    id: &str,
    fingerprint: &Fingerprint,
    status: StepStatus,
    reason: String,
    fx: &mut Effects<'_>,
) -> (StepStatus, String) {
    if status != StepStatus::Succeeded {
        return (status, reason);
    }
    let report = fx
        .store
        .checks()
        .check(
            fingerprint,
            EvalOptions {
                time_limit: opts.check_time_limit,
                count_limit: Some(1000),
            },
        )
        .await;
    let verdict = judge(&report, reason);
    fx.reporter.report(&RunEvent::Verification {
        id: id.into(),
        state: report.state.as_str().into(),
        detail: verdict.detail,
    });
    (verdict.status, verdict.reason)
}

/// What a data check says about a step whose script succeeded.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Verdict {
    pub(super) status: StepStatus,
    pub(super) reason: String,
    /// For the verification event: the pending count, "unknown", or nothing.
    pub(super) detail: String,
}

pub(super) fn judge(report: &FingerprintReport, reason: String) -> Verdict {
    match report.state {
        FpState::Pending => {
            let count = report.checks.iter().filter_map(|c| c.count).sum::<u64>();
            Verdict {
                status: StepStatus::Failed,
                reason: format!(
                    "{reason}, but it did not migrate: its data check still finds {}",
                    crate::words::count(count as usize, "pending document")
                ),
                detail: format!("{count} pending"),
            }
        }
        FpState::Unknown => Verdict {
            status: StepStatus::Succeeded,
            reason: format!(
                "{reason}; not verified: {}",
                report
                    .reason
                    .clone()
                    .unwrap_or_else(|| "a check could not run".into())
            ),
            detail: "unknown".to_string(),
        },
        _ => Verdict {
            status: StepStatus::Succeeded,
            reason: format!("{reason}; verified by its data check"),
            detail: String::new(),
        },
    }
}
