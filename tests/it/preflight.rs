//! Preflight checks against real services: every result has the expected severity, warnings and
//! blockers say how to fix them, and no field of any result ever holds a password.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use bson::{doc, Document};
use upstep::preflight::{
    check_disk, check_encryption_key, check_env, check_mongo, check_npx, check_redis, check_tool,
    worst_severity, CheckResult, Severity, ToolRequirement,
};

/// Novu's example key, which its map declares as a placeholder never to use.
const ENCRYPTION_KEY_PLACEHOLDER: &str = "<ENCRYPTION_KEY_MUST_BE_32_LONG>";

/// The embedded (Novu) map: its key rules and env checks.
fn novu_project() -> upstep::release_map::Project {
    upstep::release_map::load(None).unwrap().project
}

use crate::support::{
    free_port, fresh_db_name, mongo, redis, start_mongo_standalone, start_mongo_with_auth,
    start_redis_with_password,
};

/// A password that must never show up in any result.
const CANARY: &str = "CanaryPw-7f3a9";
const TIMEOUT: Duration = Duration::from_secs(3);
const GOOD_KEY: &str = "0123456789abcdef0123456789ABCDEF";

/// Fails when `secret` (or its first 8 characters) appears in any field of any result.
fn assert_secret_absent(results: &[CheckResult], secret: &str) {
    let json = serde_json::to_string(results).expect("results serialize");
    assert!(!json.contains(secret), "a secret leaked into {json}");
    assert!(
        !json.contains(&secret[..8]),
        "part of a secret leaked into {json}"
    );
}

fn find<'a>(results: &'a [CheckResult], id: &str) -> &'a CheckResult {
    results
        .iter()
        .find(|r| r.id == id)
        .unwrap_or_else(|| panic!("no {id} in {results:#?}"))
}

/// Asserts the severity, and that anything not Ok comes with a fix.
fn assert_severity(result: &CheckResult, expected: Severity) {
    assert_eq!(result.severity, expected, "{result:#?}");
    if expected != Severity::Ok {
        let fix = result.fix.as_deref().unwrap_or_default();
        assert!(!fix.is_empty(), "no fix in {result:#?}");
    }
}

fn write_script(dir: &Path, name: &str, body: &str) {
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).expect("write shim");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
}

fn node_16(for_tag: &str) -> ToolRequirement {
    ToolRequirement {
        tool: "node".into(),
        exact: Some("16.15.1".into()),
        range: Some(">=13.0.0 <17.0.0".into()),
        for_tag: for_tag.into(),
    }
}

async fn seed(uri: &str, db: &str) {
    let client = mongodb::Client::with_uri_str(uri).await.expect("client");
    client
        .database(db)
        .collection::<Document>("subscribers")
        .insert_many([doc! { "n": 1 }, doc! { "n": 2 }])
        .await
        .expect("seed");
}

#[tokio::test]
async fn everything_green() {
    let db = fresh_db_name("everything_green");
    seed(&mongo().uri_for_db(&db), &db).await;

    let mut results = check_mongo(&mongo().uri_for_db(&db), TIMEOUT, true).await;
    results.push(check_redis(&redis().url, TIMEOUT).await);

    let bin = tempfile::tempdir().unwrap();
    write_script(bin.path(), "node", "echo v16.15.1");
    write_script(bin.path(), "npx", "echo 10.8.2");
    let path: OsString = bin.path().into();
    let npx = check_npx(&path);
    results.push(check_tool(
        &node_16("v0.18.0"),
        &path,
        npx.severity == Severity::Ok,
    ));
    results.push(npx);
    let novu = novu_project();
    let rules = novu.encryption_key.clone().unwrap();
    results.push(check_encryption_key(
        Some(GOOD_KEY),
        "STORE_ENCRYPTION_KEY",
        true,
        &rules,
    ));
    let env = BTreeMap::from([("NEW_RELIC_ENABLED".to_string(), "false".to_string())]);
    results.extend(novu.env_checks.iter().map(|rule| check_env(rule, &env)));
    results.push(check_disk(&std::env::temp_dir(), 1024));

    assert_eq!(worst_severity(&results), Severity::Ok, "{results:#?}");
    let ids: Vec<&str> = results.iter().map(|r| r.id.as_str()).collect();
    for id in [
        "mongo.connect",
        "mongo.version",
        "mongo.auth",
        "mongo.roles",
        "mongo.topology",
        "mongo.database",
        "redis",
        "node@v0.18.0",
        "npx",
        "encryption-key",
        "new-relic",
        "disk",
    ] {
        assert!(ids.contains(&id), "{id} missing from {ids:?}");
    }
    let database = find(&results, "mongo.database");
    assert!(
        database
            .details
            .iter()
            .any(|d| d.starts_with("subscribers: ~2")),
        "{database:#?}"
    );
    // doctor writes nothing: no probe collection.
    let client = mongo().client().await;
    let names = client.database(&db).list_collection_names().await.unwrap();
    assert!(
        !names.iter().any(|n| n == "upstep_preflight_probe"),
        "{names:?}"
    );
}

