//! The one integration-test binary: every file here is a module sharing one harness.

mod plan_cli;
