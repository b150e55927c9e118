//! Our client through real proxies to a real Switchboard server: Debian's tinyproxy (HTTP
//! `CONNECT`, basic auth) and microsocks (SOCKS5, user/password), ws:// and wss:// (TLS inside
//! the tunnel, self-signed certificate for "localhost"), credentials right and wrong, refusals,
//! `NO_PROXY`, and which environment variable picks the proxy.
//!
//! A test whose proxy program is not installed is skipped with a message on stderr
//! (scripts/test.sh installs both).

use std::sync::Arc;
use std::time::Duration;

use switchboard_server::ServerConfig;
use switchboard_testkit::proxies::{microsocks, ProxyProcess, Tinyproxy};
use switchboard_testkit::server::{start, Running};
use switchboard_tokio::proxy::{Proxy, ProxyError, ProxySettings};
use switchboard_tokio::{tls, ClientBuilder, CloseCode, Error, Message};

/// A plain server and a TLS one (certificate for "localhost"), and a client TLS config that
/// trusts the certificate.
struct Servers {
    plain: Running,
    tls: Running,
    client_tls: Arc<rustls::ClientConfig>,
    _dir: TempDir,
}

struct TempDir(std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

async fn servers() -> Servers {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("sb-proxy-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    std::fs::write(&key_path, cert.key_pair.serialize_pem()).unwrap();
    let acceptor = tls::acceptor_from_pem(&cert_path, &key_path).unwrap();
    Servers {
        plain: start(ServerConfig::default()).await,
        tls: start(ServerConfig::default().tls(acceptor)).await,
        client_tls: tls::client_config(Some(&cert_path)).unwrap(),
        _dir: TempDir(dir),
    }
}

impl Servers {
    fn ws_url(&self) -> String {
        format!("ws://127.0.0.1:{}/echo", self.plain.addr.port())
    }

    /// By name: the proxy resolves "localhost", and TLS checks the certificate for it.
    fn wss_url(&self) -> String {
        format!("wss://localhost:{}/echo", self.tls.addr.port())
    }

    fn ports(&self) -> [u16; 2] {
        [self.plain.addr.port(), self.tls.addr.port()]
    }

    fn client(&self, url: &str) -> ClientBuilder {
        ClientBuilder::new(url)
            .tls_config(Arc::clone(&self.client_tls))
            .connect_timeout(Duration::from_secs(5))
    }
}

/// Connects with `b`, sends a message, expects it back, closes.
async fn echo(b: &ClientBuilder) {
    let (mut ws, _) = b.connect().await.unwrap();
    ws.send(&Message::text("through the proxy")).await.unwrap();
    let back = tokio::time::timeout(Duration::from_secs(5), ws.recv()).await;
    assert_eq!(
        back.unwrap().unwrap(),
        Some(Message::text("through the proxy"))
    );
    ws.close(CloseCode::NORMAL, "").await.unwrap();
}

fn proxy_error(e: Error) -> ProxyError {
    match e {
        Error::Proxy(p) => *p,
        other => panic!("not a proxy error: {other:?}"),
    }
}

fn url(scheme: &str, auth: &str, p: &ProxyProcess) -> Proxy {
    Proxy::parse(&format!("{scheme}://{auth}127.0.0.1:{}", p.port())).unwrap()
}

#[tokio::test]
async fn ws_and_wss_through_tinyproxy_with_basic_auth() {
    let s = servers().await;
    let Some(tp) = (Tinyproxy {
        connect_ports: &s.ports(),
        basic_auth: Some(("alice", "s3cret")),
    })
    .start() else {
        return;
    };
    let proxy = url("http", "alice:s3cret@", &tp);
    echo(&s.client(&s.ws_url()).proxy(proxy.clone())).await;
    echo(&s.client(&s.wss_url()).proxy(proxy)).await;
    let log = tp.log();
    let (ws_port, wss_port) = (s.plain.addr.port(), s.tls.addr.port());
    assert!(
        log.contains(&format!("CONNECT 127.0.0.1:{ws_port} HTTP/1.1")),
        "{log}"
    );
    assert!(
        log.contains(&format!("CONNECT localhost:{wss_port} HTTP/1.1")),
        "{log}"
    );
}

#[tokio::test]
async fn tinyproxy_wants_credentials_and_refuses_wrong_ones_and_other_ports() {
    let s = servers().await;
    let Some(tp) = (Tinyproxy {
        connect_ports: &s.ports(),
        basic_auth: Some(("alice", "s3cret")),
    })
    .start() else {
        return;
    };
    let e = proxy_error(
        s.client(&s.ws_url())
            .proxy(url("http", "", &tp))
            .connect()
            .await
            .unwrap_err(),
    );
    assert!(
        matches!(
            e,
            ProxyError::AuthRequired {
                sent_credentials: false,
                ..
            }
        ),
        "{e:?}"
    );
    let msg = e.to_string();
    assert!(
        msg.contains("407") && msg.contains("put user:password in the proxy URL"),
        "{msg}"
    );
    let b = s
        .client(&s.wss_url())
        .proxy(url("http", "alice:wrong@", &tp));
    let e = proxy_error(b.connect().await.unwrap_err());
    assert!(
        matches!(
            e,
            ProxyError::AuthRequired {
                sent_credentials: true,
                ..
            }
        ),
        "{e:?}"
    );
    assert!(!e.to_string().contains("wrong"), "{e}");
    // A port that is not a ConnectPort: tinyproxy's 403, status line shown.
    let b = ClientBuilder::new("ws://127.0.0.1:9/").proxy(url("http", "alice:s3cret@", &tp));
    let e = proxy_error(b.connect().await.unwrap_err());
    assert!(
        matches!(e, ProxyError::Refused { status: 403, .. }),
        "{e:?}"
    );
    assert!(
        e.to_string()
            .contains(r#"answered "HTTP/1.1 403 Access violation""#),
        "{e}"
    );
}

#[tokio::test]
async fn ws_and_wss_through_microsocks_with_and_without_auth() {
    let s = servers().await;
    let Some(open) = microsocks(None) else { return };
    let Some(guarded) = microsocks(Some(("alice", "s3cret"))) else {
        return;
    };
    for proxy in [
        url("socks5", "", &open),
        url("socks5h", "alice:s3cret@", &guarded),
    ] {
        echo(&s.client(&s.ws_url()).proxy(proxy.clone())).await;
        echo(&s.client(&s.wss_url()).proxy(proxy)).await;
    }
}

#[tokio::test]
async fn microsocks_refusals_are_named() {
    let s = servers().await;
    let Some(guarded) = microsocks(Some(("alice", "s3cret"))) else {
        return;
    };
    let b = s.client(&s.wss_url()).proxy(url("socks5", "", &guarded));
    let e = proxy_error(b.connect().await.unwrap_err());
    assert!(
        matches!(e, ProxyError::SocksNoAcceptableMethod { .. }),
        "{e:?}"
    );
    assert!(
        e.to_string().contains("put user:password in the proxy URL"),
        "{e}"
    );
    let b = s
        .client(&s.wss_url())
        .proxy(url("socks5", "alice:wrong@", &guarded));
    let e = proxy_error(b.connect().await.unwrap_err());
    assert!(matches!(e, ProxyError::SocksAuthFailed { .. }), "{e:?}");
    // Nobody listens on the target port: the proxy's "connection refused" reply.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let b = ClientBuilder::new(format!("ws://{closed}/")).proxy(url(
        "socks5",
        "alice:s3cret@",
        &guarded,
    ));
    let e = proxy_error(b.connect().await.unwrap_err());
    assert!(matches!(e, ProxyError::SocksReply { code: 5, .. }), "{e:?}");
    assert!(
        e.to_string().contains("connection refused (reply code 5)"),
        "{e}"
    );
}

/// Settings from a map of variables, as [`ProxySettings::from_env`] reads them.
fn from_vars(vars: &[(&str, String)]) -> ProxySettings {
    ProxySettings::from_vars(|name| {
        vars.iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.clone())
    })
    .unwrap()
}

