//! Fakes of every effect, for unit tests of the executor. Each fake appends what it is asked to
//! one shared log (`Log`), so a test can assert the order of everything a run did, and answers
//! from a script the test sets up (the data each check reads, what each child does, how each
//! lease renewal goes, what a person answers).

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::future::{BoxFuture, LocalBoxFuture};

use crate::detect::{DetectOptions, DetectReport};
use crate::error::{Error, Result};
use crate::git::TagInfo;
use crate::plan::{Plan, PlanGroup};
use crate::release_map::{Fingerprint, ReleaseMap};
use crate::runner::process::{
    ChildSpec, Ending, FinishProbe, OutputLine, RunOutcome, StopRequest, Stream, Watch,
};
use crate::runner::signals::{SignalPolicy, SignalWatcher};
use crate::runner::toolchain::{Toolchain, ToolchainRequest};
use crate::store::fingerprint::{EvalOptions, FingerprintReport, FpState};
use crate::store::journal::{Actor, EndedBy, JournalEntry, StepEnd, StepStart, StepStatus};
use crate::store::lock::{Acquire, LockDoc};
use crate::store::mirror::Mirror;
use crate::tunnel::TunnelState;
use crate::ui::events::{Reporter, RunEvent};

use super::effects::{
    BackupTaken, Blocked, Child, Children, Clock, DataChecks, Prompt, RunStore, Surroundings,
    TunnelLink, Workspace,
};
use super::{DecidedStep, UpgradeOptions};

/// What every fake did, in order.
#[derive(Clone, Default)]
pub struct Log(Arc<Mutex<Vec<String>>>);

impl Log {
    pub fn push(&self, line: impl Into<String>) {
        self.0.lock().unwrap().push(line.into());
    }
    pub fn lines(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }
    /// The lines that start with one of `prefixes` (e.g. only the journal's writes).
    pub fn only(&self, prefixes: &[&str]) -> Vec<String> {
        self.lines()
            .into_iter()
            .filter(|l| prefixes.iter().any(|p| l.starts_with(p)))
            .collect()
    }
}

/// A sign of life from the heartbeat: the lease renewed, lost to another run, or an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Renewal {
    Renewed,
    Lost,
    Fails,
}

/// The database: an in-memory journal, lock and data.
pub struct FakeStore {
    pub log: Log,
    actor: Actor,
    mirror: Mirror,
    /// Shared by the runs that follow one another (`next_run`).
    pub state: Arc<Mutex<StoreState>>,
}

#[derive(Default)]
pub struct StoreState {
    pub entries: BTreeMap<String, JournalEntry>,
    /// What each migration's data check says (keyed by its first check's collection, which the
    /// test map names after the migration); absent: applied.
    pub data: BTreeMap<String, FpState>,
    /// Held by another run: `try_acquire` answers `Held`.
    pub held_by: Option<LockDoc>,
    /// How renewals go while the step named here runs (else: renewed).
    pub renewals_during: Option<(String, Renewal)>,
    /// A stop requested once the backup starts (a signal during the backup).
    pub stop_during_backup: Option<Arc<SignalWatcher>>,
    /// Journal writes fail (the database is out of reach) while this is set.
    pub unreachable: bool,
    pub released: bool,
}

impl FakeStore {
    pub fn new(log: &Log, mirror_dir: &Path) -> Arc<FakeStore> {
        Arc::new(FakeStore {
            log: log.clone(),
            actor: Actor::current(),
            mirror: Mirror::for_database(mirror_dir, "mongodb://fake/db"),
            state: Arc::new(Mutex::new(StoreState::default())),
        })
    }

    pub fn with<R>(&self, f: impl FnOnce(&mut StoreState) -> R) -> R {
        f(&mut self.state.lock().unwrap())
    }

    pub fn entry(&self, id: &str) -> Option<JournalEntry> {
        self.with(|s| s.entries.get(id).cloned())
    }

    fn write(&self, line: String) -> Result<()> {
        if self.with(|s| s.unreachable) {
            self.log.push(format!("{line} (database out of reach)"));
            return Err(Error::Internal("the database is out of reach".into()));
        }
        self.log.push(line);
        Ok(())
    }

    fn ready<'a, T: Send + 'a>(value: T) -> BoxFuture<'a, T> {
        Box::pin(std::future::ready(value))
    }
}

