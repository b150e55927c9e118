//! Real HTTP/2 peers for the RFC 8441 client tests: hyper's HTTP/2 server answering the
//! extended CONNECT with our `extended_upgrade` and echoing on `H2Io` (the server path the
//! switchboard server will use), over h2c or TLS with ALPN; HTTP/1.1 on TLS connections whose
//! ALPN did not pick h2.
#![allow(dead_code, unreachable_pub)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use switchboard_tokio::h2::{extended_request, extended_upgrade};
use switchboard_tokio::{upgrade, Config, Error};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;

/// How the peer behaves.
#[derive(Clone)]
pub struct Options {
    /// SETTINGS_ENABLE_CONNECT_PROTOCOL sent.
    pub connect_protocol: bool,
    /// TLS with these ALPN protocols; `None`: plain TCP (h2c).
    pub alpn: Option<Vec<&'static [u8]>>,
    /// The WebSocket configuration (deflate or not).
    pub config: Config,
    /// Drop every connection this long after it was accepted.
    pub die_after: Option<Duration>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            connect_protocol: true,
            alpn: None,
            config: Config::default(),
            die_after: None,
        }
    }
}

/// A running peer.
pub struct Peer {
    pub addr: SocketAddr,
    /// TCP connections accepted.
    pub connections: Arc<AtomicUsize>,
    /// The protocol ALPN selected on each TLS connection.
    pub alpn: Arc<Mutex<Vec<Option<Vec<u8>>>>>,
}

impl Peer {
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    pub fn url(&self, scheme: &str, path: &str) -> String {
        let host = if scheme == "wss" {
            "localhost"
        } else {
            "127.0.0.1"
        };
        format!("{scheme}://{host}:{}{path}", self.addr.port())
    }
}

fn acceptor(alpn: &[&'static [u8]]) -> tokio_rustls::TlsAcceptor {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(cert.key_pair.serialize_der().into());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.cert.der().clone()], key)
        .unwrap();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    tokio_rustls::TlsAcceptor::from(Arc::new(config))
}

pub async fn start(opts: Options) -> Peer {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let peer = Peer {
        addr: listener.local_addr().unwrap(),
        connections: Arc::default(),
        alpn: Arc::default(),
    };
    let tls = opts.alpn.as_deref().map(acceptor);
    let (connections, alpn) = (Arc::clone(&peer.connections), Arc::clone(&peer.alpn));
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            connections.fetch_add(1, Ordering::SeqCst);
            let (opts, tls, alpn) = (opts.clone(), tls.clone(), Arc::clone(&alpn));
            let die_after = opts.die_after;
            let conn = async move {
                let Some(tls) = tls else {
                    return serve_h2(tcp, &opts).await;
                };
                let Ok(stream) = tls.accept(tcp).await else {
                    return;
                };
                let selected = stream.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
                alpn.lock().unwrap().push(selected.clone());
                if selected.as_deref() == Some(b"h2") {
                    serve_h2(stream, &opts).await;
                } else {
                    serve_h1(stream, opts.config).await;
                }
            };
            tokio::spawn(async move {
                match die_after {
                    Some(d) => drop(tokio::time::timeout(d, conn).await),
                    None => conn.await,
                }
            });
        }
    });
    peer
}

/// hyper's HTTP/2 server, with the extended CONNECT protocol if asked.
async fn serve_h2<S>(io: S, opts: &Options)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut b = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    // As the plan for the server says: stream window × streams = connection window, so an
    // unread stream cannot take the whole connection window (hyper's defaults: 1 MiB each).
    b.max_concurrent_streams(100)
        .initial_stream_window_size(128 * 1024)
        .initial_connection_window_size(100 * 128 * 1024)
        .adaptive_window(false)
        .max_send_buf_size(64 * 1024);
    if opts.connect_protocol {
        b.enable_connect_protocol();
    }
    let config = opts.config;
    let svc = service_fn(move |req| handle(req, config));
    let _ = b.serve_connection(TokioIo::new(io), svc).await;
}

/// Our own HTTP/1.1 accept, echoing.
async fn serve_h1<S>(io: S, config: Config)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let Ok(mut ws) = switchboard_tokio::accept(switchboard_tokio::Plain(io), config).await else {
        return;
    };
    while let Ok(Some(m)) = ws.recv().await {
        if ws.feed(&m).is_err() {
            return;
        }
    }
}

/// `/refuse` answers 403; `/hang` never answers; every other path is an echo WebSocket
/// (subprotocol `chat` when offered).
async fn handle(
    mut req: Request<Incoming>,
    config: Config,
) -> Result<Response<Full<Bytes>>, Infallible> {
    match req.uri().path() {
        "/refuse" => {
            return Ok(Response::builder()
                .status(403)
                .body(Full::new(Bytes::from("no entry here\nsecond line")))
                .unwrap())
        }
        "/hang" => std::future::pending::<()>().await,
        _ => {}
    }
    let protocol = extended_request(&req).choose_protocol(&["chat"]);
    match extended_upgrade(&mut req, config, protocol) {
        Ok((resp, upgraded)) => {
            tokio::spawn(async move {
                let Ok(mut ws) = upgraded.await else {
                    return;
                };
                while let Ok(Some(m)) = ws.recv().await {
                    if ws.feed(&m).is_err() {
                        return;
                    }
                }
            });
            Ok(resp.map(|_| Full::new(Bytes::new())))
        }
        Err(Error::Handshake(e)) => Ok(upgrade::rejection(&e)),
        Err(e) => panic!("{e}"),
    }
}
