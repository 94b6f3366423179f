//! The journal's own contract through the binary: a newer journal is refused as such, a
//! moved tag is reported before anything runs, and a step another host is still running
//! (fresh heartbeat) is never settled, retried or marked by this one.

use std::time::{Duration, Instant};

use bson::{doc, Document};

use crate::support::{block_on, BASE_TIME};
use crate::upgrade::{text, Env};

fn insert(env: &Env, coll: &str, docs: Vec<Document>) {
    let (uri, db, coll) = (env.uri.clone(), env.db.clone(), coll.to_string());
    block_on(async move {
        let client = mongodb::Client::with_uri_str(&uri).await.unwrap();
        let c = client.database(&db).collection::<Document>(&coll);
        c.delete_many(doc! { "_id": { "$in": docs.iter().map(|d| d.get("_id").cloned().unwrap()).collect::<Vec<_>>() } })
            .await
            .unwrap();
        c.insert_many(docs).await.unwrap();
    });
}

fn delete_all(env: &Env, coll: &str) {
    let (uri, db, coll) = (env.uri.clone(), env.db.clone(), coll.to_string());
    block_on(async move {
        let client = mongodb::Client::with_uri_str(&uri).await.unwrap();
        client
            .database(&db)
            .collection::<Document>(&coll)
            .delete_many(doc! {})
            .await
            .unwrap();
    });
}

fn entry(env: &Env, id: &str) -> Document {
    env.find("upstep_journal", doc! { "_id": id })
        .pop()
        .unwrap_or_default()
}

fn other_host_actor() -> Document {
    doc! { "run_id": "run-on-b", "host": "host-b", "user": "ops", "boot_id": "boot-b", "pid": 4242_i64, "pid_start": 1_i64, "upstep_version": "0.1.0" }
}

fn status_json(env: &Env, to: &str) -> serde_json::Value {
    let out = env
        .command(&[
            "status",
            "--json",
            "--map",
            env.project.map_path.to_str().unwrap(),
            "--mongo-uri",
            &env.uri,
            "--to",
            to,
        ])
        .output()
        .unwrap();
    serde_json::from_slice(&out.stdout).unwrap_or_else(|_| panic!("{}", text(&out)))
}

fn mark(env: &Env, id: &str, how: &str) -> std::process::Output {
    env.command(&[
        "mark",
        id,
        how,
        "--map",
        env.project.map_path.to_str().unwrap(),
        "--mongo-uri",
        &env.uri,
    ])
    .output()
    .unwrap()
}

#[test]
fn a_journal_from_a_newer_upstep_stops_every_command_before_anything_is_written() {
    let env = Env::new("newer_journal_cli");
    let newer = doc! { "_id": "exits", "schema": 3, "status": "a-state-from-the-future", "actor": other_host_actor(), "attempts": { "n": 1 } };
    insert(&env, "upstep_journal", vec![newer.clone()]);
    let out = env.upgrade(&["--to", "1.1.0", "--yes"]);
    let all = text(&out);
    assert_eq!(out.status.code(), Some(5), "{all}");
    assert!(
        all.contains("this journal was written by a newer upstep (upstep 0.1.0 on host-b) (schema 3, this upstep reads up to 2): upgrade upstep"),
        "{all}"
    );
    assert!(
        !all.contains("unreachable") && !all.contains("cannot reach"),
        "{all}"
    );
    assert!(env.project.executed().is_empty());
    assert!(env.find("upstep_lock", doc! {}).is_empty(), "no lock taken");
    assert!(
        env.find("upstep_events", doc! {}).is_empty(),
        "no event written"
    );
    assert_eq!(env.journal(), vec![newer.clone()]);

    for args in [
        vec!["status", "--to", "1.1.0"],
        vec!["mark", "exits", "--applied"],
    ] {
        let mut args = args;
        let map = env.project.map_path.display().to_string();
        args.extend(["--map", &map, "--mongo-uri", &env.uri]);
        let out = env.command(&args).output().unwrap();
        let all = text(&out);
        assert_eq!(out.status.code(), Some(5), "{args:?}: {all}");
        assert!(all.contains("written by a newer upstep"), "{all}");
    }
    assert_eq!(env.journal(), vec![newer]);
}

/// Point `tag` at a new commit whose `path` has `content` (Novu re-tagged v2.1.1 this way).
fn move_tag(env: &Env, tag: &str, path: &str, content: &str) {
    let commit = env
        .project
        .repo
        .commit(&[(path, Some(content))], BASE_TIME + 10 * 86_400);
    let repo = git2::Repository::open(env.project.repo_path()).unwrap();
    let object = repo.find_object(commit, None).unwrap();
    let sig = git2::Signature::new("t", "t@example.com", &git2::Time::new(BASE_TIME, 0)).unwrap();
    repo.tag(tag, &object, &sig, "re-tagged", true).unwrap();
}

