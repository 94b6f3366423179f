//! The journal, the run lock and the fingerprint evaluator against the real test server.

use std::time::Duration;

use bson::{doc, Document};
use upstep::release_map::{Check, CheckKind, Fingerprint};
use upstep::store::fingerprint::{evaluate, EvalOptions, FpState};
use upstep::store::journal::{Actor, EndedBy, Journal, StepEnd, StepStart, StepStatus};
use upstep::store::lock::{Acquire, RunLock};
use upstep::store::mirror::Mirror;
use upstep::store::Store;

use crate::support::{fresh_db_name, mongo};

/// Runs a future that borrows from the test on a runtime of its own.
fn block_on<F: std::future::Future>(fut: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
        .block_on(fut)
}

async fn store_for(test: &str) -> Store {
    let uri = mongo().uri_for_db(&fresh_db_name(test));
    Store::connect(&uri)
        .await
        .expect("connect to the test server")
}

fn actor(name: &str) -> Actor {
    let mut a = Actor::current();
    a.user = name.to_string();
    a
}

fn journal(store: &Store, actor: Actor) -> (Journal, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mirror = Mirror::for_database(dir.path(), &store.redacted_uri);
    (Journal::new(store, actor, mirror), dir)
}

#[test]
fn a_uri_without_database_or_server_gives_a_clear_error() {
    let err = block_on(Store::connect(&mongo().uri))
        .err()
        .expect("no database in the URI");
    assert!(err.to_string().contains("names no database"), "{err}");
    let port = crate::support::free_port();
    let uri =
        format!("mongodb://u:CanaryPw-7f3a9@127.0.0.1:{port}/db?serverSelectionTimeoutMS=500");
    let err = block_on(Store::connect(&uri))
        .err()
        .expect("nothing listens there");
    let text = err.to_string();
    assert!(text.contains("cannot reach MongoDB"), "{text}");
    assert!(!text.contains("CanaryPw-7f3a9"), "{text}");
    assert_eq!(err.code(), upstep::error::ExitCode::Connection);
}

#[test]
fn the_lock_admits_one_holder_and_is_taken_over_after_its_lease() {
    block_on(async {
        let store = store_for("lock_basic").await;
        let lock = RunLock::new(&store);
        let (alice, bob) = (actor("alice"), actor("bob"));
        let lease = Duration::from_millis(800);
        assert!(matches!(
            lock.try_acquire(&alice, lease).await.unwrap(),
            Acquire::Acquired { took_over: None }
        ));
        match lock.try_acquire(&bob, lease).await.unwrap() {
            Acquire::Held(doc) => {
                assert_eq!(doc.holder.run_id, alice.run_id);
                assert!(doc.describe().contains("alice"));
            }
            other => panic!("bob must not get the lock: {other:?}"),
        }
        assert!(lock.renew(&alice, lease).await.unwrap());
        assert!(
            !lock.renew(&bob, lease).await.unwrap(),
            "bob holds nothing to renew"
        );
        tokio::time::sleep(Duration::from_millis(1200)).await;
        match lock.try_acquire(&bob, lease).await.unwrap() {
            Acquire::Acquired {
                took_over: Some(old),
            } => assert_eq!(old.holder.run_id, alice.run_id),
            other => panic!("bob should take over the expired lease: {other:?}"),
        }
        assert!(
            !lock.renew(&alice, lease).await.unwrap(),
            "alice lost the lease"
        );
        lock.release(&alice).await.unwrap(); // not hers any more: a no-op
        assert!(lock.current().await.unwrap().is_some());
        lock.release(&bob).await.unwrap();
        assert!(lock.current().await.unwrap().is_none());
    });
}

#[test]
fn racing_runs_get_exactly_one_lock() {
    let winners = block_on(async {
        let store = store_for("lock_race").await;
        let attempts = (0..8).map(|i| {
            let store = store.clone();
            async move {
                let lock = RunLock::new(&store);
                let me = actor(&format!("racer{i}"));
                matches!(
                    lock.try_acquire(&me, Duration::from_secs(30)).await,
                    Ok(Acquire::Acquired { .. })
                )
            }
        });
        futures_util::future::join_all(attempts).await
    });
    assert_eq!(winners.iter().filter(|w| **w).count(), 1, "{winners:?}");
}

