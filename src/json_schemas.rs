//! Every `schema` id upstep writes in its JSON output, in one place. A pipeline keys on these:
//! an id changes only with an incompatible change of its document (and then its number).
//! tests/it/contracts.rs checks that each one is documented.

/// One JSON event per line (`upgrade --json`, `rehearse --json`, `rollback --json`).
pub const EVENT: &str = "upstep.event/1";
pub const PLAN: &str = "upstep.plan/1";
pub const ROLLBACK_PLAN: &str = "upstep.rollback-plan/1";
pub const DETECT: &str = "upstep.detect/1";
pub const DOCTOR: &str = "upstep.doctor/1";
pub const STATUS: &str = "upstep.status/1";
pub const MARK: &str = "upstep.mark/1";
pub const UNLOCK: &str = "upstep.unlock/1";
pub const CONFIG: &str = "upstep.config/1";
pub const CACHE: &str = "upstep.cache/1";
pub const CACHE_PRUNE: &str = "upstep.cache-prune/1";
pub const MAP: &str = "upstep.map/1";
pub const MAP_VALIDATION: &str = "upstep.map-validation/1";
pub const MAP_CHECK: &str = "upstep.map-check/1";
/// A backup's manifest (a file in the backup directory, not stdout).
pub const BACKUP_MANIFEST: &str = "upstep.backup/1";
pub const BACKUP_SUMMARY: &str = "upstep.backup-summary/1";
pub const RESTORE: &str = "upstep.restore/1";
pub const REHEARSAL: &str = "upstep.rehearsal/1";

/// All of them, for the documentation check.
pub const ALL: &[&str] = &[
    EVENT,
    PLAN,
    ROLLBACK_PLAN,
    DETECT,
    DOCTOR,
    STATUS,
    MARK,
    UNLOCK,
    CONFIG,
    CACHE,
    CACHE_PRUNE,
    MAP,
    MAP_VALIDATION,
    MAP_CHECK,
    BACKUP_MANIFEST,
    BACKUP_SUMMARY,
    RESTORE,
    REHEARSAL,
];
