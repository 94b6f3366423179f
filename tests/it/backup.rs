//! Backup and restore against the real test MongoDB: byte-identical round trips (every BSON
//! type), indexes, refusals, tamper detection, resume, and the CLI (secrets never printed).

use std::fs;
use std::path::{Path, PathBuf};

use assert_cmd::Command;
use bson::oid::ObjectId;
use bson::spec::BinarySubtype;
use bson::{
    doc, Binary, Bson, DateTime, Decimal128, Document, JavaScriptCodeWithScope, RawDocumentBuf,
    Regex, Timestamp,
};
use futures_util::TryStreamExt;
use mongodb::options::IndexOptions;
use mongodb::{Client, Database, IndexModel};
use upstep::backup::{
    backup, read_manifest, restore, BackupManifest, BackupOptions, NoProgress, RestoreOptions,
    MANIFEST_FILE,
};

use crate::support::{block_on, fresh_db_name, mongo, start_mongo_with_auth};

const NOVU_COLLECTIONS: [&str; 4] = ["environments", "integrations", "messages", "subscribers"];

// ---------------------------------------------------------------------------------------------
// Seeding and reading back

async fn seed(db: &Database) {
    let env_ids: Vec<ObjectId> = (0..3).map(|_| ObjectId::new()).collect();
    let environments: Vec<Document> = env_ids
        .iter()
        .enumerate()
        .map(|(i, id)| {
            doc! {
                "_id": *id,
                "name": (["Development", "Production", "Staging"][i]),
                "_organizationId": ObjectId::new(),
                "identifier": format!("env-{i}"),
                "apiKeys": [ { "key": format!("k{i}"), "_userId": ObjectId::new() } ],
                "widget": { "notificationCenterEncryption": i == 1 },
                "createdAt": DateTime::from_millis(1_700_000_000_000 + i as i64),
            }
        })
        .collect();
    db.collection::<Document>("environments")
        .insert_many(environments)
        .await
        .expect("seed environments");

    let subscribers: Vec<Document> = (0..500)
        .map(|i| {
            doc! {
                "_id": ObjectId::new(),
                "subscriberId": format!("sub-{i}"),
                "_environmentId": env_ids[i % 3],
                "firstName": format!("First{i}"),
                "email": format!("user{i}@example.com"),
                "channels": [ { "providerId": "slack", "credentials": { "webhookUrl": "https://x" } } ],
                "data": { "plan": if i % 2 == 0 { "free" } else { "pro" }, "score": i as f64 / 3.0 },
                "deleted": false,
                "createdAt": DateTime::from_millis(1_700_000_000_000 + i as i64 * 1000),
                "lastOnlineAt": DateTime::from_millis(1_700_100_000_000),
            }
        })
        .collect();
    db.collection::<Document>("subscribers")
        .insert_many(subscribers)
        .await
        .expect("seed subscribers");

    let messages: Vec<Document> = (0..1500)
        .map(|i| {
            doc! {
                "_id": ObjectId::new(),
                "_environmentId": env_ids[i % 3],
                "_subscriberId": format!("sub-{}", i % 500),
                "channel": (["in_app", "email", "sms"][i % 3]),
                "content": format!("Hello number {i}"),
                "seen": i % 4 == 0,
                "cta": { "type": "redirect", "data": { "url": "/x" }, "action": { "buttons": [1, 2] } },
                "expireAt": DateTime::from_millis(4_102_444_800_000), // 2100: TTL never fires
                "createdAt": DateTime::from_millis(1_700_000_000_000 + i as i64),
            }
        })
        .collect();
    db.collection::<Document>("messages")
        .insert_many(messages)
        .await
        .expect("seed messages");

    let integrations: Vec<Document> = (0..6)
        .map(|i| {
            doc! {
                "_id": ObjectId::new(),
                "_environmentId": env_ids[i % 3],
                "providerId": (["sendgrid", "twilio"][i % 2]),
                "channel": (["email", "sms"][i % 2]),
                "identifier": format!("int-{i}"),
                "credentials": { "apiKey": "enc:abc", "secretKey": null },
                "active": i < 3,
                "priority": i as i32,
            }
        })
        .collect();
    db.collection::<Document>("integrations")
        .insert_many(integrations)
        .await
        .expect("seed integrations");

    // Indexes: TTL, unique, compound, partial.
    let messages = db.collection::<Document>("messages");
    messages
        .create_index(
            IndexModel::builder()
                .keys(doc! { "expireAt": 1 })
                .options(
                    IndexOptions::builder()
                        .expire_after(std::time::Duration::from_secs(0))
                        .name("expireAt_1".to_string())
                        .build(),
                )
                .build(),
        )
        .await
        .expect("TTL index");
    messages
        .create_index(
            IndexModel::builder()
                .keys(doc! { "_environmentId": 1, "_subscriberId": 1, "createdAt": -1 })
                .build(),
        )
        .await
        .expect("compound index");
    db.collection::<Document>("subscribers")
        .create_index(
            IndexModel::builder()
                .keys(doc! { "subscriberId": 1, "_environmentId": 1 })
                .options(IndexOptions::builder().unique(true).build())
                .build(),
        )
        .await
        .expect("unique index");
    db.collection::<Document>("integrations")
        .create_index(
            IndexModel::builder()
                .keys(doc! { "identifier": 1 })
                .options(
                    IndexOptions::builder()
                        .unique(true)
                        .partial_filter_expression(doc! { "active": true })
                        .build(),
                )
                .build(),
        )
        .await
        .expect("partial index");

    seed_every_type(db).await;
}

