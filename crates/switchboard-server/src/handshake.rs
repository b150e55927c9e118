//! What every WebSocket handshake checks, whatever carries it (the first request of a
//! connection, read by our own parser, or an upgrade on a kept-alive connection hyper
//! serves): an endpoint at its path (404), the connection limits (503), the origin rule
//! (403), the token (401), and the endpoint's own parameters; then, once the connection is
//! upgraded, the endpoint it runs.

use std::net::SocketAddr;
use std::sync::Arc;

use switchboard_hub::StreamPosition;
use switchboard_proto::handshake::server::Request;
use switchboard_proto::Config;
use switchboard_tokio::{SocketControl, Transport, WebSocket};
use tracing::{debug, warn};

use crate::auth::{AuthError, Identity};
use crate::endpoint::presence::ClientId;
use crate::endpoint::{chat, pubsub};
use crate::error::Rejection;
use crate::metrics::Reject;
use crate::registry::{Refusal, Registration};
use crate::routes::{self, Endpoint};
use crate::{session, Routed, Shared};

/// The endpoint a handshake was admitted to, with what it needs to start.
pub(crate) enum App {
    /// `/echo`.
    Echo,
    /// `/chat`, its room and member made from the query.
    Chat(chat::Chat),
    /// `/ws`, with the positions to recover from (`?recover=`).
    PubSub(Vec<(String, StreamPosition)>),
}

/// A handshake that passed every check: upgrade the connection, then [`open`](Self::open).
pub(crate) struct Admitted {
    pub(crate) app: App,
    pub(crate) identity: Identity,
}

impl Admitted {
    /// The subprotocol to select. `/echo` is a test endpoint: it speaks whatever the client
    /// offers, so the first offered one is selected (browsers and Node `ws` fail a handshake
    /// that offered one and got none back).
    pub(crate) fn protocol<'r>(&self, req: &'r Request) -> Option<&'r str> {
        match self.app {
            App::Echo => req.protocols().next(),
            App::Chat(_) => req.choose_protocol(&[chat::SUBPROTOCOL]),
            App::PubSub(_) => req.choose_protocol(&[pubsub::SUBPROTOCOL]),
        }
    }

    /// The WebSocket configuration of the endpoint.
    pub(crate) fn config<'s>(&self, shared: &'s Shared) -> &'s Arc<Config> {
        match self.app {
            App::Echo => &shared.echo,
            App::Chat(_) | App::PubSub(_) => &shared.ws,
        }
    }

    /// The endpoint on the upgraded connection: the echo loop, to run in the connection's
    /// state machine, or a session of its own.
    pub(crate) fn open<S>(
        self,
        ws: WebSocket<S>,
        reg: Registration,
        id: u64,
        shared: Arc<Shared>,
    ) -> Routed<S>
    where
        S: Transport + SocketControl + Send + 'static,
    {
        match self.app {
            App::Echo => Routed::Echo(ws, reg),
            App::Chat(app) => {
                debug!(room = %app.room(), name = %app.name(), "chat opened");
                Routed::Boxed(session::start(ws, app, self.identity, reg, shared))
            }
            App::PubSub(recover) => {
                debug!("pub/sub opened");
                let client = ClientId::new(Arc::clone(&shared.node), id);
                let app = pubsub::PubSub::with_settings(Arc::clone(&shared.pubsub), client)
                    .recover(recover);
                Routed::Boxed(session::start(ws, app, self.identity, reg, shared))
            }
        }
    }
}

/// Checks a WebSocket handshake, in order: an endpoint at its path (404), the connection
/// limits (`refusal`: 503), the origin rule (403), the token (401), the endpoint's query.
pub(crate) fn check(
    req: &Request,
    refusal: Option<&Refusal>,
    peer: SocketAddr,
    id: u64,
    shared: &Shared,
) -> Result<Admitted, Rejection> {
    let endpoint = routes::websocket(req.path_only())?;
    if let Some(why) = refusal {
        let (reason, limit) = why.reason_and_limit();
        if let Some(suppressed) = shared.refusals.limit.check() {
            warn!(%peer, reason = reason.label(), limit, suppressed, "WebSocket refused: connection limit");
        }
        return Err(Rejection::new(reason, why.message()));
    }
    if let Err(why) = routes::check_origin(&shared.config.origins, req) {
        let origin = req.origin().unwrap_or_default();
        if let Some(suppressed) = shared.refusals.origin.check() {
            warn!(%peer, reason = "origin", origin, suppressed, "WebSocket refused: origin not allowed");
        }
        return Err(why);
    }
    let identity = match endpoint {
        Endpoint::Echo => {
            return Ok(Admitted {
                app: App::Echo,
                identity: Identity::anonymous(),
            })
        }
        Endpoint::Chat | Endpoint::PubSub => identify(req, peer, shared)?,
    };
    if let Some(user) = &identity.user {
        tracing::Span::current().record("user", user.as_str());
    }
    let app = match endpoint {
        Endpoint::Chat => App::Chat(chat_app(req, &identity, id, shared)?),
        _ => App::PubSub(pubsub::recover_query(req.query()).map_err(Rejection::bad_request)?),
    };
    Ok(Admitted { app, identity })
}

/// A `/chat` member from the query, in a room the identity may join.
fn chat_app(
    req: &Request,
    identity: &Identity,
    id: u64,
    shared: &Shared,
) -> Result<chat::Chat, Rejection> {
    let max_text = shared.config.limits.max_chat_text;
    let app = chat::Chat::from_query(req.query(), identity, &shared.node, id, max_text)?
        .recovery_max(shared.config.limits.recovery_max);
    let room = format!("chat:{}", app.room());
    if let Err(e) = shared
        .config
        .namespaces
        .check_subscribe(identity, &room, false)
    {
        return Err(Rejection::new(Reject::Forbidden, e.message));
    }
    Ok(app)
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
