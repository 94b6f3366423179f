//! SIGINT/SIGTERM/SIGHUP during a run, turned into stop requests for the running child.
//!
//! Children run in their own process groups, so a Ctrl-C at the terminal reaches upstep only;
//! upstep decides what the child gets. Policy (design.md): unattended, the first SIGINT or
//! SIGTERM stops the child now with that signal; interactive, the first SIGINT asks the user
//! "stop after this step / stop now", a second SIGINT stops now, SIGTERM always stops now.
//! SIGHUP (the terminal or SSH session that started upstep is gone) is SIGTERM in every way:
//! nobody is left to ask, the child gets SIGTERM, and upstep exits 143.

use std::sync::atomic::{AtomicI32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use futures_util::stream::{BoxStream, StreamExt};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use super::process::StopRequest;
use crate::error::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignalPolicy {
    /// The first SIGINT or SIGTERM -> `StopRequest::Now { that signal }`.
    Unattended,
    /// The first SIGINT -> an `AskStop` to the caller; a second SIGINT -> `Now { SIGINT }`;
    /// SIGTERM -> `Now { SIGTERM }`.
    Interactive,
}

/// Sent (interactive policy) on the first SIGINT: ask "stop after this step / stop now" and
/// answer with `SignalWatcher::set_stop`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AskStop;

/// What one arriving signal does, given the policy and how many of that signal came so far
/// (including this one). Pure, so the policy is tested without real signals.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reaction {
    Stop(StopRequest),
    Ask,
    Ignore,
}

pub fn react(policy: SignalPolicy, signal: i32, count: usize) -> Reaction {
    match (policy, signal) {
        (_, libc::SIGTERM) => Reaction::Stop(StopRequest::Now { signal }),
        (_, libc::SIGHUP) => Reaction::Stop(StopRequest::Now {
            signal: libc::SIGTERM,
        }),
        (SignalPolicy::Unattended, libc::SIGINT) => Reaction::Stop(StopRequest::Now { signal }),
        (SignalPolicy::Interactive, libc::SIGINT) if count <= 1 => Reaction::Ask,
        (SignalPolicy::Interactive, libc::SIGINT) => Reaction::Stop(StopRequest::Now { signal }),
        _ => Reaction::Ignore,
    }
}

struct Shared {
    policy: SignalPolicy,
    sigint: AtomicUsize,
    sigterm: AtomicUsize,
    /// 0 while none arrived.
    last: AtomicI32,
    stop_tx: watch::Sender<StopRequest>,
    ask_tx: mpsc::UnboundedSender<AskStop>,
}

impl Shared {
    fn arrived(&self, signal: i32) {
        let count = match signal {
            libc::SIGINT => self.sigint.fetch_add(1, Ordering::SeqCst) + 1,
            // A hang-up counts as the SIGTERM it is treated as.
            libc::SIGTERM | libc::SIGHUP => self.sigterm.fetch_add(1, Ordering::SeqCst) + 1,
            _ => return,
        };
        let signal = if signal == libc::SIGHUP {
            libc::SIGTERM
        } else {
            signal
        };
        self.last.store(signal, Ordering::SeqCst);
        match react(self.policy, signal, count) {
            Reaction::Stop(request) => {
                // The first "now" wins: its signal is what the run reports (exit 130 or 143).
                self.stop_tx.send_if_modified(|current| {
                    if matches!(current, StopRequest::Now { .. }) {
                        false
                    } else {
                        *current = request;
                        true
                    }
                });
            }
            Reaction::Ask => {
                // With no one left to ask (the receiver was dropped), stop now.
                if self.ask_tx.send(AskStop).is_err() {
                    self.stop_tx.send_if_modified(|current| {
                        let changed = !matches!(current, StopRequest::Now { .. });
                        if changed {
                            *current = StopRequest::Now { signal };
                        }
                        changed
                    });
                }
            }
            Reaction::Ignore => {}
        }
    }
}

/// Watches SIGINT, SIGTERM and SIGHUP for a run. Create one per process: once installed, these signals
/// no longer kill upstep by default (tokio keeps its handlers for the life of the process).
pub struct SignalWatcher {
    shared: Arc<Shared>,
    stop_rx: watch::Receiver<StopRequest>,
    ask_rx: Mutex<Option<mpsc::UnboundedReceiver<AskStop>>>,
    task: JoinHandle<()>,
}

