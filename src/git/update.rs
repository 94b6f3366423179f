//! Moving a clean worktree to another commit by rewriting only the paths that differ, in
//! place, and recording them in the worktree's index.
//!
//! Why not libgit2's checkout: it rewrites a file either by truncating it (on ext4, closing a
//! truncated file forces its data out to disk) or, when the file is removed first as
//! `git checkout` does, by allocating a new inode (ext4 without a journal scans past every
//! recently freed inode for each one). Overwriting the existing file and then setting its
//! length costs neither. Only used when no checkout filter (eol/CRLF, ident) can apply;
//! the caller falls back to libgit2 otherwise.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use git2::{Delta, DiffFile, FileMode, IndexEntry, IndexEntryExtendedFlag, IndexTime};
use git2::{Oid, Repository, Tree};

use crate::error::{Error, Result};

/// Writes the difference between `from` and `to` into `workdir` and `wt`'s index. The
/// worktree must have been found clean at `from`.
pub(crate) fn apply_tree_change(
    wt: &Repository,
    workdir: &Path,
    from: &Tree<'_>,
    to: &Tree<'_>,
) -> Result<()> {
    let git_error = |what: &str, err: git2::Error| {
        Error::repository(
            format!(
                "cannot {what} in the worktree {} ({})",
                workdir.display(),
                err.message()
            ),
            "check free disk space and permissions, then run again with --repair",
        )
    };
    let diff = wt
        .diff_tree_to_tree(Some(from), Some(to), None)
        .map_err(|err| git_error("compare the two commits", err))?;
    let mut index = wt.index().map_err(|err| git_error("read the index", err))?;
    let mut removals: Vec<PathBuf> = Vec::new();
    let mut writes: Vec<(PathBuf, Oid, FileMode)> = Vec::new();
    for delta in diff.deltas() {
        let old = delta.old_file();
        let new = delta.new_file();
        match delta.status() {
            Delta::Deleted => removals.extend(path_of(&old)),
            Delta::Added | Delta::Modified => writes.extend(write_of(&new)),
            Delta::Typechange => {
                removals.extend(path_of(&old));
                writes.extend(write_of(&new));
            }
            // Renames and copies are only reported when asked for; nothing else changes files.
            _ => {}
        }
    }
    // Removals first, so a file that becomes a folder (or the reverse) has room.
    for path in &removals {
        remove_path(workdir, path)?;
        index
            .remove_path(path)
            .map_err(|err| git_error("update the index", err))?;
    }
    for (path, blob, mode) in &writes {
        let entry = write_path(wt, workdir, path, *blob, *mode)?;
        index
            .add(&entry)
            .map_err(|err| git_error("update the index", err))?;
    }
    index
        .write()
        .map_err(|err| git_error("write the index", err))
}

fn path_of(file: &DiffFile<'_>) -> Option<PathBuf> {
    file.path().map(Path::to_path_buf)
}

fn write_of(file: &DiffFile<'_>) -> Option<(PathBuf, Oid, FileMode)> {
    Some((file.path()?.to_path_buf(), file.id(), file.mode()))
}

fn io_error(what: &str, path: &Path, err: std::io::Error) -> Error {
    Error::repository(
        format!("cannot {what} {}: {err}", path.display()),
        "check free disk space and permissions, then run again with --repair",
    )
}

/// Removes a file (or an empty submodule folder), then every parent folder it leaves empty.
fn remove_path(workdir: &Path, path: &Path) -> Result<()> {
    let full = workdir.join(path);
    match std::fs::symlink_metadata(&full) {
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(err) => return Err(io_error("inspect", &full, err)),
        // A submodule's folder: removed only when empty, as git does.
        Ok(meta) if meta.is_dir() => {
            let _ = std::fs::remove_dir(&full);
        }
        Ok(_) => std::fs::remove_file(&full).map_err(|err| io_error("remove", &full, err))?,
    }
    let mut parent = full.parent();
    while let Some(dir) = parent {
        if dir == workdir || std::fs::remove_dir(dir).is_err() {
            break;
        }
        parent = dir.parent();
    }
    Ok(())
}

