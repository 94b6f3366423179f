//! Command-line types only (clap). Shared options are reusable `#[derive(Args)]` groups,
//! flattened into each subcommand that takes them, so every flag is defined once.

use std::path::PathBuf;
use std::sync::OnceLock;

use clap::{Args, Parser, Subcommand};

use crate::error::ExitCode;
use crate::runner::toolchain::ToolchainPolicy;

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

/// `--toolchain`'s values, here so the runner does not depend on clap.
impl clap::ValueEnum for ToolchainPolicy {
    fn value_variants<'a>() -> &'a [Self] {
        &[ToolchainPolicy::Exact, ToolchainPolicy::Range]
    }

    fn to_possible_value(&self) -> Option<clap::builder::PossibleValue> {
        Some(match self {
            ToolchainPolicy::Exact => clap::builder::PossibleValue::new("exact")
                .help("The exact `.nvmrc` version the release was built with"),
            ToolchainPolicy::Range => clap::builder::PossibleValue::new("range")
                .help("Any node inside the release's `engines.node` range"),
        })
    }
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
    /// Undo the applied steps of the releases after --to, newest first, each at its own tag,
    /// by the down the release map declares (journalled, verified, resumable with --retry).
    Rollback(RollbackArgs),
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
    /// Try the whole upgrade on a scratch copy first: back up, restore into a scratch database,
    /// run the planned steps there exactly as `upgrade` would, report per step the time, the
    /// ending and the documents changed, predict the real run's downtime, drop the copy. The
    /// real database and its journal are only read.
    Rehearse(RehearseArgs),
    /// Back up the database (mongodump's directory format, with a checksummed manifest).
    Backup(BackupArgs),
    /// Restore a backup, verified against its manifest first.
    Restore(RestoreArgs),
    /// Show the settings upstep resolves from flags, environment and upstep.toml.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Show what upstep keeps on disk (repositories, worktrees per tag, toolchains, logs, the
    /// package store, the build caches) with sizes; `upstep cache prune` removes what no run can
    /// use any more.
    Cache(CacheArgs),
    /// Print a shell completion script, e.g. `upstep completions bash > ~/.bash_completion`.
    Completions {
        /// The shell to generate completions for.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff) on stdout (e.g. `upstep man > upstep.1`).
    Man,
}

#[derive(Debug, Args)]
pub struct BackupArgs {
    #[command(flatten)]
    pub mongo: MongoOpts,
    #[command(flatten)]
    pub ssh: SshOpts,
    #[command(flatten)]
    pub profile: ProfileOpts,

    /// Only these collections (comma-separated or repeated). Default: every collection but
    /// system.* and upstep's own upstep_*.
    #[arg(long, value_name = "NAME,...", value_delimiter = ',')]
    pub collections: Option<Vec<String>>,

    /// The backup directory (default ./upstep-backup-<db>-<UTC timestamp>). Running again with
    /// the same directory resumes: finished collections are kept.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,

    /// Compress the files (.bson.gz, .metadata.json.gz, like mongodump --gzip).
    #[arg(long)]
    pub gzip: bool,

    #[command(flatten)]
    pub output: OutputOpts,
}

#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// The backup directory (the one `upstep backup` wrote, holding upstep-manifest.json).
    #[arg(value_name = "BACKUP")]
    pub backup: PathBuf,

    #[command(flatten)]
    pub mongo: MongoOpts,
    #[command(flatten)]
    pub ssh: SshOpts,
    #[command(flatten)]
    pub profile: ProfileOpts,

    /// Restore into this MongoDB instead (through the SSH tunnel with --ssh) (database from its path, else the backup's). Printed
    /// only with its password redacted.
    #[arg(long, value_name = "URI", hide_env_values = true)]
    pub to_uri: Option<crate::redact::Uri>,

    /// Only these collections of the backup (comma-separated or repeated).
    #[arg(long, value_name = "NAME,...", value_delimiter = ',')]
    pub collections: Option<Vec<String>>,

    /// Replace target collections that already hold documents. Each collection is loaded
    /// beside the old one and swapped in whole, so none is ever left half-restored. Asks first
    /// at a terminal; elsewhere needs --yes.
    #[arg(long)]
    pub drop: bool,

    /// Answer yes to the confirmation --drop asks for (unattended runs).
    #[arg(short = 'y', long)]
    pub yes: bool,

    #[command(flatten)]
    pub output: OutputOpts,
}

