//! Two projects whose migrations run through a real migration tool from npm, each a git
//! repository with three tagged releases adding migrations:
//!
//! - MikroORM (`@mikro-orm/core`, `/mongodb`, `/migrations-mongodb`, `/cli`, all 6.6.16): JS
//!   migration classes, `mikro-orm migration:up --only {name}`, its journal in `migrations`.
//! - migrate-mongo (14.0.7): `migrate-mongo up` / `down`, its journal in `changelog`.
//!
//! The packages are installed once by scripts/test.sh into the test-tools cache; each tag's
//! setup links that `node_modules` into its worktree (ignored by git, as a real install is).
//! Every migration appends `<name> up|down` to FIXTURE_LOG; a document `{_id: "fail"}` in
//! `control` makes the v1.1.0 migration that checks it throw.

use std::path::{Path, PathBuf};
use std::process::Output;

use super::fixture_project::machine_node_version;
use super::git_fixture::{GitFixture, BASE_TIME};
use super::tools::tools_dir;

const DAY: i64 = 86_400;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tool {
    MikroOrm,
    MigrateMongo,
}

/// The cached `node_modules` of a tool (installed by scripts/test.sh).
pub fn tool_node_modules(tool: Tool) -> PathBuf {
    let (var, dir) = match tool {
        Tool::MikroOrm => ("UPSTEP_TEST_MIKRO_ORM_MODULES", "mikro-orm-fixture"),
        Tool::MigrateMongo => ("UPSTEP_TEST_MIGRATE_MONGO_MODULES", "migrate-mongo-fixture"),
    };
    let path = std::env::var_os(var)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| tools_dir().join(dir).join("node_modules"));
    assert!(
        path.join(".bin").exists(),
        "{} is missing: run scripts/test.sh once (it installs the migration tools)",
        path.display()
    );
    path
}

/// One migration of a fixture: its map id, the file, and the release that adds it.
pub struct ToolMigration {
    pub id: &'static str,
    pub file: &'static str,
    pub release: &'static str,
}

impl ToolMigration {
    /// The name the tool records (MikroORM: the stem; migrate-mongo: the file name).
    pub fn tool_name(&self, tool: Tool) -> String {
        let file = self.file.rsplit('/').next().unwrap_or(self.file);
        match tool {
            Tool::MikroOrm => file.trim_end_matches(".js").to_string(),
            Tool::MigrateMongo => file.to_string(),
        }
    }
}

pub const MIKRO_MIGRATIONS: &[ToolMigration] = &[
    ToolMigration {
        id: "order-status",
        file: "migrations/Migration20240101000000.js",
        release: "1.0.0",
    },
    ToolMigration {
        id: "order-total",
        file: "migrations/Migration20240201000000.js",
        release: "1.1.0",
    },
    ToolMigration {
        id: "customer-tier",
        file: "migrations/Migration20240202000000.js",
        release: "1.1.0",
    },
    ToolMigration {
        id: "order-archived",
        file: "migrations/Migration20240301000000.js",
        release: "1.2.0",
    },
];

pub const MIGRATE_MONGO_MIGRATIONS: &[ToolMigration] = &[
    ToolMigration {
        id: "order-status",
        file: "migrations/20240101000000-order-status.js",
        release: "1.0.0",
    },
    ToolMigration {
        id: "order-total",
        file: "migrations/20240201000000-order-total.js",
        release: "1.1.0",
    },
    ToolMigration {
        id: "customer-tier",
        file: "migrations/20240202000000-customer-tier.js",
        release: "1.1.0",
    },
    ToolMigration {
        id: "order-archived",
        file: "migrations/20240301000000-order-archived.js",
        release: "1.2.0",
    },
];

