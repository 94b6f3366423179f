//! Settings: flags > environment > upstep.toml profile > defaults; bad files; `config show`
//! never prints a secret; `completions` and `man`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use assert_cmd::Command;
use upstep::error::ExitCode;
use upstep::settings::{resolve_in, FlagValues, Settings, Source};
use upstep::tunnel::KnownHostsPolicy;

const CANARY: &str = "CanaryPw-7f3a9";

const FILE: &str = r#"
default_profile = "prod"

[profiles.prod]
mongo_uri = "mongodb://novu:profile-pw@db.internal:27017/novu-db"
redis_url = "redis://redis.internal:6379"
repo = "https://github.com/novuhq/novu"
map = "maps/novu.toml"
encryption_key_env = "PROD_STORE_KEY"

[profiles.prod.ssh]
host = "deploy@bastion.example.com:2222"
identity_file = "keys/deploy"
jump_host = "jump.example.com"
known_hosts = "accept-new"
remote_mongo = "mongodb:27017"

[profiles.staging]
mongo_uri_env = "STAGING_MONGO"
"#;

struct Fixture {
    dir: tempfile::TempDir,
    env: HashMap<String, String>,
}

impl Fixture {
    fn new(file: &str) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("upstep.toml"), file).expect("write upstep.toml");
        Fixture {
            dir,
            env: HashMap::new(),
        }
    }

    fn path(&self) -> PathBuf {
        self.dir.path().join("upstep.toml")
    }

    fn set(mut self, k: &str, v: &str) -> Self {
        self.env.insert(k.into(), v.into());
        self
    }

    fn resolve(
        &self,
        flags: &FlagValues,
        profile: Option<&str>,
    ) -> upstep::error::Result<Settings> {
        let env = |name: &str| self.env.get(name).cloned();
        // The cwd is the fixture directory, so ./upstep.toml is found without --config.
        resolve_in(flags, &env, None, profile, self.dir.path())
    }
}

fn profile_source(fx: &Fixture, name: &str) -> Source {
    Source::Profile {
        name: name.into(),
        file: fx.path(),
        via_env: None,
    }
}

#[test]
fn ops_precedence_flag_env_profile_default() {
    let fx = Fixture::new(FILE);
    let none = FlagValues::default();

    // Profile only (default_profile = prod).
    let s = fx.resolve(&none, None).unwrap();
    let mongo = s.mongo_uri.clone().unwrap();
    assert_eq!(mongo.source, profile_source(&fx, "prod"));
    assert_eq!(s.redis_url.value.expose(), "redis://redis.internal:6379");
    assert_eq!(
        s.map.clone().unwrap().value,
        fx.dir.path().join("maps/novu.toml")
    );
    assert_eq!(s.encryption_key_env.value, "PROD_STORE_KEY");
    assert_eq!(s.profile.clone().unwrap().value, "prod");

    // MONGO_URL beats the profile; UPSTEP_MONGO_URI beats MONGO_URL.
    let fx = fx.set("MONGO_URL", "mongodb://from-mongo-url/db");
    let s = fx.resolve(&none, None).unwrap();
    assert_eq!(s.mongo_uri.unwrap().source, Source::Env("MONGO_URL".into()));
    let fx = fx
        .set("UPSTEP_MONGO_URI", "mongodb://from-upstep/db")
        .set("UPSTEP_REDIS_URL", "redis://env:1")
        .set("UPSTEP_REPO", "/srv/novu")
        .set("UPSTEP_MAP", "/etc/map.toml");
    let s = fx.resolve(&none, None).unwrap();
    let mongo = s.mongo_uri.unwrap();
    assert_eq!(mongo.value.expose(), "mongodb://from-upstep/db");
    assert_eq!(mongo.source, Source::Env("UPSTEP_MONGO_URI".into()));
    assert_eq!(s.redis_url.source, Source::Env("UPSTEP_REDIS_URL".into()));
    assert_eq!(
        s.repo.unwrap().value,
        upstep::git::RepoLocation::from("/srv/novu")
    );
    assert_eq!(s.map.unwrap().value, PathBuf::from("/etc/map.toml"));

    // Flags beat everything.
    let flags = FlagValues {
        mongo_uri: Some("mongodb://flag/db".into()),
        redis_url: Some("auto".into()),
        repo: Some("/flag/repo".into()),
        map: Some("/flag/map.toml".into()),
        ..FlagValues::default()
    };
    let s = fx.resolve(&flags, None).unwrap();
    assert_eq!(s.mongo_uri.clone().unwrap().source, Source::Flag);
    assert!(s.redis_is_auto());
    assert_eq!(s.redis_url.source, Source::Flag);
    assert_eq!(s.repo.unwrap().source, Source::Flag);
    assert_eq!(s.map.unwrap().source, Source::Flag);
}

