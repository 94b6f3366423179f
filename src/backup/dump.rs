//! `backup`: dump a database in mongodump's directory format, streamed, checksummed, resumable.

use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use bson::{doc, Bson, Document, RawDocumentBuf};
use flate2::write::GzEncoder;
use flate2::Compression;
use mongodb::{ClientSession, Database};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use super::manifest::{
    create_private_dir, create_private_file, hash_file, io_error, write_json_atomic,
    BackupManifest, CollectionEntry, SkippedCollection, MANIFEST_FILE, MANIFEST_SCHEMA,
};
use super::progress::Progress;
use super::{is_excluded, now_rfc3339, BackupOptions};
use crate::error::{Error, Result};
use crate::mongo::Connection;
use crate::preflight::human_bytes;

/// Documents per getMore: large batches keep round trips few; a batch is at most 16 MiB anyway.
const BATCH_DOCS: u32 = 10_000;
/// Bytes handed to the writer thread at a time.
const CHUNK_BYTES: usize = 1 << 20;
/// Chunks in flight between the cursor and the writer (bounds memory: ~8 MiB plus one batch).
const CHUNKS_IN_FLIGHT: usize = 8;

/// One collection as listCollections describes it.
struct CollectionInfo {
    name: String,
    options: Document,
    uuid: Option<String>,
}

pub(crate) async fn run(
    uri: &str,
    opts: &BackupOptions,
    progress: &dyn Progress,
) -> Result<BackupManifest> {
    let conn =
        Connection::open(uri, "--mongo-uri", true, std::time::Duration::from_secs(10)).await?;
    let db_name = conn.database.clone().unwrap_or_default();
    let db = conn.client.database(&db_name);

    let (mut infos, skipped) = list_collections(&conn, &db).await?;
    if let Some(wanted) = &opts.collections {
        infos = select(infos, wanted, &db_name)?;
    }

    let db_dir = opts.out_dir.join(&db_name);
    check_space(&db, &infos, &opts.out_dir, &db_dir, opts.gzip).await?;
    for dir in [&opts.out_dir, &db_dir] {
        create_private_dir(dir).map_err(|e| io_error("create", dir, e))?;
    }
    forget_old_manifest(&opts.out_dir, &db_name)?;

    // One snapshot for the whole database where the server supports it: every read below then
    // sees the data as of one cluster time. Falls back to a cursor per collection.
    let mut session: Option<ClientSession> = match conn.client.start_session().snapshot(true).await
    {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(
                "snapshot sessions unavailable ({e}); reading each collection on its own"
            );
            None
        }
    };

    let mut entries: Vec<CollectionEntry> = Vec::with_capacity(infos.len());
    for info in &infos {
        let files = Files::new(&opts.out_dir, &db_name, &info.name, opts.gzip);
        if let Some(done) = files.already_done() {
            tracing::info!("{}: already backed up by an earlier run, kept", info.name);
            entries.push(done);
            continue;
        }
        let entry = dump_collection(&conn, &db, info, &files, &mut session, progress).await?;
        write_json_atomic(&files.marker, &entry)?;
        entries.push(entry);
    }

    // Trust but verify: a server that ignores `atClusterTime` (SecantusDB does) gives each
    // cursor its own point in time, so the backup is then only consistent per collection.
    let snapshot_ts = session.as_ref().and_then(|s| s.snapshot_time());
    let honoured = match (snapshot_ts, infos.first()) {
        (Some(ts), Some(first)) => snapshot_honoured(&db, &first.name, ts).await,
        _ => false,
    };
    if !honoured {
        for entry in entries
            .iter_mut()
            .filter(|e| e.consistency == "snapshot" && !e.resumed)
        {
            entry.consistency = "per-collection".into();
        }
        if snapshot_ts.is_some() {
            tracing::warn!(
                "the server did not keep the snapshot's cluster time (atClusterTime): each \
                 collection was read at its own point in time"
            );
        }
    }
    for e in entries
        .iter()
        .filter(|e| e.consistency != "snapshot" && !e.resumed)
    {
        if e.count_before.is_some_and(|b| b != e.count_after) || e.count_after != e.documents {
            tracing::warn!(
                "{}: {} documents written, {} after the read: it was written to during the \
                 backup; stop the application for an exact copy",
                e.name,
                e.documents,
                e.count_after
            );
        }
    }
    let all_snapshot = !entries.is_empty()
        && entries
            .iter()
            .all(|e| e.consistency == "snapshot" && !e.resumed);
    let snapshot_time = snapshot_ts.map(|t| format!("{}.{}", t.time, t.increment));
    let created_at = entries
        .iter()
        .map(|e| e.read_at.clone())
        .min()
        .unwrap_or_else(now_rfc3339);
    let manifest = BackupManifest {
        schema: MANIFEST_SCHEMA.into(),
        created_at,
        database: db_name,
        source: conn.redacted.clone(),
        upstep_version: env!("CARGO_PKG_VERSION").into(),
        consistency: if all_snapshot {
            "snapshot"
        } else {
            "per-collection"
        }
        .into(),
        snapshot_time: if all_snapshot { snapshot_time } else { None },
        gzip: opts.gzip,
        collections: entries,
        skipped,
        complete: true,
    };
    write_json_atomic(&opts.out_dir.join(MANIFEST_FILE), &manifest)?;
    Ok(manifest)
}