/// A journal entry another (dead or live) run left `running`.
pub fn running_entry(id: &str, actor: Actor, pgid: Option<i64>) -> JournalEntry {
    JournalEntry {
        id: id.into(),
        schema: 1,
        status: StepStatus::Running,
        attempts: 1,
        tag: Some("v1.0.0".into()),
        commit: None,
        script: None,
        script_sha256: None,
        started_at: Some(bson::DateTime::now()),
        finished_at: None,
        duration_ms: None,
        exit_code: None,
        signal: None,
        ended_by: None,
        reason: None,
        actor: Some(actor),
        child_pid: pgid,
        child_pgid: pgid,
        output_tail: Vec::new(),
        backup: None,
        heartbeat_at: None,
        heartbeat_until: None,
        read_at: None,
        direction: None,
    }
}

/// An actor on this host whose process is certainly gone.
pub fn dead_actor() -> Actor {
    let mut gone = std::process::Command::new("true")
        .spawn()
        .expect("spawn true");
    let pid = gone.id() as i64;
    gone.wait().expect("wait true");
    Actor {
        pid,
        pid_start: 1,
        ..Actor::current()
    }
}

pub fn lock_of(holder: Actor) -> LockDoc {
    LockDoc {
        holder,
        acquired_at: bson::DateTime::now(),
        lease_until: bson::DateTime::now(),
    }
}

impl DataChecks for FakeStore {
    fn check<'a>(
        &'a self,
        fingerprint: &'a Fingerprint,
        _opts: EvalOptions,
    ) -> BoxFuture<'a, FingerprintReport> {
        let state = match fingerprint {
            Fingerprint::Unknown { .. } => FpState::Unknown,
            Fingerprint::Checks(checks) => {
                let id = checks
                    .first()
                    .map(|c| c.collection.clone())
                    .unwrap_or_default();
                self.log.push(format!("check {id}"));
                self.with(|s| s.data.get(&id).copied().unwrap_or(FpState::Applied))
            }
        };
        Self::ready(FingerprintReport {
            state,
            checks: Vec::new(),
            reason: (state == FpState::Unknown).then(|| "no reliable data check".into()),
        })
    }
}

