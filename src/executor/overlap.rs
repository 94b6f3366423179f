//! Preparing the next tag while this tag's steps run. On real Novu a tag's scripts take
//! seconds and its setup minutes, so the next tag's checkout, toolchain and setup (install,
//! build) run alongside the steps of the current one, one tag ahead at most.
//!
//! - Only a tag with setup commands is prepared ahead (a checkout alone costs seconds), never
//!   the current tag again, and not when free memory is below `Overlap::min_free_memory` (a
//!   script that boots the API takes about 770 MB; an install and a build take as much).
//! - The steps keep their order and their journal: what the preparation journals (a lockfile
//!   repair, a failed setup) is held, and written when its tag comes up; a failed preparation
//!   is reported then, never before.
//! - A failed step or a stop drops the preparation: its children's groups are killed (dropping
//!   a running child kills its group), a repaired lockfile is put back, and the worktree is
//!   left without its setup stamp, so the next run sets it up again.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::future::{select, BoxFuture, Either, LocalBoxFuture};

use super::effects::{BackupTaken, DataChecks, Effects, RunStore, Surroundings};
use super::prepare::{self, PreparedTag};
use super::stop::Stops;
use super::{DecidedStep, UpgradeOptions};
use crate::detect::{DetectOptions, DetectReport};
use crate::error::Result;
use crate::plan::Plan;
use crate::release_map::ReleaseMap;
use crate::runner::signals::SignalWatcher;
use crate::store::journal::{Actor, JournalEntry, StepEnd, StepStart, StepStatus};
use crate::store::lock::{Acquire, LockDoc};
use crate::store::mirror::Mirror;
use crate::ui::events::{Reporter, RunEvent};

/// Free memory below which the next tag is not prepared alongside the steps.
pub const MIN_FREE_MEMORY: u64 = 1536 * 1024 * 1024;

/// Whether (and when) a run prepares the next tag while the steps of one run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Overlap {
    /// False with `--no-overlap`: one tag at a time.
    pub enabled: bool,
    /// Below this much available memory the next tag waits for its turn.
    pub min_free_memory: u64,
}

impl Default for Overlap {
    fn default() -> Self {
        Overlap {
            enabled: true,
            min_free_memory: MIN_FREE_MEMORY,
        }
    }
}

/// Why the next tag is not prepared ahead for lack of memory (None: enough, or unknown).
pub fn short_of_memory(min_free: u64, available: Option<u64>) -> Option<String> {
    let available = available?;
    (available < min_free).then(|| {
        format!(
            "{} MB of memory available, under the {} MB preparing a tag alongside the steps needs",
            available / (1024 * 1024),
            min_free / (1024 * 1024)
        )
    })
}

/// The memory the kernel says is available (`MemAvailable` in /proc/meminfo), if it says.
fn available_memory() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// The tag to prepare while the steps of group `g` run: the next group with steps to run,
/// when it is another tag, has setup commands, and memory allows.
pub(super) fn next_ahead<'d>(
    opts: &UpgradeOptions,
    plan: &Plan,
    g: usize,
    to_run: &[&'d DecidedStep],
    fx: &mut Effects<'_>,
) -> Option<(usize, Vec<&'d DecidedStep>)> {
    if !opts.overlap.enabled {
        return None;
    }
    let (h, steps) = (g + 1..plan.groups.len()).find_map(|h| {
        let steps: Vec<&DecidedStep> = to_run.iter().copied().filter(|d| d.group == h).collect();
        (!steps.is_empty()).then_some((h, steps))
    })?;
    let (now, next) = (&plan.groups[g], &plan.groups[h]);
    if next.git_ref == now.git_ref {
        return None;
    }
    let era = prepare::group_era(&opts.map, next).ok()?;
    if prepare::setup_choice(era, next, &steps).commands.is_empty() {
        return None;
    }
    if let Some(why) = short_of_memory(opts.overlap.min_free_memory, available_memory()) {
        fx.reporter.report(&RunEvent::Notice {
            message: format!(
                "{} is prepared after the steps of {}, not alongside them: {why}",
                next.git_ref, now.git_ref
            ),
        });
        return None;
    }
    Some((h, steps))
}

/// A tag prepared while the steps of the one before it ran.
pub(super) struct Ahead {
    group: usize,
    result: Result<PreparedTag>,
    /// What its preparation journalled, written when its tag comes up.
    held: Vec<HeldEvent>,
    /// The steps it ran alongside (their tag).
    behind: String,
    /// How long its preparation took, and how much of that the steps hid.
    took: Duration,
    hidden: Duration,
}

