//! `upstep detect` and `plan --detect` against the real test server: every Novu fingerprint in
//! both states, detected version and gaps, an empty database, and bad input (rejected check,
//! missing collection, no permission, time limit) reported as unknown, never applied.

use std::time::Duration;

use assert_cmd::Command;
use bson::{doc, oid::ObjectId, DateTime, Document};
use serde_json::Value;
use upstep::release_map::ReleaseMap;
use upstep::store::fingerprint::{evaluate, EvalOptions, FpState};
use upstep::store::Store;

use crate::support::{fresh_db_name, mongo, start_mongo_with_auth, GitFixture, BASE_TIME};

/// Runs a future that borrows from the test on a runtime of its own.
fn block_on<F: std::future::Future>(fut: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
        .block_on(fut)
}

fn embedded() -> ReleaseMap {
    upstep::release_map::load(None).expect("the embedded map is valid")
}

/// Seed `(collection, documents)` pairs into `uri` (a URI naming the database).
async fn seed(uri: &str, data: &[(&str, Vec<Document>)]) {
    let client = mongodb::Client::with_uri_str(uri).await.unwrap();
    let db = client.default_database().unwrap();
    for (coll, docs) in data {
        if docs.is_empty() {
            db.create_collection(*coll).await.unwrap();
        } else {
            db.collection::<Document>(coll)
                .insert_many(docs.clone())
                .await
                .unwrap();
        }
    }
}

fn upstep(args: &[&str]) -> Command {
    let mut cmd = Command::cargo_bin("upstep").unwrap();
    let state = std::env::temp_dir().join(format!("upstep-detect-it-{}", std::process::id()));
    cmd.env("NO_COLOR", "1")
        .env("UPSTEP_STATE_DIR", &state)
        .env("UPSTEP_CACHE_DIR", state.join("cache"))
        .env_remove("MONGO_URL")
        .env_remove("UPSTEP_MONGO_URI")
        .env_remove("UPSTEP_REPO")
        .env_remove("UPSTEP_MAP")
        .current_dir(std::env::temp_dir())
        .timeout(Duration::from_secs(120))
        .args(args);
    cmd
}

/// Runs `upstep ARGS --json`, expects success, returns the document.
fn json(args: &[&str]) -> Value {
    let mut all: Vec<&str> = args.to_vec();
    all.push("--json");
    let out = upstep(&all).output().unwrap();
    let text = format!(
        "code {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {text}"))
}

fn row<'a>(report: &'a Value, id: &str) -> &'a Value {
    report["migrations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == id)
        .unwrap_or_else(|| panic!("no row {id} in {report:#}"))
}

// ---------------------------------------------------------------------------------------------
// Novu-shaped seeds: per migration, data in the pending state and in the applied state.
// ---------------------------------------------------------------------------------------------

