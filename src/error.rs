//! One error type and the one exit-code policy of upstep.
//!
//! Every failure a user can meet is a variant here, and `Error::code` is the only place that
//! decides which exit code a failure gets. The table is documented in README.md and in
//! `upstep --help`; codes are a contract for pipelines, so never renumber one.

use std::fmt;
use std::path::PathBuf;

enum_with_all! {
    /// The documented exit codes. Stable: pipelines branch on them.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum ExitCode {
        /// Everything asked for was done (or there was nothing to do).
        Success = 0,
        /// A bug in upstep: please report it.
        Internal = 1,
        /// The command line or a value given on it is wrong (unknown flag, bad version, downgrade).
        Usage = 2,
        /// The release map could not be read or failed validation.
        Map = 3,
        /// The git repository could not be opened, cloned, read or checked out.
        Repository = 4,
        /// `doctor` (or the checks `upgrade` runs first) found a blocker.
        Preflight = 5,
        /// MongoDB or Redis could not be reached or refused the credentials.
        Connection = 6,
        /// Another upstep run holds the run lock.
        Locked = 7,
        /// A migration step failed (or ran but did not migrate), or its tag's setup failed.
        StepFailed = 8,
        /// A step needs a decision: the journal shows it failed or interrupted (--retry or
        /// `upstep mark`), or it needs an approval of its own (--approve <id>).
        NeedsDecision = 9,
        /// `status --check`: migrations are still pending.
        Pending = 10,
        /// The SSH tunnel could not be opened or was lost.
        Tunnel = 11,
        /// A confirmation was needed but there is no terminal and no --yes.
        NoTerminal = 12,
        /// A configuration file or profile is wrong.
        Config = 13,
        /// `upgrade --then`: every step succeeded, but the promotion command failed, or was not
        /// run because a step's work could not be verified.
        PromotionFailed = 14,
        /// Stopped by SIGINT (Ctrl-C).
        Interrupted = 130,
        /// Stopped by SIGTERM, or by SIGHUP (a dropped terminal or SSH session), treated alike.
        Terminated = 143,
    }
}

impl ExitCode {
    /// The table printed in `upstep --help` and README.md (kept in one place).
    pub const TABLE: &'static [(i32, &'static str)] = &[
        (0, "success, or nothing to do"),
        (1, "internal error (a bug: please report it)"),
        (2, "usage: a bad flag or value (version, downgrade, ...)"),
        (3, "release map unreadable or invalid"),
        (4, "git repository error"),
        (5, "preflight found a blocker"),
        (6, "MongoDB/Redis unreachable or credentials refused"),
        (7, "another run holds the lock"),
        (8, "a migration step, or its tag's setup, failed"),
        (
            9,
            "a step needs a decision (failed, interrupted or ended-unverified in the journal, an approval, or a rollback through a step with no down): --retry, --approve <id>, --skip-missing-down or `upstep mark`",
        ),
        (10, "status --check: migrations pending"),
        (11, "SSH tunnel failed"),
        (
            12,
            "a confirmation is needed but there is no terminal (use --yes)",
        ),
        (13, "configuration file or profile error"),
        (
            14,
            "--then: the migrations succeeded but the promotion command failed (or was withheld: a step could not be verified)",
        ),
        (130, "interrupted (SIGINT)"),
        (
            143,
            "terminated (SIGTERM, or SIGHUP: the session that started it is gone)",
        ),
    ];

    pub fn as_i32(self) -> i32 {
        self as i32
    }

    /// A stable name for machine-readable output (the `summary` event's status).
    pub fn name(self) -> &'static str {
        match self {
            ExitCode::Success => "succeeded",
            ExitCode::Internal => "internal-error",
            ExitCode::Usage => "usage",
            ExitCode::Map => "map-invalid",
            ExitCode::Repository => "repository",
            ExitCode::Preflight => "preflight",
            ExitCode::Connection => "connection",
            ExitCode::Locked => "locked",
            ExitCode::StepFailed => "step-failed",
            ExitCode::NeedsDecision => "needs-decision",
            ExitCode::Pending => "pending",
            ExitCode::Tunnel => "tunnel",
            ExitCode::NoTerminal => "no-terminal",
            ExitCode::Config => "config",
            ExitCode::PromotionFailed => "promotion-failed",
            ExitCode::Interrupted => "interrupted",
            ExitCode::Terminated => "terminated",
        }
    }
}

/// A position in a text file, for messages that point at the line to fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    pub file: String,
    pub line: usize,
    pub column: usize,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file, self.line, self.column)
    }
}

/// One problem found in a release map, with where it is and how to fix it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapProblem {
    pub location: Option<Location>,
    pub message: String,
    pub hint: String,
}

