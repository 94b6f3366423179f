//! The SSH tunnel: forwards a remote MongoDB (and Redis) to free loopback ports with the system
//! OpenSSH client, waits until MongoDB answers `hello` through it, watches it while a run goes
//! on, reopens it with bounded retries, and closes it on every exit path.
//!
//! `ssh` runs in its own process group (a Ctrl-C at the terminal is upstep's to handle, not
//! ssh's) with `-N -L 127.0.0.1:<local>:<remote host>:<remote port>`, `ExitOnForwardFailure`,
//! keep-alives and, unattended, `BatchMode=yes` so it never waits for a password. Its stderr is
//! kept (the last lines) to turn its failures into one clear message each.

use std::collections::VecDeque;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use backon::{ConstantBuilder, ExponentialBuilder, Retryable};
use nix::sys::signal::Signal;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::error::{Error, Result};
use crate::orphan_guard::OrphanGuard;
use crate::redact::Uri;

/// How ssh checks the SSH host's key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum KnownHostsPolicy {
    /// The key must already be in known_hosts (`StrictHostKeyChecking=yes`). The default.
    #[default]
    Strict,
    /// A host seen for the first time is trusted and recorded; a changed key is refused.
    AcceptNew,
    /// No checking at all. Only when written explicitly in upstep.toml; never a default.
    Ignore,
}

impl KnownHostsPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            KnownHostsPolicy::Strict => "strict",
            KnownHostsPolicy::AcceptNew => "accept-new",
            KnownHostsPolicy::Ignore => "ignore",
        }
    }
}

/// What answers at the far end of a forward: decides how readiness is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForwardKind {
    /// Ready when a MongoDB `hello` gets an answer.
    Mongo,
    /// Ready when Redis answers PING (`-NOAUTH` counts: it is Redis answering).
    Redis,
}

/// One `-L` forward: a local loopback port (chosen by `open`) to this host:port as seen from the
/// SSH host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forward {
    pub remote_host: String,
    pub remote_port: u16,
    pub kind: ForwardKind,
}

/// Everything `open` needs; see `TunnelSpec::new` for the defaults.
#[derive(Debug, Clone)]
pub struct TunnelSpec {
    /// `[user@]host`.
    pub destination: String,
    pub port: Option<u16>,
    pub identity_file: Option<PathBuf>,
    pub jump_host: Option<String>,
    pub known_hosts: KnownHostsPolicy,
    pub known_hosts_file: Option<PathBuf>,
    /// Unattended: ssh must never prompt (`BatchMode=yes`).
    pub batch_mode: bool,
    pub forwards: Vec<Forward>,
    /// More ssh arguments, placed before the destination (tests: `-F /dev/null`).
    pub extra_options: Vec<String>,
    /// How long `open` waits for ssh and the forwarded services to answer.
    pub ready_timeout: Duration,
}

impl TunnelSpec {
    /// A spec with strict host-key checking, batch mode, no forwards and a 20 s deadline.
    pub fn new(destination: impl Into<String>) -> Self {
        TunnelSpec {
            destination: destination.into(),
            port: None,
            identity_file: None,
            jump_host: None,
            known_hosts: KnownHostsPolicy::Strict,
            known_hosts_file: None,
            batch_mode: true,
            forwards: Vec::new(),
            extra_options: Vec::new(),
            ready_timeout: Duration::from_secs(20),
        }
    }

    /// `user@host:port` for messages.
    fn target(&self) -> String {
        match self.port {
            Some(p) => format!("{}:{p}", self.destination),
            None => self.destination.clone(),
        }
    }
}

/// What `watch()` reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TunnelState {
    Up,
    /// The ssh process exited (a dead link makes it exit: see `SERVER_ALIVE_INTERVAL`).
    Down {
        reason: String,
    },
    /// Closed on purpose.
    Closed,
}

/// Splits `[user@]host[:port]` (IPv6 as `[::1]:22`) into (`[user@]host`, port).
pub fn parse_ssh_target(text: &str) -> Result<(String, Option<u16>)> {
    let bad = || {
        Error::usage(
            format!("`{text}` is not an SSH host"),
            "write it as [user@]host[:port], e.g. deploy@bastion.example.com:2222",
        )
    };
    let text = text.trim();
    if text.is_empty() || text.contains(char::is_whitespace) || text.starts_with('-') {
        return Err(bad());
    }
    let (user, host_port) = match text.rsplit_once('@') {
        Some((user, rest)) if !user.is_empty() => (Some(user), rest),
        Some(_) => return Err(bad()),
        None => (None, text),
    };
    let (host, port) = if let Some(inner) = host_port.strip_prefix('[') {
        let (host, after) = inner.split_once(']').ok_or_else(bad)?;
        match after.strip_prefix(':') {
            Some(p) => (host, Some(p.parse::<u16>().map_err(|_| bad())?)),
            None if after.is_empty() => (host, None),
            None => return Err(bad()),
        }
    } else {
        match host_port.rsplit_once(':') {
            Some((host, p)) if !host.contains(':') => {
                (host, Some(p.parse::<u16>().map_err(|_| bad())?))
            }
            _ => (host_port, None),
        }
    };
    if host.is_empty() || port == Some(0) {
        return Err(bad());
    }
    let destination = match user {
        Some(u) => format!("{u}@{host}"),
        None => host.to_string(),
    };
    Ok((destination, port))
}

