//! The order a map's steps run in for a range (from, to]: by run point, then by `after`
//! constraints, then by map order. Here, beside the map, because validation uses it (a valid map
//! always orders); the planner (`crate::plan`) dresses the result for output.

use semver::Version;

use super::{Introduced, Migration, ReleaseMap};

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
pub(crate) enum RunPoint {
    Release(Version),
    /// Position among the unreleased refs (first appearance in the map), then the ref.
    Unreleased(usize, String),
}

/// A step ordered before the plan is dressed for output.
#[derive(Debug, Clone)]
pub(crate) struct OrderedStep<'m> {
    pub(crate) migration: &'m Migration,
    pub(crate) at: RunPoint,
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
pub(crate) fn order_steps_inner<'m>(
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
