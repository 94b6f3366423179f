//! `upstep rehearse`: the whole upgrade on a scratch copy of the database, timed and measured,
//! before the real run. This module holds what does not touch a server: the scratch
//! database's name and URI, the recorder that measures each step from the run's events, the
//! report, and the record kept in the state directory (so the real `upgrade` can say
//! "rehearsed on <date>: 4 min 12 s of steps"). The command itself is
//! `commands/rehearse.rs`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::redact::Uri;

pub const REPORT_SCHEMA: &str = crate::json_schemas::REHEARSAL;
/// Between the real database's name and the rehearsal's time in a default scratch name.
pub const SCRATCH_INFIX: &str = "_upstep_rehearsal_";
/// MongoDB's limit on a database name, in bytes.
const DB_NAME_MAX: usize = 63;

/// The database a URI names (`mongodb://host/db?opts` -> `db`), without connecting.
pub fn database_of(uri: &Uri) -> Option<String> {
    uri.database().map(str::to_string)
}

/// The same URI naming another database (credentials, hosts and options kept).
pub fn with_database(uri: &Uri, db: &str) -> Result<Uri> {
    match uri.with_database(db) {
        Some(renamed) => Ok(renamed),
        None => Err(Error::usage(
            format!("the MongoDB URI {uri} names no database"),
            "add the database to the URI's path, e.g. mongodb://host:27017/novu-db",
        )),
    }
}

/// The hosts of a URI (`h1,h2`), credentials removed: two URIs with the same hosts reach the
/// same server.
fn hosts_of(uri: &Uri) -> String {
    uri.hosts().to_lowercase()
}

/// Whether two URIs reach the same server (same hosts, whatever the credentials).
pub fn same_server(a: &Uri, b: &Uri) -> bool {
    hosts_of(a) == hosts_of(b)
}

/// Whether two URIs name the same database on the same server.
pub fn same_database(a: &Uri, b: &Uri) -> bool {
    database_of(a) == database_of(b) && hosts_of(a) == hosts_of(b)
}

/// The default scratch name, `<db>_upstep_rehearsal_<stamp>`, cut to MongoDB's limit (the
/// real name is shortened, never the stamp that makes it unique).
pub fn scratch_name(db: &str, stamp: &str) -> String {
    let tail = format!("{SCRATCH_INFIX}{stamp}");
    let mut head: String = String::new();
    for c in db.chars() {
        if head.len() + c.len_utf8() + tail.len() > DB_NAME_MAX {
            break;
        }
        head.push(c);
    }
    format!("{head}{tail}")
}

/// Names of inherited environment variables that lead to the real database (a URI of it, or
/// `MONGO_URL`, which Novu's scripts read): a rehearsal's children must not see them. Each
/// era sets what its scripts need (the scratch database) on top.
pub fn real_database_vars(
    real_uri: &Uri,
    real_db: &str,
    env: impl Iterator<Item = (String, String)>,
) -> Vec<String> {
    let mut names = vec!["MONGO_URL".to_string()];
    for (name, value) in env {
        let mongo_uri = value.starts_with("mongodb://") || value.starts_with("mongodb+srv://");
        if value.contains(real_uri.expose())
            || (mongo_uri && Uri::new(value.as_str()).database() == Some(real_db))
        {
            names.push(name);
        }
    }
    names.sort();
    names.dedup();
    names
}

/// Documents per collection (upstep's own `upstep_*` and the server's `system.*` left out).
pub type Counts = BTreeMap<String, u64>;

/// What the recorder reads from the scratch database between steps.
pub trait Measure: Send {
    /// Documents in every collection.
    fn counts(&mut self) -> Option<Counts>;
    /// The documents a step's data check finds pending (its work, before it runs).
    fn pending(&mut self, id: &str) -> Option<u64>;
}

/// One collection's documents before and after a step.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct CollectionCounts {
    pub name: String,
    pub before: u64,
    pub after: u64,
}

