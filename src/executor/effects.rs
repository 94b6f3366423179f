//! What the executor does to the world, each behind a small trait: the database (journal, lock,
//! data checks, backup), the project's code (worktrees, toolchains, downloads), the children
//! it runs, the questions it asks, the clock, the tunnel, and what surrounds a run (the
//! services and checks before it, the signal handlers). `real.rs` wraps today's `store/`,
//! `git/`, `runner/`, `tunnel.rs` and the terminal; `fakes.rs` stands in for them in tests.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::{BoxFuture, LocalBoxFuture};

use crate::detect::{DetectOptions, DetectReport};
use crate::error::Result;
use crate::git::TagInfo;
use crate::plan::{Plan, PlanGroup};
use crate::release_map::{Fingerprint, ReleaseMap};
use crate::runner::process::{FinishProbe, OutputLine, RunOutcome, StopRequest, Watch};
use crate::runner::signals::SignalWatcher;
use crate::runner::toolchain::{Toolchain, ToolchainRequest};
use crate::store::fingerprint::{EvalOptions, FingerprintReport};
use crate::store::journal::{Actor, JournalEntry, StepEnd, StepStart, StepStatus};
use crate::store::lock::{Acquire, LockDoc};
use crate::store::mirror::Mirror;
use crate::tunnel::TunnelState;
use crate::ui::events::Reporter;

use super::{DecidedStep, UpgradeOptions};

/// The data checks (read-only): also what `status`, `plan --detect` and `doctor` read.
pub trait DataChecks: Send + Sync {
    fn check<'a>(
        &'a self,
        fingerprint: &'a Fingerprint,
        opts: EvalOptions,
    ) -> BoxFuture<'a, FingerprintReport>;
}

/// What a finished backup says.
#[derive(Debug, Clone)]
pub struct BackupTaken {
    pub created_at: String,
    pub documents: u64,
}

/// The database as a run uses it: the journal (as this run's actor), the run lock, the data
/// checks, and the backup. Shared with the heartbeat task, hence `Send + Sync`.
pub trait RunStore: Send + Sync {
    /// The same database for the next run (a new actor: its own run id, logs and lock).
    fn next_run(&self) -> Arc<dyn RunStore>;
    fn actor(&self) -> &Actor;
    /// The local copy of the journal's events (what survives a dropped tunnel).
    fn mirror(&self) -> &Mirror;
    fn checks(&self) -> &dyn DataChecks;
    /// Refuses a journal or lock written by a newer upstep.
    fn ensure_readable(&self) -> BoxFuture<'_, Result<()>>;
    fn entries(&self) -> BoxFuture<'_, Result<BTreeMap<String, JournalEntry>>>;
    fn event<'a>(
        &'a self,
        kind: &'a str,
        id: Option<&'a str>,
        details: bson::Document,
    ) -> BoxFuture<'a, Result<()>>;
    fn begin_step<'a>(&'a self, start: &'a StepStart<'a>) -> BoxFuture<'a, Result<()>>;
    fn record_child<'a>(&'a self, id: &'a str, pid: u32, pgid: i32) -> BoxFuture<'a, Result<()>>;
    fn settle<'a>(
        &'a self,
        id: &'a str,
        status: StepStatus,
        end: &'a StepEnd,
    ) -> BoxFuture<'a, Result<()>>;
    /// Settle a step a gone run left `running`; false when its heartbeat came back.
    fn settle_abandoned<'a>(
        &'a self,
        entry: &'a JournalEntry,
        reason: &'a str,
        known_dead: bool,
    ) -> BoxFuture<'a, Result<bool>>;
    /// Record a mark under the run lock (the answer to a question about a step).
    fn mark<'a>(
        &'a self,
        id: &'a str,
        status: StepStatus,
        reason: &'a str,
    ) -> BoxFuture<'a, Result<()>>;
    /// Record a mark while this run holds the lock (a step its migration tool already ran).
    fn mark_held<'a>(
        &'a self,
        id: &'a str,
        status: StepStatus,
        reason: &'a str,
    ) -> BoxFuture<'a, Result<()>>;
    fn try_acquire(&self, lease: Duration) -> BoxFuture<'_, Result<Acquire>>;
    fn take_over<'a>(&'a self, dead: &'a LockDoc, lease: Duration) -> BoxFuture<'a, Result<bool>>;
    /// Renew the lease; its new end, or None when the lock is no longer ours.
    fn renew_lease(&self, lease: Duration) -> BoxFuture<'_, Result<Option<bson::DateTime>>>;
    /// The running step's heartbeat, set to the lease's end.
    fn beat(&self, until: bson::DateTime) -> BoxFuture<'_, Result<()>>;
    fn release(&self) -> BoxFuture<'_, Result<()>>;
    fn backup<'a>(&'a self, dir: &'a Path) -> BoxFuture<'a, Result<BackupTaken>>;
    /// Where the data stands (the guided flow shows it before asking for the target).
    fn detect<'a>(
        &'a self,
        map: &'a ReleaseMap,
        opts: DetectOptions,
    ) -> LocalBoxFuture<'a, Result<DetectReport>>;
}