/// How the scripts' environment is prepared.
#[derive(Debug, Args, Clone)]
pub struct RunEnvOpts {
    /// Which node a tag runs with: its exact .nvmrc version, or any inside engines.node.
    #[arg(long, value_enum, default_value_t = ToolchainPolicy::Exact)]
    pub toolchain: ToolchainPolicy,

    /// Name of the environment variable holding the store encryption key (the key itself is
    /// never accepted on the command line) [default: the profile's encryption_key_env, else
    /// STORE_ENCRYPTION_KEY].
    #[arg(long, value_name = "VAR")]
    pub encryption_key_env: Option<String>,
}

#[derive(Debug, Args)]
pub struct DoctorArgs {
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
    pub optional: OptionalOpts,
    #[command(flatten)]
    pub output: OutputOpts,
}

/// Optional steps asked for (they change what runs, so doctor takes them too).
#[derive(Debug, Args, Clone, Default)]
pub struct OptionalOpts {
    /// Run an optional step (one the plan marks optional, e.g. preferences-uniqueness): it is
    /// skipped unless asked for by id. Repeat for several steps.
    #[arg(long, value_name = "ID")]
    pub include_optional: Vec<String>,
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
    pub mongo_uri: Option<crate::redact::Uri>,
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
    pub redis_url: Option<crate::redact::Uri>,
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

    /// The version to upgrade to (default: the newest verified release in the map; the newest
    /// release with --include-unreleased).
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
    /// Show what `upstep rollback --to VERSION` would undo, newest first (reads the journal
    /// and the data; connects to MongoDB).
    #[arg(long, conflicts_with_all = ["detect", "from"], requires = "to")]
    pub rollback: bool,
    /// With --rollback: leave applied steps without a declared down instead of refusing.
    #[arg(long, requires = "rollback")]
    pub skip_missing_down: bool,
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
    /// HEAD is exactly at, else the newest verified release in the map).
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
    /// After the run, promote: run this command (e.g. `--then docker compose up -d`) only when
    /// every step of the plan succeeded and its data check verified it (also when nothing
    /// needed to run). Everything after --then is the command; one argument holding spaces
    /// runs through `sh -c`. A failed (or withheld) promotion exits 14.
    #[arg(
        long,
        value_name = "CMD",
        num_args = 1..,
        allow_hyphen_values = true,
        conflicts_with_all = ["plan", "dry_run"]
    )]
    pub then: Vec<String>,
}

#[derive(Debug, Args)]
pub struct RehearseArgs {
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
    /// The run's options, as for `upgrade`. --backup DIR keeps the backup the rehearsal takes
    /// there; --no-backup and --dry-run do not apply.
    #[command(flatten)]
    pub run: RunOpts,
    #[command(flatten)]
    pub output: OutputOpts,

    /// Restore this backup (the one `upstep backup` or `upgrade --backup` wrote) into the
    /// scratch database instead of backing up the database now.
    #[arg(long, value_name = "DIR")]
    pub from_backup: Option<PathBuf>,

    /// The scratch database (default: the same server, database `<db>_upstep_rehearsal_<UTC
    /// time>`). It must not exist yet: a rehearsal never overwrites a database. Printed only
    /// with its password redacted.
    #[arg(long, value_name = "URI", hide_env_values = true)]
    pub scratch_uri: Option<crate::redact::Uri>,

    /// Keep the scratch database afterwards (to inspect what the steps did).
    #[arg(long)]
    pub keep: bool,

    /// Also write the rehearsal's report (one JSON document) to FILE.
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,
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

    /// Keep each tag's prepared worktree. Without it, a tag's worktree is removed as soon as
    /// its steps are done (and after a failed setup), so a run holds at most two prepared tags
    /// (see --no-overlap); the tag of a failed step keeps its worktree, for the retry.
    #[arg(long)]
    pub keep_worktrees: bool,

    /// Prepare one tag at a time. By default the next tag is checked out, installed and built
    /// while the steps of the current one run (when it has setup commands and at least
    /// 1.5 GB of memory is available), so its setup is hidden behind them.
    #[arg(long)]
    pub no_overlap: bool,

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

    /// Answer yes to the routine confirmations (non-idempotent, destructive, lossy or
    /// unverifiable steps) without a terminal. A step both not idempotent and unverifiable
    /// still needs --approve <ID>.
    #[arg(short = 'y', long)]
    pub yes: bool,

