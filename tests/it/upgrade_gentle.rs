//! `upstep upgrade` and what it costs the production side and the operator's disk: data checks
//! read once per decision, approvals for steps nothing can verify, the default target, and
//! worktrees that go as soon as their tag is done.

use std::path::Path;

use crate::support::FixtureProject;
use crate::upgrade::{text, Env};

/// The fixture map with `hangs` made non-idempotent and without a data check.
fn unverifiable_hangs(project: &FixtureProject) -> std::path::PathBuf {
    project.map_variant("unverifiable", |m| {
        let guarded = "exits = \"never\"\nidempotent = \"guarded\"\n[[migrations.pending]]\n\
                       collection = \"items\"\nfilter = { tagged = { \"$exists\" = false } }";
        assert!(m.contains(guarded), "the fixture map changed");
        m.replace(
            guarded,
            "exits = \"never\"\nidempotent = \"no\"\n\
             no_fingerprint = \"nothing in the data shows whether it ran\"",
        )
    })
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn yes_does_not_approve_a_step_that_is_not_idempotent_and_unverifiable() {
    let env = Env::new("approve_needed");
    let map = unverifiable_hangs(&env.project);

    // A dry run says what a real one will need.
    let out = env.upgrade_with(&map, &["--to", "1.1.0", "--dry-run"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(stderr(&out).contains("--approve hangs"), "{}", text(&out));

    // --yes answers the routine questions, not this one: nothing runs, exit 9, the flag named.
    let out = env.upgrade_with(&map, &["--to", "1.1.0", "--yes"]);
    assert_eq!(out.status.code(), Some(9), "{}", text(&out));
    let message = stderr(&out);
    assert!(
        message.contains("--approve hangs") && message.contains("hangs (not idempotent"),
        "{message}"
    );
    assert!(env.project.executed().is_empty(), "a step ran unapproved");
    assert_eq!(
        env.status_of("exits"),
        "-",
        "nothing was journalled as started"
    );

    // An approval must name a step of the map.
    let out = env.upgrade_with(&map, &["--to", "1.1.0", "--yes", "--approve", "hang"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(stderr(&out).contains("--approve hang"), "{}", text(&out));
    assert!(env.project.executed().is_empty());

    // Approved by name, it runs (and needs no --yes: nothing else here asks). With no data
    // check, only its done line may end it: a quiet window could end it before it started.
    let out = env.upgrade_with(
        &map,
        &["--to", "1.1.0", "--approve", "hangs", "--quiet-secs", "120"],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        env.project.executed(),
        ["exits", "hangs", "export-only"],
        "{}",
        text(&out)
    );
    assert_eq!(env.status_of("hangs"), "succeeded");
}

#[test]
fn the_default_target_is_the_newest_verified_release() {
    let env = Env::new("default_target");
    let map = env.project.map_variant("unverified-1.2", |m| {
        m.replace(
            "version = \"1.2.0\"\nera = \"app\"",
            "version = \"1.2.0\"\nera = \"app\"\nverified = false",
        )
    });
    let out = env.upgrade_with(&map, &["--dry-run", "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("\"hangs\""), "{stdout}");
    assert!(
        !stdout.contains("\"counter\""),
        "a step of the unverified v1.2.0 was planned: {stdout}"
    );
    // Named explicitly, the unverified release is a target.
    let out = env.upgrade_with(&map, &["--dry-run", "--json", "--to", "1.2.0"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("\"counter\""));
}

/// How many data checks the run read (the fingerprint evaluator logs each at debug level).
fn data_check_reads(out: &std::process::Output) -> usize {
    stderr(out).matches("reading a data check").count()
}

#[test]
fn each_data_check_is_read_once_per_decision() {
    let env = Env::new("reads_once");
    let out = env.upgrade(&["--to", "1.1.0"]);
    assert!(out.status.success(), "{}", text(&out));

    // Nothing left to run: the one decision reads each of the three checks once (before, the
    // approval question and the run each read them: six).
    for extra in [&["-v"][..], &["-v", "--dry-run"], &["-v", "--yes"]] {
        let mut args = vec!["--to", "1.1.0"];
        args.extend(extra);
        let out = env.upgrade(&args);
        assert!(out.status.success(), "{}", text(&out));
        assert_eq!(data_check_reads(&out), 3, "{extra:?}\n{}", text(&out));
    }
}

fn worktree_tags(root: &Path) -> Vec<String> {
    let mut tags = Vec::new();
    for repo in std::fs::read_dir(root).into_iter().flatten().flatten() {
        for entry in std::fs::read_dir(repo.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name == ".meta" {
                // The private git dirs go with their worktrees.
                let metas: Vec<_> = std::fs::read_dir(entry.path())
                    .into_iter()
                    .flatten()
                    .flatten()
                    .map(|e| format!(".meta/{}", e.file_name().to_string_lossy()))
                    .collect();
                tags.extend(metas);
            } else {
                tags.push(name);
            }
        }
    }
    tags.sort();
    tags
}

#[test]
fn a_tags_worktree_is_removed_as_soon_as_its_steps_are_settled() {
    let env = Env::new("worktrees_settled");
    let root = env.cache.path().join("worktrees");
    let mut args = env.upgrade_args();
    args.extend(["--to", "1.1.0"].map(String::from));
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = env
        .command(&argv)
        .env("FIXTURE_WORKTREES", &root)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    // As each script started: v1.0.0's worktree was gone once `exits` had settled.
    let seen = env.project.worktrees_seen();
    let expected: Vec<(String, String)> = [
        ("exits", "v1.0.0"),
        ("hangs", "v1.1.0"),
        ("export-only", "v1.1.0"),
    ]
    .iter()
    .map(|(id, tags)| (id.to_string(), tags.to_string()))
    .collect();
    assert_eq!(seen, expected);
    assert!(
        worktree_tags(&root).is_empty(),
        "{:?}",
        worktree_tags(&root)
    );

    // --keep-worktrees keeps them.
    let kept = Env::new("worktrees_kept");
    let out = kept.upgrade(&["--to", "1.0.0", "--keep-worktrees"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        worktree_tags(&kept.cache.path().join("worktrees")),
        [".meta/v1.0.0", "v1.0.0"]
    );
}

#[test]
fn a_failed_setup_leaves_no_worktree_behind_and_the_next_run_sets_up_again() {
    let env = Env::new("setup_fails");
    let flag = env.project.work.path().join("fail-setup");
    std::fs::write(&flag, "").unwrap();
    // The setup writes build output, then fails while the flag exists.
    let map = env.project.map_variant("setup", |m| {
        m.replace(
            "done_lines = [\"end migration\"]\n",
            &format!(
                "done_lines = [\"end migration\"]\nsetup = [[\"sh\", \"-c\", \"echo built > \
                 build.out && test ! -e {}\"]]\n",
                flag.display()
            ),
        )
    });
    let root = env.cache.path().join("worktrees");
    let out = env.upgrade_with(&map, &["--to", "1.0.0", "--json"]);
    assert_eq!(out.status.code(), Some(8), "{}", text(&out));
    assert!(env.project.executed().is_empty());
    assert!(
        worktree_tags(&root).is_empty(),
        "the failed setup's worktree was left: {:?}",
        worktree_tags(&root)
    );

    // Fixed, the next run sets the tag up again (from scratch: nothing cached) and runs.
    std::fs::remove_file(&flag).unwrap();
    let out = env.upgrade_with(&map, &["--to", "1.0.0", "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    let events: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let setup: Vec<&str> = events
        .iter()
        .filter(|e| e["event"] == "setup")
        .filter_map(|e| e["status"].as_str())
        .collect();
    assert_eq!(setup, ["running", "finished", "done"], "{}", text(&out));
    assert_eq!(env.project.executed(), ["exits"]);
    assert!(worktree_tags(&root).is_empty());
}
