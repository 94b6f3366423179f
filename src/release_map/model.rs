//! The validated release map: what the planner, runner and detection read.
//!
//! Built only by `load::parse_map` after every check in `validate.rs` passed, so code using
//! it can rely on its invariants: releases sorted by version and unique, every reference
//! resolved, fingerprints already converted to BSON.

use std::collections::BTreeMap;

use bson::Document;
use semver::Version;

pub use super::schema::{Exits, Idempotency, Need, RunKind};

#[derive(Debug, Clone)]
pub struct ReleaseMap {
    /// Where the map came from, for messages ("embedded default" or a path).
    pub source: String,
    pub project: Project,
    pub eras: BTreeMap<String, Era>,
    /// Sorted by version, unique.
    pub releases: Vec<Release>,
    /// In file order (the order that breaks ties within one release).
    pub migrations: Vec<Migration>,
}

#[derive(Debug, Clone)]
pub struct Project {
    pub name: String,
    pub repository: Option<String>,
    pub migrations_dir: String,
    pub script_suffixes: Vec<String>,
    pub exclude_suffixes: Vec<String>,
    pub ignore_tags: Vec<String>,
    pub mainline: Vec<String>,
    /// Quiet window (seconds) for finished scripts that never exit.
    pub quiet_secs: u64,
    /// Disk one prepared checkout needs (MB), checked by `doctor`.
    pub disk_per_tag_mb: u64,
    /// Environment checks only this project needs (`[[project.env_checks]]`).
    pub env_checks: Vec<super::tools::RawEnvCheck>,
    /// What a valid encryption key of this project looks like (None: the map says nothing).
    pub encryption_key: Option<super::tools::RawKeyRules>,
}

#[derive(Debug, Clone)]
pub struct Era {
    pub name: String,
    pub description: Option<String>,
    pub cwd: String,
    pub run: Vec<String>,
    /// The argv of `run = "command"` migrations (a migration's own `command` overrides it).
    pub command: Option<Vec<String>>,
    /// The argv that undoes a `run = "command"` migration.
    pub down: Option<Vec<String>>,
    pub env: BTreeMap<String, String>,
    pub env_file: Option<String>,
    pub env_file_required: bool,
    pub setup: Vec<Vec<String>>,
    pub setup_env: BTreeMap<String, String>,
    /// Keep what the setup's build commands make in upstep's cache and restore it when the
    /// same tag is prepared again (`src/executor/build_outputs.rs`).
    pub keep_build_outputs: bool,
    pub done_lines: Vec<String>,
    pub shims: BTreeMap<String, Shim>,
    pub setup_profiles: BTreeMap<String, SetupProfile>,
}

#[derive(Debug, Clone)]
pub struct SetupProfile {
    pub description: Option<String>,
    pub setup: Vec<Vec<String>>,
}

/// The setup a tag gets: the era's full `setup`, or one named profile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetupChoice<'a> {
    /// None: the era's full setup.
    pub profile: Option<&'a str>,
    pub commands: &'a [Vec<String>],
}

impl Era {
    /// The setup for scripts whose modes name `profiles`: a profile only when every script
    /// names the same one (a profile prepares less than the full setup, never more).
    pub fn setup_for<'s, 'p, I>(&'s self, profiles: I) -> SetupChoice<'s>
    where
        I: IntoIterator<Item = Option<&'p str>>,
    {
        let full = SetupChoice {
            profile: None,
            commands: &self.setup,
        };
        let mut chosen: Option<&'p str> = None;
        for profile in profiles {
            match (profile, chosen) {
                (None, _) => return full,
                (Some(p), None) => chosen = Some(p),
                (Some(p), Some(c)) if p != c => return full,
                _ => {}
            }
        }
        match chosen.and_then(|name| self.setup_profiles.get_key_value(name)) {
            Some((name, profile)) => SetupChoice {
                profile: Some(name.as_str()),
                commands: &profile.setup,
            },
            None => full,
        }
    }
}

/// A dependency a tag's install fetches from outside the package registry.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Download {
    pub dependency: String,
    pub url: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub via: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub skipped_by: Vec<String>,
}

