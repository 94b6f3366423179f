//! Whether a planned step runs, is skipped, or needs the user's decision: a pure function of
//! what the journal says, what the data says, and the flags.
//!
//! The journal wins over the data; nothing that ran (or was marked) is run again by surprise;
//! a script that is not idempotent is never repeated unless the data shows its work missing.

use serde::Serialize;

use crate::release_map::Idempotency;
use crate::store::fingerprint::FpState;
use crate::store::journal::StepStatus;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    Run,
    Skip,
    /// Needs --retry, --force or `upstep mark`: the run refuses to go past it.
    Block,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Decision {
    pub action: Action,
    pub reason: String,
    /// The journal says done but the data shows pending documents again.
    pub regressed: bool,
    /// Neither the journal nor a data check can tell whether it is applied.
    pub unknown: bool,
    /// An optional step the user did not ask for (`--include-optional <id>`): skipped.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub left_out: bool,
}

/// Everything known about one step before the run.
#[derive(Debug, Clone, Copy)]
pub struct StepFacts {
    pub journal: Option<StepStatus>,
    /// None when the data was not read (no connection in a pure plan).
    pub data: Option<FpState>,
    pub idempotent: Idempotency,
    /// The script was introduced at or before the version the user says the data is at.
    pub at_or_before_from: bool,
    /// The journal shows it `running` for another run whose heartbeat is fresh.
    pub running_elsewhere: bool,
    /// An optional step (the map's `optional`) the user did not ask for by id.
    pub optional_left_out: bool,
}

#[derive(Debug, Clone, Copy, Default)]
pub struct Flags {
    /// Re-run steps recorded as failed or interrupted (and regressed ones).
    pub retry: bool,
    /// Run a step even though its data check says applied (including non-idempotent ones).
    pub force: bool,
}

fn decision(action: Action, reason: impl Into<String>) -> Decision {
    Decision {
        action,
        reason: reason.into(),
        regressed: false,
        unknown: false,
        left_out: false,
    }
}

/// What an optional step the user did not ask for gets.
pub const OPTIONAL_LEFT_OUT: &str = "optional: runs only when asked for by id (--include-optional <id>); see its warnings in `upstep plan`";

/// What a step another run is still running gets: left alone, whatever the flags.
pub const RUNNING_ELSEWHERE: &str = "running elsewhere: another run's heartbeat on it is fresh; it is left alone whatever the flags (--retry, --force, `upstep mark` included): wait for that run to finish";

pub fn decide(facts: StepFacts, flags: Flags) -> Decision {
    if facts.running_elsewhere {
        return decision(Action::Block, RUNNING_ELSEWHERE);
    }
    if facts.optional_left_out {
        // Never run by surprise, and never a blocker: not asked for is a decision.
        return Decision {
            left_out: true,
            ..decision(Action::Skip, OPTIONAL_LEFT_OUT)
        };
    }
    let data = facts.data.unwrap_or(FpState::Unknown);
    let not_idempotent = facts.idempotent == Idempotency::No;
    match facts.journal {
        Some(status) if status.is_done() => {
            if data != FpState::Pending {
                return decision(Action::Skip, format!("journal: {}", status.as_str()));
            }
            let mut d = if !flags.retry {
                decision(Action::Skip, format!("journal: {}, but its data check finds pending documents again (regressed): re-run it with --retry", status.as_str()))
            } else if not_idempotent && !flags.force {
                decision(Action::Block, "regressed, and not idempotent: re-running it changes data again; pass --force to run it anyway, or `upstep mark` it")
            } else {
                decision(
                    Action::Run,
                    "regressed: its data check finds pending documents again (--retry)",
                )
            };
            d.regressed = true;
            d
        }
        Some(
            status @ (StepStatus::Failed
            | StepStatus::Interrupted
            | StepStatus::EndedUnverified
            | StepStatus::Running),
        ) => {
            let what = match status {
                StepStatus::Running => "interrupted (its run is gone)",
                StepStatus::EndedUnverified => {
                    "ended-unverified (ended after its quiet window; nothing proves it had finished)"
                }
                _ => status.as_str(),
            };
            if !flags.retry {
                return decision(Action::Block, format!("journal: {what}; re-run it with --retry, or record it with `upstep mark <id> --applied|--pending`"));
            }
            match (not_idempotent, data) {
                (false, _) => decision(Action::Run, format!("retry after {what} (safe: the script is idempotent or guarded)")),
                (true, FpState::Pending) => decision(Action::Run, format!("retry after {what}: its data check shows the work missing")),
                (true, _) if flags.force => decision(Action::Run, format!("retry after {what} (--force)")),
                (true, _) => decision(Action::Block, format!("{what}, not idempotent, and its data check cannot show the work missing: re-running it may apply it twice; pass --force, or `upstep mark` it")),
            }
        }
        Some(StepStatus::Pending) => decision(Action::Run, "journal: marked pending"),
        // No journal entry (or skipped earlier): the data decides.
        _ => match data {
            FpState::Applied | FpState::NotApplicable if flags.force => decision(
                Action::Run,
                "its data check says applied, run anyway (--force)",
            ),
            FpState::Applied => decision(
                Action::Skip,
                "already applied: its data check finds nothing pending",
            ),
            FpState::NotApplicable => decision(
                Action::Skip,
                "not needed: the collections it migrates are absent or empty",
            ),
            FpState::Pending if facts.at_or_before_from => decision(
                Action::Run,
                "pending per its data check, although older than --from",
            ),
            FpState::Pending => decision(Action::Run, "pending per its data check"),
            FpState::Unknown if facts.at_or_before_from => decision(
                Action::Skip,
                "assumed applied: older than --from and no data check can tell",
            ),
            FpState::Unknown => Decision {
                unknown: true,
                ..decision(
                    Action::Run,
                    "no data check can tell whether it is applied: planned",
                )
            },
        },
    }
}

