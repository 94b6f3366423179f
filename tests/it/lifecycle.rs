//! A script's lifecycle in the map, on a fixture repository built here, through the real binary
//! against the test MongoDB and Redis:
//! - a script that leaves the tree (`removed_in`): `map check` accepts it, the plan runs it only
//!   where it exists, a removal before the introduction is a load error;
//! - a required stop (`required_stop`, `stub_from`): it runs at its own tag whatever the target
//!   (the later tags hold a stub that exits 1), the plan says why, and it needs `--approve`;
//! - an optional step (`optional`): shown in the plan, run only with `--include-optional <id>`;
//! - a script that exits 0 having failed (`exit_code_unreliable`): its data check fails it;
//! - the default target skips an unverified release, `--to` past the map is refused;
//! - a repository script the map lacks blocks plan, doctor and upgrade (exit 3); `map check`
//!   against a repository older than the map lists what it could not check and exits 0.

use std::path::{Path, PathBuf};
use std::process::Output;

use assert_cmd::Command;
use bson::{doc, Document};

use crate::support::{
    block_on, fresh_db_name, machine_node_version, mongo, node_modules, redis, GitFixture,
    BASE_TIME,
};

const DAY: i64 = 86_400;

/// A script that connects, runs `body` with `db` and `items`, logs `<id> <tag dir>` and exits.
fn script(id: &str, body: &str) -> String {
    format!(
        r#"const {{ MongoClient }} = require('mongodb');
const fs = require('fs'), path = require('path');
(async () => {{
  const client = new MongoClient(process.env.MONGO_URL);
  await client.connect();
  const db = client.db();
  const items = db.collection('items');
  fs.appendFileSync(process.env.FIXTURE_LOG, '{id} ' + path.basename(process.cwd()) + '\n');
  {body}
  await client.close();
  process.exit(0);
}})().catch((e) => {{ console.error(e); process.exit(1); }});
"#
    )
}

const STUB: &str = "console.error('This migration is a stub now: checkout the v1.1.0 tag and run it from there.');\nprocess.exit(1);\n";

/// A file's new content at a commit (`None`: removed).
type Change<'a> = (&'a str, Option<&'a str>);

/// The repository: v1.0.0 (001-old), v1.1.0 (+002-stop, 003-optional), v1.2.0 (001 removed,
/// 002 a stub, +004-silent), v1.3.0 (+005-unlisted). `upto` cuts it after that many tags.
fn build_repo(upto: usize) -> GitFixture {
    let repo = GitFixture::new();
    let old = script(
        "old",
        "await items.updateMany({ old: { $exists: false } }, { $set: { old: true } });",
    );
    let stop = script(
        "stop",
        "await items.updateMany({}, { $set: { stopped: true } });",
    );
    let optional = script("optional", "await items.deleteMany({ dup: true });");
    let silent = script(
        "silent",
        "try { if (!(await db.collection('control').findOne({ _id: 'ok' }))) throw new Error('control says no'); await items.updateMany({ silent: { $exists: false } }, { $set: { silent: true } }); } catch (e) { console.error('failed, carrying on:', e.message); }",
    );
    let unlisted = script(
        "unlisted",
        "await items.updateMany({}, { $set: { unlisted: true } });",
    );
    let steps: Vec<(&str, Vec<Change>)> = vec![
        (
            "v1.0.0",
            vec![
                (
                    "package.json",
                    Some("{ \"name\": \"lifecycle\", \"private\": true }\n"),
                ),
                ("migrations/001-old.js", Some(&old)),
            ],
        ),
        (
            "v1.1.0",
            vec![
                ("migrations/002-stop.js", Some(&stop)),
                ("migrations/003-optional.js", Some(&optional)),
            ],
        ),
        (
            "v1.2.0",
            vec![
                ("migrations/001-old.js", None),
                ("migrations/002-stop.js", Some(STUB)),
                ("migrations/004-silent.js", Some(&silent)),
            ],
        ),
        (
            "v1.3.0",
            vec![("migrations/005-unlisted.js", Some(&unlisted))],
        ),
    ];
    for (n, (tag, changes)) in steps.into_iter().take(upto).enumerate() {
        let time = BASE_TIME + n as i64 * DAY;
        let commit = repo.commit(&changes, time);
        repo.annotated_tag(tag, commit, time);
    }
    repo
}

