//! Dependencies a tag's install fetches from outside the package registry (a GitHub tarball,
//! a git dependency), as the release map declares them: where their host cannot be reached,
//! the install would fail minutes into the setup, so `doctor`, `plan --repo` and the upgrade
//! say so before anything runs, naming the dependency.
//!
//! A download is needed when the tag's setup installs it (its profile does not skip it) and,
//! when the repository is at hand, the tag's lockfile still fetches it from that URL.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::git::GitRepo;
use crate::plan::PlanGroup;
use crate::preflight::CheckResult;
use crate::release_map::{Download, ReleaseMap, StandIn};

/// How long a host may take to accept a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(4);

/// Lockfiles whose text says whether a tag still fetches a download.
const LOCKFILES: &[&str] = &["pnpm-lock.yaml", "package-lock.json", "yarn.lock"];

/// One download a group's setup needs.
#[derive(Debug, Clone)]
pub struct Need<'a> {
    pub git_ref: String,
    pub download: &'a Download,
    /// The map's `when-unreachable` stand-in for it: an unreachable host is then a note.
    pub stand_in: Option<&'a StandIn>,
}

impl<'a> Need<'a> {
    /// The need of `download` at `git_ref`, with the stand-in among `stand_ins` that covers it.
    pub fn of(git_ref: &str, download: &'a Download, stand_ins: &'a [StandIn]) -> Need<'a> {
        Need {
            git_ref: git_ref.to_string(),
            download,
            stand_in: stand_ins.iter().find(|s| {
                s.when == crate::release_map::StandInWhen::WhenUnreachable
                    && s.package == download.dependency
            }),
        }
    }
}

/// The downloads the group's setup installs. `profile`: the group's setup profile (None: the
/// era's full setup).
pub fn needed<'m>(map: &'m ReleaseMap, group: &PlanGroup, profile: Option<&str>) -> Vec<Need<'m>> {
    let Some(release) = group.release(map) else {
        return Vec::new();
    };
    release
        .downloads
        .iter()
        .filter(|d| d.needed_by(profile))
        .map(|download| Need::of(&group.git_ref, download, &release.stand_ins))
        .collect()
}

/// Whether the tag at `commit` still fetches the download (its URL is in a lockfile there).
/// Unreadable: assume it does.
pub fn still_fetched(repo: &GitRepo, commit: &str, download: &Download) -> bool {
    let mut any_lockfile = false;
    for lockfile in LOCKFILES {
        if let Ok(Some(bytes)) = repo.read_file_at(commit, lockfile) {
            any_lockfile = true;
            if String::from_utf8_lossy(&bytes).contains(&download.url) {
                return true;
            }
        }
    }
    !any_lockfile
}

/// Whether a TCP connection to `host:port` (a download's `authority`) succeeds. With a proxy
/// configured the install goes through it, which this cannot judge: counted as reachable.
pub fn reachable(authority: &str) -> bool {
    use std::net::ToSocketAddrs;
    let proxied = ["HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"]
        .iter()
        .any(|v| std::env::var_os(v).is_some_and(|x| !x.is_empty()));
    if proxied {
        return true;
    }
    let (host, port) = authority
        .rsplit_once(':')
        .and_then(|(h, p)| Some((h, p.parse::<u16>().ok()?)))
        .unwrap_or((authority, 443));
    let Ok(addresses) = (host, port).to_socket_addrs() else {
        return false;
    };
    addresses
        .into_iter()
        .any(|a| std::net::TcpStream::connect_timeout(&a, CONNECT_TIMEOUT).is_ok())
}

