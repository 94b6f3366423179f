//! The journal records of `upstep rollback`: a step being undone is `running` with
//! `direction: "down"` (so the heartbeat, the orphan handling and the settling of abandoned
//! steps work as for an upgrade), and ends `rolled-back`, `failed` or `interrupted`, still
//! marked `down`. Those entries are written as schema 2 (`JOURNAL_SCHEMA_READ`): an upstep that
//! knows no rollback refuses them rather than reading an undone step as an upgrade's failure.
//! The next upgrade that runs the step writes it as schema 1 again (and drops `direction`).

use bson::{doc, Bson, Document};

use super::journal::{
    begin_pipeline, entry_filter, owned_filter, settle_update, Journal, StepEnd, StepStart,
    StepStatus,
};
use super::lock::RunLock;
use super::{Store, JOURNAL, JOURNAL_SCHEMA_READ};
use crate::error::{Error, Result};

pub const DOWN: &str = "down";

fn coll(store: &Store) -> mongodb::Collection<Document> {
    store.db.collection(JOURNAL)
}

fn db_error(store: &Store, e: mongodb::error::Error) -> Error {
    super::mongo_error(&e, &store.redacted_uri, "")
}

/// Record the step as being undone, before its down starts.
pub async fn begin_down(journal: &Journal, store: &Store, start: &StepStart<'_>) -> Result<()> {
    let actor = journal.actor();
    let until = match RunLock::new(store).current().await? {
        Some(lock) if lock.holder.run_id == actor.run_id => Bson::DateTime(lock.lease_until),
        _ => super::server_now_plus(std::time::Duration::from_secs(40)),
    };
    let mut pipeline = begin_pipeline(start, actor, until)?;
    if let Some(Ok(set)) = pipeline.first_mut().map(|s| s.get_document_mut("$set")) {
        set.insert("direction", DOWN);
        set.insert("schema", JOURNAL_SCHEMA_READ);
    }
    // The up's pipeline clears `direction`; this one sets it, so it must not be unset.
    if let Some(Ok(unset)) = pipeline.get_mut(1).map(|s| s.get_array_mut("$unset")) {
        unset.retain(|f| f.as_str() != Some("direction"));
    }
    coll(store)
        .update_one(entry_filter(start.id), pipeline)
        .upsert(true)
        .await
        .map_err(|e| db_error(store, e))?;
    journal
        .event(
            "down-started",
            Some(start.id),
            doc! { "tag": start.tag, "commit": start.commit, "script_sha256": start.script_sha256 },
        )
        .await
}

/// Settle a down this run started: `rolled-back`, `failed` or `interrupted`.
pub async fn settle_down(
    journal: &Journal,
    store: &Store,
    id: &str,
    status: StepStatus,
    end: &StepEnd,
) -> Result<()> {
    let mut update = settle_update(status, end);
    if let Ok(set) = update.get_document_mut("$set") {
        set.insert("schema", JOURNAL_SCHEMA_READ);
        set.insert("direction", DOWN);
    }
    let result = coll(store)
        .update_one(owned_filter(id, &journal.actor().run_id), update)
        .await
        .map_err(|e| db_error(store, e))?;
    if result.matched_count == 0 {
        return Err(Error::Internal(format!(
            "journal entry {id} is no longer owned by this run (another run took over)"
        )));
    }
    journal
        .event(
            "down-finished",
            Some(id),
            doc! { "status": status.as_str(), "ended_by": end.ended_by.as_str(), "reason": &end.reason, "exit_code": end.exit_code, "duration_ms": end.duration_ms },
        )
        .await
}