impl Ahead {
    /// The prepared tag of group `g`, if it was prepared ahead: its held journal events are
    /// written now, then its failure is returned, or what the overlap saved is reported.
    pub(super) async fn arrive(
        ahead: &mut Option<Ahead>,
        g: usize,
        fx: &mut Effects<'_>,
    ) -> Option<Result<PreparedTag>> {
        let this = ahead.take_if(|a| a.group == g)?;
        for (kind, id, details) in this.held {
            if let Err(e) = fx.store.event(&kind, id.as_deref(), details).await {
                return Some(Err(e));
            }
        }
        if let Ok(tag) = &this.result {
            fx.reporter.report(&RunEvent::Setup {
                git_ref: tag.tag.name.clone(),
                status: "prepared-ahead".into(),
                phase: "setup".into(),
                detail: format!(
                    "prepared while the steps of {} ran: {:.1} s of its {:.1} s preparation hidden",
                    this.behind,
                    this.hidden.as_secs_f64(),
                    this.took.as_secs_f64()
                ),
                duration_ms: this.hidden.as_millis() as u64,
            });
        }
        Some(this.result)
    }
}

/// Run `steps` (the steps of group `g`) while group `h` is prepared. The steps' result comes
/// first; the preparation is dropped (cancelled) when they fail or a stop ends them.
pub(super) async fn steps_alongside(
    opts: &UpgradeOptions,
    plan: &Plan,
    (g, h): (usize, usize),
    next_steps: &[&DecidedStep],
    stops: &Stops,
    fx: &mut Effects<'_>,
    steps: impl AsyncFnOnce(&mut Effects<'_>) -> Result<()>,
) -> (Result<()>, Option<Ahead>) {
    let clock = fx.clock.clone();
    let shared = SharedReporter(Arc::new(Mutex::new(&mut *fx.reporter)));
    let (mut fg_reporter, mut bg_reporter) = (shared.clone(), shared);
    let held = Arc::new(HoldEvents {
        inner: fx.store.clone(),
        held: Mutex::new(Vec::new()),
    });
    let mut no_surroundings = NoSurroundings;
    let mut fg = Effects {
        store: fx.store.clone(),
        workspace: fx.workspace,
        children: fx.children,
        clock: fx.clock.clone(),
        // Reborrowed for this scope (an `Option` does not shorten its object's lifetime).
        tunnel: match &mut fx.tunnel {
            Some(t) => Some(&mut **t),
            None => None,
        },
        prompt: fx.prompt,
        surroundings: &mut *fx.surroundings,
        reporter: &mut fg_reporter,
    };
    let mut bg = Effects {
        store: held.clone(),
        workspace: fx.workspace,
        children: fx.children,
        clock: fx.clock.clone(),
        tunnel: None,
        prompt: fx.prompt,
        surroundings: &mut no_surroundings,
        reporter: &mut bg_reporter,
    };
    let started = clock.now();
    let group = &plan.groups[h];
    let preparing = std::pin::pin!(async {
        let result = prepare::prepare_tag(opts, group, next_steps, stops, &mut bg).await;
        (result, clock.now())
    });
    let running = std::pin::pin!(steps(&mut fg));
    let ((result, prepared_at), steps_result, steps_ended) = match select(running, preparing).await
    {
        Either::Left((steps_result, preparing)) => {
            let steps_ended = clock.now();
            if steps_result.is_err() {
                // Dropping the preparation kills its children; nothing it held is written.
                return (steps_result, None);
            }
            (preparing.await, steps_result, steps_ended)
        }
        Either::Right((prepared, running)) => {
            let steps_result = running.await;
            (prepared, steps_result, clock.now())
        }
    };
    if steps_result.is_err() {
        // A prepared tag stays stamped for the next run; a failed one is reported when its
        // tag comes up, which it now does not.
        return (steps_result, None);
    }
    let held = std::mem::take(&mut *held.held.lock().unwrap_or_else(|e| e.into_inner()));
    let ahead = Ahead {
        group: h,
        result,
        held,
        behind: plan.groups[g].git_ref.clone(),
        took: prepared_at - started,
        hidden: overlap_of(started, prepared_at, steps_ended),
    };
    (Ok(()), Some(ahead))
}

/// How much of a preparation from `started` to `prepared` ran before the steps ended.
fn overlap_of(started: Instant, prepared: Instant, steps_ended: Instant) -> Duration {
    prepared.min(steps_ended).saturating_duration_since(started)
}

/// One reporter for the steps and the preparation running alongside them.
#[derive(Clone)]
struct SharedReporter<'r>(Arc<Mutex<&'r mut dyn Reporter>>);

impl Reporter for SharedReporter<'_> {
    fn report(&mut self, event: &RunEvent) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .report(event);
    }
}

/// The preparation asks nothing of what surrounds the run.
struct NoSurroundings;

impl Surroundings for NoSurroundings {
    fn prepare<'a>(
        &'a mut self,
        _opts: &'a mut UpgradeOptions,
        _full: &'a Plan,
        _to_run: &'a Plan,
        _reporter: &'a mut dyn Reporter,
    ) -> LocalBoxFuture<'a, Result<()>> {
        Box::pin(std::future::ready(Ok(())))
    }
    fn watch_signals(&mut self) -> Result<Arc<SignalWatcher>> {
        Err(crate::error::Error::Internal(
            "a tag prepared ahead watches no signals of its own".into(),
        ))
    }
}

