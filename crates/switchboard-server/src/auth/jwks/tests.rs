//! JWKS documents: which keys are used, and a JWKS served by the test over HTTPS with its
//! own CA: loaded at start, fetched again for a new `kid` (at most every 30 s), refreshed in
//! the background, kept when a refresh fails.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio_rustls::rustls;

use super::*;
use crate::auth::testing::{ec_key, now, request, sign};
use crate::{AuthError, Authenticator, Identity, JwtAuthenticator, JwtConfig, JwtError};

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// A P-256 key: its signing key and its JWK with `kid`.
fn p256(kid: &str) -> (EncodingKey, Value) {
    let (signing, _, raw) = ec_key(&rcgen::PKCS_ECDSA_P256_SHA256);
    let jwk = json!({
        "kty": "EC", "crv": "P-256", "kid": kid, "use": "sig", "alg": "ES256",
        "x": b64(&raw[1..33]), "y": b64(&raw[33..65]),
    });
    (signing, jwk)
}

fn doc(keys: &[&Value]) -> String {
    json!({ "keys": keys }).to_string()
}

fn token(key: &EncodingKey, kid: &str) -> String {
    let claims = json!({"sub": "alice", "exp": now() + 60});
    sign(&claims, Algorithm::ES256, key, Some(kid))
}

fn check(auth: &JwtAuthenticator, token: &str) -> Result<Identity, AuthError> {
    auth.authenticate(&request(
        "/ws",
        &format!("Authorization: Bearer {token}\r\n"),
    ))
}

fn temp_file(name: &str, text: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("sb-jwks-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// An HTTPS server for one document, with a certificate for `localhost` from its own CA.
struct JwksServer {
    url: String,
    ca_file: PathBuf,
    /// The status and body it answers with.
    answer: Arc<Mutex<(u16, String)>>,
    hits: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for JwksServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl JwksServer {
    async fn start(body: String) -> Self {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(rcgen::DnType::CommonName, "switchboard test CA");
        let ca = ca.self_signed(&ca_key).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()])
            .unwrap()
            .signed_by(&key, &ca, &ca_key)
            .unwrap();
        let tls = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
        .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let answer = Arc::new(Mutex::new((200, body)));
        let hits = Arc::new(AtomicUsize::new(0));
        let (a, h) = (Arc::clone(&answer), Arc::clone(&hits));
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (acceptor, a, h) = (acceptor.clone(), Arc::clone(&a), Arc::clone(&h));
                tokio::spawn(async move {
                    let Ok(mut s) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let mut head = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !head.ends_with(b"\r\n\r\n") {
                        match s.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    h.fetch_add(1, Ordering::SeqCst);
                    let (status, body) = a.lock().unwrap().clone();
                    let resp = format!(
                        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\n\
                         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = s.write_all(resp.as_bytes()).await;
                    let _ = s.shutdown().await;
                });
            }
        });
        Self {
            url: format!("https://localhost:{port}/.well-known/jwks.json"),
            ca_file: temp_file("ca.pem", &ca.pem()),
            answer,
            hits,
            task,
        }
    }

    fn serve(&self, status: u16, body: String) {
        *self.answer.lock().unwrap() = (status, body);
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    fn config(&self) -> JwtConfig {
        JwtConfig::new().jwks(&self.url).jwks_ca_file(&self.ca_file)
    }
}

/// Waits (up to 5 s) until `f` is true.
async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    for _ in 0..500 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("not within 5 s: {what}");
}

