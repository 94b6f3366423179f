//! The runner's process layer with real processes: exits, output, redaction, hang detection,
//! process-group cleanup, stop requests and signals; and toolchain resolution with real node.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use tokio::sync::watch;
use upstep::error::{Error, ExitCode};
use upstep::runner::process::{MAX_LINE_BYTES, TAIL_LINES, TRUNCATED_MARK};
use upstep::runner::{
    group_alive, kill_group, spawn_child, ChildSpec, Ending, FinishProbe, OutputLine, ProbeAnswer,
    RunOutcome, SignalPolicy, SignalWatcher, StopRequest, Stream, ToolchainPolicy,
    ToolchainRequest, Watch,
};

const SECRET: &str = "s3cr3t-Pa55word";

/// Writes an executable bash script.
fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/usr/bin/env bash\n{body}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

fn spec(dir: &Path, program: PathBuf) -> ChildSpec {
    ChildSpec {
        program,
        cwd: dir.to_path_buf(),
        log_file: dir.join("logs/child.log"),
        ..ChildSpec::default()
    }
}

fn watch_exits() -> Watch {
    Watch {
        grace: Duration::from_secs(2),
        timeout: Some(Duration::from_secs(60)),
        ..Watch::default()
    }
}

fn watch_finish(quiet: Duration) -> Watch {
    Watch {
        finish_detection: true,
        quiet_window: quiet,
        done_lines: vec!["end migration".into()],
        ..watch_exits()
    }
}

/// A script that never exits and declares no done line: only the quiet window can end it.
fn watch_quiet(quiet: Duration) -> Watch {
    Watch {
        done_lines: Vec::new(),
        ..watch_finish(quiet)
    }
}

/// Runs `spec` to the end; returns the outcome and every line on_line saw.
async fn run(
    spec: &ChildSpec,
    watch: Watch,
    probe: Option<&mut dyn FinishProbe>,
) -> (RunOutcome, Vec<OutputLine>) {
    let (_stop_tx, stop_rx) = watch::channel(StopRequest::None);
    let child = spawn_child(spec).unwrap();
    let mut lines = Vec::new();
    let outcome = child
        .wait(watch, stop_rx, probe, &mut |line| lines.push(line))
        .await
        .unwrap();
    (outcome, lines)
}

/// Whether `pid` exists and is not a zombie.
fn running(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            let state = stat
                .rfind(')')
                .and_then(|i| stat[i + 1..].split_whitespace().next());
            !matches!(state, Some("Z") | Some("X") | None)
        }
        Err(_) => false,
    }
}

/// Answers the same every time and counts the calls.
struct FixedProbe {
    answer: ProbeAnswer,
    calls: Arc<AtomicUsize>,
}

impl FinishProbe for FixedProbe {
    fn finished(&mut self) -> BoxFuture<'_, ProbeAnswer> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let answer = self.answer;
        Box::pin(async move { answer })
    }
}

#[tokio::test]
async fn exit_codes_are_reported() {
    let tmp = tempfile::tempdir().unwrap();
    let ok = script(tmp.path(), "ok.sh", "echo fine");
    let (outcome, lines) = run(&spec(tmp.path(), ok), watch_exits(), None).await;
    assert_eq!(outcome.ending, Ending::Exited);
    assert_eq!(outcome.exit_code, Some(0));
    assert_eq!(outcome.signal, None);
    assert_eq!(lines.len(), 1);
    assert!(outcome.pid > 0 && outcome.pgid == outcome.pid as i32);

    let three = script(tmp.path(), "three.sh", "echo failing >&2; exit 3");
    let (outcome, lines) = run(&spec(tmp.path(), three), watch_exits(), None).await;
    assert_eq!(outcome.ending, Ending::Exited);
    assert_eq!(outcome.exit_code, Some(3));
    assert_eq!(lines[0].stream, Stream::Stderr);
    assert_eq!(outcome.tail, vec!["failing".to_string()]);
}

#[tokio::test]
async fn output_is_streamed_logged_and_redacted() {
    let tmp = tempfile::tempdir().unwrap();
    let body = r#"
echo "connecting to mongodb://admin:$DB_PASSWORD@db:27017/novu"
echo "key=$DB_PASSWORD twice: $DB_PASSWORD" >&2
echo "   indented line"
printf 'no newline at the end'
"#;
    let program = script(tmp.path(), "talk.sh", body);
    let mut spec = spec(tmp.path(), program);
    spec.env.push(("DB_PASSWORD".into(), SECRET.into()));
    spec.secrets = vec![SECRET.into(), String::new()];
    let (outcome, lines) = run(&spec, watch_exits(), None).await;
    assert_eq!(outcome.exit_code, Some(0));

    let texts: Vec<&str> = lines.iter().map(|l| l.text.as_str()).collect();
    assert!(texts.contains(&"connecting to mongodb://admin:****@db:27017/novu"));
    assert!(texts.contains(&"key=**** twice: ****"));
    assert!(texts.contains(&"   indented line"));
    assert!(texts.contains(&"no newline at the end"));
    assert!(lines.iter().any(|l| l.stream == Stream::Stderr));
    assert!(lines.iter().any(|l| l.stream == Stream::Stdout));

    let log = std::fs::read_to_string(tmp.path().join("logs/child.log")).unwrap();
    assert_eq!(log.lines().count(), 4, "{log}");
    assert!(log.contains("key=**** twice: ****"));
    for text in texts
        .iter()
        .copied()
        .chain(outcome.tail.iter().map(|s| s.as_str()))
    {
        assert!(!text.contains(SECRET), "secret leaked: {text}");
    }
    assert!(!log.contains(SECRET));
    assert_eq!(outcome.tail.len(), 4);
}

