//! `upstep backup` and `upstep restore`: the commands that run them and print a summary (text
//! for people, one JSON document with `--json`). Their flags are in `cli`.

use std::path::{Path, PathBuf};
use std::time::Instant;

use std::io::IsTerminal;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Arc;

use crate::backup::{
    backup, now_rfc3339, prepare_restore, BackupOptions, BarProgress, NoProgress, PreparedRestore,
    Progress, RestoreOptions,
};
use crate::cli::{BackupArgs, OutputOpts, RestoreArgs};
use crate::commands::resolve::{mongo_settings, through_tunnel};
use crate::error::{Error, ExitCode, Result};
use crate::redact::Uri;
use crate::ui;
use crate::ui::backup_text::{restore_text, stopped_text, BackupSummary};

fn progress_for(output: &OutputOpts, verb: &'static str) -> Box<dyn Progress> {
    if output.json {
        Box::new(NoProgress)
    } else {
        Box::new(BarProgress::new(verb))
    }
}

fn no_uri() -> Error {
    Error::usage(
        "no MongoDB URI",
        "pass --mongo-uri mongodb://host:27017/<database>, or set UPSTEP_MONGO_URI or MONGO_URL",
    )
}

pub fn backup_command(args: &BackupArgs) -> Result<ExitCode> {
    let settings = mongo_settings(&args.mongo, &args.ssh, &args.profile)?;
    let uri = settings
        .mongo_uri
        .clone()
        .map(|u| u.value)
        .ok_or_else(no_uri)?;
    let out = match &args.out {
        Some(out) => out.clone(),
        None => {
            let db = uri.database().map(str::to_string).ok_or_else(|| {
                Error::usage(
                    format!("the MongoDB URI {uri} names no database"),
                    "add the database to the URI's path, e.g. mongodb://host:27017/novu-db",
                )
            })?;
            let stamp: String = now_rfc3339()
                .chars()
                .take(19)
                .filter(|c| *c != '-' && *c != ':')
                .collect();
            PathBuf::from(format!("upstep-backup-{db}-{stamp}Z"))
        }
    };
    let opts = BackupOptions {
        out_dir: out.clone(),
        collections: args.collections.clone(),
        gzip: args.gzip,
    };
    let progress = progress_for(&args.output, "backup");
    let started = Instant::now();
    let manifest = super::runtime()?.block_on(async {
        let (uri, tunnel) = through_tunnel(&settings, uri, true).await?;
        let manifest = backup(uri.expose(), &opts, progress.as_ref()).await;
        if let Some(t) = tunnel {
            t.close().await;
        }
        manifest
    })?;
    let summary = BackupSummary::new(&out, &manifest, started.elapsed().as_secs_f64());
    if args.output.json {
        ui::print_json(&summary)?;
    } else {
        ui::print_text(&summary.text())?;
    }
    Ok(ExitCode::Success)
}

pub fn restore_command(args: &RestoreArgs) -> Result<ExitCode> {
    let settings = mongo_settings(&args.mongo, &args.ssh, &args.profile)?;
    let uri = settings.mongo_uri.clone().map(|u| u.value);
    if uri.is_none() && args.to_uri.is_none() {
        return Err(no_uri());
    }
    let opts = RestoreOptions {
        to_uri: args.to_uri.clone(),
        collections: args.collections.clone(),
        drop: args.drop,
    };
    let progress = progress_for(&args.output, "restore");
    let started = Instant::now();
    super::runtime()?.block_on(async {
        // With --ssh, the MongoDB restored into (--to-uri, else the settings') is reached
        // through the tunnel, which lives until the restore ends.
        let (uri, opts, _tunnel) = match (&opts.to_uri, uri) {
            (Some(to), uri) => {
                let (to, tunnel) = through_tunnel(&settings, to.clone(), true).await?;
                let opts = RestoreOptions {
                    to_uri: Some(to),
                    ..opts
                };
                (uri, opts, tunnel)
            }
            (None, Some(uri)) => {
                let (uri, tunnel) = through_tunnel(&settings, uri, true).await?;
                (Some(uri), opts, tunnel)
            }
            (None, None) => (None, opts, None),
        };
        let prepared = prepare_restore(uri.as_ref().map(Uri::expose), &args.backup, &opts).await?;
        if let Err(e) = confirm_replacing(&prepared, args.yes).await {
            prepared.release().await;
            return Err(e);
        }
        let watch = watch_signals(prepared.stop_flag());
        let outcome = prepared.run(progress.as_ref()).await;
        watch.abort();
        // Still under the lock: the journal of the database restored into is set back.
        let reset = match &outcome {
            Ok(report) => reset_journal(&prepared, &args.backup, &report.backup_created_at).await,
            Err(_) => Ok(Vec::new()),
        };
        prepared.release().await;
        let seconds = started.elapsed().as_secs_f64();
        match outcome {
            Ok(report) => {
                // The data is restored even when the journal could not be set back: say both.
                let (reset, journal_error) = match reset {
                    Ok(reset) => (reset, None),
                    Err(e) => (Vec::new(), Some(e)),
                };
                if args.output.json {
                    let mut value = serde_json::to_value(&report)
                        .map_err(|e| Error::Internal(e.to_string()))?;
                    value["journal_set_pending"] = serde_json::json!(reset);
                    if let Some(e) = &journal_error {
                        value["error"] = serde_json::json!(e.to_string());
                    }
                    ui::print_json(&value)?;
                } else {
                    let mut text = restore_text(&report, seconds);
                    if !reset.is_empty() {
                        text.push_str(&format!(
                            "journal: {} ran after this backup and {} pending again: {}\n",
                            crate::words::count(reset.len(), "step"),
                            if reset.len() == 1 { "is" } else { "are" },
                            reset.join(", ")
                        ));
                    }
                    if journal_error.is_some() {
                        text.push_str(
                            "journal: NOT set back (see the error below): set the steps that ran \
                             after the backup pending with `upstep mark <id> --pending`\n",
                        );
                    }
                    ui::print_text(&text)?;
                }
                match journal_error {
                    Some(e) => Err(e),
                    None => Ok(ExitCode::Success),
                }
            }
            Err(failure) => {
                if args.output.json {
                    let mut value = serde_json::to_value(&failure.report)
                        .map_err(|e| Error::Internal(e.to_string()))?;
                    value["error"] = serde_json::json!(failure.error.to_string());
                    ui::print_json(&value)?;
                } else {
                    eprint!("{}", stopped_text(&failure.report));
                }
                Err(failure.error)
            }
        }
    })
}

