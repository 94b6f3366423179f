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
    /// The raw password, to scrub from driver messages (never printed).
    secret: Option<String>,
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
                    scrub(&e.to_string(), password_of(uri).as_deref())
                ),
                "write it as mongodb://[user:password@]host[:port]/database",
            )
        })?;
        let secret = options.credential.as_ref().and_then(|c| c.password.clone());
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
                    scrub(&e.to_string(), secret.as_deref())
                ),
                "check the URI's options",
            )
        })?;
        let conn = Connection {
            client,
            database,
            redacted,
            secret,
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
        map_driver_error(what, &self.redacted, self.secret.as_deref(), e)
    }
}

pub(crate) fn map_driver_error(
    what: &str,
    redacted: &str,
    secret: Option<&str>,
    e: DriverError,
) -> Error {
    let message = scrub(&e.to_string(), secret);
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

/// Replaces a password (raw and percent-encoded) anywhere in `text` with `***`.
pub(crate) fn scrub(text: &str, secret: Option<&str>) -> String {
    match secret {
        Some(s) if !s.is_empty() => {
            let encoded = percent_encode(s);
            text.replace(s, "***").replace(&encoded, "***")
        }
        _ => text.to_string(),
    }
}

fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// The password part of a URI's userinfo, as written (still percent-encoded).
fn password_of(uri: &str) -> Option<String> {
    let (_, rest) = uri.split_once("://")?;
    let authority = rest.split(['/', '?']).next()?;
    let (userinfo, _) = authority.rsplit_once('@')?;
    userinfo.split_once(':').map(|(_, p)| p.to_string())
}

// TODO(merge): use the shared redaction helper.
/// A URI fit to print: the password becomes `***`, and so do query values that hold secrets.
pub fn redact_uri(uri: &str) -> String {
    let Some((scheme, rest)) = uri.split_once("://") else {
        return "<not a URI>".into();
    };
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let authority = match authority.rsplit_once('@') {
        Some((userinfo, hosts)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{user}:***@{hosts}"),
            None => format!("{userinfo}@{hosts}"),
        },
        None => authority.to_string(),
    };
    let tail = match tail.split_once('?') {
        Some((path, query)) => {
            let query: Vec<String> = query
                .split('&')
                .map(|pair| match pair.split_once('=') {
                    Some((key, _)) if is_secret_key(key) => format!("{key}=***"),
                    _ => pair.to_string(),
                })
                .collect();
            format!("{path}?{}", query.join("&"))
        }
        None => tail.to_string(),
    };
    format!("{scheme}://{authority}{tail}")
}

fn is_secret_key(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    [
        "password",
        "secret",
        "token",
        "authmechanismproperties",
        "tlscertificatekeyfilepassword",
    ]
    .iter()
    .any(|s| key.contains(s))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_password_and_secret_query_values() {
        assert_eq!(
            redact_uri(
                "mongodb://u:p%40ss@h:1,h2:2/db?authSource=admin&tlsCertificateKeyFilePassword=x"
            ),
            "mongodb://u:***@h:1,h2:2/db?authSource=admin&tlsCertificateKeyFilePassword=***"
        );
        assert_eq!(redact_uri("mongodb://h/db"), "mongodb://h/db");
        assert_eq!(redact_uri("mongodb+srv://u@h/db"), "mongodb+srv://u@h/db");
        assert_eq!(redact_uri("nonsense"), "<not a URI>");
    }

    #[test]
    fn scrubs_raw_and_encoded_password() {
        assert_eq!(scrub("x p@ss y p%40ss", Some("p@ss")), "x *** y ***");
        assert_eq!(
            password_of("mongodb://u:p%40ss@h/db").as_deref(),
            Some("p%40ss")
        );
    }
}
