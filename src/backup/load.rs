//! `restore`: verify a backup against its manifest, then load it back so that no collection is
//! ever left half-restored.
//!
//! Under the run lock, every collection is first loaded into a temporary collection of its own
//! (`upstep_restore_<run id>.<name>`, with its options and indexes) and checked; only when all
//! are loaded is each one swapped in by a single `renameCollection` with `dropTarget`, which the
//! server does atomically. A failure, a signal or a `kill -9` before the swaps leaves every
//! collection as it was; one during the swaps (milliseconds) leaves each collection either as it
//! was or fully restored, and the report says which. Temporary collections an interrupted
//! restore leaves behind are removed by the next one.

use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bson::{doc, Bson, Document, RawDocumentBuf};
use flate2::read::MultiGzDecoder;
use serde::Serialize;
use tokio::sync::mpsc;

use super::manifest::{hash_file, read_manifest, BackupManifest, CollectionEntry};
use super::progress::Progress;
use crate::error::{Error, Result};
use crate::mongo::Connection;
use crate::preflight::human_bytes;
use crate::store::journal::{Actor, StepStatus};
use crate::store::lock::{Acquire, LockDoc, RunLock};
use crate::store::Store;

/// Bytes of documents per insertMany (the server's message limit is 48 MB; the driver splits
/// further when needed).
const BATCH_BYTES: usize = 16 * 1024 * 1024;
/// The largest document MongoDB stores, plus room for its header.
const MAX_DOC_BYTES: usize = 16 * 1024 * 1024 + 16 * 1024;
/// The run lock's lease while a restore holds it (renewed every third of it).
const LEASE: Duration = Duration::from_secs(30);
/// Temporary collections are named `<TEMP_PREFIX><run id>.<collection>`. The `upstep_` prefix
/// keeps them out of backups and data checks.
pub const TEMP_PREFIX: &str = "upstep_restore_";

fn temp_name(run_id: &str, collection: &str) -> String {
    format!("{TEMP_PREFIX}{run_id}.{collection}")
}

/// How to restore.
#[derive(Debug, Clone, Default)]
pub struct RestoreOptions {
    /// Restore into this deployment/database instead (database from its path, else the
    /// backup's).
    pub to_uri: Option<crate::redact::Uri>,
    /// Only these collections of the backup.
    pub collections: Option<Vec<String>>,
    /// Replace target collections that already hold documents (otherwise they are refused).
    pub drop: bool,
}