/// Refuses a backup the disk cannot hold, before anything is written: the estimate is the
/// collections' data size as the server reports it (uncompressed BSON), less what an earlier
/// run already wrote into the directory. With `--gzip` the files are smaller by a ratio no one
/// knows beforehand, so a shortfall is only a warning then.
async fn check_space(
    db: &Database,
    infos: &[CollectionInfo],
    out_dir: &Path,
    db_dir: &Path,
    gzip: bool,
) -> Result<()> {
    let mut needed = 0u64;
    for info in infos {
        match data_size(db, &info.name).await {
            Some(size) => needed += size,
            None => {
                tracing::warn!(
                    "the server reports no data size for {}: cannot tell whether the backup                      fits on the disk",
                    info.name
                );
                return Ok(());
            }
        }
    }
    let written: u64 = fs::read_dir(db_dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok()?.metadata().ok())
                .filter(|m| m.is_file())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0);
    let needed = needed.saturating_sub(written);
    let probe = crate::preflight::nearest_existing(out_dir);
    let available = match crate::preflight::available_bytes(&probe) {
        Ok(bytes) => bytes,
        Err(e) => {
            tracing::warn!("cannot tell the free space at {}: {e}", probe.display());
            return Ok(());
        }
    };
    if available >= needed {
        return Ok(());
    }
    let (free, need) = (human_bytes(available), human_bytes(needed));
    if gzip {
        tracing::warn!(
            "{} has {free} free and the data is {need} uncompressed: the gzipped backup fits              only if it compresses to less than that",
            probe.display()
        );
        return Ok(());
    }
    Err(Error::Preflight(format!(
        "not enough free space for the backup: {} has {free} free, and the collections hold          about {need} of data (as the server reports it); nothing was written
  fix: free          space there, give --out a directory on a disk with {need} free, or add --gzip (the          files are then usually several times smaller)",
        probe.display()
    )))
}

/// A collection's data size in bytes (uncompressed BSON), from `$collStats`.
async fn data_size(db: &Database, collection: &str) -> Option<u64> {
    use futures_util::TryStreamExt;
    let stats: Vec<Document> = db
        .collection::<Document>(collection)
        .aggregate(vec![doc! { "$collStats": { "storageStats": {} } }])
        .await
        .ok()?
        .try_collect()
        .await
        .ok()?;
    let storage = stats.first()?.get_document("storageStats").ok()?;
    match storage.get("size")? {
        Bson::Double(v) => Some(*v as u64),
        Bson::Int32(v) => u64::try_from(*v).ok(),
        Bson::Int64(v) => u64::try_from(*v).ok(),
        _ => None,
    }
}