#[tokio::test]
async fn long_lines_are_capped_and_marked() {
    let tmp = tempfile::tempdir().unwrap();
    let program = script(
        tmp.path(),
        "long.sh",
        "head -c 100000 /dev/zero | tr '\\0' a; echo; echo after",
    );
    let (outcome, lines) = run(&spec(tmp.path(), program), watch_exits(), None).await;
    assert_eq!(outcome.exit_code, Some(0));
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0].text.len(), MAX_LINE_BYTES + TRUNCATED_MARK.len());
    assert!(lines[0].text.ends_with(TRUNCATED_MARK));
    assert_eq!(lines[1].text, "after");
}

#[tokio::test]
async fn done_line_ends_a_script_that_never_exits() {
    let tmp = tempfile::tempdir().unwrap();
    let body = "echo 'Environment: local'\necho '  end migration - expire-at'\nsleep 1000 &\nwait";
    let program = script(tmp.path(), "hang.sh", body);
    let started = Instant::now();
    let (outcome, _) = run(
        &spec(tmp.path(), program),
        watch_finish(Duration::from_secs(60)),
        None,
    )
    .await;
    assert_eq!(
        outcome.ending,
        Ending::DoneLine {
            line: "  end migration - expire-at".into()
        }
    );
    assert_eq!(outcome.signal, Some(libc::SIGTERM));
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(
        !group_alive(outcome.pgid),
        "group {} survived",
        outcome.pgid
    );
}

#[tokio::test]
async fn done_line_without_finish_detection_is_only_recorded() {
    let tmp = tempfile::tempdir().unwrap();
    let program = script(
        tmp.path(),
        "done.sh",
        "echo 'end migration'; sleep 0.3; exit 0",
    );
    let mut watch = watch_finish(Duration::from_secs(60));
    watch.finish_detection = false;
    let (outcome, _) = run(&spec(tmp.path(), program), watch, None).await;
    assert_eq!(outcome.ending, Ending::Exited);
    assert_eq!(outcome.exit_code, Some(0));
    assert_eq!(outcome.done_line.as_deref(), Some("end migration"));
}

#[tokio::test]
async fn quiet_and_finished_ends_the_whole_tree() {
    let tmp = tempfile::tempdir().unwrap();
    // sh -> (sleep in the background, node in the foreground): the shape of `npm exec`.
    let body = r#"echo "grandchild $$"; sleep 1000 & echo "sleeper $!"; node -e "setInterval(()=>{},1000)""#;
    let program = script(tmp.path(), "tree.sh", body);
    let calls = Arc::new(AtomicUsize::new(0));
    let mut probe = FixedProbe {
        answer: ProbeAnswer::Finished,
        calls: Arc::clone(&calls),
    };
    let started = Instant::now();
    let (outcome, lines) = run(
        &spec(tmp.path(), program),
        watch_quiet(Duration::from_millis(500)),
        Some(&mut probe),
    )
    .await;
    assert_eq!(outcome.ending, Ending::QuietAndFinished);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(!group_alive(outcome.pgid));
    let sleeper: u32 = lines
        .iter()
        .find_map(|l| l.text.strip_prefix("sleeper "))
        .and_then(|p| p.parse().ok())
        .expect("the script prints the sleeper's pid");
    assert!(!running(sleeper), "the grandchild {sleeper} was orphaned");
}

#[tokio::test]
async fn quiet_without_probe_is_unverified() {
    let tmp = tempfile::tempdir().unwrap();
    let program = script(tmp.path(), "quiet.sh", "echo hello; exec sleep 1000");
    let (outcome, _) = run(
        &spec(tmp.path(), program),
        watch_quiet(Duration::from_millis(300)),
        None,
    )
    .await;
    assert_eq!(outcome.ending, Ending::QuietUnverified);
    assert!(!group_alive(outcome.pgid));
}

/// A declared done line is the script's word that it finished: silence plus a clean data check
/// never end it early (the script may be working on data no check covers).
#[tokio::test]
async fn a_declared_done_line_is_never_overridden_by_the_quiet_window() {
    let tmp = tempfile::tempdir().unwrap();
    let program = script(
        tmp.path(),
        "late.sh",
        "echo start; sleep 2.5; echo 'end migration'; exec sleep 1000",
    );
    let calls = Arc::new(AtomicUsize::new(0));
    let mut probe = FixedProbe {
        answer: ProbeAnswer::Finished,
        calls: Arc::clone(&calls),
    };
    let (outcome, _) = run(
        &spec(tmp.path(), program),
        watch_finish(Duration::from_millis(300)),
        Some(&mut probe),
    )
    .await;
    assert_eq!(
        outcome.ending,
        Ending::DoneLine {
            line: "end migration".into()
        }
    );
    assert!(
        outcome.duration >= Duration::from_millis(2500),
        "{outcome:?}"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 0, "the probe was asked");
    assert!(!group_alive(outcome.pgid));
}

/// Silence is not idleness: a group that still spends CPU time (here a silent worker in the
/// background, a grandchild of upstep) is not ended by the quiet window, even when the probe
/// says finished; it is ended once it has been idle for the whole window.
#[tokio::test]
async fn a_silent_group_still_at_work_is_not_ended_by_the_quiet_window() {
    let tmp = tempfile::tempdir().unwrap();
    let mark = tmp.path().join("worker-finished");
    let body = format!(
        "echo start\n( end=$((SECONDS+3)); while [ $SECONDS -lt $end ]; do :; done; echo done > '{}' ) &\nwait\nexec sleep 1000",
        mark.display()
    );
    let program = script(tmp.path(), "busy.sh", &body);
    let calls = Arc::new(AtomicUsize::new(0));
    let mut probe = FixedProbe {
        answer: ProbeAnswer::Finished,
        calls: Arc::clone(&calls),
    };
    let (outcome, _) = run(
        &spec(tmp.path(), program),
        watch_quiet(Duration::from_millis(500)),
        Some(&mut probe),
    )
    .await;
    assert_eq!(outcome.ending, Ending::QuietAndFinished);
    assert!(
        mark.exists(),
        "ended after {:?} while its worker was still working",
        outcome.duration
    );
    assert!(outcome.duration >= Duration::from_secs(2), "{outcome:?}");
    assert!(!group_alive(outcome.pgid));
}

