//! `restore`: verify a backup against its manifest, then load it back collection by collection.

use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};
use std::time::Instant;

use bson::{doc, Bson, Document, RawDocumentBuf};
use flate2::read::MultiGzDecoder;
use mongodb::error::ErrorKind;
use serde::Serialize;
use tokio::sync::mpsc;

use super::conn::Connection;
use super::manifest::{hash_file, read_manifest, BackupManifest, CollectionEntry};
use super::progress::Progress;
use crate::error::{Error, Result};

/// Bytes of documents per insertMany (the server's message limit is 48 MB; the driver splits
/// further when needed).
const BATCH_BYTES: usize = 16 * 1024 * 1024;
/// The largest document MongoDB stores, plus room for its header.
const MAX_DOC_BYTES: usize = 16 * 1024 * 1024 + 16 * 1024;

/// How to restore.
#[derive(Debug, Clone, Default)]
pub struct RestoreOptions {
    /// Restore into this deployment/database instead (database from its path, else the
    /// backup's).
    pub to_uri: Option<String>,
    /// Only these collections of the backup.
    pub collections: Option<Vec<String>>,
    /// Drop target collections that already hold documents (otherwise they are refused).
    pub drop: bool,
}

/// What a restore did.
#[derive(Debug, Clone, Serialize)]
pub struct RestoreReport {
    pub schema: &'static str,
    pub backup: String,
    pub backup_created_at: String,
    pub database: String,
    /// The target URI with its password redacted.
    pub target: String,
    pub collections: Vec<RestoredCollection>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RestoredCollection {
    pub name: String,
    pub documents: u64,
    pub bson_bytes: u64,
    pub indexes: usize,
    pub dropped: bool,
    pub duration_ms: u64,
}

/// The collection's metadata file, parsed.
struct Metadata {
    options: Document,
    indexes: Vec<Document>,
}

pub(crate) async fn run(
    uri: Option<&str>,
    dir: &Path,
    opts: &RestoreOptions,
    progress: &dyn Progress,
) -> Result<RestoreReport> {
    // 1. Everything about the backup is checked before the server is touched.
    let manifest = read_manifest(dir)?;
    let entries = select(&manifest, opts.collections.as_deref())?;
    let mut metadata = Vec::with_capacity(entries.len());
    for entry in &entries {
        verify_entry(dir, entry)?;
        metadata.push(read_metadata(
            &dir.join(&entry.metadata_file),
            manifest.gzip,
        )?);
    }

    // 2. The target.
    let (target_uri, flag) = match (&opts.to_uri, uri) {
        (Some(to), _) => (to.as_str(), "--to-uri"),
        (None, Some(uri)) => (uri, "--mongo-uri"),
        (None, None) => {
            return Err(Error::usage(
                "no MongoDB to restore into",
                "pass --mongo-uri (or set UPSTEP_MONGO_URI / MONGO_URL), or --to-uri",
            ))
        }
    };
    let conn = Connection::open(target_uri, flag, false).await?;
    let db_name = match (&conn.database, opts.to_uri.is_some()) {
        (Some(db), true) => db.clone(),
        (Some(db), false) if db != &manifest.database => {
            return Err(Error::usage(
                format!(
                    "the backup is of database {} but --mongo-uri names {db}",
                    manifest.database
                ),
                "to restore into another database, give it with --to-uri",
            ))
        }
        _ => manifest.database.clone(),
    };
    let db = conn.client.database(&db_name);

    // 3. Never overwrite data silently.
    let mut non_empty = Vec::new();
    for entry in &entries {
        let count = db
            .collection::<Document>(&entry.name)
            .count_documents(doc! {})
            .limit(1)
            .await
            .map_err(|e| conn.error(&format!("count collection {} of", entry.name), e))?;
        if count > 0 {
            non_empty.push(entry.name.as_str());
        }
    }
    if !non_empty.is_empty() && !opts.drop {
        return Err(Error::usage(
            format!(
                "database {db_name} already has documents in {}: restoring would mix them with \
                 the backup",
                non_empty.join(", ")
            ),
            "pass --drop to replace those collections with the backup's, or restore into \
             another database with --to-uri",
        ));
    }

    // 4. Load.
    let mut restored = Vec::with_capacity(entries.len());
    for (entry, meta) in entries.iter().zip(metadata) {
        let started = Instant::now();
        let coll = db.collection::<RawDocumentBuf>(&entry.name);
        let dropped = opts.drop;
        if dropped {
            coll.drop()
                .await
                .map_err(|e| conn.error(&format!("drop collection {} of", entry.name), e))?;
        }
        if !meta.options.is_empty() {
            let mut create = doc! { "create": &entry.name };
            create.extend(meta.options.clone());
            match db.run_command(create).await {
                Ok(_) => {}
                // An empty collection already there (no --drop): keep it as it is.
                Err(e) if matches!(&*e.kind, ErrorKind::Command(c) if c.code == 48) => {}
                Err(e) => {
                    return Err(conn.error(&format!("create collection {} in", entry.name), e))
                }
            }
        }
        progress.start(&entry.name, Some(entry.documents));
        let (documents, bson_bytes) = load_documents(
            &conn,
            &coll,
            &dir.join(&entry.file),
            manifest.gzip,
            progress,
        )
        .await?;
        progress.finish(&entry.name);

        let specs: Vec<Document> = meta
            .indexes
            .into_iter()
            .filter(|i| i.get_str("name").ok() != Some("_id_"))
            .map(|mut i| {
                i.remove("ns");
                i
            })
            .collect();
        let indexes = specs.len();
        if !specs.is_empty() {
            db.run_command(doc! { "createIndexes": &entry.name, "indexes": specs })
                .await
                .map_err(|e| conn.error(&format!("create the indexes of {} in", entry.name), e))?;
        }

        let count = coll
            .count_documents(doc! {})
            .await
            .map_err(|e| conn.error(&format!("count collection {} of", entry.name), e))?;
        if count != entry.documents || documents != entry.documents {
            return Err(Error::Internal(format!(
                "restore of {} did not verify: the manifest lists {} documents, {documents} were \
                 read from {} and the collection now holds {count}",
                entry.name, entry.documents, entry.file
            )));
        }
        restored.push(RestoredCollection {
            name: entry.name.clone(),
            documents,
            bson_bytes,
            indexes,
            dropped,
            duration_ms: started.elapsed().as_millis() as u64,
        });
    }

    Ok(RestoreReport {
        schema: "upstep.restore/1",
        backup: dir.display().to_string(),
        backup_created_at: manifest.created_at.clone(),
        database: db_name,
        target: conn.redacted.clone(),
        collections: restored,
    })
}

fn select<'m>(
    manifest: &'m BackupManifest,
    wanted: Option<&[String]>,
) -> Result<Vec<&'m CollectionEntry>> {
    let Some(wanted) = wanted else {
        return Ok(manifest.collections.iter().collect());
    };
    let unknown: Vec<&str> = wanted
        .iter()
        .filter(|w| !manifest.collections.iter().any(|c| &c.name == *w))
        .map(String::as_str)
        .collect();
    if !unknown.is_empty() {
        let known: Vec<&str> = manifest
            .collections
            .iter()
            .map(|c| c.name.as_str())
            .collect();
        return Err(Error::usage(
            format!("the backup has no collection {}", unknown.join(", ")),
            format!("choose from: {}", known.join(", ")),
        ));
    }
    Ok(manifest
        .collections
        .iter()
        .filter(|c| wanted.contains(&c.name))
        .collect())
}

