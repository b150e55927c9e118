//! A connection's first request: plain HTTP goes to [`http`](crate::http); a WebSocket
//! handshake is checked against the [route table](crate::routes), the connection limits and
//! the origin rule, then upgraded and handed to its endpoint, or refused.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use switchboard_proto::handshake::server::Request;
use switchboard_proto::Config;
use switchboard_tokio::{
    read_request, refuse, upgrade_request, Error as WsError, SocketControl, Transport, WebSocket,
};
use tokio::io::{AsyncRead, AsyncWrite};
use tracing::{debug, warn};

use crate::auth::{AuthError, Identity};
use crate::endpoint::presence::ClientId;
use crate::endpoint::{chat, pubsub};
use crate::error::Rejection;
use crate::metrics::{Handshake, Reject};
use crate::registry::{self, Registration};
use crate::routes::{self, Endpoint};
use crate::{http, session, Routed, Shared};

/// Reads the first request and serves it: plain HTTP, or a WebSocket on one of the
/// endpoints (the echo one is handed back to run in the connection's state machine).
pub(crate) async fn route<S>(
    mut stream: S,
    id: u64,
    peer: SocketAddr,
    reg: Result<Registration, (Registration, registry::Refusal)>,
    shared: Arc<Shared>,
) -> Routed<S>
where
    S: Transport + SocketControl + Send + 'static,
{
    let (req, leftover) = match read_request(&mut stream, &shared.echo).await {
        Ok(r) => r,
        Err(e) => {
            debug!(error = %e, "bad request");
            if !matches!(e, WsError::Io(_)) {
                shared.metrics.handshake(Handshake::Failed);
            }
            return Routed::Done;
        }
    };
    if !req.is_upgrade() {
        let limited = reg
            .as_ref()
            .err()
            .map(|(_, why)| why)
            .filter(|w| w.is_rate());
        http::handle(stream, req, leftover, peer, limited, &shared).await;
        return Routed::Done;
    }
    let (endpoint, reg) = match admit(&req, reg, peer, &shared) {
        Ok(admitted) => admitted,
        Err((why, held)) => return refused(stream, &shared, why, held).await,
    };
    let identity = match endpoint {
        Endpoint::Echo => Identity::anonymous(),
        Endpoint::Chat | Endpoint::PubSub => match identify(&req, peer, &shared) {
            Ok(identity) => {
                if let Some(user) = &identity.user {
                    tracing::Span::current().record("user", user.as_str());
                }
                identity
            }
            Err(why) => return refused(stream, &shared, why, reg).await,
        },
    };
    match endpoint {
        // A test endpoint: it speaks whatever the client offers, so the first offered
        // subprotocol is selected (browsers and Node `ws` fail a handshake that offered
        // one and got none back).
        Endpoint::Echo => {
            let protocol = req.protocols().next();
            match upgrade(stream, &req, &leftover, &shared.echo, protocol, &shared).await {
                Some(ws) => Routed::Echo(ws, reg),
                None => Routed::Done,
            }
        }
        Endpoint::Chat => {
            let max_text = shared.config.limits.max_chat_text;
            let app =
                match chat::Chat::from_query(req.query(), &identity, &shared.node, id, max_text) {
                    Ok(app) => app.recovery_max(shared.config.limits.recovery_max),
                    Err(why) => return refused(stream, &shared, why, reg).await,
                };
            let room = format!("chat:{}", app.room());
            let namespaces = &shared.config.namespaces;
            if let Err(e) = namespaces.check_subscribe(&identity, &room, false) {
                let why = Rejection::new(Reject::Forbidden, e.message);
                return refused(stream, &shared, why, reg).await;
            }
            let protocol = req.choose_protocol(&[chat::SUBPROTOCOL]);
            let Some(ws) = upgrade(stream, &req, &leftover, &shared.ws, protocol, &shared).await
            else {
                return Routed::Done;
            };
            debug!(room = %app.room(), name = %app.name(), "chat opened");
            Routed::Session(session::start(ws, app, identity, reg, shared))
        }
        Endpoint::PubSub => {
            let recover = match pubsub::recover_query(req.query()) {
                Ok(positions) => positions,
                Err(why) => {
                    return refused(stream, &shared, Rejection::bad_request(why), reg).await
                }
            };
            let protocol = req.choose_protocol(&[pubsub::SUBPROTOCOL]);
            let Some(ws) = upgrade(stream, &req, &leftover, &shared.ws, protocol, &shared).await
            else {
                return Routed::Done;
            };
            debug!("pub/sub opened");
            let client = ClientId::new(Arc::clone(&shared.node), id);
            let app =
                pubsub::PubSub::with_settings(Arc::clone(&shared.pubsub), client).recover(recover);
            Routed::Session(session::start(ws, app, identity, reg, shared))
        }
    }
}