/// One document per BSON type the driver knows, plus one with all of them, plus a DbPointer
/// (which the bson crate cannot build, so its bytes are written by hand).
async fn seed_every_type(db: &Database) {
    let all = doc! {
        "_id": "all-types",
        "double": 1.5_f64,
        "string": "text ✓",
        "document": { "nested": { "deeper": [1, "two", { "three": 3 }] } },
        "array": [1_i32, 2_i64, "three", Bson::Null],
        "binary": Binary { subtype: BinarySubtype::Generic, bytes: vec![0, 1, 2, 255] },
        "uuid": Binary { subtype: BinarySubtype::Uuid, bytes: (0u8..16).collect() },
        "objectId": ObjectId::parse_str("65a1b2c3d4e5f60718293a4b").expect("oid"),
        "bool": true,
        "datetime": DateTime::from_millis(-1_000),
        "null": Bson::Null,
        "regex": Regex { pattern: "^a.*z$".into(), options: "im".into() },
        "code": Bson::JavaScriptCode("function() { return 1; }".into()),
        "codeWithScope": Bson::JavaScriptCodeWithScope(JavaScriptCodeWithScope {
            code: "function() { return x; }".into(),
            scope: doc! { "x": 42 },
        }),
        "int32": 42_i32,
        "timestamp": Timestamp { time: 1_700_000_000, increment: 7 },
        "int64": 9_007_199_254_740_993_i64,
        "decimal128": Decimal128::from_bytes([1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x40, 0x30]),
        "minKey": Bson::MinKey,
        "maxKey": Bson::MaxKey,
        "symbol": Bson::Symbol("sym".into()),
        "undefined": Bson::Undefined,
        "negativeZero": -0.0_f64,
        "nan": f64::NAN,
    };
    let coll = db.collection::<Document>("bson_types");
    coll.insert_one(all).await.expect("insert all types");
    // Each type alone too, under mixed _id types.
    coll.insert_many(vec![
        doc! { "_id": 1_i32, "v": 1.0_f64 },
        doc! { "_id": 2_i64, "v": Bson::Undefined },
        doc! { "_id": 3.5_f64, "v": Bson::MinKey },
        doc! { "_id": ObjectId::new(), "v": Bson::Symbol("s".into()) },
        doc! { "_id": { "compound": 1, "key": "k" }, "v": Bson::MaxKey },
    ])
    .await
    .expect("insert single types");
    db.collection::<RawDocumentBuf>("bson_types")
        .insert_one(db_pointer_doc())
        .await
        .expect("insert DbPointer");
}

/// `{ _id: "dbpointer", p: DBPointer("ns.coll", ObjectId) }`, built byte by byte.
fn db_pointer_doc() -> RawDocumentBuf {
    let mut body = Vec::new();
    body.push(0x02); // string _id
    body.extend_from_slice(b"_id\0");
    let id = b"dbpointer\0";
    body.extend_from_slice(&(id.len() as i32).to_le_bytes());
    body.extend_from_slice(id);
    body.push(0x0C); // DBPointer
    body.extend_from_slice(b"p\0");
    let ns = b"ns.coll\0";
    body.extend_from_slice(&(ns.len() as i32).to_le_bytes());
    body.extend_from_slice(ns);
    body.extend_from_slice(&[
        0x65, 0xa1, 0xb2, 0xc3, 0xd4, 0xe5, 0xf6, 0x07, 0x18, 0x29, 0x3a, 0x4b,
    ]);
    body.push(0);
    let mut bytes = ((body.len() + 4) as i32).to_le_bytes().to_vec();
    bytes.extend_from_slice(&body);
    RawDocumentBuf::from_bytes(bytes).expect("hand-built DbPointer document")
}

/// Every document of a collection as raw bytes, in `_id` order.
async fn raw_docs(db: &Database, coll: &str) -> Vec<Vec<u8>> {
    db.collection::<RawDocumentBuf>(coll)
        .find(doc! {})
        .sort(doc! { "_id": 1 })
        .await
        .expect("find")
        .try_collect::<Vec<RawDocumentBuf>>()
        .await
        .expect("cursor")
        .into_iter()
        .map(|d| d.into_bytes())
        .collect()
}

