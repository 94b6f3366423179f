//! Projects whose migrations run through a real migration tool from npm (MikroORM 6.6.16 and
//! migrate-mongo 14): command steps, the tool's journal as the applied state, rollback, and the
//! tool's own view of what is pending, against the test MongoDB, through the real binary.

use std::path::Path;
use std::process::Output;

use assert_cmd::Command;
use bson::{doc, Document};

use crate::support::{fresh_db_name, mongo, Tool, ToolProject};
use crate::upgrade::text;

struct Env {
    project: ToolProject,
    db: String,
    uri: String,
    state: tempfile::TempDir,
    cache: tempfile::TempDir,
}

impl Env {
    fn new(tool: Tool, test: &str) -> Env {
        let db = fresh_db_name(test);
        let env = Env {
            project: ToolProject::new(tool),
            uri: mongo().uri_for_db(&db),
            db,
            state: tempfile::tempdir().unwrap(),
            cache: tempfile::tempdir().unwrap(),
        };
        env.insert("orders", vec![doc! { "_id": 1 }, doc! { "_id": 2 }]);
        env.insert("customers", vec![doc! { "_id": 1 }]);
        env
    }

    fn insert(&self, coll: &str, docs: Vec<Document>) {
        let (uri, db, coll) = (self.uri.clone(), self.db.clone(), coll.to_string());
        crate::support::block_on(async move {
            let client = mongodb::Client::with_uri_str(&uri).await.unwrap();
            client
                .database(&db)
                .collection::<Document>(&coll)
                .insert_many(docs)
                .await
                .unwrap();
        });
    }

    fn delete(&self, coll: &str, filter: Document) {
        let (uri, db, coll) = (self.uri.clone(), self.db.clone(), coll.to_string());
        crate::support::block_on(async move {
            let client = mongodb::Client::with_uri_str(&uri).await.unwrap();
            client
                .database(&db)
                .collection::<Document>(&coll)
                .delete_many(filter)
                .await
                .unwrap();
        });
    }

    fn find(&self, coll: &str) -> Vec<Document> {
        let (uri, db, coll) = (self.uri.clone(), self.db.clone(), coll.to_string());
        crate::support::block_on(async move {
            use futures_util::TryStreamExt;
            let client = mongodb::Client::with_uri_str(&uri).await.unwrap();
            let cursor = client
                .database(&db)
                .collection::<Document>(&coll)
                .find(doc! {})
                .await
                .unwrap();
            cursor.try_collect().await.unwrap()
        })
    }

    fn journal_entry(&self, id: &str) -> Option<Document> {
        self.find("upstep_journal")
            .into_iter()
            .find(|d| d.get_str("_id") == Ok(id))
    }

    fn status_of(&self, id: &str) -> String {
        self.journal_entry(id)
            .and_then(|d| d.get_str("status").ok().map(String::from))
            .unwrap_or_else(|| "-".into())
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::cargo_bin("upstep")
            .unwrap()
            .env("NO_COLOR", "1")
            .env("UPSTEP_STATE_DIR", self.state.path())
            .env("UPSTEP_CACHE_DIR", self.cache.path())
            .env_remove("MONGO_URL")
            .env_remove("UPSTEP_MONGO_URI")
            .current_dir(self.state.path())
            .args(args)
            .timeout(std::time::Duration::from_secs(300))
            .output()
            .unwrap()
    }

    fn with_map(&self, command: &str, map: &Path, extra: &[&str]) -> Output {
        let map = map.display().to_string();
        let repo = self.project.repo.path().display().to_string();
        let mut args = vec![command, "--map", &map, "--mongo-uri", &self.uri];
        if !matches!(command, "status" | "plan" | "doctor") {
            args.extend(["--repo", &repo, "--lease-secs", "5", "--grace-secs", "2"]);
        }
        if command == "upgrade" || command == "rollback" {
            args.push("--no-backup");
        }
        args.extend(extra);
        self.run(&args)
    }

