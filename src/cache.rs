//! What upstep keeps on the user's disk, and what of it no run can use any more.
//!
//! ```text
//! <cache>/repos/<name>/                    clones of --repo URLs
//! <cache>/worktrees/<repo-key>/<tag>/      a prepared tag (files and node_modules: GBs)
//! <cache>/worktrees/<repo-key>/.meta/<tag> its private git dir; objects/info/alternates
//!                                          names the repository it borrows objects from
//! <cache>/toolchains/node-<v>, pnpm-<v>    versions provisioned with npm
//! <state>/logs/<run-id>/                   setup and step logs of each run
//! <state>/journal/<hash>.jsonl             the local mirror of each database's journal
//! <cache>/pnpm-store/                      the pnpm package store every tag's setup shares
//! <cache>/nx-cache/                        the nx build cache every tag's setup shares
//! <cache>/build-outputs/<key>/             a tag's build outputs, kept (`keep_build_outputs`)
//! ```
//!
//! `inventory` lists them with their sizes; `decide_prune` (pure) says what may go: worktrees
//! whose repository is gone, toolchains no release of the map needs, logs older than N days.
//! It never removes what an unfinished run needs: nothing at all while another upstep process
//! uses the same cache, no worktree of a tag whose step the local journal mirror shows
//! unfinished, no log of a run with an unfinished step. Repositories, the journal mirror, the
//! package store and the build caches (nx's, the kept builds) are never pruned.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::Serialize;

use crate::error::{Error, Result};
use crate::release_map::ReleaseMap;

pub const CACHE_SCHEMA: &str = crate::json_schemas::CACHE;
pub const PRUNE_SCHEMA: &str = crate::json_schemas::CACHE_PRUNE;

/// Where upstep keeps things.
#[derive(Debug, Clone)]
pub struct Roots {
    pub cache: PathBuf,
    pub state: PathBuf,
    /// The package store every tag's setup shares (shown, never pruned).
    pub package_store: Option<PathBuf>,
    /// The nx build cache every tag's setup shares (shown, never pruned).
    pub build_cache: Option<PathBuf>,
    /// The build outputs kept per tag (`keep_build_outputs`; shown, never pruned).
    pub kept_builds: Option<PathBuf>,
}

impl Roots {
    /// The roots this process uses (UPSTEP_CACHE_DIR, UPSTEP_STATE_DIR, or their defaults).
    pub fn current() -> Roots {
        let cache = crate::git::default_cache_root();
        let shared = |path: PathBuf| Some(path).filter(|p| p.is_dir());
        Roots {
            package_store: shared(crate::shared_cache::pnpm_store(&cache)),
            build_cache: shared(crate::shared_cache::nx_cache(&cache)),
            kept_builds: shared(crate::shared_cache::kept_builds(&cache)),
            state: crate::store::mirror::state_dir(),
            cache,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    Repository,
    Worktree,
    Toolchain,
    Logs,
    JournalMirror,
    PackageStore,
    BuildCache,
}

impl Kind {
    pub fn label(self) -> &'static str {
        match self {
            Kind::Repository => "repositories",
            Kind::Worktree => "worktrees",
            Kind::Toolchain => "toolchains",
            Kind::Logs => "logs",
            Kind::JournalMirror => "journal mirrors",
            Kind::PackageStore => "package store",
            Kind::BuildCache => "build cache",
        }
    }
}

/// One thing upstep keeps.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Item {
    pub kind: Kind,
    /// What it is: `<repo-key>/<tag>`, `node-20.8.1`, a run id, a clone's name.
    pub name: String,
    pub path: PathBuf,
    pub bytes: u64,
    /// Seconds since the epoch of its newest file (logs are aged by it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub modified: Option<u64>,
    /// A worktree's tag.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    /// The repository a worktree borrows its objects from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repository: Option<PathBuf>,
    /// A worktree whose repository no longer exists (it cannot be used again).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub repository_gone: bool,
    /// Extra paths that belong to it (a worktree's private git dir).
    #[serde(skip)]
    pub also: Vec<PathBuf>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Inventory {
    pub schema: &'static str,
    pub cache_dir: PathBuf,
    pub state_dir: PathBuf,
    pub items: Vec<Item>,
    pub total_bytes: u64,
}

impl Inventory {
    /// Bytes per kind, in the order of `Kind`.
    pub fn by_kind(&self) -> Vec<(Kind, usize, u64)> {
        let mut kinds: Vec<(Kind, usize, u64)> = Vec::new();
        for item in &self.items {
            match kinds.iter_mut().find(|(k, _, _)| *k == item.kind) {
                Some((_, n, b)) => {
                    *n += 1;
                    *b += item.bytes;
                }
                None => kinds.push((item.kind, 1, item.bytes)),
            }
        }
        kinds.sort();
        kinds
    }
}

/// The size of everything under `path` (symbolic links counted as themselves, not followed)
/// and the newest modification time in it.
pub fn size_of(path: &Path) -> (u64, Option<SystemTime>) {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return (0, None);
    };
    let mut bytes = meta.len();
    let mut newest = meta.modified().ok();
    if meta.is_dir() {
        for entry in std::fs::read_dir(path).into_iter().flatten().flatten() {
            let (b, m) = size_of(&entry.path());
            bytes += b;
            newest = newest.max(m);
        }
    }
    (bytes, newest)
}

