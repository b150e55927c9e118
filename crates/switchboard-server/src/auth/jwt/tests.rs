//! The JWT check with HMAC secrets, RSA and EC keys: what passes, and the one-line reason
//! of each refusal.

use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::{json, Value};

use super::*;
use crate::auth::testing::{ec_key, hs256, now, request, rsa_key, sign, unsigned};

const SECRET: &str = "test-secret-0123456789";

async fn hmac(secret: &str) -> JwtAuthenticator {
    JwtAuthenticator::new(JwtConfig::new().hmac_secret(secret))
        .await
        .unwrap()
}

fn alice() -> Value {
    json!({"sub": "alice", "exp": now() + 60})
}

fn refused(r: Result<impl std::fmt::Debug, AuthError>) -> String {
    match r {
        Err(AuthError::Invalid(why)) => why,
        other => panic!("not refused with a reason: {other:?}"),
    }
}

fn bearer(token: &str) -> Request {
    request("/ws", &format!("Authorization: Bearer {token}\r\n"))
}

#[tokio::test]
async fn an_hs256_token_in_the_header_or_the_query_names_its_user() {
    let auth = hmac(SECRET).await;
    let exp = now() + 60;
    let claims = json!({"sub": "alice", "exp": exp, "name": "Alice", "channels": ["news"]});
    let token = hs256(SECRET, &claims);
    let who = auth.authenticate(&bearer(&token)).unwrap();
    assert_eq!(who.user.as_deref(), Some("alice"));
    assert_eq!(who.name.as_deref(), Some("Alice"));
    assert_eq!(who.channels, ["news"]);
    assert_eq!(
        who.expires,
        Some(std::time::UNIX_EPOCH + std::time::Duration::from_secs(exp))
    );
    let by_query = auth
        .authenticate(&request(&format!("/chat?room=a&token={token}"), ""))
        .unwrap();
    assert_eq!(by_query, who);
    let lower = request("/ws", &format!("authorization: bearer {token}\r\n"));
    assert_eq!(auth.authenticate(&lower).unwrap(), who);
    // An empty sub is an anonymous user, with a token all the same.
    let anon = hs256(SECRET, &json!({"sub": "", "exp": exp}));
    assert!(auth.authenticate(&bearer(&anon)).unwrap().is_anonymous());
}

#[tokio::test]
async fn no_token_is_missing_rather_than_invalid() {
    let auth = hmac(SECRET).await;
    for (target, headers) in [
        ("/ws", ""),
        ("/ws?room=a", "Authorization: Basic YTpi\r\n"),
        ("/ws?token=", ""),
        ("/ws", "Authorization: Bearer \r\n"),
    ] {
        let got = auth.authenticate(&request(target, headers));
        assert_eq!(got, Err(AuthError::Missing), "{target} {headers:?}");
    }
    let bad_query = auth.authenticate(&request("/ws?token=%ZZ", ""));
    assert_eq!(refused(bad_query), "malformed token");
}

#[tokio::test]
async fn expired_early_and_exp_less_tokens_are_refused_without_leeway() {
    let auth = hmac(SECRET).await;
    let check = |claims: Value| refused(auth.authenticate(&bearer(&hs256(SECRET, &claims))));
    assert_eq!(
        check(json!({"sub": "a", "exp": now() - 1})),
        "token expired"
    );
    assert_eq!(
        check(json!({"sub": "a", "exp": now() + 60, "nbf": now() + 30})),
        "token not valid yet"
    );
    let no_exp = check(json!({"sub": "a"}));
    assert!(
        no_exp.starts_with("the token has no valid exp claim"),
        "{no_exp}"
    );
    let text_exp = check(json!({"sub": "a", "exp": "tomorrow"}));
    assert!(
        text_exp.starts_with("the token has no valid exp claim"),
        "{text_exp}"
    );
}

#[tokio::test]
async fn bad_signatures_and_malformed_tokens_are_told_apart() {
    let auth = hmac(SECRET).await;
    let other = hs256("another-secret", &alice());
    assert_eq!(refused(auth.authenticate(&bearer(&other))), "bad signature");
    // The payload changed after signing.
    let token = hs256(SECRET, &alice());
    let mut parts: Vec<&str> = token.split('.').collect();
    let forged = unsigned("{}", &json!({"sub": "admin", "exp": now() + 60}));
    parts[1] = forged.split('.').nth(1).unwrap();
    assert_eq!(
        refused(auth.authenticate(&bearer(&parts.join(".")))),
        "bad signature"
    );
    for junk in [
        "abc",
        "a.b",
        "a.b.c.d",
        "!!!.e30.x",
        "e30.e30.x",
        "WzFd.e30.x",
    ] {
        assert_eq!(
            refused(auth.authenticate(&bearer(junk))),
            "malformed token",
            "{junk}"
        );
    }
}

