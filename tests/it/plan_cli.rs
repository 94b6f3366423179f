//! `upstep plan` / `upgrade --plan` / `map validate|show` as a user runs them.

use assert_cmd::Command;

fn upstep() -> Command {
    let mut cmd = Command::cargo_bin("upstep").expect("the upstep binary is built");
    // Output must not depend on the caller's environment.
    cmd.env("NO_COLOR", "1")
        .env_remove("UPSTEP_MAP")
        .env_remove("UPSTEP_LOG");
    cmd
}

fn stdout_of(args: &[&str]) -> String {
    let out = upstep().args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Every failure is one clean message with a fix and the documented code, never a panic.
fn assert_user_error(args: &[&str], code: i32, needles: &[&str]) {
    let assert = upstep().args(args).assert().code(code).stdout("");
    let stderr = String::from_utf8(assert.get_output().stderr.clone()).unwrap();
    assert!(
        !stderr.contains("panicked") && !stderr.contains("RUST_BACKTRACE"),
        "{stderr}"
    );
    for needle in needles {
        assert!(
            stderr.contains(needle),
            "{args:?}: expected {needle:?} in {stderr}"
        );
    }
}

#[test]
fn plan_text_snapshot() {
    insta::assert_snapshot!(stdout_of(&["plan", "--from", "v0.17.0", "--to", "v2.0.0"]));
}

#[test]
fn plan_json_snapshot() {
    let text = stdout_of(&["plan", "--from", "v0.17.0", "--to", "v2.0.0", "--json"]);
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(json["schema"], "upstep.plan/1");
    insta::assert_json_snapshot!(json);
}

#[test]
fn upgrade_plan_is_the_same_as_plan() {
    let args = ["--from", "0.16", "--to", "v0.20.0"];
    let plan = stdout_of(&[&["plan"][..], &args].concat());
    let upgrade = stdout_of(&[&["upgrade", "--plan"][..], &args].concat());
    assert_eq!(plan, upgrade);
}

#[test]
fn partial_versions_mean_the_newest_known_patch() {
    let out = stdout_of(&["plan", "--from", "0.17", "--to", "0.19", "--json"]);
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(json["from"], "v0.17.0");
    assert_eq!(json["to"], "v0.19.0");
}

fn embedded() -> upstep::release_map::ReleaseMap {
    upstep::release_map::load(None).expect("the embedded map is valid")
}

#[test]
fn default_target_is_the_newest_verified_release() {
    let map = embedded();
    let target = map.default_target(false).unwrap().version.clone();
    let out = stdout_of(&["plan", "--from", "v0.24.0", "--json"]);
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(json["to"], format!("v{target}"));
    // An unverified release newer than it is a target only when named.
    let unverified: Vec<&upstep::release_map::Release> = map
        .releases
        .iter()
        .filter(|r| !r.verified && r.version > target)
        .collect();
    for release in &unverified {
        let out = stdout_of(&["plan", "--from", "v2.0.0", "--to", &release.tag, "--json"]);
        let json: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(json["to"], release.tag);
        for group in json["groups"].as_array().unwrap() {
            let version = semver::Version::parse(group["version"].as_str().unwrap()).unwrap();
            let verified = map.release(&version).unwrap().verified;
            assert_eq!(group["verified"], verified, "{group}");
        }
    }
    // Data already past the default target: nothing to do, not a "downgrade".
    let newest = map.newest_release().unwrap().tag.clone();
    let out = stdout_of(&["plan", "--from", &newest]);
    assert!(out.contains("Nothing to do"), "{out}");
}

#[test]
fn a_version_between_releases_is_valid() {
    // v0.17.1 is no release in the map; the data can still be at it.
    let out = stdout_of(&["plan", "--from", "v0.17.1", "--to", "v0.18.0", "--json"]);
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(json["steps_total"], 2);
}

#[test]
fn an_empty_plan_is_nothing_to_do_not_an_error() {
    let out = stdout_of(&["plan", "--from", "v3.12.0", "--to", "v3.15.0"]);
    assert!(out.contains("Nothing to do"), "{out}");
    // v0.22.0 is a toolchain milestone that introduces no script.
    let out = stdout_of(&["plan", "--from", "v0.20.0", "--to", "v0.22.0"]);
    assert!(out.contains("Nothing to do"), "{out}");
    let out = stdout_of(&["plan", "--from", "v0.20.0", "--to", "v0.20.0"]);
    assert!(out.contains("Nothing to do"), "{out}");
}

#[test]
fn unreleased_scripts_need_the_flag() {
    // The embedded map has none any more (drop-logs-collection ships in v2.1.1): make one.
    let dir = tempfile::tempdir().unwrap();
    let map = dir.path().join("unreleased.toml");
    let text = upstep_map().replacen(
        "introduced_in = \"2.1.1\"\nscript = \"apps/api/migrations/deleteLogs/dropLogsCollection.ts\"",
        "unreleased_ref = \"next\"\nscript = \"apps/api/migrations/deleteLogs/dropLogsCollection.ts\"",
        1,
    );
    assert!(text.contains("unreleased_ref = \"next\""));
    std::fs::write(&map, text).unwrap();
    let map = map.to_str().unwrap();
    let without = stdout_of(&[
        "plan", "--map", map, "--from", "v2.0.0", "--to", "v3.15.0", "--json",
    ]);
    assert!(!without.contains("\"id\": \"drop-logs-collection\""));
    let with = stdout_of(&[
        "plan",
        "--map",
        map,
        "--from",
        "v2.0.0",
        "--include-unreleased",
        "--json",
    ]);
    let json: serde_json::Value = serde_json::from_str(&with).unwrap();
    assert_eq!(
        json["to"], "v3.15.0",
        "unreleased scripts go past every release"
    );
    let last = json["groups"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["unreleased"], true);
    assert_eq!(last["steps"][0]["id"], "drop-logs-collection");
}

#[test]
fn bad_versions_are_usage_errors() {
    assert_user_error(
        &["plan", "--from", "banana"],
        2,
        &["--from \"banana\" is not a version", "fix:"],
    );
    assert_user_error(
        &["plan", "--from", "v0.17.0", "--to", "1.2.3.4"],
        2,
        &["--to", "fix:"],
    );
    assert_user_error(&["plan"], 2, &["no source version", "--from"]);
}

#[test]
fn a_source_newer_than_the_map_says_the_map_may_be_out_of_date() {
    assert_user_error(
        &["plan", "--from", "v9.0.0"],
        2,
        &["newer than every release", "out of date", "--map"],
    );
    assert_user_error(
        &["plan", "--from", "v0.17.0", "--to", "v4"],
        2,
        &["newer than every release", "out of date"],
    );
}

#[test]
fn a_downgrade_is_refused() {
    assert_user_error(
        &["plan", "--from", "v2.0.0", "--to", "v0.18.0"],
        2,
        &["downgrades are not supported"],
    );
}

#[test]
fn malformed_and_invalid_maps_name_file_line_and_fix() {
    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join("broken.toml");
    std::fs::write(&broken, "schema = 1\n[project\nname = \"x\"\n").unwrap();
    let broken_s = broken.to_str().unwrap();
    assert_user_error(
        &["plan", "--map", broken_s, "--from", "v1.0.0"],
        3,
        &["broken.toml:2:", "hint:"],
    );
    assert_user_error(&["map", "validate", broken_s], 3, &["broken.toml:2:"]);

    let invalid = dir.path().join("invalid.toml");
    let text = upstep_map().replacen("introduced_in = \"0.9.0\"", "introduced_in = \"0.9.9\"", 1);
    std::fs::write(&invalid, &text).unwrap();
    let line = text
        .lines()
        .position(|l| l.contains("introduced_in = \"0.9.9\""))
        .unwrap()
        + 1;
    let invalid_s = invalid.to_str().unwrap();
    assert_user_error(
        &["map", "validate", invalid_s],
        3,
        &[
            &format!("invalid.toml:{line}:"),
            "not a release of this map",
            "hint:",
        ],
    );

    let missing = dir.path().join("missing.toml");
    assert_user_error(
        &["plan", "--map", missing.to_str().unwrap(), "--from", "v1"],
        3,
        &["cannot read release map", "fix:"],
    );
}

#[test]
fn map_validate_and_show_work_on_the_embedded_map() {
    let out = stdout_of(&["map", "validate"]);
    assert!(out.contains("valid (25 releases, 26 migrations"), "{out}");
    let out = stdout_of(&["map", "show", "--json"]);
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(json["migrations"].as_array().unwrap().len(), 26);
    let text = stdout_of(&["map", "show"]);
    assert!(
        text.contains("encrypt-api-keys") && text.contains("v2.1.0"),
        "{text}"
    );
}

#[test]
fn help_documents_the_exit_codes() {
    let out = stdout_of(&["--help"]);
    for (code, _) in upstep::error::ExitCode::TABLE {
        assert!(
            out.contains(&format!("{code:>3}  ")),
            "exit code {code} missing from --help"
        );
    }
    upstep().arg("--no-such-flag").assert().code(2);
}

fn upstep_map() -> String {
    upstep::release_map::EMBEDDED_MAP.to_string()
}