fn epoch_secs(t: Option<SystemTime>) -> Option<u64> {
    t.and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
        .map(|d| d.as_secs())
}

fn subdirs(dir: &Path) -> Vec<(String, PathBuf)> {
    let mut out: Vec<(String, PathBuf)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| (e.file_name().to_string_lossy().into_owned(), e.path()))
        .collect();
    out.sort();
    out
}

fn item(kind: Kind, name: String, path: PathBuf) -> Item {
    let (bytes, modified) = size_of(&path);
    Item {
        kind,
        name,
        path,
        bytes,
        modified: epoch_secs(modified),
        tag: None,
        repository: None,
        repository_gone: false,
        also: Vec::new(),
    }
}

/// The repository a worktree's private git dir borrows its objects from (the parent of the
/// objects folder named in `objects/info/alternates`).
fn borrowed_repository(git_dir: &Path) -> Option<PathBuf> {
    let text = std::fs::read_to_string(git_dir.join("objects/info/alternates")).ok()?;
    let objects = PathBuf::from(text.lines().find(|l| !l.trim().is_empty())?.trim());
    Some(objects.parent().map(Path::to_path_buf).unwrap_or(objects))
}

/// Everything upstep keeps under `roots`, with sizes.
pub fn inventory(roots: &Roots) -> Inventory {
    let mut items = Vec::new();
    for (name, path) in subdirs(&roots.cache.join("repos")) {
        items.push(item(Kind::Repository, name, path));
    }
    for (repo_key, repo_dir) in subdirs(&roots.cache.join("worktrees")) {
        let meta = repo_dir.join(".meta");
        for (tag, path) in subdirs(&repo_dir).into_iter().filter(|(n, _)| n != ".meta") {
            let git_dir = meta.join(&tag);
            let mut it = item(Kind::Worktree, format!("{repo_key}/{tag}"), path);
            let (meta_bytes, _) = size_of(&git_dir);
            it.bytes += meta_bytes;
            it.repository = borrowed_repository(&git_dir);
            // No private git dir, or a repository that is gone: nothing can use it again.
            it.repository_gone = it.repository.as_ref().is_none_or(|r| !r.exists());
            it.tag = Some(tag);
            if git_dir.exists() {
                it.also.push(git_dir);
            }
            items.push(it);
        }
    }
    for (name, path) in subdirs(&roots.cache.join("toolchains")) {
        items.push(item(Kind::Toolchain, name, path));
    }
    for (run, path) in subdirs(&roots.state.join("logs")) {
        items.push(item(Kind::Logs, run, path));
    }
    let journal = roots.state.join("journal");
    if journal.is_dir() {
        items.push(item(Kind::JournalMirror, "journal".into(), journal));
    }
    if let Some(store) = &roots.package_store {
        items.push(item(Kind::PackageStore, "pnpm store".into(), store.clone()));
    }
    if let Some(nx) = &roots.build_cache {
        items.push(item(Kind::BuildCache, "nx cache".into(), nx.clone()));
    }
    if let Some(kept) = &roots.kept_builds {
        items.push(item(Kind::BuildCache, "kept builds".into(), kept.clone()));
    }
    let total_bytes = items.iter().map(|i| i.bytes).sum();
    Inventory {
        schema: CACHE_SCHEMA,
        cache_dir: roots.cache.clone(),
        state_dir: roots.state.clone(),
        items,
        total_bytes,
    }
}

/// What protects things from pruning: runs that are not finished.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Unfinished {
    /// Another upstep process using this cache (described), if any.
    pub active_process: Option<String>,
    /// Tags of steps the journal mirror last saw running, failed, interrupted or unverified.
    pub tags: BTreeSet<String>,
    /// Runs that left such a step.
    pub runs: BTreeSet<String>,
}

