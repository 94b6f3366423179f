//! `plan --repo`, `map generate` and `map check` against a fixture project's repository.

use assert_cmd::Command;

use crate::support::FixtureProject;

fn upstep() -> Command {
    let mut cmd = Command::cargo_bin("upstep").unwrap();
    cmd.env("NO_COLOR", "1").env(
        "UPSTEP_CACHE_DIR",
        std::env::temp_dir().join("upstep-it-cache"),
    );
    cmd
}

#[test]
fn plan_with_repo_shows_each_script_present_at_its_tag() {
    let project = FixtureProject::new();
    let out = upstep()
        .args([
            "plan",
            "--map",
            project.map_path.to_str().unwrap(),
            "--from",
            "1.0.0",
            "--json",
        ])
        .args(["--repo", project.repo_path().to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let groups = json["groups"].as_array().unwrap();
    assert_eq!(groups.len(), 2);
    for group in groups {
        assert_eq!(group["commit"].as_str().unwrap().len(), 40);
        for step in group["steps"].as_array().unwrap() {
            assert_eq!(step["script_at_ref"], true, "{step}");
        }
    }
}

#[test]
fn plan_with_repo_fails_clearly_when_a_script_is_missing_at_its_tag() {
    let project = FixtureProject::new();
    // Claim 004-fails.js already shipped in v1.1.0: that tag's tree does not have it.
    let map = std::fs::read_to_string(&project.map_path)
        .unwrap()
        .replacen(
            "id = \"fails\"\ntitle = \"Fails on demand\"\nintroduced_in = \"1.2.0\"",
            "id = \"fails\"\ntitle = \"Fails on demand\"\nintroduced_in = \"1.1.0\"",
            1,
        );
    let wrong = project.work.path().join("wrong.toml");
    std::fs::write(&wrong, map).unwrap();
    let out = upstep()
        .args(["plan", "--map", wrong.to_str().unwrap(), "--from", "1.0.0"])
        .args(["--repo", project.repo_path().to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(4));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("fails (migrations/004-fails.js) at v1.1.0"),
        "{stderr}"
    );
    assert!(stderr.contains("fix:"), "{stderr}");

    // map check names the same disagreement.
    let out = upstep()
        .args([
            "map",
            "check",
            "--map",
            wrong.to_str().unwrap(),
            "--repo",
            project.repo_path().to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("004-fails.js"), "{stderr}");
}

#[test]
fn a_missing_tag_or_repository_is_a_repository_error() {
    let project = FixtureProject::new();
    let map = std::fs::read_to_string(&project.map_path)
        .unwrap()
        .replace("version = \"1.2.0\"", "version = \"1.3.0\"")
        .replace("introduced_in = \"1.2.0\"", "introduced_in = \"1.3.0\"");
    let path = project.work.path().join("future.toml");
    std::fs::write(&path, map).unwrap();
    let out = upstep()
        .args([
            "plan",
            "--map",
            path.to_str().unwrap(),
            "--from",
            "1.1.0",
            "--repo",
            project.repo_path().to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(4));
    assert!(String::from_utf8_lossy(&out.stderr).contains("tag v1.3.0 is not in repository"));

    let not_a_repo = tempfile::tempdir().unwrap();
    let out = upstep()
        .args([
            "plan",
            "--from",
            "v0.17.0",
            "--repo",
            not_a_repo.path().to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(4),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn map_generate_and_check_agree_with_the_fixture() {
    let project = FixtureProject::new();
    let out = upstep()
        .args([
            "map",
            "generate",
            "--map",
            project.map_path.to_str().unwrap(),
            "--repo",
            project.repo_path().to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let skeleton: toml::Value = toml::from_str(&String::from_utf8_lossy(&out.stdout)).unwrap();
    let migrations = skeleton["migrations"].as_array().unwrap();
    assert_eq!(migrations.len(), 6);
    let introduced: Vec<&str> = migrations
        .iter()
        .map(|m| m["introduced_in"].as_str().unwrap())
        .collect();
    assert_eq!(
        introduced,
        ["1.0.0", "1.1.0", "1.1.0", "1.2.0", "1.2.0", "1.2.0"]
    );

    let out = upstep()
        .args([
            "map",
            "check",
            "--map",
            project.map_path.to_str().unwrap(),
            "--repo",
            project.repo_path().to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("agrees with"));
}
