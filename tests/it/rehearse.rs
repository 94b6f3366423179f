//! `upstep rehearse` and `upgrade --then` end to end: the fixture project's real scripts on a
//! scratch copy of the real test database, through the binary. The real database must come
//! out byte-identical (every collection, upstep's journal, events and lock included).

use std::process::Output;

use bson::{doc, Document};
use sha2::{Digest, Sha256};

use crate::support::{fresh_db_name, mongo};
use crate::upgrade::{text, Env};

/// Per collection of `db` (all of them, upstep's own included): the sha256 of its documents
/// as canonical Extended JSON, sorted.
fn checksums(uri: &str, db: &str) -> Vec<(String, String)> {
    let (uri, db) = (uri.to_string(), db.to_string());
    crate::support::block_on(async move {
        use futures_util::TryStreamExt;
        let client = mongodb::Client::with_uri_str(&uri).await.unwrap();
        let db = client.database(&db);
        let mut names = db.list_collection_names().await.unwrap();
        names.sort();
        let mut out = Vec::new();
        for name in names {
            let docs: Vec<Document> = db
                .collection::<Document>(&name)
                .find(doc! {})
                .await
                .unwrap()
                .try_collect()
                .await
                .unwrap();
            let mut lines: Vec<String> = docs
                .into_iter()
                .map(|d| bson::Bson::Document(d).into_canonical_extjson().to_string())
                .collect();
            lines.sort();
            let mut h = Sha256::new();
            for l in &lines {
                h.update(l.as_bytes());
                h.update(b"\n");
            }
            out.push((name, hex::encode(h.finalize())));
        }
        out
    })
}

fn databases() -> Vec<String> {
    crate::support::block_on(async {
        let client = mongo().client().await;
        client.list_database_names().await.unwrap()
    })
}

