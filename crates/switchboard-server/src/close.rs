//! The closing steps of every WebSocket session: why its loop stopped ([`Stop`]), the
//! heartbeat and shutdown checks that stop it, and [`finish`], which runs the closing
//! handshake the stop calls for and lets the connection go.

use std::sync::Arc;

use switchboard_proto::CloseCode;
use switchboard_tokio::{Error as WsError, SocketControl, Transport, WebSocket};
use tokio::io::{AsyncRead, AsyncWrite};
use tracing::debug;

use crate::registry::{Beat, Registration};

/// Why a connection's loop stopped.
#[derive(Debug)]
pub(crate) enum Stop {
    /// The peer's close frame arrived (the reply is queued).
    PeerClosed,
    /// The connection ended cleanly.
    Ended,
    /// The server is shutting down.
    Shutdown,
    /// No pong came back in time.
    PingTimeout,
    /// No message either way for the idle timeout.
    Idle,
    /// The subscriber's outbox overflowed.
    SlowConsumer,
    /// Publications of a topic it subscribes to were lost on their way to this node: the
    /// client reconnects and recovers.
    Recover,
    /// The connection's token expired without a refresh.
    TokenExpired,
    /// The client went on sending past its messages or bytes a second after it was warned.
    RateLimited,
    /// The connection failed.
    Failed(WsError),
}

/// The close code that tells a client to reconnect and recover from its last position
/// (docs/protocol.md): publications of a topic it subscribes to were lost on their way to
/// this node (a gap in offsets, or the stream's epoch changed).
pub(crate) const RECONNECT_AND_RECOVER: CloseCode = CloseCode(4010);

/// The close code of a connection whose token expired without a `refresh` (docs/protocol.md):
/// the client gets a new token from its backend and reconnects with it.
pub(crate) const TOKEN_EXPIRED: CloseCode = CloseCode(4011);

/// Heartbeat and shutdown checks shared by every WebSocket loop. `Some` means stop.
pub(crate) fn check_registration<S>(ws: &mut WebSocket<S>, reg: &mut Registration) -> Option<Stop>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    if reg.is_triggered() {
        return Some(Stop::Shutdown);
    }
    match reg.beat() {
        Beat::Nothing => None,
        Beat::Ping => ws.feed_ping(b"").err().map(Stop::Failed),
        Beat::Dead => Some(Stop::PingTimeout),
        Beat::Idle => Some(Stop::Idle),
    }
}

/// The closing steps after a loop stopped, then a log line saying how it ended.
///
/// A connection whose closing handshake did not complete (the peer did not answer within
/// `timeout`, or the connection failed) is reset rather than closed, so the kernel frees
/// what it still holds for it at once. The registration is let go last, once the socket
/// is closed: until then the connection counts against every limit.
pub(crate) async fn finish<S>(
    mut ws: WebSocket<S>,
    stop: Stop,
    reg: Registration,
    timeout: std::time::Duration,
) where
    S: Transport + SocketControl,
{
    let metrics = Arc::clone(reg.metrics());
    let r = match stop {
        // Bounded: a peer that sent its close and stopped reading must not hold the task.
        Stop::PeerClosed => bounded(timeout, ws.finish()).await,
        Stop::Ended => Ok(()),
        Stop::Shutdown => {
            let r = going_away(&mut ws, CloseCode::GOING_AWAY, "server shutting down").await;
            if r.is_ok() {
                debug!("closed for shutdown");
            }
            r
        }
        Stop::PingTimeout => {
            metrics.ping_timeouts.add(1);
            bounded(
                timeout,
                going_away(&mut ws, CloseCode::INTERNAL_ERROR, "ping timeout"),
            )
            .await
        }
        Stop::Idle => {
            bounded(
                timeout,
                going_away(&mut ws, CloseCode::GOING_AWAY, "idle timeout"),
            )
            .await
        }
        Stop::SlowConsumer => {
            metrics.slow_consumer_disconnects.add(1);
            bounded(
                timeout,
                going_away(
                    &mut ws,
                    CloseCode::POLICY_VIOLATION,
                    "slow consumer: too many messages queued",
                ),
            )
            .await
        }
        Stop::RateLimited => {
            metrics.rate_limit_disconnects.add(1);
            bounded(
                timeout,
                going_away(&mut ws, CloseCode::POLICY_VIOLATION, "rate limit exceeded"),
            )
            .await
        }
        Stop::Recover => {
            metrics.recover_disconnects.add(1);
            bounded(
                timeout,
                going_away(&mut ws, RECONNECT_AND_RECOVER, "reconnect and recover"),
            )
            .await
        }
        Stop::TokenExpired => {
            metrics.token_expired_disconnects.add(1);
            bounded(timeout, going_away(&mut ws, TOKEN_EXPIRED, "token expired")).await
        }
        Stop::Failed(e @ WsError::Protocol(_)) => {
            // The error's close frame went out; how the handshake ends decides the reset.
            if bounded(timeout, ws.finish()).await.is_err() {
                ws.get_ref().reset_on_drop();
            }
            Err(e)
        }
        Stop::Failed(e) => {
            ws.get_ref().reset_on_drop();
            Err(e)
        }
    };
    let conn = ws.connection();
    if let Some(Some(f)) = conn.sent_close() {
        metrics.close_code(f.code.0, "sent");
    }
    if let Some(Some(f)) = conn.received_close() {
        metrics.close_code(f.code.0, "received");
    }
    match r {
        Ok(()) => debug!("closed"),
        Err(e @ WsError::Protocol(_)) => debug!(error = %e, "ended"),
        Err(e) => {
            // The closing handshake did not complete (timed out or failed).
            debug!(error = %e, "ended; resetting the connection");
            ws.get_ref().reset_on_drop();
        }
    }
    drop(ws);
    drop(reg);
}

async fn bounded(
    timeout: std::time::Duration,
    f: impl std::future::Future<Output = Result<(), WsError>>,
) -> Result<(), WsError> {
    match tokio::time::timeout(timeout, f).await {
        Ok(r) => r,
        Err(_) => Err(WsError::CloseTimeout(timeout)),
    }
}

/// Flushes what is queued, then runs the closing handshake with `code`.
async fn going_away<S>(ws: &mut WebSocket<S>, code: CloseCode, reason: &str) -> Result<(), WsError>
where
    S: Transport,
{
    ws.flush().await?;
    ws.close(code, reason).await
}
