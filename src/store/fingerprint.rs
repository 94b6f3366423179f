//! The fingerprint evaluator: reads the data for evidence that a migration is still pending.
//!
//! Each check stops at the first pending document (`limit 1`, `_id` only), carries a
//! server-side time limit, and runs concurrently with the others. A check that cannot give an
//! answer (rejected by the server, timed out, not permitted) is `Unknown` with its reason:
//! never `Applied`, because "applied" is what lets upstep skip or end a script.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use bson::{doc, Bson, Document};
use futures_util::future::join_all;
use futures_util::StreamExt;
use mongodb::Database;
use serde::Serialize;

use super::error_code;
use crate::release_map::{Check, CheckKind, Fingerprint};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FpState {
    /// Nothing pending: the migration's work is in the data.
    Applied,
    /// Documents still need the migration.
    Pending,
    /// The collections involved are absent or empty: nothing to migrate.
    NotApplicable,
    /// No answer: no check, or the check failed; see the reason.
    Unknown,
    /// The migration tool's own journal records a failed run of it.
    Failed,
}

impl FpState {
    /// The name in JSON events and docs (the same as its serde name).
    pub fn as_str(self) -> &'static str {
        match self {
            FpState::Applied => "applied",
            FpState::Pending => "pending",
            FpState::NotApplicable => "not-applicable",
            FpState::Unknown => "unknown",
            FpState::Failed => "failed",
        }
    }

    /// Nothing left to do according to the data.
    pub fn nothing_pending(self) -> bool {
        matches!(self, FpState::Applied | FpState::NotApplicable)
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct CheckReport {
    pub collection: String,
    pub kind: &'static str,
    pub state: FpState,
    /// An example pending document's `_id` (relaxed Extended JSON).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub example_id: Option<serde_json::Value>,
    /// How many pending documents were counted (capped: see `count_limit`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub count: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub elapsed_ms: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct FingerprintReport {
    pub state: FpState,
    pub checks: Vec<CheckReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[derive(Debug, Clone, Copy)]
pub struct EvalOptions {
    /// Server-side limit per query (`maxTimeMS`).
    pub time_limit: Duration,
    /// Count pending documents up to this many (None: stop at the first one).
    pub count_limit: Option<u64>,
}

impl Default for EvalOptions {
    fn default() -> Self {
        EvalOptions {
            time_limit: Duration::from_secs(30),
            count_limit: None,
        }
    }
}

/// How many migrations' data checks read the database at once (each runs its own few checks
/// concurrently): a production database keeps serving its users meanwhile. Every pass over
/// many migrations (decisions, detection) uses it.
pub const MIGRATIONS_AT_ONCE: usize = 4;

/// Evaluate a migration's fingerprint against the database.
pub async fn evaluate(
    db: &Database,
    fingerprint: &Fingerprint,
    opts: EvalOptions,
) -> FingerprintReport {
    let checks = match fingerprint {
        Fingerprint::Unknown { reason } => {
            return FingerprintReport {
                state: FpState::Unknown,
                checks: Vec::new(),
                reason: Some(format!("no reliable data check: {reason}")),
            }
        }
        Fingerprint::Checks(checks) => checks,
    };
    // Counted by tests (each read must serve one decision, not several passes).
    tracing::debug!(target: "upstep::data_check", checks = checks.len(), "reading a data check");
    let existing = match db.list_collection_names().await {
        Ok(names) => names.into_iter().collect::<HashSet<_>>(),
        Err(e) => {
            let reason = match error_code(&e) {
                Some(13) => format!("not permitted to list the collections of {}", db.name()),
                _ => format!("cannot list collections: {}", first_line(&e)),
            };
            return FingerprintReport {
                state: FpState::Unknown,
                checks: Vec::new(),
                reason: Some(reason),
            };
        }
    };
    let reports = join_all(
        checks
            .iter()
            .map(|c| evaluate_check(db, c, &existing, opts)),
    )
    .await;
    FingerprintReport {
        state: combine(reports.iter().map(|r| r.state)),
        checks: reports,
        reason: None,
    }
}

/// A failed run (per the tool's journal) wins; then any pending; then any unknown; all
/// not-applicable stays so; else applied.
fn combine(states: impl Iterator<Item = FpState>) -> FpState {
    let states: Vec<FpState> = states.collect();
    if states.contains(&FpState::Failed) {
        FpState::Failed
    } else if states.contains(&FpState::Pending) {
        FpState::Pending
    } else if states.contains(&FpState::Unknown) || states.is_empty() {
        FpState::Unknown
    } else if states.iter().all(|s| *s == FpState::NotApplicable) {
        FpState::NotApplicable
    } else {
        FpState::Applied
    }
}

fn first_line(e: &mongodb::error::Error) -> String {
    e.to_string().lines().next().unwrap_or("").to_string()
}

pub(crate) fn failure_reason(e: &mongodb::error::Error, collection: &str) -> String {
    match error_code(e) {
        Some(50) => "the check exceeded its time limit".to_string(),
        Some(13) => format!("not permitted to read {collection}"),
        Some(code) => format!(
            "the server rejected the check (code {code}): {}",
            first_line(e)
        ),
        None => format!("the check failed: {}", first_line(e)),
    }
}

async fn evaluate_check(
    db: &Database,
    check: &Check,
    existing: &HashSet<String>,
    opts: EvalOptions,
) -> CheckReport {
    let started = Instant::now();
    let kind = match check.kind {
        CheckKind::Filter(_) => "filter",
        CheckKind::Pipeline(_) => "pipeline",
        CheckKind::Absent => "absent",
        CheckKind::ToolJournal { .. } => "journal",
    };
    let mut report = CheckReport {
        collection: check.collection.clone(),
        kind,
        state: FpState::Unknown,
        example_id: None,
        count: None,
        reason: None,
        elapsed_ms: 0,
    };
    let exists = existing.contains(&check.collection);
    let outcome: Outcome = match &check.kind {
        // The tool's journal is the applied state: empty or absent means "never ran", not
        // "nothing to migrate".
        CheckKind::ToolJournal { tool, key } => {
            match super::tool_journal::read(db, &check.collection, exists, *tool, key, opts).await {
                Ok(read) => {
                    report.reason = read.reason;
                    Ok((read.state, None, None))
                }
                Err(reason) => Err(reason),
            }
        }
        CheckKind::Absent => Ok((
            if exists {
                FpState::Pending
            } else {
                FpState::Applied
            },
            None,
            None,
        )),
        _ if !exists => Ok((FpState::NotApplicable, None, None)),
        CheckKind::Filter(filter) => {
            with_emptiness(
                db,
                &check.collection,
                opts,
                run_filter(db, &check.collection, filter, opts),
            )
            .await
        }
        CheckKind::Pipeline(pipeline) => {
            with_emptiness(
                db,
                &check.collection,
                opts,
                run_pipeline(db, &check.collection, pipeline, opts),
            )
            .await
        }
    };
    match outcome {
        Ok((state, example, count)) => {
            report.state = state;
            report.example_id = example.map(|b| b.into_relaxed_extjson());
            report.count = count;
            if state == FpState::NotApplicable {
                report.reason = Some(format!(
                    "collection {} is absent or empty",
                    check.collection
                ));
            }
        }
        Err(reason) => report.reason = Some(reason),
    }
    report.elapsed_ms = started.elapsed().as_millis() as u64;
    report
}

type Outcome = Result<(FpState, Option<Bson>, Option<u64>), String>;

/// A check that finds nothing is "not applicable" when its collection is empty. Whether it is
/// empty is asked at the same time as the check runs, not after it: on a server where even
/// that costs a scan (the test server), the two overlap instead of adding up.
async fn with_emptiness(
    db: &Database,
    collection: &str,
    opts: EvalOptions,
    check: impl std::future::Future<Output = Outcome>,
) -> Outcome {
    let (outcome, empty) = futures_util::future::join(check, is_empty(db, collection, opts)).await;
    match outcome? {
        (FpState::Applied, _, _) if empty? => Ok((FpState::NotApplicable, None, None)),
        other => Ok(other),
    }
}

/// Whether the collection holds no document. The metadata count answers first (it costs no
/// scan); only when it says 0 is that confirmed by reading, since a stale count must never
/// turn a collection with documents into "not applicable".
async fn is_empty(db: &Database, collection: &str, opts: EvalOptions) -> Result<bool, String> {
    let coll = db.collection::<Document>(collection);
    if let Ok(n) = coll
        .estimated_document_count()
        .max_time(opts.time_limit)
        .await
    {
        if n > 0 {
            return Ok(false);
        }
    }
    coll.find_one(doc! {})
        .projection(id_only())
        .max_time(opts.time_limit)
        .await
        .map(|d| d.is_none())
        .map_err(|e| failure_reason(&e, collection))
}

async fn run_filter(
    db: &Database,
    collection: &str,
    filter: &Document,
    opts: EvalOptions,
) -> Outcome {
    let coll = db.collection::<Document>(collection);
    let (first, count) = match opts.count_limit {
        // One query gives both the example and the capped count: `_id`s only, up to the cap.
        Some(limit) => {
            let mut cursor = coll
                .find(filter.clone())
                .projection(id_only())
                .limit(limit.min(i64::MAX as u64) as i64)
                .batch_size(limit.clamp(1, 10_000) as u32)
                .max_time(opts.time_limit)
                .await
                .map_err(|e| failure_reason(&e, collection))?;
            let mut first: Option<Document> = None;
            let mut n = 0u64;
            while let Some(next) = cursor.next().await {
                match next {
                    Ok(doc) => {
                        n += 1;
                        if first.is_none() {
                            first = Some(doc);
                        }
                    }
                    // A hit already proves pending: a later failure (e.g. the time limit on a
                    // huge collection) only loses the evidence's size, never the verdict.
                    Err(e) if first.is_some() => {
                        tracing::debug!(
                            "counting pending documents in {collection} stopped: {}",
                            failure_reason(&e, collection)
                        );
                        return Ok((
                            FpState::Pending,
                            first.and_then(|d| d.get("_id").cloned()),
                            None,
                        ));
                    }
                    Err(e) => return Err(failure_reason(&e, collection)),
                }
            }
            (first, Some(n))
        }
        None => (
            coll.find_one(filter.clone())
                .projection(id_only())
                .max_time(opts.time_limit)
                .await
                .map_err(|e| failure_reason(&e, collection))?,
            None,
        ),
    };
    match first {
        Some(doc) => Ok((FpState::Pending, doc.get("_id").cloned(), count)),
        None => Ok((FpState::Applied, None, count)),
    }
}

/// The projection every check reads with: `_id` only.
pub(crate) fn id_only() -> Document {
    doc! { "_id": 1 }
}

/// The stages sent for a map pipeline: counting needs every output document (up to the
/// limit); otherwise the map's own pipeline, which ends in `$limit 1`.
pub(crate) fn stages_to_send(pipeline: &[Document], count_limit: Option<u64>) -> Vec<Document> {
    let mut stages = pipeline.to_vec();
    if let Some(limit) = count_limit {
        if stages.last().is_some_and(|s| s.contains_key("$limit")) {
            stages.pop();
        }
        stages.push(doc! { "$limit": limit as i64 });
    }
    stages
}

async fn run_pipeline(
    db: &Database,
    collection: &str,
    pipeline: &[Document],
    opts: EvalOptions,
) -> Outcome {
    let coll = db.collection::<Document>(collection);
    let count_limit = opts.count_limit;
    let stages = stages_to_send(pipeline, count_limit);
    let mut cursor = coll
        .aggregate(stages)
        .max_time(opts.time_limit)
        .await
        .map_err(|e| failure_reason(&e, collection))?;
    let mut first: Option<Document> = None;
    let mut count = 0u64;
    while let Some(next) = cursor.next().await {
        let doc = next.map_err(|e| failure_reason(&e, collection))?;
        count += 1;
        if first.is_none() {
            first = Some(doc);
        }
        if count_limit.is_none() {
            break;
        }
    }
    match first {
        Some(doc) => Ok((
            FpState::Pending,
            doc.get("_id").cloned(),
            count_limit.map(|_| count),
        )),
        None => Ok((FpState::Applied, None, count_limit.map(|_| 0))),
    }
}

#[cfg(test)]
mod state_name_tests {
    #[test]
    fn state_names_are_the_serde_names_the_docs_list() {
        use super::FpState::*;
        for state in [Applied, Pending, NotApplicable, Unknown, Failed] {
            assert_eq!(
                serde_json::to_value(state).unwrap(),
                serde_json::Value::from(state.as_str())
            );
        }
        assert_eq!(NotApplicable.as_str(), "not-applicable");
    }
}
