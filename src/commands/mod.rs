//! One function per subcommand: resolve settings, call the library, print the result.

use std::fmt::Write;

use serde::Serialize;

use std::io::IsTerminal;

use crate::cli::{Command, ConnectOpts, MapCommand, MapOpts, OutputOpts, RangeOpts, RepoOpts};
use crate::error::{Error, ExitCode, Result};
use crate::git::{ExpectedScript, GitRepo, RepoLocation};
use crate::plan::{self, Plan, PlanRequest};
use crate::release_map::{self, ReleaseMap};
use crate::repo_facts;
use crate::ui::map_text::{self, MapView};
use crate::ui::{self, plan_text, Styler};
use crate::version::parse_user_version;

pub fn dispatch(command: Command) -> Result<ExitCode> {
    match command {
        Command::Plan(args) if args.detect => detect::plan_detect_command(&args),
        Command::Plan(args) if args.rollback => rollback::plan_rollback_command(&args),
        Command::Rollback(args) => rollback::rollback_command(&args),
        Command::Plan(args) => plan_command(
            &args.range,
            &args.map,
            &args.repo,
            &args.connect,
            &args.output,
        ),
        Command::Upgrade(args) if args.plan => plan_command(
            &args.range,
            &args.map,
            &args.repo,
            &args.connect,
            &args.output,
        ),
        Command::Upgrade(args) => upgrade::upgrade_command(&args),
        Command::Rehearse(args) => rehearse::rehearse_command(&args),
        Command::Status(args) => run::status_command(&args),
        Command::Detect(args) => detect::detect_command(&args),
        Command::Mark(args) => run::mark_command(&args),
        Command::Unlock(args) => run::unlock_command(&args),
        Command::Doctor(args) => doctor::doctor_command(&args),
        Command::Map(MapCommand::Validate { file, map, output }) => {
            map_validate(file.as_deref().or(map.map.as_deref()), &output)
        }
        Command::Map(MapCommand::Show { map, output }) => map_show(&map, &output),
        Command::Map(MapCommand::Generate { repo, dir, map }) => {
            map_generate(&repo, dir.as_deref(), &map)
        }
        Command::Map(MapCommand::Check { repo, map, output }) => map_check(&repo, &map, &output),
        Command::Config(_) | Command::Completions { .. } | Command::Man => {
            crate::ops::dispatch(command)
        }
        Command::Cache(args) => cache::cache_command(&args),
        Command::Backup(args) => backup::backup_command(&args),
        Command::Restore(args) => backup::restore_command(&args),
    }
}

mod backup;
mod cache;
mod detect;
mod doctor;
mod interactive;
mod rehearse;
pub(crate) mod resolve;
mod rollback;
mod run;
mod upgrade;

fn load_map(opts: &MapOpts) -> Result<ReleaseMap> {
    release_map::load(opts.map.as_deref())
}

pub(crate) fn load_map_from(path: Option<&std::path::Path>) -> Result<ReleaseMap> {
    release_map::load(path)
}

/// `--from` (optional) against the map.
pub(crate) fn from_version(
    map: &ReleaseMap,
    from: Option<&str>,
) -> Result<Option<semver::Version>> {
    from.map(|f| parse_user_version(f, "--from").map(|v| v.resolve(map)))
        .transpose()
}

/// `--to` against the map; when absent, the default target (see `ReleaseMap::default_target`),
/// or `--from` when the data is already past it (nothing to do, rather than a "downgrade").
pub(crate) fn to_version(
    map: &ReleaseMap,
    to: Option<&str>,
    from: Option<&semver::Version>,
    include_unreleased: bool,
) -> Result<semver::Version> {
    match to {
        Some(t) => Ok(parse_user_version(t, "--to")?.resolve(map)),
        None => {
            let target = map.default_target(include_unreleased)?.version.clone();
            Ok(from.filter(|f| **f > target).cloned().unwrap_or(target))
        }
    }
}

/// `--from` (optional) and `--to` of a range, against the map.
pub(crate) fn range_versions(
    map: &ReleaseMap,
    range: &RangeOpts,
) -> Result<(Option<semver::Version>, semver::Version)> {
    let from = from_version(map, range.from.as_deref())?;
    let to = to_version(
        map,
        range.to.as_deref(),
        from.as_ref(),
        range.include_unreleased,
    )?;
    Ok((from, to))
}

