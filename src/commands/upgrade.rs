//! `upstep upgrade`: resolve the settings into a run request, then `executor::run` it with
//! the real effects (the database, the repository, child processes, the terminal or
//! `--yes`/`--approve` for the questions, the tunnel, Redis and the preflight around it).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::LocalBoxFuture;

use super::interactive;
use super::rehearse::RunHooks;
use super::run::{connect, is_interactive, resolve_settings};
use super::{load_map_from, open_repo_spec, runtime};
use crate::cli::UpgradeArgs;
use crate::doctor::{self, DoctorInputs};
use crate::error::{Error, ExitCode, Result};
use crate::executor::approval::Approvals;
use crate::executor::command::Connection;
use crate::executor::decide::Flags;
use crate::executor::effects::{Effects, Surroundings, TunnelLink, Workspace};
use crate::executor::real::{GitWorkspace, MongoRunStore, ProcessChildren, SystemClock};
use crate::executor::{self, Questions, RunRequest, UpgradeOptions};
use crate::git::GitRepo;
use crate::plan::Plan;
use crate::preflight::Severity;
use crate::redact::Uri;
use crate::release_map::{Need, ReleaseMap};
use crate::runner::signals::{SignalPolicy, SignalWatcher};
use crate::settings::Settings;
use crate::store::mirror::state_dir;
use crate::ui::events::{JsonReporter, Reporter, RunEvent, TextReporter};
use crate::ui::progress::ProgressReporter;
use crate::ui::{self, Styler};

pub fn upgrade_command(args: &UpgradeArgs) -> Result<ExitCode> {
    upgrade_with(args, RunHooks::default())
}

/// `upgrade`, with what a rehearsal changes in it (`hooks`; see commands/rehearse.rs).
pub(super) fn upgrade_with(args: &UpgradeArgs, mut hooks: RunHooks) -> Result<ExitCode> {
    let mut settings = resolve_settings(&args.connect, &args.repo, &args.map)?;
    let interactive = is_interactive(args.run.yes);
    if settings.mongo_uri.is_none() && interactive && !args.output.json {
        let uri = interactive::ask_mongo_uri()?;
        settings.mongo_uri = Some(crate::settings::Sourced::new(
            uri,
            crate::settings::Source::Flag,
        ));
    }
    let resolved = Resolved::new(args, &settings, interactive)?;
    let key_var = super::resolve::key_var(&settings, &args.run_env)?;
    let (mut reporter, multi) = reporter_for(args.output.json, interactive);
    if let Some(wrap) = hooks.wrap_reporter.take() {
        reporter = wrap(reporter);
    }
    let questions = Questions {
        guided: interactive,
        target: args.range.to.is_none(),
        backup: args.run.backup.is_none() && !args.run.no_backup,
    };
    let summary = runtime()?.block_on(async {
        let connected = connect(&settings, !interactive).await?;
        let Resolved { mut options, repo } = resolved;
        options.connection = connection_for(connected.uri.clone(), &key_var, &settings);
        options
            .connection
            .private_env
            .extend(hooks.private_env.iter().cloned());
        let store = MongoRunStore::new(
            &connected.store,
            &connected.uri,
            &options.state_dir,
            options.lease,
        );
        // The project's code (`--repo`): its tags, worktrees and toolchains.
        let workspace = repo
            .as_ref()
            .map(|repo| GitWorkspace::new(repo, &options.cache_root, options.allow_provision));
        let unattended = options.approvals.clone();
        let mut surroundings = RunSurroundings {
            settings: &settings,
            key_var: &key_var,
            interactive,
            multi,
            throwaway: None,
            hooks: &hooks,
            repo: repo.as_ref(),
            ran_with: None,
            watcher: None,
        };
        let mut tunnel = connected.tunnel;
        let mut fx = Effects {
            store: Arc::new(store),
            workspace: workspace.as_ref().map(|w| w as &dyn Workspace),
            children: &ProcessChildren,
            clock: Arc::new(SystemClock),
            tunnel: tunnel.as_mut().map(|t| t as &mut dyn TunnelLink),
            prompt: if interactive {
                &interactive::TerminalPrompt
            } else {
                &unattended
            },
            surroundings: &mut surroundings,
            reporter: reporter.as_mut(),
        };
        let summary = executor::run(RunRequest { options, questions }, &mut fx).await;
        drop(fx);
        // `--then`: the promotion, once the run ended well (see promote.rs).
        let summary = match (summary, surroundings.ran_with.take(), &surroundings.watcher) {
            (Ok(summary), Some(opts), Some(watcher)) if !args.then.is_empty() => {
                let store = &connected.store;
                crate::promote::after_run(&args.then, &opts, store, watcher, reporter.as_mut())
                    .await
                    .map(|()| summary)
            }
            (summary, _, _) => summary,
        };
        if let Some(t) = tunnel {
            t.close().await;
        }
        summary
    })?;
    if !args.output.json && !hooks.is_rehearsal() {
        ui::print_text(&summary_text(args.run.dry_run, &summary))?;
    }
    Ok(ExitCode::Success)
}

