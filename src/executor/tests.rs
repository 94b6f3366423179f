//! The executor's decisions, run against fakes of every effect (`fakes.rs`). Each fake writes
//! what it is asked to one log, so the tests read as the sequence a run goes through.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::effects::{Blocked, Effects, RunStore};
use super::fakes::*;
use super::{run, Questions, RunRequest, Summary, UpgradeOptions};
use crate::error::{Error, Result, SettledStep};
use crate::release_map::parse_map;
use crate::runner::process::{Ending, RunOutcome, StopRequest};
use crate::store::fingerprint::FpState;
use crate::store::journal::StepStatus;
use crate::ui::events::RunEvent;

/// Three steps at two tags: `a` at v1.1.0, then `b` and `c` at v2.0.0; each has a data check
/// on the collection named after it. `{setup}` is replaced by the era's setup, if any.
const MAP: &str = r#"
schema = 1
[project]
name = "demo"
migrations_dir = "migrations"
[eras.plain]
cwd = "."
run = ["node", "{script}"]
{setup}
[[releases]]
version = "1.0.0"
era = "plain"
node = "20.8.1"
[[releases]]
version = "1.1.0"
era = "plain"
node = "20.8.1"
[[releases]]
version = "2.0.0"
era = "plain"
node = "22.1.0"

[[migrations]]
id = "a"
title = "A"
introduced_in = "1.1.0"
script = "migrations/a.js"
run = "file"
exits = "yes"
idempotent = "guarded"
[[migrations.pending]]
collection = "a"
filter = { done = { "$exists" = false } }

[[migrations]]
id = "b"
title = "B"
introduced_in = "2.0.0"
script = "migrations/b.js"
run = "file"
exits = "yes"
idempotent = "yes"
[[migrations.pending]]
collection = "b"
filter = { done = { "$exists" = false } }

[[migrations]]
id = "c"
title = "C"
introduced_in = "2.0.0"
script = "migrations/c.js"
run = "file"
exits = "yes"
idempotent = "yes"
after = ["b"]
[[migrations.pending]]
collection = "c"
filter = { done = { "$exists" = false } }
"#;

/// Every fake, sharing one log.
struct World {
    log: Log,
    dir: tempfile::TempDir,
    store: Arc<FakeStore>,
    workspace: FakeWorkspace,
    children: FakeChildren,
    clock: Arc<FakeClock>,
    tunnel: Option<FakeTunnel>,
    prompt: FakePrompt,
    surroundings: FakeSurroundings,
    reporter: FakeReporter,
    setup: Option<&'static str>,
}

impl World {
    /// Every step pending in the data; each script, once run, applies its step.
    fn new() -> World {
        let log = Log::default();
        let dir = tempfile::tempdir().unwrap();
        let store = FakeStore::new(&log, dir.path());
        store.with(|s| {
            for id in ["a", "b", "c"] {
                s.data.insert(id.into(), FpState::Pending);
            }
        });
        let children = FakeChildren::new(&log, &store);
        for id in ["a", "b", "c"] {
            children.on(&format!("{id}.js"), applies());
        }
        World {
            workspace: FakeWorkspace::new(&log, &dir.path().join("worktrees")),
            children,
            clock: FakeClock::new(),
            tunnel: None,
            prompt: FakePrompt {
                log: log.clone(),
                blocked: Blocked::Stop,
                yes: true,
                backup: None,
            },
            surroundings: FakeSurroundings::new(&log),
            reporter: FakeReporter {
                log: log.clone(),
                events: Vec::new(),
            },
            setup: None,
            store,
            dir,
            log,
        }
    }

    fn with_tunnel(mut self) -> World {
        self.tunnel = Some(FakeTunnel::new(&self.log, &self.store));
        self
    }

    /// The signal watcher the run gets: a test requests stops through it.
    fn watcher(&self) -> Arc<crate::runner::signals::SignalWatcher> {
        self.surroundings.watcher.clone()
    }

    /// What one step's script does next (replacing the default: it applies its step).
    fn script(&self, id: &str, behaviour: Behaviour) {
        let key = format!("{id}.js");
        self.children.behaviour.lock().unwrap().remove(&key);
        self.children.on(&key, behaviour);
    }

    fn options(&self) -> UpgradeOptions {
        let setup = self.setup.unwrap_or("");
        let map = parse_map(&MAP.replace("{setup}", setup), "test.toml").unwrap();
        UpgradeOptions {
            map,
            from: None,
            to: semver::Version::new(2, 0, 0),
            include_unreleased: false,
            connection: Default::default(),
            flags: Default::default(),
            dry_run: false,
            keep_worktrees: false,
            overlap: super::Overlap {
                enabled: true,
                min_free_memory: 0,
            },
            repair_worktrees: false,
            backup_dir: None,
            toolchain: Default::default(),
            allow_provision: true,
            quiet_secs: None,
            step_timeout: None,
            grace: Duration::from_secs(1),
            lease: Duration::from_secs(3),
            lock_wait: Duration::ZERO,
            cache_root: self.dir.path().join("cache"),
            state_dir: self.dir.path().join("state"),
            check_time_limit: Duration::from_secs(5),
            approvals: Default::default(),
        }
    }

    async fn run_with(&mut self, options: UpgradeOptions, questions: Questions) -> Result<Summary> {
        let mut fx = Effects {
            store: self.store.clone(),
            workspace: Some(&self.workspace),
            children: &self.children,
            clock: self.clock.clone(),
            tunnel: self
                .tunnel
                .as_mut()
                .map(|t| t as &mut dyn super::effects::TunnelLink),
            prompt: &self.prompt,
            surroundings: &mut self.surroundings,
            reporter: &mut self.reporter,
        };
        run(RunRequest { options, questions }, &mut fx).await
    }

