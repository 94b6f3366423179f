//! A small project with ad-hoc migration scripts, the way Novu's are: a git repository with
//! three tagged releases, scripts that use the official `mongodb` npm driver (some TypeScript,
//! run by ts-node), a tiny data-layer package of its own (to prove the shim mechanism), and a
//! release map describing it.
//!
//! Every script appends `<id> <pid> <pgid> <argv>` to the file named by `FIXTURE_LOG`, so tests can assert
//! the order of execution and that nothing ran twice. Behaviour is steered through the data:
//! a document `{_id: "fail"}` in `control` makes `fails` fail.

use std::path::{Path, PathBuf};

use super::git_fixture::{GitFixture, BASE_TIME};
use super::tools::node_modules;

const DAY: i64 = 86_400;

/// The data-layer package the export-only script and the data-layer shim use.
const DAL: &str = r#"
const { MongoClient } = require('mongodb');
let client;
module.exports = {
  async connect(url) { client = new MongoClient(url); await client.connect(); },
  db() { return client.db(); },
  async disconnect() { await client.close(); },
};
"#;

/// Logs `<id> <pid> <pgid> <argv as JSON>` to FIXTURE_LOG: the pgid names the script's process
/// group (its leader may be a wrapper, e.g. `sh`), so tests can look for anything of that group
/// left running. With FIXTURE_WORKTREES (upstep's worktree cache folder) set, also
/// `<id> <tag,tag,...>` (the prepared worktrees as the script starts) to `<FIXTURE_LOG>.worktrees`.
/// With FIXTURE_ENV_LOG set, `<id> <names of its environment variables as JSON>` there.
fn log_line(id: &str) -> String {
    format!(
        "require('fs').appendFileSync(process.env.FIXTURE_LOG, '{id} ' + process.pid + ' ' + require('fs').readFileSync('/proc/self/stat', 'utf8').split(')').pop().trim().split(' ')[2] + ' ' + JSON.stringify(process.argv) + '\\n');
if (process.env.FIXTURE_WORKTREES) {{ const fs = require('fs'), path = require('path'); const root = process.env.FIXTURE_WORKTREES; const tags = []; for (const repo of fs.existsSync(root) ? fs.readdirSync(root) : []) for (const tag of fs.readdirSync(path.join(root, repo))) if (tag !== '.meta') tags.push(tag); fs.appendFileSync(process.env.FIXTURE_LOG + '.worktrees', '{id} ' + tags.sort().join(',') + '\\n'); }}
if (process.env.FIXTURE_ENV_LOG) require('fs').appendFileSync(process.env.FIXTURE_ENV_LOG, '{id} ' + JSON.stringify(Object.keys(process.env)) + '\\n');"
    )
}

/// A script that connects with the driver, runs `body` (with `db` in scope), then `tail`.
fn script(id: &str, body: &str, tail: &str) -> String {
    format!(
        r#"const {{ MongoClient }} = require('mongodb');
{log}
(async () => {{
  const client = new MongoClient(process.env.MONGO_URL);
  await client.connect();
  const db = client.db();
  {body}
  {tail}
}})().catch((e) => {{ console.error(e); process.exit(1); }});
"#,
        log = log_line(id)
    )
}

pub fn scripts() -> Vec<(&'static str, String)> {
    vec![
        // v1.0.0: a plain script that migrates and exits.
        (
            "migrations/001-exits.js",
            script(
                "exits",
                "await db.collection('items').updateMany({ done: { $exists: false } }, { $set: { done: true } });",
                "console.log('end migration'); await client.close(); process.exit(0);",
            ),
        ),
        // v1.1.0: TypeScript that migrates, prints its end line, and then never exits.
        (
            "migrations/002-hangs.ts",
            script(
                "hangs",
                "const n: number = 1; await new Promise((r) => setTimeout(r, Number(process.env.FIXTURE_DELAY_MS || 0))); await db.collection('items').updateMany({ tagged: { $exists: false } }, { $set: { tagged: n } });",
                "console.log('end migration'); setInterval(() => {}, 1000);",
            ),
        ),
        // v1.1.0: only exports a function: running the file does nothing.
        (
            "migrations/003-export-only.js",
            format!(
                r#"const dal = require('../lib/dal');
module.exports.migrateExports = async function () {{
  {log}
  await dal.db().collection('items').updateMany({{ exported: {{ $exists: false }} }}, {{ $set: {{ exported: true }} }});
}};
"#,
                log = log_line("export-only")
            ),
        ),
        // v1.2.0: fails while control has {_id: "fail"}.
        (
            "migrations/004-fails.js",
            script(
                "fails",
                "if (await db.collection('control').findOne({ _id: 'fail' })) { console.error('refusing: control says fail'); process.exit(3); } await db.collection('items').updateMany({ checked: { $exists: false } }, { $set: { checked: true } });",
                "await client.close(); process.exit(0);",
            ),
        ),
        // v1.2.0: exits 0 having migrated nothing (must be recorded as failed).
        (
            "migrations/005-noop.js",
            script("noop", "", "await client.close(); process.exit(0);"),
        ),
        // v1.2.0: not idempotent: every run bumps a counter.
        (
            "migrations/006-counter.js",
            script(
                "counter",
                "await db.collection('counters').updateOne({ _id: 'runs' }, { $inc: { n: 1 } }, { upsert: true }); await db.collection('items').updateMany({ counted: { $exists: false } }, { $set: { counted: true } });",
                "await client.close(); process.exit(0);",
            ),
        ),
    ]
}