impl fmt::Display for MapProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.location {
            Some(loc) => write!(f, "{loc}: {}", self.message)?,
            None => write!(f, "{}", self.message)?,
        }
        if !self.hint.is_empty() {
            write!(f, "\n  hint: {}", self.hint)?;
        }
        Ok(())
    }
}

/// Which MongoDB failure an error is: callers decide by this, never by the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MongoFailure {
    /// The server rejected the user or password.
    CredentialsRefused,
    /// Logged in, but the user's roles do not allow the operation.
    NotAllowed,
    /// No server answered (wrong host or port, down, or a dropped connection).
    Unreachable,
    /// The server answered with another error.
    Server,
}

/// A driver error met while doing something to one MongoDB, ready to print.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MongoError {
    pub failure: MongoFailure,
    /// The URI with its password redacted.
    pub target: String,
    /// What upstep was doing, e.g. "read collection x of" (followed by "MongoDB at ...").
    pub doing: String,
    /// The driver's first line, secrets scrubbed.
    pub detail: String,
}

impl MongoError {
    pub fn fix(&self) -> &'static str {
        match self.failure {
            MongoFailure::CredentialsRefused => {
                "check the user, the password and authSource in the URI"
            }
            MongoFailure::NotAllowed => {
                "grant the user readWrite on the database (the backup/restore roles for backup \
                 and restore, read on admin for diagnostics)"
            }
            MongoFailure::Unreachable => {
                "check that the server runs and the host and port are right (a database that \
                 cannot be reached from here directly needs --ssh)"
            }
            MongoFailure::Server => "check the server's log; re-run with -v for details",
        }
    }
}

impl fmt::Display for MongoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (target, doing, detail) = (&self.target, &self.doing, &self.detail);
        match self.failure {
            MongoFailure::CredentialsRefused => write!(
                f,
                "MongoDB at {target} refused the credentials (authentication failed): {detail}"
            )?,
            MongoFailure::NotAllowed => write!(
                f,
                "the MongoDB user of {target} is not allowed to {doing} it: {detail}"
            )?,
            // One line for people: the hosts and the cause (the driver's account is logged).
            MongoFailure::Unreachable => write!(
                f,
                "cannot reach MongoDB at {}: {}",
                crate::words::uri_hosts(target),
                crate::words::connect_failure_reason(detail)
            )?,
            MongoFailure::Server => write!(f, "cannot {doing} MongoDB at {target}: {detail}")?,
        }
        write!(f, "\n  fix: {}", self.fix())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A bad value on the command line. `fix` says what to do instead.
    #[error("{problem}\n  fix: {fix}")]
    Usage { problem: String, fix: String },

    #[error("cannot read release map {path}: {source}\n  fix: check the path given to --map")]
    MapRead {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("release map {} has {}:\n{}", .name, crate::words::count(.problems.len(), "problem"), format_problems(.problems))]
    MapInvalid {
        name: String,
        problems: Vec<MapProblem>,
    },

    #[error("{message}\n  fix: {fix}")]
    Repository { message: String, fix: String },

    #[error("{0}")]
    Preflight(String),

    #[error("{message}\n  fix: {fix}")]
    Connection { message: String, fix: String },

    /// A MongoDB failure, typed (`MongoError::failure`) so callers classify by kind.
    #[error("{0}")]
    Mongo(MongoError),

    #[error("{0}")]
    Locked(String),

    #[error("{0}")]
    StepFailed(String),

    #[error("{0}")]
    NeedsDecision(String),

    #[error("{0}")]
    Pending(String),

    #[error("{message}\n  fix: {fix}")]
    Tunnel { message: String, fix: String },

    #[error("{0}\n  fix: run it at a terminal, or pass --yes to accept these confirmations")]
    NoTerminal(String),

    #[error("{message}\n  fix: {fix}")]
    Config { message: String, fix: String },

    /// `--then`: the promotion command failed or was withheld (the migrations succeeded).
    #[error("{0}")]
    Promotion(String),

    #[error("interrupted")]
    Interrupted,

    #[error("terminated")]
    Terminated,

    #[error("cannot write output: {0}")]
    Output(#[source] std::io::Error),

    #[error("internal error: {0} (this is a bug in upstep: please report it)")]
    Internal(String),

    /// A run that failed part-way, with what it had done by then (as refinery's error carries
    /// its report). Prints, and exits, as the failure it wraps.
    #[error("{failure}")]
    RunFailed {
        failure: Box<Error>,
        report: RunReport,
    },
}

/// What a run had done when it stopped: the steps it settled in the journal, in the order it
/// settled them (as refinery's error carries the migrations it applied).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunReport {
    pub steps: Vec<SettledStep>,
}

