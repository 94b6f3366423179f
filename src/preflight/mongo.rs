//! MongoDB: reachable, new enough, credentials accepted, allowed to read and write the target
//! database, the right topology, and a database that looks like the one meant.
//!
//! Every check only reads: write permission is judged from the user's roles (`usersInfo`),
//! never by writing, because doctor runs against production databases.

use std::future::IntoFuture;
use std::time::Duration;

use bson::{doc, Bson, Document};
use mongodb::error::{Error as MongoError, ErrorKind, WriteFailure};
use mongodb::options::ClientOptions;
use mongodb::{Client, Database};
use semver::Version;

use super::CheckResult;
use crate::redact::{redact_uri, scrub, uri_secrets};

/// The oldest MongoDB the Rust driver upstep uses can talk to (wire version 9).
pub const MIN_MONGO_VERSION: (u64, u64) = (4, 4);

use crate::mongo::{AUTH_FAILED, UNAUTHORIZED};

const CONNECT_FIX: &str = "check the host and port in the URI and that MongoDB is running \
                           there; for a server only reachable over SSH use --ssh to tunnel";

const ADD_USER_FIX: &str =
    "add the user to the URI: mongodb://USER:PASSWORD@host:27017/novu-db?authSource=admin";

fn grant_fix(db_name: &str) -> String {
    format!(
        "grant the user readWrite on {db_name} (in mongosh, as an admin): \
         db.getSiblingDB(\"admin\").grantRolesToUser(\"<user>\", \
         [{{role: \"readWrite\", db: \"{db_name}\"}}])"
    )
}

/// Runs every MongoDB check against `uri`; each network step waits at most about `timeout`.
/// `needs_replica_set` is whether a migration in the plan uses transactions.
pub async fn check_mongo(
    uri: &str,
    timeout: Duration,
    needs_replica_set: bool,
) -> Vec<CheckResult> {
    let ctx = Context {
        shown: redact_uri(uri),
        secrets: uri_secrets(uri),
        timeout,
    };
    let mut results = Vec::new();

    let mut options = match bounded(timeout, ClientOptions::parse(uri)).await {
        Ok(options) => options,
        Err(failure) => {
            results.push(CheckResult::blocker(
                "mongo.connect",
                "MongoDB reachable",
                format!(
                    "{} is not a usable MongoDB URI: {}",
                    ctx.shown,
                    ctx.describe(&failure)
                ),
                "pass a URI like mongodb://user:password@host:27017/novu-db?authSource=admin",
            ));
            return results;
        }
    };
    options.server_selection_timeout = Some(timeout);
    options.connect_timeout = Some(timeout);
    options.app_name = Some("upstep-doctor".into());
    let target_db = options.default_database.clone().filter(|db| !db.is_empty());
    let has_credentials = options.credential.is_some();

    // `hello` needs no authentication, so it separates "unreachable" from "wrong password".
    let mut anonymous_options = options.clone();
    anonymous_options.credential = None;
    let connected = match crate::mongo::client(anonymous_options) {
        Ok(client) => command(&client.database("admin"), doc! { "hello": 1 }, timeout)
            .await
            .map(|hello| (client, hello)),
        Err(e) => Err(Failure::Mongo(e)),
    };
    let (anonymous, hello) = match connected {
        Ok(connected) => connected,
        Err(failure) => {
            results.push(ctx.connect_failure(&failure));
            if target_db.is_none() {
                results.push(ctx.missing_database());
            }
            return results;
        }
    };
    results.push(CheckResult::ok(
        "mongo.connect",
        "MongoDB reachable",
        format!("{} answered", ctx.shown),
    ));

    // The authenticated client is the one every later step uses.
    let client = match crate::mongo::client(options.clone()) {
        Ok(client) => client,
        Err(e) => {
            results.push(CheckResult::blocker(
                "mongo.auth",
                "MongoDB credentials",
                format!(
                    "cannot use the URI's credentials: {}",
                    ctx.describe(&Failure::Mongo(e))
                ),
                "check the user, password and authMechanism in the URI",
            ));
            return results;
        }
    };
    let auth = if has_credentials {
        command(&client.database("admin"), doc! { "ping": 1 }, timeout).await
    } else {
        Ok(Document::new())
    };
    let authenticated = auth.is_ok();

    // buildInfo needs no login on mongod, so the version shows even when the login fails.
    let version_client = if authenticated { &client } else { &anonymous };
    results.push(ctx.version(version_client).await);
    results.push(match auth {
        Ok(_) if has_credentials => CheckResult::ok(
            "mongo.auth",
            "MongoDB credentials",
            format!("logged in as {}", user_label(&options)),
        ),
        Ok(_) => CheckResult::ok(
            "mongo.auth",
            "MongoDB credentials",
            "the URI has no credentials (the roles check shows whether the server needs them)",
        ),
        Err(failure) => ctx.auth_failure(&failure, &options),
    });

    if authenticated {
        if let Some(db_name) = &target_db {
            let database = client.database(db_name);
            let (contents, listing) = ctx
                .database_contents(&database, db_name, has_credentials)
                .await;
            results.push(ctx.roles(&client, &options, db_name, &listing).await);
            results.push(topology(&hello, needs_replica_set));
            results.push(contents);
            return results;
        }
    }
    results.push(topology(&hello, needs_replica_set));
    if target_db.is_none() {
        results.push(ctx.missing_database());
    }
    results
}

