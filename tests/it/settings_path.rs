//! Every command resolves its settings through one path (flags > environment > profile >
//! defaults): `doctor`, `backup`, `restore` and `plan` read the profile and reach the database
//! through `--ssh` as `upgrade` does. Through the real binary, a real sshd and the test MongoDB.

use crate::support::{free_port, mongo, redis, start_sshd, SshServer};
use crate::upgrade::{text, Env};

/// A MongoDB URI nothing answers at, and the flags of a tunnel whose far end is the real one:
/// only a command that goes through the tunnel reaches the data.
fn tunnel_only(server: &SshServer, env: &Env) -> (String, Vec<String>) {
    let dead = format!(
        "mongodb://127.0.0.1:{}/{}?serverSelectionTimeoutMS=1500",
        free_port(),
        env.db
    );
    let flags = vec![
        "--ssh".to_string(),
        format!("{}:{}", server.destination(), server.port),
        "--ssh-identity".into(),
        server.client_key.display().to_string(),
        "--ssh-known-hosts".into(),
        "strict".into(),
        "--ssh-known-hosts-file".into(),
        server.known_hosts.display().to_string(),
        "--ssh-remote-mongo".into(),
        format!("127.0.0.1:{}", mongo().port),
    ];
    (dead, flags)
}

fn run(env: &Env, args: &[String]) -> std::process::Output {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    env.command(&args).output().unwrap()
}

#[test]
fn doctor_backup_and_restore_reach_the_database_through_the_tunnel() {
    let server = start_sshd();
    let env = Env::new("path_ssh");
    let (dead, ssh) = tunnel_only(&server, &env);
    let out_dir = env.state.path().join("through-tunnel");

    let mut backup = vec![
        "backup".to_string(),
        "--mongo-uri".into(),
        dead.clone(),
        "--out".into(),
        out_dir.display().to_string(),
    ];
    let direct = run(&env, &backup);
    assert_eq!(direct.status.code(), Some(6), "{}", text(&direct));
    backup.extend(ssh.iter().cloned());
    let out = run(&env, &backup);
    assert!(out.status.success(), "{}", text(&out));
    assert!(out_dir.join("upstep-manifest.json").is_file());

    let mut restore = vec![
        "restore".to_string(),
        out_dir.display().to_string(),
        "--mongo-uri".into(),
        dead.clone(),
        "--drop".into(),
        "--yes".into(),
    ];
    restore.extend(ssh.iter().cloned());
    let out = run(&env, &restore);
    assert!(out.status.success(), "{}", text(&out));

    let mut doctor = vec![
        "doctor".to_string(),
        "--map".into(),
        env.project.map_path.display().to_string(),
        "--mongo-uri".into(),
        dead,
        "--redis-url".into(),
        redis().url.clone(),
    ];
    doctor.extend(ssh);
    let out = run(&env, &doctor);
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(
        shown.contains("Decided from the journal and the data of"),
        "{}",
        text(&out)
    );
    let connect = shown
        .lines()
        .find(|l| l.contains("mongo.connect"))
        .unwrap_or_else(|| panic!("{}", text(&out)));
    assert!(connect.trim_start().starts_with("ok"), "{connect}");
}

#[test]
fn plan_doctor_and_backup_read_the_profile() {
    let env = Env::new("path_profile");
    let file = format!(
        "default_profile = \"fixture\"\n[profiles.fixture]\nmongo_uri = \"{}\"\nmap = \"{}\"\nrepo = \"{}\"\nredis_url = \"{}\"\n",
        env.uri,
        env.project.map_path.display(),
        env.project.repo_path().display(),
        redis().url,
    );
    // The commands run in the state dir: ./upstep.toml is found there.
    std::fs::write(env.state.path().join("upstep.toml"), file).unwrap();

    let out = env.command(&["plan", "--from", "v1.1.0"]).output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(shown.contains("Upgrade plan for fixture"), "{shown}");
    assert!(
        shown.contains("(present at v1.2.0)"),
        "the profile's repo: {shown}"
    );

    let out = env.command(&["doctor", "--json"]).output().unwrap();
    let json: serde_json::Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|_| panic!("{}", text(&out)));
    assert_eq!(json["plan"]["read_the_data"], true, "{json:#}");
    assert_eq!(json["plan"]["steps"].as_array().unwrap().len(), 6);

    let out_dir = env.state.path().join("from-profile");
    let out = env
        .command(&["backup", "--out", out_dir.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(out_dir.join("upstep-manifest.json").is_file());
}
