//! The one integration-test binary: every file here is a module sharing one harness
//! (`support`); each area of upstep adds its own `mod` line.

mod backup;
mod plan_cli;
mod services;
mod support;
