//! The rehearsal's measuring reporter: it passes every event of the run on and measures each
//! step (counts of every collection at its start and end, its data check's pending documents,
//! its time) into the rehearsal's recording.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::rehearse::{merge_counts, Counts, Measure, Recording, StepReport};
use crate::ui::events::{Reporter, RunEvent};

/// Wraps the run's reporter: passes every event on, and measures each step (counts of every
/// collection at its start and end, its data check's pending documents, its time).
pub struct Recorder {
    inner: Box<dyn Reporter>,
    state: Arc<Mutex<Recording>>,
    measure: Box<dyn Measure>,
    running: Option<(usize, Instant, Counts)>,
    setup_started: Option<Instant>,
}

impl Recorder {
    pub fn new(
        inner: Box<dyn Reporter>,
        state: Arc<Mutex<Recording>>,
        measure: Box<dyn Measure>,
    ) -> Recorder {
        Recorder {
            inner,
            state,
            measure,
            running: None,
            setup_started: None,
        }
    }

    fn record(&mut self, event: &RunEvent) {
        let Ok(mut state) = self.state.lock() else {
            return;
        };
        match event {
            RunEvent::Plan { steps } => {
                state.skipped = steps.iter().filter(|s| s.action == "skip").count();
            }
            RunEvent::StepStarted {
                id,
                git_ref,
                warnings,
                ..
            } => {
                // Read before the clock starts: the measuring is not the step's time.
                let pending_before = self.measure.pending(id);
                let before = self.measure.counts().unwrap_or_default();
                state.steps.push(StepReport {
                    id: id.clone(),
                    git_ref: git_ref.clone(),
                    status: "not-finished".into(),
                    pending_before,
                    warnings: warnings.clone(),
                    ..StepReport::default()
                });
                self.running = Some((state.steps.len() - 1, Instant::now(), before));
            }
            RunEvent::Verification { id, state: s, .. } => {
                if let Some(step) = state.steps.iter_mut().rev().find(|st| &st.id == id) {
                    step.verification = Some(s.clone());
                }
            }
            RunEvent::StepFinished {
                id,
                status,
                ended_by,
                reason,
                ..
            } => {
                let Some((index, started, before)) = self.running.take() else {
                    return;
                };
                let duration_ms = started.elapsed().as_millis() as u64;
                let after = self.measure.counts().unwrap_or_default();
                if let Some(step) = state.steps.get_mut(index).filter(|s| &s.id == id) {
                    step.status = status.clone();
                    step.ended_by = ended_by.clone();
                    step.reason = reason.clone();
                    step.duration_ms = duration_ms;
                    step.collections = merge_counts(&before, &after);
                }
            }
            RunEvent::Notice { message } => {
                match self
                    .running
                    .as_ref()
                    .and_then(|(i, _, _)| state.steps.get_mut(*i))
                {
                    Some(step) => step.warnings.push(message.clone()),
                    None => state.notices.push(message.clone()),
                }
            }
            RunEvent::Setup { status, .. } => match status.as_str() {
                "running" | "lockfile-repaired" if self.setup_started.is_none() => {
                    self.setup_started = Some(Instant::now());
                }
                "done" => {
                    if let Some(started) = self.setup_started.take() {
                        state.setup_ms += started.elapsed().as_millis() as u64;
                    }
                }
                _ => {}
            },
            RunEvent::Summary { status, .. } => state.status = Some(status.clone()),
            _ => {}
        }
    }
}

impl Reporter for Recorder {
    fn report(&mut self, event: &RunEvent) {
        self.record(event);
        self.inner.report(event);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fake(Vec<Counts>);
    impl Measure for Fake {
        fn counts(&mut self) -> Option<Counts> {
            Some(self.0.remove(0))
        }
        fn pending(&mut self, _: &str) -> Option<u64> {
            Some(7)
        }
    }
    struct Sink;
    impl Reporter for Sink {
        fn report(&mut self, _: &RunEvent) {}
    }

    #[test]
    fn the_recorder_measures_each_step_between_its_events() {
        let state = Arc::new(Mutex::new(Recording::default()));
        let before = Counts::from([("a".to_string(), 2), ("b".to_string(), 5)]);
        let after = Counts::from([("a".to_string(), 3), ("c".to_string(), 1)]);
        let mut r = Recorder::new(
            Box::new(Sink),
            state.clone(),
            Box::new(Fake(vec![before, after])),
        );
        r.report(&RunEvent::StepStarted {
            index: 1,
            total: 1,
            id: "s".into(),
            git_ref: "v1".into(),
            runs_as: "file".into(),
            warnings: vec!["careful".into()],
        });
        r.report(&RunEvent::Notice {
            message: "said while running".into(),
        });
        r.report(&RunEvent::Verification {
            id: "s".into(),
            state: "applied".into(),
            detail: String::new(),
        });
        r.report(&RunEvent::StepFinished {
            id: "s".into(),
            status: "succeeded".into(),
            ended_by: "exited".into(),
            reason: "exited 0".into(),
            duration_ms: 5,
        });
        let state = state.lock().unwrap();
        let step = &state.steps[0];
        assert_eq!(step.status, "succeeded");
        assert_eq!(step.pending_before, Some(7));
        assert_eq!(step.verification.as_deref(), Some("applied"));
        assert_eq!(step.warnings, ["careful", "said while running"]);
        let changed: Vec<(&str, u64, u64)> = step
            .changed()
            .map(|c| (c.name.as_str(), c.before, c.after))
            .collect();
        assert_eq!(changed, [("a", 2, 3), ("b", 5, 0), ("c", 0, 1)]);
    }
}
