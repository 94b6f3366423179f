//! Server processes that cannot outlive the test run.
//!
//! Shared servers live in statics, which are never dropped, and a failing or killed test process
//! runs no destructors at all. So every server gets a watchdog: a tiny `sh` loop in its own
//! process group that waits for the test process to disappear, then stops the server by its own
//! pid and removes its temporary directory.

use std::fs;
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

const WATCHDOG: &str = r#"
test_pid=$1; server_pid=$2; dir=$3
while kill -0 "$test_pid" 2>/dev/null; do sleep 0.5; done
kill -TERM "$server_pid" 2>/dev/null
i=0
while kill -0 "$server_pid" 2>/dev/null && [ "$i" -lt 20 ]; do sleep 0.1; i=$((i+1)); done
kill -KILL "$server_pid" 2>/dev/null
rm -rf "$dir"
"#;

/// A loopback port nothing listens on right now (the OS picks it).
pub fn free_port() -> u16 {
    let listener =
        TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("cannot bind 127.0.0.1:0 for a port");
    listener.local_addr().expect("local_addr").port()
}

/// A new empty directory for one server: `<tmp>/upstep-it-<kind>-<pid>-<n>`.
pub fn fresh_dir(kind: &str) -> PathBuf {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("upstep-it-{kind}-{}-{n}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
    dir
}

/// A running server: its own pid, its directory, and the watchdog guarding both.
pub struct ServerProcess {
    pub name: String,
    pub pid: u32,
    pub dir: PathBuf,
    pub log: PathBuf,
    /// Set when the server is our direct child (so it can be reaped); daemons are not.
    child: Option<Child>,
    watchdog: Option<Child>,
}

impl ServerProcess {
    /// Guards a server that was just started: spawns its watchdog.
    pub fn guard(name: &str, pid: u32, child: Option<Child>, dir: PathBuf, log: PathBuf) -> Self {
        let watchdog = Command::new("sh")
            .arg("-c")
            .arg(WATCHDOG)
            .arg("upstep-test-watchdog")
            .arg(std::process::id().to_string())
            .arg(pid.to_string())
            .arg(&dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // Its own group: a Ctrl-C aimed at `cargo test` must not kill the cleaner.
            .process_group(0)
            .spawn();
        let mut server = ServerProcess {
            name: name.to_string(),
            pid,
            dir,
            log,
            child,
            watchdog: None,
        };
        match watchdog {
            Ok(w) => server.watchdog = Some(w),
            Err(e) => {
                server.stop();
                panic!("cannot spawn the watchdog for {name}: {e}");
            }
        }
        server
    }

    /// Whether the server process is still running.
    pub fn is_alive(&mut self) -> bool {
        if let Some(child) = self.child.as_mut() {
            return matches!(child.try_wait(), Ok(None));
        }
        pid_alive(self.pid)
    }

    /// The last lines of the server's log, for failure messages.
    pub fn log_tail(&self) -> String {
        log_tail(&self.log)
    }

    /// SIGTERM, a grace period, SIGKILL; then the directory goes. Idempotent.
    pub fn stop(&mut self) {
        // The watchdog first: once the server is reaped its pid may be reused by another process.
        if let Some(mut watchdog) = self.watchdog.take() {
            let _ = watchdog.kill();
            let _ = watchdog.wait();
        }
        if self.pid != 0 {
            signal(self.pid, libc::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(3);
            while self.is_alive() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(25));
            }
            if self.is_alive() {
                signal(self.pid, libc::SIGKILL);
            }
            if let Some(mut child) = self.child.take() {
                let _ = child.wait();
            }
            self.pid = 0;
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.stop();
    }
}

fn signal(pid: u32, sig: i32) {
    if let (Ok(pid), Ok(sig)) = (i32::try_from(pid), Signal::try_from(sig)) {
        let _ = kill(Pid::from_raw(pid), sig);
    }
}

pub fn pid_alive(pid: u32) -> bool {
    match i32::try_from(pid) {
        // No signal: only whether the process exists.
        Ok(pid) => kill(Pid::from_raw(pid), None).is_ok(),
        Err(_) => false,
    }
}

pub fn log_tail(log: &Path) -> String {
    let text = fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.len().saturating_sub(20);
    lines[start..].join("\n")
}

/// Polls until something accepts TCP connections on the port, or `deadline` passes.
pub fn wait_for_tcp(
    port: u16,
    deadline: Instant,
    server: &mut ServerProcess,
) -> Result<(), String> {
    loop {
        if TcpStream::connect_timeout(
            &(Ipv4Addr::LOCALHOST, port).into(),
            Duration::from_millis(200),
        )
        .is_ok()
        {
            return Ok(());
        }
        if !server.is_alive() {
            return Err(format!("{} exited during start-up", server.name));
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "{} did not listen on port {port} in time",
                server.name
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Runs `fut` to completion on a private runtime in its own thread, so it works both from plain
/// code and from inside a `#[tokio::test]` (where a nested `block_on` would panic).
pub fn block_on<F, T>(fut: F) -> T
where
    F: std::future::Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("cannot build a tokio runtime")
            .block_on(fut)
    })
    .join()
    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}
