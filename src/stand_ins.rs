//! Package stand-ins the release map declares (`[[releases.stand_ins]]`): a tag's lockfile
//! pins a package the install cannot fetch as released (the registry no longer serves that
//! version, or it comes from a host outside the registry that is out of reach), and the map
//! gives the exact lockfile text that installs a stand-in instead.
//!
//! Plain text replacement, no shell: each edit replaces every occurrence of its exact text, in
//! order. Applying is idempotent: an edit whose text is gone but whose replacement is there
//! was applied before (a lockfile someone already rewrote). An edit whose text and replacement
//! are both absent means the map does not fit the tag: refused, never guessed around.

use crate::release_map::{Download, StandIn, StandInWhen};

/// What applying one stand-in did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// This many of its edits replaced text.
    Applied { edits: usize },
    /// The lockfile already held the stand-in: nothing changed.
    AlreadyPresent,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Applied { .. } => "applied",
            Outcome::AlreadyPresent => "already-present",
        }
    }
}

/// A stand-in whose text the lockfile does not hold (nor its replacement).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Missing {
    pub package: String,
    /// The first line of the text not found, shortened.
    pub text: String,
}

impl Missing {
    pub fn describe(&self, file: &str, at: &str) -> String {
        format!(
            "the stand-in for {} does not fit {file} at {at}: neither its text {:?} nor its replacement is there",
            self.package, self.text
        )
    }
}

/// `text` with the stand-in's edits applied.
pub fn apply(text: &str, stand_in: &StandIn) -> Result<(String, Outcome), Missing> {
    let mut out = text.to_string();
    let (mut replaced, mut present) = (0, 0);
    for edit in &stand_in.edits {
        if out.contains(&edit.text) {
            out = out.replace(&edit.text, &edit.with);
            replaced += 1;
        } else if !edit.with.is_empty() && out.contains(&edit.with) {
            present += 1;
        } else if !edit.with.is_empty() {
            return Err(missing(stand_in, &edit.text));
        }
        // A removal whose text is gone: removed before, if the other edits say so.
    }
    match (replaced, present) {
        (0, 0) => Err(missing(
            stand_in,
            stand_in.edits.first().map_or("", |e| e.text.as_str()),
        )),
        (0, _) => Ok((out, Outcome::AlreadyPresent)),
        (edits, _) => Ok((out, Outcome::Applied { edits })),
    }
}

fn missing(stand_in: &StandIn, text: &str) -> Missing {
    let first = text.lines().find(|l| !l.trim().is_empty()).unwrap_or(text);
    let first = first.trim();
    let shown = if first.chars().count() > 80 {
        format!("{}…", first.chars().take(80).collect::<String>())
    } else {
        first.to_string()
    };
    Missing {
        package: stand_in.package.clone(),
        text: shown,
    }
}

/// The host whose reachability decides a `when-unreachable` stand-in: that of the release's
/// download of the same package (validation guarantees there is one).
pub fn host_of<'d>(stand_in: &StandIn, downloads: &'d [Download]) -> Option<&'d Download> {
    downloads.iter().find(|d| d.dependency == stand_in.package)
}

/// Whether a stand-in applies: always, or when its download's host does not answer
/// (`reachable` is asked about that download).
pub fn applies(
    stand_in: &StandIn,
    downloads: &[Download],
    reachable: &mut dyn FnMut(&Download) -> bool,
) -> bool {
    match stand_in.when {
        StandInWhen::Always => true,
        StandInWhen::WhenUnreachable => host_of(stand_in, downloads).is_some_and(|d| !reachable(d)),
    }
}

/// What `map check --repo` finds about the map's stand-ins: each one checked against its
/// tag's lockfile (every stand-in, whatever its `when`).
#[derive(Debug, Default)]
pub struct RepoCheck {
    /// A stand-in that does not fit its tag (its text is not there), or a lockfile missing.
    pub problems: Vec<String>,
    /// Releases whose tag the repository does not have.
    pub unchecked: Vec<String>,
}