/// What a restore did (also when it stopped early: `complete` is then `false` and each
/// collection's `state` says whether it was restored or left as it was).
#[derive(Debug, Clone, Serialize)]
pub struct RestoreReport {
    pub schema: &'static str,
    pub backup: String,
    pub backup_created_at: String,
    pub database: String,
    /// The target URI with its password redacted.
    pub target: String,
    /// Every collection was restored.
    pub complete: bool,
    pub collections: Vec<RestoredCollection>,
    /// Temporary collections of an earlier, interrupted restore that this one removed.
    pub leftovers_removed: Vec<String>,
    /// Temporary collections that could not be removed (the next restore removes them).
    pub leftovers_kept: Vec<String>,
    /// The room the restore needs on the server, and what the server reported free.
    pub server_space: ServerSpace,
    /// The holder of the run lock this restore took over (its process was gone or its lease
    /// had expired), if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lock_taken_over_from: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RestoredCollection {
    pub name: String,
    /// `restored` (fully, from the backup) or `unchanged` (as it was before the restore).
    pub state: CollectionState,
    /// Documents in the backup (and so in the collection once restored).
    pub documents: u64,
    pub bson_bytes: u64,
    pub indexes: usize,
    /// The collection held documents before and they were replaced (`--drop`).
    pub dropped: bool,
    pub duration_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CollectionState {
    Restored,
    Unchanged,
}

/// The server-side space check. A restore writes nothing locally, so the disk that matters is
/// the server's, which upstep only knows from what `dbStats` reports (`fsTotalSize`,
/// `fsUsedSize`; not every server reports them).
#[derive(Debug, Clone, Serialize)]
pub struct ServerSpace {
    /// The backup's uncompressed BSON bytes for the collections restored: an upper bound of the
    /// data's size on the server (which compresses it) before indexes. Until its swap, each
    /// restored collection exists twice on the server.
    pub needed_bytes: u64,
    /// Free bytes on the server's data disk, when the server says.
    pub free_bytes: Option<u64>,
}

/// A restore that stopped: the error, and which collections are restored and which unchanged.
#[derive(Debug)]
pub struct RestoreFailure {
    pub error: Error,
    pub report: RestoreReport,
}

/// The collection's metadata file, parsed.
struct Metadata {
    options: Document,
    indexes: Vec<Document>,
}

/// One collection to restore, and what the target holds under its name today.
struct Planned {
    entry: CollectionEntry,
    metadata: Metadata,
    /// The target's collection holds documents (and about how many).
    existing_documents: Option<u64>,
}

/// A restore that has checked the backup and the target and holds the run lock: nothing is
/// written yet. `run` does the work; `release` must follow (also after a refusal).
pub struct PreparedRestore {
    conn: Connection,
    store: Store,
    actor: Actor,
    backup: PathBuf,
    manifest: BackupManifest,
    planned: Vec<Planned>,
    drop: bool,
    leftovers: Vec<String>,
    space: ServerSpace,
    took_over: Option<String>,
    heartbeat: tokio::task::JoinHandle<()>,
    lost: Arc<AtomicBool>,
    stop: Arc<AtomicI32>,
}

/// Checks the backup (before the server is touched), connects, takes the run lock, and
/// inspects the target: collections with documents are refused unless `opts.drop`, and a
/// server that reports too little free space is refused. Nothing is written.
pub async fn prepare(
    uri: Option<&str>,
    dir: &Path,
    opts: &RestoreOptions,
) -> Result<PreparedRestore> {
    // 1. Everything about the backup is checked before the server is touched.
    let manifest = read_manifest(dir)?;
    let entries = select(&manifest, opts.collections.as_deref())?;
    let mut selected = Vec::with_capacity(entries.len());
    for entry in entries {
        verify_entry(dir, entry)?;
        let metadata = read_metadata(&dir.join(&entry.metadata_file), manifest.gzip)?;
        selected.push((entry.clone(), metadata));
    }

    // 2. The target.
    let (target_uri, flag) = match (&opts.to_uri, uri) {
        (Some(to), _) => (to.expose(), "--to-uri"),
        (None, Some(uri)) => (uri, "--mongo-uri"),
        (None, None) => {
            return Err(Error::usage(
                "no MongoDB to restore into",
                "pass --mongo-uri (or set UPSTEP_MONGO_URI / MONGO_URL), or --to-uri",
            ))
        }
    };
    let conn = Connection::open(target_uri, flag, false, Duration::from_secs(10)).await?;
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
    let store = Store {
        client: conn.client.clone(),
        db: conn.client.database(&db_name),
        redacted_uri: conn.redacted.clone(),
    };

    // 3. One run at a time: no upgrade (and no other restore) may write meanwhile.
    let actor = Actor::current();
    let took_over = take_lock(&store, &actor).await?;
    let lost = Arc::new(AtomicBool::new(false));
    let heartbeat = spawn_heartbeat(&store, actor.clone(), lost.clone());
    let mut prepared = PreparedRestore {
        conn,
        store,
        actor,
        backup: dir.to_path_buf(),
        manifest: manifest.clone(),
        planned: Vec::new(),
        drop: opts.drop,
        leftovers: Vec::new(),
        space: ServerSpace {
            needed_bytes: 0,
            free_bytes: None,
        },
        took_over,
        heartbeat,
        lost,
        stop: Arc::new(AtomicI32::new(0)),
    };
    match prepared.inspect(selected).await {
        Ok(()) => Ok(prepared),
        Err(e) => {
            prepared.release().await;
            Err(e)
        }
    }
}

/// Takes the run lock, or says who holds it. A holder whose process is gone (same host) is
/// taken over at once, unless a script it started still runs.
async fn take_lock(store: &Store, actor: &Actor) -> Result<Option<String>> {
    let lock = RunLock::new(store);
    match lock.try_acquire(actor, LEASE).await? {
        Acquire::Acquired { took_over } => Ok(took_over.map(|old| old.describe())),
        Acquire::Held(holder) if holder.holder.is_dead_local_process() => {
            refuse_if_its_script_runs(store, &holder).await?;
            if lock.take_over(&holder, actor, LEASE).await? {
                tracing::warn!(
                    "took over the run lock from {}: its process is gone",
                    holder.describe()
                );
                Ok(Some(holder.describe()))
            } else {
                Err(Error::Locked(
                    "the run lock changed hands while upstep tried to take it; nothing was \
                     restored: try again"
                        .into(),
                ))
            }
        }
        Acquire::Held(holder) => Err(Error::Locked(format!(
            "another upstep run holds the lock: {}; nothing was restored\n  fix: wait for it \
             to finish (its lease is renewed while it runs); if that run is certainly gone, run \
             `upstep unlock`",
            holder.describe()
        ))),
    }
}

/// A dead upgrade's script may outlive it: restoring under it would mix its writes in.
async fn refuse_if_its_script_runs(store: &Store, holder: &LockDoc) -> Result<()> {
    let entries = crate::store::journal::read_entries(store).await?;
    for entry in entries.values() {
        let theirs = entry
            .actor
            .as_ref()
            .is_some_and(|a| a.run_id == holder.holder.run_id);
        if let (true, StepStatus::Running, Some(pgid)) = (theirs, entry.status, entry.child_pgid) {
            if crate::runner::process::group_alive(pgid as i32) {
                return Err(Error::Locked(format!(
                    "the run that holds the lock ({}) is gone, but the script of its step {} \
                     still runs (process group {pgid}); nothing was restored\n  fix: end it \
                     (`kill -TERM -{pgid}`) and restore again",
                    holder.describe(),
                    entry.id
                )));
            }
        }
    }
    Ok(())
}

/// Renews the lease until aborted; sets `lost` when another run took the lock.
fn spawn_heartbeat(
    store: &Store,
    actor: Actor,
    lost: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<()> {
    let lock = RunLock::new(store);
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(LEASE / 3).await;
            match lock.renew(&actor, LEASE).await {
                Ok(true) => {}
                Ok(false) => {
                    tracing::error!("lost the run lock: another run took it over");
                    lost.store(true, Ordering::SeqCst);
                    return;
                }
                // A blip: the lease has slack (renewed three times per lease).
                Err(e) => tracing::warn!("could not renew the run lock: {e}"),
            }
        }
    })
}

