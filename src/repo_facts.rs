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
                crate::words::count(missing.len(), "script"),
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
        let declared: Vec<crate::release_map::StandIn> =
            group.stand_ins.iter().map(|p| p.stand_in.clone()).collect();
        let needs: Vec<crate::downloads::Need> = group
            .downloads
            .iter()
            .map(|download| crate::downloads::Need::of(&group.git_ref, download, &declared))
            .collect();
        let mut probe = |h: &str| {
            *hosts
                .entry(h.to_string())
                .or_insert_with(|| crate::downloads::reachable(h))
        };
        // Whether each when-unreachable stand-in applies follows the same probe.
        for planned in &mut group.stand_ins {
            if planned.stand_in.when == crate::release_map::StandInWhen::WhenUnreachable {
                planned.applies = group
                    .downloads
                    .iter()
                    .find(|d| d.dependency == planned.stand_in.package)
                    .and_then(|d| d.authority())
                    .map(|a| !probe(&a));
            }
        }
        let found: Vec<String> = crate::downloads::checks(&needs, &mut probe)
            .into_iter()
            .filter(|c| c.severity == crate::preflight::Severity::Blocker)
            .map(|c| format!("{}\n    fix: {}", c.reason, c.fix.unwrap_or_default()))
            .collect();
        blockers += found.len();
        group.blockers = found;
    }
    blockers
}

/// Scripts the repository's tags introduce inside (`from`, `to`] that the map lacks: each one
/// is a blocker for plan, doctor and upgrade (exit 3), because running the upgrade would skip
/// a real script the map never heard of.
pub fn check_map_covers_repo(
    map: &crate::release_map::ReleaseMap,
    repo: &GitRepo,
    location: &RepoLocation,
    from: &semver::Version,
    to: &semver::Version,
) -> Result<()> {
    let p = &map.project;
    let tags = repo.release_tags(&p.ignore_tags, &p.mainline)?;
    let mapped: Vec<&str> = map.migrations.iter().map(|m| m.script.as_str()).collect();
    let unmapped = crate::git::unmapped_scripts(
        repo,
        &tags,
        &p.migrations_dir,
        &p.script_suffixes,
        &p.exclude_suffixes,
        &mapped,
        from,
        to,
    )?;
    if unmapped.is_empty() {
        return Ok(());
    }
    Err(Error::MapInvalid {
        name: format!("{} (compared with {location})", map.source),
        problems: unmapped
            .iter()
            .map(|s| crate::error::MapProblem {
                location: None,
                message: format!(
                    "{} is in the repository since {} ({}), inside the planned range, but not in the map: the upgrade would skip it",
                    s.path, s.introduced_in, s.tag
                ),
                hint: format!(
                    "add a [[migrations]] entry for it (`upstep map generate --repo {location}` drafts one; `upstep map check --repo {location}` lists every gap) and pass that map with --map, or stop before {} with --to",
                    s.tag
                ),
            })
            .collect(),
    })
}