impl RunStore for FakeStore {
    fn next_run(&self) -> Arc<dyn RunStore> {
        self.log.push("next run");
        Arc::new(FakeStore {
            log: self.log.clone(),
            actor: Actor::current(),
            mirror: self.mirror.clone(),
            state: self.state.clone(),
        })
    }
    fn actor(&self) -> &Actor {
        &self.actor
    }
    fn mirror(&self) -> &Mirror {
        &self.mirror
    }
    fn checks(&self) -> &dyn DataChecks {
        self
    }
    fn ensure_readable(&self) -> BoxFuture<'_, Result<()>> {
        Self::ready(Ok(()))
    }
    fn entries(&self) -> BoxFuture<'_, Result<BTreeMap<String, JournalEntry>>> {
        Self::ready(Ok(self.with(|s| s.entries.clone())))
    }
    fn event<'a>(
        &'a self,
        kind: &'a str,
        id: Option<&'a str>,
        _details: bson::Document,
    ) -> BoxFuture<'a, Result<()>> {
        let line = match id {
            Some(id) => format!("event {kind} {id}"),
            None => format!("event {kind}"),
        };
        Self::ready(self.write(line))
    }
    fn begin_step<'a>(&'a self, start: &'a StepStart<'a>) -> BoxFuture<'a, Result<()>> {
        let result = self
            .write(format!("journal {} running", start.id))
            .map(|()| {
                let mut entry = running_entry(start.id, self.actor.clone(), None);
                entry.tag = Some(start.tag.into());
                entry.commit = Some(start.commit.into());
                entry.script = Some(start.script.into());
                entry.script_sha256 = Some(start.script_sha256.into());
                self.with(|s| s.entries.insert(start.id.into(), entry));
            });
        Self::ready(result)
    }
    fn record_child<'a>(&'a self, id: &'a str, pid: u32, pgid: i32) -> BoxFuture<'a, Result<()>> {
        let result = self.write(format!("journal {id} child")).map(|()| {
            self.with(|s| {
                if let Some(e) = s.entries.get_mut(id) {
                    e.child_pid = Some(pid.into());
                    e.child_pgid = Some(pgid.into());
                }
            })
        });
        Self::ready(result)
    }
    fn settle<'a>(
        &'a self,
        id: &'a str,
        status: StepStatus,
        end: &'a StepEnd,
    ) -> BoxFuture<'a, Result<()>> {
        let line = format!(
            "journal {id} {} ({})",
            status.as_str(),
            end.ended_by.as_str()
        );
        let result = self.write(line).map(|()| {
            self.with(|s| {
                let entry = s
                    .entries
                    .entry(id.into())
                    .or_insert_with(|| running_entry(id, self.actor.clone(), None));
                entry.status = status;
                entry.ended_by = Some(end.ended_by.as_str().into());
                entry.reason = Some(end.reason.clone());
                entry.finished_at = Some(bson::DateTime::now());
            })
        });
        Self::ready(result)
    }
    fn settle_abandoned<'a>(
        &'a self,
        entry: &'a JournalEntry,
        _reason: &'a str,
        _known_dead: bool,
    ) -> BoxFuture<'a, Result<bool>> {
        let result = self
            .write(format!("journal {} interrupted (abandoned)", entry.id))
            .map(|()| {
                self.with(|s| {
                    if let Some(e) = s.entries.get_mut(&entry.id) {
                        e.status = StepStatus::Interrupted;
                        e.ended_by = Some(EndedBy::Abandoned.as_str().into());
                    }
                });
                true
            });
        Self::ready(result)
    }
    fn mark<'a>(
        &'a self,
        id: &'a str,
        status: StepStatus,
        reason: &'a str,
    ) -> BoxFuture<'a, Result<()>> {
        let result = self
            .write(format!("journal {id} {}", status.as_str()))
            .map(|()| {
                // Like the real journal: an upsert, with the reason.
                let actor = self.actor.clone();
                self.with(|s| {
                    let e = s.entries.entry(id.into()).or_insert_with(|| JournalEntry {
                        attempts: 0,
                        tag: None,
                        started_at: None,
                        ..running_entry(id, actor, None)
                    });
                    e.status = status;
                    e.reason = Some(reason.into());
                })
            });
        Self::ready(result)
    }
    fn mark_held<'a>(
        &'a self,
        id: &'a str,
        status: StepStatus,
        reason: &'a str,
    ) -> BoxFuture<'a, Result<()>> {
        self.mark(id, status, reason)
    }
    fn try_acquire(&self, _lease: Duration) -> BoxFuture<'_, Result<Acquire>> {
        let answer = match self.with(|s| s.held_by.clone()) {
            Some(holder) => Acquire::Held(holder),
            None => {
                self.log.push("lock taken");
                Acquire::Acquired { took_over: None }
            }
        };
        Self::ready(Ok(answer))
    }
    fn take_over<'a>(&'a self, dead: &'a LockDoc, _lease: Duration) -> BoxFuture<'a, Result<bool>> {
        self.log
            .push(format!("lock taken over from {}", dead.holder.run_id));
        self.with(|s| s.held_by = None);
        Self::ready(Ok(true))
    }
    fn renew_lease(&self, _lease: Duration) -> BoxFuture<'_, Result<Option<bson::DateTime>>> {
        let answer = self.with(|s| match &s.renewals_during {
            Some((id, answer))
                if s.entries
                    .get(id)
                    .is_some_and(|e| e.status == StepStatus::Running) =>
            {
                *answer
            }
            _ => Renewal::Renewed,
        });
        let result = match answer {
            Renewal::Renewed => Ok(Some(bson::DateTime::now())),
            Renewal::Lost => {
                self.log.push("lease lost");
                Ok(None)
            }
            Renewal::Fails => {
                self.log.push("lease renewal failed");
                Err(Error::Internal("renewal failed".into()))
            }
        };
        Self::ready(result)
    }
    fn beat(&self, _until: bson::DateTime) -> BoxFuture<'_, Result<()>> {
        Self::ready(Ok(()))
    }
    fn release(&self) -> BoxFuture<'_, Result<()>> {
        self.log.push("lock released");
        self.with(|s| s.released = true);
        Self::ready(Ok(()))
    }
    fn backup<'a>(&'a self, dir: &'a Path) -> BoxFuture<'a, Result<BackupTaken>> {
        self.log.push("backup");
        if let Some(watcher) = self.with(|s| s.stop_during_backup.clone()) {
            watcher.set_stop(StopRequest::Now {
                signal: libc::SIGINT,
            });
            return Box::pin(std::future::pending());
        }
        let _ = dir;
        Self::ready(Ok(BackupTaken {
            created_at: "2026-01-01T00:00:00Z".into(),
            documents: 3,
        }))
    }
    fn detect<'a>(
        &'a self,
        _map: &'a ReleaseMap,
        _opts: DetectOptions,
    ) -> LocalBoxFuture<'a, Result<DetectReport>> {
        Box::pin(std::future::ready(Err(Error::Internal(
            "the fake store does not detect".into(),
        ))))
    }
}