impl SignalWatcher {
    /// Installs the handlers for SIGINT, SIGTERM and SIGHUP. Must be called inside a tokio
    /// runtime.
    pub fn install(policy: SignalPolicy) -> Result<SignalWatcher> {
        let fail = |e: std::io::Error| {
            Error::Internal(format!(
                "cannot install the SIGINT/SIGTERM/SIGHUP handlers: {e}"
            ))
        };
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(Error::Internal(
                "SignalWatcher::install called outside a tokio runtime".into(),
            ));
        }
        let mut int = signal(SignalKind::interrupt()).map_err(fail)?;
        let mut term = signal(SignalKind::terminate()).map_err(fail)?;
        let mut hup = signal(SignalKind::hangup()).map_err(fail)?;
        let stream = futures_util::stream::poll_fn(move |cx| {
            // Any of them; a stream that ended (never, for tokio's) just stops counting.
            if let std::task::Poll::Ready(Some(())) = int.poll_recv(cx) {
                return std::task::Poll::Ready(Some(libc::SIGINT));
            }
            if let std::task::Poll::Ready(Some(())) = term.poll_recv(cx) {
                return std::task::Poll::Ready(Some(libc::SIGTERM));
            }
            if let std::task::Poll::Ready(Some(())) = hup.poll_recv(cx) {
                return std::task::Poll::Ready(Some(libc::SIGHUP));
            }
            std::task::Poll::Pending
        });
        Ok(Self::from_stream(policy, stream.boxed()))
    }

    /// A watcher driven by an injected stream of signal numbers (for tests, and for callers
    /// that already own the signal handling). Must be called inside a tokio runtime.
    pub fn from_stream(
        policy: SignalPolicy,
        mut signals: BoxStream<'static, i32>,
    ) -> SignalWatcher {
        let (stop_tx, stop_rx) = watch::channel(StopRequest::None);
        let (ask_tx, ask_rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            policy,
            sigint: AtomicUsize::new(0),
            sigterm: AtomicUsize::new(0),
            last: AtomicI32::new(0),
            stop_tx,
            ask_tx,
        });
        let task_shared = Arc::clone(&shared);
        let task = tokio::spawn(async move {
            while let Some(signal) = signals.next().await {
                tracing::debug!(signal, "signal arrived");
                task_shared.arrived(signal);
            }
        });
        SignalWatcher {
            shared,
            stop_rx,
            ask_rx: Mutex::new(Some(ask_rx)),
            task,
        }
    }

    /// The stop requests to hand to `RunningChild::wait`.
    pub fn stop_receiver(&self) -> watch::Receiver<StopRequest> {
        self.stop_rx.clone()
    }

    /// The interactive prompts ("the user pressed Ctrl-C once"). There is one receiver: the
    /// first call gets it, later calls get None.
    pub fn take_ask_receiver(&self) -> Option<mpsc::UnboundedReceiver<AskStop>> {
        self.ask_rx.lock().ok().and_then(|mut slot| slot.take())
    }

    /// The prompt's answer (or any caller's decision). A `Now` already in force is kept.
    pub fn set_stop(&self, request: StopRequest) {
        self.shared.stop_tx.send_if_modified(|current| {
            if matches!(current, StopRequest::Now { .. }) || *current == request {
                false
            } else {
                *current = request;
                true
            }
        });
    }

    /// The stop request in force now.
    pub fn current(&self) -> StopRequest {
        *self.stop_rx.borrow()
    }

    /// The last SIGINT or SIGTERM (a SIGHUP reads as SIGTERM) that arrived, if any.
    pub fn last_signal(&self) -> Option<i32> {
        match self.shared.last.load(Ordering::SeqCst) {
            0 => None,
            signal => Some(signal),
        }
    }

    /// How many times `signal` (SIGINT, or SIGTERM including SIGHUPs) arrived.
    pub fn count(&self, signal: i32) -> usize {
        match signal {
            libc::SIGINT => self.shared.sigint.load(Ordering::SeqCst),
            libc::SIGTERM => self.shared.sigterm.load(Ordering::SeqCst),
            _ => 0,
        }
    }
}

