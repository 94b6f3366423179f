//! A tag's build outputs, kept in upstep's cache (`<cache>/build-outputs/<key>/`) so that a tag
//! prepared again (its worktree was removed once its steps settled; then a rehearsal's real run,
//! a retry, another upgrade) restores what its build made instead of building it again. For the
//! eras whose map says `keep_build_outputs`: eras that build with nx have nx's own cache.
//!
//! The key is the tag's setup stamp (commit, toolchain, commands, stand-ins) and the build
//! command's place and words: the same inputs, so the same outputs. What the build made is what
//! appeared among the worktree's untracked and ignored entries while it ran (`node_modules`
//! aside: the install's). A build that also changed a tracked file, or something that was there
//! before it, is not kept: restoring part of its work would leave the tag half built.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::SystemTime;

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// The key of the outputs of setup command `number` (0-based) of a setup stamped `stamp`.
pub(super) fn key(stamp: &str, number: usize, argv: &[String]) -> String {
    let mut key = Sha256::new();
    key.update(stamp.as_bytes());
    key.update((number as u64).to_le_bytes());
    for word in argv {
        key.update((word.len() as u64).to_le_bytes());
        key.update(word.as_bytes());
    }
    hex::encode(key.finalize())
}

/// What a worktree holds beside its tracked files, and which tracked files differ from the
/// commit.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Snapshot {
    /// Untracked and ignored entries (a folder counts as one), outside `node_modules`, with a
    /// fingerprint of what they hold.
    extra: BTreeMap<String, Fingerprint>,
    /// Tracked files that differ from the commit (the stand-ins' lockfile, ...).
    changed: BTreeSet<String>,
}

/// Enough of an entry to see that something wrote in it: its bytes and newest mtime (a folder's
/// own mtime changes when a file in it is added or removed), as `upstep cache` sizes it.
type Fingerprint = (u64, Option<SystemTime>);

/// The worktree's untracked and ignored entries and its changed tracked files, from git.
pub(super) fn snapshot(worktree: &Path) -> Result<Snapshot> {
    let fail = |e: git2::Error| {
        Error::repository(
            format!("cannot read the status of {}: {e}", worktree.display()),
            "check the worktree (`upstep cache` lists it; `upstep cache prune` removes it)",
        )
    };
    let repo = git2::Repository::open(worktree).map_err(fail)?;
    let mut options = git2::StatusOptions::new();
    options
        .include_untracked(true)
        .include_ignored(true)
        .recurse_untracked_dirs(false)
        .recurse_ignored_dirs(false)
        .exclude_submodules(true);
    let statuses = repo.statuses(Some(&mut options)).map_err(fail)?;
    let mut snapshot = Snapshot::default();
    for entry in statuses.iter() {
        let Some(path) = entry.path() else { continue };
        let path = path.trim_end_matches('/').to_string();
        if path.split('/').any(|part| part == "node_modules") {
            continue;
        }
        let status = entry.status();
        if status.intersects(git2::Status::WT_NEW | git2::Status::IGNORED) {
            let fingerprint = crate::cache::size_of(&worktree.join(&path));
            snapshot.extra.insert(path, fingerprint);
        } else if !status.is_empty() {
            snapshot.changed.insert(path);
        }
    }
    Ok(snapshot)
}

/// What the build made, from the snapshots before and after it; Err says why it cannot be
/// kept.
pub(super) fn made_by_build(
    before: &Snapshot,
    after: &Snapshot,
) -> std::result::Result<Vec<String>, String> {
    if let Some(changed) = after.changed.difference(&before.changed).next() {
        return Err(format!("the build changed the tracked file {changed}"));
    }
    let mut made = Vec::new();
    for (path, print) in &after.extra {
        match before.extra.get(path) {
            None => made.push(path.clone()),
            Some(earlier) if earlier != print => {
                return Err(format!(
                    "the build wrote in {path}, which was there before it"
                ))
            }
            Some(_) => {}
        }
    }
    if made.is_empty() {
        return Err("the build made no file outside node_modules".into());
    }
    Ok(made)
}

/// The list of entries a kept build holds, written last: an entry without it is incomplete.
const MANIFEST: &str = "manifest.json";

#[derive(serde::Serialize, serde::Deserialize)]
struct Manifest {
    entries: Vec<String>,
}

/// What a save or a restore moved.
#[derive(Debug, Clone, Copy)]
pub(super) struct Moved {
    pub(super) entries: usize,
    pub(super) bytes: u64,
}

