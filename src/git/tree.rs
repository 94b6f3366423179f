//! Reading files at a commit straight from the object database, with no checkout.

use git2::{ObjectType, Tree, TreeWalkMode, TreeWalkResult};

use super::repo::short_id;
use super::{GitRepo, TagInfo};
use crate::error::{Error, Result};

/// The toolchain a release declares in its root `.nvmrc` and `package.json`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Toolchain {
    /// `.nvmrc`, trimmed, without a leading `v` (e.g. `20.8.1`).
    pub nvmrc: Option<String>,
    /// `engines.node` (npm range syntax, e.g. `>=20 <21`).
    pub engines_node: Option<String>,
    /// `engines.pnpm` (npm range syntax).
    pub engines_pnpm: Option<String>,
    /// `packageManager` as written, e.g. `pnpm@8.9.0`.
    pub package_manager: Option<String>,
    /// The pnpm version from `packageManager` when it names pnpm (any `+sha...` suffix dropped).
    pub pnpm: Option<String>,
}

/// `"./apps/api/"` -> `"apps/api"`; `""`, `"."` and `"/"` -> `""` (the root).
pub(crate) fn normalise_repo_path(path: &str) -> &str {
    let path = path.trim_start_matches("./").trim_matches('/');
    if path == "." {
        ""
    } else {
        path
    }
}

impl GitRepo {
    /// The tree of `commit` (a full hex id).
    fn tree_at(&self, commit: &str) -> Result<Tree<'_>> {
        self.find_commit(commit)?.tree().map_err(|err| {
            Error::repository(
                format!(
                    "cannot read the files of commit {} ({})",
                    short_id(commit),
                    err.message()
                ),
                "run `git fsck` on the repository, or clone it again",
            )
        })
    }

    /// The content of the file `path` (repository-relative) at `commit`, or `None` when there
    /// is no file there (absent, or a folder).
    pub fn read_file_at(&self, commit: &str, path: &str) -> Result<Option<Vec<u8>>> {
        let tree = self.tree_at(commit)?;
        let path = normalise_repo_path(path);
        if path.is_empty() {
            return Ok(None);
        }
        let Ok(entry) = tree.get_path(std::path::Path::new(path)) else {
            return Ok(None);
        };
        if entry.kind() != Some(ObjectType::Blob) {
            return Ok(None);
        }
        let blob = self.repo.find_blob(entry.id()).map_err(|err| {
            Error::repository(
                format!(
                    "cannot read {path} at commit {} ({})",
                    short_id(commit),
                    err.message()
                ),
                "run `git fsck` on the repository, or clone it again",
            )
        })?;
        Ok(Some(blob.content().to_vec()))
    }

    /// Whether `path` (a file or a folder) exists at `commit`.
    pub fn path_exists_at(&self, commit: &str, path: &str) -> Result<bool> {
        let tree = self.tree_at(commit)?;
        let path = normalise_repo_path(path);
        Ok(path.is_empty() || tree.get_path(std::path::Path::new(path)).is_ok())
    }

    /// Every file under the folder `dir` at `commit`, recursively, as sorted
    /// repository-relative paths (`""` lists the whole tree). A missing folder lists nothing.
    pub fn list_files_at(&self, commit: &str, dir: &str) -> Result<Vec<String>> {
        let tree = self.tree_at(commit)?;
        let dir = normalise_repo_path(dir);
        let subtree = if dir.is_empty() {
            tree
        } else {
            let Ok(entry) = tree.get_path(std::path::Path::new(dir)) else {
                return Ok(Vec::new());
            };
            if entry.kind() != Some(ObjectType::Tree) {
                return Ok(Vec::new());
            }
            self.repo.find_tree(entry.id()).map_err(|err| {
                Error::repository(
                    format!(
                        "cannot read {dir} at commit {} ({})",
                        short_id(commit),
                        err.message()
                    ),
                    "run `git fsck` on the repository, or clone it again",
                )
            })?
        };
        self.files_of_tree(&subtree, dir)
    }

    /// Every blob under `tree`, with `prefix` prepended, sorted.
    pub(crate) fn files_of_tree(&self, tree: &Tree<'_>, prefix: &str) -> Result<Vec<String>> {
        let mut files = Vec::new();
        tree.walk(TreeWalkMode::PreOrder, |parent, entry| {
            if entry.kind() == Some(ObjectType::Blob) {
                let name = String::from_utf8_lossy(entry.name_bytes());
                // `parent` is empty or ends with `/`.
                if prefix.is_empty() {
                    files.push(format!("{parent}{name}"));
                } else {
                    files.push(format!("{prefix}/{parent}{name}"));
                }
            }
            TreeWalkResult::Ok
        })
        .map_err(|err| {
            Error::repository(
                format!("cannot list the files under {prefix:?} ({})", err.message()),
                "run `git fsck` on the repository, or clone it again",
            )
        })?;
        files.sort();
        Ok(files)
    }

    /// The toolchain declared at `commit` by the root `.nvmrc` and `package.json`.
    /// A `package.json` that is not valid JSON is an error naming the commit.
    pub fn toolchain_at(&self, commit: &str) -> Result<Toolchain> {
        self.read_toolchain(commit, &format!("commit {}", short_id(commit)))
    }

    /// Like [`GitRepo::toolchain_at`] for a tag, with messages that name the tag.
    pub fn toolchain_for_tag(&self, tag: &TagInfo) -> Result<Toolchain> {
        self.read_toolchain(&tag.commit, &format!("tag {}", tag.name))
    }

    fn read_toolchain(&self, commit: &str, label: &str) -> Result<Toolchain> {
        let nvmrc = self
            .read_file_at(commit, ".nvmrc")?
            .and_then(|bytes| parse_nvmrc(&String::from_utf8_lossy(&bytes)));
        let mut toolchain = Toolchain {
            nvmrc,
            ..Toolchain::default()
        };
        let Some(package_json) = self.read_file_at(commit, "package.json")? else {
            return Ok(toolchain);
        };
        let manifest: serde_json::Value = serde_json::from_slice(&package_json).map_err(|err| {
            Error::repository(
                format!("package.json at {label} is not valid JSON: {err}"),
                "check the tag in the release map; if the file is really broken at that tag, set node/pnpm by hand in the map",
            )
        })?;
        let text = |value: Option<&serde_json::Value>| {
            value
                .and_then(serde_json::Value::as_str)
                .map(str::to_string)
        };
        let engines = manifest.get("engines");
        toolchain.engines_node = text(engines.and_then(|e| e.get("node")));
        toolchain.engines_pnpm = text(engines.and_then(|e| e.get("pnpm")));
        toolchain.package_manager = text(manifest.get("packageManager"));
        toolchain.pnpm = toolchain
            .package_manager
            .as_deref()
            .and_then(pnpm_from_package_manager);
        Ok(toolchain)
    }
}