fn map_text(log: &Path) -> String {
    let node = machine_node_version();
    format!(
        r#"schema = 1
[project]
name = "lifecycle"
migrations_dir = "migrations"
quiet_secs = 2

[eras.app]
cwd = "."
run = ["node", "{{script}}"]
[eras.app.env]
MONGO_URL = "{{mongo_uri}}"
NODE_PATH = "{node_modules}"
FIXTURE_LOG = "{log}"

[[releases]]
version = "1.0.0"
era = "app"
node = "{node}"
[[releases]]
version = "1.1.0"
era = "app"
node = "{node}"
[[releases]]
version = "1.2.0"
era = "app"
node = "{node}"
[[releases]]
version = "1.3.0"
era = "app"
node = "{node}"

[[migrations]]
id = "old"
title = "Leaves the tree at v1.2.0"
introduced_in = "1.0.0"
removed_in = "1.2.0"
script = "migrations/001-old.js"
run = "file"
exits = "yes"
idempotent = "yes"
[[migrations.pending]]
collection = "items"
filter = {{ old = {{ "$exists" = false }} }}

[[migrations]]
id = "stop"
title = "Works only at its own tag"
introduced_in = "1.1.0"
script = "migrations/002-stop.js"
run = "file"
exits = "yes"
idempotent = "no"
required_stop = "from v1.2.0 the file is a stub that exits 1"
stub_from = "1.2.0"
no_fingerprint = "nothing in the data tells"

[[migrations]]
id = "optional"
title = "Deletes duplicates when asked"
introduced_in = "1.1.0"
script = "migrations/003-optional.js"
run = "file"
exits = "yes"
idempotent = "yes"
destructive = true
optional = "it deletes documents that may be valid"
[[migrations.pending]]
collection = "items"
filter = {{ dup = true }}

[[migrations]]
id = "silent"
title = "Exits 0 even when it failed"
introduced_in = "1.2.0"
script = "migrations/004-silent.js"
run = "file"
exits = "yes"
idempotent = "guarded"
exit_code_unreliable = true
[[migrations.pending]]
collection = "items"
filter = {{ silent = {{ "$exists" = false }} }}

[[migrations]]
id = "unlisted"
title = "The newest script"
introduced_in = "1.3.0"
script = "migrations/005-unlisted.js"
run = "file"
exits = "yes"
idempotent = "yes"
[[migrations.pending]]
collection = "items"
filter = {{ unlisted = {{ "$exists" = false }} }}
"#,
        node_modules = node_modules().display(),
        log = log.display(),
    )
}

struct Env {
    repo: GitFixture,
    work: tempfile::TempDir,
    map: PathBuf,
    log: PathBuf,
    db: String,
    uri: String,
}

impl Env {
    fn new(test: &str) -> Env {
        let work = tempfile::tempdir().unwrap();
        let log = work.path().join("executed.log");
        let map = work.path().join("map.toml");
        std::fs::write(&map, map_text(&log)).unwrap();
        let db = fresh_db_name(test);
        let env = Env {
            repo: build_repo(4),
            uri: mongo().uri_for_db(&db),
            db,
            work,
            map,
            log,
        };
        env.insert(
            "items",
            vec![
                doc! { "_id": 1, "old": true },
                doc! { "_id": 2, "old": true, "dup": true },
            ],
        );
        env
    }

    fn insert(&self, coll: &str, docs: Vec<Document>) {
        let (uri, db, coll) = (self.uri.clone(), self.db.clone(), coll.to_string());
        block_on(async move {
            let client = mongodb::Client::with_uri_str(&uri).await.unwrap();
            client
                .database(&db)
                .collection::<Document>(&coll)
                .insert_many(docs)
                .await
                .unwrap();
        });
    }

    fn items(&self) -> Vec<Document> {
        let (uri, db) = (self.uri.clone(), self.db.clone());
        block_on(async move {
            use futures_util::TryStreamExt;
            let client = mongodb::Client::with_uri_str(&uri).await.unwrap();
            client
                .database(&db)
                .collection::<Document>("items")
                .find(doc! {})
                .await
                .unwrap()
                .try_collect()
                .await
                .unwrap()
        })
    }

