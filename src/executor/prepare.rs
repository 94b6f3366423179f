//! Before and around the steps of a tag: the backup, the downloads check, the worktree and
//! its removal once its steps are settled.

use super::{DecidedStep, UpgradeOptions};
use crate::error::{Error, Result};
use crate::git::{GitRepo, Worktrees};
use crate::plan::Plan;
use crate::release_map::ReleaseMap;
use crate::store::journal::Journal;
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
    journal: &Journal,
    reporter: &mut dyn Reporter,
) -> Result<Option<String>> {
    let Some(dir) = &opts.backup_dir else {
        return Ok(None);
    };
    reporter.report(&RunEvent::Notice {
        message: format!(
            "backing up the database into {} before the first step",
            dir.display()
        ),
    });
    let options = crate::backup::BackupOptions {
        out_dir: dir.clone(),
        collections: None,
        gzip: false,
    };
    let manifest = crate::backup::backup(
        &opts.connection.mongo_uri,
        &options,
        &crate::backup::NoProgress,
    )
    .await?;
    let label = dir.display().to_string();
    let documents: u64 = manifest.collections.iter().map(|c| c.documents).sum();
    journal
        .event("backup-taken", None, bson::doc! { "backup": &label, "created_at": &manifest.created_at, "documents": documents as i64 })
        .await?;
    reporter.report(&RunEvent::Notice {
        message: format!("backup complete: {documents} documents in {label}"),
    });
    Ok(Some(label))
}

/// A checkout, run on its own thread with a repository handle of its own.
pub(super) type CheckoutWork = dyn FnOnce(&GitRepo) -> Result<crate::git::Worktree> + Send;

/// The tag's worktree. One damaged by an interrupted checkout holds nothing but upstep's own
/// partial work, so it is rebuilt at once; one with local changes may hold someone's
/// debugging, so it is reset only with --repair. The checkout runs on a blocking thread so a
/// signal is heard meanwhile: dropped on a stop, it leaves a worktree without its stamp, which
/// the next run rebuilds.
pub(super) async fn prepare_worktree(
    worktrees: &Worktrees,
    repo: &GitRepo,
    tag: &crate::git::TagInfo,
    repair: bool,
    reporter: &mut dyn Reporter,
) -> Result<crate::git::Worktree> {
    // libgit2's handle stays on this thread; the checkout thread opens its own. A plain thread,
    // not spawn_blocking: a runtime shutting down waits for its blocking tasks, so a stopped
    // run would wait for the checkout it abandoned.
    let blocking = |work: Box<CheckoutWork>| {
        let path = repo.path().to_path_buf();
        async move {
            let (tx, rx) = tokio::sync::oneshot::channel();
            std::thread::Builder::new()
                .name("upstep-checkout".into())
                .spawn(move || {
                    let _ = tx.send(GitRepo::open(&path).and_then(|repo| work(&repo)));
                })
                .map_err(|e| Error::Internal(format!("cannot start the checkout thread: {e}")))?;
            rx.await
                .map_err(|_| Error::Internal("the checkout thread ended early".into()))?
        }
    };
    let (wt, tg) = (worktrees.clone(), tag.clone());
    match worktrees.status(repo, tag)? {
        crate::git::WorktreeStatus::Damaged { reason } => {
            reporter.report(&RunEvent::Notice {
                message: format!("{}: rebuilding its worktree ({reason})", tag.name),
            });
            blocking(Box::new(move |repo| wt.repair(repo, &tg))).await
        }
        crate::git::WorktreeStatus::Dirty { .. } if repair => {
            reporter.report(&RunEvent::Notice {
                message: format!("{}: resetting its worktree to the tag (--repair)", tag.name),
            });
            blocking(Box::new(move |repo| wt.repair(repo, &tg))).await
        }
        _ => blocking(Box::new(move |repo| wt.ensure(repo, &tg))).await,
    }
}

/// Delete a tag's worktree; a failure to do so costs disk, not correctness, so it is reported
/// and the run goes on.
pub(super) fn remove_worktree(
    worktrees: &Worktrees,
    repo: &GitRepo,
    tag: &crate::git::TagInfo,
    reporter: &mut dyn Reporter,
) {
    if let Err(e) = worktrees.remove(repo, tag) {
        reporter.report(&RunEvent::Notice {
            message: format!("could not remove the worktree of {}: {e}", tag.name),
        });
    }
}

/// The setup a group's running steps need: the era's profile when they all name the same one.
pub(super) fn setup_choice<'e>(
    era: &'e crate::release_map::Era,
    group: &crate::plan::PlanGroup,
    running: &[&&DecidedStep],
) -> crate::release_map::SetupChoice<'e> {
    era.setup_for(
        running
            .iter()
            .filter_map(|d| group.steps.iter().find(|s| s.id == d.id))
            .map(|s| s.mode.setup_profile.as_deref()),
    )
}

/// Before anything runs: every download the running tags' installs still fetch must be
/// reachable, or the run stops here naming the dependency (no step is started).
pub(super) async fn check_downloads(
    opts: &UpgradeOptions,
    plan: &Plan,
    repo: &GitRepo,
    to_run: &[&DecidedStep],
) -> Result<()> {
    let mut needs = Vec::new();
    for (g, group) in plan.groups.iter().enumerate() {
        let running: Vec<&&DecidedStep> = to_run.iter().filter(|d| d.group == g).collect();
        if running.is_empty() {
            continue;
        }
        let era = group_era(&opts.map, group)?;
        let choice = setup_choice(era, group, &running);
        let tag = crate::repo_facts::resolve_group_ref(repo, group)?;
        needs.extend(
            crate::downloads::needed(&opts.map, group, choice.profile)
                .into_iter()
                .filter(|n| crate::downloads::still_fetched(repo, &tag.commit, n.download)),
        );
    }
    let blocked: Vec<String> = crate::downloads::checks_async(&needs)
        .await
        .into_iter()
        .filter(|c| c.severity == crate::preflight::Severity::Blocker)
        .map(|c| format!("{}\n    fix: {}", c.reason, c.fix.unwrap_or_default()))
        .collect();
    if blocked.is_empty() {
        return Ok(());
    }
    Err(Error::Preflight(format!(
        "{} download(s) the setup needs cannot be reached; nothing was run:\n  {}",
        blocked.len(),
        blocked.join("\n  ")
    )))
}
