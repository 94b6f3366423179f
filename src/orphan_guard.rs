//! A guard for children that live in their own process group (the SSH tunnel, the throwaway
//! Redis, every migration script and setup command) so that even a SIGKILLed upstep, which runs
//! no destructors, leaves nothing running: a tiny `sh` loop, in a process group of its own,
//! waits for upstep to disappear (or to be a zombie its parent has not reaped yet) and then
//! stops the guarded group: SIGTERM, then SIGKILL a second later. Disarmed (its group killed
//! and the `sh` reaped) when the child is stopped normally.

use std::process::{Child, Command, Stdio};

use nix::sys::signal::Signal;

use crate::child::{self, Lifetime};

const SCRIPT: &str = r#"
parent=$1; group=$2
alive() {
  kill -0 "$parent" 2>/dev/null || return 1
  [ -r "/proc/$parent/status" ] || return 0
  while read -r key value rest; do
    if [ "$key" = "State:" ]; then
      [ "$value" != Z ] && [ "$value" != X ]
      return
    fi
  done < "/proc/$parent/status"
  return 0
}
while alive; do sleep 1; done
kill -TERM "-$group" 2>/dev/null
sleep 1
kill -KILL "-$group" 2>/dev/null
"#;

/// Stops a process group when its parent process is gone.
#[derive(Debug)]
pub struct OrphanGuard {
    child: Option<Child>,
}

impl OrphanGuard {
    /// Guards `group` (a process-group id) for the current process.
    pub fn for_group(group: u32, what: &str) -> OrphanGuard {
        Self::for_parent(std::process::id(), group, what)
    }

    /// Guards `group` until `parent` exits. Without `sh` there is no guard (only a warning):
    /// the normal exit paths still stop the helper.
    pub fn for_parent(parent: u32, group: u32, what: &str) -> OrphanGuard {
        let mut command = Command::new("sh");
        command
            .arg("-c")
            .arg(SCRIPT)
            .arg("upstep-orphan-guard")
            .arg(parent.to_string())
            .arg(group.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // Its own group (a Ctrl-C aimed at upstep must not kill the cleaner), and it outlives
        // upstep: that is when its work starts.
        let child = child::spawn_std(command, Lifetime::OutlivesUpstep);
        match child {
            Ok(child) => OrphanGuard { child: Some(child) },
            Err(e) => {
                tracing::warn!(
                    "cannot start the guard that stops the {what} if upstep is killed: {e}"
                );
                OrphanGuard { child: None }
            }
        }
    }

    /// The guard's own pid (for tests).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Stops the guard (the helper is being stopped normally). Idempotent.
    pub fn disarm(&mut self) {
        if let Some(mut child) = self.child.take() {
            // Its whole group (the `sh` and a `sleep` it may be in), so no sleeper lingers.
            child::signal_child_group(child.id(), Signal::SIGKILL);
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for OrphanGuard {
    fn drop(&mut self) {
        self.disarm();
    }
}
