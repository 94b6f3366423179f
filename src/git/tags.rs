//! Release tags: resolving one tag exactly, and listing every tag that names a release.

use std::collections::HashSet;

use git2::Oid;
use semver::Version;

use super::date::git_time_to_date;
use super::GitRepo;
use crate::error::{Error, Result};

/// A tag resolved to the commit it names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagInfo {
    /// The tag's name, e.g. `v0.24.0` (without `refs/tags/`).
    pub name: String,
    /// The full hex id of the commit the tag points at (annotated tags are peeled).
    pub commit: String,
    /// `YYYY-MM-DD`: the tagger's date for annotated tags, the commit date for lightweight
    /// ones (in the author's time zone).
    pub date: Option<String>,
    /// Whether the tag is an annotated tag object.
    pub annotated: bool,
}

/// A tag whose name is a semantic version (with an optional `v` prefix).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReleaseTag {
    pub version: Version,
    pub info: TagInfo,
    /// No prerelease part (`1.2.0`, not `1.2.0-rc.1`).
    pub stable: bool,
    /// Whether the tagged commit is in the history of a mainline branch; `None` when none of
    /// the mainline branches exists (neither `refs/heads/<b>` nor `refs/remotes/origin/<b>`).
    pub on_mainline: Option<bool>,
}

/// `v1.2.3` / `1.2.3-rc.1` -> the version; anything else -> `None`.
pub(crate) fn parse_release_tag_name(name: &str) -> Option<Version> {
    let bare = name.strip_prefix('v').unwrap_or(name);
    Version::parse(bare).ok()
}

impl GitRepo {
    /// Resolves the tag `name` as `refs/tags/<name>`, never a branch of the same name, and
    /// peels annotated tags to their commit.
    pub fn tag(&self, name: &str) -> Result<TagInfo> {
        let refname = format!("refs/tags/{name}");
        let reference = self.repo.find_reference(&refname).map_err(|_| {
            Error::repository(
                format!("tag {name} is not in repository {}", self.path().display()),
                format!(
                    "fetch the tags (`git -C {} fetch --tags`), or check the tag name in the release map",
                    self.path().display()
                ),
            )
        })?;
        let unreadable = |err: git2::Error| {
            Error::repository(
                format!("tag {name} cannot be read ({})", err.message()),
                "run `git fsck` on the repository, or fetch the tags again",
            )
        };
        // The reference's own target, not peeled: an annotated tag object carries the date.
        let target_id = reference
            .resolve()
            .map_err(unreadable)?
            .target()
            .ok_or_else(|| unreadable(git2::Error::from_str("the reference has no target")))?;
        let target = self.repo.find_object(target_id, None).map_err(unreadable)?;
        let not_a_commit = |err: git2::Error| {
            Error::repository(
                format!("tag {name} does not point at a commit ({})", err.message()),
                "check the tag name in the release map: release tags must name commits",
            )
        };
        let (annotated, tagger_date) = match target.as_tag() {
            Some(tag_object) => (true, tag_object.tagger().map(|t| t.when())),
            None => (false, None),
        };
        let commit = target.peel_to_commit().map_err(not_a_commit)?;
        let date = tagger_date.unwrap_or_else(|| commit.time());
        Ok(TagInfo {
            name: name.to_string(),
            commit: commit.id().to_string(),
            date: Some(git_time_to_date(date)),
            annotated,
        })
    }

    /// Resolves the git ref a script no release ships yet runs at: a local branch, a branch of
    /// `origin`, or a full commit id (never a tag of the same name: releases use `tag`).
    pub fn resolve_ref(&self, name: &str) -> Result<TagInfo> {
        let candidates = [
            format!("refs/heads/{name}"),
            format!("refs/remotes/origin/{name}"),
        ];
        let commit = candidates
            .iter()
            .find_map(|r| self.repo.find_reference(r).ok()?.peel_to_commit().ok())
            .or_else(|| {
                let oid = git2::Oid::from_str(name).ok().filter(|_| name.len() == 40)?;
                self.repo.find_commit(oid).ok()
            })
            .ok_or_else(|| {
                Error::repository(
                    format!("ref {name} (a branch or commit) is not in repository {}", self.path().display()),
                    format!("fetch it (`git -C {} fetch origin {name}`), or check unreleased_ref in the release map", self.path().display()),
                )
            })?;
        Ok(TagInfo {
            name: name.to_string(),
            commit: commit.id().to_string(),
            date: Some(git_time_to_date(commit.time())),
            annotated: false,
        })
    }