#[tokio::test]
async fn redis_down() {
    let url = format!("redis://:{CANARY}@127.0.0.1:{}", free_port());
    let result = check_redis(&url, TIMEOUT).await;
    assert_severity(&result, Severity::Blocker);
    assert!(result.reason.contains("connection refused"), "{result:#?}");
    let fix = result.fix.as_deref().unwrap();
    assert!(
        fix.contains("redis-server") && fix.contains("--redis-url auto"),
        "{fix}"
    );
    assert_secret_absent(&[result], CANARY);
}

#[tokio::test]
async fn redis_with_password_right_wrong_and_missing() {
    let server = start_redis_with_password(CANARY);

    let right = check_redis(&server.url_with_password(CANARY), TIMEOUT).await;
    assert_severity(&right, Severity::Ok);

    let wrong = check_redis(&server.url_with_password("WrongPw-91c2e"), TIMEOUT).await;
    assert_severity(&wrong, Severity::Blocker);
    assert!(wrong.reason.contains("authentication failed"), "{wrong:#?}");

    let missing = check_redis(&server.url, TIMEOUT).await;
    assert_severity(&missing, Severity::Blocker);
    assert!(
        missing.reason.contains("requires a password"),
        "{missing:#?}"
    );

    let results = [right, wrong, missing];
    assert_secret_absent(&results, CANARY);
    assert_secret_absent(&results, "WrongPw-91c2e");
}

#[tokio::test]
async fn mongo_down() {
    let uri = format!(
        "mongodb://novu:{CANARY}@127.0.0.1:{}/novu-db?authSource=admin",
        free_port()
    );
    let results = check_mongo(&uri, Duration::from_secs(1), false).await;
    let connect = find(&results, "mongo.connect");
    assert_severity(connect, Severity::Blocker);
    assert!(
        connect.reason.contains("connection refused"),
        "{connect:#?}"
    );
    assert!(connect.reason.contains("novu:****@"), "{connect:#?}");
    assert_secret_absent(&results, CANARY);
}

#[tokio::test]
async fn mongo_wrong_credentials() {
    let server = start_mongo_with_auth();
    let admin = server.admin.clone().unwrap();
    let uri = server.uri_with_credentials(&admin.user, CANARY, "novu-db");
    let results = check_mongo(&uri, TIMEOUT, false).await;
    assert_severity(find(&results, "mongo.connect"), Severity::Ok);
    let auth = find(&results, "mongo.auth");
    assert_severity(auth, Severity::Blocker);
    assert!(auth.reason.contains("authentication failed"), "{auth:#?}");
    assert_eq!(worst_severity(&results), Severity::Blocker);
    assert_secret_absent(&results, CANARY);
}

#[tokio::test]
async fn mongo_user_allowed_to_read_and_write() {
    let server = start_mongo_with_auth();
    let db = "novu-db";
    seed(&server.admin_uri("admin"), db).await;
    server
        .create_user("writer", CANARY, &[("readWrite", db)])
        .await;
    let results = check_mongo(
        &server.uri_with_credentials("writer", CANARY, db),
        TIMEOUT,
        false,
    )
    .await;
    assert_eq!(worst_severity(&results), Severity::Ok, "{results:#?}");
    assert_secret_absent(&results, CANARY);
}

#[tokio::test]
async fn mongo_read_only_user_is_a_blocker() {
    let server = start_mongo_with_auth();
    let db = "novu-db";
    seed(&server.admin_uri("admin"), db).await;
    server.create_user("reader", CANARY, &[("read", db)]).await;

    let results = check_mongo(
        &server.uri_with_credentials("reader", CANARY, db),
        TIMEOUT,
        false,
    )
    .await;
    assert_severity(find(&results, "mongo.auth"), Severity::Ok);
    assert_severity(find(&results, "mongo.database"), Severity::Ok);
    let roles = find(&results, "mongo.roles");
    assert_severity(roles, Severity::Blocker);
    assert!(roles.reason.contains("cannot write"), "{roles:#?}");
    assert!(
        roles.fix.as_deref().unwrap().contains("readWrite"),
        "{roles:#?}"
    );
    assert_secret_absent(&results, CANARY);
}