/// `"v16.15.1\n"` -> `16.15.1`; blank -> `None`. Only the first line counts.
fn parse_nvmrc(text: &str) -> Option<String> {
    let first = text.lines().map(str::trim).find(|line| !line.is_empty())?;
    let version = first.strip_prefix('v').unwrap_or(first);
    (!version.is_empty()).then(|| version.to_string())
}

/// `pnpm@8.9.0+sha256.abc` -> `8.9.0`; other package managers -> `None`.
fn pnpm_from_package_manager(value: &str) -> Option<String> {
    let version = value.trim().strip_prefix("pnpm@")?;
    let version = version.split('+').next().unwrap_or(version);
    (!version.is_empty()).then(|| version.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nvmrc_is_trimmed_and_unprefixed() {
        assert_eq!(parse_nvmrc("v16.15.1\n"), Some("16.15.1".into()));
        assert_eq!(parse_nvmrc("  20.8.1  "), Some("20.8.1".into()));
        assert_eq!(parse_nvmrc("\n\n"), None);
        assert_eq!(parse_nvmrc("v"), None);
    }

    #[test]
    fn pnpm_version_from_package_manager() {
        assert_eq!(
            pnpm_from_package_manager("pnpm@8.9.0"),
            Some("8.9.0".into())
        );
        assert_eq!(
            pnpm_from_package_manager("pnpm@9.11.0+sha512.abc"),
            Some("9.11.0".into())
        );
        assert_eq!(pnpm_from_package_manager("yarn@1.22.0"), None);
        assert_eq!(pnpm_from_package_manager("pnpm@"), None);
    }

    #[test]
    fn repo_paths_are_normalised() {
        assert_eq!(normalise_repo_path("./apps/api/"), "apps/api");
        assert_eq!(normalise_repo_path("/"), "");
        assert_eq!(normalise_repo_path("."), "");
        assert_eq!(normalise_repo_path(""), "");
    }
}