/// The code: every tag resolves, its worktree is a fresh directory, its toolchain is `node`.
pub struct FakeWorkspace {
    pub log: Log,
    pub root: PathBuf,
    /// A stop requested while this phase runs (to test a signal in that phase).
    pub stop_during: Mutex<Option<(&'static str, Arc<SignalWatcher>)>>,
}

impl FakeWorkspace {
    pub fn new(log: &Log, root: &Path) -> FakeWorkspace {
        FakeWorkspace {
            log: log.clone(),
            root: root.to_path_buf(),
            stop_during: Mutex::new(None),
        }
    }

    /// Set a stop when `phase` starts, then never finish it (until the stop ends it).
    fn phase(&self, phase: &'static str) -> Option<LocalBoxFuture<'static, ()>> {
        let hit = self.stop_during.lock().unwrap().clone();
        match hit {
            Some((at, watcher)) if at == phase => {
                watcher.set_stop(StopRequest::Now {
                    signal: libc::SIGINT,
                });
                Some(Box::pin(std::future::pending()))
            }
            _ => None,
        }
    }
}

impl Workspace for FakeWorkspace {
    fn resolve_tag(&self, group: &PlanGroup) -> Result<TagInfo> {
        Ok(TagInfo {
            name: group.git_ref.clone(),
            commit: format!("commit-of-{}", group.git_ref),
            date: None,
            annotated: false,
        })
    }
    fn read_file_at(&self, _commit: &str, path: &str) -> Result<Option<Vec<u8>>> {
        Ok(Some(format!("script {path}").into_bytes()))
    }
    fn prepare<'a>(
        &'a self,
        tag: &'a TagInfo,
        _repair: bool,
        _reporter: &'a mut dyn Reporter,
    ) -> LocalBoxFuture<'a, Result<PathBuf>> {
        self.log.push(format!("checkout {}", tag.name));
        let stop = self.phase("checkout");
        Box::pin(async move {
            if let Some(never) = stop {
                never.await;
            }
            let path = self.root.join(&tag.name);
            std::fs::create_dir_all(&path).map_err(|e| Error::Internal(e.to_string()))?;
            Ok(path)
        })
    }
    fn remove(&self, tag: &TagInfo) -> Result<()> {
        self.log.push(format!("remove worktree {}", tag.name));
        Ok(())
    }
    fn toolchain<'a>(&'a self, req: &'a ToolchainRequest) -> LocalBoxFuture<'a, Result<Toolchain>> {
        self.log.push(format!("toolchain node {}", req.node));
        let stop = self.phase("provisioning");
        Box::pin(async move {
            if let Some(never) = stop {
                never.await;
            }
            Ok(Toolchain {
                node_version: req.node.clone(),
                node_dir: self.root.join("node/bin"),
                node_source: "the fake".into(),
                pnpm_dir: None,
                pnpm_source: None,
            })
        })
    }
    fn reachable<'a>(
        &'a self,
        _download: &'a crate::release_map::Download,
    ) -> LocalBoxFuture<'a, bool> {
        Box::pin(std::future::ready(true))
    }
    fn check_downloads<'a>(
        &'a self,
        _map: &'a ReleaseMap,
        _running: Vec<(&'a PlanGroup, Option<&'a str>)>,
    ) -> LocalBoxFuture<'a, Result<()>> {
        Box::pin(std::future::ready(Ok(())))
    }
}

