//! The planner: which scripts an upgrade needs, in which order, at which tag.
//!
//! Pure: a function of the map and the request, with no I/O, so it is tested exhaustively
//! with plain unit tests. Later inputs (repository facts, journal, fingerprints) are added as
//! plain data, never as connections.

use semver::Version;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::release_map::{Idempotency, Introduced, Migration, Mode, Need, ReleaseMap};
use crate::version::display;

pub const PLAN_SCHEMA: &str = "upstep.plan/1";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanRequest {
    /// The version the data is at now.
    pub from: Version,
    /// The version to upgrade to.
    pub to: Version,
    /// Also plan scripts that no release ships yet (they run last, at their git ref).
    pub include_unreleased: bool,
}

/// Where a step runs: a release's tag, or the ref of a script no release ships yet.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum RunPoint {
    Release(Version),
    /// Position among the unreleased refs (first appearance in the map), then the ref.
    Unreleased(usize, String),
}

/// A step ordered before the plan is dressed for output.
#[derive(Debug, Clone)]
struct OrderedStep<'m> {
    migration: &'m Migration,
    at: RunPoint,
}

/// An `after` constraint the map's releases make impossible to honour.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderViolation {
    pub migration: String,
    pub after: String,
}

fn run_point(m: &Migration, to: &Version, unreleased_refs: &mut Vec<String>) -> RunPoint {
    match &m.introduced {
        Introduced::Release(introduced) => match &m.run_at {
            Some(at) if at <= to => RunPoint::Release(at.clone()),
            _ => RunPoint::Release(introduced.clone()),
        },
        Introduced::Unreleased { git_ref } => {
            let pos = unreleased_refs
                .iter()
                .position(|r| r == git_ref)
                .unwrap_or_else(|| {
                    unreleased_refs.push(git_ref.clone());
                    unreleased_refs.len() - 1
                });
            RunPoint::Unreleased(pos, git_ref.clone())
        }
    }
}

/// Whether a migration belongs to the upgrade (from, to].
fn in_range(m: &Migration, map: &ReleaseMap, req: &PlanRequest) -> bool {
    match &m.introduced {
        Introduced::Release(v) => &req.from < v && v <= &req.to,
        Introduced::Unreleased { .. } => {
            req.include_unreleased
                && map
                    .newest_release()
                    .is_none_or(|newest| req.to >= newest.version)
        }
    }
}

/// The steps of (from, to] in execution order: by run point, then by `after` constraints,
/// then by map order. Used by validation too, so a valid map always orders.
fn order_steps_inner<'m>(
    map: &'m ReleaseMap,
    req: &PlanRequest,
) -> std::result::Result<Vec<OrderedStep<'m>>, OrderViolation> {
    let mut refs = Vec::new();
    let mut steps: Vec<OrderedStep> = map
        .migrations
        .iter()
        .filter(|m| in_range(m, map, req))
        .map(|m| OrderedStep {
            at: run_point(m, &req.to, &mut refs),
            migration: m,
        })
        .collect();
    // Stable: map order breaks ties inside a run point.
    steps.sort_by(|a, b| a.at.cmp(&b.at));

    // Dependencies at a later run point can never be honoured.
    for s in &steps {
        for dep in &s.migration.after {
            if let Some(d) = steps.iter().find(|d| &d.migration.id == dep) {
                if d.at > s.at {
                    return Err(OrderViolation {
                        migration: s.migration.id.clone(),
                        after: dep.clone(),
                    });
                }
            }
        }
    }

    // Within a run point: repeatedly take the first step (map order) whose in-plan
    // dependencies have all been taken. Validation rejects cycles, so this always progresses.
    let mut ordered: Vec<OrderedStep> = Vec::with_capacity(steps.len());
    let mut start = 0;
    while start < steps.len() {
        let end = start
            + steps[start..]
                .iter()
                .take_while(|s| s.at == steps[start].at)
                .count();
        let mut group: Vec<OrderedStep> = steps[start..end].to_vec();
        while !group.is_empty() {
            let ready = group.iter().position(|s| {
                s.migration
                    .after
                    .iter()
                    .all(|dep| !group.iter().any(|g| &g.migration.id == dep))
            });
            match ready {
                Some(i) => ordered.push(group.remove(i)),
                None => {
                    let stuck = &group[0].migration;
                    return Err(OrderViolation {
                        migration: stuck.id.clone(),
                        after: stuck.after.first().cloned().unwrap_or_default(),
                    });
                }
            }
        }
        start = end;
    }
    Ok(ordered)
}

/// Order check used by map validation: Ok when the request can be planned.
pub fn order_steps(map: &ReleaseMap, req: &PlanRequest) -> std::result::Result<(), OrderViolation> {
    order_steps_inner(map, req).map(|_| ())
}

