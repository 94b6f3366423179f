//! Release-map generation and checking from a repository's history: which release tag first
//! ships each migration script (novu-facts.md §1: the first *stable* tag, in semver order,
//! whose tree contains the script's path).
//!
//! Pure functions over a [`GitRepo`]: they read trees, never the working copy.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::fmt::Write as _;

use git2::{ObjectType, Oid};
use semver::Version;

use super::tree::normalise_repo_path;
use super::{GitRepo, ReleaseTag};
use crate::error::{Error, Result};

/// A migration script found in the repository's release tags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiscoveredScript {
    /// Repository-relative path.
    pub path: String,
    /// The first stable release whose tree contains the path.
    pub introduced_in: Version,
    /// The tag of that release.
    pub tag: String,
    /// The newest release (stable or not) whose tree contains the path.
    pub last_seen_in: Version,
    /// `Some(last_seen_in)` when the newest release no longer contains the path.
    pub removed_after: Option<Version>,
}

/// What a release map says about one script, for [`check_map`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpectedScript {
    pub id: String,
    /// Repository-relative path.
    pub script: String,
    /// `None` for a script the map says no release ships yet (`unreleased_ref`).
    pub introduced_in: Option<Version>,
    /// The first release whose tree no longer holds the script, per the map (`removed_in`).
    pub removed_in: Option<Version>,
}

/// An entry `map check` could not check: the repository's tags end before it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unchecked {
    pub id: String,
    /// What could not be checked and why.
    pub what: String,
}

impl fmt::Display for Unchecked {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "migration {}: {}", self.id, self.what)
    }
}

/// The outcome of [`check_map_report`]: real disagreements, and what the repository is too old
/// (or too new) to say anything about.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MapCheck {
    pub disagreements: Vec<Disagreement>,
    pub unchecked: Vec<Unchecked>,
}

/// One way the release map and the repository disagree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Disagreement {
    /// A script in the repository has no map entry.
    MissingFromMap {
        path: String,
        introduced_in: Version,
    },
    /// The map names another release than the first one whose tree contains the script
    /// (`map_says` is `None` when the map says the script is unreleased).
    WrongRelease {
        id: String,
        path: String,
        map_says: Option<Version>,
        repo_says: Version,
    },
    /// The script is in no release tag's tree (`last_seen_in` is `None`), or was removed
    /// after `last_seen_in` (absent from the newest tag).
    NoLongerExists {
        id: String,
        path: String,
        last_seen_in: Option<Version>,
    },
    /// The map's `introduced_in` names a version with no release tag.
    TagMissing { id: String, version: Version },
    /// The map's `removed_in` disagrees with the tags: `repo_says` is the first release tag
    /// without the script (`None`: the newest tag still holds it).
    WrongRemoval {
        id: String,
        path: String,
        map_says: Version,
        repo_says: Option<Version>,
    },
}

