//! Package stand-ins the map declares, applied to a tag's lockfile before its install: the
//! fixture project's v1.0.0 pins a package "the registry no longer serves" (its install fails
//! with ERR_PNPM_FETCH_404 unless the lockfile names the stand-in) and a tarball from a host
//! that may be out of reach (a local port: open, or closed). Also: the removal of a failed
//! setup's worktree is said, and `--from` vouching is what `status` reads.

use std::path::{Path, PathBuf};

use crate::support::BASE_TIME;
use crate::upgrade::{text, Env};
use crate::upgrade_setup::{files_under, setup_log};

/// The tag's lockfile; `{url}` is where the install fetches http2 from.
const LOCK: &str = "lockfileVersion: '9.0'

importers:

  .:
    dependencies:
      '@fx/gone':
        specifier: 1.0.0
        version: 1.0.0
      http2:
        specifier: 3.3.6
        version: 3.3.6

packages:

  '@fx/gone@1.0.0':
    resolution: {integrity: sha512-gone}

  http2@3.3.6:
    resolution: {tarball: {url}}
";

/// The install, in node: fails like pnpm on a version the registry no longer serves, and
/// says what it would install.
const INSTALL: &str = r#"
const fs = require('fs');
const lock = fs.readFileSync('pnpm-lock.yaml', 'utf8');
if (lock.includes('sha512-gone')) {
  console.error('ERR_PNPM_FETCH_404  GET https://registry.npmjs.org/@fx/gone/-/gone-1.0.0.tgz: Not Found - 404');
  process.exit(1);
}
const gone = lock.match(/'@fx\/gone@([0-9.]+)':/);
console.log('install saw @fx/gone@' + (gone ? gone[1] : 'none'));
const http2 = lock.match(/tarball: ([^}]+)\}/);
console.log('install saw http2 from ' + (http2 ? http2[1] : 'the registry'));
"#;

/// The always stand-in for @fx/gone (TOML; `\n` spans lines).
const GONE_STAND_IN: &str = r#"
[[releases.stand_ins]]
package = "@fx/gone"
original = "1.0.0"
stand_in = "1.0.1 from npm"
why = "gone-from-registry"
when = "always"
[[releases.stand_ins.edits]]
text = "'@fx/gone@1.0.0':\n    resolution: {integrity: sha512-gone}"
with = "'@fx/gone@1.0.1':\n    resolution: {integrity: sha512-stand-in}"
[[releases.stand_ins.edits]]
text = "      '@fx/gone':\n        specifier: 1.0.0\n        version: 1.0.0"
with = "      '@fx/gone':\n        specifier: 1.0.0\n        version: 1.0.1"
"#;

const NPM_HTTP2: &str = "https://registry.npmjs.org/http2/-/http2-3.3.6.tgz";

/// The http2 download from `url` and its when-unreachable stand-in.
fn http2_stand_in(url: &str) -> String {
    format!(
        r#"
[[releases.downloads]]
dependency = "http2"
url = "{url}"
via = "@fx/push"
[[releases.stand_ins]]
package = "http2"
original = "a fork of http2 3.3.6 (tarball)"
stand_in = "http2 3.3.6 from npm"
why = "outside-registry"
when = "when-unreachable"
[[releases.stand_ins.edits]]
text = "tarball: {url}"
with = "tarball: {NPM_HTTP2}"
"#
    )
}

/// Put the lockfile (with `url` for http2, the first `(text, with)` edits already made) and
/// the install at a new commit, and move v1.0.0 onto it.
fn with_lockfile(env: &Env, url: &str, already: &[(&str, &str)]) -> String {
    let mut lock = LOCK.replace("{url}", url);
    for (text, with) in already {
        lock = lock.replace(text, with);
    }
    let repo = &env.project.repo;
    let commit = repo.commit(
        &[
            ("pnpm-lock.yaml", Some(&lock)),
            ("setup/install.js", Some(INSTALL)),
        ],
        BASE_TIME + 5 * 86_400,
    );
    let object = repo.repo.find_object(commit, None).unwrap();
    repo.repo.tag_lightweight("v1.0.0", &object, true).unwrap();
    lock
}