/// The group's CPU reading sees every member, and a member's reaped children.
#[tokio::test]
async fn group_cpu_counts_every_member_of_the_group() {
    let tmp = tempfile::tempdir().unwrap();
    let program = script(
        tmp.path(),
        "spin.sh",
        "( end=$((SECONDS+2)); while [ $SECONDS -lt $end ]; do :; done ) &\nsleep 1000",
    );
    let child = spawn_child(&spec(tmp.path(), program)).unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let first = upstep::runner::process::group_cpu(child.pgid()).unwrap();
    assert!(first.members.len() >= 3, "{first:?}");
    assert!(first.members.contains(&child.pid()));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let second = upstep::runner::process::group_cpu(child.pgid()).unwrap();
    assert!(second.ticks > first.ticks, "{first:?} -> {second:?}");
    drop(child);
}

/// `PR_SET_PDEATHSIG` fires when the *thread* that forked the child exits: a child spawned from
/// a short-lived thread (a `spawn_blocking` worker retires when idle) must not die with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_child_outlives_the_thread_that_spawned_it() {
    let tmp = tempfile::tempdir().unwrap();
    let program = script(tmp.path(), "long.sh", "exec sleep 1000");
    let spec = spec(tmp.path(), program);
    let runtime = tokio::runtime::Handle::current();
    let child = std::thread::spawn(move || {
        let _inside = runtime.enter();
        spawn_child(&spec).unwrap()
    })
    .join()
    .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        running(child.pid()),
        "the child died with the thread that spawned it"
    );
    let pgid = child.pgid();
    drop(child);
    let deadline = Instant::now() + Duration::from_secs(3);
    while group_alive(pgid) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!group_alive(pgid));
}

#[tokio::test]
async fn probe_not_yet_keeps_it_running_until_the_timeout() {
    let tmp = tempfile::tempdir().unwrap();
    let program = script(tmp.path(), "slow.sh", "echo working; exec sleep 1000");
    let calls = Arc::new(AtomicUsize::new(0));
    let mut probe = FixedProbe {
        answer: ProbeAnswer::NotYet,
        calls: Arc::clone(&calls),
    };
    let mut watch = watch_quiet(Duration::from_millis(200));
    watch.timeout = Some(Duration::from_millis(2500));
    let started = Instant::now();
    let (outcome, _) = run(&spec(tmp.path(), program), watch, Some(&mut probe)).await;
    assert_eq!(outcome.ending, Ending::TimedOut);
    let elapsed = started.elapsed();
    assert!(elapsed >= Duration::from_millis(2500), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(8), "{elapsed:?}");
    // Asked at most about once a second while quiet: at 0.2 s, 1.2 s, 2.2 s.
    let calls = calls.load(Ordering::SeqCst);
    assert!((2..=4).contains(&calls), "{calls} probe calls");
    assert!(!group_alive(outcome.pgid));
}

#[tokio::test]
async fn stop_now_forwards_sigint_to_the_group() {
    let tmp = tempfile::tempdir().unwrap();
    let body = "trap 'echo got INT; exit 130' INT\necho ready\nwhile true; do sleep 0.1; done";
    let program = script(tmp.path(), "int.sh", body);
    let (stop_tx, stop_rx) = watch::channel(StopRequest::None);
    let child = spawn_child(&spec(tmp.path(), program)).unwrap();
    let pgid = child.pgid();
    let mut lines = Vec::new();
    let stopper = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(400)).await;
        // AfterStep is the caller's business: wait ignores it.
        stop_tx.send(StopRequest::AfterStep).unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        stop_tx
            .send(StopRequest::Now {
                signal: libc::SIGINT,
            })
            .unwrap();
        stop_tx
    });
    let mut watch = watch_exits();
    watch.grace = Duration::from_secs(20);
    let started = Instant::now();
    let outcome = child
        .wait(watch, stop_rx, None, &mut |l| lines.push(l.text))
        .await
        .unwrap();
    let _stop_tx = stopper.await.unwrap();
    assert_eq!(outcome.ending, Ending::Stopped { signal: 2 });
    assert_eq!(outcome.exit_code, Some(130));
    // Well within the grace: the script handled SIGINT itself.
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(lines.contains(&"got INT".to_string()), "{lines:?}");
    assert!(!group_alive(pgid));
}

#[tokio::test]
async fn a_child_ignoring_sigterm_is_killed_after_the_grace() {
    let tmp = tempfile::tempdir().unwrap();
    // An ignored signal stays ignored in the children too.
    let body = "trap '' TERM\necho stubborn\nwhile true; do sleep 0.1; done";
    let program = script(tmp.path(), "stubborn.sh", body);
    let watch = Watch {
        timeout: Some(Duration::from_millis(500)),
        grace: Duration::from_millis(700),
        ..Watch::default()
    };
    let started = Instant::now();
    let (outcome, _) = run(&spec(tmp.path(), program), watch, None).await;
    let elapsed = started.elapsed();
    assert_eq!(outcome.ending, Ending::TimedOut);
    assert_eq!(outcome.signal, Some(libc::SIGKILL));
    assert!(elapsed >= Duration::from_millis(1200), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(6), "{elapsed:?}");
    assert!(!group_alive(outcome.pgid));
}

#[tokio::test]
async fn grandchildren_left_after_a_normal_exit_are_ended() {
    let tmp = tempfile::tempdir().unwrap();
    // The background sleep keeps stdout open: wait must not hang on the pipe either.
    let program = script(
        tmp.path(),
        "leave.sh",
        "sleep 1000 &\necho \"sleeper $!\"\nexit 0",
    );
    let started = Instant::now();
    let (outcome, lines) = run(&spec(tmp.path(), program), watch_exits(), None).await;
    assert_eq!(outcome.ending, Ending::Exited);
    assert_eq!(outcome.exit_code, Some(0));
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(!group_alive(outcome.pgid));
    let sleeper: u32 = lines[0].text["sleeper ".len()..].parse().unwrap();
    assert!(!running(sleeper));
}