#[tokio::test]
async fn the_scheme_picks_the_variable_and_no_proxy_goes_direct() {
    let s = servers().await;
    let Some(tp) = (Tinyproxy {
        connect_ports: &s.ports(),
        basic_auth: None,
    })
    .start() else {
        return;
    };
    let Some(socks) = microsocks(None) else {
        return;
    };
    // A port nobody listens on: a proxy there fails to connect.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let vars = [
        ("http_proxy", format!("http://127.0.0.1:{}", tp.port())),
        (
            "HTTPS_PROXY",
            format!("socks5://127.0.0.1:{}", socks.port()),
        ),
        ("ALL_PROXY", format!("http://{dead}")),
    ];
    let settings = from_vars(&vars);
    echo(&s.client(&s.ws_url()).proxy_settings(settings.clone())).await;
    echo(&s.client(&s.wss_url()).proxy_settings(settings)).await;
    let log = tp.log();
    assert!(
        log.contains(&format!("CONNECT 127.0.0.1:{}", s.plain.addr.port())),
        "{log}"
    );
    assert!(
        !log.contains("CONNECT localhost"),
        "wss:// went through HTTP_PROXY: {log}"
    );
    // Without HTTPS_PROXY, wss:// takes ALL_PROXY: the dead one.
    let settings = from_vars(&[vars[0].clone(), vars[2].clone()]);
    let e = s
        .client(&s.wss_url())
        .proxy_settings(settings)
        .connect()
        .await
        .unwrap_err();
    let e = proxy_error(e);
    assert!(matches!(e, ProxyError::Connect { .. }), "{e:?}");
    assert!(e.to_string().contains(&dead.to_string()), "{e}");
    // NO_PROXY: the same dead proxy for everything, but these hosts go direct.
    for no_proxy in ["127.0.0.1,localhost", "*", "localhost:1,127.0.0.0/8"] {
        let settings = from_vars(&[
            ("ALL_PROXY", format!("http://{dead}")),
            ("NO_PROXY", no_proxy.to_string()),
        ]);
        echo(&s.client(&s.ws_url()).proxy_settings(settings)).await;
    }
    let settings = from_vars(&[
        ("ALL_PROXY", format!("http://{dead}")),
        ("no_proxy", format!("localhost:{}", s.tls.addr.port())),
    ]);
    echo(&s.client(&s.wss_url()).proxy_settings(settings.clone())).await;
    assert!(s
        .client(&s.ws_url())
        .proxy_settings(settings)
        .connect()
        .await
        .is_err());
}
