//! The executor: runs the steps of an upgrade, one run at a time, journalled, verified and
//! resumable. `run` is the whole flow; each stage has its file:
//!
//! - `guided.rs`: the questions before and after a run (through the `Prompt` effect)
//! - `lock.rs`: the run lock: taken, taken over from a dead run, kept by heartbeat, released
//! - `recovery.rs`: what a dead run left; scripts changed since they ran; a dropped tunnel
//! - `facts.rs`: journal + data -> every step decided (the rules: `decide.rs`), before the
//!   preflight (`before_run`) and again in the lock
//! - `prepare.rs`: backup, downloads; per tag: worktree, toolchain, then removal
//! - `setup.rs`: per tag: install and build, stamped (`src/shared_cache.rs`: the package store
//!   and build cache every tag shares; `build_outputs.rs`: a tag's build kept and restored)
//! - `overlap.rs`: the next tag prepared while this tag's steps run
//! - `step.rs`: per step: journal running, run, classify the ending, settle
//! - `verify.rs`: per step: the data check after a success
//! - `stop.rs`: signals, a lost lock, a dropped tunnel
//! - `report.rs`: the summary; the dry run
//! - `effects.rs`: every effect behind a trait; `real.rs` and `fakes.rs` implement them

pub mod approval;
pub mod build_outputs;
pub mod command;
pub mod command_step;
pub mod decide;
pub mod effects;
pub mod lockfile;
pub mod real;
pub mod rollback;
pub mod shim;
pub mod tool_steps;

mod facts;
#[cfg(test)]
mod fakes;
mod guided;
mod lock;
mod overlap;
mod prepare;
mod recovery;
mod report;
mod request;
mod setup;
mod stand_ins;
mod step;
mod stop;
#[cfg(test)]
mod tests;
mod verify;
mod vouched;

pub use facts::{
    decide_all, decide_steps, full_plan, plan_event, plan_to_run, read_data, DataStates,
    DecidedStep, KnownFacts, FROM_THE_DATA,
};
pub use lock::mark_locked;
pub use overlap::Overlap;
pub use recovery::tunnel_rerun_is_safe;
pub use report::Summary;
pub use request::{Questions, RunRequest, UpgradeOptions};
pub use setup::setup_fix;

use std::sync::Arc;

use crate::error::{Error, Result};
use crate::plan::Plan;
use crate::runner::process::StopRequest;
use crate::runner::signals::SignalWatcher;
use crate::ui::events::RunEvent;
use decide::Action;
use effects::Effects;
use stop::Stops;

/// An upgrade: the questions before it (at a terminal), the services and checks it needs, the
/// run, and (at a terminal) the question about a step that ended unverified, then on.
pub async fn run(request: RunRequest, fx: &mut Effects<'_>) -> Result<Summary> {
    let RunRequest {
        options: mut opts,
        questions: asks,
    } = request;
    let decided = if asks.guided && !opts.dry_run {
        Some(guided::decide_before(asks, &mut opts, fx).await?)
    } else {
        None
    };
    let plan = full_plan(&opts)?;
    // The decision the preflight checks (reusing what the guided flow read) is where the run
    // starts from while the journal is unchanged. A dry run decides in `run_upgrade`, and has
    // no preflight.
    let before = match opts.dry_run {
        true => None,
        false => {
            let guided_facts = decided.as_ref().map(|(_, facts)| facts);
            Some(facts::decide_before_run(&opts, &plan, guided_facts, fx).await?)
        }
    };
    let to_run = before.as_ref().map_or(&plan, |b| &b.to_run);
    fx.surroundings
        .prepare(&mut opts, &plan, to_run, fx.reporter)
        .await?;
    let mut known = before.map(|b| b.facts);
    let watcher = fx.surroundings.watch_signals()?;
    if let Some((decided, _)) = decided {
        guided::confirm_risky_steps(&mut opts, &plan, &decided, fx).await?;
    }
    loop {
        // The facts serve the first attempt only: a decision changes the journal.
        let result = run_upgrade(&opts, watcher.clone(), known.take(), fx).await;
        let undecided = asks.guided
            && matches!(
                result.as_ref().map_err(Error::cause),
                Err(Error::NeedsDecision(_))
            )
            && watcher.current() == StopRequest::None;
        if undecided && guided::decide_unverified(&mut opts, fx).await? {
            fx.store = fx.store.next_run();
            continue;
        }
        return result;
    }
}

/// The run proper: decide -> lock -> per tag -> per step -> report. `known`: the facts a
/// decision before the run was made from, reused when the journal has not changed.
pub async fn run_upgrade(
    opts: &UpgradeOptions,
    watcher: Arc<SignalWatcher>,
    known: Option<KnownFacts>,
    fx: &mut Effects<'_>,
) -> Result<Summary> {
    let started = fx.clock.now();
    let plan = full_plan(opts)?;
    if opts.dry_run {
        return report::dry_run(opts, &plan, fx).await;
    }
    let (stops, heartbeat) = lock::take_and_keep(opts, watcher, fx).await?;
    // Owned here so a failed run still reports what it did.
    let mut summary = Summary::default();
    let result = run_locked(opts, &plan, &stops, known, &mut summary, fx).await;
    drop(heartbeat);
    lock::release(fx.store.as_ref(), &stops).await;
    report::report_summary(&result, &summary, started, fx);
    result.map_err(|e| e.with_report(summary.report()))
}

