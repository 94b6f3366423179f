//! One decision, many views. With a database, `plan --detect`, `doctor`, `status` and
//! `upgrade` all start from the plan decided here: every step up to the target, each decided
//! from the journal and its data check, and the steps that would run dressed with the map's
//! setup and (with a repository) the repository's facts. So each view says the same steps,
//! tags, needs, disk and toolchains. Offline (`plan`, or `doctor --from` without a database)
//! the plan is the map's range, and says that it did not read the data.

use crate::error::Result;
use crate::executor::decide::{Action, Decision};
use crate::executor::{self, DataStates, DecidedStep, KnownFacts, UpgradeOptions};
use crate::git::{GitRepo, RepoLocation};
use crate::plan::Plan;
use crate::release_map::ReleaseMap;
use crate::store::Store;

pub use crate::executor::FROM_THE_DATA;

/// Every step up to the target, decided from the journal and the data.
#[derive(Debug, Clone)]
pub struct DecidedPlan {
    /// Every step up to the target (those older than --from included).
    pub full: Plan,
    pub steps: Vec<DecidedStep>,
    /// The journal and data states the decision was made from (a run reuses them).
    pub facts: KnownFacts,
    /// The database they were read from, password redacted.
    pub database: String,
}

/// Read the journal and every data check `known` does not hold yet, and decide each step of
/// the plan up to `opts.to` (with `opts.from` as the operator's belief, `opts.flags`).
pub async fn decide(
    opts: &UpgradeOptions,
    store: &Store,
    known: DataStates,
) -> Result<DecidedPlan> {
    let full = executor::full_plan(opts)?;
    let entries = crate::store::journal::read_entries(store).await?;
    let data = executor::read_data(opts, &full, store, known).await;
    let steps = executor::decide_all(opts, &full, &entries, &data);
    Ok(DecidedPlan {
        full,
        steps,
        facts: KnownFacts { entries, data },
        database: store.redacted_uri.clone(),
    })
}

impl DecidedPlan {
    pub fn decision(&self, id: &str) -> Option<&Decision> {
        self.steps.iter().find(|d| d.id == id).map(|d| &d.decision)
    }

    pub fn count(&self, action: Action) -> usize {
        self.steps
            .iter()
            .filter(|d| d.decision.action == action)
            .count()
    }

    /// The plan of the steps a run would execute (`executor::plan_to_run`): what a run's
    /// preflight checks.
    pub fn to_run(&self, map: &ReleaseMap, from: Option<&semver::Version>) -> Plan {
        executor::plan_to_run(&self.full, &self.steps, map, from)
    }

    /// The steps that need a decision before a run goes past them, with why.
    pub fn blocked(&self) -> Vec<&DecidedStep> {
        self.steps
            .iter()
            .filter(|d| d.decision.action == Action::Block)
            .collect()
    }
}

/// A plan checked against the repository when one is given: commits, scripts present, `.nvmrc`
/// per tag, the downloads each tag's lockfile still fetches.
pub fn with_repo(plan: &mut Plan, repo: Option<&(GitRepo, RepoLocation)>) -> Result<()> {
    match repo {
        Some((repo, location)) => crate::repo_facts::check_plan_against_repo(plan, repo, location),
        None => Ok(()),
    }
}

pub use crate::plan_needs::{PlanNeeds, StepNeeds};
