//! Reading a release map: the embedded default or a file, parsed, validated, resolved.
//!
//! Validation collects every problem it finds (not just the first), each with the file, line
//! and column it comes from and a hint at the fix, so a map author fixes them in one pass.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ops::Range;
use std::path::Path;

use semver::Version;
use toml::Spanned;

use super::model::*;
use super::schema::{self, RawCheck, RawMap, RawMigration, RawMode, SCHEMA_VERSION};
use crate::error::{Error, Location, MapProblem, Result};

#[path = "lifecycle.rs"]
mod lifecycle;

/// The default map (Novu), compiled into the binary so upstep needs no files beside it.
pub const EMBEDDED_MAP: &str = include_str!("../../release-map.toml");
pub const EMBEDDED_NAME: &str = "release-map.toml (embedded)";

/// Placeholders an era's `env` values may use; a variable whose placeholder has no value for
/// a run is left unset.
pub const ENV_PLACEHOLDERS: &[&str] = &[
    "mongo_uri",
    "redis_host",
    "redis_port",
    "redis_password",
    "redis_db",
    "redis_tls",
    "encryption_key",
];

/// Load `--map FILE`, or the embedded default when `path` is None.
pub fn load(path: Option<&Path>) -> Result<ReleaseMap> {
    match path {
        None => parse_map(EMBEDDED_MAP, EMBEDDED_NAME),
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|source| Error::MapRead {
                path: path.to_path_buf(),
                source,
            })?;
            parse_map(&text, &path.display().to_string())
        }
    }
}

/// Parse and validate a map's text. `name` is used in messages.
pub fn parse_map(text: &str, name: &str) -> Result<ReleaseMap> {
    let mut sink = Problems::new(text, name);
    let raw: RawMap = match toml::from_str(text) {
        Ok(raw) => raw,
        Err(err) => {
            let message = err.message().to_string();
            let hint = if message.contains("unknown field") {
                "remove or rename the field; docs/release-map.md lists every field"
            } else if message.contains("missing field") {
                "add the field; docs/release-map.md says what it means"
            } else {
                "fix the TOML syntax at this position"
            };
            sink.push(err.span(), message, hint);
            return Err(sink.into_error());
        }
    };
    let map = build(raw, &mut sink);
    match map {
        Some(map) if sink.problems.is_empty() => Ok(map),
        _ => Err(sink.into_error()),
    }
}

pub(super) struct Problems<'a> {
    text: &'a str,
    name: &'a str,
    problems: Vec<MapProblem>,
}

impl<'a> Problems<'a> {
    fn new(text: &'a str, name: &'a str) -> Self {
        Problems {
            text,
            name,
            problems: Vec::new(),
        }
    }

    fn location(&self, offset: usize) -> Location {
        let before = &self.text[..offset.min(self.text.len())];
        let line = before.matches('\n').count() + 1;
        let column = before
            .rfind('\n')
            .map_or(before.len(), |nl| before.len() - nl - 1)
            + 1;
        Location {
            file: self.name.to_string(),
            line,
            column,
        }
    }

    pub(super) fn push(
        &mut self,
        span: Option<Range<usize>>,
        message: impl Into<String>,
        hint: &str,
    ) {
        let location = span.map(|s| self.location(s.start));
        self.problems.push(MapProblem {
            location,
            message: message.into(),
            hint: hint.to_string(),
        });
    }

    pub(super) fn at<T>(&mut self, spanned: &Spanned<T>, message: impl Into<String>, hint: &str) {
        self.push(Some(spanned.span()), message, hint);
    }

    fn into_error(self) -> Error {
        Error::MapInvalid {
            name: self.name.to_string(),
            problems: self.problems,
        }
    }
}

/// A version as written in a map: full semver, no `v`.
fn map_version(sink: &mut Problems, spanned: &Spanned<String>, what: &str) -> Option<Version> {
    let text = spanned.get_ref();
    match Version::parse(text) {
        Ok(v) => Some(v),
        Err(err) => {
            let hint = if text.starts_with('v') {
                "write versions without the `v` (the tag keeps it): e.g. \"0.18.0\""
            } else {
                "write a full semantic version: MAJOR.MINOR.PATCH, e.g. \"0.18.0\""
            };
            sink.at(spanned, format!("malformed {what} {text:?}: {err}"), hint);
            None
        }
    }
}

fn build(raw: RawMap, sink: &mut Problems) -> Option<ReleaseMap> {
    if *raw.schema.get_ref() != SCHEMA_VERSION {
        sink.at(
            &raw.schema,
            format!(
                "schema {} is not supported (this upstep reads schema {SCHEMA_VERSION})",
                raw.schema.get_ref()
            ),
            "write the map for schema 1, or use the upstep version made for this schema",
        );
        return None;
    }

    let eras = build_eras(&raw, sink);
    let releases = build_releases(&raw, &eras, sink);
    let migrations = build_migrations(&raw, &eras, &releases, sink);

    let project = RawProjectView(&raw.project).into_project();
    let map = ReleaseMap {
        source: sink.name.to_string(),
        project,
        eras,
        releases,
        migrations,
    };
    if sink.problems.is_empty() {
        check_ordering(&map, &raw.migrations, sink);
    }
    Some(map)
}

struct RawProjectView<'a>(&'a schema::RawProject);