async fn run_locked(
    opts: &UpgradeOptions,
    plan: &Plan,
    stops: &Stops,
    known: Option<KnownFacts>,
    summary: &mut Summary,
    fx: &mut Effects<'_>,
) -> Result<Summary> {
    let started = bson::doc! { "to": plan.to.clone(), "dry_run": false };
    fx.store.event("run-started", None, started).await?;
    recovery::settle_abandoned(opts, fx).await?;
    let decided = facts::decide_in_lock(opts, plan, known, fx).await?;
    vouched::record(opts, &decided, fx).await?;
    summary.skipped = facts::count(&decided, Action::Skip);
    let to_run: Vec<&DecidedStep> = decided
        .iter()
        .filter(|d| d.decision.action == Action::Run)
        .collect();
    if to_run.is_empty() {
        fx.reporter.report(&RunEvent::Notice {
            message: "nothing to run: every step is applied".into(),
        });
        return Ok(summary.clone());
    }
    let workspace = prepare::code(fx)?;
    stops.check()?;
    prepare::check_downloads(opts, plan, workspace, &to_run).await?;
    tool_steps::check_files(opts, plan, workspace, &to_run)?;
    let backup = stops.until(prepare::take_backup(opts, fx)).await?;
    let mut run = Progress {
        to_run: &to_run,
        backup: backup.as_deref(),
        index: 0,
        ahead: None,
    };
    for g in 0..plan.groups.len() {
        run_tag(opts, plan, g, &mut run, stops, summary, fx).await?;
    }
    let finished = bson::doc! { "ran": summary.ran as i64, "skipped": summary.skipped as i64 };
    fx.store.event("run-finished", None, finished).await?;
    Ok(summary.clone())
}

/// Where the run is: the steps it runs, the backup they follow, how many have started, and
/// the tag prepared while the steps of the one before it ran (`overlap.rs`).
struct Progress<'a> {
    to_run: &'a [&'a DecidedStep],
    backup: Option<&'a str>,
    index: usize,
    ahead: Option<overlap::Ahead>,
}

/// One tag: prepare it (or take it prepared ahead), run its steps in order (each settled
/// before the next) while the next tag is prepared, free it.
async fn run_tag(
    opts: &UpgradeOptions,
    plan: &Plan,
    g: usize,
    run: &mut Progress<'_>,
    stops: &Stops,
    summary: &mut Summary,
    fx: &mut Effects<'_>,
) -> Result<()> {
    let to_run = run.to_run;
    let steps: Vec<&DecidedStep> = to_run.iter().copied().filter(|d| d.group == g).collect();
    if steps.is_empty() {
        return Ok(());
    }
    let tag = match overlap::Ahead::arrive(&mut run.ahead, g, fx).await {
        Some(prepared) => prepared?,
        None => prepare::prepare_tag(opts, &plan.groups[g], &steps, stops, fx).await?,
    };
    let Some((h, next)) = overlap::next_ahead(opts, plan, g, to_run, fx) else {
        return run_steps(opts, plan, g, &steps, &tag, run, stops, summary, fx).await;
    };
    let (result, ahead) = overlap::steps_alongside(
        opts,
        plan,
        (g, h),
        &next,
        stops,
        fx,
        async |fx: &mut Effects<'_>| {
            run_steps(opts, plan, g, &steps, &tag, run, stops, summary, fx).await
        },
    )
    .await;
    run.ahead = ahead;
    result
}

/// The steps of one prepared tag, in order, each settled before the next; then its worktree
/// goes (a failed step returns first and keeps it for the retry).
#[allow(clippy::too_many_arguments)]
async fn run_steps(
    opts: &UpgradeOptions,
    plan: &Plan,
    g: usize,
    steps: &[&DecidedStep],
    tag: &prepare::PreparedTag,
    run: &mut Progress<'_>,
    stops: &Stops,
    summary: &mut Summary,
    fx: &mut Effects<'_>,
) -> Result<()> {
    // Results obtained at this tag are obtained with its stand-ins (the summary says so).
    summary.stand_ins.extend(tag.stand_ins.iter().cloned());
    // The migration tool of its command steps is installed, or none of them starts.
    tool_steps::check_tools(
        opts,
        &plan.groups[g],
        steps,
        &tag.worktree,
        &tag.path_prefix,
    )?;
    for step in steps {
        // A stop that came between steps (or during the setup) starts no further step.
        stops.check()?;
        if tool_steps::applied_meanwhile(opts, &step.id, fx).await? {
            summary.skipped += 1;
            continue;
        }
        run.index += 1;
        let at = step::StepAt {
            group_index: g,
            commit: &tag.tag.commit,
            worktree: &tag.worktree,
            path_prefix: &tag.path_prefix,
            backup: run.backup,
            index: run.index,
            total: run.to_run.len(),
        };
        let settled = step::run_until_settled(opts, plan, &step.id, &at, stops, fx).await?;
        summary.settled(&step.id, &plan.groups[g].git_ref, settled.status());
        step::go_on_after(settled, &step.id, stops)?;
        if stops.current() == StopRequest::AfterStep {
            return Err(Error::Interrupted);
        }
    }
    prepare::release_tag(opts, plan, g, run.to_run, &tag.tag, fx)
}