#[tokio::test]
async fn dropping_without_wait_kills_the_group() {
    let tmp = tempfile::tempdir().unwrap();
    let program = script(tmp.path(), "drop.sh", "sleep 1000 &\nsleep 1000");
    let child = spawn_child(&spec(tmp.path(), program)).unwrap();
    let pgid = child.pgid();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(group_alive(pgid));
    drop(child);
    let deadline = Instant::now() + Duration::from_secs(3);
    while group_alive(pgid) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!group_alive(pgid), "group {pgid} survived the drop");
}

#[tokio::test]
async fn a_stop_requested_before_wait_is_honoured() {
    let tmp = tempfile::tempdir().unwrap();
    let program = script(tmp.path(), "early.sh", "exec sleep 1000");
    let (_tx, rx) = watch::channel(StopRequest::Now {
        signal: libc::SIGTERM,
    });
    let child = spawn_child(&spec(tmp.path(), program)).unwrap();
    let outcome = child
        .wait(watch_exits(), rx, None, &mut |_| {})
        .await
        .unwrap();
    assert_eq!(outcome.ending, Ending::Stopped { signal: 15 });
    assert_eq!(outcome.signal, Some(15));
}

#[tokio::test]
async fn spawn_failures_name_the_program_and_the_fix() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("no-such-tool");
    let Err(err) = spawn_child(&spec(tmp.path(), missing.clone())) else {
        panic!("spawned a missing program");
    };
    let text = err.to_string();
    assert!(text.contains(&missing.display().to_string()), "{text}");
    assert!(text.contains("fix:"), "{text}");
    assert_eq!(err.code(), ExitCode::StepFailed);

    let Err(err) = spawn_child(&spec(tmp.path(), "no-such-tool-on-path".into())) else {
        panic!("spawned a missing program");
    };
    assert!(err.to_string().contains("no-such-tool-on-path"));

    let mut bad_cwd = spec(tmp.path(), "/bin/true".into());
    bad_cwd.cwd = tmp.path().join("gone");
    let Err(err) = spawn_child(&bad_cwd) else {
        panic!("spawned in a missing directory");
    };
    assert!(err.to_string().contains("gone"), "{err}");
}

#[tokio::test]
async fn a_secret_in_argv_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let mut spec = spec(tmp.path(), "/bin/echo".into());
    spec.args = vec![format!("--password={SECRET}")];
    spec.secrets = vec![SECRET.into()];
    let Err(err) = spawn_child(&spec) else {
        panic!("started a child with a secret in argv");
    };
    assert!(matches!(err, Error::Internal(_)), "{err:?}");
    assert!(!err.to_string().contains(SECRET));
}

#[tokio::test]
async fn path_prefix_comes_first() {
    let tmp = tempfile::tempdir().unwrap();
    let bin = tmp.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    script(&bin, "mytool", "echo from-prefix");
    let program = script(
        tmp.path(),
        "which.sh",
        "mytool; echo \"$EXTRA\"; echo \"${HOME:-unset}\"",
    );
    let mut spec = spec(tmp.path(), program);
    spec.path_prefix = vec![bin];
    spec.env = vec![("EXTRA".into(), "extra-value".into())];
    spec.env_remove = vec!["HOME".into()];
    let (outcome, lines) = run(&spec, watch_exits(), None).await;
    assert_eq!(outcome.exit_code, Some(0));
    let texts: Vec<&str> = lines.iter().map(|l| l.text.as_str()).collect();
    assert_eq!(texts, ["from-prefix", "extra-value", "unset"]);
}

#[test]
fn kill_group_ends_an_orphaned_group() {
    use std::os::unix::process::CommandExt;
    let mut child = std::process::Command::new("sh")
        .arg("-c")
        .arg("trap '' TERM; sleep 1000 & sleep 1000")
        .process_group(0)
        .spawn()
        .unwrap();
    let pgid = child.id() as i32;
    std::thread::sleep(Duration::from_millis(200));
    assert!(group_alive(pgid));
    let started = Instant::now();
    kill_group(pgid, Duration::from_millis(300));
    assert!(!group_alive(pgid));
    assert!(started.elapsed() < Duration::from_secs(5));
    child.wait().unwrap();
}

/// Memory stays bounded whatever the child prints (the RSS figure: scripts/bench-runner.sh).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_output_streams_through_with_a_bounded_tail() {
    let tmp = tempfile::tempdir().unwrap();
    // 200 MB in 100-byte lines.
    let line = "x".repeat(99);
    let program = script(
        tmp.path(),
        "flood.sh",
        &format!("yes '{line}' | head -c 200000000"),
    );
    let mut spec = spec(tmp.path(), program);
    // The log goes nowhere: 200 MB of test log would only fill the disk.
    spec.log_file = PathBuf::from("/dev/null");
    let (_stop_tx, stop_rx) = watch::channel(StopRequest::None);
    let child = spawn_child(&spec).unwrap();
    let mut count = 0usize;
    let mut bytes = 0usize;
    let outcome = child
        .wait(watch_exits(), stop_rx, None, &mut |l| {
            count += 1;
            bytes += l.text.len() + 1;
        })
        .await
        .unwrap();
    assert_eq!(outcome.exit_code, Some(0));
    assert_eq!(bytes, 200_000_000);
    assert_eq!(count, 2_000_000);
    assert_eq!(outcome.tail.len(), TAIL_LINES);
}