impl RawProjectView<'_> {
    fn into_project(self) -> Project {
        let p = self.0;
        Project {
            name: p.name.clone(),
            repository: p.repository.clone(),
            migrations_dir: p.migrations_dir.trim_end_matches('/').to_string(),
            script_suffixes: p.script_suffixes.clone(),
            exclude_suffixes: p.exclude_suffixes.clone(),
            ignore_tags: p.ignore_tags.clone(),
            mainline: p.mainline.clone(),
            quiet_secs: p.quiet_secs.unwrap_or(10),
            disk_per_tag_mb: p.disk_per_tag_mb.unwrap_or(0),
            env_checks: p.env_checks.clone(),
            encryption_key: p.encryption_key.clone(),
        }
    }
}

pub(super) fn unknown_placeholders(value: &str, allowed: &[&str]) -> Vec<String> {
    let mut unknown = Vec::new();
    let mut rest = value;
    while let Some(open) = rest.find('{') {
        let after = &rest[open + 1..];
        let Some(close) = after.find('}') else { break };
        let name = &after[..close];
        if !allowed.contains(&name) {
            unknown.push(name.to_string());
        }
        rest = &after[close + 1..];
    }
    unknown
}

fn build_eras(raw: &RawMap, sink: &mut Problems) -> BTreeMap<String, Era> {
    let mut eras = BTreeMap::new();
    for (name, era) in &raw.eras {
        // Eras are tables keyed by name, which carry no span: name them in the message.
        let here = format!("era {name:?}");
        let run_needed = !era.run.is_empty() || era.command.is_none();
        if run_needed && !era.run.iter().any(|a| a.contains("{script}")) {
            sink.push(
                None,
                format!("{here}: `run` must be a non-empty argv containing {{script}}"),
                "e.g. run = [\"node\", \"{script}\"] (an era whose migrations all run a `command` may leave `run` out)",
            );
        }
        for (what, argv) in [("command", &era.command), ("down", &era.down)] {
            if let Some(argv) = argv {
                if let Some(problem) = super::load_tools::command_problem(argv) {
                    sink.push(
                        None,
                        format!("{here}: `{what}` {problem}"),
                        super::load_tools::COMMAND_HINT,
                    );
                }
            }
        }
        for (var, value) in &era.env {
            let unknown = unknown_placeholders(value, ENV_PLACEHOLDERS);
            if !unknown.is_empty() {
                sink.push(
                    None,
                    format!("{here}: env {var} uses unknown placeholders {unknown:?}"),
                    "allowed: {mongo_uri} {redis_host} {redis_port} {redis_password} {redis_db} {redis_tls} {encryption_key}",
                );
            }
        }
        if era.setup.iter().any(|cmd| cmd.is_empty()) {
            sink.push(
                None,
                format!("{here}: a setup command is an empty argv"),
                "each setup entry is a list like [\"pnpm\", \"install\"]",
            );
        }
        for (profile_name, profile) in &era.setup_profiles {
            if profile.setup.is_empty() || profile.setup.iter().any(|cmd| cmd.is_empty()) {
                sink.push(
                    None,
                    format!("{here}: setup profile {profile_name:?} needs non-empty commands"),
                    "each setup entry is a list like [\"pnpm\", \"install\"]",
                );
            }
        }
        for (shim_name, shim) in &era.shims {
            for needed in ["{module}", "{export}"] {
                if !shim.template.contains(needed) {
                    sink.push(
                        None,
                        format!("{here}: shim {shim_name:?} template lacks {needed}"),
                        "a shim template must import {module} and call {export}",
                    );
                }
            }
        }
        eras.insert(
            name.clone(),
            Era {
                name: name.clone(),
                description: era.description.clone(),
                cwd: era.cwd.clone(),
                run: era.run.clone(),
                command: era.command.clone(),
                down: era.down.clone(),
                env: era.env.clone(),
                env_file: era.env_file.clone(),
                env_file_required: era.env_file_required,
                setup: era.setup.clone(),
                setup_env: era.setup_env.clone(),
                keep_build_outputs: era.keep_build_outputs,
                done_lines: era.done_lines.clone(),
                shims: era
                    .shims
                    .iter()
                    .map(|(k, s)| {
                        (
                            k.clone(),
                            Shim {
                                description: s.description.clone(),
                                template: s.template.clone(),
                            },
                        )
                    })
                    .collect(),
                setup_profiles: era
                    .setup_profiles
                    .iter()
                    .map(|(k, p)| {
                        (
                            k.clone(),
                            SetupProfile {
                                description: p.description.clone(),
                                setup: p.setup.clone(),
                            },
                        )
                    })
                    .collect(),
            },
        );
    }
    eras
}

/// A path inside the repository: relative, without `..`.
pub(super) fn repo_relative(path: &str) -> bool {
    let p = std::path::Path::new(path);
    !path.is_empty()
        && p.is_relative()
        && p.components()
            .all(|c| matches!(c, std::path::Component::Normal(_)))
}

fn build_downloads(
    sink: &mut Problems,
    version: &Version,
    era: Option<&Era>,
    raw: &[schema::RawDownload],
) -> Vec<Download> {
    let mut out = Vec::new();
    for d in raw {
        let download = Download {
            dependency: d.dependency.clone(),
            url: d.url.get_ref().clone(),
            via: d.via.clone(),
            skipped_by: d.skipped_by.clone(),
        };
        if !download.url.starts_with("https://") || download.host().is_none() {
            sink.at(
                &d.url,
                format!("release {version}: download url {:?} is not an https URL", download.url),
                "write the URL the lockfile fetches it from, e.g. \"https://github.com/o/r/archive/x.tar.gz\"",
            );
        }
        if let Some(era) = era {
            for profile in &d.skipped_by {
                if !era.setup_profiles.contains_key(profile) {
                    sink.at(
                        &d.url,
                        format!(
                            "release {version}: download {:?} names setup profile {profile:?}, which era {:?} does not declare",
                            d.dependency, era.name
                        ),
                        "declare it under [eras.<era>.setup_profiles.<name>] or fix the name",
                    );
                }
            }
        }
        out.push(download);
    }
    out
}

