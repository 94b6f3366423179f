//! What every tag's setup shares, in upstep's cache: one pnpm package store and one nx build
//! cache for every tag and run (and the folder of kept builds, `kept_builds`). Passed to the
//! setup commands explicitly (in their environment) so a tag's install does not depend on the
//! user's pnpm defaults, and so the second tag of a run reuses what the first one downloaded
//! (pnpm) and built (nx's local cache is keyed by a task's inputs: a library unchanged between
//! adjacent tags is restored, not rebuilt).
//!
//! The store sits under the same root as the worktrees, so pnpm hard-links packages into each
//! tag's node_modules instead of copying them.

use std::path::{Path, PathBuf};

/// pnpm's package store for every tag and run.
pub fn pnpm_store(cache_root: &Path) -> PathBuf {
    cache_root.join("pnpm-store")
}

/// nx's local build cache for every tag and run.
pub fn nx_cache(cache_root: &Path) -> PathBuf {
    cache_root.join("nx-cache")
}

/// The build outputs kept per tag (`keep_build_outputs`, `src/executor/build_outputs.rs`).
pub fn kept_builds(cache_root: &Path) -> PathBuf {
    cache_root.join("build-outputs")
}

/// The variables that point a setup command at the shared store and build cache.
///
/// - `npm_config_store_dir`: pnpm reads its settings from `npm_config_*` variables (every
///   version Novu's tags use, 6 to 9), and a variable wins over `.npmrc` files.
/// - `NX_CACHE_DIRECTORY`: honoured by nx since 12.7 (nrwl/nx#6670, August 2021), before the
///   oldest Novu tag upstep runs; it wins over nx.json's `cacheDirectory`.
///
/// A variable the map's `setup_env` or the user's environment already sets is left as it is
/// (`already_set`), so an operator can still choose another store.
pub fn setup_env(cache_root: &Path, already_set: &dyn Fn(&str) -> bool) -> Vec<(String, String)> {
    let wanted = [
        ("npm_config_store_dir", pnpm_store(cache_root)),
        ("NX_CACHE_DIRECTORY", nx_cache(cache_root)),
    ];
    wanted
        .into_iter()
        .filter(|(key, _)| !already_set(key))
        .map(|(key, path)| (key.to_string(), path.display().to_string()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_store_and_the_build_cache_live_in_upstep_s_cache_unless_already_chosen() {
        let root = Path::new("/c");
        let env = setup_env(root, &|_| false);
        assert_eq!(
            env,
            vec![
                (
                    "npm_config_store_dir".to_string(),
                    "/c/pnpm-store".to_string()
                ),
                ("NX_CACHE_DIRECTORY".to_string(), "/c/nx-cache".to_string()),
            ]
        );
        let env = setup_env(root, &|k| k == "npm_config_store_dir");
        assert_eq!(
            env,
            vec![("NX_CACHE_DIRECTORY".to_string(), "/c/nx-cache".to_string())]
        );
    }
}
