//! Worktrees: one reusable checkout of a tag per repository and tag, kept in upstep's cache.
//!
//! Design: the user's repository is only ever *read*. Each worktree gets its own private git
//! directory under the cache whose object database borrows the user's objects through git's
//! `objects/info/alternates`, so no object is copied and nothing (no branch, no `worktrees/`
//! entry, no index, HEAD or stash change) is written to the user's repository:
//!
//! ```text
//! <cache_root>/worktrees/<repo-key>/<tag>/          the files; `.git` is a gitlink file
//! <cache_root>/worktrees/<repo-key>/.meta/<tag>/    its git dir: HEAD (detached), index,
//!                                                   config, info/exclude,
//!                                                   objects/info/alternates -> user's objects,
//!                                                   complete (stamp: the checked-out commit)
//! ```
//!
//! `<repo-key>` is the repository's folder name plus a short hash of its location, so two
//! clones both called `novu` never share worktrees. The gitlink makes plain `git status` (and
//! tools such as husky that want a `.git`) work inside the worktree.
//!
//! The `complete` stamp is written only after a checkout finished and HEAD was set, and is
//! removed before any checkout starts, so an interrupted or failed checkout (disk full,
//! Ctrl-C) leaves a worktree that reports [`WorktreeStatus::Damaged`], never one that looks
//! valid. Files named `.upstep-*` (shims upstep writes) and `node_modules/` are excluded in the
//! private git dir, so they never make a worktree dirty and repair keeps them.
//!
//! Moving a worktree to another commit (`switch`, or a tag that moved) rewrites only the
//! paths that differ between the two commits, in place (see `update.rs` for why not
//! libgit2's checkout); creating and repairing use libgit2's checkout. When a checkout
//! filter may apply (`.gitattributes`, `core.autocrlf`), libgit2 is used throughout.

use std::path::{Path, PathBuf};

use git2::build::CheckoutBuilder;
use git2::{Oid, Repository, RepositoryInitOptions, StatusOptions};

use super::repo::short_id;
use super::{GitRepo, TagInfo};
use crate::error::{Error, Result};

/// Name of the completion stamp inside a worktree's git dir.
const COMPLETE_STAMP: &str = "complete";
/// Folder (next to the worktrees) holding every worktree's private git dir.
const META_DIR: &str = ".meta";
/// Never dirty, kept by repair: upstep's own files and installed dependencies.
const EXCLUDES: &str =
    "# written by upstep: its own files and installed dependencies\n.upstep-*\nnode_modules/\n";
/// How many dirty files a status names.
const DIRTY_FILES_SHOWN: usize = 10;

/// Manages the worktrees under `<cache_root>/worktrees`.
#[derive(Debug, Clone)]
pub struct Worktrees {
    root: PathBuf,
}

/// A complete, clean checkout of a tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Worktree {
    /// The folder holding the files; scripts run from here.
    pub path: PathBuf,
    /// The tag checked out.
    pub tag: String,
    /// The full hex id of the commit checked out.
    pub commit: String,
    git_dir: PathBuf,
}

impl Worktree {
    /// The worktree's private git dir (holds its HEAD, index and the `complete` stamp).
    pub fn git_dir(&self) -> &Path {
        &self.git_dir
    }
}

/// What [`Worktrees::status`] found for a repository and tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WorktreeStatus {
    /// No worktree yet: [`Worktrees::ensure`] creates it.
    Missing,
    /// Complete, clean, at the tag's commit.
    Clean { commit: String },
    /// Complete and clean but at another commit (the tag was moved): `ensure` updates it.
    AtOtherCommit { commit: String },
    /// Tracked files were changed, or untracked files added (`files`: the first few of
    /// `total`): `ensure` refuses, [`Worktrees::repair`] resets it.
    Dirty { files: Vec<String>, total: usize },
    /// Not usable (interrupted checkout, missing git metadata, unreadable objects):
    /// [`Worktrees::repair`] rebuilds it.
    Damaged { reason: String },
}

/// Where one worktree lives.
struct Layout {
    dir: PathBuf,
    git_dir: PathBuf,
}

impl Layout {
    fn stamp(&self) -> PathBuf {
        self.git_dir.join(COMPLETE_STAMP)
    }
}

