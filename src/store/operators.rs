//! Every filter, update and pipeline upstep sends must work on the oldest MongoDB it accepts
//! (`preflight::mongo::MIN_MONGO_VERSION`): `doctor` passing and then the first `upgrade`
//! failing at the lock is the failure this guards against (`$dateAdd` is 5.0+).
//!
//! The table says when each `$`-name appeared in MongoDB. A name missing from it fails the
//! test, so the table grows with the code instead of being silently bypassed. Names with
//! several meanings (`$set` the update operator and the 4.2 stage, `$first` the accumulator
//! and the 4.4 array expression) carry their newest meaning's version: conservative.

use bson::{Bson, Document};

/// (name, (major, minor) it appeared in).
const OPERATORS: &[(&str, (u64, u64))] = &[
    // Query and projection operators.
    ("$eq", (3, 0)),
    ("$ne", (2, 0)),
    ("$gt", (2, 0)),
    ("$gte", (2, 0)),
    ("$lt", (2, 0)),
    ("$lte", (2, 0)),
    ("$in", (2, 0)),
    ("$nin", (2, 0)),
    ("$and", (2, 0)),
    ("$or", (2, 0)),
    ("$nor", (2, 0)),
    ("$not", (2, 0)),
    ("$exists", (2, 0)),
    ("$type", (3, 4)),
    ("$size", (2, 6)),
    ("$all", (2, 0)),
    ("$elemMatch", (2, 2)),
    ("$regex", (2, 0)),
    ("$options", (2, 0)),
    ("$mod", (2, 0)),
    ("$expr", (3, 6)),
    ("$jsonSchema", (3, 6)),
    ("$comment", (3, 2)),
    // Update operators.
    ("$set", (4, 2)),
    ("$unset", (4, 2)),
    ("$inc", (2, 0)),
    ("$mul", (2, 6)),
    ("$rename", (2, 0)),
    ("$currentDate", (2, 6)),
    ("$setOnInsert", (2, 4)),
    ("$push", (2, 4)),
    ("$pull", (2, 0)),
    ("$addToSet", (2, 4)),
    ("$min", (2, 6)),
    ("$max", (2, 6)),
    // Aggregation stages.
    ("$match", (2, 2)),
    ("$group", (2, 2)),
    ("$project", (2, 2)),
    ("$limit", (2, 2)),
    ("$skip", (2, 2)),
    ("$sort", (2, 2)),
    ("$unwind", (3, 2)),
    ("$lookup", (3, 6)),
    ("$addFields", (3, 4)),
    ("$replaceRoot", (3, 4)),
    ("$replaceWith", (4, 2)),
    ("$count", (3, 4)),
    ("$facet", (3, 4)),
    ("$sample", (3, 2)),
    ("$unionWith", (4, 4)),
    ("$merge", (4, 2)),
    ("$out", (2, 6)),
    ("$setWindowFields", (5, 0)),
    ("$densify", (5, 1)),
    ("$documents", (5, 1)),
    ("$fill", (5, 3)),
    // Expressions and accumulators.
    ("$literal", (2, 6)),
    ("$cond", (2, 6)),
    ("$ifNull", (2, 6)),
    ("$add", (2, 2)),
    ("$subtract", (2, 2)),
    ("$multiply", (2, 2)),
    ("$divide", (2, 2)),
    ("$cmp", (2, 2)),
    ("$concat", (2, 4)),
    ("$sum", (2, 2)),
    ("$avg", (2, 2)),
    ("$first", (4, 4)),
    ("$last", (4, 4)),
    ("$toLong", (4, 0)),
    ("$toDate", (4, 0)),
    ("$toString", (4, 0)),
    ("$convert", (4, 0)),
    ("$isNumber", (4, 4)),
    ("$dateAdd", (5, 0)),
    ("$dateSubtract", (5, 0)),
    ("$dateDiff", (5, 0)),
    ("$dateTrunc", (5, 0)),
    ("$getField", (5, 0)),
    ("$setField", (5, 0)),
    ("$top", (5, 2)),
    ("$bottom", (5, 2)),
    ("$firstN", (5, 2)),
    ("$lastN", (5, 2)),
    ("$maxN", (5, 2)),
    ("$minN", (5, 2)),
    // System variables (`$$NAME`).
    ("$$NOW", (4, 2)),
    ("$$CLUSTER_TIME", (4, 2)),
    ("$$ROOT", (2, 6)),
    ("$$CURRENT", (2, 6)),
    ("$$REMOVE", (3, 6)),
    ("$$SEARCH_META", (5, 0)),
    ("$$USER_ROLES", (7, 0)),
];

/// An update given as a pipeline (rather than an update document) needs MongoDB 4.2.
const UPDATE_PIPELINE: (u64, u64) = (4, 2);
/// `$lookup` with both `localField`/`foreignField` and `pipeline` needs MongoDB 5.0.
const LOOKUP_CONCISE_CORRELATED: (u64, u64) = (5, 0);