#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub schema: &'static str,
    pub project: String,
    pub map: String,
    pub from: String,
    pub to: String,
    pub include_unreleased: bool,
    pub steps_total: usize,
    pub groups: Vec<PlanGroup>,
    /// Scripts no release ships yet that this plan leaves out (see --include-unreleased).
    pub unreleased_left_out: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PlanGroup {
    /// The git tag (or, for unreleased scripts, the ref) every step of the group runs at.
    pub git_ref: String,
    /// The release version, absent for unreleased refs.
    pub version: Option<String>,
    pub unreleased: bool,
    pub era: String,
    pub node: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_engines: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pnpm: Option<String>,
    pub verified: bool,
    pub steps: Vec<PlanStep>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PlanStep {
    pub id: String,
    pub title: String,
    pub script: String,
    /// The release that introduced the script (absent for unreleased scripts).
    pub introduced_in: Option<String>,
    pub mode: Mode,
    pub runs_as: String,
    pub idempotent: Idempotency,
    pub destructive: bool,
    pub lossy: bool,
    pub needs: Vec<Need>,
    pub after: Vec<String>,
    pub warnings: Vec<String>,
    pub verified: bool,
    /// Whether the map has a data check that can tell if the step is applied.
    pub has_fingerprint: bool,
    /// Why the step is in the plan.
    pub reason: String,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.steps_total == 0
    }

    pub fn steps(&self) -> impl Iterator<Item = (&PlanGroup, &PlanStep)> {
        self.groups
            .iter()
            .flat_map(|g| g.steps.iter().map(move |s| (g, s)))
    }
}

/// Check a request against the map: a known range, no downgrade.
pub fn check_request(map: &ReleaseMap, req: &PlanRequest) -> Result<()> {
    let newest = map.newest_release().map(|r| r.version.clone());
    if let Some(newest) = &newest {
        if req.from > *newest {
            return Err(Error::usage(
                format!(
                    "the source version {} is newer than every release the map knows (newest: {}); the map may be out of date",
                    display(&req.from),
                    display(newest)
                ),
                "check --from, or pass --map with a newer release map",
            ));
        }
        if req.to > *newest {
            return Err(Error::usage(
                format!(
                    "the target version {} is newer than every release the map knows (newest: {}); the map may be out of date",
                    display(&req.to),
                    display(newest)
                ),
                format!("use --to {} or omit --to, or pass --map with a newer release map", display(newest)),
            ));
        }
    }
    if req.to < req.from {
        return Err(Error::usage(
            format!(
                "the target {} is older than the source {}: downgrades are not supported (legacy migrations cannot be undone)",
                display(&req.to),
                display(&req.from)
            ),
            "restore a backup taken before the upgrade to go back; otherwise pick a --to newer than --from",
        ));
    }
    Ok(())
}

/// Build the plan for (from, to].
pub fn plan(map: &ReleaseMap, req: &PlanRequest) -> Result<Plan> {
    check_request(map, req)?;
    let ordered = order_steps_inner(map, req).map_err(|v| {
        Error::Internal(format!(
            "validated map cannot order {} after {}",
            v.migration, v.after
        ))
    })?;

    let mut groups: Vec<PlanGroup> = Vec::new();
    for step in ordered {
        let (git_ref, version, release) = match &step.at {
            RunPoint::Release(v) => {
                let release = map
                    .release(v)
                    .ok_or_else(|| Error::Internal(format!("release {v} vanished from the map")))?;
                (release.tag.clone(), Some(v.clone()), release)
            }
            RunPoint::Unreleased(_, r) => {
                let newest = map.newest_release().ok_or_else(|| {
                    Error::Internal(
                        "an unreleased script needs a release to borrow its toolchain from".into(),
                    )
                })?;
                (r.clone(), None, newest)
            }
        };
        if groups.last().is_none_or(|g| g.git_ref != git_ref) {
            groups.push(PlanGroup {
                git_ref: git_ref.clone(),
                version: version.as_ref().map(|v| v.to_string()),
                unreleased: version.is_none(),
                era: release.era.clone(),
                node: release.node.clone(),
                node_engines: release.node_engines.clone(),
                pnpm: release.pnpm.clone(),
                verified: release.verified && version.is_some(),
                steps: Vec::new(),
            });
        }
        let m = step.migration;
        let mode = m.mode_at(version.as_ref()).clone();
        let reason = match (&m.introduced, &version) {
            (Introduced::Release(i), Some(at)) if i == at => {
                format!(
                    "introduced in {} (after the source {})",
                    display(i),
                    display(&req.from)
                )
            }
            (Introduced::Release(i), Some(at)) => format!(
                "introduced in {}; the map runs it at {} ({})",
                display(i),
                display(at),
                mode.describe()
            ),
            (Introduced::Unreleased { git_ref }, _) => {
                format!("no release ships it yet; runs at {git_ref} (--include-unreleased)")
            }
            (Introduced::Release(i), None) => format!("introduced in {}", display(i)),
        };
        let group = groups
            .last_mut()
            .ok_or_else(|| Error::Internal("no plan group".into()))?;
        group.steps.push(PlanStep {
            id: m.id.clone(),
            title: m.title.clone(),
            script: m.script.clone(),
            introduced_in: m.introduced_version().map(|v| v.to_string()),
            runs_as: mode.describe(),
            mode,
            idempotent: m.idempotent,
            destructive: m.destructive,
            lossy: m.lossy,
            needs: m.needs.clone(),
            after: m.after.clone(),
            warnings: m.warnings.clone(),
            verified: m.verified && version.is_some() && release.verified,
            has_fingerprint: matches!(m.fingerprint, crate::release_map::Fingerprint::Checks(_)),
            reason,
        });
    }

    let unreleased_left_out = if req.include_unreleased {
        Vec::new()
    } else {
        map.migrations
            .iter()
            .filter(|m| matches!(m.introduced, Introduced::Unreleased { .. }))
            .map(|m| m.id.clone())
            .collect()
    };
    Ok(Plan {
        schema: PLAN_SCHEMA,
        project: map.project.name.clone(),
        map: map.source.clone(),
        from: display(&req.from),
        to: display(&req.to),
        include_unreleased: req.include_unreleased,
        steps_total: groups.iter().map(|g| g.steps.len()).sum(),
        groups,
        unreleased_left_out,
    })
}