/// What each migration does (the same in both projects): `(collection, up, down)` as driver
/// calls on `db`. order-total fails while `control` holds `{_id: "fail"}`.
fn effect(id: &str) -> (&'static str, &'static str) {
    match id {
        "order-status" => (
            "await db.collection('orders').updateMany({ status: { $exists: false } }, { $set: { status: 'open' } });",
            "await db.collection('orders').updateMany({}, { $unset: { status: 1 } });",
        ),
        "order-total" => (
            "if (await db.collection('control').findOne({ _id: 'fail' })) throw new Error('refusing: control says fail'); await db.collection('orders').updateMany({ total: { $exists: false } }, { $set: { total: 0 } });",
            "await db.collection('orders').updateMany({}, { $unset: { total: 1 } });",
        ),
        "customer-tier" => (
            "await db.collection('customers').updateMany({ tier: { $exists: false } }, { $set: { tier: 'basic' } });",
            "await db.collection('customers').updateMany({}, { $unset: { tier: 1 } });",
        ),
        _ => (
            "await db.collection('orders').updateMany({ archived: { $exists: false } }, { $set: { archived: false } });",
            "await db.collection('orders').updateMany({}, { $unset: { archived: 1 } });",
        ),
    }
}

fn log(name: &str, direction: &str) -> String {
    format!("require('fs').appendFileSync(process.env.FIXTURE_LOG, '{name} {direction}\\n');")
}

fn mikro_file(m: &ToolMigration) -> String {
    let class = m.tool_name(Tool::MikroOrm);
    let (up, down) = effect(m.id);
    format!(
        r#"'use strict';
const {{ Migration }} = require('@mikro-orm/migrations-mongodb');
class {class} extends Migration {{
  async up() {{
    {log_up}
    const db = {{ collection: (n) => this.getCollection(n) }};
    {up}
  }}
  async down() {{
    {log_down}
    const db = {{ collection: (n) => this.getCollection(n) }};
    {down}
  }}
}}
exports.{class} = {class};
"#,
        log_up = log(&class, "up"),
        log_down = log(&class, "down"),
    )
}

fn migrate_mongo_file(m: &ToolMigration) -> String {
    let name = m.tool_name(Tool::MigrateMongo);
    let (up, down) = effect(m.id);
    format!(
        r#"module.exports = {{
  async up(db) {{
    {log_up}
    {up}
  }},
  async down(db) {{
    {log_down}
    {down}
  }},
}};
"#,
        log_up = log(&name, "up"),
        log_down = log(&name, "down"),
    )
}

const MIKRO_PACKAGE: &str = r#"{ "name": "mikro-fixture", "private": true,
  "dependencies": { "@mikro-orm/core": "6.6.16", "@mikro-orm/mongodb": "6.6.16", "@mikro-orm/migrations-mongodb": "6.6.16" },
  "devDependencies": { "@mikro-orm/cli": "6.6.16" },
  "mikro-orm": { "useTsNode": false, "configPaths": ["./mikro-orm.config.js"] } }
"#;

const MIKRO_CONFIG: &str = r#"const { defineConfig } = require('@mikro-orm/mongodb');
const { Migrator } = require('@mikro-orm/migrations-mongodb');
module.exports = defineConfig({
  clientUrl: process.env.MONGO_URL,
  entities: [],
  discovery: { warnWhenNoEntities: false },
  extensions: [Migrator],
  migrations: { path: './migrations', tableName: 'migrations', emit: 'js', glob: '!(*.d).js' },
});
"#;

const MIGRATE_MONGO_PACKAGE: &str = r#"{ "name": "mm-fixture", "private": true,
  "dependencies": { "migrate-mongo": "14.0.7", "mongodb": "^6" } }
"#;

const MIGRATE_MONGO_CONFIG: &str = r#"module.exports = {
  mongodb: { url: process.env.MONGO_URL, options: {} },
  migrationsDir: 'migrations',
  changelogCollectionName: 'changelog',
  lockCollectionName: 'changelog_lock',
  lockTtl: 0,
  migrationFileExtension: '.js',
  useFileHash: false,
  moduleSystem: 'commonjs',
};
"#;

