//! Preflight: everything `upstep doctor` (and `upgrade`, before it touches data) verifies.
//!
//! Each check returns `CheckResult`s and never fails: an unreachable server or a missing tool is
//! a result with a reason and the fix, not an error. Rendering (text/JSON) and the exit code are
//! the caller's business: any `Severity::Blocker` means exit code 5 (`ExitCode::Preflight`).
//!
//! No field of a result ever holds a secret: URIs go through `redact_uri`, driver messages
//! through `scrub`, and key values are never printed at all.

mod disk;
mod keys;
mod mongo;
mod redis;
mod toolchain;

pub use crate::redact::redact_uri;
pub use disk::check_disk;
pub(crate) use disk::{available_bytes, nearest_existing};
pub use keys::{check_encryption_key, check_env};
pub use mongo::{check_mongo, MIN_MONGO_VERSION};
pub use redis::check_redis;
pub use toolchain::{check_npx, check_tool, ToolRequirement};

use serde::Serialize;

/// How bad a finding is. Ordered: `Ok < Warning < Blocker`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Ok,
    Warning,
    Blocker,
}

/// One finding. `id` is stable (pipelines may match on it): `node@v0.18.0`, `pnpm@v0.18.0`,
/// `npx`, `redis`, `mongo.connect`, `mongo.version`, `mongo.auth`, `mongo.roles`,
/// `mongo.topology`, `mongo.database`, `encryption-key`, `new-relic`, `disk`.
#[derive(Debug, Clone, Serialize)]
pub struct CheckResult {
    pub id: String,
    pub title: String,
    pub severity: Severity,
    /// One line.
    pub reason: String,
    /// The exact command or action that fixes it (always set for warnings and blockers).
    pub fix: Option<String>,
    pub details: Vec<String>,
}

impl CheckResult {
    pub fn ok(id: impl Into<String>, title: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::new(id, title, Severity::Ok, reason, None)
    }

    pub fn warning(
        id: impl Into<String>,
        title: impl Into<String>,
        reason: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        Self::new(id, title, Severity::Warning, reason, Some(fix.into()))
    }

    pub fn blocker(
        id: impl Into<String>,
        title: impl Into<String>,
        reason: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        Self::new(id, title, Severity::Blocker, reason, Some(fix.into()))
    }

    pub fn with_details(mut self, details: Vec<String>) -> Self {
        self.details = details;
        self
    }

    fn new(
        id: impl Into<String>,
        title: impl Into<String>,
        severity: Severity,
        reason: impl Into<String>,
        fix: Option<String>,
    ) -> Self {
        CheckResult {
            id: id.into(),
            title: title.into(),
            severity,
            reason: one_line(&reason.into()),
            fix,
            details: Vec::new(),
        }
    }
}

/// The worst severity among `results` (`Ok` when empty).
pub fn worst_severity(results: &[CheckResult]) -> Severity {
    results
        .iter()
        .map(|r| r.severity)
        .max()
        .unwrap_or(Severity::Ok)
}

/// The first line of `text`, cut to a length that fits a terminal line or two.
fn one_line(text: &str) -> String {
    const MAX: usize = 300;
    let line = text.lines().next().unwrap_or("").trim();
    if line.chars().count() <= MAX {
        line.to_string()
    } else {
        let cut: String = line.chars().take(MAX).collect();
        format!("{cut}...")
    }
}

/// Bytes in binary units with one decimal: `3.1 GiB`.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 7] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn severity_orders_and_serializes_lowercase() {
        assert!(Severity::Ok < Severity::Warning && Severity::Warning < Severity::Blocker);
        assert_eq!(
            serde_json::to_string(&Severity::Blocker).unwrap(),
            "\"blocker\""
        );
        let results = [
            CheckResult::ok("a", "A", "fine"),
            CheckResult::warning("b", "B", "hmm", "do x"),
        ];
        assert_eq!(worst_severity(&results), Severity::Warning);
        assert_eq!(worst_severity(&[]), Severity::Ok);
    }

    #[test]
    fn reasons_are_one_line() {
        let result = CheckResult::ok("a", "A", "first line\nsecond line");
        assert_eq!(result.reason, "first line");
        let long = "x".repeat(1000);
        assert!(CheckResult::ok("a", "A", long).reason.len() < 310);
    }

    #[test]
    fn human_units() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(5 * 1024 * 1024 * 1024), "5.0 GiB");
        assert_eq!(human_bytes(u64::MAX), "16.0 EiB");
    }
}
