//! Opening a repository, and the small helpers every other git module shares.

use std::path::{Path, PathBuf};

use git2::{Oid, Repository};

use crate::error::{Error, Result};

/// A git repository upstep reads releases from: the user's own clone, or a clone upstep keeps
/// in its cache. upstep only ever reads it; worktrees live elsewhere (see [`super::Worktrees`]).
pub struct GitRepo {
    pub(crate) repo: Repository,
    name: String,
}

impl std::fmt::Debug for GitRepo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GitRepo")
            .field("path", &self.repo.path())
            .field("name", &self.name)
            .finish()
    }
}

impl GitRepo {
    /// Opens the repository at `path` (its working directory, or a bare repository / `.git`
    /// directory). Parent directories are not searched, so `--repo` means exactly that path.
    pub fn open(path: &Path) -> Result<GitRepo> {
        let repo = Repository::open(path).map_err(|err| {
            let message = if path.exists() {
                format!("{} is not a git repository ({})", path.display(), err.message())
            } else {
                format!("repository path {} does not exist", path.display())
            };
            Error::repository(
                message,
                "pass --repo the root of a clone of the project (the folder holding .git), or a URL to clone",
            )
        })?;
        let name = repo_name(&repo);
        Ok(GitRepo { repo, name })
    }

    /// A short, human name for the repository: its folder name, without `.git`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The working directory, or the git directory of a bare repository.
    pub fn path(&self) -> &Path {
        self.repo.workdir().unwrap_or_else(|| self.repo.path())
    }

    /// The directory holding the object database shared by every worktree of this repository.
    pub(crate) fn objects_dir(&self) -> PathBuf {
        self.repo.commondir().join("objects")
    }

    /// A key that names this repository's worktree folder: its name plus a hash of where it
    /// lives, so two clones both called `novu` never share worktrees.
    pub(crate) fn cache_key(&self) -> String {
        let location = std::fs::canonicalize(self.repo.commondir())
            .unwrap_or_else(|_| self.repo.commondir().to_path_buf());
        format!(
            "{}-{}",
            super::sanitise_for_path(&self.name),
            super::short_hash(&location.to_string_lossy())
        )
    }

    /// Finds the commit with the full hex id `commit`.
    pub(crate) fn find_commit(&self, commit: &str) -> Result<git2::Commit<'_>> {
        let oid = parse_oid(commit)?;
        self.repo.find_commit(oid).map_err(|err| {
            Error::repository(
                format!(
                    "commit {} is not in repository {} ({})",
                    short_id(commit),
                    self.path().display(),
                    err.message()
                ),
                "fetch the repository's tags (`git fetch --tags`), or check that --repo points at the right clone",
            )
        })
    }
}

/// Parses a full 40-hex-digit commit id (upstep always passes ids from [`super::TagInfo`]).
pub(crate) fn parse_oid(commit: &str) -> Result<Oid> {
    let well_formed = commit.len() == 40 && commit.bytes().all(|b| b.is_ascii_hexdigit());
    if !well_formed {
        return Err(Error::repository(
            format!("`{commit}` is not a full commit id"),
            "pass the 40-hex-digit id of a commit (as found by resolving a tag)",
        ));
    }
    Oid::from_str(commit).map_err(|err| {
        Error::repository(
            format!("`{commit}` is not a commit id ({})", err.message()),
            "pass the 40-hex-digit id of a commit",
        )
    })
}

/// The first 8 hex digits of a commit id, for messages.
pub(crate) fn short_id(commit: &str) -> &str {
    commit.get(..8).unwrap_or(commit)
}

fn repo_name(repo: &Repository) -> String {
    let dir = repo.workdir().unwrap_or_else(|| repo.path());
    let mut name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if name == ".git" {
        // A `.git` directory opened directly: name it after its working directory.
        name = dir
            .parent()
            .and_then(Path::file_name)
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
    }
    let name = name.strip_suffix(".git").unwrap_or(&name).to_string();
    if name.is_empty() {
        "repo".to_string()
    } else {
        name
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_oid_rejects_short_and_non_hex_ids() {
        assert!(parse_oid("abc123").is_err());
        assert!(parse_oid(&"g".repeat(40)).is_err());
        assert!(parse_oid(&"a".repeat(40)).is_ok());
    }

    #[test]
    fn short_id_never_panics() {
        assert_eq!(short_id("abc"), "abc");
        assert_eq!(short_id(&"a".repeat(40)), "aaaaaaaa");
    }
}
