//! Timings for scripts/bench.sh's `detect` section: upstep's fingerprint checks on a large
//! database versus the server doing the same work alone, measured in the same run.
//!
//!   bench_detect seed URI/db COUNT pending|migrated
//!       COUNT Novu-shaped `messages` (~200 bytes) and COUNT `subscribers`, all still needing
//!       (pending) or all past (migrated) seen-read-support, expire-at,
//!       normalize-message-cta-action and remove-duplicated-subscribers.
//!   bench_detect time URI/db
//!       per check: upstep's evaluation as the executor runs it (stop at the first hit) and as
//!       `detect` runs it (counting up to 1000), the yardstick (a bare countDocuments with the
//!       same filter, or the same pipeline run alone to its end), and a whole `detect`.
//!
//!   bench_detect shapes URI/db
//!       which part of a filter check's query shape costs what on `messages` (server side).
//!
//! Prints one `key=value` line per measurement (median of 5 runs, milliseconds).

use std::time::{Duration, Instant};

use bson::{doc, oid::ObjectId, DateTime, Document};
use futures_util::StreamExt;
use mongodb::Client;
use upstep::detect::{DetectOptions, TargetSource};
use upstep::release_map::{CheckKind, Fingerprint};
use upstep::store::fingerprint::{evaluate, EvalOptions, FpState};
use upstep::store::Store;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

const RUNS: usize = 5;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), BoxError> {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: bench_detect seed URI/db COUNT pending|migrated | time URI/db";
    let (mode, uri) = match (args.get(1), args.get(2)) {
        (Some(m), Some(u)) => (m.as_str(), u.as_str()),
        _ => return Err(usage.into()),
    };
    match mode {
        "seed" => {
            let count: usize = args.get(3).ok_or(usage)?.parse()?;
            let pending = match args.get(4).map(String::as_str) {
                Some("pending") => true,
                Some("migrated") => false,
                _ => return Err(usage.into()),
            };
            seed(uri, count, pending).await
        }
        "time" => time(uri).await,
        "shapes" => shapes(uri).await,
        _ => Err(usage.into()),
    }
}

fn message(i: usize, env: ObjectId, pending: bool) -> Document {
    let mut d = doc! {
        "_environmentId": env,
        "_subscriberId": ObjectId::new(),
        "channel": "in_app",
        "content": format!("Notification number {i} for you"),
        "transactionId": format!("tx-{i:012}"),
        "createdAt": DateTime::now(),
    };
    if pending {
        d.insert("cta", doc! { "type": "redirect", "action": "" });
    } else {
        d.insert("seen", false);
        d.insert("read", false);
        d.insert("expireAt", DateTime::now());
        d.insert(
            "cta",
            doc! { "type": "redirect", "action": { "status": "done" } },
        );
    }
    d
}

