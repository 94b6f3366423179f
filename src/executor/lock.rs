//! The run lock: taken (waiting a bounded time, taking over a dead holder), kept by a
//! heartbeat that renews its lease and stops the running step when it is lost, released.
//! Marks by hand (`upstep mark`, an answer at the terminal) take it too.

use std::sync::Arc;
use std::time::Duration;

use super::effects::{Clock, Effects, RunStore};
use super::recovery::end_dead_run;
use super::stop::Stops;
use super::UpgradeOptions;
use crate::error::{Error, Result};
use crate::runner::signals::SignalWatcher;
use crate::store::journal::{Actor, Journal, StepStatus};
use crate::store::lock::{Acquire, RunLock};
use crate::store::mirror::{state_dir, Mirror};
use crate::store::Store;
use crate::ui::events::RunEvent;

/// Take the run lock, waiting a bounded time; a dead holder on this host is ended and taken
/// over at once.
pub(super) async fn take(opts: &UpgradeOptions, fx: &mut Effects<'_>) -> Result<()> {
    let store = fx.store.clone();
    let deadline = fx.clock.now() + opts.lock_wait;
    let mut announced = false;
    loop {
        match store.try_acquire(opts.lease).await? {
            Acquire::Acquired { took_over } => {
                if let Some(old) = took_over {
                    store
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
                end_dead_run(&holder, opts, fx).await?;
                if store.take_over(&holder, opts.lease).await? {
                    store
                        .event("lock-taken-over", None, bson::doc! { "previous": holder.describe(), "why": "its process is gone" })
                        .await?;
                    return Ok(());
                }
            }
            Acquire::Held(holder) => {
                if fx.clock.now() >= deadline {
                    return Err(Error::Locked(format!(
                        "another upstep run holds the lock: {}\n  fix: wait for it to finish (its lease is renewed while it runs); if that run is certainly gone, run `upstep unlock`",
                        holder.describe()
                    )));
                }
                if !announced {
                    fx.reporter.report(&RunEvent::Notice {
                        message: format!("waiting for the run lock held by {}", holder.describe()),
                    });
                    announced = true;
                }
                fx.clock.sleep(Duration::from_millis(300)).await;
            }
        }
    }
}

/// The start of every locked run (upgrade, rollback): refuse a journal or lock from a newer
/// upstep before anything is written, take the lock, and keep its lease renewed.
pub(super) async fn take_and_keep(
    opts: &UpgradeOptions,
    watcher: Arc<SignalWatcher>,
    fx: &mut Effects<'_>,
) -> Result<(Stops, Heartbeat)> {
    fx.store.ensure_readable().await?;
    take(opts, fx).await?;
    let stops = Stops::new(watcher);
    let heartbeat = Heartbeat::start(
        fx.store.clone(),
        fx.clock.clone(),
        opts.lease,
        stops.clone(),
    );
    Ok((stops, heartbeat))
}

/// Renews the lease until stopped (the handle aborts it when dropped); on losing it, stops
/// the running step.
pub(super) struct Heartbeat(tokio::task::JoinHandle<()>);

impl Heartbeat {
    pub(super) fn start(
        store: Arc<dyn RunStore>,
        clock: Arc<dyn Clock>,
        lease: Duration,
        stops: Stops,
    ) -> Heartbeat {
        Heartbeat(tokio::spawn(async move {
            let period = (lease / 3).max(Duration::from_millis(100));
            loop {
                clock.sleep(period).await;
                match store.renew_lease(lease).await {
                    // The running step's journal entry gets the same end as the lease, so a run
                    // on another host can tell it is alive even without the lock (`upstep
                    // unlock`), and once the lease has run out, so has the heartbeat.
                    Ok(Some(until)) => {
                        if let Err(e) = store.beat(until).await {
                            tracing::warn!("could not renew the running step's heartbeat: {e}");
                        }
                    }
                    Ok(None) => {
                        tracing::error!(
                            "lost the run lock: another run took it over; stopping the running step"
                        );
                        stops.lose_lock();
                        return;
                    }
                    // A blip: the lease has slack (renewed three times per lease).
                    Err(e) => tracing::warn!("could not renew the run lock: {e}"),
                }
            }
        }))
    }
}

impl Drop for Heartbeat {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Release the lock even after a failure; a lost lock is not ours to release.
pub(super) async fn release(store: &dyn RunStore, stops: &Stops) {
    if stops.lock_lost() {
        return;
    }
    if let Err(e) = store.release().await {
        tracing::warn!("could not release the run lock: {e}");
    }
}

/// Record a mark while holding the run lock, so it never lands in the middle of a run.
pub async fn mark_locked(store: &Store, id: &str, status: StepStatus, reason: &str) -> Result<()> {
    let actor = Actor::current();
    let lock = RunLock::new(store);
    match lock.try_acquire(&actor, Duration::from_secs(30)).await? {
        Acquire::Acquired { .. } => {}
        Acquire::Held(holder) => {
            return Err(Error::Locked(format!(
                "an upgrade is running ({}); mark after it ends",
                holder.describe()
            )));
        }
    }
    let journal = Journal::new(
        store,
        actor.clone(),
        Mirror::for_database(&state_dir(), &store.redacted_uri),
    );
    let result = journal.mark(id, status, reason).await;
    lock.release(&actor).await?;
    result
}
