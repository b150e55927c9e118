//! Opening a connection: TCP, TLS and the opening handshake, traced, with a failure explained
//! in one error line.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use switchboard_proto::handshake::client::Response;
use switchboard_proto::Config;
use switchboard_tokio::client::WsUrl;
use switchboard_tokio::{
    client_handshake, ClientBuilder, Error as WsError, MaybeTlsStream, WebSocket,
};

use super::args::{builder, ConnectArgs};
use super::connection::Outcome;
use super::exit::{explain, Exit};
use super::output::Out;
use super::recorder::Recorder;
use super::trace::Tracer;

/// The client's WebSocket, over a stream that records what the server sent first.
pub(super) type Ws = WebSocket<Recorder<MaybeTlsStream>>;

/// Connects and does the opening handshake, tracing each step. On failure, says why and
/// returns how the session ends: a usage error stops it, the others may be retried.
pub(super) async fn open(
    a: &ConnectArgs,
    out: &Out,
    mut tracer: Option<&mut Tracer>,
) -> Result<(Ws, Response), Outcome> {
    let (url, b, config) = prepare(a).map_err(|e| {
        out.error(e);
        Outcome::Done(Exit::Usage)
    })?;
    if let Some(t) = tracer.as_deref_mut() {
        t.tcp_connect(&format!("{}:{}", url.host, url.port), url.tls);
    }
    let timeout = a.timeout.max(Duration::from_millis(100));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let fail = |e: &WsError| {
        let bytes = seen.lock().map(|s| s.clone()).unwrap_or_default();
        let (msg, exit) = explain(e, &url, &a.url, &bytes);
        out.error(msg);
        Outcome::Ended(exit)
    };
    let stream = match tokio::time::timeout(timeout, b.open(&url)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return Err(fail(&e)),
        Err(_) => {
            return Err(fail(&WsError::Io(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("no connection within {}", crate::duration::show(timeout)),
            ))))
        }
    };
    let req = b.request(&url);
    if let (Some(t), Ok(raw)) = (tracer.as_deref_mut(), req.encode()) {
        t.request(&raw);
    }
    let stream = Recorder {
        inner: stream,
        seen: Arc::clone(&seen),
    };
    client_handshake(stream, &req, config).await.map_err(|e| {
        if let (
            Some(t),
            WsError::Rejected {
                status,
                reason,
                body,
            },
        ) = (tracer, &e)
        {
            t.refused(*status, reason, body);
        }
        fail(&e)
    })
}

/// The URL and the client the options describe, or the usage error to show.
fn prepare(a: &ConnectArgs) -> Result<(WsUrl, ClientBuilder, Config), String> {
    let url =
        WsUrl::parse(&a.url).map_err(|e| format!("{e} (for example ws://127.0.0.1:8080/echo)"))?;
    let (b, config) = builder(a)?;
    Ok((url, b, config))
}