#[test]
fn a_waiting_run_takes_the_lock_when_the_holder_releases_mid_attempt() {
    // A holder that releases between a waiter's upsert and its read-back must make the waiter
    // try again, not fail ("the run lock changed hands", seen under load).
    let errors = block_on(async {
        let store = store_for("lock_release_race").await;
        let lock = RunLock::new(&store);
        let holder = actor("holder");
        let waiter = actor("waiter");
        let mut errors = Vec::new();
        for round in 0..200u64 {
            assert!(matches!(
                lock.try_acquire(&holder, Duration::from_secs(30)).await,
                Ok(Acquire::Acquired { .. })
            ));
            let release = {
                let store = store.clone();
                let holder = holder.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_micros(round % 7 * 300)).await;
                    RunLock::new(&store).release(&holder).await.unwrap();
                })
            };
            loop {
                match lock.try_acquire(&waiter, Duration::from_secs(30)).await {
                    Ok(Acquire::Acquired { .. }) => break,
                    Ok(Acquire::Held(_)) => tokio::task::yield_now().await,
                    Err(e) => {
                        errors.push(e.to_string());
                        break;
                    }
                }
            }
            release.await.unwrap();
            lock.release(&waiter).await.unwrap();
        }
        errors
    });
    assert!(
        errors.is_empty(),
        "{} errors, first: {:?}",
        errors.len(),
        errors.first()
    );
}

#[test]
fn a_dead_holder_can_be_taken_over_at_once() {
    block_on(async {
        let store = store_for("lock_dead").await;
        let lock = RunLock::new(&store);
        let mut dead = actor("ghost");
        dead.pid = 999_999_999; // no such process on this host
        let me = actor("me");
        lock.try_acquire(&dead, Duration::from_secs(600))
            .await
            .unwrap();
        let Acquire::Held(doc) = lock
            .try_acquire(&me, Duration::from_secs(60))
            .await
            .unwrap()
        else {
            panic!()
        };
        assert!(doc.holder.is_dead_local_process());
        assert!(
            !actor("alive").is_dead_local_process(),
            "this test process is alive"
        );
        assert!(lock
            .take_over(&doc, &me, Duration::from_secs(60))
            .await
            .unwrap());
        assert_eq!(
            lock.current().await.unwrap().unwrap().holder.run_id,
            me.run_id
        );
    });
}

#[test]
fn the_journal_records_steps_marks_and_events() {
    block_on(async {
        let store = store_for("journal_basic").await;
        let (journal, dir) = journal(&store, actor("runner"));
        let start = StepStart {
            id: "m1",
            tag: "v1.0.0",
            commit: "abc",
            script: "m/1.js",
            script_sha256: "00",
            backup: None,
        };
        journal.begin_step(&start).await.unwrap();
        journal.record_child("m1", 1234, 1234).await.unwrap();
        let entries = journal.entries().await.unwrap();
        assert_eq!(entries["m1"].status, StepStatus::Running);
        assert_eq!(entries["m1"].child_pgid, Some(1234));
        assert_eq!(entries["m1"].attempts, 1);
        let end = StepEnd {
            exit_code: Some(0),
            duration_ms: 5,
            ..StepEnd::without_outcome(EndedBy::Exited, "ok")
        };
        journal
            .settle("m1", StepStatus::Succeeded, &end)
            .await
            .unwrap();
        let entries = journal.entries().await.unwrap();
        assert_eq!(entries["m1"].status, StepStatus::Succeeded);
        assert_eq!(entries["m1"].child_pgid, None);
        assert!(entries["m1"].finished_at.is_some());

        // Another run cannot settle an entry this run owns.
        let (other, _d) = self::journal(&store, actor("other"));
        journal
            .begin_step(&StepStart {
                id: "m2",
                ..start.clone()
            })
            .await
            .unwrap();
        assert!(other.settle("m2", StepStatus::Failed, &end).await.is_err());
        assert_eq!(
            journal.entries().await.unwrap()["m2"].status,
            StepStatus::Running
        );

        journal
            .mark("m3", StepStatus::MarkedApplied, "migrated by hand")
            .await
            .unwrap();
        assert_eq!(
            journal.entries().await.unwrap()["m3"].status,
            StepStatus::MarkedApplied
        );

        let kinds: Vec<String> = journal
            .events()
            .await
            .unwrap()
            .iter()
            .map(|e| e.get_str("kind").unwrap().to_string())
            .collect();
        assert_eq!(
            kinds,
            ["step-started", "step-finished", "step-started", "marked"]
        );
        let mirrored = journal.mirror().read();
        assert_eq!(mirrored.len(), 4, "the local mirror holds every event");
        assert!(journal.mirror().path().starts_with(dir.path()));
    });
}

