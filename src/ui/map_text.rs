//! The text and JSON of `upstep map show`: the map's releases and migrations.

use std::fmt::Write;

use serde::Serialize;

use super::plan_text::idempotency_text;
use super::{pad, Styler};
use crate::release_map::{self, Fingerprint, Introduced, ReleaseMap};
use crate::version::display;

#[derive(Serialize)]
pub struct MapView<'a> {
    schema: &'static str,
    map: &'a str,
    project: &'a str,
    releases: Vec<ReleaseView<'a>>,
    migrations: Vec<MigrationView<'a>>,
    /// The newest release, for the text's last line (not in the JSON).
    #[serde(skip)]
    newest: String,
}

#[derive(Serialize)]
struct ReleaseView<'a> {
    version: String,
    tag: &'a str,
    date: Option<&'a str>,
    era: &'a str,
    node: &'a str,
    pnpm: Option<&'a str>,
    verified: bool,
}

#[derive(Serialize)]
struct MigrationView<'a> {
    id: &'a str,
    title: &'a str,
    introduced_in: Option<String>,
    unreleased_ref: Option<&'a str>,
    run_at: Option<String>,
    script: &'a str,
    runs_as: String,
    idempotent: release_map::Idempotency,
    destructive: bool,
    lossy: bool,
    needs: &'a [release_map::Need],
    checks: usize,
    verified: bool,
}

impl<'a> MapView<'a> {
    /// The map as `map show` gives it.
    pub fn of(map: &'a ReleaseMap) -> MapView<'a> {
        MapView {
            schema: crate::json_schemas::MAP,
            map: &map.source,
            project: &map.project.name,
            releases: map
                .releases
                .iter()
                .map(|r| ReleaseView {
                    version: r.version.to_string(),
                    tag: &r.tag,
                    date: r.date.as_deref(),
                    era: &r.era,
                    node: &r.node,
                    pnpm: r.pnpm.as_deref(),
                    verified: r.verified,
                })
                .collect(),
            migrations: map
                .migrations
                .iter()
                .map(|m| MigrationView {
                    id: &m.id,
                    title: &m.title,
                    introduced_in: m.introduced_version().map(|v| v.to_string()),
                    unreleased_ref: match &m.introduced {
                        Introduced::Unreleased { git_ref } => Some(git_ref),
                        Introduced::Release(_) => None,
                    },
                    run_at: m.run_at.as_ref().map(|v| v.to_string()),
                    script: &m.script,
                    runs_as: m.base_mode.describe(),
                    idempotent: m.idempotent,
                    destructive: m.destructive,
                    lossy: m.lossy,
                    needs: &m.needs,
                    checks: match &m.fingerprint {
                        Fingerprint::Checks(c) => c.len(),
                        Fingerprint::Unknown { .. } => 0,
                    },
                    verified: m.verified,
                })
                .collect(),
            newest: map
                .newest_release()
                .map(|r| display(&r.version))
                .unwrap_or_default(),
        }
    }
}

/// `map show`'s text: the releases, then the migrations with their flags, then the counts.
pub fn render(view: &MapView<'_>, st: &Styler) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} {}",
        st.bold(&format!("Release map for {}", view.project)),
        st.dim(&format!("({})", view.map))
    );
    let _ = writeln!(out, "\n{}", st.bold("Releases"));
    for r in &view.releases {
        let _ = writeln!(
            out,
            "  {}  {}  era {}  node {}{}{}",
            pad(r.tag, 8),
            pad(r.date.unwrap_or("-"), 10),
            pad(r.era, 10),
            pad(r.node, 8),
            r.pnpm.map(|p| format!("  pnpm {p}")).unwrap_or_default(),
            if r.verified {
                String::new()
            } else {
                st.warn("  unverified")
            }
        );
    }
    let _ = writeln!(out, "\n{}", st.bold("Migrations"));
    let width = view
        .migrations
        .iter()
        .map(|m| m.id.len())
        .max()
        .unwrap_or(0);
    for m in &view.migrations {
        let at = match (&m.introduced_in, m.unreleased_ref) {
            (Some(v), _) => format!("v{v}"),
            (None, Some(r)) => format!("unreleased ({r})"),
            (None, None) => "-".into(),
        };
        let mut flags = vec![idempotency_text(m.idempotent)
            .split(' ')
            .next()
            .unwrap_or("")
            .to_string()];
        if m.destructive {
            flags.push("destructive".into());
        }
        if m.lossy {
            flags.push("lossy".into());
        }
        if !m.verified {
            flags.push("unverified".into());
        }
        let _ = writeln!(
            out,
            "  {}  {}  {}  [{}]",
            pad(m.id, width),
            pad(&at, 9),
            pad(&m.runs_as, 12),
            flags.join(", ")
        );
    }
    let _ = writeln!(
        out,
        "\n{} releases, {} migrations; newest release {}",
        view.releases.len(),
        view.migrations.len(),
        view.newest
    );
    out
}
