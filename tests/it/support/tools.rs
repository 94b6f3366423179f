//! Where the test tools are: the `UPSTEP_TEST_*` variables, else where `scripts/test.sh` puts them.

use std::path::{Path, PathBuf};

const RUN_TEST_SH: &str = "run scripts/test.sh once: it installs the test services and exports \
                           the UPSTEP_TEST_* variables (a later plain `cargo test` finds them)";

/// `$UPSTEP_TEST_TOOLS`, default `~/.cache/upstep-test-tools` (the same rule as scripts/test.sh).
pub fn tools_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("UPSTEP_TEST_TOOLS").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
    Path::new(&home).join(".cache/upstep-test-tools")
}

/// The binary named by `var`, else the first existing fallback; panics naming scripts/test.sh.
fn required_path(var: &str, what: &str, fallbacks: &[PathBuf]) -> PathBuf {
    if let Some(value) = std::env::var_os(var).filter(|v| !v.is_empty()) {
        let path = PathBuf::from(value);
        assert!(
            path.exists(),
            "{var}={} does not exist ({what}); {RUN_TEST_SH}",
            path.display()
        );
        return path;
    }
    if let Some(found) = fallbacks.iter().find(|p| p.exists()) {
        return found.clone();
    }
    let looked: Vec<String> = fallbacks.iter().map(|p| p.display().to_string()).collect();
    panic!(
        "{what} not found: {var} is not set and none of [{}] exists; {RUN_TEST_SH}",
        looked.join(", ")
    );
}

/// The MongoDB-compatible server binary (SecantusDB).
pub(crate) fn mongod_binary() -> PathBuf {
    let tools = tools_dir();
    required_path(
        "UPSTEP_TEST_MONGOD",
        "the test MongoDB server (SecantusDB)",
        &[
            tools.join("secantus/bin/secantusd-rs"),
            tools.join("secantus-py/bin/secantusd-py"),
        ],
    )
}

pub(crate) fn redis_binary() -> PathBuf {
    let mut fallbacks: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|path| {
            std::env::split_paths(&path)
                .map(|dir| dir.join("redis-server"))
                .collect()
        })
        .unwrap_or_default();
    fallbacks.push(PathBuf::from("/usr/bin/redis-server"));
    required_path("UPSTEP_TEST_REDIS", "redis-server", &fallbacks)
}

/// `node_modules` holding the fixture scripts' packages (mongodb@6, typescript, ts-node).
pub fn node_modules() -> PathBuf {
    required_path(
        "UPSTEP_TEST_NODE_MODULES",
        "the node fixture packages",
        &[tools_dir().join("node-fixture/node_modules")],
    )
}

pub fn sshd_binary() -> PathBuf {
    required_path(
        "UPSTEP_TEST_SSHD",
        "sshd (openssh-server)",
        &[PathBuf::from("/usr/sbin/sshd")],
    )
}
