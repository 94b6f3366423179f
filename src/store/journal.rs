//! The journal: one document per migration (its current state) plus an append-only history.
//!
//! A step is recorded as `running` before its script starts and settled after it ends, so a
//! crash can never leave work done but unrecorded: a `running` entry whose run is gone is read
//! as interrupted. Settling is keyed by the run id, so a stale run can never overwrite the
//! entry of the run that took over from it.

use std::collections::BTreeMap;
use std::time::Duration;

use bson::{doc, Bson, DateTime, Document};
use futures_util::TryStreamExt;
use serde::{Deserialize, Serialize};

use super::mirror::Mirror;
use super::{Store, EVENTS, JOURNAL, JOURNAL_SCHEMA, JOURNAL_SCHEMA_READ};
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
    /// Undone by `upstep rollback` (its down ran and was verified): not applied.
    RolledBack,
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
            StepStatus::RolledBack => "rolled-back",
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
                .unwrap_or_else(|_| format!("uid {}", nix::unistd::getuid())),
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
    match nix::unistd::gethostname() {
        Ok(name) => name.to_string_lossy().into_owned(),
        Err(_) => "unknown-host".into(),
    }
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
    #[serde(default = "first_schema")]
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
    /// Server time of the running step's last sign of life (renewed with the run's lease).
    #[serde(default)]
    pub heartbeat_at: Option<DateTime>,
    /// Server time until which the running step counts as alive: its run renews this while
    /// the step runs, so a later `heartbeat_until` than the server's clock means "running".
    #[serde(default)]
    pub heartbeat_until: Option<DateTime>,
    /// Server time when this entry was read (not stored: added by the read), so freshness is
    /// judged by the server's clock, never by this machine's.
    #[serde(default, skip_serializing)]
    pub read_at: Option<DateTime>,
    /// "down" while and after `upstep rollback` undoes the step (absent: an upgrade's run).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub direction: Option<String>,
}

fn first_schema() -> i32 {
    1
}

impl JournalEntry {
    /// The step is running and its run renewed its heartbeat recently (by the server's clock
    /// at the time of the read).
    pub fn heartbeat_is_fresh(&self) -> bool {
        self.status == StepStatus::Running
            && matches!((self.heartbeat_until, self.read_at), (Some(until), Some(now)) if until > now)
    }

    /// How long ago (server time) the step last showed a sign of life.
    pub fn heartbeat_age(&self) -> Option<std::time::Duration> {
        let (at, now) = (self.heartbeat_at?, self.read_at?);
        let ms = now.timestamp_millis().saturating_sub(at.timestamp_millis());
        Some(std::time::Duration::from_millis(ms.max(0) as u64))
    }

    /// Another run, possibly on another host, is still running this step: its heartbeat is
    /// fresh and its process is not known to be gone. Nothing may start, settle or retry it.
    pub fn running_elsewhere(&self) -> bool {
        self.heartbeat_is_fresh()
            && !self
                .actor
                .as_ref()
                .is_some_and(Actor::is_dead_local_process)
    }

    /// Who runs it and since when, for messages: "run 65f.. by alice on host-b (pid 12,
    /// script group 34), started ..., last heartbeat 2s ago".
    pub fn describe_run(&self) -> String {
        let mut out = match &self.actor {
            Some(a) => format!(
                "run {} by {} on {} (upstep {}, pid {}",
                a.run_id, a.user, a.host, a.upstep_version, a.pid
            ),
            None => "an unknown run (".to_string(),
        };
        if let Some(pgid) = self.child_pgid {
            out.push_str(&format!(", script process group {pgid}"));
        }
        out.push(')');
        if let Some(started) = self.started_at {
            out.push_str(&format!(", started {}", rfc3339(started)));
        }
        match self.heartbeat_age() {
            Some(age) => out.push_str(&format!(", last heartbeat {}s ago", age.as_secs())),
            None => out.push_str(", no heartbeat recorded"),
        }
        out
    }

