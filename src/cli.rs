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

// Parsed once per process: the size of the largest variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// List the migration scripts an upgrade needs, in order, grouped by the tag each runs at.
    Plan(PlanArgs),
    /// Run the migrations an upgrade needs, each at its release's tag, journalled, locked,
    /// verified and resumable (--plan: only list them; --dry-run: decide, touch nothing).
    Upgrade(UpgradeArgs),
    /// Show every migration's state from the journal and the data.
    Status(StatusArgs),
    /// Detect where a database stands from its journal and its data: per migration applied,
    /// pending, not applicable or unknown (with evidence), the detected version and any gaps.
    Detect(DetectArgs),
    /// Record a migration as applied (adopting a database migrated by hand) or pending,
    /// without running it.
    Mark(MarkArgs),
    /// Remove the run lock whoever holds it (only when that run is certainly gone).
    Unlock(UnlockArgs),
    /// Check every prerequisite of a plan (toolchain per tag, Redis, MongoDB, keys, disk)
    /// before anything touches data. Exit 5 when a blocker remains.
    Doctor(DoctorArgs),
    /// Inspect the release map.
    #[command(subcommand)]
    Map(MapCommand),
    /// Back up the database (mongodump's directory format, with a checksummed manifest).
    Backup(crate::backup::args::BackupArgs),
    /// Restore a backup, verified against its manifest first.
    Restore(crate::backup::args::RestoreArgs),
    /// Show the settings upstep resolves from flags, environment and upstep.toml.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Print a shell completion script, e.g. `upstep completions bash > ~/.bash_completion`.
    Completions {
        /// The shell to generate completions for.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff) on stdout (e.g. `upstep man > upstep.1`).
    Man,
}

/// How the scripts' environment is prepared.
#[derive(Debug, Args, Clone)]
pub struct RunEnvOpts {
    /// Which node a tag runs with: its exact .nvmrc version, or any inside engines.node.
    #[arg(long, value_enum, default_value_t = crate::doctor::ToolchainPolicy::Exact)]
    pub toolchain: crate::doctor::ToolchainPolicy,

    /// Name of the environment variable holding the store encryption key (the key itself is
    /// never accepted on the command line).
    #[arg(long, value_name = "VAR", default_value = "STORE_ENCRYPTION_KEY")]
    pub encryption_key_env: String,
}

#[derive(Debug, Args)]
pub struct DoctorArgs {
    #[command(flatten)]
    pub range: RangeOpts,
    #[command(flatten)]
    pub map: MapOpts,
    #[command(flatten)]
    pub mongo: MongoOpts,
    #[command(flatten)]
    pub redis: RedisOpts,
    #[command(flatten)]
    pub run_env: RunEnvOpts,
    #[command(flatten)]
    pub output: OutputOpts,
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
    /// The project's git repository: a local clone's path, or a URL to clone into upstep's cache
    /// (a token in the URL, https://TOKEN@host/..., is never printed nor written to disk).
    #[arg(
        long,
        value_name = "PATH|URL",
        env = "UPSTEP_REPO",
        hide_env_values = true
    )]
    pub repo: Option<crate::git::RepoLocation>,
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
    pub repo: RepoOpts,
    /// Read the journal and the data (connects to MongoDB): plan only the steps that would run,
    /// including pending ones older than --from, and list the skipped ones with their reasons.
    #[arg(long)]
    pub detect: bool,
    #[command(flatten)]
    pub connect: ConnectOpts,
    #[command(flatten)]
    pub output: OutputOpts,
}

#[derive(Debug, Args)]
pub struct DetectArgs {
    /// The version you believe the data is at: migrations at or before it that no data check
    /// can read count as applied (data that shows pending documents still wins).
    #[arg(long, value_name = "VERSION")]
    pub from: Option<String>,

    /// The version to compare against (default: the release tag the local --repo checkout's
    /// HEAD is exactly at, else the newest release in the map).
    #[arg(long, value_name = "VERSION")]
    pub to: Option<String>,

    /// Also check scripts no release ships yet (only when the target is the newest release).
    #[arg(long)]
    pub include_unreleased: bool,