async fn seed(uri: &str, count: usize, pending: bool) -> Result<(), BoxError> {
    let client = Client::with_uri_str(uri).await?;
    let db = client
        .default_database()
        .ok_or("the URI must name a database")?;
    let env = ObjectId::new();
    let started = Instant::now();
    let messages = db.collection::<Document>("messages");
    let subscribers = db.collection::<Document>("subscribers");
    let batch = 10_000;
    let mut size = 0usize;
    for start in (0..count).step_by(batch) {
        let end = (start + batch).min(count);
        let docs: Vec<Document> = (start..end).map(|i| message(i, env, pending)).collect();
        if start == 0 {
            size = bson::to_vec(&docs[0])?.len() + 12 + 5; // plus the _id the driver adds
        }
        messages.insert_many(docs).await?;
        // Pending: every subscriberId twice in one environment; migrated: each once.
        let subs: Vec<Document> = (start..end)
            .map(|i| {
                let sid = if pending { i / 2 } else { i };
                doc! { "_environmentId": env, "subscriberId": format!("sub-{sid}"), "email": format!("user{sid}@example.com") }
            })
            .collect();
        subscribers.insert_many(subs).await?;
    }
    println!(
        "seeded={count} state={} message_bytes={size} seconds={:.1}",
        if pending { "pending" } else { "migrated" },
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

async fn timed<F, Fut, T>(mut f: F) -> Result<(f64, T), BoxError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, BoxError>>,
{
    f().await?; // warm once
    let mut times = Vec::with_capacity(RUNS);
    let mut last = None;
    for _ in 0..RUNS {
        let t = Instant::now();
        last = Some(f().await?);
        times.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    Ok((median(times), last.ok_or("no run")?))
}

async fn time(uri: &str) -> Result<(), BoxError> {
    let store = Store::connect(uri).await?;
    let db = store.db.clone();
    let map = upstep::release_map::load(None)?;
    let limit = Duration::from_secs(600);
    for id in [
        "seen-read-support",
        "expire-at",
        "normalize-message-cta-action",
        "remove-duplicated-subscribers",
    ] {
        let m = map.migration(id).ok_or("migration not in the map")?;
        let Fingerprint::Checks(checks) = &m.fingerprint else {
            return Err("no checks".into());
        };
        let check = &checks[0];
        let fp = m.fingerprint.clone();
        let (first_hit, state) = timed(|| {
            let (db, fp) = (db.clone(), fp.clone());
            async move {
                let opts = EvalOptions {
                    time_limit: limit,
                    count_limit: None,
                };
                Ok::<FpState, BoxError>(evaluate(&db, &fp, opts).await.state)
            }
        })
        .await?;
        let (counted, _) = timed(|| {
            let (db, fp) = (db.clone(), fp.clone());
            async move {
                let opts = EvalOptions {
                    time_limit: limit,
                    count_limit: Some(1000),
                };
                Ok::<FpState, BoxError>(evaluate(&db, &fp, opts).await.state)
            }
        })
        .await?;
        let coll = db.collection::<Document>(&check.collection);
        let (yardstick, what) = match &check.kind {
            CheckKind::Filter(filter) => {
                let (ms, _) = timed(|| {
                    let (coll, filter) = (coll.clone(), filter.clone());
                    async move { Ok::<u64, BoxError>(coll.count_documents(filter).await?) }
                })
                .await?;
                (ms, "count_documents")
            }
            CheckKind::Pipeline(pipeline) => {
                // The server running the same pipeline alone, to its end.
                let (ms, _) = timed(|| {
                    let (coll, pipeline) = (coll.clone(), pipeline.clone());
                    async move {
                        let mut cursor = coll.aggregate(pipeline).await?;
                        let mut n = 0u64;
                        while let Some(d) = cursor.next().await {
                            d?;
                            n += 1;
                        }
                        Ok::<u64, BoxError>(n)
                    }
                })
                .await?;
                (ms, "aggregate")
            }
            CheckKind::Absent | CheckKind::ToolJournal { .. } => (0.0, "-"),
        };
        println!(
            "check={id} state={state:?} upstep_first_hit_ms={first_hit:.1} upstep_counted_ms={counted:.1} yardstick_{what}_ms={yardstick:.1}"
        );
    }
    let to = map.newest_release().ok_or("no release")?.version.clone();
    let (whole, report) = timed(|| {
        let (map, store, to) = (map.clone(), store.clone(), to.clone());
        async move {
            let opts = DetectOptions {
                from: None,
                to,
                to_source: TargetSource::NewestInMap,
                time_limit: limit,
                count_limit: 1000,
                include_unreleased: false,
            };
            Ok::<_, BoxError>(upstep::detect::detect(&map, &store, opts, &|_, _| {}).await?)
        }
    })
    .await?;
    println!(
        "whole_detect_ms={whole:.1} detected={} pending={} applied={}",
        report.detected.as_deref().unwrap_or("-"),
        report.counts.pending,
        report.counts.applied
    );
    Ok(())
}

async fn shapes(uri: &str) -> Result<(), BoxError> {
    let client = Client::with_uri_str(uri).await?;
    let db = client
        .default_database()
        .ok_or("the URI must name a database")?;
    let coll = db.collection::<Document>("messages");
    let filter = doc! { "seen": { "$exists": false } };
    let max = Duration::from_secs(600);
    macro_rules! shape {
        ($name:expr, $body:expr) => {{
            let (ms, _) = timed(|| {
                let (coll, filter) = (coll.clone(), filter.clone());
                async move { Ok::<_, BoxError>($body(coll, filter).await?) }
            })
            .await?;
            println!("shape={} ms={ms:.1}", $name);
        }};
    }
    shape!(
        "count_documents",
        |c: mongodb::Collection<Document>, f| async move { c.count_documents(f).await }
    );
    shape!(
        "find_one",
        |c: mongodb::Collection<Document>, f| async move { c.find_one(f).await.map(|d| d.is_some()) }
    );
    shape!(
        "find_one_projection",
        |c: mongodb::Collection<Document>, f| async move {
            c.find_one(f)
                .projection(doc! { "_id": 1 })
                .await
                .map(|d| d.is_some())
        }
    );
    shape!(
        "find_one_projection_maxtime",
        |c: mongodb::Collection<Document>, f| async move {
            c.find_one(f)
                .projection(doc! { "_id": 1 })
                .max_time(max)
                .await
                .map(|d| d.is_some())
        }
    );
    shape!("find_limit1_batch1", |c: mongodb::Collection<Document>,
                                  f| async move {
        let mut cur = c
            .find(f)
            .projection(doc! { "_id": 1 })
            .limit(1)
            .batch_size(1)
            .await?;
        Ok::<bool, mongodb::error::Error>(cur.next().await.transpose()?.is_some())
    });
    shape!(
        "find_one_empty_filter",
        |c: mongodb::Collection<Document>, _f| async move {
            c.find_one(doc! {}).await.map(|d| d.is_some())
        }
    );
    shape!(
        "find_one_equality_all_match",
        |c: mongodb::Collection<Document>, _f| async move {
            c.find_one(doc! { "channel": "in_app" })
                .await
                .map(|d| d.is_some())
        }
    );
    shape!(
        "aggregate_match_limit1",
        |c: mongodb::Collection<Document>, f| async move {
            let mut cur = c
                .aggregate(vec![doc! { "$match": f }, doc! { "$limit": 1 }])
                .await?;
            Ok::<bool, mongodb::error::Error>(cur.next().await.transpose()?.is_some())
        }
    );
    shape!(
        "estimated_document_count",
        |c: mongodb::Collection<Document>, _f| async move { c.estimated_document_count().await }
    );
    shape!(
        "find_one_id_hint",
        |c: mongodb::Collection<Document>, f| async move {
            c.find_one(f)
                .hint(mongodb::options::Hint::Keys(doc! { "_id": 1 }))
                .await
                .map(|d| d.is_some())
        }
    );
    shape!(
        "find_one_natural_hint",
        |c: mongodb::Collection<Document>, f| async move {
            c.find_one(f)
                .hint(mongodb::options::Hint::Keys(doc! { "$natural": 1 }))
                .await
                .map(|d| d.is_some())
        }
    );
    let (ms, _) = timed(|| {
        let db = db.clone();
        async move { Ok::<_, BoxError>(db.list_collection_names().await?.len()) }
    })
    .await?;
    println!("shape=list_collection_names ms={ms:.1}");
    Ok(())
}