/// Why a driver call did not produce an answer.
enum Failure {
    TimedOut,
    Mongo(MongoError),
}

impl Failure {
    fn code(&self) -> Option<i32> {
        let Failure::Mongo(e) = self else {
            return None;
        };
        match e.kind.as_ref() {
            ErrorKind::Command(c) => Some(c.code),
            ErrorKind::Write(WriteFailure::WriteError(w)) => Some(w.code),
            ErrorKind::Write(WriteFailure::WriteConcernError(w)) => Some(w.code),
            _ => None,
        }
    }

    fn is_auth_failure(&self) -> bool {
        self.code() == Some(AUTH_FAILED)
            || matches!(self, Failure::Mongo(e) if matches!(e.kind.as_ref(), ErrorKind::Authentication { .. }))
    }

    fn is_unauthorized(&self) -> bool {
        self.code() == Some(UNAUTHORIZED)
    }
}

struct Context {
    /// The URI with its password replaced: the only form of it that may be shown.
    shown: String,
    /// What `scrub` must remove from driver messages.
    secrets: Vec<String>,
    timeout: Duration,
}

impl Context {
    /// A driver message, scrubbed of secrets, on one line.
    fn describe(&self, failure: &Failure) -> String {
        match failure {
            Failure::TimedOut => format!("no answer within {}s", self.timeout.as_secs_f32()),
            Failure::Mongo(e) => {
                let text = scrub(&e.to_string(), &self.secrets);
                text.lines().next().unwrap_or_default().to_string()
            }
        }
    }

    fn connect_failure(&self, failure: &Failure) -> CheckResult {
        let message = self.describe(failure);
        // The driver refuses servers older than it supports before any command runs.
        if message.contains("wire version") {
            return CheckResult::blocker(
                "mongo.version",
                "MongoDB version",
                format!(
                    "the server at {} is older than MongoDB {}.{}, the oldest the MongoDB Rust \
                     driver (which upstep uses) supports",
                    self.shown, MIN_MONGO_VERSION.0, MIN_MONGO_VERSION.1
                ),
                "upgrade MongoDB to 4.4 or newer before running upstep",
            )
            .with_details(vec![message]);
        }
        // One cause for people; the driver's whole account only under -v.
        let why = crate::words::connect_failure_reason(&message);
        tracing::debug!("MongoDB driver error: {message}");
        let details = if tracing::enabled!(tracing::Level::DEBUG) {
            vec![message]
        } else {
            Vec::new()
        };
        CheckResult::blocker(
            "mongo.connect",
            "MongoDB reachable",
            format!(
                "no MongoDB answered at {} within {}s ({why})",
                self.shown,
                self.timeout.as_secs_f32()
            ),
            CONNECT_FIX,
        )
        .with_details(details)
    }

