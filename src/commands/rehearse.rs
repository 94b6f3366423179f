//! `upstep rehearse`: back up the real database (or take `--from-backup`), restore it into a
//! scratch database, run the planned upgrade there through the same code path as `upgrade`
//! (the database switched), measure every step, drop the scratch copy, and report.
//!
//! What keeps the real database untouched: the inner run only ever gets the scratch URI
//! (its journal, lock, heartbeats and mirror belong to the scratch database), the scripts'
//! inherited variables that lead to the real database are withheld, and the real database is
//! only read here (its lock, its journal entries, a backup).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bson::Document;
use futures_util::TryStreamExt;

use super::run::{self, Connected};
use crate::backup::{BackupOptions, RestoreOptions};
use crate::cli::{RehearseArgs, UpgradeArgs};
use crate::error::{Error, ExitCode, Result};
use crate::executor::UpgradeOptions;
use crate::plan::Plan;
use crate::redact::Uri;
use crate::rehearse::{self as lib, Counts, DataSource, Measure, Recording, RehearsalReport};
use crate::release_map::{Fingerprint, ReleaseMap};
use crate::store::fingerprint::{self, EvalOptions};
use crate::store::lock::RunLock;
use crate::store::mirror::{state_dir, Mirror};
use crate::store::{Store, JOURNAL};
use crate::ui::events::{Reporter, RunEvent};
use crate::ui::{self, Styler};

/// Wraps the run's reporter in another (the rehearsal's recorder).
pub(super) type WrapReporter = Box<dyn FnOnce(Box<dyn Reporter>) -> Box<dyn Reporter>>;

/// What a rehearsal changes in the upgrade run (`run::upgrade_with`); the default is a plain
/// upgrade.
#[derive(Default)]
pub(super) struct RunHooks {
    /// Wraps the run's reporter (the rehearsal measures each step from the events).
    pub wrap_reporter: Option<WrapReporter>,
    /// More inherited variables no child may see.
    pub private_env: Vec<String>,
    /// Set in a rehearsal.
    pub rehearsal: Option<RehearsalHook>,
}

pub(super) struct RehearsalHook {
    /// The real database (redacted URI, as configured): part of the plan key.
    database: String,
    recording: Arc<Mutex<Recording>>,
}

impl RunHooks {
    pub(super) fn is_rehearsal(&self) -> bool {
        self.rehearsal.is_some()
    }

    /// Once the run's plan is decided: a rehearsal notes the plan's key; an upgrade says when
    /// this very plan was rehearsed (and how it went), if it was.
    pub(super) fn at_plan(
        &self,
        opts: &UpgradeOptions,
        plan: &Plan,
        repo: Option<&crate::git::GitRepo>,
        configured_uri: Option<&Uri>,
        reporter: &mut dyn Reporter,
    ) {
        match &self.rehearsal {
            Some(hook) => {
                let key = plan_key_for(opts, plan, repo, &hook.database);
                if let Ok(mut rec) = hook.recording.lock() {
                    rec.plan_key = Some(key);
                    rec.from = opts.from.as_ref().map(crate::version::display);
                    rec.to = Some(crate::version::display(&opts.to));
                }
            }
            None if opts.dry_run => {}
            None => {
                let database = configured_uri.map(Uri::redacted).unwrap_or_default();
                let key = plan_key_for(opts, plan, repo, &database);
                if let Some((report, path)) = lib::find_record(&opts.state_dir, &key) {
                    reporter.report(&RunEvent::Notice {
                        message: format!("{} (report: {})", report.one_line(), path.display()),
                    });
                }
            }
        }
    }
}

/// Reads the scratch database for the recorder, on the rehearsal's own runtime (the run's
/// runtime is busy waiting for the step meanwhile).
struct ScratchMeasure {
    handle: tokio::runtime::Handle,
    db: mongodb::Database,
    map: ReleaseMap,
}

impl ScratchMeasure {
    fn on_side<T: Send + 'static>(
        &self,
        work: impl std::future::Future<Output = Option<T>> + Send + 'static,
    ) -> Option<T> {
        let (tx, rx) = std::sync::mpsc::channel();
        self.handle.spawn(async move {
            let _ = tx.send(work.await);
        });
        rx.recv().ok().flatten()
    }
}

