//! The release-map file format (schema 1), as serde types.
//!
//! These types mirror the TOML one to one and reject unknown fields, so a typo in a map is an
//! error, not a silently ignored line. Fields that validation may need to point at carry their
//! source span (`Spanned`). `docs/release-map.md` documents every field; keep the two in step.
//! The validated, resolved view that the rest of upstep uses lives in `model.rs`.

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

/// The schema version this build of upstep reads.
pub const SCHEMA_VERSION: i64 = 1;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMap {
    pub schema: Spanned<i64>,
    pub project: RawProject,
    #[serde(default)]
    pub eras: BTreeMap<String, RawEra>,
    #[serde(default)]
    pub releases: Vec<RawRelease>,
    #[serde(default)]
    pub migrations: Vec<RawMigration>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawProject {
    pub name: String,
    /// Where the project's code lives (informational; `--repo` says where to read it).
    #[serde(default)]
    pub repository: Option<String>,
    /// Folder holding the migration scripts (for `map generate` / `map check`).
    pub migrations_dir: String,
    /// File endings that count as migration scripts in `migrations_dir`.
    #[serde(default = "default_script_suffixes")]
    pub script_suffixes: Vec<String>,
    /// File endings in `migrations_dir` that are never scripts (tests).
    #[serde(default = "default_exclude_suffixes")]
    pub exclude_suffixes: Vec<String>,
    /// Tags that look like releases but must never be used (Novu's stray `v1.0.1`).
    #[serde(default)]
    pub ignore_tags: Vec<String>,
    /// Branches whose history counts as the mainline (tags off it are flagged).
    #[serde(default)]
    pub mainline: Vec<String>,
    /// Default quiet window (seconds) after which a finished script that never exits is ended.
    #[serde(default)]
    pub quiet_secs: Option<u64>,
    /// Disk space one prepared checkout (worktree + install + build) takes, for `doctor`.
    #[serde(default)]
    pub disk_per_tag_mb: Option<u64>,
    /// Checks of the scripts' environment only this project needs (`doctor`, `upgrade`).
    #[serde(default)]
    pub env_checks: Vec<super::tools::RawEnvCheck>,
    /// What makes this project's encryption key valid (checked when a step needs it).
    #[serde(default)]
    pub encryption_key: Option<super::tools::RawKeyRules>,
}

fn default_script_suffixes() -> Vec<String> {
    vec![".ts".into(), ".js".into()]
}

fn default_exclude_suffixes() -> Vec<String> {
    vec![
        ".spec.ts".into(),
        ".spec.js".into(),
        ".test.ts".into(),
        ".test.js".into(),
        ".d.ts".into(),
    ]
}

/// How scripts run for a range of releases: command, working directory, environment, setup.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEra {
    #[serde(default)]
    pub description: Option<String>,
    /// Working directory of every script run, relative to the repository root.
    pub cwd: String,
    /// argv that runs one script file; `{script}` is the script path relative to `cwd`.
    /// May be left out by an era whose migrations all run a `command`.
    #[serde(default)]
    pub run: Vec<String>,
    /// argv a `run = "command"` migration runs (its migration tool), with `{name}`, `{file}`,
    /// `{stem}` placeholders; a migration's own `command` overrides it.
    #[serde(default)]
    pub command: Option<Vec<String>>,
    /// argv that undoes a `run = "command"` migration (`upstep rollback`).
    #[serde(default)]
    pub down: Option<Vec<String>>,
    /// Environment for every run. Values may use placeholders, see `docs/release-map.md`.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// An env file the application loads at start-up (relative to the repository root).
    #[serde(default)]
    pub env_file: Option<String>,
    /// Whether the application fails to start without `env_file`.
    #[serde(default)]
    pub env_file_required: bool,
    /// Commands that prepare a checkout (install, build, create the env file), run in order
    /// from the repository root.
    #[serde(default)]
    pub setup: Vec<Vec<String>>,
    /// Extra environment for the setup commands only.
    #[serde(default)]
    pub setup_env: BTreeMap<String, String>,
    /// Keep what the build commands of `setup` make and restore it when the same tag is
    /// prepared again, instead of building again.
    #[serde(default)]
    pub keep_build_outputs: bool,
    /// Lighter setups for scripts that load less than the whole application: a tag whose
    /// running scripts all name one profile (`setup_profile`) runs that profile's commands
    /// instead of `setup`.
    #[serde(default)]
    pub setup_profiles: BTreeMap<String, RawSetupProfile>,
    /// Output lines that mean "the script has finished" for scripts that never exit.
    #[serde(default)]
    pub done_lines: Vec<String>,
    /// Shims that run an exported function: name -> template.
    #[serde(default)]
    pub shims: BTreeMap<String, RawShim>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSetupProfile {
    #[serde(default)]
    pub description: Option<String>,
    /// Commands run instead of the era's `setup`, in order, from the repository root.
    pub setup: Vec<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawShim {
    #[serde(default)]
    pub description: Option<String>,
    /// Source of the shim file, written into the era's `cwd` and run with the era's `run`
    /// command. `{module}` is the script path relative to `cwd` without its file ending,
    /// `{export}` the exported function's name.
    pub template: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRelease {
    pub version: Spanned<String>,
    /// The git tag; defaults to `v<version>`.
    #[serde(default)]
    pub tag: Option<String>,
    #[serde(default)]
    pub date: Option<String>,
    pub era: Spanned<String>,
    /// Exact node version (`.nvmrc`).
    pub node: Spanned<String>,
    /// `engines.node` from package.json, npm range syntax.
    #[serde(default)]
    pub node_engines: Option<Spanned<String>>,
    /// Exact pnpm version, if the project uses pnpm.
    #[serde(default)]
    pub pnpm: Option<Spanned<String>>,
    #[serde(default = "yes")]
    pub verified: bool,
    #[serde(default)]
    pub notes: Option<String>,
    /// A lockfile at this tag whose workspace-link specifiers are stale (a version bump the
    /// release did not record): upstep reconciles exactly those before the setup runs.
    #[serde(default)]
    pub repair_lockfile: Option<Spanned<String>>,
    /// Dependencies the tag's install downloads from somewhere other than the package
    /// registry (a GitHub tarball, ...): reported as blockers where that host is unreachable.
    #[serde(default)]
    pub downloads: Vec<RawDownload>,
    /// Lockfile entries the install cannot fetch as released, replaced by a stand-in.
    #[serde(default)]
    pub stand_ins: Vec<RawStandIn>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStandIn {
    pub package: Spanned<String>,
    pub original: String,
    pub stand_in: String,
    /// "gone-from-registry" or "outside-registry".
    pub why: Spanned<String>,
    /// "always" or "when-unreachable".
    pub when: Spanned<String>,
    #[serde(default)]
    pub file: Option<Spanned<String>>,
    #[serde(default)]
    pub notes: Option<String>,
    #[serde(default)]
    pub edits: Vec<RawTextEdit>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTextEdit {
    pub text: Spanned<String>,
    pub with: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDownload {
    /// The package's name, as the lockfile names it.
    pub dependency: String,
    /// Where the install fetches it from (an https URL).
    pub url: Spanned<String>,
    /// Which dependency chain pulls it in, for the message.
    #[serde(default)]
    pub via: Option<String>,
    /// Setup profiles that do not install it (the era's full `setup` always does).
    #[serde(default)]
    pub skipped_by: Vec<String>,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RunKind {
    /// The script is a runnable file.
    File,
    /// The script only exports a function, called through one of the era's shims.
    Export,
    /// A command (the project's migration tool) runs it: the migration's or the era's
    /// `command`, with `{name}`, `{file}`, `{stem}` filled in.
    Command,
}

#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Exits {
    /// Exits by itself when done.
    Yes,
    /// Closes its resources but may keep the process alive (e.g. only `app.close()`).
    MayHang,
    /// Never exits: must be recognised as finished and ended.
    Never,
}

#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Idempotency {
    /// Re-running changes nothing.
    Yes,
    /// Skips documents already migrated: a re-run only touches what is left.
    Guarded,
    /// A re-run changes data again: never repeat it by surprise.
    No,
}

#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Need {
    Redis,
    EncryptionKey,
    ReplicaSet,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMigration {
    pub id: Spanned<String>,
    pub title: String,
    /// The release whose tree first contains the script. Exclusive with `unreleased_ref`.
    #[serde(default)]
    pub introduced_in: Option<Spanned<String>>,
    /// For a script no release ships yet: the git ref (branch or commit) it runs at.
    #[serde(default)]
    pub unreleased_ref: Option<Spanned<String>>,
    /// Run at this release instead of `introduced_in` (when the plan reaches it).
    #[serde(default)]
    pub run_at: Option<Spanned<String>>,
    /// Path of the script from the repository root.
    pub script: String,
    /// The migration's name in its tool's journal (`{name}`; default: the script's stem).
    #[serde(default)]
    pub name: Option<String>,
    pub run: RunKind,
    #[serde(default)]
    pub export: Option<String>,
    #[serde(default)]
    pub shim: Option<Spanned<String>>,
    /// With `run = "command"`: the argv, overriding the era's `command`.
    #[serde(default)]
    pub command: Option<Spanned<Vec<String>>>,
    /// How to undo it: an argv (`{name}`, `{file}`, `{stem}` allowed), for `upstep rollback`.
    #[serde(default)]
    pub down: Option<Spanned<Vec<String>>>,
    /// How to undo it: a script file (from the repository root) run like a `run = "file"`
    /// script with the era's `run`.
    #[serde(default)]
    pub down_script: Option<Spanned<String>>,
    pub exits: Exits,
    #[serde(default)]
    pub done_line: Option<String>,
    #[serde(default)]
    pub quiet_secs: Option<u64>,
    /// The script's output never reaches upstep, so no done line can end it (see Mode).
    #[serde(default)]
    pub prints_nothing: bool,
    /// The era's setup profile that prepares enough for this script (default: the full setup).
    #[serde(default)]
    pub setup_profile: Option<Spanned<String>>,
    /// Later releases where the script runs differently.
    #[serde(default)]
    pub modes: Vec<RawMode>,
    pub idempotent: Idempotency,
    #[serde(default)]
    pub destructive: bool,
    #[serde(default)]
    pub lossy: bool,
    #[serde(default)]
    pub needs: Vec<Need>,
    /// Migrations that must run before this one.
    #[serde(default)]
    pub after: Vec<Spanned<String>>,
    /// Shown to the user before the step runs.
    #[serde(default)]
    pub warnings: Vec<String>,
    /// Checks that find documents still needing the migration; all empty = applied.
    #[serde(default)]
    pub pending: Vec<RawCheck>,
    /// Why no reliable check exists (exclusive with `pending`).
    #[serde(default)]
    pub no_fingerprint: Option<String>,
    #[serde(default = "yes")]
    pub verified: bool,
    #[serde(default)]
    pub notes: Option<String>,

    // Where the script lives and when it may run (validated in `lifecycle.rs`).
    /// The first release whose tree no longer holds the script.
    #[serde(default)]
    pub removed_in: Option<Spanned<String>>,
    /// Why the script works only at its own release: an upgrade that crosses that release runs
    /// it there, whatever the target (no `run_at`).
    #[serde(default)]
    pub required_stop: Option<Spanned<String>>,
    /// The first release whose file is a stub that refuses to run (with `required_stop`).
    #[serde(default)]
    pub stub_from: Option<Spanned<String>>,
    /// Why the script runs only when the user asks for it by id (`--include-optional <id>`).
    #[serde(default)]
    pub optional: Option<Spanned<String>>,
    /// The script catches its own errors and exits 0 anyway: only its data check proves that it
    /// ran (requires `[[migrations.pending]]` checks).
    #[serde(default)]
    pub exit_code_unreliable: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMode {
    pub from: Spanned<String>,
    pub run: RunKind,
    #[serde(default)]
    pub export: Option<String>,
    #[serde(default)]
    pub shim: Option<Spanned<String>>,
    #[serde(default)]
    pub command: Option<Spanned<Vec<String>>>,
    pub exits: Exits,
    #[serde(default)]
    pub done_line: Option<String>,
    #[serde(default)]
    pub quiet_secs: Option<u64>,
    /// The script's output never reaches upstep, so no done line can end it (see Mode).
    #[serde(default)]
    pub prints_nothing: bool,
    #[serde(default)]
    pub setup_profile: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCheck {
    pub collection: Spanned<String>,
    #[serde(default)]
    pub description: Option<String>,
    /// A find filter: documents matching it still need the migration.
    #[serde(default)]
    pub filter: Option<Spanned<toml::Value>>,
    /// An aggregation pipeline: any output document means pending.
    #[serde(default)]
    pub pipeline: Option<Spanned<Vec<toml::Value>>>,
    /// `absent = true`: the collection's existence means pending.
    #[serde(default)]
    pub absent: Option<bool>,
    /// A migration tool's own journal in `collection`: pending until it records this
    /// migration as applied.
    #[serde(default)]
    pub journal: Option<super::tools::ToolJournal>,
}