    fn auth_failure(&self, failure: &Failure, options: &ClientOptions) -> CheckResult {
        let reason = if failure.is_auth_failure() {
            format!(
                "MongoDB refused the credentials (authentication failed) of {}",
                user_label(options)
            )
        } else {
            format!(
                "logging in as {} failed: {}",
                user_label(options),
                self.describe(failure)
            )
        };
        CheckResult::blocker(
            "mongo.auth",
            "MongoDB credentials",
            reason,
            "check the user name and password in the URI, and authSource (usually \
             ?authSource=admin when the user was created in the admin database)",
        )
    }

    fn missing_database(&self) -> CheckResult {
        CheckResult::blocker(
            "mongo.database",
            "target database",
            format!("{} names no database", self.shown),
            "append the database name to the URI path, before any ?options: e.g. \
             mongodb://host:27017/novu-db (novu-db is Novu's default; use your deployment's)",
        )
    }

    async fn version(&self, client: &Client) -> CheckResult {
        const ID: &str = "mongo.version";
        const TITLE: &str = "MongoDB version";
        let info = command(
            &client.database("admin"),
            doc! { "buildInfo": 1 },
            self.timeout,
        )
        .await;
        let info = match info {
            Ok(info) => info,
            Err(failure) => {
                return CheckResult::warning(
                    ID,
                    TITLE,
                    format!(
                        "cannot read the server version: {}",
                        self.describe(&failure)
                    ),
                    "make sure the server is MongoDB 4.4 or newer (db.version() in mongosh)",
                )
            }
        };
        let text = info.get_str("version").unwrap_or("unknown").to_string();
        let mut details = Vec::new();
        if let Ok(secantus) = info.get_str("secantusVersion") {
            details.push(format!(
                "SecantusDB {secantus} (a MongoDB-compatible test server)"
            ));
        }
        match lenient_version(&text) {
            Some(v) if (v.major, v.minor) < MIN_MONGO_VERSION => CheckResult::blocker(
                ID,
                TITLE,
                format!(
                    "MongoDB {text} is older than {}.{}, the oldest the MongoDB Rust driver \
                     (which upstep uses) supports",
                    MIN_MONGO_VERSION.0, MIN_MONGO_VERSION.1
                ),
                "upgrade MongoDB to 4.4 or newer before running upstep",
            ),
            Some(_) => CheckResult::ok(ID, TITLE, format!("MongoDB {text}")),
            None => CheckResult::warning(
                ID,
                TITLE,
                format!("the server reports version {text:?}, which upstep cannot read"),
                "make sure the server is MongoDB 4.4 or newer (db.version() in mongosh)",
            ),
        }
        .with_details(details)
    }

    /// The `mongo.database` result, and what the listing showed (for the roles check).
    async fn database_contents(
        &self,
        database: &Database,
        db_name: &str,
        has_credentials: bool,
    ) -> (CheckResult, Listing) {
        const ID: &str = "mongo.database";
        let title = format!("database {db_name}");
        let names = match bounded(self.timeout, database.list_collection_names()).await {
            Ok(names) => names,
            Err(failure) if failure.is_unauthorized() => {
                let result = if has_credentials {
                    CheckResult::blocker(
                        ID,
                        title,
                        format!("not allowed to list the collections of {db_name}"),
                        grant_fix(db_name),
                    )
                } else {
                    CheckResult::blocker(
                        ID,
                        title,
                        "the server requires authentication and the URI has no user",
                        ADD_USER_FIX,
                    )
                };
                return (result, Listing::Unauthorized);
            }
            Err(failure) => {
                let result = CheckResult::warning(
                    ID,
                    title,
                    format!(
                        "cannot list the collections of {db_name}: {}",
                        self.describe(&failure)
                    ),
                    "check that the database name in the URI is right",
                );
                return (result, Listing::Failed);
            }
        };
        let mut collections: Vec<&String> = names
            .iter()
            .filter(|name| !name.starts_with("system."))
            .collect();
        collections.sort();
        if collections.is_empty() {
            let result = CheckResult::warning(
                ID,
                title,
                format!("{db_name} has no collections: is this the database you meant?"),
                "check the database name in the URI path (Novu's default is novu-db); a new, \
                 empty database has nothing to migrate",
            );
            return (result, Listing::Listed);
        }
        let mut details = Vec::new();
        let mut total: u64 = 0;
        for name in &collections {
            let counted = bounded(
                self.timeout,
                database
                    .collection::<Document>(name)
                    .estimated_document_count(),
            )
            .await;
            match counted {
                Ok(count) => {
                    total = total.saturating_add(count);
                    details.push(format!("{name}: ~{count} documents"));
                }
                Err(_) => details.push(format!("{name}: count unavailable (a view?)")),
            }
        }
        let result = CheckResult::ok(
            ID,
            title,
            format!(
                "{}, about {total} documents",
                crate::words::count(collections.len(), "collection")
            ),
        )
        .with_details(details);
        (result, Listing::Listed)
    }

