//! A tag's setup as real Novu tags need it, on the fixture project: a stale workspace lockfile
//! repaired only where the map says so, every setup command's output kept in one log, the
//! latest setup line streamed, and a setup that fails half-way named with its tag, command,
//! last lines, log and fix, leaving no step started and nothing a later run trusts.

use std::path::{Path, PathBuf};

use crate::support::BASE_TIME;
use crate::upgrade::{text, Env};

/// A workspace whose lockfile says `^1.0.0` for a package the root's package.json now asks
/// as `^1.1.0`, resolved as a link into the workspace (Novu v0.8.0/v0.9.0 in miniature), and
/// an external dependency pinned as released.
const STALE_LOCK: &str = "lockfileVersion: 5.4

importers:

  .:
    specifiers:
      '@fx/lib': ^1.0.0
      left-pad: ^1.3.0
    dependencies:
      '@fx/lib': link:lib/fx
      left-pad: 1.3.0

packages:

  /left-pad/1.3.0:
    resolution: {integrity: sha512-XI5MPzVNApjAyhQzphX8BkmKsKUxD4LdyK24iZeQEQVL6NEwtdNtBhXXSGhJ4tYgVtLqZpVtxiJaTeaSVc/Xdg==}
    dev: false
";

/// What `pnpm install --frozen-lockfile` checks, in node: every specifier of the root
/// importer equals the package.json's (the fixture machine has no pnpm).
const FROZEN_CHECK: &str = r#"
const fs = require('fs');
const lock = fs.readFileSync('pnpm-lock.yaml', 'utf8');
const pkg = JSON.parse(fs.readFileSync('package.json', 'utf8'));
const block = lock.split('    specifiers:\n')[1].split('    dependencies:')[0];
for (const line of block.split('\n').filter(Boolean)) {
  const [key, value] = line.trim().split(': ');
  const name = key.replace(/^'|'$/g, '');
  if (pkg.dependencies[name] !== value) {
    console.log('Lockfile check: ' + name + ' ' + value + ' vs ' + pkg.dependencies[name]);
    console.error('ERR_PNPM_OUTDATED_LOCKFILE  Cannot install with "frozen-lockfile" because pnpm-lock.yaml is not up to date with package.json');
    process.exit(1);
  }
}
console.log('Lockfile is up to date, resolution step is skipped');
"#;

/// Put the workspace at a new commit and move v1.0.0 onto it (001 still runs there).
fn with_workspace(env: &Env) {
    let repo = &env.project.repo;
    let commit = repo.commit(
        &[
            ("pnpm-lock.yaml", Some(STALE_LOCK)),
            (
                "package.json",
                Some(r#"{ "name": "fixture", "private": true, "dependencies": { "@fx/lib": "^1.1.0", "left-pad": "^1.3.0" } }"#),
            ),
            ("lib/fx/package.json", Some(r#"{ "name": "@fx/lib", "version": "1.1.0" }"#)),
            ("setup/frozen-check.js", Some(FROZEN_CHECK)),
        ],
        BASE_TIME + 5 * 86_400,
    );
    let object = repo.repo.find_object(commit, None).unwrap();
    repo.repo.tag_lightweight("v1.0.0", &object, true).unwrap();
}

/// The fixture map with `setup` on its era, and optionally the lockfile repair on v1.0.0.
fn map_with_setup(env: &Env, name: &str, second: &str, repair: bool) -> PathBuf {
    let second = second.to_string();
    env.project.map_variant(name, move |m| {
        let setup = format!(
            "done_lines = [\"end migration\"]\nsetup = [\n  [\"node\", \"setup/frozen-check.js\"],\n  {second},\n  [\"node\", \"-e\", \"console.log('env file written')\"],\n]\n"
        );
        let mut m = m.replacen("done_lines = [\"end migration\"]\n", &setup, 1);
        if repair {
            m = m.replacen(
                "version = \"1.0.0\"\n",
                "version = \"1.0.0\"\nrepair_lockfile = \"pnpm-lock.yaml\"\n",
                1,
            );
        }
        m
    })
}

const BUILD_OK: &str =
    "[\"node\", \"-e\", \"console.log('building @fx/lib'); console.error('a warning on stderr'); console.log('built @fx/lib')\"]";
const BUILD_FAILS: &str = "[\"node\", \"-e\", \"console.log('compiling @fx/lib'); console.error('error TS2307: Cannot find module x'); process.exit(3)\"]";

pub(crate) fn files_under(dir: &Path, name: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = entry.path();
            if p.is_dir() {
                stack.push(p);
            } else if p
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(name))
            {
                out.push(p);
            }
        }
    }
    out
}