#[test]
fn ops_defaults_without_any_file() {
    let dir = tempfile::tempdir().unwrap();
    let env = |name: &str| match name {
        // An XDG dir with no upstep.toml in it.
        "XDG_CONFIG_HOME" => Some(dir.path().join("xdg").display().to_string()),
        _ => None,
    };
    let s = resolve_in(&FlagValues::default(), &env, None, None, dir.path()).unwrap();
    assert_eq!(s.mongo_uri, None);
    assert!(s.redis_is_auto());
    assert_eq!(s.redis_url.source, Source::Default);
    assert_eq!(s.encryption_key_env.value, "STORE_ENCRYPTION_KEY");
    assert_eq!(s.encryption_key_env.source, Source::Default);
    assert_eq!(s.map, None);
    assert_eq!(s.ssh, None);
    assert_eq!(s.config_file, None);
}

#[test]
fn ops_xdg_config_file_is_found() {
    let dir = tempfile::tempdir().unwrap();
    let xdg = dir.path().join("xdg");
    std::fs::create_dir_all(xdg.join("upstep")).unwrap();
    std::fs::write(
        xdg.join("upstep/upstep.toml"),
        "[profiles.a]\nrepo = \"/srv/novu\"\n",
    )
    .unwrap();
    let cwd = dir.path().join("elsewhere");
    std::fs::create_dir_all(&cwd).unwrap();
    let env = |name: &str| match name {
        "XDG_CONFIG_HOME" => Some(xdg.display().to_string()),
        "UPSTEP_PROFILE" => Some("a".into()),
        _ => None,
    };
    let s = resolve_in(&FlagValues::default(), &env, None, None, &cwd).unwrap();
    assert_eq!(s.config_file, Some(xdg.join("upstep/upstep.toml")));
    let profile = s.profile.unwrap();
    assert_eq!(profile.value, "a");
    assert_eq!(profile.source, Source::Env("UPSTEP_PROFILE".into()));
    assert_eq!(
        s.repo.unwrap().value,
        upstep::git::RepoLocation::from("/srv/novu")
    );
}

#[test]
fn ops_profile_env_var_and_ssh_merge() {
    let fx = Fixture::new(FILE).set("STAGING_MONGO", "mongodb://staging/db");
    let s = fx.resolve(&FlagValues::default(), Some("staging")).unwrap();
    let mongo = s.mongo_uri.clone().unwrap();
    assert_eq!(mongo.value.expose(), "mongodb://staging/db");
    assert_eq!(
        mongo.source,
        Source::Profile {
            name: "staging".into(),
            file: fx.path(),
            via_env: Some("STAGING_MONGO".into())
        }
    );
    assert!(s.redis_is_auto(), "staging names no Redis: auto");

    // Unset variable named by the profile: a config error naming it.
    let fx = Fixture::new(FILE);
    let err = fx
        .resolve(&FlagValues::default(), Some("staging"))
        .unwrap_err();
    assert_eq!(err.code(), ExitCode::Config);
    assert!(err.to_string().contains("STAGING_MONGO"), "{err}");

    // SSH: a flag overrides one field, the profile gives the rest.
    let mut flags = FlagValues::default();
    flags.ssh.known_hosts = Some(KnownHostsPolicy::Strict);
    let s = fx.resolve(&flags, Some("prod")).unwrap();
    let ssh = s.ssh.unwrap();
    assert_eq!(ssh.destination.value, "deploy@bastion.example.com");
    assert_eq!(ssh.port, Some(2222));
    assert_eq!(ssh.known_hosts.value, KnownHostsPolicy::Strict);
    assert_eq!(ssh.known_hosts.source, Source::Flag);
    assert_eq!(
        ssh.identity_file.unwrap().value,
        fx.dir.path().join("keys/deploy")
    );
    assert_eq!(
        ssh.remote_mongo.unwrap().value,
        ("mongodb".to_string(), 27017)
    );
}

