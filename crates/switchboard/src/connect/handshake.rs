//! Opening a connection: TCP (or a proxy's tunnel), TLS and the opening handshake, traced,
//! with a failure explained in one error line.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use switchboard_proto::handshake::client::Response;
use switchboard_proto::Config;
use switchboard_tokio::client::WsUrl;
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
            tokio::time::timeout_at(deadline, b.open(&url)).await
        }
        Some(proxy) => {
            let tcp = tunnel(proxy, &proxies, &url, timeout, tracer.as_deref_mut())
                .await
                .map_err(|e| fail(&WsError::from(e)))?;
            tokio::time::timeout_at(deadline, b.open_over(tcp, &url)).await
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
