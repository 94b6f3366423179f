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
            to_uri: Some(to_uri),
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
            to_uri: Some(mongo().uri_for_db(target)),
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
            to_uri: Some(mongo().uri_for_db(&target)),
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