/// A step's script at its tag is not the one the journal records (a moved tag). Running it
/// again would put a different script over the recorded one's (possibly partial) work: that
/// needs the operator's word. A step that is done, or was reset to pending on purpose, only
/// gets a notice.
pub fn changed_script_stops(journal: StepStatus, action: Action) -> bool {
    action == Action::Run && !matches!(journal, StepStatus::Pending | StepStatus::Skipped)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL_IDEMPOTENCY: [Idempotency; 3] =
        [Idempotency::Yes, Idempotency::Guarded, Idempotency::No];
    const ALL_DATA: [Option<FpState>; 5] = [
        None,
        Some(FpState::Applied),
        Some(FpState::Pending),
        Some(FpState::NotApplicable),
        Some(FpState::Unknown),
    ];
    const ALL_JOURNAL: [Option<StepStatus>; 9] = [
        None,
        Some(StepStatus::Running),
        Some(StepStatus::Succeeded),
        Some(StepStatus::Failed),
        Some(StepStatus::Interrupted),
        Some(StepStatus::EndedUnverified),
        Some(StepStatus::MarkedApplied),
        Some(StepStatus::Pending),
        Some(StepStatus::Skipped),
    ];

    fn every_case() -> Vec<(StepFacts, Flags)> {
        let mut cases = Vec::new();
        for journal in ALL_JOURNAL {
            for data in ALL_DATA {
                for idempotent in ALL_IDEMPOTENCY {
                    for at_or_before_from in [false, true] {
                        for (retry, force) in
                            [(false, false), (true, false), (false, true), (true, true)]
                        {
                            cases.push((
                                StepFacts {
                                    journal,
                                    data,
                                    idempotent,
                                    at_or_before_from,
                                    running_elsewhere: false,
                                    optional_left_out: false,
                                },
                                Flags { retry, force },
                            ));
                        }
                    }
                }
            }
        }
        cases
    }

    #[test]
    fn a_done_step_never_runs_without_retry_or_evidence() {
        for (facts, flags) in every_case() {
            let d = decide(facts, flags);
            if facts.journal.is_some_and(|s| s.is_done()) && d.action == Action::Run {
                assert_eq!(facts.data, Some(FpState::Pending), "{facts:?} {flags:?}");
                assert!(flags.retry, "{facts:?} {flags:?}");
                assert!(d.regressed);
            }
        }
    }

    #[test]
    fn a_failed_or_interrupted_step_blocks_without_retry() {
        for (facts, flags) in every_case() {
            let d = decide(facts, flags);
            if matches!(
                facts.journal,
                Some(
                    StepStatus::Failed
                        | StepStatus::Interrupted
                        | StepStatus::EndedUnverified
                        | StepStatus::Running
                )
            ) && !flags.retry
            {
                assert_eq!(d.action, Action::Block, "{facts:?} {flags:?}");
                assert!(d.reason.contains("--retry"), "{}", d.reason);
            }
        }
    }

    #[test]
    fn an_ended_unverified_step_is_not_done_and_needs_a_decision() {
        assert!(!StepStatus::EndedUnverified.is_done());
        for (facts, flags) in every_case() {
            if facts.journal != Some(StepStatus::EndedUnverified) {
                continue;
            }
            let d = decide(facts, flags);
            assert_ne!(d.action, Action::Skip, "{facts:?} {flags:?}");
            if !flags.retry {
                assert_eq!(d.action, Action::Block, "{facts:?} {flags:?}");
                assert!(
                    d.reason.contains("--retry") && d.reason.contains("upstep mark"),
                    "{}",
                    d.reason
                );
            }
        }
    }

    #[test]
    fn a_non_idempotent_step_reruns_only_on_evidence_or_force() {
        for (facts, flags) in every_case() {
            let d = decide(facts, flags);
            let ran_before = facts
                .journal
                .is_some_and(|s| s != StepStatus::Pending && s != StepStatus::Skipped);
            if facts.idempotent == Idempotency::No && ran_before && d.action == Action::Run {
                assert!(
                    facts.data == Some(FpState::Pending) || flags.force,
                    "{facts:?} {flags:?} -> {d:?}"
                );
            }
        }
    }

    #[test]
    fn data_decides_when_the_journal_is_silent() {
        let facts = |data, at_or_before_from| StepFacts {
            journal: None,
            data,
            idempotent: Idempotency::Guarded,
            at_or_before_from,
            running_elsewhere: false,
            optional_left_out: false,
        };
        let no = Flags::default();
        assert_eq!(
            decide(facts(Some(FpState::Applied), false), no).action,
            Action::Skip
        );
        assert_eq!(
            decide(facts(Some(FpState::NotApplicable), false), no).action,
            Action::Skip
        );
        assert_eq!(
            decide(facts(Some(FpState::Pending), false), no).action,
            Action::Run
        );
        assert_eq!(
            decide(facts(Some(FpState::Pending), true), no).action,
            Action::Run,
            "older than --from but pending"
        );
        let unknown = decide(facts(Some(FpState::Unknown), false), no);
        assert_eq!((unknown.action, unknown.unknown), (Action::Run, true));
        assert_eq!(decide(facts(None, true), no).action, Action::Skip);
        assert_eq!(
            decide(
                facts(Some(FpState::Applied), false),
                Flags {
                    retry: false,
                    force: true
                }
            )
            .action,
            Action::Run
        );
    }

    #[test]
    fn a_step_running_elsewhere_is_left_alone_whatever_the_flags() {
        for (facts, flags) in every_case() {
            let facts = StepFacts {
                journal: Some(StepStatus::Running),
                running_elsewhere: true,
                ..facts
            };
            let d = decide(facts, flags);
            assert_eq!(d.action, Action::Block, "{facts:?} {flags:?}");
            assert!(d.reason.contains("running elsewhere"), "{}", d.reason);
        }
    }

    #[test]
    fn a_changed_script_stops_only_a_step_that_would_run_again() {
        for (facts, flags) in every_case() {
            let Some(status) = facts.journal else {
                continue;
            };
            let d = decide(facts, flags);
            let stops = changed_script_stops(status, d.action);
            if d.action != Action::Run || status == StepStatus::Pending {
                assert!(!stops, "{facts:?} {flags:?}");
            }
            if d.action == Action::Run
                && matches!(
                    status,
                    StepStatus::Failed | StepStatus::Interrupted | StepStatus::Succeeded
                )
            {
                assert!(stops, "{facts:?} {flags:?}");
            }
        }
    }

    #[test]
    fn an_optional_step_not_asked_for_is_skipped_whatever_the_journal_data_and_flags() {
        for (facts, flags) in every_case() {
            let d = decide(
                StepFacts {
                    optional_left_out: true,
                    ..facts
                },
                flags,
            );
            assert_eq!(d.action, Action::Skip, "{facts:?} {flags:?}");
            assert!(
                d.left_out && d.reason.contains("--include-optional"),
                "{d:?}"
            );
            // Asked for, it is decided like any other step.
            let asked = decide(facts, flags);
            assert!(!asked.left_out);
            assert_eq!(asked, decide(facts, flags));
        }
    }

    #[test]
    fn every_decision_gives_a_reason() {
        for (facts, flags) in every_case() {
            assert!(!decide(facts, flags).reason.is_empty());
        }
    }
}