impl fmt::Display for Disagreement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Disagreement::MissingFromMap {
                path,
                introduced_in,
            } => write!(
                f,
                "{path} is in the repository since {introduced_in} but not in the map (fix: add a [[migrations]] entry with script = \"{path}\" and introduced_in = \"{introduced_in}\")"
            ),
            Disagreement::WrongRelease {
                id,
                path,
                map_says: Some(map_says),
                repo_says,
            } => write!(
                f,
                "migration {id}: the map says introduced_in {map_says} but {path} first ships in release {repo_says} (fix: set introduced_in = \"{repo_says}\")"
            ),
            Disagreement::WrongRelease {
                id,
                path,
                map_says: None,
                repo_says,
            } => write!(
                f,
                "migration {id}: the map says no release ships it but {path} is in release {repo_says} (fix: replace unreleased_ref with introduced_in = \"{repo_says}\")"
            ),
            Disagreement::NoLongerExists {
                id,
                path,
                last_seen_in: None,
            } => write!(
                f,
                "migration {id}: {path} never existed in any release tag (fix: check the script path for typos, or use unreleased_ref if no release ships it yet)"
            ),
            Disagreement::NoLongerExists {
                id,
                path,
                last_seen_in: Some(version),
            } => write!(
                f,
                "migration {id}: {path} was removed after {version} (it is not in the newest tag) (fix: keep the entry for upgrades from older releases and set removed_in to the first release without it; add the script's new path as its own entry if it moved)"
            ),
            Disagreement::WrongRemoval {
                id,
                path,
                map_says,
                repo_says: Some(repo_says),
            } => write!(
                f,
                "migration {id}: the map says removed_in {map_says} but {path} leaves the tree in release {repo_says} (fix: set removed_in = \"{repo_says}\")"
            ),
            Disagreement::WrongRemoval {
                id,
                path,
                map_says,
                repo_says: None,
            } => write!(
                f,
                "migration {id}: the map says removed_in {map_says} but the newest release tag still holds {path} (fix: remove removed_in, or fetch the newer tags)"
            ),
            Disagreement::TagMissing { id, version } => write!(
                f,
                "migration {id}: introduced_in {version} has no release tag in the repository (fix: fetch the tags, or correct introduced_in)"
            ),
        }
    }
}

/// Whether `path` counts as a migration script: it ends with one of `suffixes` (any file when
/// `suffixes` is empty) and with none of `exclude_suffixes` (tests, type declarations).
pub(crate) fn is_script(path: &str, suffixes: &[String], exclude_suffixes: &[String]) -> bool {
    let included = suffixes.is_empty() || suffixes.iter().any(|s| path.ends_with(s.as_str()));
    included && !exclude_suffixes.iter().any(|s| path.ends_with(s.as_str()))
}

/// Where a path was seen across the tags.
struct Sightings {
    first_stable: Option<(Version, String)>,
    last_seen: Version,
}

fn sorted_by_version(tags: &[ReleaseTag]) -> Vec<&ReleaseTag> {
    let mut sorted: Vec<&ReleaseTag> = tags.iter().collect();
    sorted.sort_by(|a, b| a.version.cmp(&b.version));
    sorted
}

/// Finds every script under `dir` in `tags` and the release that introduced each: the first
/// stable tag in semver order whose tree contains it (prerelease tags never introduce a
/// script; one first seen in a prerelease belongs to the next stable tag that has it). Scripts
/// seen only in prereleases are left out. Sorted by release, then path.
pub fn discover_scripts(
    repo: &GitRepo,
    tags: &[ReleaseTag],
    dir: &str,
    suffixes: &[String],
    exclude_suffixes: &[String],
) -> Result<Vec<DiscoveredScript>> {
    let dir = normalise_repo_path(dir);
    let sorted = sorted_by_version(tags);
    let mut seen: BTreeMap<String, Sightings> = BTreeMap::new();
    // Many releases share the migrations folder's tree: list each distinct tree once.
    let mut listings: HashMap<Oid, Vec<String>> = HashMap::new();
    let mut in_newest: HashSet<String> = HashSet::new();
    for (index, tag) in sorted.iter().enumerate() {
        let scripts: Vec<String> = match subtree_id(repo, &tag.info.commit, dir)? {
            None => Vec::new(),
            Some(tree_id) => {
                let files = match listings.entry(tree_id) {
                    std::collections::hash_map::Entry::Occupied(listed) => listed.into_mut(),
                    std::collections::hash_map::Entry::Vacant(slot) => {
                        let tree = repo.repo.find_tree(tree_id).map_err(|err| {
                            Error::repository(
                                format!(
                                    "cannot read {dir} at tag {} ({})",
                                    tag.info.name,
                                    err.message()
                                ),
                                "run `git fsck` on the repository, or clone it again",
                            )
                        })?;
                        slot.insert(repo.files_of_tree(&tree, dir)?)
                    }
                };
                files
                    .iter()
                    .filter(|path| is_script(path, suffixes, exclude_suffixes))
                    .cloned()
                    .collect()
            }
        };
        for path in scripts {
            let entry = seen.entry(path.clone()).or_insert(Sightings {
                first_stable: None,
                last_seen: tag.version.clone(),
            });
            entry.last_seen = tag.version.clone();
            if tag.stable && entry.first_stable.is_none() {
                entry.first_stable = Some((tag.version.clone(), tag.info.name.clone()));
            }
            if index + 1 == sorted.len() {
                in_newest.insert(path);
            }
        }
    }
    let mut scripts: Vec<DiscoveredScript> = seen
        .into_iter()
        .filter_map(|(path, sightings)| {
            let (introduced_in, tag) = sightings.first_stable?;
            let removed_after = (!in_newest.contains(&path)).then(|| sightings.last_seen.clone());
            Some(DiscoveredScript {
                path,
                introduced_in,
                tag,
                last_seen_in: sightings.last_seen,
                removed_after,
            })
        })
        .collect();
    scripts.sort_by(|a, b| {
        a.introduced_in
            .cmp(&b.introduced_in)
            .then_with(|| a.path.cmp(&b.path))
    });
    Ok(scripts)
}

