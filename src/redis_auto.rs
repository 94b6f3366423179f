//! `--redis-url auto`: a throwaway local `redis-server` for one run.
//!
//! Novu's migration scripts boot the application, which needs a Redis to connect to but none of
//! its data (the scripts leave queue keys behind in it). So unless a Redis is configured, upstep
//! starts one on a free loopback port, with no persistence, in its own process group, and stops
//! it when the run ends (`stop()` or Drop): users never meet `ECONNREFUSED 127.0.0.1:6379`.

use std::ffi::OsStr;
use std::fs::File;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::error::{Error, Result};
use crate::orphan_guard::OrphanGuard;

/// A running throwaway Redis; stopped (and its directory removed) by `stop()` or Drop.
#[derive(Debug)]
pub struct ThrowawayRedis {
    pub host: String,
    pub port: u16,
    /// `redis://127.0.0.1:<port>` (no password: it listens on loopback only, for one run).
    pub url: String,
    /// The redis-server's own pid (it leads its own process group).
    pub pid: u32,
    /// Its working directory (log, nothing else), removed on stop.
    pub dir: PathBuf,
    child: Option<Child>,
    /// Stops it even if upstep is SIGKILLed.
    guard: Option<OrphanGuard>,
}

/// `redis-server` in the directories of `path_var` (a `PATH` value); a missing one is an error
/// that says how to install it or how to point at a Redis instead.
pub fn find_redis_server(path_var: Option<&OsStr>) -> Result<PathBuf> {
    let found = path_var.and_then(|p| crate::child::find_on_path("redis-server", p));
    found.ok_or_else(|| {
        Error::Preflight(
            "`--redis-url auto` needs a local redis-server to start for the run, and none is on \
             PATH\n  fix: install it (Debian/Ubuntu: apt-get install redis-server; macOS: brew \
             install redis), or point at a running Redis with --redis-url redis://host:port"
                .into(),
        )
    })
}

/// Starts a throwaway redis-server (found on PATH) in a new directory under `state_dir`.
pub async fn start_throwaway_redis(state_dir: &Path) -> Result<ThrowawayRedis> {
    let binary = find_redis_server(std::env::var_os("PATH").as_deref())?;
    start_throwaway_redis_with(&binary, state_dir).await
}

/// The same with a given redis-server binary.
pub async fn start_throwaway_redis_with(binary: &Path, state_dir: &Path) -> Result<ThrowawayRedis> {
    let binary = binary.to_path_buf();
    let state_dir = state_dir.to_path_buf();
    // Starting is a few blocking calls and short sleeps: keep them off the async workers.
    tokio::task::spawn_blocking(move || start_blocking(&binary, &state_dir))
        .await
        .map_err(|e| Error::Internal(format!("the redis start-up task failed: {e}")))?
}

fn fresh_dir(state_dir: &Path) -> Result<PathBuf> {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let dir = state_dir.join(format!("redis-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| {
        Error::Preflight(format!(
            "cannot create {} for the throwaway Redis: {e}\n  fix: check that the state \
             directory is writable",
            dir.display()
        ))
    })?;
    Ok(dir)
}

