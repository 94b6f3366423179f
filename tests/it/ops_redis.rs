//! `--redis-url auto`: a throwaway redis-server that leaves nothing behind.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use upstep::redis_auto::{find_redis_server, start_throwaway_redis, start_throwaway_redis_with};

use crate::support::pid_alive;

fn ping(port: u16) -> String {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    stream.write_all(b"*1\r\n$4\r\nPING\r\n").unwrap();
    let mut buf = [0u8; 16];
    let n = stream.read(&mut buf).unwrap();
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[tokio::test]
async fn ops_redis_throwaway_starts_answers_and_leaves_nothing() {
    let state = tempfile::tempdir().unwrap();
    let mut redis = start_throwaway_redis(state.path()).await.unwrap();
    assert_eq!(redis.url, format!("redis://127.0.0.1:{}", redis.port));
    assert_eq!(ping(redis.port), "+PONG\r\n");
    let client = redis::Client::open(redis.url.as_str()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let _: () = redis::cmd("SET")
        .arg("k")
        .arg("v")
        .query_async(&mut conn)
        .await
        .unwrap();
    drop(conn);

    let (pid, dir, port) = (redis.pid, redis.dir.clone(), redis.port);
    assert!(pid_alive(pid) && dir.is_dir());
    redis.stop();
    assert!(!pid_alive(pid), "redis-server {pid} still runs");
    assert!(!dir.exists(), "{} was not removed", dir.display());
    assert!(TcpStream::connect(("127.0.0.1", port)).is_err());
    redis.stop(); // idempotent
}

#[tokio::test]
async fn ops_redis_drop_stops_it() {
    let state = tempfile::tempdir().unwrap();
    let binary = find_redis_server(std::env::var_os("PATH").as_deref()).unwrap();
    let redis = start_throwaway_redis_with(&binary, state.path())
        .await
        .unwrap();
    let (pid, dir) = (redis.pid, redis.dir.clone());
    drop(redis);
    assert!(!pid_alive(pid));
    assert!(!dir.exists());
}

#[test]
fn ops_redis_missing_binary_says_how_to_fix() {
    let empty = tempfile::tempdir().unwrap();
    let err = find_redis_server(Some(empty.path().as_os_str())).unwrap_err();
    let text = err.to_string();
    assert!(text.contains("redis-server"), "{text}");
    assert!(text.contains("apt-get install redis-server"), "{text}");
    assert!(text.contains("brew install redis"), "{text}");
    assert!(text.contains("--redis-url redis://host:port"), "{text}");
    assert!(find_redis_server(None).is_err());
}