pub struct ToolProject {
    pub tool: Tool,
    pub repo: GitFixture,
    pub work: tempfile::TempDir,
    pub map_path: PathBuf,
    pub log_path: PathBuf,
}

impl ToolProject {
    pub fn new(tool: Tool) -> ToolProject {
        let repo = GitFixture::new();
        let (package, config_name, config, migrations) = match tool {
            Tool::MikroOrm => (
                MIKRO_PACKAGE,
                "mikro-orm.config.js",
                MIKRO_CONFIG,
                MIKRO_MIGRATIONS,
            ),
            Tool::MigrateMongo => (
                MIGRATE_MONGO_PACKAGE,
                "migrate-mongo-config.js",
                MIGRATE_MONGO_CONFIG,
                MIGRATE_MONGO_MIGRATIONS,
            ),
        };
        let body = |m: &ToolMigration| match tool {
            Tool::MikroOrm => mikro_file(m),
            Tool::MigrateMongo => migrate_mongo_file(m),
        };
        for (i, release) in ["1.0.0", "1.1.0", "1.2.0"].iter().enumerate() {
            let bodies: Vec<(String, String)> = migrations
                .iter()
                .filter(|m| m.release == *release)
                .map(|m| (m.file.to_string(), body(m)))
                .collect();
            let mut changes: Vec<(&str, Option<&str>)> = bodies
                .iter()
                .map(|(f, b)| (f.as_str(), Some(b.as_str())))
                .collect();
            if i == 0 {
                changes.push(("package.json", Some(package)));
                changes.push((config_name, Some(config)));
                changes.push((".gitignore", Some("node_modules\n")));
            }
            let time = BASE_TIME + i as i64 * DAY;
            let commit = repo.commit(&changes, time);
            repo.annotated_tag(&format!("v{release}"), commit, time);
        }
        let work = tempfile::tempdir().expect("a temp dir");
        let log_path = work.path().join("executed.log");
        let map_path = work.path().join("release-map.toml");
        std::fs::write(
            &map_path,
            tool_map_text(tool, &tool_node_modules(tool), &log_path),
        )
        .expect("write the map");
        ToolProject {
            tool,
            repo,
            work,
            map_path,
            log_path,
        }
    }

