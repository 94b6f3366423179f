//! The run lock: taken (waiting a bounded time, taking over a dead holder), and kept by a
//! heartbeat that renews its lease and stops the running step when it is lost.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::recovery::*;
use super::UpgradeOptions;
use crate::error::{Error, Result};
use crate::runner::process::StopRequest;
use crate::runner::signals::SignalWatcher;
use crate::store::journal::{Actor, Journal};
use crate::store::lock::{Acquire, RunLock};
use crate::store::Store;
use crate::ui::events::{Reporter, RunEvent};

/// Take the run lock, waiting a bounded time; a dead holder on this host is ended and taken
/// over at once.
pub(super) async fn take_lock(
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

/// Renews the lease until stopped; on losing it, stops the running step.
pub(super) fn spawn_heartbeat(
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