/// Copies the build's `entries` out of the worktree into the cache under `key` (complete or not
/// at all: copied beside, then renamed into place).
pub(super) fn save(
    cache_root: &Path,
    key: &str,
    worktree: &Path,
    entries: &[String],
) -> Result<Moved> {
    let root = crate::shared_cache::kept_builds(cache_root);
    let dest = root.join(key);
    let partial = root.join(format!(".{key}.{}.partial", std::process::id()));
    let fail = |what: &str, e: std::io::Error| {
        Error::repository(
            format!(
                "cannot keep the build's outputs in {}: {what}: {e}",
                root.display()
            ),
            "check the disk space and permissions of upstep's cache",
        )
    };
    remove_abandoned_copies(&root);
    let _ = std::fs::remove_dir_all(&partial);
    std::fs::create_dir_all(partial.join("files")).map_err(|e| fail("create", e))?;
    let mut bytes = 0;
    for entry in entries {
        let to = partial.join("files").join(entry);
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent).map_err(|e| fail(entry, e))?;
        }
        bytes += copy_tree(&worktree.join(entry), &to).map_err(|e| fail(entry, e))?;
    }
    let manifest = Manifest {
        entries: entries.to_vec(),
    };
    let text = serde_json::to_string_pretty(&manifest).unwrap_or_default();
    std::fs::write(partial.join(MANIFEST), text).map_err(|e| fail(MANIFEST, e))?;
    // Another run may have kept the same build meanwhile: theirs is as good as ours.
    if std::fs::rename(&partial, &dest).is_err() {
        let _ = std::fs::remove_dir_all(&partial);
    }
    Ok(Moved {
        entries: entries.len(),
        bytes,
    })
}

/// Removes the partial copies (`.<key>.<pid>.partial`) of saves whose process is gone (an
/// upstep killed while it copied); a live process's copy is left alone.
fn remove_abandoned_copies(root: &Path) {
    let Ok(entries) = std::fs::read_dir(root) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(rest) = name
            .strip_suffix(".partial")
            .filter(|_| name.starts_with('.'))
        else {
            continue;
        };
        let pid = rest.rsplit('.').next().and_then(|p| p.parse::<u32>().ok());
        let gone = pid.is_some_and(|pid| !Path::new(&format!("/proc/{pid}")).exists());
        if gone {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// Copies the outputs kept under `key` into the worktree. None: nothing complete is kept, or
/// the worktree already holds one of its entries (then nothing is copied). A copy that fails
/// half way removes what it copied and says so (the caller builds instead).
pub(super) fn restore(cache_root: &Path, key: &str, worktree: &Path) -> Result<Option<Moved>> {
    let kept = crate::shared_cache::kept_builds(cache_root).join(key);
    let Ok(text) = std::fs::read_to_string(kept.join(MANIFEST)) else {
        return Ok(None);
    };
    let Ok(manifest) = serde_json::from_str::<Manifest>(&text) else {
        return Ok(None);
    };
    let unsafe_entry = |e: &String| {
        Path::new(e)
            .components()
            .any(|c| !matches!(c, std::path::Component::Normal(_)))
    };
    if manifest.entries.iter().any(unsafe_entry)
        || manifest
            .entries
            .iter()
            .any(|e| std::fs::symlink_metadata(worktree.join(e)).is_ok())
    {
        return Ok(None);
    }
    let mut bytes = 0;
    for (n, entry) in manifest.entries.iter().enumerate() {
        let copied = copy_tree(&kept.join("files").join(entry), &worktree.join(entry));
        match copied {
            Ok(b) => bytes += b,
            Err(e) => {
                for done in &manifest.entries[..=n] {
                    let _ = remove(&worktree.join(done));
                }
                return Err(Error::repository(
                    format!(
                        "cannot restore the kept build {} into {}: {entry}: {e}",
                        kept.display(),
                        worktree.display()
                    ),
                    "check the disk space; `rm -r` that folder to build the tag again",
                ));
            }
        }
    }
    Ok(Some(Moved {
        entries: manifest.entries.len(),
        bytes,
    }))
}

fn remove(path: &Path) -> std::io::Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => std::fs::remove_dir_all(path),
        Ok(_) => std::fs::remove_file(path),
        Err(_) => Ok(()),
    }
}