    pub fn migrations(&self) -> &'static [ToolMigration] {
        match self.tool {
            Tool::MikroOrm => MIKRO_MIGRATIONS,
            Tool::MigrateMongo => MIGRATE_MONGO_MIGRATIONS,
        }
    }

    /// The tool's name of a migration, by map id.
    pub fn name_of(&self, id: &str) -> String {
        self.migrations()
            .iter()
            .find(|m| m.id == id)
            .map(|m| m.tool_name(self.tool))
            .unwrap_or_default()
    }

    /// `(name, "up"|"down")` as the migrations logged them, in order.
    pub fn executed(&self) -> Vec<(String, String)> {
        std::fs::read_to_string(&self.log_path)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| {
                let (name, dir) = l.split_once(' ')?;
                Some((name.to_string(), dir.to_string()))
            })
            .collect()
    }

    pub fn map_variant(&self, name: &str, edit: impl Fn(&str) -> String) -> PathBuf {
        let text = std::fs::read_to_string(&self.map_path).expect("the map");
        let path = self.work.path().join(format!("{name}.toml"));
        std::fs::write(&path, edit(&text)).expect("write a map variant");
        path
    }

    /// A checkout of `tag` with the tool installed, as a user of the tool has it.
    pub fn checkout(&self, tag: &str) -> PathBuf {
        let dir = self.work.path().join(format!("checkout-{tag}"));
        if !dir.exists() {
            let status = std::process::Command::new("git")
                .args([
                    "-c",
                    "advice.detachedHead=false",
                    "clone",
                    "-q",
                    "--branch",
                    tag,
                ])
                .arg(self.repo.path())
                .arg(&dir)
                .env("GIT_CONFIG_NOSYSTEM", "1")
                .status()
                .expect("git clone");
            assert!(status.success(), "git clone of {tag}");
            std::os::unix::fs::symlink(tool_node_modules(self.tool), dir.join("node_modules"))
                .expect("link node_modules");
        }
        dir
    }

    /// Run the tool itself at `tag` (`args` after `npx --no-install <tool>`).
    pub fn run_tool(&self, tag: &str, mongo_uri: &str, args: &[&str]) -> Output {
        let bin = match self.tool {
            Tool::MikroOrm => "mikro-orm",
            Tool::MigrateMongo => "migrate-mongo",
        };
        let out = std::process::Command::new("npx")
            .arg("--no-install")
            .arg(bin)
            .args(args)
            .current_dir(self.checkout(tag))
            .env("MONGO_URL", mongo_uri)
            .env("FIXTURE_LOG", &self.log_path)
            .env("NO_COLOR", "1")
            .env("FORCE_COLOR", "0")
            .output()
            .expect("run the tool");
        out
    }

    /// The tool's own list of pending migrations at `tag` (MikroORM `migration:pending`,
    /// migrate-mongo `status` rows marked PENDING).
    pub fn tool_pending(&self, tag: &str, mongo_uri: &str) -> Vec<String> {
        let (args, marker): (&[&str], Option<&str>) = match self.tool {
            Tool::MikroOrm => (&["migration:pending"], None),
            Tool::MigrateMongo => (&["status"], Some("PENDING")),
        };
        let out = self.run_tool(tag, mongo_uri, args);
        assert!(
            out.status.success(),
            "the tool's status failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let mut names: Vec<String> = Vec::new();
        for line in text
            .lines()
            .filter(|l| marker.is_none_or(|m| l.contains(m)))
        {
            for m in self.migrations() {
                let name = m.tool_name(self.tool);
                if line.contains(&name) && !names.contains(&name) {
                    names.push(name);
                }
            }
        }
        names.sort();
        names
    }
}

pub fn tool_map_text(tool: Tool, node_modules: &Path, log: &Path) -> String {
    let node = machine_node_version();
    let (name, command, down, journal, collection, migrations) = match tool {
        Tool::MikroOrm => (
            "mikro-fixture",
            r#"["npx", "--no-install", "mikro-orm", "migration:up", "--only", "{name}"]"#,
            r#"["npx", "--no-install", "mikro-orm", "migration:down", "--only", "{name}"]"#,
            "mikro-orm",
            "migrations",
            MIKRO_MIGRATIONS,
        ),
        Tool::MigrateMongo => (
            "mm-fixture",
            r#"["npx", "--no-install", "migrate-mongo", "up"]"#,
            r#"["npx", "--no-install", "migrate-mongo", "down"]"#,
            "migrate-mongo",
            "changelog",
            MIGRATE_MONGO_MIGRATIONS,
        ),
    };
    let mut text = format!(
        r#"schema = 1
[project]
name = "{name}"
migrations_dir = "migrations"
script_suffixes = [".js"]

[eras.app]
cwd = "."
command = {command}
down = {down}
setup = [["ln", "-sfn", "{node_modules}", "node_modules"]]
[eras.app.env]
MONGO_URL = "{{mongo_uri}}"
FIXTURE_LOG = "{log}"
NO_COLOR = "1"
FORCE_COLOR = "0"
"#,
        node_modules = node_modules.display(),
        log = log.display(),
    );
    for release in ["1.0.0", "1.1.0", "1.2.0"] {
        text.push_str(&format!(
            "\n[[releases]]\nversion = \"{release}\"\nera = \"app\"\nnode = \"{node}\"\n"
        ));
    }
    for m in migrations {
        text.push_str(&format!(
            r#"
[[migrations]]
id = "{id}"
title = "{id}"
introduced_in = "{release}"
script = "{file}"
run = "command"
exits = "yes"
idempotent = "yes"
[[migrations.pending]]
collection = "{collection}"
journal = "{journal}"
"#,
            id = m.id,
            release = m.release,
            file = m.file,
        ));
    }
    text
}
