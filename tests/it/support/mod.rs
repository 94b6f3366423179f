//! Shared test harness: real services on free loopback ports, and where the test tools live.
//!
//! - `mongo()` / `redis()`: one shared server each, started lazily on first use and stopped when
//!   the test process ends (however it ends: a watchdog process outlives it and cleans up).
//! - `start_mongo_with_auth()` / `start_redis_with_password(pw)` / `start_mongo_standalone()`:
//!   private servers for credential and topology tests, stopped on Drop.
//! - `fresh_db_name(test)`: a database name no other test uses.
//! - `node_modules()`, `sshd_binary()`: tools other tests need, failing loudly when missing.
//!
//! The binaries come from the `UPSTEP_TEST_*` variables that `scripts/test.sh` exports; without
//! them the harness falls back to where `scripts/test.sh` installs things, so a plain `cargo test`
//! works once `scripts/test.sh` has run. A missing service is a test failure, never a skip.

// Each test module uses a different part of the harness.
#![allow(dead_code, unused_imports)]

mod fixture_project;
mod git_fixture;
mod mongo;
mod process;
mod redis;
mod sshd;
mod tool_project;
mod tools;

pub use fixture_project::{machine_node_version, FixtureProject};
pub use git_fixture::{signature, GitFixture, BASE_TIME};
pub use mongo::{
    fresh_db_name, mongo, start_mongo_standalone, start_mongo_with_auth, Credentials, MongoServer,
};
pub use process::{block_on, free_port, pid_alive};
pub use redis::{redis, start_redis_with_password, RedisServer};
pub use sshd::{start_sshd, SshServer};
pub use tool_project::{tool_node_modules, Tool, ToolProject};
pub use tools::{node_modules, sshd_binary, tools_dir};
