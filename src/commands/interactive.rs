//! The questions of an interactive upgrade (a person at a terminal). Every function here is
//! only called when stdin and stdout are terminals and --yes was not given; unattended runs
//! never reach a prompt.

use std::path::PathBuf;
use std::sync::Arc;

use dialoguer::{Confirm, Input, Password, Select};
use futures_util::future::LocalBoxFuture;
use semver::Version;

use crate::detect::DetectReport;
use crate::error::{Error, Result};
use crate::executor::effects::{Blocked, Prompt};
use crate::executor::DecidedStep;
use crate::release_map::ReleaseMap;
use crate::runner::process::StopRequest;
use crate::runner::signals::SignalWatcher;
use crate::ui::Styler;
use crate::version::display;

/// A prompt that was cancelled (Ctrl-C, closed terminal) ends the run as interrupted.
fn cancelled(_: dialoguer::Error) -> Error {
    Error::Interrupted
}

/// The connection, when nothing configured one. Typed hidden: a URI may hold a password.
pub fn ask_mongo_uri() -> Result<crate::redact::Uri> {
    Password::new()
        .with_prompt("MongoDB URI of the deployment, database included (input hidden)")
        .interact()
        .map(crate::redact::Uri::from)
        .map_err(cancelled)
}

/// The target, from the releases newer than where the data stands (newest first).
pub fn choose_target(map: &ReleaseMap, detected: Option<&Version>) -> Result<Version> {
    let newer: Vec<&crate::release_map::Release> = map
        .releases
        .iter()
        .rev()
        .filter(|r| detected.is_none_or(|d| &r.version > d))
        .collect();
    if newer.is_empty() {
        // Nothing newer than the data: the newest release is where it stands.
        return map.newest_version();
    }
    let labels: Vec<String> = newer
        .iter()
        .map(|r| {
            let mut label = format!(
                "{} ({})",
                r.tag,
                r.date.as_deref().unwrap_or("date unknown")
            );
            if !r.verified {
                label.push_str("  unverified");
            }
            label
        })
        .collect();
    let prompt = match detected {
        Some(v) => format!("The data looks like {}. Upgrade to", display(v)),
        None => "Upgrade to".to_string(),
    };
    // The default is the newest verified release, as without a terminal.
    let default = newer.iter().position(|r| r.verified).unwrap_or(0);
    let choice = Select::new()
        .with_prompt(prompt)
        .items(&labels)
        .default(default)
        .interact()
        .map_err(cancelled)?;
    Ok(newer[choice].version.clone())
}

/// The journal shows failed or interrupted steps: what happened, and what to do about it.
pub fn resolve_blocked(blocked: &[&DecidedStep]) -> Result<Blocked> {
    eprintln!("The journal shows steps that did not finish:");
    for step in blocked {
        eprintln!("  {} ({}): {}", step.id, step.git_ref, step.decision.reason);
    }
    let items = [
        "Retry them (only when safe: idempotent or guarded, or the data shows the work missing)",
        "Mark them as applied (their work was done some other way)",
        "Stop here",
    ];
    let choice = Select::new()
        .with_prompt("What now?")
        .items(&items)
        .default(0)
        .interact()
        .map_err(cancelled)?;
    Ok(match choice {
        0 => Blocked::Retry,
        1 => Blocked::MarkApplied,
        _ => Blocked::Stop,
    })
}

/// A yes/no question (default no) asked off the async runtime: the signal watcher and the
/// lease keep running while a person thinks.
async fn ask_no_by_default(prompt: String) -> Result<bool> {
    tokio::task::spawn_blocking(move || {
        Confirm::new()
            .with_prompt(prompt)
            .default(false)
            .interact()
            .map_err(cancelled)
    })
    .await
    .map_err(|e| Error::Internal(e.to_string()))?
}

/// The approval of one step that is not idempotent and unverifiable (`--approve <id>` at a
/// terminal).
pub async fn approve_step(id: &str) -> Result<bool> {
    ask_no_by_default(format!("Approve running {id}?")).await
}

/// The routine confirmation of the listed steps (what `--yes` answers).
pub async fn confirm_risky() -> Result<bool> {
    ask_no_by_default("Run them?".to_string()).await
}

pub fn confirm_run(steps: usize) -> Result<bool> {
    Confirm::new()
        .with_prompt(if steps == 1 {
            "Run this step?".to_string()
        } else {
            format!("Run these {steps} steps?")
        })
        .default(true)
        .interact()
        .map_err(cancelled)
}

/// Offer a backup before the first step (default yes): legacy migrations cannot be undone.
pub fn ask_backup() -> Result<Option<PathBuf>> {
    let take = Confirm::new()
        .with_prompt("Back up the database before migrating? (legacy migrations cannot be undone)")
        .default(true)
        .interact()
        .map_err(cancelled)?;
    if !take {
        return Ok(None);
    }
    let stamp: String = crate::backup::now_rfc3339()
        .chars()
        .filter(|c| c.is_ascii_digit())
        .take(14)
        .collect();
    let dir: String = Input::new()
        .with_prompt("Backup directory")
        .default(format!("upstep-backup-{stamp}"))
        .interact_text()
        .map_err(cancelled)?;
    Ok(Some(PathBuf::from(dir)))
}

/// The first Ctrl-C asks: stop after the running step, stop now, or go on. (A second Ctrl-C
/// stops now without asking: the signal policy does that.) The bars are hidden while asking.
pub fn spawn_stop_prompt(watcher: Arc<SignalWatcher>, multi: Option<indicatif::MultiProgress>) {
    let Some(mut asks) = watcher.take_ask_receiver() else {
        return;
    };
    tokio::spawn(async move {
        while asks.recv().await.is_some() {
            let multi = multi.clone();
            let answer = tokio::task::spawn_blocking(move || {
                let ask = || {
                    Select::new()
                        .with_prompt("Interrupt the upgrade?")
                        .items(&[
                            "Stop after the running step",
                            "Stop now (the step is recorded as interrupted)",
                            "Go on",
                        ])
                        .default(0)
                        .interact()
                };
                match multi {
                    Some(m) => m.suspend(ask),
                    None => ask(),
                }
            })
            .await;
            match answer {
                Ok(Ok(0)) => watcher.set_stop(StopRequest::AfterStep),
                Ok(Ok(1)) | Ok(Err(_)) => watcher.set_stop(StopRequest::Now {
                    signal: libc::SIGINT,
                }),
                _ => {}
            }
        }
    });
}

/// The questions of a run, answered by a person at the terminal.
pub struct TerminalPrompt;

impl Prompt for TerminalPrompt {
    fn target(&self, map: &ReleaseMap, detected: &DetectReport) -> Result<Version> {
        eprint!(
            "{}",
            crate::ui::detect_text::render(detected, &Styler::for_stderr())
        );
        let at = detected
            .detected
            .as_deref()
            .and_then(|v| Version::parse(v).ok());
        choose_target(map, at.as_ref())
    }
    fn blocked(&self, steps: &[&DecidedStep]) -> Result<Blocked> {
        resolve_blocked(steps)
    }
    fn confirm_run(&self, steps: usize) -> Result<bool> {
        confirm_run(steps)
    }
    fn backup(&self) -> Result<Option<PathBuf>> {
        ask_backup()
    }
    fn approve_step<'a>(&'a self, id: &'a str) -> LocalBoxFuture<'a, Result<bool>> {
        Box::pin(approve_step(id))
    }
    fn confirm_risky(&self) -> LocalBoxFuture<'_, Result<bool>> {
        Box::pin(confirm_risky())
    }
}
