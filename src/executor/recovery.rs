//! What an earlier run or a dropped tunnel left behind: orphaned process groups, steps left
//! `running`, scripts changed since they ran, a step stopped by a dropped tunnel.

use std::collections::BTreeMap;
use std::time::Duration;

use sha2::{Digest, Sha256};

use super::decide::{self, Action};
use super::effects::{Effects, Workspace};
use super::{DecidedStep, UpgradeOptions};
use crate::error::{Error, Result};
use crate::plan::Plan;
use crate::store::fingerprint::FpState;
use crate::store::journal::{EndedBy, JournalEntry, StepEnd, StepStatus};
use crate::store::lock::LockDoc;
use crate::ui::events::RunEvent;

/// End the process groups a dead run left behind, so no orphan keeps migrating beside us.
pub(super) async fn end_dead_run(
    holder: &LockDoc,
    opts: &UpgradeOptions,
    fx: &Effects<'_>,
) -> Result<()> {
    for entry in fx.store.entries().await?.values() {
        let same_run = entry
            .actor
            .as_ref()
            .is_some_and(|a| a.run_id == holder.holder.run_id);
        if let (true, StepStatus::Running, Some(pgid)) = (same_run, entry.status, entry.child_pgid)
        {
            let pgid = pgid as i32;
            if fx.children.group_alive(pgid) {
                fx.children.end_group(pgid, opts.grace).await?;
                fx.store
                    .event(
                        "orphan-ended",
                        Some(&entry.id),
                        bson::doc! { "pgid": pgid as i64, "previous_run": &holder.holder.run_id },
                    )
                    .await?;
            }
        }
    }
    Ok(())
}

/// Entries left `running` by runs that are gone become interrupted (we hold the lock now).
/// One whose heartbeat is fresh is still running somewhere (say, on another host after an
/// `upstep unlock`): it is left alone, and this run stops before touching anything.
pub(super) async fn settle_abandoned(opts: &UpgradeOptions, fx: &Effects<'_>) -> Result<()> {
    let store = &fx.store;
    let mut elsewhere = Vec::new();
    for entry in store.entries().await?.values() {
        let theirs = entry
            .actor
            .as_ref()
            .is_some_and(|a| a.run_id != store.actor().run_id);
        if entry.status != StepStatus::Running || !theirs {
            continue;
        }
        if entry.running_elsewhere() {
            elsewhere.push(entry.clone());
            continue;
        }
        let known_dead = entry
            .actor
            .as_ref()
            .is_some_and(|a| a.is_dead_local_process());
        if let Some(pgid) = entry.child_pgid.map(|p| p as i32) {
            if known_dead && fx.children.group_alive(pgid) {
                let _ = fx.children.end_group(pgid, opts.grace).await;
            }
        }
        let reason = match entry.heartbeat_age() {
            Some(age) => format!(
                "the run that started it is gone (last heartbeat {}s ago)",
                age.as_secs()
            ),
            None => "the run that started it is gone".to_string(),
        };
        if !store.settle_abandoned(entry, &reason, known_dead).await? {
            // Its heartbeat came back between the read and the write: it is alive.
            if let Some(now) = store.entries().await?.remove(&entry.id) {
                if now.status == StepStatus::Running {
                    elsewhere.push(now);
                }
            }
        }
    }
    if elsewhere.is_empty() {
        return Ok(());
    }
    let mut lines = Vec::new();
    for entry in &elsewhere {
        store
            .event(
                "running-elsewhere",
                Some(&entry.id),
                bson::doc! { "run": entry.describe_run() },
            )
            .await?;
        lines.push(format!("{}: {}", entry.id, entry.describe_run()));
    }
    Err(Error::Locked(format!(
        "running elsewhere: another upstep run is still running this step (its heartbeat is fresh); this run leaves it alone and stops before running anything:\n  {}\n  fix: wait for that run to finish (`upstep status` shows its heartbeat); if its host is down for good, its heartbeat goes stale within its lease and the next run records the step as interrupted",
        lines.join("\n  ")
    )))
}

/// A tag that moved since a step ran (Novu re-tagged v2.1.1): the script at the tag now is
/// not the one the journal records. Reported before anything runs: a notice (and an event)
/// for a step that is done or will not run, a stop for one that would run again.
pub(super) async fn check_journalled_scripts(
    plan: &Plan,
    repo: &dyn Workspace,
    entries: &BTreeMap<String, JournalEntry>,
    decided: &[DecidedStep],
    fx: &mut Effects<'_>,
) -> Result<()> {
    let mut stops = Vec::new();
    for group in &plan.groups {
        let journalled: Vec<(&crate::plan::PlanStep, &JournalEntry, &str)> = group
            .steps
            .iter()
            .filter_map(|s| {
                let e = entries.get(&s.id)?;
                Some((s, e, e.script_sha256.as_deref()?))
            })
            .collect();
        if journalled.is_empty() {
            continue;
        }
        // A tag this repository lacks cannot be compared; a step that needs it fails later.
        let Ok(tag) = repo.resolve_tag(group) else {
            continue;
        };
        for (step, entry, recorded) in journalled {
            let now = repo
                .read_file_at(&tag.commit, &step.script)?
                .map(|bytes| hex::encode(Sha256::digest(&bytes)));
            if now.as_deref() == Some(recorded) {
                continue;
            }
            let action = decided
                .iter()
                .find(|d| d.id == step.id)
                .map_or(Action::Skip, |d| d.decision.action);
            let stop = decide::changed_script_stops(entry.status, action);
            let was_at = entry.tag.as_deref().unwrap_or("?");
            let what = describe_change(step, entry, group, &tag.commit, now.as_deref());
            fx.store
                .event(
                    "script-changed",
                    Some(&step.id),
                    bson::doc! {
                        "journalled_sha256": recorded, "current_sha256": now.clone(),
                        "journalled_tag": was_at, "journalled_commit": entry.commit.clone(),
                        "tag": &group.git_ref, "commit": &tag.commit, "stops": stop,
                    },
                )
                .await?;
            if stop {
                stops.push(what);
            } else {
                let outcome = if action == Action::Run {
                    format!(
                        "it runs as the script is now (the journal says {})",
                        entry.status.as_str()
                    )
                } else {
                    format!("the journal's record ({}) stands", entry.status.as_str())
                };
                fx.reporter.report(&RunEvent::Notice {
                    message: format!("{what}; {outcome}"),
                });
            }
        }
    }
    if stops.is_empty() {
        return Ok(());
    }
    Err(Error::NeedsDecision(format!(
        "a step that would run again has a different script than the one that ran; nothing was run:\n  {}\n  choices: `upstep mark <id> --applied` if its work is done; `upstep mark <id> --pending` to accept the new script, then run again; or restore the tag to the commit the journal records and re-run with --retry to repeat the script that ran",
        stops.join("\n  ")
    )))
}

