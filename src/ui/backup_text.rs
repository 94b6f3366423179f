//! The text and JSON of `upstep backup` and `upstep restore`: the summary of a backup, of a
//! restore, and of a restore that stopped.

use std::path::Path;

use serde::Serialize;

use crate::backup::{BackupManifest, CollectionState, RestoreReport};
use crate::preflight::human_bytes;

/// `upstep backup --json`.
#[derive(Debug, Serialize)]
pub struct BackupSummary {
    schema: &'static str,
    out: String,
    database: String,
    created_at: String,
    consistency: String,
    documents: u64,
    bytes: u64,
    seconds: f64,
    collections: Vec<CollectionSummary>,
}

#[derive(Debug, Serialize)]
struct CollectionSummary {
    name: String,
    documents: u64,
    bytes: u64,
    bson_bytes: u64,
    seconds: f64,
    docs_per_second: f64,
    resumed: bool,
}

impl BackupSummary {
    pub fn new(out: &Path, manifest: &BackupManifest, seconds: f64) -> Self {
        let collections: Vec<CollectionSummary> = manifest
            .collections
            .iter()
            .map(|c| {
                let secs = c.duration_ms as f64 / 1000.0;
                CollectionSummary {
                    name: c.name.clone(),
                    documents: c.documents,
                    bytes: c.bytes,
                    bson_bytes: c.bson_bytes,
                    seconds: secs,
                    docs_per_second: rate(c.documents, secs),
                    resumed: c.resumed,
                }
            })
            .collect();
        BackupSummary {
            schema: crate::json_schemas::BACKUP_SUMMARY,
            out: out.display().to_string(),
            database: manifest.database.clone(),
            created_at: manifest.created_at.clone(),
            consistency: manifest.consistency.clone(),
            documents: collections.iter().map(|c| c.documents).sum(),
            bytes: collections.iter().map(|c| c.bytes).sum(),
            seconds,
            collections,
        }
    }

    pub fn text(&self) -> String {
        let mut s = format!(
            "Backed up database {} to {} ({} consistency)\n",
            self.database, self.out, self.consistency
        );
        let width = self
            .collections
            .iter()
            .map(|c| c.name.len())
            .max()
            .unwrap_or(0)
            .max(10);
        for c in &self.collections {
            let timing = if c.resumed {
                "kept from an earlier run".to_string()
            } else {
                format!("{:.1}s, {:.0} docs/s", c.seconds, c.docs_per_second)
            };
            s.push_str(&format!(
                "  {} {:>10} docs {:>10}  {timing}\n",
                super::pad(&c.name, width),
                c.documents,
                human_bytes(c.bytes)
            ));
        }
        s.push_str(&format!(
            "Total: {} documents, {} in {:.1}s ({:.0} docs/s)\n",
            self.documents,
            human_bytes(self.bytes),
            self.seconds,
            rate(self.documents, self.seconds)
        ));
        s.push_str(&format!(
            "Restore with: upstep restore {} --drop\n",
            shell_quote(&self.out)
        ));
        s
    }
}

pub fn restore_text(report: &RestoreReport, seconds: f64) -> String {
    let mut s = format!(
        "Restored the backup of {} into database {} at {}\n",
        report.backup_created_at, report.database, report.target
    );
    s.push_str(&leftovers_text(report));
    let width = report
        .collections
        .iter()
        .map(|c| c.name.len())
        .max()
        .unwrap_or(0)
        .max(10);
    let mut docs = 0;
    let mut bytes = 0;
    for c in &report.collections {
        let secs = c.duration_ms as f64 / 1000.0;
        docs += c.documents;
        bytes += c.bson_bytes;
        s.push_str(&format!(
            "  {} {:>10} docs {:>10} {:>3} indexes  {:.1}s, {:.0} docs/s{}\n",
            super::pad(&c.name, width),
            c.documents,
            human_bytes(c.bson_bytes),
            c.indexes,
            secs,
            rate(c.documents, secs),
            if c.dropped { "  (replaced)" } else { "" }
        ));
    }
    s.push_str(&format!(
        "Total: {docs} documents, {} in {seconds:.1}s; counts verified against the manifest; \
         each collection swapped in whole\n",
        human_bytes(bytes)
    ));
    s
}

/// Which collections a restore that stopped left restored and which unchanged.
pub fn stopped_text(report: &RestoreReport) -> String {
    let names = |state: CollectionState| -> Vec<&str> {
        report
            .collections
            .iter()
            .filter(|c| c.state == state)
            .map(|c| c.name.as_str())
            .collect()
    };
    let (restored, unchanged) = (
        names(CollectionState::Restored),
        names(CollectionState::Unchanged),
    );
    let mut s = format!(
        "The restore into database {} at {} stopped. No collection is half-restored:\n",
        report.database, report.target
    );
    s.push_str(&leftovers_text(report));
    let list = |v: &[&str]| {
        if v.is_empty() {
            "(none)".to_string()
        } else {
            v.join(", ")
        }
    };
    s.push_str(&format!(
        "  restored from the backup: {}\n  unchanged (as before the restore): {}\n",
        list(&restored),
        list(&unchanged)
    ));
    if !report.leftovers_kept.is_empty() {
        s.push_str(&format!(
            "  temporary collections left (the next restore removes them): {}\n",
            report.leftovers_kept.join(", ")
        ));
    }
    if !restored.is_empty() && !unchanged.is_empty() {
        s.push_str(
            "  the journal was not changed; restore again with --drop to bring the rest back\n",
        );
    }
    s
}

fn leftovers_text(report: &RestoreReport) -> String {
    if report.leftovers_removed.is_empty() {
        return String::new();
    }
    format!(
        "Removed {} an interrupted restore had left: {}\n",
        crate::words::count(report.leftovers_removed.len(), "temporary collection"),
        report.leftovers_removed.join(", ")
    )
}

fn rate(n: u64, seconds: f64) -> f64 {
    if seconds > 0.0 {
        n as f64 / seconds
    } else {
        0.0
    }
}

fn shell_quote(s: &str) -> String {
    if s.chars()
        .all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}