/// Parses `host:port` (a remote service as seen from the SSH host).
pub fn parse_host_port(text: &str) -> Option<(String, u16)> {
    let text = text.trim();
    let (host, port) = if let Some(inner) = text.strip_prefix('[') {
        let (host, after) = inner.split_once(']')?;
        (host, after.strip_prefix(':')?)
    } else {
        text.rsplit_once(':')?
    };
    let port = port.parse::<u16>().ok().filter(|p| *p != 0)?;
    if host.is_empty() || host.contains(char::is_whitespace) {
        return None;
    }
    Some((host.to_string(), port))
}

const SRV_EXPLANATION: &str = "a mongodb+srv:// URI cannot be tunnelled as it is: its host list \
    comes from a DNS SRV lookup (several replica-set members), and it implies TLS and replica-set \
    discovery, which would make the driver connect to every member directly instead of through \
    the one forwarded port";
const SRV_FIX: &str = "name the primary as seen from the SSH host with --ssh-remote-mongo \
    host:port (or remote_mongo in the profile), and give a plain mongodb://user:pass@host:port/db \
    URI (add tls=true&tlsAllowInvalidHostnames=true if the server requires TLS)";

/// A `mongodb://` URI, parsed; `mongodb+srv://` and other schemes are refused.
fn plain_mongo_uri(parsed: &Uri) -> Result<&Uri> {
    if parsed.has_scheme("mongodb+srv") {
        return Err(Error::Tunnel {
            message: SRV_EXPLANATION.into(),
            fix: SRV_FIX.into(),
        });
    }
    if !parsed.expose().starts_with("mongodb://") {
        return Err(Error::usage(
            format!("`{parsed}` is not a MongoDB connection URI"),
            "give a URI that starts with mongodb://, e.g. mongodb://user:pass@db:27017/novu-db",
        ));
    }
    Ok(parsed)
}

/// The MongoDB host:port a tunnel should forward to by default: the one host of the URI (as
/// the SSH host sees it). Several hosts, or an SRV URI, need an explicit `--ssh-remote-mongo`.
pub fn mongo_forward_target(uri: &Uri) -> Result<(String, u16)> {
    let parsed = plain_mongo_uri(uri)?;
    let list = parsed.host_list();
    match list.as_slice() {
        [one] => match parse_host_port(one) {
            Some(hp) => Ok(hp),
            None => Ok((one.trim_matches(['[', ']']).to_string(), 27017)),
        },
        [] => Err(Error::usage(
            "the MongoDB URI names no host",
            "give mongodb://host:port/db, or --ssh-remote-mongo host:port",
        )),
        _ => Err(Error::usage(
            format!(
                "the MongoDB URI names {} hosts (a replica set), but a tunnel forwards one",
                list.len()
            ),
            "name the primary as seen from the SSH host with --ssh-remote-mongo host:port",
        )),
    }
}

/// Points a `mongodb://` URI at `127.0.0.1:<local_port>` with `directConnection=true`, keeping
/// the credentials, database and other options. `mongodb+srv://` is refused (see the message).
pub fn rewrite_mongo_uri_to(uri: &Uri, local_port: u16) -> Result<Uri> {
    let parsed = plain_mongo_uri(uri)?;
    let mut params: Vec<&str> = parsed
        .query()
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .filter(|p| {
            let name = p.split('=').next().unwrap_or("").to_ascii_lowercase();
            name != "directconnection"
        })
        .collect();
    params.push("directConnection=true");
    let path = if parsed.path().is_empty() {
        "/"
    } else {
        parsed.path()
    };
    Ok(parsed.rebuilt(
        &format!("127.0.0.1:{local_port}"),
        path,
        Some(&params.join("&")),
    ))
}

/// `retries` waits between attempts to reopen: `backoff`, then twice that, ..., at most 30 s.
fn reopen_backoff(retries: u32, backoff: Duration) -> ExponentialBuilder {
    ExponentialBuilder::default()
        .with_min_delay(backoff)
        .with_factor(2.0)
        .with_max_delay(Duration::from_secs(30))
        .with_max_times(retries as usize)
}

/// The last lines ssh wrote on stderr.
type StderrLog = Arc<Mutex<VecDeque<String>>>;

const STDERR_LINES: usize = 200;

