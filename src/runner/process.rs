//! Running a step's child (scripts, setup commands): its log, its output, its ending.
//! The spawn itself (process group, death signal, spawner thread) is `crate::child`.
//!
//! Every child runs in its own process group, because Novu's scripts run as a tree
//! (`npm exec -> sh -> node`) and some never exit: only a signal to the whole group ends them,
//! and a script's grandchildren must never outlive its run. Spawning is two-phase
//! (`spawn_child`, then `RunningChild::wait`) so the caller can journal the pid and pgid before
//! the child does any work.
//!
//! Output is read line by line from both pipes, capped, redacted, logged and handed to the
//! caller; only a bounded tail is kept, so memory stays flat however much a child prints.
//!
//! No child outlives upstep, however upstep ends (even SIGKILL, which runs no destructors): the
//! direct child gets `PR_SET_PDEATHSIG` (SIGKILL), and an `OrphanGuard` ends the rest of its group
//! (`npm exec -> sh -> node`: the signal is not inherited by grandchildren) within about two
//! seconds.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use crate::error::{Error, Result};
use crate::orphan_guard::OrphanGuard;

/// Longest line kept (bytes); the rest of a longer line is dropped and the line marked.
pub const MAX_LINE_BYTES: usize = 16 * 1024;
/// How many of the last output lines a `RunOutcome` keeps.
pub const TAIL_LINES: usize = 40;
/// Appended to a line cut at `MAX_LINE_BYTES`.
pub const TRUNCATED_MARK: &str = " [... line truncated by upstep]";

/// The probe is asked at most this often while the child is quiet.
const PROBE_INTERVAL: Duration = Duration::from_secs(1);
/// After the last output, when the group's CPU time is first read (the idle window starts then).
const CPU_FIRST_LOOK: Duration = Duration::from_secs(1);
/// A probe that takes longer than this counts as "not yet" (it may be retried).
const PROBE_TIMEOUT: Duration = Duration::from_secs(30);
/// How often the group is checked while it is being ended.
const GROUP_POLL: Duration = Duration::from_millis(20);
/// After SIGKILL, how long to wait for the group to disappear before giving up on it.
const KILL_WAIT: Duration = Duration::from_secs(5);
/// After the group is gone, how long to wait for the pipes to close (a process that left the
/// group may still hold them; it is not waited for).
const DRAIN_WAIT: Duration = Duration::from_secs(2);
/// Read buffer per pipe; also bounds the size of one batch of lines.
const READ_BUFFER: usize = 64 * 1024;
/// A batch of lines is sent when it holds this many lines...
const BATCH_LINES: usize = 1024;
/// ...or this many bytes of text (plus at most one capped line).
const BATCH_BYTES: usize = 64 * 1024;
/// Batches in flight per run: with the batch bounds, buffered output stays around 1 MB.
const CHANNEL_BATCHES: usize = 4;

/// What to run and how.
#[derive(Debug, Clone, Default)]
pub struct ChildSpec {
    pub program: PathBuf,
    pub args: Vec<String>,
    pub cwd: PathBuf,
    /// Added on top of the inherited environment (after `env_remove`).
    pub env: Vec<(String, String)>,
    /// Removed from the inherited environment.
    pub env_remove: Vec<String>,
    /// Prepended to PATH (the PATH from `env` if set there, else the inherited one).
    pub path_prefix: Vec<PathBuf>,
    /// Every output line is appended here (created with its parent directories, truncated
    /// unless `log_append`).
    pub log_file: PathBuf,
    /// Keep what the log file already holds (several commands sharing one log).
    pub log_append: bool,
    /// Replaced by `****` in every output line, the log and the tail. Must not be in `args`.
    pub secrets: Vec<String>,
}

/// How to watch a running child.
#[derive(Debug, Clone)]
pub struct Watch {
    /// The script may never exit: end it on a done line; without a done line, also when it was
    /// silent for the quiet window, its whole group was idle over the window (`stayed_idle`),
    /// and the probe agrees (or, with no probe to ask, as `QuietUnverified`).
    pub finish_detection: bool,
    pub quiet_window: Duration,
    /// Matched as line prefixes after trimming leading whitespace.
    pub done_lines: Vec<String>,
    /// Measured from the spawn.
    pub timeout: Option<Duration>,
    /// Between the first signal (SIGTERM, or the stop signal) and SIGKILL.
    pub grace: Duration,
}

impl Default for Watch {
    fn default() -> Self {
        Watch {
            finish_detection: false,
            quiet_window: Duration::from_secs(60),
            done_lines: Vec::new(),
            timeout: None,
            grace: Duration::from_secs(10),
        }
    }
}