    /// The record of the step's last run, for `status`.
    pub fn view(&self) -> EntryView {
        EntryView {
            status: self.status.as_str(),
            attempts: self.attempts,
            tag: self.tag.clone(),
            commit: self.commit.clone(),
            script: self.script.clone(),
            script_sha256: self.script_sha256.clone(),
            started_at: self.started_at.map(rfc3339),
            finished_at: self.finished_at.map(rfc3339),
            duration_ms: self.duration_ms,
            exit_code: self.exit_code,
            signal: self.signal,
            ended_by: self.ended_by.clone(),
            reason: self.reason.clone(),
            run_id: self.actor.as_ref().map(|a| a.run_id.clone()),
            host: self.actor.as_ref().map(|a| a.host.clone()),
            user: self.actor.as_ref().map(|a| a.user.clone()),
            upstep_version: self.actor.as_ref().map(|a| a.upstep_version.clone()),
            child_pid: self.child_pid,
            child_pgid: self.child_pgid,
            heartbeat_at: self.heartbeat_at.map(rfc3339),
            heartbeat_age_ms: self.heartbeat_age().map(|a| a.as_millis() as u64),
            running_elsewhere: self.running_elsewhere(),
            backup: self.backup.clone(),
            output_tail: self.output_tail.clone(),
        }
    }

    /// One line for `status`: the outcome, then where, when and by whom it ran.
    pub fn summary(&self) -> String {
        let mut parts = Vec::new();
        if self.status == StepStatus::Running {
            parts.push(if self.running_elsewhere() {
                format!("running elsewhere: {}", self.describe_run())
            } else {
                format!("its run is gone: {}", self.describe_run())
            });
        } else if let Some(reason) = self.reason.as_deref().filter(|r| !r.is_empty()) {
            parts.push(reason.to_string());
        }
        if let Some(tag) = &self.tag {
            let commit = self
                .commit
                .as_deref()
                .map(|c| format!(" (commit {})", &c[..c.len().min(12)]))
                .unwrap_or_default();
            parts.push(format!("at {tag}{commit}"));
        }
        if self.attempts > 1 {
            parts.push(format!("attempt {}", self.attempts));
        }
        if let (Some(finished), Some(ms)) = (self.finished_at, self.duration_ms) {
            parts.push(format!(
                "finished {} after {:.1}s",
                rfc3339(finished),
                ms as f64 / 1000.0
            ));
        }
        if let (Some(a), true) = (&self.actor, self.status != StepStatus::Running) {
            parts.push(format!("by {} on {}", a.user, a.host));
        }
        if let Some(backup) = &self.backup {
            parts.push(format!("backup before it: {backup}"));
        }
        if matches!(self.status, StepStatus::Failed | StepStatus::Interrupted) {
            if let Some(last) = self.output_tail.last() {
                parts.push(format!("last output: {last}"));
            }
        }
        parts.join("; ")
    }
}

fn rfc3339(at: DateTime) -> String {
    at.try_to_rfc3339_string().unwrap_or_default()
}