/// Waits (up to 30 s) until every one of `colls` exists; returns those still missing.
async fn wait_for_collections(db: &Database, colls: &[&str]) -> Vec<String> {
    let give_up = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let names = db.list_collection_names().await.expect("listCollections");
        let missing: Vec<String> = colls
            .iter()
            .filter(|c| !names.iter().any(|n| n == *c))
            .map(|c| c.to_string())
            .collect();
        if missing.is_empty() || std::time::Instant::now() >= give_up {
            return missing;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

/// The index specs of a collection, sorted by name, as listIndexes returns them.
async fn index_specs(db: &Database, coll: &str) -> Vec<Document> {
    let mut specs: Vec<Document> = db
        .run_cursor_command(doc! { "listIndexes": coll })
        .await
        .expect("listIndexes")
        .try_collect()
        .await
        .expect("cursor");
    specs.sort_by(|a, b| a.get_str("name").ok().cmp(&b.get_str("name").ok()));
    specs
}

struct Snapshot {
    docs: Vec<(String, Vec<Vec<u8>>)>,
    indexes: Vec<(String, Vec<Document>)>,
}

async fn snapshot(db: &Database, colls: &[&str]) -> Snapshot {
    let mut docs = Vec::new();
    let mut indexes = Vec::new();
    for c in colls {
        docs.push((c.to_string(), raw_docs(db, c).await));
        indexes.push((c.to_string(), index_specs(db, c).await));
    }
    Snapshot { docs, indexes }
}

fn assert_same(before: &Snapshot, after: &Snapshot) {
    for ((name, a), (_, b)) in before.docs.iter().zip(&after.docs) {
        assert_eq!(a.len(), b.len(), "{name}: document count differs");
        for (i, (x, y)) in a.iter().zip(b).enumerate() {
            assert!(x == y, "{name}: document #{i} differs byte for byte");
        }
    }
    for ((name, a), (_, b)) in before.indexes.iter().zip(&after.indexes) {
        assert_eq!(a, b, "{name}: index specs differ");
    }
}

fn all_collections() -> Vec<&'static str> {
    let mut v = NOVU_COLLECTIONS.to_vec();
    v.push("bson_types");
    v
}

fn opts(out: &Path) -> BackupOptions {
    BackupOptions {
        out_dir: out.to_path_buf(),
        collections: None,
        gzip: false,
    }
}

fn restore_opts(drop: bool) -> RestoreOptions {
    RestoreOptions {
        to_uri: None,
        collections: None,
        drop,
    }
}

async fn seeded(test: &str) -> (Client, String, String) {
    let server = mongo();
    let client = server.client().await;
    let name = fresh_db_name(test);
    seed(&client.database(&name)).await;
    let uri = server.uri_for_db(&name);
    (client, name, uri)
}

fn expect_err<T: std::fmt::Debug>(result: upstep::error::Result<T>) -> upstep::error::Error {
    result.expect_err("expected an error")
}

async fn db_is_empty(client: &Client, db: &str) -> bool {
    client
        .database(db)
        .list_collection_names()
        .await
        .expect("list")
        .into_iter()
        .all(|c| c.starts_with("system."))
}

// ---------------------------------------------------------------------------------------------
// Round trips

#[tokio::test]
async fn backup_destroy_restore_is_byte_identical() {
    let (client, name, uri) = seeded("backup_round_trip").await;
    let db = client.database(&name);
    let colls = all_collections();
    let before = snapshot(&db, &colls).await;
    let dir = tempfile::tempdir().expect("tempdir");

    let manifest = backup(&uri, &opts(dir.path()), &NoProgress)
        .await
        .expect("backup");
    let names: Vec<&str> = manifest
        .collections
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(
        names,
        [
            "bson_types",
            "environments",
            "integrations",
            "messages",
            "subscribers"
        ]
    );
    assert!(manifest.complete);
    let messages = manifest
        .collections
        .iter()
        .find(|c| c.name == "messages")
        .unwrap();
    assert_eq!(messages.documents, 1500);
    assert!(messages.indexes.contains(&"expireAt_1".to_string()));
    eprintln!("consistency: {}", manifest.consistency);
    // mongodump's layout.
    assert!(dir.path().join(&name).join("messages.bson").is_file());
    let meta: serde_json::Value = serde_json::from_str(
        &fs::read_to_string(dir.path().join(&name).join("messages.metadata.json")).unwrap(),
    )
    .unwrap();
    let keys: Vec<&str> = meta
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(keys.first(), Some(&"options"));
    assert!(keys.contains(&"indexes") && keys.contains(&"collectionName"));
    assert_eq!(meta["type"], "collection");
    assert!(meta["indexes"].to_string().contains("expireAfterSeconds"));

    // A destructive "migration".
    let messages = db.collection::<Document>("messages");
    messages
        .delete_many(doc! { "channel": "sms" })
        .await
        .expect("delete");
    db.collection::<Document>("subscribers")
        .update_many(doc! {}, doc! { "$set": { "firstName": "gone", "data": 1 } })
        .await
        .expect("update");
    messages.drop_index("expireAt_1").await.expect("drop index");
    db.collection::<Document>("bson_types")
        .delete_one(doc! { "_id": "all-types" })
        .await
        .expect("delete");
    db.collection::<Document>("environments")
        .drop()
        .await
        .expect("drop collection");

    let report = restore(Some(&uri), dir.path(), &restore_opts(true), &NoProgress)
        .await
        .expect("restore");
    assert_eq!(report.database, name);
    assert_eq!(report.collections.len(), 5);
    let after = snapshot(&db, &colls).await;
    assert_same(&before, &after);
}

#[tokio::test]
async fn gzip_backup_round_trips_into_another_database() {
    let (client, name, uri) = seeded("backup_gzip").await;
    let colls = all_collections();
    let before = snapshot(&client.database(&name), &colls).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut o = opts(dir.path());
    o.gzip = true;
    let manifest = backup(&uri, &o, &NoProgress).await.expect("backup");
    assert!(manifest.gzip);
    let file = dir.path().join(&name).join("subscribers.bson.gz");
    let magic = fs::read(&file).expect("gz file");
    assert_eq!(&magic[..2], &[0x1f, 0x8b], "{} is gzip", file.display());
    assert!(dir
        .path()
        .join(&name)
        .join("subscribers.metadata.json.gz")
        .is_file());

    let target = fresh_db_name("backup_gzip_target");
    let to_uri = mongo().uri_for_db(&target);
    let report = restore(
        None,
        dir.path(),
        &RestoreOptions {
            to_uri: Some(to_uri.into()),
            collections: None,
            drop: false,
        },
        &NoProgress,
    )
    .await
    .expect("restore into a fresh database");
    assert_eq!(report.database, target);
    let after = snapshot(&client.database(&target), &colls).await;
    assert_same(&before, &after);
}

// ---------------------------------------------------------------------------------------------
// Refusals

#[tokio::test]
async fn restore_refuses_non_empty_collections_without_drop() {
    let (client, name, uri) = seeded("backup_refuse_non_empty").await;
    let dir = tempfile::tempdir().expect("tempdir");
    backup(&uri, &opts(dir.path()), &NoProgress)
        .await
        .expect("backup");
    // Empty one collection: only the others are named.
    client
        .database(&name)
        .collection::<Document>("integrations")
        .delete_many(doc! {})
        .await
        .expect("delete");
    let err = expect_err(restore(Some(&uri), dir.path(), &restore_opts(false), &NoProgress).await);
    let text = err.to_string();
    assert_eq!(err.code(), upstep::error::ExitCode::Usage);
    assert!(
        text.contains("subscribers") && text.contains("messages"),
        "{text}"
    );
    assert!(!text.contains("integrations"), "{text}");
    assert!(text.contains("--drop"), "{text}");
    // Nothing was written: integrations is still empty.
    let n = client
        .database(&name)
        .collection::<Document>("integrations")
        .count_documents(doc! {})
        .await
        .unwrap();
    assert_eq!(n, 0);
}

/// A fresh target, and a backup of `seeded` data in a temp dir.
async fn backup_for_tamper(test: &str) -> (Client, String, tempfile::TempDir, BackupManifest) {
    let (client, _name, uri) = seeded(test).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let manifest = backup(&uri, &opts(dir.path()), &NoProgress)
        .await
        .expect("backup");
    (
        client,
        fresh_db_name(&format!("{test}_target")),
        dir,
        manifest,
    )
}

async fn restore_to(
    target: &str,
    dir: &Path,
) -> upstep::error::Result<upstep::backup::RestoreReport> {
    restore(
        None,
        dir,
        &RestoreOptions {
            to_uri: Some(mongo().uri_for_db(target).into()),
            collections: None,
            drop: false,
        },
        &NoProgress,
    )
    .await
}

#[tokio::test]
async fn truncated_bson_is_refused_before_anything_is_written() {
    let (client, target, dir, manifest) = backup_for_tamper("backup_truncated").await;
    let file = dir.path().join(&manifest.collections.last().unwrap().file);
    let bytes = fs::read(&file).unwrap();
    fs::write(&file, &bytes[..bytes.len() - 100]).unwrap();
    let err = expect_err(restore_to(&target, dir.path()).await);
    let text = err.to_string();
    assert!(text.contains(&file.display().to_string()), "{text}");
    assert!(text.contains("truncated"), "{text}");
    assert!(
        db_is_empty(&client, &target).await,
        "nothing may be restored"
    );
}

#[tokio::test]
async fn tampered_byte_is_refused_before_anything_is_written() {
    let (client, target, dir, manifest) = backup_for_tamper("backup_tampered").await;
    // The last collection, so a restore that checked lazily would already have written others.
    let entry = manifest.collections.last().unwrap();
    let file = dir.path().join(&entry.file);
    let mut bytes = fs::read(&file).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    fs::write(&file, &bytes).unwrap();
    let err = expect_err(restore_to(&target, dir.path()).await);
    let text = err.to_string();
    assert!(text.contains(&file.display().to_string()), "{text}");
    assert!(text.contains("SHA-256"), "{text}");
    assert!(
        db_is_empty(&client, &target).await,
        "nothing may be restored"
    );

    // A changed metadata file is caught the same way.
    fs::write(
        &file,
        fs::read(&file)
            .map(|mut b| {
                b[middle] ^= 0x01;
                b
            })
            .unwrap(),
    )
    .unwrap();
    let meta = dir.path().join(&entry.metadata_file);
    let text = fs::read_to_string(&meta)
        .unwrap()
        .replace("\"_id_\"", "\"_iX_\"");
    fs::write(&meta, text).unwrap();
    let err = expect_err(restore_to(&target, dir.path()).await);
    assert!(
        err.to_string().contains(&meta.display().to_string()),
        "{err}"
    );
    assert!(db_is_empty(&client, &target).await);
}

#[tokio::test]
async fn a_backup_without_manifest_is_refused_as_interrupted() {
    let (client, target, dir, _) = backup_for_tamper("backup_no_manifest").await;
    fs::remove_file(dir.path().join(MANIFEST_FILE)).unwrap();
    let err = expect_err(restore_to(&target, dir.path()).await);
    let text = err.to_string();
    assert!(text.contains("interrupted"), "{text}");
    assert!(text.contains(MANIFEST_FILE), "{text}");
    assert!(read_manifest(dir.path()).is_err());
    assert!(db_is_empty(&client, &target).await);
}

// ---------------------------------------------------------------------------------------------
// What is backed up

#[tokio::test]
async fn system_and_upstep_collections_are_excluded() {
    let (client, name, uri) = seeded("backup_excludes").await;
    let db = client.database(&name);
    for c in ["upstep_journal", "upstep_events", "upstep_lock"] {
        db.collection::<Document>(c)
            .insert_one(doc! { "x": 1 })
            .await
            .expect("upstep collection");
    }
    // A view creates system.views (which this server also lists).
    db.run_command(doc! { "create": "active_subscribers", "viewOn": "subscribers", "pipeline": [ { "$match": { "deleted": false } } ] })
        .await
        .expect("create view");
    let listed = db.list_collection_names().await.unwrap();
    eprintln!("listed: {listed:?}");

    let dir = tempfile::tempdir().expect("tempdir");
    let manifest = backup(&uri, &opts(dir.path()), &NoProgress)
        .await
        .expect("backup");
    let names: Vec<&str> = manifest
        .collections
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(
        names,
        [
            "bson_types",
            "environments",
            "integrations",
            "messages",
            "subscribers"
        ]
    );
    let files: Vec<String> = fs::read_dir(dir.path().join(&name))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        files
            .iter()
            .all(|f| !f.starts_with("system.") && !f.starts_with("upstep_")),
        "{files:?}"
    );
    assert!(manifest
        .skipped
        .iter()
        .any(|s| s.name == "active_subscribers"));
}