/// The caller's data check: "the fingerprint shows nothing pending".
pub trait FinishProbe: Send {
    fn finished(&mut self) -> BoxFuture<'_, ProbeAnswer>;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeAnswer {
    Finished,
    NotYet,
    /// No check is available for this script.
    Unknown,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StopRequest {
    #[default]
    None,
    /// Stop once the running step is done: for the caller; `wait` ignores it.
    AfterStep,
    /// Send `signal` (SIGINT or SIGTERM) to the child's group now, then SIGKILL after the grace.
    Now { signal: i32 },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputLine {
    pub stream: Stream,
    /// Redacted and capped at `MAX_LINE_BYTES` (plus `TRUNCATED_MARK`), without the newline.
    pub text: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ending {
    /// Exited by itself; see `exit_code` / `signal`.
    Exited,
    /// Printed a done line, then upstep ended its group.
    DoneLine { line: String },
    /// No done line declared; silent and idle (no CPU time in its group) for the quiet window,
    /// and the probe said Finished; upstep ended its group.
    QuietAndFinished,
    /// No done line declared; silent and idle for the quiet window, with no probe (or Unknown):
    /// upstep ended its group, and nothing proves the script had finished.
    QuietUnverified,
    /// Ran past `Watch::timeout`; upstep ended its group.
    TimedOut,
    /// `StopRequest::Now`: upstep sent `signal` to its group.
    Stopped { signal: i32 },
}

#[derive(Debug, Clone)]
pub struct RunOutcome {
    pub ending: Ending,
    /// The direct child's exit code, when it exited normally.
    pub exit_code: Option<i32>,
    /// The signal that ended the direct child, if one did.
    pub signal: Option<i32>,
    /// From spawn to the end of the run.
    pub duration: Duration,
    /// The last `TAIL_LINES` lines (both streams, in arrival order), redacted.
    pub tail: Vec<String>,
    /// The first done line seen (also recorded when finish detection is off).
    pub done_line: Option<String>,
    pub pid: u32,
    pub pgid: i32,
}

/// A spawned child. Dropping it without `wait` kills its whole group.
pub struct RunningChild {
    child: tokio::process::Child,
    pid: u32,
    pgid: i32,
    program: String,
    started: Instant,
    stdout: Option<tokio::process::ChildStdout>,
    stderr: Option<tokio::process::ChildStderr>,
    log: Option<BufWriter<File>>,
    log_path: PathBuf,
    secrets: Arc<Vec<String>>,
    /// Set once the group is known to be gone and the child reaped: Drop has nothing to do.
    settled: bool,
    /// Ends the group if upstep dies without ending it; disarmed once the child is settled.
    guard: OrphanGuard,
}

/// Starts `spec` in its own process group with stdin closed and both outputs piped.
/// Must be called from inside a tokio runtime.
pub fn spawn_child(spec: &ChildSpec) -> Result<RunningChild> {
    let program = spec.program.display().to_string();
    let secrets: Vec<String> = spec
        .secrets
        .iter()
        .filter(|s| !s.is_empty())
        .cloned()
        .collect();
    // Secrets travel in the environment only: argv is visible to every local user (ps).
    if let Some(arg) = std::iter::once(program.as_str())
        .chain(spec.args.iter().map(String::as_str))
        .find(|arg| secrets.iter().any(|s| arg.contains(s.as_str())))
    {
        let position = if arg == program {
            "program path"
        } else {
            "arguments"
        };
        return Err(Error::Internal(format!(
            "refusing to start {program}: a secret would appear in its {position}; secrets must \
             be passed through the environment"
        )));
    }
    if tokio::runtime::Handle::try_current().is_err() {
        return Err(Error::Internal(format!(
            "spawn_child({program}) called outside a tokio runtime"
        )));
    }
    if !spec.cwd.is_dir() {
        return Err(Error::StepFailed(format!(
            "cannot start {program}: its working directory {} does not exist\n  fix: check the \
             checkout (a missing directory at this tag?) or remove the stale worktree so it is \
             created again",
            spec.cwd.display()
        )));
    }
    let log = open_log(&spec.log_file, spec.log_append)?;

    let mut cmd = tokio::process::Command::new(&spec.program);
    cmd.args(&spec.args)
        .current_dir(&spec.cwd)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        // The group is ended by us (Drop and wait); a kill of the direct child alone is not enough.
        .kill_on_drop(false);
    for key in &spec.env_remove {
        cmd.env_remove(key);
    }
    for (key, value) in &spec.env {
        cmd.env(key, value);
    }
    if !spec.path_prefix.is_empty() {
        cmd.env("PATH", prefixed_path(spec)?);
    }

    let mut child = crate::child::spawn_tokio(cmd).map_err(|e| spawn_error(spec, &program, e))?;
    let Some(pid) = child.id() else {
        return Err(Error::Internal(format!(
            "{program} has no pid right after spawn"
        )));
    };
    // process_group(0) makes the child the leader of a group named by its own pid.
    let pgid = pid as i32;
    let guard = OrphanGuard::for_group(pid, &program);
    Ok(RunningChild {
        stdout: child.stdout.take(),
        stderr: child.stderr.take(),
        child,
        pid,
        pgid,
        program,
        started: Instant::now(),
        log: Some(log),
        log_path: spec.log_file.clone(),
        secrets: Arc::new(secrets),
        settled: false,
        guard,
    })
}

/// The CPU time (clock ticks) group `pgid` has used, and its members: two readings a window
/// apart tell whether the group did work in between (`stayed_idle`). A member's reaped children count
/// (cutime/cstime), so a short-lived worker that came and went still shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupCpu {
    pub members: Vec<u32>,
    pub ticks: u64,
}

/// Reads `/proc/<pid>/stat` of every process of group `pgid` (zombies included: their time
/// is final). None when /proc cannot be read.
pub fn group_cpu(pgid: i32) -> Option<GroupCpu> {
    let entries = std::fs::read_dir("/proc").ok()?;
    let mut members = Vec::new();
    let mut ticks = 0u64;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some(fields) = stat_fields_after_comm(&stat) else {
            continue;
        };
        // After the comm: state(0) ppid(1) pgrp(2) ... utime(11) stime(12) cutime(13) cstime(14).
        if fields.get(2).and_then(|p| p.parse::<i32>().ok()) != Some(pgid) {
            continue;
        }
        members.push(pid);
        for i in 11..=14 {
            ticks += fields
                .get(i)
                .and_then(|t| t.parse::<u64>().ok())
                .unwrap_or(0);
        }
    }
    members.sort_unstable();
    Some(GroupCpu { members, ticks })
}

/// The share of one CPU an idle group may still use: an event loop waiting on nothing still
/// wakes for its timers and its database driver's heartbeats (a fraction of a millisecond each),
/// while a script at work spends far more.
const IDLE_CPU_SHARE: f64 = 0.01;

/// Whether the group did no work over `elapsed`: the same members, and at most
/// `IDLE_CPU_SHARE` of one CPU (at least one clock tick) spent. Unknown readings are not idle.
fn stayed_idle(before: &Option<GroupCpu>, now: &Option<GroupCpu>, elapsed: Duration) -> bool {
    let (Some(before), Some(now)) = (before, now) else {
        return false;
    };
    let ticks_per_sec = match nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK) {
        Ok(Some(t)) if t > 0 => t as f64,
        _ => 100.0,
    };
    let allowed = (elapsed.as_secs_f64() * ticks_per_sec * IDLE_CPU_SHARE).max(1.0) as u64;
    before.members == now.members
        && now.ticks >= before.ticks
        && now.ticks - before.ticks <= allowed
}

