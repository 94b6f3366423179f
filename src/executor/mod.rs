//! The executor: runs the steps of an upgrade, one run at a time, journalled, verified and
//! resumable.
//!
//! Order of a run: connect -> take the run lock (lease renewed by heartbeat) -> settle what a
//! dead run left `running` (ending its orphaned process group first) -> read the journal and
//! the data -> decide every step -> per tag: worktree, toolchain, setup (cached) -> per step:
//! journal `running` -> spawn -> journal the child's group -> wait (hang detection) -> verify
//! the data -> journal the outcome -> release the lock.

pub mod approval;
pub mod command;
pub mod decide;
pub mod lockfile;
pub mod shim;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::git::{GitRepo, Worktrees};
use crate::plan::{self, Plan, PlanRequest};
use crate::release_map::{Exits, Fingerprint, Introduced, ReleaseMap};
use crate::runner::process::{
    self, ChildSpec, Ending, FinishProbe, ProbeAnswer, StopRequest, Watch,
};
use crate::runner::signals::SignalWatcher;
use crate::runner::toolchain::{self, ToolchainPolicy, ToolchainRequest};
use crate::store::fingerprint::{self, EvalOptions, FpState};
use crate::store::journal::{Actor, Journal, JournalEntry, StepEnd, StepStart, StepStatus};
use crate::store::lock::{Acquire, LockDoc, RunLock};
use crate::store::mirror::Mirror;
use crate::store::Store;
use crate::tunnel::{Tunnel, TunnelState};
use crate::ui::events::{PlannedStepView, Reporter, RunEvent};
use command::Connection;
use decide::{decide, Action, Decision, Flags, StepFacts};

/// Everything a run needs, resolved by the command layer.
pub struct UpgradeOptions {
    pub map: ReleaseMap,
    /// `--from`; None: the journal and the data decide every step.
    pub from: Option<semver::Version>,
    pub to: semver::Version,
    pub include_unreleased: bool,
    pub repo: Option<GitRepo>,
    pub connection: Connection,
    pub flags: Flags,
    pub dry_run: bool,
    pub keep_worktrees: bool,
    /// Reset worktrees with local changes to their tag.
    pub repair_worktrees: bool,
    /// Back up the database here before the first step runs.
    pub backup_dir: Option<PathBuf>,
    pub toolchain: ToolchainPolicy,
    pub allow_provision: bool,
    /// Overrides the map's quiet window for scripts that never exit.
    pub quiet_secs: Option<u64>,
    pub step_timeout: Option<Duration>,
    pub grace: Duration,
    pub lease: Duration,
    pub lock_wait: Duration,
    pub cache_root: PathBuf,
    pub state_dir: PathBuf,
    pub check_time_limit: Duration,
    /// What the operator approved (`--yes`, `--approve`, answers at the terminal).
    pub approvals: approval::Approvals,
}

/// One step with everything decided about it.
#[derive(Debug, Clone)]
pub struct DecidedStep {
    pub group: usize,
    pub id: String,
    pub git_ref: String,
    pub decision: Decision,
    /// What its data check said (None: the step is not in the map).
    pub data: Option<FpState>,
}

/// What the data says about each step: read once per decision and shared by everything that
/// decision feeds (the plan shown, the questions asked, the approval check, the run).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DataStates(BTreeMap<String, FpState>);

impl FromIterator<(String, FpState)> for DataStates {
    fn from_iter<I: IntoIterator<Item = (String, FpState)>>(iter: I) -> Self {
        DataStates(iter.into_iter().collect())
    }
}

impl DataStates {
    pub fn get(&self, id: &str) -> Option<FpState> {
        self.0.get(id).copied()
    }
}

/// The facts one decision was made from before the run (the guided flow's), so the run
/// reuses them instead of reading every data check again. The run still takes them only when
/// the journal has not changed since.
#[derive(Debug, Clone)]
pub struct KnownFacts {
    pub entries: BTreeMap<String, JournalEntry>,
    pub data: DataStates,
}

/// Whether two reads of the journal agree on every step (another run in between changes a
/// status, an attempt count or a time).
fn same_journal(a: &BTreeMap<String, JournalEntry>, b: &BTreeMap<String, JournalEntry>) -> bool {
    let key = |e: &JournalEntry| (e.status, e.attempts, e.started_at, e.finished_at);
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|((ia, ea), (ib, eb))| ia == ib && key(ea) == key(eb))
}

#[derive(Debug, Clone, Default)]
pub struct Summary {
    pub ran: usize,
    pub succeeded: usize,
    pub skipped: usize,
    pub failed: usize,
}

/// The data check used to recognise a finished script that never exits.
struct DataProbe {
    db: mongodb::Database,
    fingerprint: Fingerprint,
    time_limit: Duration,
}

impl FinishProbe for DataProbe {
    fn finished(&mut self) -> BoxFuture<'_, ProbeAnswer> {
        Box::pin(async move {
            if matches!(self.fingerprint, Fingerprint::Unknown { .. }) {
                return ProbeAnswer::Unknown;
            }
            let opts = EvalOptions {
                time_limit: self.time_limit,
                count_limit: None,
            };
            match fingerprint::evaluate(&self.db, &self.fingerprint, opts)
                .await
                .state
            {
                s if s.nothing_pending() => ProbeAnswer::Finished,
                FpState::Pending => ProbeAnswer::NotYet,
                _ => ProbeAnswer::Unknown,
            }
        })
    }
}

/// The plan of every script up to the target: steps older than `--from` stay in it so the
/// journal and the data can say whether they are really applied.
pub fn full_plan(opts: &UpgradeOptions) -> Result<Plan> {
    let req = PlanRequest {
        from: semver::Version::new(0, 0, 0),
        to: opts.to.clone(),
        include_unreleased: opts.include_unreleased,
    };
    if let Some(from) = &opts.from {
        // Same refusals as `plan` (newer than the map, downgrade).
        plan::check_request(
            &opts.map,
            &PlanRequest {
                from: from.clone(),
                ..req.clone()
            },
        )?;
    }
    plan::plan(&opts.map, &req)
}

fn at_or_before_from(map: &ReleaseMap, id: &str, from: Option<&semver::Version>) -> bool {
    let (Some(from), Some(m)) = (from, map.migration(id)) else {
        return false;
    };
    match &m.introduced {
        Introduced::Release(v) => v <= from,
        Introduced::Unreleased { .. } => false,
    }
}

/// Read the data checks of the plan's steps that `known` does not already hold, at most
/// `fingerprint::MIGRATIONS_AT_ONCE` migrations at a time.
pub async fn read_data(
    opts: &UpgradeOptions,
    plan: &Plan,
    store: &Store,
    known: DataStates,
) -> DataStates {
    use futures_util::StreamExt;
    let eval = EvalOptions {
        time_limit: opts.check_time_limit,
        count_limit: None,
    };
    let missing: Vec<(String, Fingerprint)> = plan
        .steps()
        .filter(|(_, step)| known.get(&step.id).is_none())
        .filter_map(|(_, step)| {
            let m = opts.map.migration(&step.id)?;
            Some((step.id.clone(), m.fingerprint.clone()))
        })
        .collect();
    let read: Vec<(String, FpState)> =
        futures_util::stream::iter(missing.into_iter().map(|(id, fp)| {
            let db = store.db.clone();
            async move { (id, fingerprint::evaluate(&db, &fp, eval).await.state) }
        }))
        .buffer_unordered(fingerprint::MIGRATIONS_AT_ONCE)
        .collect()
        .await;
    let DataStates(mut states) = known;
    states.extend(read);
    DataStates(states)
}

