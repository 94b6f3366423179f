//! `upstep cache` and `upstep cache prune`: what upstep keeps on the user's disk, and
//! reclaiming what no run can use any more (see `crate::cache`).

use std::time::{Duration, SystemTime};

use serde::Serialize;

use super::load_map_from;
use crate::cache::{self, PruneDecision, Roots};
use crate::cli::{CacheArgs, CacheCommand, ConnectOpts, MapOpts, ProfileOpts};
use crate::error::{ExitCode, Result};
use crate::ui::{self, cache_text, Styler};

#[derive(Serialize)]
struct PruneReport {
    schema: &'static str,
    dry_run: bool,
    map: String,
    /// Why nothing may be removed now (another upstep uses the cache), if so.
    #[serde(skip_serializing_if = "Option::is_none")]
    busy: Option<String>,
    removed_bytes: u64,
    items: Vec<PruneDecision>,
}

pub fn cache_command(args: &CacheArgs) -> Result<ExitCode> {
    let roots = Roots::current();
    match &args.action {
        None => {
            let inventory = cache::inventory(&roots);
            if args.output.json {
                ui::print_json(&inventory)?;
            } else {
                ui::print_text(&cache_text::render(&inventory, &Styler::for_stdout()))?;
            }
        }
        Some(CacheCommand::Prune {
            older_than,
            dry_run,
            map,
            profile,
            output,
        }) => prune(&roots, *older_than, *dry_run, map, profile, output.json)?,
    }
    Ok(ExitCode::Success)
}

fn prune(
    roots: &Roots,
    older_than_days: u64,
    dry_run: bool,
    map: &MapOpts,
    profile: &ProfileOpts,
    json: bool,
) -> Result<()> {
    // The map comes through the settings path (flag, UPSTEP_MAP, profile, embedded).
    let connect = ConnectOpts {
        profile: profile.clone(),
        ..ConnectOpts::default()
    };
    let settings = super::run::resolve_settings(&connect, &Default::default(), map)?;
    let map = load_map_from(settings.map.as_ref().map(|m| m.value.as_path()))?;
    let needed = cache::needed_toolchains(&map);
    let mut unfinished = cache::unfinished_from_mirrors(&roots.state);
    let cache_env = std::env::var(crate::git::CACHE_DIR_ENV).ok();
    unfinished.active_process = cache::other_process_using(cache_env.as_deref());
    let inventory = cache::inventory(roots);
    let policy = cache::Policy {
        needed_toolchains: &needed,
        map: &map.source,
        logs_older_than: Duration::from_secs(older_than_days.saturating_mul(86_400)),
        now: SystemTime::now(),
    };
    let decisions = cache::decide_prune(&inventory, &unfinished, &policy);
    let removed_bytes = cache::apply(&decisions, dry_run)?;
    let report = PruneReport {
        schema: cache::PRUNE_SCHEMA,
        dry_run,
        map: map.source.clone(),
        busy: unfinished.active_process.clone(),
        removed_bytes,
        items: decisions,
    };
    if json {
        ui::print_json(&report)?;
    } else {
        ui::print_text(&cache_text::render_prune(
            &report.items,
            removed_bytes,
            dry_run,
            &Styler::for_stdout(),
        ))?;
    }
    Ok(())
}