    fn journal_status(&self, id: &str) -> Option<String> {
        let (uri, db, id) = (self.uri.clone(), self.db.clone(), id.to_string());
        block_on(async move {
            let client = mongodb::Client::with_uri_str(&uri).await.unwrap();
            client
                .database(&db)
                .collection::<Document>("upstep_journal")
                .find_one(doc! { "_id": id })
                .await
                .unwrap()
                .and_then(|d| d.get_str("status").ok().map(String::from))
        })
    }

    /// `(id, tag)` of each script run, in order.
    fn executed(&self) -> Vec<(String, String)> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split_once(' '))
            .map(|(id, tag)| (id.to_string(), tag.to_string()))
            .collect()
    }

    fn variant(&self, name: &str, edit: impl Fn(&str) -> String) -> PathBuf {
        let text = std::fs::read_to_string(&self.map).unwrap();
        let path = self.work.path().join(format!("{name}.toml"));
        std::fs::write(&path, edit(&text)).unwrap();
        path
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::cargo_bin("upstep")
            .unwrap()
            .env("NO_COLOR", "1")
            .env("UPSTEP_STATE_DIR", self.work.path().join("state"))
            .env("UPSTEP_CACHE_DIR", self.work.path().join("cache"))
            .env_remove("MONGO_URL")
            .env_remove("UPSTEP_MONGO_URI")
            .env_remove("UPSTEP_MAP")
            .env_remove("UPSTEP_REPO")
            .current_dir(self.work.path())
            .args(args)
            .timeout(std::time::Duration::from_secs(180))
            .output()
            .unwrap()
    }

    fn repo_arg(&self) -> String {
        self.repo.path().display().to_string()
    }

    /// `upstep upgrade` with this map and repository, no backup, plus `extra`.
    fn upgrade(&self, map: &Path, extra: &[&str]) -> Output {
        let (map, repo) = (map.display().to_string(), self.repo_arg());
        let mut args = vec![
            "upgrade",
            "--map",
            &map,
            "--repo",
            &repo,
            "--mongo-uri",
            &self.uri,
            "--redis-url",
            &redis().url,
            "--no-backup",
            "--grace-secs",
            "2",
        ];
        args.extend_from_slice(extra);
        self.run(&args)
    }
}