/// Decide every step from the journal and what the data said: no I/O.
pub fn decide_all(
    opts: &UpgradeOptions,
    plan: &Plan,
    entries: &BTreeMap<String, JournalEntry>,
    data: &DataStates,
) -> Vec<DecidedStep> {
    plan.groups
        .iter()
        .enumerate()
        .flat_map(|(g, group)| group.steps.iter().map(move |s| (g, group, s)))
        .map(|(g, group, step)| {
            let data = data.get(&step.id);
            let facts = StepFacts {
                journal: entries.get(&step.id).map(|e| e.status),
                data,
                idempotent: step.idempotent,
                at_or_before_from: at_or_before_from(&opts.map, &step.id, opts.from.as_ref()),
                running_elsewhere: entries.get(&step.id).is_some_and(|e| e.running_elsewhere()),
            };
            DecidedStep {
                group: g,
                id: step.id.clone(),
                git_ref: group.git_ref.clone(),
                decision: decide(facts, opts.flags),
                data,
            }
        })
        .collect()
}

/// Read the data and decide every step (one read of each data check).
pub async fn decide_steps(
    opts: &UpgradeOptions,
    plan: &Plan,
    store: &Store,
    entries: &BTreeMap<String, JournalEntry>,
) -> Vec<DecidedStep> {
    let data = read_data(opts, plan, store, DataStates::default()).await;
    decide_all(opts, plan, entries, &data)
}

pub fn plan_event(decided: &[DecidedStep]) -> RunEvent {
    RunEvent::Plan {
        steps: decided
            .iter()
            .map(|d| PlannedStepView {
                id: d.id.clone(),
                git_ref: d.git_ref.clone(),
                action: format!("{:?}", d.decision.action).to_lowercase(),
                reason: d.decision.reason.clone(),
            })
            .collect(),
    }
}

/// Take the run lock, waiting a bounded time; a dead holder on this host is ended and taken
/// over at once.
async fn take_lock(
    lock: &RunLock,
    journal: &Journal,
    opts: &UpgradeOptions,
    reporter: &mut dyn Reporter,
) -> Result<()> {
    let deadline = Instant::now() + opts.lock_wait;
    let mut announced = false;
    loop {
        match lock.try_acquire(journal.actor(), opts.lease).await? {
            Acquire::Acquired { took_over } => {
                if let Some(old) = took_over {
                    journal
                        .event(
                            "lock-taken-over",
                            None,
                            bson::doc! { "previous": old.describe(), "why": "lease expired" },
                        )
                        .await?;
                }
                return Ok(());
            }
            Acquire::Held(holder) if holder.holder.is_dead_local_process() => {
                end_dead_run(&holder, journal, opts).await?;
                if lock.take_over(&holder, journal.actor(), opts.lease).await? {
                    journal
                        .event("lock-taken-over", None, bson::doc! { "previous": holder.describe(), "why": "its process is gone" })
                        .await?;
                    return Ok(());
                }
            }
            Acquire::Held(holder) => {
                if Instant::now() >= deadline {
                    return Err(Error::Locked(format!(
                        "another upstep run holds the lock: {}\n  fix: wait for it to finish (its lease is renewed while it runs); if that run is certainly gone, run `upstep unlock`",
                        holder.describe()
                    )));
                }
                if !announced {
                    reporter.report(&RunEvent::Notice {
                        message: format!("waiting for the run lock held by {}", holder.describe()),
                    });
                    announced = true;
                }
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        }
    }
}

/// End the process groups a dead run left behind, so no orphan keeps migrating beside us.
async fn end_dead_run(holder: &LockDoc, journal: &Journal, opts: &UpgradeOptions) -> Result<()> {
    for entry in journal.entries().await?.values() {
        let same_run = entry
            .actor
            .as_ref()
            .is_some_and(|a| a.run_id == holder.holder.run_id);
        if let (true, StepStatus::Running, Some(pgid)) = (same_run, entry.status, entry.child_pgid)
        {
            let pgid = pgid as i32;
            if process::group_alive(pgid) {
                let grace = opts.grace;
                tokio::task::spawn_blocking(move || process::kill_group(pgid, grace))
                    .await
                    .map_err(|e| Error::Internal(e.to_string()))?;
                journal
                    .event(
                        "orphan-ended",
                        Some(&entry.id),
                        bson::doc! { "pgid": pgid as i64, "previous_run": &holder.holder.run_id },
                    )
                    .await?;
            }
        }
    }
    Ok(())
}

/// Entries left `running` by runs that are gone become interrupted (we hold the lock now).
/// One whose heartbeat is fresh is still running somewhere (say, on another host after an
/// `upstep unlock`): it is left alone, and this run stops before touching anything.
async fn settle_abandoned(journal: &Journal, opts: &UpgradeOptions) -> Result<()> {
    let mut elsewhere = Vec::new();
    for entry in journal.entries().await?.values() {
        let theirs = entry
            .actor
            .as_ref()
            .is_some_and(|a| a.run_id != journal.actor().run_id);
        if entry.status != StepStatus::Running || !theirs {
            continue;
        }
        if entry.running_elsewhere() {
            elsewhere.push(entry.clone());
            continue;
        }
        let known_dead = entry
            .actor
            .as_ref()
            .is_some_and(|a| a.is_dead_local_process());
        if let Some(pgid) = entry.child_pgid.map(|p| p as i32) {
            if known_dead && process::group_alive(pgid) {
                let grace = opts.grace;
                let _ = tokio::task::spawn_blocking(move || process::kill_group(pgid, grace)).await;
            }
        }
        let reason = match entry.heartbeat_age() {
            Some(age) => format!(
                "the run that started it is gone (last heartbeat {}s ago)",
                age.as_secs()
            ),
            None => "the run that started it is gone".to_string(),
        };
        if !journal.settle_abandoned(entry, &reason, known_dead).await? {
            // Its heartbeat came back between the read and the write: it is alive.
            if let Some(now) = journal.entries().await?.remove(&entry.id) {
                if now.status == StepStatus::Running {
                    elsewhere.push(now);
                }
            }
        }
    }
    if elsewhere.is_empty() {
        return Ok(());
    }
    let mut lines = Vec::new();
    for entry in &elsewhere {
        journal
            .event(
                "running-elsewhere",
                Some(&entry.id),
                bson::doc! { "run": entry.describe_run() },
            )
            .await?;
        lines.push(format!("{}: {}", entry.id, entry.describe_run()));
    }
    Err(Error::Locked(format!(
        "running elsewhere: another upstep run is still running this step (its heartbeat is fresh); this run leaves it alone and stops before running anything:\n  {}\n  fix: wait for that run to finish (`upstep status` shows its heartbeat); if its host is down for good, its heartbeat goes stale within its lease and the next run records the step as interrupted",
        lines.join("\n  ")
    )))
}

/// A tag that moved since a step ran (Novu re-tagged v2.1.1): the script at the tag now is
/// not the one the journal records. Reported before anything runs: a notice (and an event)
/// for a step that is done or will not run, a stop for one that would run again.
async fn check_journalled_scripts(
    plan: &Plan,
    repo: &GitRepo,
    entries: &BTreeMap<String, JournalEntry>,
    decided: &[DecidedStep],
    journal: &Journal,
    reporter: &mut dyn Reporter,
) -> Result<()> {
    let mut stops = Vec::new();
    for group in &plan.groups {
        let journalled: Vec<(&crate::plan::PlanStep, &JournalEntry, &str)> = group
            .steps
            .iter()
            .filter_map(|s| {
                let e = entries.get(&s.id)?;
                Some((s, e, e.script_sha256.as_deref()?))
            })
            .collect();
        if journalled.is_empty() {
            continue;
        }
        // A tag this repository lacks cannot be compared; a step that needs it fails later.
        let Ok(tag) = crate::repo_facts::resolve_group_ref(repo, group) else {
            continue;
        };
        for (step, entry, recorded) in journalled {
            let now = repo
                .read_file_at(&tag.commit, &step.script)?
                .map(|bytes| hex::encode(Sha256::digest(&bytes)));
            if now.as_deref() == Some(recorded) {
                continue;
            }
            let action = decided
                .iter()
                .find(|d| d.id == step.id)
                .map_or(Action::Skip, |d| d.decision.action);
            let stop = decide::changed_script_stops(entry.status, action);
            let short = |s: &str| s[..s.len().min(12)].to_string();
            let was_at = entry.tag.as_deref().unwrap_or("?");
            let was_commit = entry.commit.as_deref().map(short).unwrap_or_default();
            let moved = if was_at == group.git_ref
                && entry.commit.as_deref() != Some(tag.commit.as_str())
            {
                format!(" (the tag {was_at} was moved)")
            } else {
                String::new()
            };
            let what = format!(
                "{}: {} changed since it ran: the journal records sha256 {} from {was_at} (commit {was_commit}); {} (commit {}) now has {}{moved}",
                step.id,
                step.script,
                short(recorded),
                group.git_ref,
                short(&tag.commit),
                now.as_deref().map_or("no such file".to_string(), |n| format!("sha256 {}", short(n))),
            );
            journal
                .event(
                    "script-changed",
                    Some(&step.id),
                    bson::doc! {
                        "journalled_sha256": recorded, "current_sha256": now.clone(),
                        "journalled_tag": was_at, "journalled_commit": entry.commit.clone(),
                        "tag": &group.git_ref, "commit": &tag.commit, "stops": stop,
                    },
                )
                .await?;
            if stop {
                stops.push(what);
            } else {
                let outcome = if action == Action::Run {
                    format!(
                        "it runs as the script is now (the journal says {})",
                        entry.status.as_str()
                    )
                } else {
                    format!("the journal's record ({}) stands", entry.status.as_str())
                };
                reporter.report(&RunEvent::Notice {
                    message: format!("{what}; {outcome}"),
                });
            }
        }
    }
    if stops.is_empty() {
        return Ok(());
    }
    Err(Error::NeedsDecision(format!(
        "a step that would run again has a different script than the one that ran; nothing was run:\n  {}\n  choices: `upstep mark <id> --applied` if its work is done; `upstep mark <id> --pending` to accept the new script, then run again; or restore the tag to the commit the journal records and re-run with --retry to repeat the script that ran",
        stops.join("\n  ")
    )))
}

/// Renews the lease until stopped; on losing it, stops the running step.
fn spawn_heartbeat(
    store: &Store,
    actor: Actor,
    lease: Duration,
    watcher: Arc<SignalWatcher>,
    lost: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<()> {
    let lock = RunLock::new(store);
    let store = store.clone();
    tokio::spawn(async move {
        let period = (lease / 3).max(Duration::from_millis(100));
        loop {
            tokio::time::sleep(period).await;
            match lock.renew_lease(&actor, lease).await {
                // The running step's journal entry gets the same end as the lease, so a run on
                // another host can tell it is alive even without the lock (`upstep unlock`),
                // and once the lease has run out, so has the heartbeat.
                Ok(Some(until)) => {
                    if let Err(e) = crate::store::journal::beat(&store, &actor, until).await {
                        tracing::warn!("could not renew the running step's heartbeat: {e}");
                    }
                }
                Ok(None) => {
                    tracing::error!(
                        "lost the run lock: another run took it over; stopping the running step"
                    );
                    lost.store(true, Ordering::SeqCst);
                    watcher.set_stop(StopRequest::Now {
                        signal: libc::SIGTERM,
                    });
                    return;
                }
                // A blip: the lease has slack (renewed three times per lease).
                Err(e) => tracing::warn!("could not renew the run lock: {e}"),
            }
        }
    })
}

/// The era a plan group runs in (the plan names it; validation guarantees it exists).
fn group_era<'m>(
    map: &'m ReleaseMap,
    group: &crate::plan::PlanGroup,
) -> Result<&'m crate::release_map::Era> {
    map.eras.get(&group.era).ok_or_else(|| {
        Error::Internal(format!(
            "era {} of {} is not in the map",
            group.era, group.git_ref
        ))
    })
}

