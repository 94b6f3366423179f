//! What people read: one-line connection failures, counts that agree with their nouns,
//! notices as sentences, each step's map warnings before it runs, and a quiet preflight when
//! nothing will run. Through the real binary on the fixture project.

use crate::support::free_port;
use crate::upgrade::{text, Env};

#[test]
fn a_connection_failure_is_one_line_and_the_driver_speaks_only_under_v() {
    let env = Env::new("words_refused");
    let port = free_port();
    let uri = format!("mongodb://127.0.0.1:{port}/novu-db?serverSelectionTimeoutMS=500");
    let out = env
        .command(&["status", "--mongo-uri", &uri])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(6), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    let mut lines = err.lines();
    assert_eq!(
        lines.next(),
        Some(
            format!("error: cannot reach MongoDB at 127.0.0.1:{port}: connection refused").as_str()
        ),
        "{err}"
    );
    assert!(
        lines
            .next()
            .is_some_and(|l| l.trim_start().starts_with("fix:")),
        "{err}"
    );
    assert_eq!(lines.next(), None, "{err}");
    assert!(!err.contains("Topology"), "{err}");

    let out = env
        .command(&["-v", "status", "--mongo-uri", &uri])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("MongoDB driver error"), "{err}");
    assert!(err.contains("Connection refused"), "{err}");

    // doctor says it the same way: the cause in the check, the driver's account under -v.
    let map = env.project.map_path.display().to_string();
    let doctor = [
        "doctor",
        "--map",
        &map,
        "--from",
        "1.1.0",
        "--mongo-uri",
        &uri,
    ];
    let out = env.command(&doctor).output().unwrap();
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(
        shown.contains("The data was not read (cannot reach MongoDB at 127.0.0.1:"),
        "{}",
        text(&out)
    );
    let connect = shown.lines().find(|l| l.contains("mongo.connect")).unwrap();
    assert!(connect.ends_with("(connection refused)"), "{connect}");
    assert!(!shown.contains("Topology"), "{shown}");
    let verbose: Vec<&str> = std::iter::once("-v").chain(doctor).collect();
    let out = env.command(&verbose).output().unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("Topology"),
        "{}",
        text(&out)
    );
}

#[test]
fn every_step_shows_its_map_warnings_before_it_runs_in_text_and_json() {
    let env = Env::new("words_warnings");
    // A guarded step needs no confirmation, and still has something to say.
    let map = env.project.map_variant("warned", |t| {
        t.replace(
            "title = \"Exits by itself\"\n",
            "title = \"Exits by itself\"\nwarnings = [\"Marks every item done.\"]\n",
        )
    });
    let out = env.upgrade_with(&map, &["--to", "1.0.0", "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    let events: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let started = events
        .iter()
        .position(|e| e["event"] == "step-started" && e["id"] == "exits")
        .expect("exits started");
    assert_eq!(
        events[started]["warnings"],
        serde_json::json!(["Marks every item done."])
    );
    assert!(
        events[..started]
            .iter()
            .all(|e| e["event"] != "step-finished"),
        "the warning comes before the step ends"
    );

    let env = Env::new("words_warnings_text");
    let out = env.upgrade_with(&map, &["--to", "1.0.0"]);
    assert!(out.status.success(), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    let started = err.find("exits at v1.0.0").expect("the step line");
    let warned = err
        .find("warning: Marks every item done.")
        .expect("the warning");
    let finished = err.find("exits: succeeded").expect("the end line");
    assert!(started < warned && warned < finished, "{err}");
    // Notices are sentences.
    assert!(
        err.lines()
            .any(|l| l.starts_with("v1.0.0 runs with node ") && l.ends_with('.')),
        "{err}"
    );
}

#[test]
fn when_nothing_will_run_the_preflight_says_nothing_about_the_map() {
    let env = Env::new("words_nothing");
    let out = env.upgrade(&["--to", "1.0.0"]);
    assert!(out.status.success(), "{}", text(&out));
    // A map whose tags would each need 100 TB: a preflight of the whole map would refuse.
    let huge = env.project.map_variant("huge", |t| {
        t.replace(
            "quiet_secs = 2\n",
            "quiet_secs = 2\ndisk_per_tag_mb = 100000000\n",
        )
    });
    let out = env.upgrade_with(&huge, &["--to", "1.0.0"]);
    assert!(out.status.success(), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("Preflight"), "{err}");
    assert!(!err.contains("runs with node"), "{err}");
    assert!(err.contains("nothing to run"), "{err}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("Upgrade done: 0 ran"), "{stdout}");
}

#[test]
fn a_dry_run_counts_in_words() {
    let env = Env::new("words_dry");
    let out = env.upgrade(&["--to", "1.0.0", "--dry-run"]);
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("Dry run: 1 step would run, 0 would be skipped"),
        "{stdout}"
    );
}