fn build_releases(raw: &RawMap, eras: &BTreeMap<String, Era>, sink: &mut Problems) -> Vec<Release> {
    let mut releases: Vec<Release> = Vec::new();
    let mut seen: HashMap<Version, ()> = HashMap::new();
    for r in &raw.releases {
        let Some(version) = map_version(sink, &r.version, "release version") else {
            continue;
        };
        if seen.insert(version.clone(), ()).is_some() {
            sink.at(
                &r.version,
                format!("duplicate release {version}"),
                "list each release once",
            );
            continue;
        }
        if !eras.contains_key(r.era.get_ref()) {
            sink.at(
                &r.era,
                format!("release {version} names unknown era {:?}", r.era.get_ref()),
                "define it under [eras.<name>] or fix the name",
            );
        }
        if let Err(err) = Version::parse(r.node.get_ref()) {
            sink.at(
                &r.node,
                format!("node version {:?} is not exact: {err}", r.node.get_ref()),
                "write the exact version from .nvmrc, e.g. \"16.15.1\"; ranges go in node_engines",
            );
        }
        if let Some(pnpm) = &r.pnpm {
            if let Err(err) = Version::parse(pnpm.get_ref()) {
                sink.at(
                    pnpm,
                    format!("pnpm version {:?} is not exact: {err}", pnpm.get_ref()),
                    "write the exact version, e.g. \"8.9.0\"",
                );
            }
        }
        if let Some(file) = &r.repair_lockfile {
            if !repo_relative(file.get_ref()) {
                sink.at(
                    file,
                    format!(
                        "release {version}: repair_lockfile {:?} is not a path inside the repository",
                        file.get_ref()
                    ),
                    "give the lockfile's path from the repository root, e.g. \"pnpm-lock.yaml\"",
                );
            }
        }
        let downloads = build_downloads(sink, &version, eras.get(r.era.get_ref()), &r.downloads);
        let stand_ins =
            super::load_stand_ins::build_stand_ins(sink, &version, &downloads, &r.stand_ins);
        releases.push(Release {
            stand_ins,
            repair_lockfile: r.repair_lockfile.as_ref().map(|f| f.get_ref().clone()),
            downloads,
            tag: r.tag.clone().unwrap_or_else(|| format!("v{version}")),
            version,
            date: r.date.clone(),
            era: r.era.get_ref().clone(),
            node: r.node.get_ref().clone(),
            node_engines: r.node_engines.as_ref().map(|s| s.get_ref().clone()),
            pnpm: r.pnpm.as_ref().map(|s| s.get_ref().clone()),
            verified: r.verified,
            notes: r.notes.clone(),
        });
    }
    releases.sort_by(|a, b| a.version.cmp(&b.version));
    releases
}

/// Resolve a reference to a release, reporting an unknown or malformed one.
fn release_ref(
    sink: &mut Problems,
    releases: &[Release],
    spanned: &Spanned<String>,
    what: &str,
) -> Option<Version> {
    let version = map_version(sink, spanned, what)?;
    if releases.iter().any(|r| r.version == version) {
        Some(version)
    } else {
        sink.at(
            spanned,
            format!("{what} {version} is not a release of this map"),
            "add a [[releases]] entry for it, or name a listed release",
        );
        None
    }
}

pub(super) fn era_for<'a>(
    eras: &'a BTreeMap<String, Era>,
    releases: &[Release],
    version: Option<&Version>,
) -> Option<&'a Era> {
    let release = match version {
        Some(v) => releases.iter().find(|r| &r.version == v)?,
        None => releases.last()?,
    };
    eras.get(&release.era)
}

struct ModeFields<'a> {
    run: schema::RunKind,
    export: &'a Option<String>,
    shim: &'a Option<Spanned<String>>,
    command: &'a Option<Spanned<Vec<String>>>,
    exits: schema::Exits,
    done_line: &'a Option<String>,
    quiet_secs: Option<u64>,
    prints_nothing: bool,
    setup_profile: &'a Option<Spanned<String>>,
}

impl<'a> From<&'a RawMigration> for ModeFields<'a> {
    fn from(m: &'a RawMigration) -> Self {
        ModeFields {
            run: m.run,
            export: &m.export,
            shim: &m.shim,
            command: &m.command,
            exits: m.exits,
            done_line: &m.done_line,
            quiet_secs: m.quiet_secs,
            prints_nothing: m.prints_nothing,
            setup_profile: &m.setup_profile,
        }
    }
}

impl<'a> From<&'a RawMode> for ModeFields<'a> {
    fn from(m: &'a RawMode) -> Self {
        ModeFields {
            run: m.run,
            export: &m.export,
            shim: &m.shim,
            command: &m.command,
            exits: m.exits,
            done_line: &m.done_line,
            quiet_secs: m.quiet_secs,
            prints_nothing: m.prints_nothing,
            setup_profile: &m.setup_profile,
        }
    }
}

