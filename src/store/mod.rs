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

use mongodb::options::ClientOptions;
use mongodb::{Client, Database};

use crate::error::{Error, Result};
use crate::redact::redact_uri;

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
        let redacted = redact_uri(uri);
        let mut options = ClientOptions::parse(uri).await.map_err(|e| {
            Error::usage(
                format!(
                    "the MongoDB URI {redacted} is not valid: {}",
                    first_line(&e.to_string(), uri)
                ),
                "pass --mongo-uri mongodb://[user:password@]host:port/database",
            )
        })?;
        let Some(db_name) = options.default_database.clone() else {
            return Err(Error::usage(
                format!("the MongoDB URI {redacted} names no database"),
                "append the database to the URI, e.g. mongodb://host:27017/novu-db",
            ));
        };
        options.app_name = Some("upstep".into());
        options
            .server_selection_timeout
            .get_or_insert(Duration::from_secs(5));
        options
            .connect_timeout
            .get_or_insert(Duration::from_secs(5));
        let client = Client::with_options(options).map_err(|e| mongo_error(&e, &redacted, uri))?;
        let db = client.database(&db_name);
        db.run_command(bson::doc! { "ping": 1 })
            .await
            .map_err(|e| mongo_error(&e, &redacted, uri))?;
        Ok(Store {
            client,
            db,
            redacted_uri: redacted,
        })
    }

    pub fn db_name(&self) -> &str {
        self.db.name()
    }
}

/// The first line of a driver message, with anything of the URI's secret removed.
fn first_line(message: &str, uri: &str) -> String {
    let line = message.lines().next().unwrap_or("").to_string();
    crate::redact::scrub(&line, &crate::redact::uri_secrets(uri))
}

/// The server error code of a driver error, if it has one.
pub fn error_code(err: &mongodb::error::Error) -> Option<i32> {
    use mongodb::error::ErrorKind;
    match err.kind.as_ref() {
        ErrorKind::Command(c) => Some(c.code),
        ErrorKind::Write(mongodb::error::WriteFailure::WriteError(w)) => Some(w.code),
        ErrorKind::InsertMany(m) => m
            .write_errors
            .as_ref()
            .and_then(|w| w.first())
            .map(|w| w.code),
        _ => None,
    }
}

/// One mapping from driver errors to user-facing errors, so every command words them alike.
pub fn mongo_error(err: &mongodb::error::Error, redacted: &str, uri: &str) -> Error {
    use mongodb::error::ErrorKind;
    let detail = first_line(&err.to_string(), uri);
    match (err.kind.as_ref(), error_code(err)) {
        (ErrorKind::Authentication { .. }, _) | (_, Some(18)) => Error::connection(
            format!("MongoDB at {redacted} refused the credentials (authentication failed)"),
            "check the user, password and authSource in the URI",
        ),
        (_, Some(13)) => Error::connection(
            format!("the MongoDB user of {redacted} is not allowed to do this: {detail}"),
            "grant the user readWrite on the database (and read on admin for diagnostics)",
        ),
        (ErrorKind::ServerSelection { .. }, _) | (ErrorKind::Io(_), _) => {
            // One line for people; the driver's whole account under -v.
            let full = crate::redact::scrub(&err.to_string(), &crate::redact::uri_secrets(uri));
            tracing::debug!("MongoDB driver error: {full}");
            Error::connection(
                format!(
                    "cannot reach MongoDB at {}: {}",
                    crate::ui::words::uri_hosts(redacted),
                    crate::ui::words::connect_failure_reason(&full)
                ),
                "check that the server runs and the host and port are right (use --ssh for a remote database)",
            )
        }
        _ => Error::connection(
            format!("MongoDB at {redacted} failed: {detail}"),
            "check the server's log; re-run with -v for details",
        ),
    }
}