pub struct FixtureProject {
    pub repo: GitFixture,
    pub work: tempfile::TempDir,
    pub map_path: PathBuf,
    pub log_path: PathBuf,
}

impl FixtureProject {
    /// The repository with tags v1.0.0 (001), v1.1.0 (002, 003), v1.2.0 (004-006).
    pub fn new() -> FixtureProject {
        let repo = GitFixture::new();
        let all = scripts();
        let file = |p: &str| {
            all.iter()
                .find(|(path, _)| *path == p)
                .map(|(_, s)| s.as_str())
        };
        let base = repo.commit(
            &[
                ("package.json", Some("{ \"name\": \"fixture\", \"private\": true }\n")),
                ("tsconfig.json", Some("{ \"compilerOptions\": { \"module\": \"commonjs\", \"target\": \"es2020\", \"esModuleInterop\": true } }\n")),
                ("lib/dal.js", Some(DAL)),
                ("migrations/001-exits.js", file("migrations/001-exits.js")),
            ],
            BASE_TIME,
        );
        repo.annotated_tag("v1.0.0", base, BASE_TIME);
        let second = repo.commit(
            &[
                ("migrations/002-hangs.ts", file("migrations/002-hangs.ts")),
                (
                    "migrations/003-export-only.js",
                    file("migrations/003-export-only.js"),
                ),
            ],
            BASE_TIME + DAY,
        );
        repo.lightweight_tag("v1.1.0", second);
        let third = repo.commit(
            &[
                ("migrations/004-fails.js", file("migrations/004-fails.js")),
                ("migrations/005-noop.js", file("migrations/005-noop.js")),
                (
                    "migrations/006-counter.js",
                    file("migrations/006-counter.js"),
                ),
            ],
            BASE_TIME + 2 * DAY,
        );
        repo.annotated_tag("v1.2.0", third, BASE_TIME + 2 * DAY);

        let work = tempfile::tempdir().expect("a temp dir");
        let log_path = work.path().join("executed.log");
        let map_path = work.path().join("release-map.toml");
        std::fs::write(&map_path, map_text(&node_modules(), &log_path))
            .expect("write the fixture map");
        FixtureProject {
            repo,
            work,
            map_path,
            log_path,
        }
    }

    pub fn repo_path(&self) -> &Path {
        self.repo.path()
    }

    /// The pids the scripts logged, in execution order.
    pub fn executed_pids(&self) -> Vec<u32> {
        std::fs::read_to_string(&self.log_path)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split_whitespace().nth(1)?.parse().ok())
            .collect()
    }

    /// The process groups the scripts logged, in execution order.
    pub fn executed_pgids(&self) -> Vec<i32> {
        std::fs::read_to_string(&self.log_path)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split_whitespace().nth(2)?.parse().ok())
            .collect()
    }

    /// Write a variant of the map (`edit` gets the text) and return its path.
    pub fn map_variant(&self, name: &str, edit: impl Fn(&str) -> String) -> PathBuf {
        let text = std::fs::read_to_string(&self.map_path).expect("the fixture map");
        let path = self.work.path().join(format!("{name}.toml"));
        std::fs::write(&path, edit(&text)).expect("write a map variant");
        path
    }

    /// `(id, prepared worktrees)` as each script started (needs FIXTURE_WORKTREES).
    pub fn worktrees_seen(&self) -> Vec<(String, String)> {
        std::fs::read_to_string(self.log_path.with_extension("log.worktrees"))
            .unwrap_or_default()
            .lines()
            .map(|l| {
                let (id, tags) = l.split_once(' ').unwrap_or((l, ""));
                (id.to_string(), tags.to_string())
            })
            .collect()
    }

    /// The ids the scripts logged, in execution order.
    pub fn executed(&self) -> Vec<String> {
        std::fs::read_to_string(&self.log_path)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split_whitespace().next().map(String::from))
            .collect()
    }
}