impl Measure for ScratchMeasure {
    fn counts(&mut self) -> Option<Counts> {
        let db = self.db.clone();
        self.on_side(async move { collection_counts(&db).await.ok() })
    }

    fn pending(&mut self, id: &str) -> Option<u64> {
        let fp = self.map.migration(id)?.fingerprint.clone();
        if matches!(fp, Fingerprint::Unknown { .. }) {
            return None;
        }
        let db = self.db.clone();
        self.on_side(async move {
            let opts = EvalOptions {
                time_limit: std::time::Duration::from_secs(300),
                count_limit: Some(i64::MAX as u64),
            };
            let report = fingerprint::evaluate(&db, &fp, opts).await;
            report.checks.iter().map(|c| c.count).sum::<Option<u64>>()
        })
    }
}

/// Documents in every collection but `system.*` and upstep's own.
async fn collection_counts(db: &mongodb::Database) -> mongodb::error::Result<Counts> {
    let mut counts = Counts::new();
    for name in db.list_collection_names().await? {
        if crate::backup::is_excluded(&name) {
            continue;
        }
        let n = db
            .collection::<Document>(&name)
            .estimated_document_count()
            .await?;
        counts.insert(name, n);
    }
    Ok(counts)
}

/// The first SIGINT or SIGTERM while the copy is being made.
async fn stop_signal() -> Error {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut term) = signal(SignalKind::terminate()) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => Error::Interrupted,
        _ = term.recv() => Error::Terminated,
    }
}

/// The real database and the scratch one, connected and checked; nothing written yet.
struct Targets {
    real: Connected,
    /// The scratch URI as configured (the inner run opens its own tunnel, if any).
    scratch_uri: Uri,
    /// The scratch URI as reachable from here (through this rehearsal's tunnel, if any).
    scratch_local: Uri,
    scratch: Store,
}

async fn connect_targets(
    settings: &crate::settings::Settings,
    real_uri: &Uri,
    scratch_uri: Uri,
    batch: bool,
) -> Result<Targets> {
    let real = run::connect(settings, batch).await?;
    crate::store::journal::ensure_readable(&real.store).await?;
    if let Some(lock) = RunLock::new(&real.store).current().await? {
        if lock.lease_until > bson::DateTime::now() {
            return Err(Error::Locked(format!(
                "an upstep run holds the lock of the database to rehearse ({}): its data is changing; nothing was done\n  fix: rehearse once that run has ended",
                lock.describe()
            )));
        }
    }
    let scratch_local = match &real.tunnel {
        Some(tunnel) if lib::same_server(real_uri, &scratch_uri) => {
            tunnel.rewrite_mongo_uri(&scratch_uri)?
        }
        _ => scratch_uri.clone(),
    };
    let scratch = Store::connect(scratch_local.expose()).await?;
    let existing = scratch.db.list_collection_names().await.map_err(|e| {
        Error::connection(
            format!(
                "cannot list the collections of the scratch database {scratch_uri}: {}",
                crate::redact::scrub(&e.to_string(), &scratch_local.secrets())
            ),
            "check that the user may read and create that database",
        )
    })?;
    if !existing.is_empty() {
        return Err(Error::usage(
            format!(
                "the scratch database {scratch_uri} already exists ({} collection(s)): a rehearsal never overwrites a database",
                existing.len()
            ),
            "if it is an earlier rehearsal's (kept with --keep), drop it (`mongosh <its URI> --eval 'db.dropDatabase()'`); or name another with --scratch-uri",
        ));
    }
    Ok(Targets {
        real,
        scratch_uri,
        scratch_local,
        scratch,
    })
}

/// The copy: the backup (taken now, or given) restored into the scratch database, with the
/// real journal's entries so the run decides as the real one would.
struct Copy {
    source: DataSource,
    backup_ms: u64,
    restore_ms: u64,
}