#[test]
fn ops_unknown_profile_lists_the_known_ones() {
    let fx = Fixture::new(FILE);
    let err = fx
        .resolve(&FlagValues::default(), Some("prdo"))
        .unwrap_err();
    assert_eq!(err.code(), ExitCode::Config);
    let text = err.to_string();
    assert!(
        text.contains("prdo") && text.contains("prod, staging"),
        "{text}"
    );
}

#[test]
fn ops_typo_reports_line_column_and_field() {
    let fx = Fixture::new("[profiles.prod]\nrepo = \"/srv/novu\"\n  mongo_urii = \"x\"\n");
    let err = fx
        .resolve(&FlagValues::default(), Some("prod"))
        .unwrap_err();
    assert_eq!(err.code(), ExitCode::Config);
    let text = err.to_string();
    assert!(text.contains("upstep.toml:3:3"), "{text}");
    assert!(text.contains("mongo_urii"), "{text}");
    assert!(text.contains("did you mean `mongo_uri`"), "{text}");
}

#[test]
fn ops_an_encryption_key_is_never_accepted_in_the_file() {
    let fx =
        Fixture::new("[profiles.prod]\nencryption_key = \"0123456789abcdef0123456789abcdef\"\n");
    let err = fx
        .resolve(&FlagValues::default(), Some("prod"))
        .unwrap_err();
    assert_eq!(err.code(), ExitCode::Config);
    let text = err.to_string();
    assert!(text.contains("encryption_key_env"), "{text}");
    assert!(text.contains("upstep.toml:2:1"), "{text}");
    assert!(!text.contains("0123456789abcdef"), "{text}");

    // A key pasted where the variable's name goes is refused without echoing it.
    let fx = Fixture::new("[profiles.prod]\nencryption_key_env = \"k3y+/with=chars\"\n");
    let err = fx
        .resolve(&FlagValues::default(), Some("prod"))
        .unwrap_err();
    assert!(!err.to_string().contains("k3y+/with=chars"), "{err}");
}

#[test]
fn ops_profile_without_a_file_and_missing_config() {
    let dir = tempfile::tempdir().unwrap();
    let env = |name: &str| match name {
        "XDG_CONFIG_HOME" => Some(dir.path().display().to_string()),
        _ => None,
    };
    let err = resolve_in(&FlagValues::default(), &env, None, Some("prod"), dir.path()).unwrap_err();
    assert_eq!(err.code(), ExitCode::Config);
    let missing = dir.path().join("nope.toml");
    let err = resolve_in(
        &FlagValues::default(),
        &env,
        Some(Path::new(&missing)),
        None,
        dir.path(),
    )
    .unwrap_err();
    assert_eq!(err.code(), ExitCode::Config);
    assert!(err.to_string().contains("nope.toml"));
}

fn upstep(dir: &Path) -> Command {
    let mut cmd = Command::cargo_bin("upstep").expect("the upstep binary is built");
    cmd.current_dir(dir)
        .env("NO_COLOR", "1")
        .env("XDG_CONFIG_HOME", dir.join("xdg"))
        .env_remove("UPSTEP_PROFILE")
        .env_remove("UPSTEP_REDIS_URL")
        .env_remove("UPSTEP_REPO")
        .env_remove("UPSTEP_MAP")
        .env_remove("UPSTEP_MONGO_URI")
        .env_remove("MONGO_URL")
        .env_remove("STORE_ENCRYPTION_KEY");
    cmd
}

