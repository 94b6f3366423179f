//! Before and around the steps of a tag: the backup, the downloads check, and per tag the
//! worktree, the toolchain and the setup (`setup.rs`); the worktree's removal once its steps
//! are settled.

use std::path::PathBuf;

use super::effects::{Effects, Workspace};
use super::setup::{run_setup, SetupAt, SetupPlan};
use super::stop::Stops;
use super::{DecidedStep, UpgradeOptions};
use crate::error::{Error, Result};
use crate::git::TagInfo;
use crate::plan::{Plan, PlanGroup};
use crate::release_map::ReleaseMap;
use crate::runner::toolchain::{self, ToolchainRequest};
use crate::ui::events::{Reporter, RunEvent};

/// The era a plan group runs in (the plan names it; validation guarantees it exists).
pub(super) fn group_era<'m>(
    map: &'m ReleaseMap,
    group: &crate::plan::PlanGroup,
) -> Result<&'m crate::release_map::Era> {
    map.eras.get(&group.era).ok_or_else(|| {
        Error::Internal(format!(
            "era {} of {} is not in the map",
            group.era, group.git_ref
        ))
    })
}

/// The backup before the first step (`--backup DIR`), recorded in the journal.
pub(super) async fn take_backup(
    opts: &UpgradeOptions,
    fx: &mut Effects<'_>,
) -> Result<Option<String>> {
    let Some(dir) = &opts.backup_dir else {
        return Ok(None);
    };
    fx.reporter.report(&RunEvent::Notice {
        message: format!(
            "backing up the database into {} before the first step",
            dir.display()
        ),
    });
    let taken = fx.store.backup(dir).await?;
    let label = dir.display().to_string();
    let documents = taken.documents;
    fx.store
        .event("backup-taken", None, bson::doc! { "backup": &label, "created_at": &taken.created_at, "documents": documents as i64 })
        .await?;
    fx.reporter.report(&RunEvent::Notice {
        message: format!("backup complete: {documents} documents in {label}"),
    });
    Ok(Some(label))
}

/// Before anything runs: every download the running tags' installs still fetch must be
/// reachable, or the run stops here naming the dependency (no step is started).
pub(super) async fn check_downloads(
    opts: &UpgradeOptions,
    plan: &Plan,
    workspace: &dyn Workspace,
    to_run: &[&DecidedStep],
) -> Result<()> {
    let mut running = Vec::new();
    for (g, group) in plan.groups.iter().enumerate() {
        let steps: Vec<&DecidedStep> = to_run.iter().copied().filter(|d| d.group == g).collect();
        if steps.is_empty() {
            continue;
        }
        let era = group_era(&opts.map, group)?;
        running.push((group, setup_choice(era, group, &steps).profile));
    }
    workspace.check_downloads(&opts.map, running).await
}

/// A tag ready for its steps: checked out, its toolchain on PATH, set up.
pub(super) struct PreparedTag {
    pub(super) tag: TagInfo,
    pub(super) worktree: PathBuf,
    pub(super) path_prefix: Vec<PathBuf>,
    /// The stand-ins its install took, described (`StandIn::describe`, with the tag).
    pub(super) stand_ins: Vec<String>,
}

/// Check out the tag, find (or provision) its toolchain, run its setup. Each phase is ended
/// by a "stop now"; a failed setup removes the half-installed worktree.
pub(super) async fn prepare_tag(
    opts: &UpgradeOptions,
    group: &PlanGroup,
    steps: &[&DecidedStep],
    stops: &Stops,
    fx: &mut Effects<'_>,
) -> Result<PreparedTag> {
    let ids: Vec<&str> = steps.iter().map(|d| d.id.as_str()).collect();
    prepare_tag_for(opts, group, &ids, stops, fx).await
}

