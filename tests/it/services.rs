//! Smoke tests of the harness itself: the services start, answer, and keep tests apart.

use bson::{doc, Document};
use futures_util::TryStreamExt;
use redis::AsyncCommands;

use crate::support::{
    fresh_db_name, mongo, pid_alive, redis, start_mongo_with_auth, start_redis_with_password,
};

#[tokio::test]
async fn mongo_insert_find_round_trip() {
    let server = mongo();
    let client = server.client().await;
    let collection = client
        .database(&fresh_db_name("mongo_insert_find_round_trip"))
        .collection::<Document>("things");
    collection
        .insert_one(doc! { "_id": 1, "name": "first" })
        .await
        .expect("insert");
    let found = collection
        .find_one(doc! { "_id": 1 })
        .await
        .expect("find")
        .expect("the inserted document");
    assert_eq!(found.get_str("name").unwrap(), "first");
}

#[tokio::test]
async fn redis_answers_ping() {
    let server = redis();
    let client = redis::Client::open(server.url.as_str()).expect("redis url");
    let mut connection = client
        .get_multiplexed_async_connection()
        .await
        .expect("connect to redis");
    let pong: String = redis::cmd("PING")
        .query_async(&mut connection)
        .await
        .expect("PING");
    assert_eq!(pong, "PONG");
    let () = connection.set("upstep-smoke", "1").await.expect("SET");
}

/// Two tests with their own `fresh_db_name` never see each other's documents.
#[tokio::test]
async fn fresh_databases_are_isolated() {
    let first = fresh_db_name("fresh_databases_are_isolated");
    let second = fresh_db_name("fresh_databases_are_isolated");
    assert_ne!(first, second);
    let client = mongo().client().await;
    client
        .database(&first)
        .collection::<Document>("shared_name")
        .insert_one(doc! { "owner": "first" })
        .await
        .expect("insert");
    let in_second: Vec<Document> = client
        .database(&second)
        .collection::<Document>("shared_name")
        .find(doc! {})
        .await
        .expect("find")
        .try_collect()
        .await
        .expect("cursor");
    assert!(in_second.is_empty(), "{second} sees {in_second:?}");
}

#[test]
fn fresh_db_names_are_valid_mongodb_names() {
    let long = "a/very.long test name with $pecial \"chars\" that goes on and on and on and on";
    let name = fresh_db_name(long);
    assert!(name.len() < 64, "{name} is too long");
    assert!(
        name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
        "{name}"
    );
}
/// Private servers stop (and their directories go) when dropped, not only at the end of the run.
#[test]
fn private_servers_stop_on_drop() {
    let redis = start_redis_with_password("drop-test-pw");
    let mongo = start_mongo_with_auth();
    let pids = [redis.process.pid, mongo.process.pid];
    let dirs = [redis.process.dir.clone(), mongo.process.dir.clone()];
    assert!(pids.iter().all(|&pid| pid_alive(pid)));
    drop(redis);
    drop(mongo);
    for (pid, dir) in pids.iter().zip(&dirs) {
        assert!(!pid_alive(*pid), "server {pid} still running after drop");
        assert!(!dir.exists(), "{} still exists after drop", dir.display());
    }
}