/// An open tunnel. Dropping it kills ssh (its whole process group) and reaps it.
pub struct Tunnel {
    /// One local port per forward of the spec, in the same order.
    pub local_ports: Vec<u16>,
    /// The pid of the ssh process (it leads its own process group).
    pub pid: u32,
    spec: TunnelSpec,
    child: Arc<Mutex<Option<Child>>>,
    stderr: StderrLog,
    state: watch::Sender<TunnelState>,
    monitor: Option<JoinHandle<()>>,
    /// Stops ssh's group even if upstep is SIGKILLed.
    guard: Option<OrphanGuard>,
}

impl std::fmt::Debug for Tunnel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tunnel")
            .field("destination", &self.spec.target())
            .field("local_ports", &self.local_ports)
            .field("pid", &self.pid)
            .finish()
    }
}

/// Opens the tunnel and waits until every forward answers (MongoDB: `hello`; Redis: PING).
pub async fn open(spec: TunnelSpec) -> Result<Tunnel> {
    if spec.forwards.is_empty() {
        return Err(Error::Internal(
            "a tunnel needs at least one forward".into(),
        ));
    }
    if spec.known_hosts == KnownHostsPolicy::Ignore {
        tracing::warn!(
            "SSH host-key checking is off for {} (known_hosts = \"ignore\"): the connection \
             could be intercepted",
            spec.target()
        );
    }
    // A port picked as free can be taken before ssh binds it: then ssh exits at once
    // (ExitOnForwardFailure) and we try new ports, up to three times in all, at once.
    let started = (|| async {
        let ports = free_ports(spec.forwards.len()).map_err(StartError::Failed)?;
        start(&spec, &ports).await.map(|started| (ports, started))
    })
    .retry(
        ConstantBuilder::default()
            .with_delay(Duration::ZERO)
            .with_max_times(2),
    )
    .sleep(tokio::time::sleep)
    .when(|e| matches!(e, StartError::PortTaken))
    .await;
    match started {
        Ok((ports, (child, stderr, guard))) => {
            let pid = child.id().unwrap_or(0);
            let (state, _) = watch::channel(TunnelState::Up);
            let mut tunnel = Tunnel {
                local_ports: ports,
                pid,
                spec,
                child: Arc::new(Mutex::new(Some(child))),
                stderr,
                state,
                monitor: None,
                guard: Some(guard),
            };
            tunnel.start_monitor();
            Ok(tunnel)
        }
        Err(StartError::Failed(e) | StartError::Permanent(e)) => Err(e),
        Err(StartError::PortTaken) => Err(Error::Tunnel {
            message: "ssh could not listen on a free local port three times in a row".into(),
            fix: "check what is taking loopback ports on this machine, then try again".into(),
        }),
    }
}

enum StartError {
    PortTaken,
    Failed(Error),
    /// A failure no retry can fix (a host-key problem, a refused login).
    Permanent(Error),
}

fn free_ports(n: usize) -> Result<Vec<u16>> {
    // Hold every listener until all are picked, so the ports differ.
    let listeners: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind((Ipv4Addr::LOCALHOST, 0)))
        .collect::<std::io::Result<_>>()
        .map_err(|e| Error::Tunnel {
            message: format!("cannot find a free loopback port for the tunnel: {e}"),
            fix: "check that 127.0.0.1 is configured on this machine".into(),
        })?;
    listeners
        .iter()
        .map(|l| l.local_addr().map(|a| a.port()))
        .collect::<std::io::Result<_>>()
        .map_err(|e| Error::Internal(format!("local_addr of a bound listener: {e}")))
}

/// Seconds between ssh's keep-alives (inside the SSH connection: no new channel, nothing on
/// the database), and how many may go unanswered before ssh gives up and exits. A dead link
/// thus ends ssh within about 9 to 12 s, and the monitor sees ssh gone within a second.
pub const SERVER_ALIVE_INTERVAL: u32 = 3;
pub const SERVER_ALIVE_COUNT_MAX: u32 = 3;
/// How often the monitor looks at the ssh process.
const MONITOR_PERIOD: Duration = Duration::from_millis(1000);