#[tokio::test]
async fn collections_option_narrows_and_rejects_unknown_names() {
    let (_client, name, uri) = seeded("backup_narrow").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut o = opts(dir.path());
    o.collections = Some(vec!["subscribers".into(), "integrations".into()]);
    let manifest = backup(&uri, &o, &NoProgress).await.expect("backup");
    let names: Vec<&str> = manifest
        .collections
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(names, ["integrations", "subscribers"]);
    assert!(!dir.path().join(&name).join("messages.bson").exists());

    o.collections = Some(vec![
        "subscribers".into(),
        "nope".into(),
        "upstep_journal".into(),
    ]);
    let err = expect_err(backup(&uri, &o, &NoProgress).await);
    let text = err.to_string();
    assert_eq!(err.code(), upstep::error::ExitCode::Usage);
    assert!(
        text.contains("nope") && text.contains("upstep_journal"),
        "{text}"
    );
    assert!(
        text.contains("choose from: bson_types, environments"),
        "{text}"
    );

    // Restore narrows too.
    let target = fresh_db_name("backup_narrow_target");
    let report = restore(
        None,
        dir.path(),
        &RestoreOptions {
            to_uri: Some(mongo().uri_for_db(&target).into()),
            collections: Some(vec!["subscribers".into()]),
            drop: false,
        },
        &NoProgress,
    )
    .await
    .expect("restore");
    assert_eq!(report.collections.len(), 1);
    assert_eq!(report.collections[0].documents, 500);
}

fn mtime(path: &Path) -> std::time::SystemTime {
    fs::metadata(path).unwrap().modified().unwrap()
}

#[tokio::test]
async fn rerun_resumes_and_redoes_only_missing_or_damaged_collections() {
    let (_client, name, uri) = seeded("backup_resume").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let first = backup(&uri, &opts(dir.path()), &NoProgress)
        .await
        .expect("backup");
    assert!(first.collections.iter().all(|c| !c.resumed));
    let db_dir = dir.path().join(&name);
    let kept: PathBuf = db_dir.join("subscribers.bson");
    let kept_mtime = mtime(&kept);

    // An interrupted run: messages' files gone, integrations' data half written, no manifest.
    fs::remove_file(db_dir.join("messages.bson")).unwrap();
    fs::remove_file(db_dir.join("messages.metadata.json")).unwrap();
    fs::remove_file(db_dir.join("messages.done")).unwrap();
    let partial = db_dir.join("integrations.bson");
    let bytes = fs::read(&partial).unwrap();
    fs::write(&partial, &bytes[..bytes.len() / 2]).unwrap();
    fs::remove_file(dir.path().join(MANIFEST_FILE)).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(20));

    let second = backup(&uri, &opts(dir.path()), &NoProgress)
        .await
        .expect("resumed backup");
    let redone: Vec<&str> = second
        .collections
        .iter()
        .filter(|c| !c.resumed)
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(redone, ["integrations", "messages"]);
    assert_eq!(
        mtime(&kept),
        kept_mtime,
        "a finished collection is not rewritten"
    );
    for (a, b) in first.collections.iter().zip(&second.collections) {
        assert_eq!(
            (&a.name, &a.sha256, a.documents),
            (&b.name, &b.sha256, b.documents)
        );
    }
    // created_at is the earliest read: that of the first run.
    assert_eq!(second.created_at, first.created_at);
    upstep::backup::verify(dir.path()).expect("the resumed backup verifies");
}

// ---------------------------------------------------------------------------------------------
// The CLI

const CANARY: &str = "Canary-pw-7731";

fn upstep() -> Command {
    let mut cmd = Command::cargo_bin("upstep").expect("the upstep binary");
    cmd.env_remove("UPSTEP_MONGO_URI").env_remove("MONGO_URL");
    cmd
}

fn assert_no_secret(what: &str, text: &str) {
    assert!(!text.contains(CANARY), "{what} shows the password:\n{text}");
    assert!(
        !text.contains("RootPw-test-only"),
        "{what} shows the root password:\n{text}"
    );
}