    /// Whether the user may read and write `db_name`, judged from its roles only: doctor never
    /// writes to the database it checks (no probe document, no probe collection).
    async fn roles(
        &self,
        client: &Client,
        options: &ClientOptions,
        db_name: &str,
        listing: &Listing,
    ) -> CheckResult {
        const ID: &str = "mongo.roles";
        let title = format!("read and write access to {db_name}");
        if options.credential.is_none() {
            return match listing {
                // mongod refuses listCollections to a client that has not logged in when
                // authentication is on, so an answer means it is off.
                Listing::Listed => CheckResult::ok(
                    ID,
                    title,
                    "the server lets clients read and write without logging in \
                     (authentication is off)",
                ),
                Listing::Unauthorized => CheckResult::blocker(
                    ID,
                    title,
                    "the server requires authentication and the URI has no user",
                    ADD_USER_FIX,
                ),
                Listing::Failed => CheckResult::warning(
                    ID,
                    title,
                    format!(
                        "unknown: the collections of {db_name} could not be listed, so whether \
                         this URI may write there cannot be told"
                    ),
                    format!("make sure the URI may read and write {db_name}"),
                ),
            };
        }
        let user = user_label(options);
        match self.privileges(client, options, db_name).await {
            Ok(Access {
                read: true,
                write: true,
            }) => CheckResult::ok(
                ID,
                title,
                format!("the roles of {user} allow reading and writing {db_name}"),
            ),
            Ok(Access { read: true, .. }) => CheckResult::blocker(
                ID,
                title,
                format!(
                    "{user} may read {db_name} but cannot write it: its roles do not grant \
                     insert, update and remove there"
                ),
                grant_fix(db_name),
            ),
            Ok(_) => CheckResult::blocker(
                ID,
                title,
                format!("{user} may not read {db_name}: its roles grant no find there"),
                grant_fix(db_name),
            ),
            Err(why) => CheckResult::warning(
                ID,
                title,
                format!("unknown: upstep cannot read the roles of {user} ({why})"),
                format!(
                    "make sure the user has readWrite on {db_name} (in mongosh: \
                     db.getSiblingDB(\"admin\").getUser(\"<user>\", {{showPrivileges: true}})); \
                     to let doctor tell, allow it viewUser on its own user"
                ),
            ),
        }
    }