impl Drop for SignalWatcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const NOW_INT: StopRequest = StopRequest::Now {
        signal: libc::SIGINT,
    };
    const NOW_TERM: StopRequest = StopRequest::Now {
        signal: libc::SIGTERM,
    };

    #[test]
    fn policy_table() {
        use Reaction::*;
        use SignalPolicy::*;
        assert_eq!(react(Unattended, libc::SIGINT, 1), Stop(NOW_INT));
        assert_eq!(react(Unattended, libc::SIGTERM, 1), Stop(NOW_TERM));
        assert_eq!(react(Interactive, libc::SIGINT, 1), Ask);
        assert_eq!(react(Interactive, libc::SIGINT, 2), Stop(NOW_INT));
        assert_eq!(react(Interactive, libc::SIGTERM, 1), Stop(NOW_TERM));
        // A hang-up is a SIGTERM: the child gets SIGTERM, nobody is asked.
        assert_eq!(react(Interactive, libc::SIGHUP, 1), Stop(NOW_TERM));
        assert_eq!(react(Unattended, libc::SIGHUP, 1), Stop(NOW_TERM));
        assert_eq!(react(Interactive, libc::SIGUSR1, 1), Ignore);
    }

    /// Feeds signals through a channel and waits until the watcher has seen them all.
    async fn feed(policy: SignalPolicy) -> (SignalWatcher, mpsc::UnboundedSender<i32>) {
        let (tx, rx) = mpsc::unbounded_channel::<i32>();
        let stream =
            futures_util::stream::unfold(
                rx,
                |mut rx| async move { rx.recv().await.map(|s| (s, rx)) },
            );
        (SignalWatcher::from_stream(policy, stream.boxed()), tx)
    }

    async fn settle(w: &SignalWatcher, total: usize) {
        for _ in 0..200 {
            if w.count(libc::SIGINT) + w.count(libc::SIGTERM) >= total {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        panic!("the watcher did not see {total} signals");
    }

    #[tokio::test]
    async fn unattended_first_signal_stops_now() {
        let (w, tx) = feed(SignalPolicy::Unattended).await;
        let mut stop = w.stop_receiver();
        tx.send(libc::SIGTERM).unwrap();
        stop.changed().await.unwrap();
        assert_eq!(*stop.borrow(), NOW_TERM);
        // A later SIGINT does not change which signal the run reports.
        tx.send(libc::SIGINT).unwrap();
        settle(&w, 2).await;
        assert_eq!(w.current(), NOW_TERM);
        assert_eq!(w.last_signal(), Some(libc::SIGINT));
        assert_eq!(w.count(libc::SIGINT), 1);
        assert_eq!(w.count(libc::SIGTERM), 1);
    }

    #[tokio::test]
    async fn interactive_asks_then_stops_on_second_sigint() {
        let (w, tx) = feed(SignalPolicy::Interactive).await;
        let mut asks = w.take_ask_receiver().unwrap();
        assert!(w.take_ask_receiver().is_none());
        assert_eq!(w.last_signal(), None);
        tx.send(libc::SIGINT).unwrap();
        assert_eq!(asks.recv().await, Some(AskStop));
        assert_eq!(w.current(), StopRequest::None);
        // The prompt answers "after this step"...
        w.set_stop(StopRequest::AfterStep);
        assert_eq!(w.current(), StopRequest::AfterStep);
        // ...and a second Ctrl-C overrides it.
        tx.send(libc::SIGINT).unwrap();
        settle(&w, 2).await;
        assert_eq!(w.current(), NOW_INT);
        // Now is final.
        w.set_stop(StopRequest::AfterStep);
        assert_eq!(w.current(), NOW_INT);
    }

    #[tokio::test]
    async fn interactive_sigterm_stops_now() {
        let (w, tx) = feed(SignalPolicy::Interactive).await;
        let mut asks = w.take_ask_receiver().unwrap();
        tx.send(libc::SIGTERM).unwrap();
        settle(&w, 1).await;
        assert_eq!(w.current(), NOW_TERM);
        assert!(asks.try_recv().is_err());
    }

    #[tokio::test]
    async fn sighup_stops_now_as_sigterm() {
        let (w, tx) = feed(SignalPolicy::Interactive).await;
        let mut asks = w.take_ask_receiver().unwrap();
        tx.send(libc::SIGHUP).unwrap();
        settle(&w, 1).await;
        assert_eq!(w.current(), NOW_TERM);
        assert_eq!(w.last_signal(), Some(libc::SIGTERM));
        assert!(asks.try_recv().is_err());
    }

    #[tokio::test]
    async fn interactive_without_a_prompt_stops_now() {
        let (w, tx) = feed(SignalPolicy::Interactive).await;
        drop(w.take_ask_receiver());
        tx.send(libc::SIGINT).unwrap();
        settle(&w, 1).await;
        assert_eq!(w.current(), NOW_INT);
    }

    /// The only test sending real signals to the test process: both handlers are installed
    /// before the first kill, so the default action (terminate) can no longer happen.
    #[tokio::test]
    async fn real_signals_are_counted() {
        let w = SignalWatcher::install(SignalPolicy::Interactive).unwrap();
        let mut asks = w.take_ask_receiver().unwrap();
        // Both signals are handled by tokio now.
        crate::child::raise(nix::sys::signal::Signal::SIGINT);
        tokio::time::timeout(Duration::from_secs(5), asks.recv())
            .await
            .unwrap();
        crate::child::raise(nix::sys::signal::Signal::SIGTERM);
        settle(&w, 2).await;
        assert_eq!(w.current(), NOW_TERM);
        assert_eq!(w.last_signal(), Some(libc::SIGTERM));
    }
}