    async fn run(&mut self) -> Result<Summary> {
        let options = self.options();
        self.run_with(options, Questions::default()).await
    }

    fn status(&self, id: &str) -> Option<StepStatus> {
        self.store.entry(id).map(|e| e.status)
    }

    /// The journal's writes and events, in order.
    fn journal(&self) -> Vec<String> {
        self.log.only(&["journal ", "event "])
    }

    fn spawned(&self) -> Vec<String> {
        self.log.only(&["spawn "])
    }
}

fn applies() -> Behaviour {
    Behaviour::Exits {
        code: 0,
        data: Some(FpState::Applied),
    }
}

fn lines(text: &str) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect()
}

#[tokio::test]
async fn a_run_goes_lock_decide_per_tag_per_step_report_in_this_order() {
    let mut world = World::new();
    let mut options = world.options();
    options.backup_dir = Some(world.dir.path().join("backup"));
    let summary = world.run_with(options, Questions::default()).await.unwrap();
    assert_eq!((summary.ran, summary.succeeded, summary.skipped), (3, 3, 0));
    let flow: Vec<String> = world
        .log
        .lines()
        .into_iter()
        .filter(|l| !l.starts_with("check "))
        .collect();
    assert_eq!(
        flow,
        lines(
            "preflight 3 step(s): a,b,c
             signals watched
             lock taken
             event run-started
             backup
             event backup-taken
             checkout v1.1.0
             toolchain node 20.8.1
             journal a running
             report started a
             spawn a.js
             journal a child
             exit a.js
             report verified a applied
             journal a succeeded (exited)
             report finished a succeeded
             remove worktree v1.1.0
             checkout v2.0.0
             toolchain node 22.1.0
             journal b running
             report started b
             spawn b.js
             journal b child
             exit b.js
             report verified b applied
             journal b succeeded (exited)
             report finished b succeeded
             journal c running
             report started c
             spawn c.js
             journal c child
             exit c.js
             report verified c applied
             journal c succeeded (exited)
             report finished c succeeded
             remove worktree v2.0.0
             event run-finished
             lock released
             report summary succeeded"
        )
    );
}

#[tokio::test]
async fn each_data_check_is_read_once_before_the_run_and_once_after_each_step() {
    let mut world = World::new();
    world.run().await.unwrap();
    let checks = world.log.only(&["check "]);
    let before: Vec<&str> = checks[..3].iter().map(String::as_str).collect();
    let mut sorted = before.clone();
    sorted.sort();
    assert_eq!(sorted, ["check a", "check b", "check c"]);
    assert_eq!(&checks[3..], ["check a", "check b", "check c"]);
}

#[tokio::test]
async fn a_resumed_run_skips_what_the_journal_and_the_data_say_is_done() {
    let mut world = World::new();
    world.run().await.unwrap();
    let first = world.spawned().len();
    let summary = world.run().await.unwrap();
    assert_eq!((summary.ran, summary.skipped), (0, 3));
    assert_eq!(world.spawned().len(), first, "a rerun runs nothing");

    // The data alone says `a` is applied (someone ran it by hand): skipped, not journalled.
    let mut world = World::new();
    world
        .store
        .with(|s| s.data.insert("a".into(), FpState::Applied));
    let summary = world.run().await.unwrap();
    assert_eq!((summary.ran, summary.skipped), (2, 1));
    assert_eq!(world.spawned(), ["spawn b.js", "spawn c.js"]);
    assert_eq!(world.status("a"), None);
}

#[tokio::test]
async fn a_failed_step_stops_the_run_and_blocks_the_next_until_retry() {
    let mut world = World::new();
    world.script(
        "b",
        Behaviour::Exits {
            code: 3,
            data: None,
        },
    );
    let err = world.run().await.unwrap_err();
    assert!(matches!(err.cause(), Error::StepFailed(_)), "{err}");
    assert_eq!(world.status("b"), Some(StepStatus::Failed));
    assert!(!world.spawned().contains(&"spawn c.js".to_string()));
    assert!(
        !world
            .log
            .lines()
            .contains(&"remove worktree v2.0.0".to_string()),
        "a failed step keeps its worktree for the retry"
    );

    let err = world.run().await.unwrap_err();
    assert!(
        matches!(err.cause(), Error::NeedsDecision(m) if m.contains("b: journal: failed")),
        "{err}"
    );
    world.children.on("b.js", applies());
    let mut options = world.options();
    options.flags.retry = true;
    let summary = world.run_with(options, Questions::default()).await.unwrap();
    assert_eq!((summary.ran, summary.skipped), (2, 1));
    assert_eq!(world.status("c"), Some(StepStatus::Succeeded));
}

/// The line the fake preflight logged: how many steps, and which, it was asked to check.
fn preflight(world: &World) -> Vec<String> {
    world.log.only(&["preflight "])
}

#[tokio::test]
async fn the_preflight_checks_only_what_the_decision_runs_and_the_lock_reuses_its_reads() {
    // Nothing to do: the preflight checks no step, the run says so, nothing is read twice.
    let mut world = World::new();
    world.store.with(|s| s.data.clear());
    let summary = world.run().await.unwrap();
    assert_eq!(preflight(&world), ["preflight 0 step(s)"]);
    assert_eq!((summary.ran, summary.skipped), (0, 3));
    assert!(world.spawned().is_empty());
    assert_eq!(
        world.log.only(&["check "]).len(),
        3,
        "each data check read once, before the preflight: {:?}",
        world.log.lines()
    );
    let before_lock = world.log.lines().iter().position(|l| l == "lock taken");
    let last_check = world
        .log
        .lines()
        .iter()
        .rposition(|l| l.starts_with("check "));
    assert!(last_check < before_lock, "{:?}", world.log.lines());

    // What the data says is applied is not checked for.
    let mut world = World::new();
    world
        .store
        .with(|s| s.data.insert("a".into(), FpState::Applied));
    world.run().await.unwrap();
    assert_eq!(preflight(&world), ["preflight 2 step(s): b,c"]);
}