/// What a fake child does once started.
#[derive(Clone)]
pub enum Behaviour {
    /// Cannot be started (a missing program, say): the spawn itself fails.
    FailsToStart,
    /// Prints a line, then exits with this code; `data` becomes what its check reads after.
    Exits { code: i32, data: Option<FpState> },
    /// Exits 0 after this many real milliseconds (the heartbeat beats meanwhile).
    Slow { ms: u64, data: Option<FpState> },
    /// Exits 0, with this stop requested just before (a signal between two steps).
    ExitsThenStop {
        watcher: Arc<SignalWatcher>,
        request: StopRequest,
        data: Option<FpState>,
    },
    /// Never exits: ends after its quiet window (unverified when nothing proves it finished).
    QuietUnverified,
    /// Runs until a stop (`StopRequest::Now`) ends it; optionally requests one itself, from
    /// the given watcher, once it started (a signal during the step).
    UntilStopped {
        stop_with: Option<Arc<SignalWatcher>>,
    },
    /// Takes the tunnel down, then runs until the resulting stop ends it; `data` as above.
    DropsTunnel {
        tunnel: tokio::sync::watch::Sender<TunnelState>,
        data: Option<FpState>,
    },
}

/// Children: each spawn is logged with the program's last argument (the script or the setup
/// command) and behaves as the test said for it (default: exits 0).
pub struct FakeChildren {
    pub log: Log,
    pub store: Arc<FakeStore>,
    pub behaviour: Mutex<BTreeMap<String, VecDeque<Behaviour>>>,
    pub alive_groups: Mutex<Vec<i32>>,
}

impl FakeChildren {
    pub fn new(log: &Log, store: &Arc<FakeStore>) -> FakeChildren {
        FakeChildren {
            log: log.clone(),
            store: store.clone(),
            behaviour: Mutex::new(BTreeMap::new()),
            alive_groups: Mutex::new(Vec::new()),
        }
    }

    /// The behaviour of the next spawn whose argv mentions `name` (a script path or command).
    pub fn on(&self, name: &str, behaviour: Behaviour) {
        self.behaviour
            .lock()
            .unwrap()
            .entry(name.into())
            .or_default()
            .push_back(behaviour);
    }
}

struct FakeChild {
    name: String,
    log: Log,
    store: Arc<FakeStore>,
    behaviour: Behaviour,
}

impl Children for FakeChildren {
    fn spawn(&self, spec: &ChildSpec) -> Result<Box<dyn Child>> {
        let argv: Vec<String> = std::iter::once(spec.program.display().to_string())
            .chain(spec.args.iter().cloned())
            .collect();
        let mut table = self.behaviour.lock().unwrap();
        let (name, behaviour) = table
            .iter_mut()
            .find(|(name, _)| argv.iter().any(|a| a.contains(name.as_str())))
            .and_then(|(name, queue)| Some((name.clone(), queue.pop_front()?)))
            .unwrap_or_else(|| {
                (
                    argv.last().cloned().unwrap_or_default(),
                    Behaviour::Exits {
                        code: 0,
                        data: None,
                    },
                )
            });
        if let Behaviour::FailsToStart = behaviour {
            self.log.push(format!("spawn {name} failed"));
            return Err(Error::StepFailed(format!(
                "cannot start {name}: No such file or directory"
            )));
        }
        self.log.push(format!("spawn {name}"));
        Ok(Box::new(FakeChild {
            name,
            log: self.log.clone(),
            store: self.store.clone(),
            behaviour,
        }))
    }
    fn group_alive(&self, pgid: i32) -> bool {
        self.alive_groups.lock().unwrap().contains(&pgid)
    }
    fn end_group(&self, pgid: i32, _grace: Duration) -> BoxFuture<'static, Result<()>> {
        self.log.push(format!("end group {pgid}"));
        self.alive_groups.lock().unwrap().retain(|g| *g != pgid);
        Box::pin(std::future::ready(Ok(())))
    }
}

impl FakeChild {
    fn outcome(ending: Ending, exit_code: Option<i32>, signal: Option<i32>) -> RunOutcome {
        RunOutcome {
            ending,
            exit_code,
            signal,
            duration: Duration::from_millis(5),
            tail: vec!["working".into()],
            done_line: None,
            pid: 4242,
            pgid: 4242,
        }
    }

