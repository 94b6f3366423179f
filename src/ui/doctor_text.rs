//! The human text form of `doctor`: the plan it checked (every step with its needs, the disk
//! the prepared tags take), then a checklist, one line per check, with its fix.

use std::fmt::Write;

use super::words::count;
use super::{pad, Styler};
use crate::doctor::DoctorReport;
use crate::plan_needs::PlanNeeds;
use crate::preflight::Severity;

pub fn render(
    needs: &PlanNeeds,
    not_read: Option<&str>,
    report: &DoctorReport,
    st: &Styler,
) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} {} -> {}  {}",
        st.bold(&format!("Preflight for {}:", needs.project)),
        needs.from,
        needs.to,
        st.dim(&format!(
            "({} at {})",
            count(needs.steps.len(), "script"),
            count(needs.tags, "tag")
        ))
    );
    out.push_str(&plan_needs(needs, not_read, st));
    let width = report.checks.iter().map(|c| c.id.len()).max().unwrap_or(0);
    let _ = writeln!(out, "\n{}", st.bold("Checks"));
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
        (0, w) => st.warn(&format!(
            "{}; nothing blocks the upgrade.",
            count(w, "warning")
        )),
        (b, w) => st.bad(&format!(
            "{}, {}: fix the blockers before upgrading.",
            count(b, "blocker"),
            count(w, "warning")
        )),
    };
    let _ = writeln!(out, "{summary}");
    out
}

/// Where the steps came from, each step with its tag, toolchain and needs, and the disk.
pub fn plan_needs(needs: &PlanNeeds, not_read: Option<&str>, st: &Styler) -> String {
    let mut out = String::new();
    match (&needs.database, not_read) {
        (Some(db), _) => {
            let _ = writeln!(
                out,
                "{}",
                st.dim(&format!("Decided from the journal and the data of {db}."))
            );
        }
        (None, Some(why)) => {
            let _ = writeln!(
                out,
                "{}",
                st.warn(&format!("The data was not read ({why})."))
            );
        }
        (None, None) => {}
    }
    if needs.steps.is_empty() {
        let _ = writeln!(out, "Nothing would run.");
        return out;
    }
    let _ = writeln!(out, "\n{}", st.bold("Steps"));
    let id_width = needs.steps.iter().map(|s| s.id.len()).max().unwrap_or(0);
    let ref_width = needs
        .steps
        .iter()
        .map(|s| s.git_ref.len())
        .max()
        .unwrap_or(0);
    for step in &needs.steps {
        let mut toolchain = format!("node {}", step.node);
        if let Some(pnpm) = &step.pnpm {
            let _ = write!(toolchain, ", pnpm {pnpm}");
        }
        let mut wants: Vec<&str> = step
            .needs
            .iter()
            .map(|n| super::plan_text::need_text(*n))
            .collect();
        if !step.downloads.is_empty() {
            wants.push("GitHub-hosted downloads");
        }
        let wants = if wants.is_empty() {
            "nothing else".to_string()
        } else {
            wants.join(", ")
        };
        let _ = writeln!(
            out,
            "  {}  {}  {}  needs: {}",
            pad(&step.id, id_width),
            pad(&step.git_ref, ref_width),
            st.dim(&toolchain),
            wants
        );
    }
    if let Some(disk) = super::plan_text::disk_line(needs) {
        let _ = writeln!(out, "{disk}");
    }
    out
}
