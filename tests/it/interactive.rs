//! An interactive upgrade driven through a real pseudo-terminal (tmux): the prompts are
//! answered by keystrokes and the screen is read back.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::upgrade::Env;

pub(crate) struct Tmux {
    session: String,
    /// Holds the socket of this session's own tmux server (removed with it).
    server: tempfile::TempDir,
}

impl Tmux {
    /// Runs `command` (a shell line) in a detached session; its exit code is printed as
    /// `EXIT=<code>` when it ends, and the pane stays for reading.
    pub(crate) fn start(name: &str, command: &str) -> Tmux {
        let session = format!("upstep-{name}-{}", std::process::id());
        let line = format!("{command}; echo EXIT=$?; sleep 600");
        let server = tempfile::tempdir().expect("a folder for the tmux socket");
        let tmux = Tmux { session, server };
        let out = tmux
            .command()
            .args([
                "new-session",
                "-d",
                "-s",
                &tmux.session,
                "-x",
                "220",
                "-y",
                "60",
                &line,
            ])
            .output()
            .expect("tmux is installed (scripts/test.sh installs it)");
        assert!(
            out.status.success(),
            "tmux did not start: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        tmux
    }

    /// tmux on a server of this session's own (`-S`, a socket in a temporary folder): sessions
    /// of tests running at once do not share a server, so one test's last session ending cannot
    /// take the server away while another test starts its session (seen once under load: "tmux
    /// did not start").
    fn command(&self) -> Command {
        let mut command = Command::new("tmux");
        command.arg("-S").arg(self.server.path().join("tmux.sock"));
        command
    }

    pub(crate) fn screen(&self) -> String {
        let out = self
            .command()
            .args([
                "capture-pane",
                "-p",
                "-J",
                "-S",
                "-200",
                "-t",
                &self.session,
            ])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub(crate) fn wait_for(&self, needle: &str, within: Duration) -> String {
        let deadline = Instant::now() + within;
        loop {
            let screen = self.screen();
            if screen.contains(needle) {
                return screen;
            }
            assert!(
                Instant::now() < deadline,
                "{needle:?} never appeared; screen:\n{screen}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub(crate) fn keys(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", &self.session];
        args.extend(keys);
        assert!(self.command().args(&args).status().unwrap().success());
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self
            .command()
            .args(["kill-session", "-t", &self.session])
            .status();
    }
}

fn shell_line(env: &Env, map: &std::path::Path, extra: &[&str]) -> String {
    let mut args = env.upgrade_args_with(map);
    args.retain(|a| a != "--no-backup");
    args.extend(extra.iter().map(|s| s.to_string()));
    let quoted: Vec<String> = args.iter().map(|a| format!("'{a}'")).collect();
    format!(
        "cd '{}' && NO_COLOR=1 UPSTEP_STATE_DIR='{}' UPSTEP_CACHE_DIR='{}' '{}' {}",
        env.state.path().display(),
        env.state.path().display(),
        env.cache.path().display(),
        assert_cmd::cargo::cargo_bin("upstep").display(),
        quoted.join(" ")
    )
}

#[test]
fn a_person_picks_the_target_confirms_declines_the_backup_and_watches_it_run() {
    let env = Env::new("interactive");
    let tmux = Tmux::start("guided", &shell_line(&env, &env.project.map_path, &[]));
    // The targets are listed newest first: v1.2.0, v1.1.0, v1.0.0.
    let screen = tmux.wait_for("Upgrade to", Duration::from_secs(60));
    // Nothing is in progress yet: no bar of steps above the question.
    assert!(!screen.contains("steps  "), "{screen}");
    tmux.keys(&["Down", "Enter"]);
    let screen = tmux.wait_for("Run these 3 steps?", Duration::from_secs(30));
    assert!(!screen.contains("0/3 steps"), "{screen}");
    assert!(
        screen.contains("exits") && screen.contains("export-only"),
        "{screen}"
    );
    tmux.keys(&["y"]);
    tmux.wait_for("Back up the database", Duration::from_secs(30));
    tmux.keys(&["n"]);
    let screen = tmux.wait_for("EXIT=", Duration::from_secs(120));
    assert!(screen.contains("EXIT=0"), "{screen}");
    assert!(screen.contains("Upgrade done: 3 ran"), "{screen}");
    // The run decides again under its lock; the unchanged plan is shown once.
    assert_eq!(screen.matches("Plan:").count(), 1, "{screen}");
    assert_eq!(env.project.executed(), ["exits", "hangs", "export-only"]);
}

#[test]
fn the_first_ctrl_c_asks_and_stop_after_the_step_keeps_the_journal_clean() {
    let env = Env::new("interactive_ctrl_c");
    let map = env.project.map_variant("slow", |m| {
        m.replace("done_lines = [\"end migration\"]", "done_lines = []")
    });
    let argv = ["--to", "1.1.0", "--no-backup", "--quiet-secs", "4"];
    let tmux = Tmux::start("ctrlc", &shell_line(&env, &map, &argv));
    tmux.wait_for("Run these 3 steps?", Duration::from_secs(60));
    tmux.keys(&["y"]);
    let deadline = Instant::now() + Duration::from_secs(60);
    while !env.project.executed().contains(&"hangs".to_string()) {
        assert!(
            Instant::now() < deadline,
            "hangs never started:\n{}",
            tmux.screen()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    tmux.keys(&["C-c"]);
    tmux.wait_for("Interrupt the upgrade?", Duration::from_secs(10));
    tmux.keys(&["Enter"]); // "Stop after the running step"
    let screen = tmux.wait_for("EXIT=", Duration::from_secs(60));
    assert!(screen.contains("EXIT=130"), "{screen}");
    assert_eq!(
        env.status_of("hangs"),
        "succeeded",
        "the running step was let finish"
    );
    assert_eq!(env.status_of("export-only"), "-", "nothing after it ran");
}

#[test]
fn at_a_terminal_an_unverifiable_non_idempotent_step_is_asked_about_by_name() {
    let env = Env::new("interactive_approve");
    let map = env.project.map_variant("unverifiable", |m| {
        m.replace(
            "exits = \"never\"\nidempotent = \"guarded\"\n[[migrations.pending]]\n\
             collection = \"items\"\nfilter = { tagged = { \"$exists\" = false } }",
            "exits = \"never\"\nidempotent = \"no\"\nno_fingerprint = \"nothing shows it\"",
        )
    });
    // With no data check, only its done line may end `hangs` (not a quiet window).
    let argv = ["--to", "1.1.0", "--no-backup", "--quiet-secs", "120"];
    // Declined: nothing runs, and the way to approve it later is named.
    let tmux = Tmux::start("approve_no", &shell_line(&env, &map, &argv));
    tmux.wait_for("Run these 3 steps?", Duration::from_secs(60));
    tmux.keys(&["y"]);
    tmux.wait_for("Approve running hangs?", Duration::from_secs(30));
    tmux.keys(&["n"]);
    let screen = tmux.wait_for("EXIT=", Duration::from_secs(30));
    assert!(screen.contains("EXIT=9"), "{screen}");
    assert!(screen.contains("--approve hangs"), "{screen}");
    assert!(env.project.executed().is_empty());
    drop(tmux);

    // Approved at the prompt: it runs.
    let tmux = Tmux::start("approve_yes", &shell_line(&env, &map, &argv));
    tmux.wait_for("Run these 3 steps?", Duration::from_secs(60));
    tmux.keys(&["y"]);
    tmux.wait_for("Approve running hangs?", Duration::from_secs(30));
    tmux.keys(&["y"]);
    let screen = tmux.wait_for("EXIT=", Duration::from_secs(120));
    assert!(screen.contains("EXIT=0"), "{screen}");
    assert_eq!(env.project.executed(), ["exits", "hangs", "export-only"]);
}

#[test]
fn a_step_ended_unverified_is_put_to_the_person_who_marks_it_applied_and_the_run_goes_on() {
    let env = Env::new("interactive_unverified");
    // `hangs` declares no done line and has no data check: its quiet end proves nothing.
    let map = env.project.map_variant("unprovable", |m| {
        let check = "[[migrations.pending]]\ncollection = \"items\"\nfilter = { tagged = { \"$exists\" = false } }";
        m.replace("done_lines = [\"end migration\"]", "done_lines = []")
            .replace(check, "no_fingerprint = \"nothing in this test can tell\"")
    });
    let argv = ["--to", "1.1.0", "--no-backup", "--quiet-secs", "1"];
    let tmux = Tmux::start("unverified", &shell_line(&env, &map, &argv));
    tmux.wait_for("Run these 3 steps?", Duration::from_secs(60));
    tmux.keys(&["y"]);
    tmux.wait_for("Run them?", Duration::from_secs(30));
    tmux.keys(&["y"]);
    let screen = tmux.wait_for("What now?", Duration::from_secs(90));
    assert!(screen.contains("ended-unverified"), "{screen}");
    assert_eq!(env.status_of("hangs"), "ended-unverified");
    tmux.keys(&["Down", "Enter"]); // "Mark them as applied"
    let screen = tmux.wait_for("EXIT=", Duration::from_secs(90));
    assert!(screen.contains("EXIT=0"), "{screen}");
    assert_eq!(env.status_of("hangs"), "marked-applied");
    assert_eq!(env.project.executed(), ["exits", "hangs", "export-only"]);
}