/// `--drop` over collections that hold documents destroys them: asked at a terminal, `--yes`
/// elsewhere.
async fn confirm_replacing(prepared: &PreparedRestore, yes: bool) -> Result<()> {
    let replaced = prepared.replaces();
    if replaced.is_empty() || yes {
        return Ok(());
    }
    let list: Vec<String> = replaced
        .iter()
        .map(|(name, n)| format!("{name} (about {n} documents)"))
        .collect();
    let what = format!(
        "restore --drop replaces {} of database {} at {} with the backup of {}: {}",
        crate::words::count(replaced.len(), "collection"),
        prepared.database(),
        prepared.target(),
        prepared.backup_created_at(),
        list.join(", ")
    );
    if !(std::io::stdin().is_terminal() && std::io::stderr().is_terminal()) {
        return Err(Error::NoTerminal(format!(
            "{what}; that needs a confirmation and there is no terminal to ask at; nothing was \
             restored"
        )));
    }
    eprintln!("{what}");
    let answer = tokio::task::spawn_blocking(|| {
        dialoguer::Confirm::new()
            .with_prompt("Replace them? (their current documents are lost)")
            .default(false)
            .interact()
    })
    .await
    .map_err(|e| Error::Internal(e.to_string()))?;
    match answer {
        Ok(true) => Ok(()),
        Ok(false) => Err(Error::usage(
            "not confirmed: nothing was restored",
            "restore again when ready (or into another database with --to-uri)",
        )),
        Err(_) => Err(Error::Interrupted),
    }
}

/// SIGINT, SIGTERM and SIGHUP (a dropped SSH session) stop the restore at its next batch, so
/// it can remove its temporary collections and release the lock instead of dying mid-way.
fn watch_signals(stop: Arc<AtomicI32>) -> tokio::task::JoinHandle<()> {
    use tokio::signal::unix::{signal, SignalKind};
    tokio::spawn(async move {
        let kinds = [
            (SignalKind::interrupt(), libc::SIGINT),
            (SignalKind::terminate(), libc::SIGTERM),
            (SignalKind::hangup(), libc::SIGHUP),
        ];
        let mut streams = Vec::new();
        for (kind, number) in kinds {
            match signal(kind) {
                Ok(stream) => streams.push((stream, number)),
                Err(e) => tracing::warn!("cannot watch signal {number}: {e}"),
            }
        }
        let waits = streams.iter_mut().map(|(stream, number)| {
            let number = *number;
            Box::pin(async move {
                stream.recv().await;
                number
            })
        });
        let (number, _, _) = futures_util::future::select_all(waits).await;
        tracing::warn!("signal {number}: stopping the restore at its next batch");
        stop.store(number, Ordering::SeqCst);
    })
}

/// Record the restore in the target's journal and set back the steps that ran after the
/// backup, as the run that holds the lock. A database without a journal (never upgraded by
/// upstep) has nothing to reset.
async fn reset_journal(
    prepared: &PreparedRestore,
    backup: &Path,
    created_at: &str,
) -> Result<Vec<String>> {
    use crate::store::journal::Journal;
    let store = prepared.store();
    let since = bson::DateTime::parse_rfc3339_str(created_at).map_err(|e| {
        Error::usage(
            format!("the backup's manifest has an unreadable created_at {created_at:?}: {e}"),
            "the manifest was edited: use an untouched backup",
        )
    })?;
    let mirror = crate::store::mirror::Mirror::for_database(
        &crate::store::mirror::state_dir(),
        &store.redacted_uri,
    );
    let journal = Journal::new(store, prepared.actor().clone(), mirror);
    journal
        .reset_after(since, &backup.display().to_string())
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::preflight::human_bytes;

    #[test]
    fn database_from_uri_path() {
        let database_in = |uri: &str| Uri::new(uri).database().map(str::to_string);
        assert_eq!(
            database_in("mongodb://h:1/novu?x=1").as_deref(),
            Some("novu")
        );
        assert_eq!(database_in("mongodb://u:p@h:1/").as_deref(), None);
        assert_eq!(database_in("mongodb://h:1").as_deref(), None);
    }

    #[test]
    fn collections_are_comma_separated_or_repeated() {
        use clap::Parser;
        let cli = crate::cli::Cli::try_parse_from([
            "upstep",
            "restore",
            "--collections",
            "a,b",
            "--collections",
            "c",
            "dir",
            "--drop",
        ])
        .expect("parses");
        match cli.command {
            crate::cli::Command::Restore(args) => {
                assert_eq!(args.collections.unwrap(), ["a", "b", "c"]);
                assert_eq!(args.backup, PathBuf::from("dir"));
                assert!(args.drop);
            }
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn bytes_for_people() {
        assert_eq!(human_bytes(12), "12 B");
        assert_eq!(human_bytes(3 * 1024 * 1024 / 2), "1.5 MiB");
    }
}