fn rehearse_args(env: &Env, extra: &[&str]) -> Vec<String> {
    let mut args = env.upgrade_args();
    args[0] = "rehearse".into();
    args.retain(|a| a != "--no-backup");
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

fn rehearse(env: &Env, extra: &[&str]) -> Output {
    rehearse_with(env, extra, &[])
}

fn rehearse_with(env: &Env, extra: &[&str], vars: &[(&str, &str)]) -> Output {
    let args = rehearse_args(env, extra);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut cmd = env.command(&args);
    for (k, v) in vars {
        cmd.env(k, v);
    }
    cmd.timeout(std::time::Duration::from_secs(240))
        .output()
        .unwrap()
}

/// The last stdout line of a `--json` rehearsal: its report.
fn report(out: &Output) -> serde_json::Value {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().last().unwrap_or_default();
    let report: serde_json::Value =
        serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {}", text(out)));
    assert_eq!(report["schema"], "upstep.rehearsal/1", "{}", text(out));
    report
}

fn rehearsal_dbs(env: &Env) -> Vec<String> {
    databases()
        .into_iter()
        .filter(|d| d.starts_with(&format!("{}_upstep_rehearsal_", env.db)))
        .collect()
}

fn mirror_files(env: &Env) -> Vec<(String, Vec<u8>)> {
    let dir = env.state.path().join("journal");
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| {
                    (
                        e.file_name().to_string_lossy().into_owned(),
                        std::fs::read(e.path()).unwrap(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}

#[test]
fn a_rehearsal_runs_the_plan_on_a_copy_and_leaves_the_real_database_byte_identical() {
    let env = Env::new("rehearse_identical");
    // The real database has a journal, events and a mirror of its own already.
    let out = env.upgrade(&["--to", "1.0.0"]);
    assert!(out.status.success(), "{}", text(&out));
    let before = checksums(&env.uri, &env.db);
    assert!(before.iter().any(|(c, _)| c == "upstep_journal"));
    let mirrors = mirror_files(&env);
    let env_log = env.state.path().join("env.log");

    let out = rehearse_with(
        &env,
        &["--to", "1.1.0", "--json"],
        &[
            // A variable leading to the real database must not reach the scripts.
            ("DATABASE_URL", &env.uri),
            ("FIXTURE_ENV_LOG", env_log.to_str().unwrap()),
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    let report = report(&out);
    assert_eq!(report["status"], "succeeded");
    let steps = report["steps"].as_array().unwrap();
    let ids: Vec<&str> = steps.iter().map(|s| s["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["hangs", "export-only"], "{report}");
    for step in steps {
        assert_eq!(step["status"], "succeeded", "{step}");
        assert_eq!(step["verification"], "applied", "{step}");
        // Both seeded items needed each step: the measured size of the change.
        assert_eq!(step["pending_before"], 2, "{step}");
        let items = step["collections"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == "items")
            .unwrap_or_else(|| panic!("{step}"));
        assert_eq!(
            (items["before"].as_u64(), items["after"].as_u64()),
            (Some(2), Some(2))
        );
        assert!(step["duration_ms"].as_u64().unwrap() > 0);
    }
    assert_eq!(
        report["skipped"], 1,
        "exits is applied per the copied journal"
    );
    let steps_ms: u64 = steps
        .iter()
        .map(|s| s["duration_ms"].as_u64().unwrap())
        .sum();
    assert_eq!(report["predicted_downtime_ms"].as_u64(), Some(steps_ms));
    assert_eq!(report["source"]["kind"], "backup-taken");
    assert_eq!(report["scratch_kept"], false);
    assert!(report["plan_key"].is_string());

    // The scripts ran (in the scratch database), and saw no way to the real one.
    assert_eq!(env.project.executed(), ["exits", "hangs", "export-only"]);
    let seen = std::fs::read_to_string(&env_log).unwrap();
    assert!(seen.contains("MONGO_URL"), "{seen}");
    assert!(!seen.contains("DATABASE_URL"), "{seen}");

    // Byte-identical: data, journal, events, lock; the real mirror untouched; the copy gone.
    assert_eq!(checksums(&env.uri, &env.db), before);
    assert_eq!(
        mirror_files(&env)
            .iter()
            .filter(|m| mirrors.contains(m))
            .count(),
        mirrors.len()
    );
    assert!(rehearsal_dbs(&env).is_empty(), "{:?}", rehearsal_dbs(&env));
    for item in env.items() {
        assert!(
            !item.contains_key("tagged"),
            "the real data changed: {item}"
        );
    }

    // The real run of the same plan says it was rehearsed.
    let out = env.upgrade(&["--to", "1.1.0"]);
    assert!(out.status.success(), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("rehearsed on") && stderr.contains("2 step(s) succeeded"),
        "{}",
        text(&out)
    );
}

#[test]
fn keep_keeps_the_copy_and_an_existing_scratch_database_is_never_overwritten() {
    let env = Env::new("rehearse_keep");
    let before = checksums(&env.uri, &env.db);
    let scratch = fresh_db_name("rehearse_keep_scratch");
    let scratch_uri = mongo().uri_for_db(&scratch);
    let out = rehearse(
        &env,
        &["--to", "1.0.0", "--keep", "--scratch-uri", &scratch_uri],
    );
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("Predicted downtime of the real run"),
        "{stdout}"
    );
    assert!(stdout.contains("is kept (--keep)"), "{stdout}");
    assert!(databases().contains(&scratch));
    let migrated = checksums(&scratch_uri, &scratch);
    assert!(
        migrated.iter().any(|(c, _)| c == "upstep_journal"),
        "{migrated:?}"
    );
    assert_eq!(checksums(&env.uri, &env.db), before);

    // The same scratch name again: refused, and neither database changes.
    let out = rehearse(&env, &["--to", "1.0.0", "--scratch-uri", &scratch_uri]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("already exists") && stderr.contains("--scratch-uri"),
        "{stderr}"
    );
    assert_eq!(checksums(&scratch_uri, &scratch), migrated);
    assert_eq!(checksums(&env.uri, &env.db), before);

    // The database to rehearse is never a scratch database.
    let out = rehearse(&env, &["--scratch-uri", &env.uri]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert_eq!(checksums(&env.uri, &env.db), before);
}

#[test]
fn a_failing_step_is_reported_and_the_real_database_is_untouched() {
    let env = Env::new("rehearse_fails");
    crate::support::block_on({
        let (uri, db) = (env.uri.clone(), env.db.clone());
        async move {
            let client = mongodb::Client::with_uri_str(&uri).await.unwrap();
            client
                .database(&db)
                .collection::<Document>("control")
                .insert_one(doc! { "_id": "fail" })
                .await
                .unwrap();
        }
    });
    let before = checksums(&env.uri, &env.db);
    let report_file = env.state.path().join("report.json");
    let out = rehearse(
        &env,
        &[
            "--to",
            "1.2.0",
            "--yes",
            "--json",
            "--report",
            report_file.to_str().unwrap(),
        ],
    );
    assert_eq!(out.status.code(), Some(8), "{}", text(&out));
    let report = report(&out);
    assert_eq!(report["status"], "step-failed");
    let failed: Vec<&serde_json::Value> = report["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["status"] != "succeeded")
        .collect();
    assert_eq!(failed.len(), 1, "{report}");
    assert_eq!(failed[0]["id"], "fails");
    assert!(
        failed[0]["reason"].as_str().unwrap().contains("code 3"),
        "{report}"
    );
    let written: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report_file).unwrap()).unwrap();
    assert_eq!(written["status"], "step-failed");
    assert_eq!(checksums(&env.uri, &env.db), before);
    assert!(rehearsal_dbs(&env).is_empty());
    assert!(env.journal().is_empty(), "the real journal was written");
}

fn events_of(env: &Env, kind: &str) -> Vec<Document> {
    env.find("upstep_events", doc! { "kind": kind })
}

#[test]
fn then_promotes_only_after_a_verified_run_and_its_failure_exits_14() {
    let env = Env::new("then_promotes");
    let marker = env.state.path().join("promoted");
    let promote = format!("echo promoted >> '{}'", marker.display());

    // A failed step: no promotion.
    crate::support::block_on({
        let (uri, db) = (env.uri.clone(), env.db.clone());
        async move {
            let client = mongodb::Client::with_uri_str(&uri).await.unwrap();
            client
                .database(&db)
                .collection::<Document>("control")
                .insert_one(doc! { "_id": "fail" })
                .await
                .unwrap();
        }
    });
    let out = env.upgrade(&["--to", "1.2.0", "--yes", "--then", &promote]);
    assert_eq!(out.status.code(), Some(8), "{}", text(&out));
    assert!(!marker.exists(), "promoted after a failed step");
    assert!(events_of(&env, "promotion-started").is_empty());

    // Every step succeeded and is verified: promoted once, journalled with its exit code.
    let out = env.upgrade(&["--to", "1.1.0", "--then", &promote]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(std::fs::read_to_string(&marker).unwrap(), "promoted\n");
    let finished = events_of(&env, "promotion-finished");
    assert_eq!(finished.len(), 1);
    let details = finished[0].get_document("details").unwrap();
    assert_eq!(details.get_i32("exit_code").ok(), Some(0), "{details}");
    assert_eq!(details.get_str("program").ok(), Some("sh"));

    // Nothing left to run: the database is at the target and verified, so it promotes again.
    let out = env.upgrade(&["--to", "1.1.0", "--json", "--then", "sh", "-c", &promote]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        std::fs::read_to_string(&marker).unwrap(),
        "promoted\npromoted\n"
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.lines().any(
            |l| l.contains("\"event\":\"promotion\"") && l.contains("\"status\":\"succeeded\"")
        ),
        "{stdout}"
    );

    // A failing promotion: exit 14, its code journalled, the steps still succeeded.
    let out = env.upgrade(&[
        "--to",
        "1.1.0",
        "--then",
        "sh",
        "-c",
        "echo broken >&2; exit 5",
    ]);
    assert_eq!(out.status.code(), Some(14), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("exited with code 5") && stderr.contains("broken"),
        "{stderr}"
    );
    let finished = events_of(&env, "promotion-finished");
    let last = finished.last().unwrap().get_document("details").unwrap();
    assert_eq!(last.get_i32("exit_code").ok(), Some(5), "{last}");
    assert_eq!(last.get_str("status").ok(), Some("failed"));
    for id in ["exits", "hangs", "export-only"] {
        assert_eq!(env.status_of(id), "succeeded", "{id}");
    }
}

#[test]
fn then_is_withheld_while_a_step_cannot_be_verified() {
    let env = Env::new("then_withheld");
    // export-only without a data check: it succeeds, but nothing can verify it.
    let map = env.project.map_variant("unverifiable", |text| {
        text.replace(
            "shim = \"data-layer\"\nexits = \"yes\"\nidempotent = \"yes\"\n[[migrations.pending]]\ncollection = \"items\"\nfilter = { exported = { \"$exists\" = false } }",
            "shim = \"data-layer\"\nexits = \"yes\"\nidempotent = \"yes\"\nno_fingerprint = \"test: nothing to read\"",
        )
    });
    let marker = env.state.path().join("promoted");
    let promote = format!("touch '{}'", marker.display());
    let out = env.upgrade_with(&map, &["--to", "1.1.0", "--yes", "--then", &promote]);
    assert_eq!(out.status.code(), Some(14), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("export-only") && stderr.contains("upstep mark"),
        "{stderr}"
    );
    assert!(!marker.exists());
    assert_eq!(events_of(&env, "promotion-withheld").len(), 1);

    // The operator checked it and vouches for it: the next run promotes.
    let mut mark = env.command(&[
        "mark",
        "export-only",
        "--applied",
        "--map",
        map.to_str().unwrap(),
        "--mongo-uri",
        &env.uri,
    ]);
    assert!(mark.output().unwrap().status.success());
    let out = env.upgrade_with(&map, &["--to", "1.1.0", "--yes", "--then", &promote]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(marker.exists());
}

#[test]
fn at_a_terminal_a_person_picks_the_target_confirms_and_reads_the_report() {
    use std::time::Duration;
    let env = Env::new("rehearse_interactive");
    let before = checksums(&env.uri, &env.db);
    let args: Vec<String> = rehearse_args(&env, &[])
        .iter()
        .map(|a| format!("'{a}'"))
        .collect();
    let line = format!(
        "cd '{}' && NO_COLOR=1 UPSTEP_STATE_DIR='{}' UPSTEP_CACHE_DIR='{}' '{}' {}",
        env.state.path().display(),
        env.state.path().display(),
        env.cache.path().display(),
        assert_cmd::cargo::cargo_bin("upstep").display(),
        args.join(" ")
    );
    let tmux = crate::interactive::Tmux::start("rehearse", &line);
    tmux.wait_for("Upgrade to", Duration::from_secs(60));
    // Newest first: v1.2.0, v1.1.0, v1.0.0.
    tmux.keys(&["Down", "Enter"]);
    tmux.wait_for("Run these 3 steps?", Duration::from_secs(30));
    tmux.keys(&["y"]);
    let screen = tmux.wait_for("EXIT=", Duration::from_secs(120));
    assert!(screen.contains("EXIT=0"), "{screen}");
    assert!(
        screen.contains("Predicted downtime of the real run"),
        "{screen}"
    );
    assert!(screen.contains("The rehearsal succeeded"), "{screen}");
    assert!(!screen.contains("Back up the database"), "{screen}");
    assert_eq!(env.project.executed(), ["exits", "hangs", "export-only"]);
    assert_eq!(checksums(&env.uri, &env.db), before);
    assert!(rehearsal_dbs(&env).is_empty());
}
