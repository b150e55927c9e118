//! Opening a connection: TCP (or a proxy's tunnel), TLS and the opening handshake, traced,
//! with a failure explained in one error line.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use switchboard_proto::handshake::client::Response;
use switchboard_proto::Config;
use switchboard_tokio::client::WsUrl;
use switchboard_tokio::h2::{extended_connect, H2Client, Opened};
use switchboard_tokio::proxy::{Proxy, ProxyError, ProxySettings, TunnelInfo};
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
    let (url, b, config, proxies) = prepare(a).map_err(|e| {
        out.error(e);
        Outcome::Done(Exit::Usage)
    })?;
    let timeout = a.timeout.max(Duration::from_millis(100));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let fail = |e: &WsError| {
        let bytes = seen.lock().map(|s| s.clone()).unwrap_or_default();
        let (msg, exit) = explain(e, &url, &a.url, &bytes);
        out.error(with_proxy(msg, e, &proxies, &url));
        Outcome::Ended(exit)
    };
    let deadline = tokio::time::Instant::now() + timeout;
    let opened = match proxies.proxy_for(&url) {
        None => {
            if let Some(t) = tracer.as_deref_mut() {
                t.tcp_connect(&format!("{}:{}", url.host, url.port), url.tls);
            }
            tokio::time::timeout_at(deadline, open_direct(&b, &url, a.http2)).await
        }
        Some(proxy) => {
            let tcp = tunnel(proxy, &proxies, &url, timeout, tracer.as_deref_mut())
                .await
                .map_err(|e| fail(&WsError::from(e)))?;
            tokio::time::timeout_at(deadline, open_over(&b, tcp, &url, a.http2)).await
        }
    };
    let stream = match opened {
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
    let stream = match stream {
        Opened::Http1(s) => s,
        Opened::Http2(h2) => {
            let seen = Arc::clone(&seen);
            return open_stream(h2, &url, &req, config, seen, tracer)
                .await
                .map_err(|e| fail(&e));
        }
    };
    if let (Some(t), Ok(raw)) = (tracer.as_deref_mut(), req.encode()) {
        t.request(&raw);
    }
    let stream = Recorder {
        inner: stream,
        seen: Arc::clone(&seen),
    };
    client_handshake(stream, &req, config).await.map_err(|e| {
        trace_refusal(tracer, &e);
        fail(&e)
    })
}

/// Traces the server's refusal of the handshake (its status, reason and body line), if `e`
/// is one.
fn trace_refusal(tracer: Option<&mut Tracer>, e: &WsError) {
    if let (
        Some(t),
        WsError::Rejected {
            status,
            reason,
            body,
        },
    ) = (tracer, e)
    {
        t.refused(*status, reason, body);
    }
}

/// TCP and TLS to `url`'s server; with `http2` (`--http2`) the HTTP/2 connection too (h2c
/// for ws://, ALPN h2 for wss://, the server's SETTINGS read).
async fn open_direct(b: &ClientBuilder, url: &WsUrl, http2: bool) -> Result<Opened, WsError> {
    if http2 {
        let tcp = b.open_tcp(url).await?;
        Ok(Opened::Http2(b.open_http2_over(tcp, url).await?))
    } else {
        Ok(Opened::Http1(b.open(url).await?))
    }
}

/// [`open_direct`] over a proxy's tunnel.
async fn open_over(
    b: &ClientBuilder,
    tcp: tokio::net::TcpStream,
    url: &WsUrl,
    http2: bool,
) -> Result<Opened, WsError> {
    if http2 {
        Ok(Opened::Http2(b.open_http2_over(tcp, url).await?))
    } else {
        Ok(Opened::Http1(b.open_over(tcp, url).await?))
    }
}

/// The WebSocket handshake over HTTP/2 (RFC 8441): the extended CONNECT, traced as the
/// handshake phase (`CONNECT`, `:protocol websocket`, then `:status 200`).
async fn open_stream(
    h2: H2Client,
    url: &WsUrl,
    req: &switchboard_proto::handshake::client::ClientRequest,
    config: Config,
    seen: Arc<Mutex<Vec<u8>>>,
    tracer: Option<&mut Tracer>,
) -> Result<(Ws, Response), WsError> {
    let mut tracer = tracer;
    if let Some(t) = tracer.as_deref_mut() {
        t.http2_ready(url.tls);
        let pseudo = [
            (":method", "CONNECT".to_string()),
            (":protocol", "websocket".to_string()),
            (
                ":scheme",
                if url.tls { "https" } else { "http" }.to_string(),
            ),
            (":authority", req.host().to_string()),
            (":path", req.path().to_string()),
        ];
        t.connect_request(&pseudo, &req.extended_headers().unwrap_or_default());
    }
    let mut send = h2.send_request();
    let (stream, resp) = match extended_connect(&mut send, url.tls, req, &config).await {
        Ok(r) => r,
        Err(e) => {
            trace_refusal(tracer, &e);
            return Err(e);
        }
    };
    let mut conn = switchboard_proto::Connection::new(switchboard_proto::Role::Client, config);
    if let Some(params) = resp.deflate {
        conn = conn.with_deflate(params);
    }
    let stream = Recorder {
        inner: MaybeTlsStream::H2(Box::new(stream)),
        seen,
    };
    Ok((WebSocket::from_connection(stream, conn), resp))
}

/// `msg` with the proxy named: the one a failed connection went through, or the variable a
/// failing proxy came from.
fn with_proxy(msg: String, e: &WsError, proxies: &ProxySettings, url: &WsUrl) -> String {
    if matches!(e, WsError::Proxy(_)) {
        match proxies.source_for(url) {
            Some(var) => format!("{msg} (the proxy is from {var}; --no-proxy connects directly)"),
            None => msg,
        }
    } else {
        match crate::proxy_options::describe(proxies, url) {
            Some(via) => format!("{msg} ({via})"),
            None => msg,
        }
    }
}

/// Opens the tunnel through `proxy`, tracing the proxy's handshake as its own phase.
async fn tunnel(
    proxy: &Proxy,
    proxies: &ProxySettings,
    url: &WsUrl,
    timeout: Duration,
    mut tracer: Option<&mut Tracer>,
) -> Result<tokio::net::TcpStream, ProxyError> {
    if let Some(t) = tracer.as_deref_mut() {
        t.proxy_connect(proxy, proxies.source_for(url));
    }
    let mut info = TunnelInfo::default();
    let result = proxy
        .tunnel_with(&url.host, url.port, timeout, &mut info)
        .await;
    if let Some(t) = tracer {
        for line in &info.lines {
            t.proxy_line(line);
        }
        let target = format!("{}:{}", url.host, url.port);
        match &result {
            Ok(_) => t.tunnel_open(&target, url.tls),
            Err(e) => t.tunnel_failed(&e.to_string()),
        }
    }
    result
}

/// The URL, the client and the proxy settings the options describe, or the usage error to
/// show.
fn prepare(a: &ConnectArgs) -> Result<(WsUrl, ClientBuilder, Config, ProxySettings), String> {
    let url =
        WsUrl::parse(&a.url).map_err(|e| format!("{e} (for example ws://127.0.0.1:8080/echo)"))?;
    let (b, config) = builder(a)?;
    Ok((url, b, config, a.proxy.settings()?))
}