#[test]
fn cli_backup_and_restore_never_show_the_password() {
    let server = start_mongo_with_auth();
    let name = fresh_db_name("backup_cli");
    let target = fresh_db_name("backup_cli_target");
    let seed_uri = server.admin_uri("admin");
    let seed_name = name.clone();
    block_on(async move {
        let client = Client::with_uri_str(&seed_uri).await.expect("client");
        seed(&client.database(&seed_name)).await;
    });
    // A user whose password is the canary.
    let create_uri = server.admin_uri("admin");
    block_on(async move {
        let client = Client::with_uri_str(&create_uri).await.expect("client");
        client
            .database("admin")
            .run_command(doc! { "createUser": "novu", "pwd": CANARY, "roles": [ { "role": "root", "db": "admin" } ] })
            .await
            .expect("createUser");
    });
    let uri = server.uri_with_credentials("novu", CANARY, &name);
    let to_uri = server.uri_with_credentials("novu", CANARY, &target);
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("b");

    let backup = upstep()
        .args([
            "backup",
            "--json",
            "--collections",
            "subscribers,messages",
            "--out",
        ])
        .arg(&out)
        .env("UPSTEP_MONGO_URI", &uri)
        .output()
        .expect("run upstep backup");
    let stdout = String::from_utf8_lossy(&backup.stdout);
    let stderr = String::from_utf8_lossy(&backup.stderr);
    assert!(
        backup.status.success(),
        "backup failed:\n{stdout}\n{stderr}"
    );
    assert_no_secret("backup stdout", &stdout);
    assert_no_secret("backup stderr", &stderr);
    let summary: serde_json::Value = serde_json::from_str(&stdout).expect("one JSON document");
    assert_eq!(summary["schema"], "upstep.backup-summary/1");
    assert_eq!(summary["documents"], 2000);
    let manifest_text = fs::read_to_string(out.join(MANIFEST_FILE)).unwrap();
    assert_no_secret("manifest", &manifest_text);
    assert!(manifest_text.contains("novu:****@"), "{manifest_text}");

    // Text output of restore into another database.
    let restore = upstep()
        .arg("restore")
        .arg(&out)
        .args(["--to-uri", &to_uri])
        .output()
        .expect("run upstep restore");
    let stdout = String::from_utf8_lossy(&restore.stdout);
    let stderr = String::from_utf8_lossy(&restore.stderr);
    assert!(
        restore.status.success(),
        "restore failed:\n{stdout}\n{stderr}"
    );
    assert_no_secret("restore stdout", &stdout);
    assert_no_secret("restore stderr", &stderr);
    assert!(
        stdout.contains("subscribers") && stdout.contains("500"),
        "{stdout}"
    );

    // Again without --drop: refused, exit 2, names --drop.
    let again = upstep()
        .arg("restore")
        .arg(&out)
        .args(["--to-uri", &to_uri])
        .assert()
        .code(2);
    let stderr = String::from_utf8_lossy(&again.get_output().stderr).into_owned();
    assert!(stderr.contains("--drop"), "{stderr}");
    assert_no_secret("refusal", &stderr);

    // Wrong password: exit 6, neither password shown.
    let wrong = server.uri_with_credentials("novu", "Wrong-pw-0000", &name);
    let failed = upstep()
        .args(["backup", "--out"])
        .arg(dir.path().join("c"))
        .args(["--mongo-uri", &wrong])
        .assert()
        .code(6);
    let stderr = String::from_utf8_lossy(&failed.get_output().stderr).into_owned();
    assert!(stderr.contains("credentials"), "{stderr}");
    assert!(!stderr.contains("Wrong-pw-0000"), "{stderr}");
}

#[test]
fn cli_clear_errors_for_missing_database_unreachable_server_and_no_uri() {
    // No database in the URI: usage (2), before any connection.
    let out = upstep()
        .args(["backup", "--mongo-uri", "mongodb://u:Secret-9@127.0.0.1:1/"])
        .assert()
        .code(2);
    let stderr = String::from_utf8_lossy(&out.get_output().stderr).into_owned();
    assert!(stderr.contains("names no database"), "{stderr}");
    assert!(!stderr.contains("Secret-9"), "{stderr}");

    // Nothing listens: connection (6), quickly with a short selection timeout.
    let port = crate::support::free_port();
    let uri = format!("mongodb://u:Secret-9@127.0.0.1:{port}/novu?serverSelectionTimeoutMS=500");
    let dir = tempfile::tempdir().expect("tempdir");
    let out = upstep()
        .args(["backup", "--out"])
        .arg(dir.path())
        .args(["--mongo-uri", &uri])
        .assert()
        .code(6);
    let stderr = String::from_utf8_lossy(&out.get_output().stderr).into_owned();
    assert!(stderr.contains("cannot be reached"), "{stderr}");
    assert!(!stderr.contains("Secret-9"), "{stderr}");

    // No URI at all.
    let out = upstep().args(["backup"]).assert().code(2);
    let stderr = String::from_utf8_lossy(&out.get_output().stderr).into_owned();
    assert!(stderr.contains("UPSTEP_MONGO_URI"), "{stderr}");

    // A directory that is no backup.
    let out = upstep()
        .arg("restore")
        .arg(dir.path())
        .args(["--to-uri", "mongodb://127.0.0.1:1/x"])
        .assert()
        .code(2);
    let stderr = String::from_utf8_lossy(&out.get_output().stderr).into_owned();
    assert!(stderr.contains(MANIFEST_FILE), "{stderr}");
}

/// Writes made while the backup runs (after its snapshot began) are not in it.
#[tokio::test]
async fn backup_reads_one_snapshot_when_the_server_has_them() {
    use std::sync::atomic::{AtomicBool, Ordering};

    struct WriteDuringBackup {
        uri: String,
        db: String,
        done: AtomicBool,
    }
    impl upstep::backup::Progress for WriteDuringBackup {
        fn start(&self, _collection: &str, _total: Option<u64>) {}
        fn advance(&self, _docs: u64, _bytes: u64) {
            // Once, after the first collection's first read fixed the snapshot time.
            if self.done.swap(true, Ordering::SeqCst) {
                return;
            }
            let (uri, db) = (self.uri.clone(), self.db.clone());
            block_on(async move {
                let client = Client::with_uri_str(&uri).await.expect("client");
                let db = client.database(&db);
                db.collection::<Document>("subscribers")
                    .insert_one(doc! { "subscriberId": "late" })
                    .await
                    .expect("late insert");
                db.collection::<Document>("messages")
                    .delete_many(doc! { "channel": "sms" })
                    .await
                    .expect("late delete");
            });
        }
        fn finish(&self, _collection: &str) {}
    }

    let (_client, name, uri) = seeded("backup_snapshot").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let progress = WriteDuringBackup {
        uri: mongo().uri.clone(),
        db: name.clone(),
        done: AtomicBool::new(false),
    };
    let manifest = backup(&uri, &opts(dir.path()), &progress)
        .await
        .expect("backup");
    assert!(progress.done.load(Ordering::SeqCst));
    let count = |c: &str| {
        manifest
            .collections
            .iter()
            .find(|e| e.name == c)
            .map(|e| e.documents)
            .unwrap()
    };
    if manifest.consistency == "snapshot" {
        assert!(manifest.snapshot_time.is_some());
        assert_eq!(
            count("subscribers"),
            500,
            "a later insert leaked into the snapshot"
        );
        assert_eq!(
            count("messages"),
            1500,
            "a later delete leaked into the snapshot"
        );
    } else {
        // SecantusDB ignores atClusterTime: the backup says so, and the writes show.
        assert!(manifest
            .collections
            .iter()
            .all(|e| e.consistency == "per-collection"));
        assert_eq!(count("subscribers"), 501);
    }
}

