//! A guard for helper processes that live in their own process group (the SSH tunnel, the
//! throwaway Redis) so that even a SIGKILLed upstep, which runs no destructors, leaves nothing
//! running: a tiny `sh` loop, in a process group of its own, waits for upstep to disappear and
//! then stops the helper's whole group. Disarmed (killed and reaped) when the helper is stopped
//! normally.

use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};

const SCRIPT: &str = r#"
parent=$1; group=$2
while kill -0 "$parent" 2>/dev/null; do sleep 1; done
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
        let child = Command::new("sh")
            .arg("-c")
            .arg(SCRIPT)
            .arg("upstep-orphan-guard")
            .arg(parent.to_string())
            .arg(group.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // Its own group: a Ctrl-C aimed at upstep must not kill the cleaner.
            .process_group(0)
            .spawn();
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
