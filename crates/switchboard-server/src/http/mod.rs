//! Plain HTTP on the WebSocket port: the chat page, `/healthz`, `/metrics` and
//! `POST /api/publish`, routed by the [route table](crate::routes) and served by hyper with
//! keep-alive ([`serve1`]). [`respond`] answers one request, whatever carries it.

mod body;
mod head;
mod publish;
pub(crate) mod query;
pub(crate) mod response;
mod serve1;
mod upgrade;

use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::Full;
use switchboard_proto::handshake::server::Request;
use tokio::io::AsyncWrite;

pub(crate) use head::head;
pub(crate) use query::query_param;
use response::Response;
pub(crate) use serve1::serve1;

use crate::registry::Refusal;
use crate::routes::{self, Http};
use crate::Shared;

/// The chat page, embedded at build time.
const CHAT_PAGE: &str = include_str!("../../assets/chat.html");

/// Answers one plain HTTP request (`head` is `req`'s head), counting it in the metrics.
pub(crate) async fn respond<B>(
    req: http::Request<B>,
    head: &Request,
    peer: SocketAddr,
    shared: &Shared,
) -> http::Response<Full<Bytes>>
where
    B: hyper::body::Body<Data = Bytes>,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let resp = match routes::http(&head.method, head.path_only()) {
        Http::Page => Response::new(
            200,
            "text/html; charset=utf-8",
            &[("X-Content-Type-Options", "nosniff")],
            Bytes::from_static(CHAT_PAGE.as_bytes()),
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
            shared.metrics.render(&shared.hub),
        ),
        Http::Publish => publish::answer(req.into_body(), head, peer, shared).await,
        Http::UpgradeRequired(body) => Response::text(426, &body),
        Http::MethodNotAllowed { allow, body } => {
            Response::new(405, "text/plain; charset=utf-8", &[("Allow", allow)], body)
        }
        Http::NotFound(body) => Response::text(404, &body),
    };
    shared.metrics.http_request(&head.method, resp.status);
    if head.method == "HEAD" {
        resp.into_http_head()
    } else {
        resp.into_http()
    }
}

/// Answers 429 and closes, whatever the request asked for: the client's address is past its
/// new connections a second (a connection's first request, read by our own parser).
pub(crate) async fn too_many<S>(stream: &mut S, req: &Request, why: &Refusal, shared: &Shared)
where
    S: AsyncWrite + Unpin,
{
    let resp = too_many_response(&why.message());
    shared.metrics.http_request(&req.method, resp.status);
    let timeout = shared.config.ws.handshake_timeout;
    resp.write_and_close(stream, req.method == "HEAD", timeout)
        .await;
}

/// The same 429 on a connection that stays open (HTTP/2: one stream's answer).
pub(crate) fn too_many_http(
    head: &Request,
    why: &Refusal,
    shared: &Shared,
) -> http::Response<Full<Bytes>> {
    let resp = too_many_response(&why.message());
    shared.metrics.http_request(&head.method, resp.status);
    resp.into_http()
}

fn too_many_response(body: &str) -> Response {
    Response::new(
        429,
        "text/plain; charset=utf-8",
        &[("Retry-After", "1")],
        format!("{body}\n"),
    )
}