impl PreparedRestore {
    /// What the target holds under each name, leftovers of earlier restores, and the space.
    async fn inspect(&mut self, selected: Vec<(CollectionEntry, Metadata)>) -> Result<()> {
        let db = &self.store.db;
        let existing = db
            .list_collection_names()
            .await
            .map_err(|e| self.conn.error("list the collections of", e))?;
        self.leftovers = existing
            .iter()
            .filter(|name| name.starts_with(TEMP_PREFIX))
            .cloned()
            .collect();
        self.leftovers.sort();

        let mut non_empty = Vec::new();
        for (entry, metadata) in selected {
            let mut existing_documents = None;
            if existing.contains(&entry.name) {
                let coll = db.collection::<Document>(&entry.name);
                let any = coll.count_documents(doc! {}).limit(1).await.map_err(|e| {
                    self.conn
                        .error(&format!("count collection {} of", entry.name), e)
                })?;
                if any > 0 {
                    let about = coll.estimated_document_count().await.unwrap_or(any);
                    existing_documents = Some(about.max(1));
                    non_empty.push(entry.name.clone());
                }
            }
            self.planned.push(Planned {
                entry,
                metadata,
                existing_documents,
            });
        }
        if !non_empty.is_empty() && !self.drop {
            return Err(Error::usage(
                format!(
                    "database {} already has documents in {}: restoring would mix them with \
                     the backup",
                    self.database(),
                    non_empty.join(", ")
                ),
                "pass --drop to replace those collections with the backup's, or restore into \
                 another database with --to-uri",
            ));
        }

        self.space.needed_bytes = self.planned.iter().map(|p| p.entry.bson_bytes).sum();
        self.space.free_bytes = server_free_bytes(db).await;
        match self.space.free_bytes {
            Some(free) if free < self.space.needed_bytes => Err(Error::Preflight(format!(
                "the MongoDB server reports {} free on its data disk, and this restore needs \
                 up to {} there (the backup's uncompressed size; each collection exists twice \
                 until it is swapped in); nothing was restored\n  fix: free space on the \
                 server's disk, or restore fewer collections at a time with --collections",
                human_bytes(free),
                human_bytes(self.space.needed_bytes)
            ))),
            Some(_) => Ok(()),
            None => {
                tracing::warn!(
                    "the server does not report its free disk space: make sure it has {} free \
                     (the backup's uncompressed size)",
                    human_bytes(self.space.needed_bytes)
                );
                Ok(())
            }
        }
    }

