//! The facts a decision is made from: the plan up to the target, the journal, what each
//! data check says; and every step decided from them (the rules are in `decide.rs`).

use std::collections::BTreeMap;

use super::approval;
use super::decide::{decide, Action, Decision, StepFacts};
use super::effects::DataChecks;
use super::effects::Effects;
use super::recovery::check_journalled_scripts;
use super::UpgradeOptions;
use crate::error::{Error, Result};
use crate::plan::{self, Plan, PlanRequest};
use crate::release_map::{Fingerprint, Introduced, ReleaseMap};
use crate::store::fingerprint::{self, FpState};
use crate::store::journal::JournalEntry;
use crate::ui::events::{PlannedStepView, RunEvent};

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

/// Where a plan's steps came from, as every view says it.
pub const FROM_THE_DATA: &str = "the journal and the data";

/// Whether two reads of the journal agree on every step (another run in between changes a
/// status, an attempt count or a time).
pub(super) fn same_journal(
    a: &BTreeMap<String, JournalEntry>,
    b: &BTreeMap<String, JournalEntry>,
) -> bool {
    let key = |e: &JournalEntry| (e.status, e.attempts, e.started_at, e.finished_at);
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|((ia, ea), (ib, eb))| ia == ib && key(ea) == key(eb))
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

pub(super) fn at_or_before_from(
    map: &ReleaseMap,
    id: &str,
    from: Option<&semver::Version>,
) -> bool {
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
    checks: &dyn DataChecks,
    known: DataStates,
) -> DataStates {
    use futures_util::StreamExt;
    let eval = opts.pending_check();
    let missing: Vec<(String, Fingerprint)> = plan
        .steps()
        .filter(|(_, step)| known.get(&step.id).is_none())
        .filter_map(|(_, step)| {
            let m = opts.map.migration(&step.id)?;
            Some((step.id.clone(), m.fingerprint.clone()))
        })
        .collect();
    let read: Vec<(String, FpState)> = futures_util::stream::iter(
        missing
            .into_iter()
            .map(|(id, fp)| async move { (id, checks.check(&fp, eval).await.state) }),
    )
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
                optional_left_out: step.optional.is_some()
                    && !opts.approvals.optional.contains(&step.id),
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
    checks: &dyn DataChecks,
    entries: &BTreeMap<String, JournalEntry>,
) -> Vec<DecidedStep> {
    let data = read_data(opts, plan, checks, DataStates::default()).await;
    decide_all(opts, plan, entries, &data)
}

/// The plan of the steps a decision runs, each with the reason of its decision, its group's
/// setup (profile, downloads) following the steps that remain: what `plan`, `doctor` and
/// `status` show, and what a run's preflight checks. No I/O.
pub fn plan_to_run(
    full: &Plan,
    decided: &[DecidedStep],
    map: &ReleaseMap,
    from: Option<&semver::Version>,
) -> Plan {
    let decision = |id: &str| decided.iter().find(|d| d.id == id).map(|d| &d.decision);
    let mut plan = full.clone();
    plan.from = from
        .map(crate::version::display)
        .unwrap_or_else(|| FROM_THE_DATA.to_string());
    plan.retain_steps(|s| decision(&s.id).is_some_and(|d| d.action == Action::Run));
    for group in &mut plan.groups {
        for step in &mut group.steps {
            if let Some(d) = decision(&step.id) {
                step.reason = d.reason.clone();
            }
        }
        group.fill_setup(map);
    }
    plan
}

/// What a run decided before its preflight: the facts it decided from (which the run reuses
/// while the journal is unchanged) and the plan of the steps it runs.
#[derive(Debug)]
pub(super) struct BeforeRun {
    pub(super) facts: KnownFacts,
    /// Only the steps that run: what the preflight checks (their tools, Redis, disk).
    pub(super) to_run: Plan,
}

/// The decision before the preflight, from facts already read: no I/O. The refusals (a step
/// that needs a decision, a missing approval) come in the lock, from the journal as it is then.
pub(super) fn before_run(opts: &UpgradeOptions, full: &Plan, facts: KnownFacts) -> BeforeRun {
    let decided = decide_all(opts, full, &facts.entries, &facts.data);
    BeforeRun {
        to_run: plan_to_run(full, &decided, &opts.map, opts.from.as_ref()),
        facts,
    }
}

/// Read the journal and the data checks the guided flow did not read, then `before_run`.
pub(super) async fn decide_before_run(
    opts: &UpgradeOptions,
    full: &Plan,
    guided: Option<&KnownFacts>,
    fx: &mut Effects<'_>,
) -> Result<BeforeRun> {
    let entries = fx.store.entries().await?;
    let known = guided.map(|f| f.data.clone()).unwrap_or_default();
    let data = read_data(opts, full, fx.store.checks(), known).await;
    Ok(before_run(opts, full, KnownFacts { entries, data }))
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

/// The decision inside the lock: the journal as it is now, the data (what the guided flow
/// read is reused while the journal is unchanged), every step decided and shown; then the
/// refusals: a script changed since it ran, a step that needs a decision, a missing approval.
pub(super) async fn decide_in_lock(
    opts: &UpgradeOptions,
    plan: &Plan,
    known: Option<KnownFacts>,
    fx: &mut Effects<'_>,
) -> Result<Vec<DecidedStep>> {
    let entries = fx.store.entries().await?;
    let data = match known {
        Some(known) if same_journal(&known.entries, &entries) => known.data,
        _ => DataStates::default(),
    };
    let data = read_data(opts, plan, fx.store.checks(), data).await;
    let decided = decide_all(opts, plan, &entries, &data);
    fx.reporter.report(&plan_event(&decided));
    if let Some(workspace) = fx.workspace {
        check_journalled_scripts(plan, workspace, &entries, &decided, fx).await?;
    }
    refuse_blocked(&decided)?;
    approval::check(
        &approval::risky_steps(&opts.map, plan, &decided),
        &opts.approvals,
    )?;
    for d in decided
        .iter()
        .filter(|d| d.decision.unknown && d.decision.action == Action::Run)
    {
        fx.reporter.report(&RunEvent::Notice {
            message: format!(
                "{}: no data check can tell whether it is applied; running it as planned",
                d.id
            ),
        });
    }
    Ok(decided)
}

/// A step the journal shows unfinished needs the operator's decision before anything runs.
fn refuse_blocked(decided: &[DecidedStep]) -> Result<()> {
    let blocked: Vec<String> = decided
        .iter()
        .filter(|d| d.decision.action == Action::Block)
        .map(|d| format!("{}: {}", d.id, d.decision.reason))
        .collect();
    if blocked.is_empty() {
        return Ok(());
    }
    Err(Error::NeedsDecision(format!(
        "the journal needs a decision before the upgrade can go on:\n  {}",
        blocked.join("\n  ")
    )))
}

/// How many steps the decision runs and skips.
pub(super) fn count(decided: &[DecidedStep], action: Action) -> usize {
    decided
        .iter()
        .filter(|d| d.decision.action == action)
        .count()
}