    /// Server-side time limit of each check query (maxTimeMS); a check that exceeds it is
    /// reported as unknown.
    #[arg(long, value_name = "SECS", default_value_t = 30.0)]
    pub time_limit_secs: f64,

    #[command(flatten)]
    pub map: MapOpts,
    #[command(flatten)]
    pub repo: RepoOpts,
    #[command(flatten)]
    pub connect: ConnectOpts,
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
    pub repo: RepoOpts,
    #[command(flatten)]
    pub connect: ConnectOpts,
    #[command(flatten)]
    pub run_env: RunEnvOpts,
    #[command(flatten)]
    pub run: RunOpts,
    #[command(flatten)]
    pub output: OutputOpts,
}

/// Where the data is and how to reach it: MongoDB, Redis, an SSH tunnel, a profile.
#[derive(Debug, Args, Clone, Default)]
pub struct ConnectOpts {
    #[command(flatten)]
    pub mongo: MongoOpts,
    #[command(flatten)]
    pub redis: RedisOpts,
    #[command(flatten)]
    pub ssh: SshOpts,
    #[command(flatten)]
    pub profile: ProfileOpts,
}

/// How a run behaves.
#[derive(Debug, Args, Clone)]
pub struct RunOpts {
    /// Re-run steps the journal records as failed or interrupted (a non-idempotent one only
    /// when its data check shows its work missing), and regressed ones.
    #[arg(long)]
    pub retry: bool,

    /// Run steps even though their data check says applied, including non-idempotent ones.
    #[arg(long)]
    pub force: bool,

    /// Decide and print every step, touching no data, no journal and no lock.
    #[arg(long)]
    pub dry_run: bool,

    /// Keep each tag's prepared worktree after a successful upgrade (they are kept anyway
    /// after a failure, for the retry).
    #[arg(long)]
    pub keep_worktrees: bool,

    /// Back up the database into DIR before the first step runs (see `upstep restore`).
    /// Unattended runs must choose this or --no-backup; at a terminal upstep asks.
    #[arg(long, value_name = "DIR", conflicts_with = "no_backup")]
    pub backup: Option<PathBuf>,

    /// Run without taking a backup first.
    #[arg(long)]
    pub no_backup: bool,

    /// Reset a tag's worktree that has local changes back to the tag (a worktree left
    /// incomplete by an interrupted checkout is always rebuilt).
    #[arg(long)]
    pub repair: bool,

    /// Answer yes to every confirmation (unattended runs).
    #[arg(short = 'y', long)]
    pub yes: bool,

    /// Seconds of silence after which a finished script that never exits is ended (default:
    /// per migration in the map, else the map's quiet_secs).
    #[arg(long, value_name = "SECS")]
    pub quiet_secs: Option<u64>,

    /// End (and fail) a step that runs longer than this.
    #[arg(long, value_name = "SECS")]
    pub step_timeout: Option<u64>,

    /// Seconds between SIGTERM and SIGKILL when upstep ends a script's process group.
    #[arg(long, value_name = "SECS", default_value_t = 10)]
    pub grace_secs: u64,

    /// Lease of the run lock; renewed every third of it while the run goes on.
    #[arg(long, value_name = "SECS", default_value_t = 60)]
    pub lease_secs: u64,

    /// How long to wait for another run's lock before giving up (exit 7).
    #[arg(long, value_name = "SECS", default_value_t = 30)]
    pub lock_wait_secs: u64,

    /// Never install a missing node/pnpm version with npm: fail instead.
    #[arg(long)]
    pub no_provision: bool,
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
    /// Derive a release-map skeleton from a repository's history: each script's release is the
    /// first stable tag (semver order) whose tree contains it. Prints TOML on stdout.
    Generate {
        #[command(flatten)]
        repo: RepoOpts,
        /// Folder holding the migration scripts (default: the map's migrations_dir).
        #[arg(long, value_name = "DIR")]
        dir: Option<String>,
        #[command(flatten)]
        map: MapOpts,
    },
    /// Report where a release map disagrees with a repository: scripts the map lacks, scripts
    /// at the wrong release, scripts that no longer exist. Exit 3 on any disagreement.
    Check {
        #[command(flatten)]
        repo: RepoOpts,
        #[command(flatten)]
        map: MapOpts,
        #[command(flatten)]
        output: OutputOpts,
    },
}

