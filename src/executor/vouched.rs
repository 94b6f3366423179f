//! Steps the operator vouched for with `--from`: older than the version they said the data is
//! at, and no data check can tell whether they are applied. The run skips them on that word;
//! it is recorded in the journal (`marked-applied`, with who, when and which `--from`), so
//! `status`, a later run without `--from` and the promotion gate read the same vouching
//! instead of calling them pending. `upstep mark <id> --pending` takes it back.

use std::collections::BTreeMap;

use super::decide::Action;
use super::effects::Effects;
use super::facts::at_or_before_from;
use super::{DecidedStep, UpgradeOptions};
use crate::error::Result;
use crate::store::fingerprint::FpState;
use crate::store::journal::{JournalEntry, StepStatus};
use crate::ui::events::RunEvent;

/// The steps the run skips only because `--from` vouches for them, and nothing in the journal
/// says otherwise.
pub(super) fn vouched_steps<'d>(
    opts: &UpgradeOptions,
    decided: &'d [DecidedStep],
    entries: &BTreeMap<String, JournalEntry>,
) -> Vec<&'d DecidedStep> {
    decided
        .iter()
        .filter(|d| d.decision.action == Action::Skip && !d.decision.left_out)
        .filter(|d| matches!(d.data, None | Some(FpState::Unknown)))
        .filter(|d| at_or_before_from(&opts.map, &d.id, opts.from.as_ref()))
        .filter(|d| {
            entries
                .get(&d.id)
                .is_none_or(|e| e.status == StepStatus::Skipped)
        })
        .collect()
}

/// Journal the vouched steps as marked applied (in the run lock, before any step runs).
pub(super) async fn record(
    opts: &UpgradeOptions,
    decided: &[DecidedStep],
    fx: &mut Effects<'_>,
) -> Result<()> {
    let Some(from) = &opts.from else {
        return Ok(());
    };
    let entries = fx.store.entries().await?;
    let vouched = vouched_steps(opts, decided, &entries);
    if vouched.is_empty() {
        return Ok(());
    }
    let today = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let from = from.to_string();
    let reason = format!(
        "vouched by --from {from} on {}: older than --from, and no data check can tell",
        crate::date::ymd(today)
    );
    for step in &vouched {
        fx.store
            .mark_held(&step.id, StepStatus::MarkedApplied, &reason)
            .await?;
    }
    let ids: Vec<&str> = vouched.iter().map(|d| d.id.as_str()).collect();
    fx.reporter.report(&RunEvent::Notice {
        message: format!(
            "recorded {} as applied, vouched by --from {from}: {} (take it back with `upstep mark <id> --pending`)",
            crate::words::count(ids.len(), "step"),
            ids.join(", ")
        ),
    });
    Ok(())
}
