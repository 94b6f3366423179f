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
        watch_finish(Duration::from_millis(500)),
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
        watch_finish(Duration::from_millis(300)),
        None,
    )
    .await;
    assert_eq!(outcome.ending, Ending::QuietUnverified);
    assert!(!group_alive(outcome.pgid));
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
    let mut watch = watch_finish(Duration::from_millis(200));
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
            unsafe { libc::kill(libc::getpid(), libc::SIGINT) };
        }
        lines.push(l.text);
    };
    let outcome = child
        .wait(watch_exits(), watcher.stop_receiver(), None, &mut on_line)
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
