//! The prerequisites of a plan, checked before anything touches data. `upstep doctor` prints
//! them; `upgrade` runs the same checks and refuses to start on a blocker.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

use crate::plan::Plan;
use crate::preflight::{
    check_disk, check_encryption_key, check_env, check_mongo, check_npx, check_redis, check_tool,
    worst_severity, CheckResult, Severity, ToolRequirement,
};
use crate::redact::Uri;
use crate::release_map::{Need, ReleaseMap};
pub use crate::runner::toolchain::ToolchainPolicy;

/// What the checks need to know besides the plan.
pub struct DoctorInputs<'a> {
    pub map: &'a ReleaseMap,
    pub plan: &'a Plan,
    pub mongo_uri: Option<&'a Uri>,
    /// A Redis URL, `auto` (a throwaway local redis-server), or None (= auto).
    pub redis_url: Option<&'a Uri>,
    /// Name of the env var that holds the store encryption key.
    pub encryption_key_var: &'a str,
    pub encryption_key: Option<&'a secrecy::SecretString>,
    pub path_env: OsString,
    /// Where worktrees and installs go (checked for free space).
    pub cache_dir: PathBuf,
    pub toolchain: ToolchainPolicy,
    /// Every tag's worktree stays (`--keep-worktrees`); otherwise a run holds two prepared tags
    /// at most (each is removed once its steps are done; the next is prepared meanwhile).
    pub keep_worktrees: bool,
    /// Probe the hosts of downloads the plan's setups fetch. The upgrade's preflight leaves
    /// this to the run, which knows which tags it really sets up (and reads their lockfiles).
    pub probe_downloads: bool,
}

#[derive(Debug, Serialize)]
pub struct DoctorReport {
    pub schema: &'static str,
    pub checks: Vec<CheckResult>,
    pub blockers: usize,
    pub warnings: usize,
}

impl DoctorReport {
    pub fn worst(&self) -> Severity {
        worst_severity(&self.checks)
    }

    /// Add checks made outside `run_checks` (the repository's, the journal's), counted alike.
    pub fn add(&mut self, checks: Vec<CheckResult>) {
        self.checks.extend(checks);
        self.blockers = self
            .checks
            .iter()
            .filter(|c| c.severity == Severity::Blocker)
            .count();
        self.warnings = self
            .checks
            .iter()
            .filter(|c| c.severity == Severity::Warning)
            .count();
    }
}

/// `doctor`'s line for each stand-in the plan's tags always take (the `when-unreachable`
/// ones are told by the download checks, which probe their hosts).
fn stand_in_checks(plan: &crate::plan::Plan) -> Vec<CheckResult> {
    plan.groups
        .iter()
        .flat_map(|g| {
            g.stand_ins
                .iter()
                .filter(|p| p.stand_in.when == crate::release_map::StandInWhen::Always)
                .map(move |p| {
                    CheckResult::ok(
                        format!("stand-in.{}.{}", g.git_ref, p.stand_in.package),
                        format!("{} at {}", p.stand_in.package, g.git_ref),
                        format!(
                            "{}'s install takes the map's stand-in: {}",
                            g.git_ref,
                            p.stand_in.describe()
                        ),
                    )
                })
        })
        .collect()
}

fn plan_needs(plan: &Plan, need: Need) -> bool {
    plan.steps().any(|(_, s)| s.needs.contains(&need))
}