/// Turn --from/--to into a request against the map.
pub fn plan_request(map: &ReleaseMap, range: &RangeOpts) -> Result<PlanRequest> {
    let Some(from) = from_version(map, range.from.as_deref())? else {
        return Err(Error::usage(
            "no source version: upstep needs to know which version the data is at",
            "pass --from <version>, e.g. --from v0.17.0",
        ));
    };
    let to = to_version(
        map,
        range.to.as_deref(),
        Some(&from),
        range.include_unreleased,
    )?;
    Ok(PlanRequest {
        from,
        to,
        include_unreleased: range.include_unreleased,
    })
}

/// Open `--repo`: a local clone, or a URL cloned (or fetched) into upstep's cache.
pub fn open_repo(opts: &RepoOpts) -> Result<Option<GitRepo>> {
    opts.repo.as_ref().map(open_repo_spec).transpose()
}

pub(crate) fn open_repo_spec(location: &RepoLocation) -> Result<GitRepo> {
    let progress = std::io::stderr().is_terminal();
    GitRepo::open_or_clone(location, &crate::git::default_cache_root(), progress)
}

fn require_repo(opts: &RepoOpts) -> Result<GitRepo> {
    open_repo(opts)?.ok_or_else(|| {
        Error::usage(
            "this command reads a git repository",
            "pass --repo <path or URL of the project's repository>",
        )
    })
}

/// `plan` without `--detect`: the map's range after `--from`, offline (it says so). The map
/// and repository come through the one settings path (flags > environment > profile).
fn plan_command(
    range: &RangeOpts,
    map_opts: &MapOpts,
    repo_opts: &RepoOpts,
    connect: &ConnectOpts,
    output: &OutputOpts,
) -> Result<ExitCode> {
    let settings = run::resolve_settings(connect, repo_opts, map_opts)?;
    let map = load_map_from(settings.map.as_ref().map(|m| m.value.as_path()))?;
    let request = plan_request(&map, range)?;
    let mut plan: Plan = plan::plan(&map, &request)?;
    let mut blockers = 0;
    if let Some(location) = settings.repo.as_ref().map(|r| &r.value) {
        let repo = open_repo_spec(location)?;
        repo_facts::check_map_covers_repo(&map, &repo, location, &request.from, &request.to)?;
        repo_facts::check_plan_against_repo(&mut plan, &repo, location)?;
        blockers = repo_facts::probe_downloads(&mut plan);
    }
    if output.json {
        ui::print_json(&plan)?;
    } else {
        let st = Styler::for_stdout();
        let mut text = format!(
            "{}\n",
            st.dim(&format!(
                "Planned from --from {} alone: the journal and the data were not read (`upstep plan --detect` reads them).",
                plan.from
            ))
        );
        text.push_str(&plan_text::render(&plan, &st));
        let needs = crate::decided::PlanNeeds::of(&plan, &map, None, false);
        if let Some(disk) = plan_text::disk_line(&needs) {
            text.push_str(&format!("\n{disk}\n"));
        }
        ui::print_text(&text)?;
    }
    if blockers > 0 {
        // The plan is printed; the exit code says it cannot run from here.
        return Err(Error::Preflight(format!(
            "{} of this plan cannot be set up from here: a download {} install needs is out of reach (see the plan above)",
            crate::words::count(blockers, "tag"),
            if blockers == 1 { "its" } else { "their" }
        )));
    }
    Ok(ExitCode::Success)
}

#[derive(Serialize)]
struct ValidationReport {
    schema: &'static str,
    map: String,
    valid: bool,
    releases: usize,
    migrations: usize,
    eras: usize,
}

fn map_validate(file: Option<&std::path::Path>, output: &OutputOpts) -> Result<ExitCode> {
    // Problems are reported through the error (stderr, exit code 3), each with its line.
    let map = release_map::load(file)?;
    let report = ValidationReport {
        schema: crate::json_schemas::MAP_VALIDATION,
        map: map.source.clone(),
        valid: true,
        releases: map.releases.len(),
        migrations: map.migrations.len(),
        eras: map.eras.len(),
    };
    if output.json {
        ui::print_json(&report)?;
    } else {
        ui::print_text(&format!(
            "{}: valid ({} releases, {} migrations, {} eras)\n",
            report.map, report.releases, report.migrations, report.eras
        ))?;
    }
    Ok(ExitCode::Success)
}

