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
        vec![
            "upgrade".into(),
            "--map".into(),
            self.project.map_path.display().to_string(),
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
        ]
    }

    pub fn upgrade(&self, extra: &[&str]) -> Output {
        let mut args = self.upgrade_args();
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

#[test]
fn smoke_upgrade_to_v1_1() {
    let env = Env::new("smoke");
    let out = env.upgrade(&["--to", "1.1.0"]);
    println!("{}", text(&out));
    println!("executed: {:?}", env.project.executed());
    println!("journal: {:#?}", env.journal());
    assert!(out.status.success());
}