/// A file as the fixture repository has it at `tag`.
fn file_at(env: &Env, tag: &str, path: &str) -> String {
    let repo = git2::Repository::open(env.project.repo_path()).unwrap();
    let blob = repo
        .revparse_single(&format!("{tag}:{path}"))
        .unwrap()
        .peel_to_blob()
        .unwrap();
    String::from_utf8(blob.content().to_vec()).unwrap()
}

#[test]
fn a_moved_tag_is_reported_for_done_steps_and_stops_a_step_that_would_run_again() {
    let env = Env::new("moved_tag");
    let out = env.upgrade(&["--to", "1.0.0"]);
    assert!(out.status.success(), "{}", text(&out));
    let recorded = entry(&env, "exits");

    // v1.0.0 re-tagged with a changed script: the done step gets a notice, runs not again.
    let changed = format!(
        "{}\n// re-tagged\n",
        file_at(&env, "v1.0.0", "migrations/001-exits.js")
    );
    move_tag(&env, "v1.0.0", "migrations/001-exits.js", &changed);
    let out = env.upgrade(&["--to", "1.1.0"]);
    let all = text(&out);
    assert!(out.status.success(), "{all}");
    assert!(
        all.contains("exits: migrations/001-exits.js changed since it ran"),
        "{all}"
    );
    assert!(all.contains("the tag v1.0.0 was moved"), "{all}");
    assert_eq!(env.project.executed(), ["exits", "hangs", "export-only"]);
    assert_eq!(
        entry(&env, "exits").get_str("script_sha256"),
        recorded.get_str("script_sha256"),
        "the journal's record stands"
    );
    let events = env.find("upstep_events", doc! { "kind": "script-changed" });
    assert_eq!(events.len(), 1, "{events:?}");
    let details = events[0].get_document("details").unwrap();
    assert_eq!(details.get_bool("stops"), Ok(false));

    // A failed step whose script then changes: --retry would run another script over the
    // first one's partial work. It stops before anything runs, naming the choices.
    insert(&env, "control", vec![doc! { "_id": "fail" }]);
    let out = env.upgrade(&["--yes"]);
    assert_eq!(out.status.code(), Some(8), "{}", text(&out));
    assert_eq!(env.status_of("fails"), "failed");
    delete_all(&env, "control");
    let fixed = format!(
        "{}\n// fixed upstream\n",
        file_at(&env, "v1.2.0", "migrations/004-fails.js")
    );
    move_tag(&env, "v1.2.0", "migrations/004-fails.js", &fixed);
    let before = env.project.executed().len();
    let out = env.upgrade(&["--retry", "--yes"]);
    let all = text(&out);
    assert_eq!(out.status.code(), Some(9), "{all}");
    assert!(
        all.contains("fails: migrations/004-fails.js changed since it ran"),
        "{all}"
    );
    assert!(
        all.contains("upstep mark") && all.contains("--retry"),
        "{all}"
    );
    assert_eq!(env.project.executed().len(), before, "nothing ran");
    assert_eq!(env.status_of("fails"), "failed");

    // The operator accepts the new script: it runs, and the journal records its checksum.
    let out = mark(&env, "fails", "--pending");
    assert!(out.status.success(), "{}", text(&out));
    let out = env.upgrade(&["--yes"]);
    assert_eq!(env.status_of("fails"), "succeeded", "{}", text(&out));
    assert!(
        text(&out).contains("it runs as the script is now (the journal says pending)"),
        "{}",
        text(&out)
    );
    let expected = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(fixed.as_bytes()));
    assert_eq!(
        entry(&env, "fails").get_str("script_sha256"),
        Ok(expected.as_str())
    );
}

/// A `running` entry of a run on host-b, its heartbeat good until `until_ms` from now.
fn running_on_host_b(env: &Env, id: &str, until_ms: i64) -> Document {
    let now = bson::DateTime::now().timestamp_millis();
    let script = "migrations/001-exits.js";
    let sha = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(
        file_at(env, "v1.0.0", script).as_bytes(),
    ));
    let commit = git2::Repository::open(env.project.repo_path())
        .unwrap()
        .revparse_single("v1.0.0^{commit}")
        .unwrap()
        .id()
        .to_string();
    let doc = doc! {
        "_id": id, "schema": 1, "status": "running", "attempts": 1, "tag": "v1.0.0",
        "commit": commit, "script": script,
        "script_sha256": sha, "actor": other_host_actor(), "output_tail": [],
        "started_at": bson::DateTime::from_millis(now - 60_000),
        "heartbeat_at": bson::DateTime::from_millis(now.min(now + until_ms - 3_000)),
        "heartbeat_until": bson::DateTime::from_millis(now + until_ms),
        "child_pid": 4243_i64, "child_pgid": 4243_i64,
    };
    insert(env, "upstep_journal", vec![doc.clone()]);
    doc
}

