//! `upstep upgrade` end to end: a fixture project's real scripts against the real test
//! MongoDB and Redis, through the real binary.

use std::path::Path;
use std::process::Output;

use assert_cmd::Command;
use bson::{doc, Document};

use crate::support::{fresh_db_name, mongo, redis, FixtureProject};

pub struct Env {
    pub project: FixtureProject,
    pub db: String,
    pub uri: String,
    pub state: tempfile::TempDir,
    pub cache: tempfile::TempDir,
}

impl Env {
    pub fn new(test: &str) -> Env {
        let db = fresh_db_name(test);
        let env = Env {
            project: FixtureProject::new(),
            uri: mongo().uri_for_db(&db),
            db,
            state: tempfile::tempdir().unwrap(),
            cache: tempfile::tempdir().unwrap(),
        };
        env.seed(&[doc! { "_id": 1 }, doc! { "_id": 2 }]);
        env
    }

    pub fn seed(&self, docs: &[Document]) {
        let (uri, db, docs) = (self.uri.clone(), self.db.clone(), docs.to_vec());
        crate::support::block_on(async move {
            let client = mongodb::Client::with_uri_str(&uri).await.unwrap();
            client
                .database(&db)
                .collection::<Document>("items")
                .insert_many(docs)
                .await
                .unwrap();
        });
    }

    pub fn items(&self) -> Vec<Document> {
        self.find("items", doc! {})
    }

    pub fn find(&self, coll: &str, filter: Document) -> Vec<Document> {
        let (uri, db, coll) = (self.uri.clone(), self.db.clone(), coll.to_string());
        crate::support::block_on(async move {
            use futures_util::TryStreamExt;
            let client = mongodb::Client::with_uri_str(&uri).await.unwrap();
            let cursor = client
                .database(&db)
                .collection::<Document>(&coll)
                .find(filter)
                .await
                .unwrap();
            cursor.try_collect().await.unwrap()
        })
    }

    pub fn journal(&self) -> Vec<Document> {
        self.find("upstep_journal", doc! {})
    }

    pub fn status_of(&self, id: &str) -> String {
        self.journal()
            .iter()
            .find(|d| d.get_str("_id") == Ok(id))
            .and_then(|d| d.get_str("status").ok().map(String::from))
            .unwrap_or_else(|| "-".into())
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::cargo_bin("upstep").unwrap();
        cmd.env("NO_COLOR", "1")
            .env("UPSTEP_STATE_DIR", self.state.path())
            .env("UPSTEP_CACHE_DIR", self.cache.path())
            .env_remove("MONGO_URL")
            .env_remove("UPSTEP_MONGO_URI")
            .env_remove("STORE_ENCRYPTION_KEY")
            .current_dir(self.state.path())
            .args(args);
        cmd
    }

    pub fn upgrade_args(&self) -> Vec<String> {
        self.upgrade_args_with(&self.project.map_path)
    }

    pub fn upgrade_args_with(&self, map: &Path) -> Vec<String> {
        vec![
            "upgrade".into(),
            "--map".into(),
            map.display().to_string(),
            "--repo".into(),
            self.project.repo_path().display().to_string(),
            "--mongo-uri".into(),
            self.uri.clone(),
            "--redis-url".into(),
            redis().url.clone(),
            "--lease-secs".into(),
            "3".into(),
            "--grace-secs".into(),
            "2".into(),
            "--no-backup".into(),
        ]
    }

    pub fn upgrade(&self, extra: &[&str]) -> Output {
        self.upgrade_with(&self.project.map_path, extra)
    }