async fn make_copy(
    args: &RehearseArgs,
    targets: &Targets,
    work_dir: &std::path::Path,
    touched: &AtomicBool,
) -> Result<Copy> {
    let progress: Box<dyn crate::backup::Progress> = if args.output.json {
        Box::new(crate::backup::NoProgress)
    } else {
        Box::new(crate::backup::BarProgress::new("backup"))
    };
    let started = Instant::now();
    let (dir, manifest, kind) = match &args.from_backup {
        Some(dir) => (dir.clone(), crate::backup::verify(dir)?, "from-backup"),
        None => {
            let dir = args
                .run
                .backup
                .clone()
                .unwrap_or_else(|| work_dir.join("backup"));
            let opts = BackupOptions {
                out_dir: dir.clone(),
                collections: None,
                gzip: false,
            };
            let manifest =
                crate::backup::backup(targets.real.uri.expose(), &opts, progress.as_ref()).await?;
            (dir, manifest, "backup-taken")
        }
    };
    let backup_ms = if kind == "backup-taken" {
        started.elapsed().as_millis() as u64
    } else {
        0
    };
    let started = Instant::now();
    touched.store(true, Ordering::SeqCst);
    let restore = RestoreOptions {
        to_uri: Some(targets.scratch_local.clone()),
        collections: None,
        drop: false,
    };
    let progress: Box<dyn crate::backup::Progress> = if args.output.json {
        Box::new(crate::backup::NoProgress)
    } else {
        Box::new(crate::backup::BarProgress::new("restore"))
    };
    crate::backup::restore(None, &dir, &restore, progress.as_ref()).await?;
    // The journal decides what runs: the scratch database gets the real one's entries (the
    // event history and the lock stay behind).
    let entries: Vec<Document> = targets
        .real
        .store
        .db
        .collection::<Document>(JOURNAL)
        .find(bson::doc! {})
        .await
        .map_err(|e| Error::Internal(format!("cannot read the journal to copy it: {e}")))?
        .try_collect()
        .await
        .map_err(|e| Error::Internal(format!("cannot read the journal to copy it: {e}")))?;
    if !entries.is_empty() {
        targets
            .scratch
            .db
            .collection::<Document>(JOURNAL)
            .insert_many(entries)
            .await
            .map_err(|e| {
                Error::Internal(format!(
                    "cannot copy the journal into the scratch database: {e}"
                ))
            })?;
    }
    let restore_ms = started.elapsed().as_millis() as u64;
    let kept = args.from_backup.is_some() || args.run.backup.is_some();
    if !kept {
        let _ = std::fs::remove_dir_all(&dir);
    }
    Ok(Copy {
        source: DataSource {
            kind: kind.into(),
            backup: kept.then(|| dir.display().to_string()),
            backup_created_at: manifest.created_at.clone(),
            documents: manifest.collections.iter().map(|c| c.documents).sum(),
        },
        backup_ms,
        restore_ms,
    })
}

/// Flags of `upgrade` that mean nothing in a rehearsal.
fn refuse_flags(args: &RehearseArgs) -> Result<()> {
    if args.run.no_backup {
        return Err(Error::usage(
            "--no-backup: a rehearsal restores a backup into its scratch database",
            "omit --no-backup (the rehearsal's backup is removed afterwards), or pass --from-backup DIR",
        ));
    }
    if args.run.dry_run {
        return Err(Error::usage(
            "--dry-run: a rehearsal runs the steps on a scratch copy; nothing would be rehearsed",
            "use `upstep upgrade --dry-run` to see the decisions without running anything",
        ));
    }
    if args.from_backup.is_some() && args.run.backup.is_some() {
        return Err(Error::usage(
            "--backup and --from-backup: the rehearsal either takes a backup or uses one",
            "pass one of them",
        ));
    }
    Ok(())
}

fn utc_stamp() -> String {
    crate::backup::now_rfc3339()
        .chars()
        .take(19)
        .filter(|c| c.is_ascii_digit() || *c == 'T')
        .collect()
}

