//! upstep's state in the target MongoDB: the journal (per-migration state and an append-only
//! event history), the run lock, and the fingerprint evaluator that reads the data itself.
//!
//! Collections (all prefixed `upstep_`, so backups and fingerprints can skip them):
//! - `upstep_journal`: one document per migration, `_id` = migration id.
//! - `upstep_events`: append-only history of runs, steps, marks, lock take-overs, restores.
//! - `upstep_lock`: the one run lock, `_id` = "run".

pub mod fingerprint;
pub mod journal;
pub mod lock;
pub mod mirror;
#[cfg(test)]
mod operators;

use std::time::Duration;

use mongodb::{Client, Database};

use crate::error::{Error, Result};

pub const JOURNAL: &str = "upstep_journal";
pub const EVENTS: &str = "upstep_events";
pub const LOCK: &str = "upstep_lock";
/// Version of the journal/event/lock documents; bump on an incompatible change. Every read
/// checks it: a document from a newer upstep stops the run instead of being misread.
pub const JOURNAL_SCHEMA: i32 = 1;

/// The server's clock plus `duration`, as a date. Plain epoch-millisecond arithmetic
/// (`$toLong`/`$add`/`$toDate`, MongoDB 4.0+) rather than `$dateAdd` (5.0+): upstep accepts
/// MongoDB 4.4 (see `preflight::mongo::MIN_MONGO_VERSION`).
pub(crate) fn server_now_plus(duration: Duration) -> bson::Bson {
    let ms = i64::try_from(duration.as_millis()).unwrap_or(i64::MAX);
    bson::doc! { "$toDate": { "$add": [{ "$toLong": "$$NOW" }, ms] } }.into()
}

/// The refusal for a document written by a newer upstep (`what`: "journal", "run lock").
pub(crate) fn newer_schema_error(what: &str, schema: i64, writer: Option<&str>) -> Error {
    let by = writer.map(|w| format!(" ({w})")).unwrap_or_default();
    Error::Preflight(format!(
        "this {what} was written by a newer upstep{by} (schema {schema}, this upstep reads up to {JOURNAL_SCHEMA}): upgrade upstep\n  fix: install the upstep release that wrote it, or a newer one, and run the command again; nothing was changed"
    ))
}

/// The schema number of a stored document (absent: from before the field existed, read as 1).
pub(crate) fn schema_of(doc: &bson::Document) -> i64 {
    match doc.get("schema") {
        Some(bson::Bson::Int32(n)) => i64::from(*n),
        Some(bson::Bson::Int64(n)) => *n,
        Some(bson::Bson::Double(n)) => *n as i64,
        _ => 1,
    }
}

/// A connection to the target database.
#[derive(Clone)]
pub struct Store {
    pub client: Client,
    pub db: Database,
    /// The URI with its password redacted: the only form upstep ever prints.
    pub redacted_uri: String,
}

impl Store {
    /// Connect and ping. The URI must name the database (`mongodb://host/novu-db`).
    pub async fn connect(uri: &str) -> Result<Store> {
        let conn = crate::mongo::Connection::open(uri, "--mongo-uri", true, Duration::from_secs(5))
            .await?;
        let db_name = conn.database.clone().unwrap_or_default();
        Ok(Store {
            db: conn.client.database(&db_name),
            client: conn.client,
            redacted_uri: conn.redacted,
        })
    }

    pub fn db_name(&self) -> &str {
        self.db.name()
    }
}

pub use crate::mongo::error_code;

/// A driver error met while using the store (see `crate::mongo::driver_error`). `uri`, when
/// known, names the secrets to scrub.
pub fn mongo_error(err: &mongodb::error::Error, redacted: &str, uri: &str) -> Error {
    crate::mongo::driver_error("use", redacted, &crate::redact::uri_secrets(uri), err)
}