/// The ssh argv (without the program name).
pub fn ssh_args(spec: &TunnelSpec, local_ports: &[u16]) -> Vec<String> {
    let mut args: Vec<String> = vec!["-N".into()];
    let mut opt = |o: String| {
        args.push("-o".into());
        args.push(o);
    };
    opt("ExitOnForwardFailure=yes".into());
    opt(format!("ServerAliveInterval={SERVER_ALIVE_INTERVAL}"));
    opt(format!("ServerAliveCountMax={SERVER_ALIVE_COUNT_MAX}"));
    opt("ConnectTimeout=10".into());
    if spec.batch_mode {
        opt("BatchMode=yes".into());
    }
    match spec.known_hosts {
        KnownHostsPolicy::Strict => opt("StrictHostKeyChecking=yes".into()),
        KnownHostsPolicy::AcceptNew => opt("StrictHostKeyChecking=accept-new".into()),
        KnownHostsPolicy::Ignore => {
            opt("StrictHostKeyChecking=no".into());
            opt("UserKnownHostsFile=/dev/null".into());
        }
    }
    if spec.known_hosts != KnownHostsPolicy::Ignore {
        if let Some(file) = &spec.known_hosts_file {
            opt(format!("UserKnownHostsFile={}", file.display()));
        }
    }
    if let Some(identity) = &spec.identity_file {
        args.push("-i".into());
        args.push(identity.display().to_string());
        args.push("-o".into());
        args.push("IdentitiesOnly=yes".into());
    }
    if let Some(jump) = &spec.jump_host {
        args.push("-J".into());
        args.push(jump.clone());
    }
    if let Some(port) = spec.port {
        args.push("-p".into());
        args.push(port.to_string());
    }
    for (forward, local) in spec.forwards.iter().zip(local_ports) {
        let host = if forward.remote_host.contains(':') {
            format!("[{}]", forward.remote_host)
        } else {
            forward.remote_host.clone()
        };
        args.push("-L".into());
        args.push(format!("127.0.0.1:{local}:{host}:{}", forward.remote_port));
    }
    args.extend(spec.extra_options.iter().cloned());
    // `--` so a destination can never be read as an option.
    args.push("--".into());
    args.push(spec.destination.clone());
    args
}

/// Spawns ssh on `ports` and waits until every forward answers, or fails with one message.
async fn start(
    spec: &TunnelSpec,
    ports: &[u16],
) -> std::result::Result<(Child, StderrLog, OrphanGuard), StartError> {
    let args = ssh_args(spec, ports);
    tracing::debug!("starting ssh {}", args.join(" "));
    let mut command = Command::new("ssh");
    command
        .args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = crate::child::spawn_tokio(command).map_err(|e| {
        StartError::Failed(if e.kind() == std::io::ErrorKind::NotFound {
            Error::Tunnel {
                message: "the OpenSSH client (`ssh`) is not installed or not on PATH".into(),
                fix: "install it (apt-get install openssh-client, or your system's \
                          package), or reach the database without --ssh"
                    .into(),
            }
        } else {
            Error::Tunnel {
                message: format!("cannot start ssh: {e}"),
                fix: "check that `ssh -V` works for this user".into(),
            }
        })
    })?;
    let mut guard = OrphanGuard::for_group(child.id().unwrap_or(0), "SSH tunnel");
    let stderr: StderrLog = Arc::new(Mutex::new(VecDeque::new()));
    if let Some(pipe) = child.stderr.take() {
        let log = stderr.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(pipe).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                tracing::debug!(target: "upstep::ssh", "{line}");
                if let Ok(mut log) = log.lock() {
                    if log.len() == STDERR_LINES {
                        log.pop_front();
                    }
                    log.push_back(line);
                }
            }
        });
    }
    match wait_ready(spec, ports, &mut child, &stderr).await {
        Ok(()) => Ok((child, stderr, guard)),
        Err(e) => {
            guard.disarm();
            kill_group(&mut child).await;
            Err(e)
        }
    }
}

async fn wait_ready(
    spec: &TunnelSpec,
    ports: &[u16],
    child: &mut Child,
    stderr: &StderrLog,
) -> std::result::Result<(), StartError> {
    let deadline = Instant::now() + spec.ready_timeout;
    let mut ready = vec![false; ports.len()];
    let mut listening = vec![false; ports.len()];
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            // Let the stderr reader catch the last lines.
            tokio::time::sleep(Duration::from_millis(100)).await;
            let text = stderr_text(stderr);
            if is_port_taken(&text) {
                return Err(StartError::PortTaken);
            }
            return Err(classify_exit(spec, &text, status.code()));
        }
        for (i, (forward, port)) in spec.forwards.iter().zip(ports).enumerate() {
            if ready[i] {
                continue;
            }
            let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, *port));
            if tokio::time::timeout(Duration::from_millis(500), TcpStream::connect(addr))
                .await
                .is_ok_and(|r| r.is_ok())
            {
                listening[i] = true;
                ready[i] = probe(forward.kind, *port).await;
            }
        }
        if ready.iter().all(|r| *r) {
            return Ok(());
        }
        let text = stderr_text(stderr);
        if let Some(e) = remote_refused(spec, ports, &ready, &text) {
            return Err(StartError::Failed(e));
        }
        if Instant::now() >= deadline {
            return Err(StartError::Failed(timeout_error(
                spec, ports, &listening, &ready, &text,
            )));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Whether the service behind a forwarded local port answers.
async fn probe(kind: ForwardKind, port: u16) -> bool {
    match kind {
        ForwardKind::Mongo => mongo_hello(port).await,
        ForwardKind::Redis => redis_ping(port).await,
    }
}

/// A real `hello` (directConnection, short timeouts). A command error is still an answer.
pub async fn mongo_hello(port: u16) -> bool {
    use mongodb::options::{ClientOptions, ServerAddress};
    let options = ClientOptions::builder()
        .hosts(vec![ServerAddress::Tcp {
            host: "127.0.0.1".into(),
            port: Some(port),
        }])
        .direct_connection(true)
        .server_selection_timeout(Duration::from_secs(2))
        .connect_timeout(Duration::from_secs(2))
        .app_name("upstep-tunnel-check".to_string())
        .build();
    let Ok(client) = crate::mongo::client(options) else {
        return false;
    };
    let result = client
        .database("admin")
        .run_command(bson::doc! { "hello": 1 })
        .await;
    let answered = match result {
        Ok(_) => true,
        Err(e) => matches!(*e.kind, mongodb::error::ErrorKind::Command(_)),
    };
    client.shutdown().await;
    answered
}

/// PING through the forward (`-NOAUTH` counts: it is Redis answering); about 2 s at most.
async fn redis_ping(port: u16) -> bool {
    let url = crate::redis_ping::loopback_url(port);
    match crate::redis_ping::ping(&url, Duration::from_secs(1)).await {
        Ok(_) => true,
        Err(e) => e.is_an_answer(),
    }
}

fn stderr_text(stderr: &StderrLog) -> String {
    stderr
        .lock()
        .map(|l| l.iter().cloned().collect::<Vec<_>>().join("\n"))
        .unwrap_or_default()
}

fn is_port_taken(text: &str) -> bool {
    text.contains("Address already in use")
        || text.contains("cannot listen to port")
        || text.contains("Could not request local forwarding")
}

/// The last few meaningful lines of ssh's stderr, for the generic message.
fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with("Warning: Permanently added"))
        .collect();
    lines[lines.len().saturating_sub(n)..].join(" / ")
}

