//! The git layer against fixture repositories built with git2 in temp dirs.

use std::path::{Path, PathBuf};

use git2::{Oid, Repository};
use semver::Version;
use upstep::error::Error;
use upstep::git::{
    check_map, discover_scripts, generate_map_skeleton, Disagreement, ExpectedScript, GitRepo,
    RepoLocation, TagInfo, WorktreeStatus, Worktrees,
};
use upstep::release_map::schema::RawMap;

use crate::support::{signature, GitFixture as Fixture};
use tempfile::TempDir;

use crate::support::BASE_TIME;
const DAY: i64 = 86_400;

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

fn version(text: &str) -> Version {
    Version::parse(text).unwrap()
}

fn package_json(node: &str, pnpm_engine: Option<&str>, package_manager: &str) -> String {
    let engines = match pnpm_engine {
        Some(pnpm) => format!(r#"{{"node": "{node}", "pnpm": "{pnpm}"}}"#),
        None => format!(r#"{{"node": "{node}"}}"#),
    };
    format!(r#"{{"name": "fixture", "engines": {engines}, "packageManager": "{package_manager}"}}"#)
}

/// The commits of the standard fixture, by the tag they carry.
struct History {
    fixture: Fixture,
    c1: Oid,
    c3: Oid,
    side: Oid,
    c4: Oid,
    c5: Oid,
}

/// The Novu-like history every test starts from:
///
/// ```text
/// main:        c1 ── c2 ── c3 ──────── c4 ── c5
///              v0.1.0  rc.1  v0.2.0  \   v0.3.0 v2.0.0
///              v1.0.1 (stray)          side (branch release-0.2): v0.2.1
/// branch `v0.3.0` -> c1 (named like a tag, points elsewhere)
/// ```
/// Scripts: `changes-migration.ts` (c1, moved to `legacy/` at c4), `seen/seen-read.migration.ts`
/// (c2, a prerelease), `hotfix.migration.ts` (side branch only), `temp-migration.ts` (added at
/// c4, deleted at c5), plus a `.spec.ts` that is never a script.
fn history() -> History {
    let fixture = Fixture::new();
    let pkg1 = package_json(">=14 <15", None, "pnpm@6.32.3");
    let c1 = fixture.commit(
        &[
            (".gitignore", Some("node_modules/\ndist/\n")),
            (".nvmrc", Some("v14.18.3\n")),
            ("package.json", Some(&pkg1)),
            ("README.md", Some("fixture\n")),
            ("migrations/changes-migration.ts", Some("// changes\n")),
            ("migrations/changes.spec.ts", Some("// test\n")),
        ],
        BASE_TIME,
    );
    fixture.annotated_tag("v0.1.0", c1, BASE_TIME + 3600);
    fixture.lightweight_tag("v1.0.1", c1);
    let c2 = fixture.commit(
        &[("migrations/seen/seen-read.migration.ts", Some("// seen\n"))],
        BASE_TIME + DAY,
    );
    fixture.lightweight_tag("v0.2.0-rc.1", c2);
    let pkg2 = package_json(">=16", Some("^7"), "pnpm@7.5.0");
    let c3 = fixture.commit(
        &[(".nvmrc", Some("16.15.1\n")), ("package.json", Some(&pkg2))],
        BASE_TIME + 2 * DAY,
    );
    fixture.annotated_tag("v0.2.0", c3, BASE_TIME + 2 * DAY + 60);

    fixture.branch("release-0.2", c3);
    fixture.switch_branch("release-0.2");
    let side = fixture.commit(
        &[("migrations/hotfix.migration.ts", Some("// hotfix\n"))],
        BASE_TIME + 3 * DAY,
    );
    fixture.lightweight_tag("v0.2.1", side);
    fixture.switch_branch("main");

    let c4 = fixture.commit(
        &[
            ("migrations/changes-migration.ts", None),
            (
                "migrations/legacy/changes-migration.ts",
                Some("// changes\n"),
            ),
            ("migrations/temp-migration.ts", Some("// temp\n")),
        ],
        BASE_TIME + 4 * DAY,
    );
    fixture.annotated_tag("v0.3.0", c4, BASE_TIME + 4 * DAY + 60);
    fixture.branch("v0.3.0", c1);
    let pkg5 = package_json(">=20 <21", Some("^9"), "pnpm@9.11.0+sha512.abc");
    let c5 = fixture.commit(
        &[
            ("migrations/temp-migration.ts", None),
            (".nvmrc", Some("v20.8.1\n")),
            ("package.json", Some(&pkg5)),
        ],
        BASE_TIME + 5 * DAY,
    );
    fixture.annotated_tag("v2.0.0", c5, BASE_TIME + 5 * DAY + 60);
    History {
        fixture,
        c1,
        c3,
        side,
        c4,
        c5,
    }
}

fn assert_repository_error<T: std::fmt::Debug>(result: Result<T, Error>, needle: &str) -> String {
    match result {
        Err(err @ Error::Repository { .. }) => {
            let text = err.to_string();
            assert!(text.contains(needle), "{needle:?} not in {text:?}");
            assert!(text.contains("fix:"), "no fix in {text:?}");
            text
        }
        other => panic!("expected a Repository error, got {other:?}"),
    }
}

// ---------------------------------------------------------------- opening and tags

#[test]
fn open_rejects_a_folder_that_is_not_a_repository() {
    let dir = TempDir::new().unwrap();
    assert_repository_error(GitRepo::open(dir.path()), "not a git repository");
    assert_repository_error(GitRepo::open(&dir.path().join("nope")), "does not exist");
}

#[test]
fn tag_resolves_refs_tags_never_a_branch_of_the_same_name() {
    let h = history();
    let repo = h.fixture.open();
    let tag = repo.tag("v0.3.0").unwrap();
    assert_eq!(tag.commit, h.c4.to_string(), "branch v0.3.0 points at c1");
    assert!(tag.annotated);
    assert_eq!(tag.date.as_deref(), Some("2023-11-18"));
}

#[test]
fn tag_dates_come_from_the_tagger_or_the_commit() {
    let h = history();
    let repo = h.fixture.open();
    let annotated = repo.tag("v0.1.0").unwrap();
    assert!(annotated.annotated);
    // The tagger date (an hour after the commit), in the tagger's zone.
    assert_eq!(annotated.date.as_deref(), Some("2023-11-14"));
    assert_eq!(annotated.commit, h.c1.to_string());
    let lightweight = repo.tag("v0.2.1").unwrap();
    assert!(!lightweight.annotated);
    assert_eq!(lightweight.commit, h.side.to_string());
    assert_eq!(lightweight.date.as_deref(), Some("2023-11-17"));
}

#[test]
fn a_missing_tag_names_the_tag_and_the_fix() {
    let h = history();
    let text = assert_repository_error(h.fixture.open().tag("v9.9.9"), "v9.9.9");
    assert!(text.contains("fetch --tags"), "{text}");
}

#[test]
fn release_tags_are_sorted_by_semver_with_flags() {
    let h = history();
    let repo = h.fixture.open();
    let tags = repo
        .release_tags(&strings(&["v1.0.1"]), &strings(&["main"]))
        .unwrap();
    let names: Vec<&str> = tags.iter().map(|t| t.info.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "v0.1.0",
            "v0.2.0-rc.1",
            "v0.2.0",
            "v0.2.1",
            "v0.3.0",
            "v2.0.0"
        ]
    );
    let stable: Vec<bool> = tags.iter().map(|t| t.stable).collect();
    assert_eq!(stable, [true, false, true, true, true, true]);
    let mainline: Vec<Option<bool>> = tags.iter().map(|t| t.on_mainline).collect();
    assert_eq!(
        mainline,
        [
            Some(true),
            Some(true),
            Some(true),
            Some(false),
            Some(true),
            Some(true)
        ]
    );
    assert_eq!(tags[3].version, version("0.2.1"));
}

#[test]
fn release_tags_keep_the_stray_tag_unless_ignored_and_know_no_mainline() {
    let h = history();
    let repo = h.fixture.open();
    let tags = repo.release_tags(&[], &strings(&["trunk"])).unwrap();
    let names: Vec<&str> = tags.iter().map(|t| t.info.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "v0.1.0",
            "v0.2.0-rc.1",
            "v0.2.0",
            "v0.2.1",
            "v0.3.0",
            "v1.0.1",
            "v2.0.0"
        ]
    );
    assert!(tags.iter().all(|t| t.on_mainline.is_none()));
}

#[test]
fn describe_exact_tag_finds_the_release_at_head() {
    let h = history();
    assert_eq!(
        h.fixture.open().describe_exact_tag().unwrap().as_deref(),
        Some("v2.0.0")
    );
    h.fixture
        .commit(&[("README.md", Some("later\n"))], BASE_TIME + 9 * DAY);
    assert_eq!(h.fixture.open().describe_exact_tag().unwrap(), None);
}

// ---------------------------------------------------------------- files at a commit

#[test]
fn files_are_read_at_a_commit_without_checkout() {
    let h = history();
    let repo = h.fixture.open();
    let c1 = h.c1.to_string();
    let c4 = h.c4.to_string();
    assert_eq!(
        repo.read_file_at(&c1, "migrations/changes-migration.ts")
            .unwrap(),
        Some(b"// changes\n".to_vec())
    );
    assert_eq!(
        repo.read_file_at(&c4, "migrations/changes-migration.ts")
            .unwrap(),
        None
    );
    assert_eq!(
        repo.read_file_at(&c4, "migrations").unwrap(),
        None,
        "a folder"
    );
    assert!(repo.path_exists_at(&c4, "migrations/legacy").unwrap());
    assert!(!repo.path_exists_at(&c1, "migrations/legacy").unwrap());
    assert_eq!(
        repo.list_files_at(&c4, "migrations/").unwrap(),
        [
            "migrations/changes.spec.ts",
            "migrations/legacy/changes-migration.ts",
            "migrations/seen/seen-read.migration.ts",
            "migrations/temp-migration.ts",
        ]
    );
    assert!(repo.list_files_at(&c4, "nope").unwrap().is_empty());
    assert_eq!(repo.list_files_at(&c1, "").unwrap().len(), 6);
    assert_repository_error(
        repo.read_file_at("abc", "README.md"),
        "not a full commit id",
    );
    assert_repository_error(
        repo.read_file_at(&"0".repeat(40), "README.md"),
        "is not in repository",
    );
}

#[test]
fn toolchain_differs_per_tag() {
    let h = history();
    let repo = h.fixture.open();
    let old = repo.toolchain_at(&h.c1.to_string()).unwrap();
    assert_eq!(old.nvmrc.as_deref(), Some("14.18.3"));
    assert_eq!(old.engines_node.as_deref(), Some(">=14 <15"));
    assert_eq!(old.engines_pnpm, None);
    assert_eq!(old.package_manager.as_deref(), Some("pnpm@6.32.3"));
    assert_eq!(old.pnpm.as_deref(), Some("6.32.3"));
    let mid = repo.toolchain_at(&h.c3.to_string()).unwrap();
    assert_eq!(mid.nvmrc.as_deref(), Some("16.15.1"));
    assert_eq!(mid.engines_pnpm.as_deref(), Some("^7"));
    assert_eq!(mid.pnpm.as_deref(), Some("7.5.0"));
    let new = repo
        .toolchain_for_tag(&repo.tag("v2.0.0").unwrap())
        .unwrap();
    assert_eq!(new.nvmrc.as_deref(), Some("20.8.1"));
    assert_eq!(
        new.package_manager.as_deref(),
        Some("pnpm@9.11.0+sha512.abc")
    );
    assert_eq!(new.pnpm.as_deref(), Some("9.11.0"));
}

#[test]
fn a_malformed_package_json_names_the_tag_and_file() {
    let fixture = Fixture::new();
    let commit = fixture.commit(&[("package.json", Some("{ not json"))], BASE_TIME);
    fixture.lightweight_tag("v1.0.0", commit);
    let repo = fixture.open();
    let tag = repo.tag("v1.0.0").unwrap();
    let text = assert_repository_error(repo.toolchain_for_tag(&tag), "package.json");
    assert!(text.contains("v1.0.0"), "{text}");
    assert_repository_error(repo.toolchain_at(&tag.commit), "is not valid JSON");
}

// ---------------------------------------------------------------- map generation and checks

fn script_options() -> (Vec<String>, Vec<String>) {
    (strings(&[".ts"]), strings(&[".spec.ts"]))
}

#[test]
fn discover_scripts_attributes_each_script_to_its_first_stable_tag() {
    let h = history();
    let repo = h.fixture.open();
    let tags = repo
        .release_tags(&strings(&["v1.0.1"]), &strings(&["main"]))
        .unwrap();
    let (suffixes, excludes) = script_options();
    let scripts = discover_scripts(&repo, &tags, "migrations", &suffixes, &excludes).unwrap();
    let summary: Vec<(&str, String, &str, String, Option<String>)> = scripts
        .iter()
        .map(|s| {
            (
                s.path.as_str(),
                s.introduced_in.to_string(),
                s.tag.as_str(),
                s.last_seen_in.to_string(),
                s.removed_after.as_ref().map(Version::to_string),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            (
                "migrations/changes-migration.ts",
                "0.1.0".into(),
                "v0.1.0",
                "0.2.1".into(),
                Some("0.2.1".into())
            ),
            // First seen in the prerelease v0.2.0-rc.1: belongs to v0.2.0.
            (
                "migrations/seen/seen-read.migration.ts",
                "0.2.0".into(),
                "v0.2.0",
                "2.0.0".into(),
                None
            ),
            (
                "migrations/hotfix.migration.ts",
                "0.2.1".into(),
                "v0.2.1",
                "0.2.1".into(),
                Some("0.2.1".into())
            ),
            (
                "migrations/legacy/changes-migration.ts",
                "0.3.0".into(),
                "v0.3.0",
                "2.0.0".into(),
                None
            ),
            (
                "migrations/temp-migration.ts",
                "0.3.0".into(),
                "v0.3.0",
                "0.3.0".into(),
                Some("0.3.0".into())
            ),
        ]
    );
}

#[test]
fn generated_skeleton_parses_in_the_map_schema() {
    let h = history();
    let repo = h.fixture.open();
    let (suffixes, excludes) = script_options();
    let text = generate_map_skeleton(
        &repo,
        "migrations",
        &suffixes,
        &excludes,
        &strings(&["v1.0.1"]),
        &strings(&["main"]),
    )
    .unwrap();
    let map: RawMap = toml::from_str(&text).unwrap_or_else(|err| panic!("{err}\n{text}"));
    assert_eq!(*map.schema.get_ref(), 1);
    assert_eq!(map.project.migrations_dir, "migrations");
    assert_eq!(map.project.ignore_tags, ["v1.0.1"]);
    assert_eq!(map.project.mainline, ["main"]);
    let releases: Vec<(String, Option<String>, String, Option<String>)> = map
        .releases
        .iter()
        .map(|r| {
            (
                r.version.get_ref().clone(),
                r.tag.clone(),
                r.node.get_ref().clone(),
                r.pnpm.as_ref().map(|p| p.get_ref().clone()),
            )
        })
        .collect();
    assert_eq!(
        releases,
        [
            (
                "0.1.0".into(),
                Some("v0.1.0".into()),
                "14.18.3".into(),
                Some("6.32.3".into())
            ),
            (
                "0.2.0".into(),
                Some("v0.2.0".into()),
                "16.15.1".into(),
                Some("7.5.0".into())
            ),
            (
                "0.2.1".into(),
                Some("v0.2.1".into()),
                "16.15.1".into(),
                Some("7.5.0".into())
            ),
            (
                "0.3.0".into(),
                Some("v0.3.0".into()),
                "16.15.1".into(),
                Some("7.5.0".into())
            ),
        ]
    );
    assert!(map.releases.iter().all(|r| r.era.get_ref() == "TODO"));
    assert_eq!(map.releases[0].date.as_deref(), Some("2023-11-14"));
    assert_eq!(
        map.releases[1]
            .node_engines
            .as_ref()
            .map(|e| e.get_ref().as_str()),
        Some(">=16")
    );
    let migrations: Vec<(&str, String, &str)> = map
        .migrations
        .iter()
        .map(|m| {
            (
                m.id.get_ref().as_str(),
                m.introduced_in.as_ref().unwrap().get_ref().clone(),
                m.script.as_str(),
            )
        })
        .collect();
    assert_eq!(
        migrations,
        [
            ("changes", "0.1.0".into(), "migrations/changes-migration.ts"),
            (
                "seen-read",
                "0.2.0".into(),
                "migrations/seen/seen-read.migration.ts"
            ),
            ("hotfix", "0.2.1".into(), "migrations/hotfix.migration.ts"),
            (
                "changes-2",
                "0.3.0".into(),
                "migrations/legacy/changes-migration.ts"
            ),
            ("temp", "0.3.0".into(), "migrations/temp-migration.ts"),
        ]
    );
    assert!(map
        .migrations
        .iter()
        .all(|m| m.title == "TODO"
            && m.no_fingerprint.as_deref() == Some("TODO: write pending checks")));
    assert!(text.contains("# TODO verify"), "{text}");
    assert!(text.contains("not on the mainline"), "{text}");
}

#[test]
fn check_map_finds_each_kind_of_disagreement() {
    let h = history();
    let repo = h.fixture.open();
    let tags = repo
        .release_tags(&strings(&["v1.0.1"]), &strings(&["main"]))
        .unwrap();
    let (suffixes, excludes) = script_options();
    let expected = [
        ExpectedScript {
            id: "changes".into(),
            script: "migrations/changes-migration.ts".into(),
            introduced_in: Some(version("0.1.0")),
            removed_in: None,
        },
        ExpectedScript {
            id: "seen".into(),
            script: "migrations/seen/seen-read.migration.ts".into(),
            introduced_in: Some(version("0.1.0")),
            removed_in: None,
        },
        ExpectedScript {
            id: "ghost".into(),
            script: "migrations/ghost.ts".into(),
            introduced_in: Some(version("0.3.0")),
            removed_in: None,
        },
        ExpectedScript {
            id: "legacy".into(),
            script: "migrations/legacy/changes-migration.ts".into(),
            introduced_in: Some(version("0.2.5")),
            removed_in: None,
        },
    ];
    let found = check_map(&repo, &expected, &tags, "migrations", &suffixes, &excludes).unwrap();
    assert_eq!(
        found,
        [
            Disagreement::NoLongerExists {
                id: "changes".into(),
                path: "migrations/changes-migration.ts".into(),
                last_seen_in: Some(version("0.2.1")),
            },
            Disagreement::WrongRelease {
                id: "seen".into(),
                path: "migrations/seen/seen-read.migration.ts".into(),
                map_says: Some(version("0.1.0")),
                repo_says: version("0.2.0"),
            },
            Disagreement::NoLongerExists {
                id: "ghost".into(),
                path: "migrations/ghost.ts".into(),
                last_seen_in: None,
            },
            Disagreement::TagMissing {
                id: "legacy".into(),
                version: version("0.2.5"),
            },
            Disagreement::WrongRelease {
                id: "legacy".into(),
                path: "migrations/legacy/changes-migration.ts".into(),
                map_says: Some(version("0.2.5")),
                repo_says: version("0.3.0"),
            },
            Disagreement::MissingFromMap {
                path: "migrations/hotfix.migration.ts".into(),
                introduced_in: version("0.2.1"),
            },
            Disagreement::MissingFromMap {
                path: "migrations/temp-migration.ts".into(),
                introduced_in: version("0.3.0"),
            },
        ]
    );
    assert!(found[0].to_string().contains("removed after 0.2.1"));
    assert!(found[2].to_string().contains("never existed"));
}

#[test]
fn check_map_is_quiet_when_the_map_agrees() {
    let h = history();
    let repo = h.fixture.open();
    let tags = repo.release_tags(&strings(&["v1.0.1"]), &[]).unwrap();
    let (suffixes, excludes) = script_options();
    let discovered = discover_scripts(&repo, &tags, "migrations", &suffixes, &excludes).unwrap();
    let expected: Vec<ExpectedScript> = discovered
        .iter()
        .filter(|s| s.removed_after.is_none())
        .map(|s| ExpectedScript {
            id: s.path.clone(),
            script: s.path.clone(),
            introduced_in: Some(s.introduced_in.clone()),
            removed_in: None,
        })
        .collect();
    let found = check_map(&repo, &expected, &tags, "migrations", &suffixes, &excludes).unwrap();
    assert!(
        found
            .iter()
            .all(|d| matches!(d, Disagreement::MissingFromMap { .. })),
        "{found:?}"
    );
    assert_eq!(
        found.len(),
        3,
        "only the removed scripts are unmapped: {found:?}"
    );
}

#[test]
fn check_map_accepts_a_recorded_removal_and_names_a_wrong_one() {
    let h = history();
    let repo = h.fixture.open();
    let tags = repo
        .release_tags(&strings(&["v1.0.1"]), &strings(&["main"]))
        .unwrap();
    let (suffixes, excludes) = script_options();
    let changes = |removed_in: Option<&str>| ExpectedScript {
        id: "changes".into(),
        script: "migrations/changes-migration.ts".into(),
        introduced_in: Some(version("0.1.0")),
        removed_in: removed_in.map(version),
    };
    let only_changes = |found: Vec<Disagreement>| -> Vec<Disagreement> {
        found
            .into_iter()
            .filter(|d| !matches!(d, Disagreement::MissingFromMap { .. }))
            .collect()
    };
    // The script leaves the tree after 0.2.1: the next stable release is where it left.
    let recorded = check_map(
        &repo,
        &[changes(Some("0.3.0"))],
        &tags,
        "migrations",
        &suffixes,
        &excludes,
    )
    .unwrap();
    assert_eq!(only_changes(recorded), []);
    let wrong = check_map(
        &repo,
        &[changes(Some("0.2.1"))],
        &tags,
        "migrations",
        &suffixes,
        &excludes,
    )
    .unwrap();
    assert_eq!(
        only_changes(wrong.clone()),
        [Disagreement::WrongRemoval {
            id: "changes".into(),
            path: "migrations/changes-migration.ts".into(),
            map_says: version("0.2.1"),
            repo_says: Some(version("0.3.0")),
        }]
    );
    assert!(
        wrong[0].to_string().contains("set removed_in = \"0.3.0\""),
        "{}",
        wrong[0]
    );
}

// ---------------------------------------------------------------- worktrees

/// Everything of the user's repository that worktree operations must leave alone.
#[derive(Debug, PartialEq)]
struct UserRepoSnapshot {
    head: String,
    refs: Vec<(String, String)>,
    index: Vec<u8>,
    config: Vec<u8>,
    status: Vec<(String, u32)>,
    git_dir_entries: Vec<String>,
}

fn snapshot(path: &Path) -> UserRepoSnapshot {
    let repo = Repository::open(path).unwrap();
    let head = repo.find_reference("HEAD").unwrap();
    let head = head
        .symbolic_target()
        .map(str::to_string)
        .unwrap_or_else(|| head.target().unwrap().to_string());
    let mut refs: Vec<(String, String)> = repo
        .references()
        .unwrap()
        .map(|r| {
            let r = r.unwrap();
            let target = r
                .target()
                .map(|t| t.to_string())
                .or_else(|| r.symbolic_target().map(str::to_string))
                .unwrap_or_default();
            (r.name().unwrap().to_string(), target)
        })
        .collect();
    refs.sort();
    let mut options = git2::StatusOptions::new();
    options.include_untracked(true);
    let status = repo
        .statuses(Some(&mut options))
        .unwrap()
        .iter()
        .map(|e| (e.path().unwrap().to_string(), e.status().bits()))
        .collect();
    let mut git_dir_entries: Vec<String> = std::fs::read_dir(repo.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    git_dir_entries.sort();
    UserRepoSnapshot {
        head,
        refs,
        index: std::fs::read(repo.path().join("index")).unwrap(),
        config: std::fs::read(repo.path().join("config")).unwrap(),
        status,
        git_dir_entries,
    }
}

fn modified_time(path: &Path) -> std::time::SystemTime {
    std::fs::metadata(path).unwrap().modified().unwrap()
}

#[test]
fn ensure_creates_then_reuses_without_rewriting_files() {
    let h = history();
    let repo = h.fixture.open();
    let cache = TempDir::new().unwrap();
    let worktrees = Worktrees::new(cache.path());
    let tag = repo.tag("v0.1.0").unwrap();
    assert_eq!(
        worktrees.status(&repo, &tag).unwrap(),
        WorktreeStatus::Missing
    );

    let wt = worktrees.ensure(&repo, &tag).unwrap();
    assert!(wt.path.starts_with(cache.path().join("worktrees")));
    assert!(wt.path.ends_with("v0.1.0"));
    assert_eq!(wt.commit, h.c1.to_string());
    let script = wt.path.join("migrations/changes-migration.ts");
    assert_eq!(std::fs::read_to_string(&script).unwrap(), "// changes\n");
    assert!(
        wt.path.join(".git").is_file(),
        "git works inside the worktree"
    );
    assert_eq!(
        worktrees.status(&repo, &tag).unwrap(),
        WorktreeStatus::Clean {
            commit: h.c1.to_string()
        }
    );

    let before = modified_time(&script);
    let again = worktrees.ensure(&repo, &tag).unwrap();
    assert_eq!(again, wt);
    assert_eq!(
        modified_time(&script),
        before,
        "reuse must not rewrite files"
    );
}

#[test]
fn dirty_worktrees_are_refused_then_repaired_keeping_ignored_files() {
    let h = history();
    let repo = h.fixture.open();
    let cache = TempDir::new().unwrap();
    let worktrees = Worktrees::new(cache.path());
    let tag = repo.tag("v0.2.0").unwrap();
    let wt = worktrees.ensure(&repo, &tag).unwrap();

    // upstep's own files and installed dependencies never count as changes.
    std::fs::write(wt.path.join(".upstep-shim.ts"), "shim").unwrap();
    std::fs::write(wt.path.join("migrations/.upstep-run.ts"), "shim").unwrap();
    std::fs::create_dir_all(wt.path.join("node_modules/pkg")).unwrap();
    std::fs::write(wt.path.join("node_modules/pkg/index.js"), "x").unwrap();
    assert!(matches!(
        worktrees.status(&repo, &tag).unwrap(),
        WorktreeStatus::Clean { .. }
    ));

    std::fs::write(wt.path.join("README.md"), "edited\n").unwrap();
    std::fs::write(wt.path.join("stray.txt"), "stray\n").unwrap();
    match worktrees.status(&repo, &tag).unwrap() {
        WorktreeStatus::Dirty { files, total } => {
            assert_eq!(files, ["README.md", "stray.txt"]);
            assert_eq!(total, 2);
        }
        other => panic!("expected Dirty, got {other:?}"),
    }
    let text = assert_repository_error(worktrees.ensure(&repo, &tag), "local changes");
    assert!(
        text.contains("--repair") && text.contains("README.md"),
        "{text}"
    );

    let repaired = worktrees.repair(&repo, &tag).unwrap();
    assert_eq!(
        std::fs::read_to_string(repaired.path.join("README.md")).unwrap(),
        "fixture\n"
    );
    assert!(!repaired.path.join("stray.txt").exists());
    assert!(repaired.path.join("node_modules/pkg/index.js").exists());
    assert!(repaired.path.join(".upstep-shim.ts").exists());
    assert!(matches!(
        worktrees.status(&repo, &tag).unwrap(),
        WorktreeStatus::Clean { .. }
    ));
}

#[test]
fn a_deleted_worktree_is_missing_and_recreated() {
    let h = history();
    let repo = h.fixture.open();
    let cache = TempDir::new().unwrap();
    let worktrees = Worktrees::new(cache.path());
    let tag = repo.tag("v0.3.0").unwrap();
    let wt = worktrees.ensure(&repo, &tag).unwrap();
    std::fs::remove_dir_all(&wt.path).unwrap();
    assert_eq!(
        worktrees.status(&repo, &tag).unwrap(),
        WorktreeStatus::Missing
    );
    let again = worktrees.ensure(&repo, &tag).unwrap();
    assert!(again
        .path
        .join("migrations/legacy/changes-migration.ts")
        .exists());
    assert!(matches!(
        worktrees.status(&repo, &tag).unwrap(),
        WorktreeStatus::Clean { .. }
    ));
}

#[test]
fn a_worktree_without_its_completion_stamp_is_damaged() {
    let h = history();
    let repo = h.fixture.open();
    let cache = TempDir::new().unwrap();
    let worktrees = Worktrees::new(cache.path());
    let tag = repo.tag("v0.1.0").unwrap();
    let wt = worktrees.ensure(&repo, &tag).unwrap();
    std::fs::remove_file(wt.git_dir().join("complete")).unwrap();
    assert!(matches!(
        worktrees.status(&repo, &tag).unwrap(),
        WorktreeStatus::Damaged { .. }
    ));
    let text = assert_repository_error(worktrees.ensure(&repo, &tag), "damaged");
    assert!(text.contains("--repair"), "{text}");
    worktrees.repair(&repo, &tag).unwrap();
    assert!(matches!(
        worktrees.status(&repo, &tag).unwrap(),
        WorktreeStatus::Clean { .. }
    ));

    // Lost git metadata is damage too, and repair rebuilds it.
    std::fs::remove_dir_all(wt.git_dir()).unwrap();
    assert!(matches!(
        worktrees.status(&repo, &tag).unwrap(),
        WorktreeStatus::Damaged { .. }
    ));
    worktrees.repair(&repo, &tag).unwrap();
    assert!(matches!(
        worktrees.status(&repo, &tag).unwrap(),
        WorktreeStatus::Clean { .. }
    ));
}

#[test]
fn switch_moves_a_worktree_rewriting_only_changed_files() {
    let h = history();
    let repo = h.fixture.open();
    let cache = TempDir::new().unwrap();
    let worktrees = Worktrees::new(cache.path());
    let old = repo.tag("v0.1.0").unwrap();
    let new = repo.tag("v2.0.0").unwrap();
    let wt = worktrees.ensure(&repo, &old).unwrap();
    std::fs::create_dir_all(wt.path.join("node_modules")).unwrap();
    let readme_time = modified_time(&wt.path.join("README.md"));

    let moved = worktrees.switch(&wt, &repo, &new).unwrap();
    assert_eq!(moved.path, worktrees.path_for(&repo, "v2.0.0"));
    assert_eq!(moved.commit, h.c5.to_string());
    assert!(moved
        .path
        .join("migrations/legacy/changes-migration.ts")
        .exists());
    assert!(!moved.path.join("migrations/changes-migration.ts").exists());
    assert_eq!(
        std::fs::read_to_string(moved.path.join(".nvmrc")).unwrap(),
        "v20.8.1\n"
    );
    assert!(
        moved.path.join("node_modules").is_dir(),
        "dependencies kept"
    );
    assert_eq!(modified_time(&moved.path.join("README.md")), readme_time);
    assert_eq!(
        worktrees.status(&repo, &old).unwrap(),
        WorktreeStatus::Missing
    );
    assert!(matches!(
        worktrees.status(&repo, &new).unwrap(),
        WorktreeStatus::Clean { .. }
    ));

    // Moving onto a tag that already has a worktree is refused.
    worktrees.ensure(&repo, &old).unwrap();
    assert_repository_error(worktrees.switch(&moved, &repo, &old), "already exists");
}

#[test]
fn a_moved_tag_is_noticed_and_followed() {
    let h = history();
    let repo = h.fixture.open();
    let cache = TempDir::new().unwrap();
    let worktrees = Worktrees::new(cache.path());
    let tag = repo.tag("v0.2.0").unwrap();
    worktrees.ensure(&repo, &tag).unwrap();
    let moved_tag = TagInfo {
        commit: h.c4.to_string(),
        ..tag.clone()
    };
    assert_eq!(
        worktrees.status(&repo, &moved_tag).unwrap(),
        WorktreeStatus::AtOtherCommit {
            commit: h.c3.to_string()
        }
    );
    let wt = worktrees.ensure(&repo, &moved_tag).unwrap();
    assert!(wt.path.join("migrations/temp-migration.ts").exists());
    assert!(matches!(
        worktrees.status(&repo, &moved_tag).unwrap(),
        WorktreeStatus::Clean { .. }
    ));
}

#[test]
fn remove_deletes_the_worktree() {
    let h = history();
    let repo = h.fixture.open();
    let cache = TempDir::new().unwrap();
    let worktrees = Worktrees::new(cache.path());
    let tag = repo.tag("v0.1.0").unwrap();
    let wt = worktrees.ensure(&repo, &tag).unwrap();
    worktrees.remove(&repo, &tag).unwrap();
    assert!(!wt.path.exists() && !wt.git_dir().exists());
    assert_eq!(
        worktrees.status(&repo, &tag).unwrap(),
        WorktreeStatus::Missing
    );
    worktrees.remove(&repo, &tag).unwrap();
}

#[test]
fn worktree_operations_never_touch_the_users_repository() {
    let h = history();
    // A stash and a local change, so there is something to lose.
    let mut user = Repository::open(h.fixture.path()).unwrap();
    std::fs::write(h.fixture.path().join("README.md"), "stashed\n").unwrap();
    user.stash_save(&signature(BASE_TIME), "wip", None).unwrap();
    std::fs::write(h.fixture.path().join("README.md"), "uncommitted\n").unwrap();
    std::fs::write(h.fixture.path().join("untracked.txt"), "mine\n").unwrap();
    drop(user);
    let before = snapshot(h.fixture.path());

    let repo = h.fixture.open();
    let cache = TempDir::new().unwrap();
    let worktrees = Worktrees::new(cache.path());
    let v1 = repo.tag("v0.1.0").unwrap();
    let v2 = repo.tag("v0.2.1").unwrap();
    let v3 = repo.tag("v0.3.0").unwrap();
    let wt = worktrees.ensure(&repo, &v1).unwrap();
    worktrees.ensure(&repo, &v1).unwrap();
    std::fs::write(wt.path.join("README.md"), "dirty\n").unwrap();
    worktrees.status(&repo, &v1).unwrap();
    let wt = worktrees.repair(&repo, &v1).unwrap();
    let wt = worktrees.switch(&wt, &repo, &v2).unwrap();
    let wt = worktrees.switch(&wt, &repo, &v3).unwrap();
    std::fs::remove_file(wt.git_dir().join("complete")).unwrap();
    worktrees.repair(&repo, &v3).unwrap();
    worktrees.remove(&repo, &v3).unwrap();

    assert_eq!(snapshot(h.fixture.path()), before);
    assert_eq!(
        std::fs::read_to_string(h.fixture.path().join("README.md")).unwrap(),
        "uncommitted\n"
    );
}

// ---------------------------------------------------------------- cloning

fn file_url(path: &Path) -> String {
    format!("file://{}", path.display())
}

fn cached_repos(cache: &Path) -> Vec<PathBuf> {
    match std::fs::read_dir(cache.join("repos")) {
        Ok(entries) => entries.map(|e| e.unwrap().path()).collect(),
        Err(_) => Vec::new(),
    }
}

#[test]
fn a_file_url_is_cloned_into_the_cache_then_fetched() {
    let h = history();
    let cache = TempDir::new().unwrap();
    let url = file_url(h.fixture.path());
    let repo =
        GitRepo::open_or_clone(&RepoLocation::from(url.as_str()), cache.path(), false).unwrap();
    assert!(repo.path().starts_with(cache.path().join("repos")));
    assert_eq!(cached_repos(cache.path()).len(), 1, "no partial clone left");
    assert_eq!(repo.tag("v0.3.0").unwrap().commit, h.c4.to_string());
    let tags = repo
        .release_tags(&strings(&["v1.0.1"]), &strings(&["main"]))
        .unwrap();
    assert_eq!(tags.len(), 6);
    assert_eq!(tags[3].on_mainline, Some(false), "v0.2.1 via origin/main");

    let later = h
        .fixture
        .commit(&[("README.md", Some("next\n"))], BASE_TIME + 9 * DAY);
    h.fixture
        .annotated_tag("v2.0.1", later, BASE_TIME + 9 * DAY);
    let again =
        GitRepo::open_or_clone(&RepoLocation::from(url.as_str()), cache.path(), false).unwrap();
    assert_eq!(again.path(), repo.path());
    assert_eq!(again.tag("v2.0.1").unwrap().commit, later.to_string());

    // Worktrees work from a cached clone too.
    let worktrees = Worktrees::new(cache.path());
    let wt = worktrees
        .ensure(&again, &again.tag("v2.0.1").unwrap())
        .unwrap();
    assert_eq!(
        std::fs::read_to_string(wt.path.join("README.md")).unwrap(),
        "next\n"
    );
}

#[test]
fn a_local_path_opens_directly() {
    let h = history();
    let cache = TempDir::new().unwrap();
    let spec = h.fixture.path().to_string_lossy().into_owned();
    let repo = GitRepo::open_or_clone(&RepoLocation::from(spec), cache.path(), false).unwrap();
    assert_eq!(repo.tag("v0.1.0").unwrap().commit, h.c1.to_string());
    assert!(cached_repos(cache.path()).is_empty());
}

#[test]
fn an_unreachable_url_is_one_clear_error() {
    let cache = TempDir::new().unwrap();
    let text = assert_repository_error(
        GitRepo::open_or_clone(
            &RepoLocation::from("file:///nonexistent/repo"),
            cache.path(),
            false,
        ),
        "cannot clone file:///nonexistent/repo",
    );
    assert!(
        text.contains("does not appear to be a git repository"),
        "{text}"
    );
    assert!(!text.contains('\n') || text.lines().count() == 2, "{text}");
    assert!(cached_repos(cache.path()).is_empty(), "nothing left behind");
}

#[test]
fn credentials_in_a_url_are_never_shown() {
    let cache = TempDir::new().unwrap();
    // Port 1 on loopback refuses at once; git must not print the password either.
    let text = assert_repository_error(
        GitRepo::open_or_clone(
            &RepoLocation::from("https://me:hunter2@127.0.0.1:1/repo.git"),
            cache.path(),
            false,
        ),
        "cannot clone",
    );
    assert!(!text.contains("hunter2"), "{text}");
    assert!(text.contains("me:****@127.0.0.1"), "{text}");
}

#[test]
fn worktree_paths_are_absolute_even_for_a_relative_cache() {
    let h = history();
    let worktrees = Worktrees::new(Path::new("relative-cache"));
    assert!(worktrees
        .path_for(&h.fixture.open(), "v0.1.0")
        .is_absolute());
}

#[test]
fn checkout_filters_apply_when_the_tree_has_gitattributes() {
    let fixture = Fixture::new();
    let first = fixture.commit(
        &[
            (".gitattributes", Some("*.txt ident\n")),
            ("id.txt", Some("$Id$\n")),
            ("plain.md", Some("$Id$\n")),
        ],
        BASE_TIME,
    );
    fixture.lightweight_tag("v1.0.0", first);
    let second = fixture.commit(&[("id.txt", Some("$Id$ two\n"))], BASE_TIME + DAY);
    fixture.lightweight_tag("v1.1.0", second);
    let repo = fixture.open();
    let cache = TempDir::new().unwrap();
    let worktrees = Worktrees::new(cache.path());
    let wt = worktrees
        .ensure(&repo, &repo.tag("v1.0.0").unwrap())
        .unwrap();
    let id = std::fs::read_to_string(wt.path.join("id.txt")).unwrap();
    assert!(id.starts_with("$Id: "), "{id}");
    assert_eq!(
        std::fs::read_to_string(wt.path.join("plain.md")).unwrap(),
        "$Id$\n"
    );
    let tag = repo.tag("v1.1.0").unwrap();
    let wt = worktrees.switch(&wt, &repo, &tag).unwrap();
    let id = std::fs::read_to_string(wt.path.join("id.txt")).unwrap();
    assert!(id.starts_with("$Id: ") && id.ends_with(" two\n"), "{id}");
    assert!(matches!(
        worktrees.status(&repo, &tag).unwrap(),
        WorktreeStatus::Clean { .. }
    ));
}

/// Every file under `root` (but `.git`) with its content, or link target, and exec bit.
fn tree_listing(root: &Path) -> Vec<(String, String, bool)> {
    use std::os::unix::fs::PermissionsExt;
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let relative = path
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            if relative == ".git" {
                continue;
            }
            let meta = std::fs::symlink_metadata(&path).unwrap();
            if meta.file_type().is_symlink() {
                let target = std::fs::read_link(&path).unwrap();
                out.push((relative, format!("-> {}", target.display()), false));
            } else if meta.is_dir() {
                out.push((relative, "<dir>".into(), false));
                stack.push(path);
            } else {
                let content = std::fs::read_to_string(&path).unwrap();
                out.push((relative, content, meta.permissions().mode() & 0o100 != 0));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn switch_handles_modes_links_and_files_becoming_folders() {
    use std::os::unix::fs::PermissionsExt;
    let fixture = Fixture::new();
    let root = fixture.path().to_path_buf();
    std::fs::create_dir_all(root.join("gone/deep")).unwrap();
    std::fs::write(root.join("gone/deep/file.txt"), "bye\n").unwrap();
    std::fs::write(root.join("run.sh"), "#!/bin/sh\n").unwrap();
    std::os::unix::fs::symlink("run.sh", root.join("link")).unwrap();
    std::fs::write(root.join("becomes-dir"), "file\n").unwrap();
    std::fs::write(root.join("long.txt"), "a much longer first version\n").unwrap();
    let first = fixture.commit(
        &[
            ("gone/deep/file.txt", Some("bye\n")),
            ("run.sh", Some("#!/bin/sh\n")),
            ("becomes-dir", Some("file\n")),
            ("long.txt", Some("a much longer first version\n")),
        ],
        BASE_TIME,
    );
    // The symlink is staged by path (its content is the link target).
    let mut index = fixture.repo.index().unwrap();
    index.add_path(Path::new("link")).unwrap();
    index.write().unwrap();
    let tree = fixture.repo.find_tree(index.write_tree().unwrap()).unwrap();
    let parent = fixture.repo.find_commit(first).unwrap();
    let sig = signature(BASE_TIME);
    let first = fixture
        .repo
        .commit(Some("HEAD"), &sig, &sig, "link", &tree, &[&parent])
        .unwrap();
    fixture.lightweight_tag("v1.0.0", first);

    std::fs::set_permissions(root.join("run.sh"), std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut index = fixture.repo.index().unwrap();
    index.add_path(Path::new("run.sh")).unwrap();
    index.write().unwrap();
    let second = fixture.commit(
        &[
            ("gone/deep/file.txt", None),
            ("becomes-dir", None),
            ("becomes-dir/inner.txt", Some("inside\n")),
            ("long.txt", Some("short\n")),
            ("link", None),
            ("link", Some("now a file\n")),
        ],
        BASE_TIME + DAY,
    );
    fixture.lightweight_tag("v2.0.0", second);

    let repo = fixture.open();
    let old = repo.tag("v1.0.0").unwrap();
    let new = repo.tag("v2.0.0").unwrap();
    let cache = TempDir::new().unwrap();
    let worktrees = Worktrees::new(cache.path());
    let wt = worktrees.ensure(&repo, &old).unwrap();
    let before_switch = tree_listing(&wt.path);
    assert!(before_switch.contains(&("link".into(), "-> run.sh".into(), false)));
    let switched = worktrees.switch(&wt, &repo, &new).unwrap();
    assert!(matches!(
        worktrees.status(&repo, &new).unwrap(),
        WorktreeStatus::Clean { .. }
    ));
    let fresh_cache = TempDir::new().unwrap();
    let fresh = Worktrees::new(fresh_cache.path())
        .ensure(&repo, &new)
        .unwrap();
    assert_eq!(tree_listing(&switched.path), tree_listing(&fresh.path));
    assert!(
        !switched.path.join("gone").exists(),
        "emptied folders are removed"
    );
    assert!(tree_listing(&switched.path).contains(&("run.sh".into(), "#!/bin/sh\n".into(), true)));

    // And back again.
    let back = worktrees.switch(&switched, &repo, &old).unwrap();
    assert_eq!(tree_listing(&back.path), before_switch);
    assert!(matches!(
        worktrees.status(&repo, &old).unwrap(),
        WorktreeStatus::Clean { .. }
    ));
}
