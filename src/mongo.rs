//! MongoDB connections: the one place a URI is parsed into driver options, a client is built,
//! and a driver error becomes an upstep error (typed: [`MongoError`] says which failure it is,
//! names the fix, and never carries a password).

use std::time::Duration;

use bson::doc;
use mongodb::error::{Error as DriverError, ErrorKind};
use mongodb::options::ClientOptions;
use mongodb::Client;

use crate::error::{Error, Result};
pub use crate::error::{MongoError, MongoFailure};
use crate::redact::{redact_uri, scrub, uri_secrets};

/// MongoDB's codes for "authentication failed" and "not authorized".
pub const AUTH_FAILED: i32 = 18;
pub const UNAUTHORIZED: i32 = 13;

/// The server error code of a driver error, if it has one.
pub fn error_code(err: &DriverError) -> Option<i32> {
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

/// Which failure a driver error is.
pub fn classify(err: &DriverError) -> MongoFailure {
    match (err.kind.as_ref(), error_code(err)) {
        (ErrorKind::Authentication { .. }, _) | (_, Some(AUTH_FAILED)) => {
            MongoFailure::CredentialsRefused
        }
        (_, Some(UNAUTHORIZED)) => MongoFailure::NotAllowed,
        (
            ErrorKind::ServerSelection { .. }
            | ErrorKind::Io(_)
            | ErrorKind::ConnectionPoolCleared { .. },
            _,
        ) => MongoFailure::Unreachable,
        _ => MongoFailure::Server,
    }
}

/// The one mapping from a driver error (met while `doing` something to the MongoDB at
/// `target`, already redacted) to an upstep error. `secrets` are scrubbed from the detail.
pub fn driver_error(doing: &str, target: &str, secrets: &[String], err: &DriverError) -> Error {
    let full = scrub(&err.to_string(), secrets);
    // The driver's whole account only under -v: it can run to a dozen nested clauses.
    tracing::debug!("MongoDB driver error: {full}");
    let failure = classify(err);
    let detail = match failure {
        // The whole text: the cause is picked out of it when printed.
        MongoFailure::Unreachable => full,
        _ => full.lines().next().unwrap_or_default().to_string(),
    };
    Error::Mongo(MongoError {
        failure,
        target: target.to_string(),
        doing: doing.to_string(),
        detail,
    })
}

/// Parses `uri` (given as `flag`) into driver options, or a usage error that names the flag
/// and never the password.
pub async fn parse(uri: &str, flag: &str) -> Result<ClientOptions> {
    ClientOptions::parse(uri).await.map_err(|e| {
        Error::usage(
            format!(
                "{flag} is not a valid MongoDB URI ({}): {}",
                redact_uri(uri),
                scrub(
                    e.to_string().lines().next().unwrap_or_default(),
                    &uri_secrets(uri)
                )
            ),
            "write it as mongodb://[user:password@]host[:port]/database",
        )
    })
}

/// The one place a client is built from options (no I/O: the driver connects lazily).
pub fn client(options: ClientOptions) -> std::result::Result<Client, DriverError> {
    Client::with_options(options)
}

/// A connected client, the database its URI names (if any), and the URI redacted for printing.
#[derive(Clone)]
pub struct Connection {
    pub client: Client,
    pub database: Option<String>,
    pub redacted: String,
    /// The password as written and decoded, to scrub from driver messages (never printed).
    secrets: Vec<String>,
}

impl Connection {
    /// Parses `uri`, connects, and pings its database (or `admin`), so an unreachable server or
    /// refused credentials fail here with one clear message. With `need_database`, a URI without
    /// a database name is refused before connecting. Timeouts the URI sets are kept.
    pub async fn open(
        uri: &str,
        flag: &str,
        need_database: bool,
        selection_timeout: Duration,
    ) -> Result<Connection> {
        let redacted = redact_uri(uri);
        let mut options = parse(uri, flag).await?;
        let mut secrets = uri_secrets(uri);
        secrets.extend(options.credential.as_ref().and_then(|c| c.password.clone()));
        // Fail fast on a wrong host, unless the URI chose its own timeouts.
        options
            .server_selection_timeout
            .get_or_insert(selection_timeout);
        options
            .connect_timeout
            .get_or_insert(Duration::from_secs(5));
        options.app_name.get_or_insert_with(|| "upstep".into());
        let database = options.default_database.clone().filter(|d| !d.is_empty());
        if need_database && database.is_none() {
            return Err(Error::usage(
                format!("the MongoDB URI {redacted} ({flag}) names no database"),
                "add the database to the URI's path, e.g. mongodb://host:27017/novu-db",
            ));
        }
        let client = client(options).map_err(|e| driver_error("use", &redacted, &secrets, &e))?;
        let conn = Connection {
            client,
            database,
            redacted,
            secrets,
        };
        let ping_db = conn.database.clone().unwrap_or_else(|| "admin".into());
        conn.client
            .database(&ping_db)
            .run_command(doc! { "ping": 1 })
            .await
            .map_err(|e| conn.error("connect to", e))?;
        Ok(conn)
    }

    /// Maps a driver error met while doing `doing` (e.g. "read collection x of") to this
    /// MongoDB.
    pub fn error(&self, doing: &str, e: DriverError) -> Error {
        driver_error(doing, &self.redacted, &self.secrets, &e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_failure_names_its_fix_and_composes_its_message() {
        let err = MongoError {
            failure: MongoFailure::Unreachable,
            target: "mongodb://u:****@h:1/db".into(),
            doing: "read collection x of".into(),
            detail: "timed out".into(),
        };
        let text = err.to_string();
        assert!(
            text.starts_with("cannot reach MongoDB at h:1: timed out\n  fix:"),
            "{text}"
        );
        assert!(text.contains("fix: check that the server runs"), "{text}");
        let refused = MongoError {
            failure: MongoFailure::CredentialsRefused,
            ..err
        };
        assert!(refused
            .to_string()
            .contains("refused the credentials (authentication failed)"));
        assert_eq!(
            Error::Mongo(refused).code(),
            crate::error::ExitCode::Connection
        );
    }

    #[tokio::test]
    async fn a_bad_uri_is_a_usage_error_without_its_password() {
        let err = Connection::open(
            "mongodb://u:SecretPw@",
            "--mongo-uri",
            true,
            Duration::from_secs(1),
        )
        .await
        .err()
        .expect("refused");
        let text = err.to_string();
        assert!(!text.contains("SecretPw"), "{text}");
        assert_eq!(err.code(), crate::error::ExitCode::Usage, "{text}");
    }
}