/// The setup log of the latest run (one per run).
pub(crate) fn setup_log(env: &Env) -> String {
    let logs = files_under(env.state.path(), "setup-v1.0.0");
    let latest = logs
        .iter()
        .max_by_key(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
        .unwrap_or_else(|| panic!("no setup log under {}", env.state.path().display()));
    std::fs::read_to_string(latest).unwrap()
}

#[test]
fn a_stale_lockfile_fails_the_setup_unless_the_map_names_it_then_it_is_repaired_and_restored() {
    let env = Env::new("stale_lockfile");
    with_workspace(&env);

    // Without the declaration: the frozen install refuses, and upstep names what to do.
    let map = map_with_setup(&env, "no-repair", BUILD_OK, false);
    let out = env.upgrade_with(&map, &["--to", "1.0.0"]);
    assert_eq!(out.status.code(), Some(8), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    for needle in [
        "the setup of v1.0.0 failed",
        "`node setup/frozen-check.js` exit 1",
        "ERR_PNPM_OUTDATED_LOCKFILE",
        "full log: ",
        "fix: the tag's lockfile does not match",
        "repair_lockfile",
    ] {
        assert!(err.contains(needle), "{needle:?} missing:\n{err}");
    }
    assert_eq!(
        env.status_of("exits"),
        "-",
        "no step may start after a failed setup"
    );
    assert!(env.project.executed().is_empty());
    // The lockfile the map does not name was not touched (where the worktree is kept).
    for lock in files_under(env.cache.path(), "pnpm-lock.yaml") {
        assert_eq!(std::fs::read_to_string(&lock).unwrap(), STALE_LOCK);
    }

    // Declared: the link specifier is reconciled for the setup, the external one stays as
    // released, the run goes on, and the released lockfile is back afterwards.
    let map = map_with_setup(&env, "repair", BUILD_OK, true);
    let out = env.upgrade_with(&map, &["--to", "1.0.0", "--json", "--keep-worktrees"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(env.status_of("exits"), "succeeded");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let repaired = stdout
        .lines()
        .find(|l| l.contains("\"status\":\"lockfile-repaired\""))
        .unwrap_or_else(|| panic!("no lockfile-repaired event:\n{stdout}"));
    assert!(
        repaired.contains("reconciled 1 stale workspace-link specifier"),
        "{repaired}"
    );
    let log = setup_log(&env);
    assert!(log.contains("#   .: @fx/lib ^1.0.0 -> ^1.1.0"), "{log}");
    assert!(!log.contains("left-pad ^1.3.0 ->"), "{log}");
    assert!(log.contains("Lockfile is up to date"), "{log}");
    let locks = files_under(env.cache.path(), "pnpm-lock.yaml");
    assert_eq!(locks.len(), 1, "{locks:?}");
    assert_eq!(std::fs::read_to_string(&locks[0]).unwrap(), STALE_LOCK);
    let journal = env.find("upstep_events", bson::doc! { "kind": "lockfile-repaired" });
    assert_eq!(journal.len(), 1, "{journal:?}");
    let details = journal[0].get_document("details").unwrap();
    assert_eq!(details.get_i64("edits"), Ok(1), "{details}");
    assert_eq!(details.get_str("file"), Ok("pnpm-lock.yaml"));
}

#[test]
fn the_setup_log_keeps_every_command_and_the_latest_line_is_streamed() {
    let env = Env::new("setup_log");
    with_workspace(&env);
    let map = map_with_setup(&env, "log", BUILD_OK, true);
    let out = env.upgrade_with(&map, &["--to", "1.0.0", "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    let log = setup_log(&env);
    // A header per command, each command's output below its own header, in order.
    let order = [
        "# upstep setup of v1.0.0",
        "===== [1/3] node setup/frozen-check.js",
        "Lockfile is up to date",
        "===== exit 0 after",
        "===== [2/3] node -e",
        "building @fx/lib",
        "a warning on stderr",
        "built @fx/lib",
        "===== [3/3] node -e",
        "env file written",
    ];
    let mut at = 0;
    for needle in order {
        let found = log[at..]
            .find(needle)
            .unwrap_or_else(|| panic!("{needle:?} missing after byte {at}:\n{log}"));
        at += found + needle.len();
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout
            .lines()
            .any(|l| l.contains("\"event\":\"setup-output\"")
                && l.contains("\"git_ref\":\"v1.0.0\"")),
        "no setup-output event:\n{stdout}"
    );
    let finished = stdout
        .lines()
        .filter(|l| l.contains("\"status\":\"finished\""))
        .count();
    assert_eq!(finished, 3, "{stdout}");
}

#[test]
fn a_setup_that_fails_half_way_names_everything_and_is_never_trusted_later() {
    let env = Env::new("setup_half_way");
    with_workspace(&env);
    let map = map_with_setup(&env, "fails", BUILD_FAILS, true);
    let out = env.upgrade_with(&map, &["--to", "1.0.0"]);
    assert_eq!(out.status.code(), Some(8), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    for needle in [
        "the setup of v1.0.0 failed",
        "exit 3 after",
        "(command 2 of 3)",
        "no step of v1.0.0 was started",
        "compiling @fx/lib",
        "error TS2307: Cannot find module x",
        "full log: ",
        "fix: ",
    ] {
        assert!(err.contains(needle), "{needle:?} missing:\n{err}");
    }
    let log = setup_log(&env);
    assert!(
        log.contains("Lockfile is up to date"),
        "the first command's output is kept:\n{log}"
    );
    assert!(log.contains("===== exit 3 after"), "{log}");
    assert!(
        !log.contains("[3/3]"),
        "nothing runs after the failed command:\n{log}"
    );
    assert_eq!(env.status_of("exits"), "-");
    let failed = env.find("upstep_events", bson::doc! { "kind": "setup-failed" });
    assert_eq!(failed.len(), 1, "{failed:?}");
    // The repaired lockfile was put back, and no stamp says the tag is prepared.
    for lock in files_under(env.cache.path(), "pnpm-lock.yaml") {
        assert_eq!(std::fs::read_to_string(&lock).unwrap(), STALE_LOCK);
    }
    assert!(files_under(env.cache.path(), ".upstep-setup.stamp").is_empty());

    // Fixed: the next run sets the tag up again from the start and runs the step.
    let map = map_with_setup(&env, "fixed", BUILD_OK, true);
    let out = env.upgrade_with(&map, &["--to", "1.0.0"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(env.status_of("exits"), "succeeded");
}

#[test]
fn an_unreachable_download_blocks_plan_and_upgrade_before_anything_runs() {
    let env = Env::new("download_blocked");
    // Port 443 on the loopback interface: nothing listens there, the probe is refused at once.
    let map = env.project.map_variant("download", |m| {
        m.replacen(
            "version = \"1.0.0\"\nera = \"app\"\nnode = \"",
            "version = \"1.0.0\"\nera = \"app\"\ndownloads = [{ dependency = \"left-pad\", url = \"https://127.0.0.1/left-pad.tgz\", via = \"@fx/lib\" }]\nnode = \"",
            1,
        )
    });
    let proxies = ["HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"];
    let map_arg = map.display().to_string();
    let repo_arg = env.project.repo_path().display().to_string();
    let mut plan = env.command(&[
        "plan", "--map", &map_arg, "--repo", &repo_arg, "--from", "0.9.0", "--to", "1.0.0",
    ]);
    for var in proxies {
        plan.env_remove(var);
    }
    let out = plan.output().unwrap();
    assert_eq!(out.status.code(), Some(5), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("BLOCKED: v1.0.0's install needs left-pad (via @fx/lib) from https://127.0.0.1/left-pad.tgz, and 127.0.0.1 cannot be reached"),
        "{stdout}"
    );

    let mut args = env.upgrade_args_with(&map);
    args.extend(["--to".to_string(), "1.0.0".to_string()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut upgrade = env.command(&args);
    for var in proxies {
        upgrade.env_remove(var);
    }
    let out = upgrade.output().unwrap();
    assert_eq!(out.status.code(), Some(5), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("left-pad"), "{err}");
    assert!(
        err.contains("fix: give this machine HTTPS access to 127.0.0.1"),
        "{err}"
    );
    assert_eq!(env.status_of("exits"), "-", "no step may start");
    assert!(env.project.executed().is_empty());
}