impl Worktrees {
    /// Worktrees kept under `<cache_root>/worktrees`. A relative `cache_root` is taken from
    /// the current directory now, because worktrees record absolute links to their git dirs.
    pub fn new(cache_root: &Path) -> Worktrees {
        let cache_root =
            std::path::absolute(cache_root).unwrap_or_else(|_| cache_root.to_path_buf());
        Worktrees {
            root: cache_root.join("worktrees"),
        }
    }

    /// The folder a worktree of `repo` at `tag` lives in (whether or not it exists).
    pub fn path_for(&self, repo: &GitRepo, tag: &str) -> PathBuf {
        self.layout(repo, tag).dir
    }

    fn layout(&self, repo: &GitRepo, tag: &str) -> Layout {
        let repo_dir = self.root.join(repo.cache_key());
        let tag_dir = super::sanitise_for_path(tag);
        Layout {
            dir: repo_dir.join(&tag_dir),
            git_dir: repo_dir.join(META_DIR).join(tag_dir),
        }
    }

    /// Inspects the worktree of `repo` at `tag` without changing anything.
    pub fn status(&self, repo: &GitRepo, tag: &TagInfo) -> Result<WorktreeStatus> {
        let layout = self.layout(repo, &tag.name);
        Ok(match inspect(&layout) {
            Inspection::Missing => WorktreeStatus::Missing,
            Inspection::Damaged(reason) => WorktreeStatus::Damaged { reason },
            Inspection::Complete { repo: wt, head } => {
                let dirty = dirty_files(&wt)?;
                if !dirty.is_empty() {
                    WorktreeStatus::Dirty {
                        total: dirty.len(),
                        files: dirty.into_iter().take(DIRTY_FILES_SHOWN).collect(),
                    }
                } else if head.to_string() == tag.commit {
                    WorktreeStatus::Clean {
                        commit: head.to_string(),
                    }
                } else {
                    WorktreeStatus::AtOtherCommit {
                        commit: head.to_string(),
                    }
                }
            }
        })
    }

    /// Returns a clean worktree of `repo` at `tag`: reuses it when it is already complete,
    /// clean and at the tag's commit (nothing is written then), updates it when the tag moved,
    /// creates it when missing. A dirty or damaged worktree is an error that says to repair it.
    pub fn ensure(&self, repo: &GitRepo, tag: &TagInfo) -> Result<Worktree> {
        let layout = self.layout(repo, &tag.name);
        match self.status(repo, tag)? {
            WorktreeStatus::Clean { .. } => Ok(worktree(&layout, tag)),
            WorktreeStatus::Missing => self.create(repo, tag, &layout),
            WorktreeStatus::AtOtherCommit { .. } => {
                let wt = open_git_dir(&layout)?;
                checkout(&wt, &layout, tag, CheckoutMode::Update)
            }
            WorktreeStatus::Dirty { files, total } => Err(Error::repository(
                format!(
                    "the worktree for tag {} at {} has local changes ({}{})",
                    tag.name,
                    layout.dir.display(),
                    files.join(", "),
                    if total > files.len() {
                        format!(" and {} more", total - files.len())
                    } else {
                        String::new()
                    }
                ),
                "run again with --repair to reset it to the tag (node_modules and other ignored files are kept)",
            )),
            WorktreeStatus::Damaged { reason } => Err(Error::repository(
                format!(
                    "the worktree for tag {} at {} is damaged: {reason}",
                    tag.name,
                    layout.dir.display()
                ),
                "run again with --repair to rebuild it (node_modules and other ignored files are kept)",
            )),
        }
    }

    /// Forces the worktree back to exactly the tag's tree: rewrites changed files, removes
    /// untracked ones, keeps ignored ones (`node_modules`, build output, `.upstep-*`), and
    /// rebuilds its git metadata when that is what is damaged. Creates it when missing.
    pub fn repair(&self, repo: &GitRepo, tag: &TagInfo) -> Result<Worktree> {
        let layout = self.layout(repo, &tag.name);
        if !layout.dir.exists() {
            return self.create(repo, tag, &layout);
        }
        remove_stamp(&layout)?;
        let usable = Repository::open(&layout.git_dir)
            .ok()
            .filter(|wt| wt.index().is_ok() && wt.workdir().is_some());
        if let Some(wt) = usable {
            match checkout(&wt, &layout, tag, CheckoutMode::Force) {
                Ok(worktree) => return Ok(worktree),
                // E.g. HEAD names a commit whose objects are gone: rebuild the metadata below.
                Err(err) => tracing::debug!("repair in place failed, rebuilding: {err}"),
            }
        }
        remove_dir(&layout.git_dir)?;
        let wt = init_git_dir(repo, &layout)?;
        checkout(&wt, &layout, tag, CheckoutMode::Force)
    }