/// sha256 of the script at its tag (pinned algorithm: compared across upstep versions).
fn script_sha256(repo: &GitRepo, commit: &str, script: &str) -> Result<String> {
    let bytes = repo.read_file_at(commit, script)?.ok_or_else(|| {
        Error::repository(
            format!("{script} does not exist at commit {commit}"),
            "check the release map against the repository: `upstep map check --repo ...`",
        )
    })?;
    Ok(hex::encode(Sha256::digest(&bytes)))
}

/// The run: everything after the options are resolved. `known`: the facts a decision before
/// the run was made from (the guided flow's), reused when the journal has not changed.
pub async fn run_upgrade(
    opts: &UpgradeOptions,
    store: &Store,
    watcher: Arc<SignalWatcher>,
    reporter: &mut dyn Reporter,
    tunnel: Option<&mut Tunnel>,
    known: Option<KnownFacts>,
) -> Result<Summary> {
    let started = Instant::now();
    let plan = full_plan(opts)?;
    let mirror = Mirror::for_database(&opts.state_dir, &store.redacted_uri);
    let actor = Actor::current();
    let journal = Journal::new(store, actor.clone(), mirror).with_heartbeat_lease(opts.lease);

    if opts.dry_run {
        // Reads only: no lock, no journal write, no script.
        let entries = crate::store::journal::read_entries(store).await?;
        let decided = decide_steps(opts, &plan, store, &entries).await;
        reporter.report(&plan_event(&decided));
        for step in approval::risky_steps(&opts.map, &plan, &decided)
            .iter()
            .filter(|r| r.needs_approval && !opts.approvals.steps.contains(&r.id))
        {
            reporter.report(&RunEvent::Notice {
                message: format!(
                    "{} would need --approve {}: not idempotent, and no data check can tell \
                     whether it ran",
                    step.id, step.id
                ),
            });
        }
        // In a dry run, `ran` counts the steps that would run.
        let summary = Summary {
            ran: decided
                .iter()
                .filter(|d| d.decision.action == Action::Run)
                .count(),
            skipped: decided
                .iter()
                .filter(|d| d.decision.action == Action::Skip)
                .count(),
            ..Summary::default()
        };
        return Ok(summary);
    }

    // A journal or lock from a newer upstep is refused before anything is written.
    crate::store::journal::ensure_readable(store).await?;
    let lock = RunLock::new(store);
    take_lock(&lock, &journal, opts, reporter).await?;
    let lost = Arc::new(AtomicBool::new(false));
    let heartbeat = spawn_heartbeat(
        store,
        actor.clone(),
        opts.lease,
        watcher.clone(),
        lost.clone(),
    );
    // Owned here so a failed run still reports what it did.
    let mut summary = Summary::default();
    let result = run_locked(
        opts,
        &plan,
        store,
        &journal,
        &watcher,
        &lost,
        reporter,
        tunnel,
        known,
        &mut summary,
    )
    .await;
    heartbeat.abort();
    // Release even after a failure; a lost lock is not ours to release.
    if !lost.load(Ordering::SeqCst) {
        if let Err(e) = lock.release(&actor).await {
            tracing::warn!("could not release the run lock: {e}");
        }
    }
    if matches!(&result, Err(Error::StepFailed(_))) {
        summary.failed += 1;
    }
    let status = match &result {
        Ok(_) => "succeeded".to_string(),
        Err(e) => e.code().name().to_string(),
    };
    reporter.report(&RunEvent::Summary {
        ran: summary.ran,
        succeeded: summary.succeeded,
        skipped: summary.skipped,
        failed: summary.failed,
        status,
        duration_ms: started.elapsed().as_millis() as u64,
    });
    result
}

