//! Times switching one upstep worktree back and forth between two tags.
//!
//! `cargo run --release --example worktree_bench -- <repo> <cache> <tagA> <tagB> <n>`
//! creates (untimed) a worktree of `<tagA>` under `<cache>`, then switches it `<n>` times,
//! alternating B, A, B, ..., and prints the elapsed seconds of the switches on stdout.
//! Used by `scripts/bench-worktree.sh`.

use std::path::Path;
use std::process::ExitCode;
use std::time::Instant;

use upstep::git::{GitRepo, Worktrees};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [repo, cache, tag_a, tag_b, n] = args.as_slice() else {
        eprintln!("usage: worktree_bench <repo> <cache> <tagA> <tagB> <n>");
        return ExitCode::from(2);
    };
    let Ok(switches) = n.parse::<usize>() else {
        eprintln!("<n> must be a number, got {n}");
        return ExitCode::from(2);
    };
    match run(Path::new(repo), Path::new(cache), tag_a, tag_b, switches) {
        Ok(seconds) => {
            println!("{seconds:.3}");
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("{err}");
            ExitCode::from(err.code().as_i32() as u8)
        }
    }
}

fn run(
    repo: &Path,
    cache: &Path,
    tag_a: &str,
    tag_b: &str,
    switches: usize,
) -> upstep::error::Result<f64> {
    let repo = GitRepo::open(repo)?;
    let tags = [repo.tag(tag_a)?, repo.tag(tag_b)?];
    let worktrees = Worktrees::new(cache);
    let mut worktree = worktrees.ensure(&repo, &tags[0])?;
    let started = Instant::now();
    for i in 0..switches {
        worktree = worktrees.switch(&worktree, &repo, &tags[(i + 1) % 2])?;
    }
    Ok(started.elapsed().as_secs_f64())
}