/// The id of the tree at `dir` in `commit`, or `None` when there is no such folder.
fn subtree_id(repo: &GitRepo, commit: &str, dir: &str) -> Result<Option<Oid>> {
    let commit = repo.find_commit(commit)?;
    let tree = commit.tree().map_err(|err| {
        Error::repository(
            format!(
                "cannot read the files of commit {} ({})",
                commit.id(),
                err.message()
            ),
            "run `git fsck` on the repository, or clone it again",
        )
    })?;
    if dir.is_empty() {
        return Ok(Some(tree.id()));
    }
    Ok(tree
        .get_path(std::path::Path::new(dir))
        .ok()
        .filter(|entry| entry.kind() == Some(ObjectType::Tree))
        .map(|entry| entry.id()))
}

/// Compares what a release map says (`expected`) with the repository's tags. Reports scripts
/// missing from the map, entries naming the wrong release, scripts no release has (or the
/// newest release no longer has, unless the map records the removal), and `introduced_in`
/// versions without a tag. See [`check_map_report`] for what a repository older than the map
/// leaves unchecked.
pub fn check_map(
    repo: &GitRepo,
    expected: &[ExpectedScript],
    tags: &[ReleaseTag],
    dir: &str,
    suffixes: &[String],
    exclude_suffixes: &[String],
) -> Result<Vec<Disagreement>> {
    Ok(check_map_report(repo, expected, tags, dir, suffixes, exclude_suffixes)?.disagreements)
}

