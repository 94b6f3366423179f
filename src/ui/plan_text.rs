//! The human text form of a plan.

use std::fmt::Write;

use super::words::{count, them};
use super::{pad, Styler};
use crate::plan::{Plan, PlanStep};
use crate::plan_needs::PlanNeeds;
use crate::preflight::human_bytes;
use crate::release_map::{Exits, Idempotency, Need};

fn exits_text(exits: Exits) -> &'static str {
    match exits {
        Exits::Yes => "exits by itself",
        Exits::MayHang => "may not exit: ended once its work is verified",
        Exits::Never => "never exits: ended once its work is verified",
    }
}

pub fn idempotency_text(i: Idempotency) -> &'static str {
    match i {
        Idempotency::Yes => "idempotent",
        Idempotency::Guarded => "guarded (a re-run only touches what is left)",
        Idempotency::No => "NOT idempotent (a re-run changes data again)",
    }
}

pub fn need_text(n: Need) -> &'static str {
    match n {
        Need::Redis => "redis",
        Need::EncryptionKey => "store encryption key",
        Need::ReplicaSet => "replica set",
    }
}

fn safety(step: &PlanStep, st: &Styler) -> String {
    let mut parts = vec![idempotency_text(step.idempotent).to_string()];
    if step.destructive {
        parts.push("destructive".into());
    }
    if step.lossy {
        parts.push("lossy".into());
    }
    let text = parts.join(", ");
    if step.idempotent == Idempotency::No || step.destructive || step.lossy {
        st.warn(&text)
    } else {
        text
    }
}

/// The worst case of a step in one line: its risks, and what a backup taken first restores.
fn worst_text(w: &crate::plan::WorstCase, st: &Styler) -> String {
    if w.risks.is_empty() {
        return st.dim("none: safe to repeat, and its data check verifies it");
    }
    let risks: Vec<String> = w.risks.iter().map(|r| r.replace('-', " ")).collect();
    let what = if w.collections.is_empty() {
        "every collection".to_string()
    } else {
        w.collections.join(", ")
    };
    format!(
        "{}; only a backup taken first (--backup DIR) undoes it: it restores {what} as before the run",
        st.warn(&risks.join(", "))
    )
}

/// The disk a run of this plan takes, the same words in every view (None: the map names no
/// size per tag, or nothing would run).
pub fn disk_line(needs: &PlanNeeds) -> Option<String> {
    if needs.disk_per_tag == 0 || needs.tags == 0 {
        return None;
    }
    let each = human_bytes(needs.disk_per_tag);
    Some(if needs.tags == 1 {
        format!("Disk: 1 tag prepared, about {each}.")
    } else {
        format!(
            "Disk: {}, at most two prepared at once (the next while the steps of one run), about \
             {each} each ({} if every tag is kept with --keep-worktrees).",
            count(needs.tags, "tag"),
            human_bytes(needs.disk_all_tags)
        )
    })
}