#[test]
fn ops_config_show_redacts_every_secret() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("upstep.toml"),
        format!(
            "default_profile = \"prod\"\n[profiles.prod]\n\
             mongo_uri = \"mongodb://novu:{CANARY}@db:27017/novu-db\"\n\
             redis_url = \"redis://:{CANARY}@redis:6379\"\n\
             [profiles.prod.ssh]\nhost = \"deploy@bastion:2222\"\n"
        ),
    )
    .unwrap();
    let runs: Vec<Vec<&str>> = vec![
        vec!["config", "show"],
        vec!["config", "show", "--json"],
        vec!["config", "show", "--profile", "prod", "--json"],
    ];
    for args in runs {
        let out = upstep(dir.path())
            .args(&args)
            .env(
                "STORE_ENCRYPTION_KEY",
                format!("{CANARY}{CANARY}0123456789"),
            )
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{args:?}: {stderr}");
        assert!(
            !stdout.contains(CANARY) && !stderr.contains(CANARY),
            "{stdout}{stderr}"
        );
        assert!(stdout.contains("****"), "{stdout}");
        assert!(stdout.contains("set (38 chars)"), "{stdout}");
        assert!(stdout.contains("bastion"), "{stdout}");
    }

    // From a flag and from MONGO_URL too; the JSON names the sources.
    let out = upstep(dir.path())
        .args(["config", "show", "--json", "--redis-url"])
        .arg(format!("redis://:{CANARY}@r:1"))
        .env("MONGO_URL", format!("mongodb://u:{CANARY}@m:1/db"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success());
    assert!(!stdout.contains(CANARY), "{stdout}");
    let json: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(json["schema"], "upstep.config/1");
    assert_eq!(json["mongo_uri"]["source"]["kind"], "env");
    assert_eq!(json["mongo_uri"]["source"]["name"], "MONGO_URL");
    assert_eq!(json["redis_url"]["source"]["kind"], "flag");
    assert_eq!(json["encryption_key"], "not set");
    assert_eq!(json["profile"]["value"], "prod");
}

/// Every place that holds a connection string after parsing shows it redacted in `Debug`: the
/// parsed command line, the flags, the resolved settings (from a flag, the environment, a
/// profile, a variable a profile names) and a run's connection. The real string is still
/// there, through `expose()`, for the driver or the child.
#[test]
fn ops_debug_of_parsed_and_resolved_settings_never_shows_a_secret() {
    use clap::Parser;
    let mongo = format!("mongodb://novu:{CANARY}@db:27017/novu-db");
    let redis = format!("redis://:{CANARY}@redis:6379/1");
    let repo = format!("https://{CANARY}@github.com/novuhq/novu.git");
    let hidden = |shown: &str| {
        assert!(!shown.contains(CANARY), "{shown}");
        assert!(shown.contains("novu:****@db:27017"), "{shown}");
    };

    let command_lines: [&[&str]; 3] = [
        &[
            "upgrade",
            "--mongo-uri",
            &mongo,
            "--redis-url",
            &redis,
            "--repo",
            &repo,
        ],
        &[
            "restore",
            "backup-dir",
            "--mongo-uri",
            &mongo,
            "--to-uri",
            &mongo,
        ],
        &["rehearse", "--mongo-uri", &mongo, "--scratch-uri", &mongo],
    ];
    for args in command_lines {
        let cli =
            upstep::cli::Cli::try_parse_from(std::iter::once("upstep").chain(args.iter().copied()))
                .unwrap_or_else(|e| panic!("{args:?}: {e}"));
        hidden(&format!("{cli:?}"));
    }

    let fx = Fixture::new(&format!(
        "default_profile = \"prod\"\n[profiles.prod]\nmongo_uri = \"{mongo}\"\n\
         redis_url = \"{redis}\"\nrepo = \"{repo}\"\n\
         [profiles.via_env]\nmongo_uri_env = \"PROD_MONGO\"\nredis_url_env = \"PROD_REDIS\"\n\
         repo_env = \"PROD_REPO\"\n"
    ))
    .set("PROD_MONGO", &mongo)
    .set("PROD_REDIS", &redis)
    .set("PROD_REPO", &repo);
    let flags = FlagValues {
        mongo_uri: Some(mongo.as_str().into()),
        redis_url: Some(redis.as_str().into()),
        repo: Some(repo.as_str().into()),
        ..FlagValues::default()
    };
    let from_env = Fixture::new("")
        .set("UPSTEP_MONGO_URI", &mongo)
        .set("UPSTEP_REDIS_URL", &redis)
        .set("UPSTEP_REPO", &repo);
    let none = FlagValues::default();
    for (fx, flags, profile) in [
        (&fx, &none, None),
        (&fx, &none, Some("via_env")),
        (&fx, &flags, None),
        (&from_env, &none, None),
    ] {
        let s = fx.resolve(flags, profile).unwrap();
        hidden(&format!("{s:?}"));
        hidden(&format!("{s:#?} {flags:?}"));
        assert_eq!(s.mongo_uri.as_ref().unwrap().value.expose(), mongo);
        assert_eq!(s.redis_url.value.expose(), redis);
    }

    let connection = upstep::executor::command::Connection {
        mongo_uri: mongo.as_str().into(),
        ..Default::default()
    };
    hidden(&format!("{connection:?}"));
}