#[tokio::test]
async fn a_new_kid_fetches_the_jwks_again_at_most_every_30_seconds() {
    let (k1, jwk1) = p256("k1");
    let (k2, jwk2) = p256("k2");
    let (k3, jwk3) = p256("k3");
    let server = JwksServer::start(doc(&[&jwk1])).await;
    let auth = JwtAuthenticator::new(server.config()).await.unwrap();
    assert_eq!(server.hits(), 1);
    assert!(check(&auth, &token(&k1, "k1")).is_ok());
    // A kid the set has, with an algorithm its key does not take.
    let hs = sign(
        &json!({"sub": "a", "exp": now() + 60}),
        Algorithm::HS256,
        &EncodingKey::from_secret(b"x"),
        Some("k1"),
    );
    assert_eq!(
        check(&auth, &hs),
        Err(AuthError::Invalid(
            "algorithm HS256 is not allowed for this key".into()
        ))
    );

    // The issuer rotates: k2 is published, and the first k2 token makes the server look.
    server.serve(200, doc(&[&jwk1, &jwk2]));
    let t2 = token(&k2, "k2");
    assert_eq!(
        check(&auth, &t2),
        Err(AuthError::Invalid("unknown key id k2".into()))
    );
    eventually("the k2 token passes", || check(&auth, &t2).is_ok()).await;
    assert_eq!(server.hits(), 2);

    // Another new kid within 30 s: refused, and the document is not fetched again.
    server.serve(200, doc(&[&jwk1, &jwk2, &jwk3]));
    let t3 = token(&k3, "k3");
    assert_eq!(
        check(&auth, &t3),
        Err(AuthError::Invalid("unknown key id k3".into()))
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(check(&auth, &t3).is_err());
    assert_eq!(server.hits(), 2);
}

#[tokio::test]
async fn the_jwks_is_refreshed_in_the_background_and_a_failed_refresh_keeps_its_keys() {
    let (k1, jwk1) = p256("k1");
    let (k2, jwk2) = p256("k2");
    let server = JwksServer::start(doc(&[&jwk1, &jwk2])).await;
    let config = server.config().jwks_refresh(Duration::from_millis(50));
    let auth = JwtAuthenticator::new(config).await.unwrap();
    let (t1, t2) = (token(&k1, "k1"), token(&k2, "k2"));
    assert!(check(&auth, &t1).is_ok());
    // Kid-less tokens are checked with every key of the set.
    let no_kid = sign(
        &json!({"sub": "a", "exp": now() + 60}),
        Algorithm::ES256,
        &k2,
        None,
    );
    assert!(check(&auth, &no_kid).is_ok());

    server.serve(200, doc(&[&jwk2]));
    eventually("k1 is retired", || {
        check(&auth, &t1) == Err(AuthError::Invalid("unknown key id k1".into()))
    })
    .await;

    server.serve(500, "oops".into());
    let before = server.hits();
    eventually("two failed refreshes", || server.hits() >= before + 2).await;
    assert!(check(&auth, &t2).is_ok(), "the keys loaded before stay");

    // The refreshes stop with the authenticator.
    drop(auth);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let after = server.hits();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(server.hits(), after);
}

#[tokio::test]
async fn a_jwks_that_cannot_be_loaded_fails_the_start_with_the_reason() {
    let (_, jwk) = p256("k1");
    let server = JwksServer::start(doc(&[&jwk])).await;
    let start = |config: JwtConfig| async move {
        match JwtAuthenticator::new(config).await {
            Err(e @ JwtError::Jwks { .. }) => e.to_string(),
            other => panic!("not a JWKS error: {other:?}"),
        }
    };
    let e = start(JwtConfig::new().jwks(&server.url)).await;
    assert!(
        e.starts_with(&format!("cannot load the JWKS from {}: TLS", server.url)),
        "{e}"
    );
    assert!(e.contains("UnknownIssuer"), "{e}");

    server.serve(404, String::new());
    let e = start(server.config()).await;
    assert!(e.ends_with("the server answered 404 Not Found"), "{e}");
    server.serve(200, "<html>".into());
    assert!(start(server.config()).await.contains("not a JWKS document"));
    server.serve(200, doc(&[]));
    assert!(start(server.config())
        .await
        .ends_with("no usable key (it has no keys)"));
    let big = format!(
        "{{\"keys\":[], \"pad\": \"{}\"}}",
        "x".repeat(fetch::MAX_BODY)
    );
    server.serve(200, big);
    assert!(start(server.config()).await.ends_with("larger than 1 MiB"));

    let e = start(JwtConfig::new().jwks("http://localhost/jwks.json")).await;
    assert!(
        e.ends_with("JWKS URLs must be https:// (or give a file)"),
        "{e}"
    );
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let e = start(JwtConfig::new().jwks(format!("https://127.0.0.1:{port}/k"))).await;
    assert!(e.contains("cannot connect to 127.0.0.1"), "{e}");
    let e = start(JwtConfig::new().jwks("/nonexistent/jwks.json")).await;
    assert!(e.contains("cannot read it"), "{e}");
}

#[tokio::test]
async fn a_jwks_file_holds_keys_like_a_url() {
    let (k1, jwk1) = p256("k1");
    let secret = b"a shared secret in the set";
    let oct = json!({"kty": "oct", "kid": "h1", "k": b64(secret)});
    let file = temp_file("jwks.json", &doc(&[&jwk1, &oct]));
    let auth = JwtAuthenticator::new(JwtConfig::new().jwks(file.to_str().unwrap()))
        .await
        .unwrap();
    assert!(check(&auth, &token(&k1, "k1")).is_ok());
    let hs = sign(
        &json!({"sub": "a", "exp": now() + 60}),
        Algorithm::HS384,
        &EncodingKey::from_secret(secret),
        Some("h1"),
    );
    assert!(check(&auth, &hs).is_ok());
}

#[test]
fn keys_that_cannot_sign_or_do_not_fit_are_skipped_with_the_reason() {
    let (_, good) = p256("good");
    let mut enc = good.clone();
    enc["use"] = json!("enc");
    enc["kid"] = json!("enc");
    let mut mismatched = good.clone();
    mismatched["alg"] = json!("RS256");
    mismatched["kid"] = json!("mismatched");
    let okp = json!({"kty": "OKP", "crv": "Ed25519", "x": b64(&[1; 32]), "kid": "okp"});
    let text = doc(&[
        &good,
        &enc,
        &mismatched,
        &okp,
        &good,
        &json!({"kty": "XYZ"}),
    ]);
    let (keys, skipped) = parse(text.as_bytes(), None).unwrap();
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0].kid.as_deref(), Some("good"));
    assert_eq!(keys[0].algorithms, [Algorithm::ES256]);
    let skipped = skipped.join("\n");
    for why in [
        "JWKS key \"enc\": not a signing key",
        "JWKS key \"mismatched\": alg RS256 does not fit the key's kind",
        "JWKS key \"okp\": OKP (EdDSA) keys are not supported",
        "JWKS key \"good\": the kid is used twice",
        "JWKS key 6: ",
    ] {
        assert!(skipped.contains(why), "{why} in\n{skipped}");
    }
    // An allow-list without the key's algorithm leaves nothing.
    let e = parse(doc(&[&good]).as_bytes(), Some(&[Algorithm::RS256])).unwrap_err();
    assert_eq!(
        e,
        "no usable key (JWKS key \"good\": its algorithm is not allowed)"
    );
}
