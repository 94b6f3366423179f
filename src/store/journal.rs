//! The journal: one document per migration (its current state) plus an append-only history.
//!
//! A step is recorded as `running` before its script starts and settled after it ends, so a
//! crash can never leave work done but unrecorded: a `running` entry whose run is gone is read
//! as interrupted. Settling is keyed by the run id, so a stale run can never overwrite the
//! entry of the run that took over from it.

use std::collections::BTreeMap;

use bson::{doc, Bson, DateTime, Document};
use futures_util::TryStreamExt;
use serde::{Deserialize, Serialize};

use super::mirror::Mirror;
use super::{Store, EVENTS, JOURNAL, JOURNAL_SCHEMA};
use crate::error::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StepStatus {
    Running,
    Succeeded,
    Failed,
    Interrupted,
    /// Never exited and was ended after its quiet window, with nothing (no done line, no data
    /// check) proving it had finished: not done; the operator decides (`mark` or `--retry`).
    EndedUnverified,
    /// Recorded as applied without running (a database migrated by hand).
    MarkedApplied,
    /// Recorded as pending again (by `mark --pending` or a restore).
    Pending,
    /// Left out on purpose by a run (e.g. applied per its fingerprint).
    Skipped,
}

impl StepStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            StepStatus::Running => "running",
            StepStatus::Succeeded => "succeeded",
            StepStatus::Failed => "failed",
            StepStatus::Interrupted => "interrupted",
            StepStatus::EndedUnverified => "ended-unverified",
            StepStatus::MarkedApplied => "marked-applied",
            StepStatus::Pending => "pending",
            StepStatus::Skipped => "skipped",
        }
    }

    /// The migration's work is in the data (by running or by the user's word).
    pub fn is_done(self) -> bool {
        matches!(self, StepStatus::Succeeded | StepStatus::MarkedApplied)
    }
}

/// Who and where: recorded on running steps and on the lock, so a later run can tell whether
/// that process may still be alive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor {
    pub run_id: String,
    pub host: String,
    pub user: String,
    /// Linux boot id: a pid only means something within one boot.
    pub boot_id: String,
    pub pid: i64,
    /// Start time of the process (clock ticks since boot), to tell a reused pid apart.
    pub pid_start: i64,
    pub upstep_version: String,
}

impl Actor {
    /// This process, for a new run.
    pub fn current() -> Actor {
        let pid = std::process::id() as i64;
        Actor {
            run_id: bson::oid::ObjectId::new().to_hex(),
            host: hostname(),
            user: std::env::var("USER")
                .or_else(|_| std::env::var("LOGNAME"))
                .unwrap_or_else(|_| format!("uid {}", unsafe { libc::getuid() })),
            boot_id: boot_id(),
            pid,
            pid_start: process_start_ticks(pid).unwrap_or(0),
            upstep_version: env!("CARGO_PKG_VERSION").to_string(),
        }
    }

    /// Whether the process this actor describes is certainly gone (same host and boot only;
    /// elsewhere nothing can be known, so `false`).
    pub fn is_dead_local_process(&self) -> bool {
        if self.host != hostname() || self.boot_id != boot_id() {
            return false;
        }
        match process_start_ticks(self.pid) {
            None => true,
            Some(start) => self.pid_start != 0 && start != self.pid_start,
        }
    }
}

pub fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname NUL-terminates within it.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "unknown-host".into();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

pub fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// Field 22 of /proc/<pid>/stat; None when the process does not exist.
pub fn process_start_ticks(pid: i64) -> Option<i64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces; fields after it follow the last ')'.
    let after = &stat[stat.rfind(')')? + 2..];
    after.split(' ').nth(19)?.parse().ok()
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JournalEntry {
    #[serde(rename = "_id")]
    pub id: String,
    pub schema: i32,
    pub status: StepStatus,
    #[serde(default)]
    pub attempts: i32,
    #[serde(default)]
    pub tag: Option<String>,
    #[serde(default)]
    pub commit: Option<String>,
    #[serde(default)]
    pub script: Option<String>,
    /// sha256 of the script file at its tag (pinned: checksums are compared across versions).
    #[serde(default)]
    pub script_sha256: Option<String>,
    #[serde(default)]
    pub started_at: Option<DateTime>,
    #[serde(default)]
    pub finished_at: Option<DateTime>,
    #[serde(default)]
    pub duration_ms: Option<i64>,
    #[serde(default)]
    pub exit_code: Option<i32>,
    #[serde(default)]
    pub signal: Option<i32>,
    /// How the step ended: "exited", "done-line", "quiet-window", "timeout", "signal", ...
    #[serde(default)]
    pub ended_by: Option<String>,
    #[serde(default)]
    pub reason: Option<String>,
    #[serde(default)]
    pub actor: Option<Actor>,
    /// The child's process group while running, so a later run can end an orphan.
    #[serde(default)]
    pub child_pid: Option<i64>,
    #[serde(default)]
    pub child_pgid: Option<i64>,
    /// Redacted last lines of the script's output.
    #[serde(default)]
    pub output_tail: Vec<String>,
    /// The backup taken before the run that ran this step, if any.
    #[serde(default)]
    pub backup: Option<String>,
}