/// One clear message per way ssh fails before the tunnel is up.
fn classify_exit(spec: &TunnelSpec, text: &str, code: Option<i32>) -> StartError {
    let target = spec.target();
    let via = spec
        .jump_host
        .as_deref()
        .map(|j| format!(" (through jump host {j})"))
        .unwrap_or_default();
    let has = |needle: &str| text.contains(needle);
    if has("REMOTE HOST IDENTIFICATION HAS CHANGED") || has("Host key for") && has("has changed") {
        return StartError::Permanent(Error::Tunnel {
            message: format!(
                "the host key of {target} has CHANGED since it was recorded in known_hosts: \
                 the server was reinstalled, or the connection is being intercepted"
            ),
            fix: "confirm the new fingerprint with the server's administrator over another \
                  channel, then replace the old line (ssh-keygen -R <host>) and add the new key"
                .into(),
        });
    }
    if has("Host key verification failed") || has("No ") && has("host key is known for") {
        let file = spec
            .known_hosts_file
            .as_ref()
            .map(|f| f.display().to_string())
            .unwrap_or_else(|| "~/.ssh/known_hosts".into());
        return StartError::Permanent(Error::Tunnel {
            message: format!(
                "the host key of {target} is not in {file}, and host-key checking is strict"
            ),
            fix: format!(
                "verify the server's fingerprint (ask its administrator, or `ssh-keygen -lf \
                 /etc/ssh/ssh_host_ed25519_key.pub` on it), then add it: ssh-keyscan{} {} >> {file}; \
                 or accept a first-seen key with --ssh-known-hosts accept-new",
                spec.port.map(|p| format!(" -p {p}")).unwrap_or_default(),
                host_of(&spec.destination),
            ),
        });
    }
    if has("Permission denied (") || has("Too many authentication failures") {
        let key = spec
            .identity_file
            .as_ref()
            .map(|k| format!("the key {}", k.display()))
            .unwrap_or_else(|| "the offered keys".into());
        return StartError::Permanent(Error::Tunnel {
            message: format!(
                "{target}{via} refused the login: {key} is not accepted for this user"
            ),
            fix: "add the public key to ~/.ssh/authorized_keys of that user on the SSH host, or \
                  give the right key with --ssh-identity FILE (and the right user as user@host)"
                .into(),
        });
    }
    if has("UNPROTECTED PRIVATE KEY FILE") || has("bad permissions") {
        return StartError::Failed(Error::Tunnel {
            message: "ssh ignored the identity file because others can read it".into(),
            fix: "chmod 600 the key file".into(),
        });
    }
    if has("Load key") && (has("No such file") || has("invalid format")) || has("no such identity")
    {
        return StartError::Failed(Error::Tunnel {
            message: "ssh could not load the identity file (missing or not a private key)".into(),
            fix: "check the path given to --ssh-identity / identity_file".into(),
        });
    }
    if has("Could not resolve hostname") {
        return StartError::Failed(Error::Tunnel {
            message: format!("the SSH host {target}{via} is unknown: its name does not resolve"),
            fix: "check the spelling of --ssh / the profile's ssh.host, and this machine's DNS"
                .into(),
        });
    }
    if has("Connection refused")
        || has("timed out")
        || has("No route to host")
        || has("Network is unreachable")
        || has("Connection closed by")
        || has("kex_exchange_identification")
    {
        return StartError::Failed(Error::Tunnel {
            message: format!("cannot reach the SSH host {target}{via}: {}", tail(text, 1)),
            fix: "check the host and port, that sshd runs there, and that a firewall or VPN \
                  lets this machine reach it (try `ssh -p PORT user@host true`)"
                .into(),
        });
    }
    StartError::Failed(Error::Tunnel {
        message: format!(
            "ssh to {target}{via} exited{} before the tunnel was up: {}",
            code.map(|c| format!(" with status {c}"))
                .unwrap_or_default(),
            if text.trim().is_empty() {
                "(it printed nothing)".to_string()
            } else {
                tail(text, 3)
            }
        ),
        fix: format!(
            "try the same connection by hand: ssh -N{} {}",
            spec.port.map(|p| format!(" -p {p}")).unwrap_or_default(),
            spec.destination
        ),
    })
}