    fn set_data(&self, data: Option<FpState>) {
        if let Some(state) = data {
            let id = self.name.rsplit('/').next().unwrap_or("");
            let id = id.trim_end_matches(".js").to_string();
            self.store.with(|s| s.data.insert(id, state));
        }
    }
}

async fn until_stop(stop: &mut tokio::sync::watch::Receiver<StopRequest>) -> i32 {
    loop {
        if let StopRequest::Now { signal } = *stop.borrow_and_update() {
            return signal;
        }
        if stop.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

impl Child for FakeChild {
    fn pid(&self) -> u32 {
        4242
    }
    fn pgid(&self) -> i32 {
        4242
    }
    fn wait<'a>(
        self: Box<Self>,
        _watch: Watch,
        mut stop: tokio::sync::watch::Receiver<StopRequest>,
        _probe: Option<&'a mut dyn FinishProbe>,
        on_line: &'a mut dyn FnMut(OutputLine),
    ) -> LocalBoxFuture<'a, Result<RunOutcome>> {
        Box::pin(async move {
            on_line(OutputLine {
                stream: Stream::Stdout,
                text: format!("{} says hello", self.name),
            });
            let outcome = match self.behaviour.clone() {
                Behaviour::FailsToStart => unreachable!("a child that failed to start never waits"),
                Behaviour::Exits { code, data } => {
                    self.set_data(data);
                    Self::outcome(Ending::Exited, Some(code), None)
                }
                Behaviour::Slow { ms, data } => {
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                    self.set_data(data);
                    Self::outcome(Ending::Exited, Some(0), None)
                }
                Behaviour::ExitsThenStop {
                    watcher,
                    request,
                    data,
                } => {
                    self.set_data(data);
                    watcher.set_stop(request);
                    Self::outcome(Ending::Exited, Some(0), None)
                }
                Behaviour::QuietUnverified => Self::outcome(Ending::QuietUnverified, None, None),
                Behaviour::UntilStopped { stop_with } => {
                    if let Some(watcher) = stop_with {
                        watcher.set_stop(StopRequest::Now {
                            signal: libc::SIGINT,
                        });
                    }
                    let signal = until_stop(&mut stop).await;
                    Self::outcome(Ending::Stopped { signal }, None, Some(signal))
                }
                Behaviour::DropsTunnel { tunnel, data } => {
                    self.set_data(data);
                    // The database is reached through the tunnel: out of reach until reopened.
                    self.store.with(|s| s.unreachable = true);
                    tunnel.send_replace(TunnelState::Down {
                        reason: "ssh exited".into(),
                    });
                    let signal = until_stop(&mut stop).await;
                    Self::outcome(Ending::Stopped { signal }, None, Some(signal))
                }
            };
            self.log.push(format!("exit {}", self.name));
            Ok(outcome)
        })
    }
}

/// Answers every question as the test said, and logs it.
pub struct FakePrompt {
    pub log: Log,
    pub blocked: Blocked,
    pub yes: bool,
    pub backup: Option<PathBuf>,
}

impl Prompt for FakePrompt {
    fn target(&self, map: &ReleaseMap, _detected: &DetectReport) -> Result<semver::Version> {
        self.log.push("ask target");
        map.newest_version()
    }
    fn blocked(&self, steps: &[&DecidedStep]) -> Result<Blocked> {
        let ids: Vec<&str> = steps.iter().map(|d| d.id.as_str()).collect();
        self.log
            .push(format!("ask blocked {}: {:?}", ids.join(","), self.blocked));
        Ok(self.blocked)
    }
    fn confirm_run(&self, steps: usize) -> Result<bool> {
        self.log.push(format!("ask run {steps}"));
        Ok(self.yes)
    }
    fn backup(&self) -> Result<Option<PathBuf>> {
        self.log.push("ask backup");
        Ok(self.backup.clone())
    }
    fn approve_step<'a>(&'a self, id: &'a str) -> LocalBoxFuture<'a, Result<bool>> {
        self.log.push(format!("ask approve {id}"));
        Box::pin(std::future::ready(Ok(self.yes)))
    }
    fn confirm_risky(&self) -> LocalBoxFuture<'_, Result<bool>> {
        self.log.push("ask risky");
        Box::pin(std::future::ready(Ok(self.yes)))
    }
}

