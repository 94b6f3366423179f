//! The commands that touch the target database besides `upgrade`: `status`, `mark`, `unlock`,
//! and the settings and connection they share with it.

use std::io::IsTerminal;
use std::time::Duration;

use super::{load_map_from, runtime};
use crate::cli::{ConnectOpts, MarkArgs, StatusArgs, UnlockArgs};
use crate::error::{Error, ExitCode, Result};
use crate::executor::approval::Approvals;
use crate::executor::command::Connection;
use crate::executor::decide::{Action, Flags};
use crate::executor::{self, UpgradeOptions};
use crate::redact::Uri;
use crate::release_map::ReleaseMap;
use crate::settings::{self, FlagValues, Settings};
use crate::store::journal::{Actor, Journal, StepStatus};
use crate::store::lock::RunLock;
use crate::store::mirror::{state_dir, Mirror};
use crate::store::Store;
use crate::tunnel::Tunnel;
use crate::ui::status_text::{self, StatusReport, StatusRow};
use crate::ui::{self, Styler};

/// Interactive means a person on both ends: stdin and stdout are terminals and no --yes.
pub fn is_interactive(yes: bool) -> bool {
    !yes && std::io::stdin().is_terminal() && std::io::stdout().is_terminal()
}

pub(super) fn resolve_settings(
    connect: &ConnectOpts,
    repo: &crate::cli::RepoOpts,
    map: &crate::cli::MapOpts,
) -> Result<Settings> {
    let env = |name: &str| std::env::var(name).ok();
    let flags = FlagValues::from_opts(
        &connect.mongo,
        &connect.redis,
        repo,
        map,
        &connect.ssh,
        &env,
    );
    settings::resolve(
        &flags,
        &env,
        connect.profile.config.as_deref(),
        connect.profile.profile.as_deref(),
    )
}

/// A database connection, through an SSH tunnel when the settings ask for one. The tunnel
/// (if any) must live as long as the connection is used.
pub(super) struct Connected {
    pub(super) store: Store,
    /// The URI the scripts use (rewritten to the tunnel's local end).
    pub(super) uri: Uri,
    pub(super) tunnel: Option<Tunnel>,
}

pub(super) async fn connect(settings: &Settings, batch_mode: bool) -> Result<Connected> {
    let uri = settings.mongo_uri.as_ref().map(|s| s.value.clone()).ok_or_else(|| {
        Error::usage(
            "no MongoDB URI: upstep needs the database to migrate (and keeps its journal there)",
            "pass --mongo-uri mongodb://host:27017/<database>, set MONGO_URL, or name it in an upstep.toml profile",
        )
    })?;
    let (uri, tunnel) = super::resolve::through_tunnel(settings, uri, batch_mode).await?;
    let store = Store::connect(uri.expose()).await?;
    Ok(Connected { store, uri, tunnel })
}

pub fn status_command(args: &StatusArgs) -> Result<ExitCode> {
    let settings = resolve_settings(&args.connect, &crate::cli::RepoOpts::default(), &args.map)?;
    let map = load_map_from(settings.map.as_ref().map(|m| m.value.as_path()))?;
    let to = super::to_version(&map, args.to.as_deref(), None, false)?;
    let report = runtime()?.block_on(async {
        let connected = connect(&settings, !is_interactive(false)).await?;
        let store = &connected.store;
        let opts = read_only_options(map, to);
        // The same decision as plan, doctor and upgrade.
        let decision = crate::decided::decide(&opts, store, Default::default()).await?;
        let (plan, decided, entries) = (&decision.full, &decision.steps, &decision.facts.entries);
        let lock = RunLock::new(store).current().await?.map(|l| l.describe());
        let last_backup = crate::store::journal::last_event(store, "backup-taken")
            .await?
            .and_then(|e| {
                let d = e.get_document("details").ok()?;
                Some(format!(
                    "{} (taken {})",
                    d.get_str("backup").ok()?,
                    d.get_str("created_at").unwrap_or("?")
                ))
            });
        let mut rows = Vec::new();
        for (group, step) in plan.steps() {
            let d = decided.iter().find(|d| d.id == step.id);
            let entry = entries.get(&step.id);
            let state = match (entry.map(|e| e.status), d.map(|d| d.decision.action)) {
                (Some(s), _) if s.is_done() && d.is_some_and(|d| d.decision.regressed) => {
                    "regressed".to_string()
                }
                (Some(s), _) => s.as_str().to_string(),
                (None, Some(Action::Skip)) if d.is_some_and(|d| d.decision.left_out) => {
                    "optional (left out)".to_string()
                }
                (None, Some(Action::Skip)) => "applied (per data)".to_string(),
                (None, _) => "pending".to_string(),
            };
            rows.push(StatusRow {
                id: step.id.clone(),
                release: group.git_ref.clone(),
                journal: entry.map(|e| e.status.as_str().to_string()),
                data: d.and_then(|d| d.data).map(|s| s.as_str().to_string()),
                detail: entry
                    .map(|e| e.summary())
                    .filter(|s| !s.is_empty())
                    .or_else(|| d.map(|d| d.decision.reason.clone()))
                    .unwrap_or_default(),
                journal_entry: entry.map(|e| e.view()),
                state,
            });
        }
        Ok::<_, Error>(StatusReport {
            schema: crate::json_schemas::STATUS,
            database: store.redacted_uri.clone(),
            to: crate::version::display(&opts.to),
            pending: rows
                .iter()
                .filter(|r| {
                    !(r.state.starts_with("succeeded")
                        || r.state.starts_with("marked-applied")
                        || r.state.starts_with("applied")
                        || r.state.starts_with("optional"))
                })
                .count(),
            lock,
            last_backup,
            migrations: rows,
        })
    })?;
    if args.output.json {
        ui::print_json(&report)?;
    } else {
        ui::print_text(&status_text::render(&report, &Styler::for_stdout()))?;
    }
    if args.check && report.pending > 0 {
        return Err(Error::Pending(format!(
            "{} not applied (status --check)",
            crate::words::count(report.pending, "migration")
                + if report.pending == 1 { " is" } else { " are" }
        )));
    }
    Ok(ExitCode::Success)
}

