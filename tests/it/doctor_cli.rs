//! `upstep doctor` through the real binary, against the real test services.

use assert_cmd::Command;

use crate::support::{free_port, fresh_db_name, mongo, redis};

const CANARY: &str = "CanaryPw-7f3a9";

/// A one-release map whose scripts need Redis and the key, pinned to the node on this machine.
fn fixture_map(dir: &std::path::Path) -> std::path::PathBuf {
    let out = std::process::Command::new("node")
        .arg("--version")
        .output()
        .expect("node is installed");
    let node = String::from_utf8_lossy(&out.stdout)
        .trim()
        .trim_start_matches('v')
        .to_string();
    let text = format!(
        r#"schema = 1
[project]
name = "fixture"
migrations_dir = "migrations"
[eras.plain]
cwd = "."
run = ["node", "{{script}}"]
env = {{ MONGO_URL = "{{mongo_uri}}", NEW_RELIC_ENABLED = "false" }}
[[releases]]
version = "1.0.0"
era = "plain"
node = "{node}"
[[releases]]
version = "1.1.0"
era = "plain"
node = "{node}"
[[migrations]]
id = "encrypt"
title = "Encrypt"
introduced_in = "1.1.0"
script = "migrations/encrypt.js"
run = "file"
exits = "yes"
idempotent = "guarded"
needs = ["redis", "encryption-key"]
[[migrations.pending]]
collection = "things"
filter = {{ encrypted = {{ "$exists" = false }} }}
"#
    );
    let path = dir.join("map.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn doctor(
    map: &std::path::Path,
    mongo_uri: &str,
    redis_url: &str,
    key: &str,
) -> (i32, String, String) {
    let out = Command::cargo_bin("upstep")
        .unwrap()
        .env("NO_COLOR", "1")
        .env("STORE_ENCRYPTION_KEY", key)
        .env_remove("MONGO_URL")
        .env_remove("UPSTEP_MONGO_URI")
        .args([
            "doctor",
            "--map",
            map.to_str().unwrap(),
            "--from",
            "1.0.0",
            "--mongo-uri",
            mongo_uri,
            "--redis-url",
            redis_url,
        ])
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

#[test]
fn all_green_exits_0_and_names_each_check() {
    let dir = tempfile::tempdir().unwrap();
    let map = fixture_map(dir.path());
    let db = fresh_db_name("doctor_green");
    let plain = mongo().uri_for_db(&db);
    let db2 = db.clone();
    crate::support::block_on(async move {
        let client = mongodb::Client::with_uri_str(&plain).await.unwrap();
        client
            .database(&db2)
            .collection::<bson::Document>("things")
            .insert_one(bson::doc! { "x": 1 })
            .await
            .unwrap();
    });
    let uri = mongo().uri_for_db(&db);
    let (code, stdout, stderr) =
        doctor(&map, &uri, &redis().url, "0123456789abcdef0123456789abcdef");
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    for id in [
        "node@v1.1.0",
        "redis",
        "mongo.connect",
        "encryption-key",
        "new-relic",
    ] {
        assert!(stdout.contains(id), "{id} missing:\n{stdout}");
    }
    assert!(!stdout.contains("BLOCKER"), "{stdout}");
}

#[test]
fn blockers_exit_5_with_their_fix_and_no_secret() {
    let dir = tempfile::tempdir().unwrap();
    let map = fixture_map(dir.path());
    let dead_redis = format!("redis://:{CANARY}@127.0.0.1:{}", free_port());
    let dead_mongo = format!(
        "mongodb://admin:{CANARY}@127.0.0.1:{}/novu-db?serverSelectionTimeoutMS=500",
        free_port()
    );
    let (code, stdout, stderr) = doctor(
        &map,
        &dead_mongo,
        &dead_redis,
        "<ENCRYPTION_KEY_MUST_BE_32_LONG>",
    );
    assert_eq!(code, 5, "{stdout}\n{stderr}");
    // The checklist follows the plan's steps (which name their needs too).
    let checks = stdout.split("\nChecks\n").nth(1).expect("a Checks section");
    for id in ["redis", "mongo.connect", "encryption-key"] {
        let line = checks
            .lines()
            .find(|l| l.contains(id))
            .unwrap_or_else(|| panic!("{id}:\n{stdout}"));
        assert!(line.contains("BLOCKER"), "{line}");
    }
    assert!(stdout.matches("fix:").count() >= 3, "{stdout}");
    assert!(stderr.contains("preflight found 3 blockers"), "{stderr}");
    assert!(
        !stdout.contains(CANARY) && !stderr.contains(CANARY),
        "the canary leaked:\n{stdout}\n{stderr}"
    );

    // The JSON form carries the same verdicts.
    let out = Command::cargo_bin("upstep")
        .unwrap()
        .env("STORE_ENCRYPTION_KEY", "too-short")
        .args([
            "doctor",
            "--json",
            "--map",
            map.to_str().unwrap(),
            "--from",
            "1.0.0",
            "--mongo-uri",
            &dead_mongo,
            "--redis-url",
            &dead_redis,
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(5));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["schema"], "upstep.doctor/1");
    assert_eq!(json["blockers"], 3);
    assert!(!String::from_utf8_lossy(&out.stdout).contains(CANARY));
}
