//! Tokens never reach the logs, even at `debug` (its own test binary: it installs the global
//! subscriber); the connection's span names the user instead.

use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{encode, EncodingKey, Header};
use serde_json::json;
use switchboard_server::{JwtAuthenticator, JwtConfig, ServerConfig};
use switchboard_testkit::logs::Captured;
use switchboard_testkit::server::{next_of, send_json, start};
use switchboard_tokio::ClientBuilder;

const SECRET: &str = "log-test-secret-log-test-secret!";

fn token(sub: &str, ttl: i64) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    encode(
        &Header::default(),
        &json!({"sub": sub, "exp": now + ttl}),
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

#[tokio::test]
async fn tokens_are_not_logged_and_the_span_names_the_user() {
    let captured = Captured::default();
    let writer = captured.clone();
    tracing_subscriber::fmt()
        .with_env_filter("debug")
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .init();
    let auth = JwtAuthenticator::new(JwtConfig::new().hmac_secret(SECRET))
        .await
        .unwrap();
    let srv = start(ServerConfig::default().websocket_authenticator(auth)).await;

    let good = token("log-user-7", 60);
    let (mut c, _) = ClientBuilder::new(format!("ws://{}/ws?token={good}", srv.addr))
        .connect()
        .await
        .unwrap();
    send_json(
        &mut c,
        json!({"type":"refresh","token":token("log-user-7", 120),"id":1}),
    )
    .await;
    assert_eq!(next_of(&mut c, "ack").await["id"], 1);
    drop(c);
    let expired = token("log-user-8", -5);
    for url in [format!("ws://{}/ws?token={expired}", srv.addr)] {
        let err = ClientBuilder::new(url).connect().await.err().unwrap();
        assert!(err.to_string().contains("401"), "{err}");
    }
    let err = ClientBuilder::new(format!("ws://{}/chat", srv.addr))
        .header("Authorization", format!("Bearer {expired}"))
        .connect()
        .await
        .err()
        .unwrap();
    assert!(err.to_string().contains("token expired"), "{err}");
    srv.stop().await;

    let text = captured.text();
    assert!(
        text.contains(r#"user="log-user-7""#),
        "the span names the user:\n{text}"
    );
    assert!(
        text.contains("token expired"),
        "the refusal is logged:\n{text}"
    );
    // No token, nor any part of one (each JWT starts with the same header, so the check
    // is on the payload and signature parts).
    for t in [&good, &expired] {
        for part in t.split('.').skip(1) {
            assert!(!text.contains(part), "a token part is in the log:\n{text}");
        }
    }
}