/// What the command line and the settings resolve to before anything connects.
struct Resolved {
    options: UpgradeOptions,
    repo: Option<GitRepo>,
}

impl Resolved {
    fn new(args: &UpgradeArgs, settings: &Settings, interactive: bool) -> Result<Resolved> {
        let map = load_map_from(settings.map.as_ref().map(|m| m.value.as_path()))?;
        let (from, to) = super::range_versions(&map, &args.range)?;
        let repo = match settings.repo.as_ref() {
            Some(spec) => Some(open_repo_spec(&spec.value)?),
            None => None,
        };
        let approved = approved_steps(&map, &args.run.approve)?;
        let optional = crate::plan::optional_steps(&map, &args.run.optional.include_optional)?;
        if let (Some(repo), Some(spec)) = (&repo, settings.repo.as_ref()) {
            let start = from.clone().unwrap_or(semver::Version::new(0, 0, 0));
            crate::repo_facts::check_map_covers_repo(&map, repo, &spec.value, &start, &to)?;
        }
        let backup_dir = choose_backup(args, interactive)?;
        let options = UpgradeOptions {
            map,
            from,
            to,
            include_unreleased: args.range.include_unreleased,
            connection: Connection::default(),
            flags: Flags {
                retry: args.run.retry,
                force: args.run.force,
            },
            dry_run: args.run.dry_run,
            keep_worktrees: args.run.keep_worktrees,
            overlap: crate::executor::Overlap {
                enabled: !args.run.no_overlap,
                ..Default::default()
            },
            repair_worktrees: args.run.repair,
            backup_dir,
            toolchain: args.run_env.toolchain,
            allow_provision: !args.run.no_provision,
            quiet_secs: args.run.quiet_secs,
            step_timeout: args.run.step_timeout.map(Duration::from_secs),
            grace: Duration::from_secs(args.run.grace_secs),
            lease: Duration::from_secs(args.run.lease_secs.max(1)),
            lock_wait: Duration::from_secs(args.run.lock_wait_secs),
            cache_root: crate::git::default_cache_root(),
            state_dir: state_dir(),
            check_time_limit: Duration::from_secs(30),
            approvals: Approvals {
                routine: args.run.yes,
                steps: approved,
                optional,
            },
        };
        Ok(Resolved { options, repo })
    }
}

/// The connection the scripts get: the database as reached (through the tunnel, if any), the
/// encryption key from its variable, and the variables they must not inherit. Redis is added
/// once the plan is known to need it (`RunSurroundings`).
fn connection_for(uri: Uri, key_var: &str, settings: &Settings) -> Connection {
    Connection {
        mongo_uri: uri,
        encryption_key: std::env::var(key_var)
            .ok()
            .filter(|k| !k.is_empty())
            .map(Into::into),
        private_env: settings.private_env_vars(),
        ..Connection::default()
    }
}

/// JSON events, a progress display at a terminal, or plain text on stderr.
fn reporter_for(
    json: bool,
    interactive: bool,
) -> (Box<dyn Reporter>, Option<indicatif::MultiProgress>) {
    if json {
        (Box::new(JsonReporter), None)
    } else if interactive {
        let progress = ProgressReporter::new();
        let multi = Some(progress.multi());
        (Box::new(progress), multi)
    } else {
        let text = TextReporter {
            styler: Styler::for_stderr(),
            echo_output: tracing::enabled!(tracing::Level::DEBUG),
        };
        (Box::new(text), None)
    }
}