    fn upgrade(&self, extra: &[&str]) -> Output {
        self.with_map("upgrade", &self.project.map_path, extra)
    }

    fn rollback(&self, to: &str, extra: &[&str]) -> Output {
        let mut args = vec!["--to", to];
        args.extend(extra);
        self.with_map("rollback", &self.project.map_path, &args)
    }

    /// The ids `status --json` counts as not applied, as the tool names them.
    fn upstep_pending(&self, to: &str) -> Vec<String> {
        let out = self.with_map("status", &self.project.map_path, &["--json", "--to", to]);
        let report: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("status --json: {e}\n{}", text(&out)));
        let mut names: Vec<String> = report["migrations"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| {
                let s = r["state"].as_str().unwrap_or_default();
                !(s.starts_with("succeeded")
                    || s.starts_with("marked-applied")
                    || s.starts_with("applied"))
            })
            .map(|r| self.project.name_of(r["id"].as_str().unwrap()))
            .collect();
        names.sort();
        names
    }

    /// `status --check` agrees with the tool's own status at `tag`.
    fn assert_status_agrees(&self, tag: &str, version: &str, expected_pending: usize) {
        let tool = self.project.tool_pending(tag, &self.uri);
        let ours = self.upstep_pending(version);
        assert_eq!(
            ours, tool,
            "upstep's pending list against the tool's at {tag}"
        );
        assert_eq!(tool.len(), expected_pending, "{tool:?}");
        let check = self.with_map(
            "status",
            &self.project.map_path,
            &["--check", "--to", version],
        );
        let code = if expected_pending == 0 { 0 } else { 10 };
        assert_eq!(check.status.code(), Some(code), "{}", text(&check));
    }

    fn ups(&self) -> Vec<String> {
        self.project
            .executed()
            .into_iter()
            .filter(|(_, d)| d == "up")
            .map(|(n, _)| n)
            .collect()
    }

    fn downs(&self) -> Vec<String> {
        self.project
            .executed()
            .into_iter()
            .filter(|(_, d)| d == "down")
            .map(|(n, _)| n)
            .collect()
    }

    fn names(&self, ids: &[&str]) -> Vec<String> {
        ids.iter().map(|id| self.project.name_of(id)).collect()
    }
}

const ALL: [&str; 4] = [
    "order-status",
    "order-total",
    "customer-tier",
    "order-archived",
];