    pub fn database(&self) -> &str {
        self.store.db.name()
    }

    /// The target with its password redacted.
    pub fn target(&self) -> &str {
        &self.conn.redacted
    }

    /// When the backup began reading data (RFC 3339).
    pub fn backup_created_at(&self) -> &str {
        &self.manifest.created_at
    }

    /// Collections holding documents that the restore replaces, with about how many.
    pub fn replaces(&self) -> Vec<(String, u64)> {
        self.planned
            .iter()
            .filter_map(|p| p.existing_documents.map(|n| (p.entry.name.clone(), n)))
            .collect()
    }

    /// Set it to a signal number to stop the restore: it stops before its next batch (or, once
    /// every collection is loaded, after the swaps: milliseconds on mongod).
    pub fn stop_flag(&self) -> Arc<AtomicI32> {
        self.stop.clone()
    }

    /// The connection and run identity the restore holds the lock with (for the journal).
    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn actor(&self) -> &Actor {
        &self.actor
    }

    /// Loads every collection into its temporary collection, then swaps each in. On failure
    /// the report says which collections are restored and which unchanged.
    pub async fn run(
        &self,
        progress: &dyn Progress,
    ) -> std::result::Result<RestoreReport, RestoreFailure> {
        let mut report = self.report();
        let db = &self.store.db;
        for name in &self.leftovers {
            match db.collection::<Document>(name).drop().await {
                Ok(()) => report.leftovers_removed.push(name.clone()),
                Err(e) => {
                    tracing::warn!("cannot remove {name}, left by an earlier restore: {e}");
                    report.leftovers_kept.push(name.clone());
                }
            }
        }
        if !report.leftovers_removed.is_empty() {
            tracing::info!(
                "removed {} an interrupted restore left: {}",
                crate::words::count(report.leftovers_removed.len(), "temporary collection"),
                report.leftovers_removed.join(", ")
            );
        }

        // 1. Load: nothing the application reads changes.
        let mut temps: Vec<String> = Vec::with_capacity(self.planned.len());
        for (i, planned) in self.planned.iter().enumerate() {
            let started = Instant::now();
            if let Some(error) = self.stop_requested() {
                return Err(self.abandon(report, &temps, error).await);
            }
            let temp = temp_name(&self.actor.run_id, &planned.entry.name);
            temps.push(temp.clone());
            if let Err(error) = self.load_one(planned, &temp, progress).await {
                return Err(self.abandon(report, &temps, error).await);
            }
            report.collections[i].duration_ms = started.elapsed().as_millis() as u64;
            tracing::debug!(
                "{}: loaded into {temp} in {:?}",
                planned.entry.name,
                started.elapsed()
            );
        }
        if let Some(error) = self.stop_requested() {
            return Err(self.abandon(report, &temps, error).await);
        }

        // 2. Swap: one atomic rename per collection. A stop request waits for the end of the
        // swaps (milliseconds), so that the database is not left part old, part restored.
        for (i, planned) in self.planned.iter().enumerate() {
            let name = &planned.entry.name;
            if self.lost.load(Ordering::SeqCst) {
                let error = Error::Locked(
                    "another run took the run lock over while the restore ran (was the \
                     network down for a whole lease?)"
                        .into(),
                );
                return Err(self.abandon(report, &temps[i..], error).await);
            }
            if !self.drop {
                let written = db
                    .collection::<Document>(name)
                    .count_documents(doc! {})
                    .limit(1)
                    .await
                    .map_err(|e| self.conn.error(&format!("count collection {name} of"), e));
                let error = match written {
                    Ok(0) => None,
                    Ok(_) => Some(Error::usage(
                        format!(
                            "collection {name} got documents while the restore ran; it was \
                             left as it is"
                        ),
                        "stop the application, then restore again (with --drop to replace \
                         what it wrote)",
                    )),
                    Err(e) => Some(e),
                };
                if let Some(error) = error {
                    return Err(self.abandon(report, &temps[i..], error).await);
                }
            }
            let swap_started = Instant::now();
            let swapped = self
                .conn
                .client
                .database("admin")
                .run_command(doc! {
                    "renameCollection": format!("{}.{}", self.database(), temps[i]),
                    "to": format!("{}.{name}", self.database()),
                    "dropTarget": true,
                })
                .await;
            if let Err(e) = swapped {
                let error = self
                    .conn
                    .error(&format!("swap the restored {name} into"), e);
                return Err(self.abandon(report, &temps[i..], error).await);
            }
            report.collections[i].state = CollectionState::Restored;
            tracing::debug!("{name}: swapped in in {:?}", swap_started.elapsed());
        }
        report.complete = true;
        Ok(report)
    }