/// The collections of the database upstep backs up, sorted by name, and those it skips.
async fn list_collections(
    conn: &Connection,
    db: &Database,
) -> Result<(Vec<CollectionInfo>, Vec<SkippedCollection>)> {
    use futures_util::TryStreamExt;
    let docs: Vec<Document> = async {
        db.run_cursor_command(doc! { "listCollections": 1 })
            .await?
            .try_collect()
            .await
    }
    .await
    .map_err(|e| conn.error("list the collections of", e))?;
    let mut infos = Vec::new();
    let mut skipped = Vec::new();
    for d in docs {
        let Ok(name) = d.get_str("name") else {
            continue;
        };
        if is_excluded(name) {
            continue;
        }
        let kind = d.get_str("type").unwrap_or("collection");
        if kind != "collection" {
            tracing::warn!("{name} is a {kind}, not a collection: not backed up");
            skipped.push(SkippedCollection {
                name: name.into(),
                reason: format!("a {kind}: upstep backs up collections only"),
            });
            continue;
        }
        let uuid = d
            .get_document("info")
            .ok()
            .and_then(|i| match i.get("uuid") {
                Some(Bson::Binary(b)) => Some(hex::encode(&b.bytes)),
                _ => None,
            });
        infos.push(CollectionInfo {
            name: name.into(),
            options: d.get_document("options").cloned().unwrap_or_default(),
            uuid,
        });
    }
    infos.sort_by(|a, b| a.name.cmp(&b.name));
    Ok((infos, skipped))
}

fn select(infos: Vec<CollectionInfo>, wanted: &[String], db: &str) -> Result<Vec<CollectionInfo>> {
    let unknown: Vec<&str> = wanted
        .iter()
        .filter(|w| !infos.iter().any(|i| &i.name == *w))
        .map(String::as_str)
        .collect();
    if !unknown.is_empty() {
        let known: Vec<&str> = infos.iter().map(|i| i.name.as_str()).collect();
        return Err(Error::usage(
            format!(
                "--collections names {} that database {db} does not have (or upstep does not back \
                 up: system.* and upstep_*)",
                unknown.join(", ")
            ),
            format!("choose from: {}", known.join(", ")),
        ));
    }
    Ok(infos
        .into_iter()
        .filter(|i| wanted.iter().any(|w| w == &i.name))
        .collect())
}

/// A manifest left by an earlier run must go before any file changes, so an interrupted re-run
/// cannot pass for complete. Refuses to mix two databases in one directory.
fn forget_old_manifest(out: &Path, db: &str) -> Result<()> {
    let path = out.join(MANIFEST_FILE);
    let Ok(text) = fs::read_to_string(&path) else {
        return Ok(());
    };
    if let Ok(old) = serde_json::from_str::<BackupManifest>(&text) {
        if old.database != db {
            return Err(Error::usage(
                format!(
                    "{} holds a backup of database {}, not {db}",
                    out.display(),
                    old.database
                ),
                "give another --out directory",
            ));
        }
    }
    fs::remove_file(&path).map_err(|e| io_error("remove", &path, e))
}

/// The paths of one collection's files.
struct Files {
    data: PathBuf,
    data_rel: String,
    metadata: PathBuf,
    metadata_rel: String,
    marker: PathBuf,
}

impl Files {
    fn new(out: &Path, db: &str, collection: &str, gzip: bool) -> Files {
        let stem = escape_name(collection);
        let gz = if gzip { ".gz" } else { "" };
        let data_rel = format!("{db}/{stem}.bson{gz}");
        let metadata_rel = format!("{db}/{stem}.metadata.json{gz}");
        Files {
            data: out.join(&data_rel),
            metadata: out.join(&metadata_rel),
            marker: out.join(format!("{db}/{stem}.done")),
            data_rel,
            metadata_rel,
        }
    }

    /// The marker's entry when an earlier run finished this collection and its files still
    /// match the marker's checksums; `None` means (re)do it.
    fn already_done(&self) -> Option<CollectionEntry> {
        let text = fs::read_to_string(&self.marker).ok()?;
        let mut entry: CollectionEntry = serde_json::from_str(&text).ok()?;
        if entry.file != self.data_rel || entry.metadata_file != self.metadata_rel {
            return None; // written with the other --gzip setting
        }
        let (sha, size) = hash_file(&self.data).ok()?;
        let (meta_sha, _) = hash_file(&self.metadata).ok()?;
        if sha != entry.sha256 || size != entry.bytes || meta_sha != entry.metadata_sha256 {
            return None;
        }
        entry.resumed = true;
        Some(entry)
    }
}

