//! One decision, many views: with a database, `doctor`, `plan --detect`, `status` and the
//! upgrade's own preflight start from the same decided plan, on the fixture project through
//! the real binary.

use std::process::Output;

use crate::support::{machine_node_version, redis};
use crate::upgrade::{text, Env};

/// The fixture map with a disk size per tag, and `exits` (v1.0.0) needing the key.
fn map_needing_key_at_v1_0_0(env: &Env) -> std::path::PathBuf {
    env.project.map_variant("key-at-1.0.0", |t| {
        t.replace(
            "quiet_secs = 2\n",
            "quiet_secs = 2\ndisk_per_tag_mb = 100\n",
        )
        .replace(
            "script = \"migrations/001-exits.js\"\n",
            "script = \"migrations/001-exits.js\"\nneeds = [\"encryption-key\"]\n",
        )
    })
}

fn doctor(env: &Env, map: &std::path::Path, extra: &[&str]) -> Output {
    let mut args = vec![
        "doctor".to_string(),
        "--map".into(),
        map.display().to_string(),
        "--repo".into(),
        env.project.repo_path().display().to_string(),
        "--mongo-uri".into(),
        env.uri.clone(),
        "--redis-url".into(),
        redis().url.clone(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    env.command(&args).output().unwrap()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// The part of doctor's text that does not depend on the machine (free disk, paths).
fn plan_part(doctor_text: &str, env: &Env) -> String {
    doctor_text
        .split("\nChecks\n")
        .next()
        .unwrap_or_default()
        .replace(&machine_node_version(), "<node>")
        .replace(&env.uri, "<database>")
}

#[test]
fn doctor_checks_the_data_driven_plan_with_every_steps_needs_and_the_disk() {
    let env = Env::new("picture_larger");
    let map = map_needing_key_at_v1_0_0(&env);
    // The data of every release is pending: the data-driven plan runs all six steps, from
    // v1.0.0 on, although --from says v1.1.0 (whose plan is three steps at one tag).
    let offline = env
        .command(&["plan", "--map", map.to_str().unwrap(), "--from", "v1.1.0"])
        .output()
        .unwrap();
    assert!(offline.status.success(), "{}", text(&offline));
    assert!(
        stdout(&offline).contains("3 scripts at 1 tag"),
        "{}",
        text(&offline)
    );
    assert!(
        stdout(&offline).contains("the journal and the data were not read"),
        "{}",
        text(&offline)
    );

    let out = doctor(&env, &map, &["--from", "v1.1.0"]);
    let shown = stdout(&out);
    // The key is missing, and only the data-driven plan needs it.
    assert_eq!(out.status.code(), Some(5), "{}", text(&out));
    insta::assert_snapshot!("doctor_plan_part", plan_part(&shown, &env));
    let checks = shown.split("\nChecks\n").nth(1).unwrap();
    let key = checks
        .lines()
        .find(|l| l.contains("encryption-key"))
        .unwrap();
    assert!(key.contains("BLOCKER"), "{key}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("preflight found 1 blocker: fix it"),
        "{}",
        text(&out)
    );

    // The JSON carries the same plan.
    let out = doctor(&env, &map, &["--from", "v1.1.0", "--json"]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["schema"], "upstep.doctor/1");
    assert_eq!(json["plan"]["read_the_data"], true);
    assert_eq!(json["plan"]["tags"], 3);
    let steps: Vec<&str> = json["plan"]["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        steps,
        ["exits", "hangs", "export-only", "fails", "noop", "counter"]
    );
    assert_eq!(json["plan"]["steps"][0]["needs"][0], "encryption-key");
    assert_eq!(json["plan"]["disk_all_tags"], 300 * 1024 * 1024);
    // Two tags at once: the next is prepared while the steps of the current one run.
    assert_eq!(json["plan"]["disk_at_once"], 200 * 1024 * 1024);

    // With the key, nothing blocks.
    let out = {
        let mut args = vec!["doctor", "--from", "v1.1.0"];
        let map_s = map.display().to_string();
        let repo = env.project.repo_path().display().to_string();
        let redis_url = redis().url.clone();
        args.extend([
            "--map",
            &map_s,
            "--repo",
            &repo,
            "--mongo-uri",
            &env.uri,
            "--redis-url",
            &redis_url,
        ]);
        env.command(&args)
            .env("STORE_ENCRYPTION_KEY", "0123456789abcdef0123456789abcdef")
            .output()
            .unwrap()
    };
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
}

#[test]
fn without_a_database_doctor_says_it_did_not_read_the_data() {
    let env = Env::new("picture_offline");
    let map = map_needing_key_at_v1_0_0(&env);
    let out = env
        .command(&[
            "doctor",
            "--map",
            map.to_str().unwrap(),
            "--from",
            "v1.1.0",
            "--redis-url",
            &redis().url,
        ])
        .output()
        .unwrap();
    let shown = stdout(&out);
    assert!(
        shown.contains("The data was not read (no database was given"),
        "{}",
        text(&out)
    );
    assert!(shown.contains("(3 scripts at 1 tag)"), "{}", text(&out));
    // Offline, the key looks unneeded: exactly what the data-driven plan corrects.
    let key = shown
        .lines()
        .find(|l| l.contains("encryption-key"))
        .unwrap();
    assert!(key.contains("not needed by this plan"), "{key}");
}

#[test]
fn the_upgrade_preflight_refuses_the_missing_key_the_data_driven_plan_needs() {
    let env = Env::new("picture_upgrade_key");
    let map = map_needing_key_at_v1_0_0(&env);
    let out = env.upgrade_with(&map, &["--from", "v1.1.0"]);
    assert_eq!(out.status.code(), Some(5), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("encryption-key"), "{}", text(&out));
    assert!(env.project.executed().is_empty(), "{}", text(&out));
    assert!(env.journal().is_empty(), "nothing may be journalled");
}

#[test]
fn doctor_with_repo_blocks_on_a_script_missing_at_its_tag() {
    let env = Env::new("picture_repo");
    // The map places noop a release early, where its file does not exist yet. (A renamed
    // file would also leave the repository's script unmapped: that is refused outright, exit 3.)
    let map = env.project.map_variant("moved", |t| {
        t.replace(
            "introduced_in = \"1.2.0\"\nscript = \"migrations/005-noop.js\"",
            "introduced_in = \"1.1.0\"\nscript = \"migrations/005-noop.js\"",
        )
    });
    let out = doctor(&env, &map, &[]);
    assert_eq!(out.status.code(), Some(5), "{}", text(&out));
    let checks = stdout(&out);
    let checks = checks.split("\nChecks\n").nth(1).unwrap();
    let line = checks
        .lines()
        .find(|l| l.contains("repository"))
        .unwrap_or_else(|| panic!("{checks}"));
    assert!(line.contains("BLOCKER"), "{line}");
    assert!(
        line.contains("1 script of the plan does not exist"),
        "{line}"
    );
    assert!(
        checks.contains("noop (migrations/005-noop.js) at v1.1.0"),
        "{checks}"
    );

    // Once the data is migrated to v1.1.0, the plan no longer holds v1.0.0 and v1.1.0.
    let out = env.upgrade(&["--to", "1.1.0"]);
    assert!(out.status.success(), "{}", text(&out));
    let out = doctor(&env, &env.project.map_path, &["--json"]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let tags: Vec<&str> = json["plan"]["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["git_ref"].as_str().unwrap())
        .collect();
    assert_eq!(tags, ["v1.2.0", "v1.2.0", "v1.2.0"], "{}", text(&out));
    assert_eq!(json["plan"]["from"], "the journal and the data");
}

#[test]
fn status_and_plan_detect_show_what_doctor_decided() {
    let env = Env::new("picture_status");
    let out = env.upgrade(&["--to", "1.1.0"]);
    assert!(out.status.success(), "{}", text(&out));
    let map = env.project.map_path.display().to_string();
    let status = env
        .command(&["status", "--map", &map, "--mongo-uri", &env.uri, "--json"])
        .output()
        .unwrap();
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    let pending: Vec<&str> = status["migrations"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["state"] == "pending")
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    // The data state of each step is shown, as detect reads it.
    let data: Vec<&str> = status["migrations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["data"].as_str().unwrap_or("-"))
        .collect();
    assert_eq!(
        data,
        ["applied", "applied", "applied", "pending", "pending", "pending"]
    );
    let plan = env
        .command(&[
            "plan",
            "--detect",
            "--map",
            &map,
            "--mongo-uri",
            &env.uri,
            "--json",
        ])
        .output()
        .unwrap();
    let plan: serde_json::Value = serde_json::from_slice(&plan.stdout).unwrap();
    let would_run: Vec<&str> = plan["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["steps"].as_array().unwrap())
        .filter(|s| s["decision"]["action"] == "run")
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert_eq!(pending, would_run);
    assert_eq!(would_run, ["fails", "noop", "counter"]);
}
