//! upstep: runs a self-hosted deployment's legacy data migrations, each at the code version it
//! was written for. `run` is the whole program; `main.rs` only calls it.

pub mod error;
pub mod git;
pub mod release_map;

use std::ffi::OsString;

/// Parse `args`, run the command, and return the process exit code.
pub fn run<I: IntoIterator<Item = OsString>>(_args: I) -> i32 {
    0
}