/// A journal entry as `status --json` shows it (stable names: a contract).
#[derive(Debug, Clone, Serialize)]
pub struct EntryView {
    pub status: &'static str,
    pub attempts: i32,
    pub tag: Option<String>,
    pub commit: Option<String>,
    pub script: Option<String>,
    pub script_sha256: Option<String>,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub duration_ms: Option<i64>,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub ended_by: Option<String>,
    pub reason: Option<String>,
    pub run_id: Option<String>,
    pub host: Option<String>,
    pub user: Option<String>,
    pub upstep_version: Option<String>,
    pub child_pid: Option<i64>,
    pub child_pgid: Option<i64>,
    pub heartbeat_at: Option<String>,
    pub heartbeat_age_ms: Option<u64>,
    pub running_elsewhere: bool,
    pub backup: Option<String>,
    pub output_tail: Vec<String>,
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

enum_with_all! {
    /// How a step's last attempt ended: the journal's `ended_by`, and the `step-finished`
    /// event's. docs/unattended.md explains each to the operator (a test keeps them equal).
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum EndedBy {
        /// The script exited by itself (with any code).
        Exited,
        /// It printed a done line and upstep ended it.
        DoneLine,
        /// It went silent and idle for its quiet window and upstep ended it.
        QuietWindow,
        /// It ran past `--step-timeout` and upstep ended it.
        Timeout,
        /// A signal (Ctrl-C, SIGTERM, SIGHUP) stopped the run and the step with it.
        Signal,
        /// The SSH tunnel to the database dropped while it ran.
        TunnelDropped,
        /// The run lock was lost (another run took it over) while it ran.
        LeaseLost,
        /// Its script could not be started (a missing program or directory, no permission).
        SpawnFailed,
        /// upstep could not watch it to its end (waiting on it failed).
        Error,
        /// Journal only: a later run found it `running` with its run gone and settled it.
        Abandoned,
        /// Journal only: recorded by `upstep mark` (or an answer at the prompt), not by running.
        Marked,
    }
}

impl EndedBy {
    pub fn as_str(self) -> &'static str {
        match self {
            EndedBy::Exited => "exited",
            EndedBy::DoneLine => "done-line",
            EndedBy::QuietWindow => "quiet-window",
            EndedBy::Timeout => "timeout",
            EndedBy::Signal => "signal",
            EndedBy::TunnelDropped => "tunnel-dropped",
            EndedBy::LeaseLost => "lease-lost",
            EndedBy::SpawnFailed => "spawn-failed",
            EndedBy::Error => "error",
            EndedBy::Abandoned => "abandoned",
            EndedBy::Marked => "marked",
        }
    }

    /// Whether a run's `step-finished` event can carry it: the others are written to the
    /// journal only, by a later run or by `upstep mark`.
    pub fn in_step_finished(self) -> bool {
        !matches!(self, EndedBy::Abandoned | EndedBy::Marked)
    }
}

/// What settling a step records.
#[derive(Debug, Clone)]
pub struct StepEnd {
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub ended_by: EndedBy,
    pub reason: String,
    pub duration_ms: i64,
    pub output_tail: Vec<String>,
}

impl StepEnd {
    /// An ending with no exit, signal, time or output to record (the script never ran, or
    /// its end was not seen).
    pub fn without_outcome(ended_by: EndedBy, reason: impl Into<String>) -> StepEnd {
        StepEnd {
            exit_code: None,
            signal: None,
            ended_by,
            reason: reason.into(),
            duration_ms: 0,
            output_tail: Vec::new(),
        }
    }
}

/// How long a step's heartbeat counts as fresh when the run names no lease.
pub const DEFAULT_HEARTBEAT_LEASE: Duration = Duration::from_secs(60);

// The documents the journal sends, one builder each, so the operator-version test
// (`store::operators`) walks exactly what goes to the server.

/// One entry by id.
pub(crate) fn entry_filter(id: &str) -> Document {
    doc! { "_id": id }
}

/// One entry while `run_id` owns it (settling is keyed by the run).
pub(crate) fn owned_filter(id: &str, run_id: &str) -> Document {
    doc! { "_id": id, "actor.run_id": run_id }
}

/// The running entries of one run (its heartbeat renews them).
pub(crate) fn running_of_run_filter(run_id: &str) -> Document {
    doc! { "actor.run_id": run_id, "status": StepStatus::Running.as_str() }
}

/// True on the server while the entry's heartbeat has not run out (server clock).
pub(crate) fn heartbeat_fresh_expr() -> Document {
    doc! { "$gt": ["$heartbeat_until", "$$NOW"] }
}

/// A `running` entry of `run_id`, only while its heartbeat is stale (or, for a run known to
/// be dead, whatever its heartbeat says).
pub(crate) fn abandoned_filter(id: &str, run_id: &str, known_dead: bool) -> Document {
    let mut filter =
        doc! { "_id": id, "status": StepStatus::Running.as_str(), "actor.run_id": run_id };
    if !known_dead {
        filter.insert("$expr", doc! { "$not": [heartbeat_fresh_expr()] });
    }
    filter
}

/// Entries written by a newer upstep.
pub(crate) fn newer_schema_filter() -> Document {
    doc! { "schema": { "$gt": JOURNAL_SCHEMA_READ } }
}