/// Time that passes only when slept (each sleep yields, so other tasks run).
pub struct FakeClock {
    start: Instant,
    elapsed: Mutex<Duration>,
}

impl FakeClock {
    pub fn new() -> Arc<FakeClock> {
        Arc::new(FakeClock {
            start: Instant::now(),
            elapsed: Mutex::new(Duration::ZERO),
        })
    }
}

impl Clock for FakeClock {
    fn now(&self) -> Instant {
        self.start + *self.elapsed.lock().unwrap()
    }
    fn sleep(&self, period: Duration) -> BoxFuture<'static, ()> {
        *self.elapsed.lock().unwrap() += period;
        // A real millisecond, so a task sleeping in a loop (the heartbeat) lets others run.
        Box::pin(tokio::time::sleep(Duration::from_millis(1)))
    }
}

/// A tunnel whose state the test (or a fake child) sets; reopening logs and brings it up.
pub struct FakeTunnel {
    pub log: Log,
    /// Reachable again once the tunnel is reopened.
    pub store: Arc<FakeStore>,
    pub state: tokio::sync::watch::Sender<TunnelState>,
    pub reopens: bool,
}

impl FakeTunnel {
    pub fn new(log: &Log, store: &Arc<FakeStore>) -> FakeTunnel {
        FakeTunnel {
            log: log.clone(),
            store: store.clone(),
            state: tokio::sync::watch::channel(TunnelState::Up).0,
            reopens: true,
        }
    }
}

impl TunnelLink for FakeTunnel {
    fn watch(&self) -> tokio::sync::watch::Receiver<TunnelState> {
        self.state.subscribe()
    }
    fn reopen(&mut self, _retries: u32, _backoff: Duration) -> LocalBoxFuture<'_, Result<()>> {
        self.log.push("tunnel reopened");
        let result = if self.reopens {
            self.state.send_replace(TunnelState::Up);
            self.store.with(|s| s.unreachable = false);
            Ok(())
        } else {
            Err(Error::Internal("ssh: connection refused".into()))
        };
        Box::pin(std::future::ready(result))
    }
}

/// No services or checks; signals come from the test (`watcher.set_stop`).
pub struct FakeSurroundings {
    pub log: Log,
    pub watcher: Arc<SignalWatcher>,
}

impl FakeSurroundings {
    pub fn new(log: &Log) -> FakeSurroundings {
        FakeSurroundings {
            log: log.clone(),
            watcher: Arc::new(SignalWatcher::from_stream(
                SignalPolicy::Unattended,
                Box::pin(futures_util::stream::pending()),
            )),
        }
    }
}

impl Surroundings for FakeSurroundings {
    fn prepare<'a>(
        &'a mut self,
        _opts: &'a mut UpgradeOptions,
        _full: &'a Plan,
        to_run: &'a Plan,
        _reporter: &'a mut dyn Reporter,
    ) -> LocalBoxFuture<'a, Result<()>> {
        let ids: Vec<&str> = to_run.steps().map(|(_, s)| s.id.as_str()).collect();
        self.log.push(format!(
            "preflight {} step(s){}",
            to_run.steps_total,
            if ids.is_empty() {
                String::new()
            } else {
                format!(": {}", ids.join(","))
            }
        ));
        Box::pin(std::future::ready(Ok(())))
    }
    fn watch_signals(&mut self) -> Result<Arc<SignalWatcher>> {
        self.log.push("signals watched");
        Ok(self.watcher.clone())
    }
}

/// Keeps the events; logs the ones that mark the flow.
pub struct FakeReporter {
    pub log: Log,
    pub events: Vec<RunEvent>,
}

impl Reporter for FakeReporter {
    fn report(&mut self, event: &RunEvent) {
        match event {
            RunEvent::StepStarted { id, .. } => self.log.push(format!("report started {id}")),
            RunEvent::StepFinished { id, status, .. } => {
                self.log.push(format!("report finished {id} {status}"))
            }
            RunEvent::Verification { id, state, .. } => {
                self.log.push(format!("report verified {id} {state}"))
            }
            RunEvent::Summary { status, .. } => self.log.push(format!("report summary {status}")),
            _ => {}
        }
        self.events.push(event.clone());
    }
}