fn stat_fields_after_comm(stat: &str) -> Option<Vec<&str>> {
    // "pid (comm) state ...": comm may contain anything, so split after the last ')'.
    let after = &stat[stat.rfind(')')? + 1..];
    Some(after.split_whitespace().collect())
}

fn open_log(path: &Path, append: bool) -> Result<BufWriter<File>> {
    let fail = |e: std::io::Error| {
        Error::StepFailed(format!(
            "cannot create the log file {}: {e}\n  fix: make its directory writable or choose \
             another state directory",
            path.display()
        ))
    };
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(fail)?;
    }
    let file = if append {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
    } else {
        File::create(path)
    }
    .map_err(fail)?;
    Ok(BufWriter::with_capacity(64 * 1024, file))
}

fn prefixed_path(spec: &ChildSpec) -> Result<OsString> {
    let base: Option<OsString> = match spec.env.iter().rev().find(|(k, _)| k == "PATH") {
        Some((_, value)) => Some(value.into()),
        None if spec.env_remove.iter().any(|k| k == "PATH") => None,
        None => std::env::var_os("PATH"),
    };
    let mut dirs: Vec<PathBuf> = spec.path_prefix.clone();
    if let Some(base) = &base {
        dirs.extend(std::env::split_paths(base));
    }
    std::env::join_paths(dirs).map_err(|e| {
        Error::StepFailed(format!(
            "cannot build PATH for {}: {e}\n  fix: use tool directories whose paths contain no ':'",
            spec.program.display()
        ))
    })
}

fn spawn_error(spec: &ChildSpec, program: &str, e: std::io::Error) -> Error {
    let fix = match e.kind() {
        std::io::ErrorKind::NotFound if spec.program.components().count() > 1 => {
            format!("check that {program} exists (is the toolchain installed?)")
        }
        std::io::ErrorKind::NotFound => {
            format!("install {program} or put the directory holding it on PATH")
        }
        std::io::ErrorKind::PermissionDenied => {
            format!("make {program} executable (chmod +x) or check the directory permissions")
        }
        _ => "check the program and its working directory".to_string(),
    };
    Error::StepFailed(format!(
        "cannot start {program} in {}: {e}\n  fix: {fix}",
        spec.cwd.display()
    ))
}

impl RunningChild {
    pub fn pid(&self) -> u32 {
        self.pid
    }

    pub fn pgid(&self) -> i32 {
        self.pgid
    }

    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// Streams the output until the child ends (by itself or by upstep, see `Watch` and
    /// `StopRequest`), then makes sure nothing of its group is left and reaps it.
    ///
    /// The returned future is not `Send` (it borrows `on_line`): await it, do not spawn it.
    /// Dropping it before it completes kills the group (through `RunningChild`'s Drop).
    pub async fn wait(
        mut self,
        watch: Watch,
        stop: watch::Receiver<StopRequest>,
        probe: Option<&mut dyn FinishProbe>,
        on_line: &mut dyn FnMut(OutputLine),
    ) -> Result<RunOutcome> {
        // On an error `self` is dropped here, and Drop kills whatever is left of the group.
        self.run(watch, stop, probe, on_line).await
    }