/// Checks a collection's two files against the manifest: present, same size, same SHA-256.
pub(crate) fn verify_entry(dir: &Path, entry: &CollectionEntry) -> Result<()> {
    let data = dir.join(&entry.file);
    let (sha, size) =
        hash_file(&data).map_err(|e| damaged(&data, &format!("cannot be read ({e})")))?;
    if size != entry.bytes {
        return Err(damaged(
            &data,
            &format!(
                "has {size} bytes, the manifest says {}: it is truncated or was changed",
                entry.bytes
            ),
        ));
    }
    if sha != entry.sha256 {
        return Err(damaged(
            &data,
            "does not match its SHA-256 in the manifest: it was changed",
        ));
    }
    let meta = dir.join(&entry.metadata_file);
    let (sha, _) =
        hash_file(&meta).map_err(|e| damaged(&meta, &format!("cannot be read ({e})")))?;
    if sha != entry.metadata_sha256 {
        return Err(damaged(
            &meta,
            "does not match its SHA-256 in the manifest: it was changed",
        ));
    }
    Ok(())
}

fn damaged(path: &Path, what: &str) -> Error {
    Error::usage(
        format!(
            "backup file {} {what}; nothing was restored",
            path.display()
        ),
        "use an intact copy of the backup (or take a new one)",
    )
}