/// Every entry, with the server's clock at the read (`read_at`).
pub(crate) fn read_pipeline() -> Vec<Document> {
    vec![doc! { "$addFields": { "read_at": "$$NOW" } }]
}

/// Sets the heartbeat of running entries: now, and fresh until `until` (the run's lease end).
pub(crate) fn heartbeat_set(until: Bson) -> Document {
    doc! { "heartbeat_at": "$$NOW", "heartbeat_until": until }
}

pub(crate) fn beat_pipeline(until: DateTime) -> Vec<Document> {
    vec![doc! { "$set": heartbeat_set(Bson::DateTime(until)) }]
}

/// Fields that only mean something while a step runs.
const WHILE_RUNNING: [&str; 4] = ["child_pid", "child_pgid", "heartbeat_at", "heartbeat_until"];

fn unset_while_running() -> Document {
    WHILE_RUNNING
        .iter()
        .map(|f| (f.to_string(), Bson::from("")))
        .collect()
}

/// Records the step as running, in one server-side write: the start time and the first
/// heartbeat come from the server's clock. Values from outside are `$literal`, so a path or
/// name starting with `$` is never read as a field reference.
pub(crate) fn begin_pipeline(
    start: &StepStart<'_>,
    actor: &Actor,
    heartbeat_until: Bson,
) -> Result<Vec<Document>> {
    let actor = bson::to_bson(actor).map_err(|e| Error::Internal(e.to_string()))?;
    let literal = |v: Bson| doc! { "$literal": v };
    let mut set = doc! {
        "schema": JOURNAL_SCHEMA,
        "status": StepStatus::Running.as_str(),
        "tag": literal(start.tag.into()),
        "commit": literal(start.commit.into()),
        "script": literal(start.script.into()),
        "script_sha256": literal(start.script_sha256.into()),
        "actor": literal(actor),
        "backup": literal(start.backup.map(Bson::from).unwrap_or(Bson::Null)),
        "output_tail": literal(Bson::Array(Vec::new())),
        "started_at": "$$NOW",
        "attempts": { "$add": [{ "$ifNull": ["$attempts", 0] }, 1] },
    };
    set.extend(heartbeat_set(heartbeat_until));
    Ok(vec![
        doc! { "$set": set },
        doc! { "$unset": ["finished_at", "duration_ms", "exit_code", "signal", "ended_by", "reason", "child_pid", "child_pgid", "direction"] },
    ])
}

pub(crate) fn record_child_update(pid: u32, pgid: i32) -> Document {
    doc! { "$set": { "child_pid": pid as i64, "child_pgid": pgid as i64 } }
}

pub(crate) fn settle_update(status: StepStatus, end: &StepEnd) -> Document {
    doc! {
        "$set": {
            "status": status.as_str(),
            "exit_code": end.exit_code,
            "signal": end.signal,
            "ended_by": end.ended_by.as_str(),
            "reason": &end.reason,
            "duration_ms": end.duration_ms,
            "output_tail": &end.output_tail,
        },
        "$currentDate": { "finished_at": true },
        "$unset": unset_while_running(),
    }
}

pub(crate) fn abandoned_update(reason: &str) -> Document {
    doc! {
        "$set": { "status": StepStatus::Interrupted.as_str(), "ended_by": EndedBy::Abandoned.as_str(), "reason": reason },
        "$currentDate": { "finished_at": true },
        "$unset": unset_while_running(),
    }
}

pub(crate) fn mark_update(status: StepStatus, reason: &str, actor: &Actor) -> Result<Document> {
    let actor = bson::to_bson(actor).map_err(|e| Error::Internal(e.to_string()))?;
    // A mark ends whatever a rollback recorded (`direction`): the entry is schema 1 again.
    let mut unset = unset_while_running();
    unset.insert("direction", "");
    Ok(doc! {
        "$set": { "schema": JOURNAL_SCHEMA, "status": status.as_str(), "reason": reason, "ended_by": EndedBy::Marked.as_str(), "actor": actor },
        "$currentDate": { "finished_at": true },
        "$setOnInsert": { "attempts": 0 },
        "$unset": unset,
    })
}