    async fn run(
        &mut self,
        watch: Watch,
        mut stop: watch::Receiver<StopRequest>,
        mut probe: Option<&mut dyn FinishProbe>,
        on_line: &mut dyn FnMut(OutputLine),
    ) -> Result<RunOutcome> {
        let (tx, mut rx) = mpsc::channel::<Vec<OutputLine>>(CHANNEL_BATCHES);
        let mut readers: Vec<JoinHandle<()>> = Vec::new();
        if let Some(out) = self.stdout.take() {
            readers.push(tokio::spawn(read_lines(
                out,
                Stream::Stdout,
                tx.clone(),
                Arc::clone(&self.secrets),
            )));
        }
        if let Some(err) = self.stderr.take() {
            readers.push(tokio::spawn(read_lines(
                err,
                Stream::Stderr,
                tx.clone(),
                Arc::clone(&self.secrets),
            )));
        }
        drop(tx);
        let _abort_readers = AbortOnDrop(readers);

        let mut exit_rx = watch_exit(self.pid);
        let mut sink = Sink {
            log: self.log.take(),
            log_path: &self.log_path,
            tail: VecDeque::with_capacity(TAIL_LINES + 1),
            done_lines: watch
                .done_lines
                .iter()
                .filter(|d| !d.trim_start().is_empty())
                .map(|d| d.trim_start().to_string())
                .collect(),
            done_line: None,
            on_line,
        };
        let deadline = watch.timeout.map(|t| self.started + t);
        // A declared done line is the script's own word that it finished: silence never
        // overrides it, so only scripts without one can be ended by the quiet window.
        let quiet_ends = watch.finish_detection && sink.done_lines.is_empty();
        let mut last_output = Instant::now();
        let mut last_probe: Option<Instant> = None;
        // Since when the group has spent no CPU time, and its CPU use then.
        let mut idle_since: Option<(Instant, Option<GroupCpu>)> = None;
        let mut output_open = true;
        let mut stop_open = true;
        let mut exited = false;

        // A stop requested before `wait` began counts as well.
        let mut ending: Option<(Ending, i32)> = match *stop.borrow_and_update() {
            StopRequest::Now { signal } => Some((Ending::Stopped { signal }, signal)),
            _ => None,
        };

        while ending.is_none() && !exited {
            let quiet_due = quiet_ends.then(|| match &idle_since {
                // The first CPU reading starts the idle window, shortly after the last output.
                None => last_output + CPU_FIRST_LOOK.min(watch.quiet_window),
                Some((since, _)) => {
                    let due = (last_output + watch.quiet_window).max(*since + watch.quiet_window);
                    match last_probe {
                        Some(p) => due.max(p + PROBE_INTERVAL),
                        None => due,
                    }
                }
            });
            let wake = match (deadline, quiet_due) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            tokio::select! {
                biased;
                changed = stop.changed(), if stop_open => match changed {
                    Ok(()) => {
                        if let StopRequest::Now { signal } = *stop.borrow_and_update() {
                            ending = Some((Ending::Stopped { signal }, signal));
                        }
                    }
                    // No one can ask for a stop any more.
                    Err(_) => stop_open = false,
                },
                res = &mut exit_rx => {
                    check_exit_watch(res, &self.program)?;
                    exited = true;
                }
                batch = rx.recv(), if output_open => match batch {
                    Some(batch) => {
                        last_output = Instant::now();
                        last_probe = None;
                        idle_since = None;
                        if let Some(line) = sink.take(batch) {
                            if watch.finish_detection {
                                ending = Some((Ending::DoneLine { line }, libc::SIGTERM));
                            }
                        }
                    }
                    None => output_open = false,
                },
                _ = sleep_until_opt(wake), if wake.is_some() => {
                    let now = Instant::now();
                    if deadline.is_some_and(|d| now >= d) {
                        ending = Some((Ending::TimedOut, libc::SIGTERM));
                    } else if quiet_due.is_some_and(|q| now >= q) {
                        let cpu = group_cpu(self.pgid);
                        let idle = idle_since
                            .as_ref()
                            .is_some_and(|(since, before)| stayed_idle(before, &cpu, now - *since));
                        if !idle {
                            // The first reading, or the group worked: the idle window starts now.
                            idle_since = Some((now, cpu));
                        } else {
                            last_probe = Some(now);
                            let answer = match probe.as_deref_mut() {
                                None => ProbeAnswer::Unknown,
                                Some(p) => tokio::select! {
                                    answer = tokio::time::timeout(PROBE_TIMEOUT, p.finished()) => {
                                        answer.unwrap_or(ProbeAnswer::NotYet)
                                    }
                                    // Let a stop request or the exit win over a slow probe.
                                    _ = stop.changed(), if stop_open => ProbeAnswer::NotYet,
                                },
                            };
                            // The group must still be idle after the (possibly slow) probe.
                            let still_idle = idle_since.as_ref().is_some_and(|(since, before)| {
                                stayed_idle(before, &group_cpu(self.pgid), since.elapsed())
                            });
                            // The loop re-reads the stop request and the exit before acting again.
                            match answer {
                                ProbeAnswer::NotYet => {}
                                _ if exit_rx_ready(&mut exit_rx) => exited = true,
                                _ if !still_idle => idle_since = Some((Instant::now(), group_cpu(self.pgid))),
                                ProbeAnswer::Finished => {
                                    ending = Some((Ending::QuietAndFinished, libc::SIGTERM))
                                }
                                ProbeAnswer::Unknown => {
                                    ending = Some((Ending::QuietUnverified, libc::SIGTERM))
                                }
                            }
                        }
                        if let StopRequest::Now { signal } = *stop.borrow_and_update() {
                            ending = Some((Ending::Stopped { signal }, signal));
                        }
                    }
                }
            }
        }

        let ending = match ending {
            Some((ending, signal)) => {
                self.end_group(signal, watch.grace, &mut stop, &mut rx, &mut sink)
                    .await;
                ending
            }
            None => {
                // Exited by itself; a grandchild left behind in its group must not be orphaned.
                if group_alive(self.pgid) {
                    tracing::debug!(pgid = self.pgid, "ending what is left of the group");
                    self.end_group(libc::SIGTERM, watch.grace, &mut stop, &mut rx, &mut sink)
                        .await;
                }
                Ending::Exited
            }
        };

        // The direct child is normally a zombie by now; reaping it frees the pgid, so only now.
        let status = match tokio::time::timeout(KILL_WAIT, self.child.wait()).await {
            Ok(Ok(status)) => status,
            Ok(Err(e)) => {
                return Err(Error::Internal(format!(
                    "cannot reap {} (pid {}): {e}",
                    self.program, self.pid
                )))
            }
            Err(_) => {
                return Err(Error::Internal(format!(
                    "{} (pid {}) survived SIGKILL for {}s",
                    self.program,
                    self.pid,
                    KILL_WAIT.as_secs()
                )))
            }
        };
        self.settled = true;
        self.guard.disarm();

        // Whatever is still in the pipes belongs to the run; a process that escaped the group
        // may hold them open, so this is bounded.
        let drain_until = tokio::time::Instant::now() + DRAIN_WAIT;
        while output_open {
            match tokio::time::timeout_at(drain_until, rx.recv()).await {
                Ok(Some(batch)) => {
                    sink.take(batch);
                }
                Ok(None) | Err(_) => output_open = false,
            }
        }
        sink.flush();

        use std::os::unix::process::ExitStatusExt;
        Ok(RunOutcome {
            ending,
            exit_code: status.code(),
            signal: status.signal(),
            duration: self.started.elapsed(),
            tail: sink.tail.into_iter().collect(),
            done_line: sink.done_line,
            pid: self.pid,
            pgid: self.pgid,
        })
    }