fn check(collection: &str, kind: CheckKind) -> Check {
    Check {
        collection: collection.into(),
        description: None,
        kind,
    }
}

#[test]
fn fingerprints_classify_pending_applied_absent_and_rejected() {
    block_on(async {
        let store = store_for("fingerprints").await;
        let db = store.db.clone();
        let opts = EvalOptions {
            time_limit: Duration::from_secs(10),
            count_limit: Some(100),
        };
        let messages = db.collection::<Document>("messages");
        messages
            .insert_many(vec![
                doc! { "n": 1, "seen": true },
                doc! { "n": 2 },
                doc! { "n": 3 },
            ])
            .await
            .unwrap();
        db.create_collection("empty").await.unwrap();

        let missing_seen = Fingerprint::Checks(vec![check(
            "messages",
            CheckKind::Filter(doc! { "seen": { "$exists": false } }),
        )]);
        let report = evaluate(&db, &missing_seen, opts).await;
        assert_eq!(report.state, FpState::Pending);
        assert_eq!(report.checks[0].count, Some(2));
        assert!(report.checks[0].example_id.is_some());

        messages
            .update_many(doc! {}, doc! { "$set": { "seen": false } })
            .await
            .unwrap();
        assert_eq!(
            evaluate(&db, &missing_seen, opts).await.state,
            FpState::Applied
        );

        let pipeline = Fingerprint::Checks(vec![check(
            "messages",
            CheckKind::Pipeline(vec![
                doc! { "$group": { "_id": "$seen", "n": { "$sum": 1 } } },
                doc! { "$match": { "n": { "$gt": 1 } } },
                doc! { "$limit": 1 },
            ]),
        )]);
        assert_eq!(evaluate(&db, &pipeline, opts).await.state, FpState::Pending);
        assert_eq!(
            evaluate(
                &db,
                &pipeline,
                EvalOptions {
                    count_limit: None,
                    ..opts
                }
            )
            .await
            .state,
            FpState::Pending
        );

        let absent_coll = Fingerprint::Checks(vec![check("nowhere", CheckKind::Filter(doc! {}))]);
        assert_eq!(
            evaluate(&db, &absent_coll, opts).await.state,
            FpState::NotApplicable
        );
        let empty_coll =
            Fingerprint::Checks(vec![check("empty", CheckKind::Filter(doc! { "x": 1 }))]);
        assert_eq!(
            evaluate(&db, &empty_coll, opts).await.state,
            FpState::NotApplicable
        );

        let must_be_absent = Fingerprint::Checks(vec![check("messages", CheckKind::Absent)]);
        assert_eq!(
            evaluate(&db, &must_be_absent, opts).await.state,
            FpState::Pending
        );
        let gone = Fingerprint::Checks(vec![check("logs", CheckKind::Absent)]);
        assert_eq!(evaluate(&db, &gone, opts).await.state, FpState::Applied);

        // The test server rejects $or inside $elemMatch (real MongoDB accepts it): the check
        // must come back unknown with the server's reason, never applied.
        let rejected = Fingerprint::Checks(vec![check(
            "messages",
            CheckKind::Filter(
                doc! { "tags": { "$elemMatch": { "$or": [{ "a": 1 }, { "b": 2 }] } } },
            ),
        )]);
        let report = evaluate(&db, &rejected, opts).await;
        if report.state != FpState::Applied {
            assert_eq!(report.state, FpState::Unknown, "{report:?}");
            assert!(
                report.checks[0]
                    .reason
                    .as_deref()
                    .unwrap_or("")
                    .contains("rejected"),
                "{report:?}"
            );
        }

        let mixed = Fingerprint::Checks(vec![
            check(
                "messages",
                CheckKind::Filter(doc! { "seen": { "$exists": false } }),
            ),
            check("nowhere", CheckKind::Filter(doc! {})),
        ]);
        assert_eq!(evaluate(&db, &mixed, opts).await.state, FpState::Applied);
        let none = Fingerprint::Unknown {
            reason: "heuristic only".into(),
        };
        assert_eq!(evaluate(&db, &none, opts).await.state, FpState::Unknown);
    });
}