/// [`check_map`], plus the entries a repository whose tags end before the map's releases
/// cannot check (upstream's snapshot ends at v2.0.0; the map goes further): an entry
/// introduced after the newest tag, or removed after it, is listed as unchecked, not as a
/// disagreement.
pub fn check_map_report(
    repo: &GitRepo,
    expected: &[ExpectedScript],
    tags: &[ReleaseTag],
    dir: &str,
    suffixes: &[String],
    exclude_suffixes: &[String],
) -> Result<MapCheck> {
    let discovered = discover_scripts(repo, tags, dir, suffixes, exclude_suffixes)?;
    let by_path: HashMap<&str, &DiscoveredScript> =
        discovered.iter().map(|s| (s.path.as_str(), s)).collect();
    let newest_tag = tags.iter().map(|t| &t.version).max();
    let past_the_tags = |v: &Version| newest_tag.is_none_or(|newest| v > newest);
    let mut report = MapCheck::default();
    for entry in expected {
        let script = normalise_repo_path(&entry.script);
        if let Some(version) = &entry.introduced_in {
            if past_the_tags(version) {
                report.unchecked.push(Unchecked {
                    id: entry.id.clone(),
                    what: format!(
                        "introduced_in {version} is newer than the repository's newest release tag{}: fetch the newer tags to check it",
                        newest_tag.map(|v| format!(" ({v})")).unwrap_or_default()
                    ),
                });
                continue;
            }
            if !tags.iter().any(|tag| &tag.version == version) {
                report.disagreements.push(Disagreement::TagMissing {
                    id: entry.id.clone(),
                    version: version.clone(),
                });
            }
        }
        // Entries outside `dir` or with other endings are still checked, path by path.
        let found = match by_path.get(script) {
            Some(found) => Some((*found).clone()),
            None => discover_path(repo, tags, script)?,
        };
        let Some(found) = found else {
            report.disagreements.push(Disagreement::NoLongerExists {
                id: entry.id.clone(),
                path: script.to_string(),
                last_seen_in: None,
            });
            continue;
        };
        if entry.introduced_in.as_ref() != Some(&found.introduced_in) {
            report.disagreements.push(Disagreement::WrongRelease {
                id: entry.id.clone(),
                path: script.to_string(),
                map_says: entry.introduced_in.clone(),
                repo_says: found.introduced_in.clone(),
            });
        }
        // The first stable release after the last one holding the script: where it left.
        let left_in = found.removed_after.as_ref().and_then(|last| {
            tags.iter()
                .filter(|t| t.stable && &t.version > last)
                .map(|t| t.version.clone())
                .min()
        });
        match (&entry.removed_in, &found.removed_after) {
            (None, None) => {}
            (None, Some(last)) => report.disagreements.push(Disagreement::NoLongerExists {
                id: entry.id.clone(),
                path: script.to_string(),
                last_seen_in: Some(last.clone()),
            }),
            (Some(map_says), None) if past_the_tags(map_says) => {
                report.unchecked.push(Unchecked {
                    id: entry.id.clone(),
                    what: format!(
                        "removed_in {map_says} is newer than the repository's newest release tag{}: fetch the newer tags to check the removal",
                        newest_tag.map(|v| format!(" ({v})")).unwrap_or_default()
                    ),
                })
            }
            (Some(map_says), _) if left_in.as_ref() != Some(map_says) => {
                report.disagreements.push(Disagreement::WrongRemoval {
                    id: entry.id.clone(),
                    path: script.to_string(),
                    map_says: map_says.clone(),
                    repo_says: left_in.clone(),
                })
            }
            (Some(_), _) => {}
        }
    }
    let mapped: HashSet<&str> = expected
        .iter()
        .map(|entry| normalise_repo_path(&entry.script))
        .collect();
    for script in &discovered {
        if !mapped.contains(script.path.as_str()) {
            report.disagreements.push(Disagreement::MissingFromMap {
                path: script.path.clone(),
                introduced_in: script.introduced_in.clone(),
            });
        }
    }
    Ok(report)
}

/// Scripts the repository's release tags introduce in (`from`, `to`] whose path no map entry
/// names (`mapped`): an upgrade through that range would skip them, because the map has not
/// heard of them (a repository newer than the map).
#[allow(clippy::too_many_arguments)]
pub fn unmapped_scripts(
    repo: &GitRepo,
    tags: &[ReleaseTag],
    dir: &str,
    suffixes: &[String],
    exclude_suffixes: &[String],
    mapped: &[&str],
    from: &Version,
    to: &Version,
) -> Result<Vec<DiscoveredScript>> {
    let mapped: HashSet<&str> = mapped.iter().map(|p| normalise_repo_path(p)).collect();
    Ok(
        discover_scripts(repo, tags, dir, suffixes, exclude_suffixes)?
            .into_iter()
            .filter(|s| &s.introduced_in > from && &s.introduced_in <= to)
            .filter(|s| !mapped.contains(s.path.as_str()))
            .collect(),
    )
}