// ---------------------------------------------------------------------------------------------
// A restore never leaves a mix: lock, confirmation, temporary collections swapped in whole

/// A runtime for a test that also runs the binary (its futures borrow the test's locals).
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// The collections of a restore target, to tell afterwards whether each is as it was, fully
/// restored, or (the failure these tests exist for) a mix.
const SWAP_COLLECTIONS: [&str; 4] = ["alpha", "bravo", "charlie", "delta"];

/// `docs` documents of ~250 bytes in each of SWAP_COLLECTIONS, with a secondary index each.
async fn seed_swap(db: &Database, docs: i64) {
    let pad = "p".repeat(200);
    for name in SWAP_COLLECTIONS {
        let coll = db.collection::<Document>(name);
        let batch: Vec<Document> = (0..docs)
            .map(|i| doc! { "_id": i, "v": "original", "group": i % 50, "pad": &pad })
            .collect();
        coll.insert_many(batch).await.expect("seed");
        coll.create_index(
            IndexModel::builder()
                .keys(doc! { "group": 1, "v": 1 })
                .build(),
        )
        .await
        .expect("index");
    }
}

/// A "migration" that changes every collection: every document rewritten, a tenth deleted.
async fn change_everything(db: &Database, round: i64) {
    for name in SWAP_COLLECTIONS {
        let coll = db.collection::<Document>(name);
        coll.update_many(doc! {}, doc! { "$set": { "v": format!("round {round}") } })
            .await
            .expect("update");
        coll.delete_many(doc! { "_id": { "$mod": [10, round % 10] } })
            .await
            .expect("delete");
    }
}

/// SHA-256 of a collection's documents (raw bytes, `_id` order) and its index names.
async fn fingerprint(db: &Database, coll: &str) -> String {
    use sha2::{Digest, Sha256};
    let mut hasher = Sha256::new();
    let docs = raw_docs(db, coll).await;
    hasher.update((docs.len() as u64).to_le_bytes());
    for d in &docs {
        hasher.update(d);
    }
    for spec in index_specs(db, coll).await {
        hasher.update(spec.get_str("name").unwrap_or_default().as_bytes());
    }
    hex::encode(hasher.finalize())
}

async fn fingerprints(db: &Database) -> Vec<String> {
    let mut out = Vec::new();
    for c in SWAP_COLLECTIONS {
        out.push(fingerprint(db, c).await);
    }
    out
}

async fn temp_collections(db: &Database) -> Vec<String> {
    db.list_collection_names()
        .await
        .expect("list")
        .into_iter()
        .filter(|n| n.starts_with(upstep::backup::TEMP_PREFIX))
        .collect()
}

async fn lock_holder(db: &Database) -> Option<Document> {
    db.collection::<Document>("upstep_lock")
        .find_one(doc! { "_id": "run" })
        .await
        .expect("read the lock")
}

/// A seeded database with a backup of it, then changed: a restore has work to do.
async fn swap_fixture(test: &str, docs: i64) -> (Client, String, String, tempfile::TempDir) {
    let client = mongo().client().await;
    let name = fresh_db_name(test);
    let db = client.database(&name);
    seed_swap(&db, docs).await;
    let uri = mongo().uri_for_db(&name);
    let dir = tempfile::tempdir().expect("tempdir");
    backup(&uri, &opts(dir.path()), &NoProgress)
        .await
        .expect("backup");
    change_everything(&db, 1).await;
    (client, name, uri, dir)
}

#[test]
fn restore_drop_needs_a_confirmation_or_yes() {
    let rt = runtime();
    let (client, name, uri, dir) = rt.block_on(swap_fixture("restore_confirm", 200));
    let db = client.database(&name);
    let before = rt.block_on(fingerprints(&db));

    // No terminal (stdin is not one under the test harness) and no --yes: exit 12.
    let refused = upstep()
        .arg("restore")
        .arg(dir.path())
        .args(["--drop", "--mongo-uri", &uri])
        .assert()
        .code(12);
    let stderr = String::from_utf8_lossy(&refused.get_output().stderr).into_owned();
    assert!(stderr.contains("--yes"), "{stderr}");
    assert!(
        stderr.contains("alpha") && stderr.contains("nothing was restored"),
        "{stderr}"
    );
    assert_eq!(
        rt.block_on(fingerprints(&db)),
        before,
        "a refused restore wrote"
    );
    assert!(rt.block_on(temp_collections(&db)).is_empty());
    assert!(
        rt.block_on(lock_holder(&db)).is_none(),
        "the refused restore kept the run lock"
    );

    // With --yes it runs, and the JSON says every collection is restored.
    let done = upstep()
        .arg("restore")
        .arg(dir.path())
        .args(["--drop", "--yes", "--json", "--mongo-uri", &uri])
        .assert()
        .code(0);
    let report: serde_json::Value =
        serde_json::from_slice(&done.get_output().stdout).expect("one JSON document");
    assert_eq!(report["complete"], true, "{report}");
    for c in report["collections"].as_array().unwrap() {
        assert_eq!(c["state"], "restored", "{report}");
        assert_eq!(c["dropped"], true, "{report}");
    }
    assert_ne!(rt.block_on(fingerprints(&db)), before);
    assert!(
        rt.block_on(lock_holder(&db)).is_none(),
        "the lock was not released"
    );

    // Into a database with nothing to replace, --drop needs no confirmation.
    let target = fresh_db_name("restore_confirm_fresh");
    upstep()
        .arg("restore")
        .arg(dir.path())
        .args(["--drop", "--to-uri", &mongo().uri_for_db(&target)])
        .assert()
        .code(0);
}

