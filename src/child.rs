//! The one way upstep starts a child process and signals it (Linux only: process groups,
//! `PR_SET_PDEATHSIG` and /proc). Every child — migration scripts, setup commands, git, ssh,
//! redis-server, node/pnpm probes, npm — is started by [`spawn_std`] or [`spawn_tokio`]:
//!
//! - in a process group of its own, so a signal reaches its whole tree and the terminal's
//!   Ctrl-C (aimed at upstep's group) does not;
//! - forked from one thread that never exits, with `PR_SET_PDEATHSIG`, so it dies with upstep
//!   (a death signal tied to a runtime worker would fire when that worker retires);
//! - with secrets only in its environment: callers pass them with `env`, never as arguments.
//!
//! Groups are signalled only through [`signal_group`], which refuses ids meaning "every
//! process" and upstep's own group. The orphan guard (`crate::orphan_guard`) stops a group
//! whose leader survived a SIGKILLed upstep; signal forwarding is `crate::runner::signals`.

use std::os::unix::process::CommandExt;

use nix::sys::signal::{killpg, Signal};
use nix::unistd::{getpgrp, getppid, Pid};

/// How long a child may live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lifetime {
    /// Killed (SIGKILL) by the kernel when upstep dies: every child but the orphan guard.
    WithUpstep,
    /// Outlives upstep: only the orphan guard, whose job starts when upstep is gone.
    OutlivesUpstep,
}

/// The pre-exec hook: death signal, and a check that upstep did not die before it was set.
fn die_with_upstep() -> impl Fn() -> std::io::Result<()> + Send + Sync + 'static {
    let upstep = Pid::this();
    // Runs in the forked child before exec: prctl and getppid only, nothing allocates.
    move || {
        nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)?;
        // upstep died between the fork and the prctl: no death signal will ever come.
        if getppid() != upstep {
            return Err(nix::errno::Errno::ESRCH.into());
        }
        Ok(())
    }
}

/// Starts `cmd` (std, for blocking callers) as described in the module docs. Its pid names its
/// process group.
pub fn spawn_std(
    mut cmd: std::process::Command,
    lifetime: Lifetime,
) -> std::io::Result<std::process::Child> {
    cmd.process_group(0);
    if lifetime == Lifetime::WithUpstep {
        // SAFETY: the hook calls only async-signal-safe functions (prctl, getppid).
        unsafe { cmd.pre_exec(die_with_upstep()) };
    }
    on_spawner_thread(move || cmd.spawn())
}

/// Starts `cmd` (tokio, for async callers; needs a runtime) as described in the module docs.
/// Its pid names its process group. The group is ended by its owner, not by dropping `Child`.
pub fn spawn_tokio(mut cmd: tokio::process::Command) -> std::io::Result<tokio::process::Child> {
    let runtime = tokio::runtime::Handle::try_current()
        .map_err(|e| std::io::Error::other(format!("no tokio runtime to spawn in: {e}")))?;
    cmd.process_group(0);
    // SAFETY: the hook calls only async-signal-safe functions (prctl, getppid).
    unsafe { cmd.pre_exec(die_with_upstep()) };
    on_spawner_thread(move || {
        // tokio registers the child with the runtime it is spawned in.
        let _runtime = runtime.enter();
        cmd.spawn()
    })
}

type Job = Box<dyn FnOnce() + Send>;

/// Runs `spawn` on the spawner thread, a thread that never exits, and returns its result.
fn on_spawner_thread<T: Send + 'static>(
    spawn: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> std::io::Result<T> {
    static SPAWNER: std::sync::OnceLock<std::io::Result<std::sync::mpsc::Sender<Job>>> =
        std::sync::OnceLock::new();
    let sender = SPAWNER.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("upstep-spawner".into())
            .spawn(move || {
                for job in rx {
                    job();
                }
            })
            .map(|_| tx)
    });
    let sender = match sender {
        Ok(sender) => sender,
        Err(e) => {
            return Err(std::io::Error::new(
                e.kind(),
                format!("no spawner thread: {e}"),
            ))
        }
    };
    let (reply, answer) = std::sync::mpsc::sync_channel(1);
    let job: Job = Box::new(move || {
        let _ = reply.send(spawn());
    });
    let gone = || std::io::Error::other("the spawner thread is gone");
    sender.send(job).map_err(|_| gone())?;
    answer.recv().map_err(|_| gone())?
}