fn summary_text(dry_run: bool, summary: &executor::Summary) -> String {
    if dry_run {
        format!(
            "Dry run: {} would run, {} would be skipped; nothing was touched.\n",
            crate::words::count(summary.ran, "step"),
            summary.skipped
        )
    } else {
        let mut text = format!(
            "Upgrade done: {} ran ({} succeeded), {} skipped.\n",
            summary.ran, summary.succeeded, summary.skipped
        );
        if !summary.stand_ins.is_empty() {
            text.push_str("Obtained with the map's package stand-ins (installed in place of what the tags' lockfiles pin):\n");
            for s in &summary.stand_ins {
                text.push_str(&format!("  {s}\n"));
            }
        }
        text
    }
}

/// What surrounds a run: the Redis its scripts get (a throwaway one lives as long as this),
/// the preflight, the signal handlers.
struct RunSurroundings<'s> {
    settings: &'s Settings,
    key_var: &'s str,
    interactive: bool,
    multi: Option<indicatif::MultiProgress>,
    throwaway: Option<crate::redis_auto::ThrowawayRedis>,
    /// What a rehearsal changes (default: nothing).
    hooks: &'s RunHooks,
    repo: Option<&'s GitRepo>,
    /// The options the run went ahead with, and its signal watcher: what `--then` needs.
    ran_with: Option<UpgradeOptions>,
    watcher: Option<Arc<SignalWatcher>>,
}

impl Surroundings for RunSurroundings<'_> {
    fn prepare<'a>(
        &'a mut self,
        opts: &'a mut UpgradeOptions,
        full: &'a Plan,
        to_run: &'a Plan,
        reporter: &'a mut dyn Reporter,
    ) -> LocalBoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let configured = self.settings.mongo_uri.as_ref().map(|s| &s.value);
            self.hooks
                .at_plan(opts, full, self.repo, configured, reporter);
            if opts.dry_run {
                return Ok(());
            }
            // The decision plan, doctor and status show: the preflight checks what will run.
            let redis_url = self.redis_for(opts, to_run).await?;
            let key_var = self.key_var;
            preflight(opts, to_run, redis_url.as_ref(), key_var, reporter).await?;
            self.ran_with = Some(opts.clone());
            Ok(())
        })
    }

    fn watch_signals(&mut self) -> Result<Arc<SignalWatcher>> {
        let watcher = Arc::new(SignalWatcher::install(if self.interactive {
            SignalPolicy::Interactive
        } else {
            SignalPolicy::Unattended
        })?);
        if self.interactive {
            interactive::spawn_stop_prompt(watcher.clone(), self.multi.clone());
        }
        self.watcher = Some(watcher.clone());
        Ok(watcher)
    }
}

impl RunSurroundings<'_> {
    /// The Redis the scripts get (None: this plan needs none): the configured one, or a
    /// throwaway local redis-server that lives for this run only.
    async fn redis_for(&mut self, opts: &mut UpgradeOptions, plan: &Plan) -> Result<Option<Uri>> {
        if !plan.steps().any(|(_, s)| s.needs.contains(&Need::Redis)) {
            return Ok(None);
        }
        let url = if self.settings.redis_is_auto() {
            let redis = crate::redis_auto::start_throwaway_redis(&opts.state_dir).await?;
            let url = Uri::new(redis.url.as_str());
            self.throwaway = Some(redis);
            url
        } else {
            self.settings.redis_url.value.clone()
        };
        redis_connection(&url, &mut opts.connection)?;
        Ok(Some(url))
    }
}

/// `--approve <id>`: each id must be a migration of the map (a typo would approve nothing).
fn approved_steps(map: &ReleaseMap, ids: &[String]) -> Result<BTreeSet<String>> {
    for id in ids {
        if map.migration(id).is_none() {
            return Err(Error::usage(
                format!(
                    "--approve {id}: the release map {} has no migration {id:?}",
                    map.source
                ),
                "use an id from `upstep plan` or `upstep map show`",
            ));
        }
    }
    Ok(ids.iter().cloned().collect())
}

/// Legacy migrations cannot be undone, so a run either takes a backup or says it will not:
/// `--backup DIR`, `--no-backup`, or (at a terminal) the answer to a question that defaults
/// to yes. Unattended runs must choose explicitly.
fn choose_backup(args: &UpgradeArgs, interactive: bool) -> Result<Option<std::path::PathBuf>> {
    if let Some(dir) = &args.run.backup {
        return Ok(Some(dir.clone()));
    }
    if args.run.no_backup || args.run.dry_run {
        return Ok(None);
    }
    if !interactive {
        return Err(Error::usage(
            "an unattended upgrade must say whether to back up the database first",
            "pass --backup DIR (recommended: legacy migrations cannot be undone) or --no-backup",
        ));
    }
    // At a terminal the question comes in the guided flow, after the plan is shown.
    Ok(None)
}

