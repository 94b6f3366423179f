//! A tag's package stand-ins at its setup (`src/stand_ins.rs` is the text edit): which of the
//! release's stand-ins apply (always, or when their download's host does not answer), their
//! edits made to the worktree's lockfile before the install, said in the log, the journal and
//! the output, and the released file put back when the setup ends (like `lockfile.rs`).

use std::path::PathBuf;

use super::effects::{Effects, Workspace};
use super::setup::{SetupAt, SetupLog, SetupPlan};
use crate::error::{Error, MapProblem, Result};
use crate::plan::PlanGroup;
use crate::release_map::{ReleaseMap, StandIn, StandInWhen};
use crate::stand_ins::Outcome;
use crate::ui::events::{RunEvent, StandInView};

/// The release's stand-ins this run applies at the group's tag. A `when-unreachable` one
/// follows the workspace's probe of its download's host (the same answer the downloads check
/// before the run got).
pub(super) async fn active(
    map: &ReleaseMap,
    group: &PlanGroup,
    workspace: &dyn Workspace,
) -> Vec<StandIn> {
    let Some(release) = group.release(map) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for stand_in in &release.stand_ins {
        let applies = match stand_in.when {
            StandInWhen::Always => true,
            StandInWhen::WhenUnreachable => {
                match crate::stand_ins::host_of(stand_in, &release.downloads) {
                    Some(download) => !workspace.reachable(download).await,
                    None => false,
                }
            }
        };
        if applies {
            out.push(stand_in.clone());
        }
    }
    out
}

/// The lockfiles the stand-ins edited; dropping it (or `restore`) puts the released bytes
/// back, so the worktree is the tag's tree again whatever happened in between.
pub(super) struct StoodIn {
    originals: Vec<(PathBuf, Vec<u8>)>,
}

impl StoodIn {
    pub(super) fn restore(mut self) -> Result<()> {
        self.put_back()
    }

    fn put_back(&mut self) -> Result<()> {
        while let Some((path, bytes)) = self.originals.pop() {
            super::lockfile::write_atomically(&path, &bytes)?;
        }
        Ok(())
    }
}

impl Drop for StoodIn {
    fn drop(&mut self) {
        if let Err(e) = self.put_back() {
            tracing::warn!("could not restore a lockfile after its stand-ins: {e}");
        }
    }
}

/// What the setup's stand-ins are shown as, with how each went.
fn view(stand_in: &StandIn, outcome: &str) -> StandInView {
    StandInView {
        package: stand_in.package.clone(),
        original: stand_in.original.clone(),
        stand_in: stand_in.stand_in.clone(),
        why: serde_json::to_value(stand_in.why)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default(),
        when: serde_json::to_value(stand_in.when)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default(),
        outcome: outcome.to_string(),
    }
}

/// A cached setup: its stand-ins were applied when it was prepared (the stamp says so).
pub(super) fn report_cached(setup: &SetupPlan<'_>, fx: &mut Effects<'_>) {
    if setup.stand_ins.is_empty() {
        return;
    }
    fx.reporter.report(&RunEvent::StandIns {
        git_ref: setup.git_ref.into(),
        stand_ins: setup
            .stand_ins
            .iter()
            .map(|s| view(s, "prepared-earlier"))
            .collect(),
    });
}

/// Apply the setup's stand-ins to the worktree's lockfiles. A stand-in whose text (and
/// replacement) the lockfile does not hold refuses the setup before anything is installed:
/// the map does not fit this tag, and installing something unknown is worse than stopping.
pub(super) async fn apply(
    map_source: &str,
    setup: &SetupPlan<'_>,
    at: &SetupAt<'_>,
    setup_log: &mut SetupLog,
    fx: &mut Effects<'_>,
) -> Result<StoodIn> {
    let mut stood_in = StoodIn {
        originals: Vec::new(),
    };
    if setup.stand_ins.is_empty() {
        return Ok(stood_in);
    }
    let git_ref = setup.git_ref;
    let mut files: Vec<&str> = setup.stand_ins.iter().map(|s| s.file.as_str()).collect();
    files.sort_unstable();
    files.dedup();
    let mut views = Vec::new();
    let mut problems = Vec::new();
    let mut edited = Vec::new();
    for file in files {
        let path = at.worktree.join(file);
        let original = std::fs::read(&path).map_err(|e| {
            Error::repository(
                format!("cannot read {} for its stand-ins: {e}", path.display()),
                "check the stand-ins' file in the release map: it must name the tag's lockfile",
            )
        })?;
        let mut text = String::from_utf8_lossy(&original).into_owned();
        for stand_in in setup.stand_ins.iter().filter(|s| s.file == file) {
            match crate::stand_ins::apply(&text, stand_in) {
                Ok((new, outcome)) => {
                    text = new;
                    views.push(view(stand_in, outcome.as_str()));
                    let edits = match outcome {
                        Outcome::Applied { edits } => crate::words::count(edits, "edit"),
                        Outcome::AlreadyPresent => "already present".into(),
                    };
                    setup_log.write(&format!(
                        "# stand-in in {file}: {} ({edits})\n",
                        stand_in.describe()
                    ))?;
                }
                Err(missing) => problems.push(MapProblem {
                    location: None,
                    message: missing.describe(file, git_ref),
                    hint: format!(
                        "fix that stand-in's edits for release {} in the release map (`upstep map check --repo <repo>` checks every one against its tag); nothing was installed",
                        setup.git_ref
                    ),
                }),
            }
        }
        if text.as_bytes() != original.as_slice() {
            edited.push((path, original, text));
        }
    }
    if !problems.is_empty() {
        let _ = setup_log.write(&format!(
            "# refused: {}\n",
            problems
                .iter()
                .map(|p| p.message.as_str())
                .collect::<Vec<_>>()
                .join("; ")
        ));
        return Err(Error::MapInvalid {
            name: format!("{map_source} (its stand-ins at {git_ref})"),
            problems,
        });
    }
    for (path, original, text) in edited {
        super::lockfile::write_atomically(&path, text.as_bytes())?;
        stood_in.originals.push((path, original));
    }
    let listed: Vec<String> = views
        .iter()
        .map(|v| {
            format!(
                "{} {} -> {} ({})",
                v.package, v.original, v.stand_in, v.outcome
            )
        })
        .collect();
    fx.store
        .event(
            "stand-ins",
            None,
            bson::doc! { "tag": git_ref, "commit": setup.commit, "stand_ins": listed },
        )
        .await?;
    fx.reporter.report(&RunEvent::StandIns {
        git_ref: git_ref.into(),
        stand_ins: views,
    });
    Ok(stood_in)
}