/// mongodump's file name for a collection: `/` and `%` percent-encoded.
pub(crate) fn escape_name(name: &str) -> String {
    name.replace('%', "%25").replace('/', "%2F")
}

async fn dump_collection(
    conn: &Connection,
    db: &Database,
    info: &CollectionInfo,
    files: &Files,
    session: &mut Option<ClientSession>,
    progress: &dyn Progress,
) -> Result<CollectionEntry> {
    // A stale marker must not outlive the files it describes.
    let _ = fs::remove_file(&files.marker);
    let coll = db.collection::<RawDocumentBuf>(&info.name);
    let started = Instant::now();
    let read_at = now_rfc3339();
    // Only a visible progress bar needs the total up front (its ETA).
    let count_before = if progress.shows_totals() {
        Some(
            coll.estimated_document_count()
                .await
                .map_err(|e| conn.error(&format!("count collection {} of", info.name), e))?,
        )
    } else {
        None
    };

    let (metadata_sha256, indexes) = write_metadata(conn, db, info, files).await?;

    progress.start(&info.name, count_before);
    let copy_started = Instant::now();
    let mut consistency = "per-collection";
    let mut result = None;
    if let Some(s) = session.as_mut() {
        match copy_documents(&coll, Some(s), files, progress).await {
            Ok(stats) => {
                consistency = "snapshot";
                result = Some(stats);
            }
            Err(CopyError::Driver(e)) if is_snapshot_problem(&e) => {
                tracing::warn!(
                    "{}: the snapshot read failed ({e}); reading it again without a snapshot, \
                     so this backup is consistent per collection only",
                    info.name
                );
                *session = None;
                progress.start(&info.name, count_before);
            }
            Err(e) => return Err(e.into_error(conn, &info.name, &files.data)),
        }
    }
    let stats = match result {
        Some(stats) => stats,
        None => copy_documents(&coll, None, files, progress)
            .await
            .map_err(|e| e.into_error(conn, &info.name, &files.data))?,
    };
    progress.finish(&info.name);
    tracing::debug!(
        "{}: counted and wrote metadata in {:?}, copied {} documents in {:?}",
        info.name,
        copy_started.duration_since(started),
        stats.documents,
        copy_started.elapsed()
    );

    let count_after = coll
        .estimated_document_count()
        .await
        .map_err(|e| conn.error(&format!("count collection {} of", info.name), e))?;
    Ok(CollectionEntry {
        name: info.name.clone(),
        file: files.data_rel.clone(),
        metadata_file: files.metadata_rel.clone(),
        documents: stats.documents,
        bytes: stats.file_bytes,
        bson_bytes: stats.bson_bytes,
        sha256: stats.sha256,
        metadata_sha256,
        indexes,
        read_at,
        consistency: consistency.into(),
        count_before,
        count_after,
        duration_ms: started.elapsed().as_millis() as u64,
        resumed: false,
    })
}

