//! A migration tool's own journal read as a data check (`journal = "mikro-orm"`, ...): the
//! migration is applied when the tool recorded it, pending when it did not (an absent or
//! empty journal means "never ran", never "not needed"), failed when a home-grown runner's
//! row says `failed`.

use bson::{doc, Document};
use mongodb::Database;

use super::fingerprint::{failure_reason, EvalOptions, FpState};
use crate::release_map::ToolJournal;

pub struct JournalRead {
    pub state: FpState,
    pub reason: Option<String>,
}

/// The filter that finds the tool's record of one migration.
pub(crate) fn record_filter(tool: ToolJournal, key: &str) -> Document {
    doc! { tool.key_field(): key }
}

/// What the tool's journal in `collection` says about the migration recorded as `key`.
pub async fn read(
    db: &Database,
    collection: &str,
    exists: bool,
    tool: ToolJournal,
    key: &str,
    opts: EvalOptions,
) -> Result<JournalRead, String> {
    let never_ran = |why: String| JournalRead {
        state: FpState::Pending,
        reason: Some(why),
    };
    if !exists {
        return Ok(never_ran(format!(
            "{} has no journal collection {collection} yet: {key} never ran",
            tool.as_str()
        )));
    }
    let record = db
        .collection::<Document>(collection)
        .find_one(record_filter(tool, key))
        .projection(doc! { "_id": 1, "status": 1 })
        .max_time(opts.time_limit)
        .await
        .map_err(|e| failure_reason(&e, collection))?;
    let Some(record) = record else {
        return Ok(never_ran(format!(
            "{collection} has no record of {key}: {} never ran it",
            tool.as_str()
        )));
    };
    Ok(match tool {
        ToolJournal::MikroOrm | ToolJournal::MigrateMongo => JournalRead {
            state: FpState::Applied,
            reason: None,
        },
        ToolJournal::StatusRows => status_row(&record, collection, key),
    })
}

/// A home-grown runner's row: `succeeded` is applied, `failed` failed, anything else (a run
/// in progress, or a crashed one) cannot be read either way.
fn status_row(record: &Document, collection: &str, key: &str) -> JournalRead {
    match record.get_str("status") {
        Ok("succeeded") => JournalRead {
            state: FpState::Applied,
            reason: None,
        },
        Ok("failed") => JournalRead {
            state: FpState::Failed,
            reason: Some(format!("{collection} records {key} as failed")),
        },
        Ok(other) => JournalRead {
            state: FpState::Unknown,
            reason: Some(format!(
                "{collection} records {key} with status {other:?} (neither succeeded nor failed)"
            )),
        },
        Err(_) => JournalRead {
            state: FpState::Unknown,
            reason: Some(format!("{collection} records {key} without a status")),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_rows_read_succeeded_failed_and_the_rest() {
        let read = |status: Option<&str>| {
            let mut d = doc! { "_id": 1, "name": "a" };
            if let Some(s) = status {
                d.insert("status", s);
            }
            status_row(&d, "_migrations", "a").state
        };
        assert_eq!(read(Some("succeeded")), FpState::Applied);
        assert_eq!(read(Some("failed")), FpState::Failed);
        assert_eq!(read(Some("running")), FpState::Unknown);
        assert_eq!(read(None), FpState::Unknown);
    }

    #[test]
    fn each_tool_is_read_by_its_own_field() {
        assert_eq!(
            record_filter(ToolJournal::MigrateMongo, "2024-a.js"),
            doc! { "fileName": "2024-a.js" }
        );
        assert_eq!(
            record_filter(ToolJournal::MikroOrm, "Migration1"),
            doc! { "name": "Migration1" }
        );
    }
}
