//! The human text form of `doctor`: a checklist, one line per check, with its fix.

use std::fmt::Write;

use super::{pad, Styler};
use crate::doctor::DoctorReport;
use crate::plan::Plan;
use crate::preflight::Severity;

pub fn render(plan: &Plan, report: &DoctorReport, st: &Styler) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} {} -> {}  {}",
        st.bold(&format!("Preflight for {}:", plan.project)),
        plan.from,
        plan.to,
        st.dim(&format!(
            "({} script{} at {} tag{})",
            plan.steps_total,
            if plan.steps_total == 1 { "" } else { "s" },
            plan.groups.len(),
            if plan.groups.len() == 1 { "" } else { "s" }
        ))
    );
    let width = report.checks.iter().map(|c| c.id.len()).max().unwrap_or(0);
    for check in &report.checks {
        let mark = match check.severity {
            Severity::Ok => st.good(&pad("ok", 8)),
            Severity::Warning => st.warn(&pad("warning", 8)),
            Severity::Blocker => st.bad(&pad("BLOCKER", 8)),
        };
        let _ = writeln!(out, "  {mark} {}  {}", pad(&check.id, width), check.reason);
        let indent = " ".repeat(width + 13);
        for detail in &check.details {
            let _ = writeln!(out, "{indent}{}", st.dim(detail));
        }
        if check.severity != Severity::Ok {
            if let Some(fix) = &check.fix {
                let _ = writeln!(out, "{indent}fix: {fix}");
            }
        }
    }
    let summary = match (report.blockers, report.warnings) {
        (0, 0) => st.good("All prerequisites are met."),
        (0, w) => st.warn(&format!("{w} warning(s); nothing blocks the upgrade.")),
        (b, w) => st.bad(&format!(
            "{b} blocker(s), {w} warning(s): fix the blockers before upgrading."
        )),
    };
    let _ = writeln!(out, "{summary}");
    out
}
