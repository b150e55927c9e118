//! The command connection: every Redis command but pub/sub goes through it, each bounded by
//! the command timeout, its errors mapped to [`EngineError`].

use std::future::Future;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Client, ErrorKind, RedisError, RedisResult, ServerErrorKind};
use switchboard_hub::engine::EngineError;

/// A multiplexed connection that reconnects by itself (redis-rs `ConnectionManager`), and
/// the timeout of each command.
#[derive(Clone)]
pub(crate) struct Commands {
    conn: ConnectionManager,
    timeout: Duration,
}

impl std::fmt::Debug for Commands {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Commands")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl Commands {
    /// Connects (one attempt bounded by `timeout`) and checks Redis answers `PING`.
    pub(crate) async fn connect(client: Client, timeout: Duration) -> Result<Self, EngineError> {
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_secs(1))
            .set_number_of_retries(3);
        let conn =
            match tokio::time::timeout(timeout, ConnectionManager::new_with_config(client, config))
                .await
            {
                Ok(conn) => conn.map_err(engine_error)?,
                Err(_) => return Err(EngineError::Timeout),
            };
        let commands = Self { conn, timeout };
        commands
            .run(|mut conn| async move { redis::cmd("PING").query_async::<()>(&mut conn).await })
            .await?;
        Ok(commands)
    }

    /// Runs `command` on the connection once, bounded by the command timeout (a publish:
    /// running it twice could number it twice).
    pub(crate) async fn run_once<T, F, Fut>(&self, command: F) -> Result<T, EngineError>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        match tokio::time::timeout(self.timeout, command(self.conn.clone())).await {
            Ok(result) => result.map_err(engine_error),
            Err(_) => Err(EngineError::Timeout),
        }
    }

    /// Runs an idempotent `command` (a read, a presence write), bounded by the command
    /// timeout in all; when the connection turns out to be broken (Redis restarted: the
    /// first command finds out, and the connection manager reconnects after it), runs it
    /// once more on the new connection.
    pub(crate) async fn run<T, F, Fut>(&self, command: F) -> Result<T, EngineError>
    where
        F: Fn(ConnectionManager) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        let attempts = async {
            match command(self.conn.clone()).await {
                Err(e) if e.is_connection_dropped() || e.is_io_error() => {
                    tracing::debug!(error = %e, "redis command on a broken connection; once more");
                    command(self.conn.clone()).await
                }
                other => other,
            }
        };
        match tokio::time::timeout(self.timeout, attempts).await {
            Ok(result) => result.map_err(engine_error),
            Err(_) => Err(EngineError::Timeout),
        }
    }

    /// The command timeout.
    pub(crate) fn timeout(&self) -> Duration {
        self.timeout
    }
}

/// Maps a Redis client error: cannot reach or lost the server → `Unavailable`, no answer in
/// time → `Timeout`, anything else (an error reply, an unexpected answer) → `Protocol`.
pub(crate) fn engine_error(err: RedisError) -> EngineError {
    if err.is_timeout() {
        return EngineError::Timeout;
    }
    let unavailable = err.is_io_error()
        || err.is_connection_refusal()
        || err.is_connection_dropped()
        || matches!(
            err.kind(),
            ErrorKind::Server(
                ServerErrorKind::BusyLoading
                    | ServerErrorKind::TryAgain
                    | ServerErrorKind::ClusterDown
                    | ServerErrorKind::MasterDown
                    | ServerErrorKind::ReadOnly
            )
        );
    if unavailable {
        EngineError::Unavailable(err.to_string())
    } else {
        EngineError::Protocol(err.to_string())
    }
}