fn host_of(destination: &str) -> &str {
    destination.rsplit_once('@').map_or(destination, |(_, h)| h)
}

/// ssh is up but the SSH host cannot connect to a forwarded service.
fn remote_refused(spec: &TunnelSpec, ports: &[u16], ready: &[bool], text: &str) -> Option<Error> {
    if text.contains("administratively prohibited") {
        return Some(Error::Tunnel {
            message: format!(
                "{} accepted the login but does not allow port forwarding",
                spec.target()
            ),
            fix: "ask its administrator to allow it for this user (AllowTcpForwarding yes, or \
                  local, in sshd_config), or use an SSH host that allows it"
                .into(),
        });
    }
    if !(text.contains("connect failed") || text.contains("open failed")) {
        return None;
    }
    let (forward, _) = spec
        .forwards
        .iter()
        .zip(ports)
        .zip(ready)
        .find(|(_, r)| !**r)
        .map(|(f, _)| f)?;
    let what = match forward.kind {
        ForwardKind::Mongo => "MongoDB",
        ForwardKind::Redis => "Redis",
    };
    let option = match forward.kind {
        ForwardKind::Mongo => "--ssh-remote-mongo",
        ForwardKind::Redis => "--ssh-remote-redis",
    };
    Some(Error::Tunnel {
        message: format!(
            "the SSH connection to {} works, but from there {}:{} refuses connections ({what} \
             is not listening there: {})",
            spec.target(),
            forward.remote_host,
            forward.remote_port,
            tail(text, 1)
        ),
        fix: format!(
            "give {what}'s address as the SSH host sees it with {option} host:port (e.g. \
             127.0.0.1:27017 when it runs on the SSH host itself, or the container's name and \
             port in its Docker network)"
        ),
    })
}

fn timeout_error(
    spec: &TunnelSpec,
    ports: &[u16],
    listening: &[bool],
    ready: &[bool],
    text: &str,
) -> Error {
    let secs = spec.ready_timeout.as_secs();
    if listening.iter().all(|l| *l) {
        let (forward, _) = spec
            .forwards
            .iter()
            .zip(ports)
            .zip(ready)
            .find(|(_, r)| !**r)
            .map(|(f, _)| f)
            .unwrap_or((&spec.forwards[0], &ports[0]));
        let what = match forward.kind {
            ForwardKind::Mongo => "a MongoDB hello",
            ForwardKind::Redis => "a Redis PING",
        };
        return Error::Tunnel {
            message: format!(
                "the tunnel to {} is up, but {}:{} did not answer {what} within {secs} s",
                spec.target(),
                forward.remote_host,
                forward.remote_port
            ),
            fix: "check that the remote address is the database's (as the SSH host sees it) \
                  and that it is running"
                .into(),
        };
    }
    Error::Tunnel {
        message: format!(
            "ssh to {} did not set up the tunnel within {secs} s{}",
            spec.target(),
            if text.trim().is_empty() {
                String::new()
            } else {
                format!(": {}", tail(text, 2))
            }
        ),
        fix: "check that the SSH host is reachable; a key with a passphrase must be loaded into \
              ssh-agent first (ssh-add), since upstep's ssh cannot prompt"
            .into(),
    }
}

fn kill_group_now(pid: u32, signal: Signal) {
    crate::child::signal_child_group(pid, signal);
}

/// SIGTERM to ssh's group, up to 2 s, then SIGKILL; reaps it.
async fn kill_group(child: &mut Child) {
    if let Some(pid) = child.id() {
        kill_group_now(pid, Signal::SIGTERM);
        if tokio::time::timeout(Duration::from_secs(2), child.wait())
            .await
            .is_err()
        {
            kill_group_now(pid, Signal::SIGKILL);
        }
    }
    let _ = child.kill().await;
}