pub async fn run_checks(inputs: &DoctorInputs<'_>) -> DoctorReport {
    let plan = inputs.plan;
    let mut checks = Vec::new();

    // Toolchain per tag: node, then pnpm, as the map declares them. npx matters only when a
    // version has to be provisioned, and starting npm costs a noticeable fraction of a second,
    // so it is checked only then.
    let mut requirements = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for group in &plan.groups {
        let node = match inputs.toolchain {
            ToolchainPolicy::Exact => ToolRequirement {
                tool: "node".into(),
                exact: Some(group.node.clone()),
                range: None,
                for_tag: group.git_ref.clone(),
            },
            ToolchainPolicy::Range => ToolRequirement {
                tool: "node".into(),
                exact: group.node_engines.is_none().then(|| group.node.clone()),
                range: group.node_engines.clone(),
                for_tag: group.git_ref.clone(),
            },
        };
        if seen.insert(("node", node.exact.clone(), node.range.clone())) {
            requirements.push(node);
        }
        if let Some(pnpm) = &group.pnpm {
            let req = ToolRequirement {
                tool: "pnpm".into(),
                exact: Some(pnpm.clone()),
                range: None,
                for_tag: group.git_ref.clone(),
            };
            if seen.insert(("pnpm", req.exact.clone(), None)) {
                requirements.push(req);
            }
        }
    }
    let mut tools: Vec<CheckResult> = requirements
        .iter()
        .map(|r| check_tool(r, &inputs.path_env, true))
        .collect();
    if tools.iter().any(|c| c.severity != Severity::Ok) {
        let npx = check_npx(&inputs.path_env);
        if npx.severity != Severity::Ok {
            tools = requirements
                .iter()
                .map(|r| check_tool(r, &inputs.path_env, false))
                .collect();
        }
        tools.push(npx);
    }
    checks.extend(tools);

    // Downloads from outside the package registry (a GitHub tarball): the install of that
    // tag fails without them, so an unreachable host is a blocker that names the dependency.
    if inputs.probe_downloads {
        let needs: Vec<crate::downloads::Need> = plan
            .groups
            .iter()
            .flat_map(|g| crate::downloads::needed(inputs.map, g, g.setup_profile.as_deref()))
            .collect();
        checks.extend(crate::downloads::checks_async(&needs).await);
        checks.extend(stand_in_checks(plan));
    }

    // Redis: only scripts that boot the application need one.
    if plan_needs(plan, Need::Redis) {
        checks.push(match inputs.redis_url {
            Some(url) if url.expose() != "auto" => {
                check_redis(url.expose(), Duration::from_secs(5)).await
            }
            _ => check_redis_server_installed(&inputs.path_env),
        });
    }

    // MongoDB: reachable, new enough, credentials, roles, topology, the right database.
    match inputs.mongo_uri {
        Some(uri) => {
            let needs_rs = plan_needs(plan, Need::ReplicaSet);
            checks.extend(check_mongo(uri.expose(), Duration::from_secs(5), needs_rs).await);
        }
        None => checks.push(CheckResult::blocker(
            "mongo.connect",
            "MongoDB",
            "no MongoDB URI given",
            "pass --mongo-uri mongodb://host:27017/<database>, or set MONGO_URL",
        )),
    }

    // The key and the env checks are the map's: a project that declares none gets none.
    // A map none of whose migrations needs a key gets no key check at all.
    let key_rules = inputs.map.project.encryption_key.clone();
    let needs_key = plan_needs(plan, Need::EncryptionKey);
    let map_uses_key = inputs
        .map
        .migrations
        .iter()
        .any(|m| m.needs(Need::EncryptionKey));
    if needs_key || map_uses_key {
        checks.push(check_encryption_key(
            inputs
                .encryption_key
                .map(secrecy::ExposeSecret::expose_secret),
            inputs.encryption_key_var,
            needs_key,
            &key_rules.unwrap_or_default(),
        ));
    }

    // The env every script gets, against the map's env checks.
    let mut env: BTreeMap<String, String> = BTreeMap::new();
    for group in &plan.groups {
        if let Some(era) = inputs.map.eras.get(&group.era) {
            env.extend(era.env.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
    }
    if !plan.is_empty() {
        checks.extend(
            inputs
                .map
                .project
                .env_checks
                .iter()
                .map(|rule| check_env(rule, &env)),
        );
    }

    let per_tag = inputs.map.project.disk_per_tag_mb * 1024 * 1024;
    if per_tag > 0 && !plan.is_empty() {
        let tags_at_once =
            crate::plan_needs::tags_at_once(plan.groups.len(), inputs.keep_worktrees);
        checks.push(check_disk(&inputs.cache_dir, per_tag * tags_at_once as u64));
    }

    let blockers = checks
        .iter()
        .filter(|c| c.severity == Severity::Blocker)
        .count();
    let warnings = checks
        .iter()
        .filter(|c| c.severity == Severity::Warning)
        .count();
    DoctorReport {
        schema: crate::json_schemas::DOCTOR,
        checks,
        blockers,
        warnings,
    }
}

/// With no Redis URL (or `auto`), upstep starts a throwaway local redis-server for the run.
fn check_redis_server_installed(path_env: &OsString) -> CheckResult {
    let found = crate::child::find_on_path("redis-server", path_env);
    match found {
        Some(path) => CheckResult::ok(
            "redis",
            "Redis",
            format!("a throwaway redis-server ({}) will be started for the scripts", path.display()),
        ),
        None => CheckResult::blocker(
            "redis",
            "Redis",
            "the scripts need a Redis, none is configured, and redis-server is not installed",
            "apt-get install redis-server (or brew install redis), or pass --redis-url redis://host:port",
        ),
    }
}
