//! The one integration-test binary: every file here is a module sharing one harness
//! (`support`); each area of upstep adds its own `mod` line.

mod architecture;
mod backup;
mod cache_cli;
mod contracts;
mod detect;
mod doctor_cli;
mod git_layer;
mod interactive;
mod journal_contract;
mod lifecycle;
mod novu_seed;
mod one_picture;
mod ops_redis;
mod ops_settings;
mod ops_tunnel;
mod plan_cli;
mod plan_repo;
mod preflight;
mod rehearse;
mod runner_proc;
mod secrets_url;
mod services;
mod settings_path;
mod stand_ins;
mod store;
mod support;
mod tool_projects;
mod upgrade;
mod upgrade_fast;
mod upgrade_gentle;
mod upgrade_setup;
mod upgrade_ssh;
mod wording;