/// Check one mode's fields and the shim it needs at each release it may run at.
fn build_mode(
    sink: &mut Problems,
    id: &Spanned<String>,
    fields: ModeFields,
    eras_at: &[Option<&Era>],
) -> Mode {
    let here = format!("migration {:?}", id.get_ref());
    match fields.run {
        RunKind::Export => {
            if fields.export.is_none() {
                sink.at(
                    id,
                    format!("{here}: run = \"export\" needs `export` (the function to call)"),
                    "add export = \"functionName\"",
                );
            }
            match fields.shim {
                None => sink.at(
                    id,
                    format!("{here}: run = \"export\" needs `shim` (how to call it)"),
                    "add shim = \"<name of a shim of the release's era>\"",
                ),
                Some(shim) => {
                    for era in eras_at.iter().flatten() {
                        if !era.shims.contains_key(shim.get_ref()) {
                            sink.at(
                                shim,
                                format!(
                                    "{here}: shim {:?} is not declared in era {:?}",
                                    shim.get_ref(),
                                    era.name
                                ),
                                "declare it under [eras.<era>.shims.<name>] or fix the name",
                            );
                        }
                    }
                }
            }
        }
        RunKind::File => {
            if fields.export.is_some() || fields.shim.is_some() {
                sink.at(
                    id,
                    format!("{here}: `export`/`shim` only apply to run = \"export\""),
                    "remove them, or set run = \"export\"",
                );
            }
        }
        RunKind::Command => super::load_tools::check_command_mode(
            sink,
            id,
            fields.command,
            fields.export,
            fields.shim,
            eras_at,
        ),
    }
    if fields.run != RunKind::Command {
        if let Some(command) = fields.command {
            sink.at(
                command,
                format!("{here}: `command` only applies to run = \"command\""),
                "remove it, or set run = \"command\"",
            );
        }
        for era in eras_at.iter().flatten() {
            if era.run.is_empty() {
                sink.at(
                    id,
                    format!("{here}: era {:?} has no `run` for script files", era.name),
                    "give the era a run = [..., \"{script}\"], or run this migration as a command",
                );
            }
        }
    }
    if fields.prints_nothing && fields.done_line.is_some() {
        sink.at(
            id,
            format!("{here}: `done_line` with `prints_nothing`: a script that prints nothing cannot print its done line"),
            "remove one of them",
        );
    }
    if let Some(profile) = fields.setup_profile {
        for era in eras_at.iter().flatten() {
            if !era.setup_profiles.contains_key(profile.get_ref()) {
                sink.at(
                    profile,
                    format!(
                        "{here}: setup profile {:?} is not declared in era {:?}",
                        profile.get_ref(),
                        era.name
                    ),
                    "declare it under [eras.<era>.setup_profiles.<name>] or fix the name",
                );
            }
        }
    }
    Mode {
        run: fields.run,
        export: fields.export.clone(),
        shim: fields.shim.as_ref().map(|s| s.get_ref().clone()),
        command: fields.command.as_ref().map(|c| c.get_ref().clone()),
        exits: fields.exits,
        done_line: fields.done_line.clone(),
        quiet_secs: fields.quiet_secs,
        prints_nothing: fields.prints_nothing,
        setup_profile: fields.setup_profile.as_ref().map(|s| s.get_ref().clone()),
    }
}

