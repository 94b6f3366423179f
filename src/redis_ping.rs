//! The one Redis ping: connect to a `redis://` or `rediss://` URL (password, TLS and database
//! from the URL), send PING, read the server's version. Used by the preflight check, the
//! tunnel's readiness probe and the throwaway redis-server's start-up.

use std::time::Duration;

use redis::{AsyncConnectionConfig, RedisError};

/// A Redis that answered PING.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pong {
    /// `redis_version` from `INFO server`, when the server told it.
    pub version: Option<String>,
}

/// Why a ping got no PONG.
#[derive(Debug)]
pub enum PingError {
    /// The URL is not one the Redis client accepts (the error may quote it: scrub before
    /// showing).
    BadUrl(RedisError),
    /// The server was reached (or not) and answered with an error, or the connection failed.
    Failed(RedisError),
    /// No answer within the timeout (plus a second for TLS and AUTH).
    TimedOut,
}

impl PingError {
    /// Whether a Redis answered, if only to ask for a password: it is up.
    pub fn is_an_answer(&self) -> bool {
        matches!(self, PingError::Failed(e) if e.code() == Some("NOAUTH"))
    }
}

/// Pings the Redis at `url`; never takes longer than about `timeout` plus one second.
pub async fn ping(url: &str, timeout: Duration) -> Result<Pong, PingError> {
    let client = redis::Client::open(url).map_err(PingError::BadUrl)?;
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(timeout)
        .set_response_timeout(timeout);
    // An outer deadline too: TLS and AUTH happen after the TCP connect the inner one bounds.
    let attempt = tokio::time::timeout(timeout + Duration::from_secs(1), async {
        let mut connection = client
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        redis::cmd("PING")
            .query_async::<String>(&mut connection)
            .await?;
        let info: String = redis::cmd("INFO")
            .arg("server")
            .query_async(&mut connection)
            .await
            .unwrap_or_default();
        Ok::<_, RedisError>(info)
    })
    .await;
    match attempt {
        Ok(Ok(info)) => Ok(Pong {
            version: info
                .lines()
                .find_map(|line| line.strip_prefix("redis_version:"))
                .map(|v| v.trim().to_string()),
        }),
        Ok(Err(e)) => Err(PingError::Failed(e)),
        Err(_) => Err(PingError::TimedOut),
    }
}

/// The URL of a Redis on a loopback port, without password.
pub fn loopback_url(port: u16) -> String {
    format!("redis://127.0.0.1:{port}")
}