fn text(out: &Output) -> String {
    format!(
        "--- code {:?}\n--- stdout\n{}\n--- stderr\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn a_removed_script_passes_map_check_and_runs_only_at_a_tag_that_holds_it() {
    let env = Env::new("lifecycle_removed");
    let map = env.map.display().to_string();
    let repo = env.repo_arg();
    let out = env.run(&["map", "check", "--map", &map, "--repo", &repo]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("agrees"),
        "{}",
        text(&out)
    );

    // Without removed_in, the removal is a disagreement whose fix names the field.
    let unrecorded = env.variant("unrecorded", |t| t.replace("removed_in = \"1.2.0\"\n", ""));
    let out = env.run(&[
        "map",
        "check",
        "--map",
        unrecorded.to_str().unwrap(),
        "--repo",
        &repo,
    ]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(
        text(&out).contains("removed after 1.1.0") && text(&out).contains("set removed_in"),
        "{}",
        text(&out)
    );
    // A wrong release is named with the right one.
    let wrong = env.variant("wrong", |t| {
        t.replace("removed_in = \"1.2.0\"", "removed_in = \"1.3.0\"")
    });
    let out = env.run(&[
        "map",
        "check",
        "--map",
        wrong.to_str().unwrap(),
        "--repo",
        &repo,
    ]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(
        text(&out).contains("set removed_in = \"1.2.0\""),
        "{}",
        text(&out)
    );

    // The plan through the removal runs it at v1.0.0, where the file is.
    let out = env.run(&[
        "plan", "--json", "--map", &map, "--repo", &repo, "--from", "0.9.0", "--to", "1.3.0",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let group = plan["groups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| {
            g["steps"]
                .as_array()
                .unwrap()
                .iter()
                .any(|s| s["id"] == "old")
        })
        .unwrap();
    assert_eq!(group["git_ref"], "v1.0.0");
    assert_eq!(group["steps"][0]["script_at_ref"], true);
}

#[test]
fn a_map_that_marks_a_script_removed_before_it_was_introduced_is_a_load_error() {
    let env = Env::new("lifecycle_removed_early");
    let early = env.variant("early", |t| {
        t.replace("removed_in = \"1.2.0\"", "removed_in = \"1.0.0\"")
    });
    let out = env.run(&["map", "validate", early.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("removed in 1.0.0, before (or when) it was introduced in 1.0.0"),
        "{stderr}"
    );
    assert!(
        stderr
            .contains("set removed_in to the first release whose tree no longer holds the script"),
        "{stderr}"
    );
    // A run_at at or after the removal is refused the same way.
    let late = env.variant("late", |t| {
        t.replace(
            "removed_in = \"1.2.0\"\n",
            "removed_in = \"1.2.0\"\nrun_at = \"1.3.0\"\n",
        )
    });
    let out = env.run(&["map", "validate", late.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(
        text(&out).contains("runs the script at 1.3.0, but it is removed in 1.2.0"),
        "{}",
        text(&out)
    );
}

#[test]
fn a_required_stop_runs_at_its_own_tag_whatever_the_target_and_only_once_approved() {
    let env = Env::new("lifecycle_stop");
    env.insert("control", vec![doc! { "_id": "ok" }]);
    let map = env.map.display().to_string();

    // The plan says where and why.
    let out = env.run(&["plan", "--map", &map, "--from", "1.0.0", "--to", "1.3.0"]);
    assert!(out.status.success(), "{}", text(&out));
    let plan = String::from_utf8_lossy(&out.stdout);
    assert!(plan.contains("required stop: runs at v1.1.0 whatever the target (from v1.2.0 the file is a stub that exits 1)"), "{plan}");

    // --yes does not approve it: nothing runs.
    let out = env.upgrade(&env.map, &["--from", "1.0.0", "--to", "1.3.0", "--yes"]);
    assert_eq!(out.status.code(), Some(9), "{}", text(&out));
    assert!(text(&out).contains("--approve stop"), "{}", text(&out));
    assert!(env.executed().is_empty(), "{:?}", env.executed());

    // Approved, it runs at v1.1.0 (the later tags only hold the stub); the rest follows.
    let out = env.upgrade(
        &env.map,
        &[
            "--from",
            "1.0.0",
            "--to",
            "1.3.0",
            "--yes",
            "--approve",
            "stop",
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    let ran = env.executed();
    assert_eq!(
        ran,
        [
            ("stop", "v1.1.0"),
            ("silent", "v1.2.0"),
            ("unlisted", "v1.3.0")
        ]
        .map(|(a, b)| (a.to_string(), b.to_string())),
        "{}",
        text(&out)
    );
    assert!(env
        .items()
        .iter()
        .all(|d| d.get_bool("stopped") == Ok(true)));
    assert_eq!(env.journal_status("stop").as_deref(), Some("succeeded"));
}

#[test]
fn an_optional_step_is_shown_skipped_unless_asked_for_and_an_unknown_id_is_refused() {
    let env = Env::new("lifecycle_optional");
    env.insert("control", vec![doc! { "_id": "ok" }]);
    let map = env.map.display().to_string();
    let out = env.run(&["plan", "--map", &map, "--from", "1.0.0", "--to", "1.1.0"]);
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .contains("runs only when asked for: --include-optional optional"),
        "{}",
        text(&out)
    );

    // A typo is one clear error, before anything runs.
    let out = env.upgrade(
        &env.map,
        &[
            "--from",
            "1.0.0",
            "--to",
            "1.1.0",
            "--yes",
            "--approve",
            "stop",
            "--include-optional",
            "optionl",
        ],
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--include-optional optionl")
            && stderr.contains("name one of the optional steps: optional"),
        "{stderr}"
    );
    assert!(env.executed().is_empty());

    // Not asked for: skipped, its documents untouched, no journal entry, status says why.
    let out = env.upgrade(
        &env.map,
        &[
            "--from",
            "1.0.0",
            "--to",
            "1.1.0",
            "--yes",
            "--approve",
            "stop",
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(!env.executed().iter().any(|(id, _)| id == "optional"));
    assert!(env.items().iter().any(|d| d.get_bool("dup") == Ok(true)));
    assert_eq!(env.journal_status("optional"), None);
    let out = env.run(&[
        "status",
        "--map",
        &map,
        "--mongo-uri",
        &env.uri,
        "--to",
        "1.1.0",
        "--check",
    ]);
    assert!(
        out.status.success(),
        "an optional step left out is not pending: {}",
        text(&out)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("optional (left out)"),
        "{}",
        text(&out)
    );

    // doctor checks what the run would run: the optional step only when asked for.
    let doctor_steps = |extra: &[&str]| -> Vec<String> {
        let mut args = vec![
            "doctor",
            "--map",
            &map,
            "--mongo-uri",
            &env.uri,
            "--to",
            "1.1.0",
            "--json",
        ];
        args.extend_from_slice(extra);
        let out = env.run(&args);
        let json: serde_json::Value =
            serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&out)));
        json["plan"]["steps"]
            .as_array()
            .unwrap_or_else(|| panic!("{json}"))
            .iter()
            .map(|s| s["id"].as_str().unwrap().to_string())
            .collect()
    };
    let left_out = doctor_steps(&[]);
    assert!(!left_out.iter().any(|id| id == "optional"), "{left_out:?}");
    let asked = doctor_steps(&["--include-optional", "optional"]);
    assert!(asked.iter().any(|id| id == "optional"), "{asked:?}");

    // Asked for by id, it runs (destructive: --yes confirms it).
    let out = env.upgrade(
        &env.map,
        &[
            "--from",
            "1.0.0",
            "--to",
            "1.1.0",
            "--yes",
            "--include-optional",
            "optional",
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(env
        .executed()
        .iter()
        .any(|(id, tag)| id == "optional" && tag == "v1.1.0"));
    assert!(!env.items().iter().any(|d| d.get_bool("dup") == Ok(true)));
    assert_eq!(env.journal_status("optional").as_deref(), Some("succeeded"));
}

#[test]
fn a_script_that_exits_0_having_failed_is_failed_by_its_data_check() {
    let env = Env::new("lifecycle_silent");
    let map = env.map.display().to_string();
    let out = env.run(&["plan", "--map", &map, "--from", "1.1.0", "--to", "1.2.0"]);
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .contains("exits 0 even when it failed: only its data check proves it ran"),
        "{}",
        text(&out)
    );
    // No control document: the script catches its error and exits 0.
    let out = env.upgrade(&env.map, &["--from", "1.1.0", "--to", "1.2.0", "--yes"]);
    assert_eq!(out.status.code(), Some(8), "{}", text(&out));
    assert!(text(&out).contains("did not migrate"), "{}", text(&out));
    assert_eq!(
        env.executed(),
        [("silent".to_string(), "v1.2.0".to_string())]
    );
    assert_eq!(env.journal_status("silent").as_deref(), Some("failed"));

    // Such an entry must have a data check.
    let unchecked = env.variant("unchecked", |t| {
        t.replace(
            "exit_code_unreliable = true\n[[migrations.pending]]\ncollection = \"items\"\nfilter = { silent = { \"$exists\" = false } }",
            "exit_code_unreliable = true\nno_fingerprint = \"none\"",
        )
    });
    let out = env.run(&["map", "validate", unchecked.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(
        text(&out).contains("nothing would prove it ran"),
        "{}",
        text(&out)
    );
}

#[test]
fn the_default_target_skips_an_unverified_release_and_to_past_the_map_is_refused() {
    let env = Env::new("lifecycle_target");
    let unverified = env.variant("unverified", |t| {
        t.replace(
            "version = \"1.3.0\"\nera = \"app\"\n",
            "version = \"1.3.0\"\nera = \"app\"\nverified = false\n",
        )
    });
    let map = unverified.display().to_string();
    let plan = |extra: &[&str]| {
        let mut args = vec!["plan", "--json", "--map", &map, "--from", "1.1.0"];
        args.extend_from_slice(extra);
        env.run(&args)
    };
    let out = plan(&[]);
    assert!(out.status.success(), "{}", text(&out));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["to"], "v1.2.0");
    let out = plan(&["--to", "1.3.0"]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["to"], "v1.3.0");
    assert!(json["groups"]
        .as_array()
        .unwrap()
        .iter()
        .any(|g| g["git_ref"] == "v1.3.0" && g["verified"] == false));
    let out = plan(&["--to", "1.4.0"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("newer than every release the map knows (newest: v1.3.0)")
            && text(&out).contains("fix:"),
        "{}",
        text(&out)
    );
}

#[test]
fn a_repository_script_the_map_lacks_blocks_plan_doctor_and_upgrade() {
    let env = Env::new("lifecycle_unmapped");
    let lacking = env.variant("lacking", |t| {
        let start = t.find("[[migrations]]\nid = \"unlisted\"").unwrap();
        t[..start].to_string()
    });
    let map = lacking.display().to_string();
    let repo = env.repo_arg();
    let blocked = |out: &Output| {
        assert_eq!(out.status.code(), Some(3), "{}", text(out));
        let all = text(out);
        assert!(
            all.contains("migrations/005-unlisted.js is in the repository since 1.3.0"),
            "{all}"
        );
        assert!(
            all.contains("upstep map generate --repo") && all.contains("--map"),
            "{all}"
        );
    };
    blocked(&env.run(&[
        "plan", "--map", &map, "--repo", &repo, "--from", "1.0.0", "--to", "1.3.0",
    ]));
    blocked(&env.run(&[
        "doctor",
        "--map",
        &map,
        "--repo",
        &repo,
        "--from",
        "1.0.0",
        "--to",
        "1.3.0",
        "--mongo-uri",
        &env.uri,
    ]));
    blocked(&env.upgrade(
        &lacking,
        &[
            "--from",
            "1.0.0",
            "--to",
            "1.3.0",
            "--yes",
            "--approve",
            "stop",
        ],
    ));
    assert!(
        env.executed().is_empty(),
        "nothing ran: {:?}",
        env.executed()
    );
    // Outside the range, or without --repo, nothing blocks.
    let out = env.run(&[
        "plan", "--map", &map, "--repo", &repo, "--from", "1.0.0", "--to", "1.2.0",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let out = env.run(&["plan", "--map", &map, "--from", "1.0.0", "--to", "1.3.0"]);
    assert!(out.status.success(), "{}", text(&out));
}

#[test]
fn map_check_against_an_older_repository_lists_what_it_could_not_check() {
    let env = Env::new("lifecycle_older");
    let older = build_repo(2);
    let older_path = older.path().display().to_string();
    let map = env.map.display().to_string();
    let out = env.run(&["map", "check", "--map", &map, "--repo", &older_path]);
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "3 entries could not be checked",
        "migration old: removed_in 1.2.0 is newer than the repository's newest release tag (1.1.0)",
        "migration silent: introduced_in 1.2.0 is newer",
        "migration unlisted: introduced_in 1.3.0 is newer",
        "(0 problems; 3 unchecked)",
    ] {
        assert!(stdout.contains(needle), "{needle}: {stdout}");
    }
    let out = env.run(&[
        "map",
        "check",
        "--json",
        "--map",
        &map,
        "--repo",
        &older_path,
    ]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["unchecked"].as_array().unwrap().len(), 3);
    assert_eq!(json["disagreements"].as_array().unwrap().len(), 0);

    // A real disagreement still fails.
    let wrong = env.variant("wrong-intro", |t| {
        t.replace(
            "introduced_in = \"1.1.0\"\nscript = \"migrations/002-stop.js\"",
            "introduced_in = \"1.0.0\"\nscript = \"migrations/002-stop.js\"",
        )
    });
    let out = env.run(&[
        "map",
        "check",
        "--map",
        wrong.to_str().unwrap(),
        "--repo",
        &older_path,
    ]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(
        text(&out).contains("first ships in release 1.1.0"),
        "{}",
        text(&out)
    );
}