/// [`discover_scripts`] for one exact path.
fn discover_path(
    repo: &GitRepo,
    tags: &[ReleaseTag],
    path: &str,
) -> Result<Option<DiscoveredScript>> {
    let sorted = sorted_by_version(tags);
    let mut first_stable: Option<&ReleaseTag> = None;
    let mut last_seen: Option<&ReleaseTag> = None;
    let mut in_newest = false;
    for (index, tag) in sorted.iter().enumerate() {
        if repo.read_file_at(&tag.info.commit, path)?.is_some() {
            if tag.stable && first_stable.is_none() {
                first_stable = Some(tag);
            }
            last_seen = Some(tag);
            in_newest = index + 1 == sorted.len();
        }
    }
    let (Some(first), Some(last)) = (first_stable, last_seen) else {
        return Ok(None);
    };
    Ok(Some(DiscoveredScript {
        path: path.to_string(),
        introduced_in: first.version.clone(),
        tag: first.info.name.clone(),
        last_seen_in: last.version.clone(),
        removed_after: (!in_newest).then(|| last.version.clone()),
    }))
}

/// A migration id from a script path: the file name without the script ending and without a
/// trailing `.migration` / `-migration` / `_migration`
/// (`encrypt-credentials/encrypt-credentials-migration.ts` -> `encrypt-credentials`).
pub(crate) fn script_id(path: &str, suffixes: &[String]) -> String {
    let file_name = path.rsplit('/').next().unwrap_or(path);
    let longest_suffix = suffixes
        .iter()
        .filter(|s| file_name.ends_with(s.as_str()) && file_name.len() > s.len())
        .max_by_key(|s| s.len());
    let mut stem = match longest_suffix {
        Some(suffix) => &file_name[..file_name.len() - suffix.len()],
        None => file_name
            .rsplit_once('.')
            .map_or(file_name, |(stem, _)| stem),
    };
    for marker in [".migration", "-migration", "_migration"] {
        if let Some(stripped) = stem.strip_suffix(marker) {
            if !stripped.is_empty() {
                stem = stripped;
                break;
            }
        }
    }
    let id = super::sanitise_for_path(stem);
    if id == "repo" && stem.is_empty() {
        "migration".to_string()
    } else {
        id
    }
}

/// Makes ids unique in order: a repeated `x` becomes `x-2`, `x-3`, ...
fn unique_ids(ids: Vec<String>) -> Vec<String> {
    let mut taken: HashSet<String> = HashSet::new();
    ids.into_iter()
        .map(|id| {
            let mut candidate = id.clone();
            let mut n = 2;
            while taken.contains(&candidate) {
                candidate = format!("{id}-{n}");
                n += 1;
            }
            taken.insert(candidate.clone());
            candidate
        })
        .collect()
}

/// A TOML string literal.
fn quoted(text: &str) -> String {
    toml::Value::String(text.to_string()).to_string()
}

fn quoted_list(items: &[String]) -> String {
    let inner: Vec<String> = items.iter().map(|item| quoted(item)).collect();
    format!("[{}]", inner.join(", "))
}

