//! What a plan needs from the machine (per step its needs, per tag its toolchain and
//! downloads, the disk): plain data every view renders, here below `decided` and `ui` so both
//! can use it.

use serde::Serialize;

use crate::plan::Plan;
use crate::release_map::{Need, ReleaseMap};

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
