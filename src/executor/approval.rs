//! Which steps about to run need the operator's yes, and whether they have it.
//!
//! Two levels:
//! - a *routine* confirmation for a step that is not idempotent, destructive, lossy, or whose
//!   data check cannot tell its state: `--yes`, or one yes at the terminal for the list;
//! - an *approval of its own* for a step that is both not idempotent and unverifiable (no data
//!   check, or one that gave no answer): nothing would notice a repeat or a partial run, so
//!   `--yes` does not cover it. It needs `--approve <id>`, or a yes for that step at the
//!   terminal.
//!
//! The check is a pure function of the one decision a run makes (see `decide_steps`), so what
//! is asked is exactly what runs.

use std::collections::BTreeSet;
use std::path::PathBuf;

use futures_util::future::LocalBoxFuture;

use crate::error::{Error, Result};
use crate::plan::Plan;
use crate::release_map::{Fingerprint, Idempotency, ReleaseMap};
use crate::store::fingerprint::FpState;

use super::decide::Action;
use super::effects::{Blocked, Prompt};
use super::DecidedStep;
use crate::detect::DetectReport;

/// What the operator approved before the run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Approvals {
    /// The routine confirmations: `--yes`, or a yes at the terminal.
    pub routine: bool,
    /// Steps approved one by one: `--approve <id>`, or a yes at the terminal for that step.
    pub steps: BTreeSet<String>,
    /// Optional steps asked for by id (`--include-optional <id>`); the others are skipped.
    pub optional: BTreeSet<String>,
}

/// `--yes` and `--approve` as the answers of an unattended run. Today's unattended runs ask
/// nothing (the run checks its approvals against its decision, `check`), so this answers only
/// if a flow asks: a step by `--approve`, the routine confirmation by `--yes`; no question
/// changes the plan (the target stays, unfinished steps stop the run, no backup is added).
impl Prompt for Approvals {
    fn target(&self, map: &ReleaseMap, _detected: &DetectReport) -> Result<semver::Version> {
        Ok(map.default_target(false)?.version.clone())
    }
    fn blocked(&self, _steps: &[&DecidedStep]) -> Result<Blocked> {
        Ok(Blocked::Stop)
    }
    fn confirm_run(&self, _steps: usize) -> Result<bool> {
        Ok(true)
    }
    fn backup(&self) -> Result<Option<PathBuf>> {
        Ok(None)
    }
    fn approve_step<'a>(&'a self, id: &'a str) -> LocalBoxFuture<'a, Result<bool>> {
        Box::pin(std::future::ready(Ok(self.steps.contains(id))))
    }
    fn confirm_risky(&self) -> LocalBoxFuture<'_, Result<bool>> {
        Box::pin(std::future::ready(Ok(self.routine)))
    }
}

/// A step about to run that needs a yes, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RiskyStep {
    pub id: String,
    /// "not idempotent", "destructive", "lossy", "cannot be verified from the data".
    pub why: Vec<&'static str>,
    pub warnings: Vec<String>,
    /// Not idempotent and unverifiable: `--yes` is not enough.
    pub needs_approval: bool,
}

impl RiskyStep {
    /// `id (why, ...)` and the map's warnings, one per line.
    pub fn describe(&self) -> String {
        let mut text = format!("{} ({})", self.id, self.why.join(", "));
        for warning in &self.warnings {
            text.push_str(&format!("\n      {warning}"));
        }
        text
    }
}

/// Whether nothing can tell if the step ran: no data check in the map, or one that gave no
/// answer on this database.
fn unverifiable(map: &ReleaseMap, step: &DecidedStep) -> bool {
    let no_check = map
        .migration(&step.id)
        .is_none_or(|m| matches!(m.fingerprint, Fingerprint::Unknown { .. }));
    no_check || step.data.is_none_or(|d| d == FpState::Unknown)
}

/// The steps of `decided` that will run and need a yes, in plan order.
pub fn risky_steps(map: &ReleaseMap, plan: &Plan, decided: &[DecidedStep]) -> Vec<RiskyStep> {
    plan.steps()
        .filter_map(|(_, s)| {
            let d = decided
                .iter()
                .find(|d| d.id == s.id && d.decision.action == Action::Run)?;
            let not_idempotent = s.idempotent == Idempotency::No;
            let needs_approval = not_idempotent && unverifiable(map, d);
            if !(not_idempotent || s.destructive || s.lossy || d.decision.unknown) {
                return None;
            }
            let mut why = Vec::new();
            if not_idempotent {
                why.push("not idempotent");
            }
            if s.destructive {
                why.push("destructive");
            }
            if s.lossy {
                why.push("lossy");
            }
            if d.decision.unknown || needs_approval {
                why.push("cannot be verified from the data");
            }
            Some(RiskyStep {
                id: s.id.clone(),
                why,
                warnings: s.warnings.clone(),
                needs_approval,
            })
        })
        .collect()
}