/// The one real-signal test here: the test process gets a real SIGINT, the watcher turns it into
/// a stop request, and the child's group receives SIGINT. (The handlers are installed before the
/// kill, so the default action cannot end the test process.)
#[tokio::test]
async fn a_real_sigint_reaches_the_child_group_through_the_watcher() {
    let tmp = tempfile::tempdir().unwrap();
    let body =
        "trap 'echo child got INT; exit 130' INT\necho ready\nwhile true; do sleep 0.1; done";
    let program = script(tmp.path(), "int.sh", body);
    let watcher = SignalWatcher::install(SignalPolicy::Unattended).unwrap();
    let child = spawn_child(&spec(tmp.path(), program)).unwrap();
    let mut lines = Vec::new();
    let mut on_line = |l: OutputLine| {
        if l.text == "ready" {
            // SAFETY: kill(2) to our own pid; SIGINT is handled by the watcher now.
            let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGINT);
        }
        lines.push(l.text);
    };
    // What is checked is that the SIGINT reaches the child's trap, not how fast: a 2 s grace
    // once ran out on a loaded 2-core machine (the shell killed before its trap ran, exit None).
    let watch = Watch {
        grace: Duration::from_secs(10),
        ..watch_exits()
    };
    let outcome = child
        .wait(watch, watcher.stop_receiver(), None, &mut on_line)
        .await
        .unwrap();
    assert_eq!(
        outcome.ending,
        Ending::Stopped {
            signal: libc::SIGINT
        }
    );
    assert_eq!(outcome.exit_code, Some(130));
    assert!(lines.contains(&"child got INT".to_string()), "{lines:?}");
    assert_eq!(watcher.last_signal(), Some(libc::SIGINT));
    assert!(watcher.count(libc::SIGINT) >= 1);
}

// ---- toolchain ----

fn path_env() -> std::ffi::OsString {
    std::env::var_os("PATH").unwrap_or_default()
}

async fn machine_node_version() -> String {
    let out = tokio::process::Command::new("node")
        .arg("--version")
        .output()
        .await
        .expect("node on PATH");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .trim_start_matches('v')
        .to_string()
}

#[tokio::test]
async fn toolchain_uses_the_path_node_when_it_matches() {
    let tmp = tempfile::tempdir().unwrap();
    let version = machine_node_version().await;
    let req = ToolchainRequest {
        node: version.clone(),
        node_range: None,
        pnpm: None,
        policy: ToolchainPolicy::Exact,
    };
    let tc = upstep::runner::resolve(&req, tmp.path(), &path_env(), false)
        .await
        .unwrap();
    assert_eq!(tc.node_version, version);
    assert!(tc.node_source.starts_with("PATH ("), "{}", tc.node_source);
    assert!(tc.node_dir.join("node").is_file());
    assert_eq!(tc.pnpm_dir, None);
}

#[tokio::test]
async fn toolchain_range_policy_accepts_a_path_node_in_range() {
    let tmp = tempfile::tempdir().unwrap();
    let shim = tmp.path().join("shim");
    std::fs::create_dir_all(&shim).unwrap();
    // PATH is only the shim dir here, so no `env bash` in the shebang.
    let node = shim.join("node");
    std::fs::write(&node, "#!/bin/sh\necho v16.3.0\n").unwrap();
    std::fs::set_permissions(&node, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut req = ToolchainRequest {
        node: "16.15.1".into(),
        node_range: Some(">=13.0.0 <17.0.0".into()),
        pnpm: None,
        policy: ToolchainPolicy::Exact,
    };
    // Exact: the shim's 16.3.0 is not 16.15.1, and provisioning is off.
    let err = upstep::runner::resolve(&req, tmp.path(), shim.as_os_str(), false)
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("node 16.15.1") && text.contains("v16.3.0"),
        "{text}"
    );
    assert!(text.contains("fix:"), "{text}");

    req.policy = ToolchainPolicy::Range;
    let tc = upstep::runner::resolve(&req, tmp.path(), shim.as_os_str(), false)
        .await
        .unwrap();
    assert_eq!(tc.node_version, "16.3.0");
    assert_eq!(tc.node_dir, shim);

    // Out of range is refused under Range too.
    req.node_range = Some(">=20 <21".into());
    assert!(
        upstep::runner::resolve(&req, tmp.path(), shim.as_os_str(), false)
            .await
            .is_err()
    );
}

/// Downloads node 16.15.1 and pnpm 8.9.0 from the npm registry (about 15 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn toolchain_provisions_an_old_node_and_pnpm_with_npm() {
    let tmp = tempfile::tempdir().unwrap();
    let req = ToolchainRequest {
        node: "16.15.1".into(),
        node_range: None,
        pnpm: Some("8.9.0".into()),
        policy: ToolchainPolicy::Exact,
    };
    // A broken cache entry (an interrupted copy by hand, say) is replaced, not trusted.
    let broken = tmp.path().join("toolchains/pnpm-8.9.0");
    std::fs::create_dir_all(&broken).unwrap();
    std::fs::write(broken.join("leftover"), "x").unwrap();
    let tc = upstep::runner::resolve(&req, tmp.path(), &path_env(), true)
        .await
        .unwrap();
    assert_eq!(tc.node_version, "16.15.1");
    assert!(
        tc.node_source.starts_with("provisioned with npm into"),
        "{}",
        tc.node_source
    );
    assert!(tc
        .node_dir
        .starts_with(tmp.path().join("toolchains/node-16.15.1")));
    let out = std::process::Command::new(tc.node_dir.join("node"))
        .arg("--version")
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "v16.15.1");

    // The pnpm wrapper works from anywhere, with nothing else on PATH.
    let pnpm_dir = tc.pnpm_dir.clone().unwrap();
    let out = std::process::Command::new(pnpm_dir.join("pnpm"))
        .arg("--version")
        .env("PATH", "/usr/bin:/bin")
        .current_dir(tmp.path())
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "8.9.0");

    // No half-installed temp dirs are left, and a second resolve uses the cache.
    let leftovers: Vec<_> = std::fs::read_dir(tmp.path().join("toolchains"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(".tmp-"))
        .collect();
    assert!(leftovers.is_empty());
    let started = Instant::now();
    let again = upstep::runner::resolve(&req, tmp.path(), &path_env(), false)
        .await
        .unwrap();
    assert_eq!(again, tc);
    assert!(started.elapsed() < Duration::from_secs(10));
}

// ---- upstep through its binary: death, unverified ends, and signals at every phase ----

use crate::upgrade::{map_with_shell_wrapper, pid_gone, processes_with_env, text, Env};
use bson::doc;