#[test]
fn restore_refuses_while_another_run_holds_the_lock() {
    let rt = runtime();
    use upstep::store::journal::Actor;
    use upstep::store::lock::{Acquire, RunLock};
    use upstep::store::Store;

    let (client, name, uri, dir) = rt.block_on(swap_fixture("restore_locked", 200));
    let db = client.database(&name);
    let before = rt.block_on(fingerprints(&db));
    // This test process is the other run: alive, on this host.
    let store = rt.block_on(Store::connect(&uri)).expect("store");
    let holder = Actor::current();
    let taken = rt
        .block_on(RunLock::new(&store).try_acquire(&holder, std::time::Duration::from_secs(60)))
        .expect("take the lock");
    assert!(matches!(taken, Acquire::Acquired { .. }), "{taken:?}");

    let refused = upstep()
        .arg("restore")
        .arg(dir.path())
        .args(["--drop", "--yes", "--mongo-uri", &uri])
        .assert()
        .code(7);
    let stderr = String::from_utf8_lossy(&refused.get_output().stderr).into_owned();
    assert!(
        stderr.contains("holds the lock") && stderr.contains(&holder.run_id),
        "{stderr}"
    );
    assert_eq!(
        rt.block_on(fingerprints(&db)),
        before,
        "a locked-out restore wrote"
    );
    assert!(rt.block_on(temp_collections(&db)).is_empty());
    let still = rt
        .block_on(lock_holder(&db))
        .expect("the lock is still there");
    assert_eq!(
        still
            .get_document("holder")
            .unwrap()
            .get_str("run_id")
            .unwrap(),
        holder.run_id,
        "the refused restore touched the other run's lock"
    );

    rt.block_on(RunLock::new(&store).release(&holder))
        .expect("release");
    upstep()
        .arg("restore")
        .arg(dir.path())
        .args(["--drop", "--yes", "--mongo-uri", &uri])
        .assert()
        .code(0);
}

/// Stops the restore (as a signal would) once the first collection is fully loaded.
struct StopAfterFirst {
    stop: std::sync::Arc<std::sync::atomic::AtomicI32>,
}

impl upstep::backup::Progress for StopAfterFirst {
    fn start(&self, _collection: &str, _total: Option<u64>) {}
    fn advance(&self, _docs: u64, _bytes: u64) {}
    fn finish(&self, _collection: &str) {
        self.stop
            .store(libc::SIGTERM, std::sync::atomic::Ordering::SeqCst);
    }
}

#[tokio::test]
async fn a_restore_stopped_while_loading_leaves_everything_as_it_was() {
    let (client, name, uri, dir) = swap_fixture("restore_stopped", 300).await;
    let db = client.database(&name);
    let before = fingerprints(&db).await;
    let opts = RestoreOptions {
        to_uri: None,
        collections: None,
        drop: true,
    };
    let prepared = upstep::backup::prepare_restore(Some(&uri), dir.path(), &opts)
        .await
        .expect("prepare");
    assert_eq!(prepared.replaces().len(), SWAP_COLLECTIONS.len());
    let progress = StopAfterFirst {
        stop: prepared.stop_flag(),
    };
    let outcome = prepared.run(&progress).await;
    prepared.release().await;
    let failure = outcome.expect_err("the restore was stopped");
    assert_eq!(
        failure.error.code(),
        upstep::error::ExitCode::Terminated,
        "{}",
        failure.error
    );
    assert!(!failure.report.complete);
    assert!(failure
        .report
        .collections
        .iter()
        .all(|c| c.state == upstep::backup::CollectionState::Unchanged));
    assert_eq!(
        fingerprints(&db).await,
        before,
        "a stopped restore changed data"
    );
    assert!(
        temp_collections(&db).await.is_empty(),
        "temporary collections left"
    );
    assert!(lock_holder(&db).await.is_none());
}

/// Leftovers of a restore killed mid-load are removed by the next restore, which says so.
#[test]
fn the_next_restore_removes_what_a_killed_one_left() {
    let rt = runtime();
    let (client, name, uri, dir) = rt.block_on(swap_fixture("restore_leftovers", 5_000));
    let db = client.database(&name);
    let before = rt.block_on(fingerprints(&db));
    let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("upstep"))
        .arg("restore")
        .arg(dir.path())
        .args(["--drop", "--yes", "--mongo-uri", &uri])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start upstep restore");
    // Kill it -9 as soon as its first temporary collection exists.
    wait_for_temp(&rt, &db, &mut child);
    child.kill().expect("kill -9");
    child.wait().expect("reap");
    let left = rt.block_on(temp_collections(&db));
    assert!(!left.is_empty());
    assert_eq!(
        rt.block_on(fingerprints(&db)),
        before,
        "a killed load changed data"
    );
    assert!(
        rt.block_on(lock_holder(&db)).is_some(),
        "kill -9 cannot release the lock"
    );

    // The next restore takes the dead run's lock over at once and removes its leftovers.
    let done = upstep()
        .arg("restore")
        .arg(dir.path())
        .args(["--drop", "--yes", "--json", "--mongo-uri", &uri])
        .timeout(std::time::Duration::from_secs(120))
        .assert()
        .code(0);
    let report: serde_json::Value =
        serde_json::from_slice(&done.get_output().stdout).expect("one JSON document");
    let removed: Vec<String> = report["leftovers_removed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    for l in &left {
        assert!(removed.contains(l), "{l} not reported removed: {report}");
    }
    assert!(report["lock_taken_over_from"].is_string(), "{report}");
    assert!(rt.block_on(temp_collections(&db)).is_empty());
    assert!(rt.block_on(lock_holder(&db)).is_none());
}

/// Waits until the restore has created its first temporary collection.
fn wait_for_temp(rt: &tokio::runtime::Runtime, db: &Database, child: &mut std::process::Child) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while rt.block_on(temp_collections(db)).is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "no temporary collection appeared"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "the restore ended first"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

/// SIGTERM (as from a cancelled CI job) mid-load: exit 143, the message says every collection
/// is unchanged, the temporary collections are gone and the lock is released.
#[test]
fn sigterm_during_a_restore_says_which_collections_are_which() {
    let rt = runtime();
    let (client, name, uri, dir) = rt.block_on(swap_fixture("restore_sigterm", 5_000));
    let db = client.database(&name);
    let before = rt.block_on(fingerprints(&db));
    let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("upstep"))
        .arg("restore")
        .arg(dir.path())
        .args(["--drop", "--yes", "--mongo-uri", &uri])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start upstep restore");
    wait_for_temp(&rt, &db, &mut child);
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    let out = child.wait_with_output().expect("wait");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(143), "{stderr}");
    assert!(
        stderr.contains("restored from the backup: (none)")
            && stderr.contains("unchanged (as before the restore): alpha, bravo, charlie, delta"),
        "{stderr}"
    );
    assert_eq!(rt.block_on(fingerprints(&db)), before);
    assert!(rt.block_on(temp_collections(&db)).is_empty());
    assert!(rt.block_on(lock_holder(&db)).is_none());
}

