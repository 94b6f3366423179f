//! Preparing tags fast, on the fixture project: the next tag's setup runs while the steps of
//! the one before it run (timed from the JSON events' `at_ms`), and a resumed run reuses the
//! tag it still has prepared, running no setup command.

use std::path::PathBuf;

use bson::{doc, Document};

use crate::upgrade::{text, Env};

/// The fixture map with a setup on its era: an "install" that takes 1.5 s at v1.2.0 and no
/// time elsewhere (the worktree's folder is named after its tag).
fn map_with_slow_second_setup(env: &Env) -> PathBuf {
    env.project.map_variant("slow-setup", |m| {
        m.replacen(
            "done_lines = [\"end migration\"]\n",
            "done_lines = [\"end migration\"]\nsetup = [\n  [\"node\", \"-e\", \"if (process.cwd().endsWith('v1.2.0')) { console.log('installing slowly'); Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 1500); } console.log('installed'); console.log('store=' + process.env.npm_config_store_dir); console.log('nx=' + process.env.NX_CACHE_DIRECTORY); console.log('uv=' + process.env.UV_THREADPOOL_SIZE)\", \"install\"],\n]\n",
            1,
        )
    })
}

/// The setup log of `git_ref` (one run per test here: the only one).
fn setup_log_of(env: &Env, git_ref: &str) -> PathBuf {
    let logs = env.state.path().join("logs");
    std::fs::read_dir(&logs)
        .unwrap()
        .flatten()
        .map(|run| run.path().join(format!("setup-{git_ref}.log")))
        .find(|p| p.exists())
        .unwrap_or_else(|| panic!("no setup log of {git_ref} under {}", logs.display()))
}

fn events(stdout: &[u8]) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

fn setup_events<'e>(
    events: &'e [serde_json::Value],
    git_ref: &str,
    status: &str,
) -> Vec<&'e serde_json::Value> {
    events
        .iter()
        .filter(|e| e["event"] == "setup" && e["git_ref"] == git_ref && e["status"] == status)
        .collect()
}

/// Mark the items as migrated by the steps named by `fields` (their data checks then say
/// applied and the run skips them): `noop` never migrates, by design.
fn applied_beforehand(env: &Env, fields: Document) {
    let (uri, db) = (env.uri.clone(), env.db.clone());
    crate::support::block_on(async move {
        let client = mongodb::Client::with_uri_str(&uri).await.unwrap();
        let items = client.database(&db).collection::<Document>("items");
        items
            .update_many(doc! {}, doc! { "$set": fields })
            .await
            .unwrap();
    });
}

fn set_control(env: &Env, fail: bool) {
    let (uri, db) = (env.uri.clone(), env.db.clone());
    crate::support::block_on(async move {
        let client = mongodb::Client::with_uri_str(&uri).await.unwrap();
        let control = client.database(&db).collection::<Document>("control");
        if fail {
            control.insert_one(doc! { "_id": "fail" }).await.unwrap();
        } else {
            control.delete_many(doc! {}).await.unwrap();
        }
    });
}

#[test]
fn the_next_tag_is_set_up_while_the_steps_of_the_one_before_it_run() {
    let env = Env::new("overlap");
    let map = map_with_slow_second_setup(&env);
    applied_beforehand(&env, doc! { "done": true, "nooped": true, "counted": 1 });
    let out = env.upgrade_with(
        &map,
        &["--from", "1.0.0", "--to", "1.2.0", "--yes", "--json"],
    );
    assert!(out.status.success(), "{}", text(&out));
    let events = events(&out.stdout);
    let second_setup = setup_events(&events, "v1.2.0", "running");
    assert_eq!(second_setup.len(), 1, "{events:#?}");
    assert_eq!(second_setup[0]["phase"], "install");
    let setup_started = second_setup[0]["at_ms"].as_u64().unwrap();
    let first_tag_ended = events
        .iter()
        .filter(|e| {
            e["event"] == "step-finished"
                && ["hangs", "export-only"].contains(&e["id"].as_str().unwrap())
        })
        .map(|e| e["at_ms"].as_u64().unwrap())
        .max()
        .expect("the steps of v1.1.0 finished");
    assert!(
        setup_started < first_tag_ended,
        "v1.2.0's setup started at {setup_started}, after v1.1.0's steps ended at {first_tag_ended}"
    );
    let finished = setup_events(&events, "v1.2.0", "finished");
    assert!(
        finished[0]["duration_ms"].as_u64().unwrap() >= 1500,
        "{finished:?}"
    );
    let ahead = setup_events(&events, "v1.2.0", "prepared-ahead");
    assert_eq!(ahead.len(), 1, "{events:#?}");
    let hidden = ahead[0]["duration_ms"].as_u64().unwrap();
    assert!(hidden > 0, "{:?}", ahead[0]);
    eprintln!(
        "overlap hid {hidden} ms of v1.2.0's preparation: {}",
        ahead[0]["detail"]
    );
    // Every setup command is given the package store and the nx cache in upstep's cache; the
    // install, one libuv thread (the same tree on every install).
    let log = std::fs::read_to_string(setup_log_of(&env, "v1.2.0")).unwrap();
    let cache = env.cache.path().display().to_string();
    assert!(log.contains(&format!("store={cache}/pnpm-store")), "{log}");
    assert!(log.contains(&format!("nx={cache}/nx-cache")), "{log}");
    assert!(log.contains("uv=1\n"), "{log}");
    // The steps ran in their order, v1.1.0's before v1.2.0's.
    let started: Vec<&str> = events
        .iter()
        .filter(|e| e["event"] == "step-started")
        .map(|e| e["id"].as_str().unwrap())
        .collect();
    assert_eq!(started, ["hangs", "export-only", "fails"]);
}