    /// Moves an existing worktree to `tag`, rewriting only the files that differ (like
    /// `git checkout`), and renames it to `tag`'s folder, so installed dependencies are kept.
    /// The worktree must be complete and clean, and `tag` must not have a worktree yet.
    pub fn switch(&self, worktree: &Worktree, repo: &GitRepo, tag: &TagInfo) -> Result<Worktree> {
        let from = self.layout(repo, &worktree.tag);
        let to = self.layout(repo, &tag.name);
        if from.dir == to.dir {
            return self.ensure(repo, tag);
        }
        let wt = match inspect(&from) {
            Inspection::Complete { repo: wt, .. } => wt,
            Inspection::Missing => {
                return Err(Error::repository(
                    format!("the worktree for tag {} no longer exists", worktree.tag),
                    format!("create one for tag {} instead", tag.name),
                ))
            }
            Inspection::Damaged(reason) => {
                return Err(Error::repository(
                    format!(
                        "the worktree for tag {} at {} is damaged: {reason}",
                        worktree.tag,
                        from.dir.display()
                    ),
                    "run again with --repair to rebuild it",
                ))
            }
        };
        let dirty = dirty_files(&wt)?;
        if !dirty.is_empty() {
            return Err(Error::repository(
                format!(
                    "the worktree for tag {} has local changes ({}), so it cannot move to tag {}",
                    worktree.tag,
                    dirty
                        .iter()
                        .take(DIRTY_FILES_SHOWN)
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(", "),
                    tag.name
                ),
                "run again with --repair to reset it first",
            ));
        }
        if to.dir.exists() {
            return Err(Error::repository(
                format!(
                    "a worktree for tag {} already exists at {}",
                    tag.name,
                    to.dir.display()
                ),
                "use that worktree, or remove it before moving another one there",
            ));
        }
        drop(wt);
        // Metadata without files is a leftover of a removed worktree.
        remove_dir(&to.git_dir)?;
        // From here on the stamp is gone: an interruption leaves `to` Damaged, never valid.
        remove_stamp(&from)?;
        if let Some(parent) = to.git_dir.parent() {
            create_dir(parent)?;
        }
        rename(&from.git_dir, &to.git_dir)?;
        rename(&from.dir, &to.dir)?;
        write_links(&to)?;
        let wt = open_git_dir(&to)?;
        checkout(&wt, &to, tag, CheckoutMode::Update)
    }

    /// Deletes the worktree of `repo` at `tag` (files, installed dependencies and its git
    /// dir). Nothing to do when it does not exist.
    pub fn remove(&self, repo: &GitRepo, tag: &TagInfo) -> Result<()> {
        let layout = self.layout(repo, &tag.name);
        // The stamp goes first, so a half-removed worktree is Damaged, not valid.
        if layout.git_dir.exists() {
            remove_stamp(&layout)?;
        }
        remove_dir(&layout.dir)?;
        remove_dir(&layout.git_dir)
    }

    fn create(&self, repo: &GitRepo, tag: &TagInfo, layout: &Layout) -> Result<Worktree> {
        // Metadata without files is a leftover of a removed worktree: start afresh.
        remove_dir(&layout.git_dir)?;
        let wt = init_git_dir(repo, layout)?;
        checkout(&wt, layout, tag, CheckoutMode::Force)
    }
}

enum Inspection {
    Missing,
    Damaged(String),
    Complete { repo: Repository, head: Oid },
}