/// Redis for the scripts: the configured one, or a throwaway local redis-server.
pub(super) fn redis_connection(parsed: &Uri, conn: &mut Connection) -> Result<()> {
    let tls = parsed.has_scheme("rediss");
    if !tls && !parsed.has_scheme("redis") {
        return Err(Error::usage(
            format!("--redis-url {parsed} is not a redis:// URL"),
            "pass redis://[:password@]host:port[/db], rediss:// for TLS, or auto",
        ));
    }
    let port = match parsed.port_text() {
        Some(text) => text.parse::<u16>().ok(),
        None => Some(6379),
    };
    conn.redis_host = Some(parsed.host_name().unwrap_or_default().to_string());
    conn.redis_port = Some(port.ok_or_else(|| {
        Error::usage(
            format!("--redis-url {parsed}: bad port"),
            "pass redis://host:port",
        )
    })?);
    conn.redis_password = parsed.password();
    conn.redis_db = parsed.database().and_then(|db| db.parse::<u32>().ok());
    conn.redis_tls = tls;
    Ok(())
}

/// The same checks as `doctor`, for the steps of this run; a blocker stops it before
/// anything is touched.
async fn preflight(
    opts: &UpgradeOptions,
    plan: &Plan,
    redis_url: Option<&Uri>,
    key_var: &str,
    reporter: &mut dyn Reporter,
) -> Result<()> {
    let inputs = DoctorInputs {
        map: &opts.map,
        plan,
        mongo_uri: Some(&opts.connection.mongo_uri),
        redis_url,
        encryption_key_var: key_var,
        encryption_key: opts.connection.encryption_key.as_ref(),
        path_env: std::env::var_os("PATH").unwrap_or_default(),
        cache_dir: opts.cache_root.clone(),
        toolchain: opts.toolchain,
        keep_worktrees: opts.keep_worktrees,
        probe_downloads: false,
    };
    let report = doctor::run_checks(&inputs).await;
    for check in report.checks.iter().filter(|c| c.severity != Severity::Ok) {
        reporter.report(&RunEvent::Notice {
            message: crate::ui::words::check_notice(check),
        });
    }
    if report.blockers > 0 {
        let list: Vec<String> = report
            .checks
            .iter()
            .filter(|c| c.severity == Severity::Blocker)
            .map(|c| {
                format!(
                    "{}: {}\n    fix: {}",
                    c.id,
                    c.reason,
                    c.fix.as_deref().unwrap_or("-")
                )
            })
            .collect();
        return Err(Error::Preflight(format!(
            "preflight found {}; nothing was run:\n  {}",
            crate::words::count(report.blockers, "blocker"),
            list.join("\n  ")
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use secrecy::ExposeSecret;

    use super::*;

    #[test]
    fn a_redis_url_fills_the_connection_with_its_password_decoded() {
        let mut conn = Connection::default();
        redis_connection(&"rediss://:Canary%40Pw@[::1]:6380/3".into(), &mut conn).unwrap();
        assert_eq!(conn.redis_host.as_deref(), Some("::1"));
        assert_eq!(conn.redis_port, Some(6380));
        assert_eq!(conn.redis_db, Some(3));
        assert!(conn.redis_tls);
        // The child gets the password the server knows, not its URL encoding.
        assert_eq!(
            conn.redis_password.as_ref().map(|p| p.expose_secret()),
            Some("Canary@Pw")
        );
        assert!(!format!("{conn:?}").contains("Canary"));

        let mut plain = Connection::default();
        redis_connection(&"redis://cache".into(), &mut plain).unwrap();
        assert_eq!(
            (
                plain.redis_host.as_deref(),
                plain.redis_port,
                plain.redis_tls
            ),
            (Some("cache"), Some(6379), false)
        );
        assert!(plain.redis_password.is_none());

        for bad in ["http://:CanaryPw@h:1", "redis://:CanaryPw@h:port"] {
            let err = redis_connection(&bad.into(), &mut Connection::default()).unwrap_err();
            assert!(!err.to_string().contains("CanaryPw"), "{err}");
            assert_eq!(err.code(), crate::error::ExitCode::Usage);
        }
    }
}
