//! The SSH tunnel against a real sshd (Debian's openssh-server) forwarding to the test MongoDB.

use std::time::{Duration, Instant};

use bson::doc;
use upstep::error::{Error, ExitCode};
use upstep::tunnel::{
    self, mongo_forward_target, rewrite_mongo_uri_to, Forward, ForwardKind, KnownHostsPolicy,
    TunnelSpec, TunnelState,
};

use crate::support::{free_port, fresh_db_name, mongo, pid_alive, start_sshd, SshServer};

/// A strict-checking spec with the server's host key pinned and the accepted key.
fn spec_for(server: &SshServer, remote_port: u16) -> TunnelSpec {
    let mut spec = TunnelSpec::new(server.destination());
    spec.port = Some(server.port);
    spec.identity_file = Some(server.client_key.clone());
    spec.known_hosts = KnownHostsPolicy::Strict;
    spec.known_hosts_file = Some(server.known_hosts.clone());
    spec.forwards.push(Forward {
        remote_host: "127.0.0.1".into(),
        remote_port,
        kind: ForwardKind::Mongo,
    });
    // Nothing from the user's ~/.ssh/config.
    spec.extra_options = vec!["-F".into(), "/dev/null".into()];
    spec.ready_timeout = Duration::from_secs(15);
    spec
}

fn tunnel_message(err: Error) -> String {
    assert_eq!(err.code(), ExitCode::Tunnel, "{err}");
    err.to_string()
}

async fn insert_and_find(uri: &str, db: &str) {
    let client = mongodb::Client::with_uri_str(uri).await.expect("client");
    let coll = client
        .database(db)
        .collection::<bson::Document>("through_tunnel");
    coll.insert_one(doc! { "k": "v" }).await.expect("insert");
    let found = coll.find_one(doc! { "k": "v" }).await.expect("find");
    assert!(found.is_some());
}

#[tokio::test]
async fn ops_tunnel_forwards_mongo_with_the_host_key_pinned() {
    let server = start_sshd();
    let mongo = mongo();
    let tunnel = tunnel::open(spec_for(&server, mongo.port))
        .await
        .unwrap_or_else(|e| panic!("{e}\n--- sshd ---\n{}", server.process.log_tail()));
    assert_eq!(tunnel.state(), TunnelState::Up);

    let db = fresh_db_name("ops_tunnel_forwards");
    let uri = tunnel.rewrite_mongo_uri(&mongo.uri_for_db(&db)).unwrap();
    assert_eq!(
        uri,
        format!(
            "mongodb://127.0.0.1:{}/{db}?directConnection=true",
            tunnel.local_ports[0]
        )
    );
    assert!(tunnel::mongo_hello(tunnel.local_ports[0]).await);
    insert_and_find(&uri, &db).await;

    let err = tunnel
        .rewrite_mongo_uri("mongodb+srv://u:pw@cluster0.example.net/db")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("SRV") && err.contains("--ssh-remote-mongo"),
        "{err}"
    );
    tunnel.close().await;
}

#[tokio::test]
async fn ops_tunnel_accept_new_records_the_host_key() {
    let server = start_sshd();
    let known = server.dir.join("known_hosts.new");
    let mut spec = spec_for(&server, mongo().port);
    spec.known_hosts = KnownHostsPolicy::AcceptNew;
    spec.known_hosts_file = Some(known.clone());
    let tunnel = tunnel::open(spec).await.unwrap();
    let recorded = std::fs::read_to_string(&known).unwrap();
    assert!(
        recorded.contains(&format!("[127.0.0.1]:{}", server.port)),
        "{recorded}"
    );
    drop(tunnel);
}

#[tokio::test]
async fn ops_tunnel_strict_unknown_host_key() {
    let server = start_sshd();
    let mut spec = spec_for(&server, mongo().port);
    spec.known_hosts_file = Some(server.empty_known_hosts.clone());
    let text = tunnel_message(tunnel::open(spec).await.unwrap_err());
    assert!(
        text.contains("host key") && text.contains("not in"),
        "{text}"
    );
    assert!(
        text.contains("ssh-keyscan") && text.contains("accept-new"),
        "{text}"
    );
}

#[tokio::test]
async fn ops_tunnel_refused_key() {
    let server = start_sshd();
    let mut spec = spec_for(&server, mongo().port);
    spec.identity_file = Some(server.refused_key.clone());
    let text = tunnel_message(tunnel::open(spec).await.unwrap_err());
    assert!(text.contains("refused the login"), "{text}");
    assert!(
        text.contains("authorized_keys") && text.contains("--ssh-identity"),
        "{text}"
    );
}