/// Starts the upstep binary for `env` with `args` (and extra environment).
fn start_upstep(env: &Env, args: &[String], extra_env: &[(&str, &str)]) -> std::process::Child {
    let mut cmd = std::process::Command::new(assert_cmd::cargo::cargo_bin("upstep"));
    cmd.args(args)
        .env("NO_COLOR", "1")
        .env("UPSTEP_STATE_DIR", env.state.path())
        .env("UPSTEP_CACHE_DIR", env.cache.path())
        .env_remove("MONGO_URL")
        .env_remove("UPSTEP_MONGO_URI")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    for (k, v) in extra_env {
        cmd.env(k, v);
    }
    cmd.spawn().unwrap()
}

fn wait_until(what: &str, limit: Duration, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !ready() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits for `child` to exit (at most `limit`; then it is killed and the test fails).
fn exit_within(child: &mut std::process::Child, limit: Duration, what: &str) -> (i32, Duration) {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            use std::io::Read;
            if let Some(mut e) = child.stderr.take() {
                let _ = e.read_to_string(&mut err);
            }
            let code = status
                .code()
                .unwrap_or_else(|| panic!("{what}: killed by a signal: {status:?}\n{err}"));
            return (code, started.elapsed());
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what}: upstep did not stop within {limit:?} of the signal");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

const SIGNALS: [(i32, i32, &str); 3] = [
    (libc::SIGINT, 130, "SIGINT"),
    (libc::SIGTERM, 143, "SIGTERM"),
    (libc::SIGHUP, 143, "SIGHUP"),
];

/// What every stopped run must leave: the lock released, and no step journalled that did not
/// run (`started` are the only ids allowed in the journal).
fn assert_clean_stop(env: &Env, what: &str, started: &[&str]) {
    assert!(
        env.find("upstep_lock", doc! {}).is_empty(),
        "{what}: the run lock was not released"
    );
    for entry in env.journal() {
        let id = entry.get_str("_id").unwrap_or("?");
        assert!(
            started.contains(&id),
            "{what}: {id} is journalled ({entry}) although it never started"
        );
    }
    for e in env.find("upstep_events", doc! { "kind": "step-started" }) {
        let id = e.get_str("migration").unwrap_or("?");
        assert!(
            started.contains(&id),
            "{what}: a step-started event for {id}"
        );
    }
}

#[test]
fn kill_9_of_upstep_ends_the_whole_script_group_within_seconds() {
    let env = Env::new("kill9_group");
    // sh -> ts-node, and the script never ends by itself (no done line, long quiet window).
    let map = map_with_shell_wrapper(&env);
    let text_of_map = std::fs::read_to_string(&map).unwrap();
    std::fs::write(
        &map,
        text_of_map.replace("done_lines = [\"end migration\"]", "done_lines = []"),
    )
    .unwrap();
    let mut args = env.upgrade_args_with(&map);
    args.extend(["--to", "1.1.0", "--quiet-secs", "300"].map(String::from));
    let mut upstep = start_upstep(&env, &args, &[]);
    wait_until("hangs to start", Duration::from_secs(90), || {
        env.project.executed().contains(&"hangs".to_string())
    });
    let log = env.project.log_path.display().to_string();
    let group = processes_with_env("FIXTURE_LOG", &log);
    assert!(group.len() >= 2, "sh and node of the script: {group:?}");
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(upstep.id() as i32),
        nix::sys::signal::Signal::SIGKILL,
    );
    let _ = upstep.wait();
    let killed = Instant::now();
    let mut left = processes_with_env("FIXTURE_LOG", &log);
    while !left.is_empty() && killed.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(50));
        left = processes_with_env("FIXTURE_LOG", &log);
    }
    for pid in &left {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(*pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    assert!(
        left.is_empty(),
        "{left:?} of the script's group outlived a SIGKILLed upstep by 5 s"
    );
    let pgid = *env.project.executed_pgids().last().unwrap();
    assert!(!group_alive(pgid), "group {pgid} is still alive");
}

/// The fixture map, where `hangs` declares no done line and has no data check: nothing can
/// prove it finished.
fn unprovable_map(env: &Env) -> PathBuf {
    env.project.map_variant("unprovable", |m| {
        let m = m.replace("done_lines = [\"end migration\"]", "done_lines = []");
        let check = "[[migrations.pending]]\ncollection = \"items\"\nfilter = { tagged = { \"$exists\" = false } }";
        assert!(m.contains(check), "the fixture map changed");
        m.replace(check, "no_fingerprint = \"nothing in this test can tell\"")
    })
}

#[test]
fn a_quiet_end_nothing_proves_is_ended_unverified_and_needs_a_decision() {
    let env = Env::new("ended_unverified");
    let map = unprovable_map(&env);
    let out = env.upgrade_with(
        &map,
        &["--to", "1.1.0", "--quiet-secs", "1", "--json", "--yes"],
    );
    assert_eq!(out.status.code(), Some(9), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("upstep mark hangs --applied") && stderr.contains("--retry"),
        "{}",
        text(&out)
    );
    assert_eq!(env.status_of("exits"), "succeeded");
    assert_eq!(env.status_of("hangs"), "ended-unverified");
    assert_eq!(env.status_of("export-only"), "-", "nothing ran after it");
    let events: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let finished = events
        .iter()
        .find(|e| e["event"] == "step-finished" && e["id"] == "hangs")
        .expect("a step-finished event for hangs");
    assert_eq!(finished["status"], "ended-unverified");
    assert_eq!(finished["ended_by"], "quiet-window");
    assert_eq!(events.last().unwrap()["status"], "needs-decision");
    for pid in env.project.executed_pids() {
        assert!(pid_gone(pid), "pid {pid} is still running");
    }

    // status and detect show it; a rerun without a decision stops before running anything.
    let map_arg = map.display().to_string();
    let status = env
        .command(&[
            "status",
            "--map",
            &map_arg,
            "--mongo-uri",
            &env.uri,
            "--to",
            "1.1.0",
        ])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&status.stdout).contains("ended-unverified"),
        "{}",
        text(&status)
    );
    let detect = env
        .command(&[
            "detect",
            "--map",
            &map_arg,
            "--mongo-uri",
            &env.uri,
            "--json",
        ])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&detect.stdout).contains("journal: ended-unverified"),
        "{}",
        text(&detect)
    );
    let again = env.upgrade_with(&map, &["--to", "1.1.0", "--quiet-secs", "1", "--yes"]);
    assert_eq!(again.status.code(), Some(9), "{}", text(&again));
    assert!(String::from_utf8_lossy(&again.stderr).contains("--retry"));
    assert_eq!(env.project.executed(), ["exits", "hangs"]);

    // The operator's word settles it, and the run goes on.
    let mark = env
        .command(&[
            "mark",
            "hangs",
            "--applied",
            "--map",
            &map_arg,
            "--mongo-uri",
            &env.uri,
        ])
        .output()
        .unwrap();
    assert!(mark.status.success(), "{}", text(&mark));
    let done = env.upgrade_with(&map, &["--to", "1.1.0", "--quiet-secs", "1", "--yes"]);
    assert!(done.status.success(), "{}", text(&done));
    assert_eq!(env.project.executed(), ["exits", "hangs", "export-only"]);
}