/// `prepare_tag` for the steps named `ids` (a rollback's downs pick the setup the same way).
pub(super) async fn prepare_tag_for(
    opts: &UpgradeOptions,
    group: &PlanGroup,
    ids: &[&str],
    stops: &Stops,
    fx: &mut Effects<'_>,
) -> Result<PreparedTag> {
    let workspace = code(fx)?;
    stops.check()?;
    let tag = workspace.resolve_tag(group)?;
    let worktree = stops
        .until(workspace.prepare(&tag, opts.repair_worktrees, &mut *fx.reporter))
        .await?;
    let era = group_era(&opts.map, group)?;
    stops.check()?;
    let choice = setup_choice_for(era, group, ids);
    let request = ToolchainRequest {
        node: group.node.clone(),
        node_range: group.node_engines.clone(),
        pnpm: if choice.commands.is_empty() {
            None
        } else {
            group.pnpm.clone()
        },
        policy: opts.toolchain,
    };
    // Dropping the resolution (on a stop) ends its npm install's group.
    let toolchain = stops.until(workspace.toolchain(&request)).await?;
    fx.reporter.report(&RunEvent::Notice {
        message: crate::words::toolchain_notice(
            &group.git_ref,
            &toolchain.node_version,
            &toolchain.node_source,
        ),
    });
    let mut path_prefix = vec![toolchain.node_dir.clone()];
    path_prefix.extend(toolchain.pnpm_dir.clone());
    // Only an install takes stand-ins.
    let stand_ins = if choice.commands.is_empty() {
        Vec::new()
    } else {
        super::stand_ins::active(&opts.map, group, workspace).await
    };
    let stand_ins_shown: Vec<String> = stand_ins
        .iter()
        .map(|s| format!("{}: {}", group.git_ref, s.describe()))
        .collect();
    let setup = SetupPlan {
        git_ref: &group.git_ref,
        era,
        choice,
        repair_lockfile: group.repair_lockfile.as_deref(),
        stand_ins,
        commit: &tag.commit,
        node_version: &toolchain.node_version,
        pnpm: group.pnpm.as_deref(),
        node_headers: toolchain::node_headers_prefix(&toolchain.node_dir),
    };
    let at = SetupAt {
        worktree: &worktree,
        path_prefix: &path_prefix,
    };
    if let Err(e) = run_setup(opts, &setup, &at, stops, fx).await {
        // A failed setup leaves a half-installed tree that no later run may build on (an
        // interrupted one has no setup stamp either, and a stop must stay quick).
        if !opts.keep_worktrees && !matches!(e, Error::Interrupted | Error::Terminated) {
            remove_failed_worktree(workspace, &tag, &worktree, fx);
        }
        return Err(e);
    }
    Ok(PreparedTag {
        tag,
        worktree,
        path_prefix,
        stand_ins: stand_ins_shown,
    })
}

/// The project's code; a run with steps to run needs it.
pub(super) fn code<'a>(fx: &Effects<'a>) -> Result<&'a dyn Workspace> {
    fx.workspace.ok_or_else(|| {
        Error::usage(
            "running scripts needs the project's code",
            "pass --repo <path or URL of the project's repository>",
        )
    })
}

/// Its steps are settled: free its disk (a prepared tag holds gigabytes of node_modules)
/// before the next tag is prepared, unless a later group runs at the same tag.
pub(super) fn release_tag(
    opts: &UpgradeOptions,
    plan: &Plan,
    g: usize,
    to_run: &[&DecidedStep],
    tag: &TagInfo,
    fx: &mut Effects<'_>,
) -> Result<()> {
    let group = &plan.groups[g];
    let needed_later = plan.groups[g + 1..]
        .iter()
        .zip(g + 1..)
        .any(|(later, h)| later.git_ref == group.git_ref && to_run.iter().any(|d| d.group == h));
    if !opts.keep_worktrees && !needed_later {
        remove_worktree(code(fx)?, tag, fx.reporter);
    }
    Ok(())
}

/// Delete the worktree a failed setup left, saying so before (with its size: gigabytes of
/// node_modules take minutes to delete) and after (with how long it took).
fn remove_failed_worktree(
    workspace: &dyn Workspace,
    tag: &TagInfo,
    path: &std::path::Path,
    fx: &mut Effects<'_>,
) {
    let size = crate::preflight::human_bytes(crate::cache::size_of(path).0);
    fx.reporter.report(&RunEvent::Setup {
        git_ref: tag.name.clone(),
        status: "removing".into(),
        phase: "cleanup".into(),
        detail: format!("removing the failed worktree of {} ({size})", tag.name),
        duration_ms: 0,
    });
    let started = fx.clock.now();
    remove_worktree(workspace, tag, fx.reporter);
    let took = fx.clock.now() - started;
    fx.reporter.report(&RunEvent::Setup {
        git_ref: tag.name.clone(),
        status: "removed".into(),
        phase: "cleanup".into(),
        detail: format!(
            "removed the failed worktree of {} ({size}) in {:.1} s",
            tag.name,
            took.as_secs_f64()
        ),
        duration_ms: took.as_millis() as u64,
    });
}

/// Delete a tag's worktree; a failure to do so costs disk, not correctness, so it is reported
/// and the run goes on.
pub(super) fn remove_worktree(
    workspace: &dyn Workspace,
    tag: &TagInfo,
    reporter: &mut dyn Reporter,
) {
    if let Err(e) = workspace.remove(tag) {
        reporter.report(&RunEvent::Notice {
            message: format!("could not remove the worktree of {}: {e}", tag.name),
        });
    }
}

/// The setup a group's running steps need: the era's profile when they all name the same one.
pub(super) fn setup_choice<'e>(
    era: &'e crate::release_map::Era,
    group: &crate::plan::PlanGroup,
    running: &[&DecidedStep],
) -> crate::release_map::SetupChoice<'e> {
    let ids: Vec<&str> = running.iter().map(|d| d.id.as_str()).collect();
    setup_choice_for(era, group, &ids)
}

/// `setup_choice` for the steps named `ids`.
pub(super) fn setup_choice_for<'e>(
    era: &'e crate::release_map::Era,
    group: &crate::plan::PlanGroup,
    ids: &[&str],
) -> crate::release_map::SetupChoice<'e> {
    era.setup_for(
        ids.iter()
            .filter_map(|id| group.steps.iter().find(|s| s.id == *id))
            .map(|s| s.mode.setup_profile.as_deref()),
    )
}