fn open_reader(path: &Path, gzip: bool) -> io::Result<Box<dyn Read + Send>> {
    let file = BufReader::with_capacity(1 << 20, File::open(path)?);
    Ok(if gzip {
        Box::new(BufReader::with_capacity(1 << 20, MultiGzDecoder::new(file)))
    } else {
        Box::new(file)
    })
}

fn read_metadata(path: &Path, gzip: bool) -> Result<Metadata> {
    let bad = |what: String| {
        Error::usage(
            format!("metadata file {} {what}", path.display()),
            "use an intact copy of the backup (or take a new one)",
        )
    };
    let mut text = String::new();
    open_reader(path, gzip)
        .and_then(|mut r| r.read_to_string(&mut text))
        .map_err(|e| bad(format!("cannot be read: {e}")))?;
    let value: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| bad(format!("is not JSON: {e}")))?;
    let doc = match Bson::try_from(value) {
        Ok(Bson::Document(d)) => d,
        Ok(_) => return Err(bad("is not a JSON object".into())),
        Err(e) => return Err(bad(format!("is not Extended JSON: {e}"))),
    };
    let options = doc.get_document("options").cloned().unwrap_or_default();
    let indexes = match doc.get_array("indexes") {
        Ok(list) => list
            .iter()
            .filter_map(|i| i.as_document().cloned())
            .collect(),
        Err(_) => Vec::new(),
    };
    Ok(Metadata { options, indexes })
}

/// Reads `.bson[.gz]` documents on a thread and inserts them in batches of ~16 MB.
async fn load_documents(
    conn: &Connection,
    coll: &mongodb::Collection<RawDocumentBuf>,
    path: &Path,
    gzip: bool,
    progress: &dyn Progress,
) -> Result<(u64, u64)> {
    let (tx, mut rx) = mpsc::channel::<(Vec<RawDocumentBuf>, u64)>(2);
    let reader_path: PathBuf = path.to_path_buf();
    let reader = std::thread::spawn(move || -> io::Result<()> {
        let mut input = open_reader(&reader_path, gzip)?;
        let mut batch = Vec::new();
        let mut batch_bytes = 0usize;
        while let Some(doc) = read_document(&mut input)? {
            batch_bytes += doc.as_bytes().len();
            batch.push(doc);
            if batch_bytes >= BATCH_BYTES {
                let full = std::mem::take(&mut batch);
                if tx.blocking_send((full, batch_bytes as u64)).is_err() {
                    return Ok(());
                }
                batch_bytes = 0;
            }
        }
        if !batch.is_empty() {
            let _ = tx.blocking_send((batch, batch_bytes as u64));
        }
        Ok(())
    });

    let mut documents = 0u64;
    let mut bytes = 0u64;
    let mut insert_error = None;
    while let Some((batch, batch_bytes)) = rx.recv().await {
        let n = batch.len() as u64;
        if let Err(e) = coll.insert_many(batch).ordered(false).await {
            insert_error = Some(e);
            break;
        }
        documents += n;
        bytes += batch_bytes;
        progress.advance(n, batch_bytes);
    }
    drop(rx);
    let read = reader
        .join()
        .map_err(|_| Error::Internal("the backup reader thread panicked".into()))?;
    if let Some(e) = insert_error {
        return Err(conn.error(&format!("insert into collection {} of", coll.name()), e));
    }
    read.map_err(|e| {
        Error::usage(
            format!("cannot read backup file {}: {e}", path.display()),
            "use an intact copy of the backup (or take a new one)",
        )
    })?;
    Ok((documents, bytes))
}

/// The next document of a mongodump `.bson` stream, or `None` at a clean end.
fn read_document(input: &mut dyn Read) -> io::Result<Option<RawDocumentBuf>> {
    let mut header = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        let n = input.read(&mut header[got..])?;
        if n == 0 {
            if got == 0 {
                return Ok(None);
            }
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the file ends inside a document",
            ));
        }
        got += n;
    }
    let len = i32::from_le_bytes(header);
    if len < 5 || len as usize > MAX_DOC_BYTES {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("a document claims {len} bytes: not BSON"),
        ));
    }
    let mut bytes = vec![0u8; len as usize];
    bytes[..4].copy_from_slice(&header);
    input.read_exact(&mut bytes[4..])?;
    RawDocumentBuf::from_bytes(bytes)
        .map(Some)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))
}
