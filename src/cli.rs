//! Command-line types only (clap). Shared options are reusable `#[derive(Args)]` groups,
//! flattened into each subcommand that takes them, so every flag is defined once.

use std::path::PathBuf;
use std::sync::OnceLock;

use clap::{Args, Parser, Subcommand};

use crate::error::ExitCode;

/// The exit-code table, rendered once from `ExitCode::TABLE` for `--help`.
fn exit_codes_help() -> &'static str {
    static HELP: OnceLock<String> = OnceLock::new();
    HELP.get_or_init(|| {
        let mut s = String::from("Exit codes:\n");
        for (code, meaning) in ExitCode::TABLE {
            s.push_str(&format!("  {code:>3}  {meaning}\n"));
        }
        s
    })
}

#[derive(Debug, Parser)]
#[command(
    name = "upstep",
    version,
    about = "Upgrade a self-hosted deployment by running its legacy data migrations, each at the \
             release it was written for: planned, journalled, verified and resumable.",
    after_help = exit_codes_help(),
    propagate_version = true
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalOpts,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct GlobalOpts {
    /// More log output on stderr (-v debug, -vv trace).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,

    /// Less log output: only errors.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,

    /// Log format on stderr.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// List the migration scripts an upgrade needs, in order, grouped by the tag each runs at.
    Plan(PlanArgs),
    /// Upgrade: with --plan, list what it would run (running lands with the runner).
    Upgrade(UpgradeArgs),
    /// Inspect the release map.
    #[command(subcommand)]
    Map(MapCommand),
    /// Back up the database (mongodump's directory format, with a checksummed manifest).
    Backup(crate::backup::args::BackupArgs),
    /// Restore a backup, verified against its manifest first.
    Restore(crate::backup::args::RestoreArgs),
}

/// Which release map to use.
#[derive(Debug, Args, Clone)]
pub struct MapOpts {
    /// Release map to use instead of the embedded default (Novu).
    #[arg(long, value_name = "FILE", env = "UPSTEP_MAP")]
    pub map: Option<PathBuf>,
}

/// Where the project's code is (for tags, files at a tag and worktrees).
#[derive(Debug, Args, Clone, Default)]
pub struct RepoOpts {
    /// The project's git repository: a local clone's path, or a URL to clone into upstep's cache.
    #[arg(long, value_name = "PATH|URL", env = "UPSTEP_REPO")]
    pub repo: Option<String>,
}

/// How to reach the MongoDB that holds the data (and upstep's journal).
#[derive(Debug, Args, Clone, Default)]
pub struct MongoOpts {
    /// MongoDB connection URI, database included (e.g. mongodb://host:27017/novu-db). Also read
    /// from UPSTEP_MONGO_URI, then MONGO_URL (the variable Novu users already have). Printed
    /// only with its password redacted.
    #[arg(
        long,
        value_name = "URI",
        env = "UPSTEP_MONGO_URI",
        hide_env_values = true
    )]
    pub mongo_uri: Option<String>,
}

impl MongoOpts {
    /// The URI from the flag, UPSTEP_MONGO_URI, or MONGO_URL, in that order.
    pub fn resolve(&self) -> Option<String> {
        self.mongo_uri
            .clone()
            .or_else(|| std::env::var("MONGO_URL").ok().filter(|v| !v.is_empty()))
    }
}

/// The Redis the scripts boot against.
#[derive(Debug, Args, Clone, Default)]
pub struct RedisOpts {
    /// Redis for the scripts: redis://[:password@]host:port[/db], rediss:// for TLS, or `auto`
    /// for a throwaway local redis-server started for the run.
    #[arg(
        long,
        value_name = "URL|auto",
        env = "UPSTEP_REDIS_URL",
        hide_env_values = true
    )]
    pub redis_url: Option<String>,
}

/// How to print results.
#[derive(Debug, Args, Clone)]
pub struct OutputOpts {
    /// Print machine-readable JSON on stdout (one document, with a `schema` field).
    #[arg(long)]
    pub json: bool,
}

/// The version range of an upgrade.
#[derive(Debug, Args, Clone)]
pub struct RangeOpts {
    /// The version the data is at now, e.g. v0.17.0 (`0.18` = the newest 0.18.x the map knows).
    #[arg(long, value_name = "VERSION")]
    pub from: Option<String>,

    /// The version to upgrade to (default: the newest release in the map).
    #[arg(long, value_name = "VERSION")]
    pub to: Option<String>,

    /// Also plan scripts no release ships yet (they run last, at the git ref the map names).
    #[arg(long)]
    pub include_unreleased: bool,
}

#[derive(Debug, Args)]
pub struct PlanArgs {
    #[command(flatten)]
    pub range: RangeOpts,
    #[command(flatten)]
    pub map: MapOpts,
    #[command(flatten)]
    pub output: OutputOpts,
}

#[derive(Debug, Args)]
pub struct UpgradeArgs {
    /// Only list the scripts the upgrade needs (same as `upstep plan`).
    #[arg(long)]
    pub plan: bool,
    #[command(flatten)]
    pub range: RangeOpts,
    #[command(flatten)]
    pub map: MapOpts,
    #[command(flatten)]
    pub output: OutputOpts,
}

#[derive(Debug, Subcommand)]
pub enum MapCommand {
    /// Check a release map (default: the embedded one) and report every problem with its line.
    Validate {
        /// The map file to check (default: --map, else the embedded map).
        file: Option<PathBuf>,
        #[command(flatten)]
        map: MapOpts,
        #[command(flatten)]
        output: OutputOpts,
    },
    /// Print the release map in use: releases, eras and migrations.
    Show {
        #[command(flatten)]
        map: MapOpts,
        #[command(flatten)]
        output: OutputOpts,
    },
}
