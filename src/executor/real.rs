//! The real effects: thin wrappers over `store/`, `git/`, `runner/` and `tunnel.rs`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::{BoxFuture, LocalBoxFuture};

use crate::detect::{DetectOptions, DetectReport};
use crate::error::{Error, Result};
use crate::git::{GitRepo, TagInfo, Worktrees};
use crate::plan::PlanGroup;
use crate::redact::Uri;
use crate::release_map::{Fingerprint, ReleaseMap};
use crate::runner::process::{
    self, ChildSpec, FinishProbe, OutputLine, RunOutcome, RunningChild, StopRequest, Watch,
};
use crate::runner::toolchain::{self, Toolchain, ToolchainRequest};
use crate::store::fingerprint::{self, EvalOptions, FingerprintReport};
use crate::store::journal::{Actor, Journal, JournalEntry, StepEnd, StepStart, StepStatus};
use crate::store::lock::{Acquire, LockDoc, RunLock};
use crate::store::mirror::Mirror;
use crate::store::Store;
use crate::tunnel::{Tunnel, TunnelState};
use crate::ui::events::{Reporter, RunEvent};

use super::effects::{
    BackupTaken, Child, Children, Clock, DataChecks, RunStore, TunnelLink, Workspace,
};

impl DataChecks for Store {
    fn check<'a>(
        &'a self,
        fingerprint: &'a Fingerprint,
        opts: EvalOptions,
    ) -> BoxFuture<'a, FingerprintReport> {
        Box::pin(fingerprint::evaluate(&self.db, fingerprint, opts))
    }
}

/// The journal, lock and data checks in the target database, as this run's actor.
pub struct MongoRunStore {
    store: Store,
    journal: Journal,
    lock: RunLock,
    /// For the backup, which opens its own connection.
    mongo_uri: Uri,
    lease: Duration,
}

impl MongoRunStore {
    pub fn new(store: &Store, mongo_uri: &Uri, state_dir: &Path, lease: Duration) -> Self {
        let mirror = Mirror::for_database(state_dir, &store.redacted_uri);
        MongoRunStore {
            store: store.clone(),
            journal: Journal::new(store, Actor::current(), mirror).with_heartbeat_lease(lease),
            lock: RunLock::new(store),
            mongo_uri: mongo_uri.clone(),
            lease,
        }
    }
}

