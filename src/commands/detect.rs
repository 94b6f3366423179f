//! `upstep detect` and `upstep plan --detect`: read-only commands that connect to the
//! database and read its journal and data.

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;

use super::run::{connect, read_only_options, resolve_settings};
use super::{load_map_from, open_repo_spec, runtime};
use crate::cli::{DetectArgs, PlanArgs};
use crate::detect::{self, DetectOptions};
use crate::error::{Error, ExitCode, Result};
use crate::executor::decide::{Action, Decision};
use crate::executor::DecidedStep;
use crate::git::{GitRepo, RepoLocation};
use crate::plan::Plan;
use crate::ui::{self, plan_text, Styler};
use crate::version::display;

/// Pending documents are counted up to this many per check ("at least N" beyond).
const COUNT_LIMIT: u64 = 1000;

fn time_limit(secs: f64) -> Result<Duration> {
    if !(secs.is_finite() && secs > 0.0 && secs <= 86_400.0) {
        return Err(Error::usage(
            format!("--time-limit-secs {secs} is not a usable time limit"),
            "pass a number of seconds above 0, e.g. --time-limit-secs 30 (0.5 for half a second)",
        ));
    }
    // maxTimeMS is whole milliseconds: never round a small limit down to 0 (= no limit).
    Ok(Duration::from_millis(
        ((secs * 1000.0).ceil() as u64).max(1),
    ))
}

/// A spinner with a counter on stderr while the checks run; hidden when stderr is not a
/// terminal.
fn progress_bar() -> ProgressBar {
    let target = if std::io::stderr().is_terminal() {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::hidden()
    };
    let bar = ProgressBar::with_draw_target(Some(0), target);
    if let Ok(style) =
        ProgressStyle::with_template("{spinner} checking migrations {pos}/{len}  {elapsed}")
    {
        bar.set_style(style);
    }
    bar.enable_steady_tick(Duration::from_millis(120));
    bar
}

/// The local checkout named by --repo (a URL is cloned into upstep's cache: its HEAD says
/// nothing about what is deployed, so it is not used for the target).
fn local_repo(location: Option<&RepoLocation>) -> Result<Option<GitRepo>> {
    match location.and_then(RepoLocation::local_path) {
        Some(path) if path.exists() => GitRepo::open(path).map(Some),
        _ => Ok(None),
    }
}

pub fn detect_command(args: &DetectArgs) -> Result<ExitCode> {
    let settings = resolve_settings(&args.connect, &args.repo, &args.map)?;
    let map = load_map_from(settings.map.as_ref().map(|m| m.value.as_path()))?;
    let from = super::from_version(&map, args.from.as_deref())?;
    let repo = match &args.to {
        Some(_) => None,
        None => local_repo(settings.repo.as_ref().map(|r| &r.value))?,
    };
    let (mut to, to_source) = detect::resolve_target(
        &map,
        args.to.as_deref(),
        repo.as_ref(),
        args.include_unreleased,
    )?;
    // Data believed past the default target is compared with itself, not "downgraded".
    if to_source == detect::TargetSource::NewestInMap {
        if let Some(from) = from.as_ref().filter(|f| **f > to) {
            to = from.clone();
        }
    }
    let opts = DetectOptions {
        from,
        to,
        to_source,
        time_limit: time_limit(args.time_limit_secs)?,
        count_limit: COUNT_LIMIT,
        include_unreleased: args.include_unreleased,
    };
    let report = runtime()?.block_on(async {
        let connected = connect(&settings, !super::run::is_interactive(false)).await?;
        let bar = progress_bar();
        let progress = |done: usize, total: usize| {
            bar.set_length(total as u64);
            bar.set_position(done as u64);
        };
        let report = detect::detect(&map, &connected.store, opts, &progress).await;
        bar.finish_and_clear();
        drop(connected);
        report
    })?;
    if args.output.json {
        ui::print_json(&report)?;
    } else {
        ui::print_text(&ui::detect_text::render(&report, &Styler::for_stdout()))?;
    }
    Ok(ExitCode::Success)
}

/// The plan document with a `decision` per step (`plan --detect --json`).
#[derive(Serialize)]
struct DecidedPlan<'a> {
    #[serde(flatten)]
    plan: serde_json::Value,
    detect: bool,
    database: &'a str,
    would_run: usize,
    skipped: usize,
    blocked: usize,
}