/// "<id>: <script> changed since it ran: the journal records sha256 .. from <tag> (commit ..);
/// <tag> (commit ..) now has sha256 .. (the tag <tag> was moved)".
fn describe_change(
    step: &crate::plan::PlanStep,
    entry: &JournalEntry,
    group: &crate::plan::PlanGroup,
    commit: &str,
    now: Option<&str>,
) -> String {
    let short = |s: &str| s[..s.len().min(12)].to_string();
    let recorded = entry.script_sha256.as_deref().unwrap_or_default();
    let was_at = entry.tag.as_deref().unwrap_or("?");
    let was_commit = entry.commit.as_deref().map(short).unwrap_or_default();
    let moved = if was_at == group.git_ref && entry.commit.as_deref() != Some(commit) {
        format!(" (the tag {was_at} was moved)")
    } else {
        String::new()
    };
    format!(
        "{}: {} changed since it ran: the journal records sha256 {} from {was_at} (commit {was_commit}); {} (commit {}) now has {}{moved}",
        step.id,
        step.script,
        short(recorded),
        group.git_ref,
        short(commit),
        now.map_or("no such file".to_string(), |n| format!("sha256 {}", short(n))),
    )
}

/// Whether a step stopped by a dropped tunnel may run again by itself: only when repeating it
/// is safe (idempotent or guarded) and the data still shows its work missing.
pub fn tunnel_rerun_is_safe(idempotent: crate::release_map::Idempotency, data: FpState) -> bool {
    idempotent != crate::release_map::Idempotency::No && data == FpState::Pending
}

/// Reopen the tunnel (bounded retries), settle the interrupted step in the database journal,
/// and either let it run again (`Ok`) or stop with the user's choices.
pub(super) async fn recover_after_tunnel_drop(
    opts: &UpgradeOptions,
    id: &str,
    fx: &mut Effects<'_>,
) -> Result<()> {
    let store = fx.store.clone();
    let Some(tunnel) = fx.tunnel.as_deref_mut() else {
        return Err(Error::Internal(
            "a tunnel dropped, but the run has none".into(),
        ));
    };
    let mirror = store.mirror().path().display().to_string();
    fx.reporter.report(&RunEvent::Notice {
        message: format!("the SSH tunnel dropped while {id} ran: the step was stopped and recorded as interrupted (local journal mirror: {mirror}); reopening the tunnel"),
    });
    tunnel.reopen(3, Duration::from_secs(2)).await.map_err(|e| Error::Tunnel {
        message: format!("the SSH tunnel dropped while {id} ran and could not be reopened: {e}\n  {id} is recorded as interrupted in the local journal mirror {mirror}"),
        fix: "check the SSH host and network, then re-run the same command with --retry".into(),
    })?;
    if store.renew_lease(opts.lease).await?.is_none() {
        return Err(Error::Locked("the run lock expired while the tunnel was down and another run took it; this run stops".into()));
    }
    let entry = store.entries().await?.remove(id);
    if entry.is_some_and(|e| e.status == StepStatus::Running) {
        let end = StepEnd::without_outcome(
            EndedBy::TunnelDropped,
            "the SSH tunnel to the database dropped mid-step",
        );
        store.settle(id, StepStatus::Interrupted, &end).await?;
    }
    let migration = opts
        .map
        .migration(id)
        .ok_or_else(|| Error::Internal(format!("{id} not in the map")))?;
    let data = store
        .checks()
        .check(&migration.fingerprint, opts.pending_check())
        .await
        .state;
    if tunnel_rerun_is_safe(migration.idempotent, data) {
        fx.reporter.report(&RunEvent::Notice { message: format!("tunnel back; running {id} again: repeating it is safe and its data check still shows work to do") });
        return Ok(());
    }
    let why = if migration.idempotent == crate::release_map::Idempotency::No {
        "it is not idempotent".to_string()
    } else {
        format!("its data check says {:?}, so it may have finished", data).to_lowercase()
    };
    Err(Error::NeedsDecision(format!(
        "{id} was interrupted by a dropped SSH tunnel and {why}; nothing more was run.\n  choices: re-run with --retry to run it again, `upstep mark {id} --applied` if its work is done, or stop here"
    )))
}
