//! Version detection: where a database stands, read from upstep's journal and from every
//! migration's data check (fingerprint), without being told.
//!
//! Per migration up to the target (older than `--from` too), the journal's status and the
//! data's state are combined into one verdict; the journal wins over the data. From the
//! verdicts follow:
//! - the **detected version**: the newest release whose migrations, and those of every older
//!   release, all count as applied (applied, not applicable, regressed or assumed applied);
//! - the version the data **looks like**: the newest release whose own migrations all count as
//!   applied, at least one of them on positive evidence (journal, or a check that read documents
//!   and found none pending), where such evidence outnumbers the migrations not applied between
//!   the detected version and it (see `derive_versions`);
//! - **gaps**: migrations that do not count as applied but are older than the release the data
//!   looks like (e.g. a v0.12 script skipped on a database otherwise at v0.16). The detected
//!   version stops before the first gap; the gaps are listed so a person can judge.
//!
//! An empty database (every check finds its collections absent or empty, and no journal)
//! needs nothing: it is reported as `nothing_to_migrate`, with the target as its version.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use semver::Version;
use serde::Serialize;

use crate::error::Result;
use crate::git::GitRepo;
use crate::plan::{self, PlanRequest};
use crate::release_map::{CheckKind, Fingerprint, Introduced, Migration, ReleaseMap};
use crate::store::fingerprint::{self, CheckReport, EvalOptions, FpState};
use crate::store::journal::{JournalEntry, StepStatus};
use crate::store::Store;
use crate::version::{display, parse_user_version};

pub const DETECT_SCHEMA: &str = crate::json_schemas::DETECT;

/// Where the target version came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum TargetSource {
    /// `--to`.
    Flag,
    /// The local `--repo` checkout's HEAD is exactly at this release tag.
    RepoHead { tag: String },
    /// Neither: the newest verified release in the map (the newest release with
    /// `--include-unreleased`).
    NewestInMap,
}