impl RunStore for MongoRunStore {
    fn next_run(&self) -> Arc<dyn RunStore> {
        Arc::new(MongoRunStore {
            store: self.store.clone(),
            journal: Journal::new(&self.store, Actor::current(), self.journal.mirror().clone())
                .with_heartbeat_lease(self.lease),
            lock: RunLock::new(&self.store),
            mongo_uri: self.mongo_uri.clone(),
            lease: self.lease,
        })
    }
    fn actor(&self) -> &Actor {
        self.journal.actor()
    }
    fn mirror(&self) -> &Mirror {
        self.journal.mirror()
    }
    fn checks(&self) -> &dyn DataChecks {
        &self.store
    }
    fn ensure_readable(&self) -> BoxFuture<'_, Result<()>> {
        Box::pin(crate::store::journal::ensure_readable(&self.store))
    }
    fn entries(&self) -> BoxFuture<'_, Result<BTreeMap<String, JournalEntry>>> {
        Box::pin(self.journal.entries())
    }
    fn event<'a>(
        &'a self,
        kind: &'a str,
        id: Option<&'a str>,
        details: bson::Document,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(self.journal.event(kind, id, details))
    }
    fn begin_step<'a>(&'a self, start: &'a StepStart<'a>) -> BoxFuture<'a, Result<()>> {
        Box::pin(self.journal.begin_step(start))
    }
    fn record_child<'a>(&'a self, id: &'a str, pid: u32, pgid: i32) -> BoxFuture<'a, Result<()>> {
        Box::pin(self.journal.record_child(id, pid, pgid))
    }
    fn settle<'a>(
        &'a self,
        id: &'a str,
        status: StepStatus,
        end: &'a StepEnd,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(self.journal.settle(id, status, end))
    }
    fn settle_abandoned<'a>(
        &'a self,
        entry: &'a JournalEntry,
        reason: &'a str,
        known_dead: bool,
    ) -> BoxFuture<'a, Result<bool>> {
        Box::pin(self.journal.settle_abandoned(entry, reason, known_dead))
    }
    fn mark<'a>(
        &'a self,
        id: &'a str,
        status: StepStatus,
        reason: &'a str,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(super::lock::mark_locked(&self.store, id, status, reason))
    }
    fn mark_held<'a>(
        &'a self,
        id: &'a str,
        status: StepStatus,
        reason: &'a str,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(self.journal.mark(id, status, reason))
    }
    fn try_acquire(&self, lease: Duration) -> BoxFuture<'_, Result<Acquire>> {
        Box::pin(self.lock.try_acquire(self.journal.actor(), lease))
    }
    fn take_over<'a>(&'a self, dead: &'a LockDoc, lease: Duration) -> BoxFuture<'a, Result<bool>> {
        Box::pin(self.lock.take_over(dead, self.journal.actor(), lease))
    }
    fn renew_lease(&self, lease: Duration) -> BoxFuture<'_, Result<Option<bson::DateTime>>> {
        Box::pin(self.lock.renew_lease(self.journal.actor(), lease))
    }
    fn beat(&self, until: bson::DateTime) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            crate::store::journal::beat(&self.store, self.journal.actor(), until).await?;
            Ok(())
        })
    }
    fn release(&self) -> BoxFuture<'_, Result<()>> {
        Box::pin(self.lock.release(self.journal.actor()))
    }
    fn backup<'a>(&'a self, dir: &'a Path) -> BoxFuture<'a, Result<BackupTaken>> {
        Box::pin(async move {
            let options = crate::backup::BackupOptions {
                out_dir: dir.to_path_buf(),
                collections: None,
                gzip: false,
            };
            let manifest = crate::backup::backup(
                self.mongo_uri.expose(),
                &options,
                &crate::backup::NoProgress,
            )
            .await?;
            Ok(BackupTaken {
                documents: manifest.collections.iter().map(|c| c.documents).sum(),
                created_at: manifest.created_at,
            })
        })
    }
    fn detect<'a>(
        &'a self,
        map: &'a ReleaseMap,
        opts: DetectOptions,
    ) -> LocalBoxFuture<'a, Result<DetectReport>> {
        Box::pin(crate::detect::detect(map, &self.store, opts, &|_, _| {}))
    }
}

/// The project's repository and upstep's worktrees of it.
pub struct GitWorkspace<'a> {
    pub repo: &'a GitRepo,
    pub worktrees: Worktrees,
    pub cache_root: PathBuf,
    pub allow_provision: bool,
    /// `host:port` -> whether it answered: one probe per run, every decision from it.
    probed: std::sync::Mutex<BTreeMap<String, bool>>,
}

impl<'a> GitWorkspace<'a> {
    pub fn new(repo: &'a GitRepo, cache_root: &Path, allow_provision: bool) -> GitWorkspace<'a> {
        GitWorkspace {
            repo,
            worktrees: Worktrees::new(cache_root),
            cache_root: cache_root.to_path_buf(),
            allow_provision,
            probed: Default::default(),
        }
    }
}

impl GitWorkspace<'_> {
    /// Whether `host:port` answers, probed off the async thread once per run.
    async fn probe(&self, authority: &str) -> bool {
        if let Some(known) = self
            .probed
            .lock()
            .ok()
            .and_then(|p| p.get(authority).copied())
        {
            return known;
        }
        let asked = authority.to_string();
        let up = tokio::task::spawn_blocking(move || crate::downloads::reachable(&asked))
            .await
            .unwrap_or(false);
        if let Ok(mut probed) = self.probed.lock() {
            probed.insert(authority.to_string(), up);
        }
        up
    }
}

