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

pub const PLAN_SCHEMA: &str = crate::json_schemas::PLAN;

pub use crate::release_map::order::{order_steps, OrderViolation, PlanRequest};
use crate::release_map::order::{order_steps_inner, RunPoint};

#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub schema: &'static str,
    pub project: String,
    pub map: String,
    pub from: String,
    pub to: String,
    pub include_unreleased: bool,
    pub steps_total: usize,
    /// The repository the plan was checked against (with --repo), URL credentials redacted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repository: Option<String>,
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
    /// The commit the ref resolves to (with --repo).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    /// `.nvmrc` at the ref, when it differs from the map's node (with --repo).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repo_node_differs: Option<String>,
    /// The era's setup profile the tag gets (absent: the full setup).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub setup_profile: Option<String>,
    /// A stale lockfile whose workspace-link specifiers upstep reconciles before the setup.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repair_lockfile: Option<String>,
    /// What the tag's setup fetches from outside the package registry.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub downloads: Vec<crate::release_map::Download>,
    /// Packages the map installs in place of what the tag's lockfile pins (`src/stand_ins.rs`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub stand_ins: Vec<PlannedStandIn>,
    /// Why the upgrade cannot run this tag from here (with --repo: an unreachable download).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub blockers: Vec<String>,
    pub steps: Vec<PlanStep>,
}

impl PlanGroup {
    /// The map's release this group runs at (None for unreleased refs).
    pub fn release<'m>(&self, map: &'m ReleaseMap) -> Option<&'m crate::release_map::Release> {
        let version = Version::parse(self.version.as_deref()?).ok()?;
        map.release(&version)
    }

    /// Fill in the setup this group's steps need: the era's profile when every step names
    /// the same one, its lockfile repair, and the downloads that setup fetches.
    pub fn fill_setup(&mut self, map: &ReleaseMap) {
        let Some(era) = map.eras.get(&self.era) else {
            return;
        };
        let choice = era.setup_for(self.steps.iter().map(|s| s.mode.setup_profile.as_deref()));
        self.setup_profile = choice.profile.map(str::to_string);
        let release = self.release(map);
        self.repair_lockfile = release.and_then(|r| r.repair_lockfile.clone());
        self.downloads = release
            .map(|r| {
                r.downloads
                    .iter()
                    .filter(|d| d.needed_by(choice.profile))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        self.stand_ins = release
            .map(|r| {
                r.stand_ins
                    .iter()
                    .map(|s| PlannedStandIn {
                        stand_in: s.clone(),
                        host: r
                            .downloads
                            .iter()
                            .find(|d| d.dependency == s.package)
                            .and_then(|d| d.host()),
                        applies: (s.when == crate::release_map::StandInWhen::Always)
                            .then_some(true),
                    })
                    .collect()
            })
            .unwrap_or_default();
    }
}

/// A stand-in of the tag's setup, and whether the run applies it.
#[derive(Debug, Clone, Serialize)]
pub struct PlannedStandIn {
    #[serde(flatten)]
    pub stand_in: crate::release_map::StandIn,
    /// The host whose reachability decides a `when-unreachable` stand-in.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// true: applied; false: the host answers, the original is installed; absent: not known
    /// until that host is probed (`plan --repo`, `doctor`, the upgrade).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub applies: Option<bool>,
}

impl PlannedStandIn {
    /// The plan's line for it.
    pub fn describe(&self) -> String {
        let what = self.stand_in.describe();
        let host = self.host.as_deref().unwrap_or("its host");
        match (self.stand_in.when, self.applies) {
            (crate::release_map::StandInWhen::Always, _) => format!("stand-in: {what}"),
            (_, Some(true)) => format!("stand-in: {what}, because {host} cannot be reached"),
            (_, Some(false)) => format!(
                "no stand-in for {}: {host} answers, the original is installed",
                self.stand_in.package
            ),
            (_, None) => format!("stand-in if {host} cannot be reached: {what}"),
        }
    }
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
    /// Whether the script exists at the group's ref (with --repo).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub script_at_ref: Option<bool>,
    /// Why the step runs at this tag whatever the target (the map's `required_stop`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub required_stop: Option<String>,
    /// Why the step runs only when asked for by id (`--include-optional <id>`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub optional: Option<String>,
    /// The script exits 0 even when it failed: only its data check proves it ran.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub exit_code_unreliable: bool,
    /// The worst that can happen, up front.
    pub worst_case: WorstCase,
}

/// What can go wrong with a step, from the map, and what a backup would give back.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct WorstCase {
    /// Any of "destructive", "lossy", "not-idempotent", "unverifiable".
    pub risks: Vec<&'static str>,
    /// The collections its data check reads (the ones it migrates, as far as the map says).
    pub collections: Vec<String>,
    /// What a backup taken before the run (`upgrade --backup DIR`) restores.
    pub backup_restores: String,
}

