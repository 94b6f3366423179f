//! Free disk space where checkouts and their `node_modules` will go (about 4.5 GB per tag).

use std::path::{Path, PathBuf};

use super::{human_bytes, CheckResult};

/// Blocker when the file system holding `path` (or its nearest existing ancestor: the work
/// directory may not exist yet) has less than `needed_bytes` available to this user.
pub fn check_disk(path: &Path, needed_bytes: u64) -> CheckResult {
    const ID: &str = "disk";
    let title = format!("free disk space for {}", path.display());
    let probe = nearest_existing(path);
    let available = match available_bytes(&probe) {
        Ok(bytes) => bytes,
        Err(e) => {
            return CheckResult::warning(
                ID,
                title,
                format!("cannot tell the free space at {}: {e}", probe.display()),
                format!(
                    "make sure {} has at least {} free",
                    probe.display(),
                    human_bytes(needed_bytes)
                ),
            )
        }
    };
    let details = vec![
        format!("checked at {}", probe.display()),
        format!("available: {} ({available} bytes)", human_bytes(available)),
        format!(
            "needed: {} ({needed_bytes} bytes)",
            human_bytes(needed_bytes)
        ),
    ];
    if available < needed_bytes {
        CheckResult::blocker(
            ID,
            title,
            format!(
                "only {} free at {}, the plan needs about {}",
                human_bytes(available),
                probe.display(),
                human_bytes(needed_bytes)
            ),
            format!(
                "free {} on that disk, or point upstep's cache (UPSTEP_CACHE_DIR, where the \
                 worktrees go) at a disk with {} free",
                human_bytes(needed_bytes - available),
                human_bytes(needed_bytes)
            ),
        )
        .with_details(details)
    } else {
        CheckResult::ok(
            ID,
            title,
            format!(
                "{} free, about {} needed",
                human_bytes(available),
                human_bytes(needed_bytes)
            ),
        )
        .with_details(details)
    }
}

pub(crate) fn nearest_existing(path: &Path) -> PathBuf {
    let absolute = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()
            .unwrap_or_else(|_| PathBuf::from("/"))
            .join(path)
    };
    absolute
        .ancestors()
        .find(|p| p.exists())
        .unwrap_or(Path::new("/"))
        .to_path_buf()
}

/// Bytes available to an unprivileged user (`f_bavail`, not `f_bfree`: root's reserve is not
/// ours to use).
pub(crate) fn available_bytes(path: &Path) -> Result<u64, String> {
    let stat = nix::sys::statvfs::statvfs(path).map_err(|e| match e {
        nix::errno::Errno::EINVAL => "the path contains a NUL byte".to_string(),
        e => std::io::Error::from(e).to_string(),
    })?;
    #[allow(clippy::unnecessary_cast)] // the field types differ between platforms
    let bytes = (stat.blocks_available() as u64).saturating_mul(stat.fragment_size() as u64);
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::preflight::Severity;

    #[test]
    fn enough_and_not_enough() {
        let dir = std::env::temp_dir();
        assert_eq!(check_disk(&dir, 1).severity, Severity::Ok);
        let result = check_disk(&dir, u64::MAX);
        assert_eq!(result.severity, Severity::Blocker);
        assert!(result.reason.contains("EiB"), "{}", result.reason);
        assert!(result.fix.is_some());
    }

    #[test]
    fn missing_directories_use_their_nearest_ancestor() {
        let path = std::env::temp_dir().join("upstep-no-such-dir/and/deeper");
        let result = check_disk(&path, 1);
        assert_eq!(result.severity, Severity::Ok, "{result:?}");
        assert!(result.details[0].contains(&std::env::temp_dir().display().to_string()));
        assert_eq!(
            check_disk(Path::new("relative/not/there"), 1).severity,
            Severity::Ok
        );
    }
}