fn map_show(opts: &MapOpts, output: &OutputOpts) -> Result<ExitCode> {
    let map = load_map(opts)?;
    let view = MapView::of(&map);
    if output.json {
        ui::print_json(&view)?;
    } else {
        ui::print_text(&map_text::render(&view, &Styler::for_stdout()))?;
    }
    Ok(ExitCode::Success)
}

/// One thread: upstep mostly waits on a child and the database, and every extra thread
/// costs memory (its own malloc arena) for nothing.
pub fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Internal(format!("cannot start the async runtime: {e}")))
}

fn map_generate(repo_opts: &RepoOpts, dir: Option<&str>, map_opts: &MapOpts) -> Result<ExitCode> {
    let repo = require_repo(repo_opts)?;
    // The map in use supplies the defaults (folder, file endings, tags to ignore).
    let map = load_map(map_opts)?;
    let p = &map.project;
    let dir = dir.unwrap_or(&p.migrations_dir);
    let toml = crate::git::generate_map_skeleton(
        &repo,
        dir,
        &p.script_suffixes,
        &p.exclude_suffixes,
        &p.ignore_tags,
        &p.mainline,
    )?;
    ui::print_text(&toml)?;
    Ok(ExitCode::Success)
}

#[derive(Serialize)]
struct MapCheckReport {
    schema: &'static str,
    map: String,
    repository: String,
    disagreements: Vec<String>,
    /// Entries the repository is too old to check (exit 0 when nothing else is wrong).
    unchecked: Vec<String>,
}

fn map_check(repo_opts: &RepoOpts, map_opts: &MapOpts, output: &OutputOpts) -> Result<ExitCode> {
    let repo = require_repo(repo_opts)?;
    let map = load_map(map_opts)?;
    let p = &map.project;
    let tags = repo.release_tags(&p.ignore_tags, &p.mainline)?;
    let expected: Vec<ExpectedScript> = map
        .migrations
        .iter()
        .map(|m| ExpectedScript {
            id: m.id.clone(),
            script: m.script.clone(),
            introduced_in: m.introduced_version().cloned(),
            removed_in: m.lifecycle.removed_in.clone(),
        })
        .collect();
    let checked = crate::git::check_map_report(
        &repo,
        &expected,
        &tags,
        &p.migrations_dir,
        &p.script_suffixes,
        &p.exclude_suffixes,
    )?;
    let found = &checked.disagreements;
    let stand_ins = crate::stand_ins::check_against_repo(&map, &repo);
    let report = MapCheckReport {
        schema: crate::json_schemas::MAP_CHECK,
        map: map.source.clone(),
        repository: repo_opts
            .repo
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default(),
        disagreements: found
            .iter()
            .map(|d| d.to_string())
            .chain(stand_ins.problems.iter().cloned())
            .collect(),
        unchecked: checked
            .unchecked
            .iter()
            .map(|u| u.to_string())
            .chain(stand_ins.unchecked.iter().cloned())
            .collect(),
    };
    if output.json {
        ui::print_json(&report)?;
    } else {
        let mut text = String::new();
        if !report.unchecked.is_empty() {
            let _ = writeln!(
                text,
                "{} entr{} could not be checked: the repository's tags end before them:\n  {}",
                report.unchecked.len(),
                if report.unchecked.len() == 1 {
                    "y"
                } else {
                    "ies"
                },
                report.unchecked.join("\n  ")
            );
        }
        if report.disagreements.is_empty() {
            let _ = writeln!(
                text,
                "{} agrees with {}{}",
                report.map,
                report.repository,
                if report.unchecked.is_empty() {
                    String::new()
                } else {
                    format!(" (0 problems; {} unchecked)", report.unchecked.len())
                }
            );
        }
        if !text.is_empty() {
            ui::print_text(&text)?;
        }
    }
    if report.disagreements.is_empty() {
        return Ok(ExitCode::Success);
    }
    let stand_in_hint = "fix that stand-in's edits in the release map: each `text` must be the tag's exact lockfile text (`git show <tag>:<file>`)";
    Err(Error::MapInvalid {
        name: format!("{} (compared with {})", report.map, report.repository),
        problems: found
            .iter()
            .map(|d| crate::error::MapProblem {
                location: None,
                message: d.to_string(),
                hint: String::new(),
            })
            .chain(stand_ins.problems.iter().map(|p| crate::error::MapProblem {
                location: None,
                message: p.clone(),
                hint: stand_in_hint.to_string(),
            }))
            .collect(),
    })
}