/// Checks a WebSocket handshake, in order: an endpoint at its path (404), the connection
/// limits (503), the origin rule (403). A refusal comes back with the registration, to be
/// let go once the refusal is written.
fn admit(
    req: &Request,
    reg: Result<Registration, (Registration, registry::Refusal)>,
    peer: SocketAddr,
    shared: &Shared,
) -> Result<(Endpoint, Registration), (Rejection, Registration)> {
    let endpoint = match routes::websocket(req.path_only()) {
        Ok(endpoint) => endpoint,
        Err(why) => return Err((why, reg.unwrap_or_else(|(held, _)| held))),
    };
    let reg = match reg {
        Ok(reg) => reg,
        Err((held, why)) => {
            let (reason, limit) = why.reason_and_limit();
            if let Some(suppressed) = shared.refusals.limit.check() {
                warn!(%peer, reason = reason.label(), limit, suppressed, "WebSocket refused: connection limit");
            }
            return Err((Rejection::new(reason, why.message()), held));
        }
    };
    if let Err(why) = routes::check_origin(&shared.config.origins, req) {
        let origin = req.origin().unwrap_or_default();
        if let Some(suppressed) = shared.refusals.origin.check() {
            warn!(%peer, reason = "origin", origin, suppressed, "WebSocket refused: origin not allowed");
        }
        return Err((why, reg));
    }
    Ok((endpoint, reg))
}

/// Who opens a `/chat` or `/ws` WebSocket: what the configured
/// [websocket authenticator](crate::ServerConfig::websocket_authenticator) says (without one,
/// everyone is an anonymous guest). No token, where tokens are required, and a token that is
/// not accepted are refused with 401 and the reason; the token itself is never logged.
fn identify(req: &Request, peer: SocketAddr, shared: &Shared) -> Result<Identity, Rejection> {
    let Some(auth) = &shared.config.websocket_authenticator else {
        return Ok(Identity::anonymous());
    };
    let (reason, why) = match auth.authenticate(req) {
        Ok(identity) => return Ok(identity),
        Err(AuthError::Missing) if shared.config.allow_anonymous => {
            return Ok(Identity::anonymous())
        }
        Err(AuthError::Missing) => ("no token".to_string(), "this server needs a token: send it as `Authorization: Bearer TOKEN`, or as `?token=TOKEN` from a browser".to_string()),
        Err(AuthError::Invalid(why)) => {
            let body = format!("the token is not accepted: {why}");
            (why, body)
        }
        Err(e) => (e.to_string(), format!("not accepted: {e}")),
    };
    if let Some(suppressed) = shared.refusals.auth.check() {
        warn!(%peer, %reason, suppressed, "WebSocket refused: token");
    }
    Err(Rejection::new(Reject::Unauthorized, why))
}

/// Answers a refused handshake and closes; `held` (the connection's registration) is let go
/// after, so the connection counts against the limits until then.
async fn refused<S, H>(mut stream: S, shared: &Shared, why: Rejection, held: H) -> Routed<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let status = why.status();
    debug!(status, body = %why.body, "handshake refused");
    shared.metrics.handshake(Handshake::Rejected(why.reason));
    let _ = refuse(&mut stream, status, &why.body).await;
    drop(held);
    Routed::Done
}

/// Completes the handshake with `config` and `protocol`, counting it either way.
async fn upgrade<S>(
    stream: S,
    req: &Request,
    leftover: &[u8],
    config: &Arc<Config>,
    protocol: Option<&str>,
    shared: &Shared,
) -> Option<WebSocket<S>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    match upgrade_request(stream, req, leftover, Arc::clone(config), protocol, &[]).await {
        Ok(ws) => {
            shared.metrics.handshake(Handshake::Accepted);
            shared
                .metrics
                .connections_open
                .fetch_add(1, Ordering::Relaxed);
            // The path only: the query may hold a token.
            debug!(path = %req.path_only(), "accepted");
            Some(ws)
        }
        Err(e) => {
            shared.metrics.handshake(Handshake::Failed);
            debug!(error = %e, "handshake failed");
            None
        }
    }
}
