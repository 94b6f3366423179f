//! What a run tells the outside while it goes: human lines on stderr, or one JSON event per
//! line on stdout (`--json`) for pipelines. One type per event, one place per format.

use std::io::Write;

use serde::Serialize;

use super::Styler;

pub const EVENT_SCHEMA: &str = crate::json_schemas::EVENT;

#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "kebab-case")]
pub enum RunEvent {
    /// The decided plan: every step with what will happen to it.
    Plan {
        steps: Vec<PlannedStepView>,
    },
    Notice {
        message: String,
    },
    Setup {
        git_ref: String,
        status: String,
        /// What part of the tag's setup: "install", "build", "other" (a setup command), or
        /// "setup" (the whole of it: "done", "cached").
        phase: String,
        detail: String,
        /// How long it took ("finished": the command; "done": the whole setup; "cached": 0;
        /// "restored": copying a kept build back).
        duration_ms: u64,
    },
    /// The map's package stand-ins at a tag's setup: installed in place of what the tag's
    /// lockfile pins (`outcome`: "applied", "already-present", "prepared-earlier").
    StandIns {
        git_ref: String,
        stand_ins: Vec<StandInView>,
    },
    /// The latest line a setup command printed (at most about two a second).
    SetupOutput {
        git_ref: String,
        line: String,
    },
    StepStarted {
        index: usize,
        total: usize,
        id: String,
        git_ref: String,
        runs_as: String,
        /// The map's warnings about this step, shown before it runs.
        warnings: Vec<String>,
    },
    Output {
        id: String,
        stream: String,
        line: String,
    },
    Verification {
        id: String,
        state: String,
        detail: String,
    },
    StepFinished {
        id: String,
        status: String,
        ended_by: String,
        reason: String,
        duration_ms: u64,
    },
    /// `upgrade --then`: the promotion command, once it ended (or why it was withheld).
    Promotion {
        /// "succeeded", "failed", "interrupted" or "withheld".
        status: String,
        /// The command's program (its arguments are not repeated: they may hold a token).
        program: String,
        exit_code: Option<i32>,
        duration_ms: u64,
        detail: String,
    },
    Summary {
        ran: usize,
        succeeded: usize,
        skipped: usize,
        failed: usize,
        status: String,
        duration_ms: u64,
        /// The stand-ins the tags that ran were installed with ("v2.1.0: <package> <original>
        /// -> <stand-in> (why)"): results obtained with them.
        stand_ins: Vec<String>,
    },
}

/// One stand-in of a tag's setup.
#[derive(Debug, Clone, Serialize)]
pub struct StandInView {
    pub package: String,
    pub original: String,
    pub stand_in: String,
    pub why: String,
    pub when: String,
    pub outcome: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct PlannedStepView {
    pub id: String,
    pub git_ref: String,
    pub action: String,
    pub reason: String,
}

pub trait Reporter: Send {
    fn report(&mut self, event: &RunEvent);
}

/// One JSON object per line on stdout.
pub struct JsonReporter;

impl Reporter for JsonReporter {
    fn report(&mut self, event: &RunEvent) {
        let mut value = serde_json::to_value(event).unwrap_or_default();
        if let Some(obj) = value.as_object_mut() {
            obj.insert("schema".into(), EVENT_SCHEMA.into());
            // When it happened (ms since the epoch): pipelines time the phases from it.
            let at_ms = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64);
            obj.insert("at_ms".into(), at_ms.into());
        }
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{value}");
        let _ = out.flush();
    }
}

/// Lines for people on stderr (stdout keeps the final summary only).
pub struct TextReporter {
    pub styler: Styler,
    /// Echo every output line of the scripts (-v); otherwise they go to the step logs.
    pub echo_output: bool,
}