/// The worst case of a migration, from its map fields.
pub fn worst_case(m: &Migration) -> WorstCase {
    let mut risks = Vec::new();
    if m.destructive {
        risks.push("destructive");
    }
    if m.lossy {
        risks.push("lossy");
    }
    if m.idempotent == Idempotency::No {
        risks.push("not-idempotent");
    }
    let mut collections = Vec::new();
    match &m.fingerprint {
        crate::release_map::Fingerprint::Checks(checks) => {
            for c in checks {
                if !collections.contains(&c.collection) {
                    collections.push(c.collection.clone());
                }
            }
        }
        crate::release_map::Fingerprint::Unknown { .. } => risks.push("unverifiable"),
    }
    let backup_restores = if collections.is_empty() {
        "every collection as it was before the run (the map does not say which ones this step writes); `upstep restore DIR --drop` puts them back and sets the journal back".to_string()
    } else {
        format!(
            "{} (and every other collection) as it was before the run; `upstep restore DIR --drop` puts it back and sets the journal back",
            collections.join(", ")
        )
    };
    WorstCase {
        risks,
        collections,
        backup_restores,
    }
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.steps_total == 0
    }

    /// Keep only the steps `keep` accepts (e.g. those a run would execute), dropping groups
    /// left empty.
    pub fn retain_steps(&mut self, keep: impl Fn(&PlanStep) -> bool) {
        for group in &mut self.groups {
            group.steps.retain(|s| keep(s));
        }
        // The setup a group needs follows its steps; callers holding the map refresh it with
        // `PlanGroup::fill_setup`.
        self.groups.retain(|g| !g.steps.is_empty());
        self.steps_total = self.groups.iter().map(|g| g.steps.len()).sum();
    }

    pub fn steps(&self) -> impl Iterator<Item = (&PlanGroup, &PlanStep)> {
        self.groups
            .iter()
            .flat_map(|g| g.steps.iter().map(move |s| (g, s)))
    }
}

/// A plan's `from`/`to` text back as a version (`display` writes `v1.2.3`); 0.0.0 if unreadable.
pub fn version_of(text: &str) -> Version {
    Version::parse(text.trim_start_matches('v')).unwrap_or(Version::new(0, 0, 0))
}