/// Which upstep.toml and which of its profiles to use.
#[derive(Debug, Args, Clone, Default)]
pub struct ProfileOpts {
    /// Settings file (default: ./upstep.toml, else $XDG_CONFIG_HOME/upstep/upstep.toml).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Profile of the settings file to use (default: UPSTEP_PROFILE, else the file's
    /// `default_profile`).
    #[arg(long, value_name = "NAME")]
    pub profile: Option<String>,
}

/// Host-key checking for the SSH tunnel as a flag can set it (`ignore` only in upstep.toml).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SshKnownHosts {
    /// Only hosts whose key is already in known_hosts (the default).
    Strict,
    /// Trust and record a host seen for the first time; refuse a changed key.
    AcceptNew,
}

/// Reach MongoDB (and Redis) through an SSH tunnel opened with the system OpenSSH client.
#[derive(Debug, Args, Clone, Default)]
pub struct SshOpts {
    /// Open an SSH tunnel through this host and reach MongoDB (and Redis) through it.
    #[arg(long, value_name = "[USER@]HOST[:PORT]")]
    pub ssh: Option<String>,

    /// Private key for the SSH login (only this key is offered).
    #[arg(long, value_name = "FILE")]
    pub ssh_identity: Option<PathBuf>,

    /// Jump host to reach the SSH host through (ssh -J).
    #[arg(long, value_name = "[USER@]HOST[:PORT]")]
    pub ssh_jump: Option<String>,

    /// Host-key checking [default: strict].
    #[arg(long, value_enum, value_name = "POLICY")]
    pub ssh_known_hosts: Option<SshKnownHosts>,

    /// known_hosts file to check the host key against (default: ssh's own, ~/.ssh/known_hosts).
    #[arg(long, value_name = "FILE")]
    pub ssh_known_hosts_file: Option<PathBuf>,

    /// MongoDB as seen from the SSH host [default: the host:port of the MongoDB URI].
    #[arg(long, value_name = "HOST:PORT")]
    pub ssh_remote_mongo: Option<String>,

    /// Redis as seen from the SSH host, to forward it too (default: Redis is not forwarded).
    #[arg(long, value_name = "HOST:PORT")]
    pub ssh_remote_redis: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Print the resolved settings (secrets redacted) and where each value came from.
    Show {
        #[command(flatten)]
        profile: ProfileOpts,
        #[command(flatten)]
        mongo: MongoOpts,
        #[command(flatten)]
        redis: RedisOpts,
        #[command(flatten)]
        repo: RepoOpts,
        #[command(flatten)]
        map: MapOpts,
        #[command(flatten)]
        ssh: SshOpts,
        #[command(flatten)]
        output: OutputOpts,
    },
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Exit 10 while any migration up to the target is pending (a CI gate).
    #[arg(long)]
    pub check: bool,
    /// The target version (default: the newest release).
    #[arg(long, value_name = "VERSION")]
    pub to: Option<String>,
    #[command(flatten)]
    pub map: MapOpts,
    #[command(flatten)]
    pub connect: ConnectOpts,
    #[command(flatten)]
    pub output: OutputOpts,
}

#[derive(Debug, Args)]
pub struct MarkArgs {
    /// The migration id (see `upstep map show`).
    pub id: String,
    /// Record it as applied without running it.
    #[arg(long, conflicts_with = "pending", required_unless_present = "pending")]
    pub applied: bool,
    /// Record it as pending again.
    #[arg(long)]
    pub pending: bool,
    /// Why (kept in the journal).
    #[arg(long, value_name = "TEXT")]
    pub reason: Option<String>,
    #[command(flatten)]
    pub map: MapOpts,
    #[command(flatten)]
    pub connect: ConnectOpts,
    #[command(flatten)]
    pub output: OutputOpts,
}

#[derive(Debug, Args)]
pub struct UnlockArgs {
    #[command(flatten)]
    pub connect: ConnectOpts,
    #[command(flatten)]
    pub output: OutputOpts,
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_command_line_definition_is_consistent() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }
}