#[test]
fn a_resumed_run_reuses_the_tag_it_still_has_and_runs_no_setup_command() {
    let env = Env::new("reuse");
    let map = map_with_slow_second_setup(&env);
    applied_beforehand(&env, doc! { "nooped": true, "counted": 1 });
    set_control(&env, true);
    let args = ["--from", "1.1.0", "--to", "1.2.0", "--yes", "--json"];
    let out = env.upgrade_with(&map, &args);
    assert_eq!(out.status.code(), Some(8), "`fails` fails: {}", text(&out));
    let first = events(&out.stdout);
    assert_eq!(setup_events(&first, "v1.2.0", "finished").len(), 1);

    // The failed step's tag kept its worktree; the retry sets nothing up again.
    set_control(&env, false);
    let mut retry = args.to_vec();
    retry.push("--retry");
    let out = env.upgrade_with(&map, &retry);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(env.status_of("fails"), "succeeded");
    let second = events(&out.stdout);
    let cached = setup_events(&second, "v1.2.0", "cached");
    assert_eq!(cached.len(), 1, "{second:#?}");
    assert_eq!(cached[0]["duration_ms"], 0);
    assert_eq!(cached[0]["phase"], "setup");
    assert!(
        cached[0]["detail"]
            .as_str()
            .unwrap()
            .contains("no setup command ran"),
        "{:?}",
        cached[0]
    );
    let ran: Vec<&serde_json::Value> = second
        .iter()
        .filter(|e| e["event"] == "setup" && e["status"] == "running")
        .collect();
    assert!(ran.is_empty(), "{ran:#?}");
}

/// The fixture map with a build that counts its runs in `counter` and makes `out/dist/app.js`,
/// outputs kept (`keep_build_outputs`), and a last command that fails without that file.
fn map_with_kept_build(env: &Env, counter: &std::path::Path) -> PathBuf {
    let build = format!(
        "const fs = require('fs'); fs.appendFileSync({counter:?}, 'built\\n'); fs.mkdirSync('out/dist', {{ recursive: true }}); fs.writeFileSync('out/dist/app.js', 'module.exports = 1;\\n')"
    );
    let setup = format!(
        "done_lines = [\"end migration\"]\nkeep_build_outputs = true\nsetup = [\n  [\"node\", \"-e\", {build:?}, \"build\"],\n  [\"node\", \"-e\", \"require('fs').readFileSync('out/dist/app.js')\"],\n]\n"
    );
    env.project.map_variant("kept-build", |m| {
        m.replacen("done_lines = [\"end migration\"]\n", &setup, 1)
    })
}

#[test]
fn a_tag_prepared_again_restores_its_kept_build_instead_of_building() {
    let env = Env::new("kept-build");
    let counter = env.cache.path().join("builds.count");
    let map = map_with_kept_build(&env, &counter);
    let fields = doc! { "done": true, "nooped": true, "counted": 1 };
    applied_beforehand(&env, fields.clone());
    let args = ["--from", "1.0.0", "--to", "1.1.0", "--yes", "--json"];
    let out = env.upgrade_with(&map, &args);
    assert!(out.status.success(), "{}", text(&out));
    let first = events(&out.stdout);
    let built = setup_events(&first, "v1.1.0", "finished");
    assert!(built.iter().any(|e| e["phase"] == "build"), "{first:#?}");
    let log = std::fs::read_to_string(setup_log_of(&env, "v1.1.0")).unwrap();
    assert!(log.contains("kept its outputs (1 output"), "{log}");

    // Another database at the same release: the tag is prepared again (its worktree went when
    // its steps settled), with the same cache.
    let other = Env::new("kept-build-again");
    applied_beforehand(&other, fields);
    let mut again = env.upgrade_args_with(&map);
    let uri_at = again.iter().position(|a| a == "--mongo-uri").unwrap() + 1;
    again[uri_at] = other.uri.clone();
    again.extend(args.iter().map(|s| s.to_string()));
    let again: Vec<&str> = again.iter().map(String::as_str).collect();
    let out = env
        .command(&again)
        .timeout(std::time::Duration::from_secs(180))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let second = events(&out.stdout);
    let restored = setup_events(&second, "v1.1.0", "restored");
    assert_eq!(restored.len(), 1, "{second:#?}");
    assert_eq!(restored[0]["phase"], "build");
    let finished = setup_events(&second, "v1.1.0", "finished");
    assert!(
        finished.iter().all(|e| e["phase"] != "build"),
        "{finished:#?}"
    );
    // Built once; the command after the build found its output in the new worktree.
    assert_eq!(std::fs::read_to_string(&counter).unwrap(), "built\n");
}