/// Generates a release-map skeleton (schema 1, see `release_map::schema`) from the
/// repository's tags: the `[project]` table, one `[[releases]]` per stable tag that introduces
/// a script (date, node, node_engines and pnpm read at that tag), and one `[[migrations]]` per
/// script found under `dir`. Everything a human must decide is marked `TODO`.
pub fn generate_map_skeleton(
    repo: &GitRepo,
    dir: &str,
    suffixes: &[String],
    exclude_suffixes: &[String],
    ignore_tags: &[String],
    mainline: &[String],
) -> Result<String> {
    let dir = normalise_repo_path(dir);
    let tags = repo.release_tags(ignore_tags, mainline)?;
    let scripts = discover_scripts(repo, &tags, dir, suffixes, exclude_suffixes)?;
    let mut out = String::new();
    // `write!` into a String cannot fail; `let _ =` keeps that visible without unwrap.
    let _ = writeln!(
        out,
        "# Release-map skeleton generated by `upstep map generate` from the tags of {}.",
        repo.name()
    );
    out.push_str(
        "# Everything marked TODO needs a human: eras (how scripts run), titles, how each script\n\
         # runs (file or export) and exits, idempotency, and the pending checks (fingerprints).\n\
         # Check the finished map against the repository with `upstep map check`.\n\n",
    );
    out.push_str("schema = 1\n\n[project]\n");
    let _ = writeln!(out, "name = {}", quoted(repo.name()));
    let _ = writeln!(out, "migrations_dir = {}", quoted(dir));
    let _ = writeln!(out, "script_suffixes = {}", quoted_list(suffixes));
    let _ = writeln!(out, "exclude_suffixes = {}", quoted_list(exclude_suffixes));
    let _ = writeln!(out, "ignore_tags = {}", quoted_list(ignore_tags));
    let _ = writeln!(out, "mainline = {}", quoted_list(mainline));
    out.push_str(
        "\n# TODO: describe how scripts run in each era, then set `era` on each release, e.g.\n\
         # [eras.example]\n\
         # cwd = \"apps/api\"\n\
         # run = [\"npx\", \"ts-node\", \"--transpile-only\", \"{script}\"]\n",
    );

    let mut introducing: Vec<&ReleaseTag> = Vec::new();
    for script in &scripts {
        if !introducing.iter().any(|t| t.info.name == script.tag) {
            if let Some(tag) = tags.iter().find(|t| t.info.name == script.tag) {
                introducing.push(tag);
            }
        }
    }
    if !introducing.is_empty() {
        out.push_str("\n# Releases that introduced at least one script.\n");
    }
    for tag in introducing {
        write_release(&mut out, repo, tag)?;
    }

    let ids = unique_ids(
        scripts
            .iter()
            .map(|s| script_id(&s.path, suffixes))
            .collect(),
    );
    if !scripts.is_empty() {
        out.push_str("\n# One entry per script, in the order the releases introduced them.\n");
    }
    for (script, id) in scripts.iter().zip(ids) {
        out.push_str("\n[[migrations]]\n");
        let _ = writeln!(out, "id = {}", quoted(&id));
        out.push_str("title = \"TODO\"  # TODO: one line saying what the script does\n");
        let _ = writeln!(
            out,
            "introduced_in = {}",
            quoted(&script.introduced_in.to_string())
        );
        let _ = writeln!(out, "script = {}", quoted(&script.path));
        out.push_str("run = \"file\"  # TODO verify: \"export\" (with export = \"<function>\") if the file only exports a function\n");
        out.push_str("exits = \"yes\"  # TODO verify: \"may-hang\" or \"never\" if it does not exit by itself\n");
        out.push_str("idempotent = \"guarded\"  # TODO verify: \"yes\", \"guarded\" or \"no\"\n");
        out.push_str("no_fingerprint = \"TODO: write pending checks\"  # TODO: replace with [[migrations.pending]] checks\n");
        out.push_str("verified = false  # TODO: set to true once the entry is checked\n");
        if let Some(version) = &script.removed_after {
            let _ = writeln!(
                out,
                "# NOTE: removed from the repository after {version}; still needed to upgrade from older releases"
            );
        }
    }
    Ok(out)
}