impl Workspace for GitWorkspace<'_> {
    fn resolve_tag(&self, group: &PlanGroup) -> Result<TagInfo> {
        crate::repo_facts::resolve_group_ref(self.repo, group)
    }
    fn read_file_at(&self, commit: &str, path: &str) -> Result<Option<Vec<u8>>> {
        self.repo.read_file_at(commit, path)
    }
    fn prepare<'a>(
        &'a self,
        tag: &'a TagInfo,
        repair: bool,
        reporter: &'a mut dyn Reporter,
    ) -> LocalBoxFuture<'a, Result<PathBuf>> {
        Box::pin(async move {
            let worktree =
                prepare_worktree(&self.worktrees, self.repo, tag, repair, reporter).await?;
            Ok(worktree.path)
        })
    }
    fn remove(&self, tag: &TagInfo) -> Result<()> {
        self.worktrees.remove(self.repo, tag)
    }
    fn toolchain<'a>(&'a self, req: &'a ToolchainRequest) -> LocalBoxFuture<'a, Result<Toolchain>> {
        Box::pin(async move {
            toolchain::resolve(
                req,
                &self.cache_root,
                &std::env::var_os("PATH").unwrap_or_default(),
                self.allow_provision,
            )
            .await
        })
    }
    fn reachable<'a>(
        &'a self,
        download: &'a crate::release_map::Download,
    ) -> LocalBoxFuture<'a, bool> {
        Box::pin(async move {
            let Some(authority) = download.authority() else {
                return false;
            };
            self.probe(&authority).await
        })
    }
    fn check_downloads<'a>(
        &'a self,
        map: &'a ReleaseMap,
        running: Vec<(&'a PlanGroup, Option<&'a str>)>,
    ) -> LocalBoxFuture<'a, Result<()>> {
        Box::pin(check_downloads(map, self, running))
    }
}

/// Children in their own process groups (`runner::process`).
pub struct ProcessChildren;

impl Child for RunningChild {
    fn pid(&self) -> u32 {
        RunningChild::pid(self)
    }
    fn pgid(&self) -> i32 {
        RunningChild::pgid(self)
    }
    fn wait<'a>(
        self: Box<Self>,
        watch: Watch,
        stop: tokio::sync::watch::Receiver<StopRequest>,
        probe: Option<&'a mut dyn FinishProbe>,
        on_line: &'a mut dyn FnMut(OutputLine),
    ) -> LocalBoxFuture<'a, Result<RunOutcome>> {
        Box::pin(RunningChild::wait(*self, watch, stop, probe, on_line))
    }
}

impl Children for ProcessChildren {
    fn spawn(&self, spec: &ChildSpec) -> Result<Box<dyn Child>> {
        Ok(Box::new(process::spawn_child(spec)?))
    }
    fn group_alive(&self, pgid: i32) -> bool {
        process::group_alive(pgid)
    }
    fn end_group(&self, pgid: i32, grace: Duration) -> BoxFuture<'static, Result<()>> {
        Box::pin(async move {
            tokio::task::spawn_blocking(move || process::kill_group(pgid, grace))
                .await
                .map_err(|e| Error::Internal(e.to_string()))
        })
    }
}

/// The wall clock and tokio's timers.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }
    fn sleep(&self, period: Duration) -> BoxFuture<'static, ()> {
        Box::pin(tokio::time::sleep(period))
    }
}

impl TunnelLink for Tunnel {
    fn watch(&self) -> tokio::sync::watch::Receiver<TunnelState> {
        Tunnel::watch(self)
    }
    fn reopen(&mut self, retries: u32, backoff: Duration) -> LocalBoxFuture<'_, Result<()>> {
        Box::pin(Tunnel::reopen(self, retries, backoff))
    }
}