/// `checks` off the async runtime's thread (a probe may take seconds).
pub async fn checks_async(needs: &[Need<'_>]) -> Vec<CheckResult> {
    let hosts: Vec<String> = needs
        .iter()
        .filter_map(|n| n.download.authority())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let probed = tokio::task::spawn_blocking(move || {
        hosts
            .into_iter()
            .map(|h| {
                let up = reachable(&h);
                (h, up)
            })
            .collect::<BTreeMap<String, bool>>()
    })
    .await
    .unwrap_or_default();
    checks(needs, &mut |host| {
        probed.get(host).copied().unwrap_or(false)
    })
}

/// One check per needed download: ok when its host answers, a blocker naming the dependency,
/// the tag and the fix when it does not, a warning when the map declares a stand-in for it
/// then. `probe` says whether a `host:port` answers (asked once per host and port).
pub fn checks(needs: &[Need<'_>], probe: &mut dyn FnMut(&str) -> bool) -> Vec<CheckResult> {
    let mut hosts: BTreeMap<String, bool> = BTreeMap::new();
    let mut out = Vec::new();
    for need in needs {
        let d = need.download;
        let host = d.host().unwrap_or_else(|| "?".to_string());
        let authority = d.authority().unwrap_or_else(|| host.clone());
        let up = *hosts
            .entry(authority.clone())
            .or_insert_with(|| probe(&authority));
        let via = d
            .via
            .as_deref()
            .map(|v| format!(" (via {v})"))
            .unwrap_or_default();
        let id = format!("download.{}.{}", need.git_ref, d.dependency);
        let title = format!("{} at {}", d.dependency, need.git_ref);
        out.push(if let (false, Some(stand_in)) = (up, need.stand_in) {
            CheckResult::warning(
                id,
                title,
                format!(
                    "{host} cannot be reached from here, so {}'s install takes the map's stand-in: {}",
                    need.git_ref,
                    stand_in.describe()
                ),
                format!(
                    "nothing to do for the upgrade; to install the original instead, give this machine HTTPS access to {host} (or set HTTPS_PROXY)"
                ),
            )
        } else if up {
            CheckResult::ok(
                id,
                title,
                format!(
                    "the install fetches {}{via} from {host}, which answers{}",
                    d.dependency,
                    if need.stand_in.is_some() {
                        " (the map's stand-in for it is not needed)"
                    } else {
                        ""
                    }
                ),
            )
        } else {
            let skipped = if d.skipped_by.is_empty() {
                String::new()
            } else {
                format!(
                    "; scripts that need only the {} setup do not install it",
                    d.skipped_by.join("/")
                )
            };
            CheckResult::blocker(
                id,
                title,
                format!(
                    "{}'s install needs {}{via} from {}, and {host} cannot be reached from here{skipped}",
                    need.git_ref, d.dependency, d.url
                ),
                format!(
                    "give this machine HTTPS access to {host} (or set HTTPS_PROXY), or run the upgrade from a machine that has it"
                ),
            )
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn download(url: &str, skipped_by: &[&str]) -> Download {
        Download {
            dependency: "http2".into(),
            url: url.into(),
            via: Some("@novu/apns -> apn".into()),
            skipped_by: skipped_by.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn an_unreachable_host_is_a_blocker_naming_dependency_tag_and_fix() {
        let d = download(
            "https://github.com/node-apn/node-http2/archive/apn-2.1.4.tar.gz",
            &["data-layer"],
        );
        assert_eq!(d.host().as_deref(), Some("github.com"));
        assert!(d.needed_by(None));
        assert!(!d.needed_by(Some("data-layer")));
        let needs = [Need::of("v0.12.0", &d, &[]), Need::of("v0.15.0", &d, &[])];
        let mut asked = Vec::new();
        let results = checks(&needs, &mut |h| {
            asked.push(h.to_string());
            false
        });
        assert_eq!(asked, ["github.com:443"], "each host is probed once");
        assert_eq!(results.len(), 2);
        let first = &results[0];
        assert_eq!(first.severity, crate::preflight::Severity::Blocker);
        assert!(
            first
                .reason
                .contains("v0.12.0's install needs http2 (via @novu/apns -> apn)"),
            "{}",
            first.reason
        );
        assert!(
            first.reason.contains("github.com cannot be reached"),
            "{}",
            first.reason
        );
        assert!(first
            .fix
            .as_deref()
            .unwrap()
            .contains("HTTPS access to github.com"));
        let ok = checks(&needs[..1], &mut |_| true);
        assert_eq!(ok[0].severity, crate::preflight::Severity::Ok);
    }
}
