//! HTTP/2 on the server's port: one connection served by hyper, reached by its preface
//! (prior knowledge on plain TCP, or after ALPN `h2` on TLS), read by our parser within the
//! handshake timeout (the preface deadline). Plain requests are answered by
//! [`respond`](crate::http::respond), as over HTTP/1.1. Flow control is set, not defaulted:
//! `max_streams` × the stream window is the connection window, so streams that are not read
//! cannot stall the others. The connection closes (GOAWAY) after the handshake timeout with
//! no stream open, and on server shutdown; hyper's stream tasks run on the server's task
//! tracker.
//!
//! The connection advertises the extended CONNECT of RFC 8441
//! (`SETTINGS_ENABLE_CONNECT_PROTOCOL`): a stream may be a WebSocket ([`websocket`]).

mod exec;
mod idle;
mod websocket;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http2;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use switchboard_tokio::{Prefixed, SocketControl, Transport};
use tokio_rustls::rustls;
use tokio_rustls::TlsAcceptor;
use tracing::{debug, Instrument, Span};

use self::exec::TrackedExec;
use self::idle::{Idle, Streams};
use crate::http::{head, respond, too_many_http};
use crate::registry::{Refusal, Registration};
use crate::{BoxFuture, Shared};

/// The largest DATA frame payload queued for a stream before the writer waits for it to go.
const MAX_SEND_BUF: usize = 64 << 10;
/// How long a client has to answer a keep-alive PING when heartbeats set no pong timeout.
const PING_TIMEOUT: Duration = Duration::from_secs(20);

/// `acceptor` offering `h2` and `http/1.1` by ALPN, unless it names protocols itself.
pub(crate) fn with_alpn(acceptor: TlsAcceptor) -> TlsAcceptor {
    if !acceptor.config().alpn_protocols.is_empty() {
        return acceptor;
    }
    let mut config: rustls::ServerConfig = (**acceptor.config()).clone();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    TlsAcceptor::from(Arc::new(config))
}

/// What a connection's streams share.
struct Conn2 {
    shared: Arc<Shared>,
    peer: SocketAddr,
    /// Set when the address is past its new connections a second: every request gets 429.
    limited: Option<Refusal>,
    streams: Arc<Streams>,
}

/// The HTTP/2 connection whose preface (and whatever followed it) is in `buf`, boxed on its
/// own; `reg` counts it as one connection.
pub(crate) fn serve<S>(
    stream: S,
    buf: Vec<u8>,
    peer: SocketAddr,
    reg: Result<Registration, (Registration, Refusal)>,
    shared: Arc<Shared>,
) -> BoxFuture<()>
where
    S: Transport + SocketControl + Send + 'static,
{
    Box::pin(run(stream, buf, peer, reg, shared).instrument(Span::current()))
}

async fn run<S>(
    stream: S,
    buf: Vec<u8>,
    peer: SocketAddr,
    mut reg: Result<Registration, (Registration, Refusal)>,
    shared: Arc<Shared>,
) where
    S: Transport + SocketControl + Send + 'static,
{
    let streams = Arc::new(Streams::default());
    let conn2 = Arc::new(Conn2 {
        shared: Arc::clone(&shared),
        peer,
        limited: reg
            .as_ref()
            .err()
            .map(|(_, why)| why)
            .filter(|why| why.is_rate())
            .cloned(),
        streams: Arc::clone(&streams),
    });
    let service = service_fn(move |req| {
        let conn2 = Arc::clone(&conn2);
        async move { Ok::<_, Infallible>(conn2.answer(req).await) }
    });
    let io = TokioIo::new(Prefixed::new(Bytes::from(buf), stream));
    let conn = builder(&shared).serve_connection(io, service);
    let mut conn = std::pin::pin!(conn);
    let mut idle = Idle::new(streams, shared.echo.handshake_timeout);
    let ended = std::future::poll_fn(|cx| {
        let registration = match &mut reg {
            Ok(r) | Err((r, _)) => r,
        };
        if idle.poll_close(cx, registration.register(cx.waker())) {
            conn.as_mut().graceful_shutdown();
        }
        if idle.poll_give_up(cx) {
            return std::task::Poll::Ready(Ok(()));
        }
        conn.as_mut().poll(cx)
    })
    .await;
    if let Err(e) = ended {
        debug!(error = %e, "HTTP/2 connection ended");
    }
}

/// hyper's HTTP/2 server with the server's settings.
fn builder(shared: &Shared) -> http2::Builder<TrackedExec> {
    let h2 = &shared.config.http2;
    let heartbeat = &shared.config.heartbeat;
    let max_header_list = u32::try_from(shared.echo.max_handshake_size).unwrap_or(u32::MAX);
    let mut b = http2::Builder::new(TrackedExec(shared.tasks.clone()));
    b.timer(TokioTimer::new())
        .max_concurrent_streams(h2.max_streams)
        .initial_stream_window_size(h2.stream_window)
        .initial_connection_window_size(h2.connection_window())
        .adaptive_window(false)
        .max_send_buf_size(MAX_SEND_BUF)
        .max_header_list_size(max_header_list)
        .keep_alive_interval(heartbeat.ping_interval)
        .keep_alive_timeout(heartbeat.pong_timeout.unwrap_or(PING_TIMEOUT))
        .enable_connect_protocol();
    b
}

impl Conn2 {
    /// One stream's request: a WebSocket (an extended CONNECT, RFC 8441) or plain HTTP.
    async fn answer(&self, req: http::Request<Incoming>) -> http::Response<Full<Bytes>> {
        let open = self.streams.open();
        let head = head(&req);
        if let Some(why) = &self.limited {
            return too_many_http(&head, why, &self.shared);
        }
        if websocket::is_extended_connect(&req) {
            return websocket::answer(req, self.peer, open, &self.shared);
        }
        respond(req, &head, self.peer, &self.shared).await
    }
}
