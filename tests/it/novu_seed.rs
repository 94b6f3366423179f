//! The real-shaped Novu seed of `scripts/novu-e2e.sh` (examples/novu_seed) against the
//! embedded release map: seeded "as of" a release, exactly the migrations after it are pending
//! by their data checks, so an upgrade from that release exercises exactly those scripts.

#[path = "../../examples/novu_seed/data.rs"]
#[allow(dead_code)]
mod novu_seed_data;

use std::time::Duration;

use bson::Document;
use semver::Version;
use upstep::release_map::{Fingerprint, Introduced};
use upstep::store::fingerprint::{evaluate, EvalOptions, FpState};

use crate::support::{fresh_db_name, mongo};

#[test]
fn seeded_as_of_a_release_exactly_the_later_migrations_are_pending() {
    let map = upstep::release_map::load(None).expect("the embedded map");
    let mut points: Vec<Version> = vec![Version::new(0, 3, 0)];
    points.extend(map.releases.iter().map(|r| r.version.clone()));
    let uri = mongo().uri_for_db("admin");
    crate::support::block_on(async move {
        let client = mongodb::Client::with_uri_str(&uri).await.unwrap();
        let mut wrong = Vec::new();
        for as_of in &points {
            let db = client.database(&fresh_db_name(&format!("seed-{as_of}")));
            for (collection, docs) in novu_seed_data::documents(as_of) {
                if !docs.is_empty() {
                    db.collection::<Document>(collection)
                        .insert_many(docs)
                        .await
                        .unwrap();
                }
            }
            for m in &map.migrations {
                let (Introduced::Release(introduced), Fingerprint::Checks(_)) =
                    (&m.introduced, &m.fingerprint)
                else {
                    continue;
                };
                // Where an upgrade to the newest release runs it.
                let runs_at = m.run_at.clone().unwrap_or_else(|| introduced.clone());
                let report = evaluate(
                    &db,
                    &m.fingerprint,
                    EvalOptions {
                        time_limit: Duration::from_secs(30),
                        count_limit: None,
                    },
                )
                .await;
                let pending = report.state == FpState::Pending;
                // update-primary-for-disabled-novu-integrations repairs what a v0.18.0 upgrade
                // left (inactive Novu integrations marked primary): only that state has work
                // for it; before v0.18.0 there are no Novu integrations to repair.
                // The v2 e-mail step template and alice's second subscription to the topic
                // are seeded from v2.0.0 (v2 workflows, and what
                // remove-duplicate-identifiers deletes); the optional preferences-uniqueness
                // finds no duplicate in any state (the seed writes one preference per group).
                let v2 = Version::new(2, 0, 0);
                let expected = match m.id.as_str() {
                    "update-primary-for-disabled-novu-integrations" => {
                        as_of.major == 0 && as_of.minor == 18
                    }
                    "email-step-ui-schema-html-editor"
                    | "add-layout-id-to-email-controls"
                    | "remove-duplicate-identifiers" => *as_of >= v2 && *as_of < runs_at,
                    "preferences-uniqueness" => false,
                    _ => *as_of < runs_at,
                };
                if pending != expected {
                    wrong.push(format!(
                        "as of {as_of}: {} (runs at {runs_at}) is {:?}",
                        m.id, report.state
                    ));
                }
            }
            db.drop().await.unwrap();
        }
        assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    });
}