    /// Creates the temporary collection with the backup's options, loads and counts its
    /// documents, then builds its indexes.
    async fn load_one(&self, planned: &Planned, temp: &str, progress: &dyn Progress) -> Result<()> {
        let entry = &planned.entry;
        let db = &self.store.db;
        let mut create = doc! { "create": temp };
        create.extend(planned.metadata.options.clone());
        db.run_command(create).await.map_err(|e| {
            self.conn.error(
                &format!("create a temporary collection for {} in", entry.name),
                e,
            )
        })?;

        let coll = db.collection::<RawDocumentBuf>(temp);
        progress.start(&entry.name, Some(entry.documents));
        let documents = self
            .load_documents(&coll, &entry.name, &self.backup.join(&entry.file), progress)
            .await?;
        progress.finish(&entry.name);

        tracing::debug!("{}: {documents} documents inserted", entry.name);
        // Counted before the indexes exist: a TTL index could start expiring documents.
        let count = coll.count_documents(doc! {}).await.map_err(|e| {
            self.conn
                .error(&format!("count the restored {} in", entry.name), e)
        })?;
        if count != entry.documents || documents != entry.documents {
            return Err(Error::Internal(format!(
                "restore of {} did not verify: the manifest lists {} documents, {documents} were \
                 read from {} and the collection holds {count}",
                entry.name, entry.documents, entry.file
            )));
        }

        let specs = index_specs(&planned.metadata);
        if !specs.is_empty() {
            db.run_command(doc! { "createIndexes": temp, "indexes": specs })
                .await
                .map_err(|e| {
                    self.conn
                        .error(&format!("create the indexes of {} in", entry.name), e)
                })?;
        }
        Ok(())
    }

    /// Reads `.bson[.gz]` documents on a thread and inserts them in batches of ~16 MB,
    /// stopping before the next batch when asked to.
    async fn load_documents(
        &self,
        coll: &mongodb::Collection<RawDocumentBuf>,
        name: &str,
        path: &Path,
        progress: &dyn Progress,
    ) -> Result<u64> {
        let gzip = self.manifest.gzip;
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
        let mut failure = None;
        while let Some((batch, batch_bytes)) = rx.recv().await {
            if let Some(stop) = self.stop_requested() {
                failure = Some(stop);
                break;
            }
            let n = batch.len() as u64;
            // Documents are restored as they were, even those an added validator would refuse.
            let inserted = coll
                .insert_many(batch)
                .ordered(false)
                .bypass_document_validation(true)
                .await;
            if let Err(e) = inserted {
                failure = Some(
                    self.conn
                        .error(&format!("insert into the restored {name} in"), e),
                );
                break;
            }
            documents += n;
            progress.advance(n, batch_bytes);
        }
        drop(rx);
        let read = reader
            .join()
            .map_err(|_| Error::Internal("the backup reader thread panicked".into()))?;
        if let Some(error) = failure {
            return Err(error);
        }
        read.map_err(|e| {
            Error::usage(
                format!("cannot read backup file {}: {e}", path.display()),
                "use an intact copy of the backup (or take a new one)",
            )
        })?;
        Ok(documents)
    }