/// The fixture map with the install as its era's setup and `declared` on v1.0.0.
fn map_with(env: &Env, name: &str, declared: &str) -> PathBuf {
    let declared = declared.to_string();
    env.project.map_variant(name, move |m| {
        m.replacen(
            "done_lines = [\"end migration\"]\n",
            "done_lines = [\"end migration\"]\nsetup = [[\"node\", \"setup/install.js\"]]\n",
            1,
        )
        .replacen(
            "[[releases]]\nversion = \"1.1.0\"",
            &format!("{declared}\n[[releases]]\nversion = \"1.1.0\""),
            1,
        )
    })
}

fn events_of(stdout: &[u8]) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

fn of_kind<'e>(events: &'e [serde_json::Value], kind: &str) -> Vec<&'e serde_json::Value> {
    events.iter().filter(|e| e["event"] == kind).collect()
}

fn setups<'e>(events: &'e [serde_json::Value], status: &str) -> Vec<&'e serde_json::Value> {
    events
        .iter()
        .filter(|e| e["event"] == "setup" && e["status"] == status)
        .collect()
}

fn worktree_lockfiles(env: &Env) -> Vec<String> {
    files_under(env.cache.path(), "pnpm-lock.yaml")
        .iter()
        .map(|p| std::fs::read_to_string(p).unwrap())
        .collect()
}

const UNUSED_URL: &str = "https://fork.example.invalid/http2.tgz";

