//! Redis: every script that boots Novu's API needs one, or it never exits.

use std::time::Duration;

use redis::{ErrorKind, RedisError};

use super::CheckResult;
use crate::redact::{redact_uri, scrub, uri_secrets};
use crate::redis_ping::{ping, PingError};

const ID: &str = "redis";
const TITLE: &str = "Redis reachable";

/// Connects to `url` (`redis://` or `rediss://`, with the password from the URL), sends PING,
/// and reads the server version. Never longer than about `timeout`.
pub async fn check_redis(url: &str, timeout: Duration) -> CheckResult {
    let shown = redact_uri(url);
    let secrets = uri_secrets(url);
    match ping(url, timeout).await {
        Ok(pong) => {
            let version = pong
                .version
                .map(|v| format!(" (redis {v})"))
                .unwrap_or_default();
            CheckResult::ok(ID, TITLE, format!("{shown} answered PING{version}"))
        }
        Err(PingError::BadUrl(e)) => CheckResult::blocker(
            ID,
            TITLE,
            format!(
                "{shown} is not a valid Redis URL: {}",
                scrub(&e.to_string(), &secrets)
            ),
            "pass --redis-url redis://[:password@]host:port[/db] (rediss:// for TLS), or \
             --redis-url auto to let upstep start a throwaway Redis",
        ),
        Err(PingError::Failed(e)) => failure(&shown, &e, &secrets, timeout),
        Err(PingError::TimedOut) => CheckResult::blocker(
            ID,
            TITLE,
            format!("{shown} did not answer within {}s", timeout.as_secs_f32()),
            "check the host and port (a firewall may drop the packets), or pass --redis-url \
             auto to let upstep start a throwaway Redis",
        ),
    }
}

fn failure(shown: &str, e: &RedisError, secrets: &[String], timeout: Duration) -> CheckResult {
    let message = scrub(&e.to_string(), secrets);
    if e.kind() == ErrorKind::AuthenticationFailed || e.code() == Some("WRONGPASS") {
        return CheckResult::blocker(
            ID,
            TITLE,
            format!("{shown} refused the password (authentication failed)"),
            "put the right password in --redis-url (redis://:PASSWORD@host:port) or \
             REDIS_PASSWORD",
        );
    }
    if e.code() == Some("NOAUTH") {
        return CheckResult::blocker(
            ID,
            TITLE,
            format!("{shown} requires a password and none was given"),
            "add it to the URL: --redis-url redis://:PASSWORD@host:port (or set REDIS_PASSWORD)",
        );
    }
    if e.is_connection_refusal() {
        return CheckResult::blocker(
            ID,
            TITLE,
            format!("nothing accepts connections at {shown} (connection refused)"),
            "start redis-server (e.g. `redis-server --daemonize yes`), or pass --redis-url auto \
             to let upstep start a throwaway Redis",
        );
    }
    if e.is_timeout() {
        return CheckResult::blocker(
            ID,
            TITLE,
            format!("{shown} did not answer within {}s", timeout.as_secs_f32()),
            "check the host and port, or pass --redis-url auto to let upstep start a throwaway \
             Redis",
        );
    }
    CheckResult::blocker(
        ID,
        TITLE,
        format!("cannot use Redis at {shown}: {message}"),
        "check --redis-url (host, port, password, rediss:// for TLS), or pass --redis-url auto \
         to let upstep start a throwaway Redis",
    )
}