    /// What `usersInfo` says the logged-in user may do in `db_name`, or why it cannot tell.
    /// The user is the URI's (`connectionStatus` only when the URI names none, e.g. X.509; it
    /// is not asked for privileges: some servers return none from it).
    async fn privileges(
        &self,
        client: &Client,
        options: &ClientOptions,
        db_name: &str,
    ) -> Result<Access, String> {
        let (name, source) = match uri_user(options) {
            Some(user) => user,
            None => self.connected_user(client).await?,
        };
        let info = command(
            &client.database(&source),
            doc! { "usersInfo": { "user": &name, "db": &source }, "showPrivileges": true },
            self.timeout,
        )
        .await
        .map_err(|failure| format!("usersInfo failed: {}", self.describe(&failure)))?;
        let privileges = info
            .get_array("users")
            .ok()
            .and_then(|users| users.iter().find_map(Bson::as_document))
            .ok_or("usersInfo does not list the user")?
            .get_array("inheritedPrivileges")
            .map_err(|_| "usersInfo gave no privileges".to_string())?;
        if privileges.is_empty() {
            return Err("usersInfo lists no privileges for the user".into());
        }
        Ok(access_from_privileges(privileges, db_name))
    }

    /// The logged-in user and its database, from `connectionStatus`.
    async fn connected_user(&self, client: &Client) -> Result<(String, String), String> {
        let status = command(
            &client.database("admin"),
            doc! { "connectionStatus": 1 },
            self.timeout,
        )
        .await
        .map_err(|failure| format!("connectionStatus failed: {}", self.describe(&failure)))?;
        let user = status
            .get_document("authInfo")
            .ok()
            .and_then(|a| a.get_array("authenticatedUsers").ok())
            .and_then(|users| users.iter().find_map(Bson::as_document))
            .ok_or("the server names no logged-in user")?;
        match (user.get_str("user"), user.get_str("db")) {
            (Ok(name), Ok(db)) => Ok((name.to_string(), db.to_string())),
            _ => Err("the server names no logged-in user".into()),
        }
    }
}

/// What listing the target database's collections showed.
enum Listing {
    Listed,
    Unauthorized,
    Failed,
}

#[derive(Debug, PartialEq, Eq)]
struct Access {
    read: bool,
    write: bool,
}

/// Whether privileges on the whole of `db_name` (or on any database) allow reading and writing.
fn access_from_privileges(privileges: &[Bson], db_name: &str) -> Access {
    let mut actions: Vec<&str> = Vec::new();
    for privilege in privileges.iter().filter_map(Bson::as_document) {
        let Ok(resource) = privilege.get_document("resource") else {
            continue;
        };
        let any_resource = resource.get_bool("anyResource").unwrap_or(false);
        let whole_db = matches!(resource.get_str("db"), Ok(db) if db == db_name || db.is_empty())
            && resource.get_str("collection") == Ok("");
        if any_resource || whole_db {
            if let Ok(list) = privilege.get_array("actions") {
                actions.extend(list.iter().filter_map(Bson::as_str));
            }
        }
    }
    let has = |action: &str| actions.iter().any(|a| *a == action || *a == "anyAction");
    Access {
        read: has("find"),
        write: has("insert") && has("update") && has("remove"),
    }
}

fn topology(hello: &Document, needs_replica_set: bool) -> CheckResult {
    const ID: &str = "mongo.topology";
    const TITLE: &str = "MongoDB topology";
    if let Ok(set) = hello.get_str("setName") {
        return CheckResult::ok(ID, TITLE, format!("replica set {set}"));
    }
    if hello.get_str("msg") == Ok("isdbgrid") {
        return CheckResult::ok(ID, TITLE, "sharded cluster (mongos)");
    }
    if needs_replica_set {
        CheckResult::blocker(
            ID,
            TITLE,
            "standalone server, but a migration in this plan uses transactions, which need a \
             replica set",
            "make it a single-node replica set: restart mongod with --replSet rs0, run \
             rs.initiate() in mongosh, and add ?replicaSet=rs0 to the URI",
        )
    } else {
        CheckResult::ok(
            ID,
            TITLE,
            "standalone server (no migration in this plan needs a replica set)",
        )
    }
}

fn user_label(options: &ClientOptions) -> String {
    if options.credential.is_none() {
        return "(no user)".into();
    }
    match uri_user(options) {
        Some((user, source)) => format!("user {user}, authSource {source}"),
        None => "(certificate user)".into(),
    }
}