impl Download {
    /// Whether a setup with `profile` (None: the full setup) installs it.
    pub fn needed_by(&self, profile: Option<&str>) -> bool {
        profile.is_none_or(|p| !self.skipped_by.iter().any(|s| s == p))
    }

    /// The host the URL points at (`github.com` for `https://github.com/...`).
    pub fn host(&self) -> Option<String> {
        let url = crate::redact::Uri::new(self.url.as_str());
        url.scheme()?;
        url.host_name().map(str::to_string)
    }

    /// `host:port` the install connects to (443 unless the URL names a port).
    pub fn authority(&self) -> Option<String> {
        let url = crate::redact::Uri::new(self.url.as_str());
        url.scheme()?;
        let host = url.host_name()?;
        let port = url
            .port_text()
            .and_then(|p| p.parse::<u16>().ok())
            .unwrap_or(443);
        Some(format!("{host}:{port}"))
    }
}

#[derive(Debug, Clone)]
pub struct Shim {
    pub description: Option<String>,
    pub template: String,
}

#[derive(Debug, Clone)]
pub struct Release {
    pub version: Version,
    pub tag: String,
    pub date: Option<String>,
    pub era: String,
    pub node: String,
    pub node_engines: Option<String>,
    pub pnpm: Option<String>,
    pub verified: bool,
    pub notes: Option<String>,
    /// A lockfile (path from the repository root) whose stale workspace-link specifiers
    /// upstep reconciles before the setup runs.
    pub repair_lockfile: Option<String>,
    pub downloads: Vec<Download>,
    /// Lockfile entries the install cannot fetch as released, and what it installs instead
    /// (`src/stand_ins.rs` applies them).
    pub stand_ins: Vec<StandIn>,
}

/// A package the tag's lockfile pins where the install cannot fetch it (gone from the
/// registry, or hosted outside it and out of reach), and the lockfile text that installs a
/// stand-in instead.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct StandIn {
    pub package: String,
    /// What the lockfile pins, for people: "5.4.3", "github:novuhq/maily.to (0.1.3-novu.4)".
    pub original: String,
    /// What is installed instead, for people: "5.8.0 from npm".
    pub stand_in: String,
    pub why: StandInWhy,
    pub when: StandInWhen,
    /// The lockfile (path from the repository root) the edits apply to.
    pub file: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub notes: Option<String>,
    /// Exact text replacements, applied in order, every occurrence.
    #[serde(skip)]
    pub edits: Vec<TextEdit>,
}

/// One exact replacement in a lockfile (the text may span lines).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TextEdit {
    pub text: String,
    pub with: String,
}

/// Why the original cannot be installed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum StandInWhy {
    /// The registry no longer serves it (404): nothing else can work.
    GoneFromRegistry,
    /// The install fetches it from outside the registry (a GitHub tarball).
    OutsideRegistry,
}

impl StandInWhy {
    pub const NAMES: &'static [&'static str] = &["gone-from-registry", "outside-registry"];

    pub fn parse(name: &str) -> Option<StandInWhy> {
        match name {
            "gone-from-registry" => Some(StandInWhy::GoneFromRegistry),
            "outside-registry" => Some(StandInWhy::OutsideRegistry),
            _ => None,
        }
    }
}

/// When a stand-in is applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum StandInWhen {
    /// Every install of the tag: the original is gone.
    Always,
    /// Only when the host of the release's download of the same package cannot be reached.
    WhenUnreachable,
}

impl StandInWhen {
    pub const NAMES: &'static [&'static str] = &["always", "when-unreachable"];

    pub fn parse(name: &str) -> Option<StandInWhen> {
        match name {
            "always" => Some(StandInWhen::Always),
            "when-unreachable" => Some(StandInWhen::WhenUnreachable),
            _ => None,
        }
    }
}

impl StandIn {
    /// "@team-plain/typescript-sdk 5.4.3 -> 5.8.0 from npm (gone from the registry)".
    pub fn describe(&self) -> String {
        let why = match self.why {
            StandInWhy::GoneFromRegistry => "the original is gone from the registry",
            StandInWhy::OutsideRegistry => "the original is fetched from outside the registry",
        };
        format!(
            "{} {} -> {} ({why})",
            self.package, self.original, self.stand_in
        )
    }
}

/// Where a migration's script first appears.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Introduced {
    Release(Version),
    /// Not in any release yet: runs at this git ref.
    Unreleased {
        git_ref: String,
    },
}