/// Raw access to a test database's collections.
fn raw(store: &Store, coll: &str) -> mongodb::Collection<Document> {
    store.db.collection::<Document>(coll)
}

async fn server_now(store: &Store) -> bson::DateTime {
    let hello = store.db.run_command(doc! { "hello": 1 }).await.unwrap();
    *hello.get_datetime("localTime").unwrap()
}

#[test]
fn the_lease_is_server_time_plus_the_lease_as_a_date() {
    block_on(async {
        let store = store_for("lease_date").await;
        let lock = RunLock::new(&store);
        let me = actor("me");
        let before = server_now(&store).await.timestamp_millis();
        lock.try_acquire(&me, Duration::from_secs(600))
            .await
            .unwrap();
        let after = server_now(&store).await.timestamp_millis();
        let doc = raw(&store, "upstep_lock")
            .find_one(doc! {})
            .await
            .unwrap()
            .unwrap();
        // A BSON date (not a number): comparisons with $$NOW depend on it.
        let until = doc.get_datetime("lease_until").unwrap().timestamp_millis();
        assert!(
            (before + 600_000..=after + 600_000).contains(&until),
            "{before} {until} {after}"
        );
        assert!(lock.renew(&me, Duration::from_secs(1200)).await.unwrap());
        let renewed = RunLock::new(&store).current().await.unwrap().unwrap();
        assert!(renewed.lease_until.timestamp_millis() >= before + 1_200_000);
    });
}

fn newer_actor() -> Document {
    doc! { "run_id": "r-new", "host": "other-host", "user": "ops", "boot_id": "b", "pid": 7_i64, "pid_start": 1_i64, "upstep_version": "9.9.9" }
}

#[test]
fn a_journal_or_lock_from_a_newer_upstep_is_refused_as_such() {
    block_on(async {
        let store = store_for("newer_schema").await;
        let (journal, _dir) = journal(&store, actor("old"));
        journal
            .mark("m1", StepStatus::MarkedApplied, "by hand")
            .await
            .unwrap();
        // A newer upstep's entry: a higher schema and a status this upstep does not know.
        let newer = doc! { "_id": "m2", "schema": 3, "status": "ended-in-a-new-way", "actor": newer_actor(), "attempts": "many" };
        raw(&store, "upstep_journal")
            .insert_one(newer.clone())
            .await
            .unwrap();
        let err = upstep::store::journal::read_entries(&store)
            .await
            .expect_err("a newer journal is refused");
        let text = err.to_string();
        assert!(
            text.contains("this journal was written by a newer upstep (upstep 9.9.9 on other-host) (schema 3, this upstep reads up to 2): upgrade upstep"),
            "{text}"
        );
        assert_eq!(err.code(), upstep::error::ExitCode::Preflight, "{text}");
        let err = upstep::store::journal::ensure_readable(&store)
            .await
            .expect_err("refused before anything is written");
        assert!(err.to_string().contains("newer upstep"), "{err}");
        // A mark does not overwrite the newer entry.
        assert!(journal.mark("m2", StepStatus::Pending, "x").await.is_err());
        let stored = raw(&store, "upstep_journal")
            .find_one(doc! { "_id": "m2" })
            .await
            .unwrap()
            .unwrap();
        assert_eq!(stored, newer);

        // The same for the run lock: not taken, not described, not overwritten.
        let store = store_for("newer_lock").await;
        let lock_doc = doc! { "_id": "run", "schema": 3, "holder": newer_actor(), "acquired_at": bson::DateTime::now(), "lease_until": bson::DateTime::from_millis(0), "generation": 1 };
        raw(&store, "upstep_lock")
            .insert_one(lock_doc.clone())
            .await
            .unwrap();
        let lock = RunLock::new(&store);
        let err = lock
            .try_acquire(&actor("old"), Duration::from_secs(60))
            .await
            .expect_err("the expired lease of a newer upstep's lock is not taken");
        assert!(
            err.to_string()
                .contains("this run lock was written by a newer upstep"),
            "{err}"
        );
        assert_eq!(err.code(), upstep::error::ExitCode::Preflight);
        assert!(upstep::store::journal::ensure_readable(&store)
            .await
            .is_err());
        let stored = raw(&store, "upstep_lock")
            .find_one(doc! {})
            .await
            .unwrap()
            .unwrap();
        assert_eq!(stored, lock_doc);
    });
}

