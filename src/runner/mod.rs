//! Running migration scripts and the tools they need.
//!
//! - `process`: the one place upstep spawns children (process groups, output, hang detection).
//! - `signals`: SIGINT/SIGTERM turned into stop requests, per the run's policy.
//! - `toolchain`: the exact node and pnpm of a tag (PATH, version managers, or provisioned).

pub mod process;
pub mod signals;
pub mod toolchain;

pub use process::{
    group_alive, kill_group, spawn_child, ChildSpec, Ending, FinishProbe, OutputLine, ProbeAnswer,
    RunOutcome, RunningChild, StopRequest, Stream, Watch,
};
pub use signals::{AskStop, SignalPolicy, SignalWatcher};
pub use toolchain::{resolve, Toolchain, ToolchainPolicy, ToolchainRequest};