/// A journal event held back: kind, migration, details.
type HeldEvent = (String, Option<String>, bson::Document);

/// The run's store for a preparation running ahead: its events are held (written when its
/// tag comes up, so the journal reads in the order of the tags); everything else goes through.
struct HoldEvents {
    inner: Arc<dyn RunStore>,
    held: Mutex<Vec<HeldEvent>>,
}

impl RunStore for HoldEvents {
    fn next_run(&self) -> Arc<dyn RunStore> {
        self.inner.next_run()
    }
    fn actor(&self) -> &Actor {
        self.inner.actor()
    }
    fn mirror(&self) -> &Mirror {
        self.inner.mirror()
    }
    fn checks(&self) -> &dyn DataChecks {
        self.inner.checks()
    }
    fn ensure_readable(&self) -> BoxFuture<'_, Result<()>> {
        self.inner.ensure_readable()
    }
    fn entries(&self) -> BoxFuture<'_, Result<BTreeMap<String, JournalEntry>>> {
        self.inner.entries()
    }
    fn event<'a>(
        &'a self,
        kind: &'a str,
        id: Option<&'a str>,
        details: bson::Document,
    ) -> BoxFuture<'a, Result<()>> {
        self.held.lock().unwrap_or_else(|e| e.into_inner()).push((
            kind.to_string(),
            id.map(str::to_string),
            details,
        ));
        Box::pin(std::future::ready(Ok(())))
    }
    fn begin_step<'a>(&'a self, start: &'a StepStart<'a>) -> BoxFuture<'a, Result<()>> {
        self.inner.begin_step(start)
    }
    fn record_child<'a>(&'a self, id: &'a str, pid: u32, pgid: i32) -> BoxFuture<'a, Result<()>> {
        self.inner.record_child(id, pid, pgid)
    }
    fn settle<'a>(
        &'a self,
        id: &'a str,
        status: StepStatus,
        end: &'a StepEnd,
    ) -> BoxFuture<'a, Result<()>> {
        self.inner.settle(id, status, end)
    }
    fn settle_abandoned<'a>(
        &'a self,
        entry: &'a JournalEntry,
        reason: &'a str,
        known_dead: bool,
    ) -> BoxFuture<'a, Result<bool>> {
        self.inner.settle_abandoned(entry, reason, known_dead)
    }
    fn mark<'a>(
        &'a self,
        id: &'a str,
        status: StepStatus,
        reason: &'a str,
    ) -> BoxFuture<'a, Result<()>> {
        self.inner.mark(id, status, reason)
    }
    fn mark_held<'a>(
        &'a self,
        id: &'a str,
        status: StepStatus,
        reason: &'a str,
    ) -> BoxFuture<'a, Result<()>> {
        self.inner.mark_held(id, status, reason)
    }
    fn try_acquire(&self, lease: Duration) -> BoxFuture<'_, Result<Acquire>> {
        self.inner.try_acquire(lease)
    }
    fn take_over<'a>(&'a self, dead: &'a LockDoc, lease: Duration) -> BoxFuture<'a, Result<bool>> {
        self.inner.take_over(dead, lease)
    }
    fn renew_lease(&self, lease: Duration) -> BoxFuture<'_, Result<Option<bson::DateTime>>> {
        self.inner.renew_lease(lease)
    }
    fn beat(&self, until: bson::DateTime) -> BoxFuture<'_, Result<()>> {
        self.inner.beat(until)
    }
    fn release(&self) -> BoxFuture<'_, Result<()>> {
        self.inner.release()
    }
    fn backup<'a>(&'a self, dir: &'a Path) -> BoxFuture<'a, Result<BackupTaken>> {
        self.inner.backup(dir)
    }
    fn detect<'a>(
        &'a self,
        map: &'a ReleaseMap,
        opts: DetectOptions,
    ) -> LocalBoxFuture<'a, Result<DetectReport>> {
        self.inner.detect(map, opts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_next_tag_waits_when_memory_is_short_or_says_nothing_when_unknown() {
        let gb = 1024 * 1024 * 1024;
        assert_eq!(short_of_memory(MIN_FREE_MEMORY, Some(4 * gb)), None);
        assert_eq!(short_of_memory(MIN_FREE_MEMORY, None), None);
        let why = short_of_memory(MIN_FREE_MEMORY, Some(gb)).unwrap();
        assert_eq!(
            why,
            "1024 MB of memory available, under the 1536 MB preparing a tag alongside the steps needs"
        );
    }

    #[test]
    fn what_the_overlap_hid_is_the_preparation_before_the_steps_ended() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        // Prepared before the steps ended: all of it hidden.
        assert_eq!(overlap_of(t0, t0 + s(40), t0 + s(60)), s(40));
        // The steps ended first: the part until then.
        assert_eq!(overlap_of(t0, t0 + s(90), t0 + s(20)), s(20));
    }
}