/// The project's code: tags, worktrees, toolchains, and the downloads their setup fetches.
pub trait Workspace {
    fn resolve_tag(&self, group: &PlanGroup) -> Result<TagInfo>;
    fn read_file_at(&self, commit: &str, path: &str) -> Result<Option<Vec<u8>>>;
    /// The tag's worktree, checked out (rebuilt when damaged, reset with `repair`).
    fn prepare<'a>(
        &'a self,
        tag: &'a TagInfo,
        repair: bool,
        reporter: &'a mut dyn Reporter,
    ) -> LocalBoxFuture<'a, Result<PathBuf>>;
    fn remove(&self, tag: &TagInfo) -> Result<()>;
    fn toolchain<'a>(&'a self, req: &'a ToolchainRequest) -> LocalBoxFuture<'a, Result<Toolchain>>;
    /// Whether the host of a download answers (asked once per host and port in a run, so the
    /// downloads check and the stand-ins decided at each tag's setup agree).
    fn reachable<'a>(
        &'a self,
        download: &'a crate::release_map::Download,
    ) -> LocalBoxFuture<'a, bool>;
    /// Every download the running tags' installs still fetch must be reachable.
    fn check_downloads<'a>(
        &'a self,
        map: &'a ReleaseMap,
        running: Vec<(&'a PlanGroup, Option<&'a str>)>,
    ) -> LocalBoxFuture<'a, Result<()>>;
}

/// A child being run (a script or a setup command).
pub trait Child {
    fn pid(&self) -> u32;
    fn pgid(&self) -> i32;
    /// Streams its output until it ends (see `RunningChild::wait`).
    fn wait<'a>(
        self: Box<Self>,
        watch: Watch,
        stop: tokio::sync::watch::Receiver<StopRequest>,
        probe: Option<&'a mut dyn FinishProbe>,
        on_line: &'a mut dyn FnMut(OutputLine),
    ) -> LocalBoxFuture<'a, Result<RunOutcome>>;
}

/// Starting children, and ending the groups an earlier run left behind.
pub trait Children {
    fn spawn(&self, spec: &crate::runner::process::ChildSpec) -> Result<Box<dyn Child>>;
    fn group_alive(&self, pgid: i32) -> bool;
    fn end_group(&self, pgid: i32, grace: Duration) -> BoxFuture<'static, Result<()>>;
}

/// What a person (or `--yes` / `--approve`, or a test) answers.
pub trait Prompt {
    /// The target, after showing where the data stands.
    fn target(&self, map: &ReleaseMap, detected: &DetectReport) -> Result<semver::Version>;
    /// Steps the journal shows unfinished: retry, mark applied, or stop.
    fn blocked(&self, steps: &[&DecidedStep]) -> Result<Blocked>;
    fn confirm_run(&self, steps: usize) -> Result<bool>;
    /// Whether (and where) to back up before the first step.
    fn backup(&self) -> Result<Option<PathBuf>>;
    /// One step that is not idempotent and that no data check can verify.
    fn approve_step<'a>(&'a self, id: &'a str) -> LocalBoxFuture<'a, Result<bool>>;
    /// The routine confirmation of the risky steps listed just before.
    fn confirm_risky(&self) -> LocalBoxFuture<'_, Result<bool>>;
}

/// The answer about unfinished steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Blocked {
    Retry,
    MarkApplied,
    Stop,
}

/// Time: the lock's wait, the heartbeat's period, durations reported.
pub trait Clock: Send + Sync {
    fn now(&self) -> Instant;
    fn sleep(&self, period: Duration) -> BoxFuture<'static, ()>;
}

/// The SSH tunnel the database is reached through: its liveness, and reopening it.
pub trait TunnelLink {
    fn watch(&self) -> tokio::sync::watch::Receiver<TunnelState>;
    fn reopen(&mut self, retries: u32, backoff: Duration) -> LocalBoxFuture<'_, Result<()>>;
}

/// What surrounds a run, provided by the command layer: once the executor has decided what
/// runs (`facts::before_run`), the services the steps that run need and the checks `doctor`
/// makes on them; then the signal handlers. `full`: every step up to the target; `to_run`:
/// the plan of the steps the run executes (the full plan in a dry run, which checks nothing).
pub trait Surroundings {
    fn prepare<'a>(
        &'a mut self,
        opts: &'a mut UpgradeOptions,
        full: &'a Plan,
        to_run: &'a Plan,
        reporter: &'a mut dyn Reporter,
    ) -> LocalBoxFuture<'a, Result<()>>;
    fn watch_signals(&mut self) -> Result<Arc<SignalWatcher>>;
}

/// Every effect of a run.
pub struct Effects<'a> {
    pub store: Arc<dyn RunStore>,
    /// None: no `--repo` (a run with steps to run stops and says so).
    pub workspace: Option<&'a dyn Workspace>,
    pub children: &'a dyn Children,
    pub clock: Arc<dyn Clock>,
    pub tunnel: Option<&'a mut dyn TunnelLink>,
    pub prompt: &'a dyn Prompt,
    pub surroundings: &'a mut dyn Surroundings,
    pub reporter: &'a mut dyn Reporter,
}