/// `--include-optional <id>`: each id must name an optional migration of the map (a typo, or a
/// step that is not optional, would include nothing).
pub fn optional_steps(
    map: &ReleaseMap,
    ids: &[String],
) -> Result<std::collections::BTreeSet<String>> {
    for id in ids {
        match map.migration(id) {
            Some(m) if m.lifecycle.optional.is_some() => {}
            found => {
                let optional: Vec<&str> = map
                    .migrations
                    .iter()
                    .filter(|m| m.lifecycle.optional.is_some())
                    .map(|m| m.id.as_str())
                    .collect();
                let what = if found.is_some() {
                    "is not optional (it runs whenever the plan needs it)"
                } else {
                    "is not a migration of the map"
                };
                return Err(Error::usage(
                    format!("--include-optional {id}: {id:?} {what} ({})", map.source),
                    if optional.is_empty() {
                        "this map has no optional steps: drop --include-optional".to_string()
                    } else {
                        format!("name one of the optional steps: {}", optional.join(", "))
                    },
                ));
            }
        }
    }
    Ok(ids.iter().cloned().collect())
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
                commit: None,
                repo_node_differs: None,
                setup_profile: None,
                repair_lockfile: None,
                downloads: Vec::new(),
                stand_ins: Vec::new(),
                blockers: Vec::new(),
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
            script_at_ref: None,
            required_stop: m.lifecycle.required_stop.clone(),
            optional: m.lifecycle.optional.clone(),
            exit_code_unreliable: m.lifecycle.exit_code_unreliable,
            worst_case: worst_case(m),
        });
    }

    for group in &mut groups {
        group.fill_setup(map);
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
        repository: None,
        groups,
        unreleased_left_out,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::release_map::parse_map;
    use std::collections::BTreeSet;

    fn embedded() -> ReleaseMap {
        crate::release_map::load(None).expect("the embedded map is valid")
    }

    fn request(from: &Version, to: &Version, include_unreleased: bool) -> PlanRequest {
        PlanRequest {
            from: from.clone(),
            to: to.clone(),
            include_unreleased,
        }
    }

    /// Versions worth planning from/to: before everything, every release, and one patch
    /// after each release (a version between the map's releases).
    fn points(map: &ReleaseMap) -> Vec<Version> {
        let mut points = vec![Version::new(0, 0, 0)];
        for r in &map.releases {
            points.push(r.version.clone());
            let mut between = r.version.clone();
            between.patch += 1;
            if map.newest_release().is_some_and(|n| between < n.version) {
                points.push(between);
            }
        }
        points.sort();
        points.dedup();
        points
    }

    #[test]
    fn every_pair_plans_exactly_the_scripts_introduced_in_the_range() {
        let map = embedded();
        let points = points(&map);
        let mut pairs = 0;
        for (i, from) in points.iter().enumerate() {
            for to in &points[i..] {
                for include_unreleased in [false, true] {
                    let plan = plan(&map, &request(from, to, include_unreleased)).unwrap();
                    let planned: Vec<&str> = plan.steps().map(|(_, s)| s.id.as_str()).collect();
                    let planned_set: BTreeSet<&str> = planned.iter().copied().collect();
                    assert_eq!(
                        planned.len(),
                        planned_set.len(),
                        "a step planned twice: {planned:?}"
                    );
                    let newest = &map.newest_release().unwrap().version;
                    let expected: BTreeSet<&str> = map
                        .migrations
                        .iter()
                        .filter(|m| match &m.introduced {
                            Introduced::Release(v) => from < v && v <= to,
                            Introduced::Unreleased { .. } => include_unreleased && to >= newest,
                        })
                        .map(|m| m.id.as_str())
                        .collect();
                    assert_eq!(planned_set, expected, "plan {from} -> {to}");
                    assert_eq!(plan.steps_total, planned.len());

                    // Each step at its tag: run_at when the target reaches it, else introduced_in.
                    for (group, step) in plan.steps() {
                        let m = map.migration(&step.id).unwrap();
                        match &m.introduced {
                            Introduced::Release(v) => {
                                let at = m.run_at.as_ref().filter(|at| *at <= to).unwrap_or(v);
                                assert_eq!(
                                    group.git_ref,
                                    map.release(at).unwrap().tag,
                                    "{}",
                                    step.id
                                );
                                assert_eq!(&step.mode, m.mode_at(Some(at)), "{}", step.id);
                            }
                            Introduced::Unreleased { git_ref } => {
                                assert_eq!(&group.git_ref, git_ref)
                            }
                        }
                    }
                    // Groups in release order, unreleased last, and every `after` honoured.
                    let versions: Vec<Option<Version>> = plan
                        .groups
                        .iter()
                        .map(|g| g.version.as_ref().map(|v| Version::parse(v).unwrap()))
                        .collect();
                    let released: Vec<&Version> = versions.iter().flatten().collect();
                    assert!(released.windows(2).all(|w| w[0] < w[1]), "{versions:?}");
                    if let Some(first_unreleased) = versions.iter().position(Option::is_none) {
                        assert!(versions[first_unreleased..].iter().all(Option::is_none));
                    }
                    for (pos, id) in planned.iter().enumerate() {
                        for dep in &map.migration(id).unwrap().after {
                            if let Some(dep_pos) = planned.iter().position(|p| p == dep) {
                                assert!(dep_pos < pos, "{id} must come after {dep} in {planned:?}");
                            }
                        }
                    }
                    pairs += 1;
                }
            }
        }
        assert!(pairs > 300, "only {pairs} pairs checked");
    }

    #[test]
    fn v0_17_to_v2_0_lists_the_expected_scripts_in_order() {
        let map = embedded();
        let plan = plan(
            &map,
            &request(&Version::new(0, 17, 0), &Version::new(2, 0, 0), false),
        )
        .unwrap();
        let by_tag: Vec<(String, Vec<String>)> = plan
            .groups
            .iter()
            .map(|g| {
                (
                    g.git_ref.clone(),
                    g.steps.iter().map(|s| s.id.clone()).collect(),
                )
            })
            .collect();
        let expected: Vec<(&str, Vec<&str>)> = vec![
            ("v0.18.0", vec!["add-primary-priority", "novu-integrations"]),
            (
                "v0.19.0",
                vec![
                    "update-primary-for-disabled-novu-integrations",
                    "add-layout-identifier",
                ],
            ),
            ("v0.20.0", vec!["subscriber-preferences-level"]),
            (
                "v0.24.0",
                vec![
                    "normalize-message-cta-action",
                    "normalize-message-template-cta-action",
                    "topic-subscriber-normalize",
                ],
            ),
            (
                "v2.0.0",
                vec!["encrypt-api-keys", "remove-duplicated-subscribers"],
            ),
        ];
        let expected: Vec<(String, Vec<String>)> = expected
            .into_iter()
            .map(|(t, ids)| (t.to_string(), ids.into_iter().map(String::from).collect()))
            .collect();
        assert_eq!(by_tag, expected);
        // drop-logs-collection ships in v2.1.1: no script of the embedded map is unreleased.
        assert!(plan.unreleased_left_out.is_empty());
    }

    #[test]
    fn v2_0_to_v3_15_stops_at_v2_1_0_and_shows_the_optional_step() {
        let map = embedded();
        let plan = plan(
            &map,
            &request(&Version::new(2, 0, 0), &Version::new(3, 15, 0), false),
        )
        .unwrap();
        let by_tag: Vec<(&str, Vec<&str>)> = plan
            .groups
            .iter()
            .map(|g| {
                (
                    g.git_ref.as_str(),
                    g.steps.iter().map(|s| s.id.as_str()).collect(),
                )
            })
            .collect();
        assert_eq!(
            by_tag,
            [
                ("v2.1.0", vec!["preference-centralization"]),
                ("v2.1.1", vec!["drop-logs-collection"]),
                ("v2.3.0", vec!["email-step-ui-schema-html-editor"]),
                (
                    "v3.11.0",
                    vec!["add-layout-id-to-email-controls", "preferences-uniqueness"]
                ),
                (
                    "v3.12.0",
                    vec![
                        "add-default-identifier-to-topic-subscribers",
                        "remove-duplicate-identifiers"
                    ]
                ),
            ]
        );
        let step = |id: &str| plan.steps().find(|(_, s)| s.id == id).unwrap().1;
        assert!(step("preference-centralization")
            .required_stop
            .as_deref()
            .is_some_and(|r| r.contains("stub")));
        // doctor blocks a standalone server for a plan with this step (preflight topology).
        assert!(step("preference-centralization")
            .needs
            .contains(&Need::ReplicaSet));
        assert!(step("preferences-uniqueness").optional.is_some());
        assert!(step("drop-logs-collection").exit_code_unreliable);
        // v3.15.0 introduces no script: no plan prepares it.
        assert!(plan.groups.iter().all(|g| g.git_ref != "v3.15.0"));
    }

    #[test]
    fn no_plan_runs_a_script_at_a_tag_where_it_no_longer_exists() {
        let map = embedded();
        let points = points(&map);
        for (i, from) in points.iter().enumerate() {
            for to in &points[i..] {
                let plan = plan(&map, &request(from, to, true)).unwrap();
                for (group, step) in plan.steps() {
                    let m = map.migration(&step.id).unwrap();
                    let (Some(at), Some(removed)) =
                        (group.version.as_deref(), &m.lifecycle.removed_in)
                    else {
                        continue;
                    };
                    assert!(
                        &Version::parse(at).unwrap() < removed,
                        "{} planned at {at}, removed in {removed}",
                        step.id
                    );
                }
            }
        }
        let removed: Vec<&str> = map
            .migrations
            .iter()
            .filter(|m| m.lifecycle.removed_in.is_some())
            .map(|m| m.id.as_str())
            .collect();
        assert_eq!(removed, ["subscriber-preferences-level"]);
    }

    #[test]
    fn an_optional_id_that_does_not_exist_or_is_not_optional_is_one_clear_error() {
        let map = embedded();
        let ok = optional_steps(&map, &["preferences-uniqueness".to_string()]).unwrap();
        assert!(ok.contains("preferences-uniqueness"));
        for (id, needle) in [
            ("preferences-uniquenes", "is not a migration of the map"),
            ("drop-logs-collection", "is not optional"),
        ] {
            let err = optional_steps(&map, &[id.to_string()]).unwrap_err();
            assert_eq!(err.code(), crate::error::ExitCode::Usage);
            let text = err.to_string();
            assert!(text.contains(needle), "{text}");
            assert!(
                text.contains("fix: name one of the optional steps: preferences-uniqueness"),
                "{text}"
            );
        }
    }

    #[test]
    fn encrypt_api_keys_runs_through_the_shim_when_the_target_stops_before_v2() {
        let map = embedded();
        let plan = plan(
            &map,
            &request(&Version::new(0, 22, 0), &Version::new(0, 24, 0), false),
        )
        .unwrap();
        let (group, step) = plan
            .steps()
            .find(|(_, s)| s.id == "encrypt-api-keys")
            .unwrap();
        assert_eq!(group.git_ref, "v0.23.0");
        assert_eq!(step.mode.run, crate::release_map::RunKind::Export);
        assert_eq!(step.mode.shim.as_deref(), Some("data-layer"));
    }

    #[test]
    fn requests_out_of_range_are_refused_with_a_fix() {
        let map = embedded();
        let newest = map.newest_release().unwrap().version.clone();
        let mut newer = newest.clone();
        newer.major += 1;
        for (from, to, needle) in [
            (newer.clone(), newer.clone(), "map may be out of date"),
            (
                Version::new(0, 1, 0),
                newer.clone(),
                "map may be out of date",
            ),
            (
                Version::new(2, 0, 0),
                Version::new(0, 18, 0),
                "downgrades are not supported",
            ),
        ] {
            let err = plan(&map, &request(&from, &to, false)).unwrap_err();
            assert_eq!(err.code(), crate::error::ExitCode::Usage);
            assert!(err.to_string().contains(needle), "{err}");
            assert!(err.to_string().contains("fix:"), "{err}");
        }
        let same = plan(&map, &request(&newest, &newest, false)).unwrap();
        assert!(same.is_empty());
        // At the newest release, the only thing left to plan is what no release ships yet
        // (nothing, in the embedded map).
        let unreleased = plan(&map, &request(&newest, &newest, true)).unwrap();
        assert!(unreleased.groups.iter().all(|g| g.unreleased));
        assert_eq!(unreleased.steps_total, 0);
    }

    const SYNTHETIC: &str = r#"
schema = 1
[project]
name = "demo"
migrations_dir = "migrations"
[eras.plain]
cwd = "."
run = ["node", "{script}"]
[eras.plain.shims.lib]
template = "require('{module}').{export}()"
[[releases]]
version = "1.0.0"
era = "plain"
node = "20.8.1"
[[releases]]
version = "1.1.0"
era = "plain"
node = "20.8.1"
[[releases]]
version = "2.0.0"
era = "plain"
node = "20.8.1"

[[migrations]]
id = "c"
title = "C"
introduced_in = "1.1.0"
script = "migrations/c.js"
run = "file"
exits = "yes"
idempotent = "yes"
after = ["b"]
no_fingerprint = "demo"

[[migrations]]
id = "a"
title = "A"
introduced_in = "1.1.0"
script = "migrations/a.js"
run = "export"
export = "up"
shim = "lib"
exits = "yes"
idempotent = "guarded"
run_at = "2.0.0"
no_fingerprint = "demo"
[[migrations.modes]]
from = "2.0.0"
run = "file"
exits = "never"

[[migrations]]
id = "b"
title = "B"
introduced_in = "1.1.0"
script = "migrations/b.js"
run = "file"
exits = "yes"
idempotent = "no"
no_fingerprint = "demo"

[[migrations]]
id = "z"
title = "Z"
unreleased_ref = "main"
script = "migrations/z.js"
run = "file"
exits = "yes"
idempotent = "yes"
after = ["c"]
no_fingerprint = "demo"
"#;

    fn ids(plan: &Plan) -> Vec<(String, String)> {
        plan.steps()
            .map(|(g, s)| (g.git_ref.clone(), s.id.clone()))
            .collect()
    }

    #[test]
    fn after_constraints_reorder_within_a_tag_and_run_at_moves_a_step() {
        let map = parse_map(SYNTHETIC, "synthetic").unwrap();
        let v = |s: &str| Version::parse(s).unwrap();
        let to_1_1 = plan(&map, &request(&v("1.0.0"), &v("1.1.0"), false)).unwrap();
        let pairs = |list: &[(&str, &str)]| -> Vec<(String, String)> {
            list.iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect()
        };
        // c waits for b; a stays at 1.1.0 because the target does not reach its run_at.
        assert_eq!(
            ids(&to_1_1),
            pairs(&[("v1.1.0", "a"), ("v1.1.0", "b"), ("v1.1.0", "c")])
        );
        let to_2 = plan(&map, &request(&v("1.0.0"), &v("2.0.0"), true)).unwrap();
        assert_eq!(
            ids(&to_2),
            pairs(&[
                ("v1.1.0", "b"),
                ("v1.1.0", "c"),
                ("v2.0.0", "a"),
                ("main", "z")
            ])
        );
        let a = to_2.steps().find(|(_, s)| s.id == "a").unwrap().1;
        assert_eq!(a.mode.run, crate::release_map::RunKind::File);
        assert!(to_2.groups.last().unwrap().unreleased);
        // Unreleased scripts only join plans that reach the newest release.
        let partial = plan(&map, &request(&v("1.0.0"), &v("1.1.0"), true)).unwrap();
        assert!(!ids(&partial).iter().any(|(_, id)| id == "z"));
    }
}