/// Read the local journal mirrors: per migration the last thing recorded, and which run and
/// tag it was at.
pub fn unfinished_from_mirrors(state: &Path) -> Unfinished {
    use std::collections::BTreeMap;
    let mut unfinished = Unfinished::default();
    let journal = state.join("journal");
    let files = std::fs::read_dir(&journal).into_iter().flatten().flatten();
    for file in files {
        // migration -> (status, run, tag)
        let mut last: BTreeMap<String, (String, String, String)> = BTreeMap::new();
        let text = std::fs::read_to_string(file.path()).unwrap_or_default();
        // A torn last line is skipped, as the mirror's own reader does.
        let events = text
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok());
        for event in events {
            let Some(id) = event["migration"].as_str() else {
                continue;
            };
            let run = event["run_id"].as_str().unwrap_or_default().to_string();
            let kind = event["kind"].as_str().unwrap_or_default();
            let details = &event["details"];
            let entry = last.entry(id.to_string()).or_default();
            match kind {
                "step-started" => {
                    *entry = (
                        "running".into(),
                        run,
                        details["tag"].as_str().unwrap_or_default().to_string(),
                    )
                }
                "step-finished" | "marked" => {
                    entry.0 = details["status"].as_str().unwrap_or_default().to_string();
                    if kind == "step-finished" {
                        entry.1 = run;
                    }
                }
                "step-abandoned" => entry.0 = "interrupted".into(),
                _ => {}
            }
        }
        for (status, run, tag) in last.into_values() {
            if matches!(
                status.as_str(),
                "running" | "failed" | "interrupted" | "ended-unverified"
            ) {
                if !tag.is_empty() {
                    unfinished.tags.insert(tag);
                }
                if !run.is_empty() {
                    unfinished.runs.insert(run);
                }
            }
        }
    }
    unfinished
}

/// Another upstep process of this user that uses the same cache folder (its UPSTEP_CACHE_DIR
/// as ours): while it lives, it may be preparing or using anything in the cache.
pub fn other_process_using(cache_dir_env: Option<&str>) -> Option<String> {
    let me = std::process::id();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(exe) = std::fs::read_link(entry.path().join("exe")) else {
            continue;
        };
        let is_upstep = exe
            .file_name()
            .is_some_and(|n| n.to_string_lossy().trim_end_matches(" (deleted)") == "upstep");
        if !is_upstep {
            continue;
        }
        let environ = std::fs::read(entry.path().join("environ")).unwrap_or_default();
        let theirs = environ
            .split(|b| *b == 0)
            .filter_map(|kv| std::str::from_utf8(kv).ok())
            .find_map(|kv| kv.strip_prefix("UPSTEP_CACHE_DIR="))
            .filter(|v| !v.is_empty());
        if theirs == cache_dir_env.filter(|v| !v.is_empty()) {
            return Some(format!("upstep process {pid} ({})", exe.display()));
        }
    }
    None
}

/// The toolchain folders some release of the map may need (`node-<v>`, `pnpm-<v>`).
pub fn needed_toolchains(map: &ReleaseMap) -> BTreeSet<String> {
    let mut needed = BTreeSet::new();
    for release in &map.releases {
        needed.insert(format!("node-{}", release.node));
        if let Some(pnpm) = &release.pnpm {
            needed.insert(format!("pnpm-{pnpm}"));
        }
    }
    needed
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    Remove,
    Keep,
}

#[derive(Debug, Clone, Serialize)]
pub struct PruneDecision {
    #[serde(flatten)]
    pub item: Item,
    pub verdict: Verdict,
    pub why: String,
}

/// What prune removes and keeps, and why.
pub struct Policy<'a> {
    pub needed_toolchains: &'a BTreeSet<String>,
    /// The map the toolchains were judged against (for the reasons).
    pub map: &'a str,
    pub logs_older_than: Duration,
    pub now: SystemTime,
}

/// Pure: the verdict on every item.
pub fn decide_prune(
    inventory: &Inventory,
    unfinished: &Unfinished,
    policy: &Policy<'_>,
) -> Vec<PruneDecision> {
    let now = epoch_secs(Some(policy.now)).unwrap_or(0);
    let days = policy.logs_older_than.as_secs() / 86_400;
    inventory
        .items
        .iter()
        .map(|item| {
            let (verdict, why) = verdict(item, unfinished, policy, now, days);
            PruneDecision {
                item: item.clone(),
                verdict,
                why,
            }
        })
        .collect()
}

