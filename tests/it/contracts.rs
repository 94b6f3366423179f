//! The documented contracts equal the code: the exit-code tables (README.md, docs/*.md) are
//! `ExitCode::TABLE` (every code of `ExitCode::ALL`), and the JSON event and state names and
//! the `ended_by` values in docs/unattended.md are the ones upstep emits. A renamed event or a renumbered code fails here, not in a user's pipeline.

use std::collections::BTreeSet;
use std::path::Path;

use upstep::error::ExitCode;
use upstep::store::fingerprint::FpState;
use upstep::store::journal::{EndedBy, StepStatus};
use upstep::ui::events::{PlannedStepView, RunEvent, StandInView};

fn read(rel: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(rel))
        .unwrap_or_else(|e| panic!("read {rel}: {e}"))
}

/// Markdown with every `| code | meaning |` exit-code table it holds, as (code, meaning) rows.
fn exit_code_tables(text: &str) -> Vec<Vec<(i32, String)>> {
    let mut tables = Vec::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        if line.replace(' ', "") != "|code|meaning|" {
            continue;
        }
        lines.next(); // the |---:|---| line
        let mut rows = Vec::new();
        while let Some(row) = lines.next_if(|l| l.starts_with('|')) {
            let cells: Vec<&str> = row.trim_matches('|').splitn(2, '|').collect();
            let code = cells[0].trim().parse().expect("a numeric exit code");
            rows.push((code, cells[1].trim().replace('`', "")));
        }
        tables.push(rows);
    }
    tables
}

#[test]
fn exit_code_tables_in_readme_and_docs_equal_the_code() {
    let expected: Vec<(i32, String)> = ExitCode::TABLE
        .iter()
        .map(|(code, meaning)| (*code, meaning.replace('`', "")))
        .collect();
    let mut files = vec!["README.md".to_string()];
    for entry in std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "md") {
            files.push(format!(
                "docs/{}",
                path.file_name().unwrap().to_string_lossy()
            ));
        }
    }
    let mut seen = 0;
    for file in &files {
        for table in exit_code_tables(&read(file)) {
            assert_eq!(table, expected, "the exit-code table in {file}");
            seen += 1;
        }
    }
    assert!(
        seen >= 2,
        "README.md and docs/unattended.md carry the table"
    );
    // And the table is every code of the enum (`ALL` cannot miss a variant), no other.
    let codes: Vec<i32> = ExitCode::ALL.iter().map(|c| c.as_i32()).collect();
    let documented: Vec<i32> = expected.iter().map(|(code, _)| *code).collect();
    assert_eq!(documented, codes, "ExitCode::TABLE against ExitCode::ALL");
}

/// Every variant of `RunEvent`, once. The match below fails to compile when one is added, so
/// this list (and the docs, by the test) keeps up.
fn one_of_each_event() -> Vec<RunEvent> {
    let events = vec![
        RunEvent::Plan {
            steps: vec![PlannedStepView {
                id: "a".into(),
                git_ref: "v1".into(),
                action: "run".into(),
                reason: String::new(),
            }],
        },
        RunEvent::Notice {
            message: String::new(),
        },
        RunEvent::Setup {
            git_ref: String::new(),
            status: String::new(),
            phase: String::new(),
            detail: String::new(),
            duration_ms: 0,
        },
        RunEvent::StandIns {
            git_ref: String::new(),
            stand_ins: vec![StandInView {
                package: String::new(),
                original: String::new(),
                stand_in: String::new(),
                why: String::new(),
                when: String::new(),
                outcome: String::new(),
            }],
        },
        RunEvent::SetupOutput {
            git_ref: String::new(),
            line: String::new(),
        },
        RunEvent::StepStarted {
            index: 1,
            total: 1,
            id: String::new(),
            git_ref: String::new(),
            runs_as: String::new(),
            warnings: Vec::new(),
        },
        RunEvent::Output {
            id: String::new(),
            stream: String::new(),
            line: String::new(),
        },
        RunEvent::Verification {
            id: String::new(),
            state: String::new(),
            detail: String::new(),
        },
        RunEvent::StepFinished {
            id: String::new(),
            status: String::new(),
            ended_by: String::new(),
            reason: String::new(),
            duration_ms: 0,
        },
        RunEvent::Summary {
            ran: 0,
            succeeded: 0,
            skipped: 0,
            failed: 0,
            status: String::new(),
            duration_ms: 0,
            stand_ins: Vec::new(),
        },
        RunEvent::Promotion {
            status: String::new(),
            program: String::new(),
            exit_code: None,
            duration_ms: 0,
            detail: String::new(),
        },
    ];
    for event in &events {
        // Exhaustive on purpose: a new event must be added above (and documented).
        match event {
            RunEvent::Plan { .. }
            | RunEvent::Notice { .. }
            | RunEvent::Setup { .. }
            | RunEvent::StandIns { .. }
            | RunEvent::SetupOutput { .. }
            | RunEvent::StepStarted { .. }
            | RunEvent::Output { .. }
            | RunEvent::Verification { .. }
            | RunEvent::StepFinished { .. }
            | RunEvent::Summary { .. }
            | RunEvent::Promotion { .. } => {}
        }
    }
    events
}