    /// Approve running a step that is not idempotent and that no data check can verify (e.g.
    /// preference-centralization): --yes does not cover it. Repeat for several steps.
    #[arg(long, value_name = "ID")]
    pub approve: Vec<String>,

    #[command(flatten)]
    pub optional: OptionalOpts,

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
pub struct RollbackArgs {
    /// Undo every applied step of the releases after this version.
    #[arg(long, value_name = "VERSION")]
    pub to: String,
    /// Leave applied steps that have no declared down as they are, instead of refusing to
    /// roll back through them.
    #[arg(long)]
    pub skip_missing_down: bool,
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

#[derive(Debug, Args)]
pub struct CacheArgs {
    #[command(subcommand)]
    pub action: Option<CacheCommand>,
    #[command(flatten)]
    pub output: OutputOpts,
}

#[derive(Debug, Subcommand)]
pub enum CacheCommand {
    /// Remove worktrees whose repository is gone, toolchains no release of the map needs and
    /// logs older than --older-than days. Never what an unfinished run needs: nothing while
    /// another upstep uses the cache, no worktree or log of a step the local journal mirror
    /// shows running, failed or interrupted. Says what it kept and why.
    Prune {
        /// Remove run logs older than this many days.
        #[arg(long, value_name = "DAYS", default_value_t = 30)]
        older_than: u64,
        /// Say what would be removed, remove nothing.
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        map: MapOpts,
        #[command(flatten)]
        profile: ProfileOpts,
        #[command(flatten)]
        output: OutputOpts,
    },
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Exit 10 while any migration up to the target is pending (a CI gate).
    #[arg(long)]
    pub check: bool,
    /// The target version (default: the newest verified release).
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
    use std::collections::BTreeSet;
    use std::path::Path;

    #[test]
    fn the_command_line_definition_is_consistent() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }

    /// Every long flag of every subcommand, as clap defines them.
    fn cli_flags() -> BTreeSet<String> {
        fn walk(cmd: &clap::Command, into: &mut BTreeSet<String>) {
            into.extend(
                cmd.get_arguments()
                    .filter_map(|a| a.get_long())
                    .map(String::from),
            );
            for sub in cmd.get_subcommands() {
                walk(sub, into);
            }
        }
        use clap::CommandFactory;
        let mut flags = BTreeSet::from(["help".to_string(), "version".to_string()]);
        walk(&super::Cli::command(), &mut flags);
        flags
    }

    /// The contents of the string literals of Rust source: comments, char literals and
    /// lifetimes skipped, raw strings included.
    fn string_literals(source: &str) -> Vec<String> {
        let c: Vec<char> = source.chars().collect();
        let mut out = Vec::new();
        let mut i = 0;
        let ident = |ch: char| ch.is_alphanumeric() || ch == '_';
        while i < c.len() {
            let next = c.get(i + 1).copied();
            match c[i] {
                '/' if next == Some('/') => {
                    while i < c.len() && c[i] != '\n' {
                        i += 1;
                    }
                }
                '/' if next == Some('*') => {
                    i += 2;
                    while i + 1 < c.len() && !(c[i] == '*' && c[i + 1] == '/') {
                        i += 1;
                    }
                    i += 2;
                }
                '\'' => {
                    // A char literal ('x', '\n', '\'') or a lifetime ('a).
                    if next == Some('\\') {
                        i += 3;
                        while i < c.len() && c[i] != '\'' {
                            i += 1;
                        }
                        i += 1;
                    } else if c.get(i + 2) == Some(&'\'') {
                        i += 3;
                    } else {
                        i += 1;
                    }
                }
                'r' if (next == Some('"') || next == Some('#')) && (i == 0 || !ident(c[i - 1])) => {
                    let mut j = i + 1;
                    let mut hashes = 0;
                    while c.get(j) == Some(&'#') {
                        hashes += 1;
                        j += 1;
                    }
                    if c.get(j) != Some(&'"') {
                        i += 1;
                        continue;
                    }
                    let start = j + 1;
                    let mut k = start;
                    while k < c.len()
                        && !(c[k] == '"' && (1..=hashes).all(|h| c.get(k + h) == Some(&'#')))
                    {
                        k += 1;
                    }
                    out.push(c[start..k.min(c.len())].iter().collect());
                    i = k + 1 + hashes;
                }
                '"' => {
                    let start = i + 1;
                    let mut k = start;
                    while k < c.len() && c[k] != '"' {
                        k += if c[k] == '\\' { 2 } else { 1 };
                    }
                    out.push(c[start..k.min(c.len())].iter().collect());
                    i = k + 1;
                }
                _ => i += 1,
            }
        }
        out
    }