    /// Sends `signal` to the group, waits up to `grace` (still logging output, and cutting the
    /// grace short on a further stop request), then SIGKILLs what is left.
    async fn end_group(
        &self,
        signal: i32,
        grace: Duration,
        stop: &mut watch::Receiver<StopRequest>,
        rx: &mut mpsc::Receiver<Vec<OutputLine>>,
        sink: &mut Sink<'_>,
    ) {
        signal_group(self.pgid, signal);
        let mut kill_at = Instant::now() + grace;
        let mut stop_open = true;
        let mut output_open = true;
        loop {
            if !group_alive(self.pgid) {
                return;
            }
            if Instant::now() >= kill_at {
                break;
            }
            tokio::select! {
                changed = stop.changed(), if stop_open => match changed {
                    // A second request (e.g. a second Ctrl-C) means: no more waiting.
                    Ok(()) if matches!(*stop.borrow_and_update(), StopRequest::Now { .. }) => {
                        kill_at = Instant::now();
                    }
                    Ok(()) => {}
                    Err(_) => stop_open = false,
                },
                batch = rx.recv(), if output_open => match batch {
                    Some(batch) => {
                        sink.take(batch);
                    }
                    None => output_open = false,
                },
                _ = tokio::time::sleep(GROUP_POLL) => {}
            }
        }
        tracing::debug!(pgid = self.pgid, "grace over: SIGKILL to the group");
        signal_group(self.pgid, libc::SIGKILL);
        let give_up = Instant::now() + KILL_WAIT;
        while group_alive(self.pgid) && Instant::now() < give_up {
            tokio::select! {
                batch = rx.recv(), if output_open => match batch {
                    Some(batch) => {
                        sink.take(batch);
                    }
                    None => output_open = false,
                },
                _ = tokio::time::sleep(GROUP_POLL) => {}
            }
        }
    }
}

impl Drop for RunningChild {
    fn drop(&mut self) {
        if !self.settled {
            // No grace here: Drop must not block. tokio reaps the dropped child in the background.
            signal_group(self.pgid, libc::SIGKILL);
        }
    }
}

struct AbortOnDrop(Vec<JoinHandle<()>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        for handle in &self.0 {
            handle.abort();
        }
    }
}

/// Where lines go: the log, the tail, the done-line check and the caller.
struct Sink<'a> {
    log: Option<BufWriter<File>>,
    log_path: &'a Path,
    tail: VecDeque<String>,
    done_lines: Vec<String>,
    done_line: Option<String>,
    on_line: &'a mut dyn FnMut(OutputLine),
}

