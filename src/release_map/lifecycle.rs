//! A migration's lifecycle fields: when its script leaves the tree (`removed_in`), whether it
//! must run at its own release (`required_stop`, `stub_from`), whether it runs only when asked
//! (`optional`), and whether its exit code can be trusted (`exit_code_unreliable`).
//!
//! The rules, each a load error naming the fix:
//! - `removed_in` is a release after `introduced_in`, and after every release the script runs
//!   at (`run_at`, `modes`): a plan never runs a script at a tag that no longer holds it;
//! - a required stop runs at its own release: no `run_at`, no `modes`; its `stub_from` lies
//!   after `introduced_in` (and before `removed_in`);
//! - a required stop is not optional (one says "always, there", the other "only when asked");
//! - a script whose exit code cannot be trusted has data checks: nothing else proves it ran.
//!
//! Part of `load.rs` (it reports through the same problem list).

use semver::Version;

use super::{release_ref, Problems};
use crate::release_map::model::{Lifecycle, Release};
use crate::release_map::schema::RawMigration;

/// What the rest of the migration resolved to, for the checks.
pub(super) struct Resolved<'a> {
    pub introduced: Option<&'a Version>,
    pub unreleased: bool,
    pub run_at: Option<&'a Version>,
    pub mode_starts: Vec<&'a Version>,
}

pub(super) fn build_lifecycle(
    sink: &mut Problems,
    releases: &[Release],
    m: &RawMigration,
    resolved: Resolved,
) -> Lifecycle {
    let here = format!("migration {:?}", m.id.get_ref());
    let removed_in = m.removed_in.as_ref().and_then(|spanned| {
        if resolved.unreleased {
            sink.at(
                spanned,
                format!("{here}: removed_in on a script no release ships"),
                "remove removed_in, or replace unreleased_ref with introduced_in",
            );
            return None;
        }
        let removed = release_ref(sink, releases, spanned, "removed_in")?;
        if let Some(introduced) = resolved.introduced {
            if &removed <= introduced {
                sink.at(
                    spanned,
                    format!(
                        "{here}: the map marks the script removed in {removed}, before (or when) it was introduced in {introduced}"
                    ),
                    "set removed_in to the first release whose tree no longer holds the script (later than introduced_in), or correct introduced_in; `upstep map check --repo <clone>` says which",
                );
                return None;
            }
        }
        let runs_after = resolved
            .run_at
            .into_iter()
            .chain(resolved.mode_starts.iter().copied())
            .find(|at| **at >= removed);
        if let Some(at) = runs_after {
            sink.at(
                spanned,
                format!("{here}: the map runs the script at {at}, but it is removed in {removed}"),
                "run it at a release that still holds it (run_at / modes.from before removed_in), or correct removed_in",
            );
        }
        Some(removed)
    });

    let required_stop = m.required_stop.as_ref().map(|spanned| {
        if spanned.get_ref().trim().is_empty() {
            sink.at(
                spanned,
                format!("{here}: required_stop is empty"),
                "say why the script only works at its own release, e.g. \"later tags hold a stub\"",
            );
        }
        if resolved.unreleased {
            sink.at(
                spanned,
                format!("{here}: a required stop needs a release to stop at"),
                "replace unreleased_ref with introduced_in, or remove required_stop",
            );
        }
        if resolved.run_at.is_some() || !resolved.mode_starts.is_empty() {
            sink.at(
                spanned,
                format!(
                    "{here}: a required stop runs at its own release, but run_at or modes move it"
                ),
                "remove run_at and [[migrations.modes]], or remove required_stop",
            );
        }
        if m.optional.is_some() {
            sink.at(
                spanned,
                format!("{here}: a required stop cannot be optional"),
                "keep one of required_stop and optional",
            );
        }
        spanned.get_ref().clone()
    });

    let stub_from = m.stub_from.as_ref().and_then(|spanned| {
        let stub = release_ref(sink, releases, spanned, "stub_from")?;
        if required_stop.is_none() {
            sink.at(
                spanned,
                format!("{here}: stub_from without required_stop"),
                "add required_stop = \"<why>\": a script whose later files are stubs must run at its own release",
            );
        }
        if resolved.introduced.is_some_and(|i| &stub <= i) {
            sink.at(
                spanned,
                format!("{here}: stub_from {stub} must be after introduced_in"),
                "name the first release whose file is the stub",
            );
        }
        if removed_in.as_ref().is_some_and(|r| &stub >= r) {
            sink.at(
                spanned,
                format!("{here}: stub_from {stub} must be before removed_in"),
                "name the first release whose file is the stub",
            );
        }
        Some(stub)
    });

    let optional = m.optional.as_ref().map(|spanned| {
        if spanned.get_ref().trim().is_empty() {
            sink.at(
                spanned,
                format!("{here}: optional is empty"),
                "say why it runs only when asked for, e.g. \"it deletes documents\"",
            );
        }
        spanned.get_ref().clone()
    });

    if m.exit_code_unreliable && m.pending.is_empty() {
        sink.at(
            &m.id,
            format!(
                "{here}: exit_code_unreliable without a data check: nothing would prove it ran"
            ),
            "add [[migrations.pending]] checks that find what it leaves undone",
        );
    }

    Lifecycle {
        removed_in,
        required_stop,
        stub_from,
        optional,
        exit_code_unreliable: m.exit_code_unreliable,
    }
}