/// Options for commands that only read (status, doctor): nothing here runs a script.
pub(super) fn read_only_options(map: ReleaseMap, to: semver::Version) -> UpgradeOptions {
    UpgradeOptions {
        map,
        from: None,
        to,
        include_unreleased: false,
        connection: Connection::default(),
        flags: Flags::default(),
        dry_run: true,
        keep_worktrees: true,
        overlap: Default::default(),
        repair_worktrees: false,
        backup_dir: None,
        toolchain: Default::default(),
        allow_provision: false,
        quiet_secs: None,
        step_timeout: None,
        grace: Duration::from_secs(10),
        lease: Duration::from_secs(60),
        lock_wait: Duration::from_secs(0),
        cache_root: crate::git::default_cache_root(),
        state_dir: state_dir(),
        check_time_limit: Duration::from_secs(30),
        approvals: Approvals::default(),
    }
}

pub fn mark_command(args: &MarkArgs) -> Result<ExitCode> {
    let settings = resolve_settings(&args.connect, &crate::cli::RepoOpts::default(), &args.map)?;
    let map = load_map_from(settings.map.as_ref().map(|m| m.value.as_path()))?;
    if map.migration(&args.id).is_none() {
        return Err(Error::usage(
            format!("no migration {:?} in {}", args.id, map.source),
            "use an id from `upstep map show`",
        ));
    }
    let status = if args.applied {
        StepStatus::MarkedApplied
    } else {
        StepStatus::Pending
    };
    let reason = args.reason.clone().unwrap_or_else(|| {
        format!(
            "marked {} by hand",
            if args.applied { "applied" } else { "pending" }
        )
    });
    runtime()?.block_on(async {
        let connected = connect(&settings, true).await?;
        executor::mark_locked(&connected.store, &args.id, status, &reason).await
    })?;
    if !args.output.json {
        ui::print_text(&format!("{}: recorded as {}\n", args.id, status.as_str()))?;
    } else {
        ui::print_json(
            &serde_json::json!({ "schema": crate::json_schemas::MARK, "id": args.id, "status": status.as_str() }),
        )?;
    }
    Ok(ExitCode::Success)
}

pub fn unlock_command(args: &UnlockArgs) -> Result<ExitCode> {
    let settings = resolve_settings(
        &args.connect,
        &crate::cli::RepoOpts::default(),
        &crate::cli::MapOpts { map: None },
    )?;
    let removed = runtime()?.block_on(async {
        let connected = connect(&settings, true).await?;
        let store = &connected.store;
        let removed = RunLock::new(store).force_unlock().await?;
        if let Some(holder) = &removed {
            let journal = Journal::new(
                store,
                Actor::current(),
                Mirror::for_database(&state_dir(), &store.redacted_uri),
            );
            journal
                .event(
                    "unlocked",
                    None,
                    bson::doc! { "removed": holder.describe() },
                )
                .await?;
        }
        Ok::<_, Error>(removed)
    })?;
    let text = match &removed {
        Some(holder)
            if !holder.holder.is_dead_local_process()
                && holder.holder.host == crate::store::journal::hostname() =>
        {
            format!("removed the run lock of {}\nwarning: that process still runs on this host; it will stop when it fails to renew its lease\n", holder.describe())
        }
        Some(holder) => format!("removed the run lock of {}\n", holder.describe()),
        None => "no run lock was held\n".to_string(),
    };
    if args.output.json {
        ui::print_json(
            &serde_json::json!({ "schema": crate::json_schemas::UNLOCK, "removed": removed.map(|h| h.describe()) }),
        )?;
    } else {
        ui::print_text(&text)?;
    }
    Ok(ExitCode::Success)
}
