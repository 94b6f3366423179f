//! What a run is asked to do, resolved by the command layer.

use std::path::PathBuf;
use std::time::Duration;

use super::approval;
use super::command::Connection;
use super::decide::Flags;
use crate::release_map::ReleaseMap;
use crate::runner::toolchain::ToolchainPolicy;

/// Everything a run needs, resolved by the command layer.
#[derive(Clone)]
pub struct UpgradeOptions {
    pub map: ReleaseMap,
    /// `--from`; None: the journal and the data decide every step.
    pub from: Option<semver::Version>,
    pub to: semver::Version,
    pub include_unreleased: bool,
    pub connection: Connection,
    pub flags: Flags,
    pub dry_run: bool,
    pub keep_worktrees: bool,
    /// Prepare the next tag while this tag's steps run (`--no-overlap`: one at a time).
    pub overlap: super::Overlap,
    /// Reset worktrees with local changes to their tag.
    pub repair_worktrees: bool,
    /// Back up the database here before the first step runs.
    pub backup_dir: Option<PathBuf>,
    pub toolchain: ToolchainPolicy,
    pub allow_provision: bool,
    /// Overrides the map's quiet window for scripts that never exit.
    pub quiet_secs: Option<u64>,
    pub step_timeout: Option<Duration>,
    pub grace: Duration,
    pub lease: Duration,
    pub lock_wait: Duration,
    pub cache_root: PathBuf,
    pub state_dir: PathBuf,
    pub check_time_limit: Duration,
    /// What the operator approved (`--yes`, `--approve`, answers at the terminal).
    pub approvals: approval::Approvals,
}

/// A run: its options, and which questions it asks (through the `Prompt` effect).
pub struct RunRequest {
    pub options: UpgradeOptions,
    pub questions: Questions,
}

/// The questions a run asks. Unattended runs ask none: their answers are `--yes`, `--approve`
/// and `--backup` / `--no-backup`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Questions {
    /// A person answers at a terminal: the guided flow before the run, the risky steps, and
    /// what to do about a step that ended unverified.
    pub guided: bool,
    /// No `--to`: the guided flow shows where the data stands and asks for the target.
    pub target: bool,
    /// Neither `--backup` nor `--no-backup`: the guided flow asks.
    pub backup: bool,
}

impl UpgradeOptions {
    /// How a data check answers "is anything pending?" during the run (stop at the first one).
    pub(super) fn pending_check(&self) -> crate::store::fingerprint::EvalOptions {
        crate::store::fingerprint::EvalOptions {
            time_limit: self.check_time_limit,
            count_limit: None,
        }
    }
}