#[test]
fn ops_config_show_errors_exit_13_without_secrets() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("upstep.toml"),
        format!("[profiles.prod]\nmongo_uri = \"mongodb://u:{CANARY}@db/x\"\nrepo = 3\n"),
    )
    .unwrap();
    let out = upstep(dir.path())
        .args(["config", "show", "--profile", "prod"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(13));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("upstep.toml:3:8"), "{stderr}");
    assert!(!stderr.contains(CANARY), "{stderr}");

    std::fs::write(
        dir.path().join("upstep.toml"),
        format!("[profiles.prod]\nmongo_uri = \"mongodb://u:{CANARY}@db/x\"\n"),
    )
    .unwrap();
    let out = upstep(dir.path())
        .args(["config", "show", "--profile", "nope"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(13));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("no profile `nope`") && stderr.contains("prod"),
        "{stderr}"
    );
    assert!(!stderr.contains(CANARY), "{stderr}");
}

#[test]
fn ops_completions_and_man() {
    let dir = tempfile::tempdir().unwrap();
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let out = upstep(dir.path())
            .args(["completions", shell])
            .output()
            .unwrap();
        assert!(out.status.success(), "{shell}");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains("upstep") && text.contains("ssh-remote-mongo"),
            "{shell}"
        );
    }
    let out = upstep(dir.path()).arg("man").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(".TH") && text.contains("upstep"), "{text}");
    upstep(dir.path())
        .args(["completions", "tcsh"])
        .assert()
        .code(2);
}

#[test]
fn ops_tunnel_spec_from_settings() {
    use upstep::tunnel::ForwardKind;
    let fx = Fixture::new(
        "[profiles.p]\nmongo_uri = \"mongodb://u:pw@mongodb:27018/novu\"\n\
         [profiles.p.ssh]\nhost = \"deploy@bastion:2222\"\nremote_redis = \"redis:6379\"\n",
    );
    let s = fx.resolve(&FlagValues::default(), Some("p")).unwrap();
    let ssh = s.ssh.clone().unwrap();
    let spec = ssh
        .tunnel_spec(s.mongo_uri.as_ref().map(|m| &m.value), true)
        .unwrap();
    assert_eq!(spec.destination, "deploy@bastion");
    assert_eq!(spec.port, Some(2222));
    assert!(spec.batch_mode);
    assert_eq!(spec.known_hosts, KnownHostsPolicy::Strict);
    assert_eq!(spec.forwards.len(), 2);
    assert_eq!(
        (
            spec.forwards[0].remote_host.as_str(),
            spec.forwards[0].remote_port
        ),
        ("mongodb", 27018)
    );
    assert_eq!(spec.forwards[1].kind, ForwardKind::Redis);

    // An SRV URI without remote_mongo: the explanation, exit 11, no password.
    let err = ssh
        .tunnel_spec(
            Some(&"mongodb+srv://u:pw-secret@cluster0.example.net/novu".into()),
            true,
        )
        .unwrap_err();
    assert_eq!(err.code(), ExitCode::Tunnel);
    assert!(!err.to_string().contains("pw-secret"));

    // --ssh-* without a host, and a bad host:port: usage errors.
    let mut flags = FlagValues::default();
    flags.ssh.jump_host = Some("jump".into());
    let dir = tempfile::tempdir().unwrap();
    let env = |_: &str| None;
    let err = resolve_in(&flags, &env, None, None, dir.path()).unwrap_err();
    assert_eq!(err.code(), ExitCode::Usage);
    flags.ssh.host = Some("bastion".into());
    flags.ssh.remote_mongo = Some("mongodb".into());
    let err = resolve_in(&flags, &env, None, None, dir.path()).unwrap_err();
    assert!(err.to_string().contains("host:port"), "{err}");
}