#[test]
fn a_broken_entry_is_named_with_a_fix_not_reported_as_a_connection_problem() {
    block_on(async {
        let store = store_for("broken_entry").await;
        raw(&store, "upstep_journal")
            .insert_one(doc! { "_id": "hand-made", "schema": 1, "state": "done" })
            .await
            .unwrap();
        let err = upstep::store::journal::read_entries(&store)
            .await
            .expect_err("an entry without a status cannot be read");
        let text = err.to_string();
        assert!(text.contains("\"hand-made\""), "{text}");
        assert!(text.contains("upstep mark"), "{text}");
        assert_ne!(err.code(), upstep::error::ExitCode::Connection, "{text}");
    });
}

fn start(id: &str) -> StepStart<'_> {
    StepStart {
        id,
        tag: "v1.0.0",
        commit: "abc",
        script: "m/1.js",
        script_sha256: "00",
        backup: None,
    }
}

fn other_host(name: &str) -> Actor {
    let mut a = actor(name);
    a.host = "other-host".into();
    a.boot_id = "another-boot".into();
    a
}

#[test]
fn a_running_step_keeps_a_server_clock_heartbeat_that_goes_stale_when_it_stops() {
    block_on(async {
        let store = store_for("heartbeat").await;
        let lease = Duration::from_millis(1500);
        let remote = other_host("remote");
        let (theirs, _d1) = journal(&store, remote.clone());
        let theirs = theirs.with_heartbeat_lease(lease);
        theirs.begin_step(&start("m1")).await.unwrap();
        let entries = theirs.entries().await.unwrap();
        let entry = &entries["m1"];
        assert!(entry.heartbeat_at.is_some() && entry.heartbeat_until.is_some());
        assert!(entry.heartbeat_is_fresh());
        assert!(entry.running_elsewhere(), "another host, fresh heartbeat");
        assert!(entry.heartbeat_age().unwrap() < Duration::from_secs(2));
        assert!(
            entry.describe_run().contains("other-host"),
            "{}",
            entry.describe_run()
        );
        let first_beat = entry.heartbeat_until.unwrap();

        // The heartbeat keeps it fresh past its first lease.
        for _ in 0..3 {
            tokio::time::sleep(Duration::from_millis(600)).await;
            let until = bson::DateTime::from_millis(
                server_now(&store).await.timestamp_millis() + lease.as_millis() as i64,
            );
            assert_eq!(
                upstep::store::journal::beat(&store, &remote, until)
                    .await
                    .unwrap(),
                1
            );
        }
        let entry = theirs.entries().await.unwrap().remove("m1").unwrap();
        assert!(entry.heartbeat_until.unwrap() > first_beat);
        assert!(entry.running_elsewhere());

        // A run that holds the lock now may not settle it, nor mark it.
        let (mine, _d2) = journal(&store, actor("here"));
        assert!(!mine.settle_abandoned(&entry, "gone", false).await.unwrap());
        let err = mine
            .mark("m1", StepStatus::MarkedApplied, "x")
            .await
            .expect_err("a step running elsewhere is not marked");
        assert!(err.to_string().contains("running elsewhere"), "{err}");
        assert_eq!(
            mine.entries().await.unwrap()["m1"].status,
            StepStatus::Running
        );

        // Without heartbeats it goes stale, and is then settled as today.
        tokio::time::sleep(Duration::from_millis(1800)).await;
        let entry = mine.entries().await.unwrap().remove("m1").unwrap();
        assert!(!entry.heartbeat_is_fresh());
        assert!(!entry.running_elsewhere());
        assert!(entry.heartbeat_age().unwrap() >= lease);
        assert!(mine
            .settle_abandoned(&entry, "the run that started it is gone", false)
            .await
            .unwrap());
        let settled = raw(&store, "upstep_journal")
            .find_one(doc! { "_id": "m1" })
            .await
            .unwrap()
            .unwrap();
        assert_eq!(settled.get_str("status").unwrap(), "interrupted");
        assert!(!settled.contains_key("heartbeat_until"), "{settled}");
        // A beat after settling touches nothing: only running entries are renewed.
        assert_eq!(
            upstep::store::journal::beat(&store, &remote, bson::DateTime::now())
                .await
                .unwrap(),
            0
        );
    });
}