#[test]
fn an_always_stand_in_is_applied_before_the_install_then_the_released_lockfile_is_back() {
    let env = Env::new("stand_in_always");
    let lock = with_lockfile(&env, UNUSED_URL, &[]);

    // As released, the install cannot work: the registry no longer serves @fx/gone 1.0.0.
    let bare = map_with(&env, "bare", "");
    let out = env.upgrade_with(&bare, &["--to", "1.0.0", "--json"]);
    assert_eq!(out.status.code(), Some(8), "{}", text(&out));
    assert!(text(&out).contains("ERR_PNPM_FETCH_404"), "{}", text(&out));
    // Its failed worktree is removed, and said so: before (with its size) and after.
    let events = events_of(&out.stdout);
    let removing = setups(&events, "removing");
    assert_eq!(removing.len(), 1, "{events:#?}");
    let detail = removing[0]["detail"].as_str().unwrap();
    assert!(
        detail.starts_with("removing the failed worktree of v1.0.0 (") && detail.ends_with("B)"),
        "{detail}"
    );
    assert_eq!(removing[0]["phase"], "cleanup");
    let removed = setups(&events, "removed");
    assert_eq!(removed.len(), 1, "{events:#?}");
    assert!(
        removed[0]["detail"].as_str().unwrap().contains(" s"),
        "{:?}",
        removed[0]
    );
    assert!(removed[0]["duration_ms"].is_u64());
    assert!(
        worktree_lockfiles(&env).is_empty(),
        "the failed worktree is gone"
    );

    // Declared: the install sees the stand-in, the run goes on, the tag's file is back.
    let map = map_with(&env, "always", GONE_STAND_IN);
    let out = env.upgrade_with(&map, &["--to", "1.0.0", "--json", "--keep-worktrees"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(env.status_of("exits"), "succeeded");
    let log = setup_log(&env);
    assert!(log.contains("install saw @fx/gone@1.0.1"), "{log}");
    assert!(
        log.contains("# stand-in in pnpm-lock.yaml: @fx/gone 1.0.0 -> 1.0.1 from npm (the original is gone from the registry) (2 edits)"),
        "{log}"
    );
    let events = events_of(&out.stdout);
    let stand_ins = of_kind(&events, "stand-ins");
    assert_eq!(stand_ins.len(), 1, "{events:#?}");
    assert_eq!(stand_ins[0]["git_ref"], "v1.0.0");
    let applied = &stand_ins[0]["stand_ins"][0];
    assert_eq!(applied["package"], "@fx/gone");
    assert_eq!(applied["original"], "1.0.0");
    assert_eq!(applied["stand_in"], "1.0.1 from npm");
    assert_eq!(applied["why"], "gone-from-registry");
    assert_eq!(applied["when"], "always");
    assert_eq!(applied["outcome"], "applied");
    // The stand-ins event comes before the install runs.
    let at = |e: &serde_json::Value| events.iter().position(|x| x == e).unwrap();
    assert!(at(stand_ins[0]) < at(setups(&events, "running")[0]));
    let summary = of_kind(&events, "summary");
    assert_eq!(
        summary[0]["stand_ins"][0],
        "v1.0.0: @fx/gone 1.0.0 -> 1.0.1 from npm (the original is gone from the registry)"
    );
    assert_eq!(
        worktree_lockfiles(&env),
        [lock],
        "the released lockfile is back"
    );
    let journal = env.find("upstep_events", bson::doc! { "kind": "stand-ins" });
    assert_eq!(journal.len(), 1, "{journal:?}");

    // The plan and doctor say so for the tag.
    let map_arg = map.display().to_string();
    let repo_arg = env.project.repo_path().display().to_string();
    let plan = env
        .command(&[
            "plan", "--map", &map_arg, "--repo", &repo_arg, "--from", "0.9.0", "--to", "1.0.0",
        ])
        .output()
        .unwrap();
    assert!(plan.status.success(), "{}", text(&plan));
    assert!(
        String::from_utf8_lossy(&plan.stdout).contains(
            "setup: stand-in: @fx/gone 1.0.0 -> 1.0.1 from npm (the original is gone from the registry)"
        ),
        "{}",
        text(&plan)
    );
}

#[test]
fn a_worktree_prepared_without_the_stand_in_is_set_up_again_and_vice_versa() {
    let env = Env::new("stand_in_stamp");
    // The lockfile already pins the stand-in: both maps install, only their stand-ins differ.
    let already = [(
        "'@fx/gone@1.0.0':\n    resolution: {integrity: sha512-gone}",
        "'@fx/gone@1.0.1':\n    resolution: {integrity: sha512-stand-in}",
    )];
    with_lockfile(&env, UNUSED_URL, &already);
    let bare = map_with(&env, "bare", "");
    let declared = map_with(&env, "declared", GONE_STAND_IN);
    // Each run runs `exits` again (marked pending before it), so its tag is prepared.
    let run = |map: &PathBuf| {
        let map_arg = map.display().to_string();
        let mark = env
            .command(&[
                "mark",
                "exits",
                "--pending",
                "--map",
                &map_arg,
                "--mongo-uri",
                &env.uri,
            ])
            .output()
            .unwrap();
        assert!(mark.status.success(), "{}", text(&mark));
        let out = env.upgrade_with(map, &["--to", "1.0.0", "--json", "--keep-worktrees"]);
        assert!(out.status.success(), "{}", text(&out));
        assert_eq!(env.status_of("exits"), "succeeded");
        events_of(&out.stdout)
    };
    let first = run(&bare);
    assert_eq!(setups(&first, "finished").len(), 1, "{first:#?}");
    let with_stand_in = run(&declared);
    assert!(
        setups(&with_stand_in, "cached").is_empty(),
        "prepared without it: not reused {with_stand_in:#?}"
    );
    assert_eq!(setups(&with_stand_in, "finished").len(), 1);
    // Half of it was already there: applied, idempotently.
    let shown = of_kind(&with_stand_in, "stand-ins");
    assert_eq!(shown[0]["stand_ins"][0]["outcome"], "applied", "{shown:?}");
    let again = run(&declared);
    assert_eq!(setups(&again, "cached").len(), 1, "{again:#?}");
    let shown = of_kind(&again, "stand-ins");
    assert_eq!(
        shown[0]["stand_ins"][0]["outcome"], "prepared-earlier",
        "{shown:?}"
    );
    let back = run(&bare);
    assert!(
        setups(&back, "cached").is_empty(),
        "prepared with it: not reused {back:#?}"
    );
    assert!(of_kind(&back, "stand-ins").is_empty());
}

#[test]
fn a_lockfile_that_already_holds_the_stand_in_is_left_as_it_is() {
    let env = Env::new("stand_in_idempotent");
    let both = [
        (
            "'@fx/gone@1.0.0':\n    resolution: {integrity: sha512-gone}",
            "'@fx/gone@1.0.1':\n    resolution: {integrity: sha512-stand-in}",
        ),
        (
            "      '@fx/gone':\n        specifier: 1.0.0\n        version: 1.0.0",
            "      '@fx/gone':\n        specifier: 1.0.0\n        version: 1.0.1",
        ),
    ];
    let lock = with_lockfile(&env, UNUSED_URL, &both);
    let map = map_with(&env, "always", GONE_STAND_IN);
    let out = env.upgrade_with(&map, &["--to", "1.0.0", "--json", "--keep-worktrees"]);
    assert!(out.status.success(), "{}", text(&out));
    let events = events_of(&out.stdout);
    let shown = of_kind(&events, "stand-ins");
    assert_eq!(
        shown[0]["stand_ins"][0]["outcome"], "already-present",
        "{shown:?}"
    );
    assert!(setup_log(&env).contains("install saw @fx/gone@1.0.1"));
    assert_eq!(worktree_lockfiles(&env), [lock]);
}

#[test]
fn a_stand_in_that_does_not_fit_the_tag_refuses_the_setup_and_map_check() {
    let env = Env::new("stand_in_missing");
    with_lockfile(&env, UNUSED_URL, &[]);
    let wrong = GONE_STAND_IN.replace("sha512-gone}\"\nwith", "sha512-other}\"\nwith");
    let map = map_with(&env, "wrong", &wrong);
    let out = env.upgrade_with(&map, &["--to", "1.0.0"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("the stand-in for @fx/gone does not fit pnpm-lock.yaml at v1.0.0: neither its text \"'@fx/gone@1.0.0':\" nor its replacement is there"),
        "{err}"
    );
    assert!(err.contains("nothing was installed"), "{err}");
    let log = setup_log(&env);
    assert!(!log.contains("====="), "no setup command ran:\n{log}");
    assert_eq!(env.status_of("exits"), "-");
    assert!(env.project.executed().is_empty());

    let map_arg = map.display().to_string();
    let repo_arg = env.project.repo_path().display().to_string();
    let check = env
        .command(&["map", "check", "--map", &map_arg, "--repo", &repo_arg])
        .output()
        .unwrap();
    assert_eq!(check.status.code(), Some(3), "{}", text(&check));
    assert!(
        text(&check).contains("the stand-in for @fx/gone does not fit pnpm-lock.yaml at v1.0.0"),
        "{}",
        text(&check)
    );
    // The right declaration passes (the fixture's moved tag disagrees with the map in other
    // ways, which map check names too).
    let right = map_with(&env, "right", GONE_STAND_IN);
    let right_arg = right.display().to_string();
    let check = env
        .command(&["map", "check", "--map", &right_arg, "--repo", &repo_arg])
        .output()
        .unwrap();
    assert!(!text(&check).contains("stand-in"), "{}", text(&check));
}

/// `plan --repo`, then `upgrade`, with no proxy in the way of the probe.
fn plan_and_upgrade(env: &Env, map: &Path) -> (std::process::Output, std::process::Output) {
    let proxies = ["HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"];
    let map_arg = map.display().to_string();
    let repo_arg = env.project.repo_path().display().to_string();
    let mut plan = env.command(&[
        "plan", "--map", &map_arg, "--repo", &repo_arg, "--from", "0.9.0", "--to", "1.0.0",
    ]);
    let mut args = env.upgrade_args_with(map);
    args.extend(
        ["--to", "1.0.0", "--json", "--keep-worktrees"]
            .iter()
            .map(|s| s.to_string()),
    );
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut upgrade = env.command(&args);
    for var in proxies {
        plan.env_remove(var);
        upgrade.env_remove(var);
    }
    (plan.output().unwrap(), upgrade.output().unwrap())
}

#[test]
fn a_when_unreachable_stand_in_follows_the_download_s_host() {
    // Reachable: a local port that accepts connections (the probe needs no more).
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!(
        "https://127.0.0.1:{}/http2.tgz",
        listener.local_addr().unwrap().port()
    );
    let env = Env::new("stand_in_reachable");
    with_lockfile(&env, &url, &[]);
    let map = map_with(
        &env,
        "http2",
        &format!("{GONE_STAND_IN}{}", http2_stand_in(&url)),
    );
    let (plan, out) = plan_and_upgrade(&env, &map);
    assert!(plan.status.success(), "{}", text(&plan));
    assert!(
        String::from_utf8_lossy(&plan.stdout)
            .contains("no stand-in for http2: 127.0.0.1 answers, the original is installed"),
        "{}",
        text(&plan)
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(setup_log(&env).contains(&format!("install saw http2 from {url}")));
    let events = events_of(&out.stdout);
    let packages: Vec<&str> = of_kind(&events, "stand-ins")[0]["stand_ins"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["package"].as_str().unwrap())
        .collect();
    assert_eq!(packages, ["@fx/gone"], "{events:#?}");
    drop(listener);

    // Unreachable: a port nothing listens on. Not a blocker: a note, and the stand-in.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!(
        "https://127.0.0.1:{}/http2.tgz",
        closed.local_addr().unwrap().port()
    );
    drop(closed);
    let env = Env::new("stand_in_unreachable");
    with_lockfile(&env, &url, &[]);
    let map = map_with(
        &env,
        "http2",
        &format!("{GONE_STAND_IN}{}", http2_stand_in(&url)),
    );
    // doctor names both: the download as a warning with its stand-in, the always one too.
    let map_arg = map.display().to_string();
    let repo_arg = env.project.repo_path().display().to_string();
    let mut doctor = env.command(&[
        "doctor",
        "--map",
        &map_arg,
        "--repo",
        &repo_arg,
        "--mongo-uri",
        &env.uri,
        "--redis-url",
        &crate::support::redis().url,
        "--to",
        "1.0.0",
    ]);
    for var in ["HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"] {
        doctor.env_remove(var);
    }
    let doctor = doctor.output().unwrap();
    let checks = String::from_utf8_lossy(&doctor.stdout);
    assert!(
        checks.contains("127.0.0.1 cannot be reached from here, so v1.0.0's install takes the map's stand-in: http2 a fork of http2 3.3.6 (tarball) -> http2 3.3.6 from npm"),
        "{}",
        text(&doctor)
    );
    assert!(
        checks.contains(
            "v1.0.0's install takes the map's stand-in: @fx/gone 1.0.0 -> 1.0.1 from npm"
        ),
        "{}",
        text(&doctor)
    );
    assert!(!checks.contains("BLOCKER"), "{}", text(&doctor));
    let (plan, out) = plan_and_upgrade(&env, &map);
    assert!(plan.status.success(), "not blocked: {}", text(&plan));
    let shown = String::from_utf8_lossy(&plan.stdout);
    assert!(
        shown.contains("setup: stand-in: http2 a fork of http2 3.3.6 (tarball) -> http2 3.3.6 from npm (the original is fetched from outside the registry), because 127.0.0.1 cannot be reached"),
        "{shown}"
    );
    assert!(!shown.contains("BLOCKED"), "{shown}");
    assert!(out.status.success(), "{}", text(&out));
    assert!(setup_log(&env).contains(&format!("install saw http2 from {NPM_HTTP2}")));
    let events = events_of(&out.stdout);
    let shown = of_kind(&events, "stand-ins");
    let http2 = shown[0]["stand_ins"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["package"] == "http2")
        .unwrap_or_else(|| panic!("{shown:?}"));
    assert_eq!(http2["when"], "when-unreachable");
    assert_eq!(http2["outcome"], "applied");
}

#[test]
fn status_reads_the_steps_an_upgrade_from_vouched_for_as_vouched_not_pending() {
    let env = Env::new("from_vouched");
    // `exits` (v1.0.0) without a data check: only the operator's word can say it is applied.
    let map = env.project.map_variant("no-check", |m| {
        m.replacen(
            "idempotent = \"guarded\"\n[[migrations.pending]]\ncollection = \"items\"\nfilter = { done = { \"$exists\" = false } }\n",
            "idempotent = \"guarded\"\nno_fingerprint = \"only the operator can tell\"\n",
            1,
        )
    });
    let map_arg = map.display().to_string();
    let status = || {
        env.command(&[
            "status",
            "--check",
            "--map",
            &map_arg,
            "--to",
            "1.0.0",
            "--mongo-uri",
            &env.uri,
        ])
        .output()
        .unwrap()
    };
    let before = status();
    assert_eq!(before.status.code(), Some(10), "{}", text(&before));

    let out = env.upgrade_with(&map, &["--from", "1.0.0", "--to", "1.0.0"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("recorded 1 step as applied, vouched by --from 1.0.0: exits"),
        "{}",
        text(&out)
    );
    assert!(env.project.executed().is_empty(), "nothing ran");
    let after = status();
    assert_eq!(after.status.code(), Some(0), "{}", text(&after));
    let shown = String::from_utf8_lossy(&after.stdout);
    let row = shown
        .lines()
        .find(|l| l.trim_start().starts_with("exits"))
        .unwrap_or_else(|| panic!("{shown}"));
    assert!(row.contains("marked-applied"), "{row}");
    assert!(row.contains("vouched by --from 1.0.0 on "), "{row}");
}