/// The loose object file of `path` at `rev` in the fixture repository.
fn loose_object(env: &Env, rev_path: &str) -> PathBuf {
    let out = std::process::Command::new("git")
        .arg("-C")
        .arg(env.project.repo_path())
        .args(["rev-parse", rev_path])
        .output()
        .unwrap();
    let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert_eq!(id.len(), 40, "{out:?}");
    let file = env
        .project
        .repo_path()
        .join(".git/objects")
        .join(&id[..2])
        .join(&id[2..]);
    assert!(
        file.is_file(),
        "{rev_path} is not a loose object: {}",
        file.display()
    );
    file
}

/// Replaces a loose object by a FIFO: libgit2's checkout then blocks in open(2) on it, which
/// holds the checkout phase open for as long as the test wants.
fn fifo_in_place_of(object: &Path) {
    std::fs::remove_file(object).unwrap();
    nix::unistd::mkfifo(object, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
}

fn has_dir_named(root: &Path, name: &str) -> bool {
    std::fs::read_dir(root)
        .into_iter()
        .flatten()
        .flatten()
        .any(|e| {
            let p = e.path();
            p.is_dir() && (e.file_name() == name || has_dir_named(&p, name))
        })
}

#[test]
fn a_signal_during_the_checkout_stops_the_run_at_once() {
    for (signal, code, name) in SIGNALS {
        let env = Env::new(&format!("sig_checkout_{name}"));
        fifo_in_place_of(&loose_object(&env, "v1.0.0:lib/dal.js"));
        let mut args = env.upgrade_args();
        args.extend(["--to", "1.1.0"].map(String::from));
        let mut upstep = start_upstep(&env, &args, &[]);
        wait_until("the checkout of v1.0.0", Duration::from_secs(60), || {
            has_dir_named(env.cache.path(), "v1.0.0")
        });
        std::thread::sleep(Duration::from_millis(500));
        assert!(env.project.executed().is_empty());
        send_signal(&upstep, signal);
        let what = format!("{name} during the checkout");
        let (got, took) = exit_within(&mut upstep, Duration::from_secs(10), &what);
        assert_eq!(got, code, "{what}");
        assert!(took < Duration::from_secs(5), "{what}: took {took:?}");
        assert_clean_stop(&env, &what, &[]);
    }
}

#[test]
fn a_signal_between_steps_journals_no_further_step() {
    for (signal, code, name) in SIGNALS {
        let env = Env::new(&format!("sig_between_{name}"));
        // v1.0.0's step runs; then v1.1.0's checkout holds the run between two steps.
        fifo_in_place_of(&loose_object(&env, "v1.1.0:migrations/003-export-only.js"));
        let mut args = env.upgrade_args();
        args.extend(["--to", "1.1.0"].map(String::from));
        let mut upstep = start_upstep(&env, &args, &[]);
        wait_until("v1.1.0's checkout", Duration::from_secs(90), || {
            env.status_of("exits") == "succeeded" && has_dir_named(env.cache.path(), "v1.1.0")
        });
        std::thread::sleep(Duration::from_millis(500));
        send_signal(&upstep, signal);
        let what = format!("{name} between steps");
        let (got, took) = exit_within(&mut upstep, Duration::from_secs(10), &what);
        assert_eq!(got, code, "{what}");
        assert!(took < Duration::from_secs(5), "{what}: took {took:?}");
        assert_clean_stop(&env, &what, &["exits"]);
        assert_eq!(env.status_of("exits"), "succeeded");
        assert_eq!(env.project.executed(), ["exits"]);
    }
}

#[test]
fn a_signal_during_the_setup_ends_its_commands_and_stops_the_run() {
    for (signal, code, name) in SIGNALS {
        let env = Env::new(&format!("sig_setup_{name}"));
        let pids = env.state.path().join("setup.pids");
        let setup = format!(
            "setup = [[\"sh\", \"-c\", \"echo $$ >> '{p}'; sleep 300 & echo $! >> '{p}'; wait\"]]\n",
            p = pids.display()
        );
        let map = env.project.map_variant("slow-setup", |m| {
            m.replacen(
                "done_lines = [\"end migration\"]\n",
                &format!("done_lines = [\"end migration\"]\n{setup}"),
                1,
            )
        });
        let mut args = env.upgrade_args_with(&map);
        args.extend(["--to", "1.1.0"].map(String::from));
        let mut upstep = start_upstep(&env, &args, &[]);
        wait_until("the setup command", Duration::from_secs(60), || {
            std::fs::read_to_string(&pids).is_ok_and(|t| t.lines().count() >= 2)
        });
        send_signal(&upstep, signal);
        let what = format!("{name} during the setup");
        let (got, took) = exit_within(&mut upstep, Duration::from_secs(10), &what);
        assert_eq!(got, code, "{what}");
        assert!(took < Duration::from_secs(5), "{what}: took {took:?}");
        for pid in std::fs::read_to_string(&pids).unwrap().lines() {
            let pid: u32 = pid.trim().parse().unwrap();
            assert!(
                pid_gone(pid),
                "{what}: setup process {pid} is still running"
            );
        }
        assert_clean_stop(&env, &what, &[]);
        assert!(env.project.executed().is_empty());
    }
}

#[test]
fn a_signal_during_node_provisioning_ends_npm_and_stops_the_run() {
    for (signal, code, name) in SIGNALS {
        let env = Env::new(&format!("sig_provision_{name}"));
        // A node version nobody has: upstep provisions it with `npm install`, here a fake npm
        // that never finishes.
        let bin = env.state.path().join("fake-bin");
        std::fs::create_dir_all(&bin).unwrap();
        let pidfile = env.state.path().join("npm.pid");
        script(
            &bin,
            "npm",
            &format!(
                "case \"$1\" in --version|-v) echo 10.0.0; exit 0;; esac\necho $$ > '{}'\nexec sleep 300",
                pidfile.display()
            ),
        );
        let node = crate::support::machine_node_version();
        let map = env.project.map_variant("unprovided-node", |m| {
            m.replace(&format!("node = \"{node}\""), "node = \"99.0.0\"")
        });
        let path = format!(
            "{}:{}",
            bin.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let mut args = env.upgrade_args_with(&map);
        args.extend(["--to", "1.1.0"].map(String::from));
        let mut upstep = start_upstep(&env, &args, &[("PATH", &path)]);
        wait_until("npm install", Duration::from_secs(60), || pidfile.exists());
        std::thread::sleep(Duration::from_millis(200));
        let npm: u32 = std::fs::read_to_string(&pidfile)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        send_signal(&upstep, signal);
        let what = format!("{name} during node provisioning");
        let (got, took) = exit_within(&mut upstep, Duration::from_secs(10), &what);
        assert_eq!(got, code, "{what}");
        assert!(took < Duration::from_secs(5), "{what}: took {took:?}");
        wait_until("npm to end", Duration::from_secs(3), || pid_gone(npm));
        let leftovers: Vec<String> = std::fs::read_dir(env.cache.path().join("toolchains"))
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(".tmp-"))
            .collect();
        assert!(
            leftovers.is_empty(),
            "{what}: {leftovers:?} left in the cache"
        );
        assert_clean_stop(&env, &what, &[]);
    }
}

/// A TCP proxy to the test server that sends the server's replies at `bytes_per_sec` per
/// connection: a large read (the backup's) takes long, small ones (lock, journal) do not.
fn throttling_proxy(bytes_per_sec: usize) -> u16 {
    use std::io::{Read, Write};
    let target = crate::support::mongo()
        .uri_for_db("x")
        .trim_start_matches("mongodb://")
        .split('/')
        .next()
        .unwrap()
        .to_string();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for client in listener.incoming().flatten() {
            let Ok(server) = std::net::TcpStream::connect(&target) else {
                continue;
            };
            let (mut c_read, mut s_write) =
                (client.try_clone().unwrap(), server.try_clone().unwrap());
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut c_read, &mut s_write);
                let _ = s_write.shutdown(std::net::Shutdown::Write);
            });
            let (mut s_read, mut c_write) = (server, client);
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 16 * 1024];
                loop {
                    let n = match s_read.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    if c_write.write_all(&buf[..n]).is_err() {
                        break;
                    }
                    std::thread::sleep(Duration::from_secs_f64(n as f64 / bytes_per_sec as f64));
                }
                let _ = c_write.shutdown(std::net::Shutdown::Both);
            });
        }
    });
    port
}