#[allow(clippy::too_many_arguments)]
async fn run_locked(
    opts: &UpgradeOptions,
    plan: &Plan,
    store: &Store,
    journal: &Journal,
    watcher: &Arc<SignalWatcher>,
    lost: &Arc<AtomicBool>,
    reporter: &mut dyn Reporter,
    mut tunnel: Option<&mut Tunnel>,
    known: Option<KnownFacts>,
    summary: &mut Summary,
) -> Result<Summary> {
    journal
        .event(
            "run-started",
            None,
            bson::doc! { "to": plan.to.clone(), "dry_run": false },
        )
        .await?;
    settle_abandoned(journal, opts).await?;
    let entries = journal.entries().await?;
    // One decision: the data read before the run is reused while the journal is unchanged.
    let data = match known {
        Some(known) if same_journal(&known.entries, &entries) => known.data,
        _ => DataStates::default(),
    };
    let data = read_data(opts, plan, store, data).await;
    let decided = decide_all(opts, plan, &entries, &data);
    reporter.report(&plan_event(&decided));
    if let Some(repo) = opts.repo.as_ref() {
        check_journalled_scripts(plan, repo, &entries, &decided, journal, reporter).await?;
    }

    let blocked: Vec<&DecidedStep> = decided
        .iter()
        .filter(|d| d.decision.action == Action::Block)
        .collect();
    if !blocked.is_empty() {
        let list: Vec<String> = blocked
            .iter()
            .map(|d| format!("{}: {}", d.id, d.decision.reason))
            .collect();
        return Err(Error::NeedsDecision(format!(
            "the journal needs a decision before the upgrade can go on:\n  {}",
            list.join("\n  ")
        )));
    }
    approval::check(
        &approval::risky_steps(&opts.map, plan, &decided),
        &opts.approvals,
    )?;
    for d in decided
        .iter()
        .filter(|d| d.decision.unknown && d.decision.action == Action::Run)
    {
        reporter.report(&RunEvent::Notice {
            message: format!(
                "{}: no data check can tell whether it is applied; running it as planned",
                d.id
            ),
        });
    }

    summary.skipped = decided
        .iter()
        .filter(|d| d.decision.action == Action::Skip)
        .count();
    let to_run: Vec<&DecidedStep> = decided
        .iter()
        .filter(|d| d.decision.action == Action::Run)
        .collect();
    if to_run.is_empty() {
        reporter.report(&RunEvent::Notice {
            message: "nothing to run: every step is applied".into(),
        });
        return Ok(summary.clone());
    }
    let repo = opts.repo.as_ref().ok_or_else(|| {
        Error::usage(
            "running scripts needs the project's code",
            "pass --repo <path or URL of the project's repository>",
        )
    })?;
    stop_requested(watcher, lost)?;
    check_downloads(opts, plan, repo, &to_run).await?;
    let backup = until_stopped(watcher, lost, take_backup(opts, journal, reporter)).await?;
    let worktrees = Worktrees::new(&opts.cache_root);
    let total = to_run.len();
    let mut index = 0;

    for (g, group) in plan.groups.iter().enumerate() {
        let steps: Vec<&&DecidedStep> = to_run.iter().filter(|d| d.group == g).collect();
        if steps.is_empty() {
            continue;
        }
        stop_requested(watcher, lost)?;
        let tag = crate::repo_facts::resolve_group_ref(repo, group)?;
        let worktree = until_stopped(
            watcher,
            lost,
            prepare_worktree(&worktrees, repo, &tag, opts.repair_worktrees, reporter),
        )
        .await?;
        let era = group_era(&opts.map, group)?;
        stop_requested(watcher, lost)?;
        let choice = setup_choice(era, group, &steps);
        // Dropping the resolution (on a stop) ends its npm install's group.
        let toolchain = until_stopped(
            watcher,
            lost,
            toolchain::resolve(
                &ToolchainRequest {
                    node: group.node.clone(),
                    node_range: group.node_engines.clone(),
                    pnpm: if choice.commands.is_empty() {
                        None
                    } else {
                        group.pnpm.clone()
                    },
                    policy: opts.toolchain,
                },
                &opts.cache_root,
                &std::env::var_os("PATH").unwrap_or_default(),
                opts.allow_provision,
            ),
        )
        .await?;
        reporter.report(&RunEvent::Notice {
            message: crate::words::toolchain_notice(
                &group.git_ref,
                &toolchain.node_version,
                &toolchain.node_source,
            ),
        });
        let mut path_prefix = vec![toolchain.node_dir.clone()];
        path_prefix.extend(toolchain.pnpm_dir.clone());
        let setup_plan = SetupPlan {
            git_ref: &group.git_ref,
            era,
            choice,
            repair_lockfile: group.repair_lockfile.as_deref(),
            commit: &tag.commit,
            node_version: &toolchain.node_version,
            pnpm: group.pnpm.as_deref(),
            node_headers: toolchain::node_headers_prefix(&toolchain.node_dir),
        };
        let setup = run_setup(
            opts,
            &setup_plan,
            &worktree.path,
            &path_prefix,
            journal,
            watcher,
            lost,
            reporter,
        )
        .await;
        if let Err(e) = setup {
            // A failed setup leaves a half-installed tree that no later run may build on (an
            // interrupted one has no setup stamp either, and a stop must stay quick).
            if !opts.keep_worktrees && !matches!(e, Error::Interrupted | Error::Terminated) {
                remove_worktree(&worktrees, repo, &tag, reporter);
            }
            return Err(e);
        }

        for step in steps {
            // A stop that came between steps (or during the setup) starts no further step.
            stop_requested(watcher, lost)?;
            index += 1;
            let at = StepAt {
                group_index: g,
                commit: &tag.commit,
                worktree: &worktree.path,
                path_prefix: &path_prefix,
                backup: backup.as_deref(),
                index,
                total,
            };
            let outcome = loop {
                let dropped = Arc::new(AtomicBool::new(false));
                let tunnel_rx = tunnel.as_ref().map(|t| t.watch());
                let (stop, forwarder) =
                    step_stop_channel(watcher, tunnel_rx.clone(), dropped.clone());
                let ctx = StepCtx {
                    stop,
                    tunnel_dropped: &dropped,
                    tunnel: tunnel_rx,
                };
                let outcome = run_step(
                    opts, plan, &step.id, &at, &ctx, repo, store, journal, lost, reporter,
                )
                .await;
                forwarder.abort();
                let outcome = outcome?;
                match (outcome, tunnel.as_deref_mut()) {
                    (StepStatus::Interrupted, Some(t)) if dropped.load(Ordering::SeqCst) => {
                        recover_after_tunnel_drop(t, opts, store, journal, &step.id, reporter)
                            .await?;
                    }
                    (outcome, _) => break outcome,
                }
            };
            summary.ran += 1;
            match outcome {
                StepStatus::Succeeded => summary.succeeded += 1,
                StepStatus::EndedUnverified => {
                    return Err(Error::NeedsDecision(format!(
                        "{id} never exited and was ended after its quiet window, but nothing proves it had finished (no done line, no data check); later steps were not run.\n  choices: `upstep mark {id} --applied` if its work is done, re-run with --retry to run it again, or stop here",
                        id = step.id
                    )));
                }
                StepStatus::Interrupted => {
                    return Err(if lost.load(Ordering::SeqCst) {
                        Error::Locked("the run lock was lost mid-step (another run took over after the lease expired); the step is recorded as interrupted".into())
                    } else {
                        stop_error(watcher, lost)
                    });
                }
                _ => {
                    return Err(Error::StepFailed(format!(
                        "step {} failed; later steps were not run. See its log and `upstep status`; fix the cause, then re-run with --retry",
                        step.id
                    )));
                }
            }
            if watcher.current() == StopRequest::AfterStep {
                return Err(Error::Interrupted);
            }
        }
        // Its steps are settled: free its disk (a prepared tag holds gigabytes of
        // node_modules) before the next tag is prepared. A failed step returned above and
        // keeps its tag's worktree for the retry.
        let needed_later = plan.groups[g + 1..].iter().zip(g + 1..).any(|(later, h)| {
            later.git_ref == group.git_ref && to_run.iter().any(|d| d.group == h)
        });
        if !opts.keep_worktrees && !needed_later {
            remove_worktree(&worktrees, repo, &tag, reporter);
        }
    }
    journal
        .event(
            "run-finished",
            None,
            bson::doc! { "ran": summary.ran as i64, "skipped": summary.skipped as i64 },
        )
        .await?;
    Ok(summary.clone())
}