/// The human line for an event (None: nothing to show for it).
pub fn event_line(event: &RunEvent, st: &Styler, echo_output: bool) -> Option<String> {
    let line = match event {
        RunEvent::Plan { steps } => {
            let mut s = String::from("Plan:\n");
            for step in steps {
                s.push_str(&format!(
                    "  {:<5} {:<10} {}  {}\n",
                    step.action,
                    step.git_ref,
                    step.id,
                    st.dim(&step.reason)
                ));
            }
            s.trim_end().to_string()
        }
        RunEvent::Notice { message } => st.warn(message),
        RunEvent::Setup {
            git_ref,
            status,
            phase,
            detail,
            ..
        } => format!(
            "{} {git_ref}: {status}{} {}",
            st.dim("setup"),
            phase_label(phase),
            st.dim(detail)
        ),
        RunEvent::StandIns { git_ref, stand_ins } => stand_ins
            .iter()
            .map(|s| {
                format!(
                    "{} {git_ref}: stand-in {} {} -> {} ({}, {})",
                    st.dim("setup"),
                    s.package,
                    s.original,
                    s.stand_in,
                    s.why,
                    s.outcome
                )
            })
            .collect::<Vec<_>>()
            .join("\n"),
        RunEvent::SetupOutput { git_ref, line } if echo_output => {
            format!("  {} {line}", st.dim(&format!("setup {git_ref} |")))
        }
        RunEvent::SetupOutput { .. } => return None,
        RunEvent::StepStarted {
            index,
            total,
            id,
            git_ref,
            runs_as,
            warnings,
        } => {
            let mut line = format!(
                "{} {} at {git_ref} ({runs_as})",
                st.bold(&format!("[{index}/{total}]")),
                st.bold(id)
            );
            for warning in warnings {
                line.push_str(&format!("\n  {} {}", st.warn("warning:"), warning));
            }
            line
        }
        RunEvent::Output { id, line, .. } if echo_output => {
            format!("  {} {line}", st.dim(&format!("{id} |")))
        }
        RunEvent::Output { .. } => return None,
        RunEvent::Verification { id, state, detail } => {
            format!("  {} {id}: {state} {}", st.dim("check"), st.dim(detail))
        }
        RunEvent::StepFinished {
            id,
            status,
            ended_by,
            reason,
            duration_ms,
        } => {
            let status_text = match status.as_str() {
                "succeeded" => st.good(status),
                "interrupted" => st.warn(status),
                _ => st.bad(status),
            };
            format!(
                "  {id}: {status_text} ({ended_by}, {:.1}s) {}",
                *duration_ms as f64 / 1000.0,
                st.dim(reason)
            )
        }
        RunEvent::Promotion {
            status,
            program,
            exit_code,
            duration_ms,
            detail,
        } => {
            let status_text = match status.as_str() {
                "succeeded" => st.good(status),
                _ => st.bad(status),
            };
            let code = exit_code.map(|c| format!("exit {c}, ")).unwrap_or_default();
            format!(
                "{} {program}: {status_text} ({code}{:.1}s) {}",
                st.bold("promotion"),
                *duration_ms as f64 / 1000.0,
                st.dim(detail)
            )
        }
        RunEvent::Summary { .. } => return None,
    };
    Some(line)
}

/// A setup event's phase as shown to people ("setup" is the whole setup: no label).
fn phase_label(phase: &str) -> String {
    match phase {
        "setup" | "" => String::new(),
        other => format!(" [{other}]"),
    }
}

impl Reporter for TextReporter {
    fn report(&mut self, event: &RunEvent) {
        if let Some(line) = event_line(event, &self.styler, self.echo_output) {
            eprintln!("{line}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One of each event, every field filled.
    fn samples() -> Vec<RunEvent> {
        let s = || String::from("x");
        vec![
            RunEvent::Plan {
                steps: vec![PlannedStepView {
                    id: s(),
                    git_ref: s(),
                    action: s(),
                    reason: s(),
                }],
            },
            RunEvent::Notice { message: s() },
            RunEvent::Setup {
                git_ref: s(),
                status: s(),
                phase: s(),
                detail: s(),
                duration_ms: 1,
            },
            RunEvent::StandIns {
                git_ref: s(),
                stand_ins: vec![StandInView {
                    package: s(),
                    original: s(),
                    stand_in: s(),
                    why: s(),
                    when: s(),
                    outcome: s(),
                }],
            },
            RunEvent::SetupOutput {
                git_ref: s(),
                line: s(),
            },
            RunEvent::StepStarted {
                index: 1,
                total: 1,
                id: s(),
                git_ref: s(),
                runs_as: s(),
                warnings: vec![s()],
            },
            RunEvent::Output {
                id: s(),
                stream: s(),
                line: s(),
            },
            RunEvent::Verification {
                id: s(),
                state: s(),
                detail: s(),
            },
            RunEvent::StepFinished {
                id: s(),
                status: s(),
                ended_by: s(),
                reason: s(),
                duration_ms: 1,
            },
            RunEvent::Summary {
                ran: 1,
                succeeded: 1,
                skipped: 1,
                failed: 1,
                status: s(),
                duration_ms: 1,
                stand_ins: vec![s()],
            },
        ]
    }

    #[test]
    fn the_documented_event_table_names_every_field_each_event_carries() {
        let docs = include_str!("../../docs/unattended.md");
        for event in samples() {
            let value = serde_json::to_value(&event).unwrap();
            let name = value["event"].as_str().unwrap().to_string();
            let row = docs
                .lines()
                .find(|l| l.starts_with(&format!("| `{name}` |")))
                .unwrap_or_else(|| panic!("docs/unattended.md has no row for {name}"));
            for field in value.as_object().unwrap().keys().filter(|k| *k != "event") {
                assert!(
                    row.contains(&format!("`{field}`")),
                    "docs/unattended.md does not name {name}'s field {field}: {row}"
                );
            }
        }
    }

    #[test]
    fn a_step_shows_its_warnings_as_it_starts() {
        let line = event_line(
            &RunEvent::StepStarted {
                index: 2,
                total: 3,
                id: "counter".into(),
                git_ref: "v1.2.0".into(),
                runs_as: "file".into(),
                warnings: vec!["Every run bumps the counter again.".into()],
            },
            &Styler::plain(),
            false,
        )
        .unwrap();
        assert_eq!(
            line,
            "[2/3] counter at v1.2.0 (file)\n  warning: Every run bumps the counter again."
        );
    }
}
