//! `upstep cache` and `upstep cache prune` on a cache holding the worktrees of a live
//! repository and of one that was deleted, through the real binary.

use std::path::Path;

use bson::doc;

use crate::support::{fresh_db_name, mongo, FixtureProject};
use crate::upgrade::{text, Env};

fn json_of(out: &std::process::Output) -> serde_json::Value {
    assert!(out.status.success(), "{}", text(out));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn names(json: &serde_json::Value, kind: &str) -> Vec<String> {
    json["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["kind"] == kind)
        .map(|i| i["name"].as_str().unwrap().to_string())
        .collect()
}

fn verdict(json: &serde_json::Value, name_ends: &str) -> (String, String) {
    let item = json["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["name"].as_str().unwrap().ends_with(name_ends))
        .unwrap_or_else(|| panic!("{name_ends} not in {json:#}"));
    (
        item["verdict"].as_str().unwrap().to_string(),
        item["why"].as_str().unwrap().to_string(),
    )
}

#[test]
fn cache_shows_what_upstep_keeps_and_prune_removes_only_what_no_run_can_use() {
    let env = Env::new("cache_live");
    // The live repository: every tag prepared and kept.
    let out = env.upgrade(&["--to", "1.1.0", "--keep-worktrees"]);
    assert!(out.status.success(), "{}", text(&out));

    // A second project, in the same cache, whose v1.2.0 step fails (its tag's worktree stays
    // for the retry); then its repository is deleted.
    let gone = FixtureProject::new();
    let gone_db = fresh_db_name("cache_gone");
    let gone_uri = mongo().uri_for_db(&gone_db);
    let (uri, db) = (gone_uri.clone(), gone_db.clone());
    crate::support::block_on(async move {
        let client = mongodb::Client::with_uri_str(&uri).await.unwrap();
        let db = client.database(&db);
        db.collection::<bson::Document>("items")
            .insert_one(doc! { "_id": 1 })
            .await
            .unwrap();
        db.collection::<bson::Document>("control")
            .insert_one(doc! { "_id": "fail" })
            .await
            .unwrap();
    });
    let mut args = env.upgrade_args_with(&gone.map_path);
    let live_repo = env.project.repo_path().display().to_string();
    for a in &mut args {
        if *a == live_repo {
            *a = gone.repo_path().display().to_string();
        } else if *a == env.uri {
            *a = gone_uri.clone();
        }
    }
    args.extend(["--keep-worktrees".to_string(), "--yes".to_string()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = env.command(&args).output().unwrap();
    assert_eq!(out.status.code(), Some(8), "the step fails: {}", text(&out));
    std::fs::remove_dir_all(gone.repo_path()).unwrap();

    // A toolchain no release of the map needs, and an old run's logs.
    let cache = env.cache.path();
    std::fs::create_dir_all(cache.join("toolchains/node-0.0.1/bin")).unwrap();
    std::fs::write(cache.join("toolchains/node-0.0.1/bin/node"), "x").unwrap();
    let old_logs = env.state.path().join("logs/old-run");
    std::fs::create_dir_all(&old_logs).unwrap();
    std::fs::write(old_logs.join("01-x.log"), "old").unwrap();
    let touched = std::process::Command::new("touch")
        .args(["-d", "2020-01-01"])
        .arg(old_logs.join("01-x.log"))
        .arg(&old_logs)
        .status()
        .unwrap();
    assert!(touched.success());

    // The package store and build caches every tag's setup shares.
    for shared in [
        "pnpm-store/v3/files/00",
        "nx-cache/abc123",
        "build-outputs/k1/files",
    ] {
        std::fs::create_dir_all(cache.join(shared)).unwrap();
        std::fs::write(cache.join(shared).join("x"), "x").unwrap();
    }

    let map = env.project.map_path.display().to_string();
    let shown = json_of(&env.command(&["cache", "--json"]).output().unwrap());
    assert_eq!(names(&shown, "package-store"), ["pnpm store"], "{shown:#}");
    assert_eq!(
        names(&shown, "build-cache"),
        ["nx cache", "kept builds"],
        "{shown:#}"
    );
    assert_eq!(shown["schema"], "upstep.cache/1");
    let worktrees = names(&shown, "worktree");
    assert_eq!(worktrees.len(), 5, "{worktrees:?}");
    let gone_ones: Vec<&serde_json::Value> = shown["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["repository_gone"] == true)
        .collect();
    assert_eq!(gone_ones.len(), 3, "{shown:#}");
    assert!(shown["total_bytes"].as_u64().unwrap() > 0);
    let text_out = env.command(&["cache"]).output().unwrap();
    let shown_text = String::from_utf8_lossy(&text_out.stdout);
    assert!(shown_text.contains("worktrees (5)"), "{shown_text}");
    assert!(
        shown_text.contains("its repository is gone"),
        "{shown_text}"
    );

    // The dry run says, and removes nothing.
    let dry = json_of(
        &env.command(&[
            "cache",
            "prune",
            "--dry-run",
            "--older-than",
            "30",
            "--map",
            &map,
            "--json",
        ])
        .output()
        .unwrap(),
    );
    assert_eq!(dry["schema"], "upstep.cache-prune/1");
    let gone_key = gone_ones[0]["name"]
        .as_str()
        .unwrap()
        .split('/')
        .next()
        .unwrap();
    let (v, why) = verdict(&dry, &format!("{gone_key}/v1.0.0"));
    assert_eq!(v, "remove", "{why}");
    assert!(why.contains("is gone"), "{why}");
    // The failed step's tag is kept, repository or not: the run is unfinished.
    let (v, why) = verdict(&dry, &format!("{gone_key}/v1.2.0"));
    assert_eq!(v, "keep", "{why}");
    assert!(why.contains("unfinished"), "{why}");
    assert_eq!(verdict(&dry, "node-0.0.1").0, "remove");
    assert_eq!(verdict(&dry, "old-run").0, "remove");
    assert!(Path::new(gone_ones[0]["path"].as_str().unwrap()).exists());

    // The real prune.
    let out = env
        .command(&["cache", "prune", "--older-than", "30", "--map", &map])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.starts_with("Removed 4 items"), "{said}");
    assert!(said.contains("Kept"), "{said}");
    let after = json_of(&env.command(&["cache", "--json"]).output().unwrap());
    let left = names(&after, "worktree");
    assert_eq!(left.len(), 3, "{left:?}");
    assert!(
        left.iter().any(|n| n == &format!("{gone_key}/v1.2.0")),
        "{left:?}"
    );
    assert!(!cache.join("toolchains/node-0.0.1").exists());
    assert!(cache.join("pnpm-store/v3/files/00/x").exists());
    assert!(cache.join("nx-cache/abc123/x").exists());
    assert!(cache.join("build-outputs/k1/files/x").exists());
    assert!(!old_logs.exists());
    // The live repository's worktrees still serve a run: it reuses v1.0.0 and v1.1.0.
    let out = env.upgrade(&["--to", "1.1.0", "--keep-worktrees"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        !names(&after, "worktree")
            .iter()
            .any(|n| n.starts_with(gone_key) && n.ends_with("v1.0.0")),
        "{after:#}"
    );
}