/// How a script runs at a given release.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Mode {
    pub run: RunKind,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub export: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shim: Option<String>,
    /// With `run = "command"`: the migration's own argv (None: the era's `command`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    pub exits: Exits,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub done_line: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quiet_secs: Option<u64>,
    /// Observed: the script's output never reaches upstep (it logs through a logger that
    /// writes elsewhere), so it can never print a done line: the era's done lines are not
    /// used for it, and its quiet window with its data check ends it instead.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub prints_nothing: bool,
    /// The era's setup profile that prepares enough for it (None: the full setup).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub setup_profile: Option<String>,
}

impl Mode {
    /// "file", or "export fooBar via data-layer shim".
    pub fn describe(&self) -> String {
        match self.run {
            RunKind::File => "file".to_string(),
            RunKind::Command => match &self.command {
                Some(argv) => format!("command {}", argv.join(" ")),
                None => "the era's command".to_string(),
            },
            RunKind::Export => format!(
                "export {} via {} shim",
                self.export.as_deref().unwrap_or("?"),
                self.shim.as_deref().unwrap_or("?")
            ),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Migration {
    pub id: String,
    pub title: String,
    pub introduced: Introduced,
    pub run_at: Option<Version>,
    pub script: String,
    /// Its name in its tool's journal and `{name}` (default: the script's stem).
    pub name: String,
    /// How to undo it (`upstep rollback`); None: it cannot be undone.
    pub down: Option<super::tools::Down>,
    pub base_mode: Mode,
    /// Later modes, ascending by the release they start at.
    pub modes: Vec<(Version, Mode)>,
    pub idempotent: Idempotency,
    pub destructive: bool,
    pub lossy: bool,
    pub needs: Vec<Need>,
    pub after: Vec<String>,
    pub warnings: Vec<String>,
    pub fingerprint: Fingerprint,
    pub verified: bool,
    pub notes: Option<String>,
    pub lifecycle: Lifecycle,
}

/// Where a script lives and when it may run (see `lifecycle.rs` for the rules).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Lifecycle {
    /// The first release whose tree no longer holds the script (always after it was introduced
    /// and after every release it runs at).
    pub removed_in: Option<Version>,
    /// Why the script must run at its own release whatever the target.
    pub required_stop: Option<String>,
    /// The first release whose file is a stub that refuses to run.
    pub stub_from: Option<Version>,
    /// Why it runs only when asked for by id.
    pub optional: Option<String>,
    /// It exits 0 even when it failed: only its data check proves it ran.
    pub exit_code_unreliable: bool,
}

impl Migration {
    /// The mode in force at `version`: the last `modes` entry starting at or before it.
    pub fn mode_at(&self, version: Option<&Version>) -> &Mode {
        let Some(version) = version else {
            // Unreleased refs are newer than every release.
            return self.modes.last().map(|(_, m)| m).unwrap_or(&self.base_mode);
        };
        self.modes
            .iter()
            .rev()
            .find(|(from, _)| from <= version)
            .map(|(_, m)| m)
            .unwrap_or(&self.base_mode)
    }

    pub fn introduced_version(&self) -> Option<&Version> {
        match &self.introduced {
            Introduced::Release(v) => Some(v),
            Introduced::Unreleased { .. } => None,
        }
    }

    pub fn needs(&self, need: Need) -> bool {
        self.needs.contains(&need)
    }

    /// The migration tool whose journal says whether it is applied, and that journal's
    /// collection (its first `journal` check).
    pub fn tool_journal(&self) -> Option<(super::tools::ToolJournal, &str)> {
        let Fingerprint::Checks(checks) = &self.fingerprint else {
            return None;
        };
        checks.iter().find_map(|c| match &c.kind {
            CheckKind::ToolJournal { tool, .. } => Some((*tool, c.collection.as_str())),
            _ => None,
        })
    }
}

#[derive(Debug, Clone)]
pub enum Fingerprint {
    /// All must find nothing for the migration to count as applied.
    Checks(Vec<Check>),
    /// No reliable check exists; the reason says why.
    Unknown { reason: String },
}

#[derive(Debug, Clone)]
pub struct Check {
    pub collection: String,
    pub description: Option<String>,
    pub kind: CheckKind,
}

#[derive(Debug, Clone, PartialEq)]
pub enum CheckKind {
    /// Documents matching the filter still need the migration.
    Filter(Document),
    /// Any document out of the pipeline means pending.
    Pipeline(Vec<Document>),
    /// The collection existing means pending.
    Absent,
    /// The tool's journal in the collection records the migration (`key` in the tool's
    /// `key_field`): pending until it does, never "not applicable".
    ToolJournal {
        tool: super::tools::ToolJournal,
        key: String,
    },
}

impl ReleaseMap {
    pub fn release(&self, version: &Version) -> Option<&Release> {
        self.releases.iter().find(|r| &r.version == version)
    }

    pub fn newest_release(&self) -> Option<&Release> {
        self.releases.last()
    }

    /// The default target of an upgrade (and of `plan`, `status`, `detect`): the newest
    /// *verified* release. An unverified one (newer than the history the map was checked
    /// against) is a target only when named with `--to`, or with `include_unreleased`: asking
    /// for scripts no release ships yet is asking to go past every release.
    pub fn default_target(&self, include_unreleased: bool) -> crate::error::Result<&Release> {
        let newest = if include_unreleased {
            self.newest_release()
        } else {
            self.releases.iter().rev().find(|r| r.verified)
        };
        newest.ok_or_else(|| {
            let newest = self
                .newest_release()
                .map(|r| format!(" (e.g. --to {})", r.tag))
                .unwrap_or_default();
            crate::error::Error::usage(
                format!("the release map {} lists no verified release", self.source),
                format!("name the target with --to{newest}, or use a map with verified releases"),
            )
        })
    }

    /// The newest release, verified or not (the end of what detection reads).
    pub fn newest_version(&self) -> crate::error::Result<Version> {
        self.newest_release()
            .map(|r| r.version.clone())
            .ok_or_else(|| {
                crate::error::Error::usage(
                    format!("the release map {} lists no releases", self.source),
                    "pass --map with a map that lists releases",
                )
            })
    }

    pub fn migration(&self, id: &str) -> Option<&Migration> {
        self.migrations.iter().find(|m| m.id == id)
    }

    pub fn era_of(&self, release: &Release) -> &Era {
        // Validation guarantees every release names an existing era.
        &self.eras[&release.era]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn era() -> Era {
        Era {
            name: "e".into(),
            description: None,
            cwd: ".".into(),
            run: vec!["node".into(), "{script}".into()],
            command: None,
            down: None,
            env: BTreeMap::new(),
            env_file: None,
            env_file_required: false,
            setup: vec![vec!["full".into()]],
            setup_env: BTreeMap::new(),
            keep_build_outputs: false,
            done_lines: Vec::new(),
            shims: BTreeMap::new(),
            setup_profiles: BTreeMap::from([(
                "data-layer".to_string(),
                SetupProfile {
                    description: None,
                    setup: vec![vec!["light".into()]],
                },
            )]),
        }
    }

    #[test]
    fn a_profile_is_chosen_only_when_every_script_names_it() {
        let era = era();
        let light = era.setup_for([Some("data-layer"), Some("data-layer")]);
        assert_eq!(light.profile, Some("data-layer"));
        assert_eq!(light.commands, [vec!["light".to_string()]]);
        for mixed in [
            vec![Some("data-layer"), None],
            vec![None, Some("data-layer")],
            vec![Some("data-layer"), Some("other")],
            vec![Some("unknown")],
            vec![],
        ] {
            let choice = era.setup_for(mixed.clone());
            assert_eq!(choice.profile, None, "{mixed:?}");
            assert_eq!(choice.commands, [vec!["full".to_string()]]);
        }
    }

    #[test]
    fn a_download_names_its_host_and_the_profiles_that_skip_it() {
        let d = Download {
            dependency: "x".into(),
            url: "https://user@codeload.github.com:443/a/b".into(),
            via: None,
            skipped_by: vec!["data-layer".into()],
        };
        assert_eq!(d.host().as_deref(), Some("codeload.github.com"));
        assert!(d.needed_by(None));
        assert!(d.needed_by(Some("other")));
        assert!(!d.needed_by(Some("data-layer")));
    }
}