struct Case {
    id: &'static str,
    pending: Vec<(&'static str, Vec<Document>)>,
    applied: Vec<(&'static str, Vec<Document>)>,
    /// The state both seeds must give (only `preference-centralization`: no fingerprint).
    always: Option<FpState>,
}

fn case(
    id: &'static str,
    pending: Vec<(&'static str, Vec<Document>)>,
    applied: Vec<(&'static str, Vec<Document>)>,
) -> Case {
    Case {
        id,
        pending,
        applied,
        always: None,
    }
}

fn integration(extra: Document) -> Document {
    let mut d = doc! {
        "_id": ObjectId::new(),
        "_environmentId": ObjectId::new(),
        "_organizationId": ObjectId::new(),
        "providerId": "sendgrid",
        "channel": "email",
        "active": true,
        "deleted": false,
        "credentials": { "apiKey": "nvsk.0123456789abcdef", "from": "no-reply@example.com" },
        "identifier": "sendgrid-abc",
        "name": "SendGrid",
        "primary": true,
        "priority": 1,
        "createdAt": DateTime::now(),
    };
    d.extend(extra);
    d
}

fn message(extra: Document) -> Document {
    let mut d = doc! {
        "_id": ObjectId::new(),
        "_environmentId": ObjectId::new(),
        "_subscriberId": ObjectId::new(),
        "channel": "in_app",
        "content": "Hello",
        "seen": false,
        "read": false,
        "expireAt": DateTime::now(),
        "cta": { "type": "redirect", "data": { "url": "/inbox" }, "action": { "status": "pending" } },
    };
    d.extend(extra);
    d
}

fn environment(id: ObjectId, org: ObjectId, name: &str, extra: Document) -> Document {
    let mut d = doc! {
        "_id": id,
        "_organizationId": org,
        "name": name,
        "identifier": format!("env-{id}"),
        "apiKeys": [ { "key": "nvsk.encrypted", "hash": "h1", "_userId": ObjectId::new() } ],
    };
    d.extend(extra);
    d
}

fn cases() -> Vec<Case> {
    let org = ObjectId::new();
    let (dev, prod) = (ObjectId::new(), ObjectId::new());
    let env = ObjectId::new();
    vec![
        case(
            "changes-migration",
            vec![(
                "environments",
                vec![environment(dev, org, "Development", doc! {})],
            )],
            vec![(
                "environments",
                vec![
                    environment(dev, org, "Development", doc! {}),
                    environment(prod, org, "Production", doc! { "_parentId": dev }),
                ],
            )],
        ),
        case(
            "encrypt-credentials",
            vec![(
                "integrations",
                vec![integration(
                    doc! { "credentials": { "apiKey": "SG.plaintext-key" } },
                )],
            )],
            vec![("integrations", vec![integration(doc! {})])],
        ),
        case(
            "fcm-credentials",
            vec![(
                "integrations",
                vec![integration(doc! {
                    "providerId": "fcm", "channel": "push",
                    "credentials": { "user": "nvsk.{\"type\":\"service_account\"}" },
                })],
            )],
            vec![(
                "integrations",
                vec![integration(doc! {
                    "providerId": "fcm", "channel": "push",
                    "credentials": { "serviceAccount": "nvsk.{\"type\":\"service_account\"}" },
                })],
            )],
        ),
        case(
            "seen-read-support",
            vec![(
                "messages",
                vec![message(doc! {}), {
                    let mut m = message(doc! {});
                    m.remove("seen");
                    m.remove("read");
                    m
                }],
            )],
            vec![("messages", vec![message(doc! {})])],
        ),
        case(
            "normalize-users-email",
            vec![(
                "users",
                vec![doc! { "email": "John.Doe+news@GoogleMail.com", "firstName": "John" }],
            )],
            vec![(
                "users",
                vec![doc! { "email": "johndoe@gmail.com", "firstName": "John" }],
            )],
        ),
        case(
            "expire-at",
            vec![(
                "messages",
                vec![{
                    let mut m = message(doc! {});
                    m.remove("expireAt");
                    m
                }],
            )],
            vec![("messages", vec![message(doc! {})])],
        ),
        case(
            "in-app-integration",
            vec![
                (
                    "environments",
                    vec![environment(env, org, "Development", doc! {})],
                ),
                (
                    "integrations",
                    vec![integration(doc! { "_environmentId": env })],
                ),
            ],
            vec![
                (
                    "environments",
                    vec![environment(env, org, "Development", doc! {})],
                ),
                (
                    "integrations",
                    vec![integration(doc! {
                        "_environmentId": env, "providerId": "novu", "channel": "in_app",
                        "credentials": { "hmac": false },
                    })],
                ),
            ],
        ),
        case(
            "secure-to-boolean",
            vec![(
                "integrations",
                vec![integration(
                    doc! { "credentials": { "host": "smtp.example.com", "secure": "true" } },
                )],
            )],
            vec![(
                "integrations",
                vec![integration(
                    doc! { "credentials": { "host": "smtp.example.com", "secure": true } },
                )],
            )],
        ),
        case(
            "add-integration-identifier",
            vec![(
                "integrations",
                vec![{
                    let mut i = integration(doc! {});
                    i.remove("identifier");
                    i.remove("name");
                    i
                }],
            )],
            vec![("integrations", vec![integration(doc! {})])],
        ),
        case(
            "add-primary-priority",
            vec![(
                "integrations",
                vec![{
                    let mut i = integration(doc! {});
                    i.remove("primary");
                    i.remove("priority");
                    i
                }],
            )],
            vec![("integrations", vec![integration(doc! {})])],
        ),
        case(
            "novu-integrations",
            vec![
                (
                    "environments",
                    vec![environment(env, org, "Development", doc! {})],
                ),
                (
                    "integrations",
                    vec![integration(
                        doc! { "_environmentId": env, "providerId": "novu-email" },
                    )],
                ),
            ],
            vec![
                (
                    "environments",
                    vec![environment(env, org, "Development", doc! {})],
                ),
                (
                    "integrations",
                    vec![
                        integration(doc! { "_environmentId": env, "providerId": "novu-email" }),
                        integration(
                            doc! { "_environmentId": env, "providerId": "novu-sms", "channel": "sms", "active": false },
                        ),
                    ],
                ),
            ],
        ),
        case(
            "update-primary-for-disabled-novu-integrations",
            vec![(
                "integrations",
                vec![integration(
                    doc! { "providerId": "novu-email", "active": false, "primary": true },
                )],
            )],
            vec![(
                "integrations",
                vec![integration(
                    doc! { "providerId": "novu-email", "active": false, "primary": false },
                )],
            )],
        ),
        case(
            "add-layout-identifier",
            vec![(
                "layouts",
                vec![
                    doc! { "name": "Default", "content": "{{{body}}}", "identifier": "default" },
                    doc! { "name": "Old", "content": "{{{body}}}", "identifier": null },
                ],
            )],
            vec![(
                "layouts",
                vec![doc! { "name": "Default", "content": "{{{body}}}", "identifier": "default" }],
            )],
        ),
        case(
            "subscriber-preferences-level",
            vec![(
                "subscriberpreferences",
                vec![
                    doc! { "_subscriberId": ObjectId::new(), "_templateId": ObjectId::new(), "enabled": true, "channels": { "email": true } },
                ],
            )],
            vec![(
                "subscriberpreferences",
                vec![
                    doc! { "_subscriberId": ObjectId::new(), "_templateId": ObjectId::new(), "level": "template", "enabled": true },
                    doc! { "_subscriberId": ObjectId::new(), "level": "global", "enabled": true },
                ],
            )],
        ),
        case(
            "encrypt-api-keys",
            vec![(
                "environments",
                vec![environment(
                    env,
                    org,
                    "Development",
                    doc! {
                        "apiKeys": [ { "key": "0123456789abcdef-plain", "_userId": ObjectId::new() } ],
                    },
                )],
            )],
            vec![(
                "environments",
                vec![environment(env, org, "Development", doc! {})],
            )],
        ),
        case(
            "normalize-message-cta-action",
            vec![(
                "messages",
                vec![message(
                    doc! { "cta": { "type": "redirect", "action": "" } },
                )],
            )],
            vec![("messages", vec![message(doc! {})])],
        ),
        case(
            "normalize-message-template-cta-action",
            vec![(
                "messagetemplates",
                vec![
                    doc! { "type": "in_app", "content": "Hi", "cta": { "type": "redirect", "action": "" } },
                ],
            )],
            vec![(
                "messagetemplates",
                vec![
                    doc! { "type": "in_app", "content": "Hi", "cta": { "type": "redirect", "data": { "url": "/" } } },
                ],
            )],
        ),
        case(
            "topic-subscriber-normalize",
            vec![
                (
                    "topicsubscribers",
                    vec![
                        doc! { "_environmentId": env, "_topicId": ObjectId::new(), "externalSubscriberId": "gone-1", "topicKey": "news" },
                    ],
                ),
                (
                    "subscribers",
                    vec![doc! { "_environmentId": env, "subscriberId": "gone-1", "deleted": true }],
                ),
            ],
            vec![
                (
                    "topicsubscribers",
                    vec![
                        doc! { "_environmentId": env, "_topicId": ObjectId::new(), "externalSubscriberId": "sub-1", "topicKey": "news" },
                    ],
                ),
                (
                    "subscribers",
                    vec![doc! { "_environmentId": env, "subscriberId": "sub-1", "deleted": false }],
                ),
            ],
        ),
        case(
            "remove-duplicated-subscribers",
            vec![(
                "subscribers",
                vec![
                    doc! { "_environmentId": env, "subscriberId": "dup", "email": "a@example.com" },
                    doc! { "_environmentId": env, "subscriberId": "dup", "firstName": "A" },
                ],
            )],
            vec![(
                "subscribers",
                vec![
                    doc! { "_environmentId": env, "subscriberId": "dup", "email": "a@example.com", "deleted": false },
                    doc! { "_environmentId": env, "subscriberId": "dup", "firstName": "A", "deleted": true },
                    doc! { "_environmentId": ObjectId::new(), "subscriberId": "dup" },
                ],
            )],
        ),
        Case {
            id: "preference-centralization",
            pending: vec![(
                "subscriberpreferences",
                vec![doc! { "_subscriberId": ObjectId::new(), "level": "global" }],
            )],
            applied: vec![(
                "preferences",
                vec![doc! { "type": "SUBSCRIBER_GLOBAL", "preferences": {} }],
            )],
            always: Some(FpState::Unknown),
        },
        case(
            "drop-logs-collection",
            vec![("logs", vec![doc! { "text": "old log line" }])],
            vec![("messages", vec![message(doc! {})])],
        ),
        // v2.3.0: the e-mail step's UI schema gets the HTML editor (body EMAIL_BODY, an
        // editor select); a template without a UI schema is not its business.
        case(
            "email-step-ui-schema-html-editor",
            vec![(
                "messagetemplates",
                vec![
                    doc! { "type": "email", "controls": { "uiSchema": { "properties": { "body": { "component": "BLOCK_EDITOR" } } } } },
                    doc! { "type": "email" },
                ],
            )],
            vec![(
                "messagetemplates",
                vec![
                    doc! { "type": "email", "controls": { "uiSchema": { "properties": { "body": { "component": "EMAIL_BODY" }, "editorType": { "component": "EMAIL_EDITOR_SELECT", "placeholder": "block" } } } } },
                    doc! { "type": "email" },
                    doc! { "type": "in_app", "controls": { "uiSchema": { "properties": {} } } },
                ],
            )],
        ),
        // v3.11.0: live e-mail templates with controls get a layoutId in both schemas;
        // soft-deleted ones are left alone.
        case(
            "add-layout-id-to-email-controls",
            vec![(
                "messagetemplates",
                vec![
                    doc! { "type": "email", "deleted": false, "controls": { "schema": { "properties": {} }, "uiSchema": { "properties": {} } } },
                ],
            )],
            vec![(
                "messagetemplates",
                vec![
                    doc! { "type": "email", "deleted": false, "controls": { "schema": { "properties": { "layoutId": { "type": ["string", "null"] } } }, "uiSchema": { "properties": { "layoutId": { "component": "LAYOUT_SELECT" } } } } },
                    doc! { "type": "email", "deleted": true, "controls": { "schema": { "properties": {} }, "uiSchema": { "properties": {} } } },
                ],
            )],
        ),
        // v3.11.0 (optional): one preference per group and type.
        case(
            "preferences-uniqueness",
            vec![(
                "preferences",
                vec![
                    doc! { "type": "SUBSCRIBER_WORKFLOW", "_environmentId": env, "_subscriberId": dev, "_templateId": prod },
                    doc! { "type": "SUBSCRIBER_WORKFLOW", "_environmentId": env, "_subscriberId": dev, "_templateId": prod },
                ],
            )],
            vec![(
                "preferences",
                vec![
                    // One per group: another subscriber, another workflow, another type.
                    doc! { "type": "SUBSCRIBER_WORKFLOW", "_environmentId": env, "_subscriberId": dev, "_templateId": prod },
                    doc! { "type": "SUBSCRIBER_WORKFLOW", "_environmentId": env, "_subscriberId": org, "_templateId": prod },
                    doc! { "type": "SUBSCRIBER_GLOBAL", "_environmentId": env, "_subscriberId": dev },
                    doc! { "type": "WORKFLOW_RESOURCE", "_environmentId": env, "_templateId": prod },
                    doc! { "type": "USER_WORKFLOW", "_environmentId": env, "_templateId": prod },
                ],
            )],
        ),
        // v3.12.0: topic subscriptions get the default identifier (those missing topicKey or
        // externalSubscriberId are skipped by the script, so they are not pending).
        case(
            "add-default-identifier-to-topic-subscribers",
            vec![(
                "topicsubscribers",
                vec![
                    doc! { "_environmentId": env, "topicKey": "news", "externalSubscriberId": "alice" },
                ],
            )],
            vec![(
                "topicsubscribers",
                vec![
                    doc! { "_environmentId": env, "topicKey": "news", "externalSubscriberId": "alice", "identifier": "tk_news:si_alice" },
                    doc! { "_environmentId": env, "externalSubscriberId": "bob" },
                ],
            )],
        ),
        // v3.12.0: one subscription per identifier and environment; before 001 ran, two
        // subscriptions of one subscriber to one topic are the duplicates-to-be.
        case(
            "remove-duplicate-identifiers",
            vec![(
                "topicsubscribers",
                vec![
                    doc! { "_environmentId": env, "identifier": "tk_news:si_alice" },
                    doc! { "_environmentId": env, "topicKey": "news", "externalSubscriberId": "alice" },
                ],
            )],
            vec![(
                "topicsubscribers",
                vec![
                    doc! { "_environmentId": env, "identifier": "tk_news:si_alice" },
                    doc! { "_environmentId": org, "identifier": "tk_news:si_alice" },
                    doc! { "_environmentId": env, "topicKey": "news" },
                ],
            )],
        ),
    ]
}

#[test]
fn every_novu_fingerprint_classifies_its_pending_and_applied_data() {
    let map = embedded();
    let cases = cases();
    assert_eq!(cases.len(), 26);
    assert_eq!(
        map.migrations.len(),
        cases.len(),
        "one case per migration of the embedded map"
    );
    block_on(async {
        let opts = EvalOptions {
            time_limit: Duration::from_secs(10),
            count_limit: Some(100),
        };
        let mut failures = Vec::new();
        for c in &cases {
            let m = map
                .migration(c.id)
                .unwrap_or_else(|| panic!("{} not in the map", c.id));
            for (label, data, want) in [
                ("pending", &c.pending, c.always.unwrap_or(FpState::Pending)),
                ("applied", &c.applied, c.always.unwrap_or(FpState::Applied)),
            ] {
                let uri = mongo().uri_for_db(&fresh_db_name(&format!("fp_{label}_{}", c.id)));
                seed(&uri, data).await;
                let store = Store::connect(&uri).await.unwrap();
                let report = evaluate(&store.db, &m.fingerprint, opts).await;
                if report.state != want {
                    failures.push(format!(
                        "{} seeded {label}: got {:?}, want {want:?}: {report:?}",
                        c.id, report.state
                    ));
                }
                if want == FpState::Pending {
                    // Evidence: a count and an example _id (an `absent` check has no document).
                    let hit = report.checks.iter().find(|r| r.state == FpState::Pending);
                    if hit.is_none_or(|h| {
                        h.kind != "absent" && (h.example_id.is_none() || h.count.is_none())
                    }) {
                        failures.push(format!("{} pending without evidence: {report:?}", c.id));
                    }
                }
                if want == FpState::Unknown && report.reason.is_none() {
                    failures.push(format!("{} unknown without a reason", c.id));
                }
            }
        }
        assert!(failures.is_empty(), "\n{}", failures.join("\n"));
    });
}

/// A database at v0.16 whose v0.12 migration was skipped, with nothing after v0.16 done.
#[test]
fn v0_16_with_a_skipped_v0_12_migration_is_detected_with_the_gap() {
    let uri = mongo().uri_for_db(&fresh_db_name("detect_gap"));
    let by_id: std::collections::BTreeMap<&str, Case> =
        cases().into_iter().map(|c| (c.id, c)).collect();
    let map = embedded();
    // One environment/integration set that is consistent across migrations is not needed:
    // every release up to v0.16 is seeded applied, normalize-users-email pending, and every
    // later migration pending, each in collections of its own where they could clash.
    block_on(async {
        let client = mongodb::Client::with_uri_str(&uri).await.unwrap();
        let db = client.default_database().unwrap();
        let org = ObjectId::new();
        let (dev, prod) = (ObjectId::new(), ObjectId::new());
        let plain_env = |id, name: &str, parent: Option<ObjectId>| {
            let mut e = environment(
                id,
                org,
                name,
                doc! { "apiKeys": [ { "key": "plain-key", "_userId": ObjectId::new() } ] },
            );
            if let Some(p) = parent {
                e.insert("_parentId", p);
            }
            e
        };
        // v0.4 applied (two environments, Production linked); v0.23 pending (plain API keys).
        db.collection::<Document>("environments")
            .insert_many(vec![
                plain_env(dev, "Development", None),
                plain_env(prod, "Production", Some(dev)),
            ])
            .await
            .unwrap();
        // v0.8 and v0.16 applied; v0.17/v0.18 pending (no identifier, no primary/priority);
        // every environment has its in-app integration (v0.16 in-app-integration applied) but
        // not the Novu e-mail/SMS ones (v0.18 novu-integrations pending).
        let mut integrations = Vec::new();
        for env in [dev, prod] {
            for extra in [
                doc! { "_environmentId": env },
                doc! { "_environmentId": env, "providerId": "novu", "channel": "in_app", "credentials": { "hmac": false } },
                doc! { "_environmentId": env, "providerId": "fcm", "channel": "push", "credentials": { "serviceAccount": "nvsk.x" } },
                doc! { "_environmentId": env, "providerId": "nodemailer", "credentials": { "host": "smtp", "secure": false } },
            ] {
                let mut i = integration(extra);
                for key in ["identifier", "name", "primary", "priority"] {
                    i.remove(key);
                }
                integrations.push(i);
            }
        }
        db.collection::<Document>("integrations")
            .insert_many(integrations)
            .await
            .unwrap();
        // v0.9 and v0.15 applied (seen, expireAt); v0.24 pending (an empty cta.action).
        db.collection::<Document>("messages")
            .insert_many(vec![
                message(doc! {}),
                message(doc! { "cta": { "type": "redirect", "action": "" } }),
            ])
            .await
            .unwrap();
        // v0.12 skipped: an address the migration would still normalise.
        for id in [
            "normalize-users-email",
            "add-layout-identifier",
            "subscriber-preferences-level",
            "remove-duplicated-subscribers",
        ] {
            for (coll, docs) in &by_id[id].pending {
                db.collection::<Document>(coll)
                    .insert_many(docs.clone())
                    .await
                    .unwrap();
            }
        }
    });
    let report = json(&["detect", "--mongo-uri", &uri]);
    let verdicts: Vec<(String, String)> = report["migrations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["id"].as_str().unwrap().to_string(),
                m["verdict"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    // The default target is the newest verified release (v2.0.0): later scripts are not read.
    let target = map.default_target(false).unwrap().version.clone();
    for m in &map.migrations {
        let Some(v) = m.introduced_version() else {
            continue;
        };
        if *v > target {
            assert!(
                verdicts.iter().all(|(id, _)| id != &m.id),
                "{} is past the target: {verdicts:?}",
                m.id
            );
            continue;
        }
        let got = &verdicts.iter().find(|(id, _)| id == &m.id).unwrap().1;
        if m.id == "normalize-users-email" {
            assert_eq!(got, "pending", "{verdicts:?}");
        } else if *v <= semver::Version::new(0, 16, 0) {
            assert_eq!(got, "applied", "{}: {verdicts:?}", m.id);
        }
    }
    assert_eq!(report["detected"], "v0.9.0", "{report:#}");
    assert_eq!(report["looks_like"], "v0.16.0", "{report:#}");
    let gaps: Vec<&str> = report["gaps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["id"].as_str().unwrap())
        .collect();
    assert_eq!(gaps, vec!["normalize-users-email"], "{report:#}");
    assert_eq!(report["nothing_to_migrate"], false);
    assert_eq!(report["target"]["source"]["kind"], "newest-in-map");
    let evidence = &row(&report, "normalize-users-email")["evidence"];
    assert_eq!(evidence["pending_count"], 1);
    assert_eq!(evidence["example_ids"].as_array().unwrap().len(), 1);

    // The text form shows the table, the detected version, the gap and the target's source.
    let out = upstep(&["detect", "--mongo-uri", &uri]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    let target = format!(
        "Target: v{} (the newest verified release in the map)",
        map.default_target(false).unwrap().version
    );
    for needle in [
        "MIGRATION",
        "Detected version: v0.9.0",
        "looks like v0.16.0",
        "normalize-users-email (v0.12.0): pending while v0.16.0's migrations are applied",
        target.as_str(),
    ] {
        assert!(text.contains(needle), "{needle:?} missing from:\n{text}");
    }
}

#[test]
fn an_empty_database_needs_nothing() {
    let uri = mongo().uri_for_db(&fresh_db_name("detect_empty"));
    let report = json(&["detect", "--mongo-uri", &uri]);
    assert_eq!(report["schema"], "upstep.detect/1");
    assert_eq!(report["nothing_to_migrate"], true, "{report:#}");
    let target = embedded().default_target(false).unwrap().version.clone();
    assert_eq!(
        report["detected"],
        format!("v{target}"),
        "up to the default target"
    );
    assert!(report["gaps"].as_array().unwrap().is_empty());
    for m in report["migrations"].as_array().unwrap() {
        // A check that the script's collection is gone (drop-logs-collection, v2.1.1) can only
        // say "applied" where that collection does not exist: on an empty database too.
        let only_absent_checks = m["checks"]
            .as_array()
            .is_some_and(|c| !c.is_empty() && c.iter().all(|c| c["kind"] == "absent"));
        let expected = if only_absent_checks {
            "applied"
        } else {
            "not-applicable"
        };
        assert_eq!(m["verdict"], expected, "{m:#}");
    }
    let out = upstep(&["detect", "--mongo-uri", &uri]).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("nothing to migrate"));
}

const SMALL_MAP: &str = r#"
schema = 1
[project]
name = "acme"
migrations_dir = "migrations"
script_suffixes = [".js"]
[eras.plain]
cwd = "."
run = ["node", "{script}"]
[[releases]]
version = "1.0.0"
era = "plain"
node = "20.11.1"
[[releases]]
version = "1.1.0"
era = "plain"
node = "20.11.1"
[[releases]]
version = "2.0.0"
era = "plain"
node = "20.11.1"

[[migrations]]
id = "rejected-check"
title = "A check the test server rejects ($or inside $elemMatch)"
introduced_in = "1.0.0"
script = "migrations/rejected.js"
run = "file"
exits = "yes"
idempotent = "yes"
[[migrations.pending]]
collection = "orders"
filter = { lines = { "$elemMatch" = { "$or" = [{ sku = "x" }, { qty = 0 }] } } }

[[migrations]]
id = "missing-collection"
title = "A check on a collection that does not exist"
introduced_in = "1.0.0"
script = "migrations/missing.js"
run = "file"
exits = "yes"
idempotent = "yes"
[[migrations.pending]]
collection = "nowhere"
filter = { status = { "$exists" = false } }

[[migrations]]
id = "slow-check"
title = "A check that exceeds its time limit"
introduced_in = "1.1.0"
script = "migrations/slow.js"
run = "file"
exits = "yes"
idempotent = "yes"
[[migrations.pending]]
collection = "orders"
pipeline = [
  { "$lookup" = { from = "lines", let = { o = "$n" }, pipeline = [
    { "$match" = { "$expr" = { "$eq" = ["$order", "$$o"] } } },
  ], as = "l" } },
  { "$match" = { l = { "$size" = 0 } } },
  { "$limit" = 1 },
]

[[migrations]]
id = "orders-status"
title = "Orders get a status"
introduced_in = "2.0.0"
script = "migrations/status.js"
run = "file"
exits = "yes"
idempotent = "yes"
[[migrations.pending]]
collection = "orders"
filter = { status = { "$exists" = false } }
"#;

fn small_map() -> tempfile::NamedTempFile {
    let file = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
    std::fs::write(file.path(), SMALL_MAP).unwrap();
    file
}

/// Orders 0..n, each with lines that match in the slow check's lookup.
async fn seed_orders(uri: &str, n: i64) {
    let orders: Vec<Document> = (0..n)
        .map(|i| doc! { "n": i, "status": "open", "lines": [ { "sku": "a", "qty": 1 } ] })
        .collect();
    let lines: Vec<Document> = (0..n).map(|i| doc! { "order": i, "sku": "a" }).collect();
    seed(uri, &[("orders", orders), ("lines", lines)]).await;
}

#[test]
fn bad_input_is_unknown_with_its_reason_never_applied() {
    let map = small_map();
    let map_arg = map.path().to_str().unwrap();
    let uri = mongo().uri_for_db(&fresh_db_name("detect_bad"));
    block_on(seed_orders(&uri, 3000));
    let report = json(&[
        "detect",
        "--map",
        map_arg,
        "--mongo-uri",
        &uri,
        "--time-limit-secs",
        "0.001",
    ]);

    let rejected = row(&report, "rejected-check");
    assert_eq!(rejected["verdict"], "unknown", "{rejected:#}");
    assert!(
        rejected["data_reason"]
            .as_str()
            .unwrap()
            .contains("rejected the check"),
        "{rejected:#}"
    );

    // A collection that does not exist is not applicable (nothing to migrate), not unknown.
    let missing = row(&report, "missing-collection");
    assert_eq!(missing["verdict"], "not-applicable", "{missing:#}");
    assert!(missing["reason"].as_str().unwrap().contains("nowhere"));

    // 3000 x 3000 unindexed lookups cannot finish in 1 ms: the server stops it (code 50).
    let slow = row(&report, "slow-check");
    assert_eq!(slow["verdict"], "unknown", "{slow:#}");
    assert!(
        slow["data_reason"]
            .as_str()
            .unwrap()
            .contains("exceeded its time limit"),
        "{slow:#}"
    );
    // Unknowns block the detected version: it never moves past them.
    assert!(report["detected"].is_null(), "{report:#}");
    assert_eq!(report["target"]["version"], "v2.0.0");
}

#[test]
fn a_user_without_read_permission_gets_unknown_with_the_reason() {
    let server = start_mongo_with_auth();
    let db = fresh_db_name("detect_noperm");
    block_on(async {
        seed(&server.admin_uri(&db), &[("orders", vec![doc! { "n": 1 }])]).await;
        server
            .create_user("outsider", "Outsider-pw-1", &[("read", "elsewhere")])
            .await;
    });
    let map = small_map();
    let uri = server.uri_with_credentials("outsider", "Outsider-pw-1", &db);
    let out = upstep(&[
        "detect",
        "--map",
        map.path().to_str().unwrap(),
        "--mongo-uri",
        &uri,
        "--json",
    ])
    .output()
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(!stdout.contains("Outsider-pw-1") && !stderr.contains("Outsider-pw-1"));
    let report: Value = serde_json::from_str(&stdout).unwrap();
    for m in report["migrations"].as_array().unwrap() {
        assert_eq!(m["verdict"], "unknown", "{m:#}");
        assert!(
            m["data_reason"].as_str().unwrap().contains("not permitted"),
            "{m:#}"
        );
    }
    assert!(report["journal_error"].is_string(), "{report:#}");
    assert!(report["detected"].is_null());
}

#[test]
fn the_journal_wins_and_a_marked_step_with_pending_data_is_regressed() {
    let uri = mongo().uri_for_db(&fresh_db_name("detect_regressed"));
    block_on(seed(
        &uri,
        &[(
            "messages",
            vec![message(doc! {}), {
                let mut m = message(doc! {});
                m.remove("seen");
                m
            }],
        )],
    ));
    let before = json(&["detect", "--mongo-uri", &uri]);
    assert_eq!(row(&before, "seen-read-support")["verdict"], "pending");

    let out = upstep(&[
        "mark",
        "seen-read-support",
        "--applied",
        "--mongo-uri",
        &uri,
    ])
    .output()
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = upstep(&["mark", "expire-at", "--pending", "--mongo-uri", &uri])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let after = json(&["detect", "--mongo-uri", &uri]);
    let seen = row(&after, "seen-read-support");
    assert_eq!(seen["verdict"], "regressed", "{seen:#}");
    assert_eq!(seen["journal"], "marked-applied");
    assert_eq!(seen["data"], "pending");
    assert_eq!(seen["evidence"]["pending_count"], 1);
    // Journal "pending" wins over data that says applied.
    let expire = row(&after, "expire-at");
    assert_eq!(expire["data"], "applied");
    assert_eq!(expire["verdict"], "pending", "{expire:#}");
    assert_eq!(expire["basis"], "journal");

    let text = upstep(&["detect", "--mongo-uri", &uri]).output().unwrap();
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("Regressed: seen-read-support"), "{text}");
}

#[test]
fn plan_detect_skips_applied_steps_and_plans_pending_ones_older_than_from() {
    let uri = mongo().uri_for_db(&fresh_db_name("plan_detect"));
    // seen-read-support (v0.9) pending, expire-at (v0.15) applied, everything else absent.
    block_on(seed(
        &uri,
        &[(
            "messages",
            vec![{
                let mut m = message(doc! {});
                m.remove("seen");
                m
            }],
        )],
    ));
    let plan = json(&["plan", "--detect", "--from", "v0.16.0", "--mongo-uri", &uri]);
    assert_eq!(plan["detect"], true);
    let steps: Vec<&Value> = plan["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["steps"].as_array().unwrap())
        .collect();
    let action = |id: &str| {
        steps
            .iter()
            .find(|s| s["id"] == id)
            .map(|s| s["decision"]["action"].as_str().unwrap().to_string())
            .unwrap_or_else(|| panic!("{id} not in {plan:#}"))
    };
    assert_eq!(
        action("seen-read-support"),
        "run",
        "older than --from, but pending"
    );
    assert_eq!(action("expire-at"), "skip");
    assert_eq!(action("add-primary-priority"), "skip", "not applicable");

    let out = upstep(&["plan", "--detect", "--from", "v0.16.0", "--mongo-uri", &uri])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("seen-read-support"), "{text}");
    assert!(
        text.contains("pending per its data check, although older than --from"),
        "{text}"
    );
    let (planned, skipped) = text.split_once("Skipped").expect("a skipped list");
    assert!(!planned.contains("expire-at"), "{text}");
    assert!(
        skipped.contains("expire-at") && skipped.contains("already applied"),
        "{text}"
    );
}

#[test]
fn plan_without_detect_never_connects() {
    // Port 1 on loopback: nothing listens; a connection attempt would fail the command.
    let out = upstep(&[
        "plan",
        "--from",
        "v0.17.0",
        "--mongo-uri",
        "mongodb://127.0.0.1:1/novu",
    ])
    .output()
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_target_comes_from_to_then_the_repo_head_tag_then_the_newest_verified_release() {
    let map = small_map();
    let map_arg = map.path().to_str().unwrap();
    let uri = mongo().uri_for_db(&fresh_db_name("detect_target"));
    let repo = GitFixture::new();
    let first = repo.commit(&[("migrations/rejected.js", Some("//"))], BASE_TIME);
    repo.annotated_tag("v1.0.0", first, BASE_TIME);
    let second = repo.commit(&[("migrations/slow.js", Some("//"))], BASE_TIME + 86_400);
    repo.annotated_tag("v1.1.0", second, BASE_TIME + 86_400);
    let repo_arg = repo.path().to_str().unwrap();

    let at_head = json(&[
        "detect",
        "--map",
        map_arg,
        "--repo",
        repo_arg,
        "--mongo-uri",
        &uri,
    ]);
    assert_eq!(at_head["target"]["version"], "v1.1.0", "{at_head:#}");
    assert_eq!(at_head["target"]["source"]["kind"], "repo-head");
    assert_eq!(at_head["target"]["source"]["tag"], "v1.1.0");
    let ids: Vec<&str> = at_head["migrations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert!(
        !ids.contains(&"orders-status"),
        "v2.0.0's migration is past the target"
    );

    let flag = json(&[
        "detect",
        "--map",
        map_arg,
        "--repo",
        repo_arg,
        "--mongo-uri",
        &uri,
        "--to",
        "1.0.0",
    ]);
    assert_eq!(flag["target"]["version"], "v1.0.0");
    assert_eq!(flag["target"]["source"]["kind"], "flag");

    // HEAD moves past the tag: no exact tag, so the newest release in the map.
    repo.commit(
        &[("README", Some("after the release"))],
        BASE_TIME + 2 * 86_400,
    );
    let newest = json(&[
        "detect",
        "--map",
        map_arg,
        "--repo",
        repo_arg,
        "--mongo-uri",
        &uri,
    ]);
    assert_eq!(newest["target"]["version"], "v2.0.0");
    assert_eq!(newest["target"]["source"]["kind"], "newest-in-map");
    let out = upstep(&["detect", "--map", map_arg, "--mongo-uri", &uri])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout)
        .contains("Target: v2.0.0 (the newest verified release in the map)"));
}

#[test]
fn a_bad_time_limit_or_uri_is_refused_with_a_fix_and_no_secret() {
    let out = upstep(&[
        "detect",
        "--mongo-uri",
        "mongodb://127.0.0.1:1/x",
        "--time-limit-secs",
        "0",
    ])
    .output()
    .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("fix:"));
    let out = upstep(&[
        "detect",
        "--mongo-uri",
        "mongodb://u:S3cret-pw@127.0.0.1:1/x",
    ])
    .output()
    .unwrap();
    assert!(!out.status.success());
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!all.contains("S3cret-pw"), "{all}");
    assert!(all.contains("fix:"), "{all}");
}

/// expire-at sets expireAt on messages and notifications (skipping a notification with a
/// pending job and no `_digestedNotificationId`): each of its checks finds its own pending data
/// and passes the data the script leaves behind.
#[test]
fn expire_at_checks_every_collection_it_can_prove() {
    let map = embedded();
    let fp = &map.migration("expire-at").unwrap().fingerprint;
    let notification = |extra: Document| {
        let mut d = doc! { "_id": ObjectId::new(), "_environmentId": ObjectId::new(), "expireAt": DateTime::now() };
        d.extend(extra);
        d
    };
    let no_expire = |extra: Document| {
        let mut d = notification(extra);
        d.remove("expireAt");
        d
    };
    let (skipped, digested, done) = (ObjectId::new(), ObjectId::new(), ObjectId::new());
    let pending_job = |n: ObjectId| doc! { "_notificationId": n, "status": "pending" };
    type Seed = Vec<(&'static str, Vec<Document>)>;
    let cases: Vec<(&str, Seed, FpState)> = vec![
        (
            "a message without expireAt",
            vec![(
                "messages",
                vec![{
                    let mut m = message(doc! {});
                    m.remove("expireAt");
                    m
                }],
            )],
            FpState::Pending,
        ),
        (
            "a notification without expireAt and no pending job",
            vec![
                ("messages", vec![message(doc! {})]),
                ("notifications", vec![no_expire(doc! { "_id": done })]),
                (
                    "jobs",
                    vec![doc! { "_notificationId": done, "status": "completed" }],
                ),
            ],
            FpState::Pending,
        ),
        (
            "a digest's notification without expireAt, although a job is pending",
            vec![
                ("messages", vec![message(doc! {})]),
                (
                    "notifications",
                    vec![no_expire(
                        doc! { "_id": digested, "_digestedNotificationId": ObjectId::new() },
                    )],
                ),
                ("jobs", vec![pending_job(digested)]),
            ],
            FpState::Pending,
        ),
        (
            "what the script leaves: expireAt everywhere but the notifications it skips",
            vec![
                ("messages", vec![message(doc! {})]),
                (
                    "notifications",
                    vec![notification(doc! {}), no_expire(doc! { "_id": skipped })],
                ),
                ("jobs", vec![pending_job(skipped)]),
            ],
            FpState::Applied,
        ),
    ];
    block_on(async {
        let opts = EvalOptions {
            time_limit: Duration::from_secs(10),
            count_limit: Some(100),
        };
        for (i, (label, data, want)) in cases.iter().enumerate() {
            let uri = mongo().uri_for_db(&fresh_db_name(&format!("fp_expire_at_{i}")));
            seed(&uri, data).await;
            let store = Store::connect(&uri).await.unwrap();
            let report = evaluate(&store.db, fp, opts).await;
            assert_eq!(report.state, *want, "{label}: {report:?}");
        }
    });
}
