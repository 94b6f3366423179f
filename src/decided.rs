//! One decision, many views. With a database, `plan --detect`, `doctor`, `status` and
//! `upgrade` all start from the plan decided here: every step up to the target, each decided
//! from the journal and its data check, and the steps that would run dressed with the map's
//! setup and (with a repository) the repository's facts. So each view says the same steps,
//! tags, needs, disk and toolchains. Offline (`plan`, or `doctor --from` without a database)
//! the plan is the map's range, and says that it did not read the data.

use serde::Serialize;

use crate::error::Result;
use crate::executor::decide::{Action, Decision};
use crate::executor::{self, DataStates, DecidedStep, KnownFacts, UpgradeOptions};
use crate::git::{GitRepo, RepoLocation};
use crate::plan::Plan;
use crate::release_map::{Need, ReleaseMap};
use crate::store::Store;
use crate::version::display;

/// Where a plan's steps came from, as every view says it.
pub const FROM_THE_DATA: &str = "the journal and the data";

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

/// For `upgrade`, before its preflight: the decision (reusing the data the guided flow read)
/// and the plan of the steps it runs, which the preflight checks. The run starts from these
/// facts while the journal is unchanged. A dry run decides in the executor and has no
/// preflight: the full plan, no facts.
pub async fn before_run(
    opts: &UpgradeOptions,
    store: &Store,
    guided: Option<&KnownFacts>,
    full: &Plan,
) -> Result<(Option<KnownFacts>, Plan)> {
    if opts.dry_run {
        return Ok((None, full.clone()));
    }
    let known = guided.map(|f| f.data.clone()).unwrap_or_default();
    let decision = decide(opts, store, known).await?;
    let plan = decision.to_run(&opts.map, opts.from.as_ref());
    Ok((Some(decision.facts), plan))
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

    /// The plan of the steps a run would execute, each with the reason of its decision, its
    /// group's setup (profile, downloads) following the steps that remain.
    pub fn to_run(&self, map: &ReleaseMap, from: Option<&semver::Version>) -> Plan {
        let mut plan = self.full.clone();
        plan.from = from
            .map(display)
            .unwrap_or_else(|| FROM_THE_DATA.to_string());
        plan.retain_steps(|s| {
            self.decision(&s.id)
                .is_some_and(|d| d.action == Action::Run)
        });
        for group in &mut plan.groups {
            for step in &mut group.steps {
                if let Some(d) = self.decision(&step.id) {
                    step.reason = d.reason.clone();
                }
            }
            group.fill_setup(map);
        }
        plan
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

/// What a plan needs from the machine, the same for every view: per step its needs, per tag
/// its toolchain and downloads, and the disk the prepared tags take.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct PlanNeeds {
    pub project: String,
    pub from: String,
    pub to: String,
    /// Whether the steps were decided from the journal and the data (false: from --from alone).
    pub read_the_data: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database: Option<String>,
    pub steps: Vec<StepNeeds>,
    pub tags: usize,
    /// Disk one prepared tag takes (the map's `disk_per_tag_mb`), in bytes.
    pub disk_per_tag: u64,
    /// Disk the run needs at once: two tags (the next one is prepared while the steps of the
    /// current one run; each is removed when its steps are done). The package store they
    /// share holds what they link, so it is inside each tag's figure.
    pub disk_at_once: u64,
    /// Disk every tag of the plan takes together (with --keep-worktrees).
    pub disk_all_tags: u64,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct StepNeeds {
    pub id: String,
    pub git_ref: String,
    pub node: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pnpm: Option<String>,
    pub needs: Vec<Need>,
    /// Dependencies the tag's install fetches from outside the package registry.
    pub downloads: Vec<String>,
    pub reason: String,
}

/// How many tags a run holds prepared at once: every tag when it keeps its worktrees, else two
/// at most (the current one and the next, prepared while the current one's steps run).
pub fn tags_at_once(tags: usize, keep_all: bool) -> usize {
    if keep_all {
        tags
    } else {
        tags.min(2)
    }
}

impl PlanNeeds {
    pub fn of(plan: &Plan, map: &ReleaseMap, database: Option<&str>, keep_all: bool) -> Self {
        let per_tag = map.project.disk_per_tag_mb * 1024 * 1024;
        let tags = plan.groups.len() as u64;
        PlanNeeds {
            project: plan.project.clone(),
            from: plan.from.clone(),
            to: plan.to.clone(),
            read_the_data: database.is_some(),
            database: database.map(str::to_string),
            steps: plan
                .steps()
                .map(|(g, s)| StepNeeds {
                    id: s.id.clone(),
                    git_ref: g.git_ref.clone(),
                    node: g.node.clone(),
                    pnpm: g.pnpm.clone(),
                    needs: s.needs.clone(),
                    downloads: g
                        .downloads
                        .iter()
                        .map(|d| format!("{} ({})", d.dependency, d.url))
                        .collect(),
                    reason: s.reason.clone(),
                })
                .collect(),
            tags: plan.groups.len(),
            disk_per_tag: per_tag,
            disk_at_once: per_tag * tags_at_once(plan.groups.len(), keep_all) as u64,
            disk_all_tags: per_tag * tags,
        }
    }

    /// Whether any step needs `need`.
    pub fn needs(&self, need: Need) -> bool {
        self.steps.iter().any(|s| s.needs.contains(&need))
    }
}
