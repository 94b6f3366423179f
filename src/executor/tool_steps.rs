//! The run's checks for command steps (migrations run by the project's own tool), called
//! from the run's stages: every migration the tool is told to run exists at its tag (before
//! anything runs), the tool is installed at each tag (before that tag's first step), and a
//! step the tool already applied as part of an earlier step's command is not run again.

use std::path::{Path, PathBuf};

use super::command_step;
use super::effects::{Effects, Workspace};
use super::prepare::group_era;
use super::{DecidedStep, UpgradeOptions};
use crate::error::{Error, Result};
use crate::plan::{Plan, PlanGroup};
use crate::release_map::RunKind;
use crate::store::fingerprint::FpState;
use crate::store::journal::StepStatus;
use crate::ui::events::RunEvent;

/// Before anything runs: each command step's migration file is at its tag, or the tool would
/// be asked for a migration it does not know (and the run would stop half-way).
pub fn check_files(
    opts: &UpgradeOptions,
    plan: &Plan,
    workspace: &dyn Workspace,
    to_run: &[&DecidedStep],
) -> Result<()> {
    let mut missing = Vec::new();
    for (g, group) in plan.groups.iter().enumerate() {
        let steps: Vec<&crate::plan::PlanStep> = group
            .steps
            .iter()
            .filter(|s| s.mode.run == RunKind::Command)
            .filter(|s| to_run.iter().any(|d| d.group == g && d.id == s.id))
            .collect();
        if steps.is_empty() {
            continue;
        }
        let tag = workspace.resolve_tag(group)?;
        for step in steps {
            if workspace.read_file_at(&tag.commit, &step.script)?.is_none() {
                let name = opts
                    .map
                    .migration(&step.id)
                    .map_or(step.id.as_str(), |m| m.name.as_str());
                missing.push(format!(
                    "{}: its tool has no migration {name} at {}: {} is not in that tag",
                    step.id, group.git_ref, step.script
                ));
            }
        }
    }
    if missing.is_empty() {
        return Ok(());
    }
    Err(Error::Preflight(format!(
        "{} migration(s) the release map names are unknown to the tool at their tag; nothing was run:\n  {}\n  fix: correct `script` (and `name`) in the release map to the migration file the tag ships (`upstep map check --repo ...` lists them), or the release it is introduced in",
        missing.len(),
        missing.join("\n  ")
    )))
}

/// After a tag's setup, before its first step: the tool of each of its command steps is
/// installed in the worktree.
pub fn check_tools(
    opts: &UpgradeOptions,
    group: &PlanGroup,
    steps: &[&DecidedStep],
    worktree: &Path,
    path_prefix: &[PathBuf],
) -> Result<()> {
    let era = group_era(&opts.map, group)?;
    let mut problems = Vec::new();
    for d in steps {
        let Some(step) = group.steps.iter().find(|s| s.id == d.id) else {
            continue;
        };
        if step.mode.run != RunKind::Command {
            continue;
        }
        let name = opts.map.migration(&step.id).map_or("", |m| m.name.as_str());
        let cmd =
            command_step::step_command(worktree, era, &step.mode, &step.script, &step.id, name)?;
        if let Some(problem) = command_step::tool_problem(&cmd, worktree, path_prefix) {
            let argv = std::iter::once(cmd.program.display().to_string())
                .chain(cmd.args.iter().cloned())
                .collect::<Vec<_>>()
                .join(" ");
            problems.push(format!("{}: `{argv}`: {problem}", step.id));
        }
    }
    if problems.is_empty() {
        return Ok(());
    }
    Err(Error::Preflight(format!(
        "the migration tool is not installed at {tag} after its setup; no step of {tag} was started:\n  {}\n  fix: make the era's setup install it at {tag} (the package that provides it must be in the project's dependencies at that tag), or correct the command in the release map",
        problems.join("\n  "),
        tag = group.git_ref,
    )))
}

/// A step whose tool journal already records it: the tool ran it as part of an earlier
/// step's command (`migrate-mongo up` runs every pending migration of the tag). Recorded as
/// an event and skipped, never run twice.
pub async fn applied_meanwhile(
    opts: &UpgradeOptions,
    id: &str,
    fx: &mut Effects<'_>,
) -> Result<bool> {
    let Some(migration) = opts.map.migration(id) else {
        return Ok(false);
    };
    if migration.tool_journal().is_none() {
        return Ok(false);
    }
    let report = fx
        .store
        .checks()
        .check(&migration.fingerprint, opts.pending_check())
        .await;
    if report.state != FpState::Applied {
        return Ok(false);
    }
    fx.store
        .event(
            "applied-by-tool",
            Some(id),
            bson::doc! { "why": "the tool's journal records it: an earlier step's command ran it" },
        )
        .await?;
    // An entry that says otherwise (rolled back, marked pending) must not contradict the tool.
    let entry = fx.store.entries().await?.remove(id);
    if entry.is_some_and(|e| !e.status.is_done()) {
        fx.store
            .mark_held(
                id,
                StepStatus::MarkedApplied,
                "its tool's journal records it: an earlier step's command ran it",
            )
            .await?;
    }
    fx.reporter.report(&RunEvent::Notice {
        message: format!(
            "{id}: skipped: its tool's journal already records it (an earlier step's command ran every pending migration)"
        ),
    });
    Ok(true)
}