/// The node version on this machine: the fixture's releases pin it, so no provisioning runs.
pub fn machine_node_version() -> String {
    let out = std::process::Command::new("node")
        .arg("--version")
        .output()
        .expect("node is installed");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .trim_start_matches('v')
        .to_string()
}

pub fn map_text(node_modules: &Path, log: &Path) -> String {
    let node = machine_node_version();
    let ts_node = node_modules.join(".bin/ts-node");
    format!(
        r#"schema = 1
[project]
name = "fixture"
migrations_dir = "migrations"
quiet_secs = 2

[eras.app]
cwd = "."
run = ["{ts_node}", "--transpile-only", "{{script}}"]
done_lines = ["end migration"]
[eras.app.env]
MONGO_URL = "{{mongo_uri}}"
REDIS_HOST = "{{redis_host}}"
REDIS_PORT = "{{redis_port}}"
STORE_ENCRYPTION_KEY = "{{encryption_key}}"
NODE_PATH = "{node_modules}"
FIXTURE_LOG = "{log}"
NEW_RELIC_ENABLED = "false"
[eras.app.shims.data-layer]
template = '''
const dal = require('./lib/dal');
(async () => {{
  await dal.connect(process.env.MONGO_URL);
  await require('{{module}}').{{export}}();
  await dal.disconnect();
  process.exit(0);
}})().catch((e) => {{ console.error(e); process.exit(1); }});
'''

[[releases]]
version = "1.0.0"
era = "app"
node = "{node}"
[[releases]]
version = "1.1.0"
era = "app"
node = "{node}"
[[releases]]
version = "1.2.0"
era = "app"
node = "{node}"

[[migrations]]
id = "exits"
title = "Exits by itself"
introduced_in = "1.0.0"
script = "migrations/001-exits.js"
run = "file"
exits = "yes"
idempotent = "guarded"
[[migrations.pending]]
collection = "items"
filter = {{ done = {{ "$exists" = false }} }}

[[migrations]]
id = "hangs"
title = "Never exits"
introduced_in = "1.1.0"
script = "migrations/002-hangs.ts"
run = "file"
exits = "never"
idempotent = "guarded"
[[migrations.pending]]
collection = "items"
filter = {{ tagged = {{ "$exists" = false }} }}

[[migrations]]
id = "export-only"
title = "Only exports a function"
introduced_in = "1.1.0"
script = "migrations/003-export-only.js"
run = "export"
export = "migrateExports"
shim = "data-layer"
exits = "yes"
idempotent = "yes"
[[migrations.pending]]
collection = "items"
filter = {{ exported = {{ "$exists" = false }} }}

[[migrations]]
id = "fails"
title = "Fails on demand"
introduced_in = "1.2.0"
script = "migrations/004-fails.js"
run = "file"
exits = "yes"
idempotent = "guarded"
[[migrations.pending]]
collection = "items"
filter = {{ checked = {{ "$exists" = false }} }}

[[migrations]]
id = "noop"
title = "Exits 0 having done nothing"
introduced_in = "1.2.0"
script = "migrations/005-noop.js"
run = "file"
exits = "yes"
idempotent = "yes"
[[migrations.pending]]
collection = "items"
filter = {{ nooped = {{ "$exists" = false }} }}

[[migrations]]
id = "counter"
title = "Not idempotent"
introduced_in = "1.2.0"
script = "migrations/006-counter.js"
run = "file"
exits = "yes"
idempotent = "no"
warnings = ["Every run bumps the counter again."]
[[migrations.pending]]
collection = "items"
filter = {{ counted = {{ "$exists" = false }} }}
"#,
        ts_node = ts_node.display(),
        node_modules = node_modules.display(),
        log = log.display(),
    )
}
