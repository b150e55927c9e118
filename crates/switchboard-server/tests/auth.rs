//! Tokens end to end (docs/protocol.md, "Tokens"): HS256 connection tokens signed here, the
//! 401s of a handshake without a valid one, the chat name from the token, expiry (4011) and
//! refresh, the server-side subscriptions of a token's `channels` and their recovery, and
//! presence showing who is who.

use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{encode, EncodingKey, Header};
use serde_json::{json, Value};
use switchboard_server::{
    JwtAuthenticator, JwtConfig, NamespaceRules, Namespaces, PublishRule, ServerConfig,
    SubscribeRule,
};
use switchboard_testkit::server::{
    close_code, http, metrics, next_json, next_of, send_json, start, Running, Ws,
};
use switchboard_tokio::ClientBuilder;

const SECRET: &str = "test-secret-of-thirty-two-bytes!";

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// An HS256 token with `claims`, signed with `secret`.
fn sign_with(secret: &str, claims: Value) -> String {
    encode(
        &Header::default(),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

/// A connection token for `sub`, valid `ttl` seconds, with `more` claims.
fn token(sub: &str, ttl: i64, more: Value) -> String {
    let mut claims = json!({"sub": sub, "exp": now() as i64 + ttl});
    if let (Some(c), Some(m)) = (claims.as_object_mut(), more.as_object()) {
        c.extend(m.clone());
    }
    sign_with(SECRET, claims)
}

async fn server(allow_anonymous: bool) -> Running {
    server_with(allow_anonymous, Namespaces::default()).await
}

async fn server_with(allow_anonymous: bool, namespaces: Namespaces) -> Running {
    let auth = JwtAuthenticator::new(JwtConfig::new().hmac_secret(SECRET))
        .await
        .unwrap();
    start(
        ServerConfig::default()
            .websocket_authenticator(auth)
            .allow_anonymous(allow_anonymous)
            .namespaces(namespaces),
    )
    .await
}

/// A subscription token of `sub` for `channel`, valid `ttl` seconds.
fn sub_token(sub: &str, channel: &str, ttl: i64) -> String {
    sign_with(
        SECRET,
        json!({"sub": sub, "channel": channel, "exp": now() as i64 + ttl}),
    )
}

/// Sends `req` with id `id`; the answer to it (an ack or an error).
async fn ask(c: &mut Ws, mut req: Value, id: u64) -> Value {
    req["id"] = json!(id);
    send_json(c, req).await;
    loop {
        let v = next_json(c).await;
        if v["id"] == id {
            return v;
        }
    }
}

/// The error code of an answer, or "ok" for an ack.
fn outcome(v: &Value) -> String {
    match v["type"].as_str() {
        Some("ack") => "ok".to_string(),
        Some("error") => v["code"].as_str().unwrap().to_string(),
        _ => format!("{v}"),
    }
}

/// A WebSocket handshake to `path` with `headers`; the status and body of a refusal, or 101.
async fn handshake(addr: SocketAddr, path: &str, headers: &str) -> (u16, String) {
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{headers}\r\n"
    );
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut s, req.as_bytes())
        .await
        .unwrap();
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match tokio::time::timeout(
            Duration::from_secs(5),
            tokio::io::AsyncReadExt::read(&mut s, &mut b),
        )
        .await
        {
            Ok(Ok(1)) => head.push(b[0]),
            other => panic!("no response head: {other:?}"),
        }
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let status: u16 = head[9..12].parse().unwrap();
    if status == 101 {
        return (status, String::new());
    }
    let mut body = Vec::new();
    let _ = tokio::time::timeout(
        Duration::from_secs(5),
        tokio::io::AsyncReadExt::read_to_end(&mut s, &mut body),
    )
    .await;
    (status, String::from_utf8_lossy(&body).into_owned())
}

async fn connect(addr: SocketAddr, path: &str, bearer: Option<&str>) -> Ws {
    let mut b = ClientBuilder::new(format!("ws://{addr}{path}"));
    if let Some(t) = bearer {
        b = b.header("Authorization", format!("Bearer {t}"));
    }
    b.connect().await.unwrap().0
}

