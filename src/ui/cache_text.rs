//! The human text of `upstep cache` and `upstep cache prune`.

use std::fmt::Write;

use super::words::count;
use super::{pad, Styler};
use crate::cache::{Inventory, PruneDecision, Verdict};
use crate::preflight::human_bytes;

pub fn render(inventory: &Inventory, st: &Styler) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} {}  {}",
        st.bold("upstep keeps"),
        human_bytes(inventory.total_bytes),
        st.dim(&format!(
            "(cache {}, state {})",
            inventory.cache_dir.display(),
            inventory.state_dir.display()
        ))
    );
    if inventory.items.is_empty() {
        let _ = writeln!(out, "Nothing yet.");
        return out;
    }
    let width = inventory
        .items
        .iter()
        .map(|i| i.name.len())
        .max()
        .unwrap_or(0);
    for (kind, n, bytes) in inventory.by_kind() {
        let _ = writeln!(
            out,
            "\n{}  {}",
            st.bold(&format!("{} ({n})", kind.label())),
            human_bytes(bytes)
        );
        for item in inventory.items.iter().filter(|i| i.kind == kind) {
            let mut note = String::new();
            if item.repository_gone {
                note = st.warn("  its repository is gone");
            }
            let _ = writeln!(
                out,
                "  {}  {:>10}{note}",
                pad(&item.name, width),
                human_bytes(item.bytes)
            );
        }
    }
    let _ = writeln!(
        out,
        "\n{}",
        st.dim("`upstep cache prune --dry-run` shows what no run can use any more.")
    );
    out
}

pub fn render_prune(decisions: &[PruneDecision], freed: u64, dry_run: bool, st: &Styler) -> String {
    let mut out = String::new();
    let removed: Vec<&PruneDecision> = decisions
        .iter()
        .filter(|d| d.verdict == Verdict::Remove)
        .collect();
    let kept: Vec<&PruneDecision> = decisions
        .iter()
        .filter(|d| d.verdict == Verdict::Keep)
        .collect();
    let verb = if dry_run { "Would remove" } else { "Removed" };
    let width = decisions
        .iter()
        .map(|d| d.item.name.len())
        .max()
        .unwrap_or(0);
    if removed.is_empty() {
        let _ = writeln!(out, "Nothing to remove.");
    } else {
        let _ = writeln!(
            out,
            "{} {}, {}:",
            st.bold(verb),
            count(removed.len(), "item"),
            human_bytes(freed)
        );
        for d in &removed {
            let _ = writeln!(
                out,
                "  {}  {:>10}  {}",
                pad(&d.item.name, width),
                human_bytes(d.item.bytes),
                st.dim(&d.why)
            );
        }
    }
    if !kept.is_empty() {
        let _ = writeln!(out, "\n{} {}:", st.bold("Kept"), count(kept.len(), "item"));
        for d in &kept {
            let _ = writeln!(
                out,
                "  {}  {:>10}  {}",
                pad(&d.item.name, width),
                human_bytes(d.item.bytes),
                st.dim(&d.why)
            );
        }
    }
    if dry_run {
        let _ = writeln!(out, "\nDry run: nothing was removed.");
    }
    out
}
