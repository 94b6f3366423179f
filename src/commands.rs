//! One function per subcommand: resolve settings, call the library, print the result.

use std::fmt::Write;

use serde::Serialize;

use crate::cli::{Command, MapCommand, MapOpts, OutputOpts, RangeOpts};
use crate::error::{Error, ExitCode, Result};
use crate::plan::{self, Plan, PlanRequest};
use crate::release_map::{self, Fingerprint, Introduced, ReleaseMap};
use crate::ui::{self, plan_text, Styler};
use crate::version::{display, parse_user_version};

pub fn dispatch(command: Command) -> Result<ExitCode> {
    match command {
        Command::Plan(args) => plan_command(&args.range, &args.map, &args.output),
        Command::Upgrade(args) => {
            if args.plan {
                plan_command(&args.range, &args.map, &args.output)
            } else {
                Err(Error::usage(
                    "running migrations is not available in this build of upstep yet",
                    "use `upstep upgrade --plan` (or `upstep plan`) to list what an upgrade needs",
                ))
            }
        }
        Command::Map(MapCommand::Validate { file, map, output }) => {
            map_validate(file.as_deref().or(map.map.as_deref()), &output)
        }
        Command::Map(MapCommand::Show { map, output }) => map_show(&map, &output),
        Command::Backup(args) => crate::backup::args::backup_command(&args),
        Command::Restore(args) => crate::backup::args::restore_command(&args),
    }
}

fn load_map(opts: &MapOpts) -> Result<ReleaseMap> {
    release_map::load(opts.map.as_deref())
}

/// Turn --from/--to into a request against the map.
pub fn plan_request(map: &ReleaseMap, range: &RangeOpts) -> Result<PlanRequest> {
    let Some(from) = &range.from else {
        return Err(Error::usage(
            "no source version: upstep needs to know which version the data is at",
            "pass --from <version>, e.g. --from v0.17.0",
        ));
    };
    let from = parse_user_version(from, "--from")?.resolve(map);
    let to = match &range.to {
        Some(to) => parse_user_version(to, "--to")?.resolve(map),
        None => map
            .newest_release()
            .map(|r| r.version.clone())
            .ok_or_else(|| {
                Error::usage(
                    "the release map lists no releases",
                    "pass --map with a map that lists releases",
                )
            })?,
    };
    Ok(PlanRequest {
        from,
        to,
        include_unreleased: range.include_unreleased,
    })
}

fn plan_command(range: &RangeOpts, map_opts: &MapOpts, output: &OutputOpts) -> Result<ExitCode> {
    let map = load_map(map_opts)?;
    let request = plan_request(&map, range)?;
    let plan: Plan = plan::plan(&map, &request)?;
    if output.json {
        ui::print_json(&plan)?;
    } else {
        ui::print_text(&plan_text::render(&plan, &Styler::for_stdout()))?;
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
        schema: "upstep.map-validation/1",
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

#[derive(Serialize)]
struct MapView<'a> {
    schema: &'static str,
    map: &'a str,
    project: &'a str,
    releases: Vec<ReleaseView<'a>>,
    migrations: Vec<MigrationView<'a>>,
}

#[derive(Serialize)]
struct ReleaseView<'a> {
    version: String,
    tag: &'a str,
    date: Option<&'a str>,
    era: &'a str,
    node: &'a str,
    pnpm: Option<&'a str>,
    verified: bool,
}

#[derive(Serialize)]
struct MigrationView<'a> {
    id: &'a str,
    title: &'a str,
    introduced_in: Option<String>,
    unreleased_ref: Option<&'a str>,
    run_at: Option<String>,
    script: &'a str,
    runs_as: String,
    idempotent: release_map::Idempotency,
    destructive: bool,
    lossy: bool,
    needs: &'a [release_map::Need],
    checks: usize,
    verified: bool,
}

fn map_show(opts: &MapOpts, output: &OutputOpts) -> Result<ExitCode> {
    let map = load_map(opts)?;
    let view = MapView {
        schema: "upstep.map/1",
        map: &map.source,
        project: &map.project.name,
        releases: map
            .releases
            .iter()
            .map(|r| ReleaseView {
                version: r.version.to_string(),
                tag: &r.tag,
                date: r.date.as_deref(),
                era: &r.era,
                node: &r.node,
                pnpm: r.pnpm.as_deref(),
                verified: r.verified,
            })
            .collect(),
        migrations: map
            .migrations
            .iter()
            .map(|m| MigrationView {
                id: &m.id,
                title: &m.title,
                introduced_in: m.introduced_version().map(|v| v.to_string()),
                unreleased_ref: match &m.introduced {
                    Introduced::Unreleased { git_ref } => Some(git_ref),
                    Introduced::Release(_) => None,
                },
                run_at: m.run_at.as_ref().map(|v| v.to_string()),
                script: &m.script,
                runs_as: m.base_mode.describe(),
                idempotent: m.idempotent,
                destructive: m.destructive,
                lossy: m.lossy,
                needs: &m.needs,
                checks: match &m.fingerprint {
                    Fingerprint::Checks(c) => c.len(),
                    Fingerprint::Unknown { .. } => 0,
                },
                verified: m.verified,
            })
            .collect(),
    };
    if output.json {
        ui::print_json(&view)?;
        return Ok(ExitCode::Success);
    }
    let st = Styler::for_stdout();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} {}",
        st.bold(&format!("Release map for {}", view.project)),
        st.dim(&format!("({})", view.map))
    );
    let _ = writeln!(out, "\n{}", st.bold("Releases"));
    for r in &view.releases {
        let _ = writeln!(
            out,
            "  {}  {}  era {}  node {}{}{}",
            ui::pad(r.tag, 8),
            ui::pad(r.date.unwrap_or("-"), 10),
            ui::pad(r.era, 10),
            ui::pad(r.node, 8),
            r.pnpm.map(|p| format!("  pnpm {p}")).unwrap_or_default(),
            if r.verified {
                String::new()
            } else {
                st.warn("  unverified")
            }
        );
    }
    let _ = writeln!(out, "\n{}", st.bold("Migrations"));
    let width = view
        .migrations
        .iter()
        .map(|m| m.id.len())
        .max()
        .unwrap_or(0);
    for m in &view.migrations {
        let at = match (&m.introduced_in, m.unreleased_ref) {
            (Some(v), _) => format!("v{v}"),
            (None, Some(r)) => format!("unreleased ({r})"),
            (None, None) => "-".into(),
        };
        let mut flags = vec![plan_text::idempotency_text(m.idempotent)
            .split(' ')
            .next()
            .unwrap_or("")
            .to_string()];
        if m.destructive {
            flags.push("destructive".into());
        }
        if m.lossy {
            flags.push("lossy".into());
        }
        if !m.verified {
            flags.push("unverified".into());
        }
        let _ = writeln!(
            out,
            "  {}  {}  {}  [{}]",
            ui::pad(m.id, width),
            ui::pad(&at, 9),
            ui::pad(&m.runs_as, 12),
            flags.join(", ")
        );
    }
    let newest = map
        .newest_release()
        .map(|r| display(&r.version))
        .unwrap_or_default();
    let _ = writeln!(
        out,
        "\n{} releases, {} migrations; newest release {}",
        view.releases.len(),
        view.migrations.len(),
        newest
    );
    ui::print_text(&out)?;
    Ok(ExitCode::Success)
}