/// Everything but the (slower) dirty check.
fn inspect(layout: &Layout) -> Inspection {
    if !layout.dir.exists() {
        return Inspection::Missing;
    }
    if !layout.git_dir.exists() {
        return Inspection::Damaged(format!(
            "its git metadata ({}) is missing",
            layout.git_dir.display()
        ));
    }
    let Ok(stamp) = std::fs::read_to_string(layout.stamp()) else {
        return Inspection::Damaged("its last checkout did not complete".to_string());
    };
    if !layout.dir.join(".git").is_file() {
        return Inspection::Damaged("its `.git` link file is missing".to_string());
    }
    let wt = match Repository::open(&layout.git_dir) {
        Ok(wt) => wt,
        Err(err) => {
            return Inspection::Damaged(format!(
                "its git metadata cannot be read ({})",
                err.message()
            ))
        }
    };
    let head = match wt.head().and_then(|head| head.peel_to_commit()) {
        Ok(commit) => commit.id(),
        Err(err) => {
            return Inspection::Damaged(format!(
                "its commit cannot be read ({}); was the repository moved or its objects pruned?",
                err.message()
            ))
        }
    };
    if stamp.trim() != head.to_string() {
        return Inspection::Damaged(format!(
            "its completion stamp names commit {} but HEAD is {}",
            short_id(stamp.trim()),
            short_id(&head.to_string())
        ));
    }
    Inspection::Complete { repo: wt, head }
}

/// Changed tracked files and untracked files (not ignored ones), sorted.
fn dirty_files(wt: &Repository) -> Result<Vec<String>> {
    let mut options = StatusOptions::new();
    options
        .include_untracked(true)
        .recurse_untracked_dirs(false)
        .include_ignored(false)
        .exclude_submodules(true)
        // Store refreshed file stats so the next check does not re-read file contents.
        .update_index(true);
    let statuses = wt.statuses(Some(&mut options)).map_err(|err| {
        Error::repository(
            format!(
                "cannot compare the worktree {} with its commit ({})",
                wt.workdir().unwrap_or_else(|| wt.path()).display(),
                err.message()
            ),
            "run again with --repair to rebuild it",
        )
    })?;
    let mut files: Vec<String> = statuses
        .iter()
        .filter_map(|entry| entry.path().map(str::to_string))
        .collect();
    files.sort();
    Ok(files)
}

fn worktree(layout: &Layout, tag: &TagInfo) -> Worktree {
    Worktree {
        path: layout.dir.clone(),
        tag: tag.name.clone(),
        commit: tag.commit.clone(),
        git_dir: layout.git_dir.clone(),
    }
}

#[derive(Clone, Copy)]
enum CheckoutMode {
    /// The worktree was just found clean: rewrite only the paths that differ between its
    /// commit and the tag's.
    Update,
    /// Make every file match the tag whatever it is; remove untracked, keep ignored files.
    Force,
}

/// Checks the tag's commit out into the worktree, detaches HEAD there, and only then writes
/// the completion stamp.
fn checkout(
    wt: &Repository,
    layout: &Layout,
    tag: &TagInfo,
    mode: CheckoutMode,
) -> Result<Worktree> {
    remove_stamp(layout)?;
    let failed = |what: &str, err: git2::Error| {
        Error::repository(
            format!(
                "cannot {what} tag {} in the worktree {} ({})",
                tag.name,
                layout.dir.display(),
                err.message()
            ),
            "check free disk space and permissions, then run again with --repair",
        )
    };
    let oid = super::repo::parse_oid(&tag.commit)?;
    let commit = wt
        .find_commit(oid)
        .map_err(|err| failed("find the commit of", err))?;
    let mut builder = CheckoutBuilder::new();
    // libgit2 looks up attributes for every file it writes (a realpath and a walk up the
    // folders each), which made checkouts several times slower than `git checkout`. Skip
    // that when no filter (eol/CRLF conversion, ident) can apply, which is the common case.
    let filters_needed = filters_may_apply(wt, &commit).map_err(|err| failed("inspect", err))?;
    builder.disable_filters(!filters_needed);
    match mode {
        #[cfg(unix)]
        CheckoutMode::Update if !filters_needed => {
            let Ok(head_tree) = wt.head().and_then(|head| head.peel_to_tree()) else {
                return checkout(wt, layout, tag, CheckoutMode::Force);
            };
            let target_tree = commit
                .tree()
                .map_err(|err| failed("read the files of", err))?;
            super::update::apply_tree_change(wt, &layout.dir, &head_tree, &target_tree)?;
            return finish_checkout(wt, layout, tag, oid, &failed);
        }
        CheckoutMode::Update => {
            // Only the paths that differ between the two commits: libgit2 then visits just
            // those instead of comparing the whole worktree.
            let changed = changed_paths(wt, &commit).map_err(|err| failed("compare", err))?;
            let Some(changed) = changed else {
                return checkout(wt, layout, tag, CheckoutMode::Force);
            };
            if changed.all.is_empty() {
                return finish_checkout(wt, layout, tag, oid, &failed);
            }
            // libgit2 rewrites a file by truncating it, and on ext4 closing a truncated file
            // waits for its data to reach the disk; removing it first (as `git checkout`
            // does) avoids that wait. The caller found the worktree clean, so nothing is lost.
            let workdir = layout.dir.clone();
            for path in &changed.rewritten {
                let file = workdir.join(bytes_to_path(path));
                match std::fs::remove_file(&file) {
                    Ok(()) => {}
                    Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
                    Err(err) => return Err(io_error("replace", &file, err)),
                }
            }
            builder.force().disable_pathspec_match(true);
            for path in changed.all {
                builder.path(path);
            }
        }
        CheckoutMode::Force => {
            builder.force().remove_untracked(true).remove_ignored(false);
        }
    }
    wt.checkout_tree(commit.as_object(), Some(&mut builder))
        .map_err(|err| failed("check out", err))?;
    finish_checkout(wt, layout, tag, oid, &failed)
}