impl Sink<'_> {
    /// Handles one batch; returns the first done line in it, if any.
    fn take(&mut self, batch: Vec<OutputLine>) -> Option<String> {
        let mut found = None;
        let count = batch.len();
        for (i, line) in batch.into_iter().enumerate() {
            if let Some(log) = self.log.as_mut() {
                let written = log
                    .write_all(line.text.as_bytes())
                    .and_then(|()| log.write_all(b"\n"));
                if let Err(e) = written {
                    // Killing a half-done migration because its log cannot be written would be
                    // worse than an incomplete log: warn and go on.
                    tracing::warn!(
                        "cannot write {}: {e}; the log is incomplete",
                        self.log_path.display()
                    );
                    self.log = None;
                }
            }
            if found.is_none() && self.done_lines.iter().any(|d| is_done_line(&line.text, d)) {
                found = Some(line.text.clone());
                if self.done_line.is_none() {
                    self.done_line = Some(line.text.clone());
                }
            }
            // Only the batch's last lines can end up in the tail: clone no others.
            if i + TAIL_LINES >= count {
                if self.tail.len() == TAIL_LINES {
                    self.tail.pop_front();
                }
                self.tail.push_back(line.text.clone());
            }
            (self.on_line)(line);
        }
        found
    }

    fn flush(&mut self) {
        if let Some(log) = self.log.as_mut() {
            if let Err(e) = log.flush() {
                tracing::warn!(
                    "cannot write {}: {e}; the log is incomplete",
                    self.log_path.display()
                );
            }
        }
    }
}

/// Whether output `line` is done line `pattern`: the line, without terminal colour codes and
/// leading blanks, starts with it; a pattern that begins with a logger's context tag
/// (`[Migration] End migration.`) may also stand after the logger's own prefix (pid, time,
/// level), which differs on every run.
pub fn is_done_line(line: &str, pattern: &str) -> bool {
    let plain = strip_ansi(line);
    let plain = plain.trim_start();
    plain.starts_with(pattern) || (pattern.starts_with('[') && plain.contains(pattern))
}

/// `text` without ANSI escape sequences (CSI `ESC [ ... final byte`, and lone escapes).
fn strip_ansi(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.contains('\u{1b}') {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\u{1b}' {
            out.push(c);
            continue;
        }
        if chars.peek() == Some(&'[') {
            chars.next();
            // Parameters and intermediates, up to the final byte (@ to ~).
            for c in chars.by_ref() {
                if ('@'..='~').contains(&c) {
                    break;
                }
            }
        }
    }
    std::borrow::Cow::Owned(out)
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

/// Reports when `pid` has exited, without reaping it: while the zombie exists its pid (= the
/// pgid) cannot be reused, so signalling the group afterwards cannot hit a stranger.
fn watch_exit(pid: u32) -> oneshot::Receiver<std::io::Result<()>> {
    let (tx, rx) = oneshot::channel();
    // A plain thread, not spawn_blocking: a runtime shutting down must not wait for it. It ends
    // when the child does, which Drop guarantees.
    let spawned = std::thread::Builder::new()
        .name(format!("upstep-wait-{pid}"))
        .spawn(move || {
            let _ = tx.send(wait_exit_no_reap(pid));
        });
    if let Err(e) = spawned {
        let (tx, rx) = oneshot::channel();
        let _ = tx.send(Err(e));
        return rx;
    }
    rx
}

fn wait_exit_no_reap(pid: u32) -> std::io::Result<()> {
    use nix::errno::Errno;
    use nix::sys::wait::{waitid, Id, WaitPidFlag};
    let pid = nix::unistd::Pid::from_raw(pid as i32);
    loop {
        match waitid(Id::Pid(pid), WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT) {
            Ok(_) => return Ok(()),
            Err(Errno::EINTR) => continue,
            // Already reaped elsewhere: it has exited either way.
            Err(Errno::ECHILD) => return Ok(()),
            Err(e) => return Err(e.into()),
        }
    }
}

fn check_exit_watch(
    res: std::result::Result<std::io::Result<()>, oneshot::error::RecvError>,
    program: &str,
) -> Result<()> {
    match res {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(Error::Internal(format!("cannot wait for {program}: {e}"))),
        Err(_) => Err(Error::Internal(format!(
            "the thread waiting for {program} ended early"
        ))),
    }
}

fn exit_rx_ready(rx: &mut oneshot::Receiver<std::io::Result<()>>) -> bool {
    !matches!(rx.try_recv(), Err(oneshot::error::TryRecvError::Empty))
}

