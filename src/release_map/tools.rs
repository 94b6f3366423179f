//! What a map says about projects that run their migrations through a tool (MikroORM,
//! migrate-mongo, a home-grown runner): command steps and their placeholders, down steps, the
//! tool's own journal as a data check, and the preflight checks only one project needs (so no
//! project's knowledge lives in upstep's code).

use std::path::Path;

use serde::{Deserialize, Serialize};

/// Placeholders a command step's argv may use. Only file and name facts: secrets and
/// connection strings travel in the era's `env`, never in argv.
pub const COMMAND_PLACEHOLDERS: &[&str] = &["name", "file", "stem"];

/// A migration tool's journal, read as the migration's applied state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ToolJournal {
    /// MikroORM (`@mikro-orm/migrations-mongodb`): a document `{name, executed_at}` per
    /// applied migration, `name` being the file name without `.js`/`.ts`.
    MikroOrm,
    /// migrate-mongo: a `changelog` document `{fileName, appliedAt}` per applied migration.
    MigrateMongo,
    /// A home-grown runner: a row `{name, status}`; `succeeded` is applied, `failed` failed.
    StatusRows,
}

impl ToolJournal {
    pub fn as_str(self) -> &'static str {
        match self {
            ToolJournal::MikroOrm => "mikro-orm",
            ToolJournal::MigrateMongo => "migrate-mongo",
            ToolJournal::StatusRows => "status-rows",
        }
    }

    /// The field that names the migration in the tool's documents.
    pub fn key_field(self) -> &'static str {
        match self {
            ToolJournal::MikroOrm | ToolJournal::StatusRows => "name",
            ToolJournal::MigrateMongo => "fileName",
        }
    }

    /// The value the tool records for a migration named `name` whose file is `script`.
    pub fn key_for(self, name: &str, script: &str) -> String {
        match self {
            ToolJournal::MigrateMongo => file_name(script).to_string(),
            ToolJournal::MikroOrm | ToolJournal::StatusRows => name.to_string(),
        }
    }
}

/// `a/b/Migration1.ts` -> `Migration1.ts`.
pub fn file_name(script: &str) -> &str {
    script.rsplit('/').next().unwrap_or(script)
}

/// `a/b/Migration1.ts` -> `Migration1` (the name MikroORM records).
pub fn stem(script: &str) -> String {
    Path::new(file_name(script))
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// How a step is undone (`upstep rollback`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Down {
    /// An argv, placeholders as for command steps.
    Command(Vec<String>),
    /// A script file run with the era's `run`, like a `run = "file"` script.
    Script(String),
}

impl Down {
    pub fn describe(&self) -> String {
        match self {
            Down::Command(argv) => argv.join(" "),
            Down::Script(path) => format!("script {path}"),
        }
    }
}

/// `{name}`, `{file}`, `{stem}` of one step: substituted into argv items, never through a
/// shell (each item stays one argument whatever the values hold).
pub fn fill_command(argv: &[String], name: &str, file: &str) -> Vec<String> {
    let stem = stem(file);
    argv.iter()
        .map(|a| {
            a.replace("{name}", name)
                .replace("{file}", file)
                .replace("{stem}", &stem)
        })
        .collect()
}

/// Whether an argv names its migration (a placeholder), rather than acting on "the next" or
/// "the last" one as `migrate-mongo up`/`down` do.
pub fn names_its_migration(argv: &[String]) -> bool {
    argv.iter().any(|a| {
        COMMAND_PLACEHOLDERS
            .iter()
            .any(|p| a.contains(&format!("{{{p}}}")))
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum EnvCheckSeverity {
    Warning,
    Blocker,
}

/// `[[project.env_checks]]`: a variable the scripts' env (the eras' `env`) must set to a value.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawEnvCheck {
    /// Stable id in `doctor` output, e.g. "new-relic".
    pub id: String,
    pub title: String,
    /// The variable, e.g. NEW_RELIC_ENABLED.
    pub var: String,
    /// The value it must have (compared case-insensitively, trimmed).
    pub equals: String,
    #[serde(default = "warning")]
    pub severity: EnvCheckSeverity,
    /// What goes wrong otherwise.
    pub why: String,
    pub fix: String,
}

fn warning() -> EnvCheckSeverity {
    EnvCheckSeverity::Warning
}

/// `[project.encryption_key]`: what a valid key of this project looks like.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawKeyRules {
    /// Exact length in bytes, if the project's cipher needs one.
    #[serde(default)]
    pub length: Option<usize>,
    /// Example values shipped with the project that must never be used.
    #[serde(default)]
    pub placeholders: Vec<String>,
    /// What the key is, for the fix ("the value your API runs with ...").
    #[serde(default)]
    pub about: Option<String>,
}

/// How a step running in `era` with `mode` is undone: its own `down`, else (for a command
/// step) its era's `down`.
pub fn down_of(
    own: Option<&Down>,
    era: &super::model::Era,
    mode: &super::model::Mode,
) -> Option<Down> {
    own.cloned().or_else(|| match (mode.run, &era.down) {
        (super::model::RunKind::Command, Some(argv)) => Some(Down::Command(argv.clone())),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_fill_argv_items_without_splitting_them() {
        let argv: Vec<String> = [
            "npx",
            "mikro-orm",
            "migration:up",
            "--only",
            "{name}",
            "x={stem};{file}",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let filled = fill_command(&argv, "Migration1 ; rm -rf /", "migrations/Migration1.js");
        assert_eq!(filled.len(), argv.len());
        assert_eq!(filled[4], "Migration1 ; rm -rf /");
        assert_eq!(filled[5], "x=Migration1;migrations/Migration1.js");
        assert!(names_its_migration(&argv));
        assert!(!names_its_migration(&[
            "npx".into(),
            "migrate-mongo".into(),
            "up".into()
        ]));
    }

    #[test]
    fn each_tool_names_a_migration_its_own_way() {
        let script = "src/migrations/Migration20240101000000.js";
        assert_eq!(stem(script), "Migration20240101000000");
        assert_eq!(
            ToolJournal::MikroOrm.key_for("Migration20240101000000", script),
            "Migration20240101000000"
        );
        assert_eq!(
            ToolJournal::MigrateMongo.key_for("ignored", "migrations/20240101-add.js"),
            "20240101-add.js"
        );
        assert_eq!(ToolJournal::MigrateMongo.key_field(), "fileName");
        assert_eq!(ToolJournal::StatusRows.key_for("add-x", script), "add-x");
    }
}