pub(crate) fn introduced(name: &str) -> Option<(u64, u64)> {
    OPERATORS.iter().find(|(n, _)| *n == name).map(|(_, v)| *v)
}

/// What one sent document needs: each `$`-name (or rule) with the version it appeared in;
/// `None` for a name the table does not know.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Need {
    pub name: String,
    pub version: Option<(u64, u64)>,
}

pub(crate) fn needs(value: &Bson) -> Vec<Need> {
    let mut out = Vec::new();
    walk(value, &mut out);
    out
}

pub(crate) fn needs_of_update_pipeline(stages: &[Document]) -> Vec<Need> {
    let mut out = vec![Need {
        name: "update given as a pipeline".into(),
        version: Some(UPDATE_PIPELINE),
    }];
    for stage in stages {
        walk(&Bson::Document(stage.clone()), &mut out);
    }
    out
}

fn walk(value: &Bson, out: &mut Vec<Need>) {
    match value {
        Bson::Document(doc) => {
            for (key, inner) in doc {
                if key.starts_with('$') {
                    out.push(Need {
                        name: key.clone(),
                        version: introduced(key),
                    });
                    if key == "$lookup" {
                        lookup_rule(inner, out);
                    }
                    // A literal's content is data, never interpreted.
                    if key == "$literal" {
                        continue;
                    }
                }
                walk(inner, out);
            }
        }
        Bson::Array(items) => items.iter().for_each(|i| walk(i, out)),
        // `$$NAME` is a system variable (upper case) or one a `let` defines (lower case);
        // `$field` is a field path.
        Bson::String(s) if s.starts_with("$$") => {
            let name = s.split('.').next().unwrap_or(s);
            if name[2..].starts_with(|c: char| c.is_ascii_uppercase()) {
                out.push(Need {
                    name: name.to_string(),
                    version: introduced(name),
                });
            }
        }
        _ => {}
    }
}