#[test]
fn a_step_running_on_another_host_is_left_alone_while_its_heartbeat_is_fresh() {
    let env = Env::new("running_elsewhere");
    let fresh = running_on_host_b(&env, "exits", 3_600_000);

    let out = env.upgrade(&["--to", "1.0.0", "--retry", "--yes"]);
    let all = text(&out);
    assert_eq!(out.status.code(), Some(7), "{all}");
    assert!(all.contains("running elsewhere"), "{all}");
    assert!(all.contains("on host-b"), "{all}");
    assert!(env.project.executed().is_empty(), "nothing ran");
    assert_eq!(entry(&env, "exits"), fresh, "not settled, not touched");
    assert!(env.find("upstep_lock", doc! {}).is_empty(), "lock released");

    let out = mark(&env, "exits", "--applied");
    assert_eq!(out.status.code(), Some(7), "{}", text(&out));
    assert!(text(&out).contains("running elsewhere"), "{}", text(&out));
    assert_eq!(entry(&env, "exits"), fresh);

    let status = status_json(&env, "1.0.0");
    let row = &status["migrations"][0];
    assert_eq!(row["state"], "running", "{status}");
    assert!(
        row["detail"]
            .as_str()
            .unwrap()
            .contains("running elsewhere"),
        "{status}"
    );
    assert_eq!(row["journal_entry"]["running_elsewhere"], true, "{status}");
    assert_eq!(row["journal_entry"]["host"], "host-b", "{status}");
    assert_eq!(row["journal_entry"]["child_pgid"], 4243, "{status}");

    // The same entry with a stale heartbeat: its run is gone, and it is treated as today.
    running_on_host_b(&env, "exits", -600_000);
    let out = env.upgrade(&["--to", "1.0.0", "--yes"]);
    let all = text(&out);
    assert_eq!(out.status.code(), Some(9), "{all}");
    assert!(all.contains("--retry"), "{all}");
    let settled = entry(&env, "exits");
    assert_eq!(settled.get_str("status"), Ok("interrupted"), "{settled}");
    assert!(
        settled
            .get_str("reason")
            .unwrap_or_default()
            .contains("last heartbeat"),
        "{settled}"
    );
    let out = env.upgrade(&["--to", "1.0.0", "--retry", "--yes"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(env.project.executed(), ["exits"]);
}

#[test]
fn a_running_step_renews_its_heartbeat_and_clears_it_when_settled() {
    let env = Env::new("heartbeat_run");
    let map = env.project.map_variant("slow-hangs", |m| {
        m.replace(
            "NEW_RELIC_ENABLED = \"false\"",
            "NEW_RELIC_ENABLED = \"false\"\nFIXTURE_DELAY_MS = \"5000\"",
        )
    });
    let mut args = env.upgrade_args_with(&map);
    args.extend(["--to", "1.1.0"].map(String::from));
    let bin = assert_cmd::cargo::cargo_bin("upstep");
    let child = std::process::Command::new(bin)
        .args(&args)
        .env("UPSTEP_STATE_DIR", env.state.path())
        .env("UPSTEP_CACHE_DIR", env.cache.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !env.project.executed().contains(&"hangs".to_string()) {
        assert!(Instant::now() < deadline, "hangs never started");
        std::thread::sleep(Duration::from_millis(100));
    }
    let first = entry(&env, "hangs");
    assert_eq!(first.get_str("status"), Ok("running"), "{first}");
    let until = |d: &Document| {
        d.get_datetime("heartbeat_until")
            .unwrap()
            .timestamp_millis()
    };
    let at = |d: &Document| d.get_datetime("heartbeat_at").unwrap().timestamp_millis();
    // The lease is 3 s (`--lease-secs 3`): a heartbeat never runs further ahead than that,
    // so it is stale once the lease has run out (the first one: two thirds of it).
    assert!(
        (2_000..=3_000).contains(&(until(&first) - at(&first))),
        "{first}"
    );
    std::thread::sleep(Duration::from_millis(2_500));
    let later = entry(&env, "hangs");
    assert_eq!(later.get_str("status"), Ok("running"), "{later}");
    assert!(at(&later) > at(&first), "renewed: {first} -> {later}");
    assert!(until(&later) > until(&first));
    let lock = env.find("upstep_lock", doc! {}).pop().unwrap();
    let lease_until = lock.get_datetime("lease_until").unwrap().timestamp_millis();
    assert!(
        until(&later) <= lease_until,
        "the heartbeat ends before the lease: {later} {lock}"
    );
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let done = entry(&env, "hangs");
    assert_eq!(done.get_str("status"), Ok("succeeded"));
    assert!(!done.contains_key("heartbeat_until"), "{done}");
}