fn verdict(
    item: &Item,
    unfinished: &Unfinished,
    policy: &Policy<'_>,
    now: u64,
    days: u64,
) -> (Verdict, String) {
    use Verdict::{Keep, Remove};
    let never = match item.kind {
        Kind::Repository => Some("a clone a later run can fetch into and use again"),
        Kind::JournalMirror => Some("the local record of each database's journal"),
        Kind::PackageStore => Some(
            "shared by every tag's setup: the next install links from it (`pnpm store prune --store-dir <path>` trims it)",
        ),
        Kind::BuildCache => Some(
            "a build cache: what it holds is restored, not built again (removing it costs only build time)",
        ),
        _ => None,
    };
    if let Some(why) = never {
        return (Keep, why.to_string());
    }
    if let Some(process) = &unfinished.active_process {
        return (Keep, format!("{process} is using this cache"));
    }
    match item.kind {
        Kind::Worktree => {
            let tag = item.tag.as_deref().unwrap_or_default();
            if unfinished.tags.contains(tag) {
                (
                    Keep,
                    format!("an unfinished step of the journal mirror runs at {tag}"),
                )
            } else if item.repository_gone {
                let repo = item
                    .repository
                    .as_ref()
                    .map_or("its repository".to_string(), |r| r.display().to_string());
                (
                    Remove,
                    format!("{repo} is gone: no run can use this worktree again"),
                )
            } else {
                (
                    Keep,
                    "its repository exists: the next run at this tag reuses it".into(),
                )
            }
        }
        Kind::Toolchain => {
            let known = item.name.starts_with("node-") || item.name.starts_with("pnpm-");
            if !known {
                (Keep, "not a toolchain upstep names".into())
            } else if policy.needed_toolchains.contains(&item.name) {
                (Keep, format!("a release of {} needs it", policy.map))
            } else {
                (Remove, format!("no release of {} needs it", policy.map))
            }
        }
        Kind::Logs => {
            let age_days = item.modified.map_or(0, |m| now.saturating_sub(m) / 86_400);
            if unfinished.runs.contains(&item.name) {
                (Keep, "the logs of a run that left a step unfinished".into())
            } else if age_days >= days {
                (
                    Remove,
                    format!("{} old", crate::words::count(age_days as usize, "day")),
                )
            } else {
                (
                    Keep,
                    format!("newer than {}", crate::words::count(days as usize, "day")),
                )
            }
        }
        Kind::Repository | Kind::JournalMirror | Kind::PackageStore | Kind::BuildCache => {
            (Keep, String::new())
        }
    }
}

/// Remove what the decisions say (nothing with `dry_run`). A worktree's private git dir goes
/// with it, and a repository's worktree folder once it holds nothing else.
pub fn apply(decisions: &[PruneDecision], dry_run: bool) -> Result<u64> {
    let mut freed = 0;
    for d in decisions.iter().filter(|d| d.verdict == Verdict::Remove) {
        if !dry_run {
            // The git dir first: a worktree without one is never taken for a valid one.
            for path in d.item.also.iter().chain([&d.item.path]) {
                remove(path)?;
            }
            if d.item.kind == Kind::Worktree {
                remove_if_empty(d.item.path.parent());
            }
        }
        freed += d.item.bytes;
    }
    Ok(freed)
}

fn remove(path: &Path) -> Result<()> {
    match std::fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::usage(
            format!("cannot remove {}: {e}", path.display()),
            "check its permissions, or remove it by hand",
        )),
    }
}