/// Stop before anything runs unless every risky step has the yes it needs. A step that needs
/// an approval of its own and lacks it is a decision to make (exit 9, naming `--approve`);
/// a routine one without `--yes` needs a terminal (exit 12).
pub fn check(risky: &[RiskyStep], approvals: &Approvals) -> Result<()> {
    let unapproved: Vec<&RiskyStep> = risky
        .iter()
        .filter(|r| r.needs_approval && !approvals.steps.contains(&r.id))
        .collect();
    if let Some(first) = unapproved.first() {
        let list: Vec<String> = unapproved.iter().map(|r| r.describe()).collect();
        return Err(Error::NeedsDecision(format!(
            "{} an approval of their own before the upgrade can go on; nothing was \
             run:\n  {}\n  each is not idempotent and no data check can tell whether it ran, so a \
             repeat or a partial run would go unnoticed; --yes does not approve it.\n  fix: check \
             that it has not run on this database (its warnings, `upstep status`), then approve \
             it with --approve <id> (repeat the flag for several), e.g. --approve {}; or run at a \
             terminal and answer its question",
            crate::words::count(unapproved.len(), "step")
                + if unapproved.len() == 1 {
                    " needs"
                } else {
                    " need"
                },
            list.join("\n  "),
            first.id
        )));
    }
    let unconfirmed: Vec<String> = risky
        .iter()
        .filter(|r| !r.needs_approval && !approvals.routine && !approvals.steps.contains(&r.id))
        .map(|r| r.describe())
        .collect();
    if !unconfirmed.is_empty() {
        return Err(Error::NoTerminal(format!(
            "these steps need a confirmation and there is no terminal to ask at:\n  {}",
            unconfirmed.join("\n  ")
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ExitCode;

    fn risky(id: &str, needs_approval: bool) -> RiskyStep {
        RiskyStep {
            id: id.into(),
            why: if needs_approval {
                vec!["not idempotent", "cannot be verified from the data"]
            } else {
                vec!["destructive"]
            },
            warnings: vec![],
            needs_approval,
        }
    }

    #[test]
    fn yes_covers_routine_steps_but_not_an_unverifiable_non_idempotent_one() {
        let steps = [risky("drop", false), risky("centralize", true)];
        let yes = Approvals {
            routine: true,
            steps: BTreeSet::new(),
            optional: BTreeSet::new(),
        };
        let err = check(&steps, &yes).unwrap_err();
        assert_eq!(err.code(), ExitCode::NeedsDecision);
        let text = err.to_string();
        assert!(text.contains("--approve centralize"), "{text}");
        assert!(!text.contains("drop ("), "only the unapproved step: {text}");

        let approved = Approvals {
            routine: true,
            steps: ["centralize".to_string()].into(),
            optional: BTreeSet::new(),
        };
        check(&steps, &approved).unwrap();
    }

    #[test]
    fn without_yes_a_routine_step_needs_a_terminal_unless_approved_by_name() {
        let steps = [risky("drop", false)];
        let err = check(&steps, &Approvals::default()).unwrap_err();
        assert_eq!(err.code(), ExitCode::NoTerminal);
        assert!(err.to_string().contains("drop (destructive)"), "{err}");
        let by_name = Approvals {
            routine: false,
            steps: ["drop".to_string()].into(),
            optional: BTreeSet::new(),
        };
        check(&steps, &by_name).unwrap();
    }

    /// Every step of the embedded map up to v2.1.1 (and any unreleased one) decided to run,
    /// with what its data check would say on a database that has seen none of them.
    fn all_running(data: FpState) -> (ReleaseMap, Plan, Vec<DecidedStep>) {
        let map = crate::release_map::load(None).unwrap();
        let plan = crate::plan::plan(
            &map,
            &crate::plan::PlanRequest {
                from: semver::Version::new(0, 0, 0),
                to: semver::Version::new(2, 1, 1),
                include_unreleased: true,
            },
        )
        .unwrap();
        let decided = plan
            .steps()
            .map(|(group, step)| DecidedStep {
                group: 0,
                id: step.id.clone(),
                git_ref: group.git_ref.clone(),
                decision: crate::executor::decide::Decision {
                    action: Action::Run,
                    reason: "test".into(),
                    regressed: false,
                    unknown: false,
                    left_out: false,
                },
                data: Some(match map.migration(&step.id).unwrap().fingerprint {
                    Fingerprint::Unknown { .. } => FpState::Unknown,
                    Fingerprint::Checks(_) => data,
                }),
            })
            .collect();
        (map, plan, decided)
    }

    #[test]
    fn preference_centralization_needs_an_approval_of_its_own() {
        let (map, plan, decided) = all_running(FpState::Pending);
        let risky = risky_steps(&map, &plan, &decided);
        let needing: Vec<&str> = risky
            .iter()
            .filter(|r| r.needs_approval)
            .map(|r| r.id.as_str())
            .collect();
        assert_eq!(needing, ["preference-centralization"]);
        // A destructive but idempotent step with a data check is a routine confirmation.
        let drop = risky
            .iter()
            .find(|r| r.id == "drop-logs-collection")
            .unwrap();
        assert!(!drop.needs_approval);
        assert!(drop.why.contains(&"destructive"));
    }

    #[test]
    fn a_data_check_that_gives_no_answer_makes_a_non_idempotent_step_unverifiable() {
        let (map, plan, decided) = all_running(FpState::Unknown);
        let risky = risky_steps(&map, &plan, &decided);
        for step in plan.steps().map(|(_, s)| s) {
            let needs = risky.iter().any(|r| r.id == step.id && r.needs_approval);
            assert_eq!(needs, step.idempotent == Idempotency::No, "{}", step.id);
        }
    }

    #[test]
    fn an_approval_by_name_does_not_stand_in_for_another_step() {
        let steps = [risky("a", true), risky("b", true)];
        let only_a = Approvals {
            routine: true,
            steps: ["a".to_string()].into(),
            optional: BTreeSet::new(),
        };
        let text = check(&steps, &only_a).unwrap_err().to_string();
        assert!(text.contains("--approve b"), "{text}");
        assert!(!text.contains("\n  a ("), "{text}");
    }
}
