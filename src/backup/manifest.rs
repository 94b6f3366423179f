//! The manifest (`upstep-manifest.json`) and the per-collection done markers.
//!
//! The manifest is written last and atomically (temp file + rename): a directory without one,
//! or with one whose `complete` is not `true`, is an interrupted backup. Checksums are SHA-256
//! of the files exactly as they are on disk (compressed when `--gzip`), pinned by the schema
//! name: changing the algorithm means a new schema version.

use std::fs::{self, DirBuilder, File, OpenOptions, Permissions};
use std::io::{self, BufReader, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// The manifest's schema name; restore refuses any other.
pub const MANIFEST_SCHEMA: &str = crate::json_schemas::BACKUP_MANIFEST;
/// The manifest's file name, at the top of the backup directory.
pub const MANIFEST_FILE: &str = "upstep-manifest.json";

/// What a backup holds. `created_at` is when the backup began reading data (the earliest read of
/// any collection in it): journal steps that ran after it are not in the data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupManifest {
    pub schema: String,
    /// RFC 3339, UTC.
    pub created_at: String,
    pub database: String,
    /// The source URI with its password redacted.
    pub source: String,
    pub upstep_version: String,
    /// `snapshot`: every collection read at one cluster time; `per-collection`: each
    /// collection read by its own cursor (see docs/backup.md).
    pub consistency: String,
    /// The cluster time of the snapshot, when there was one (`{t, i}` as `t.i`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_time: Option<String>,
    pub gzip: bool,
    pub collections: Vec<CollectionEntry>,
    /// Collections seen but not backed up (views, time series), with why.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skipped: Vec<SkippedCollection>,
    /// Always `true` in a manifest on disk: written last, only when every collection is done.
    #[serde(default)]
    pub complete: bool,
}

/// One collection in a backup (also the content of its `.done` marker).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CollectionEntry {
    pub name: String,
    /// The data file, relative to the backup directory (`<db>/<coll>.bson[.gz]`).
    pub file: String,
    /// The metadata file, relative to the backup directory.
    pub metadata_file: String,
    pub documents: u64,
    /// Size of the data file on disk.
    pub bytes: u64,
    /// Uncompressed BSON bytes (equal to `bytes` without gzip).
    pub bson_bytes: u64,
    /// SHA-256 (hex) of the data file on disk.
    pub sha256: String,
    /// SHA-256 (hex) of the metadata file on disk.
    pub metadata_sha256: String,
    /// Index names, in listIndexes order (`_id_` included).
    pub indexes: Vec<String>,
    /// When this collection's read began (RFC 3339, UTC).
    pub read_at: String,
    /// `snapshot` or `per-collection`, as for the manifest.
    pub consistency: String,
    /// Estimated document counts before (only taken when a progress bar shows an ETA) and after
    /// the read: they differ from what was written when the collection was written to meanwhile
    /// (only a problem without a snapshot).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count_before: Option<u64>,
    pub count_after: u64,
    /// How long the read took, in milliseconds (0 when taken over from an earlier run).
    pub duration_ms: u64,
    /// Set when a re-run found this collection already done and kept it.
    #[serde(default)]
    pub resumed: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SkippedCollection {
    pub name: String,
    pub reason: String,
}

/// Reads and checks the manifest of the backup in `dir`: present, parseable, our schema, and
/// complete. Does not check the data files (`verify_files` does).
pub fn read_manifest(dir: &Path) -> Result<BackupManifest> {
    let path = dir.join(MANIFEST_FILE);
    if !dir.is_dir() {
        return Err(Error::usage(
            format!("backup directory {} does not exist", dir.display()),
            "give the directory `upstep backup --out` wrote",
        ));
    }
    let text = match fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(Error::usage(
                format!(
                    "{} has no {MANIFEST_FILE}: the backup was interrupted before it finished, \
                     or this is not an upstep backup",
                    dir.display()
                ),
                format!(
                    "run `upstep backup --out {}` again (it resumes), or give another backup",
                    dir.display()
                ),
            ))
        }
        Err(e) => {
            return Err(Error::usage(
                format!("cannot read {}: {e}", path.display()),
                "check the backup directory's permissions",
            ))
        }
    };
    let manifest: BackupManifest = serde_json::from_str(&text).map_err(|e| {
        Error::usage(
            format!("{} is not a valid upstep manifest: {e}", path.display()),
            "the backup is damaged: use another backup",
        )
    })?;
    if manifest.schema != MANIFEST_SCHEMA {
        return Err(Error::usage(
            format!(
                "{} has schema {:?}; this upstep reads {MANIFEST_SCHEMA:?}",
                path.display(),
                manifest.schema
            ),
            "restore it with the upstep version that wrote it",
        ));
    }
    if !manifest.complete {
        return Err(Error::usage(
            format!(
                "{} does not say the backup is complete: it was interrupted",
                path.display()
            ),
            format!(
                "run `upstep backup --out {}` again (it resumes), or give another backup",
                dir.display()
            ),
        ));
    }
    Ok(manifest)
}

/// Writes `value` as pretty JSON to `path` atomically: a temp file beside it, fsynced, renamed.
pub(crate) fn write_json_atomic<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let tmp = tmp_path(path);
    let write = || -> io::Result<()> {
        let mut file = create_private_file(&tmp)?;
        serde_json::to_writer_pretty(&mut file, value)?;
        file.write_all(b"\n")?;
        file.sync_all()?;
        fs::rename(&tmp, path)?;
        if let Some(parent) = path.parent() {
            // Make the rename itself durable; not every filesystem allows it, so best effort.
            if let Ok(dir) = File::open(parent) {
                let _ = dir.sync_all();
            }
        }
        Ok(())
    };
    write().map_err(|e| io_error("write", path, e))
}

/// Creates (or truncates) a backup file only its owner can read: a backup holds the whole
/// database, the integrations' credentials included.
pub(crate) fn create_private_file(path: &Path) -> io::Result<File> {
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    // A file that already existed keeps its mode on open.
    file.set_permissions(Permissions::from_mode(0o600))?;
    Ok(file)
}

/// Creates a backup directory (and missing parents) only its owner can enter, and tightens
/// one that already exists.
pub(crate) fn create_private_dir(path: &Path) -> io::Result<()> {
    DirBuilder::new().recursive(true).mode(0o700).create(path)?;
    fs::set_permissions(path, Permissions::from_mode(0o700))
}

fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    path.with_file_name(name)
}

/// SHA-256 (hex) and size of a file, read in 1 MiB blocks.
pub(crate) fn hash_file(path: &Path) -> io::Result<(String, u64)> {
    let mut reader = BufReader::with_capacity(1 << 20, File::open(path)?);
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = reader.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        size += n as u64;
    }
    Ok((hex::encode(hasher.finalize()), size))
}

/// An I/O failure on a backup file, naming the file.
pub(crate) fn io_error(what: &str, path: &Path, e: io::Error) -> Error {
    Error::usage(
        format!("cannot {what} {}: {e}", path.display()),
        "check that the directory exists, is writable and has free space",
    )
}
