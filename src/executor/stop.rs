//! Stop requests: signals, a lost lock and a dropped tunnel, checked between phases and
//! forwarded to a running step.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::runner::process::StopRequest;
use crate::runner::signals::SignalWatcher;
use crate::tunnel::TunnelState;

/// What can stop a run: the signal watcher's requests, and the run lock being lost (the
/// heartbeat then also requests a stop, so a running step ends).
#[derive(Clone)]
pub(super) struct Stops {
    pub(super) watcher: Arc<SignalWatcher>,
    lost: Arc<AtomicBool>,
}

impl Stops {
    pub(super) fn new(watcher: Arc<SignalWatcher>) -> Stops {
        Stops {
            watcher,
            lost: Arc::new(AtomicBool::new(false)),
        }
    }

    pub(super) fn lock_lost(&self) -> bool {
        self.lost.load(Ordering::SeqCst)
    }

    /// Another run took the lock over: stop the running step.
    pub(super) fn lose_lock(&self) {
        self.lost.store(true, Ordering::SeqCst);
        self.watcher.set_stop(StopRequest::Now {
            signal: libc::SIGTERM,
        });
    }

    pub(super) fn current(&self) -> StopRequest {
        self.watcher.current()
    }

    /// The error a run stops with once a stop was requested: 130 for SIGINT (or "stop after
    /// this step"), 143 for SIGTERM and SIGHUP, "locked" when the run lock was lost.
    pub(super) fn error(&self) -> Error {
        if self.lock_lost() {
            return Error::Locked(
                "the run lock was lost (another run took over after the lease expired); this run stops"
                    .into(),
            );
        }
        match self.watcher.current() {
            StopRequest::Now {
                signal: libc::SIGTERM,
            } => Error::Terminated,
            StopRequest::None if self.watcher.last_signal() == Some(libc::SIGTERM) => {
                Error::Terminated
            }
            _ => Error::Interrupted,
        }
    }

    /// Err when a stop was requested (now, or after the running step): checked before each
    /// phase and before a step is journalled, so no step is recorded as started that never
    /// started.
    pub(super) fn check(&self) -> Result<()> {
        match self.watcher.current() {
            StopRequest::None if !self.lock_lost() => Ok(()),
            _ => Err(self.error()),
        }
    }

    /// Runs a phase that is not a step (backup, checkout, toolchain) unless a "stop now" ends
    /// it first. The phase is dropped: a child it runs is killed with its group
    /// (`RunningChild`'s Drop), and each phase leaves only work a later run recognises as
    /// unfinished (a backup without its manifest, a worktree without its stamp, a toolchain
    /// still in its temp dir).
    pub(super) async fn until<T>(
        &self,
        phase: impl std::future::Future<Output = Result<T>>,
    ) -> Result<T> {
        let mut stop = self.watcher.stop_receiver();
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
            () = stopped => Err(self.error()),
            result = phase => result,
        }
    }
}

/// What one step watches besides its child: the stop requests (signals, and a dropped
/// tunnel) for this step only, so a recovered tunnel does not stop the next attempt.
pub(super) struct StepCtx {
    pub(super) stop: tokio::sync::watch::Receiver<StopRequest>,
    pub(super) tunnel_dropped: Arc<AtomicBool>,
    pub(super) tunnel: Option<tokio::sync::watch::Receiver<TunnelState>>,
    forwarder: tokio::task::JoinHandle<()>,
}

impl StepCtx {
    /// A stop channel for one step: the signal watcher's requests, plus SIGTERM to the
    /// script's group as soon as the tunnel goes down (its database is out of reach: let it
    /// not flail).
    pub(super) fn new(
        watcher: &SignalWatcher,
        tunnel: Option<tokio::sync::watch::Receiver<TunnelState>>,
    ) -> StepCtx {
        let dropped = Arc::new(AtomicBool::new(false));
        let (tx, rx) = tokio::sync::watch::channel(watcher.current());
        let mut signals = watcher.stop_receiver();
        let mut watched = tunnel.clone();
        let flag = dropped.clone();
        let forwarder = tokio::spawn(async move {
            loop {
                tokio::select! {
                    changed = signals.changed() => {
                        if changed.is_err() { return; }
                        tx.send_replace(*signals.borrow());
                    }
                    down = async {
                        match watched.as_mut() {
                            Some(t) => { let _ = t.changed().await; matches!(*t.borrow(), TunnelState::Down { .. }) }
                            None => std::future::pending().await,
                        }
                    } => {
                        if down {
                            flag.store(true, Ordering::SeqCst);
                            tx.send_replace(StopRequest::Now { signal: libc::SIGTERM });
                        }
                    }
                }
            }
        });
        StepCtx {
            stop: rx,
            tunnel_dropped: dropped,
            tunnel,
            forwarder,
        }
    }

    pub(super) fn tunnel_dropped(&self) -> bool {
        self.tunnel_dropped.load(Ordering::SeqCst)
    }

    /// A script whose database vanished with the tunnel usually fails before the tunnel
    /// monitor's next look: when a step over a tunnel fails, wait briefly for the monitor's
    /// verdict, so a dropped tunnel is recorded as what it is (an interruption), not as the
    /// script's failure.
    pub(super) async fn tunnel_went_down(&self) -> bool {
        if self.tunnel_dropped() {
            return true;
        }
        let Some(mut rx) = self.tunnel.clone() else {
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
            self.tunnel_dropped.store(true, Ordering::SeqCst);
        }
        down
    }
}

impl Drop for StepCtx {
    fn drop(&mut self) {
        self.forwarder.abort();
    }
}
