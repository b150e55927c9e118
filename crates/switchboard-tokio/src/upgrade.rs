//! Accepting WebSocket upgrades on hyper 1.x connections (feature `hyper`).
//!
//! ```no_run
//! use http_body_util::Empty;
//! use hyper::{body::Bytes, Request, Response};
//! use switchboard_tokio::{upgrade, Config};
//!
//! async fn handle(mut req: Request<hyper::body::Incoming>) -> Result<Response<Empty<Bytes>>, switchboard_tokio::Error> {
//!     let (response, fut) = upgrade::upgrade(&mut req, Config::default(), None)?;
//!     tokio::spawn(async move {
//!         if let Ok(mut ws) = fut.await {
//!             while let Ok(Some(msg)) = ws.recv().await {
//!                 if ws.send(&msg).await.is_err() { break; }
//!             }
//!         }
//!     });
//!     Ok(response)
//! }
//! ```

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::Empty;
use hyper::upgrade::{OnUpgrade, Upgraded};
use hyper_util::rt::TokioIo;
use switchboard_proto::extension::DeflateParams;
use switchboard_proto::handshake::server::Request;
use switchboard_proto::handshake::{accept_key, HandshakeError};
use switchboard_proto::{Config, Connection, Role};

use crate::error::Error;
use crate::WebSocket;

/// The WebSocket over a hyper upgrade.
pub type UpgradedWebSocket = WebSocket<TokioIo<Upgraded>>;

/// Whether a hyper request asks for a WebSocket upgrade.
pub fn is_upgrade_request<B>(req: &http::Request<B>) -> bool {
    request_head(req).is_upgrade()
}

/// The head of a request hyper parsed, as the handshake checks (and a server's routing)
/// see a request: method, path with query, version (`1` for HTTP/1.1, else `0`: an upgrade
/// needs HTTP/1.1), headers with the lowercase names hyper gives them (values that are not
/// UTF-8 read lossily), and, when there is no `Host` (HTTP/2 names the host in
/// `:authority`, which hyper keeps in the URI), the authority as `host`.
///
/// ```
/// let req = http::Request::post("http://x/api/publish?a=1").body(()).unwrap();
/// let head = switchboard_tokio::upgrade::request_head(&req);
/// assert_eq!((head.method.as_str(), head.path_only(), head.query()), ("POST", "/api/publish", Some("a=1")));
/// assert_eq!(head.host(), "x");
/// ```
pub fn request_head<B>(req: &http::Request<B>) -> Request {
    let mut head = Request {
        method: req.method().as_str().to_string(),
        path: req
            .uri()
            .path_and_query()
            .map_or_else(|| "/".to_string(), |p| p.as_str().to_string()),
        version: u8::from(req.version() == http::Version::HTTP_11),
        headers: req
            .headers()
            .iter()
            .map(|(n, v)| {
                (
                    n.as_str().to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
    };
    if head.header("host").is_none() {
        if let Some(authority) = req.uri().authority() {
            head.headers
                .push(("host".to_string(), authority.to_string()));
        }
    }
    head
}

/// Checks an upgrade request (every RFC 6455 §4.2.1 rule) and returns the `101` response to
/// send back plus a future that yields the WebSocket once hyper hands over the connection.
///
/// `protocol` must be one the client offered. On error, answer with
/// [`HandshakeError::status`] (for example via [`rejection`]).
pub fn upgrade<B>(
    req: &mut http::Request<B>,
    config: impl Into<std::sync::Arc<Config>>,
    protocol: Option<&str>,
) -> Result<(http::Response<Empty<Bytes>>, UpgradeFut), Error> {
    let config: std::sync::Arc<Config> = config.into();
    let (resp, deflate) = switching_protocols(&request_head(req), &config, protocol)?;
    let on = hyper::upgrade::on(req);
    Ok((
        resp,
        UpgradeFut {
            on,
            config,
            deflate,
        },
    ))
}

/// Checks an upgrade request's `head` (every RFC 6455 §4.2.1 rule) and negotiates with
/// `config`: the `101` to answer with (empty body) and the permessage-deflate parameters
/// agreed. For a server that takes the connection back from hyper itself; [`upgrade`] does
/// this and hands over the WebSocket.
///
/// `protocol` must be one the client offered.
///
/// # Errors
/// The check that failed; answer with its [`HandshakeError::status`].
pub fn switching_protocols(
    head: &Request,
    config: &Config,
    protocol: Option<&str>,
) -> Result<(http::Response<Empty<Bytes>>, Option<DeflateParams>), HandshakeError> {
    let key = head.validate()?;
    if let Some(proto) = protocol {
        if !head.protocols().any(|o| o == proto) {
            return Err(HandshakeError::ProtocolNotOffered(proto.to_string()));
        }
    }
    let mut resp = http::Response::builder()
        .status(http::StatusCode::SWITCHING_PROTOCOLS)
        .header(http::header::UPGRADE, "websocket")
        .header(http::header::CONNECTION, "Upgrade")
        .header(
            http::header::SEC_WEBSOCKET_ACCEPT,
            accept_key(key.as_bytes()),
        );
    if let Some(proto) = protocol {
        resp = resp.header(http::header::SEC_WEBSOCKET_PROTOCOL, proto);
    }
    let negotiated = head.negotiate_extensions(config);
    if let Some(ext) = &negotiated.response {
        resp = resp.header(http::header::SEC_WEBSOCKET_EXTENSIONS, ext.as_str());
    }
    let resp = resp
        .body(Empty::new())
        .map_err(|e| HandshakeError::InvalidHeader(e.to_string()))?;
    Ok((resp, negotiated.deflate))
}

/// An HTTP error response for a failed upgrade, with the headers RFC 6455 asks for (426 carries
/// `Sec-WebSocket-Version: 13`).
pub fn rejection(e: &HandshakeError) -> http::Response<http_body_util::Full<Bytes>> {
    let mut b = http::Response::builder()
        .status(e.status())
        .header(http::header::CONTENT_TYPE, "text/plain; charset=utf-8");
    if e.status() == 426 {
        b = b.header(http::header::SEC_WEBSOCKET_VERSION, "13");
    }
    b.body(http_body_util::Full::new(Bytes::from(e.to_string())))
        .unwrap_or_default()
}

/// Resolves to the WebSocket once hyper has sent the `101` and released the connection.
#[derive(Debug)]
#[must_use = "the upgrade only completes when this future is awaited"]
pub struct UpgradeFut {
    on: OnUpgrade,
    config: std::sync::Arc<Config>,
    deflate: Option<DeflateParams>,
}

impl Future for UpgradeFut {
    type Output = Result<UpgradedWebSocket, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        match Pin::new(&mut this.on).poll(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Ok(upgraded)) => {
                let mut conn = Connection::new(Role::Server, std::sync::Arc::clone(&this.config));
                if let Some(params) = this.deflate {
                    conn = conn.with_deflate(params);
                }
                Poll::Ready(Ok(WebSocket::from_connection(TokioIo::new(upgraded), conn)))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(Error::Io(std::io::Error::other(e)))),
        }
    }
}