/// The collections of `db` and their document counts, as an admin sees them.
async fn contents(uri: &str, db: &str) -> Vec<(String, u64)> {
    let client = mongodb::Client::with_uri_str(uri).await.expect("client");
    let database = client.database(db);
    let mut names = database.list_collection_names().await.expect("list");
    names.sort();
    let mut out = Vec::new();
    for name in names {
        let n = database
            .collection::<Document>(&name)
            .count_documents(doc! {})
            .await
            .expect("count");
        out.push((name, n));
    }
    out
}

/// doctor only reads: whatever the user may do, the database's collections (and their
/// documents) are the same after the checks. The third user may insert but not delete, so a
/// write probe (what doctor did before) would leave its document behind.
#[tokio::test]
async fn doctor_leaves_the_database_unchanged() {
    let server = start_mongo_with_auth();
    let db = "novu-db";
    let admin_uri = server.admin_uri("admin");
    seed(&admin_uri, db).await;
    server.create_user("reader", CANARY, &[("read", db)]).await;
    server
        .create_user("writer", CANARY, &[("readWrite", db)])
        .await;
    server
        .client()
        .await
        .database("admin")
        .run_command(doc! {
            "createRole": "insertOnly",
            "privileges": [ {
                "resource": { "db": db, "collection": "" },
                "actions": ["find", "insert", "listCollections", "createCollection"],
            } ],
            "roles": [],
        })
        .await
        .expect("createRole");
    server
        .create_user("inserter", CANARY, &[("insertOnly", "admin")])
        .await;

    let before = contents(&admin_uri, db).await;
    for (user, expected) in [
        ("inserter", Severity::Blocker),
        ("reader", Severity::Blocker),
        ("writer", Severity::Ok),
    ] {
        let results = check_mongo(
            &server.uri_with_credentials(user, CANARY, db),
            TIMEOUT,
            false,
        )
        .await;
        assert_eq!(
            contents(&admin_uri, db).await,
            before,
            "doctor as {user} changed the database"
        );
        let roles = find(&results, "mongo.roles");
        assert_severity(roles, expected);
        assert!(
            roles.reason.contains("roles") || roles.reason.contains("cannot write"),
            "{user}: judged by something other than its roles: {roles:#?}"
        );
        assert_secret_absent(&results, CANARY);
    }
}

/// Without a user on a server that needs none, writing is allowed, and nothing is written.
#[tokio::test]
async fn doctor_without_authentication_writes_nothing() {
    let db = fresh_db_name("doctor_no_auth_writes_nothing");
    seed(&mongo().uri_for_db(&db), &db).await;
    let before = contents(&mongo().uri, &db).await;
    let results = check_mongo(&mongo().uri_for_db(&db), TIMEOUT, false).await;
    assert_eq!(contents(&mongo().uri, &db).await, before);
    let roles = find(&results, "mongo.roles");
    assert_severity(roles, Severity::Ok);
    assert!(roles.reason.contains("authentication is off"), "{roles:#?}");
}

#[tokio::test]
async fn standalone_server_blocks_only_plans_that_need_a_replica_set() {
    let server = start_mongo_standalone();
    let uri = server.uri_for_db("novu-db");
    let needed = check_mongo(&uri, TIMEOUT, true).await;
    let topology = find(&needed, "mongo.topology");
    assert_severity(topology, Severity::Blocker);
    assert!(
        topology.fix.as_deref().unwrap().contains("--replSet"),
        "{topology:#?}"
    );

    let not_needed = check_mongo(&uri, TIMEOUT, false).await;
    assert_severity(find(&not_needed, "mongo.topology"), Severity::Ok);
}

#[tokio::test]
async fn mongo_uri_without_database() {
    let results = check_mongo(&mongo().uri, TIMEOUT, false).await;
    let database = find(&results, "mongo.database");
    assert_severity(database, Severity::Blocker);
    assert!(
        database.fix.as_deref().unwrap().contains("/novu-db"),
        "{database:#?}"
    );
    assert_severity(find(&results, "mongo.connect"), Severity::Ok);
}

#[tokio::test]
async fn mongo_empty_database_is_a_warning() {
    let db = fresh_db_name("mongo_empty_database_is_a_warning");
    let results = check_mongo(&mongo().uri_for_db(&db), TIMEOUT, false).await;
    let database = find(&results, "mongo.database");
    assert_severity(database, Severity::Warning);
    assert!(
        database.reason.contains("is this the database you meant?"),
        "{database:#?}"
    );
    assert_eq!(worst_severity(&results), Severity::Warning, "{results:#?}");
}

