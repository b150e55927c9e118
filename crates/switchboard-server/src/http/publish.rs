//! `POST /api/publish`: publishing from a backend. The request is authenticated first (the
//! configured [`Authenticator`](crate::Authenticator), by default the API key), then its
//! JSON body names the topic and carries `data` (any JSON, delivered as `/ws` delivers a
//! publish) or `data_base64` (delivered as a binary message).

use std::net::SocketAddr;

use base64::Engine;
use bytes::Bytes;
use serde::Deserialize;
use serde_json::value::RawValue;
use switchboard_proto::handshake::server::Request;
use tracing::{debug, warn};

use super::body::{check_length, read_body};
use super::response::Response;
use crate::auth::{ApiKey, AuthError, Identity};
use crate::endpoint::pubsub::{binary_body, json_body, publishable};
use crate::Shared;

#[derive(Deserialize)]
struct PublishBody<'a> {
    topic: String,
    #[serde(borrow, default)]
    data: Option<&'a RawValue>,
    #[serde(default)]
    data_base64: Option<String>,
}

/// Answers one `POST /api/publish`: the body's length and the key are checked before the
/// body is read (an `Expect: 100-continue` is answered only then), within `max_api_body`
/// and the handshake timeout.
pub(crate) async fn answer<B>(
    body: B,
    head: &Request,
    peer: SocketAddr,
    shared: &Shared,
) -> Response
where
    B: hyper::body::Body<Data = Bytes>,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let max = shared.config.limits.max_api_body;
    if let Err(refused) = check_length(head, max) {
        return refused;
    }
    let identity = match authenticate(head, peer, shared) {
        Ok(identity) => identity,
        Err(refused) => return refused,
    };
    match read_body(body, max, shared.config.ws.handshake_timeout).await {
        Ok(bytes) => publish(&identity, &bytes, shared).await,
        Err(refused) => refused,
    }
}

/// Publishes what a body whose sender is known says.
async fn publish(identity: &Identity, body: &[u8], shared: &Shared) -> Response {
    let p: PublishBody<'_> = match serde_json::from_slice(body) {
        Ok(p) => p,
        Err(e) => {
            return Response::text(400, &format!("expected {{\"topic\":\"news\",\"data\":<any JSON>}} or {{\"topic\":\"news\",\"data_base64\":\"...\"}}: {e}\n"))
        }
    };
    // The backend may publish anywhere its namespaces know (publish rules are for
    // clients); a topic in a namespace the server does not know is a mistake.
    let checked = publishable(&p.topic).and_then(|()| {
        shared.config.namespaces.rules(&p.topic)?;
        Ok(())
    });
    if let Err(e) = checked {
        return Response::text(400, &format!("{e}\n"));
    }
    let body = match (p.data, p.data_base64) {
        (Some(data), None) => json_body(data),
        (None, Some(b64)) => match base64::engine::general_purpose::STANDARD.decode(b64.trim()) {
            Ok(bytes) => match binary_body(&p.topic, bytes) {
                Some(body) => body,
                None => return Response::text(400, "topic too long for a binary delivery\n"),
            },
            Err(e) => return Response::text(400, &format!("data_base64 is not base64: {e}\n")),
        },
        _ => return Response::text(400, "give exactly one of \"data\" and \"data_base64\"\n"),
    };
    match shared.hub.publish(&p.topic, body).await {
        Ok(published) => {
            let at = &published.position;
            debug!(topic = %p.topic, offset = at.offset, delivered = published.delivered, user = identity.user.as_deref(), "published via API");
            let delivered = published
                .delivered
                .map_or(String::new(), |n| format!(",\"delivered\":{n}"));
            // Epochs are letters and digits: nothing to escape.
            Response::json(
                200,
                &format!(
                    "{{\"ok\":true,\"offset\":{},\"epoch\":\"{}\"{delivered}}}",
                    at.offset, at.epoch
                ),
            )
        }
        Err(e) => {
            warn!(topic = %p.topic, error = %e, "publish via API failed");
            Response::text(503, &format!("{e}\n"))
        }
    }
}

/// Who sent the request, or the response that refuses it (logged, rate-limited).
fn authenticate(req: &Request, peer: SocketAddr, shared: &Shared) -> Result<Identity, Response> {
    let checked = match &shared.config.authenticator {
        Some(auth) => auth.authenticate(req),
        None => ApiKey::check(&shared.config.api_keys, req),
    };
    let refused = |reason: &str| {
        if let Some(suppressed) = shared.refusals.auth.check() {
            warn!(%peer, reason, suppressed, "publish API refused: no or wrong API key");
        }
    };
    checked.map_err(|e| match e {
        AuthError::Disabled => Response::text(
            403,
            "the publish API is disabled: no API key is configured. Set SWITCHBOARD_API_KEY (or api_key in the config file) and send it as `Authorization: Bearer KEY`\n",
        ),
        AuthError::Missing => {
            refused("missing_key");
            Response::new(
                401,
                "text/plain; charset=utf-8",
                &[("WWW-Authenticate", "Bearer")],
                &b"send the API key as `Authorization: Bearer KEY`\n"[..],
            )
        }
        AuthError::Wrong => {
            refused("wrong_key");
            Response::text(403, "wrong API key\n")
        }
        AuthError::Invalid(why) => {
            refused("invalid");
            Response::new(
                401,
                "text/plain; charset=utf-8",
                &[("WWW-Authenticate", "Bearer")],
                format!("{why}\n").into_bytes(),
            )
        }
    })
}