/// One step of the rehearsal.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct StepReport {
    pub id: String,
    pub git_ref: String,
    /// "succeeded", "failed", "interrupted", "ended-unverified", or "not-finished".
    pub status: String,
    pub ended_by: String,
    pub reason: String,
    /// From the step's start to its end, verification and journal included.
    pub duration_ms: u64,
    /// The data check after the script ("applied", "pending", ...).
    pub verification: Option<String>,
    /// Documents the step's data check found pending before it ran: the size of its work.
    pub pending_before: Option<u64>,
    /// Every collection, with its documents before and after the step.
    pub collections: Vec<CollectionCounts>,
    /// The map's warnings for the step, and what the run said while it ran.
    pub warnings: Vec<String>,
}

impl StepReport {
    /// Collections whose number of documents changed.
    pub fn changed(&self) -> impl Iterator<Item = &CollectionCounts> {
        self.collections.iter().filter(|c| c.before != c.after)
    }
}

/// What the recorder saw of a run.
#[derive(Debug, Default)]
pub struct Recording {
    pub steps: Vec<StepReport>,
    pub skipped: usize,
    /// Time spent preparing tags (worktree, install, build), from the setup events.
    pub setup_ms: u64,
    pub notices: Vec<String>,
    /// The run's summary status ("succeeded", or the exit code's name).
    pub status: Option<String>,
    /// The plan key of the run (set when the run's plan is known).
    pub plan_key: Option<String>,
    pub from: Option<String>,
    pub to: Option<String>,
}

/// Every collection of either side, with its counts (0 where it did not exist).
pub fn merge_counts(before: &Counts, after: &Counts) -> Vec<CollectionCounts> {
    let mut names: Vec<&String> = before.keys().chain(after.keys()).collect();
    names.sort();
    names.dedup();
    names
        .into_iter()
        .map(|name| CollectionCounts {
            name: name.clone(),
            before: before.get(name).copied().unwrap_or(0),
            after: after.get(name).copied().unwrap_or(0),
        })
        .collect()
}

/// Where the rehearsal's data came from.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DataSource {
    /// "backup-taken" (backed up for this rehearsal) or "from-backup" (`--from-backup`).
    pub kind: String,
    /// The backup directory (absent when the rehearsal's own backup was removed).
    pub backup: Option<String>,
    /// When the backup began reading data (RFC 3339).
    pub backup_created_at: String,
    pub documents: u64,
}

/// The rehearsal's report: printed, kept in the state directory, and written with --report.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RehearsalReport {
    pub schema: String,
    /// When the rehearsal started and ended (RFC 3339, UTC).
    pub started_at: String,
    pub finished_at: String,
    /// The real database (redacted): only read.
    pub database: String,
    /// The scratch database the steps ran in (redacted).
    pub scratch: String,
    pub scratch_kept: bool,
    pub source: DataSource,
    pub from: Option<String>,
    pub to: Option<String>,
    /// Identifies the plan (map, --from/--to, the tags' commits, the database): the real
    /// `upgrade` shows this rehearsal when its plan has the same key.
    pub plan_key: Option<String>,
    /// "succeeded", or the exit code's name of what stopped the rehearsal.
    pub status: String,
    pub error: Option<String>,
    pub steps: Vec<StepReport>,
    pub skipped: usize,
    /// Before the API must stop: tag preparation (cached now for the real run).
    pub setup_ms: u64,
    /// The steps: what the real run needs downtime for.
    pub steps_ms: u64,
    /// The rehearsal's own work: backup (0 with --from-backup), restore, drop.
    pub backup_ms: u64,
    pub restore_ms: u64,
    pub drop_ms: u64,
    pub total_ms: u64,
    /// The predicted downtime of the real run: its steps (setups are done before the API
    /// stops; this rehearsal left the tags prepared).
    pub predicted_downtime_ms: u64,
    /// The same with `upgrade --backup` (a backup taken while the API is stopped), when this
    /// rehearsal measured a backup.
    pub predicted_downtime_with_backup_ms: Option<u64>,
    /// What the run said outside any step.
    pub notices: Vec<String>,
}