#[test]
fn a_signal_during_the_backup_stops_the_run_before_any_step() {
    let port = throttling_proxy(256 * 1024);
    for (signal, code, name) in SIGNALS {
        let env = Env::new(&format!("sig_backup_{name}"));
        // About 4 MB: some 16 s through the proxy.
        let (uri, db) = (env.uri.clone(), env.db.clone());
        crate::support::block_on(async move {
            let client = mongodb::Client::with_uri_str(&uri).await.unwrap();
            let docs: Vec<bson::Document> = (0..4000)
                .map(|i| doc! { "_id": i, "pad": "x".repeat(1000) })
                .collect();
            client
                .database(&db)
                .collection::<bson::Document>("bulk")
                .insert_many(docs)
                .await
                .unwrap();
        });
        let proxied = format!(
            "mongodb://127.0.0.1:{port}/{}?directConnection=true",
            env.db
        );
        let dir = env.state.path().join("backup");
        let mut args: Vec<String> = env
            .upgrade_args()
            .into_iter()
            .map(|a| if a == env.uri { proxied.clone() } else { a })
            .filter(|a| a != "--no-backup")
            .collect();
        args.extend(["--to", "1.1.0", "--backup", dir.to_str().unwrap()].map(String::from));
        let mut upstep = start_upstep(&env, &args, &[]);
        let data = dir.join(&env.db).join("bulk.bson");
        wait_until("the backup of bulk", Duration::from_secs(60), || {
            data.exists()
        });
        std::thread::sleep(Duration::from_millis(300));
        send_signal(&upstep, signal);
        let what = format!("{name} during the backup");
        let (got, took) = exit_within(&mut upstep, Duration::from_secs(10), &what);
        assert_eq!(got, code, "{what}");
        assert!(took < Duration::from_secs(5), "{what}: took {took:?}");
        assert!(
            !dir.join("upstep-manifest.json").exists(),
            "{what}: an interrupted backup looks complete"
        );
        assert_clean_stop(&env, &what, &[]);
        assert!(env.project.executed().is_empty());
    }
}

/// `signal` (a number) to the upstep under test.
fn send_signal(upstep: &std::process::Child, signal: i32) {
    use nix::sys::signal::{kill, Signal};
    let signal = Signal::try_from(signal).expect("a known signal");
    kill(nix::unistd::Pid::from_raw(upstep.id() as i32), signal).expect("signal upstep");
}