/// The same, without a runtime (for Drop).
fn kill_group_blocking(child: &mut Child) {
    if let Some(pid) = child.id() {
        kill_group_now(pid, Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline {
            if matches!(child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        kill_group_now(pid, Signal::SIGKILL);
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline {
            if !matches!(child.try_wait(), Ok(None)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Tunnel {
    /// The local port of the first MongoDB forward.
    pub fn mongo_port(&self) -> Option<u16> {
        self.port_of(ForwardKind::Mongo)
    }

    /// The local port of the first Redis forward.
    pub fn redis_port(&self) -> Option<u16> {
        self.port_of(ForwardKind::Redis)
    }

    fn port_of(&self, kind: ForwardKind) -> Option<u16> {
        self.spec
            .forwards
            .iter()
            .zip(&self.local_ports)
            .find(|(f, _)| f.kind == kind)
            .map(|(_, p)| *p)
    }

    /// The MongoDB URI pointed at the tunnel's local end (see `rewrite_mongo_uri_to`).
    pub fn rewrite_mongo_uri(&self, uri: &Uri) -> Result<Uri> {
        let port = self.mongo_port().ok_or_else(|| {
            Error::Internal("rewrite_mongo_uri on a tunnel without a MongoDB forward".into())
        })?;
        rewrite_mongo_uri_to(uri, port)
    }

    /// Up / Down, refreshed about every second from the ssh process (alive or exited); a dead
    /// link ends ssh through its keep-alives (see `SERVER_ALIVE_INTERVAL`).
    pub fn watch(&self) -> watch::Receiver<TunnelState> {
        self.state.subscribe()
    }

    /// The current state.
    pub fn state(&self) -> TunnelState {
        self.state.borrow().clone()
    }

    /// The last lines ssh wrote on stderr.
    pub fn ssh_stderr(&self) -> String {
        stderr_text(&self.stderr)
    }

    /// Watches ssh, and only ssh: every second a `try_wait` on the process, which costs
    /// nothing on the far side. A dead link ends ssh by itself within about
    /// `SERVER_ALIVE_INTERVAL * SERVER_ALIVE_COUNT_MAX` seconds (its keep-alives travel inside
    /// the SSH connection), so probing the forwarded port is not needed: each probe would be a
    /// new SSH channel and a new MongoDB connection (two log lines) on the production server.
    fn start_monitor(&mut self) {
        if let Some(old) = self.monitor.take() {
            old.abort();
        }
        let child = self.child.clone();
        let state = self.state.clone();
        self.monitor = Some(tokio::spawn(async move {
            loop {
                tokio::time::sleep(MONITOR_PERIOD).await;
                let exited = match child.lock() {
                    Ok(mut slot) => match slot.as_mut() {
                        Some(c) => match c.try_wait() {
                            Ok(Some(status)) => Some(format!("ssh exited ({status})")),
                            Ok(None) => None,
                            Err(e) => Some(format!("cannot check on ssh: {e}")),
                        },
                        None => Some("ssh is not running".into()),
                    },
                    Err(_) => Some("the tunnel's state is poisoned".into()),
                };
                let next = match exited {
                    Some(reason) => TunnelState::Down { reason },
                    None => TunnelState::Up,
                };
                state.send_if_modified(|current| {
                    if *current == TunnelState::Closed || *current == next {
                        false
                    } else {
                        *current = next;
                        true
                    }
                });
            }
        }));
    }

    /// Starts ssh again on the same local ports (so rewritten URIs stay valid), with up to
    /// `retries` more attempts after the first, waiting `backoff`, then twice that, ... between
    /// them. Failures no retry can fix (host key, refused key) return at once.
    pub async fn reopen(&mut self, retries: u32, backoff: Duration) -> Result<()> {
        self.stop_child().await;
        let failed_attempts = std::cell::Cell::new(0u32);
        let started = (|| start(&self.spec, &self.local_ports))
            .retry(reopen_backoff(retries, backoff))
            .sleep(tokio::time::sleep)
            .when(|e| !matches!(e, StartError::Permanent(_)))
            .notify(|_, wait| {
                failed_attempts.set(failed_attempts.get() + 1);
                tracing::warn!(
                    "reopening the SSH tunnel to {} failed (attempt {} of {}); retrying in {:?}",
                    self.spec.target(),
                    failed_attempts.get(),
                    retries + 1,
                    wait
                );
            })
            .await;
        match started {
            Ok((child, stderr, guard)) => {
                self.pid = child.id().unwrap_or(0);
                self.stderr = stderr;
                self.guard = Some(guard);
                if let Ok(mut slot) = self.child.lock() {
                    *slot = Some(child);
                }
                self.state.send_replace(TunnelState::Up);
                self.start_monitor();
                tracing::info!("SSH tunnel to {} reopened", self.spec.target());
                Ok(())
            }
            Err(StartError::Permanent(e) | StartError::Failed(e)) => Err(e),
            Err(StartError::PortTaken) => Err(Error::Tunnel {
                message: format!(
                    "cannot reopen the tunnel: local ports {:?} are now taken by another program",
                    self.local_ports
                ),
                fix: "stop that program, or start the run again".into(),
            }),
        }
    }

    async fn stop_child(&mut self) {
        if let Some(old) = self.monitor.take() {
            old.abort();
        }
        if let Some(mut guard) = self.guard.take() {
            guard.disarm();
        }
        let child = self.child.lock().ok().and_then(|mut slot| slot.take());
        if let Some(mut child) = child {
            kill_group(&mut child).await;
        }
    }

    /// Stops ssh (its process group) and waits for it to go.
    pub async fn close(mut self) {
        self.stop_child().await;
        self.state.send_replace(TunnelState::Closed);
    }
}

impl Drop for Tunnel {
    fn drop(&mut self) {
        if let Some(monitor) = self.monitor.take() {
            monitor.abort();
        }
        if let Some(mut guard) = self.guard.take() {
            guard.disarm();
        }
        let child = self.child.lock().ok().and_then(|mut slot| slot.take());
        if let Some(mut child) = child {
            kill_group_blocking(&mut child);
        }
        self.state.send_replace(TunnelState::Closed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reopening_waits_twice_as_long_each_time_up_to_thirty_seconds() {
        use backon::BackoffBuilder;
        let waits: Vec<Duration> = reopen_backoff(3, Duration::from_secs(2)).build().collect();
        assert_eq!(
            waits,
            [2, 4, 8].map(Duration::from_secs).to_vec(),
            "the recovery's reopen(3, 2 s)"
        );
        let capped: Vec<Duration> = reopen_backoff(4, Duration::from_secs(20)).build().collect();
        assert_eq!(capped, [20, 30, 30, 30].map(Duration::from_secs).to_vec());
        assert_eq!(reopen_backoff(0, Duration::from_secs(1)).build().count(), 0);
    }

    #[test]
    fn ssh_targets() {
        assert_eq!(
            parse_ssh_target("deploy@bastion:2222").unwrap(),
            ("deploy@bastion".into(), Some(2222))
        );
        assert_eq!(
            parse_ssh_target("bastion").unwrap(),
            ("bastion".into(), None)
        );
        assert_eq!(
            parse_ssh_target("root@[::1]:22").unwrap(),
            ("root@::1".into(), Some(22))
        );
        assert!(parse_ssh_target("-oProxyCommand=x").is_err());
        assert!(parse_ssh_target("host:notaport").is_err());
        assert!(parse_ssh_target("@host").is_err());
    }

    #[test]
    fn rewrite_keeps_credentials_db_and_options() {
        assert_eq!(
            rewrite_mongo_uri_to(
                &"mongodb://u:p%40w@db.internal:27017/novu-db?authSource=admin".into(),
                4100
            )
            .unwrap()
            .expose(),
            "mongodb://u:p%40w@127.0.0.1:4100/novu-db?authSource=admin&directConnection=true"
        );
        assert_eq!(
            rewrite_mongo_uri_to(&"mongodb://db:27017".into(), 4100)
                .unwrap()
                .expose(),
            "mongodb://127.0.0.1:4100/?directConnection=true"
        );
        assert_eq!(
            rewrite_mongo_uri_to(&"mongodb://db/x?directConnection=false".into(), 1)
                .unwrap()
                .expose(),
            "mongodb://127.0.0.1:1/x?directConnection=true"
        );
    }

    #[test]
    fn srv_is_refused_with_the_reason() {
        let err = rewrite_mongo_uri_to(&"mongodb+srv://u:secret@cluster0.example.net/db".into(), 1)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("SRV") && err.contains("--ssh-remote-mongo"),
            "{err}"
        );
        assert!(!err.contains("secret"), "{err}");
    }

    #[test]
    fn default_forward_target() {
        assert_eq!(
            mongo_forward_target(&"mongodb://u:p@mongodb:27018/novu".into()).unwrap(),
            ("mongodb".into(), 27018)
        );
        assert_eq!(
            mongo_forward_target(&"mongodb://mongodb/novu".into()).unwrap(),
            ("mongodb".into(), 27017)
        );
        assert!(mongo_forward_target(&"mongodb://a:1,b:2/novu".into()).is_err());
    }

    #[test]
    fn argv_has_the_safety_options() {
        let mut spec = TunnelSpec::new("root@h");
        spec.port = Some(2200);
        spec.forwards.push(Forward {
            remote_host: "mongodb".into(),
            remote_port: 27017,
            kind: ForwardKind::Mongo,
        });
        let args = ssh_args(&spec, &[5000]).join(" ");
        for needle in [
            "-N",
            "ExitOnForwardFailure=yes",
            "ServerAliveInterval=3",
            "ServerAliveCountMax=3",
            "BatchMode=yes",
            "StrictHostKeyChecking=yes",
            "-p 2200",
            "-L 127.0.0.1:5000:mongodb:27017",
        ] {
            assert!(args.contains(needle), "{needle} missing in {args}");
        }
        assert!(args.ends_with("-- root@h"));
    }
}
