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
}

impl FpState {
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

/// Any pending wins; then any unknown; all not-applicable stays so; else applied.
fn combine(states: impl Iterator<Item = FpState>) -> FpState {
    let states: Vec<FpState> = states.collect();
    if states.contains(&FpState::Pending) {
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

fn failure_reason(e: &mongodb::error::Error, collection: &str) -> String {
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
    let outcome: Result<(FpState, Option<Bson>, Option<u64>), String> = match &check.kind {
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
        CheckKind::Filter(filter) => run_filter(db, &check.collection, filter, opts).await,
        CheckKind::Pipeline(pipeline) => run_pipeline(db, &check.collection, pipeline, opts).await,
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

async fn is_empty(db: &Database, collection: &str, opts: EvalOptions) -> Result<bool, String> {
    db.collection::<Document>(collection)
        .find_one(doc! {})
        .projection(doc! { "_id": 1 })
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
) -> Result<(FpState, Option<Bson>, Option<u64>), String> {
    let coll = db.collection::<Document>(collection);
    let first = coll
        .find_one(filter.clone())
        .projection(doc! { "_id": 1 })
        .max_time(opts.time_limit)
        .await
        .map_err(|e| failure_reason(&e, collection))?;
    match first {
        Some(doc) => {
            // The first hit already proves pending: a count that fails (e.g. times out on a
            // huge collection) only loses the evidence's size, never the verdict.
            let count = match opts.count_limit {
                Some(limit) => match coll
                    .count_documents(filter.clone())
                    .limit(limit)
                    .max_time(opts.time_limit)
                    .await
                {
                    Ok(n) => Some(n),
                    Err(e) => {
                        tracing::debug!(
                            "counting pending documents in {collection} failed: {}",
                            failure_reason(&e, collection)
                        );
                        None
                    }
                },
                None => None,
            };
            Ok((FpState::Pending, doc.get("_id").cloned(), count))
        }
        None if is_empty(db, collection, opts).await? => Ok((FpState::NotApplicable, None, None)),
        None => Ok((
            FpState::Applied,
            None,
            Some(0).filter(|_| opts.count_limit.is_some()),
        )),
    }
}

async fn run_pipeline(
    db: &Database,
    collection: &str,
    pipeline: &[Document],
    opts: EvalOptions,
) -> Result<(FpState, Option<Bson>, Option<u64>), String> {
    let coll = db.collection::<Document>(collection);
    let mut stages = pipeline.to_vec();
    // Counting needs every output document; otherwise the map's pipelines end in $limit 1.
    let count_limit = opts.count_limit;
    if let Some(limit) = count_limit {
        if stages.last().is_some_and(|s| s.contains_key("$limit")) {
            stages.pop();
        }
        stages.push(doc! { "$limit": limit as i64 });
    }
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
        None if is_empty(db, collection, opts).await? => Ok((FpState::NotApplicable, None, None)),
        None => Ok((FpState::Applied, None, count_limit.map(|_| 0))),
    }
}