/// The URI's user and the database it authenticates against (the driver's rule: authSource,
/// else the URI's database, else admin); `None` without a user name (e.g. X.509).
fn uri_user(options: &ClientOptions) -> Option<(String, String)> {
    let credential = options.credential.as_ref()?;
    let user = credential.username.clone()?;
    let source = credential
        .source
        .clone()
        .or_else(|| options.default_database.clone())
        .unwrap_or_else(|| "admin".into());
    Some((user, source))
}

/// `8.2.11`, `4.4.0-rc1`, `6.0` -> a Version; `None` when there is no leading number.
fn lenient_version(text: &str) -> Option<Version> {
    let numbers: Vec<u64> = text
        .split(['.', '-', '+'])
        .take(3)
        .map_while(|part| part.parse().ok())
        .collect();
    match numbers.as_slice() {
        [major, minor, patch] => Some(Version::new(*major, *minor, *patch)),
        [major, minor] => Some(Version::new(*major, *minor, 0)),
        [major] => Some(Version::new(*major, 0, 0)),
        _ => None,
    }
}

async fn command(db: &Database, command: Document, timeout: Duration) -> Result<Document, Failure> {
    bounded(timeout, db.run_command(command)).await
}

/// A driver call with an outer deadline: server selection honours `timeout`, but a server that
/// accepts the connection and then never answers would otherwise hold the check forever.
async fn bounded<T, F>(timeout: Duration, call: F) -> Result<T, Failure>
where
    F: IntoFuture<Output = mongodb::error::Result<T>>,
{
    match tokio::time::timeout(timeout + Duration::from_secs(2), call.into_future()).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => Err(Failure::Mongo(e)),
        Err(_) => Err(Failure::TimedOut),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_server_versions() {
        assert_eq!(lenient_version("8.2.11"), Some(Version::new(8, 2, 11)));
        assert_eq!(lenient_version("4.4.0-rc1"), Some(Version::new(4, 4, 0)));
        assert_eq!(lenient_version("6.0"), Some(Version::new(6, 0, 0)));
        assert_eq!(lenient_version("unknown"), None);
        assert_eq!(lenient_version(""), None);
    }

    #[test]
    fn privileges_to_access() {
        let read_only = vec![Bson::Document(doc! {
            "resource": { "db": "novu-db", "collection": "" },
            "actions": ["find", "listCollections"],
        })];
        assert_eq!(
            access_from_privileges(&read_only, "novu-db"),
            Access {
                read: true,
                write: false
            }
        );
        assert_eq!(
            access_from_privileges(&read_only, "other"),
            Access {
                read: false,
                write: false
            }
        );
        let read_write = vec![Bson::Document(doc! {
            "resource": { "db": "", "collection": "" },
            "actions": ["find", "insert", "update", "remove"],
        })];
        assert_eq!(
            access_from_privileges(&read_write, "novu-db"),
            Access {
                read: true,
                write: true
            }
        );
        let root = vec![Bson::Document(doc! {
            "resource": { "anyResource": true },
            "actions": ["anyAction"],
        })];
        assert_eq!(
            access_from_privileges(&root, "x"),
            Access {
                read: true,
                write: true
            }
        );
        // A privilege on one collection is not a privilege on the database.
        let one_collection = vec![Bson::Document(doc! {
            "resource": { "db": "novu-db", "collection": "users" },
            "actions": ["find", "insert", "update", "remove"],
        })];
        assert_eq!(
            access_from_privileges(&one_collection, "novu-db"),
            Access {
                read: false,
                write: false
            }
        );
    }

    #[test]
    fn topology_rules() {
        let replica = doc! { "setName": "rs0" };
        let standalone = doc! { "isWritablePrimary": true };
        assert_eq!(
            topology(&replica, true).severity,
            super::super::Severity::Ok
        );
        assert_eq!(
            topology(&standalone, false).severity,
            super::super::Severity::Ok
        );
        let blocked = topology(&standalone, true);
        assert_eq!(blocked.severity, super::super::Severity::Blocker);
        assert!(blocked.fix.unwrap().contains("--replSet"));
    }
}