/// What a step start records.
#[derive(Debug, Clone)]
pub struct StepStart<'a> {
    pub id: &'a str,
    pub tag: &'a str,
    pub commit: &'a str,
    pub script: &'a str,
    pub script_sha256: &'a str,
    pub backup: Option<&'a str>,
}

/// What settling a step records.
#[derive(Debug, Clone, Default)]
pub struct StepEnd {
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub ended_by: String,
    pub reason: String,
    pub duration_ms: i64,
    pub output_tail: Vec<String>,
}

/// The journal of one database, for one run (actor).
pub struct Journal {
    store: Store,
    actor: Actor,
    mirror: Mirror,
}

fn db_error(store: &Store, err: mongodb::error::Error) -> Error {
    super::mongo_error(&err, &store.redacted_uri, "")
}

impl Journal {
    pub fn new(store: &Store, actor: Actor, mirror: Mirror) -> Journal {
        Journal {
            store: store.clone(),
            actor,
            mirror,
        }
    }

    pub fn actor(&self) -> &Actor {
        &self.actor
    }

    fn entries_coll(&self) -> mongodb::Collection<JournalEntry> {
        self.store.db.collection(JOURNAL)
    }

    fn raw_coll(&self) -> mongodb::Collection<Document> {
        self.store.db.collection(JOURNAL)
    }

    /// Every migration's journal entry, by id.
    pub async fn entries(&self) -> Result<BTreeMap<String, JournalEntry>> {
        read_entries(&self.store).await
    }

    /// Record the step as running (before its script starts).
    pub async fn begin_step(&self, start: &StepStart<'_>) -> Result<()> {
        let actor = bson::to_bson(&self.actor).map_err(|e| Error::Internal(e.to_string()))?;
        self.raw_coll()
            .update_one(
                doc! { "_id": start.id },
                doc! {
                    "$set": {
                        "schema": JOURNAL_SCHEMA,
                        "status": StepStatus::Running.as_str(),
                        "tag": start.tag,
                        "commit": start.commit,
                        "script": start.script,
                        "script_sha256": start.script_sha256,
                        "actor": actor,
                        "backup": start.backup,
                        "output_tail": [],
                    },
                    "$currentDate": { "started_at": true },
                    "$inc": { "attempts": 1 },
                    "$unset": {
                        "finished_at": "", "duration_ms": "", "exit_code": "", "signal": "",
                        "ended_by": "", "reason": "", "child_pid": "", "child_pgid": "",
                    },
                },
            )
            .upsert(true)
            .await
            .map_err(|e| db_error(&self.store, e))?;
        self.event(
            "step-started",
            Some(start.id),
            doc! { "tag": start.tag, "commit": start.commit },
        )
        .await
    }

    /// Record the child's pid and process group right after it was spawned.
    pub async fn record_child(&self, id: &str, pid: u32, pgid: i32) -> Result<()> {
        self.raw_coll()
            .update_one(
                doc! { "_id": id, "actor.run_id": &self.actor.run_id },
                doc! { "$set": { "child_pid": pid as i64, "child_pgid": pgid as i64 } },
            )
            .await
            .map_err(|e| db_error(&self.store, e))?;
        Ok(())
    }

    /// Settle a step this run started. Fails (Internal) if another run owns the entry now.
    pub async fn settle(&self, id: &str, status: StepStatus, end: &StepEnd) -> Result<()> {
        let result = self
            .raw_coll()
            .update_one(
                doc! { "_id": id, "actor.run_id": &self.actor.run_id },
                doc! {
                    "$set": {
                        "status": status.as_str(),
                        "exit_code": end.exit_code,
                        "signal": end.signal,
                        "ended_by": &end.ended_by,
                        "reason": &end.reason,
                        "duration_ms": end.duration_ms,
                        "output_tail": &end.output_tail,
                    },
                    "$currentDate": { "finished_at": true },
                    "$unset": { "child_pid": "", "child_pgid": "" },
                },
            )
            .await
            .map_err(|e| db_error(&self.store, e))?;
        if result.matched_count == 0 {
            return Err(Error::Internal(format!(
                "journal entry {id} is no longer owned by this run (another run took over)"
            )));
        }
        self.event(
            "step-finished",
            Some(id),
            doc! { "status": status.as_str(), "ended_by": &end.ended_by, "reason": &end.reason, "exit_code": end.exit_code, "signal": end.signal, "duration_ms": end.duration_ms },
        )
        .await
    }

