//! Validation of the map fields for migration-tool projects (see `tools.rs`): command argv
//! and their placeholders, and how a step is undone. Called from `load.rs`.

use std::collections::BTreeMap;

use semver::Version;
use toml::Spanned;

use super::load::{repo_relative, unknown_placeholders, Problems};
use super::model::{Era, Mode, Release};
use super::schema::RawMigration;
use super::tools::{Down, COMMAND_PLACEHOLDERS};

pub(super) const COMMAND_HINT: &str = "an argv like [\"npx\", \"mikro-orm\", \"migration:up\", \"--only\", \"{name}\"]; placeholders: {name} {file} {stem} (secrets go in the era's env)";

/// What is wrong with a command argv, if anything.
pub(super) fn command_problem(argv: &[String]) -> Option<String> {
    if argv.is_empty() || argv[0].trim().is_empty() {
        return Some("is an empty argv".into());
    }
    let unknown: Vec<String> = argv
        .iter()
        .flat_map(|a| unknown_placeholders(a, COMMAND_PLACEHOLDERS))
        .collect();
    if unknown.is_empty() {
        return None;
    }
    let secret = unknown
        .iter()
        .any(|u| super::load::ENV_PLACEHOLDERS.contains(&u.as_str()));
    Some(if secret {
        format!("uses {unknown:?}: connection details and secrets never go into argv (other users of the machine can read it); pass them through the era's env")
    } else {
        format!("uses unknown placeholder(s) {unknown:?}")
    })
}

/// A `run = "command"` mode: its own argv, or a `command` in every era it may run in.
pub(super) fn check_command_mode(
    sink: &mut Problems,
    id: &Spanned<String>,
    command: &Option<Spanned<Vec<String>>>,
    export: &Option<String>,
    shim: &Option<Spanned<String>>,
    eras_at: &[Option<&Era>],
) {
    let here = format!("migration {:?}", id.get_ref());
    if export.is_some() || shim.is_some() {
        sink.at(
            id,
            format!("{here}: `export`/`shim` only apply to run = \"export\""),
            "remove them: a command step runs its command",
        );
    }
    match command {
        Some(argv) => {
            if let Some(problem) = command_problem(argv.get_ref()) {
                sink.at(argv, format!("{here}: `command` {problem}"), COMMAND_HINT);
            }
        }
        None => {
            for era in eras_at.iter().flatten() {
                if era.command.is_none() {
                    sink.at(
                        id,
                        format!(
                            "{here}: run = \"command\" needs a `command`, and era {:?} declares none",
                            era.name
                        ),
                        "add command = [...] to the migration, or to the era",
                    );
                }
            }
        }
    }
}

/// The migration's own `down` or `down_script` (an era's `down` applies at rollback time to
/// its command steps without one).
pub(super) fn build_down(
    sink: &mut Problems,
    m: &RawMigration,
    base_eras: &[Option<&Era>],
    modes: &[(Version, Mode)],
    eras: &BTreeMap<String, Era>,
    releases: &[Release],
) -> Option<Down> {
    let here = format!("migration {:?}", m.id.get_ref());
    match (&m.down, &m.down_script) {
        (Some(argv), Some(_)) => {
            sink.at(
                argv,
                format!("{here}: both `down` and `down_script` are set"),
                "keep one way to undo it",
            );
            None
        }
        (Some(argv), None) => {
            if let Some(problem) = command_problem(argv.get_ref()) {
                sink.at(argv, format!("{here}: `down` {problem}"), COMMAND_HINT);
            }
            Some(Down::Command(argv.get_ref().clone()))
        }
        (None, Some(script)) => {
            if !repo_relative(script.get_ref()) {
                sink.at(
                    script,
                    format!(
                        "{here}: down_script {:?} is not a path inside the repository",
                        script.get_ref()
                    ),
                    "give the script's path from the repository root",
                );
            }
            // It runs with the era's `run`, at every release the step may run at.
            let mut at: Vec<Option<&Era>> = base_eras.to_vec();
            at.extend(
                modes
                    .iter()
                    .map(|(from, _)| super::load::era_for(eras, releases, Some(from))),
            );
            for era in at.iter().flatten() {
                if era.run.is_empty() {
                    sink.at(
                        script,
                        format!("{here}: down_script needs the era's `run`, and era {:?} has none", era.name),
                        "give the era a run = [..., \"{script}\"], or undo it with a `down` command",
                    );
                }
            }
            Some(Down::Script(script.get_ref().clone()))
        }
        (None, None) => None,
    }
}
