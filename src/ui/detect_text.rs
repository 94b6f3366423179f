//! The human text form of `upstep detect`: an aligned table, then the detected version, the
//! gaps and the target with its source.

use std::fmt::Write;

use super::{pad, Styler};
use crate::detect::{DetectReport, MigrationState, Verdict};

fn verdict_text(v: Verdict, st: &Styler) -> String {
    let text = pad(v.as_str(), 15);
    match v {
        Verdict::Applied | Verdict::NotApplicable | Verdict::AssumedApplied => st.good(&text),
        Verdict::Regressed | Verdict::Incomplete => st.bad(&text),
        Verdict::Pending | Verdict::Unknown => st.warn(&text),
    }
}

/// What the last column says: the evidence, or why there is none.
fn detail(row: &MigrationState) -> String {
    match row.verdict {
        Verdict::Pending | Verdict::Regressed if !row.evidence.describe().is_empty() => {
            let evidence = row.evidence.describe();
            if row.verdict == Verdict::Regressed {
                format!("{evidence} ({})", row.reason)
            } else if row.basis == "journal" {
                row.reason.clone()
            } else {
                evidence
            }
        }
        Verdict::Unknown => row
            .data_reason
            .clone()
            .unwrap_or_else(|| row.reason.clone()),
        Verdict::Applied if row.basis == "data" => String::new(),
        _ => row.reason.clone(),
    }
}

pub fn render(report: &DetectReport, st: &Styler) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} {}  {}",
        st.bold(&format!("Where {} stands:", report.project)),
        report.database,
        st.dim(&format!("(map: {})", report.map))
    );
    if let Some(err) = &report.journal_error {
        let _ = writeln!(
            out,
            "{}",
            st.warn(&format!(
                "The journal could not be read; the data alone decides: {err}"
            ))
        );
    }
    let id_w = report
        .migrations
        .iter()
        .map(|r| r.id.len())
        .max()
        .unwrap_or(0)
        .max("MIGRATION".len());
    let _ = writeln!(
        out,
        "\n  {}  {}  {}  {}  {}  EVIDENCE / REASON",
        pad("MIGRATION", id_w),
        pad("RELEASE", 9),
        pad("JOURNAL", 14),
        pad("DATA", 14),
        pad("VERDICT", 15),
    );
    for row in &report.migrations {
        let release = match (&row.release, &row.unreleased_ref) {
            (Some(v), _) => format!("v{v}"),
            (None, Some(r)) => r.clone(),
            (None, None) => "-".into(),
        };
        let journal = row.journal.map(|j| j.as_str()).unwrap_or("-");
        let data = serde_json::to_value(row.data)
            .ok()
            .and_then(|v| v.as_str().map(String::from))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "  {}  {}  {}  {}  {}  {}",
            pad(&row.id, id_w),
            pad(&release, 9),
            pad(journal, 14),
            pad(&data, 14),
            verdict_text(row.verdict, st),
            st.dim(&detail(row))
        );
    }
    let _ = writeln!(out);
    if report.nothing_to_migrate {
        let _ = writeln!(
            out,
            "{} nothing to migrate: the collections the migrations read are absent or empty (a fresh database); it is ready for {}.",
            st.bold("Detected version:"),
            report.target.version
        );
    } else {
        let detected = match &report.detected {
            Some(v) => st.good(v),
            None => {
                st.warn("older than the first release with a migration (none counts as applied)")
            }
        };
        let _ = writeln!(out, "{} {detected}", st.bold("Detected version:"));
    }
    if let Some(looks) = &report.looks_like {
        let _ = writeln!(
            out,
            "{} the data looks like {looks}, but {} {} not applied:",
            st.warn("Gaps:"),
            super::words::count(report.gaps.len(), "older migration"),
            if report.gaps.len() == 1 { "is" } else { "are" },
        );
        for gap in &report.gaps {
            let _ = writeln!(
                out,
                "  {} ({}): {} while {}'s migrations are applied",
                gap.id,
                gap.release,
                gap.verdict.as_str(),
                gap.newer_release
            );
        }
    }
    let regressed: Vec<&str> = report
        .migrations
        .iter()
        .filter(|r| r.verdict == Verdict::Regressed)
        .map(|r| r.id.as_str())
        .collect();
    if !regressed.is_empty() {
        let _ = writeln!(
            out,
            "{} {} (the journal records {} done, the data shows pending documents again: after a restore, or written by the running application; `upgrade --retry` re-runs {})",
            st.bad("Regressed:"),
            regressed.join(", "),
            if regressed.len() == 1 { "it" } else { "them" },
            if regressed.len() == 1 { "it" } else { "them" },
        );
    }
    let _ = writeln!(
        out,
        "{} {} ({})",
        st.bold("Target:"),
        report.target.version,
        report.target.source.describe()
    );
    if let Some(from) = &report.from {
        let _ = writeln!(
            out,
            "{} {from}: migrations at or before it that no check can read count as applied",
            st.bold("From:")
        );
    }
    let c = &report.counts;
    let mut parts = vec![
        format!("{} applied", c.applied),
        format!("{} pending", c.pending),
        format!("{} not applicable", c.not_applicable),
        format!("{} unknown", c.unknown),
    ];
    if c.regressed > 0 {
        parts.push(format!("{} regressed", c.regressed));
    }
    if c.incomplete > 0 {
        parts.push(format!("{} incomplete", c.incomplete));
    }
    if c.assumed_applied > 0 {
        parts.push(format!("{} assumed applied", c.assumed_applied));
    }
    let _ = writeln!(
        out,
        "{}",
        st.dim(&format!(
            "{}; read in {} ms (time limit {} ms per query)",
            parts.join(", "),
            report.elapsed_ms,
            report.time_limit_ms
        ))
    );
    out
}
