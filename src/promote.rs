//! `upgrade --then CMD...`: the release flow's last step ("back up, migrate, promote only on
//! success"). After a run, the plan is read again from the journal and the data; the
//! promotion command runs only when every step of the plan is verified, through the one spawn
//! path, and is journalled (`promotion-started`, then `promotion-finished` with its exit
//! code, or `promotion-withheld`). A failed or withheld promotion exits 14 and changes nothing
//! the journal says about the steps.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use crate::error::{Error, Result};
use crate::executor::decide::Action;
use crate::executor::{self, DecidedStep, UpgradeOptions};
use crate::runner::process::{self, ChildSpec, Ending, Watch};
use crate::runner::signals::SignalWatcher;
use crate::store::fingerprint::FpState;
use crate::store::journal::{Actor, Journal, JournalEntry, StepStatus};
use crate::store::mirror::Mirror;
use crate::store::Store;
use crate::ui::events::{Reporter, RunEvent};

/// The argv of a `--then` command: several words are the argv as given; a single argument
/// holding whitespace is a shell line, run by `sh -c` (the way people write
/// `--then "docker compose up -d"`).
pub fn command_argv(then: &[String]) -> Vec<String> {
    match then {
        [line] if line.trim().contains(char::is_whitespace) => {
            vec!["sh".into(), "-c".into(), line.clone()]
        }
        argv => argv.to_vec(),
    }
}

/// A step of the plan whose work is not verified, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unverified {
    pub id: String,
    pub why: String,
}

/// The steps that keep the promotion from running. A step counts as verified when its data
/// check finds nothing pending (applied, or not applicable), or, for a step no data check can
/// read, when the operator vouched for it: `upstep mark <id> --applied`, or `--from` at or
/// after its release. A step that succeeded but that no data check can verify is not
/// verified: promoting an application over data nobody checked is the operator's call.
pub fn unverified_steps(
    decided: &[DecidedStep],
    entries: &BTreeMap<String, JournalEntry>,
) -> Vec<Unverified> {
    let mut out = Vec::new();
    for d in decided {
        // An optional step the operator left out is not part of what is promoted.
        if d.decision.left_out {
            continue;
        }
        let journal = entries.get(&d.id).map(|e| e.status);
        let data = d.data.unwrap_or(FpState::Unknown);
        let why = match (data, journal) {
            (s, _) if s.nothing_pending() => continue,
            (FpState::Pending, _) => "its data check still finds pending documents".to_string(),
            (_, Some(StepStatus::MarkedApplied)) => continue,
            (_, None) if d.decision.action == Action::Skip => continue,
            (_, Some(StepStatus::Succeeded)) => {
                "it succeeded, but no data check can verify its work".to_string()
            }
            (_, Some(status)) => format!("the journal says {}", status.as_str()),
            (_, None) => {
                "it has not run, and no data check can tell whether it is applied".to_string()
            }
        };
        out.push(Unverified {
            id: d.id.clone(),
            why,
        });
    }
    out
}

