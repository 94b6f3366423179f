//! What the repository says about a plan: the commit of each tag, whether each script exists
//! there, and whether the tag's `.nvmrc` agrees with the map. Kept out of the planner, which
//! stays pure: this fills in plain data after planning.

use crate::error::{Error, Result};
use crate::git::{GitRepo, RepoLocation, TagInfo};
use crate::plan::{Plan, PlanGroup};

/// Resolve a group's ref: a release tag, or the branch/commit of unreleased scripts.
pub fn resolve_group_ref(repo: &GitRepo, group: &PlanGroup) -> Result<TagInfo> {
    if group.unreleased {
        repo.resolve_ref(&group.git_ref)
    } else {
        repo.tag(&group.git_ref)
    }
}

/// Fill in commits, script presence, toolchain differences and the downloads each tag's
/// lockfile still fetches; fail when a script is missing at its tag (running it there would
/// fail, or worse, run another file).
pub fn check_plan_against_repo(
    plan: &mut Plan,
    repo: &GitRepo,
    location: &RepoLocation,
) -> Result<()> {
    plan.repository = Some(location.to_string());
    let mut missing = Vec::new();
    for group in &mut plan.groups {
        let tag = resolve_group_ref(repo, group)?;
        if let Ok(toolchain) = repo.toolchain_for_tag(&tag) {
            group.repo_node_differs = toolchain.nvmrc.filter(|n| n != &group.node);
        }
        for step in &mut group.steps {
            let exists = repo.path_exists_at(&tag.commit, &step.script)?;
            step.script_at_ref = Some(exists);
            if !exists {
                missing.push(format!(
                    "{} ({}) at {}",
                    step.id, step.script, group.git_ref
                ));
            }
        }
        // A download the tag's lockfile no longer fetches is not needed there.
        group
            .downloads
            .retain(|d| crate::downloads::still_fetched(repo, &tag.commit, d));
        group.commit = Some(tag.commit);
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(Error::repository(
            format!(
                "{} of the plan {} not exist at their tag in {}:\n  {}",
                crate::ui::words::count(missing.len(), "script"),
                if missing.len() == 1 { "does" } else { "do" },
                location,
                missing.join("\n  ")
            ),
            "check that --repo is the project the map describes, or fix the map (`upstep map check --repo ...` lists the disagreements)",
        ))
    }
}

/// Probe the host of every download the plan's tags still fetch: each unreachable one becomes
/// a blocker on its group (`plan --repo` shows them; the upgrade refuses to start).
pub fn probe_downloads(plan: &mut Plan) -> usize {
    let mut hosts: std::collections::BTreeMap<String, bool> = Default::default();
    let mut blockers = 0;
    for group in &mut plan.groups {
        let needs: Vec<crate::downloads::Need> = group
            .downloads
            .iter()
            .map(|download| crate::downloads::Need {
                git_ref: group.git_ref.clone(),
                download,
            })
            .collect();
        let found: Vec<String> = crate::downloads::checks(&needs, &mut |h| {
            *hosts
                .entry(h.to_string())
                .or_insert_with(|| crate::downloads::reachable(h))
        })
        .into_iter()
        .filter(|c| c.severity == crate::preflight::Severity::Blocker)
        .map(|c| format!("{}\n    fix: {}", c.reason, c.fix.unwrap_or_default()))
        .collect();
        blockers += found.len();
        group.blockers = found;
    }
    blockers
}