fn write_release(out: &mut String, repo: &GitRepo, tag: &ReleaseTag) -> Result<()> {
    let toolchain = repo.toolchain_for_tag(&tag.info)?;
    out.push_str("\n[[releases]]\n");
    let _ = writeln!(out, "version = {}", quoted(&tag.version.to_string()));
    let _ = writeln!(out, "tag = {}", quoted(&tag.info.name));
    if let Some(date) = &tag.info.date {
        let _ = writeln!(out, "date = {}", quoted(date));
    }
    out.push_str("era = \"TODO\"  # TODO: the name of an [eras.*] table\n");
    match &toolchain.nvmrc {
        Some(node) => {
            let _ = writeln!(out, "node = {}  # from .nvmrc", quoted(node));
        }
        None => {
            out.push_str("node = \"TODO\"  # TODO: no .nvmrc at this tag: set the node version\n")
        }
    }
    if let Some(engines) = &toolchain.engines_node {
        let _ = writeln!(
            out,
            "node_engines = {}  # from package.json engines.node",
            quoted(engines)
        );
    }
    if let Some(pnpm) = &toolchain.pnpm {
        let _ = writeln!(
            out,
            "pnpm = {}  # from package.json packageManager",
            quoted(pnpm)
        );
    }
    if tag.on_mainline == Some(false) {
        out.push_str(
            "# NOTE: this tag is not on the mainline branches (a release cut on a patch branch)\n",
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn script_filter_uses_suffixes_and_exclusions() {
        let suffixes = strings(&[".ts", ".js"]);
        let excludes = strings(&[".spec.ts", ".d.ts"]);
        assert!(is_script("m/a-migration.ts", &suffixes, &excludes));
        assert!(!is_script("m/a.spec.ts", &suffixes, &excludes));
        assert!(!is_script("m/types.d.ts", &suffixes, &excludes));
        assert!(!is_script("m/README.md", &suffixes, &excludes));
        assert!(is_script("m/README.md", &[], &[]));
    }

    #[test]
    fn ids_drop_endings_and_migration_markers() {
        let suffixes = strings(&[".ts"]);
        assert_eq!(
            script_id(
                "m/encrypt-credentials/encrypt-credentials-migration.ts",
                &suffixes
            ),
            "encrypt-credentials"
        );
        assert_eq!(
            script_id(
                "m/seen-read-support/seen-read-support.migration.ts",
                &suffixes
            ),
            "seen-read-support"
        );
        assert_eq!(
            script_id("m/deleteLogs/dropLogsCollection.ts", &suffixes),
            "dropLogsCollection"
        );
        assert_eq!(script_id("m/x_migration.ts", &suffixes), "x");
        assert_eq!(script_id("m/-migration.ts", &suffixes), "migration");
        assert_eq!(script_id("m/plain.js", &suffixes), "plain");
    }

    #[test]
    fn repeated_ids_get_numbers() {
        assert_eq!(
            unique_ids(strings(&["a", "b", "a", "a"])),
            strings(&["a", "b", "a-2", "a-3"])
        );
    }

    #[test]
    fn quoting_escapes() {
        for raw in ["a\"b", "back\\slash", "it's", "line\nbreak"] {
            let parsed: toml::Value = toml::from_str(&format!("x = {}", quoted(raw))).unwrap();
            assert_eq!(parsed["x"].as_str(), Some(raw));
        }
        assert_eq!(quoted_list(&strings(&[".ts", ".js"])), "[\".ts\", \".js\"]");
    }

    #[test]
    fn disagreements_are_one_line_with_a_fix() {
        let v = Version::new(0, 8, 0);
        let all = [
            Disagreement::MissingFromMap {
                path: "m/a.ts".into(),
                introduced_in: v.clone(),
            },
            Disagreement::WrongRelease {
                id: "a".into(),
                path: "m/a.ts".into(),
                map_says: Some(Version::new(0, 9, 0)),
                repo_says: v.clone(),
            },
            Disagreement::WrongRelease {
                id: "a".into(),
                path: "m/a.ts".into(),
                map_says: None,
                repo_says: v.clone(),
            },
            Disagreement::NoLongerExists {
                id: "a".into(),
                path: "m/a.ts".into(),
                last_seen_in: None,
            },
            Disagreement::NoLongerExists {
                id: "a".into(),
                path: "m/a.ts".into(),
                last_seen_in: Some(v.clone()),
            },
            Disagreement::TagMissing {
                id: "a".into(),
                version: v.clone(),
            },
            Disagreement::WrongRemoval {
                id: "a".into(),
                path: "m/a.ts".into(),
                map_says: v.clone(),
                repo_says: Some(Version::new(0, 9, 0)),
            },
            Disagreement::WrongRemoval {
                id: "a".into(),
                path: "m/a.ts".into(),
                map_says: v,
                repo_says: None,
            },
        ];
        for disagreement in all {
            let text = disagreement.to_string();
            assert!(!text.contains('\n'), "{text}");
            assert!(text.contains("fix:"), "{text}");
        }
    }
}
