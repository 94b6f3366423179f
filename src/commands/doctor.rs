//! `upstep doctor`: the prerequisites of the plan a run would execute. With a database (flag,
//! environment or profile, through `--ssh` when asked) the steps are decided from the journal
//! and the data exactly as `upgrade` decides them; with `--from` alone they are the map's
//! range, and the report says that the data was not read.

use serde::Serialize;

use super::run::{connect, read_only_options, resolve_settings};
use super::{load_map_from, open_repo_spec, plan_request, runtime};
use crate::cli::DoctorArgs;
use crate::decided::{self, PlanNeeds};
use crate::doctor::{self, DoctorInputs, DoctorReport};
use crate::error::{Error, ExitCode, Result};
use crate::executor::DataStates;
use crate::preflight::{CheckResult, Severity};
use crate::ui::{self, words, Styler};

/// The doctor's JSON: the checks, and the plan they were made for.
#[derive(Serialize)]
struct DoctorView {
    #[serde(flatten)]
    report: DoctorReport,
    plan: PlanNeeds,
    /// Why the plan was not decided from the data, when it was not.
    #[serde(skip_serializing_if = "Option::is_none")]
    not_read: Option<String>,
}

pub fn doctor_command(args: &DoctorArgs) -> Result<ExitCode> {
    let settings = resolve_settings(&args.connect, &args.repo, &args.map)?;
    let map = load_map_from(settings.map.as_ref().map(|m| m.value.as_path()))?;
    let (from, to) = super::range_versions(&map, &args.range)?;
    if settings.mongo_uri.is_none() && from.is_none() {
        return Err(Error::usage(
            "doctor needs to know which steps to check",
            "pass --mongo-uri (or a profile naming the database) so it decides them from the \
             journal and the data, or --from <version>",
        ));
    }
    let repo = match settings.repo.as_ref() {
        Some(spec) => Some((open_repo_spec(&spec.value)?, spec.value.clone())),
        None => None,
    };
    if let Some((repo, location)) = &repo {
        // A script the repository's tags add inside the range but the map lacks would be
        // skipped by the run: refuse, as plan and upgrade do.
        let start = from.clone().unwrap_or(semver::Version::new(0, 0, 0));
        crate::repo_facts::check_map_covers_repo(&map, repo, location, &start, &to)?;
    }
    let optional = crate::plan::optional_steps(&map, &args.optional.include_optional)?;
    let key_var = super::resolve::key_var(&settings, &args.run_env)?;
    let key: Option<secrecy::SecretString> = std::env::var(&key_var).ok().map(Into::into);
    let rt = runtime()?;
    let view =
        rt.block_on(async {
            let connected = match settings.mongo_uri {
                Some(_) => Some(connect(&settings, true).await),
                None => None,
            };
            let mut not_read = None;
            let mut blocked = Vec::new();
            let (mut plan, database) = match &connected {
                Some(Ok(c)) => {
                    let mut opts = read_only_options(map.clone(), to.clone());
                    opts.approvals.optional = optional.clone();
                    opts.from = from.clone();
                    opts.include_unreleased = args.range.include_unreleased;
                    let d = decided::decide(&opts, &c.store, DataStates::default()).await?;
                    blocked = d
                        .blocked()
                        .iter()
                        .map(|b| format!("{} ({}): {}", b.id, b.git_ref, b.decision.reason))
                        .collect();
                    (d.to_run(&map, from.as_ref()), Some(d.database.clone()))
                }
                // The database is out of reach: its check says why; the steps are --from's.
                Some(Err(e)) if from.is_some() => {
                    not_read = Some(format!(
                        "{}: the steps are those after --from",
                        e.to_string().lines().next().unwrap_or_default()
                    ));
                    (
                        crate::plan::plan(&map, &plan_request(&map, &args.range)?)?,
                        None,
                    )
                }
                Some(Err(_)) => {
                    return Err(connected
                        .and_then(|c| c.err())
                        .unwrap_or_else(|| Error::Internal("connection state lost".into())))
                }
                None => {
                    not_read =
                        Some("no database was given: the steps are those after --from".into());
                    (
                        crate::plan::plan(&map, &plan_request(&map, &args.range)?)?,
                        None,
                    )
                }
            };
            let mut extra = Vec::new();
            if let Err(e) = decided::with_repo(&mut plan, repo.as_ref()) {
                extra.push(repository_blocker(e));
            }
            if !blocked.is_empty() {
                extra.push(CheckResult::warning(
                "journal.decisions",
                "steps that need a decision",
                format!(
                    "the journal shows {} that did not finish: an upgrade stops there until \
                     {} decided",
                    words::count(blocked.len(), "step"),
                    if blocked.len() == 1 { "it is" } else { "they are" }
                ),
                "pass --retry to run them again (when safe), or record them with `upstep mark \
                 <id> --applied|--pending`; then run doctor again",
            ).with_details(blocked));
            }
            let mongo_uri = match &connected {
                Some(Ok(c)) => Some(&c.uri),
                _ => settings.mongo_uri.as_ref().map(|u| &u.value),
            };
            let inputs = DoctorInputs {
                map: &map,
                plan: &plan,
                mongo_uri,
                redis_url: Some(&settings.redis_url.value),
                encryption_key_var: &key_var,
                encryption_key: key.as_ref(),
                path_env: std::env::var_os("PATH").unwrap_or_default(),
                cache_dir: crate::git::default_cache_root(),
                toolchain: args.run_env.toolchain,
                keep_worktrees: false,
                probe_downloads: true,
            };
            let mut report = doctor::run_checks(&inputs).await;
            report.add(extra);
            if let Some(Ok(c)) = connected {
                if let Some(t) = c.tunnel {
                    t.close().await;
                }
            }
            Ok::<_, Error>(DoctorView {
                plan: PlanNeeds::of(&plan, &map, database.as_deref(), false),
                report,
                not_read,
            })
        })?;
    if args.output.json {
        ui::print_json(&view)?;
    } else {
        ui::print_text(&ui::doctor_text::render(
            &view.plan,
            view.not_read.as_deref(),
            &view.report,
            &Styler::for_stdout(),
        ))?;
    }
    if view.report.worst() == Severity::Blocker {
        return Err(Error::Preflight(format!(
            "preflight found {}: fix {} before upgrading",
            words::count(view.report.blockers, "blocker"),
            words::them(view.report.blockers)
        )));
    }
    Ok(ExitCode::Success)
}

/// A repository that lacks a script of the plan (or a tag) blocks the run: a check, so the
/// rest of the report still shows.
fn repository_blocker(e: Error) -> CheckResult {
    let (reason, fix) = match e {
        Error::Repository { message, fix } => (message, fix),
        other => (
            other.to_string(),
            "check --repo and the map (`upstep map check --repo ...`)".to_string(),
        ),
    };
    let mut lines = reason.lines();
    let first = lines.next().unwrap_or_default().to_string();
    CheckResult::blocker("repository", "the plan's scripts at their tags", first, fix)
        .with_details(lines.map(|l| l.trim().to_string()).collect())
}
