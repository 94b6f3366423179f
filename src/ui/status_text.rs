//! The text and JSON of `upstep status`: each migration up to the target with its journal,
//! its data and what that makes it; the lock, the last backup, how many are pending.

use serde::Serialize;

use super::{pad, Styler};

#[derive(Serialize)]
pub struct StatusRow {
    pub id: String,
    pub release: String,
    pub journal: Option<String>,
    pub data: Option<String>,
    pub state: String,
    pub detail: String,
    /// The journal's record of the step's last run (where, when, by whom, how it ended).
    pub journal_entry: Option<crate::store::journal::EntryView>,
}

#[derive(Serialize)]
pub struct StatusReport {
    pub schema: &'static str,
    pub database: String,
    pub to: String,
    pub pending: usize,
    pub lock: Option<String>,
    /// The backup taken before the last run that took one: directory and time.
    pub last_backup: Option<String>,
    pub migrations: Vec<StatusRow>,
}

/// `status`'s text: one aligned line per migration, its state coloured, then the totals.
pub fn render(report: &StatusReport, st: &Styler) -> String {
    let width = report
        .migrations
        .iter()
        .map(|r| r.id.len())
        .max()
        .unwrap_or(0);
    let mut out = format!(
        "{} {} (up to {})\n",
        st.bold("Migrations in"),
        report.database,
        report.to
    );
    for r in &report.migrations {
        let state = match r.state.as_str() {
            s if s.starts_with("succeeded")
                || s.starts_with("marked")
                || s.starts_with("applied") =>
            {
                st.good(s)
            }
            s @ ("failed" | "interrupted" | "ended-unverified" | "regressed" | "running") => {
                st.bad(s)
            }
            s => st.warn(s),
        };
        out.push_str(&format!(
            "  {}  {:<8}  {:<18}  {}\n",
            pad(&r.id, width),
            r.release,
            state,
            st.dim(&r.detail)
        ));
    }
    if let Some(backup) = &report.last_backup {
        out.push_str(&format!("Backup before the last run: {backup}\n"));
    }
    if let Some(lock) = &report.lock {
        out.push_str(&format!("Run lock: {lock}\n"));
    }
    out.push_str(&format!(
        "{} of {} pending\n",
        report.pending,
        report.migrations.len()
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: &str, release: &str, state: &str, detail: &str) -> StatusRow {
        StatusRow {
            id: id.into(),
            release: release.into(),
            journal: None,
            data: None,
            state: state.into(),
            detail: detail.into(),
            journal_entry: None,
        }
    }

    #[test]
    fn status_text_aligns_each_migration_then_the_backup_lock_and_totals() {
        let report = StatusReport {
            schema: crate::json_schemas::STATUS,
            database: "mongodb://h:27017/novu".into(),
            to: "v2.0.0".into(),
            pending: 1,
            lock: Some("held by run r1".into()),
            last_backup: Some("/b (taken 2026-01-01)".into()),
            migrations: vec![
                row("a", "v1.1.0", "succeeded", "exited 0"),
                row("longer-id", "v2.0.0", "pending", "not applied per data"),
            ],
        };
        assert_eq!(
            render(&report, &Styler::plain()),
            "Migrations in mongodb://h:27017/novu (up to v2.0.0)\n\
             \x20 a          v1.1.0    succeeded           exited 0\n\
             \x20 longer-id  v2.0.0    pending             not applied per data\n\
             Backup before the last run: /b (taken 2026-01-01)\n\
             Run lock: held by run r1\n\
             1 of 2 pending\n"
        );
    }
}
