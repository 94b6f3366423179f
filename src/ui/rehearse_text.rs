//! The human text form of a rehearsal's report.

use std::fmt::Write;

use super::{pad, Styler};
use crate::rehearse::{human_duration, RehearsalReport};

fn count(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

pub fn render(report: &RehearsalReport, st: &Styler) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} of {} -> {} on {}",
        st.bold("Rehearsal"),
        report.from.as_deref().unwrap_or("the data's version"),
        report.to.as_deref().unwrap_or("?"),
        report.database
    );
    let source = match report.source.kind.as_str() {
        "from-backup" => format!(
            "the backup {} (taken {})",
            report.source.backup.as_deref().unwrap_or("?"),
            report.source.backup_created_at
        ),
        _ => format!("a backup taken now ({})", report.source.backup_created_at),
    };
    let _ = writeln!(
        out,
        "  data: {} documents from {source}, restored into {}",
        count(report.source.documents),
        report.scratch
    );
    let width = report.steps.iter().map(|s| s.id.len()).max().unwrap_or(0);
    if report.steps.is_empty() {
        let _ = writeln!(out, "\nNo step ran ({} skipped).", report.skipped);
    } else {
        let _ = writeln!(out);
    }
    for step in &report.steps {
        let status = match step.status.as_str() {
            "succeeded" => st.good(&step.status),
            s => st.bad(s),
        };
        let _ = writeln!(
            out,
            "  {}  {:<8}  {:>10}  {}  {}",
            pad(&step.id, width),
            step.git_ref,
            human_duration(step.duration_ms),
            status,
            st.dim(&format!(
                "({}{})",
                step.ended_by,
                step.verification
                    .as_deref()
                    .map(|v| format!("; data check: {v}"))
                    .unwrap_or_default()
            ))
        );
        if let Some(pending) = step.pending_before {
            let _ = writeln!(
                out,
                "      {} {} document(s) to migrate per its data check",
                st.dim("work:"),
                count(pending)
            );
        }
        let changed: Vec<String> = step
            .changed()
            .map(|c| format!("{} {} -> {}", c.name, count(c.before), count(c.after)))
            .collect();
        let docs = if changed.is_empty() {
            "no collection gained or lost documents".to_string()
        } else {
            changed.join(", ")
        };
        let _ = writeln!(out, "      {} {docs}", st.dim("documents:"));
        if step.status != "succeeded" {
            let _ = writeln!(out, "      {} {}", st.bad("ended:"), step.reason);
        }
        for w in &step.warnings {
            let _ = writeln!(out, "      {} {}", st.warn("warning:"), w);
        }
    }
    for n in &report.notices {
        let _ = writeln!(out, "  {} {n}", st.dim("note:"));
    }
    if let Some(error) = &report.error {
        let _ = writeln!(out, "\n{} {error}", st.bad("Failed:"));
    }
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "Steps: {} ({} ran, {} skipped); setup {}; rehearsal overhead: backup {}, restore {}, drop {}; total {}",
        human_duration(report.steps_ms),
        report.steps.len(),
        report.skipped,
        human_duration(report.setup_ms),
        human_duration(report.backup_ms),
        human_duration(report.restore_ms),
        human_duration(report.drop_ms),
        human_duration(report.total_ms),
    );
    let with_backup = report
        .predicted_downtime_with_backup_ms
        .map(|ms| {
            format!(
                " ({} with `upgrade --backup` while the API is stopped)",
                human_duration(ms)
            )
        })
        .unwrap_or_default();
    let _ = writeln!(
        out,
        "{} {}{with_backup}: the steps only; the tags are prepared now, so their setup need not stop the API",
        st.bold("Predicted downtime of the real run:"),
        human_duration(report.predicted_downtime_ms),
    );
    let _ = writeln!(
        out,
        "{}",
        if report.scratch_kept {
            format!("The scratch database {} is kept (--keep).", report.scratch)
        } else {
            format!("The scratch database {} was dropped.", report.scratch)
        }
    );
    let verdict = if report.succeeded() {
        st.good("The rehearsal succeeded; the real database was only read.")
    } else {
        st.bad(&format!(
            "The rehearsal did not succeed ({}); the real database was only read.",
            report.status
        ))
    };
    let _ = writeln!(out, "{verdict}");
    out
}