#[tokio::test]
async fn ws_and_chat_need_a_valid_token() {
    let srv = server(false).await;
    let valid = token("alice", 60, json!({}));
    let expired = token("alice", -10, json!({}));
    let forged = sign_with(
        "another-secret-another-secret!!!",
        json!({"sub":"alice","exp":now()+60}),
    );
    // `alg: none`: a header and claims without a signature.
    let b64 = |v: Value| {
        use base64::Engine as _;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
    };
    let none = format!(
        "{}.{}.",
        b64(json!({"alg":"none","typ":"JWT"})),
        b64(json!({"sub":"alice","exp":now()+60}))
    );
    for path in ["/ws", "/chat"] {
        let (status, body) = handshake(srv.addr, path, "").await;
        assert_eq!(status, 401, "{path} without a token: {body}");
        assert!(body.contains("needs a token"), "{body}");
        for (bad, why) in [
            (&expired, "expired"),
            (&forged, "signature"),
            (&none, "none"),
            (&"not-a-jwt".to_string(), ""),
        ] {
            let (status, body) =
                handshake(srv.addr, path, &format!("Authorization: Bearer {bad}\r\n")).await;
            assert_eq!(status, 401, "{path} with a bad token ({why}): {body}");
            assert!(
                body.starts_with("the token is not accepted: ") && body.contains(why),
                "{why}: {body}"
            );
            assert!(!body.contains(bad.as_str()), "the token is not echoed");
        }
        let sep = if path.contains('?') { '&' } else { '?' };
        let (status, _) = handshake(srv.addr, &format!("{path}{sep}token={valid}"), "").await;
        assert_eq!(status, 101, "{path}?token=");
        let (status, _) = handshake(
            srv.addr,
            path,
            &format!("Authorization: Bearer {valid}\r\n"),
        )
        .await;
        assert_eq!(status, 101, "{path} with the header");
    }
    // The echo endpoint takes no token.
    assert_eq!(handshake(srv.addr, "/echo", "").await.0, 101);
    let m = metrics(srv.addr).await;
    assert!(
        m.contains(r#"switchboard_handshakes_total{outcome="rejected",reason="unauthorized",http="1.1"} 10"#),
        "{m}"
    );
    srv.stop().await;
}

#[tokio::test]
async fn anonymous_access_lets_guests_in_but_not_bad_tokens() {
    let srv = server(true).await;
    assert_eq!(handshake(srv.addr, "/ws", "").await.0, 101);
    let expired = token("alice", -10, json!({}));
    let (status, body) = handshake(srv.addr, &format!("/ws?token={expired}"), "").await;
    assert_eq!((status, body.contains("expired")), (401, true), "{body}");
    srv.stop().await;
}

#[tokio::test]
async fn a_chat_user_is_who_the_token_says() {
    let srv = server(false).await;
    let t = token("u-42", 60, json!({"name":"Alice","info":{"role":"admin"}}));
    // `?name=` is for guests: a signed-in user cannot pose as someone else.
    let mut c = connect(
        srv.addr,
        &format!("/chat?room=r&name=Mallory&token={t}"),
        None,
    )
    .await;
    let w = next_of(&mut c, "welcome").await;
    assert_eq!(w["you"]["name"], "Alice", "{w}");
    assert_eq!(w["you"]["user"], "u-42", "{w}");
    assert_eq!(w["members"][0]["user"], "u-42", "{w}");
    // A name too long for the chat is refused rather than cut.
    let long = token("u-43", 60, json!({"name": "x".repeat(40)}));
    let (status, body) = handshake(srv.addr, &format!("/chat?token={long}"), "").await;
    assert_eq!(status, 400, "{body}");
    srv.stop().await;
}

#[tokio::test]
async fn presence_lists_users_names_and_info() {
    let srv = server(false).await;
    let t = token("u-7", 60, json!({"name":"Bo","info":{"team":"red"}}));
    let mut c = connect(srv.addr, "/ws", Some(&t)).await;
    send_json(&mut c, json!({"type":"subscribe","topic":"room","id":1})).await;
    assert_eq!(next_of(&mut c, "ack").await["id"], 1);
    send_json(&mut c, json!({"type":"presence","topic":"room","id":2})).await;
    let p = next_of(&mut c, "presence").await;
    let me = &p["clients"][0];
    assert_eq!(
        (&me["user"], &me["name"], &me["info"]),
        (&json!("u-7"), &json!("Bo"), &json!({"team":"red"})),
        "{p}"
    );
    srv.stop().await;
}

#[tokio::test]
async fn an_expired_token_closes_with_4011_and_a_refresh_keeps_the_connection() {
    let srv = server(false).await;
    let short = token("alice", 2, json!({}));
    let mut lazy = connect(srv.addr, "/ws", Some(&short)).await;
    let mut keen = connect(srv.addr, "/ws", Some(&short)).await;
    // Another user's token is not a refresh; a garbage one neither.
    send_json(
        &mut keen,
        json!({"type":"refresh","token":token("bob", 60, json!({})),"id":1}),
    )
    .await;
    let e = next_of(&mut keen, "error").await;
    assert_eq!(
        (&e["id"], &e["code"]),
        (&json!(1), &json!("invalid_token")),
        "{e}"
    );
    assert!(
        e["message"].as_str().unwrap().contains("another user"),
        "{e}"
    );
    send_json(&mut keen, json!({"type":"refresh","token":"x.y.z","id":2})).await;
    assert_eq!(next_of(&mut keen, "error").await["code"], "invalid_token");
    // The right refresh: acked, and the connection outlives the first token.
    send_json(
        &mut keen,
        json!({"type":"refresh","token":token("alice", 60, json!({})),"id":3}),
    )
    .await;
    assert_eq!(next_of(&mut keen, "ack").await["id"], 3);

    assert_eq!(close_code(&mut lazy).await, Some(4011));
    send_json(&mut keen, json!({"type":"subscribe","topic":"t","id":4})).await;
    assert_eq!(next_of(&mut keen, "ack").await["id"], 4, "still open");
    let m = metrics(srv.addr).await;
    assert!(
        m.contains("switchboard_token_expired_disconnects_total 1"),
        "{m}"
    );
    assert!(m.contains("switchboard_token_refreshes_total 1"), "{m}");

    // The chat too.
    let mut chat = connect(
        srv.addr,
        &format!("/chat?token={}", token("carol", 1, json!({}))),
        None,
    )
    .await;
    next_of(&mut chat, "welcome").await;
    assert_eq!(close_code(&mut chat).await, Some(4011));
    srv.stop().await;
}

#[tokio::test]
async fn a_tokens_channels_are_subscribed_and_recover_after_a_reconnect() {
    let srv = server(false).await;
    let t = token("alice", 60, json!({"channels":["news","alerts:eu"]}));
    let mut c = connect(srv.addr, "/ws", Some(&t)).await;
    let mut topics = Vec::new();
    for _ in 0..2 {
        let s = next_of(&mut c, "subscribed").await;
        assert_eq!(
            (s["offset"].as_u64(), &s["recovered"]),
            (Some(0), &json!(false)),
            "{s}"
        );
        topics.push(s["topic"].as_str().unwrap().to_string());
    }
    topics.sort();
    assert_eq!(topics, ["alerts:eu", "news"]);

    // Live: a publication to news reaches it without a subscribe of its own.
    let mut publisher = connect(srv.addr, "/ws", Some(&token("pub", 60, json!({})))).await;
    let publish = |n: u32| json!({"type":"publish","topic":"news","data":{"n":n},"id":n});
    send_json(&mut publisher, publish(1)).await;
    assert_eq!(next_of(&mut publisher, "ack").await["id"], 1);
    let m = next_of(&mut c, "message").await;
    assert_eq!((&m["topic"], &m["data"]), (&json!("news"), &json!({"n":1})));
    let (offset, epoch) = (
        m["offset"].as_u64().unwrap(),
        m["epoch"].as_str().unwrap().to_string(),
    );
    drop(c);

    // Away: two more; back with the position in the URL, they are replayed.
    for n in [2, 3] {
        send_json(&mut publisher, publish(n)).await;
        assert_eq!(next_of(&mut publisher, "ack").await["id"], n);
    }
    let path = format!("/ws?recover=news:{offset}:{epoch}");
    let mut c = connect(srv.addr, &path, Some(&t)).await;
    let mut seen = Vec::new();
    while seen.len() < 4 {
        let v = next_json(&mut c).await;
        match v["type"].as_str() {
            Some("subscribed") if v["topic"] == "news" => {
                assert_eq!(
                    (&v["recovered"], v["offset"].as_u64()),
                    (&json!(true), Some(3)),
                    "{v}"
                );
                seen.push("subscribed news".to_string());
            }
            Some("subscribed") => {
                assert_eq!(v["recovered"], false, "no position given for {v}");
                seen.push(format!("subscribed {}", v["topic"].as_str().unwrap()));
            }
            Some("message") => seen.push(format!("n={}", v["data"]["n"])),
            _ => panic!("unexpected {v}"),
        }
    }
    let news: Vec<_> = seen
        .iter()
        .filter(|s| !s.contains("alerts"))
        .cloned()
        .collect();
    assert_eq!(news, ["subscribed news", "n=2", "n=3"], "{seen:?}");

    // A bad position in the URL is refused before the upgrade.
    let (status, body) = handshake(srv.addr, &format!("/ws?token={t}&recover=news:x"), "").await;
    assert_eq!(status, 400, "{body}");
    srv.stop().await;
}

/// A refusal's body is one line of plain text with the reason.
#[tokio::test]
async fn refusals_name_the_reason_in_one_line() {
    let srv = server(false).await;
    let (status, body) = http(
        srv.addr,
        "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    )
    .await;
    assert_eq!(status, 401);
    assert_eq!(body.trim_end().lines().count(), 1, "{body}");
    srv.stop().await;
}

#[tokio::test]
async fn private_topics_need_a_subscription_token_and_user_topics_their_user() {
    let namespaces = Namespaces::new()
        .namespace(
            "secret",
            NamespaceRules::closed()
                .subscribe(SubscribeRule::Token)
                .publish(PublishRule::Subscribers),
        )
        .namespace(
            "members",
            NamespaceRules::open()
                .subscribe(SubscribeRule::Authenticated)
                .publish(PublishRule::Authenticated),
        )
        .topics(NamespaceRules::open());
    let srv = server_with(true, namespaces).await;
    let mut alice = connect(srv.addr, "/ws", Some(&token("alice", 60, json!({})))).await;
    let mut guest = connect(srv.addr, "/ws", None).await;
    let sub = |topic: &str| json!({"type":"subscribe","topic":topic});
    let with = |topic: &str, t: String| json!({"type":"subscribe","topic":topic,"token":t});

    // Private: no token, a token for another topic, another user, expired, a connection
    // token: refused, and the connection stays; the right one: in.
    let cases = [
        (sub("secret:x"), "permission_denied"),
        (
            with("secret:x", sub_token("alice", "secret:y", 60)),
            "permission_denied",
        ),
        (
            with("secret:x", sub_token("bob", "secret:x", 60)),
            "permission_denied",
        ),
        (
            with("secret:x", sub_token("alice", "secret:x", -10)),
            "permission_denied",
        ),
        (
            with("secret:x", token("alice", 60, json!({}))),
            "permission_denied",
        ),
        (with("secret:x", sub_token("alice", "secret:x", 60)), "ok"),
    ];
    for (i, (req, want)) in cases.into_iter().enumerate() {
        let got = ask(&mut alice, req.clone(), i as u64).await;
        assert_eq!(outcome(&got), want, "{req}: {got}");
    }
    // Subscribers may publish there; the guest, not subscribed, may not.
    let publish = |topic: &str| json!({"type":"publish","topic":topic,"data":1});
    assert_eq!(
        outcome(&ask(&mut alice, publish("secret:x"), 10).await),
        "ok"
    );
    assert_eq!(
        outcome(&ask(&mut guest, publish("secret:x"), 11).await),
        "permission_denied"
    );
    // The history of a private topic: for its subscribers.
    let history = json!({"type":"history","topic":"secret:x"});
    let h = ask(&mut guest, history.clone(), 12).await;
    assert_eq!(outcome(&h), "permission_denied", "{h}");
    assert_eq!(ask(&mut alice, history, 13).await["type"], "history");

    // Authenticated-only: the guest is out, alice in.
    assert_eq!(
        outcome(&ask(&mut guest, sub("members:a"), 20).await),
        "permission_denied"
    );
    assert_eq!(outcome(&ask(&mut alice, sub("members:a"), 21).await), "ok");
    assert_eq!(
        outcome(&ask(&mut guest, publish("members:a"), 22).await),
        "permission_denied"
    );

    // user:ID is for ID only; clients do not publish to it, the backend does.
    assert_eq!(outcome(&ask(&mut alice, sub("user:alice"), 30).await), "ok");
    assert_eq!(
        outcome(&ask(&mut alice, sub("user:bob"), 31).await),
        "permission_denied"
    );
    assert_eq!(
        outcome(&ask(&mut guest, sub("user:alice"), 32).await),
        "permission_denied"
    );
    assert_eq!(
        outcome(&ask(&mut alice, publish("user:alice"), 33).await),
        "permission_denied"
    );

    // Not configured: unknown.
    let e = ask(&mut alice, sub("elsewhere:x"), 40).await;
    assert_eq!(outcome(&e), "unknown_namespace", "{e}");
    // Topics without a namespace follow [topics]: open.
    assert_eq!(outcome(&ask(&mut guest, sub("news"), 41).await), "ok");
    srv.stop().await;
}

#[tokio::test]
async fn a_chat_room_its_namespace_keeps_guests_out_of_is_refused_with_403() {
    let namespaces = Namespaces::new().namespace(
        "chat",
        NamespaceRules::open().subscribe(SubscribeRule::Authenticated),
    );
    let srv = server_with(true, namespaces).await;
    let (status, body) = handshake(srv.addr, "/chat?room=lobby", "").await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("authenticated"), "{body}");
    let t = token("alice", 60, json!({}));
    let mut c = connect(srv.addr, &format!("/chat?room=lobby&token={t}"), None).await;
    assert_eq!(next_of(&mut c, "welcome").await["room"], "lobby");
    srv.stop().await;
}