    /// Every tag whose name parses as a semantic version (optional `v` prefix), except those
    /// named in `ignore`, sorted by version (ties by name). `mainline` lists branch names whose
    /// history counts as the mainline, see [`ReleaseTag::on_mainline`]. Tags that do not point
    /// at a commit are skipped with a warning.
    pub fn release_tags(&self, ignore: &[String], mainline: &[String]) -> Result<Vec<ReleaseTag>> {
        let names = self.repo.tag_names(None).map_err(|err| {
            Error::repository(
                format!(
                    "cannot list the tags of {} ({})",
                    self.path().display(),
                    err.message()
                ),
                "run `git fsck` on the repository, or clone it again",
            )
        })?;
        let mainline_commits = self.mainline_commits(mainline)?;
        let mut releases = Vec::new();
        for name in names.iter().flatten() {
            if ignore.iter().any(|ignored| ignored == name) {
                continue;
            }
            let Some(version) = parse_release_tag_name(name) else {
                continue;
            };
            let info = match self.tag(name) {
                Ok(info) => info,
                Err(err) => {
                    tracing::warn!("skipping tag {name}: {err}");
                    continue;
                }
            };
            let on_mainline = match &mainline_commits {
                None => None,
                Some(set) => Some(Oid::from_str(&info.commit).is_ok_and(|oid| set.contains(&oid))),
            };
            releases.push(ReleaseTag {
                stable: version.pre.is_empty(),
                version,
                info,
                on_mainline,
            });
        }
        releases.sort_by(|a, b| {
            a.version
                .cmp(&b.version)
                .then_with(|| a.info.name.cmp(&b.info.name))
        });
        Ok(releases)
    }

    /// The release tag HEAD is exactly at (the highest version if several), or `None` when
    /// HEAD is not at a release tag or the repository has no commit yet.
    pub fn describe_exact_tag(&self) -> Result<Option<String>> {
        let head = match self.repo.head() {
            Ok(head) => head,
            Err(err)
                if err.code() == git2::ErrorCode::UnbornBranch
                    || err.code() == git2::ErrorCode::NotFound =>
            {
                return Ok(None)
            }
            Err(err) => {
                return Err(Error::repository(
                    format!(
                        "cannot read HEAD of {} ({})",
                        self.path().display(),
                        err.message()
                    ),
                    "check that the repository is not corrupt (`git status`)",
                ))
            }
        };
        let Ok(head_commit) = head.peel_to_commit() else {
            return Ok(None);
        };
        let head_id = head_commit.id().to_string();
        let best = self
            .release_tags(&[], &[])?
            .into_iter()
            .filter(|tag| tag.info.commit == head_id)
            .max_by(|a, b| a.version.cmp(&b.version));
        Ok(best.map(|tag| tag.info.name))
    }

    /// All commits reachable from the mainline branches, or `None` if none of them exists.
    fn mainline_commits(&self, mainline: &[String]) -> Result<Option<HashSet<Oid>>> {
        let mut tips = Vec::new();
        for branch in mainline {
            for refname in [
                format!("refs/heads/{branch}"),
                format!("refs/remotes/origin/{branch}"),
            ] {
                if let Ok(reference) = self.repo.find_reference(&refname) {
                    if let Ok(commit) = reference.peel_to_commit() {
                        tips.push(commit.id());
                    }
                }
            }
        }
        if tips.is_empty() {
            return Ok(None);
        }
        let walk_error = |err: git2::Error| {
            Error::repository(
                format!(
                    "cannot walk the history of the mainline branches {} ({})",
                    mainline.join(", "),
                    err.message()
                ),
                "run `git fsck` on the repository; a shallow clone needs `git fetch --unshallow`",
            )
        };
        // One walk over the mainline history beats one merge-base per tag on long histories.
        let mut walk = self.repo.revwalk().map_err(walk_error)?;
        for tip in tips {
            walk.push(tip).map_err(walk_error)?;
        }
        let mut reachable = HashSet::new();
        for oid in walk {
            reachable.insert(oid.map_err(walk_error)?);
        }
        Ok(Some(reachable))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn release_tag_names() {
        assert_eq!(
            parse_release_tag_name("v0.24.0"),
            Some(Version::new(0, 24, 0))
        );
        assert_eq!(parse_release_tag_name("2.0.0"), Some(Version::new(2, 0, 0)));
        assert!(parse_release_tag_name("v2.0.0-rc.1").is_some_and(|v| !v.pre.is_empty()));
        assert_eq!(parse_release_tag_name("v0.24"), None);
        assert_eq!(parse_release_tag_name("latest"), None);
        assert_eq!(parse_release_tag_name("vv1.0.0"), None);
    }
}
