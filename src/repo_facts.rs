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

/// Fill in commits, script presence and toolchain differences; fail when a script is missing
/// at its tag (running it there would fail, or worse, run another file).
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
        group.commit = Some(tag.commit);
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(Error::repository(
            format!(
                "{} script(s) of the plan do not exist at their tag in {}:\n  {}",
                missing.len(),
                location,
                missing.join("\n  ")
            ),
            "check that --repo is the project the map describes, or fix the map (`upstep map check --repo ...` lists the disagreements)",
        ))
    }
}