impl TargetSource {
    pub fn describe(&self) -> String {
        match self {
            TargetSource::Flag => "--to".to_string(),
            TargetSource::RepoHead { tag } => {
                format!("the --repo checkout's HEAD is at tag {tag}")
            }
            TargetSource::NewestInMap => "the newest verified release in the map".to_string(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct DetectOptions {
    /// What the user says the data is at: migrations at or before it that no check can read
    /// count as applied (data that shows pending still wins).
    pub from: Option<Version>,
    pub to: Version,
    pub to_source: TargetSource,
    /// Server-side limit per query.
    pub time_limit: Duration,
    /// Pending documents are counted up to this many ("at least N" when reached).
    pub count_limit: u64,
    pub include_unreleased: bool,
}

/// One migration's combined state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    /// The journal records it done, or its data check finds nothing pending.
    Applied,
    /// Its data check finds documents still needing it, or the journal marks it pending.
    Pending,
    /// The collections it migrates are absent or empty: nothing to do.
    NotApplicable,
    /// No journal entry and no answer from the data (no check, or the check failed).
    Unknown,
    /// The journal records it done, but its data check finds pending documents again.
    Regressed,
    /// The journal records a failed, interrupted or still running run.
    Incomplete,
    /// No check can tell, but it is at or before `--from`.
    AssumedApplied,
}

impl Verdict {
    /// Counts as applied for the detected version (the journal wins: regressed counts).
    pub fn counts_as_applied(self) -> bool {
        matches!(
            self,
            Verdict::Applied
                | Verdict::NotApplicable
                | Verdict::Regressed
                | Verdict::AssumedApplied
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Applied => "applied",
            Verdict::Pending => "pending",
            Verdict::NotApplicable => "not-applicable",
            Verdict::Unknown => "unknown",
            Verdict::Regressed => "regressed",
            Verdict::Incomplete => "incomplete",
            Verdict::AssumedApplied => "assumed-applied",
        }
    }
}

/// What the data check found.
#[derive(Debug, Clone, Serialize)]
pub struct Evidence {
    /// Pending documents counted (summed over the checks; capped per check).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pending_count: Option<u64>,
    /// The count reached the cap: there are at least `pending_count`.
    pub at_least: bool,
    /// One example `_id` per check that found something (relaxed Extended JSON).
    pub example_ids: Vec<serde_json::Value>,
}

impl Evidence {
    /// "at least 1000 pending, e.g. 65f0...", "3 pending, e.g. ...", "" when nothing.
    pub fn describe(&self) -> String {
        let count = match (self.pending_count, self.at_least) {
            (Some(n), true) => format!("at least {n} pending"),
            (Some(n), false) => format!("{n} pending"),
            (None, _) if !self.example_ids.is_empty() => "pending".to_string(),
            (None, _) => return String::new(),
        };
        match self.example_ids.first() {
            Some(id) => format!("{count}, e.g. _id {}", short_id(id)),
            None => count,
        }
    }
}

fn short_id(id: &serde_json::Value) -> String {
    match id {
        serde_json::Value::Object(o) if o.len() == 1 && o.contains_key("$oid") => {
            o["$oid"].as_str().unwrap_or_default().to_string()
        }
        serde_json::Value::String(s) => format!("{s:?}"),
        other => other.to_string(),
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct MigrationState {
    pub id: String,
    pub title: String,
    /// The release that introduced it (absent for unreleased scripts).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub release: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unreleased_ref: Option<String>,
    /// The journal's status, if upstep ran or marked it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub journal: Option<StepStatus>,
    /// What the data check says.
    pub data: FpState,
    /// Why the data state is what it is (for unknown: why no answer).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_reason: Option<String>,
    pub evidence: Evidence,
    pub verdict: Verdict,
    /// What decided the verdict: "journal", "data", "from" or "none".
    pub basis: &'static str,
    pub reason: String,
    pub checks: Vec<CheckReport>,
    pub elapsed_ms: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Gap {
    pub id: String,
    pub release: String,
    pub verdict: Verdict,
    /// The newer release whose migrations are all applied.
    pub newer_release: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Target {
    pub version: String,
    pub source: TargetSource,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Counts {
    pub applied: usize,
    pub pending: usize,
    pub not_applicable: usize,
    pub unknown: usize,
    pub regressed: usize,
    pub incomplete: usize,
    pub assumed_applied: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct DetectReport {
    pub schema: &'static str,
    pub project: String,
    pub map: String,
    /// The database, password redacted.
    pub database: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    pub target: Target,
    /// The newest release whose migrations and all older ones count as applied; None when
    /// even the first release's migrations do not.
    pub detected: Option<String>,
    /// The newest release whose own migrations all count as applied on positive evidence,
    /// when newer than `detected` (then there are gaps).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub looks_like: Option<String>,
    pub gaps: Vec<Gap>,
    /// An empty database: every check finds its collections absent or empty, no journal.
    pub nothing_to_migrate: bool,
    /// Why the journal could not be read, if it could not (the data alone decided).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub journal_error: Option<String>,
    pub counts: Counts,
    pub time_limit_ms: u64,
    pub count_limit: u64,
    pub elapsed_ms: u64,
    pub migrations: Vec<MigrationState>,
}

/// The target: `--to`, else the release of a local repository whose HEAD is exactly at one of
/// the map's release tags, else the map's default target (its newest verified release).
pub fn resolve_target(
    map: &ReleaseMap,
    to: Option<&str>,
    repo: Option<&GitRepo>,
    include_unreleased: bool,
) -> Result<(Version, TargetSource)> {
    if let Some(to) = to {
        return Ok((
            parse_user_version(to, "--to")?.resolve(map),
            TargetSource::Flag,
        ));
    }
    if let Some(repo) = repo {
        let tag = repo
            .describe_exact_tag()?
            .filter(|t| !map.project.ignore_tags.contains(t));
        if let Some(tag) = tag {
            let version = map
                .releases
                .iter()
                .find(|r| r.tag == tag)
                .map(|r| r.version.clone())
                .or_else(|| {
                    let bare = tag.strip_prefix(['v', 'V']).unwrap_or(&tag);
                    Version::parse(bare).ok()
                });
            if let Some(version) = version {
                return Ok((version, TargetSource::RepoHead { tag }));
            }
        }
    }
    Ok((
        map.default_target(include_unreleased)?.version.clone(),
        TargetSource::NewestInMap,
    ))
}

/// The migrations up to the target, in introduction order (unreleased last).
fn migrations_up_to<'m>(map: &'m ReleaseMap, opts: &DetectOptions) -> Result<Vec<&'m Migration>> {
    let req = PlanRequest {
        from: Version::new(0, 0, 0),
        to: opts.to.clone(),
        include_unreleased: opts.include_unreleased,
    };
    if let Some(from) = &opts.from {
        plan::check_request(
            map,
            &PlanRequest {
                from: from.clone(),
                ..req.clone()
            },
        )?;
    }
    let plan = plan::plan(map, &req)?;
    let mut list: Vec<(usize, &Migration)> = plan
        .steps()
        .filter_map(|(_, s)| {
            map.migrations
                .iter()
                .enumerate()
                .find(|(_, m)| m.id == s.id)
        })
        .collect();
    list.sort_by(|(ia, a), (ib, b)| {
        let key = |m: &Migration| m.introduced_version().cloned();
        match (key(a), key(b)) {
            (Some(x), Some(y)) => x.cmp(&y).then(ia.cmp(ib)),
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (None, None) => ia.cmp(ib),
        }
    });
    Ok(list.into_iter().map(|(_, m)| m).collect())
}

/// Combine the journal and the data (the journal wins).
fn verdict(
    journal: Option<StepStatus>,
    data: FpState,
    at_or_before_from: bool,
) -> (Verdict, &'static str, String) {
    match journal {
        Some(s) if s.is_done() && data == FpState::Pending => (
            Verdict::Regressed,
            "journal",
            format!(
                "journal: {}, but its data check finds pending documents again",
                s.as_str()
            ),
        ),
        Some(s) if s.is_done() => (
            Verdict::Applied,
            "journal",
            format!("journal: {}", s.as_str()),
        ),
        Some(
            s @ (StepStatus::Failed
            | StepStatus::Interrupted
            | StepStatus::EndedUnverified
            | StepStatus::Running),
        ) => (
            Verdict::Incomplete,
            "journal",
            format!("journal: {} (see `upstep status`)", s.as_str()),
        ),
        Some(StepStatus::Pending) => (
            Verdict::Pending,
            "journal",
            "journal: marked pending".to_string(),
        ),
        // No entry, or skipped by a run: the data decides.
        _ => match data {
            FpState::Applied => (
                Verdict::Applied,
                "data",
                "its data check finds nothing pending".to_string(),
            ),
            FpState::Pending => (
                Verdict::Pending,
                "data",
                if at_or_before_from {
                    "its data check finds pending documents (although older than --from)"
                        .to_string()
                } else {
                    "its data check finds pending documents".to_string()
                },
            ),
            FpState::NotApplicable => (
                Verdict::NotApplicable,
                "data",
                "the collections it migrates are absent or empty".to_string(),
            ),
            FpState::Failed => (
                Verdict::Incomplete,
                "data",
                "its tool's journal records a failed run".to_string(),
            ),
            FpState::Unknown if at_or_before_from => (
                Verdict::AssumedApplied,
                "from",
                "no data check can tell; assumed applied (at or before --from)".to_string(),
            ),
            FpState::Unknown => (
                Verdict::Unknown,
                "none",
                "neither the journal nor a data check can tell".to_string(),
            ),
        },
    }
}

/// Read the journal and every migration's data, and derive where the database stands.
/// `progress(done, total)` is called as each migration's checks finish.
pub async fn detect(
    map: &ReleaseMap,
    store: &Store,
    opts: DetectOptions,
    progress: &dyn Fn(usize, usize),
) -> Result<DetectReport> {
    let started = Instant::now();
    let migrations = migrations_up_to(map, &opts)?;
    let total = migrations.len();
    progress(0, total);

    // An unreadable journal (e.g. a user who may not read this database) does not stop
    // detection: the data alone decides, and the report says why.
    let (entries, journal_error): (BTreeMap<String, JournalEntry>, Option<String>) =
        match crate::store::journal::read_entries(store).await {
            Ok(e) => (e, None),
            Err(e) => (BTreeMap::new(), Some(e.to_string())),
        };

    let eval = EvalOptions {
        time_limit: opts.time_limit,
        count_limit: Some(opts.count_limit.max(1)),
    };
    let done = Cell::new(0usize);
    let mut evaluated: Vec<(usize, fingerprint::FingerprintReport, u64)> =
        futures_util::stream::iter(migrations.iter().enumerate().map(|(i, m)| {
            let db = store.db.clone();
            let fp = m.fingerprint.clone();
            let done = &done;
            async move {
                let t = Instant::now();
                let report = fingerprint::evaluate(&db, &fp, eval).await;
                done.set(done.get() + 1);
                progress(done.get(), total);
                (i, report, t.elapsed().as_millis() as u64)
            }
        }))
        .buffer_unordered(fingerprint::MIGRATIONS_AT_ONCE)
        .collect()
        .await;
    evaluated.sort_by_key(|(i, _, _)| *i);

    let mut rows = Vec::with_capacity(total);
    for ((_, report, elapsed_ms), m) in evaluated.into_iter().zip(&migrations) {
        let journal = entries.get(&m.id).map(|e| e.status);
        let at_or_before_from = match (&opts.from, m.introduced_version()) {
            (Some(from), Some(v)) => v <= from,
            _ => false,
        };
        let (v, basis, mut reason) = verdict(journal, report.state, at_or_before_from);
        if v == Verdict::NotApplicable {
            let mut colls: Vec<&str> = report
                .checks
                .iter()
                .map(|c| c.collection.as_str())
                .collect();
            colls.dedup();
            reason = format!("absent or empty: {}", colls.join(", "));
        }
        let pending: Vec<&CheckReport> = report
            .checks
            .iter()
            .filter(|c| c.state == FpState::Pending)
            .collect();
        let evidence = Evidence {
            // None when nothing is pending, or when a count failed (the example still proves it).
            pending_count: if pending.is_empty() {
                None
            } else {
                pending.iter().map(|c| c.count).sum::<Option<u64>>()
            },
            at_least: pending
                .iter()
                .any(|c| c.count.is_none_or(|n| n >= opts.count_limit)),
            example_ids: pending
                .iter()
                .filter_map(|c| c.example_id.clone())
                .collect(),
        };
        let data_reason = report.reason.clone().or_else(|| {
            let reasons: Vec<String> = report
                .checks
                .iter()
                .filter(|c| c.state == FpState::Unknown)
                .filter_map(|c| c.reason.as_ref().map(|r| format!("{}: {r}", c.collection)))
                .collect();
            (!reasons.is_empty()).then(|| reasons.join("; "))
        });
        rows.push(MigrationState {
            id: m.id.clone(),
            title: m.title.clone(),
            release: m.introduced_version().map(|v| v.to_string()),
            unreleased_ref: match &m.introduced {
                Introduced::Unreleased { git_ref } => Some(git_ref.clone()),
                Introduced::Release(_) => None,
            },
            journal,
            data: report.state,
            data_reason,
            evidence,
            verdict: v,
            basis,
            reason,
            checks: report.checks,
            elapsed_ms,
        });
    }

    let nothing_to_migrate = is_empty_database(&migrations, &rows, &entries);
    if nothing_to_migrate {
        for row in rows.iter_mut().filter(|r| r.verdict == Verdict::Unknown) {
            row.verdict = Verdict::NotApplicable;
            row.basis = "data";
            row.reason = "no data check of its own, but the database holds none of the data any check reads (empty database)".to_string();
        }
    }

    let (detected, looks_like, gaps) = derive_versions(map, &opts.to, &rows);
    let mut counts = Counts::default();
    for r in &rows {
        match r.verdict {
            Verdict::Applied => counts.applied += 1,
            Verdict::Pending => counts.pending += 1,
            Verdict::NotApplicable => counts.not_applicable += 1,
            Verdict::Unknown => counts.unknown += 1,
            Verdict::Regressed => counts.regressed += 1,
            Verdict::Incomplete => counts.incomplete += 1,
            Verdict::AssumedApplied => counts.assumed_applied += 1,
        }
    }
    Ok(DetectReport {
        schema: DETECT_SCHEMA,
        project: map.project.name.clone(),
        map: map.source.clone(),
        database: store.redacted_uri.clone(),
        from: opts.from.as_ref().map(display),
        target: Target {
            version: display(&opts.to),
            source: opts.to_source.clone(),
        },
        detected: detected.map(|v| display(&v)),
        looks_like: looks_like.map(|v| display(&v)),
        gaps,
        nothing_to_migrate,
        journal_error,
        counts,
        time_limit_ms: opts.time_limit.as_millis() as u64,
        count_limit: opts.count_limit,
        elapsed_ms: started.elapsed().as_millis() as u64,
        migrations: rows,
    })
}

/// Every filter/pipeline check found its collection absent or empty, every `absent` check
/// found its collection gone, and upstep never recorded anything here.
fn is_empty_database(
    migrations: &[&Migration],
    rows: &[MigrationState],
    entries: &BTreeMap<String, JournalEntry>,
) -> bool {
    let mut any_check = false;
    for (m, row) in migrations.iter().zip(rows) {
        let Fingerprint::Checks(checks) = &m.fingerprint else {
            continue;
        };
        for (check, report) in checks.iter().zip(&row.checks) {
            any_check = true;
            let nothing = match check.kind {
                CheckKind::Absent => report.state == FpState::Applied,
                _ => report.state == FpState::NotApplicable,
            };
            if !nothing {
                return false;
            }
        }
        if row.checks.len() != checks.len() {
            return false; // the checks did not run (e.g. collections could not be listed)
        }
    }
    any_check && entries.is_empty()
}

/// Applied on positive evidence: the journal says so, or a check read documents and found
/// none pending (not merely an absent or empty collection).
fn positive(r: &MigrationState) -> bool {
    matches!(r.verdict, Verdict::Applied | Verdict::Regressed)
        && (r.basis == "journal" || r.checks.iter().any(|c| c.state == FpState::Applied))
}

/// The detected version, the version the data looks like, and the gaps between them.
///
/// The data looks like release R (newer than the detected version D) when R's own migrations
/// all count as applied, at least one on positive evidence, and across (D, R] the migrations
/// applied on positive evidence outnumber those not applied. The majority rule keeps a check
/// that is merely satisfied on older data (e.g. "no duplicate subscribers" on a database that
/// never had any) from making a v0.16 database look like v2.0 with every step between as gaps.
fn derive_versions(
    map: &ReleaseMap,
    to: &Version,
    rows: &[MigrationState],
) -> (Option<Version>, Option<Version>, Vec<Gap>) {
    let released = |r: &MigrationState| r.release.as_ref().and_then(|v| Version::parse(v).ok());
    let releases: Vec<&Version> = map
        .releases
        .iter()
        .map(|r| &r.version)
        .filter(|v| *v <= to)
        .collect();
    let own = |v: &Version| -> Vec<&MigrationState> {
        rows.iter()
            .filter(|r| released(r).as_ref() == Some(v))
            .collect()
    };
    let mut detected: Option<Version> = None;
    for v in &releases {
        if own(v).iter().all(|r| r.verdict.counts_as_applied()) {
            detected = Some((*v).clone());
        } else {
            break;
        }
    }
    let after_detected =
        |r: &MigrationState| released(r).is_some_and(|v| detected.as_ref().is_none_or(|d| &v > d));
    let mut looks_like: Option<Version> = None;
    for v in releases
        .iter()
        .filter(|v| detected.as_ref().is_none_or(|d| **v > d))
    {
        let mine = own(v);
        if mine.is_empty()
            || !mine.iter().all(|r| r.verdict.counts_as_applied())
            || !mine.iter().any(|r| positive(r))
        {
            continue;
        }
        let span: Vec<&MigrationState> = rows
            .iter()
            .filter(|r| after_detected(r) && released(r).is_some_and(|rv| &rv <= *v))
            .collect();
        let for_it = span.iter().filter(|r| positive(r)).count();
        let against = span
            .iter()
            .filter(|r| !r.verdict.counts_as_applied())
            .count();
        if for_it > against {
            looks_like = Some((*v).clone());
        }
    }
    let gaps = match &looks_like {
        Some(l) => rows
            .iter()
            .filter(|r| !r.verdict.counts_as_applied())
            .filter_map(|r| {
                let v = released(r)?;
                (&v <= l).then(|| Gap {
                    id: r.id.clone(),
                    release: display(&v),
                    verdict: r.verdict,
                    newer_release: display(l),
                })
            })
            .collect(),
        None => Vec::new(),
    };
    (detected, looks_like, gaps)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_journal_wins_over_the_data() {
        use FpState::*;
        assert_eq!(
            verdict(Some(StepStatus::Succeeded), Pending, false).0,
            Verdict::Regressed
        );
        assert_eq!(
            verdict(Some(StepStatus::MarkedApplied), Unknown, false).0,
            Verdict::Applied
        );
        assert_eq!(
            verdict(Some(StepStatus::Pending), Applied, false).0,
            Verdict::Pending
        );
        assert_eq!(
            verdict(Some(StepStatus::Failed), Applied, false).0,
            Verdict::Incomplete
        );
        assert_eq!(
            verdict(Some(StepStatus::Skipped), Pending, false).0,
            Verdict::Pending
        );
        assert_eq!(verdict(None, Unknown, false).0, Verdict::Unknown);
        assert_eq!(verdict(None, Unknown, true).0, Verdict::AssumedApplied);
        assert_eq!(
            verdict(None, Pending, true).0,
            Verdict::Pending,
            "data showing pending beats --from"
        );
    }

    #[test]
    fn unknown_and_failed_never_count_as_applied() {
        for v in [Verdict::Unknown, Verdict::Pending, Verdict::Incomplete] {
            assert!(!v.counts_as_applied());
        }
    }

    #[test]
    fn evidence_says_at_least_when_capped() {
        let e = Evidence {
            pending_count: Some(1000),
            at_least: true,
            example_ids: vec![serde_json::json!({ "$oid": "65f000000000000000000001" })],
        };
        assert_eq!(
            e.describe(),
            "at least 1000 pending, e.g. _id 65f000000000000000000001"
        );
        let e = Evidence {
            pending_count: Some(2),
            at_least: false,
            example_ids: vec![serde_json::json!("a")],
        };
        assert_eq!(e.describe(), "2 pending, e.g. _id \"a\"");
    }
}