/// Writes one blob (file, executable, symlink) or submodule folder and returns its index entry.
fn write_path(
    wt: &Repository,
    workdir: &Path,
    path: &Path,
    id: Oid,
    mode: FileMode,
) -> Result<IndexEntry> {
    let full = workdir.join(path);
    if let Some(parent) = full.parent() {
        std::fs::create_dir_all(parent).map_err(|err| io_error("create", parent, err))?;
    }
    let existing = std::fs::symlink_metadata(&full).ok();
    if mode == FileMode::Commit {
        std::fs::create_dir_all(&full).map_err(|err| io_error("create", &full, err))?;
        return Ok(index_entry(path, id, mode, None));
    }
    let blob = wt.find_blob(id).map_err(|err| {
        Error::repository(
            format!("cannot read {} ({})", path.display(), err.message()),
            "run `git fsck` on the repository, then run again with --repair",
        )
    })?;
    let content = blob.content();
    // A symlink, or a regular file where a symlink or folder was, is replaced; a regular file
    // is overwritten in place.
    let replace = match &existing {
        None => false,
        Some(meta) => mode == FileMode::Link || !meta.is_file(),
    };
    if replace {
        let removed = if existing.as_ref().is_some_and(|m| m.is_dir()) {
            std::fs::remove_dir(&full)
        } else {
            std::fs::remove_file(&full)
        };
        removed.map_err(|err| io_error("replace", &full, err))?;
    }
    if mode == FileMode::Link {
        let target = std::ffi::OsStr::from_bytes(content);
        std::os::unix::fs::symlink(target, &full).map_err(|err| io_error("create", &full, err))?;
    } else {
        let executable = mode == FileMode::BlobExecutable;
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .mode(if executable { 0o777 } else { 0o666 })
            .open(&full)
            .map_err(|err| io_error("write", &full, err))?;
        file.write_all(content)
            .and_then(|()| file.set_len(content.len() as u64))
            .map_err(|err| io_error("write", &full, err))?;
        let permissions = file
            .metadata()
            .map_err(|err| io_error("inspect", &full, err))?
            .permissions();
        let has_exec = permissions.mode() & 0o111 != 0;
        if has_exec != executable {
            let new_mode = if executable {
                permissions.mode() | ((permissions.mode() & 0o444) >> 2)
            } else {
                permissions.mode() & !0o111
            };
            std::fs::set_permissions(&full, std::fs::Permissions::from_mode(new_mode))
                .map_err(|err| io_error("set permissions of", &full, err))?;
        }
    }
    let meta = std::fs::symlink_metadata(&full).map_err(|err| io_error("inspect", &full, err))?;
    Ok(index_entry(path, id, mode, Some(&meta)))
}

/// An index entry with the file's current stat data, marked up to date: the content was
/// written from the blob a moment ago, so libgit2 need not re-read it to rule out a change.
fn index_entry(
    path: &Path,
    id: Oid,
    mode: FileMode,
    meta: Option<&std::fs::Metadata>,
) -> IndexEntry {
    let path = path.as_os_str().as_bytes().to_vec();
    // Index stat fields are 32 bits wide on disk; truncation is what git does too.
    let time = |secs: i64, nanos: i64| IndexTime::new(secs as i32, nanos as u32);
    IndexEntry {
        ctime: meta.map_or(IndexTime::new(0, 0), |m| time(m.ctime(), m.ctime_nsec())),
        mtime: meta.map_or(IndexTime::new(0, 0), |m| time(m.mtime(), m.mtime_nsec())),
        dev: meta.map_or(0, |m| m.dev() as u32),
        ino: meta.map_or(0, |m| m.ino() as u32),
        mode: u32::from(mode),
        uid: meta.map_or(0, MetadataExt::uid),
        gid: meta.map_or(0, MetadataExt::gid),
        file_size: meta.map_or(0, |m| m.len() as u32),
        id,
        flags: path.len().min(0xfff) as u16,
        flags_extended: IndexEntryExtendedFlag::UPTODATE.bits(),
        path,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_entries_carry_the_mode_and_path_length() {
        let entry = index_entry(
            Path::new("a/b.txt"),
            Oid::zero(),
            FileMode::BlobExecutable,
            None,
        );
        assert_eq!(entry.mode, 0o100755);
        assert_eq!(entry.flags, 7);
        assert_eq!(entry.path, b"a/b.txt");
    }
}