/// Events of one kind, and the order that reads them newest first.
pub(crate) fn event_kind_filter(kind: &str) -> Document {
    doc! { "kind": kind }
}

pub(crate) fn oldest_first() -> Document {
    doc! { "_id": 1 }
}

pub(crate) fn newest_first() -> Document {
    doc! { "_id": -1 }
}

/// How long a step's first heartbeat lasts. The run renews its lease every third of it, so
/// the lease always has at least two thirds left: a first heartbeat that long never outlasts
/// the lease, and the heartbeat task renews it within a third.
fn first_heartbeat_span(lease: Duration) -> Duration {
    lease - lease / 3
}

/// The journal of one database, for one run (actor).
pub struct Journal {
    store: Store,
    actor: Actor,
    mirror: Mirror,
    heartbeat_lease: Duration,
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
            heartbeat_lease: DEFAULT_HEARTBEAT_LEASE,
        }
    }

    /// The run's lease, for a step's first heartbeat when this run holds no lock (with the
    /// lock, the heartbeat ends with the lease; the run's heartbeat task renews both, see
    /// [`beat`]).
    pub fn with_heartbeat_lease(mut self, lease: Duration) -> Journal {
        self.heartbeat_lease = lease;
        self
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

    /// Record the step as running (before its script starts), with a first heartbeat that
    /// ends with this run's lease (without a lock, e.g. in tests: two thirds of the lease).
    pub async fn begin_step(&self, start: &StepStart<'_>) -> Result<()> {
        let heartbeat_until = match super::lock::RunLock::new(&self.store).current().await? {
            Some(lock) if lock.holder.run_id == self.actor.run_id => {
                Bson::DateTime(lock.lease_until)
            }
            _ => super::server_now_plus(first_heartbeat_span(self.heartbeat_lease)),
        };
        self.raw_coll()
            .update_one(
                entry_filter(start.id),
                begin_pipeline(start, &self.actor, heartbeat_until)?,
            )
            .upsert(true)
            .await
            .map_err(|e| db_error(&self.store, e))?;
        self.event(
            "step-started",
            Some(start.id),
            doc! { "tag": start.tag, "commit": start.commit, "script_sha256": start.script_sha256 },
        )
        .await
    }

    /// Record the child's pid and process group right after it was spawned.
    pub async fn record_child(&self, id: &str, pid: u32, pgid: i32) -> Result<()> {
        self.raw_coll()
            .update_one(
                owned_filter(id, &self.actor.run_id),
                record_child_update(pid, pgid),
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
                owned_filter(id, &self.actor.run_id),
                settle_update(status, end),
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
            doc! { "status": status.as_str(), "ended_by": end.ended_by.as_str(), "reason": &end.reason, "exit_code": end.exit_code, "signal": end.signal, "duration_ms": end.duration_ms },
        )
        .await
    }

    /// Settle an entry left `running` by a run that is gone: it becomes interrupted. Unless
    /// that run is `known_dead` (its process on this host is gone), the server settles it only
    /// while its heartbeat is stale, so a run still alive elsewhere is never overruled.
    /// Returns whether it was settled.
    pub async fn settle_abandoned(
        &self,
        entry: &JournalEntry,
        reason: &str,
        known_dead: bool,
    ) -> Result<bool> {
        let old_run = entry
            .actor
            .as_ref()
            .map(|a| a.run_id.clone())
            .unwrap_or_default();
        let result = self
            .raw_coll()
            .update_one(
                abandoned_filter(&entry.id, &old_run, known_dead),
                abandoned_update(reason),
            )
            .await
            .map_err(|e| db_error(&self.store, e))?;
        if result.matched_count == 0 {
            return Ok(false);
        }
        self.event(
            "step-abandoned",
            Some(&entry.id),
            doc! { "previous_run": old_run, "reason": reason },
        )
        .await?;
        Ok(true)
    }

    /// Record a migration as applied or pending without running it (`upstep mark`). A step
    /// another run is still running (fresh heartbeat) is refused: its run settles it.
    pub async fn mark(&self, id: &str, status: StepStatus, reason: &str) -> Result<()> {
        if let Some(entry) = self.entries().await?.get(id) {
            let theirs = entry
                .actor
                .as_ref()
                .is_some_and(|a| a.run_id != self.actor.run_id);
            if theirs && entry.running_elsewhere() {
                return Err(Error::Locked(format!(
                    "{id} is running elsewhere: {}; it was not marked\n  fix: wait for that run to finish (its heartbeat stops when it ends), then mark it if still needed",
                    entry.describe_run()
                )));
            }
        }
        self.raw_coll()
            .update_one(entry_filter(id), mark_update(status, reason, &self.actor)?)
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
            .sort(oldest_first())
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

/// Renew the heartbeat of every step `actor`'s run has running, until `until`: the end of
/// the lease the run just renewed, so the heartbeat never outlives the lease and a run that
/// takes over an expired lease never mistakes the dead run's step for a live one. Returns how
/// many entries it renewed.
pub async fn beat(store: &Store, actor: &Actor, until: DateTime) -> Result<u64> {
    let result = store
        .db
        .collection::<Document>(JOURNAL)
        .update_many(running_of_run_filter(&actor.run_id), beat_pipeline(until))
        .await
        .map_err(|e| db_error(store, e))?;
    Ok(result.modified_count)
}

/// Refuse a journal or lock written by a newer upstep before anything is written.
pub async fn ensure_readable(store: &Store) -> Result<()> {
    let newer = store
        .db
        .collection::<Document>(JOURNAL)
        .find_one(newer_schema_filter())
        .await
        .map_err(|e| db_error(store, e))?;
    if let Some(doc) = newer {
        return Err(newer_journal(&doc));
    }
    super::lock::RunLock::new(store).current().await.map(|_| ())
}

fn newer_journal(doc: &Document) -> Error {
    let writer = doc.get_document("actor").ok().map(|a| {
        format!(
            "upstep {} on {}",
            a.get_str("upstep_version").unwrap_or("?"),
            a.get_str("host").unwrap_or("?")
        )
    });
    super::newer_schema_error("journal", super::schema_of(doc), writer.as_deref())
}

/// Every journal entry of a database, by id (read-only helper for `status` and `detect`).
/// The schema of every entry is checked before any is interpreted: a journal written by a
/// newer upstep is refused as such, never misread or reported as a connection problem.
pub async fn read_entries(store: &Store) -> Result<BTreeMap<String, JournalEntry>> {
    let cursor = store
        .db
        .collection::<Document>(JOURNAL)
        .aggregate(read_pipeline())
        .await
        .map_err(|e| db_error(store, e))?;
    let raw: Vec<Document> = cursor.try_collect().await.map_err(|e| db_error(store, e))?;
    if let Some(newest) = raw.iter().max_by_key(|d| super::schema_of(d)) {
        if super::schema_of(newest) > i64::from(JOURNAL_SCHEMA_READ) {
            return Err(newer_journal(newest));
        }
    }
    let mut entries = BTreeMap::new();
    for doc in raw {
        let id = doc
            .get("_id")
            .map(|v| v.to_string())
            .unwrap_or_else(|| "?".into());
        let entry: JournalEntry = bson::from_document(doc).map_err(|e| {
            Error::Preflight(format!(
                "upstep's journal in {} has an entry it cannot read (_id {id}): {e}\n  fix: if it was edited by hand, restore it, or remove that entry and record the step again with `upstep mark`",
                store.redacted_uri
            ))
        })?;
        entries.insert(entry.id.clone(), entry);
    }
    Ok(entries)
}

/// The newest event of a kind (e.g. the last `backup-taken`), if any.
pub async fn last_event(store: &Store, kind: &str) -> Result<Option<Document>> {
    store
        .db
        .collection::<Document>(EVENTS)
        .find_one(event_kind_filter(kind))
        .sort(newest_first())
        .await
        .map_err(|e| db_error(store, e))
}
