//! Plain HTTP on the WebSocket port: the chat page, `/healthz`, `/metrics` and
//! `POST /api/publish`, routed by the [route table](crate::routes). One request per
//! connection (`Connection: close`).

mod body;
mod publish;
pub(crate) mod query;
mod response;

use std::net::SocketAddr;

use switchboard_proto::handshake::server::Request;
use tokio::io::{AsyncRead, AsyncWrite};

pub(crate) use query::query_param;
use response::Response;

use crate::registry::Refusal;
use crate::routes::{self, Http};
use crate::Shared;

/// The chat page, embedded at build time.
const CHAT_PAGE: &str = include_str!("../../assets/chat.html");

/// Answers one plain HTTP request and closes; `limited`: the client's address is past its
/// new connections a second, answered with 429 whatever it asked for.
pub(crate) async fn handle<S>(
    mut stream: S,
    req: Request,
    leftover: Vec<u8>,
    peer: SocketAddr,
    limited: Option<&Refusal>,
    shared: &Shared,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let timeout = shared.config.ws.handshake_timeout;
    let route = match limited {
        Some(why) => Http::TooManyRequests(why.message()),
        None => routes::http(&req.method, req.path_only()),
    };
    let resp = match route {
        Http::Page => Response::new(
            200,
            "text/html; charset=utf-8",
            &[("X-Content-Type-Options", "nosniff")],
            CHAT_PAGE.as_bytes(),
        ),
        Http::Health => {
            if shared.registry.is_triggered() {
                Response::text(503, "shutting down\n")
            } else {
                Response::text(200, "ok\n")
            }
        }
        Http::Metrics => Response::new(
            200,
            "text/plain; version=0.0.4; charset=utf-8",
            &[],
            shared.metrics.render(&shared.hub).as_bytes(),
        ),
        Http::Publish => {
            let max = shared.config.limits.max_api_body;
            match body::read_body(&mut stream, &req, leftover, max, timeout).await {
                Ok(body) => publish::publish(&req, &body, peer, shared).await,
                Err(resp) => resp,
            }
        }
        Http::UpgradeRequired(body) => Response::text(426, &body),
        Http::MethodNotAllowed { allow, body } => Response::new(
            405,
            "text/plain; charset=utf-8",
            &[("Allow", allow)],
            body.as_bytes(),
        ),
        Http::NotFound(body) => Response::text(404, &body),
        Http::TooManyRequests(body) => Response::new(
            429,
            "text/plain; charset=utf-8",
            &[("Retry-After", "1")],
            format!("{body}\n").as_bytes(),
        ),
    };
    shared.metrics.http_request(&req.method, resp.status);
    let resp = if req.method == "HEAD" {
        resp.head_only()
    } else {
        resp
    };
    resp.write(&mut stream, timeout).await;
}
