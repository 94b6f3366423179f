//! Yardsticks for scripts/bench-backup.sh: seed a collection, read it with a bare driver cursor,
//! and insertMany a dump file into a fresh database, each timed.
//!
//!   bench_backup seed   URI/db COUNT      1 collection `events` of COUNT ~290-byte documents
//!   bench_backup read   URI/db            bare cursor read of `events` (driver defaults), then
//!                                         the same with upstep's query shape (_id order, 10k batches)
//!   bench_backup insert URI/db FILE.bson  bare insertMany of FILE's documents, 16 MB batches
//!
//! Prints one `key=value` line per measurement for the script to collect.

use std::io::{BufReader, Read};
use std::time::Instant;

use bson::{doc, oid::ObjectId, DateTime, Document, RawDocumentBuf};
use mongodb::{Client, Collection};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), BoxError> {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: bench_backup seed|read|insert URI/db [COUNT|FILE]";
    let (mode, uri) = match (args.get(1), args.get(2)) {
        (Some(m), Some(u)) => (m.as_str(), u.as_str()),
        _ => return Err(usage.into()),
    };
    let client = Client::with_uri_str(uri).await?;
    let db = client
        .default_database()
        .ok_or("the URI must name a database")?;
    match mode {
        "seed" => {
            let count: usize = args.get(3).ok_or(usage)?.parse()?;
            seed(&db.collection("events"), count).await
        }
        "read" => {
            let coll = db.collection::<RawDocumentBuf>("events");
            read(&client, &coll, Shape::default(), "bare_read").await
        }
        "shapes" => {
            // Which part of upstep's query shape costs what (server side).
            let coll = db.collection::<RawDocumentBuf>("events");
            let shapes = [
                ("plain", Shape::default()),
                (
                    "id_order",
                    Shape {
                        sort: true,
                        ..Shape::default()
                    },
                ),
                (
                    "batch_10k",
                    Shape {
                        batch: true,
                        ..Shape::default()
                    },
                ),
                (
                    "snapshot",
                    Shape {
                        snapshot: true,
                        ..Shape::default()
                    },
                ),
                (
                    "all_three",
                    Shape {
                        sort: true,
                        batch: true,
                        snapshot: true,
                    },
                ),
            ];
            for (name, shape) in shapes {
                read(&client, &coll, shape, name).await?;
            }
            Ok(())
        }
        "insert" => insert(&db.collection("events"), args.get(3).ok_or(usage)?).await,
        _ => Err(usage.into()),
    }
}

/// Novu-message-like documents of ~290 bytes.
async fn seed(coll: &Collection<Document>, count: usize) -> Result<(), BoxError> {
    let started = Instant::now();
    let env = ObjectId::new();
    let mut batch = Vec::with_capacity(10_000);
    for i in 0..count {
        batch.push(doc! {
            "_id": ObjectId::new(),
            "_environmentId": env,
            "_subscriberId": format!("subscriber-{:08}", i % 50_000),
            "channel": if i % 3 == 0 { "email" } else { "in_app" },
            "content": format!("Your order {i} has shipped and will arrive soon. Track it online."),
            "seen": i % 4 == 0,
            "payload": { "orderId": i as i64, "amount": (i % 1000) as f64 * 1.25, "tags": ["a", "b"] },
            "createdAt": DateTime::from_millis(1_700_000_000_000 + i as i64),
        });
        if batch.len() == 10_000 {
            coll.insert_many(std::mem::take(&mut batch)).await?;
        }
    }
    if !batch.is_empty() {
        coll.insert_many(batch).await?;
    }
    println!("seed_seconds={:.2}", started.elapsed().as_secs_f64());
    Ok(())
}

#[derive(Default, Clone, Copy)]
struct Shape {
    sort: bool,
    batch: bool,
    snapshot: bool,
}

async fn read(
    client: &Client,
    coll: &Collection<RawDocumentBuf>,
    shape: Shape,
    key: &str,
) -> Result<(), BoxError> {
    let started = Instant::now();
    let mut find = coll.find(doc! {});
    if shape.sort {
        find = find.sort(doc! { "_id": 1 });
    }
    if shape.batch {
        find = find.batch_size(10_000);
    }
    let (mut docs, mut bytes) = (0u64, 0u64);
    if shape.snapshot {
        let mut session = client.start_session().snapshot(true).await?;
        let mut cursor = find.session(&mut session).await?;
        while cursor.advance(&mut session).await? {
            docs += 1;
            bytes += cursor.current().as_bytes().len() as u64;
        }
    } else {
        let mut cursor = find.await?;
        while cursor.advance().await? {
            docs += 1;
            bytes += cursor.current().as_bytes().len() as u64;
        }
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{key}: docs={docs} bytes={bytes} seconds={secs:.2} docs_per_s={:.0} mb_per_s={:.1}",
        docs as f64 / secs,
        bytes as f64 / secs / 1e6
    );
    Ok(())
}

async fn insert(coll: &Collection<RawDocumentBuf>, file: &str) -> Result<(), BoxError> {
    let started = Instant::now();
    let mut input = BufReader::with_capacity(1 << 20, std::fs::File::open(file)?);
    let (mut docs, mut bytes) = (0u64, 0u64);
    let mut batch = Vec::new();
    let mut batch_bytes = 0usize;
    loop {
        let mut header = [0u8; 4];
        match input.read_exact(&mut header) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
            Err(e) => return Err(e.into()),
        }
        let len = i32::from_le_bytes(header) as usize;
        let mut buf = vec![0u8; len];
        buf[..4].copy_from_slice(&header);
        input.read_exact(&mut buf[4..])?;
        batch_bytes += len;
        docs += 1;
        bytes += len as u64;
        batch.push(RawDocumentBuf::from_bytes(buf)?);
        if batch_bytes >= 16 * 1024 * 1024 {
            coll.insert_many(std::mem::take(&mut batch))
                .ordered(false)
                .await?;
            batch_bytes = 0;
        }
    }
    if !batch.is_empty() {
        coll.insert_many(batch).ordered(false).await?;
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "bare_insert: docs={docs} bytes={bytes} seconds={secs:.2} docs_per_s={:.0} mb_per_s={:.1}",
        docs as f64 / secs,
        bytes as f64 / secs / 1e6
    );
    Ok(())
}