/// Reads one pipe into batches of capped, redacted lines (one batch per read).
async fn read_lines<R: AsyncRead + Unpin>(
    pipe: R,
    stream: Stream,
    tx: mpsc::Sender<Vec<OutputLine>>,
    secrets: Arc<Vec<String>>,
) {
    // Keep enough of a cut line to redact a secret that straddles the cut.
    let keep = MAX_LINE_BYTES + secrets.iter().map(String::len).max().unwrap_or(0);
    let mut reader = BufReader::with_capacity(READ_BUFFER, pipe);
    let mut partial: Vec<u8> = Vec::new();
    let mut cut = false;
    loop {
        let buf = match reader.fill_buf().await {
            Ok(buf) => buf,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                tracing::debug!("reading the child's {stream:?}: {e}");
                &[]
            }
        };
        let mut batch = Vec::new();
        if buf.is_empty() {
            if !partial.is_empty() || cut {
                batch.push(OutputLine {
                    stream,
                    text: make_line(&partial, cut, &secrets),
                });
            }
            if !batch.is_empty() {
                let _ = tx.send(batch).await;
            }
            return;
        }
        let mut batch_bytes = 0usize;
        let mut rest = buf;
        while let Some(nl) = rest.iter().position(|&b| b == b'\n') {
            let piece = &rest[..nl];
            let text = if partial.is_empty() && !cut {
                make_line(piece, false, &secrets)
            } else {
                append_capped(&mut partial, piece, keep, &mut cut);
                let text = make_line(&partial, cut, &secrets);
                partial.clear();
                cut = false;
                text
            };
            batch_bytes += text.len();
            batch.push(OutputLine { stream, text });
            rest = &rest[nl + 1..];
            // Many tiny lines cost far more memory than their bytes: bound both.
            if batch.len() >= BATCH_LINES || batch_bytes >= BATCH_BYTES {
                if tx.send(std::mem::take(&mut batch)).await.is_err() {
                    return;
                }
                batch_bytes = 0;
            }
        }
        append_capped(&mut partial, rest, keep, &mut cut);
        let used = buf.len();
        reader.consume(used);
        // The receiver is gone once `wait` is over: stop reading (the child gets SIGPIPE).
        if !batch.is_empty() && tx.send(batch).await.is_err() {
            return;
        }
    }
}

fn append_capped(partial: &mut Vec<u8>, bytes: &[u8], keep: usize, cut: &mut bool) {
    let room = keep.saturating_sub(partial.len());
    if bytes.len() > room {
        *cut = true;
    }
    partial.extend_from_slice(&bytes[..bytes.len().min(room)]);
}

/// Decodes (lossily), redacts and caps one line.
fn make_line(bytes: &[u8], cut: bool, secrets: &[String]) -> String {
    let bytes = bytes.strip_suffix(b"\r").unwrap_or(bytes);
    let mut text = redact(String::from_utf8_lossy(bytes).into_owned(), secrets);
    if cut || text.len() > MAX_LINE_BYTES {
        let mut end = MAX_LINE_BYTES.min(text.len());
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        // A secret cut in half would leave its beginning visible.
        for secret in secrets {
            if let Some(k) = (1..secret.len())
                .rev()
                .find(|&k| secret.is_char_boundary(k) && text.ends_with(&secret[..k]))
            {
                text.truncate(text.len() - k);
            }
        }
        text.push_str(TRUNCATED_MARK);
    }
    text
}

/// Replaces every occurrence of each non-empty secret with `****`.
pub use crate::redact::replace_secrets as redact;

/// Sends `signal` to process group `pgid`. Refuses pgids that would mean "every process"
/// (0, 1, negative) or upstep's own group.
fn signal_group(pgid: i32, signal: i32) -> bool {
    nix::sys::signal::Signal::try_from(signal)
        .is_ok_and(|signal| crate::child::signal_group(pgid, signal))
}

/// Whether any process of group `pgid` is still running. Zombies do not count: they are
/// finished, waiting only for their parent (or init) to reap them.
pub fn group_alive(pgid: i32) -> bool {
    if !crate::child::safe_pgid(pgid) || !crate::child::group_exists(pgid) {
        return false;
    }
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return true;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // "pid (comm) state ppid pgrp ...": comm may contain anything, so parse after the last ')'.
        let Some(after) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
            continue;
        };
        let mut fields = after.split_whitespace();
        let state = fields.next();
        let pgrp = fields.nth(1).and_then(|p| p.parse::<i32>().ok());
        if pgrp == Some(pgid) && !matches!(state, Some("Z") | Some("X")) {
            return true;
        }
    }
    false
}

