//! upstep: runs a self-hosted deployment's legacy data migrations, each at the code version it
//! was written for. `run` is the whole program; `main.rs` only calls it.

// First: the modules below use its macro.
#[macro_use]
mod enum_all;

pub mod backup;
pub mod cache;
pub mod child;
pub mod cli;
pub(crate) mod commands;
pub mod date;
pub mod decided;
pub mod detect;
pub mod doctor;
pub mod downloads;
pub mod error;
pub mod executor;
pub mod git;
pub mod json_schemas;
mod logging;
pub mod mongo;
pub mod npm_range;
pub mod ops;
pub mod orphan_guard;
pub mod plan;
pub mod plan_needs;
pub mod preflight;
pub mod promote;
pub mod redact;
pub mod redis_auto;
pub mod redis_ping;
pub mod rehearse;
pub mod release_map;
pub mod repo_facts;
pub mod runner;
pub mod settings;
pub mod shared_cache;
pub mod stand_ins;
pub mod store;
pub mod tunnel;
pub mod ui;
pub mod version;
pub mod words;

use std::ffi::OsString;

use clap::Parser;

use crate::cli::Cli;
use crate::error::ExitCode;

/// Parse `args`, run the command, and return the process exit code.
pub fn run<I: IntoIterator<Item = OsString>>(args: I) -> i32 {
    let args: Vec<OsString> = args.into_iter().collect();
    let cli = match Cli::try_parse_from(&args) {
        Ok(cli) => cli,
        Err(err) => {
            // --help and --version are not errors.
            let code = if err.use_stderr() {
                ExitCode::Usage
            } else {
                ExitCode::Success
            };
            let _ = err.print();
            return code.as_i32();
        }
    };
    logging::init(&cli.global);
    if git::credentials_on_command_line(&args) {
        tracing::warn!(
            "--repo carries a password or token on the command line, where every local user can \
             read it (ps); pass the URL in UPSTEP_REPO, or name a variable with repo_env in \
             upstep.toml"
        );
    }
    match commands::dispatch(cli.command) {
        Ok(code) => code.as_i32(),
        Err(err) => {
            eprintln!("error: {err}");
            err.code().as_i32()
        }
    }
}