fn start_blocking(binary: &Path, state_dir: &Path) -> Result<ThrowawayRedis> {
    let mut last = String::new();
    // A port picked as free can be taken before redis binds it: then try another.
    for _ in 0..3 {
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .map_err(|e| Error::Preflight(format!("cannot find a free loopback port: {e}")))?;
        let dir = fresh_dir(state_dir)?;
        let log = dir.join("redis.log");
        let open_log = || {
            File::create(&log)
                .map_err(|e| Error::Preflight(format!("cannot create {}: {e}", log.display())))
        };
        let (out, err) = (open_log()?, open_log()?);
        let mut command = Command::new(binary);
        command
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .arg("--dir")
            .arg(&dir)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        let child =
            crate::child::spawn_std(command, crate::child::Lifetime::WithUpstep).map_err(|e| {
                let _ = std::fs::remove_dir_all(&dir);
                Error::Preflight(format!(
                    "cannot start {}: {e}\n  fix: check the installation, or pass --redis-url \
                     redis://host:port",
                    binary.display()
                ))
            })?;
        let mut redis = ThrowawayRedis {
            host: "127.0.0.1".into(),
            port,
            url: format!("redis://127.0.0.1:{port}"),
            pid: child.id(),
            dir: dir.clone(),
            guard: Some(OrphanGuard::for_group(child.id(), "throwaway redis-server")),
            child: Some(child),
        };
        match redis.wait_ready(Instant::now() + Duration::from_secs(10)) {
            Ok(()) => {
                tracing::info!("started a throwaway redis-server on {}", redis.url);
                return Ok(redis);
            }
            Err(reason) => {
                last = format!(
                    "{reason}; its log: {}",
                    std::fs::read_to_string(&log)
                        .unwrap_or_default()
                        .lines()
                        .last()
                        .unwrap_or("(empty)")
                );
                redis.stop();
            }
        }
    }
    Err(Error::Preflight(format!(
        "the throwaway redis-server did not start: {last}\n  fix: check that `redis-server \
         --version` works, or pass --redis-url redis://host:port"
    )))
}

/// Sends one raw command (SHUTDOWN on stop, where no runtime may be at hand) and reads the reply.
fn send_command(port: u16, command: &[u8]) -> std::io::Result<String> {
    let mut stream = TcpStream::connect_timeout(
        &(Ipv4Addr::LOCALHOST, port).into(),
        Duration::from_millis(500),
    )?;
    stream.set_read_timeout(Some(Duration::from_millis(500)))?;
    stream.write_all(command)?;
    let mut buf = [0u8; 64];
    let n = stream.read(&mut buf)?;
    Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
}

impl ThrowawayRedis {
    fn alive(&mut self) -> bool {
        match self.child.as_mut() {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// The one Redis ping, from the blocking start-up thread (run on the caller's runtime).
    fn answers_ping(&self) -> bool {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return false;
        };
        let url = crate::redis_ping::loopback_url(self.port);
        runtime
            .block_on(crate::redis_ping::ping(&url, Duration::from_millis(500)))
            .is_ok()
    }

    fn wait_ready(&mut self, deadline: Instant) -> std::result::Result<(), String> {
        loop {
            if self.answers_ping() {
                return Ok(());
            }
            if !self.alive() {
                return Err("redis-server exited during start-up".into());
            }
            if Instant::now() >= deadline {
                return Err(format!("no answer to PING on port {} in time", self.port));
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// SHUTDOWN NOSAVE, then SIGTERM, then SIGKILL to its group; reaps it and removes its
    /// directory. Idempotent.
    pub fn stop(&mut self) {
        if let Some(mut guard) = self.guard.take() {
            guard.disarm();
        }
        if let Some(mut child) = self.child.take() {
            let pid = self.pid;
            let gone = |child: &mut Child, within: Duration| {
                let deadline = Instant::now() + within;
                loop {
                    if !matches!(child.try_wait(), Ok(None)) {
                        return true;
                    }
                    if Instant::now() >= deadline {
                        return false;
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
            };
            let _ = send_command(self.port, b"*2\r\n$8\r\nSHUTDOWN\r\n$6\r\nNOSAVE\r\n");
            if !gone(&mut child, Duration::from_secs(2)) {
                signal_group(pid, Signal::SIGTERM);
                if !gone(&mut child, Duration::from_secs(2)) {
                    signal_group(pid, Signal::SIGKILL);
                    let _ = child.wait();
                }
            }
            tracing::debug!("stopped the throwaway redis-server on {}", self.url);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn signal_group(pid: u32, signal: Signal) {
    crate::child::signal_child_group(pid, signal);
}

impl Drop for ThrowawayRedis {
    fn drop(&mut self) {
        self.stop();
    }
}