fn decision_of<'d>(decided: &'d [DecidedStep], id: &str) -> Option<&'d Decision> {
    decided.iter().find(|d| d.id == id).map(|d| &d.decision)
}

/// `upstep plan --detect`: connect, decide every step up to the target from the journal and
/// the data, and show the steps that would run plus the skipped ones with their reasons.
pub fn plan_detect_command(args: &PlanArgs) -> Result<ExitCode> {
    let settings = resolve_settings(&args.connect, &args.repo, &args.map)?;
    let map = load_map_from(settings.map.as_ref().map(|m| m.value.as_path()))?;
    let (from, to) = super::range_versions(&map, &args.range)?;
    let repo = match settings.repo.as_ref() {
        Some(spec) => Some((open_repo_spec(&spec.value)?, spec.value.clone())),
        None => None,
    };
    let mut opts = read_only_options(map, to);
    opts.from = from.clone();
    opts.include_unreleased = args.range.include_unreleased;
    let decision = runtime()?.block_on(async {
        let connected = connect(&settings, !super::run::is_interactive(false)).await?;
        crate::decided::decide(&opts, &connected.store, Default::default()).await
    })?;
    let (full, decided, database) = (&decision.full, &decision.steps, &decision.database);
    let from_text = from
        .as_ref()
        .map(display)
        .unwrap_or_else(|| crate::decided::FROM_THE_DATA.to_string());
    let count = |action: Action| decision.count(action);
    if args.output.json {
        let mut plan = full.clone();
        plan.from = from_text;
        if let Some((repo, label)) = &repo {
            crate::repo_facts::check_plan_against_repo(&mut plan, repo, label)?;
        }
        let mut value = serde_json::to_value(&plan)
            .map_err(|e| Error::Internal(format!("cannot encode the plan: {e}")))?;
        if let Some(groups) = value.get_mut("groups").and_then(|g| g.as_array_mut()) {
            for step in groups
                .iter_mut()
                .filter_map(|g| g.get_mut("steps").and_then(|s| s.as_array_mut()))
                .flatten()
            {
                let id = step.get("id").and_then(|i| i.as_str()).unwrap_or_default();
                let decision = decision_of(decided, id)
                    .and_then(|d| serde_json::to_value(d).ok())
                    .unwrap_or(serde_json::Value::Null);
                if let Some(obj) = step.as_object_mut() {
                    obj.insert("decision".into(), decision);
                }
            }
        }
        ui::print_json(&DecidedPlan {
            plan: value,
            detect: true,
            database,
            would_run: count(Action::Run),
            skipped: count(Action::Skip),
            blocked: count(Action::Block),
        })?;
        return Ok(ExitCode::Success);
    }

    // Text: the plan of the steps that would run, then the skipped and blocked ones.
    let mut plan: Plan = decision.to_run(&opts.map, from.as_ref());
    crate::decided::with_repo(&mut plan, repo.as_ref())?;
    let st = Styler::for_stdout();
    let mut out = format!(
        "{}\n",
        st.dim(&format!(
            "Decided from the journal and the data of {database}."
        ))
    );
    out.push_str(&plan_text::render(&plan, &st));
    let needs = crate::decided::PlanNeeds::of(&plan, &opts.map, Some(database), false);
    if let Some(disk) = plan_text::disk_line(&needs) {
        out.push_str(&format!("\n{disk}\n"));
    }
    let list = |action: Action| -> Vec<String> {
        full.steps()
            .filter_map(|(g, s)| {
                let d = decision_of(decided, &s.id)?;
                (d.action == action).then(|| {
                    format!(
                        "  {}  {}  {}",
                        ui::pad(&s.id, 24),
                        ui::pad(&g.git_ref, 8),
                        st.dim(&d.reason)
                    )
                })
            })
            .collect()
    };
    let skipped = list(Action::Skip);
    if !skipped.is_empty() {
        out.push_str(&format!(
            "\n{} ({}):\n{}\n",
            st.bold("Skipped"),
            skipped.len(),
            skipped.join("\n")
        ));
    }
    let blocked = list(Action::Block);
    if !blocked.is_empty() {
        out.push_str(&format!(
            "\n{} ({}): an upgrade stops here until they are resolved\n{}\n",
            st.bad("Blocked"),
            blocked.len(),
            blocked.join("\n")
        ));
    }
    ui::print_text(&out)?;
    Ok(ExitCode::Success)
}
