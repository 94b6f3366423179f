//! Versions as users type them: `v0.17.0`, `0.17.0`, `0.18` (the newest 0.18.x the map
//! knows), `v2`. Resolved against a release map.

use semver::Version;

use crate::error::{Error, Result};
use crate::release_map::ReleaseMap;

/// A version as typed, before it is resolved against a map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserVersion {
    Exact(Version),
    /// `0.18` or `2`: the newest matching release the map knows.
    Partial {
        major: u64,
        minor: Option<u64>,
    },
}

/// Parse `v1.2.3`, `1.2.3`, `1.2`, `1`, with an optional `v` and an optional pre-release.
pub fn parse_user_version(input: &str, flag: &str) -> Result<UserVersion> {
    let text = input.trim();
    let bare = text.strip_prefix(['v', 'V']).unwrap_or(text);
    let bad = || {
        Error::usage(
            format!("{flag} {input:?} is not a version"),
            format!(
                "write a release version such as {flag} v0.18.0 (or v0.18 for its newest patch)"
            ),
        )
    };
    if bare.is_empty() {
        return Err(bad());
    }
    if let Ok(v) = Version::parse(bare) {
        return Ok(UserVersion::Exact(v));
    }
    let parts: Vec<&str> = bare.split('.').collect();
    let number = |s: &str| -> Result<u64> {
        if s.is_empty()
            || !s.bytes().all(|b| b.is_ascii_digit())
            || (s.len() > 1 && s.starts_with('0'))
        {
            return Err(bad());
        }
        s.parse().map_err(|_| bad())
    };
    match parts.as_slice() {
        [major] => Ok(UserVersion::Partial {
            major: number(major)?,
            minor: None,
        }),
        [major, minor] => Ok(UserVersion::Partial {
            major: number(major)?,
            minor: Some(number(minor)?),
        }),
        _ => Err(bad()),
    }
}

impl UserVersion {
    /// The concrete version: a partial one becomes the newest matching release of the map,
    /// else its `.0` form (a version between the map's releases is valid).
    pub fn resolve(&self, map: &ReleaseMap) -> Version {
        match self {
            UserVersion::Exact(v) => v.clone(),
            UserVersion::Partial { major, minor } => map
                .releases
                .iter()
                .rev()
                .find(|r| r.version.major == *major && minor.is_none_or(|m| r.version.minor == m))
                .map(|r| r.version.clone())
                .unwrap_or_else(|| Version::new(*major, minor.unwrap_or(0), 0)),
        }
    }
}

/// `v` + version, the way tags and messages show versions.
pub fn display(v: &Version) -> String {
    format!("v{v}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_forms_users_type() {
        assert_eq!(
            parse_user_version("v0.17.0", "--from").unwrap(),
            UserVersion::Exact(Version::new(0, 17, 0))
        );
        assert_eq!(
            parse_user_version("0.17.0", "--from").unwrap(),
            UserVersion::Exact(Version::new(0, 17, 0))
        );
        assert_eq!(
            parse_user_version("0.18", "--from").unwrap(),
            UserVersion::Partial {
                major: 0,
                minor: Some(18)
            }
        );
        assert_eq!(
            parse_user_version("V2", "--to").unwrap(),
            UserVersion::Partial {
                major: 2,
                minor: None
            }
        );
        assert_eq!(
            parse_user_version("v0.19.0-alpha.0", "--from").unwrap(),
            UserVersion::Exact(Version::parse("0.19.0-alpha.0").unwrap())
        );
    }

    #[test]
    fn rejects_what_is_not_a_version() {
        for bad in [
            "", "v", "latest", "0.x", "1.2.3.4", "01.2", "0..1", "-1", "v 1", "1.2.", "１.２",
        ] {
            let err = parse_user_version(bad, "--from").unwrap_err();
            assert_eq!(err.code(), crate::error::ExitCode::Usage, "{bad:?}");
            assert!(err.to_string().contains("--from"), "{bad:?}: {err}");
        }
    }
}