/// Copies a file, a symlink (as a symlink) or a folder (recursively) to `to`; the bytes copied.
fn copy_tree(from: &Path, to: &Path) -> std::io::Result<u64> {
    let meta = std::fs::symlink_metadata(from)?;
    if meta.file_type().is_symlink() {
        std::os::unix::fs::symlink(std::fs::read_link(from)?, to)?;
        Ok(0)
    } else if meta.is_dir() {
        std::fs::create_dir_all(to)?;
        let mut bytes = 0;
        for entry in std::fs::read_dir(from)? {
            let entry = entry?;
            bytes += copy_tree(&entry.path(), &to.join(entry.file_name()))?;
        }
        Ok(bytes)
    } else {
        std::fs::copy(from, to)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(extra: &[(&str, u64)], changed: &[&str]) -> Snapshot {
        Snapshot {
            extra: extra
                .iter()
                .map(|(p, bytes)| (p.to_string(), (*bytes, None)))
                .collect(),
            changed: changed.iter().map(|p| p.to_string()).collect(),
        }
    }

    #[test]
    fn what_appeared_while_the_build_ran_is_what_it_made() {
        let before = snap(&[(".husky/_", 10)], &["pnpm-lock.yaml"]);
        let after = snap(
            &[(".husky/_", 10), ("libs/a/dist", 5), ("libs/b/dist", 7)],
            &["pnpm-lock.yaml"],
        );
        assert_eq!(
            made_by_build(&before, &after),
            Ok(vec!["libs/a/dist".to_string(), "libs/b/dist".to_string()])
        );
    }

    #[test]
    fn a_build_that_touched_more_than_new_entries_is_not_kept() {
        let before = snap(&[("apps/api/.env", 10)], &[]);
        let wrote_in_old = snap(&[("apps/api/.env", 11), ("libs/a/dist", 5)], &[]);
        let err = made_by_build(&before, &wrote_in_old).unwrap_err();
        assert!(err.contains("apps/api/.env"), "{err}");
        let changed_tracked = snap(
            &[("apps/api/.env", 10), ("libs/a/dist", 5)],
            &["src/gen.ts"],
        );
        let err = made_by_build(&before, &changed_tracked).unwrap_err();
        assert!(err.contains("src/gen.ts"), "{err}");
        let nothing = snap(&[("apps/api/.env", 10)], &[]);
        assert!(made_by_build(&before, &nothing).is_err());
    }

    #[test]
    fn the_key_follows_the_stamp_the_command_and_its_place() {
        let argv = |w: &[&str]| w.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let base = key("stamp", 1, &argv(&["pnpm", "run", "build"]));
        assert_eq!(base, key("stamp", 1, &argv(&["pnpm", "run", "build"])));
        assert_ne!(base, key("other", 1, &argv(&["pnpm", "run", "build"])));
        assert_ne!(base, key("stamp", 2, &argv(&["pnpm", "run", "build"])));
        assert_ne!(base, key("stamp", 1, &argv(&["pnpm", "run build"])));
    }

    #[test]
    fn a_kept_build_comes_back_whole_and_never_over_what_is_there() {
        let dir = tempfile::tempdir().unwrap();
        let (cache, first, second) = (
            dir.path().join("c"),
            dir.path().join("w1"),
            dir.path().join("w2"),
        );
        std::fs::create_dir_all(first.join("libs/a/dist/sub")).unwrap();
        std::fs::write(first.join("libs/a/dist/index.js"), "built").unwrap();
        std::fs::write(first.join("libs/a/dist/sub/x.js"), "x").unwrap();
        std::os::unix::fs::symlink("index.js", first.join("libs/a/dist/link.js")).unwrap();
        let saved = save(&cache, "k", &first, &["libs/a/dist".into()]).unwrap();
        assert_eq!((saved.entries, saved.bytes), (1, 6));
        assert!(restore(&cache, "other", &second).unwrap().is_none());
        std::fs::create_dir_all(second.join("libs/a")).unwrap();
        let restored = restore(&cache, "k", &second).unwrap().expect("kept");
        assert_eq!((restored.entries, restored.bytes), (1, 6));
        let read = |p: &str| std::fs::read_to_string(second.join(p)).unwrap();
        assert_eq!(read("libs/a/dist/index.js"), "built");
        assert_eq!(read("libs/a/dist/sub/x.js"), "x");
        assert_eq!(read("libs/a/dist/link.js"), "built");
        // Already there: nothing is copied over it.
        std::fs::write(second.join("libs/a/dist/index.js"), "mine").unwrap();
        assert!(restore(&cache, "k", &second).unwrap().is_none());
        assert_eq!(read("libs/a/dist/index.js"), "mine");
        // An entry without its manifest is incomplete, never restored.
        std::fs::remove_file(
            crate::shared_cache::kept_builds(&cache)
                .join("k")
                .join(MANIFEST),
        )
        .unwrap();
        assert!(restore(&cache, "k", &first).unwrap().is_none());
    }

    #[test]
    fn a_save_removes_the_partial_copies_of_gone_processes_only() {
        let dir = tempfile::tempdir().unwrap();
        let (cache, worktree) = (dir.path().join("c"), dir.path().join("w"));
        let root = crate::shared_cache::kept_builds(&cache);
        // No process has pid u32::MAX - 1 (Linux pids stop at 2^22); this one is alive.
        let gone = root.join(format!(".old.{}.partial", u32::MAX - 1));
        let alive = root.join(format!(".busy.{}.partial", std::process::id()));
        for partial in [&gone, &alive] {
            std::fs::create_dir_all(partial.join("files")).unwrap();
        }
        std::fs::create_dir_all(worktree.join("dist")).unwrap();
        std::fs::write(worktree.join("dist/a.js"), "a").unwrap();
        save(&cache, "new", &worktree, &["dist".into()]).unwrap();
        assert!(!gone.exists(), "a dead process's copy is removed");
        assert!(alive.exists(), "a live process's copy is left");
        assert!(root.join("new").join(MANIFEST).is_file());
    }
}
