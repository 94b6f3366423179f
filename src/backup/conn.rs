//! Connecting to MongoDB for backup and restore, and turning driver errors into upstep errors
//! that name the fix and never carry a password.

use std::time::Duration;

use bson::doc;
use mongodb::error::{Error as DriverError, ErrorKind};
use mongodb::options::ClientOptions;
use mongodb::Client;

use crate::error::{Error, Result};

/// A connected client, the database the URI names (if any), and the URI redacted for printing.
pub(crate) struct Connection {
    pub client: Client,
    pub database: Option<String>,
    pub redacted: String,
    /// The password as written and decoded, to scrub from driver messages (never printed).
    secrets: Vec<String>,
}

impl Connection {
    /// Parses `uri`, connects, and pings its database (or `admin`), so an unreachable server or
    /// refused credentials fail here with one clear message. With `need_database`, a URI without
    /// a database name is refused before connecting.
    pub async fn open(uri: &str, flag: &str, need_database: bool) -> Result<Connection> {
        let redacted = redact_uri(uri);
        let mut options = ClientOptions::parse(uri).await.map_err(|e| {
            Error::usage(
                format!(
                    "{flag} is not a valid MongoDB URI ({redacted}): {}",
                    scrub(&e.to_string(), &uri_secrets(uri))
                ),
                "write it as mongodb://[user:password@]host[:port]/database",
            )
        })?;
        let mut secrets = uri_secrets(uri);
        secrets.extend(options.credential.as_ref().and_then(|c| c.password.clone()));
        // Fail fast on a wrong host, unless the URI chose its own timeouts.
        if options.server_selection_timeout.is_none() {
            options.server_selection_timeout = Some(Duration::from_secs(10));
        }
        if options.connect_timeout.is_none() {
            options.connect_timeout = Some(Duration::from_secs(5));
        }
        if options.app_name.is_none() {
            options.app_name = Some("upstep".into());
        }
        let database = options.default_database.clone();
        if need_database && database.is_none() {
            return Err(Error::usage(
                format!("{flag} {redacted} names no database"),
                "add the database to the URI's path, e.g. mongodb://host:27017/novu-db",
            ));
        }
        let client = Client::with_options(options).map_err(|e| {
            Error::usage(
                format!(
                    "cannot use {flag} {redacted}: {}",
                    scrub(&e.to_string(), &secrets)
                ),
                "check the URI's options",
            )
        })?;
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

    /// Maps a driver error met while doing `what` (e.g. "read collection x of") to an upstep
    /// error: unreachable and refused credentials are connection errors; the rest are reported
    /// with the server's message.
    pub fn error(&self, what: &str, e: DriverError) -> Error {
        map_driver_error(what, &self.redacted, &self.secrets, e)
    }
}

pub(crate) fn map_driver_error(
    what: &str,
    redacted: &str,
    secrets: &[String],
    e: DriverError,
) -> Error {
    let message = scrub(&e.to_string(), secrets);
    match *e.kind {
        ErrorKind::Authentication { .. } => Error::connection(
            format!("MongoDB at {redacted} refused the credentials: {message}"),
            "check the user, the password and authSource in the URI",
        ),
        ErrorKind::ServerSelection { .. } | ErrorKind::Io(_) | ErrorKind::ConnectionPoolCleared { .. } => {
            Error::connection(
                format!("cannot {what} MongoDB at {redacted}: the server cannot be reached ({message})"),
                "check the host and port in the URI, and that MongoDB is running and reachable from here",
            )
        }
        ErrorKind::Command(ref c) if c.code == 18 => Error::connection(
            format!("MongoDB at {redacted} refused the credentials: {message}"),
            "check the user, the password and authSource in the URI",
        ),
        ErrorKind::Command(ref c) if c.code == 13 => Error::connection(
            format!("MongoDB at {redacted} does not allow this user to {what} it: {message}"),
            "use a user with the backup/restore (or readWrite) role on the database",
        ),
        _ => Error::Internal(format!("cannot {what} MongoDB at {redacted}: {message}")),
    }
}

pub use crate::redact::{redact_uri, scrub, uri_secrets};