impl RehearsalReport {
    pub fn succeeded(&self) -> bool {
        self.status == "succeeded"
    }

    /// "rehearsed on 2026-12-01 17:40 UTC: 4 min 12 s of steps, all succeeded"
    pub fn one_line(&self) -> String {
        let date = self
            .started_at
            .get(..16)
            .unwrap_or(&self.started_at)
            .replace('T', " ");
        let outcome = if self.succeeded() {
            format!("{} step(s) succeeded", self.steps.len())
        } else {
            let failed: Vec<&str> = self
                .steps
                .iter()
                .filter(|s| s.status != "succeeded")
                .map(|s| s.id.as_str())
                .collect();
            if failed.is_empty() {
                format!("it stopped ({})", self.status)
            } else {
                format!("{} did not succeed ({})", failed.join(", "), self.status)
            }
        };
        format!(
            "rehearsed on {date} UTC: {} of steps, {outcome}",
            human_duration(self.steps_ms)
        )
    }
}

/// "4 min 12 s", "12.3 s", "1 h 02 min".
pub fn human_duration(ms: u64) -> String {
    let secs = ms / 1000;
    if secs >= 3600 {
        format!("{} h {:02} min", secs / 3600, (secs % 3600) / 60)
    } else if secs >= 60 {
        format!("{} min {} s", secs / 60, secs % 60)
    } else {
        format!("{:.1} s", ms as f64 / 1000.0)
    }
}

/// What identifies a plan for the record: the map (its text), the range, the commits of
/// the tags the steps run at, and the database (redacted URI, as configured: not a tunnel's
/// local end).
#[derive(Debug, Clone)]
pub struct PlanIdentity<'a> {
    pub map_text: &'a [u8],
    pub from: Option<&'a semver::Version>,
    pub to: &'a semver::Version,
    pub include_unreleased: bool,
    pub commits: &'a [String],
    pub database: &'a str,
}

pub fn plan_key(id: &PlanIdentity<'_>) -> String {
    let mut h = Sha256::new();
    h.update(Sha256::digest(id.map_text));
    for part in [
        id.from.map(|v| v.to_string()).unwrap_or_default(),
        id.to.to_string(),
        id.include_unreleased.to_string(),
        id.commits.join(","),
        id.database.to_string(),
    ] {
        h.update([0]);
        h.update(part.as_bytes());
    }
    hex::encode(&h.finalize()[..12])
}

/// The text of the map in use: its file, or the embedded map.
pub fn map_text(map: &crate::release_map::ReleaseMap) -> Vec<u8> {
    let path = Path::new(&map.source);
    match std::fs::read(path) {
        Ok(bytes) if path.is_file() => bytes,
        _ => crate::release_map::EMBEDDED_MAP.as_bytes().to_vec(),
    }
}

fn record_path(state_dir: &Path, key: &str) -> PathBuf {
    state_dir.join("rehearsals").join(format!("{key}.json"))
}

/// Keep the report as the latest rehearsal of its plan.
pub fn save_record(state_dir: &Path, report: &RehearsalReport) -> Result<Option<PathBuf>> {
    let Some(key) = &report.plan_key else {
        return Ok(None);
    };
    let path = record_path(state_dir, key);
    let text = serde_json::to_string_pretty(report).map_err(|e| Error::Internal(e.to_string()))?;
    let write = || -> std::io::Result<()> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        // Written aside, then renamed: a reader never sees half a record.
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, text.as_bytes())?;
        std::fs::rename(&tmp, &path)
    };
    write().map_err(|e| {
        Error::usage(
            format!(
                "cannot keep the rehearsal's record in {}: {e}",
                path.display()
            ),
            "make the state directory writable (UPSTEP_STATE_DIR)",
        )
    })?;
    Ok(Some(path))
}

/// The latest rehearsal of a plan, if one was recorded.
pub fn find_record(state_dir: &Path, key: &str) -> Option<(RehearsalReport, PathBuf)> {
    let path = record_path(state_dir, key);
    let text = std::fs::read_to_string(&path).ok()?;
    let report: RehearsalReport = serde_json::from_str(&text).ok()?;
    (report.schema == REPORT_SCHEMA).then_some((report, path))
}