#[tokio::test]
async fn a_step_that_needs_a_decision_is_left_out_of_the_preflight_and_refused_in_the_lock() {
    let mut world = World::new();
    world.store.with(|s| {
        let mut entry = running_entry("b", dead_actor(), None);
        entry.status = StepStatus::Failed;
        s.entries.insert("b".into(), entry);
    });
    let err = world.run().await.unwrap_err();
    assert!(
        matches!(err.cause(), Error::NeedsDecision(m) if m.contains("b: journal: failed")),
        "{err}"
    );
    let checked = preflight(&world);
    assert_eq!(checked.len(), 1);
    assert!(!checked[0].contains('b'), "{checked:?}");
    assert!(world.spawned().is_empty(), "nothing runs past the refusal");
    assert!(world.log.lines().contains(&"lock released".to_string()));
}

#[tokio::test]
async fn a_step_that_needs_an_approval_is_preflighted_then_refused_until_approved() {
    let mut world = World::new();
    // `a`: not idempotent, and its data check cannot tell whether it ran.
    world
        .store
        .with(|s| s.data.insert("a".into(), FpState::Unknown));
    let risky = |world: &World| {
        let mut options = world.options();
        let map = MAP
            .replace("{setup}", "")
            .replace(r#"idempotent = "guarded""#, r#"idempotent = "no""#);
        options.map = parse_map(&map, "test.toml").unwrap();
        options
    };
    let err = world
        .run_with(risky(&world), Questions::default())
        .await
        .unwrap_err();
    assert!(
        matches!(err.cause(), Error::NeedsDecision(m) if m.contains("--approve a")),
        "{err}"
    );
    assert_eq!(preflight(&world), ["preflight 3 step(s): a,b,c"]);
    assert!(world.spawned().is_empty());

    let mut options = risky(&world);
    options.approvals.steps.insert("a".into());
    let summary = world.run_with(options, Questions::default()).await.unwrap();
    assert_eq!(summary.ran, 3);
}

/// The counts of the run's `summary` event: ran, succeeded, skipped, failed, status.
fn summary_event(world: &World) -> (usize, usize, usize, usize, String) {
    world
        .reporter
        .events
        .iter()
        .rev()
        .find_map(|e| match e {
            RunEvent::Summary {
                ran,
                succeeded,
                skipped,
                failed,
                status,
                ..
            } => Some((*ran, *succeeded, *skipped, *failed, status.clone())),
            _ => None,
        })
        .expect("a summary event")
}

fn settled(id: &str, tag: &str, status: &str) -> SettledStep {
    SettledStep {
        id: id.into(),
        tag: tag.into(),
        status: status.into(),
    }
}

#[tokio::test]
async fn a_failed_run_carries_the_steps_it_settled_and_still_prints_as_its_cause() {
    let mut world = World::new();
    world.script(
        "b",
        Behaviour::Exits {
            code: 3,
            data: None,
        },
    );
    let err = world.run().await.unwrap_err();
    assert!(err.to_string().starts_with("step b failed;"), "{err}");
    assert_eq!(err.code(), crate::error::ExitCode::StepFailed);
    let report = err.report().expect("a failed run carries its report");
    assert_eq!(
        report.steps,
        [
            settled("a", "v1.1.0", "succeeded"),
            settled("b", "v2.0.0", "failed")
        ]
    );
    assert_eq!(summary_event(&world), (2, 1, 0, 1, "step-failed".into()));

    // Refused before any step settled: the report is there, and empty.
    let err = world.run().await.unwrap_err();
    assert!(matches!(err.cause(), Error::NeedsDecision(_)), "{err}");
    assert_eq!(err.report().map(|r| r.steps.len()), Some(0));

    // A stop mid-step: the interrupted step is in the report, after the ones done before it.
    let mut world = World::new();
    let watcher = world.watcher();
    world.script(
        "b",
        Behaviour::UntilStopped {
            stop_with: Some(watcher),
        },
    );
    let err = world.run().await.unwrap_err();
    assert!(matches!(err.cause(), Error::Interrupted), "{err}");
    assert_eq!(
        err.report().map(|r| r.steps.clone()),
        Some(vec![
            settled("a", "v1.1.0", "succeeded"),
            settled("b", "v2.0.0", "interrupted")
        ])
    );
}

#[tokio::test]
async fn a_script_that_cannot_start_is_journalled_and_counted_failed() {
    let mut world = World::new();
    world.script("a", Behaviour::FailsToStart);
    let err = world.run().await.unwrap_err();
    assert!(
        matches!(err.cause(), Error::StepFailed(m) if m.starts_with("cannot start")),
        "the spawn's own error, not a generic one: {err}"
    );
    let entry = world.store.entry("a").unwrap();
    assert_eq!(entry.status, StepStatus::Failed);
    assert_eq!(entry.ended_by.as_deref(), Some("spawn-failed"));
    assert_eq!(
        err.report().map(|r| r.steps.clone()),
        Some(vec![settled("a", "v1.1.0", "failed")])
    );
    // Said as it is journalled: a step-finished event follows its step-started.
    let finished = world.reporter.events.iter().find_map(|e| match e {
        RunEvent::StepFinished {
            id,
            status,
            ended_by,
            reason,
            ..
        } => Some((id.clone(), status.clone(), ended_by.clone(), reason.clone())),
        _ => None,
    });
    let (id, status, ended_by, reason) = finished.expect("a step-finished event");
    assert_eq!((id.as_str(), status.as_str()), ("a", "failed"));
    assert_eq!(ended_by, "spawn-failed");
    assert!(reason.starts_with("cannot start"), "{reason}");
    // Journalled failed, so counted as a step that ran and failed.
    assert_eq!(summary_event(&world), (1, 0, 0, 1, "step-failed".into()));
    assert!(!world.spawned().iter().any(|s| s.contains("b.js")));
}

#[tokio::test]
async fn a_script_that_exits_0_but_leaves_pending_documents_failed() {
    let mut world = World::new();
    world.script(
        "a",
        Behaviour::Exits {
            code: 0,
            data: None,
        },
    );
    let err = world.run().await.unwrap_err();
    assert!(matches!(err.cause(), Error::StepFailed(_)), "{err}");
    let entry = world.store.entry("a").unwrap();
    assert_eq!(entry.status, StepStatus::Failed);
    assert!(entry
        .reason
        .unwrap()
        .contains("but it did not migrate: its data check still finds"),);
}

#[tokio::test]
async fn a_lease_lost_mid_step_interrupts_it_and_the_lock_is_not_released() {
    let mut world = World::new();
    world
        .store
        .with(|s| s.renewals_during = Some(("a".into(), Renewal::Lost)));
    world.script("a", Behaviour::UntilStopped { stop_with: None });
    let err = world.run().await.unwrap_err();
    assert!(
        matches!(err.cause(), Error::Locked(m) if m.contains("lost mid-step")),
        "{err}"
    );
    let entry = world.store.entry("a").unwrap();
    assert_eq!(entry.status, StepStatus::Interrupted);
    assert_eq!(entry.ended_by.as_deref(), Some("lease-lost"));
    assert!(world.log.lines().contains(&"lease lost".to_string()));
    assert!(
        !world.log.lines().contains(&"lock released".to_string()),
        "a lost lock is not ours to release"
    );
    assert_eq!(world.spawned(), ["spawn a.js"]);
    assert!(world
        .log
        .lines()
        .contains(&"report summary locked".to_string()));
}

#[tokio::test]
async fn heartbeat_failures_are_blips_the_step_still_succeeds() {
    let mut world = World::new();
    world
        .store
        .with(|s| s.renewals_during = Some(("a".into(), Renewal::Fails)));
    world.script(
        "a",
        Behaviour::Slow {
            ms: 50,
            data: Some(FpState::Applied),
        },
    );
    let summary = world.run().await.unwrap();
    assert_eq!(summary.succeeded, 3);
    let failures = world.log.only(&["lease renewal failed"]).len();
    assert!(
        failures >= 2,
        "the heartbeat kept trying: {failures} failure(s)"
    );
    assert_eq!(world.status("a"), Some(StepStatus::Succeeded));
    assert!(world.log.lines().contains(&"lock released".to_string()));
}

#[tokio::test]
async fn a_tunnel_dropped_before_the_work_is_reopened_and_the_safe_step_runs_again() {
    let mut world = World::new().with_tunnel();
    let tunnel = world.tunnel.as_ref().unwrap().state.clone();
    world.script("a", Behaviour::DropsTunnel { tunnel, data: None });
    world.children.on("a.js", applies());
    let summary = world.run().await.unwrap();
    assert_eq!(summary.succeeded, 3);
    assert_eq!(
        world.log.only(&["journal a", "tunnel", "spawn a"]),
        lines(
            "journal a running
             spawn a.js
             journal a child
             journal a interrupted (tunnel-dropped) (database out of reach)
             tunnel reopened
             journal a interrupted (tunnel-dropped)
             journal a running
             spawn a.js
             journal a child
             journal a succeeded (exited)"
        )
    );
    // While the database was out of reach, the local mirror kept the record.
    let mirrored = world.store.mirror().read();
    assert!(
        mirrored
            .iter()
            .any(|e| e["kind"] == "step-interrupted" && e["migration"] == "a"),
        "{mirrored:?}"
    );
}

#[tokio::test]
async fn a_tunnel_dropped_after_the_work_stops_with_choices_and_runs_nothing_twice() {
    let mut world = World::new().with_tunnel();
    let tunnel = world.tunnel.as_ref().unwrap().state.clone();
    world.script(
        "a",
        Behaviour::DropsTunnel {
            tunnel,
            data: Some(FpState::Applied),
        },
    );
    let err = world.run().await.unwrap_err();
    assert!(
        matches!(err.cause(), Error::NeedsDecision(m) if m.contains("interrupted by a dropped SSH tunnel") && m.contains("may have finished")),
        "{err}"
    );
    assert_eq!(world.spawned(), ["spawn a.js"]);
    assert_eq!(world.status("a"), Some(StepStatus::Interrupted));
}

#[tokio::test]
async fn a_tunnel_that_cannot_be_reopened_stops_the_run_naming_the_mirror() {
    let mut world = World::new().with_tunnel();
    world.tunnel.as_mut().unwrap().reopens = false;
    let tunnel = world.tunnel.as_ref().unwrap().state.clone();
    world.script("a", Behaviour::DropsTunnel { tunnel, data: None });
    let err = world.run().await.unwrap_err();
    assert!(
        matches!(err.cause(), Error::Tunnel { message, .. } if message.contains("could not be reopened") && message.contains("local journal mirror")),
        "{err}"
    );
    assert_eq!(world.spawned(), ["spawn a.js"]);
}

#[tokio::test]
async fn a_dead_runs_lock_is_taken_over_its_orphan_ended_and_its_step_settled() {
    let mut world = World::new();
    let dead = dead_actor();
    world.store.with(|s| {
        s.held_by = Some(lock_of(dead.clone()));
        s.entries
            .insert("a".into(), running_entry("a", dead.clone(), Some(777)));
    });
    world.children.alive_groups.lock().unwrap().push(777);
    // Without --retry, the interrupted step needs a decision.
    let err = world.run().await.unwrap_err();
    assert!(
        matches!(err.cause(), Error::NeedsDecision(m) if m.contains("a: journal: interrupted")),
        "{err}"
    );
    assert_eq!(
        world.journal()[..4],
        lines(
            "event orphan-ended a
             event lock-taken-over
             event run-started
             journal a interrupted (abandoned)"
        )
    );
    assert!(world.log.lines().contains(&"end group 777".to_string()));
    assert!(world
        .log
        .lines()
        .contains(&format!("lock taken over from {}", dead.run_id)));
    assert!(world.spawned().is_empty());

    let mut options = world.options();
    options.flags.retry = true;
    let summary = world.run_with(options, Questions::default()).await.unwrap();
    assert_eq!(summary.succeeded, 3);
}

#[tokio::test]
async fn a_step_running_elsewhere_with_a_fresh_heartbeat_is_left_alone() {
    let mut world = World::new();
    let mut elsewhere = crate::store::journal::Actor::current();
    elsewhere.host = "another-host".into();
    let mut entry = running_entry("a", elsewhere, Some(55));
    let now = bson::DateTime::now();
    entry.read_at = Some(now);
    entry.heartbeat_until = Some(bson::DateTime::from_millis(now.timestamp_millis() + 60_000));
    world.store.with(|s| s.entries.insert("a".into(), entry));
    let err = world.run().await.unwrap_err();
    assert!(
        matches!(err.cause(), Error::Locked(m) if m.contains("running elsewhere")),
        "{err}"
    );
    assert_eq!(world.status("a"), Some(StepStatus::Running));
    assert!(world.spawned().is_empty());
    assert!(world.log.lines().contains(&"lock released".to_string()));
}

#[tokio::test]
async fn a_lock_held_by_a_live_run_is_waited_for_then_refused() {
    let mut world = World::new();
    world.store.with(|s| {
        s.held_by = Some(lock_of(crate::store::journal::Actor::current()));
    });
    let mut options = world.options();
    options.lock_wait = Duration::from_secs(1);
    let err = world
        .run_with(options, Questions::default())
        .await
        .unwrap_err();
    assert!(
        matches!(err.cause(), Error::Locked(m) if m.contains("another upstep run holds the lock")),
        "{err}"
    );
    assert!(world.journal().is_empty(), "nothing was written");
    assert!(world.reporter.events.iter().any(|e| matches!(
        e,
        crate::ui::events::RunEvent::Notice { message } if message.starts_with("waiting for the run lock")
    )));
}

#[tokio::test]
async fn an_unverifiable_end_stops_the_run_with_choices() {
    let mut world = World::new();
    world.script("a", Behaviour::QuietUnverified);
    let err = world.run().await.unwrap_err();
    assert!(
        matches!(err.cause(), Error::NeedsDecision(m) if m.contains("a never exited") && m.contains("upstep mark a --applied")),
        "{err}"
    );
    let entry = world.store.entry("a").unwrap();
    assert_eq!(entry.status, StepStatus::EndedUnverified);
    assert_eq!(entry.ended_by.as_deref(), Some("quiet-window"));
    assert_eq!(world.spawned(), ["spawn a.js"]);
}

#[tokio::test]
async fn at_a_terminal_an_unverifiable_end_is_asked_about_and_the_run_goes_on() {
    let mut world = World::new();
    world.prompt.blocked = Blocked::MarkApplied;
    world.script("a", Behaviour::QuietUnverified);
    let guided = Questions {
        guided: true,
        ..Questions::default()
    };
    let options = world.options();
    let summary = world.run_with(options, guided).await.unwrap();
    assert_eq!((summary.ran, summary.skipped), (2, 1));
    assert_eq!(world.status("a"), Some(StepStatus::MarkedApplied));
    let asked = world.log.only(&["ask ", "next run", "journal a"]);
    assert_eq!(
        asked,
        lines(
            "ask run 3
             journal a running
             journal a child
             journal a ended-unverified (quiet-window)
             ask blocked a: MarkApplied
             journal a marked-applied
             next run"
        )
    );
}

#[tokio::test]
async fn at_a_terminal_the_go_ahead_and_the_backup_are_asked_before_the_preflight() {
    let mut world = World::new();
    world.prompt.backup = Some(PathBuf::from("backup-dir"));
    let questions = Questions {
        guided: true,
        target: false,
        backup: true,
    };
    let options = world.options();
    world.run_with(options, questions).await.unwrap();
    let order = world
        .log
        .only(&["ask ", "preflight", "signals", "backup", "lock taken"]);
    assert_eq!(
        order,
        lines(
            "ask run 3
             ask backup
             preflight 3 step(s): a,b,c
             signals watched
             lock taken
             backup"
        )
    );

    // A "no" to the go-ahead runs nothing and takes no lock.
    let mut world = World::new();
    world.prompt.yes = false;
    let options = world.options();
    let err = world.run_with(options, questions).await.unwrap_err();
    assert!(matches!(err.cause(), Error::Usage { .. }), "{err}");
    assert!(world.log.only(&["lock", "spawn"]).is_empty());
}

#[tokio::test]
async fn a_dry_run_reads_only() {
    let mut world = World::new();
    let mut options = world.options();
    options.dry_run = true;
    let summary = world.run_with(options, Questions::default()).await.unwrap();
    assert_eq!((summary.ran, summary.skipped), (3, 0));
    assert!(world.journal().is_empty());
    assert!(world.log.only(&["lock", "spawn", "checkout"]).is_empty());
}

/// A stop in `phase` ends the run as interrupted; no step after it starts.
async fn stopped_in(phase: &str) -> (World, Error) {
    let mut world = World::new();
    let watcher = world.watcher();
    let mut options = world.options();
    match phase {
        "backup" => {
            options.backup_dir = Some(world.dir.path().join("backup"));
            world.store.with(|s| s.stop_during_backup = Some(watcher));
        }
        "checkout" | "provisioning" => {
            *world.workspace.stop_during.lock().unwrap() = Some((
                if phase == "checkout" {
                    "checkout"
                } else {
                    "provisioning"
                },
                watcher,
            ));
        }
        "setup" => {
            world.setup = Some(r#"setup = [["pnpm", "install"]]"#);
            options = world.options();
            world.children.on(
                "install",
                Behaviour::UntilStopped {
                    stop_with: Some(watcher),
                },
            );
        }
        "between steps" => world.script(
            "b",
            Behaviour::ExitsThenStop {
                watcher,
                request: StopRequest::Now {
                    signal: libc::SIGINT,
                },
                data: Some(FpState::Applied),
            },
        ),
        "after this step" => world.script(
            "b",
            Behaviour::ExitsThenStop {
                watcher,
                request: StopRequest::AfterStep,
                data: Some(FpState::Applied),
            },
        ),
        "a step" => world.script(
            "a",
            Behaviour::UntilStopped {
                stop_with: Some(watcher),
            },
        ),
        _ => unreachable!(),
    }
    let err = world
        .run_with(options, Questions::default())
        .await
        .unwrap_err();
    (world, err)
}

#[tokio::test]
async fn a_signal_in_any_phase_stops_the_run_as_interrupted_and_starts_nothing_after() {
    for phase in ["backup", "checkout", "provisioning", "setup"] {
        let (world, err) = stopped_in(phase).await;
        assert!(matches!(err.cause(), Error::Interrupted), "{phase}: {err}");
        assert!(
            world.log.only(&["journal "]).is_empty(),
            "{phase}: no step was journalled: {:?}",
            world.log.lines()
        );
        assert!(
            world.spawned().iter().all(|s| !s.ends_with(".js")),
            "{phase}"
        );
        assert!(
            world.log.lines().contains(&"lock released".to_string()),
            "{phase}"
        );
        assert!(
            world.log.only(&["remove worktree"]).is_empty(),
            "{phase}: a stop leaves the worktree for the next run"
        );
    }
    // Between `b` and `c`, two steps of one tag.
    for phase in ["between steps", "after this step"] {
        let (world, err) = stopped_in(phase).await;
        assert!(matches!(err.cause(), Error::Interrupted), "{phase}: {err}");
        assert_eq!(world.status("b"), Some(StepStatus::Succeeded), "{phase}");
        assert_eq!(world.spawned(), ["spawn a.js", "spawn b.js"], "{phase}");
        assert_eq!(world.status("c"), None, "{phase}");
    }
    let (world, err) = stopped_in("a step").await;
    assert!(matches!(err.cause(), Error::Interrupted), "{err}");
    let entry = world.store.entry("a").unwrap();
    assert_eq!(entry.status, StepStatus::Interrupted);
    assert_eq!(entry.ended_by.as_deref(), Some("signal"));
    assert_eq!(world.spawned(), ["spawn a.js"]);
}

#[tokio::test]
async fn sigterm_stops_the_run_as_terminated() {
    let mut world = World::new();
    let watcher = world.watcher();
    world.script(
        "a",
        Behaviour::ExitsThenStop {
            watcher,
            request: StopRequest::Now {
                signal: libc::SIGTERM,
            },
            data: Some(FpState::Applied),
        },
    );
    let err = world.run().await.unwrap_err();
    assert!(matches!(err.cause(), Error::Terminated), "{err}");
    assert!(world
        .log
        .lines()
        .contains(&"report summary terminated".to_string()));
}

#[test]
fn how_a_script_ended_names_its_status() {
    use super::step::Classify;
    let plain = Classify {
        tunnel_down: false,
        tunnel_dropped: false,
        lock_lost: false,
        quiet: 30,
        step_timeout: Some(Duration::from_secs(60)),
    };
    let outcome = |ending, exit_code, signal| RunOutcome {
        ending,
        exit_code,
        signal,
        duration: Duration::from_secs(1),
        tail: Vec::new(),
        done_line: None,
        pid: 1,
        pgid: 1,
    };
    let cases = [
        (
            outcome(Ending::Exited, Some(0), None),
            StepStatus::Succeeded,
            "exited",
        ),
        (
            outcome(Ending::Exited, Some(2), None),
            StepStatus::Failed,
            "exited",
        ),
        (
            outcome(Ending::Exited, None, Some(9)),
            StepStatus::Failed,
            "exited",
        ),
        (
            outcome(
                Ending::DoneLine {
                    line: "done".into(),
                },
                None,
                None,
            ),
            StepStatus::Succeeded,
            "done-line",
        ),
        (
            outcome(Ending::QuietAndFinished, None, None),
            StepStatus::Succeeded,
            "quiet-window",
        ),
        (
            outcome(Ending::QuietUnverified, None, None),
            StepStatus::EndedUnverified,
            "quiet-window",
        ),
        (
            outcome(Ending::TimedOut, None, Some(15)),
            StepStatus::Failed,
            "timeout",
        ),
        (
            outcome(Ending::Stopped { signal: 2 }, None, Some(2)),
            StepStatus::Interrupted,
            "signal",
        ),
    ];
    for (outcome, status, ended_by) in &cases {
        let ended = plain.classify(outcome);
        assert_eq!(
            (ended.status, ended.ended_by.as_str()),
            (*status, *ended_by),
            "{outcome:?}"
        );
    }
    let stopped = outcome(Ending::Stopped { signal: 15 }, None, Some(15));
    let lost = Classify {
        lock_lost: true,
        ..plain
    };
    assert_eq!(lost.classify(&stopped).ended_by.as_str(), "lease-lost");
    // A dropped tunnel explains both a stop and a failure, before a lost lock does.
    let dropped = Classify {
        tunnel_dropped: true,
        lock_lost: true,
        ..plain
    };
    assert_eq!(
        dropped.classify(&stopped).ended_by.as_str(),
        "tunnel-dropped"
    );
    let down = Classify {
        tunnel_down: true,
        ..plain
    };
    let failed = down.classify(&outcome(Ending::Exited, Some(1), None));
    assert_eq!(
        (failed.status, failed.ended_by.as_str()),
        (StepStatus::Interrupted, "tunnel-dropped")
    );
    assert!(failed.reason.contains("exit 1"), "{}", failed.reason);
}

#[test]
fn the_data_check_after_a_success_can_fail_it_or_leave_it_unverified() {
    use super::verify::judge;
    use crate::store::fingerprint::FingerprintReport;
    let report = |state, reason: Option<&str>| FingerprintReport {
        state,
        checks: Vec::new(),
        reason: reason.map(String::from),
    };
    let pending = judge(&report(FpState::Pending, None), "exited 0".into());
    assert_eq!(pending.status, StepStatus::Failed);
    assert!(pending
        .reason
        .starts_with("exited 0, but it did not migrate"));
    let unknown = judge(
        &report(FpState::Unknown, Some("no check")),
        "exited 0".into(),
    );
    assert_eq!(
        (
            unknown.status,
            unknown.reason.as_str(),
            unknown.detail.as_str()
        ),
        (
            StepStatus::Succeeded,
            "exited 0; not verified: no check",
            "unknown"
        )
    );
    let applied = judge(&report(FpState::Applied, None), "exited 0".into());
    assert_eq!(applied.reason, "exited 0; verified by its data check");
}

/// Both tags install and build; the setup commands' fake children are named `install` and
/// `build` (their last word).
const TWO_PHASE_SETUP: &str = r#"setup = [["pnpm", "install"], ["pnpm", "nx", "build"]]"#;

/// Where `line` first appears in the log, from position `from` on.
fn position(log: &[String], line: &str, from: usize) -> usize {
    log[from..]
        .iter()
        .position(|l| l == line)
        .map(|i| i + from)
        .unwrap_or_else(|| panic!("{line:?} not after {from} in {log:#?}"))
}

#[tokio::test]
async fn the_next_tag_is_prepared_while_the_steps_of_this_one_run() {
    let mut world = World::new();
    world.setup = Some(TWO_PHASE_SETUP);
    world.script(
        "a",
        Behaviour::Slow {
            ms: 300,
            data: Some(FpState::Applied),
        },
    );
    let summary = world.run().await.unwrap();
    assert_eq!((summary.ran, summary.succeeded), (3, 3));
    let log = world.log.lines();
    let started_a = position(&log, "spawn a.js", 0);
    let ahead = position(&log, "checkout v2.0.0", 0);
    let second_install = position(
        &log,
        "spawn install",
        position(&log, "spawn install", 0) + 1,
    );
    let second_build = position(&log, "exit build", position(&log, "exit build", 0) + 1);
    let ended_a = position(&log, "exit a.js", 0);
    assert!(
        started_a < ahead && ahead < second_install && second_build < ended_a,
        "v2.0.0 is checked out, installed and built while a runs: {log:#?}"
    );
    // The steps and the journal keep their order; v1.1.0's worktree goes once a is settled.
    assert_eq!(
        world.journal(),
        lines(
            "event run-started
             journal a running
             journal a child
             journal a succeeded (exited)
             journal b running
             journal b child
             journal b succeeded (exited)
             journal c running
             journal c child
             journal c succeeded (exited)
             event run-finished"
        )
    );
    assert!(position(&log, "remove worktree v1.1.0", 0) < position(&log, "journal b running", 0));
    // The second tag's setup is not run again when its turn comes, and the saving is said.
    assert_eq!(world.spawned().len(), 4 + 3, "{:?}", world.spawned());
    let ahead_event = world.reporter.events.iter().find_map(|e| match e {
        crate::ui::events::RunEvent::Setup {
            git_ref,
            status,
            detail,
            ..
        } if status == "prepared-ahead" => Some((git_ref.clone(), detail.clone())),
        _ => None,
    });
    let (git_ref, detail) = ahead_event.expect("a prepared-ahead event");
    assert_eq!(git_ref, "v2.0.0");
    assert!(
        detail.starts_with("prepared while the steps of v1.1.0 ran"),
        "{detail}"
    );
}

#[tokio::test]
async fn without_overlap_or_memory_the_next_tag_waits_for_its_turn() {
    for (enabled, min_free_memory) in [(false, 0), (true, u64::MAX)] {
        let mut world = World::new();
        world.setup = Some(TWO_PHASE_SETUP);
        let mut options = world.options();
        options.overlap = super::Overlap {
            enabled,
            min_free_memory,
        };
        world.run_with(options, Questions::default()).await.unwrap();
        let log = world.log.lines();
        assert!(
            position(&log, "remove worktree v1.1.0", 0) < position(&log, "checkout v2.0.0", 0),
            "{enabled} {min_free_memory}: {log:#?}"
        );
        let said_why = world.reporter.events.iter().any(|e| {
            matches!(e, crate::ui::events::RunEvent::Notice { message }
                if message.contains("prepared after the steps of v1.1.0, not alongside them"))
        });
        assert_eq!(said_why, enabled, "memory short: said so");
    }
}

#[tokio::test]
async fn a_failed_preparation_ahead_is_reported_when_its_tag_comes_up() {
    let mut world = World::new();
    world.setup = Some(TWO_PHASE_SETUP);
    world.script(
        "a",
        Behaviour::Slow {
            ms: 200,
            data: Some(FpState::Applied),
        },
    );
    world.children.on(
        "build",
        Behaviour::Exits {
            code: 0,
            data: None,
        },
    );
    world.children.on(
        "build",
        Behaviour::Exits {
            code: 2,
            data: None,
        },
    );
    let err = world.run().await.unwrap_err();
    assert!(
        matches!(err.cause(), Error::StepFailed(m) if m.contains("the setup of v2.0.0 failed")),
        "{err}"
    );
    assert_eq!(world.status("a"), Some(StepStatus::Succeeded));
    assert_eq!(world.status("b"), None);
    // Its journal event is written after a is settled, though the build failed before.
    let log = world.log.lines();
    let failed_build = position(&log, "exit build", position(&log, "exit build", 0) + 1);
    assert!(failed_build < position(&log, "exit a.js", 0), "{log:#?}");
    assert_eq!(
        world.journal(),
        lines(
            "event run-started
             journal a running
             journal a child
             journal a succeeded (exited)
             event setup-failed"
        )
    );
}

#[tokio::test]
async fn a_failed_step_or_a_stop_cancels_the_preparation_ahead() {
    // A failed step: the next tag's install, still running, is dropped (never finishes).
    let mut world = World::new();
    world.setup = Some(TWO_PHASE_SETUP);
    world.script(
        "a",
        Behaviour::Slow {
            ms: 100,
            data: Some(FpState::Pending),
        },
    );
    world.children.on(
        "install",
        Behaviour::Exits {
            code: 0,
            data: None,
        },
    );
    world.children.on(
        "install",
        Behaviour::Slow {
            ms: 60_000,
            data: None,
        },
    );
    let err = world.run().await.unwrap_err();
    assert!(matches!(err.cause(), Error::StepFailed(_)), "{err}");
    let log = world.log.lines();
    assert_eq!(log.iter().filter(|l| *l == "spawn install").count(), 2);
    assert_eq!(
        log.iter().filter(|l| *l == "exit install").count(),
        1,
        "{log:#?}"
    );
    assert!(!world.journal().iter().any(|l| l.contains("setup-failed")));

    // A stop while both run: the step is interrupted, the preparation ends, nothing of
    // v2.0.0 is journalled, and its worktree keeps no setup stamp (the next run sets it up).
    let mut world = World::new();
    world.setup = Some(TWO_PHASE_SETUP);
    let watcher = world.watcher();
    world.script("a", Behaviour::UntilStopped { stop_with: None });
    world.children.on(
        "install",
        Behaviour::Exits {
            code: 0,
            data: None,
        },
    );
    world.children.on(
        "install",
        Behaviour::UntilStopped {
            stop_with: Some(watcher),
        },
    );
    let err = world.run().await.unwrap_err();
    assert!(matches!(err.cause(), Error::Interrupted), "{err}");
    assert_eq!(world.status("a"), Some(StepStatus::Interrupted));
    assert_eq!(
        world.journal().last().map(String::as_str),
        Some("journal a interrupted (signal)"),
        "{:?}",
        world.journal()
    );
    // v1.1.0's own build ran before a; v2.0.0's never starts.
    let builds = world
        .spawned()
        .iter()
        .filter(|s| *s == "spawn build")
        .count();
    assert_eq!(builds, 1, "{:?}", world.spawned());
    let stamp = world
        .dir
        .path()
        .join("worktrees/v2.0.0/.upstep-setup.stamp");
    assert!(!stamp.exists());
    assert!(world.log.only(&["remove worktree v2.0.0"]).is_empty());
}

#[test]
fn a_tool_journal_that_records_the_run_as_failed_fails_the_step() {
    use super::verify::judge;
    use crate::store::fingerprint::FingerprintReport;
    let report = FingerprintReport {
        state: FpState::Failed,
        checks: Vec::new(),
        reason: None,
    };
    let failed = judge(&report, "exited 0".into());
    assert_eq!(
        (
            failed.status,
            failed.reason.as_str(),
            failed.detail.as_str()
        ),
        (
            StepStatus::Failed,
            "exited 0, but its tool's journal records it as failed",
            "failed"
        )
    );
}

#[tokio::test]
async fn steps_vouched_for_by_from_are_journalled_as_marked_applied_with_that_word() {
    let mut world = World::new();
    // `a` (v1.1.0) has no data check that can tell; the operator says the data is at 1.1.0.
    world
        .store
        .with(|s| s.data.insert("a".into(), FpState::Unknown));
    let mut options = world.options();
    options.from = Some(semver::Version::new(1, 1, 0));
    let summary = world.run_with(options, Questions::default()).await.unwrap();
    assert_eq!((summary.ran, summary.skipped), (2, 1));
    assert_eq!(world.spawned(), ["spawn b.js", "spawn c.js"]);
    assert_eq!(world.status("a"), Some(StepStatus::MarkedApplied));
    let reason = world.store.entry("a").and_then(|e| e.reason).unwrap();
    assert!(
        reason.starts_with("vouched by --from 1.1.0 on "),
        "{reason}"
    );
    assert!(
        world
            .reporter
            .events
            .iter()
            .any(|e| format!("{e:?}")
                .contains("recorded 1 step as applied, vouched by --from 1.1.0: a")),
        "{:?}",
        world.reporter.events
    );
    // A later run without --from reads the same vouching: `a` is not run, nor planned.
    let summary = world.run().await.unwrap();
    assert_eq!((summary.ran, summary.skipped), (0, 3));

    // Older than --from but pending per its data check: it runs, nothing is vouched.
    let mut world = World::new();
    let mut options = world.options();
    options.from = Some(semver::Version::new(1, 1, 0));
    world.run_with(options, Questions::default()).await.unwrap();
    assert_eq!(world.status("a"), Some(StepStatus::Succeeded));
}