/// Detaches HEAD at the checked-out commit, then (only then) writes the completion stamp.
fn finish_checkout(
    wt: &Repository,
    layout: &Layout,
    tag: &TagInfo,
    oid: Oid,
    failed: &dyn Fn(&str, git2::Error) -> Error,
) -> Result<Worktree> {
    wt.set_head_detached(oid)
        .map_err(|err| failed("point HEAD at", err))?;
    write_file_atomically(&layout.stamp(), format!("{oid}\n").as_bytes())?;
    Ok(worktree(layout, tag))
}

/// Whether checking `target` out could need a filter: `core.autocrlf` is on, a global
/// attributes file exists, or the tree has a `.gitattributes` anywhere.
fn filters_may_apply(
    wt: &Repository,
    target: &git2::Commit<'_>,
) -> std::result::Result<bool, git2::Error> {
    let config = wt.config()?;
    let autocrlf = config
        .get_string("core.autocrlf")
        .unwrap_or_default()
        .to_ascii_lowercase();
    if matches!(autocrlf.as_str(), "true" | "input") {
        return Ok(true);
    }
    if config.get_path("core.attributesfile").is_ok() {
        return Ok(true);
    }
    let xdg_attributes = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| dirs::home_dir().map(|home| home.join(".config")))
        .map(|dir| dir.join("git").join("attributes"));
    if xdg_attributes.is_some_and(|file| file.exists()) {
        return Ok(true);
    }
    let mut found = false;
    target
        .tree()?
        .walk(git2::TreeWalkMode::PreOrder, |_, entry| {
            if entry.name_bytes() == b".gitattributes" {
                found = true;
                git2::TreeWalkResult::Abort
            } else {
                git2::TreeWalkResult::Ok
            }
        })
        .or_else(|err| if found { Ok(()) } else { Err(err) })?;
    Ok(found)
}

/// Paths that differ between two commits.
struct ChangedPaths {
    /// Every path added, removed or changed.
    all: Vec<Vec<u8>>,
    /// Paths present in both commits whose content or type changed.
    rewritten: Vec<Vec<u8>>,
}

/// The paths that differ between HEAD's tree and `target`'s, or `None` when HEAD is unborn.
fn changed_paths(
    wt: &Repository,
    target: &git2::Commit<'_>,
) -> std::result::Result<Option<ChangedPaths>, git2::Error> {
    let Ok(head) = wt.head().and_then(|head| head.peel_to_tree()) else {
        return Ok(None);
    };
    let diff = wt.diff_tree_to_tree(Some(&head), Some(&target.tree()?), None)?;
    let mut changed = ChangedPaths {
        all: Vec::new(),
        rewritten: Vec::new(),
    };
    for delta in diff.deltas() {
        let old = delta.old_file().path_bytes();
        let new = delta.new_file().path_bytes();
        if let (Some(old), Some(new)) = (old, new) {
            if old == new
                && matches!(
                    delta.status(),
                    git2::Delta::Modified | git2::Delta::Typechange
                )
            {
                changed.rewritten.push(new.to_vec());
            }
        }
        for path in [old, new].into_iter().flatten() {
            if changed
                .all
                .last()
                .is_none_or(|last| last.as_slice() != path)
            {
                changed.all.push(path.to_vec());
            }
        }
    }
    Ok(Some(changed))
}