/// After a run that ended well: check the plan once more and run the promotion command.
pub async fn after_run(
    then: &[String],
    opts: &UpgradeOptions,
    store: &Store,
    watcher: &SignalWatcher,
    reporter: &mut dyn Reporter,
) -> Result<()> {
    let argv = command_argv(then);
    let Some(program) = argv.first().cloned() else {
        return Ok(());
    };
    let journal = Journal::new(
        store,
        Actor::current(),
        Mirror::for_database(&opts.state_dir, &store.redacted_uri),
    );
    let plan = executor::full_plan(opts)?;
    let entries = crate::store::journal::read_entries(store).await?;
    let decided = executor::decide_steps(opts, &plan, store, &entries).await;
    let unverified = unverified_steps(&decided, &entries);
    if !unverified.is_empty() {
        let lines: Vec<String> = unverified
            .iter()
            .map(|u| format!("{}: {}", u.id, u.why))
            .collect();
        let ids: Vec<&str> = unverified.iter().map(|u| u.id.as_str()).collect();
        journal
            .event(
                "promotion-withheld",
                None,
                bson::doc! { "program": &program, "steps": &ids },
            )
            .await?;
        reporter.report(&RunEvent::Promotion {
            status: "withheld".into(),
            program: program.clone(),
            exit_code: None,
            duration_ms: 0,
            detail: format!("not verified: {}", ids.join(", ")),
        });
        return Err(Error::Promotion(format!(
            "the promotion ({program}) was not run: not every step of the plan is verified:\n  {}\n  fix: check those steps' work by hand and record each with `upstep mark <id> --applied` (or finish them with --retry), then run the same command again: nothing runs twice, and the promotion follows",
            lines.join("\n  ")
        )));
    }

    let log = opts
        .state_dir
        .join("logs")
        .join(&journal.actor().run_id)
        .join("promotion.log");
    let spec = ChildSpec {
        program: PathBuf::from(&program),
        args: argv[1..].to_vec(),
        cwd: std::env::current_dir().unwrap_or_else(|_| PathBuf::from(".")),
        env: Vec::new(),
        env_remove: opts.connection.private_env.clone(),
        path_prefix: Vec::new(),
        log_file: log.clone(),
        log_append: false,
        secrets: opts.connection.secrets(),
    };
    journal
        .event(
            "promotion-started",
            None,
            bson::doc! { "program": &program, "args": (argv.len() - 1) as i64 },
        )
        .await?;
    reporter.report(&RunEvent::Notice {
        message: format!(
            "every step is verified: promoting ({program}; log: {})",
            log.display()
        ),
    });
    let started = Instant::now();
    let outcome = match process::spawn_child(&spec) {
        Ok(child) => {
            child
                .wait(
                    Watch {
                        grace: opts.grace,
                        ..Watch::default()
                    },
                    watcher.stop_receiver(),
                    None,
                    &mut |line| {
                        let stream = match line.stream {
                            process::Stream::Stdout => "stdout",
                            process::Stream::Stderr => "stderr",
                        };
                        reporter.report(&RunEvent::Output {
                            id: "promotion".into(),
                            stream: stream.into(),
                            line: line.text,
                        });
                    },
                )
                .await
        }
        Err(e) => Err(e),
    };
    let duration_ms = started.elapsed().as_millis() as u64;
    let (status, exit_code, signal, detail, tail) = match &outcome {
        Ok(o) => match (&o.ending, o.exit_code, o.signal) {
            (Ending::Stopped { signal }, _, _) => (
                "interrupted",
                o.exit_code,
                Some(*signal),
                format!("stopped by signal {signal}"),
                o.tail.clone(),
            ),
            (_, Some(0), _) => ("succeeded", Some(0), None, "exit 0".to_string(), Vec::new()),
            (_, Some(code), _) => (
                "failed",
                Some(code),
                None,
                format!("exited with code {code}"),
                o.tail.clone(),
            ),
            (_, None, sig) => (
                "failed",
                None,
                sig,
                format!("killed by signal {}", sig.unwrap_or_default()),
                o.tail.clone(),
            ),
        },
        Err(e) => (
            "failed",
            None,
            None,
            format!("could not start: {e}"),
            Vec::new(),
        ),
    };
    journal
        .event(
            "promotion-finished",
            None,
            bson::doc! {
                "program": &program, "status": status, "exit_code": exit_code,
                "signal": signal, "duration_ms": duration_ms as i64, "log": log.display().to_string(),
            },
        )
        .await?;
    reporter.report(&RunEvent::Promotion {
        status: status.into(),
        program: program.clone(),
        exit_code,
        duration_ms,
        detail: format!("{detail} (log: {})", log.display()),
    });
    match status {
        "succeeded" => Ok(()),
        "interrupted" if signal == Some(libc::SIGTERM) => Err(Error::Terminated),
        "interrupted" => Err(Error::Interrupted),
        _ => {
            let last: Vec<&String> = tail.iter().rev().take(8).rev().collect();
            let shown = if last.is_empty() {
                String::new()
            } else {
                format!(
                    "\n  last lines:\n    {}",
                    last.iter()
                        .map(|l| l.as_str())
                        .collect::<Vec<_>>()
                        .join("\n    ")
                )
            };
            Err(Error::Promotion(format!(
                "every step succeeded and is verified, but the promotion ({program}) failed: {detail}{shown}\n  full log: {}\n  fix: the data is migrated and the journal says so; fix the promotion's cause and run it by hand (or run the same upgrade command again: nothing runs twice, and the promotion follows)",
                log.display()
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::executor::decide::Decision;

    fn step(id: &str, data: Option<FpState>, action: Action) -> DecidedStep {
        DecidedStep {
            group: 0,
            id: id.into(),
            git_ref: "v1".into(),
            decision: Decision {
                action,
                reason: String::new(),
                regressed: false,
                unknown: false,
                left_out: false,
            },
            data,
        }
    }

    fn left_out(mut d: DecidedStep) -> DecidedStep {
        d.decision.left_out = true;
        d
    }

    fn entries(list: &[(&str, StepStatus)]) -> BTreeMap<String, JournalEntry> {
        list.iter()
            .map(|(id, status)| {
                let status = bson::to_bson(status).unwrap();
                let entry = bson::from_document(bson::doc! { "_id": *id, "status": status });
                (id.to_string(), entry.unwrap())
            })
            .collect()
    }

    #[test]
    fn a_shell_line_runs_through_sh_and_words_run_as_given() {
        assert_eq!(
            command_argv(&["docker compose up -d".into()]),
            ["sh", "-c", "docker compose up -d"]
        );
        assert_eq!(
            command_argv(&["docker".into(), "compose".into(), "up".into()]),
            ["docker", "compose", "up"]
        );
        assert_eq!(command_argv(&["true".into()]), ["true"]);
    }

    #[test]
    fn only_data_checks_or_the_operators_word_verify_a_step() {
        let decided = vec![
            step("applied", Some(FpState::Applied), Action::Skip),
            step("absent", Some(FpState::NotApplicable), Action::Skip),
            step("marked", Some(FpState::Unknown), Action::Skip),
            step("older-than-from", Some(FpState::Unknown), Action::Skip),
            step("unchecked", Some(FpState::Unknown), Action::Skip),
            step("regressed", Some(FpState::Pending), Action::Skip),
            step("failed", Some(FpState::Unknown), Action::Block),
            step("never-ran", Some(FpState::Unknown), Action::Run),
            left_out(step("optional", Some(FpState::Pending), Action::Skip)),
        ];
        let entries = entries(&[
            ("applied", StepStatus::Succeeded),
            ("marked", StepStatus::MarkedApplied),
            ("unchecked", StepStatus::Succeeded),
            ("regressed", StepStatus::Succeeded),
            ("failed", StepStatus::Failed),
        ]);
        let ids: Vec<String> = unverified_steps(&decided, &entries)
            .into_iter()
            .map(|u| u.id)
            .collect();
        assert_eq!(ids, ["unchecked", "regressed", "failed", "never-ran"]);
    }
}