#[tokio::test]
async fn ops_tunnel_unreachable_ssh_host() {
    let server = start_sshd();
    let mut spec = spec_for(&server, mongo().port);
    spec.port = Some(free_port());
    let started = Instant::now();
    let text = tunnel_message(tunnel::open(spec).await.unwrap_err());
    assert!(text.contains("cannot reach the SSH host"), "{text}");
    assert!(text.contains("Connection refused"), "{text}");
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[tokio::test]
async fn ops_tunnel_remote_port_refusing() {
    let server = start_sshd();
    let spec = spec_for(&server, free_port());
    let started = Instant::now();
    let text = tunnel_message(tunnel::open(spec).await.unwrap_err());
    assert!(text.contains("refuses connections"), "{text}");
    assert!(text.contains("--ssh-remote-mongo"), "{text}");
    // Reported from ssh's stderr, not at the deadline.
    assert!(
        started.elapsed() < Duration::from_secs(12),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ops_tunnel_drop_is_detected_and_reopened() {
    let server = start_sshd();
    let mongo = mongo();
    let mut tunnel = tunnel::open(spec_for(&server, mongo.port)).await.unwrap();
    let port = tunnel.local_ports[0];
    let mut watch = tunnel.watch();
    let first_pid = tunnel.pid;

    // SAFETY: kill(2) on the ssh process this test started.
    unsafe {
        libc::kill(first_pid as libc::pid_t, libc::SIGKILL);
    }
    let killed = Instant::now();
    tokio::time::timeout(
        Duration::from_secs(3),
        watch.wait_for(|s| matches!(s, TunnelState::Down { .. })),
    )
    .await
    .expect("watch() reports Down within 3 s")
    .expect("the watch channel is open");
    assert!(killed.elapsed() < Duration::from_secs(3));

    tunnel.reopen(3, Duration::from_millis(200)).await.unwrap();
    assert_eq!(tunnel.state(), TunnelState::Up);
    assert_ne!(tunnel.pid, first_pid);
    assert_eq!(
        tunnel.local_ports[0], port,
        "the same local port after reopen"
    );
    let db = fresh_db_name("ops_tunnel_reopen");
    insert_and_find(
        &tunnel.rewrite_mongo_uri(&mongo.uri_for_db(&db)).unwrap(),
        &db,
    )
    .await;

    // It stays Up (the monitor follows the new ssh).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(*watch.borrow_and_update(), TunnelState::Up);
    tunnel.close().await;
}

#[tokio::test]
async fn ops_tunnel_drop_leaves_no_ssh_process() {
    let server = start_sshd();
    let tunnel = tunnel::open(spec_for(&server, mongo().port)).await.unwrap();
    let pid = tunnel.pid;
    assert!(pid_alive(pid));
    drop(tunnel);
    assert!(!pid_alive(pid), "ssh {pid} is still running after Drop");
}

#[test]
fn ops_tunnel_srv_needs_an_explicit_host() {
    for err in [
        mongo_forward_target("mongodb+srv://u:pw@cluster0.example.net/novu").unwrap_err(),
        rewrite_mongo_uri_to("mongodb+srv://u:pw@cluster0.example.net/novu", 1).unwrap_err(),
    ] {
        let text = tunnel_message(err);
        assert!(
            text.contains("DNS SRV") && text.contains("--ssh-remote-mongo"),
            "{text}"
        );
        assert!(!text.contains("pw@"), "{text}");
    }
}

#[test]
fn ops_guard_stops_the_group_when_the_parent_dies() {
    use std::os::unix::process::CommandExt;
    use std::process::Command;
    // A helper in its own group, and a short-lived stand-in for upstep.
    let mut helper = Command::new("sleep")
        .arg("300")
        .process_group(0)
        .spawn()
        .unwrap();
    let mut parent = Command::new("sleep").arg("0.3").spawn().unwrap();
    let guard = upstep::orphan_guard::OrphanGuard::for_parent(parent.id(), helper.id(), "test");
    assert!(guard.pid().is_some());
    parent.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while helper.try_wait().unwrap().is_none() {
        assert!(
            Instant::now() < deadline,
            "the guard did not stop the helper"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // The parent-death path must not leave the guard itself behind either.
    let guard_pid = guard.pid().unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    drop(guard);
    assert!(!pid_alive(guard_pid));
}
