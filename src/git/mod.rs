//! The git layer: open or clone a repository, read its release tags, read files at a tag
//! without checking anything out, materialise tags into cached worktrees, and generate or
//! check a release map from the repository's history.
//!
//! Everything here reads the repository through libgit2 (`git2`, built without network
//! support); only `clone`/`fetch` shell out to the system `git`, so users' credential helpers,
//! ssh agents and proxies keep working. Every failure is an [`Error::Repository`] carrying a
//! message and a fix.
//!
//! Tag pitfalls this layer guards against (see novu-facts.md §1): branches named like tags
//! (tags are always resolved as `refs/tags/<name>`), stray tags (`ignore`), and releases cut
//! on patch branches (`on_mainline`).

mod clone;
mod date;
mod location;
pub mod mapgen;
mod repo;
mod tags;
mod tree;
#[cfg(unix)]
mod update;
pub mod worktree;

use std::path::PathBuf;

pub use location::{credentials_on_command_line, RepoLocation};
pub use mapgen::{
    check_map, check_map_report, discover_scripts, generate_map_skeleton, unmapped_scripts,
    Disagreement, DiscoveredScript, ExpectedScript, MapCheck, Unchecked,
};
pub use repo::GitRepo;
pub use tags::{ReleaseTag, TagInfo};
pub use tree::Toolchain;
pub use worktree::{Worktree, WorktreeStatus, Worktrees};

#[cfg(doc)]
use crate::error::Error;

/// Environment variable that overrides where upstep keeps clones and worktrees.
pub const CACHE_DIR_ENV: &str = "UPSTEP_CACHE_DIR";

/// Where upstep keeps cloned repositories (`<root>/repos`) and worktrees (`<root>/worktrees`):
/// `$UPSTEP_CACHE_DIR` if set and not empty, else the XDG cache directory + `/upstep`
/// (`~/.cache/upstep` on Linux), else `.upstep-cache` in the current directory when no home
/// directory is known.
pub fn default_cache_root() -> PathBuf {
    match std::env::var_os(CACHE_DIR_ENV) {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => dirs::cache_dir()
            .map(|dir| dir.join("upstep"))
            .unwrap_or_else(|| PathBuf::from(".upstep-cache")),
    }
}

/// Replaces every character that is risky in a file name with `-`, collapsing runs, so a tag,
/// URL or repository name can become one directory name.
pub(crate) fn sanitise_for_path(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    for ch in raw.chars() {
        if ch.is_ascii_alphanumeric() || matches!(ch, '.' | '_' | '-' | '+') {
            out.push(ch);
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    let trimmed = out.trim_matches(|c| c == '-' || c == '.');
    if trimmed.is_empty() {
        "repo".to_string()
    } else {
        trimmed.to_string()
    }
}

/// A short, stable (across Rust versions) hash for disambiguating cache directory names.
pub(crate) fn short_hash(text: &str) -> String {
    // FNV-1a 64: std's DefaultHasher is not guaranteed stable, and cache paths must be.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in text.as_bytes() {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{:08x}", hash >> 32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sanitise_keeps_safe_chars_and_collapses_the_rest() {
        assert_eq!(sanitise_for_path("v0.24.0"), "v0.24.0");
        assert_eq!(sanitise_for_path("release/1.0"), "release-1.0");
        assert_eq!(
            sanitise_for_path("github.com:novuhq//novu"),
            "github.com-novuhq-novu"
        );
        assert_eq!(sanitise_for_path("../.."), "repo");
        assert_eq!(sanitise_for_path(""), "repo");
    }

    #[test]
    fn short_hash_is_stable() {
        assert_eq!(short_hash("abc"), short_hash("abc"));
        assert_ne!(short_hash("abc"), short_hash("abd"));
        assert_eq!(short_hash("").len(), 8);
    }
}