    /// The `--flags` a message names as upstep's: not those inside a backticked command of
    /// another program (`git fetch --tags`, `redis-server --daemonize yes`).
    fn named_flags(message: &str) -> Vec<String> {
        let mut own = String::new();
        for (n, part) in message.split('`').enumerate() {
            let quoted = n % 2 == 1;
            let first = part.split_whitespace().next().unwrap_or("");
            if !quoted || first == "upstep" || first.starts_with("--") {
                own.push_str(part);
                own.push(' ');
            }
        }
        let chars: Vec<char> = own.chars().collect();
        let mut flags = Vec::new();
        let mut i = 0;
        while i + 2 < chars.len() {
            let starts = chars[i] == '-'
                && chars[i + 1] == '-'
                && chars[i + 2].is_ascii_lowercase()
                && (i == 0 || !(chars[i - 1].is_alphanumeric() || chars[i - 1] == '-'));
            if starts {
                let name: String = chars[i + 2..]
                    .iter()
                    .take_while(|ch| ch.is_ascii_alphanumeric() || **ch == '-')
                    .collect();
                i += 2 + name.len();
                flags.push(name);
            } else {
                i += 1;
            }
        }
        flags
    }

    fn rust_files(dir: &Path, into: &mut Vec<std::path::PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                rust_files(&path, into);
            } else if path.extension().is_some_and(|e| e == "rs") {
                into.push(path);
            }
        }
    }

    /// Flags of other programs that messages name outside backticks.
    const FOREIGN: &[&str] = &[
        // `corepack prepare pnpm@X --activate`, in the fix for a missing pnpm.
        "activate",
        // mongod's, in the fix for a standalone server.
        "replSet",
        // ts-node's, in the era example `map generate` writes.
        "transpile-only",
        // MikroORM's and npx's, in the command steps `map generate` drafts.
        "only",
        "no-install",
    ];

    #[test]
    fn every_flag_a_message_names_exists() {
        let flags = cli_flags();
        let mut files = Vec::new();
        rust_files(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
            &mut files,
        );
        assert!(files.len() > 20, "the sources were not found");
        let mut unknown = Vec::new();
        for file in files {
            let source = std::fs::read_to_string(&file).unwrap();
            // Test modules hold made-up input; they sit at the end of a file.
            let source = source.split("#[cfg(test)]").next().unwrap_or("");
            for literal in string_literals(source) {
                // Messages have words; a lone "--flag" is a child's argv.
                if !literal.trim().contains(char::is_whitespace) {
                    continue;
                }
                for name in named_flags(&literal) {
                    let known = flags.contains(&name)
                        || FOREIGN.contains(&name.as_str())
                        || (name.ends_with('-') && flags.iter().any(|f| f.starts_with(&name)));
                    if !known {
                        unknown.push(format!("--{name} in {}: {literal:?}", file.display()));
                    }
                }
            }
        }
        assert!(
            unknown.is_empty(),
            "messages name flags upstep does not have:\n{}",
            unknown.join("\n")
        );
    }

    #[test]
    fn then_takes_the_rest_of_the_line_as_the_command() {
        use clap::Parser;
        let cli = super::Cli::try_parse_from([
            "upstep",
            "upgrade",
            "--no-backup",
            "--then",
            "docker",
            "compose",
            "up",
            "-d",
            "--json",
        ])
        .unwrap();
        match cli.command {
            super::Command::Upgrade(args) => {
                assert_eq!(args.then, ["docker", "compose", "up", "-d", "--json"]);
                assert!(!args.output.json);
            }
            other => panic!("{other:?}"),
        }
        assert!(
            super::Cli::try_parse_from(["upstep", "upgrade", "--dry-run", "--then", "x"]).is_err()
        );
    }

    #[test]
    fn the_flag_scanner_reads_messages_as_a_person_does() {
        assert_eq!(
            named_flags("pass --retry, or `upstep mark x --applied`; `git fetch --tags`"),
            ["retry", "applied"]
        );
        let literals = string_literals(
            "let a = 'x'; // \"--no\"\nlet b: &'static str = r#\"say \"--yes\"\"#; f(\"a \\\" --to\");",
        );
        assert_eq!(literals, ["say \"--yes\"", "a \\\" --to"]);
    }
}