/// The error a run stops with once a stop was requested: 130 for SIGINT (or "stop after this
/// step"), 143 for SIGTERM and SIGHUP, "locked" when the run lock was lost.
fn stop_error(watcher: &SignalWatcher, lost: &AtomicBool) -> Error {
    if lost.load(Ordering::SeqCst) {
        return Error::Locked(
            "the run lock was lost (another run took over after the lease expired); this run stops"
                .into(),
        );
    }
    match watcher.current() {
        StopRequest::Now {
            signal: libc::SIGTERM,
        } => Error::Terminated,
        StopRequest::None if watcher.last_signal() == Some(libc::SIGTERM) => Error::Terminated,
        _ => Error::Interrupted,
    }
}

/// Err when a stop was requested (now, or after the running step): checked before each phase
/// and before a step is journalled, so no step is recorded as started that never started.
fn stop_requested(watcher: &SignalWatcher, lost: &AtomicBool) -> Result<()> {
    match watcher.current() {
        StopRequest::None if !lost.load(Ordering::SeqCst) => Ok(()),
        _ => Err(stop_error(watcher, lost)),
    }
}

/// Runs a phase that is not a step (backup, checkout, toolchain) unless a "stop now" ends it
/// first. The phase is dropped: a child it runs is killed with its group (`RunningChild`'s
/// Drop), and each phase leaves only work a later run recognises as unfinished (a backup
/// without its manifest, a worktree without its stamp, a toolchain still in its temp dir).
async fn until_stopped<T>(
    watcher: &SignalWatcher,
    lost: &AtomicBool,
    phase: impl std::future::Future<Output = Result<T>>,
) -> Result<T> {
    let mut stop = watcher.stop_receiver();
    let stopped = async {
        if stop
            .wait_for(|s| matches!(s, StopRequest::Now { .. }))
            .await
            .is_err()
        {
            // No one can ask for a stop any more.
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        biased;
        () = stopped => Err(stop_error(watcher, lost)),
        result = phase => result,
    }
}

/// What one step watches besides its child: the stop requests (signals, and a dropped
/// tunnel) for this step only, so a recovered tunnel does not stop the next attempt.
struct StepCtx<'a> {
    stop: tokio::sync::watch::Receiver<StopRequest>,
    tunnel_dropped: &'a AtomicBool,
    tunnel: Option<tokio::sync::watch::Receiver<TunnelState>>,
}

/// A script whose database vanished with the tunnel usually fails before the tunnel monitor's
/// next look: when a step over a tunnel fails, wait briefly for the monitor's verdict, so a
/// dropped tunnel is recorded as what it is (an interruption), not as the script's failure.
async fn tunnel_went_down(ctx: &StepCtx<'_>) -> bool {
    if ctx.tunnel_dropped.load(Ordering::SeqCst) {
        return true;
    }
    let Some(mut rx) = ctx.tunnel.clone() else {
        return false;
    };
    let down = tokio::time::timeout(Duration::from_secs(4), async {
        loop {
            if matches!(*rx.borrow_and_update(), TunnelState::Down { .. }) {
                return true;
            }
            if rx.changed().await.is_err() {
                return false;
            }
        }
    })
    .await
    .unwrap_or(false);
    if down {
        ctx.tunnel_dropped.store(true, Ordering::SeqCst);
    }
    down
}

/// A stop channel for one step: the signal watcher's requests, plus SIGTERM to the script's
/// group as soon as the tunnel goes down (its database is out of reach: let it not flail).
fn step_stop_channel(
    watcher: &SignalWatcher,
    tunnel: Option<tokio::sync::watch::Receiver<TunnelState>>,
    dropped: Arc<AtomicBool>,
) -> (
    tokio::sync::watch::Receiver<StopRequest>,
    tokio::task::JoinHandle<()>,
) {
    let (tx, rx) = tokio::sync::watch::channel(watcher.current());
    let mut signals = watcher.stop_receiver();
    let forwarder = tokio::spawn(async move {
        let mut tunnel = tunnel;
        loop {
            tokio::select! {
                changed = signals.changed() => {
                    if changed.is_err() { return; }
                    tx.send_replace(*signals.borrow());
                }
                down = async {
                    match tunnel.as_mut() {
                        Some(t) => { let _ = t.changed().await; matches!(*t.borrow(), TunnelState::Down { .. }) }
                        None => std::future::pending().await,
                    }
                } => {
                    if down {
                        dropped.store(true, Ordering::SeqCst);
                        tx.send_replace(StopRequest::Now { signal: libc::SIGTERM });
                    }
                }
            }
        }
    });
    (rx, forwarder)
}

/// Whether a step stopped by a dropped tunnel may run again by itself: only when repeating it
/// is safe (idempotent or guarded) and the data still shows its work missing.
pub fn tunnel_rerun_is_safe(idempotent: crate::release_map::Idempotency, data: FpState) -> bool {
    idempotent != crate::release_map::Idempotency::No && data == FpState::Pending
}

/// Reopen the tunnel (bounded retries), settle the interrupted step in the database journal,
/// and either let it run again (`Ok`) or stop with the user's choices.
async fn recover_after_tunnel_drop(
    tunnel: &mut Tunnel,
    opts: &UpgradeOptions,
    store: &Store,
    journal: &Journal,
    id: &str,
    reporter: &mut dyn Reporter,
) -> Result<()> {
    let mirror = journal.mirror().path().display().to_string();
    reporter.report(&RunEvent::Notice {
        message: format!("the SSH tunnel dropped while {id} ran: the step was stopped and recorded as interrupted (local journal mirror: {mirror}); reopening the tunnel"),
    });
    tunnel.reopen(3, Duration::from_secs(2)).await.map_err(|e| Error::Tunnel {
        message: format!("the SSH tunnel dropped while {id} ran and could not be reopened: {e}\n  {id} is recorded as interrupted in the local journal mirror {mirror}"),
        fix: "check the SSH host and network, then re-run the same command with --retry".into(),
    })?;
    if !RunLock::new(store)
        .renew(journal.actor(), opts.lease)
        .await?
    {
        return Err(Error::Locked("the run lock expired while the tunnel was down and another run took it; this run stops".into()));
    }
    let entry = journal.entries().await?.remove(id);
    if entry.is_some_and(|e| e.status == StepStatus::Running) {
        let end = StepEnd {
            ended_by: "tunnel-dropped".into(),
            reason: "the SSH tunnel to the database dropped mid-step".into(),
            ..StepEnd::default()
        };
        journal.settle(id, StepStatus::Interrupted, &end).await?;
    }
    let migration = opts
        .map
        .migration(id)
        .ok_or_else(|| Error::Internal(format!("{id} not in the map")))?;
    let data = fingerprint::evaluate(
        &store.db,
        &migration.fingerprint,
        EvalOptions {
            time_limit: opts.check_time_limit,
            count_limit: None,
        },
    )
    .await
    .state;
    if tunnel_rerun_is_safe(migration.idempotent, data) {
        reporter.report(&RunEvent::Notice { message: format!("tunnel back; running {id} again: repeating it is safe and its data check still shows work to do") });
        return Ok(());
    }
    let why = if migration.idempotent == crate::release_map::Idempotency::No {
        "it is not idempotent".to_string()
    } else {
        format!("its data check says {:?}, so it may have finished", data).to_lowercase()
    };
    Err(Error::NeedsDecision(format!(
        "{id} was interrupted by a dropped SSH tunnel and {why}; nothing more was run.\n  choices: re-run with --retry to run it again, `upstep mark {id} --applied` if its work is done, or stop here"
    )))
}

