//! wss:// end to end: a rustls server from PEM files and a client trusting a custom CA.

use std::sync::Arc;

use switchboard_tokio::{tls, ClientBuilder, CloseCode, Config, Error, Message};
use tokio::net::TcpListener;

/// Writes a self-signed certificate for "localhost" and its key; returns the paths.
fn self_signed(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let cert_path = dir.join("cert.pem");
    let key_path = dir.join("key.pem");
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    std::fs::write(&key_path, cert.key_pair.serialize_pem()).unwrap();
    (cert_path, key_path)
}

#[tokio::test]
async fn wss_echo_with_custom_ca() {
    let dir = std::env::temp_dir().join(format!("switchboard-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (cert, key) = self_signed(&dir);
    let acceptor = tls::acceptor_from_pem(&cert, &key).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                // The first client refuses our certificate: its handshake fails here.
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut ws = switchboard_tokio::accept(tls, Config::default())
                    .await
                    .unwrap();
                while let Some(m) = ws.recv().await.unwrap() {
                    ws.feed(&m).unwrap();
                }
            });
        }
    });

    let url = format!("wss://localhost:{port}/");
    // Without the CA the certificate is refused with a TLS error naming the problem.
    let err = ClientBuilder::new(&url).connect().await.unwrap_err();
    assert!(
        matches!(err, Error::Tls(ref m) if m.contains("certificate")),
        "{err:?}"
    );

    let config = tls::client_config(Some(&cert)).unwrap();
    let (mut ws, _) = ClientBuilder::new(&url)
        .tls_config(Arc::clone(&config))
        .connect()
        .await
        .unwrap();
    ws.send(&Message::text("secret")).await.unwrap();
    assert_eq!(ws.recv().await.unwrap(), Some(Message::text("secret")));
    ws.close(CloseCode::NORMAL, "").await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn pem_errors_name_the_file() {
    let missing = std::path::Path::new("/nonexistent/cert.pem");
    let Err(err) = tls::acceptor_from_pem(missing, missing) else {
        panic!("missing files accepted")
    };
    assert!(err.to_string().contains("/nonexistent/cert.pem"), "{err}");
}