/// Writes `<coll>.metadata.json[.gz]` in mongodump's shape (canonical Extended JSON, keys in
/// mongodump's order) and returns its SHA-256 and the index names.
async fn write_metadata(
    conn: &Connection,
    db: &Database,
    info: &CollectionInfo,
    files: &Files,
) -> Result<(String, Vec<String>)> {
    use futures_util::TryStreamExt;
    let indexes: Vec<Document> = async {
        db.run_cursor_command(doc! { "listIndexes": &info.name })
            .await?
            .try_collect()
            .await
    }
    .await
    .map_err(|e| conn.error(&format!("list the indexes of {} in", info.name), e))?;
    let names = indexes
        .iter()
        .filter_map(|i| i.get_str("name").ok().map(String::from))
        .collect();

    let mut meta = serde_json::Map::new();
    meta.insert(
        "options".into(),
        Bson::Document(info.options.clone()).into_canonical_extjson(),
    );
    meta.insert(
        "indexes".into(),
        serde_json::Value::Array(
            indexes
                .into_iter()
                .map(|i| Bson::Document(i).into_canonical_extjson())
                .collect(),
        ),
    );
    if let Some(uuid) = &info.uuid {
        meta.insert("uuid".into(), uuid.clone().into());
    }
    meta.insert("collectionName".into(), info.name.clone().into());
    meta.insert("type".into(), "collection".into());
    let json = serde_json::to_vec(&serde_json::Value::Object(meta))
        .map_err(|e| Error::Internal(format!("cannot encode metadata of {}: {e}", info.name)))?;

    let gzip = files.metadata_rel.ends_with(".gz");
    let mut sink =
        Sink::create(&files.metadata, gzip).map_err(|e| io_error("create", &files.metadata, e))?;
    sink.write_all(&json)
        .map_err(|e| io_error("write", &files.metadata, e))?;
    let (sha, _) = sink
        .finish()
        .map_err(|e| io_error("write", &files.metadata, e))?;
    Ok((sha, names))
}

struct CopyStats {
    documents: u64,
    bson_bytes: u64,
    file_bytes: u64,
    sha256: String,
}

enum CopyError {
    Driver(mongodb::error::Error),
    Io(io::Error),
}

impl CopyError {
    fn into_error(self, conn: &Connection, collection: &str, path: &Path) -> Error {
        match self {
            CopyError::Driver(e) => conn.error(&format!("read collection {collection} of"), e),
            CopyError::Io(e) => io_error("write", path, e),
        }
    }
}

/// Whether the server really reads at a given cluster time: it must echo the `atClusterTime`
/// it was asked for (mongod does; a server that ignores it answers with the current time).
///
/// SecantusDB (a wire-compatible server used for tests) accepts `atClusterTime` but reads the
/// newest data anyway, while echoing the time back; it says who it is in `buildInfo`, so it is
/// recognised by name.
async fn snapshot_honoured(db: &Database, collection: &str, ts: bson::Timestamp) -> bool {
    if let Ok(info) = db.run_command(doc! { "buildInfo": 1 }).await {
        if info.contains_key("secantusVersion") {
            return false;
        }
    }
    let reply = db
        .run_command(doc! {
            "find": collection,
            "batchSize": 0,
            "readConcern": { "level": "snapshot", "atClusterTime": ts },
        })
        .await;
    match reply {
        Ok(reply) => {
            let echoed = reply
                .get_document("cursor")
                .ok()
                .and_then(|c| c.get_timestamp("atClusterTime").ok())
                .or_else(|| reply.get_timestamp("atClusterTime").ok());
            echoed == Some(ts)
        }
        Err(_) => false,
    }
}

/// Snapshot reads the server cannot serve (no snapshot support, or the read outlived the
/// server's snapshot history window): worth one more try without the snapshot.
fn is_snapshot_problem(e: &mongodb::error::Error) -> bool {
    match &*e.kind {
        mongodb::error::ErrorKind::Command(c) => {
            // SnapshotTooOld, SnapshotUnavailable, InvalidOptions, IllegalOperation,
            // NotImplemented/CommandNotSupported, ReadConcernMajorityNotEnabled.
            matches!(c.code, 239 | 246 | 72 | 20 | 238 | 115 | 148)
                || c.message.to_ascii_lowercase().contains("snapshot")
        }
        mongodb::error::ErrorKind::InvalidArgument { .. } => true,
        _ => false,
    }
}

