//! A local JSON-lines copy of the journal's events, in upstep's state directory, so the
//! history of a run survives a database that became unreachable mid-run (a dropped tunnel).

use std::io::Write;
use std::path::{Path, PathBuf};

use bson::Document;
use sha2::{Digest, Sha256};

/// Where upstep keeps local state: `$UPSTEP_STATE_DIR`, else the XDG state dir + `/upstep`.
pub fn state_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("UPSTEP_STATE_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    dirs::state_dir()
        .or_else(|| dirs::home_dir().map(|h| h.join(".local/state")))
        .unwrap_or_else(std::env::temp_dir)
        .join("upstep")
}

#[derive(Debug, Clone)]
pub struct Mirror {
    path: PathBuf,
}

impl Mirror {
    /// The mirror file of one database: named after a hash of its redacted URI, so two
    /// databases never share a file and no secret reaches a file name.
    pub fn for_database(state_dir: &Path, redacted_uri: &str) -> Mirror {
        let digest = Sha256::digest(redacted_uri.as_bytes());
        let name = format!("{}.jsonl", hex::encode(&digest[..8]));
        Mirror {
            path: state_dir.join("journal").join(name),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Append one event. Failing to write the mirror is logged, never fatal: the database
    /// journal is the record of truth.
    pub fn append(&self, event: &Document) {
        let line =
            serde_json::to_string(&bson::Bson::Document(event.clone()).into_relaxed_extjson())
                .unwrap_or_default();
        let result = self
            .path
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|_| {
                let mut file = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&self.path)?;
                file.write_all(format!("{line}\n").as_bytes())
            });
        if let Err(err) = result {
            tracing::warn!(
                "cannot write the local journal mirror {}: {err}",
                self.path.display()
            );
        }
    }

    /// Every event in the mirror (unparseable lines, e.g. a torn last line, are skipped).
    pub fn read(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.path)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }
}
