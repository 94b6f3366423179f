//! Backup and restore of the deployment's database, so "back up first" is one keystroke and the
//! way back is real (legacy migration scripts are not reversible).
//!
//! The format is mongodump's directory format, `<out>/<db>/<coll>.bson[.gz]` (raw BSON documents,
//! concatenated, bytes exactly as the server returned them) and `<coll>.metadata.json[.gz]`
//! (options and indexes as canonical Extended JSON), plus upstep's `upstep-manifest.json` with
//! counts and SHA-256 checksums, written last. See docs/backup.md.

mod dump;
mod load;
mod manifest;
mod progress;

use std::path::{Path, PathBuf};

pub use crate::redact::redact_uri;
pub use load::{
    prepare as prepare_restore, CollectionState, PreparedRestore, RestoreFailure, RestoreOptions,
    RestoreReport, RestoredCollection, ServerSpace, TEMP_PREFIX,
};
pub use manifest::{
    BackupManifest, CollectionEntry, SkippedCollection, MANIFEST_FILE, MANIFEST_SCHEMA,
};
pub use progress::{BarProgress, NoProgress, Progress};

use crate::error::Result;

/// What to back up, and where.
#[derive(Debug, Clone)]
pub struct BackupOptions {
    /// The backup directory (`<out_dir>/<db>/...` and `<out_dir>/upstep-manifest.json`).
    pub out_dir: PathBuf,
    /// Only these collections (each must exist); `None`: all but `system.*` and `upstep_*`.
    pub collections: Option<Vec<String>>,
    /// Write `.bson.gz` / `.metadata.json.gz`, like `mongodump --gzip`.
    pub gzip: bool,
}

/// Backs up the database named in `uri`'s path into `opts.out_dir`. Resumes an interrupted
/// backup in the same directory: collections whose files match their `.done` marker are kept.
pub async fn backup(
    uri: &str,
    opts: &BackupOptions,
    progress: &dyn Progress,
) -> Result<BackupManifest> {
    dump::run(uri, opts, progress).await
}

/// Restores the backup in `dir`. The target is `opts.to_uri` if given (database from its path,
/// else the backup's), else `uri` (whose database, if it names one, must be the backup's).
/// The backup is verified against its manifest before anything is written; the restore holds
/// the run lock and swaps each collection in whole (see `load`). No confirmation is asked:
/// `opts.drop` is the caller's decision (`prepare_restore` lets a command ask first).
pub async fn restore(
    uri: Option<&str>,
    dir: &Path,
    opts: &RestoreOptions,
    progress: &dyn Progress,
) -> Result<RestoreReport> {
    load::run(uri, dir, opts, progress).await
}

/// Reads and checks the manifest of a backup (present, schema, complete). For the journal:
/// `created_at` is when the backup began reading data.
pub fn read_manifest(dir: &Path) -> Result<BackupManifest> {
    manifest::read_manifest(dir)
}

/// Checks every file of a backup against its manifest (sizes and SHA-256), without a server.
pub fn verify(dir: &Path) -> Result<BackupManifest> {
    let manifest = manifest::read_manifest(dir)?;
    for entry in &manifest.collections {
        load::verify_entry(dir, entry)?;
    }
    Ok(manifest)
}

/// Collections a backup never includes: the server's `system.*` and upstep's own `upstep_*`
/// (journal, events, lock: a restore must never roll upstep's history back; and the temporary
/// collections of a restore).
pub fn is_excluded(collection: &str) -> bool {
    collection.starts_with("system.") || collection.starts_with("upstep_")
}

/// Now as RFC 3339 UTC with milliseconds (fixed width, so these strings sort by time).
pub(crate) fn now_rfc3339() -> String {
    rfc3339_millis(bson::DateTime::now().timestamp_millis())
}

pub(crate) use crate::date::rfc3339_millis;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_rfc3339_utc() {
        assert_eq!(rfc3339_millis(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_millis(951_782_400_123), "2000-02-29T00:00:00.123Z");
        assert_eq!(
            rfc3339_millis(1_719_835_199_999),
            "2024-07-01T11:59:59.999Z"
        );
    }

    #[test]
    fn excludes_system_and_upstep_collections() {
        assert!(is_excluded("system.views"));
        assert!(is_excluded("upstep_journal"));
        assert!(!is_excluded("subscribers"));
        assert!(!is_excluded("systemic"));
    }
}