/// Ends group `pgid` (blocking): SIGTERM, up to `grace` for it to go, then SIGKILL and up to a
/// few seconds more. For a later run cleaning up after a dead run's orphaned group.
pub fn kill_group(pgid: i32, grace: Duration) {
    if !group_alive(pgid) {
        return;
    }
    signal_group(pgid, libc::SIGTERM);
    let kill_at = Instant::now() + grace;
    while group_alive(pgid) && Instant::now() < kill_at {
        std::thread::sleep(GROUP_POLL);
    }
    if group_alive(pgid) {
        signal_group(pgid, libc::SIGKILL);
        let give_up = Instant::now() + KILL_WAIT;
        while group_alive(pgid) && Instant::now() < give_up {
            std::thread::sleep(GROUP_POLL);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::child::safe_pgid;

    fn secrets(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn redacts_every_occurrence_and_ignores_empty_secrets() {
        let s = secrets(&["", "hunter2", "pw"]);
        assert_eq!(
            redact("a hunter2 b hunter2 pw".into(), &s),
            "a **** b **** ****"
        );
    }

    #[test]
    fn long_line_is_cut_and_marked() {
        let line = vec![b'x'; MAX_LINE_BYTES + 10];
        let text = make_line(&line, false, &[]);
        assert!(text.ends_with(TRUNCATED_MARK));
        assert_eq!(text.len(), MAX_LINE_BYTES + TRUNCATED_MARK.len());
    }

    #[test]
    fn secret_straddling_the_cut_leaves_no_prefix() {
        let mut line = vec![b'x'; MAX_LINE_BYTES - 3];
        line.extend_from_slice(b"SECRETVALUE and more");
        let text = make_line(&line, true, &secrets(&["SECRETVALUE"]));
        assert!(!text.contains("SEC"), "{}", &text[text.len() - 40..]);
        assert!(text.ends_with(TRUNCATED_MARK));
    }

    #[test]
    fn cut_respects_utf8_boundaries() {
        let mut line = vec![b'x'; MAX_LINE_BYTES - 1];
        line.extend_from_slice("é".as_bytes());
        let text = make_line(&line, true, &[]);
        assert!(text.ends_with(TRUNCATED_MARK));
    }

    #[test]
    fn append_capped_marks_overflow() {
        let mut partial = Vec::new();
        let mut cut = false;
        append_capped(&mut partial, b"abc", 4, &mut cut);
        assert!(!cut);
        append_capped(&mut partial, b"def", 4, &mut cut);
        assert!(cut);
        assert_eq!(partial, b"abcd");
    }

    #[test]
    fn idle_allows_an_event_loop_s_heartbeat_but_not_work() {
        let reading = |members: &[u32], ticks| {
            Some(GroupCpu {
                members: members.to_vec(),
                ticks,
            })
        };
        let window = Duration::from_secs(10);
        let before = reading(&[10, 11], 500);
        assert!(stayed_idle(&before, &reading(&[10, 11], 500), window));
        // 10 s at 100 ticks/s: up to 10 ticks (1% of one CPU) is an idle event loop.
        assert!(stayed_idle(&before, &reading(&[10, 11], 510), window));
        assert!(!stayed_idle(&before, &reading(&[10, 11], 511), window));
        // One tick is always allowed, even over a short window.
        assert!(stayed_idle(
            &before,
            &reading(&[10, 11], 501),
            Duration::from_millis(300)
        ));
        assert!(!stayed_idle(&before, &reading(&[10, 11, 12], 500), window));
        assert!(!stayed_idle(&before, &reading(&[10], 400), window));
        assert!(!stayed_idle(&before, &None, window));
        assert!(!stayed_idle(&None, &None, window));
    }

    #[test]
    fn done_lines_match_as_prefixes_and_tagged_ones_after_a_logger_prefix() {
        assert!(is_done_line("  end migration - x", "end migration"));
        assert!(!is_done_line(
            "Start migration - end migration soon",
            "end migration"
        ));
        // Nest's logger, coloured, as Novu's secure-to-boolean prints it.
        let nest = "\u{1b}[32m[Nest] 1079  - \u{1b}[39m12/01/2026, 4:20:29 PM \u{1b}[32m    LOG\u{1b}[39m \u{1b}[38;5;3m[Migration] \u{1b}[39m\u{1b}[32mEnd migration.";
        assert!(is_done_line(nest, "[Migration] End migration."));
        assert!(
            !is_done_line(nest, "End migration."),
            "untagged patterns stay prefixes"
        );
        assert!(!is_done_line(
            "[Nest] 1 - LOG [Migration] Start migration",
            "[Migration] End migration."
        ));
        assert!(is_done_line(
            "\u{1b}[1mend migration\u{1b}[0m",
            "end migration"
        ));
    }

    #[test]
    fn refuses_dangerous_pgids() {
        assert!(!safe_pgid(0));
        assert!(!safe_pgid(1));
        assert!(!safe_pgid(-5));
        // SAFETY: getpgrp cannot fail.
        assert!(!safe_pgid(nix::unistd::getpgrp().as_raw()));
        assert!(!group_alive(0));
        assert!(!signal_group(1, 0));
    }

    #[test]
    fn tail_keeps_only_the_last_lines() {
        let mut seen = 0usize;
        let mut on_line = |_: OutputLine| seen += 1;
        let path = PathBuf::from("/nonexistent");
        let mut sink = Sink {
            log: None,
            log_path: &path,
            tail: VecDeque::new(),
            done_lines: vec!["end migration".into()],
            done_line: None,
            on_line: &mut on_line,
        };
        let batch = |from: usize, to: usize| {
            (from..to)
                .map(|i| OutputLine {
                    stream: Stream::Stdout,
                    text: format!("line {i}"),
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(sink.take(batch(0, 100)), None);
        let mut done = batch(100, 103);
        done.push(OutputLine {
            stream: Stream::Stderr,
            text: "   end migration - x".into(),
        });
        assert_eq!(sink.take(done), Some("   end migration - x".into()));
        assert_eq!(sink.tail.len(), TAIL_LINES);
        assert_eq!(
            sink.tail.back().map(String::as_str),
            Some("   end migration - x")
        );
        assert_eq!(sink.tail.front().map(String::as_str), Some("line 64"));
        drop(sink);
        assert_eq!(seen, 104);
    }
}