pub fn render(plan: &Plan, st: &Styler) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} {} -> {}  {}",
        st.bold(&format!("Upgrade plan for {}:", plan.project)),
        plan.from,
        plan.to,
        st.dim(&format!("(map: {})", plan.map))
    );
    if let Some(repo) = &plan.repository {
        let _ = writeln!(
            out,
            "{}",
            st.dim(&format!(
                "Checked against {repo}: every script exists at its tag."
            ))
        );
    }
    if plan.is_empty() {
        let _ = writeln!(
            out,
            "Nothing to do: no migration script was introduced after {} up to {}.",
            plan.from, plan.to
        );
    } else {
        let tags = plan.groups.len();
        let _ = writeln!(
            out,
            "{} at {}, in this order:",
            count(plan.steps_total, "script"),
            count(tags, "tag")
        );
    }
    let mut n = 0;
    for group in &plan.groups {
        let mut toolchain = format!("node {}", group.node);
        if let Some(pnpm) = &group.pnpm {
            let _ = write!(toolchain, ", pnpm {pnpm}");
        }
        if let Some(commit) = &group.commit {
            let _ = write!(toolchain, ", commit {}", &commit[..commit.len().min(12)]);
        }
        let mut header = format!("{}  {}", st.bold(&group.git_ref), st.dim(&toolchain));
        if let Some(nvmrc) = &group.repo_node_differs {
            header.push_str(&st.warn(&format!("  (.nvmrc at this tag says {nvmrc})")));
        }
        if group.unreleased {
            header.push_str(&st.warn("  (unreleased ref: toolchain of the newest release)"));
        } else if !group.verified {
            header.push_str(&st.warn("  (unverified release)"));
        }
        let _ = writeln!(out, "\n{header}");
        if let Some(profile) = &group.setup_profile {
            let _ = writeln!(
                out,
                "  {} {}",
                st.dim("setup:"),
                st.dim(&format!(
                    "the {profile} setup profile: its scripts load less than the whole application"
                ))
            );
        }
        if let Some(lockfile) = &group.repair_lockfile {
            let _ = writeln!(
                out,
                "  {} {}",
                st.dim("setup:"),
                st.warn(&format!(
                    "{lockfile} is stale at this tag: upstep reconciles its workspace-link specifiers with the package.json files for the install (external dependencies stay pinned), then restores it"
                ))
            );
        }
        for d in &group.downloads {
            let via = d
                .via
                .as_deref()
                .map(|v| format!(" via {v}"))
                .unwrap_or_default();
            let _ = writeln!(
                out,
                "  {} {}",
                st.dim("setup:"),
                st.dim(&format!(
                    "the install fetches {}{via} from {}",
                    d.dependency, d.url
                ))
            );
        }
        for planned in &group.stand_ins {
            let line = planned.describe();
            let shown = if planned.applies == Some(false) {
                st.dim(&line)
            } else {
                st.warn(&line)
            };
            let _ = writeln!(out, "  {} {}", st.dim("setup:"), shown);
        }
        for blocker in &group.blockers {
            let _ = writeln!(out, "  {} {}", st.bad("BLOCKED:"), blocker);
        }
        for step in &group.steps {
            n += 1;
            let _ = writeln!(
                out,
                "  {:>2}. {}  {}",
                n,
                st.bold(&step.id),
                st.dim(&format!("({})", step.title))
            );
            let row = |out: &mut String, label: &str, value: &str| {
                let _ = writeln!(out, "      {} {}", pad(label, 8), value);
            };
            let present = match step.script_at_ref {
                Some(true) => format!(" {}", st.dim(&format!("(present at {})", group.git_ref))),
                _ => String::new(),
            };
            row(&mut out, "script", &format!("{}{present}", step.script));
            row(
                &mut out,
                "runs as",
                &format!("{}; {}", step.runs_as, exits_text(step.mode.exits)),
            );
            row(&mut out, "safety", &safety(step, st));
            row(&mut out, "worst", &worst_text(&step.worst_case, st));
            if !step.needs.is_empty() {
                let needs: Vec<&str> = step.needs.iter().map(|n| need_text(*n)).collect();
                row(&mut out, "needs", &needs.join(", "));
            }
            if !step.after.is_empty() {
                row(&mut out, "after", &step.after.join(", "));
            }
            row(&mut out, "why", &step.reason);
            if let Some(why) = &step.required_stop {
                row(
                    &mut out,
                    "stop",
                    &st.warn(&format!(
                        "required stop: runs at {} whatever the target ({why})",
                        group.git_ref
                    )),
                );
            }
            if let Some(why) = &step.optional {
                row(
                    &mut out,
                    "optional",
                    &st.warn(&format!(
                        "runs only when asked for: --include-optional {} ({why})",
                        step.id
                    )),
                );
            }
            if step.exit_code_unreliable {
                row(
                    &mut out,
                    "exit",
                    &st.dim("exits 0 even when it failed: only its data check proves it ran"),
                );
            }
            if !step.has_fingerprint {
                row(
                    &mut out,
                    "check",
                    &st.warn("no data check: upstep cannot verify this step from the data"),
                );
            }
            if !step.verified {
                row(
                    &mut out,
                    "note",
                    &st.warn("unverified: newer than the history the map was checked against"),
                );
            }
            for w in &step.warnings {
                row(&mut out, "warning", &st.warn(w));
            }
        }
    }
    if !plan.unreleased_left_out.is_empty() {
        let _ = writeln!(
            out,
            "\n{} {} (no release ships {} yet; add --include-unreleased to run {} at the ref the map names)",
            st.dim("Left out:"),
            plan.unreleased_left_out.join(", "),
            them(plan.unreleased_left_out.len()),
            them(plan.unreleased_left_out.len()),
        );
    }
    out
}