    fn stop_requested(&self) -> Option<Error> {
        match self.stop.load(Ordering::SeqCst) {
            0 => None,
            libc::SIGINT => Some(Error::Interrupted),
            _ => Some(Error::Terminated),
        }
    }

    /// Stops the restore: removes the temporary collections not swapped in (`temps`), and
    /// returns the error with the report of what is restored and what is unchanged.
    async fn abandon(
        &self,
        mut report: RestoreReport,
        temps: &[String],
        error: Error,
    ) -> RestoreFailure {
        for temp in temps {
            let coll = self.store.db.collection::<Document>(temp);
            if let Err(e) = coll.drop().await {
                tracing::warn!("cannot remove the temporary collection {temp}: {e}");
                report.leftovers_kept.push(temp.clone());
            }
        }
        RestoreFailure { error, report }
    }

    /// The report before anything is done: every collection unchanged.
    fn report(&self) -> RestoreReport {
        RestoreReport {
            schema: crate::json_schemas::RESTORE,
            backup: self.backup.display().to_string(),
            backup_created_at: self.manifest.created_at.clone(),
            database: self.database().to_string(),
            target: self.conn.redacted.clone(),
            complete: false,
            collections: self
                .planned
                .iter()
                .map(|p| RestoredCollection {
                    name: p.entry.name.clone(),
                    state: CollectionState::Unchanged,
                    documents: p.entry.documents,
                    bson_bytes: p.entry.bson_bytes,
                    indexes: index_specs(&p.metadata).len(),
                    dropped: p.existing_documents.is_some(),
                    duration_ms: 0,
                })
                .collect(),
            leftovers_removed: Vec::new(),
            leftovers_kept: Vec::new(),
            server_space: self.space.clone(),
            lock_taken_over_from: self.took_over.clone(),
        }
    }

    /// Releases the run lock (best effort: an unreachable server lets the lease expire).
    pub async fn release(self) {
        self.heartbeat.abort();
        if let Err(e) = RunLock::new(&self.store).release(&self.actor).await {
            tracing::warn!("could not release the run lock (its lease expires by itself): {e}");
        }
    }
}

/// Free bytes on the server's data disk from `dbStats` (`fsTotalSize - fsUsedSize`), when
/// the server reports them.
async fn server_free_bytes(db: &mongodb::Database) -> Option<u64> {
    let stats = db
        .run_command(doc! { "dbStats": 1, "scale": 1 })
        .await
        .ok()?;
    let number = |key: &str| match stats.get(key)? {
        Bson::Double(v) => Some(*v as u64),
        Bson::Int32(v) => u64::try_from(*v).ok(),
        Bson::Int64(v) => u64::try_from(*v).ok(),
        _ => None,
    };
    let (total, used) = (number("fsTotalSize")?, number("fsUsedSize")?);
    (total > 0).then(|| total.saturating_sub(used))
}

/// The index specs to build: all but `_id_` (every collection has it), without `ns`.
fn index_specs(metadata: &Metadata) -> Vec<Document> {
    metadata
        .indexes
        .iter()
        .filter(|i| i.get_str("name").ok() != Some("_id_"))
        .map(|i| {
            let mut i = i.clone();
            i.remove("ns");
            i
        })
        .collect()
}

/// Restores the backup in `dir` without asking (the caller has decided, e.g. with `drop`):
/// prepare, run, release. The error of a restore that stopped is returned as it is; the
/// command prints which collections are which.
pub(crate) async fn run(
    uri: Option<&str>,
    dir: &Path,
    opts: &RestoreOptions,
    progress: &dyn Progress,
) -> Result<RestoreReport> {
    let prepared = prepare(uri, dir, opts).await?;
    let outcome = prepared.run(progress).await;
    prepared.release().await;
    outcome.map_err(|failure| failure.error)
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