/// A full upgrade across the three tags, `status --check` agreeing with the tool at every
/// stage, then a rollback to the first release and an upgrade back.
fn upgrade_agree_and_roll_back(tool: Tool, test: &str) {
    let env = Env::new(tool, test);
    env.assert_status_agrees("v1.2.0", "1.2.0", 4);

    let out = env.upgrade(&["--to", "1.1.0"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(env.ups(), env.names(&ALL[..3]));
    env.assert_status_agrees("v1.2.0", "1.2.0", 1);

    let out = env.upgrade(&[]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        env.ups(),
        env.names(&ALL),
        "each migration ran once, in release order"
    );
    env.assert_status_agrees("v1.2.0", "1.2.0", 0);
    let orders = env.find("orders");
    assert!(
        orders.iter().all(|o| o.contains_key("status")
            && o.contains_key("total")
            && o.contains_key("archived")),
        "{orders:?}"
    );

    // The rollback is shown first, then run: newest first, each at its own tag.
    let plan = env.with_map(
        "plan",
        &env.project.map_path,
        &["--rollback", "--to", "1.0.0"],
    );
    assert!(plan.status.success(), "{}", text(&plan));
    let shown = String::from_utf8_lossy(&plan.stdout);
    assert!(shown.contains("3 step(s) to undo"), "{shown}");
    let out = env.rollback("1.0.0", &[]);
    assert!(out.status.success(), "{}", text(&out));
    let mut undone = env.names(&ALL[1..]);
    undone.reverse();
    assert_eq!(env.downs(), undone, "undone newest first");
    for id in &ALL[1..] {
        let entry = env.journal_entry(id).unwrap();
        assert_eq!(entry.get_str("status"), Ok("rolled-back"), "{entry}");
        assert_eq!(entry.get_str("direction"), Ok("down"));
        assert_eq!(
            entry.get_i32("schema"),
            Ok(2),
            "a rolled-back entry is schema 2"
        );
    }
    assert_eq!(env.status_of("order-status"), "succeeded");
    assert_eq!(
        env.journal_entry("order-status").unwrap().get_i32("schema"),
        Ok(1)
    );
    env.assert_status_agrees("v1.2.0", "1.2.0", 3);
    let orders = env.find("orders");
    assert!(
        orders
            .iter()
            .all(|o| o.contains_key("status") && !o.contains_key("total")),
        "{orders:?}"
    );

    // A second rollback finds nothing to undo; an upgrade runs the undone steps again.
    let out = env.rollback("1.0.0", &[]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(env.downs().len(), 3);
    let out = env.upgrade(&[]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(env.ups().len(), 7, "{:?}", env.ups());
    env.assert_status_agrees("v1.2.0", "1.2.0", 0);
    for id in &ALL[1..] {
        let entry = env.journal_entry(id).unwrap();
        let status = entry.get_str("status").unwrap();
        assert!(
            status == "succeeded" || status == "marked-applied",
            "{entry}"
        );
        assert!(entry.get("direction").is_none(), "{entry}");
        assert_eq!(entry.get_i32("schema"), Ok(1), "{entry}");
    }
}

#[test]
fn mikro_orm_upgrade_status_and_rollback_agree_with_the_tool() {
    upgrade_agree_and_roll_back(Tool::MikroOrm, "mikro_full");
}

#[test]
fn migrate_mongo_upgrade_status_and_rollback_agree_with_the_tool() {
    upgrade_agree_and_roll_back(Tool::MigrateMongo, "mm_full");
}

/// A migration fails mid-way: later ones do not run; the resume needs --retry and runs the
/// rest once.
fn failure_and_resume(tool: Tool, test: &str) {
    let env = Env::new(tool, test);
    env.insert("control", vec![doc! { "_id": "fail" }]);
    let out = env.upgrade(&[]);
    assert_eq!(out.status.code(), Some(8), "{}", text(&out));
    assert_eq!(env.status_of("order-status"), "succeeded");
    assert_eq!(env.status_of("order-total"), "failed", "{}", text(&out));
    assert_eq!(
        env.status_of("customer-tier"),
        "-",
        "nothing after the failure ran"
    );
    assert_eq!(env.status_of("order-archived"), "-");
    assert!(!env.ups().contains(&env.project.name_of("order-archived")));
    env.assert_status_agrees("v1.2.0", "1.2.0", 3);

    env.delete("control", doc! {});
    let out = env.upgrade(&[]);
    assert_eq!(
        out.status.code(),
        Some(9),
        "a failed step needs --retry: {}",
        text(&out)
    );
    let out = env.upgrade(&["--retry"]);
    assert!(out.status.success(), "{}", text(&out));
    env.assert_status_agrees("v1.2.0", "1.2.0", 0);
    let ups = env.ups();
    for id in ["order-status", "customer-tier", "order-archived"] {
        let name = env.project.name_of(id);
        assert_eq!(
            ups.iter().filter(|n| **n == name).count(),
            1,
            "{name} ran once: {ups:?}"
        );
    }
}

#[test]
fn mikro_orm_failure_mid_way_and_resume() {
    failure_and_resume(Tool::MikroOrm, "mikro_fail");
}

#[test]
fn migrate_mongo_failure_mid_way_and_resume() {
    failure_and_resume(Tool::MigrateMongo, "mm_fail");
}

/// The tool already applied the first release's migrations by hand: upstep reads its journal
/// and does not run them again.
fn applied_by_hand(tool: Tool, test: &str) {
    let env = Env::new(tool, test);
    let by_hand = match tool {
        Tool::MikroOrm => env.project.run_tool(
            "v1.1.0",
            &env.uri,
            &[
                "migration:up",
                "--only",
                &env.project.name_of("order-status"),
            ],
        ),
        Tool::MigrateMongo => env.project.run_tool("v1.0.0", &env.uri, &["up"]),
    };
    assert!(by_hand.status.success(), "{}", text(&by_hand));
    assert_eq!(env.ups(), env.names(&ALL[..1]));
    let detect = env.with_map(
        "plan",
        &env.project.map_path,
        &["--detect", "--from", "1.0.0"],
    );
    assert!(detect.status.success(), "{}", text(&detect));
    let out = env.upgrade(&[]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        env.ups(),
        env.names(&ALL),
        "the hand-applied migration ran once, by hand"
    );
    assert_eq!(env.status_of("order-status"), "-", "upstep never ran it");
    env.assert_status_agrees("v1.2.0", "1.2.0", 0);
}

#[test]
fn mikro_orm_migrations_applied_by_hand_are_not_run_again() {
    applied_by_hand(Tool::MikroOrm, "mikro_hand");
}

#[test]
fn migrate_mongo_migrations_applied_by_hand_are_not_run_again() {
    applied_by_hand(Tool::MigrateMongo, "mm_hand");
}

#[test]
fn a_command_whose_tool_is_not_installed_stops_before_the_tag_runs_anything() {
    let env = Env::new(Tool::MikroOrm, "mikro_no_tool");
    let map = env.project.map_variant("no-tool", |t| {
        t.replacen(
            "\"mikro-orm\", \"migration:up\"",
            "\"mikro-orm-cli\", \"migration:up\"",
            1,
        )
    });
    let out = env.with_map("upgrade", &map, &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(5), "{}", text(&out));
    assert!(
        stderr.contains("mikro-orm-cli is not installed"),
        "{stderr}"
    );
    assert!(stderr.contains("fix:"), "{stderr}");
    assert!(env.project.executed().is_empty());
    assert!(
        env.journal_entry("order-status").is_none(),
        "no step was started"
    );
}

#[test]
fn a_migration_the_tool_does_not_know_is_refused_before_anything_runs() {
    let env = Env::new(Tool::MikroOrm, "mikro_unknown");
    // The real migration stays mapped (the map must cover the repository's scripts); one more
    // entry names a migration file no tag ships.
    let map = env.project.map_variant("unknown", |t| {
        let start = t
            .find("[[migrations]]\nid = \"customer-tier\"")
            .expect("customer-tier's entry");
        let end = t[start + 1..]
            .find("[[migrations]]")
            .map_or(t.len(), |e| start + 1 + e);
        let extra = t[start..end]
            .replace("\"customer-tier\"", "\"customer-tier-fix\"")
            .replace("Migration20240202000000.js", "Migration20240202999999.js");
        format!("{t}\n{extra}")
    });
    let out = env.with_map("upgrade", &map, &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(5), "{}", text(&out));
    assert!(
        stderr.contains("no migration Migration20240202999999 at v1.1.0"),
        "{stderr}"
    );
    assert!(stderr.contains("fix:"), "{stderr}");
    assert!(env.project.executed().is_empty(), "nothing half-run");
    assert!(env.find("upstep_journal").is_empty());

    // A map that names the wrong file instead of the real one leaves the real one unmapped:
    // refused earlier, as a map that does not cover the repository (exit 3), nothing run.
    let renamed = env.project.map_variant("renamed", |t| {
        t.replace("Migration20240202000000.js", "Migration20240202999999.js")
    });
    let out = env.with_map("upgrade", &renamed, &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(
        stderr.contains("Migration20240202000000.js is in the repository since 1.1.0"),
        "{stderr}"
    );
    assert!(env.project.executed().is_empty(), "nothing half-run");
    assert!(env.find("upstep_journal").is_empty());
}

#[test]
fn a_rollback_through_a_step_without_a_down_is_refused_naming_it() {
    let env = Env::new(Tool::MikroOrm, "mikro_no_down");
    let out = env.upgrade(&[]);
    assert!(out.status.success(), "{}", text(&out));
    // The era's down goes; two migrations declare their own, customer-tier none.
    let map = env.project.map_variant("no-down", |t| {
        let down =
            r#"down = ["npx", "--no-install", "mikro-orm", "migration:down", "--only", "{name}"]"#;
        t.replace(&format!("{down}\n"), "")
            .replace(
                "id = \"order-total\"\n",
                &format!("id = \"order-total\"\n{down}\n"),
            )
            .replace(
                "id = \"order-archived\"\n",
                &format!("id = \"order-archived\"\n{down}\n"),
            )
    });
    let args = ["--to", "1.0.0"];
    let out = env.with_map("rollback", &map, &args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(9), "{}", text(&out));
    assert!(stderr.contains("customer-tier (at v1.1.0)"), "{stderr}");
    assert!(stderr.contains("--skip-missing-down"), "{stderr}");
    assert!(env.downs().is_empty(), "nothing was undone");
    let plan = env.with_map("plan", &map, &["--rollback", "--to", "1.0.0"]);
    assert_eq!(plan.status.code(), Some(9), "{}", text(&plan));
    assert!(String::from_utf8_lossy(&plan.stdout).contains("no down"));
    let dry = env.with_map("rollback", &map, &["--to", "1.0.0", "--dry-run"]);
    assert_eq!(
        dry.status.code(),
        Some(9),
        "--dry-run decides like plan --rollback: {}",
        text(&dry)
    );
    let forced = env.with_map("rollback", &map, &["--to", "1.0.0", "--force"]);
    assert_eq!(forced.status.code(), Some(2), "{}", text(&forced));
    assert!(String::from_utf8_lossy(&forced.stderr).contains("--force only applies to upgrade"));
    assert!(env.downs().is_empty());

    let out = env.with_map("rollback", &map, &["--to", "1.0.0", "--skip-missing-down"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(env.downs(), env.names(&["order-archived", "order-total"]));
    assert_eq!(env.status_of("customer-tier"), "succeeded", "left applied");
}

/// A home-grown runner's `_migrations` rows: `succeeded` is applied, `failed` is failed (the
/// upgrade stops on it until --retry), no row is pending even though the migration's own
/// collection is empty or absent (never "not needed").
#[test]
fn status_rows_read_succeeded_failed_and_never_ran() {
    let db = fresh_db_name("status_rows");
    let uri = mongo().uri_for_db(&db);
    let state = tempfile::tempdir().unwrap();
    let node = crate::support::machine_node_version();
    let mut map = format!(
        "schema = 1\n[project]\nname = \"home\"\nmigrations_dir = \"migrations\"\n\
         [eras.app]\ncwd = \".\"\nrun = [\"node\", \"{{script}}\"]\n\
         [[releases]]\nversion = \"1.0.0\"\nera = \"app\"\nnode = \"{node}\"\n"
    );
    for id in ["done-one", "failed-one", "never-ran"] {
        map.push_str(&format!(
            "[[migrations]]\nid = \"{id}\"\ntitle = \"{id}\"\nintroduced_in = \"1.0.0\"\n\
             script = \"migrations/{id}.js\"\nrun = \"file\"\nexits = \"yes\"\nidempotent = \"yes\"\n\
             [[migrations.pending]]\ncollection = \"_migrations\"\njournal = \"status-rows\"\n"
        ));
    }
    let map_path = state.path().join("map.toml");
    std::fs::write(&map_path, map).unwrap();
    let (u, d) = (uri.clone(), db.clone());
    crate::support::block_on(async move {
        let client = mongodb::Client::with_uri_str(&u).await.unwrap();
        client
            .database(&d)
            .collection::<Document>("_migrations")
            .insert_many([
                doc! { "name": "done-one", "status": "succeeded" },
                doc! { "name": "failed-one", "status": "failed" },
            ])
            .await
            .unwrap();
    });
    let run = |args: &[&str]| {
        Command::cargo_bin("upstep")
            .unwrap()
            .env("NO_COLOR", "1")
            .env("UPSTEP_STATE_DIR", state.path())
            .env_remove("MONGO_URL")
            .args(args)
            .args([
                "--map",
                &map_path.display().to_string(),
                "--mongo-uri",
                &uri,
            ])
            .output()
            .unwrap()
    };
    let out = run(&["detect", "--json"]);
    let report: serde_json::Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&out)));
    let verdict = |id: &str| {
        report["migrations"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["id"] == id)
            .map(|m| {
                (
                    m["data"].as_str().unwrap().to_string(),
                    m["verdict"].as_str().unwrap().to_string(),
                )
            })
            .unwrap()
    };
    assert_eq!(verdict("done-one"), ("applied".into(), "applied".into()));
    assert_eq!(
        verdict("failed-one"),
        ("failed".into(), "incomplete".into())
    );
    assert_eq!(verdict("never-ran"), ("pending".into(), "pending".into()));
    let plan = run(&["plan", "--detect", "--json"]);
    let plan: serde_json::Value = serde_json::from_slice(&plan.stdout).unwrap();
    assert_eq!(plan["would_run"], 1, "{plan}");
    assert_eq!(plan["blocked"], 1, "the failed row needs --retry: {plan}");
    let check = run(&["status", "--check"]);
    assert_eq!(check.status.code(), Some(10), "{}", text(&check));
}

/// `map generate` recognises each tool's layout and drafts command steps with journal checks
/// on the collection the tool's config names.
#[test]
fn map_generate_drafts_command_steps_for_each_tool() {
    for (tool, journal, collection, command) in [
        (Tool::MikroOrm, "mikro-orm", "migrations", "migration:up"),
        (
            Tool::MigrateMongo,
            "migrate-mongo",
            "changelog",
            "\"migrate-mongo\", \"up\"",
        ),
    ] {
        let project = ToolProject::new(tool);
        let out = Command::cargo_bin("upstep")
            .unwrap()
            .args(["map", "generate", "--repo"])
            .arg(project.repo.path())
            .args(["--dir", "migrations"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out));
        let toml = String::from_utf8_lossy(&out.stdout);
        assert_eq!(toml.matches("run = \"command\"").count(), 4, "{toml}");
        assert_eq!(
            toml.matches(&format!("journal = \"{journal}\"")).count(),
            4,
            "{toml}"
        );
        assert!(
            toml.contains(&format!(
                "collection = \"{collection}\"  # from the tool's config"
            )),
            "{toml}"
        );
        assert!(toml.contains(command), "{toml}");
        assert!(toml.contains("down = ["), "{toml}");
        // It is TOML, and its eras and migrations need only the TODOs a human fills in.
        let parsed: toml::Value = toml::from_str(&toml).expect("the draft is TOML");
        assert!(parsed["eras"]["app"]["command"].is_array());
    }
}

/// A script step undone by its `down_script`, run with the era's `run` at its own tag.
#[test]
fn a_down_script_undoes_a_script_step() {
    use crate::support::{GitFixture, BASE_TIME};
    let repo = GitFixture::new();
    let script = |body: &str| {
        format!(
            "const {{ MongoClient }} = require('mongodb');\n(async () => {{ const c = new MongoClient(process.env.MONGO_URL); await c.connect(); const db = c.db(); {body} await c.close(); }})().catch((e) => {{ console.error(e); process.exit(1); }});\n"
        )
    };
    let (a, b, b_down) = (
        script("await db.collection('items').updateMany({}, { $set: { a: true } });"),
        script("await db.collection('items').updateMany({}, { $set: { b: true } });"),
        script("await db.collection('items').updateMany({}, { $unset: { b: 1 } });"),
    );
    let first = repo.commit(&[("migrations/a.js", Some(a.as_str()))], BASE_TIME);
    repo.annotated_tag("v1.0.0", first, BASE_TIME);
    let second = repo.commit(
        &[
            ("migrations/b.js", Some(b.as_str())),
            ("down/b.js", Some(b_down.as_str())),
        ],
        BASE_TIME + 86_400,
    );
    repo.annotated_tag("v1.1.0", second, BASE_TIME + 86_400);
    let node = crate::support::machine_node_version();
    let modules = crate::support::node_modules();
    let mut map = format!(
        "schema = 1\n[project]\nname = \"plain\"\nmigrations_dir = \"migrations\"\n\
         [eras.app]\ncwd = \".\"\nrun = [\"node\", \"{{script}}\"]\n\
         env = {{ MONGO_URL = \"{{mongo_uri}}\", NODE_PATH = \"{}\" }}\n",
        modules.display()
    );
    for v in ["1.0.0", "1.1.0"] {
        map.push_str(&format!(
            "[[releases]]\nversion = \"{v}\"\nera = \"app\"\nnode = \"{node}\"\n"
        ));
    }
    for (id, v, field, down) in [
        ("a", "1.0.0", "a", ""),
        ("b", "1.1.0", "b", "down_script = \"down/b.js\"\n"),
    ] {
        map.push_str(&format!(
            "[[migrations]]\nid = \"{id}\"\ntitle = \"{id}\"\nintroduced_in = \"{v}\"\nscript = \"migrations/{id}.js\"\n\
             run = \"file\"\nexits = \"yes\"\nidempotent = \"yes\"\n{down}\
             [[migrations.pending]]\ncollection = \"items\"\nfilter = {{ {field} = {{ \"$exists\" = false }} }}\n"
        ));
    }
    let env = Env::new(Tool::MigrateMongo, "down_script");
    env.insert("items", vec![doc! { "_id": 1 }]);
    let map_path = env.project.work.path().join("plain.toml");
    std::fs::write(&map_path, map).unwrap();
    let run = |command: &str, extra: &[&str]| {
        let (m, r) = (
            map_path.display().to_string(),
            repo.path().display().to_string(),
        );
        let mut args = vec![command, "--map", &m, "--repo", &r, "--mongo-uri", &env.uri];
        args.extend(extra);
        env.run(&args)
    };
    let out = run("upgrade", &["--no-backup"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(env
        .find("items")
        .iter()
        .all(|i| i.contains_key("a") && i.contains_key("b")));
    let out = run("rollback", &["--to", "1.0.0"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "a rollback says whether to back up: {}",
        text(&out)
    );
    let backup = env.project.work.path().join("before-rollback");
    let out = run(
        "rollback",
        &["--to", "1.0.0", "--backup", &backup.display().to_string()],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        backup.join("upstep-manifest.json").is_file(),
        "the backup was taken first"
    );
    let items = env.find("items");
    assert!(
        items
            .iter()
            .all(|i| i.contains_key("a") && !i.contains_key("b")),
        "{items:?}"
    );
    assert_eq!(env.status_of("b"), "rolled-back");
    assert_eq!(
        env.journal_entry("b").unwrap().get_str("script"),
        Ok("down/b.js")
    );
    assert_eq!(env.status_of("a"), "succeeded", "1.0.0 is kept");
}

/// Novu's preflight checks come from Novu's map: a tool project's map, which declares none
/// and has no step needing a key, gets neither the New Relic nor the encryption-key check.
#[test]
fn a_generic_map_gets_no_novu_preflight_checks() {
    let env = Env::new(Tool::MigrateMongo, "generic_doctor");
    let out = env.with_map("doctor", &env.project.map_path, &["--from", "1.0.0"]);
    let shown = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(shown.contains("mongo.connect"), "{shown}");
    for novu in [
        "new-relic",
        "NEW_RELIC",
        "encryption-key",
        "STORE_ENCRYPTION_KEY",
    ] {
        assert!(
            !shown.contains(novu),
            "{novu} in a generic map's doctor:\n{shown}"
        );
    }
}