#[test]
fn node_missing_from_path() {
    let empty = tempfile::tempdir().unwrap();
    let path: OsString = empty.path().into();
    assert_severity(&check_npx(&path), Severity::Warning);

    let blocked = check_tool(&node_16("v0.18.0"), &path, false);
    assert_severity(&blocked, Severity::Blocker);
    assert!(blocked.reason.contains("not on PATH"), "{blocked:#?}");
    assert!(
        blocked
            .fix
            .as_deref()
            .unwrap()
            .contains("nvm install 16.15.1"),
        "{blocked:#?}"
    );

    let provisioned = check_tool(&node_16("v0.18.0"), &path, true);
    assert_severity(&provisioned, Severity::Warning);
    assert!(
        provisioned.reason.contains("npx -p node@16.15.1"),
        "{provisioned:#?}"
    );
}

#[test]
fn fake_node_at_the_wrong_version() {
    let bin = tempfile::tempdir().unwrap();
    write_script(bin.path(), "node", "echo v14.0.0");
    let path: OsString = bin.path().into();

    // No npx: nothing can provision 16.15.1.
    let npx = check_npx(&path);
    assert_severity(&npx, Severity::Warning);
    let blocked = check_tool(&node_16("v0.18.0"), &path, npx.severity == Severity::Ok);
    assert_severity(&blocked, Severity::Blocker);
    assert!(blocked.reason.contains("14.0.0"), "{blocked:#?}");

    // With npx the wrong version is only a warning: upstep provisions the right one.
    write_script(bin.path(), "npx", "echo 10.8.2");
    let npx = check_npx(&path);
    assert_severity(&npx, Severity::Ok);
    let warned = check_tool(&node_16("v0.18.0"), &path, npx.severity == Severity::Ok);
    assert_severity(&warned, Severity::Warning);
    assert!(warned.reason.contains("npx -p node@16.15.1"), "{warned:#?}");
    assert_eq!(warned.id, "node@v0.18.0");
}

#[test]
fn tool_judged_by_range_when_no_exact_version() {
    let bin = tempfile::tempdir().unwrap();
    write_script(bin.path(), "node", "echo v20.11.0");
    let path: OsString = bin.path().into();
    let req = ToolRequirement {
        tool: "node".into(),
        exact: None,
        range: Some(">=20 <21".into()),
        for_tag: "v2.0.0".into(),
    };
    assert_severity(&check_tool(&req, &path, false), Severity::Ok);
    write_script(bin.path(), "node", "echo v21.0.0");
    assert_severity(&check_tool(&req, &path, false), Severity::Blocker);
}

#[test]
fn broken_tools_are_unusable_not_panics() {
    let bin = tempfile::tempdir().unwrap();
    write_script(bin.path(), "pnpm", "echo 'not a version'");
    let path: OsString = bin.path().into();
    let req = ToolRequirement {
        tool: "pnpm".into(),
        exact: Some("7.33.4".into()),
        range: None,
        for_tag: "v0.18.0".into(),
    };
    let result = check_tool(&req, &path, false);
    assert_severity(&result, Severity::Blocker);
    assert!(result.reason.contains("unusable"), "{result:#?}");
    assert!(
        result.fix.as_deref().unwrap().contains("pnpm@7.33.4"),
        "{result:#?}"
    );

    write_script(bin.path(), "pnpm", "exit 3");
    assert_severity(&check_tool(&req, &path, true), Severity::Warning);
}

#[test]
fn encryption_key_placeholder_and_short_key() {
    let rules = novu_project().encryption_key.unwrap();
    let placeholder = check_encryption_key(
        Some(ENCRYPTION_KEY_PLACEHOLDER),
        "STORE_ENCRYPTION_KEY",
        true,
        &rules,
    );
    assert_severity(&placeholder, Severity::Blocker);
    assert!(
        placeholder.reason.contains("placeholder"),
        "{placeholder:#?}"
    );

    let short = &GOOD_KEY[..31];
    let too_short = check_encryption_key(Some(short), "STORE_ENCRYPTION_KEY", true, &rules);
    assert_severity(&too_short, Severity::Blocker);
    assert!(too_short.reason.contains("it has 31"), "{too_short:#?}");
    assert!(
        too_short
            .fix
            .as_deref()
            .unwrap()
            .starts_with("export STORE_ENCRYPTION_KEY="),
        "{too_short:#?}"
    );
    assert_secret_absent(
        &[placeholder, too_short.clone()],
        ENCRYPTION_KEY_PLACEHOLDER,
    );
    assert_secret_absent(&[too_short], short);
}