#[test]
fn a_dead_local_run_is_settled_even_with_a_fresh_heartbeat() {
    block_on(async {
        let store = store_for("heartbeat_dead").await;
        let mut ghost = actor("ghost");
        ghost.pid = 999_999_999; // no such process on this host
        let (theirs, _d1) = journal(&store, ghost);
        let theirs = theirs.with_heartbeat_lease(Duration::from_secs(600));
        theirs.begin_step(&start("m1")).await.unwrap();
        let entry = theirs.entries().await.unwrap().remove("m1").unwrap();
        assert!(entry.heartbeat_is_fresh());
        assert!(!entry.running_elsewhere(), "its process is known gone");
        let (mine, _d2) = journal(&store, actor("here"));
        assert!(!mine.settle_abandoned(&entry, "gone", false).await.unwrap());
        assert!(mine.settle_abandoned(&entry, "gone", true).await.unwrap());
    });
}

#[test]
fn begin_step_counts_attempts_and_takes_names_literally() {
    block_on(async {
        let store = store_for("begin_literal").await;
        let (journal, _d) = journal(&store, actor("runner"));
        let odd = StepStart {
            script: "$script.js",
            tag: "$tag",
            backup: Some("$HOME/backups"),
            ..start("m1")
        };
        journal.begin_step(&odd).await.unwrap();
        journal
            .settle(
                "m1",
                StepStatus::Failed,
                &StepEnd::without_outcome(EndedBy::Exited, ""),
            )
            .await
            .unwrap();
        journal.begin_step(&odd).await.unwrap();
        let entry = journal.entries().await.unwrap().remove("m1").unwrap();
        assert_eq!(entry.attempts, 2);
        assert_eq!(entry.script.as_deref(), Some("$script.js"));
        assert_eq!(entry.tag.as_deref(), Some("$tag"));
        assert_eq!(entry.backup.as_deref(), Some("$HOME/backups"));
        assert!(entry.started_at.is_some());
        assert!(
            entry.finished_at.is_none(),
            "a new attempt clears the old end"
        );
        assert!(entry.summary().contains("attempt 2"), "{}", entry.summary());
    });
}

#[test]
fn a_step_heartbeat_ends_with_its_runs_lease() {
    block_on(async {
        let store = store_for("heartbeat_lease").await;
        let me = actor("me");
        let lock = RunLock::new(&store);
        lock.try_acquire(&me, Duration::from_secs(30))
            .await
            .unwrap();
        let (journal, _d) = journal(&store, me.clone());
        journal.begin_step(&start("m1")).await.unwrap();
        let lease_until = lock.current().await.unwrap().unwrap().lease_until;
        let entry = journal.entries().await.unwrap().remove("m1").unwrap();
        assert_eq!(entry.heartbeat_until, Some(lease_until));

        let renewed = lock
            .renew_lease(&me, Duration::from_secs(45))
            .await
            .unwrap()
            .expect("still ours");
        assert!(renewed > lease_until);
        assert_eq!(lock.current().await.unwrap().unwrap().lease_until, renewed);
        upstep::store::journal::beat(&store, &me, renewed)
            .await
            .unwrap();
        let entry = journal.entries().await.unwrap().remove("m1").unwrap();
        assert_eq!(entry.heartbeat_until, Some(renewed));
        assert!(entry.heartbeat_at.unwrap() <= renewed);
        assert!(lock
            .renew_lease(&actor("someone-else"), Duration::from_secs(45))
            .await
            .unwrap()
            .is_none());
    });
}