fn build_migrations(
    raw: &RawMap,
    eras: &BTreeMap<String, Era>,
    releases: &[Release],
    sink: &mut Problems,
) -> Vec<Migration> {
    let mut migrations = Vec::new();
    let mut ids: HashSet<String> = HashSet::new();
    for m in &raw.migrations {
        let id = m.id.get_ref().clone();
        let here = format!("migration {id:?}");
        if id.is_empty() || id.contains(char::is_whitespace) {
            sink.at(
                &m.id,
                format!("{here}: an id must be a non-empty word"),
                "use kebab-case, e.g. \"expire-at\"",
            );
        }
        if !ids.insert(id.clone()) {
            sink.at(
                &m.id,
                format!("duplicate migration id {id:?}"),
                "give each migration a unique id",
            );
        }

        let introduced = match (&m.introduced_in, &m.unreleased_ref) {
            (Some(v), None) => {
                release_ref(sink, releases, v, "introduced_in").map(Introduced::Release)
            }
            (None, Some(r)) if !r.get_ref().trim().is_empty() => Some(Introduced::Unreleased {
                git_ref: r.get_ref().clone(),
            }),
            (None, Some(r)) => {
                sink.at(
                    r,
                    format!("{here}: unreleased_ref is empty"),
                    "name the branch or commit it runs at",
                );
                None
            }
            (Some(v), Some(_)) => {
                sink.at(
                    v,
                    format!("{here}: both introduced_in and unreleased_ref are set"),
                    "keep introduced_in once a release ships the script",
                );
                None
            }
            (None, None) => {
                sink.at(
                    &m.id,
                    format!("{here}: no release introduces this script"),
                    "add introduced_in = \"<version>\", or unreleased_ref = \"<branch>\" for a script no release ships yet",
                );
                None
            }
        };
        let introduced_version = match &introduced {
            Some(Introduced::Release(v)) => Some(v.clone()),
            _ => None,
        };

        let run_at = m.run_at.as_ref().and_then(|r| {
            let v = release_ref(sink, releases, r, "run_at")?;
            if introduced_version.as_ref().is_some_and(|i| &v <= i) {
                sink.at(
                    r,
                    format!("{here}: run_at {v} must be newer than introduced_in"),
                    "remove run_at, or name a later release",
                );
            }
            Some(v)
        });

        // Later modes, validated for order and range.
        let mut modes: Vec<(Version, Mode)> = Vec::new();
        let mut mode_starts: Vec<Option<Version>> = Vec::new();
        for mode in &m.modes {
            let Some(from) = release_ref(sink, releases, &mode.from, "modes.from") else {
                continue;
            };
            if introduced_version.as_ref().is_some_and(|i| &from <= i) {
                sink.at(
                    &mode.from,
                    format!("{here}: a mode must start after introduced_in"),
                    "the base fields describe the first release; modes describe later ones",
                );
            }
            if modes.last().is_some_and(|(prev, _)| prev >= &from) {
                sink.at(
                    &mode.from,
                    format!("{here}: modes must be in ascending order of `from`"),
                    "sort the [[migrations.modes]] entries",
                );
            }
            mode_starts.push(Some(from.clone()));
            let run_versions: Vec<Option<&Era>> = vec![era_for(eras, releases, Some(&from))];
            let built = build_mode(sink, &m.id, ModeFields::from(mode), &run_versions);
            modes.push((from, built));
        }

        // The base mode may run at the introducing release, or at run_at when no mode covers it.
        let mut base_eras = vec![era_for(eras, releases, introduced_version.as_ref())];
        if let Some(at) = &run_at {
            if !modes.iter().any(|(from, _)| from <= at) {
                base_eras.push(era_for(eras, releases, Some(at)));
            }
        }
        let base_mode = build_mode(sink, &m.id, ModeFields::from(m), &base_eras);

        let fingerprint = build_fingerprint(sink, m);
        let prints_nothing =
            base_mode.prints_nothing || modes.iter().any(|(_, mode)| mode.prints_nothing);
        if prints_nothing && matches!(fingerprint, Fingerprint::Unknown { .. }) {
            sink.at(
                &m.id,
                format!("{here}: `prints_nothing` needs a data check: without one nothing could tell when the script has finished"),
                "add [[migrations.pending]] checks, or remove prints_nothing",
            );
        }
        let down = super::load_tools::build_down(sink, m, &base_eras, &modes, eras, releases);
        let lifecycle = lifecycle::build_lifecycle(
            sink,
            releases,
            m,
            lifecycle::Resolved {
                introduced: introduced_version.as_ref(),
                unreleased: matches!(introduced, Some(Introduced::Unreleased { .. })),
                run_at: run_at.as_ref(),
                mode_starts: modes.iter().map(|(from, _)| from).collect(),
            },
        );

        migrations.push(Migration {
            name: m
                .name
                .clone()
                .unwrap_or_else(|| super::tools::stem(&m.script)),
            down,
            id,
            title: m.title.clone(),
            introduced: introduced.unwrap_or(Introduced::Unreleased {
                git_ref: String::new(),
            }),
            run_at,
            script: m.script.clone(),
            base_mode,
            modes,
            idempotent: m.idempotent,
            destructive: m.destructive,
            lossy: m.lossy,
            needs: m.needs.clone(),
            after: m.after.iter().map(|a| a.get_ref().clone()).collect(),
            warnings: m.warnings.clone(),
            fingerprint,
            verified: m.verified,
            notes: m.notes.clone(),
            lifecycle,
        });
    }
    migrations
}

fn build_fingerprint(sink: &mut Problems, m: &RawMigration) -> Fingerprint {
    let here = format!("migration {:?}", m.id.get_ref());
    match (&m.no_fingerprint, m.pending.is_empty()) {
        (Some(reason), true) => Fingerprint::Unknown {
            reason: reason.clone(),
        },
        (Some(_), false) => {
            sink.at(
                &m.id,
                format!("{here}: both `pending` checks and `no_fingerprint` are set"),
                "keep one: the checks, or the reason none is reliable",
            );
            Fingerprint::Unknown {
                reason: String::new(),
            }
        }
        (None, true) => {
            sink.at(
                &m.id,
                format!("{here}: no fingerprint"),
                "add [[migrations.pending]] checks, or no_fingerprint = \"<why no reliable check exists>\"",
            );
            Fingerprint::Unknown {
                reason: String::new(),
            }
        }
        (None, false) => Fingerprint::Checks(
            m.pending
                .iter()
                .filter_map(|c| build_check(sink, &here, c, m))
                .collect(),
        ),
    }
}

/// TOML value -> BSON through MongoDB Extended JSON (`{"$oid" = ...}`, `{"$regex" = ...}`).
fn to_bson(value: &toml::Value) -> std::result::Result<bson::Bson, String> {
    if contains_datetime(value) {
        return Err(
            "TOML dates are not allowed: write {\"$date\" = \"2024-01-01T00:00:00Z\"}".into(),
        );
    }
    let json = serde_json::to_value(value).map_err(|e| e.to_string())?;
    bson::Bson::try_from(json).map_err(|e| format!("not valid Extended JSON: {e}"))
}

fn contains_datetime(value: &toml::Value) -> bool {
    match value {
        toml::Value::Datetime(_) => true,
        toml::Value::Array(items) => items.iter().any(contains_datetime),
        toml::Value::Table(t) => t.values().any(contains_datetime),
        _ => false,
    }
}