/// xorshift64*: reproducible random delays without a dependency (the seed is printed).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// `kill -9` of `upstep restore --drop` at random points, round after round: after each, every
/// collection must be exactly as it was before the round or exactly the backup's (never a mix).
/// `UPSTEP_RESTORE_KILL_ROUNDS` sets the rounds (default 6), `UPSTEP_RESTORE_KILL_SEED` the seed.
#[test]
fn restore_killed_at_random_points_never_leaves_a_mix() {
    let rt = runtime();
    let rounds: u64 = std::env::var("UPSTEP_RESTORE_KILL_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(6);
    let seed: u64 = std::env::var("UPSTEP_RESTORE_KILL_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    let mut rng = Rng(seed);
    let (client, name, uri, dir) = rt.block_on(swap_fixture("restore_kill", 5_000));
    let db = client.database(&name);
    let restore_cmd = || {
        let mut cmd = std::process::Command::new(assert_cmd::cargo::cargo_bin("upstep"));
        cmd.arg("restore")
            .arg(dir.path())
            .args(["--drop", "--yes", "--mongo-uri", &uri])
            .env_remove("UPSTEP_MONGO_URI")
            .env_remove("MONGO_URL")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        cmd
    };

    // One full restore: the backup's fingerprints, and how long a restore takes here.
    let started = std::time::Instant::now();
    assert!(restore_cmd().status().unwrap().success());
    let full = started.elapsed();
    let restored = rt.block_on(fingerprints(&db));

    let (mut mixed, mut while_loading, mut during_swaps, mut finished) = (0, 0, 0, 0);
    for round in 0..rounds {
        rt.block_on(change_everything(&db, round as i64 + 2));
        let before = rt.block_on(fingerprints(&db));
        assert!(before.iter().zip(&restored).all(|(b, r)| b != r));
        // Anywhere from the start to a little past a full restore's duration.
        let delay = full.mul_f64((rng.next() % 1000) as f64 / 1000.0 * 1.1);
        let mut child = restore_cmd().spawn().expect("start upstep restore");
        std::thread::sleep(delay);
        let _ = child.kill();
        child.wait().expect("reap");
        // The test server's renameCollection drops the target, then copies the source (mongod
        // renames within a database atomically): a swap the killed client had sent finishes
        // on the server after the kill. Wait for it before judging; a collection still gone
        // after that is a real loss and fails below.
        let missing = rt.block_on(wait_for_collections(&db, &SWAP_COLLECTIONS));
        assert!(
            missing.is_empty(),
            "round {round}: killed after {delay:?}: collections gone: {missing:?}"
        );

        let after = rt.block_on(fingerprints(&db));
        let mut states = Vec::new();
        for (i, coll) in SWAP_COLLECTIONS.iter().enumerate() {
            let state = if after[i] == before[i] {
                "unchanged"
            } else if after[i] == restored[i] {
                "restored"
            } else {
                mixed += 1;
                "MIXED"
            };
            states.push(format!("{coll}={state}"));
        }
        let temps = rt.block_on(temp_collections(&db)).len();
        let restored_n = states.iter().filter(|s| s.ends_with("=restored")).count();
        match restored_n {
            0 => while_loading += 1,
            n if n == SWAP_COLLECTIONS.len() => finished += 1,
            _ => during_swaps += 1,
        }
        eprintln!(
            "round {round}: killed after {delay:?}: {} (temporary collections left: {temps})",
            states.join(" ")
        );
    }
    eprintln!(
        "restore kill -9 trials: seed {seed}, {rounds} rounds (full restore {full:?}): killed \
         before any swap {while_loading}, between swaps {during_swaps}, after all swaps \
         {finished}; collections mixed: {mixed}"
    );
    assert_eq!(mixed, 0, "collections were left mixed");

    // And the next restore cleans up after all of them.
    assert!(restore_cmd().status().unwrap().success());
    assert_eq!(rt.block_on(fingerprints(&db)), restored);
    assert!(rt.block_on(temp_collections(&db)).is_empty());
}

#[test]
fn backup_files_are_private() {
    let rt = runtime();
    use std::os::unix::fs::PermissionsExt;
    let (_client, name, uri) = rt.block_on(seeded("backup_modes"));
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("out");
    // An existing, open directory with an open file from an earlier attempt: tightened too.
    fs::create_dir_all(out.join(&name)).unwrap();
    fs::set_permissions(&out, fs::Permissions::from_mode(0o755)).unwrap();
    let stale = out.join(&name).join("subscribers.bson");
    fs::write(&stale, b"stale").unwrap();
    fs::set_permissions(&stale, fs::Permissions::from_mode(0o644)).unwrap();
    rt.block_on(backup(&uri, &opts(&out), &NoProgress))
        .expect("backup");

    let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let mut checked = 0;
    let mut stack = vec![out.clone()];
    while let Some(d) = stack.pop() {
        assert_eq!(mode(&d), 0o700, "{} is not 0700", d.display());
        for entry in fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                assert_eq!(mode(&path), 0o600, "{} is not 0600", path.display());
                checked += 1;
            }
        }
    }
    // 5 collections x (data, metadata, marker) + the manifest.
    assert_eq!(checked, 16);
}

/// The disk is checked before anything is written: a 1 MiB file system cannot hold a backup
/// of several MB (without --gzip, refused; with it, only a warning). Needs root for the mount.
#[test]
fn backup_refuses_a_disk_too_small_for_it() {
    let rt = runtime();
    if !nix::unistd::geteuid().is_root() {
        eprintln!("not run: mounting a small tmpfs needs root");
        return;
    }
    let (client, name, uri, _dir) = rt.block_on(swap_fixture("backup_small_disk", 20_000));
    drop(client);
    /// Unmounts however the test ends.
    struct Mounted(tempfile::TempDir);
    impl Drop for Mounted {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount")
                .arg(self.0.path())
                .status();
        }
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let status = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
        .arg(dir.path())
        .status()
        .expect("run mount");
    assert!(status.success(), "mount a tmpfs");
    let mount = Mounted(dir);
    let out = mount.0.path().join("b");
    let refused = upstep()
        .args(["backup", "--mongo-uri", &uri, "--out"])
        .arg(&out)
        .assert()
        .code(5);
    let stderr = String::from_utf8_lossy(&refused.get_output().stderr).into_owned();
    assert!(
        stderr.contains("not enough free space") && stderr.contains("--out"),
        "{stderr}"
    );
    assert!(!out.join(&name).exists(), "the refused backup wrote files");
}