    pub fn upgrade_with(&self, map: &Path, extra: &[&str]) -> Output {
        let mut args = self.upgrade_args_with(map);
        args.extend(extra.iter().map(|s| s.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.command(&args)
            .timeout(std::time::Duration::from_secs(180))
            .output()
            .unwrap()
    }
}

pub fn text(out: &Output) -> String {
    format!(
        "--- code {:?}\n--- stdout\n{}\n--- stderr\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

pub fn log_dir_contains(dir: &Path, needle: &str) -> Vec<String> {
    let mut hits = Vec::new();
    for entry in walk(dir) {
        if std::fs::read(&entry).is_ok_and(|b| String::from_utf8_lossy(&b).contains(needle)) {
            hits.push(entry.display().to_string());
        }
    }
    hits
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

pub fn pid_gone(pid: u32) -> bool {
    // A zombie has finished; only a live process counts.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('Z')),
    }
}

fn journal_field(env: &Env, id: &str, field: &str) -> String {
    env.journal()
        .iter()
        .find(|d| d.get_str("_id") == Ok(id))
        .and_then(|d| d.get(field).map(|v| v.to_string()))
        .unwrap_or_default()
}

#[test]
fn runs_in_order_at_each_tag_journals_and_a_rerun_runs_nothing() {
    let env = Env::new("in_order");
    let out = env.upgrade(&["--to", "1.1.0"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(env.project.executed(), ["exits", "hangs", "export-only"]);
    for item in env.items() {
        for field in ["done", "tagged", "exported"] {
            assert!(item.contains_key(field), "{field} missing in {item}");
        }
    }
    for id in ["exits", "hangs", "export-only"] {
        assert_eq!(env.status_of(id), "succeeded", "{id}");
    }
    assert!(journal_field(&env, "hangs", "ended_by").contains("done-line"));
    assert!(journal_field(&env, "hangs", "tag").contains("v1.1.0"));
    assert_eq!(
        journal_field(&env, "exits", "script_sha256")
            .trim_matches('"')
            .len(),
        64
    );
    // The hung script's process is gone.
    for pid in env.project.executed_pids() {
        assert!(pid_gone(pid), "pid {pid} is still running");
    }

    let again = env.upgrade(&["--to", "1.1.0"]);
    assert!(again.status.success(), "{}", text(&again));
    assert_eq!(env.project.executed().len(), 3, "a rerun must run nothing");
    assert!(
        String::from_utf8_lossy(&again.stdout).contains("0 ran"),
        "{}",
        text(&again)
    );
}

#[test]
fn an_export_only_script_run_as_a_file_does_nothing_and_is_recorded_as_failed() {
    let env = Env::new("export_as_file");
    // What run-migrations.sh does: run the file. It exits 0 having migrated nothing.
    let map = env.project.map_variant("as-file", |m| {
        m.replace(
            "run = \"export\"\nexport = \"migrateExports\"\nshim = \"data-layer\"",
            "run = \"file\"",
        )
    });
    let out = env.upgrade_with(&map, &["--to", "1.1.0"]);
    assert_eq!(out.status.code(), Some(8), "{}", text(&out));
    assert_eq!(env.status_of("export-only"), "failed");
    let reason = journal_field(&env, "export-only", "reason");
    assert!(reason.contains("did not migrate"), "{reason}");
    assert!(reason.contains("2 pending"), "{reason}");
}

#[test]
fn a_failure_stops_the_run_and_needs_retry_mark_or_confirmation() {
    let env = Env::new("failure_flow");
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
    let out = env.upgrade(&["--yes"]);
    assert_eq!(out.status.code(), Some(8), "{}", text(&out));
    assert_eq!(env.status_of("fails"), "failed");
    assert_eq!(env.status_of("noop"), "-", "nothing after the failure ran");
    assert!(journal_field(&env, "fails", "output_tail").contains("refusing: control says fail"));

    // Without --retry the run refuses to go past the failure.
    let out = env.upgrade(&["--yes"]);
    assert_eq!(out.status.code(), Some(9), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--retry"));

    crate::support::block_on({
        let (uri, db) = (env.uri.clone(), env.db.clone());
        async move {
            let client = mongodb::Client::with_uri_str(&uri).await.unwrap();
            client
                .database(&db)
                .collection::<Document>("control")
                .delete_many(doc! {})
                .await
                .unwrap();
        }
    });
    // The retry fixes `fails`; `noop` then exits 0 without migrating: failed, not success.
    let out = env.upgrade(&["--retry", "--yes"]);
    assert_eq!(out.status.code(), Some(8), "{}", text(&out));
    assert_eq!(env.status_of("fails"), "succeeded");
    assert_eq!(env.status_of("noop"), "failed");

    // Adopt noop by hand; the non-idempotent counter then needs a confirmation.
    let mark = env
        .command(&[
            "mark",
            "noop",
            "--applied",
            "--reason",
            "checked by hand",
            "--map",
            env.project.map_path.to_str().unwrap(),
            "--mongo-uri",
            &env.uri,
        ])
        .output()
        .unwrap();
    assert!(mark.status.success(), "{}", text(&mark));
    assert_eq!(env.status_of("noop"), "marked-applied");
    let out = env.upgrade(&[]);
    assert_eq!(out.status.code(), Some(12), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("counter (not idempotent)"),
        "{}",
        text(&out)
    );
    assert!(!env.project.executed().contains(&"counter".to_string()));

    let out = env.upgrade(&["--yes"]);
    assert!(out.status.success(), "{}", text(&out));
    let again = env.upgrade(&["--yes"]);
    assert!(again.status.success(), "{}", text(&again));
    let runs = env.find("counters", doc! { "_id": "runs" });
    assert_eq!(
        runs[0].get_i32("n").unwrap(),
        1,
        "the non-idempotent script ran once"
    );
}

#[test]
fn a_script_that_never_exits_is_ended_after_the_quiet_window_with_its_group() {
    let env = Env::new("quiet_window");
    let map = env.project.map_variant("no-done-line", |m| {
        m.replace("done_lines = [\"end migration\"]", "done_lines = []")
    });
    let out = env.upgrade_with(&map, &["--to", "1.1.0", "--quiet-secs", "1"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(journal_field(&env, "hangs", "ended_by").contains("quiet-window"));
    for pid in env.project.executed_pids() {
        assert!(pid_gone(pid), "pid {pid} is still running");
    }
}

/// Novu's email-step-ui-schema-html-editor (v2.3.0) did its work and stayed alive without a line
/// of output: the era's done line can never come, so `prints_nothing` lets its quiet window and
/// data check end it. Without the field the same script is not ended by silence.
#[test]
fn a_script_that_prints_nothing_is_ended_by_its_quiet_window_and_data_check() {
    let env = Env::new("prints_nothing");
    let never_printed = |m: &str| {
        m.replace(
            "done_lines = [\"end migration\"]",
            "done_lines = [\"a line it never prints\"]",
        )
    };
    let without = env.project.map_variant("silent-no-field", never_printed);
    let out = env.upgrade_with(
        &without,
        &["--to", "1.1.0", "--quiet-secs", "1", "--step-timeout", "8"],
    );
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        !journal_field(&env, "hangs", "ended_by").contains("quiet-window"),
        "{}",
        journal_field(&env, "hangs", "ended_by")
    );

    let with = env.project.map_variant("silent-prints-nothing", |m| {
        never_printed(m).replace(
            "script = \"migrations/002-hangs.ts\"\n",
            "script = \"migrations/002-hangs.ts\"\nprints_nothing = true\n",
        )
    });
    let out = env.upgrade_with(&with, &["--to", "1.1.0", "--quiet-secs", "1", "--retry"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(journal_field(&env, "hangs", "ended_by").contains("quiet-window"));
    assert_eq!(env.status_of("hangs"), "succeeded");
    for pid in env.project.executed_pids() {
        assert!(pid_gone(pid), "pid {pid} is still running");
    }
}

#[test]
fn sigint_records_the_step_as_interrupted_and_exits_130() {
    let env = Env::new("sigint");
    let map = env.project.map_variant("slow", |m| {
        m.replace("done_lines = [\"end migration\"]", "done_lines = []")
    });
    let mut args = env.upgrade_args_with(&map);
    args.extend(["--to", "1.1.0", "--quiet-secs", "120"].map(String::from));
    let bin = assert_cmd::cargo::cargo_bin("upstep");
    let mut child = std::process::Command::new(bin)
        .args(&args)
        .env("UPSTEP_STATE_DIR", env.state.path())
        .env("UPSTEP_CACHE_DIR", env.cache.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !env.project.executed().contains(&"hangs".to_string()) {
        assert!(std::time::Instant::now() < deadline, "hangs never started");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    );
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130));
    assert_eq!(env.status_of("hangs"), "interrupted");
    assert!(
        journal_field(&env, "hangs", "signal").contains('2'),
        "{}",
        journal_field(&env, "hangs", "signal")
    );
    for pid in env.project.executed_pids() {
        assert!(pid_gone(pid), "pid {pid} is still running");
    }
    // The lock was released: a retry goes on at once.
    let out = env.upgrade_with(
        &map,
        &[
            "--to",
            "1.1.0",
            "--quiet-secs",
            "1",
            "--retry",
            "--lock-wait-secs",
            "0",
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
}

#[test]
fn dry_run_touches_no_data_no_journal_and_no_lock() {
    let env = Env::new("dry_run");
    let before = env.items();
    let out = env.upgrade(&["--dry-run", "--to", "1.1.0"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("3 steps would run"),
        "{}",
        text(&out)
    );
    assert_eq!(env.items(), before);
    assert!(env.journal().is_empty());
    assert!(env.find("upstep_lock", doc! {}).is_empty());
    assert!(env.project.executed().is_empty());
}

#[test]
fn status_check_gates_on_pending_migrations() {
    let env = Env::new("status");
    let status = |extra: &[&str]| {
        let mut args = vec![
            "status",
            "--map",
            env.project.map_path.to_str().unwrap(),
            "--mongo-uri",
            &env.uri,
            "--to",
            "1.1.0",
        ];
        args.extend(extra);
        env.command(&args).output().unwrap()
    };
    let out = status(&["--check"]);
    assert_eq!(out.status.code(), Some(10), "{}", text(&out));
    assert!(env.upgrade(&["--to", "1.1.0"]).status.success());
    let out = status(&["--check", "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["schema"], "upstep.status/1");
    assert_eq!(json["pending"], 0);
}

#[test]
fn a_held_lock_makes_a_second_run_wait_then_exit_7_and_unlock_frees_it() {
    let env = Env::new("held_lock");
    let (uri, db) = (env.uri.clone(), env.db.clone());
    crate::support::block_on(async move {
        let client = mongodb::Client::with_uri_str(&uri).await.unwrap();
        let holder = doc! { "run_id": "someone-else", "host": "elsewhere", "user": "ops", "boot_id": "x", "pid": 1_i64, "pid_start": 1_i64, "upstep_version": "0.1.0" };
        client
            .database(&db)
            .collection::<Document>("upstep_lock")
            .insert_one(doc! { "_id": "run", "schema": 1, "holder": holder, "acquired_at": bson::DateTime::now(), "lease_until": bson::DateTime::from_millis(bson::DateTime::now().timestamp_millis() + 3_600_000) })
            .await
            .unwrap();
    });
    let out = env.upgrade(&["--to", "1.1.0", "--lock-wait-secs", "1"]);
    assert_eq!(out.status.code(), Some(7), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("by ops on elsewhere"),
        "{}",
        text(&out)
    );
    assert!(env.project.executed().is_empty());
    let unlock = env
        .command(&["unlock", "--mongo-uri", &env.uri])
        .output()
        .unwrap();
    assert!(unlock.status.success(), "{}", text(&unlock));
    assert!(env.upgrade(&["--to", "1.1.0"]).status.success());
}

#[test]
fn two_runs_started_at_once_run_each_script_exactly_once() {
    let env = Env::new("two_runs");
    let mut args = env.upgrade_args();
    args.extend(["--to", "1.1.0", "--lock-wait-secs", "120"].map(String::from));
    let bin = assert_cmd::cargo::cargo_bin("upstep");
    let spawn = || {
        std::process::Command::new(&bin)
            .args(&args)
            .env("UPSTEP_STATE_DIR", env.state.path())
            .env("UPSTEP_CACHE_DIR", env.cache.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (spawn(), spawn());
    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    assert!(a.status.success(), "{}", String::from_utf8_lossy(&a.stderr));
    assert!(b.status.success(), "{}", String::from_utf8_lossy(&b.stderr));
    let mut executed = env.project.executed();
    executed.sort();
    assert_eq!(executed, ["exits", "export-only", "hangs"]);
}

#[test]
fn the_canary_password_appears_nowhere() {
    const CANARY: &str = "CanaryPw-7f3a9";
    let server = crate::support::start_mongo_with_auth();
    let db = fresh_db_name("canary");
    let (admin, db2) = (server.admin_uri("admin"), db.clone());
    crate::support::block_on(async move {
        let client = mongodb::Client::with_uri_str(&admin).await.unwrap();
        client
            .database("admin")
            .run_command(doc! { "createUser": "migrator", "pwd": CANARY, "roles": [{ "role": "readWrite", "db": &db2 }, { "role": "read", "db": "admin" }] })
            .await
            .unwrap();
        client
            .database(&db2)
            .collection::<Document>("items")
            .insert_one(doc! { "_id": 1 })
            .await
            .unwrap();
    });
    let uri = server.uri_with_credentials("migrator", CANARY, &db);
    let env = Env {
        project: FixtureProject::new(),
        db: db.clone(),
        uri: uri.clone(),
        state: tempfile::tempdir().unwrap(),
        cache: tempfile::tempdir().unwrap(),
    };
    let out = env.upgrade(&["--to", "1.1.0", "-v"]);
    assert!(
        out.status.success(),
        "{}",
        text(&out).replace(CANARY, "<CANARY>")
    );
    let everything = text(&out);
    assert!(
        !everything.contains(CANARY),
        "stdout/stderr leak the password"
    );
    assert!(
        log_dir_contains(env.state.path(), CANARY).is_empty(),
        "logs or the journal mirror leak it: {:?}",
        log_dir_contains(env.state.path(), CANARY)
    );
    let journal = format!(
        "{:?}{:?}",
        env.journal(),
        env.find("upstep_events", doc! {})
    );
    assert!(!journal.contains(CANARY), "the journal leaks the password");
    let argv_log = std::fs::read_to_string(&env.project.log_path).unwrap();
    assert_eq!(argv_log.lines().count(), 3);
    assert!(
        !argv_log.contains(CANARY),
        "a child's argv holds the password: {argv_log}"
    );
    assert!(
        !argv_log.contains("mongodb://"),
        "a child's argv holds the URI: {argv_log}"
    );
}

/// The processes whose environment holds `key=value` (not zombies): every process of a
/// fixture script's group inherits `FIXTURE_LOG`, so this finds what is left of the scripts of
/// one test, logged or not (a script killed before it logged has its group too).
pub fn processes_with_env(key: &str, value: &str) -> Vec<u32> {
    let needle = format!("{key}={value}");
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(environ) = std::fs::read(format!("/proc/{pid}/environ")) else {
            continue;
        };
        if environ.split(|&b| b == 0).any(|v| v == needle.as_bytes()) && !pid_gone(pid) {
            found.push(pid);
        }
    }
    found
}

/// The fixture map with every script started through `sh` (`sh -> ts-node`), the shape of
/// Novu's `npm exec -> sh -> node`: the script is a grandchild of upstep, which the kernel's
/// parent-death signal alone would not reach.
pub fn map_with_shell_wrapper(env: &Env) -> std::path::PathBuf {
    env.project.map_variant("sh-wrapped", |m| {
        m.replacen(
            "run = [\"",
            "run = [\"sh\", \"-c\", \"\\\"$0\\\" \\\"$@\\\"; exit $?\", \"",
            1,
        )
    })
}

/// kill -9 of upstep at a random point, then a rerun: nothing that succeeded runs twice, no
/// journal row is lost, no process of a script's group outlives upstep by more than a few
/// seconds, and the journal ends consistent. Scripts run as `sh -> ts-node` (a grandchild).
/// `UPSTEP_KILL_ITERATIONS` sets the number of rounds (default 20; `scripts/bench-kill9.sh`
/// runs 100 and prints the figures).
#[test]
fn kill_9_at_random_points_then_a_rerun_never_repeats_a_succeeded_step() {
    let rounds: usize = std::env::var("UPSTEP_KILL_ITERATIONS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(20);
    let mut seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let bin = assert_cmd::cargo::cargo_bin("upstep");
    let (mut double_runs, mut lost_rows, mut orphans) = (0usize, 0usize, 0usize);
    let mut problems: Vec<String> = Vec::new();
    for round in 0..rounds {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let delay = std::time::Duration::from_millis((seed >> 33) % 3000);
        let env = Env::new(&format!("kill9_{round}"));
        let map = map_with_shell_wrapper(&env);
        let mut args = env.upgrade_args_with(&map);
        args.extend(["--to", "1.1.0", "--retry", "--yes", "--quiet-secs", "1"].map(String::from));
        let mut child = std::process::Command::new(&bin)
            .args(&args)
            .env("UPSTEP_STATE_DIR", env.state.path())
            .env("UPSTEP_CACHE_DIR", env.cache.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(delay);
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
        let _ = child.wait();

        // Within seconds of upstep's death, nothing of any script's group is left.
        let log = env.project.log_path.display().to_string();
        let give_up = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let mut left = processes_with_env("FIXTURE_LOG", &log);
        while !left.is_empty() && std::time::Instant::now() < give_up {
            std::thread::sleep(std::time::Duration::from_millis(100));
            left = processes_with_env("FIXTURE_LOG", &log);
        }
        if !left.is_empty() {
            orphans += left.len();
            problems.push(format!(
                "round {round} (killed after {delay:?}): {} process(es) of the scripts' groups outlived upstep by 5 s: {left:?}",
                left.len()
            ));
            for pid in left {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid as i32),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }

        let out = env.upgrade_with(
            &map,
            &[
                "--to",
                "1.1.0",
                "--retry",
                "--yes",
                "--quiet-secs",
                "1",
                "--lock-wait-secs",
                "10",
            ],
        );
        if !out.status.success() {
            problems.push(format!(
                "round {round} (killed after {delay:?}): the rerun failed: {}",
                text(&out)
            ));
        }
        for id in ["exits", "hangs", "export-only"] {
            if env.status_of(id) != "succeeded" {
                lost_rows += 1;
                problems.push(format!(
                    "round {round}: {id} is {} after the rerun",
                    env.status_of(id)
                ));
            }
        }
        if !env.find("upstep_lock", doc! {}).is_empty() {
            problems.push(format!("round {round}: the lock was not released"));
        }
        // Once a step is recorded succeeded, no later run starts it again.
        let events = env.find("upstep_events", doc! {});
        for id in ["exits", "hangs", "export-only"] {
            let mut succeeded = false;
            for e in events.iter().filter(|e| e.get_str("migration") == Ok(id)) {
                let kind = e.get_str("kind").unwrap_or("");
                let status = e
                    .get_document("details")
                    .ok()
                    .and_then(|d| d.get_str("status").ok());
                if succeeded && kind == "step-started" {
                    double_runs += 1;
                    problems.push(format!(
                        "round {round}: {id} started again after it succeeded"
                    ));
                }
                if kind == "step-finished" && status == Some("succeeded") {
                    succeeded = true;
                }
            }
        }
        // A script runs at most once per recorded attempt (a run the journal does not show is a
        // lost row), and nothing is left running.
        let executed = env.project.executed();
        for id in ["exits", "hangs", "export-only"] {
            let runs = executed.iter().filter(|e| *e == id).count() as i32;
            let attempts = env
                .journal()
                .iter()
                .find(|d| d.get_str("_id") == Ok(id))
                .and_then(|d| d.get_i32("attempts").ok())
                .unwrap_or(0);
            if runs > attempts {
                lost_rows += (runs - attempts) as usize;
            }
            if !(runs >= 1 && runs <= attempts) {
                problems.push(format!(
                    "round {round}: {id} ran {runs} times in {attempts} attempts"
                ));
            }
        }
        let left = processes_with_env("FIXTURE_LOG", &log);
        if !left.is_empty() {
            orphans += left.len();
            problems.push(format!(
                "round {round}: {left:?} still running after the rerun"
            ));
        }
        for pid in env.project.executed_pids() {
            if !pid_gone(pid) {
                problems.push(format!("round {round}: pid {pid} is still running"));
            }
        }
    }
    println!(
        "kill -9 trials: {rounds} rounds; double runs: {double_runs}; lost journal rows: {lost_rows}; orphans: {orphans}"
    );
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    assert_eq!((double_runs, lost_rows, orphans), (0, 0, 0));
}

#[test]
fn unattended_runs_must_choose_a_backup_and_a_restore_sets_later_steps_back_to_pending() {
    let env = Env::new("backup_flow");
    let mut args = env.upgrade_args();
    args.retain(|a| a != "--no-backup");
    args.extend(["--to", "1.1.0"].map(String::from));
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = env.command(&argv).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--backup DIR"),
        "{}",
        text(&out)
    );
    assert!(env.project.executed().is_empty());

    let before = env.items();
    let dir = env.state.path().join("pre-upgrade");
    let mut with_backup = argv.clone();
    with_backup.extend(["--backup", dir.to_str().unwrap()]);
    let out = env.command(&with_backup).output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(dir.join("upstep-manifest.json").is_file());
    assert!(journal_field(&env, "exits", "backup").contains("pre-upgrade"));
    let status = env
        .command(&[
            "status",
            "--map",
            env.project.map_path.to_str().unwrap(),
            "--mongo-uri",
            &env.uri,
            "--to",
            "1.1.0",
        ])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&status.stdout).contains("Backup before the last run:"),
        "{}",
        text(&status)
    );

    // Restore: the data is as before the upgrade, and the journal no longer claims the steps.
    let restore = env
        .command(&[
            "restore",
            dir.to_str().unwrap(),
            "--drop",
            "--yes",
            "--mongo-uri",
            &env.uri,
        ])
        .output()
        .unwrap();
    assert!(restore.status.success(), "{}", text(&restore));
    assert_eq!(env.items(), before);
    for id in ["exits", "hangs", "export-only"] {
        assert_eq!(env.status_of(id), "pending", "{id}");
    }
    assert!(!env
        .find("upstep_events", doc! { "kind": "restore" })
        .is_empty());
    let out = env.upgrade(&["--to", "1.1.0"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        env.project.executed(),
        [
            "exits",
            "hangs",
            "export-only",
            "exits",
            "hangs",
            "export-only"
        ]
    );
}

#[test]
fn json_runs_stream_one_event_per_line_and_a_summary() {
    let env = Env::new("json_events");
    let out = env.upgrade(&["--to", "1.1.0", "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    let events: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("not one JSON object per line: {e}: {l}"))
        })
        .collect();
    assert!(events.iter().all(|e| e["schema"] == "upstep.event/1"));
    let kinds: Vec<&str> = events.iter().filter_map(|e| e["event"].as_str()).collect();
    assert_eq!(kinds.first(), Some(&"plan"));
    assert_eq!(kinds.last(), Some(&"summary"));
    for kind in ["step-started", "output", "verification", "step-finished"] {
        assert!(kinds.contains(&kind), "no {kind} event in {kinds:?}");
    }
    let finished: Vec<&serde_json::Value> = events
        .iter()
        .filter(|e| e["event"] == "step-finished")
        .collect();
    assert_eq!(finished.len(), 3);
    assert_eq!(finished[1]["id"], "hangs");
    assert_eq!(finished[1]["ended_by"], "done-line");
    let summary = events.last().unwrap();
    assert_eq!(
        (
            summary["ran"].as_u64(),
            summary["succeeded"].as_u64(),
            summary["status"].as_str()
        ),
        (Some(3), Some(3), Some("succeeded"))
    );

    // A failing run ends with a summary that says so, and its exit code.
    let out = env.upgrade(&["--json", "--yes"]);
    assert_eq!(out.status.code(), Some(8), "{}", text(&out));
    let last: serde_json::Value =
        serde_json::from_str(String::from_utf8_lossy(&out.stdout).lines().last().unwrap()).unwrap();
    assert_eq!(last["event"], "summary");
    assert_eq!(last["failed"], 1);
    assert_eq!(last["status"], "step-failed");
}

#[test]
fn doctor_without_from_checks_the_steps_a_run_would_execute() {
    let env = Env::new("doctor_current");
    let doctor = |env: &Env| {
        env.command(&[
            "doctor",
            "--map",
            env.project.map_path.to_str().unwrap(),
            "--mongo-uri",
            &env.uri,
            "--redis-url",
            &redis().url,
            "--to",
            "1.1.0",
        ])
        .output()
        .unwrap()
    };
    let out = doctor(&env);
    assert!(out.status.success(), "{}", text(&out));
    let before = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(before.contains("(3 scripts at 2 tags)"), "{before}");
    assert!(env.upgrade(&["--to", "1.0.0"]).status.success());
    // v1.0.0's only step is applied now: the current plan is v1.1.0's two.
    let out = doctor(&env);
    let after = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(after.contains("(2 scripts at 1 tag)"), "{after}");
    let no_from_no_db = env
        .command(&["doctor", "--map", env.project.map_path.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(
        no_from_no_db.status.code(),
        Some(2),
        "{}",
        text(&no_from_no_db)
    );
}

#[test]
fn scripts_do_not_inherit_upstep_s_own_connection_variables() {
    let env = Env::new("private_env");
    let env_log = env.state.path().join("script-env.log");
    let args = env.upgrade_args();
    // The repository and Redis come from upstep's variables this time, not flags.
    let args: Vec<&str> = args
        .iter()
        .map(String::as_str)
        .filter(|a| *a != "--repo" && *a != "--redis-url")
        .filter(|a| *a != env.project.repo_path().display().to_string() && *a != redis().url)
        .collect();
    let out = env
        .command(&args)
        .env("UPSTEP_REPO", env.project.repo_path())
        .env("UPSTEP_REDIS_URL", &redis().url)
        .env("FIXTURE_ENV_LOG", &env_log)
        .args(["--to", "1.0.0"])
        .timeout(std::time::Duration::from_secs(180))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let seen = std::fs::read_to_string(&env_log).unwrap_or_default();
    assert!(
        !seen.is_empty(),
        "no script logged its environment\n{}",
        text(&out)
    );
    for line in seen.lines() {
        assert!(
            line.contains("\"MONGO_URL\""),
            "the era's variables still reach it: {line}"
        );
        for private in ["UPSTEP_REPO", "UPSTEP_REDIS_URL", "UPSTEP_MONGO_URI"] {
            assert!(
                !line.contains(&format!("\"{private}\"")),
                "{private} reached a script: {line}"
            );
        }
    }
}