fn lookup_rule(spec: &Bson, out: &mut Vec<Need>) {
    if let Bson::Document(spec) = spec {
        if spec.contains_key("pipeline")
            && (spec.contains_key("localField") || spec.contains_key("foreignField"))
        {
            out.push(Need {
                name: "$lookup with localField and pipeline".into(),
                version: Some(LOOKUP_CONCISE_CORRELATED),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use bson::doc;

    use super::*;
    use crate::preflight::MIN_MONGO_VERSION;
    use crate::release_map::{CheckKind, Fingerprint};
    use crate::store::journal::{self, Actor, StepEnd, StepStart, StepStatus};
    use crate::store::{fingerprint, lock};

    /// Everything upstep sends, by where it is sent from.
    fn everything_sent() -> Vec<(String, Vec<Need>)> {
        let actor = Actor::current();
        let lease = Duration::from_secs(60);
        let filter = |d: Document| needs(&Bson::Document(d));
        let mut sent: Vec<(String, Vec<Need>)> = vec![
            ("lock: filter".into(), filter(lock::lock_filter())),
            (
                "lock: holder filter".into(),
                filter(lock::held_by_filter("r")),
            ),
            (
                "lock: acquire".into(),
                needs_of_update_pipeline(&lock::acquire_pipeline(&actor, lease).unwrap()),
            ),
            (
                "lock: take over".into(),
                needs_of_update_pipeline(&lock::lease_pipeline(&actor, lease).unwrap()),
            ),
            (
                "lock: renew".into(),
                needs_of_update_pipeline(&lock::renew_pipeline(lease)),
            ),
            ("journal: entry".into(), filter(journal::entry_filter("m"))),
            (
                "journal: owned entry".into(),
                filter(journal::owned_filter("m", "r")),
            ),
            (
                "journal: running entries of a run".into(),
                filter(journal::running_of_run_filter("r")),
            ),
            (
                "journal: abandoned (stale)".into(),
                filter(journal::abandoned_filter("m", "r", false)),
            ),
            (
                "journal: abandoned (dead)".into(),
                filter(journal::abandoned_filter("m", "r", true)),
            ),
            (
                "journal: newer schema".into(),
                filter(journal::newer_schema_filter()),
            ),
            (
                "journal: read".into(),
                journal::read_pipeline()
                    .into_iter()
                    .flat_map(&filter)
                    .collect(),
            ),
            (
                "journal: heartbeat".into(),
                needs_of_update_pipeline(&journal::beat_pipeline(bson::DateTime::now())),
            ),
            (
                "journal: begin step".into(),
                needs_of_update_pipeline(
                    &journal::begin_pipeline(
                        &StepStart {
                            id: "m",
                            tag: "$v1",
                            commit: "c",
                            script: "s.js",
                            script_sha256: "00",
                            backup: Some("/b"),
                        },
                        &actor,
                        crate::store::server_now_plus(lease),
                    )
                    .unwrap(),
                ),
            ),
            (
                "journal: record child".into(),
                filter(journal::record_child_update(1, 1)),
            ),
            (
                "journal: settle".into(),
                filter(journal::settle_update(
                    StepStatus::Failed,
                    &StepEnd::without_outcome(journal::EndedBy::Exited, ""),
                )),
            ),
            (
                "journal: settle abandoned".into(),
                filter(journal::abandoned_update("gone")),
            ),
            (
                "journal: mark".into(),
                filter(journal::mark_update(StepStatus::MarkedApplied, "r", &actor).unwrap()),
            ),
            (
                "events: by kind".into(),
                filter(journal::event_kind_filter("backup-taken")),
            ),
            (
                "events: oldest first".into(),
                filter(journal::oldest_first()),
            ),
            (
                "events: newest first".into(),
                filter(journal::newest_first()),
            ),
            (
                "fingerprints: projection".into(),
                filter(fingerprint::id_only()),
            ),
            (
                "tool journals: a record".into(),
                filter(super::super::tool_journal::record_filter(
                    crate::release_map::ToolJournal::MigrateMongo,
                    "a.js",
                )),
            ),
        ];
        let map = crate::release_map::load(None).expect("the embedded map loads");
        for m in &map.migrations {
            let Fingerprint::Checks(checks) = &m.fingerprint else {
                continue;
            };
            for (i, check) in checks.iter().enumerate() {
                let place = format!("map: {} check {} ({})", m.id, i + 1, check.collection);
                match &check.kind {
                    CheckKind::Filter(f) => sent.push((place, filter(f.clone()))),
                    CheckKind::Pipeline(p) => {
                        for limit in [None, Some(1000)] {
                            let stages = fingerprint::stages_to_send(p, limit);
                            sent.push((
                                format!("{place}, counting {limit:?}"),
                                stages.into_iter().flat_map(&filter).collect(),
                            ));
                        }
                    }
                    CheckKind::Absent => {}
                    CheckKind::ToolJournal { tool, key } => sent.push((
                        place,
                        filter(super::super::tool_journal::record_filter(*tool, key)),
                    )),
                }
            }
        }
        sent
    }

    #[test]
    fn every_document_upstep_sends_works_on_the_oldest_accepted_server() {
        let min = MIN_MONGO_VERSION;
        let mut problems = Vec::new();
        let mut seen = 0;
        for (place, needs) in everything_sent() {
            for need in needs {
                seen += 1;
                match need.version {
                    None => problems.push(format!(
                        "{place}: {} is not in the operator table (src/store/operators.rs): add it with the MongoDB version it appeared in",
                        need.name
                    )),
                    Some(v) if v > min => problems.push(format!(
                        "{place}: {} needs MongoDB {}.{}, but upstep accepts {}.{}",
                        need.name, v.0, v.1, min.0, min.1
                    )),
                    Some(_) => {}
                }
            }
        }
        assert!(seen > 100, "the walk found only {seen} operators");
        assert!(problems.is_empty(), "{}", problems.join("\n"));
    }

    #[test]
    fn the_walk_catches_new_operators_unknown_names_and_version_rules() {
        let too_new = doc! { "$set": { "lease_until": { "$dateAdd": { "startDate": "$$NOW", "unit": "millisecond", "amount": 5 } } } };
        let found = needs(&Bson::Document(too_new));
        assert!(found.contains(&Need {
            name: "$dateAdd".into(),
            version: Some((5, 0))
        }));
        assert!(found.iter().any(|n| n.name == "$$NOW"));
        let unknown = needs(&Bson::Document(
            doc! { "$match": { "a": { "$frobnicate": 1 } } },
        ));
        assert!(unknown.contains(&Need {
            name: "$frobnicate".into(),
            version: None
        }));
        let concise = doc! { "$lookup": { "from": "b", "localField": "x", "foreignField": "y", "pipeline": [], "as": "z" } };
        assert!(needs(&Bson::Document(concise))
            .iter()
            .any(|n| n.version == Some((5, 0))));
        // Field paths, user variables and literal data are not operators.
        let plain = doc! { "$literal": { "$weird": "$$WHATEVER" }, "x": "$field", "y": "$$e.f" };
        assert_eq!(
            needs(&Bson::Document(plain)),
            vec![Need {
                name: "$literal".into(),
                version: Some((2, 6))
            }]
        );
        assert_eq!(
            needs_of_update_pipeline(&[])
                .first()
                .and_then(|n| n.version),
            Some((4, 2))
        );
    }

    #[test]
    fn the_table_has_each_name_once() {
        let mut names: Vec<&str> = OPERATORS.iter().map(|(n, _)| *n).collect();
        names.sort_unstable();
        let before = names.len();
        names.dedup();
        assert_eq!(before, names.len());
    }
}