#[cfg(unix)]
fn bytes_to_path(bytes: &[u8]) -> PathBuf {
    use std::os::unix::ffi::OsStrExt;
    PathBuf::from(std::ffi::OsStr::from_bytes(bytes))
}

#[cfg(not(unix))]
fn bytes_to_path(bytes: &[u8]) -> PathBuf {
    PathBuf::from(String::from_utf8_lossy(bytes).into_owned())
}

/// Creates a worktree's private git dir, borrowing the user's objects through alternates.
fn init_git_dir(repo: &GitRepo, layout: &Layout) -> Result<Repository> {
    create_dir(&layout.dir)?;
    let mut options = RepositoryInitOptions::new();
    options
        .bare(false)
        .no_dotgit_dir(true)
        .mkpath(true)
        // No hooks or sample files from a template: this git dir is upstep's alone.
        .external_template(false)
        .workdir_path(&layout.dir);
    Repository::init_opts(&layout.git_dir, &options).map_err(|err| {
        Error::repository(
            format!(
                "cannot create the git metadata of worktree {} ({})",
                layout.dir.display(),
                err.message()
            ),
            "check free disk space and permissions of the cache folder",
        )
    })?;
    let objects = std::fs::canonicalize(repo.objects_dir()).unwrap_or_else(|_| repo.objects_dir());
    let info = layout.git_dir.join("objects").join("info");
    create_dir(&info)?;
    write_file_atomically(
        &info.join("alternates"),
        format!("{}\n", objects.display()).as_bytes(),
    )?;
    let exclude_dir = layout.git_dir.join("info");
    create_dir(&exclude_dir)?;
    write_file_atomically(&exclude_dir.join("exclude"), EXCLUDES.as_bytes())?;
    write_links(layout)?;
    // Reopen so the object database picks up the alternates.
    open_git_dir(layout)
}

/// Points the worktree's `.git` file at its git dir and the git dir back at the worktree
/// (absolute paths; rewritten when `switch` renames a worktree).
fn write_links(layout: &Layout) -> Result<()> {
    write_file_atomically(
        &layout.dir.join(".git"),
        format!("gitdir: {}\n", layout.git_dir.display()).as_bytes(),
    )?;
    let config_error = |err: git2::Error| {
        Error::repository(
            format!(
                "cannot write the git config of worktree {} ({})",
                layout.dir.display(),
                err.message()
            ),
            "check permissions of the cache folder, then run again with --repair",
        )
    };
    let mut config = git2::Config::open(&layout.git_dir.join("config")).map_err(config_error)?;
    config
        .set_str("core.worktree", &layout.dir.to_string_lossy())
        .map_err(config_error)?;
    config.set_bool("core.bare", false).map_err(config_error)
}

fn open_git_dir(layout: &Layout) -> Result<Repository> {
    Repository::open(&layout.git_dir).map_err(|err| {
        Error::repository(
            format!(
                "cannot open the git metadata of worktree {} ({})",
                layout.dir.display(),
                err.message()
            ),
            "run again with --repair to rebuild it",
        )
    })
}

fn remove_stamp(layout: &Layout) -> Result<()> {
    match std::fs::remove_file(layout.stamp()) {
        Ok(()) => Ok(()),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(err) => Err(io_error("remove", &layout.stamp(), err)),
    }
}

fn write_file_atomically(path: &Path, content: &[u8]) -> Result<()> {
    let temporary = path.with_extension("upstep-tmp");
    std::fs::write(&temporary, content).map_err(|err| io_error("write", &temporary, err))?;
    std::fs::rename(&temporary, path).map_err(|err| io_error("write", path, err))
}

fn create_dir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|err| io_error("create", dir, err))
}

fn remove_dir(dir: &Path) -> Result<()> {
    match std::fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(err) => Err(io_error("remove", dir, err)),
    }
}

fn rename(from: &Path, to: &Path) -> Result<()> {
    std::fs::rename(from, to).map_err(|err| {
        Error::repository(
            format!("cannot move {} to {}: {err}", from.display(), to.display()),
            "check permissions of the cache folder, then run again with --repair",
        )
    })
}

fn io_error(what: &str, path: &Path, err: std::io::Error) -> Error {
    Error::repository(
        format!("cannot {what} {}: {err}", path.display()),
        "check free disk space and permissions of the cache folder (see UPSTEP_CACHE_DIR)",
    )
}