fn build_check(sink: &mut Problems, here: &str, c: &RawCheck, m: &RawMigration) -> Option<Check> {
    let collection = c.collection.get_ref().clone();
    if collection.is_empty() || collection.starts_with("system.") || collection.contains('$') {
        sink.at(
            &c.collection,
            format!("{here}: invalid collection name {collection:?}"),
            "name the MongoDB collection, e.g. \"messages\"",
        );
    }
    let kinds = usize::from(c.filter.is_some())
        + usize::from(c.pipeline.is_some())
        + usize::from(c.absent.is_some())
        + usize::from(c.journal.is_some());
    if kinds != 1 {
        sink.at(
            &c.collection,
            format!("{here}: a check needs exactly one of filter, pipeline, absent, journal"),
            "write filter = {...}, pipeline = [...], absent = true, or journal = \"mikro-orm\"",
        );
        return None;
    }
    let kind = if let Some(tool) = c.journal {
        let name = m
            .name
            .clone()
            .unwrap_or_else(|| super::tools::stem(&m.script));
        CheckKind::ToolJournal {
            tool,
            key: tool.key_for(&name, &m.script),
        }
    } else if let Some(filter) = &c.filter {
        match to_bson(filter.get_ref()) {
            Ok(bson::Bson::Document(doc)) => CheckKind::Filter(doc),
            Ok(_) => {
                sink.at(
                    filter,
                    format!("{here}: a filter must be a table"),
                    "write filter = { field = value }",
                );
                return None;
            }
            Err(err) => {
                sink.at(filter, format!("{here}: malformed filter: {err}"), "values follow MongoDB Extended JSON, e.g. { \"$regex\" = \"^a\", \"$options\" = \"i\" }");
                return None;
            }
        }
    } else if let Some(pipeline) = &c.pipeline {
        let mut stages = Vec::new();
        for stage in pipeline.get_ref() {
            match to_bson(stage) {
                Ok(bson::Bson::Document(doc))
                    if doc.len() == 1 && doc.keys().all(|k| k.starts_with('$')) =>
                {
                    stages.push(doc)
                }
                Ok(_) => {
                    sink.at(
                        pipeline,
                        format!("{here}: each pipeline stage must be a table with one $-operator"),
                        "e.g. { \"$match\" = { ... } }",
                    );
                    return None;
                }
                Err(err) => {
                    sink.at(
                        pipeline,
                        format!("{here}: malformed pipeline stage: {err}"),
                        "values follow MongoDB Extended JSON",
                    );
                    return None;
                }
            }
        }
        if stages.is_empty() {
            sink.at(
                pipeline,
                format!("{here}: empty pipeline"),
                "an empty pipeline returns every document: add a $match",
            );
            return None;
        }
        CheckKind::Pipeline(stages)
    } else if c.absent == Some(true) {
        CheckKind::Absent
    } else {
        sink.at(
            &c.collection,
            format!("{here}: absent = false checks nothing"),
            "write absent = true, or use a filter",
        );
        return None;
    };
    Some(Check {
        collection,
        description: c.description.clone(),
        kind,
    })
}

/// `after` must name known migrations, form no cycle, and never make a step wait for one
/// that runs at a later release.
fn check_ordering(map: &ReleaseMap, raw: &[RawMigration], sink: &mut Problems) {
    let index: HashMap<&str, usize> = map
        .migrations
        .iter()
        .enumerate()
        .map(|(i, m)| (m.id.as_str(), i))
        .collect();
    for (m, r) in map.migrations.iter().zip(raw) {
        for dep in &r.after {
            if !index.contains_key(dep.get_ref().as_str()) {
                sink.at(
                    dep,
                    format!(
                        "migration {:?} runs after unknown migration {:?}",
                        m.id,
                        dep.get_ref()
                    ),
                    "name an existing migration id",
                );
            } else if dep.get_ref() == &m.id {
                sink.at(
                    dep,
                    format!("migration {:?} runs after itself", m.id),
                    "remove it from `after`",
                );
            }
        }
    }
    if !sink.problems.is_empty() {
        return;
    }
    if let Some(cycle) = find_cycle(map, &index) {
        let i = cycle.first().copied().unwrap_or(0);
        let names: Vec<&str> = cycle
            .iter()
            .map(|i| map.migrations[*i].id.as_str())
            .collect();
        sink.at(
            &raw[i].id,
            format!("ordering cycle: {} -> {}", names.join(" -> "), names[0]),
            "remove one `after` entry of the cycle",
        );
        return;
    }
    // Every plan the map can produce must honour the constraints.
    let mut points: Vec<Version> = vec![Version::new(0, 0, 0)];
    points.extend(map.releases.iter().map(|r| r.version.clone()));
    for (a, from) in points.iter().enumerate() {
        for to in &points[a + 1..] {
            for include_unreleased in [false, true] {
                let req = super::order::PlanRequest {
                    from: from.clone(),
                    to: to.clone(),
                    include_unreleased,
                };
                if let Err(v) = super::order::order_steps(map, &req) {
                    let at = index[v.migration.as_str()];
                    sink.at(
                        &raw[at].id,
                        format!("migration {:?} must run after {:?}, but would run at an earlier release", v.migration, v.after),
                        "move the dependency's introduced_in/run_at earlier, or drop the `after` entry",
                    );
                    return;
                }
            }
        }
    }
}