/// The real upgrade's line about its plan's rehearsal.
pub fn announcement(state_dir: &Path, key: &str) -> String {
    match find_record(state_dir, key) {
        Some((report, path)) => format!("{} (report: {})", report.one_line(), path.display()),
        None => "not rehearsed: no `upstep rehearse` of this plan (same map, range, tag commits and database) is recorded here".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scratch_uri_keeps_everything_but_the_database() {
        let renamed = |uri: &str| with_database(&Uri::new(uri), "s");
        assert_eq!(
            renamed("mongodb://u:p@h1:1,h2:2/novu-db?authSource=admin")
                .unwrap()
                .expose(),
            "mongodb://u:p@h1:1,h2:2/s?authSource=admin"
        );
        assert_eq!(renamed("mongodb://h/db").unwrap().expose(), "mongodb://h/s");
        assert!(renamed("mongodb://h").is_err());
        assert_eq!(
            database_of(&"mongodb://h/db?x=1".into()).as_deref(),
            Some("db")
        );
        assert_eq!(database_of(&"mongodb://h/?x=1".into()), None);
    }

    #[test]
    fn a_scratch_name_fits_mongodbs_limit_and_keeps_its_stamp() {
        assert_eq!(
            scratch_name("novu-db", "20261201T174000"),
            "novu-db_upstep_rehearsal_20261201T174000"
        );
        let long = scratch_name(&"x".repeat(80), "20261201T174000");
        assert_eq!(long.len(), 63);
        assert!(long.ends_with("_upstep_rehearsal_20261201T174000"));
    }

    #[test]
    fn same_database_ignores_credentials_and_options_only() {
        let same = |a: &str, b: &str| same_database(&a.into(), &b.into());
        assert!(same("mongodb://a:b@h:1/db", "mongodb://h:1/db?x=1"));
        assert!(!same("mongodb://h:1/db", "mongodb://h:1/db2"));
        assert!(!same("mongodb://h:1/db", "mongodb://other:1/db"));
    }

    #[test]
    fn variables_leading_to_the_real_database_are_withheld_from_children() {
        let env = vec![
            ("DATABASE_URL".to_string(), "mongodb://h/real".to_string()),
            ("OTHER".to_string(), "mongodb://h/other".to_string()),
            ("COPY".to_string(), "x mongodb://u:p@h/real?y y".to_string()),
            ("PATH".to_string(), "/bin".to_string()),
        ];
        assert_eq!(
            real_database_vars(&"mongodb://u:p@h/real?y".into(), "real", env.into_iter()),
            ["COPY", "DATABASE_URL", "MONGO_URL"]
        );
    }

    #[test]
    fn durations_read_as_people_say_them() {
        assert_eq!(human_duration(252_000), "4 min 12 s");
        assert_eq!(human_duration(12_340), "12.3 s");
        assert_eq!(human_duration(3_720_000), "1 h 02 min");
    }

    #[test]
    fn a_plan_key_changes_with_each_part() {
        let to = semver::Version::new(1, 2, 0);
        let from = semver::Version::new(1, 0, 0);
        let commits = vec!["abc".to_string()];
        let base = PlanIdentity {
            map_text: b"map",
            from: None,
            to: &to,
            include_unreleased: false,
            commits: &commits,
            database: "mongodb://h/db",
        };
        let key = plan_key(&base);
        assert_eq!(key, plan_key(&base.clone()));
        let other_commits = vec!["abd".to_string()];
        for changed in [
            PlanIdentity {
                map_text: b"map2",
                ..base.clone()
            },
            PlanIdentity {
                from: Some(&from),
                ..base.clone()
            },
            PlanIdentity {
                commits: &other_commits,
                ..base.clone()
            },
            PlanIdentity {
                database: "mongodb://h/other",
                ..base.clone()
            },
        ] {
            assert_ne!(plan_key(&changed), key);
        }
    }
}
