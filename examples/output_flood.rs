//! Peak memory of upstep while a child floods its output (scripts/bench-runner.sh runs this).
//!
//!   cargo run --release --example output_flood -- [BYTES] [LINE_LEN] [LOG_FILE]
//!
//! Runs `yes <line> | head -c BYTES` through `spawn_child`/`wait`, counting lines in `on_line`
//! and logging to LOG_FILE (default: a temp file, removed afterwards), then prints the line
//! count, throughput and this process's peak RSS (VmHWM).

use std::time::{Duration, Instant};

use tokio::sync::watch;
use upstep::runner::{spawn_child, ChildSpec, StopRequest, Watch};

fn vm_hwm_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let bytes: u64 = args
        .next()
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(1_000_000_000);
    let line_len: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(100);
    let tmp = std::env::temp_dir();
    let (log_file, remove_log) = match args.next() {
        Some(path) => (path.into(), false),
        None => (
            tmp.join(format!("upstep-flood-{}.log", std::process::id())),
            true,
        ),
    };
    // `yes` adds the newline: LINE_LEN counts it.
    let line = "x".repeat(line_len.saturating_sub(1));
    let spec = ChildSpec {
        program: "sh".into(),
        args: vec!["-c".into(), format!("yes '{line}' | head -c {bytes}")],
        cwd: tmp,
        log_file,
        secrets: vec!["not-in-the-output".into()],
        ..ChildSpec::default()
    };
    let (_stop_tx, stop_rx) = watch::channel(StopRequest::None);
    let started = Instant::now();
    let child = spawn_child(&spec)?;
    let mut lines = 0u64;
    let mut seen = 0u64;
    let watch = Watch {
        grace: Duration::from_secs(2),
        ..Watch::default()
    };
    let outcome = child
        .wait(watch, stop_rx, None, &mut |l| {
            lines += 1;
            seen += l.text.len() as u64 + 1;
        })
        .await?;
    let secs = started.elapsed().as_secs_f64();
    if remove_log {
        let _ = std::fs::remove_file(&spec.log_file);
    }
    println!(
        "child printed {seen} bytes in {lines} lines of {line_len} bytes: {secs:.1} s, {:.0} MB/s, exit {:?}, tail {} lines",
        seen as f64 / secs / 1e6,
        outcome.exit_code,
        outcome.tail.len()
    );
    match vm_hwm_kib() {
        Some(kib) => println!("upstep peak RSS (VmHWM): {:.1} MB", kib as f64 / 1024.0),
        None => println!("upstep peak RSS: unknown (no /proc/self/status)"),
    }
    Ok(())
}