fn find_cycle(map: &ReleaseMap, index: &HashMap<&str, usize>) -> Option<Vec<usize>> {
    // 0 = unvisited, 1 = on the stack, 2 = done.
    fn visit(
        i: usize,
        map: &ReleaseMap,
        index: &HashMap<&str, usize>,
        state: &mut [u8],
        stack: &mut Vec<usize>,
    ) -> Option<Vec<usize>> {
        state[i] = 1;
        stack.push(i);
        for dep in &map.migrations[i].after {
            let j = index[dep.as_str()];
            if state[j] == 1 {
                let start = stack.iter().position(|&k| k == j).unwrap_or(0);
                return Some(stack[start..].to_vec());
            }
            if state[j] == 0 {
                if let Some(c) = visit(j, map, index, state, stack) {
                    return Some(c);
                }
            }
        }
        stack.pop();
        state[i] = 2;
        None
    }
    let mut state = vec![0u8; map.migrations.len()];
    for i in 0..map.migrations.len() {
        if state[i] == 0 {
            let mut stack = Vec::new();
            if let Some(c) = visit(i, map, index, &mut state, &mut stack) {
                return Some(c);
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = r#"schema = 1
[project]
name = "demo"
migrations_dir = "migrations"
[eras.plain]
cwd = "."
run = ["node", "{script}"]
env = { DB = "{mongo_uri}" }
[eras.plain.shims.lib]
template = "require('{module}').{export}()"
[[releases]]
version = "1.0.0"
era = "plain"
node = "20.8.1"
[[releases]]
version = "1.1.0"
era = "plain"
node = "20.8.1"
[[migrations]]
id = "a"
title = "A"
introduced_in = "1.1.0"
script = "migrations/a.js"
run = "file"
exits = "yes"
idempotent = "yes"
[[migrations.pending]]
collection = "things"
filter = { done = { "$exists" = false }, _id = { "$oid" = "507f1f77bcf86cd799439011" } }
"#;

    /// Problems of `text`, as "line: message" strings.
    fn problems(text: &str) -> Vec<(Option<usize>, String, String)> {
        match parse_map(text, "test.toml") {
            Ok(_) => Vec::new(),
            Err(Error::MapInvalid { problems, .. }) => problems
                .into_iter()
                .map(|p| (p.location.map(|l| l.line), p.message, p.hint))
                .collect(),
            Err(other) => panic!("unexpected error kind: {other}"),
        }
    }

    fn line_of(text: &str, needle: &str) -> usize {
        text.lines().position(|l| l.contains(needle)).expect(needle) + 1
    }

    fn assert_problem(text: &str, needle_line: &str, message_part: &str) {
        let found = problems(text);
        let line = line_of(text, needle_line);
        assert!(
            found.iter().any(|(l, m, hint)| *l == Some(line)
                && m.contains(message_part)
                && !hint.is_empty()),
            "expected a problem at line {line} containing {message_part:?}, got {found:#?}"
        );
    }

    #[test]
    fn the_default_target_is_the_newest_verified_release() {
        // Every release of the embedded map is verified (the real v2.0.0 -> v3.15.0 run passed).
        let map = load(None).unwrap();
        let newest = map.newest_release().unwrap();
        assert!(newest.verified, "the embedded map's newest release");
        assert_eq!(map.default_target(false).unwrap().version, newest.version);

        // A release not proved yet is never the default target: with v3.15.0 unverified, v3.14.0.
        let at = EMBEDDED_MAP.find("version = \"3.15.0\"").unwrap();
        let verified_at = at + EMBEDDED_MAP[at..].find("\nverified = true").unwrap();
        let text = format!(
            "{}\nverified = false{}",
            &EMBEDDED_MAP[..verified_at],
            &EMBEDDED_MAP[verified_at + "\nverified = true".len()..]
        );
        let map = parse_map(&text, "variant.toml").unwrap();
        let newest = map.newest_release().unwrap();
        assert!(!newest.verified);
        let target = map.default_target(false).unwrap();
        assert!(target.verified && target.version < newest.version);
        assert_eq!(target.version, semver::Version::new(3, 14, 0));
        // Asking for unreleased scripts is asking to go past every release.
        assert_eq!(map.default_target(true).unwrap().version, newest.version);
    }

    #[test]
    fn base_map_is_valid_and_converts_extended_json() {
        let map = parse_map(BASE, "test.toml").unwrap();
        let Fingerprint::Checks(checks) = &map.migrations[0].fingerprint else {
            panic!()
        };
        let CheckKind::Filter(filter) = &checks[0].kind else {
            panic!()
        };
        assert!(matches!(filter.get("_id"), Some(bson::Bson::ObjectId(_))));
    }

    #[test]
    fn the_embedded_map_is_valid() {
        let map = load(None).unwrap();
        assert_eq!(map.migrations.len(), 26);
        assert!(map.releases.windows(2).all(|w| w[0].version < w[1].version));
    }

    #[test]
    fn duplicate_ids_are_reported_at_the_second() {
        let text = format!(
            "{BASE}{}",
            BASE.split("[[migrations]]")
                .nth(1)
                .map(|m| format!("[[migrations]]{m}"))
                .unwrap()
        );
        let found = problems(&text);
        let second = text.match_indices("id = \"a\"").nth(1).unwrap().0;
        let line = text[..second].matches('\n').count() + 1;
        assert!(
            found
                .iter()
                .any(|(l, m, _)| *l == Some(line) && m.contains("duplicate migration id")),
            "{found:?}"
        );
    }

    #[test]
    fn unknown_release_references_are_reported() {
        let text = BASE.replace("introduced_in = \"1.1.0\"", "introduced_in = \"1.2.0\"");
        assert_problem(
            &text,
            "introduced_in = \"1.2.0\"",
            "not a release of this map",
        );
        let text = BASE.replace(
            "era = \"plain\"\nnode = \"20.8.1\"\n[[migrations]]",
            "era = \"fancy\"\nnode = \"20.8.1\"\n[[migrations]]",
        );
        assert_problem(&text, "era = \"fancy\"", "unknown era");
    }

    #[test]
    fn a_script_no_release_introduces_is_reported() {
        let text = BASE.replace("introduced_in = \"1.1.0\"\n", "");
        assert_problem(&text, "id = \"a\"", "no release introduces this script");
    }

    #[test]
    fn malformed_versions_are_reported_with_a_hint() {
        let text = BASE.replace("version = \"1.1.0\"", "version = \"v1.1\"");
        let found = problems(&text);
        let line = line_of(&text, "version = \"v1.1\"");
        assert!(
            found.iter().any(|(l, m, h)| *l == Some(line)
                && m.contains("malformed release version")
                && h.contains("without the `v`")),
            "{found:?}"
        );
        let text = BASE.replace(
            "node = \"20.8.1\"\n[[migrations]]",
            "node = \">=20\"\n[[migrations]]",
        );
        assert_problem(&text, "node = \">=20\"", "not exact");
    }

    #[test]
    fn ordering_cycles_are_reported() {
        let second = BASE
            .split("[[migrations]]")
            .nth(1)
            .unwrap()
            .replace("id = \"a\"", "id = \"b\"");
        let text = format!("{BASE}[[migrations]]{second}").replacen(
            "idempotent = \"yes\"\n",
            "idempotent = \"yes\"\nafter = [\"b\"]\n",
            1,
        );
        let text = text.replacen("id = \"b\"\ntitle = \"A\"\nintroduced_in = \"1.1.0\"\nscript = \"migrations/a.js\"\nrun = \"file\"\nexits = \"yes\"\nidempotent = \"yes\"\n", "id = \"b\"\ntitle = \"A\"\nintroduced_in = \"1.1.0\"\nscript = \"migrations/a.js\"\nrun = \"file\"\nexits = \"yes\"\nidempotent = \"yes\"\nafter = [\"a\"]\n", 1);
        let found = problems(&text);
        assert!(
            found
                .iter()
                .any(|(l, m, _)| l.is_some() && m.contains("ordering cycle")),
            "{found:?}"
        );
        let text = BASE.replacen(
            "idempotent = \"yes\"\n",
            "idempotent = \"yes\"\nafter = [\"nope\"]\n",
            1,
        );
        assert_problem(&text, "after = [\"nope\"]", "unknown migration");
    }

    #[test]
    fn an_after_constraint_pointing_at_a_later_release_is_reported() {
        let second = BASE
            .split("[[migrations]]")
            .nth(1)
            .unwrap()
            .replace("id = \"a\"", "id = \"early\"")
            .replace("introduced_in = \"1.1.0\"", "introduced_in = \"1.0.0\"")
            .replacen(
                "idempotent = \"yes\"\n",
                "idempotent = \"yes\"\nafter = [\"a\"]\n",
                1,
            );
        let text = format!("{BASE}[[migrations]]{second}");
        assert_problem(&text, "id = \"early\"", "would run at an earlier release");
    }

    #[test]
    fn malformed_fingerprints_are_reported() {
        let text = BASE.replace("\"507f1f77bcf86cd799439011\"", "\"not-an-oid\"");
        assert_problem(&text, "filter = {", "malformed filter");
        let text = BASE.replace("filter = { done", "absent = true\nfilter = { done");
        assert_problem(
            &text,
            "collection = \"things\"",
            "exactly one of filter, pipeline, absent",
        );
        let text = BASE.replace("filter = { done = { \"$exists\" = false }, _id = { \"$oid\" = \"507f1f77bcf86cd799439011\" } }", "pipeline = [{ \"$match\" = {}, \"$limit\" = 1 }]");
        assert_problem(&text, "pipeline = [", "one $-operator");
        let text = BASE.replace("[[migrations.pending]]\ncollection = \"things\"\nfilter = { done = { \"$exists\" = false }, _id = { \"$oid\" = \"507f1f77bcf86cd799439011\" } }\n", "");
        assert_problem(&text, "id = \"a\"", "no fingerprint");
    }

    #[test]
    fn prints_nothing_needs_a_data_check_and_no_done_line() {
        let with_field = BASE.replacen(
            "idempotent = \"yes\"\n",
            "idempotent = \"yes\"\nprints_nothing = true\n",
            1,
        );
        assert!(
            problems(&with_field).is_empty(),
            "{:#?}",
            problems(&with_field)
        );
        let text = with_field.replacen(
            "prints_nothing = true\n",
            "prints_nothing = true\ndone_line = \"done\"\n",
            1,
        );
        assert_problem(&text, "id = \"a\"", "cannot print its done line");
        let text = with_field.replace("[[migrations.pending]]\ncollection = \"things\"\nfilter = { done = { \"$exists\" = false }, _id = { \"$oid\" = \"507f1f77bcf86cd799439011\" } }\n", "no_fingerprint = \"nothing to look at\"\n");
        assert_problem(&text, "id = \"a\"", "`prints_nothing` needs a data check");
    }

    #[test]
    fn unknown_fields_and_bad_toml_point_at_the_line() {
        let text = BASE.replace("exits = \"yes\"", "exits = \"yes\"\nexit_code = 0");
        assert_problem(&text, "exit_code = 0", "unknown field");
        let text = BASE.replace("title = \"A\"", "title = \"A");
        let found = problems(&text);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].0, Some(line_of(&text, "title = \"A")));
        let text = BASE.replace("schema = 1", "schema = 2");
        assert_problem(&text, "schema = 2", "not supported");
    }

    #[test]
    fn eras_and_modes_are_checked() {
        let text = BASE.replace("run = [\"node\", \"{script}\"]", "run = [\"node\"]");
        assert!(problems(&text)
            .iter()
            .any(|(_, m, _)| m.contains("containing {script}")));
        let text = BASE.replace("{mongo_uri}", "{mongo_url}");
        assert!(problems(&text)
            .iter()
            .any(|(_, m, _)| m.contains("unknown placeholder")));
        let text = BASE.replace(
            "run = \"file\"",
            "run = \"export\"\nexport = \"up\"\nshim = \"nope\"",
        );
        assert_problem(&text, "shim = \"nope\"", "not declared in era");
    }
}