#[tokio::test]
async fn none_is_never_an_algorithm() {
    let auth = hmac(SECRET).await;
    for alg in ["none", "None", "NONE"] {
        let token = unsigned(&format!(r#"{{"alg":"{alg}"}}"#), &alice());
        assert_eq!(
            refused(auth.authenticate(&bearer(&token))),
            format!("algorithm {alg} is not allowed")
        );
    }
    let odd = unsigned(r#"{"alg":"HS256\nX-Evil: 1"}"#, &alice());
    let why = refused(auth.authenticate(&bearer(&odd)));
    assert!(
        !why.contains('\n') && why.starts_with("algorithm \""),
        "{why}"
    );
}

#[tokio::test]
async fn algorithms_are_pinned_by_the_keys_not_the_token() {
    let (rsa, rsa_public) = rsa_key();
    // HS256 against an RSA key: the classic confusion, signed with the public key as secret.
    let rsa_only = JwtAuthenticator::new(JwtConfig::new().public_key_pem(&rsa_public))
        .await
        .unwrap();
    let confused = hs256(&rsa_public, &alice());
    assert_eq!(
        refused(rsa_only.authenticate(&bearer(&confused))),
        "algorithm HS256 is not allowed for this key"
    );
    let rs256 = sign(&alice(), Algorithm::RS256, &rsa, None);
    assert!(rsa_only.authenticate(&bearer(&rs256)).is_ok());
    let hmac_only = hmac(SECRET).await;
    assert_eq!(
        refused(hmac_only.authenticate(&bearer(&rs256))),
        "algorithm RS256 is not allowed for this key"
    );
    // An allow-list narrows what the keys take.
    let narrowed = JwtAuthenticator::new(JwtConfig::new().hmac_secret(SECRET).algorithm("HS256"))
        .await
        .unwrap();
    let hs512 = sign(
        &alice(),
        Algorithm::HS512,
        &EncodingKey::from_secret(SECRET.as_bytes()),
        None,
    );
    assert!(hmac_only.authenticate(&bearer(&hs512)).is_ok());
    assert_eq!(
        refused(narrowed.authenticate(&bearer(&hs512))),
        "algorithm HS512 is not allowed"
    );
}

#[tokio::test]
async fn rsa_and_ec_keys_check_their_own_algorithms() {
    let (rsa, rsa_public) = rsa_key();
    let (p256, p256_public, _) = ec_key(&rcgen::PKCS_ECDSA_P256_SHA256);
    let (p384, p384_public, _) = ec_key(&rcgen::PKCS_ECDSA_P384_SHA384);
    let auth = JwtAuthenticator::new(
        JwtConfig::new()
            .public_key_pem(&rsa_public)
            .public_key_pem(&p256_public)
            .public_key_pem(&p384_public),
    )
    .await
    .unwrap();
    for (alg, key) in [
        (Algorithm::RS256, &rsa),
        (Algorithm::RS512, &rsa),
        (Algorithm::PS256, &rsa),
        (Algorithm::ES256, &p256),
        (Algorithm::ES384, &p384),
    ] {
        let token = sign(&alice(), alg, key, None);
        let who = auth.authenticate(&bearer(&token));
        assert_eq!(who.unwrap().user.as_deref(), Some("alice"), "{alg:?}");
    }
    // An ES256 token from another key: no configured key signed it.
    let (stranger, _, _) = ec_key(&rcgen::PKCS_ECDSA_P256_SHA256);
    let token = sign(&alice(), Algorithm::ES256, &stranger, None);
    assert_eq!(refused(auth.authenticate(&bearer(&token))), "bad signature");
    // A P-256 key alone does not take ES384.
    let p256_only = JwtAuthenticator::new(JwtConfig::new().public_key_pem(&p256_public))
        .await
        .unwrap();
    let token = sign(&alice(), Algorithm::ES384, &p384, None);
    assert_eq!(
        refused(p256_only.authenticate(&bearer(&token))),
        "algorithm ES384 is not allowed for this key"
    );
}

#[tokio::test]
async fn every_secret_is_tried_for_rotation() {
    let auth = JwtAuthenticator::new(JwtConfig::new().hmac_secret("old").hmac_secret("new"))
        .await
        .unwrap();
    for secret in ["old", "new"] {
        let token = hs256(secret, &alice());
        assert!(auth.authenticate(&bearer(&token)).is_ok(), "{secret}");
    }
    let token = hs256("older", &alice());
    assert_eq!(refused(auth.authenticate(&bearer(&token))), "bad signature");
}

#[tokio::test]
async fn connection_and_subscription_tokens_are_not_interchangeable() {
    let auth = hmac(SECRET).await;
    let sub_token = hs256(
        SECRET,
        &json!({"sub": "alice", "channel": "secret", "exp": now() + 60, "info": {"seat": 4}}),
    );
    let why = refused(auth.authenticate(&bearer(&sub_token)));
    assert!(
        why.starts_with("connection tokens may not have a channel claim"),
        "{why}"
    );

    let alice_id = auth
        .authenticate(&bearer(&hs256(SECRET, &alice())))
        .unwrap();
    let grant = auth.subscription(&sub_token, &alice_id, "secret").unwrap();
    assert_eq!(grant.info.as_deref(), Some(r#"{"seat":4}"#));
    assert!(grant.expires.is_some());
    let conn_token = hs256(SECRET, &alice());
    let why = refused(auth.subscription(&conn_token, &alice_id, "secret"));
    assert!(
        why.starts_with("subscription tokens need a channel claim"),
        "{why}"
    );
    assert_eq!(
        refused(auth.subscription(&sub_token, &alice_id, "other")),
        "the subscription token is for another channel"
    );
    assert_eq!(
        refused(auth.subscription(&sub_token, &Identity::user("bob"), "secret")),
        "the subscription token is for another user"
    );
    let expired = hs256(
        SECRET,
        &json!({"sub": "alice", "channel": "secret", "exp": now() - 5}),
    );
    assert_eq!(
        refused(auth.subscription(&expired, &alice_id, "secret")),
        "token expired"
    );
}

#[tokio::test]
async fn a_refresh_keeps_the_user_and_moves_the_expiry() {
    let auth = hmac(SECRET).await;
    let first = auth
        .authenticate(&bearer(&hs256(SECRET, &alice())))
        .unwrap();
    let later = hs256(
        SECRET,
        &json!({"sub": "alice", "exp": now() + 3600, "name": "A"}),
    );
    let renewed = auth.refresh(&later, &first).unwrap();
    assert_eq!(renewed.user, first.user);
    assert_eq!(renewed.name.as_deref(), Some("A"));
    assert!(renewed.expires > first.expires);
    let bob = hs256(SECRET, &json!({"sub": "bob", "exp": now() + 3600}));
    assert_eq!(
        refused(auth.refresh(&bob, &first)),
        "the new token is for another user"
    );
    let anon = hs256(SECRET, &json!({"sub": "", "exp": now() + 3600}));
    assert_eq!(
        refused(auth.refresh(&anon, &first)),
        "the new token is for another user"
    );
    assert!(auth.refresh(&anon, &Identity::anonymous()).is_ok());
    let stale = hs256(SECRET, &json!({"sub": "alice", "exp": now() - 1}));
    assert_eq!(refused(auth.refresh(&stale, &first)), "token expired");
}

#[tokio::test]
async fn configurations_that_cannot_check_anything_do_not_start() {
    let err = JwtAuthenticator::new(JwtConfig::new()).await.unwrap_err();
    assert_eq!(err, JwtError::NoKeys);
    let err = JwtAuthenticator::new(JwtConfig::new().hmac_secret(""))
        .await
        .unwrap_err();
    assert_eq!(err, JwtError::EmptySecret);
    let err = JwtAuthenticator::new(JwtConfig::new().hmac_secret("s").algorithm("RS257"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("use one of HS256"), "{err}");
    let err = JwtAuthenticator::new(JwtConfig::new().hmac_secret("s").algorithm("RS256"))
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "no configured key checks the allowed algorithms (RS256)"
    );
    let err = JwtAuthenticator::new(JwtConfig::new().public_key_file("/nonexistent/k.pem"))
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.starts_with("public key /nonexistent/k.pem: cannot read it"),
        "{msg}"
    );
}

#[tokio::test]
async fn secrets_and_tokens_stay_out_of_debug_output_and_reasons() {
    let auth = hmac(SECRET).await;
    let shown = format!("{auth:?} {:?}", JwtConfig::new().hmac_secret(SECRET));
    assert!(!shown.contains(SECRET), "{shown}");
    let token = hs256("wrong", &alice());
    let why = refused(auth.authenticate(&bearer(&token)));
    assert!(!why.contains(&token[..20]), "{why}");
}