/// The backup before the first step (`--backup DIR`), recorded in the journal.
async fn take_backup(
    opts: &UpgradeOptions,
    journal: &Journal,
    reporter: &mut dyn Reporter,
) -> Result<Option<String>> {
    let Some(dir) = &opts.backup_dir else {
        return Ok(None);
    };
    reporter.report(&RunEvent::Notice {
        message: format!(
            "backing up the database into {} before the first step",
            dir.display()
        ),
    });
    let options = crate::backup::BackupOptions {
        out_dir: dir.clone(),
        collections: None,
        gzip: false,
    };
    let manifest = crate::backup::backup(
        &opts.connection.mongo_uri,
        &options,
        &crate::backup::NoProgress,
    )
    .await?;
    let label = dir.display().to_string();
    let documents: u64 = manifest.collections.iter().map(|c| c.documents).sum();
    journal
        .event("backup-taken", None, bson::doc! { "backup": &label, "created_at": &manifest.created_at, "documents": documents as i64 })
        .await?;
    reporter.report(&RunEvent::Notice {
        message: format!("backup complete: {documents} documents in {label}"),
    });
    Ok(Some(label))
}

/// Where and as what a step runs.
struct StepAt<'a> {
    group_index: usize,
    commit: &'a str,
    worktree: &'a Path,
    path_prefix: &'a [PathBuf],
    backup: Option<&'a str>,
    index: usize,
    total: usize,
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

/// Delete a tag's worktree; a failure to do so costs disk, not correctness, so it is reported
/// and the run goes on.
fn remove_worktree(
    worktrees: &Worktrees,
    repo: &GitRepo,
    tag: &crate::git::TagInfo,
    reporter: &mut dyn Reporter,
) {
    if let Err(e) = worktrees.remove(repo, tag) {
        reporter.report(&RunEvent::Notice {
            message: format!("could not remove the worktree of {}: {e}", tag.name),
        });
    }
}

/// The setup a group's running steps need: the era's profile when they all name the same one.
fn setup_choice<'e>(
    era: &'e crate::release_map::Era,
    group: &crate::plan::PlanGroup,
    running: &[&&DecidedStep],
) -> crate::release_map::SetupChoice<'e> {
    era.setup_for(
        running
            .iter()
            .filter_map(|d| group.steps.iter().find(|s| s.id == d.id))
            .map(|s| s.mode.setup_profile.as_deref()),
    )
}

/// Before anything runs: every download the running tags' installs still fetch must be
/// reachable, or the run stops here naming the dependency (no step is started).
async fn check_downloads(
    opts: &UpgradeOptions,
    plan: &Plan,
    repo: &GitRepo,
    to_run: &[&DecidedStep],
) -> Result<()> {
    let mut needs = Vec::new();
    for (g, group) in plan.groups.iter().enumerate() {
        let running: Vec<&&DecidedStep> = to_run.iter().filter(|d| d.group == g).collect();
        if running.is_empty() {
            continue;
        }
        let era = group_era(&opts.map, group)?;
        let choice = setup_choice(era, group, &running);
        let tag = crate::repo_facts::resolve_group_ref(repo, group)?;
        needs.extend(
            crate::downloads::needed(&opts.map, group, choice.profile)
                .into_iter()
                .filter(|n| crate::downloads::still_fetched(repo, &tag.commit, n.download)),
        );
    }
    let blocked: Vec<String> = crate::downloads::checks_async(&needs)
        .await
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

/// What one tag's setup runs: the chosen commands, the lockfile the map says to repair, and
/// the toolchain they run with.
struct SetupPlan<'a> {
    git_ref: &'a str,
    era: &'a crate::release_map::Era,
    choice: crate::release_map::SetupChoice<'a>,
    repair_lockfile: Option<&'a str>,
    commit: &'a str,
    node_version: &'a str,
    pnpm: Option<&'a str>,
    /// This node's headers, for native modules the install compiles (node-gyp's `nodedir`).
    node_headers: Option<PathBuf>,
}

/// How many of a failed command's last lines the error shows.
const SETUP_TAIL_SHOWN: usize = 12;
/// At most one progress event per this interval while a setup command prints.
const SETUP_LINE_EVERY: Duration = Duration::from_millis(500);

/// The tag's setup commands, skipped when a stamp shows they already ran for this exact
/// (commit, node, pnpm, commands, lockfile repair) combination. Every command's output goes
/// to one log (appended, with a header per command); the latest line is reported while it
/// runs; a failure names the tag, the command, its last lines, the log and the fix.
#[allow(clippy::too_many_arguments)]
async fn run_setup(
    opts: &UpgradeOptions,
    setup: &SetupPlan<'_>,
    worktree: &Path,
    path_prefix: &[PathBuf],
    journal: &Journal,
    watcher: &Arc<SignalWatcher>,
    lost: &AtomicBool,
    reporter: &mut dyn Reporter,
) -> Result<()> {
    let commands = setup.choice.commands;
    if commands.is_empty() {
        return Ok(());
    }
    let git_ref = setup.git_ref.to_string();
    let mut key = Sha256::new();
    for part in [
        setup.commit,
        setup.node_version,
        setup.pnpm.unwrap_or("-"),
        setup.repair_lockfile.unwrap_or("-"),
    ] {
        key.update(part.as_bytes());
        key.update([0]);
    }
    key.update(
        serde_json::to_string(&(commands, &setup.era.setup_env))
            .unwrap_or_default()
            .as_bytes(),
    );
    let stamp_value = hex::encode(key.finalize());
    let stamp = worktree.join(".upstep-setup.stamp");
    let profile = match setup.choice.profile {
        Some(p) => format!("the {p} setup profile"),
        None => "the full setup".to_string(),
    };
    if std::fs::read_to_string(&stamp).is_ok_and(|s| s.trim() == stamp_value) {
        reporter.report(&RunEvent::Setup {
            git_ref,
            status: "cached".into(),
            detail: format!("{profile}: installed and built earlier for this commit and toolchain"),
        });
        return Ok(());
    }
    let _ = std::fs::remove_file(&stamp);
    let log = opts
        .state_dir
        .join("logs")
        .join(&journal.actor().run_id)
        .join(format!("setup-{git_ref}.log"));
    let mut setup_log = SetupLog::create(&log)?;
    setup_log.write(&format!(
        "# upstep setup of {git_ref} (commit {}), node {}, pnpm {}, {profile}\n",
        setup.commit,
        setup.node_version,
        setup.pnpm.unwrap_or("-")
    ))?;

    // Only a lockfile the map names is repaired, for the setup only: dropping `repaired`
    // (success, failure or interruption) puts the released file back.
    let repaired = match setup.repair_lockfile {
        Some(file) => {
            let repaired = lockfile::RepairedLockfile::apply(worktree, file)?;
            let detail = format!(
                "{file}: reconciled {} with the package.json files (external dependencies stay pinned; the file is restored after the setup)",
                crate::words::count(repaired.edits.len(), "stale workspace-link specifier")
            );
            setup_log.write(&format!("\n# {detail}\n"))?;
            for edit in &repaired.edits {
                setup_log.write(&format!("#   {}\n", edit.describe()))?;
            }
            let listed: Vec<String> = repaired.edits.iter().map(|e| e.describe()).collect();
            journal
                .event(
                    "lockfile-repaired",
                    None,
                    bson::doc! { "tag": &git_ref, "commit": setup.commit, "file": file, "edits": listed.len() as i64, "specifiers": listed },
                )
                .await?;
            reporter.report(&RunEvent::Setup {
                git_ref: git_ref.clone(),
                status: "lockfile-repaired".into(),
                detail,
            });
            Some(repaired)
        }
        None => None,
    };

    let total = commands.len();
    for (n, argv) in commands.iter().enumerate() {
        stop_requested(watcher, lost)?;
        let shown = argv.join(" ");
        setup_log.write(&format!(
            "\n===== [{}/{total}] {shown} (cwd: the worktree of {git_ref}) =====\n",
            n + 1
        ))?;
        reporter.report(&RunEvent::Setup {
            git_ref: git_ref.clone(),
            status: "running".into(),
            detail: shown.clone(),
        });
        let spec = ChildSpec {
            program: PathBuf::from(&argv[0]),
            args: argv[1..].to_vec(),
            cwd: worktree.to_path_buf(),
            env: setup_env(setup),
            env_remove: opts.connection.private_env.clone(),
            path_prefix: path_prefix.to_vec(),
            log_file: log.clone(),
            log_append: true,
            secrets: Vec::new(),
        };
        let child = match process::spawn_child(&spec) {
            Ok(child) => child,
            Err(e) => {
                let _ = setup_log.write(&format!("===== could not start: {e} =====\n"));
                drop(repaired);
                return Err(
                    setup_failed(journal, &git_ref, &shown, &e.to_string(), &[], &log).await,
                );
            }
        };
        let mut last_report = Instant::now() - SETUP_LINE_EVERY;
        let outcome = child
            .wait(
                Watch {
                    grace: opts.grace,
                    ..Watch::default()
                },
                watcher.stop_receiver(),
                None,
                &mut |line| {
                    if last_report.elapsed() >= SETUP_LINE_EVERY && !line.text.trim().is_empty() {
                        last_report = Instant::now();
                        reporter.report(&RunEvent::SetupOutput {
                            git_ref: git_ref.clone(),
                            line: line.text,
                        });
                    }
                },
            )
            .await?;
        let secs = outcome.duration.as_secs_f64();
        let ended = match (&outcome.ending, outcome.exit_code, outcome.signal) {
            (Ending::Stopped { signal }, _, _) => format!("stopped by signal {signal}"),
            (_, Some(code), _) => format!("exit {code}"),
            (_, None, Some(signal)) => format!("killed by signal {signal}"),
            _ => "ended abnormally".to_string(),
        };
        setup_log.write(&format!("===== {ended} after {secs:.1} s =====\n"))?;
        if let Ending::Stopped { .. } = outcome.ending {
            drop(repaired);
            return Err(stop_error(watcher, lost));
        }
        if outcome.exit_code != Some(0) {
            drop(repaired);
            let why = format!("{ended} after {secs:.1} s (command {} of {total})", n + 1);
            return Err(setup_failed(journal, &git_ref, &shown, &why, &outcome.tail, &log).await);
        }
        reporter.report(&RunEvent::Setup {
            git_ref: git_ref.clone(),
            status: "finished".into(),
            detail: format!("{shown} ({secs:.1} s)"),
        });
    }
    if let Some(repaired) = repaired {
        repaired.restore()?;
    }
    std::fs::write(&stamp, &stamp_value).map_err(|e| {
        Error::repository(
            format!("cannot write {}: {e}", stamp.display()),
            "check the disk",
        )
    })?;
    reporter.report(&RunEvent::Setup {
        git_ref,
        status: "done".into(),
        detail: format!("{profile} (log: {})", log.display()),
    });
    Ok(())
}

