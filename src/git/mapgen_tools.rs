//! `map generate` for projects whose migrations run through a tool: a MikroORM or migrate-mongo
//! layout (recognised at the newest release tag) gets command steps and tool-journal checks
//! instead of script TODOs.

use std::fmt::Write as _;

use super::{GitRepo, ReleaseTag};
use crate::error::Result;
use crate::release_map::tools::{stem, ToolJournal};

/// A migration tool recognised in the repository.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolLayout {
    pub tool: ToolJournal,
    /// The tool's journal collection, read from its config when it names one.
    pub collection: String,
    /// Whether the collection was read from the config (otherwise the tool's default).
    pub collection_from_config: bool,
}

/// The value of `key: 'value'` (or "value") in a JS config, if written literally.
fn config_value(text: &str, key: &str) -> Option<String> {
    let at = text.find(key)? + key.len();
    let rest = text[at..].trim_start().strip_prefix(':')?.trim_start();
    let quote = rest
        .chars()
        .next()
        .filter(|c| matches!(c, '\'' | '"' | '`'))?;
    let value = &rest[1..];
    Some(value[..value.find(quote)?].to_string())
}

fn has_dependency(package_json: &str, name: &str) -> bool {
    let Ok(value) = serde_json::from_str::<serde_json::Value>(package_json) else {
        return false;
    };
    ["dependencies", "devDependencies"]
        .iter()
        .any(|section| value.get(section).and_then(|d| d.get(name)).is_some())
}

/// The tool the project at its newest release uses, if one is recognised: by its
/// dependencies in the repository root's package.json (or the migrations folder's parent's),
/// and its config file.
pub fn detect(repo: &GitRepo, tags: &[ReleaseTag], dir: &str) -> Result<Option<ToolLayout>> {
    let Some(newest) = tags
        .iter()
        .filter(|t| t.stable)
        .max_by(|a, b| a.version.cmp(&b.version))
    else {
        return Ok(None);
    };
    let commit = &newest.info.commit;
    let read = |path: &str| -> Result<Option<String>> {
        Ok(repo
            .read_file_at(commit, path)?
            .map(|b| String::from_utf8_lossy(&b).into_owned()))
    };
    let parent = dir.rsplit_once('/').map_or("", |(p, _)| p);
    let mut roots = vec![String::new()];
    if !parent.is_empty() {
        roots.insert(0, format!("{parent}/"));
    }
    for root in &roots {
        let Some(package) = read(&format!("{root}package.json"))? else {
            continue;
        };
        if has_dependency(&package, "@mikro-orm/migrations-mongodb") {
            let mut config = None;
            for name in [
                "mikro-orm.config.js",
                "mikro-orm.config.ts",
                "src/mikro-orm.config.ts",
                "src/mikro-orm.config.js",
            ] {
                if let Some(text) = read(&format!("{root}{name}"))? {
                    config = Some(text);
                    break;
                }
            }
            let from_config = config.as_deref().and_then(|c| config_value(c, "tableName"));
            return Ok(Some(ToolLayout {
                tool: ToolJournal::MikroOrm,
                collection_from_config: from_config.is_some(),
                collection: from_config.unwrap_or_else(|| "mikro_orm_migrations".into()),
            }));
        }
        let config = read(&format!("{root}migrate-mongo-config.js"))?;
        if has_dependency(&package, "migrate-mongo") || config.is_some() {
            let from_config = config
                .as_deref()
                .and_then(|c| config_value(c, "changelogCollectionName"));
            return Ok(Some(ToolLayout {
                tool: ToolJournal::MigrateMongo,
                collection_from_config: from_config.is_some(),
                collection: from_config.unwrap_or_else(|| "changelog".into()),
            }));
        }
    }
    Ok(None)
}

impl ToolLayout {
    /// The era: the tool's up and down commands.
    pub fn write_era(&self, out: &mut String) {
        let (command, down) = match self.tool {
            ToolJournal::MikroOrm => (
                r#"["npx", "--no-install", "mikro-orm", "migration:up", "--only", "{name}"]"#,
                r#"["npx", "--no-install", "mikro-orm", "migration:down", "--only", "{name}"]"#,
            ),
            _ => (
                r#"["npx", "--no-install", "migrate-mongo", "up"]"#,
                r#"["npx", "--no-install", "migrate-mongo", "down"]"#,
            ),
        };
        let _ = writeln!(
            out,
            "\n# Recognised: {} (its journal: the {:?} collection). Each migration runs through the\n\
             # tool at its release's tag; the tool's journal says what is applied.\n\
             # TODO: name the era on each release, add the setup that installs the project (e.g.\n\
             # setup = [[\"npm\", \"ci\"]]) and the env the tool's config reads (e.g. MONGO_URL).\n\
             [eras.app]\ncwd = \".\"\ncommand = {command}\ndown = {down}\n\
             env = {{ MONGO_URL = \"{{mongo_uri}}\" }}  # TODO verify: the variable the config reads",
            self.tool.as_str(),
            self.collection,
        );
        if self.tool == ToolJournal::MigrateMongo {
            out.push_str(
                "# NOTE: `migrate-mongo up` runs every pending migration of the tag: the first step of a\n\
                 # tag runs them all, the others find them applied in the journal and are skipped.\n",
            );
        }
    }

    /// One migration: a command step checked against the tool's journal.
    pub fn write_migration(&self, out: &mut String, script: &str) {
        out.push_str("run = \"command\"\nexits = \"yes\"\n");
        out.push_str("idempotent = \"yes\"  # the tool's journal keeps it from running twice\n");
        if self.tool == ToolJournal::MikroOrm {
            let _ = writeln!(
                out,
                "name = {}  # as the tool records it",
                toml::Value::String(stem(script))
            );
        }
        out.push_str("[[migrations.pending]]\n");
        let _ = writeln!(
            out,
            "collection = {}{}",
            toml::Value::String(self.collection.clone()),
            if self.collection_from_config {
                "  # from the tool's config"
            } else {
                "  # TODO verify: the tool's default; use the collection its config names"
            }
        );
        let _ = writeln!(out, "journal = \"{}\"", self.tool.as_str());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_values_and_dependencies_are_read_literally() {
        let config = "module.exports = { migrations: { tableName: 'migrations', path: './m' } }";
        assert_eq!(
            config_value(config, "tableName").as_deref(),
            Some("migrations")
        );
        assert_eq!(
            config_value(
                "changelogCollectionName: \"log\",",
                "changelogCollectionName"
            )
            .as_deref(),
            Some("log")
        );
        assert_eq!(config_value("tableName: name", "tableName"), None);
        assert!(has_dependency(
            r#"{"devDependencies":{"migrate-mongo":"14"}}"#,
            "migrate-mongo"
        ));
        assert!(!has_dependency(r#"{"dependencies":{}}"#, "migrate-mongo"));
    }
}