/// Streams the collection (natural order) into its data file: the cursor runs here, the
/// compression, hashing and writing on a thread of their own, with a bounded queue between.
async fn copy_documents(
    coll: &mongodb::Collection<RawDocumentBuf>,
    session: Option<&mut ClientSession>,
    files: &Files,
    progress: &dyn Progress,
) -> std::result::Result<CopyStats, CopyError> {
    let gzip = files.data_rel.ends_with(".gz");
    let sink = Sink::create(&files.data, gzip).map_err(CopyError::Io)?;
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(CHUNKS_IN_FLIGHT);
    let writer = std::thread::spawn(move || -> io::Result<(String, u64)> {
        let mut sink = sink;
        while let Some(chunk) = rx.blocking_recv() {
            sink.write_all(&chunk)?;
        }
        sink.finish()
    });

    let mut chunk = Vec::with_capacity(CHUNK_BYTES + 64 * 1024);
    let mut chunk_docs = 0u64;
    let mut documents = 0u64;
    let mut bson_bytes = 0u64;
    // Natural order, as mongodump reads: on WiredTiger a document keeps its record id, so a
    // scan returns each document once, and an `_id`-ordered scan (index walk plus fetch) costs
    // 1.7x the time in scripts/bench-backup.sh for no gain in consistency (see docs/backup.md).
    let find = coll.find(doc! {}).batch_size(BATCH_DOCS);

    // Sends the chunk when full; a closed channel means the writer failed (reported below).
    macro_rules! push {
        ($raw:expr) => {{
            let bytes = $raw.as_bytes();
            chunk.extend_from_slice(bytes);
            chunk_docs += 1;
            documents += 1;
            bson_bytes += bytes.len() as u64;
            if chunk.len() >= CHUNK_BYTES {
                progress.advance(chunk_docs, chunk.len() as u64);
                chunk_docs = 0;
                let full =
                    std::mem::replace(&mut chunk, Vec::with_capacity(CHUNK_BYTES + 64 * 1024));
                if tx.send(full).await.is_err() {
                    break;
                }
            }
        }};
    }

    let read: std::result::Result<(), mongodb::error::Error> = async {
        match session {
            Some(s) => {
                let mut cursor = find.session(&mut *s).await?;
                while cursor.advance(s).await? {
                    push!(cursor.current());
                }
            }
            None => {
                let mut cursor = find.await?;
                while cursor.advance().await? {
                    push!(cursor.current());
                }
            }
        }
        Ok(())
    }
    .await;
    if read.is_ok() && !chunk.is_empty() {
        progress.advance(chunk_docs, chunk.len() as u64);
        let _ = tx.send(chunk).await;
    }
    drop(tx);
    let written = writer
        .join()
        .map_err(|_| CopyError::Io(io::Error::other("the writer thread panicked")))?;
    read.map_err(CopyError::Driver)?;
    let (sha256, file_bytes) = written.map_err(CopyError::Io)?;
    Ok(CopyStats {
        documents,
        bson_bytes,
        file_bytes,
        sha256,
    })
}

/// Counts and hashes what goes to the file (so the checksum is of the bytes on disk).
struct Hashing<W> {
    inner: W,
    hasher: Sha256,
    bytes: u64,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// A file being written: optionally gzip-compressed, always hashed.
enum Sink {
    Plain(Hashing<BufWriter<File>>),
    Gzip(GzEncoder<Hashing<BufWriter<File>>>),
}

impl Sink {
    fn create(path: &Path, gzip: bool) -> io::Result<Sink> {
        let file = create_private_file(path)?;
        let hashing = Hashing {
            inner: BufWriter::with_capacity(1 << 20, file),
            hasher: Sha256::new(),
            bytes: 0,
        };
        Ok(if gzip {
            Sink::Gzip(GzEncoder::new(hashing, Compression::fast()))
        } else {
            Sink::Plain(hashing)
        })
    }

    fn write_all(&mut self, data: &[u8]) -> io::Result<()> {
        match self {
            Sink::Plain(w) => w.write_all(data),
            Sink::Gzip(w) => w.write_all(data),
        }
    }

    /// Flushes, fsyncs, and returns the file's SHA-256 (hex) and size.
    fn finish(self) -> io::Result<(String, u64)> {
        let hashing = match self {
            Sink::Plain(w) => w,
            Sink::Gzip(w) => w.finish()?,
        };
        let Hashing {
            inner,
            hasher,
            bytes,
        } = hashing;
        let file = inner.into_inner().map_err(|e| e.into_error())?;
        let syncing = Instant::now();
        file.sync_all()?;
        tracing::debug!("fsync of {bytes} bytes took {:?}", syncing.elapsed());
        Ok((hex::encode(hasher.finalize()), bytes))
    }
}