pub fn rehearse_command(args: &RehearseArgs) -> Result<ExitCode> {
    refuse_flags(args)?;
    let started = Instant::now();
    let started_at = crate::backup::now_rfc3339();
    let settings = run::resolve_settings(&args.connect, &args.repo, &args.map)?;
    let real_uri = settings.mongo_uri.as_ref().map(|s| s.value.clone()).ok_or_else(|| {
        Error::usage(
            "no MongoDB URI: a rehearsal copies the database to upgrade",
            "pass --mongo-uri mongodb://host:27017/<database>, set MONGO_URL, or name it in an upstep.toml profile",
        )
    })?;
    let real_db = lib::database_of(&real_uri).ok_or_else(|| {
        Error::usage(
            format!("the MongoDB URI {real_uri} names no database"),
            "add the database to the URI's path, e.g. mongodb://host:27017/novu-db",
        )
    })?;
    let stamp = utc_stamp();
    let scratch_uri = match &args.scratch_uri {
        Some(uri) => uri.clone(),
        None => lib::with_database(&real_uri, &lib::scratch_name(&real_db, &stamp))?,
    };
    if lib::database_of(&scratch_uri).is_none() {
        return Err(Error::usage(
            format!("--scratch-uri {scratch_uri} names no database"),
            "name the scratch database in the URI's path, e.g. mongodb://host:27017/novu-rehearsal",
        ));
    }
    if lib::same_database(&real_uri, &scratch_uri) {
        return Err(Error::usage(
            format!(
                "--scratch-uri {scratch_uri} is the database to rehearse: a rehearsal never writes it"
            ),
            "name another database in --scratch-uri, or omit it (default: <db>_upstep_rehearsal_<time> on the same server)",
        ));
    }
    let map = super::load_map_from(settings.map.as_ref().map(|m| m.value.as_path()))?;
    let interactive = run::is_interactive(args.run.yes) && !args.output.json;
    let state = state_dir();
    let work_dir = state.join("rehearsals").join(format!("work-{stamp}"));
    let side = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(|e| Error::Internal(format!("cannot start the async runtime: {e}")))?;

    let say = |text: String| {
        if !args.output.json {
            eprintln!("{text}");
        }
    };
    let targets = side.block_on(async {
        tokio::select! {
            r = connect_targets(&settings, &real_uri, scratch_uri.clone(), !interactive) => r,
            e = stop_signal() => Err(e),
        }
    })?;
    say(format!(
        "Rehearsing on a copy: {} -> scratch database {}",
        targets.real.store.redacted_uri, targets.scratch_uri
    ));
    let touched = AtomicBool::new(false);
    let copy = side.block_on(async {
        tokio::select! {
            r = make_copy(args, &targets, &work_dir, &touched) => r,
            e = stop_signal() => Err(e),
        }
    });
    let copy = match copy {
        Ok(copy) => copy,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&work_dir);
            if touched.load(Ordering::SeqCst) && !args.keep {
                let _ = side.block_on(async { targets.scratch.db.drop().await });
            }
            close(&side, targets);
            return Err(e);
        }
    };
    say(format!(
        "  {} documents restored; running the plan there",
        copy.source.documents
    ));

    // The run, exactly as `upgrade` runs it, on the scratch database.
    let recording = Arc::new(Mutex::new(Recording::default()));
    let measure = ScratchMeasure {
        handle: side.handle().clone(),
        db: targets.scratch.db.clone(),
        map: map.clone(),
    };
    let rec = recording.clone();
    let hooks = RunHooks {
        wrap_reporter: Some(Box::new(move |inner| {
            Box::new(crate::ui::rehearse_recorder::Recorder::new(
                inner,
                rec,
                Box::new(measure),
            ))
        })),
        private_env: lib::real_database_vars(&real_uri, &real_db, std::env::vars()),
        rehearsal: Some(RehearsalHook {
            database: real_uri.redacted(),
            recording: recording.clone(),
        }),
    };
    let mut connect = args.connect.clone();
    connect.mongo.mongo_uri = Some(targets.scratch_uri.clone());
    let mut run_opts = args.run.clone();
    run_opts.backup = None;
    run_opts.no_backup = true;
    run_opts.dry_run = false;
    // The prepared tags stay: the real run finds their setup done.
    run_opts.keep_worktrees = true;
    let inner = UpgradeArgs {
        plan: false,
        range: args.range.clone(),
        map: args.map.clone(),
        repo: args.repo.clone(),
        connect,
        run_env: args.run_env.clone(),
        run: run_opts,
        output: args.output.clone(),
        then: Vec::new(),
    };
    let outcome = super::upgrade::upgrade_with(&inner, hooks);

    let dropped_at = Instant::now();
    if !args.keep {
        let dropped = side.block_on(async { targets.scratch.db.drop().await });
        if let Err(e) = dropped {
            say(format!(
                "warning: could not drop the scratch database {}: {e}; drop it by hand",
                targets.scratch_uri
            ));
        }
        let mirror = Mirror::for_database(&state, &targets.scratch_uri.redacted());
        let _ = std::fs::remove_file(mirror.path());
    }
    let drop_ms = if args.keep {
        0
    } else {
        dropped_at.elapsed().as_millis() as u64
    };
    let _ = std::fs::remove_dir_all(&work_dir);
    let database = targets.real.store.redacted_uri.clone();
    let scratch = targets.scratch_uri.redacted();
    close(&side, targets);

    let rec = std::mem::take(
        &mut *recording
            .lock()
            .map_err(|_| Error::Internal("the rehearsal's recording was poisoned".into()))?,
    );
    let steps_ms: u64 = rec.steps.iter().map(|s| s.duration_ms).sum();
    let report = RehearsalReport {
        schema: lib::REPORT_SCHEMA.into(),
        started_at,
        finished_at: crate::backup::now_rfc3339(),
        database,
        scratch,
        scratch_kept: args.keep,
        predicted_downtime_with_backup_ms: (copy.source.kind == "backup-taken")
            .then_some(steps_ms + copy.backup_ms),
        source: copy.source,
        from: rec.from,
        to: rec.to,
        plan_key: rec.plan_key,
        status: match &outcome {
            Ok(_) => "succeeded".into(),
            Err(e) => e.code().name().into(),
        },
        error: outcome.as_ref().err().map(|e| e.to_string()),
        steps: rec.steps,
        skipped: rec.skipped,
        setup_ms: rec.setup_ms,
        steps_ms,
        backup_ms: copy.backup_ms,
        restore_ms: copy.restore_ms,
        drop_ms,
        total_ms: started.elapsed().as_millis() as u64,
        predicted_downtime_ms: steps_ms,
        notices: rec.notices,
    };
    let saved = lib::save_record(&state, &report)?;
    if let Some(file) = &args.report {
        let text =
            serde_json::to_string_pretty(&report).map_err(|e| Error::Internal(e.to_string()))?;
        std::fs::write(file, text + "\n").map_err(|e| {
            Error::usage(
                format!("cannot write the report {}: {e}", file.display()),
                "pass a --report path in a writable directory",
            )
        })?;
    }
    if args.output.json {
        let line = serde_json::to_string(&report).map_err(|e| Error::Internal(e.to_string()))?;
        ui::print_text(&(line + "\n"))?;
    } else {
        let mut text = crate::ui::rehearse_text::render(&report, &Styler::for_stdout());
        if let Some(path) = saved {
            text.push_str(&format!(
                "Recorded in {}: `upstep upgrade` with the same plan shows it.\n",
                path.display()
            ));
        }
        ui::print_text(&text)?;
    }
    outcome
}

/// Close this rehearsal's tunnel (if any) on its runtime.
fn close(side: &tokio::runtime::Runtime, targets: Targets) {
    if let Some(tunnel) = targets.real.tunnel {
        side.block_on(tunnel.close());
    }
}

/// The plan key of a run: the commits its tags resolve to are read from the repository.
fn plan_key_for(
    opts: &crate::executor::UpgradeOptions,
    plan: &crate::plan::Plan,
    repo: Option<&crate::git::GitRepo>,
    database: &str,
) -> String {
    let commits: Vec<String> = match repo {
        Some(repo) => plan
            .groups
            .iter()
            .map(|g| {
                crate::repo_facts::resolve_group_ref(repo, g)
                    .map(|t| t.commit)
                    .unwrap_or_default()
            })
            .collect(),
        None => Vec::new(),
    };
    let text = lib::map_text(&opts.map);
    lib::plan_key(&lib::PlanIdentity {
        map_text: &text,
        from: opts.from.as_ref(),
        to: &opts.to,
        include_unreleased: opts.include_unreleased,
        commits: &commits,
        database,
    })
}