/// The setup commands' environment: the era's `setup_env`, plus node-gyp's `nodedir` pointing
/// at the tag's node headers (unless the map or the user set one), so native modules build
/// against the node that runs them without downloading headers from nodejs.org.
fn setup_env(setup: &SetupPlan<'_>) -> Vec<(String, String)> {
    let mut env = command::setup_env(setup.era);
    let set = |key: &str| {
        env.iter().any(|(k, _)| k.eq_ignore_ascii_case(key))
            || std::env::var_os(key).is_some()
            || std::env::var_os(key.to_ascii_uppercase()).is_some()
    };
    if let Some(headers) = &setup.node_headers {
        if !set("npm_config_nodedir") {
            env.push(("npm_config_nodedir".into(), headers.display().to_string()));
        }
    }
    env
}

/// The setup log: a header per command, every command's output appended below its header.
struct SetupLog {
    path: PathBuf,
}

impl SetupLog {
    fn create(path: &Path) -> Result<SetupLog> {
        let fail = |e: std::io::Error| {
            Error::StepFailed(format!(
                "cannot create the setup log {}: {e}\n  fix: make the state directory writable",
                path.display()
            ))
        };
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(fail)?;
        }
        std::fs::write(path, b"").map_err(fail)?;
        Ok(SetupLog {
            path: path.to_path_buf(),
        })
    }

    fn write(&mut self, text: &str) -> Result<()> {
        use std::io::Write;
        std::fs::OpenOptions::new()
            .append(true)
            .open(&self.path)
            .and_then(|mut f| f.write_all(text.as_bytes()))
            .map_err(|e| {
                Error::StepFailed(format!(
                    "cannot write the setup log {}: {e}\n  fix: check the disk",
                    self.path.display()
                ))
            })
    }
}

/// The fix for a failed setup command, from what its last lines say.
pub fn setup_fix(tail: &[String]) -> String {
    let text = tail.join("\n");
    let has = |needle: &str| text.contains(needle);
    if has("ERR_PNPM_OUTDATED_LOCKFILE") {
        "the tag's lockfile does not match its package.json files: if only workspace-link specifiers are stale (a version bump), declare repair_lockfile for this release in the release map (docs/release-map.md); otherwise the tag cannot be installed as released".into()
    } else if has("ENOSPC") || has("no space left") {
        "free disk space (each prepared tag takes several GB), then run again".into()
    } else if has("github.com") || has("codeload.github.com") {
        "the install fetches a package from GitHub: give this machine HTTPS access to github.com (or set HTTPS_PROXY), then run again".into()
    } else if has("ERR_INVALID_THIS") {
        "this pnpm does not work under this node: check the release's node and pnpm in the release map".into()
    } else if has("ENOTFOUND")
        || has("ETIMEDOUT")
        || has("ECONNREFUSED")
        || has("ECONNRESET")
        || has("EAI_AGAIN")
    {
        "a download failed: check network access to the package registry (or its proxy settings), then run again".into()
    } else {
        "read the setup log for the cause and fix it (network, disk, or the era's setup in the release map), then run again: the setup of this tag starts over".into()
    }
}

/// Journal a failed setup and build the error that names the tag, the command, its last
/// lines, the log and the fix. No step of the tag was started.
async fn setup_failed(
    journal: &Journal,
    git_ref: &str,
    command: &str,
    why: &str,
    tail: &[String],
    log: &Path,
) -> Error {
    let log_text = log.display().to_string();
    let _ = journal
        .event(
            "setup-failed",
            None,
            bson::doc! { "tag": git_ref, "command": command, "why": why, "log": &log_text },
        )
        .await;
    let lines: Vec<&String> = tail.iter().filter(|l| !l.trim().is_empty()).collect();
    let last = &lines[lines.len().saturating_sub(SETUP_TAIL_SHOWN)..];
    let shown = if last.is_empty() {
        "(no output)".to_string()
    } else {
        last.iter()
            .map(|l| l.as_str())
            .collect::<Vec<_>>()
            .join("\n    ")
    };
    Error::StepFailed(format!(
        "the setup of {git_ref} failed: `{command}` {why}; no step of {git_ref} was started\n  last lines:\n    {shown}\n  full log: {log_text}\n  fix: {}",
        setup_fix(tail)
    ))
}