/// The first column of the `| event | fields |` table of docs/unattended.md, and each row.
fn documented_events() -> Vec<(String, String)> {
    let text = read("docs/unattended.md");
    let start = text
        .lines()
        .position(|l| l.replace(' ', "") == "|event|fields|")
        .expect("docs/unattended.md has the event table");
    text.lines()
        .skip(start + 2)
        .take_while(|l| l.starts_with('|'))
        .map(|row| {
            let cells: Vec<&str> = row.trim_matches('|').splitn(2, '|').collect();
            (
                cells[0].trim().trim_matches('`').to_string(),
                cells[1].to_string(),
            )
        })
        .collect()
}

#[test]
fn documented_json_events_are_the_emitted_ones() {
    let emitted: BTreeSet<String> = one_of_each_event()
        .iter()
        .map(|e| {
            let json = serde_json::to_value(e).unwrap();
            json["event"].as_str().expect("an event name").to_string()
        })
        .collect();
    let documented: BTreeSet<String> = documented_events().into_iter().map(|(e, _)| e).collect();
    assert_eq!(documented, emitted, "docs/unattended.md's event table");
}

/// The quoted names in a documented event's row, after `field` (up to the closing parenthesis).
fn quoted_after(row: &str, field: &str) -> BTreeSet<String> {
    let at = row
        .find(&format!("`{field}` ("))
        .unwrap_or_else(|| panic!("the row documents `{field}` (...): {row}"));
    let rest = &row[at..];
    let list = &rest[..rest.find(')').expect("a closing parenthesis")];
    list.split('"')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect()
}

fn row_of(event: &str) -> String {
    documented_events()
        .into_iter()
        .find(|(e, _)| e == event)
        .map(|(_, row)| row)
        .unwrap_or_else(|| panic!("no documented {event} event"))
}

#[test]
fn documented_verification_states_are_the_emitted_ones() {
    let emitted: BTreeSet<String> = [
        FpState::Applied,
        FpState::NotApplicable,
        FpState::Pending,
        FpState::Unknown,
    ]
    .iter()
    .map(|s| s.as_str().to_string())
    .collect();
    assert_eq!(quoted_after(&row_of("verification"), "state"), emitted);
}

#[test]
fn documented_step_statuses_are_the_emitted_ones() {
    // The ways a run settles a step it ran (the others are recorded by `mark` or a skip).
    let emitted: BTreeSet<String> = [
        StepStatus::Succeeded,
        StepStatus::Failed,
        StepStatus::Interrupted,
        StepStatus::EndedUnverified,
    ]
    .iter()
    .map(|s| s.as_str().to_string())
    .collect();
    assert_eq!(quoted_after(&row_of("step-finished"), "status"), emitted);
}

/// The first column (backticks dropped) of the docs/unattended.md table whose header row,
/// spaces removed, is `header`.
fn first_column_of_table(header: &str, what: &str) -> BTreeSet<String> {
    let text = read("docs/unattended.md");
    let start = text
        .lines()
        .position(|l| l.replace(' ', "") == header)
        .unwrap_or_else(|| panic!("docs/unattended.md has {what}"));
    text.lines()
        .skip(start + 2)
        .take_while(|l| l.starts_with('|'))
        .map(|row| {
            row.trim_matches('|')
                .split('|')
                .next()
                .unwrap()
                .trim()
                .trim_matches('`')
                .to_string()
        })
        .collect()
}

/// The first column of the `| ended_by | meaning for you |` table of docs/unattended.md.
fn documented_endings() -> BTreeSet<String> {
    first_column_of_table(
        "|ended_by|meaningforyou|",
        "the table explaining each ended_by",
    )
}

#[test]
fn documented_step_endings_are_the_emitted_ones() {
    // Every ending the journal records is an `EndedBy` (typed in `StepEnd`), and `ALL` holds
    // each variant: a new one fails here until it is explained.
    let all: BTreeSet<String> = EndedBy::ALL
        .iter()
        .map(|e| e.as_str().to_string())
        .collect();
    assert_eq!(documented_endings(), all, "the ended_by table");
    let in_events: BTreeSet<String> = EndedBy::ALL
        .iter()
        .filter(|e| e.in_step_finished())
        .map(|e| e.as_str().to_string())
        .collect();
    assert_eq!(
        quoted_after(&row_of("step-finished"), "ended_by"),
        in_events,
        "the step-finished row's ended_by list"
    );
}

#[test]
fn documented_summary_statuses_are_exit_code_names() {
    let names: BTreeSet<&str> = ExitCode::ALL.iter().map(|c| c.name()).collect();
    for status in quoted_after(&row_of("summary"), "status") {
        assert!(
            names.contains(status.as_str()),
            "the summary status {status:?} in docs is no exit code's name"
        );
    }
}

#[test]
fn every_json_schema_id_is_documented_and_no_other() {
    let documented = first_column_of_table("|schema|writtenby|", "the JSON documents table");
    let emitted: BTreeSet<String> = upstep::json_schemas::ALL
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert_eq!(
        documented, emitted,
        "docs/unattended.md's JSON documents table"
    );
}
