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
    let uri = tunnel
        .rewrite_mongo_uri(&mongo.uri_for_db(&db).into())
        .unwrap();
    let uri = uri.expose();
    assert_eq!(
        uri,
        format!(
            "mongodb://127.0.0.1:{}/{db}?directConnection=true",
            tunnel.local_ports[0]
        )
    );
    assert!(tunnel::mongo_hello(tunnel.local_ports[0]).await);
    insert_and_find(uri, &db).await;

    let err = tunnel
        .rewrite_mongo_uri(&"mongodb+srv://u:pw@cluster0.example.net/db".into())
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

    // The ssh process this test started.
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(first_pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    );
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
        tunnel
            .rewrite_mongo_uri(&mongo.uri_for_db(&db).into())
            .unwrap()
            .expose(),
        &db,
    )
    .await;

    // It stays Up (the monitor follows the new ssh).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(*watch.borrow_and_update(), TunnelState::Up);
    tunnel.close().await;
}

/// A TCP relay to `target` on loopback that counts the connections made through it: put
/// between sshd and MongoDB, it sees every connection the tunnel makes to the database.
struct CountingRelay {
    port: u16,
    accepted: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl CountingRelay {
    fn start(target: u16) -> CountingRelay {
        use std::sync::atomic::Ordering;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = accepted.clone();
        std::thread::spawn(move || {
            for inbound in listener.incoming().flatten() {
                count.fetch_add(1, Ordering::SeqCst);
                let Ok(outbound) = std::net::TcpStream::connect(("127.0.0.1", target)) else {
                    continue;
                };
                for (mut from, mut to) in [
                    (inbound.try_clone().unwrap(), outbound.try_clone().unwrap()),
                    (outbound, inbound),
                ] {
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = to.shutdown(std::net::Shutdown::Both);
                    });
                }
            }
        });
        CountingRelay { port, accepted }
    }

    fn accepted(&self) -> usize {
        self.accepted.load(std::sync::atomic::Ordering::SeqCst)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ops_tunnel_watching_makes_no_connection_to_the_database() {
    let server = start_sshd();
    let relay = CountingRelay::start(mongo().port);
    let tunnel = tunnel::open(spec_for(&server, relay.port)).await.unwrap();
    let after_open = relay.accepted();
    assert!(
        after_open >= 1,
        "the readiness hello went through the relay"
    );

    // Ten seconds of watching: the monitor must not reach the database (each probe of the
    // forwarded port was one SSH channel and one MongoDB connection on the server).
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(tunnel.state(), TunnelState::Up);
    assert_eq!(
        relay.accepted() - after_open,
        0,
        "the tunnel monitor connected to the database while watching"
    );

    // The relay does count what goes through the tunnel (a driver's hello: a connection or two).
    assert!(tunnel::mongo_hello(tunnel.local_ports[0]).await);
    assert!(relay.accepted() > after_open);
    tunnel.close().await;
}

/// The processes below `pid` (sshd's per-connection children).
fn descendants(pid: u32) -> Vec<i32> {
    let mut found = Vec::new();
    let mut frontier = vec![pid as i32];
    while let Some(parent) = frontier.pop() {
        for entry in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(child) = entry.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{child}/stat")) else {
                continue;
            };
            let ppid = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<i32>().ok());
            if ppid == Some(parent) {
                frontier.push(child);
                found.push(child);
            }
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ops_tunnel_a_dead_link_ends_ssh_and_is_reported_within_seconds() {
    let server = start_sshd();
    let tunnel = tunnel::open(spec_for(&server, mongo().port)).await.unwrap();
    let mut watch = tunnel.watch();
    // Freeze the server side of the connection: the link is dead but nothing closes it, so
    // only ssh's keep-alives can tell.
    let frozen = descendants(server.process.pid);
    assert!(!frozen.is_empty(), "no sshd session process");
    for pid in &frozen {
        // SAFETY: kill(2) on processes of the sshd this test started.
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(*pid),
            nix::sys::signal::Signal::SIGSTOP,
        );
    }
    let frozen_at = Instant::now();
    let down = tokio::time::timeout(
        Duration::from_secs(20),
        watch.wait_for(|s| matches!(s, TunnelState::Down { .. })),
    )
    .await;
    for pid in &frozen {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(*pid),
            nix::sys::signal::Signal::SIGCONT,
        );
    }
    down.expect("a dead link is reported Down within 20 s")
        .expect("the watch channel is open");
    let took = frozen_at.elapsed();
    eprintln!("a dead link was reported Down after {took:?}");
    assert!(
        took >= Duration::from_secs(tunnel::SERVER_ALIVE_INTERVAL as u64),
        "Down after {took:?}: before ssh's keep-alives could have timed out"
    );
    assert!(!pid_alive(tunnel.pid), "ssh is still running");
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
        mongo_forward_target(&"mongodb+srv://u:pw@cluster0.example.net/novu".into()).unwrap_err(),
        rewrite_mongo_uri_to(&"mongodb+srv://u:pw@cluster0.example.net/novu".into(), 1)
            .unwrap_err(),
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