/// A repository's worktree folder that holds only an empty `.meta`.
fn remove_if_empty(repo_dir: Option<&Path>) {
    let Some(dir) = repo_dir else { return };
    let meta = dir.join(".meta");
    let _ = std::fs::remove_dir(&meta);
    let _ = std::fs::remove_dir(dir);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn worktree(tag: &str, gone: bool) -> Item {
        Item {
            kind: Kind::Worktree,
            name: format!("repo-1/{tag}"),
            path: PathBuf::from(format!("/c/worktrees/repo-1/{tag}")),
            bytes: 10,
            modified: Some(0),
            tag: Some(tag.into()),
            repository: Some(PathBuf::from("/r")),
            repository_gone: gone,
            also: vec![],
        }
    }

    fn other(kind: Kind, name: &str, modified: u64) -> Item {
        Item {
            kind,
            name: name.into(),
            path: PathBuf::from("/x").join(name),
            bytes: 5,
            modified: Some(modified),
            tag: None,
            repository: None,
            repository_gone: false,
            also: vec![],
        }
    }

    fn decide(items: Vec<Item>, unfinished: &Unfinished) -> Vec<(String, Verdict)> {
        let inventory = Inventory {
            schema: CACHE_SCHEMA,
            cache_dir: "/c".into(),
            state_dir: "/s".into(),
            total_bytes: 0,
            items,
        };
        let needed = BTreeSet::from(["node-20.8.1".to_string()]);
        let policy = Policy {
            needed_toolchains: &needed,
            map: "m",
            logs_older_than: Duration::from_secs(30 * 86_400),
            now: SystemTime::UNIX_EPOCH + Duration::from_secs(100 * 86_400),
        };
        decide_prune(&inventory, unfinished, &policy)
            .into_iter()
            .map(|d| (d.item.name, d.verdict))
            .collect()
    }

    #[test]
    fn prune_takes_what_no_run_can_use_and_keeps_the_rest() {
        let got = decide(
            vec![
                worktree("v1.0.0", true),
                worktree("v1.1.0", false),
                other(Kind::Toolchain, "node-20.8.1", 0),
                other(Kind::Toolchain, "node-14.0.0", 0),
                other(Kind::Toolchain, "something", 0),
                other(Kind::Logs, "old", 0),
                other(Kind::Logs, "new", 99 * 86_400),
                other(Kind::Repository, "novu", 0),
                other(Kind::JournalMirror, "journal", 0),
            ],
            &Unfinished::default(),
        );
        use Verdict::{Keep, Remove};
        let want = [
            ("repo-1/v1.0.0", Remove),
            ("repo-1/v1.1.0", Keep),
            ("node-20.8.1", Keep),
            ("node-14.0.0", Remove),
            ("something", Keep),
            ("old", Remove),
            ("new", Keep),
            ("novu", Keep),
            ("journal", Keep),
        ];
        let want: Vec<(String, Verdict)> = want.iter().map(|(n, v)| (n.to_string(), *v)).collect();
        assert_eq!(got, want);
    }

    #[test]
    fn an_unfinished_run_keeps_its_worktree_and_logs_and_a_live_process_keeps_everything() {
        let unfinished = Unfinished {
            active_process: None,
            tags: BTreeSet::from(["v1.0.0".to_string()]),
            runs: BTreeSet::from(["old".to_string()]),
        };
        let got = decide(
            vec![worktree("v1.0.0", true), other(Kind::Logs, "old", 0)],
            &unfinished,
        );
        assert!(got.iter().all(|(_, v)| *v == Verdict::Keep), "{got:?}");
        let busy = Unfinished {
            active_process: Some("upstep process 1".into()),
            ..Unfinished::default()
        };
        let got = decide(
            vec![
                worktree("v1.0.0", true),
                other(Kind::Toolchain, "node-1.0.0", 0),
            ],
            &busy,
        );
        assert!(got.iter().all(|(_, v)| *v == Verdict::Keep), "{got:?}");
    }

    #[test]
    fn the_mirror_names_the_unfinished_steps_tags_and_runs() {
        let state = tempfile::tempdir().unwrap();
        let journal = state.path().join("journal");
        std::fs::create_dir_all(&journal).unwrap();
        let lines = [
            r#"{"kind":"step-started","migration":"a","run_id":"r1","details":{"tag":"v1.0.0"}}"#,
            r#"{"kind":"step-finished","migration":"a","run_id":"r1","details":{"status":"succeeded"}}"#,
            r#"{"kind":"step-started","migration":"b","run_id":"r1","details":{"tag":"v1.1.0"}}"#,
            r#"{"kind":"step-finished","migration":"b","run_id":"r1","details":{"status":"failed"}}"#,
            r#"{"kind":"step-started","migration":"c","run_id":"r2","details":{"tag":"v1.2.0"}}"#,
        ];
        std::fs::write(journal.join("x.jsonl"), lines.join("\n") + "\n").unwrap();
        let u = unfinished_from_mirrors(state.path());
        assert_eq!(
            u.tags,
            BTreeSet::from(["v1.1.0".to_string(), "v1.2.0".to_string()])
        );
        assert_eq!(u.runs, BTreeSet::from(["r1".to_string(), "r2".to_string()]));
    }

    #[test]
    fn sizes_add_up() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("a/b")).unwrap();
        std::fs::write(dir.path().join("a/b/f"), vec![0u8; 1000]).unwrap();
        std::fs::write(dir.path().join("a/g"), vec![0u8; 500]).unwrap();
        let (bytes, newest) = size_of(dir.path());
        assert!(bytes >= 1500, "{bytes}");
        assert!(newest.is_some());
    }
}
