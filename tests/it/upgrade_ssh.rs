//! `upstep upgrade --ssh`: through a real sshd (Debian's openssh-server, started by the
//! harness on a loopback port) to the real test MongoDB, including a tunnel that drops mid-step.

use std::time::{Duration, Instant};

use crate::support::{mongo, start_sshd, SshServer};
use crate::upgrade::{pid_gone, text, Env};

fn ssh_args(server: &SshServer, env: &Env) -> Vec<String> {
    // The MongoDB URI as seen from the SSH host (here the same machine).
    let mut args = env.upgrade_args();
    let at = args.iter().position(|a| a == "--mongo-uri").unwrap();
    args[at + 1] = mongo().uri_for_db(&env.db);
    args.extend([
        "--ssh".into(),
        format!("{}:{}", server.destination(), server.port),
        "--ssh-identity".into(),
        server.client_key.display().to_string(),
        "--ssh-known-hosts".into(),
        "strict".into(),
        "--ssh-known-hosts-file".into(),
        server.known_hosts.display().to_string(),
    ]);
    args
}

/// The ssh client processes below `pid` (the tunnel).
fn ssh_descendants(pid: u32) -> Vec<u32> {
    let mut found = Vec::new();
    let mut frontier = vec![pid];
    while let Some(parent) = frontier.pop() {
        for entry in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(child) = entry.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{child}/stat")) else {
                continue;
            };
            let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r.to_string()) else {
                continue;
            };
            let ppid: u32 = rest
                .split_whitespace()
                .nth(1)
                .and_then(|p| p.parse().ok())
                .unwrap_or(0);
            if ppid == parent {
                frontier.push(child);
                if stat.contains("(ssh)") {
                    found.push(child);
                }
            }
        }
    }
    found
}

#[test]
fn an_upgrade_runs_through_an_ssh_tunnel() {
    let server = start_sshd();
    let env = Env::new("ssh_upgrade");
    let args = ssh_args(&server, &env);
    let mut argv: Vec<&str> = args.iter().map(String::as_str).collect();
    argv.extend(["--to", "1.1.0"]);
    let out = env.command(&argv).output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(env.project.executed(), ["exits", "hangs", "export-only"]);
    assert_eq!(env.status_of("export-only"), "succeeded");
    // The scripts were given the tunnel's local end, never the remote address.
    let argv_log = std::fs::read_to_string(&env.project.log_path).unwrap();
    assert!(!argv_log.contains("mongodb://"), "{argv_log}");
}

/// Start an upgrade through the tunnel in the background; returns the child once `hangs` is
/// running and `ready` holds.
fn start_and_wait(env: &Env, args: &[String], ready: impl Fn() -> bool) -> std::process::Child {
    let child = std::process::Command::new(assert_cmd::cargo::cargo_bin("upstep"))
        .args(args)
        .env("NO_COLOR", "1")
        .env("UPSTEP_STATE_DIR", env.state.path())
        .env("UPSTEP_CACHE_DIR", env.cache.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !(env.project.executed().contains(&"hangs".to_string()) && ready()) {
        assert!(Instant::now() < deadline, "hangs never got going");
        std::thread::sleep(Duration::from_millis(50));
    }
    child
}

fn kill_tunnel(upstep: &std::process::Child) {
    let tunnels = ssh_descendants(upstep.id());
    assert!(!tunnels.is_empty(), "no ssh process under upstep");
    for pid in tunnels {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

fn with_map(mut args: Vec<String>, map: &std::path::Path, extra: &[&str]) -> Vec<String> {
    let at = args.iter().position(|a| a == "--map").unwrap();
    args[at + 1] = map.display().to_string();
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

#[test]
fn a_tunnel_dropped_after_the_work_stops_the_run_with_choices_and_runs_nothing_twice() {
    let server = start_sshd();
    let env = Env::new("ssh_drop_done");
    // `hangs` migrates at once and then never exits: with no done line and a long quiet window,
    // it is still running when the tunnel is killed after its work is in the data.
    let map = env.project.map_variant("slow", |m| {
        m.replace("done_lines = [\"end migration\"]", "done_lines = []")
    });
    let args = with_map(
        ssh_args(&server, &env),
        &map,
        &["--to", "1.1.0", "--quiet-secs", "120"],
    );
    let child = start_and_wait(&env, &args, || {
        env.items().iter().all(|i| i.contains_key("tagged"))
    });
    let killed_at = Instant::now();
    kill_tunnel(&child);
    let out = child.wait_with_output().unwrap();
    // Its work is done, so it is not run again by surprise: upstep stops and names the choices.
    assert_eq!(out.status.code(), Some(9), "{}", text(&out));
    assert!(
        killed_at.elapsed() < Duration::from_secs(60),
        "the drop was not noticed in time"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("dropped SSH tunnel") && stderr.contains("--retry"),
        "{stderr}"
    );
    assert_eq!(env.status_of("hangs"), "interrupted");
    assert_eq!(env.project.executed(), ["exits", "hangs"]);
    for pid in env.project.executed_pids() {
        assert!(pid_gone(pid), "pid {pid} is still running");
    }
    let mirror = crate::upgrade::log_dir_contains(&env.state.path().join("journal"), "tunnel");
    assert!(
        !mirror.is_empty(),
        "the local journal mirror does not record the dropped tunnel"
    );

    let again = with_map(
        ssh_args(&server, &env),
        &map,
        &["--to", "1.1.0", "--quiet-secs", "1", "--retry"],
    );
    let argv: Vec<&str> = again.iter().map(String::as_str).collect();
    let out = env.command(&argv).output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(env.status_of("export-only"), "succeeded");
}

#[test]
fn a_tunnel_dropped_before_the_work_is_reopened_and_the_guarded_step_rerun() {
    let server = start_sshd();
    let env = Env::new("ssh_drop_early");
    // `hangs` waits 3 s before migrating: the tunnel is killed while nothing is done yet.
    let map = env.project.map_variant("delayed", |m| {
        m.replace(
            "NEW_RELIC_ENABLED = \"false\"",
            "NEW_RELIC_ENABLED = \"false\"\nFIXTURE_DELAY_MS = \"3000\"",
        )
    });
    let args = with_map(ssh_args(&server, &env), &map, &["--to", "1.1.0"]);
    let child = start_and_wait(&env, &args, || true);
    kill_tunnel(&child);
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("running hangs again"),
        "{}",
        text(&out)
    );
    assert_eq!(
        env.project.executed(),
        ["exits", "hangs", "hangs", "export-only"]
    );
    assert_eq!(env.status_of("hangs"), "succeeded");
    let attempts = env
        .journal()
        .iter()
        .find(|d| d.get_str("_id") == Ok("hangs"))
        .and_then(|d| d.get_i32("attempts").ok());
    assert_eq!(attempts, Some(2));
    assert!(env.items().iter().all(|i| i.contains_key("tagged")));
}
