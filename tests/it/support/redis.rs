//! The test Redis server: a real `redis-server`, daemonized so it has a pid file we can trust.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpStream};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use super::process::{free_port, fresh_dir, log_tail, pid_alive, ServerProcess};
use super::tools::redis_binary;

pub struct RedisServer {
    /// `redis://127.0.0.1:PORT` (without the password).
    pub url: String,
    pub port: u16,
    pub password: Option<String>,
    pub process: ServerProcess,
}

impl std::fmt::Debug for RedisServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisServer")
            .field("url", &self.url)
            .field("pid", &self.process.pid)
            .finish()
    }
}

impl RedisServer {
    /// `redis://:<password>@127.0.0.1:PORT` (the plain URL when there is no password).
    pub fn url_with_password(&self, password: &str) -> String {
        format!("redis://:{password}@127.0.0.1:{}", self.port)
    }
}

/// The shared server (no password), started on first use and stopped when the test process ends.
pub fn redis() -> &'static RedisServer {
    static SHARED: OnceLock<Result<RedisServer, String>> = OnceLock::new();
    match SHARED.get_or_init(|| start(None)) {
        Ok(server) => server,
        Err(reason) => panic!("the shared test Redis did not start: {reason}"),
    }
}

/// A private server requiring `password`; stopped on Drop.
pub fn start_redis_with_password(password: &str) -> RedisServer {
    start(Some(password))
        .unwrap_or_else(|reason| panic!("the password test Redis did not start: {reason}"))
}

fn start(password: Option<&str>) -> Result<RedisServer, String> {
    let binary = redis_binary();
    let mut last_error = String::new();
    // A port picked as free can be taken before the server binds it: retry on a new one.
    for _attempt in 0..3 {
        let port = free_port();
        let dir = fresh_dir("redis");
        let pid_file = dir.join("redis.pid");
        let log = dir.join("redis.log");
        let mut command = Command::new(&binary);
        command
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "yes"])
            .arg("--pidfile")
            .arg(&pid_file)
            .arg("--logfile")
            .arg(&log)
            .arg("--dir")
            .arg(&dir);
        if let Some(password) = password {
            command.args(["--requirepass", password]);
        }
        // With --daemonize the launcher exits at once and the server's pid is in the pid file.
        let status = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .map_err(|e| format!("cannot run {}: {e}", binary.display()))?;
        if !status.status.success() {
            let _ = std::fs::remove_dir_all(&dir);
            last_error = format!(
                "{} failed: {}",
                binary.display(),
                String::from_utf8_lossy(&status.stderr)
            );
            continue;
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        let pid = match wait_for_pid_file(&pid_file, deadline) {
            Ok(pid) => pid,
            Err(e) => {
                last_error = format!("{e}\n--- redis log ---\n{}", log_tail(&log));
                let _ = std::fs::remove_dir_all(&dir);
                continue;
            }
        };
        let process = ServerProcess::guard("redis", pid, None, dir, log);
        match wait_for_pong(port, deadline, pid) {
            Ok(()) => {
                return Ok(RedisServer {
                    url: format!("redis://127.0.0.1:{port}"),
                    port,
                    password: password.map(str::to_string),
                    process,
                })
            }
            Err(e) => last_error = format!("{e}\n--- redis log ---\n{}", process.log_tail()),
        }
    }
    Err(last_error)
}

fn wait_for_pid_file(pid_file: &std::path::Path, deadline: Instant) -> Result<u32, String> {
    loop {
        if let Ok(text) = std::fs::read_to_string(pid_file) {
            if let Ok(pid) = text.trim().parse::<u32>() {
                return Ok(pid);
            }
        }
        if Instant::now() >= deadline {
            return Err(format!("redis wrote no pid file at {}", pid_file.display()));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Sends PING until the server answers (`-NOAUTH` also proves it is up).
fn wait_for_pong(port: u16, deadline: Instant, pid: u32) -> Result<(), String> {
    loop {
        if let Ok(reply) = ping(port) {
            if reply.starts_with("+PONG") || reply.starts_with("-NOAUTH") {
                return Ok(());
            }
        }
        if !pid_alive(pid) {
            return Err("redis exited during start-up".into());
        }
        if Instant::now() >= deadline {
            return Err(format!("redis did not answer PING on port {port} in time"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn ping(port: u16) -> std::io::Result<String> {
    let mut stream =
        TcpStream::connect_timeout(&(Ipv4Addr::LOCALHOST, port).into(), Duration::from_secs(1))?;
    stream.set_read_timeout(Some(Duration::from_secs(1)))?;
    stream.write_all(b"*1\r\n$4\r\nPING\r\n")?;
    let mut buf = [0u8; 64];
    let n = stream.read(&mut buf)?;
    Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
}