/// One step a run settled: its id, the tag it ran at, and the status the journal holds for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettledStep {
    pub id: String,
    pub tag: String,
    /// The journal's name of the status ("succeeded", "failed", "interrupted", ...).
    pub status: String,
}

fn format_problems(problems: &[MapProblem]) -> String {
    problems
        .iter()
        .map(|p| format!("- {p}"))
        .collect::<Vec<_>>()
        .join("\n")
}

impl Error {
    pub fn usage(problem: impl Into<String>, fix: impl Into<String>) -> Self {
        Error::Usage {
            problem: problem.into(),
            fix: fix.into(),
        }
    }

    pub fn repository(message: impl Into<String>, fix: impl Into<String>) -> Self {
        Error::Repository {
            message: message.into(),
            fix: fix.into(),
        }
    }

    pub fn connection(message: impl Into<String>, fix: impl Into<String>) -> Self {
        Error::Connection {
            message: message.into(),
            fix: fix.into(),
        }
    }

    pub fn config(message: impl Into<String>, fix: impl Into<String>) -> Self {
        Error::Config {
            message: message.into(),
            fix: fix.into(),
        }
    }

    /// Attaches what the run had done before this failure.
    pub fn with_report(self, report: RunReport) -> Self {
        match self {
            Error::RunFailed { failure, .. } => Error::RunFailed { failure, report },
            failure => Error::RunFailed {
                failure: Box::new(failure),
                report,
            },
        }
    }

    /// The failure itself, under any report attached to it: match on this.
    pub fn cause(&self) -> &Error {
        match self {
            Error::RunFailed { failure, .. } => failure.cause(),
            other => other,
        }
    }

    /// What the run had done before it failed, when known.
    pub fn report(&self) -> Option<&RunReport> {
        match self {
            Error::RunFailed { report, .. } => Some(report),
            _ => None,
        }
    }

    /// The single exit-code policy.
    pub fn code(&self) -> ExitCode {
        match self {
            Error::RunFailed { failure, .. } => failure.code(),
            Error::Usage { .. } => ExitCode::Usage,
            Error::MapRead { .. } | Error::MapInvalid { .. } => ExitCode::Map,
            Error::Repository { .. } => ExitCode::Repository,
            Error::Preflight(_) => ExitCode::Preflight,
            Error::Connection { .. } | Error::Mongo(_) => ExitCode::Connection,
            Error::Locked(_) => ExitCode::Locked,
            Error::StepFailed(_) => ExitCode::StepFailed,
            Error::NeedsDecision(_) => ExitCode::NeedsDecision,
            Error::Pending(_) => ExitCode::Pending,
            Error::Tunnel { .. } => ExitCode::Tunnel,
            Error::NoTerminal(_) => ExitCode::NoTerminal,
            Error::Config { .. } => ExitCode::Config,
            Error::Promotion(_) => ExitCode::PromotionFailed,
            Error::Interrupted => ExitCode::Interrupted,
            Error::Terminated => ExitCode::Terminated,
            // A closed stdout (e.g. `upstep plan | head`) is not a bug; report it as usage-free failure.
            Error::Output(_) | Error::Internal(_) => ExitCode::Internal,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_matches_enum() {
        let codes: Vec<i32> = ExitCode::ALL.iter().map(|c| c.as_i32()).collect();
        let table: Vec<i32> = ExitCode::TABLE.iter().map(|(c, _)| *c).collect();
        assert_eq!(codes, table);
    }

    #[test]
    fn every_exit_code_has_a_name_of_its_own() {
        let names: std::collections::BTreeSet<&str> =
            ExitCode::ALL.iter().map(|c| c.name()).collect();
        assert_eq!(names.len(), ExitCode::ALL.len());
    }

    #[test]
    fn a_report_rides_on_the_failure_without_changing_it() {
        let settled = |id: &str, status: &str| SettledStep {
            id: id.into(),
            tag: "v1.0.0".into(),
            status: status.into(),
        };
        let report = RunReport {
            steps: vec![settled("a", "succeeded"), settled("d", "failed")],
        };
        let err = Error::StepFailed("d failed".into()).with_report(report.clone());
        assert_eq!(err.code(), ExitCode::StepFailed);
        assert_eq!(err.to_string(), "d failed");
        assert!(matches!(err.cause(), Error::StepFailed(_)));
        assert_eq!(err.report(), Some(&report));
        let again = err.with_report(RunReport::default());
        assert!(
            matches!(again.cause(), Error::StepFailed(_)),
            "never nested twice"
        );
        assert_eq!(again.report(), Some(&RunReport::default()));
    }
}