pub fn check_against_repo(
    map: &crate::release_map::ReleaseMap,
    repo: &crate::git::GitRepo,
) -> RepoCheck {
    let mut out = RepoCheck::default();
    for release in map.releases.iter().filter(|r| !r.stand_ins.is_empty()) {
        let packages = || {
            release
                .stand_ins
                .iter()
                .map(|s| s.package.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let Ok(tag) = repo.tag(&release.tag) else {
            out.unchecked.push(format!(
                "stand-ins at {} ({}): the repository has no tag {}",
                release.tag,
                packages(),
                release.tag
            ));
            continue;
        };
        let mut texts: std::collections::BTreeMap<&str, Option<String>> = Default::default();
        for stand_in in &release.stand_ins {
            let text = texts.entry(stand_in.file.as_str()).or_insert_with(|| {
                repo.read_file_at(&tag.commit, &stand_in.file)
                    .ok()
                    .flatten()
                    .map(|b| String::from_utf8_lossy(&b).into_owned())
            });
            let Some(current) = text.as_mut() else {
                out.problems.push(format!(
                    "the stand-in for {} at {}: {} is not in the tag's tree",
                    stand_in.package, release.tag, stand_in.file
                ));
                continue;
            };
            match apply(current, stand_in) {
                Ok((new, _)) => *current = new,
                Err(missing) => out
                    .problems
                    .push(missing.describe(&stand_in.file, &release.tag)),
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::release_map::{StandInWhy, TextEdit};

    fn stand_in(edits: &[(&str, &str)]) -> StandIn {
        StandIn {
            package: "@team-plain/typescript-sdk".into(),
            original: "5.4.3".into(),
            stand_in: "5.8.0 from npm".into(),
            why: StandInWhy::GoneFromRegistry,
            when: StandInWhen::Always,
            file: "pnpm-lock.yaml".into(),
            notes: None,
            edits: edits
                .iter()
                .map(|(t, w)| TextEdit {
                    text: t.to_string(),
                    with: w.to_string(),
                })
                .collect(),
        }
    }

    const LOCK: &str = "importers:\n  .:\n    dependencies:\n      '@team-plain/typescript-sdk':\n        specifier: 5.4.3\n        version: 5.4.3\n\npackages:\n\n  '@team-plain/typescript-sdk@5.4.3':\n    resolution: {integrity: sha512-old}\n\n  '@gone/thing@1.0.0':\n    resolution: {integrity: sha512-gone}\n\nsnapshots:\n  '@team-plain/typescript-sdk@5.4.3': {}\n";

    fn plain() -> StandIn {
        stand_in(&[
            (
                "'@team-plain/typescript-sdk@5.4.3'",
                "'@team-plain/typescript-sdk@5.8.0'",
            ),
            ("sha512-old", "sha512-new"),
            (
                "'@team-plain/typescript-sdk':\n        specifier: 5.4.3\n        version: 5.4.3",
                "'@team-plain/typescript-sdk':\n        specifier: 5.4.3\n        version: 5.8.0",
            ),
            (
                "  '@gone/thing@1.0.0':\n    resolution: {integrity: sha512-gone}\n\n",
                "",
            ),
        ])
    }

    #[test]
    fn every_occurrence_is_replaced_in_order_across_lines() {
        let (out, outcome) = apply(LOCK, &plain()).unwrap();
        assert_eq!(outcome, Outcome::Applied { edits: 4 });
        assert!(!out.contains("5.4.3'"), "{out}");
        assert_eq!(out.matches("'@team-plain/typescript-sdk@5.8.0'").count(), 2);
        assert!(
            out.contains("specifier: 5.4.3\n        version: 5.8.0"),
            "{out}"
        );
        assert!(
            out.contains("sha512-new") && !out.contains("@gone/thing"),
            "{out}"
        );
    }

    #[test]
    fn applying_twice_changes_nothing_the_second_time() {
        let (once, _) = apply(LOCK, &plain()).unwrap();
        let (twice, outcome) = apply(&once, &plain()).unwrap();
        assert_eq!(outcome, Outcome::AlreadyPresent);
        assert_eq!(once, twice);
    }

    #[test]
    fn a_text_neither_there_nor_replaced_is_named() {
        let s = stand_in(&[(
            "'@other/pkg@1.2.3':\n    resolution: x",
            "'@other/pkg@2.0.0'",
        )]);
        let err = apply(LOCK, &s).unwrap_err();
        assert_eq!(err.text, "'@other/pkg@1.2.3':");
        assert!(err.describe("pnpm-lock.yaml", "v2.1.0").contains(
            "the stand-in for @team-plain/typescript-sdk does not fit pnpm-lock.yaml at v2.1.0"
        ));
        // Only removals, none of them there: nothing shows the stand-in was ever applied.
        let removal = stand_in(&[("  '@other/pkg@1.2.3': {}\n", "")]);
        assert!(apply(LOCK, &removal).is_err());
    }

    #[test]
    fn when_unreachable_follows_the_download_s_host() {
        let mut s = plain();
        s.when = StandInWhen::WhenUnreachable;
        let download = Download {
            dependency: s.package.clone(),
            url: "https://codeload.github.com/x/y/tar.gz/abc".into(),
            via: None,
            skipped_by: vec![],
        };
        let downloads = [download];
        assert!(applies(&s, &downloads, &mut |_| false));
        assert!(!applies(&s, &downloads, &mut |_| true));
        s.when = StandInWhen::Always;
        assert!(applies(&s, &downloads, &mut |_| panic!("always: no probe")));
    }
}