#[allow(clippy::too_many_arguments)]
async fn run_step(
    opts: &UpgradeOptions,
    plan: &Plan,
    id: &str,
    at: &StepAt<'_>,
    ctx: &StepCtx<'_>,
    repo: &GitRepo,
    store: &Store,
    journal: &Journal,
    lost: &Arc<AtomicBool>,
    reporter: &mut dyn Reporter,
) -> Result<StepStatus> {
    let StepAt {
        group_index,
        commit,
        worktree,
        path_prefix,
        backup,
        index,
        total,
    } = *at;
    let group = &plan.groups[group_index];
    let step = group
        .steps
        .iter()
        .find(|s| s.id == id)
        .ok_or_else(|| Error::Internal(format!("{id} not in its group")))?;
    let migration = opts
        .map
        .migration(id)
        .ok_or_else(|| Error::Internal(format!("{id} not in the map")))?;
    let era = group_era(&opts.map, group)?;
    let sha = script_sha256(repo, commit, &step.script)?;

    journal
        .begin_step(&StepStart {
            id,
            tag: &group.git_ref,
            commit,
            script: &step.script,
            script_sha256: &sha,
            backup,
        })
        .await?;
    reporter.report(&RunEvent::StepStarted {
        index,
        total,
        id: id.into(),
        git_ref: group.git_ref.clone(),
        runs_as: step.runs_as.clone(),
        warnings: step.warnings.clone(),
    });

    let cmd = command::step_command(worktree, era, &step.mode, &step.script, id)?;
    let log_file = opts
        .state_dir
        .join("logs")
        .join(&journal.actor().run_id)
        .join(format!("{index:02}-{id}.log"));
    let spec = ChildSpec {
        program: cmd.program.clone(),
        args: cmd.args.clone(),
        cwd: cmd.cwd.clone(),
        env: command::era_env(era, &opts.connection),
        env_remove: opts.connection.private_env.clone(),
        path_prefix: path_prefix.to_vec(),
        log_file: log_file.clone(),
        log_append: false,
        secrets: opts.connection.secrets(),
    };
    let started = Instant::now();
    let child = match process::spawn_child(&spec) {
        Ok(child) => child,
        Err(e) => {
            let end = StepEnd {
                ended_by: "spawn-failed".into(),
                reason: e.to_string(),
                ..StepEnd::default()
            };
            journal.settle(id, StepStatus::Failed, &end).await?;
            return Err(e);
        }
    };
    journal.record_child(id, child.pid(), child.pgid()).await?;

    let mut done_lines = era.done_lines.clone();
    done_lines.extend(step.mode.done_line.clone());
    let quiet = step
        .mode
        .quiet_secs
        .or(opts.quiet_secs)
        .unwrap_or(opts.map.project.quiet_secs);
    let watch = Watch {
        finish_detection: step.mode.exits != Exits::Yes,
        quiet_window: Duration::from_secs(quiet),
        done_lines,
        timeout: opts.step_timeout,
        grace: opts.grace,
    };
    let mut probe = DataProbe {
        db: store.db.clone(),
        fingerprint: migration.fingerprint.clone(),
        time_limit: opts.check_time_limit,
    };
    // Output goes to the reporter as it comes (a spinner's latest line, JSON events).
    let outcome = child
        .wait(watch, ctx.stop.clone(), Some(&mut probe), &mut |line| {
            let stream = match line.stream {
                process::Stream::Stdout => "stdout",
                process::Stream::Stderr => "stderr",
            };
            reporter.report(&RunEvent::Output {
                id: id.into(),
                stream: stream.into(),
                line: line.text,
            });
        })
        .await;
    if let Some(shim) = &cmd.shim {
        let _ = std::fs::remove_file(shim);
    }
    let outcome = match outcome {
        Ok(o) => o,
        Err(e) => {
            let end = StepEnd {
                ended_by: "error".into(),
                reason: e.to_string(),
                duration_ms: started.elapsed().as_millis() as i64,
                ..StepEnd::default()
            };
            journal.settle(id, StepStatus::Failed, &end).await?;
            return Err(e);
        }
    };

    let ended_badly = !matches!(
        outcome.ending,
        Ending::Exited
            | Ending::DoneLine { .. }
            | Ending::QuietAndFinished
            | Ending::QuietUnverified
    ) || outcome.exit_code.is_some_and(|c| c != 0)
        || (outcome.ending == Ending::Exited && outcome.exit_code.is_none());
    let tunnel_down = ended_badly && tunnel_went_down(ctx).await;
    let (status, ended_by, mut reason) = match &outcome.ending {
        _ if tunnel_down => (
            StepStatus::Interrupted,
            "tunnel-dropped".to_string(),
            format!(
                "ended ({}) when the SSH tunnel to the database dropped",
                match (outcome.exit_code, outcome.signal) {
                    (Some(c), _) => format!("exit {c}"),
                    (None, Some(sig)) => format!("signal {sig}"),
                    _ => "stopped".to_string(),
                }
            ),
        ),
        Ending::Stopped { signal } if ctx.tunnel_dropped.load(Ordering::SeqCst) => (
            StepStatus::Interrupted,
            "tunnel-dropped".to_string(),
            format!("stopped (signal {signal}): the SSH tunnel to the database dropped"),
        ),
        Ending::Stopped { signal } if lost.load(Ordering::SeqCst) => (
            StepStatus::Interrupted,
            "lease-lost".to_string(),
            format!("stopped (signal {signal}): the run lock was lost"),
        ),
        Ending::Stopped { signal } => (
            StepStatus::Interrupted,
            "signal".to_string(),
            format!("stopped by signal {signal}"),
        ),
        Ending::TimedOut => (
            StepStatus::Failed,
            "timeout".to_string(),
            format!(
                "ran longer than {:?}",
                opts.step_timeout.unwrap_or_default()
            ),
        ),
        Ending::Exited if outcome.exit_code != Some(0) => (
            StepStatus::Failed,
            "exited".to_string(),
            match (outcome.exit_code, outcome.signal) {
                (Some(code), _) => format!("exited with code {code}"),
                (None, Some(sig)) => format!("killed by signal {sig}"),
                _ => "ended abnormally".to_string(),
            },
        ),
        Ending::Exited => (
            StepStatus::Succeeded,
            "exited".to_string(),
            "exited 0".to_string(),
        ),
        Ending::DoneLine { line } => (
            StepStatus::Succeeded,
            "done-line".to_string(),
            format!("printed {line:?}; ended by upstep"),
        ),
        Ending::QuietAndFinished => (
            StepStatus::Succeeded,
            "quiet-window".to_string(),
            format!("silent and idle for {quiet}s with nothing pending; ended by upstep"),
        ),
        // Nothing proves it finished: the operator decides (`upstep mark` or --retry).
        Ending::QuietUnverified => (
            StepStatus::EndedUnverified,
            "quiet-window".to_string(),
            format!("silent and idle for {quiet}s, with no done line and no data check to prove it had finished; ended by upstep"),
        ),
    };

    // Verify: a script that "succeeded" but left pending documents did not migrate.
    let mut status = status;
    if status == StepStatus::Succeeded {
        let report = fingerprint::evaluate(
            &store.db,
            &migration.fingerprint,
            EvalOptions {
                time_limit: opts.check_time_limit,
                count_limit: Some(1000),
            },
        )
        .await;
        let detail = match report.state {
            FpState::Pending => {
                let count = report.checks.iter().filter_map(|c| c.count).sum::<u64>();
                status = StepStatus::Failed;
                reason = format!(
                    "{reason}, but it did not migrate: its data check still finds {}",
                    crate::words::count(count as usize, "pending document")
                );
                format!("{count} pending")
            }
            FpState::Unknown => {
                reason = format!(
                    "{reason}; not verified: {}",
                    report
                        .reason
                        .clone()
                        .unwrap_or_else(|| "a check could not run".into())
                );
                "unknown".to_string()
            }
            _ => {
                reason = format!("{reason}; verified by its data check");
                String::new()
            }
        };
        reporter.report(&RunEvent::Verification {
            id: id.into(),
            state: report.state.as_str().into(),
            detail,
        });
    }
    let end = StepEnd {
        exit_code: outcome.exit_code,
        signal: outcome.signal,
        ended_by: ended_by.clone(),
        reason: reason.clone(),
        duration_ms: outcome.duration.as_millis() as i64,
        output_tail: outcome.tail.clone(),
    };
    if let Err(e) = journal.settle(id, status, &end).await {
        if !ctx.tunnel_dropped.load(Ordering::SeqCst) {
            return Err(e);
        }
        // The database is out of reach with the tunnel: the local mirror keeps the record
        // until the tunnel is back (see `recover_after_tunnel_drop`).
        journal.mirror().append(&bson::doc! {
            "at": bson::DateTime::now(), "run_id": &journal.actor().run_id, "kind": "step-interrupted",
            "migration": id, "details": { "ended_by": &ended_by, "reason": &reason },
        });
    }
    reporter.report(&RunEvent::StepFinished {
        id: id.into(),
        status: status.as_str().into(),
        ended_by,
        reason: format!("{reason} (log: {})", log_file.display()),
        duration_ms: outcome.duration.as_millis() as u64,
    });
    Ok(status)
}