/// A checkout, run on its own thread with a repository handle of its own.
type CheckoutWork = dyn FnOnce(&GitRepo) -> Result<crate::git::Worktree> + Send;

/// The tag's worktree. One damaged by an interrupted checkout holds nothing but upstep's own
/// partial work, so it is rebuilt at once; one with local changes may hold someone's
/// debugging, so it is reset only with --repair. The checkout runs on a blocking thread so a
/// signal is heard meanwhile: dropped on a stop, it leaves a worktree without its stamp, which
/// the next run rebuilds.
async fn prepare_worktree(
    worktrees: &Worktrees,
    repo: &GitRepo,
    tag: &crate::git::TagInfo,
    repair: bool,
    reporter: &mut dyn Reporter,
) -> Result<crate::git::Worktree> {
    // libgit2's handle stays on this thread; the checkout thread opens its own. A plain thread,
    // not spawn_blocking: a runtime shutting down waits for its blocking tasks, so a stopped
    // run would wait for the checkout it abandoned.
    let blocking = |work: Box<CheckoutWork>| {
        let path = repo.path().to_path_buf();
        async move {
            let (tx, rx) = tokio::sync::oneshot::channel();
            std::thread::Builder::new()
                .name("upstep-checkout".into())
                .spawn(move || {
                    let _ = tx.send(GitRepo::open(&path).and_then(|repo| work(&repo)));
                })
                .map_err(|e| Error::Internal(format!("cannot start the checkout thread: {e}")))?;
            rx.await
                .map_err(|_| Error::Internal("the checkout thread ended early".into()))?
        }
    };
    let (wt, tg) = (worktrees.clone(), tag.clone());
    match worktrees.status(repo, tag)? {
        crate::git::WorktreeStatus::Damaged { reason } => {
            reporter.report(&RunEvent::Notice {
                message: format!("{}: rebuilding its worktree ({reason})", tag.name),
            });
            blocking(Box::new(move |repo| wt.repair(repo, &tg))).await
        }
        crate::git::WorktreeStatus::Dirty { .. } if repair => {
            reporter.report(&RunEvent::Notice {
                message: format!("{}: resetting its worktree to the tag (--repair)", tag.name),
            });
            blocking(Box::new(move |repo| wt.repair(repo, &tg))).await
        }
        _ => blocking(Box::new(move |repo| wt.ensure(repo, &tg))).await,
    }
}

/// Before anything runs: every download the running tags' installs still fetch must be
/// reachable, or the run stops here naming the dependency (no step is started).
async fn check_downloads(
    map: &ReleaseMap,
    workspace: &GitWorkspace<'_>,
    running: Vec<(&PlanGroup, Option<&str>)>,
) -> Result<()> {
    let repo = workspace.repo;
    let mut needs = Vec::new();
    for (group, profile) in running {
        let tag = crate::repo_facts::resolve_group_ref(repo, group)?;
        needs.extend(
            crate::downloads::needed(map, group, profile)
                .into_iter()
                .filter(|n| crate::downloads::still_fetched(repo, &tag.commit, n.download)),
        );
    }
    let mut answers = BTreeMap::new();
    for authority in needs.iter().filter_map(|n| n.download.authority()) {
        let up = workspace.probe(&authority).await;
        answers.insert(authority, up);
    }
    let blocked: Vec<String> =
        crate::downloads::checks(&needs, &mut |a| answers.get(a).copied().unwrap_or(false))
            .into_iter()
            .filter(|c| c.severity == crate::preflight::Severity::Blocker)
            .map(|c| format!("{}\n    fix: {}", c.reason, c.fix.unwrap_or_default()))
            .collect();
    if blocked.is_empty() {
        return Ok(());
    }
    Err(Error::Preflight(format!(
        "{} the setup needs cannot be reached; nothing was run:\n  {}",
        crate::words::count(blocked.len(), "download"),
        blocked.join("\n  ")
    )))
}