    /// Settle an entry left `running` by a run that is gone: it becomes interrupted.
    pub async fn settle_abandoned(&self, entry: &JournalEntry, reason: &str) -> Result<()> {
        let old_run = entry
            .actor
            .as_ref()
            .map(|a| a.run_id.clone())
            .unwrap_or_default();
        self.raw_coll()
            .update_one(
                doc! { "_id": &entry.id, "status": StepStatus::Running.as_str(), "actor.run_id": &old_run },
                doc! {
                    "$set": { "status": StepStatus::Interrupted.as_str(), "ended_by": "abandoned", "reason": reason },
                    "$currentDate": { "finished_at": true },
                    "$unset": { "child_pid": "", "child_pgid": "" },
                },
            )
            .await
            .map_err(|e| db_error(&self.store, e))?;
        self.event(
            "step-abandoned",
            Some(&entry.id),
            doc! { "previous_run": old_run, "reason": reason },
        )
        .await
    }

    /// Record a migration as applied or pending without running it (`upstep mark`).
    pub async fn mark(&self, id: &str, status: StepStatus, reason: &str) -> Result<()> {
        let actor = bson::to_bson(&self.actor).map_err(|e| Error::Internal(e.to_string()))?;
        self.raw_coll()
            .update_one(
                doc! { "_id": id },
                doc! {
                    "$set": { "schema": JOURNAL_SCHEMA, "status": status.as_str(), "reason": reason, "ended_by": "marked", "actor": actor },
                    "$currentDate": { "finished_at": true },
                    "$setOnInsert": { "attempts": 0 },
                    "$unset": { "child_pid": "", "child_pgid": "" },
                },
            )
            .upsert(true)
            .await
            .map_err(|e| db_error(&self.store, e))?;
        self.event(
            "marked",
            Some(id),
            doc! { "status": status.as_str(), "reason": reason },
        )
        .await
    }

    /// After a restore: every step recorded done after `since` (when the backup was taken) is
    /// set back to pending, since the restored data no longer holds its work. Returns their ids.
    pub async fn reset_after(&self, since: DateTime, backup: &str) -> Result<Vec<String>> {
        let mut reset = Vec::new();
        for entry in self.entries().await?.values() {
            let after = entry.finished_at.is_some_and(|f| f > since);
            if entry.status.is_done() && after {
                self.mark(
                    &entry.id,
                    StepStatus::Pending,
                    &format!("restored from {backup}, taken before this step ran"),
                )
                .await?;
                reset.push(entry.id.clone());
            }
        }
        let ids: Vec<Bson> = reset.iter().map(|id| Bson::from(id.as_str())).collect();
        self.event(
            "restore",
            None,
            bson::doc! { "backup": backup, "backup_created_at": since, "set_pending": ids },
        )
        .await?;
        Ok(reset)
    }

    /// Append to the event history, in the database and in the local mirror. The mirror is
    /// written first so it survives a database that just became unreachable.
    pub async fn event(
        &self,
        kind: &str,
        migration: Option<&str>,
        details: Document,
    ) -> Result<()> {
        let event = doc! {
            "_id": bson::oid::ObjectId::new(),
            "schema": JOURNAL_SCHEMA,
            "at": DateTime::now(),
            "run_id": &self.actor.run_id,
            "host": &self.actor.host,
            "kind": kind,
            "migration": migration.map(Bson::from).unwrap_or(Bson::Null),
            "details": details,
        };
        self.mirror.append(&event);
        self.store
            .db
            .collection::<Document>(EVENTS)
            .insert_one(&event)
            .await
            .map_err(|e| db_error(&self.store, e))?;
        Ok(())
    }

    /// The event history, oldest first.
    pub async fn events(&self) -> Result<Vec<Document>> {
        let cursor = self
            .store
            .db
            .collection::<Document>(EVENTS)
            .find(doc! {})
            .sort(doc! { "_id": 1 })
            .await
            .map_err(|e| db_error(&self.store, e))?;
        cursor
            .try_collect()
            .await
            .map_err(|e| db_error(&self.store, e))
    }

    pub fn mirror(&self) -> &Mirror {
        &self.mirror
    }

    /// Typed access for callers that only read.
    pub fn collection(&self) -> mongodb::Collection<JournalEntry> {
        self.entries_coll()
    }
}

/// Every journal entry of a database, by id (read-only helper for `status` and `detect`).
pub async fn read_entries(store: &Store) -> Result<BTreeMap<String, JournalEntry>> {
    let cursor = store
        .db
        .collection::<JournalEntry>(JOURNAL)
        .find(doc! {})
        .await
        .map_err(|e| db_error(store, e))?;
    let entries: Vec<JournalEntry> = cursor.try_collect().await.map_err(|e| {
        Error::connection(
            format!(
                "cannot read upstep's journal in {}: {e}",
                store.redacted_uri
            ),
            "if the journal was edited by hand, restore it or remove the broken entry",
        )
    })?;
    Ok(entries.into_iter().map(|e| (e.id.clone(), e)).collect())
}

/// The newest event of a kind (e.g. the last `backup-taken`), if any.
pub async fn last_event(store: &Store, kind: &str) -> Result<Option<Document>> {
    store
        .db
        .collection::<Document>(EVENTS)
        .find_one(doc! { "kind": kind })
        .sort(doc! { "_id": -1 })
        .await
        .map_err(|e| db_error(store, e))
}