/// The first executable file named `name` in the directories of `path_env` (a `PATH` value):
/// the one PATH lookup. Empty entries are skipped (they would mean the working directory).
pub fn find_on_path(name: &str, path_env: &std::ffi::OsStr) -> Option<std::path::PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    std::env::split_paths(path_env)
        .filter(|dir| !dir.as_os_str().is_empty())
        .map(|dir| dir.join(name))
        .find(|candidate| {
            candidate
                .metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// Whether `pgid` may be signalled: not 0, 1 or negative (those mean "every process" or
/// "my group"), and not upstep's own group.
pub fn safe_pgid(pgid: i32) -> bool {
    pgid > 1 && pgid != getpgrp().as_raw()
}

/// Sends `signal` to process group `pgid` (a child's pid: it leads its own group). False when
/// refused (see [`safe_pgid`]) or when the group is gone.
pub fn signal_group(pgid: i32, signal: Signal) -> bool {
    safe_pgid(pgid) && killpg(Pid::from_raw(pgid), signal).is_ok()
}

/// [`signal_group`] for a child's pid as std and tokio report it.
pub fn signal_child_group(pid: u32, signal: Signal) -> bool {
    i32::try_from(pid).is_ok_and(|pgid| signal_group(pgid, signal))
}

/// Whether group `pgid` exists for the kernel (zombies included): `kill(-pgid, 0)`.
/// ESRCH: no such group; EPERM: it exists but is not ours, so it is alive.
pub fn group_exists(pgid: i32) -> bool {
    match killpg(Pid::from_raw(pgid), None) {
        Ok(()) => true,
        Err(e) => e == nix::errno::Errno::EPERM,
    }
}

/// Sends `signal` to upstep itself (tests of the signal handling).
pub fn raise(signal: Signal) {
    let _ = nix::sys::signal::kill(Pid::this(), signal);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_groups_that_mean_every_process_or_our_own() {
        assert!(!safe_pgid(0));
        assert!(!safe_pgid(1));
        assert!(!safe_pgid(-5));
        assert!(!safe_pgid(getpgrp().as_raw()));
        assert!(!signal_group(1, Signal::SIGCONT));
        assert!(!signal_child_group(u32::MAX, Signal::SIGCONT));
    }

    #[test]
    fn a_std_child_leads_its_own_group_and_is_signalled_whole() {
        let mut cmd = std::process::Command::new("sh");
        cmd.args(["-c", "sleep 30 & sleep 30"]);
        let mut child = spawn_std(cmd, Lifetime::WithUpstep).expect("sh starts");
        let pgid = i32::try_from(child.id()).expect("a pid");
        let status = std::fs::read_to_string(format!("/proc/{pgid}/stat")).expect("stat");
        let pgrp: i32 = status[status.rfind(')').expect("comm") + 1..]
            .split_whitespace()
            .nth(2)
            .and_then(|p| p.parse().ok())
            .expect("pgrp");
        assert_eq!(pgrp, pgid, "the child leads a group of its own");
        assert!(group_exists(pgid));
        assert!(signal_group(pgid, Signal::SIGKILL));
        let status = child.wait().expect("reaped");
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(
            status.signal(),
            Some(libc::SIGKILL),
            "the group's leader got the signal"
        );
    }

    #[test]
    fn path_lookup_finds_the_first_executable_and_skips_the_rest() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let (plain, exec) = (dir.path().join("a"), dir.path().join("b"));
        for d in [&plain, &exec] {
            std::fs::create_dir(d).expect("mkdir");
        }
        std::fs::write(plain.join("tool"), "").expect("write");
        std::fs::write(exec.join("tool"), "").expect("write");
        std::fs::set_permissions(exec.join("tool"), std::fs::Permissions::from_mode(0o755))
            .expect("chmod");
        let path = std::env::join_paths(["", plain.to_str().unwrap(), exec.to_str().unwrap()])
            .expect("a PATH");
        assert_eq!(find_on_path("tool", &path), Some(exec.join("tool")));
        assert_eq!(find_on_path("absent", &path), None);
    }

    #[test]
    fn a_tokio_child_needs_a_runtime() {
        let err = spawn_tokio(tokio::process::Command::new("true")).expect_err("no runtime");
        assert!(err.to_string().contains("no tokio runtime"), "{err}");
    }
}
