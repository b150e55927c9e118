//! What a verified token's claims say: a connection token becomes an [`Identity`], a
//! subscription token a [`Grant`]. The signature, `exp` and `nbf` are already checked
//! (the [`jwt`](super::jwt) module); here are the shapes and the limits of the rest.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value};

use super::{Grant, Identity};
use crate::endpoint::pubsub::valid_topic;

/// The longest `name`, in characters.
pub(crate) const MAX_NAME: usize = 64;
/// The longest `info`, as JSON text, in bytes.
pub(crate) const MAX_INFO: usize = 4 << 10;
/// The most `channels` a connection token may list.
pub(crate) const MAX_CHANNELS: usize = 64;
/// The longest `sub`, in bytes.
pub(crate) const MAX_SUB: usize = 256;

type Claims = Map<String, Value>;

/// The identity a connection token's `claims` name.
pub(crate) fn connection(claims: &Claims) -> Result<Identity, String> {
    if claims.contains_key("channel") {
        return Err("connection tokens may not have a channel claim \
                    (this is a subscription token)"
            .into());
    }
    let user = Some(sub(claims)?.to_string()).filter(|s| !s.is_empty());
    let name = match claims.get("name") {
        None | Some(Value::Null) => None,
        Some(Value::String(n)) if n.chars().count() <= MAX_NAME => {
            Some(n.clone()).filter(|n| !n.is_empty())
        }
        Some(_) => {
            return Err(format!(
                "name must be a string of at most {MAX_NAME} characters"
            ))
        }
    };
    let channels = match claims.get("channels") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(list)) => channels(list)?,
        Some(_) => return Err("channels must be an array of topics".into()),
    };
    Ok(Identity {
        user,
        name,
        info: info(claims)?,
        channels,
        expires: expires(claims)?,
    })
}

/// What a subscription token's `claims` grant `identity` on `topic`.
pub(crate) fn subscription(
    claims: &Claims,
    identity: &Identity,
    topic: &str,
) -> Result<Grant, String> {
    let channel = match claims.get("channel") {
        Some(Value::String(c)) => c,
        Some(_) => return Err("channel must be a string".into()),
        None => {
            return Err("subscription tokens need a channel claim \
                        (this is a connection token)"
                .into())
        }
    };
    if sub(claims)? != identity.user.as_deref().unwrap_or_default() {
        return Err("the subscription token is for another user".into());
    }
    if channel != topic {
        return Err("the subscription token is for another channel".into());
    }
    Ok(Grant {
        expires: expires(claims)?,
        info: info(claims)?,
    })
}

/// The `sub` claim: the user id, empty for anonymous.
fn sub(claims: &Claims) -> Result<&str, String> {
    match claims.get("sub") {
        Some(Value::String(s)) if s.len() <= MAX_SUB => Ok(s),
        Some(Value::String(_)) => Err(format!("sub is longer than {MAX_SUB} bytes")),
        Some(_) => Err("sub must be a string (the user id; \"\" for anonymous)".into()),
        None => Err("the token has no sub claim (the user id; \"\" for anonymous)".into()),
    }
}

/// The JSON text of `info`, if any.
fn info(claims: &Claims) -> Result<Option<String>, String> {
    match claims.get("info") {
        None | Some(Value::Null) => Ok(None),
        Some(v) => {
            let text = v.to_string();
            if text.len() > MAX_INFO {
                return Err(format!("info is larger than {} KiB", MAX_INFO >> 10));
            }
            Ok(Some(text))
        }
    }
}

/// When the token expires (`exp`, which the signature check required), and `iat` is a
/// number if given.
fn expires(claims: &Claims) -> Result<Option<SystemTime>, String> {
    let secs = |key: &str| match claims.get(key) {
        None => Ok(None),
        Some(Value::Number(n)) => match n.as_u64() {
            Some(s) => Ok(Some(s)),
            None => n
                .as_f64()
                .filter(|f| f.is_finite() && *f >= 0.0)
                .map(|f| Some(f.round() as u64))
                .ok_or_else(|| format!("{key} must be a number of seconds since 1970")),
        },
        Some(_) => Err(format!("{key} must be a number of seconds since 1970")),
    };
    secs("iat")?;
    Ok(secs("exp")?.and_then(|s| UNIX_EPOCH.checked_add(Duration::from_secs(s))))
}

/// The topics of a `channels` claim.
fn channels(list: &[Value]) -> Result<Vec<String>, String> {
    if list.len() > MAX_CHANNELS {
        return Err(format!("channels lists more than {MAX_CHANNELS} topics"));
    }
    let mut out: Vec<String> = Vec::with_capacity(list.len());
    for v in list {
        let Value::String(topic) = v else {
            return Err("channels must be an array of topics".into());
        };
        valid_topic(topic).map_err(|e| format!("channels: {}", e.message))?;
        if !out.contains(topic) {
            out.push(topic.clone());
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn claims(v: Value) -> Claims {
        match v {
            Value::Object(m) => m,
            other => panic!("not an object: {other}"),
        }
    }

    #[test]
    fn a_connection_token_names_its_user_and_what_to_show() {
        let id = connection(&claims(json!({
            "sub": "alice", "exp": 2_000_000_000u64, "iat": 1_700_000_000.0,
            "name": "Alice", "info": {"role": "admin"}, "channels": ["news", "user:alice", "news"]
        })))
        .unwrap();
        assert_eq!(id.user.as_deref(), Some("alice"));
        assert_eq!(id.name.as_deref(), Some("Alice"));
        assert_eq!(id.info.as_deref(), Some(r#"{"role":"admin"}"#));
        assert_eq!(id.channels, ["news", "user:alice"]);
        assert_eq!(
            id.expires,
            Some(UNIX_EPOCH + Duration::from_secs(2_000_000_000))
        );
        let anon = connection(&claims(json!({"sub": "", "exp": 1}))).unwrap();
        assert_eq!((anon.user, anon.name, anon.info), (None, None, None));
    }

    #[test]
    fn connection_claims_out_of_shape_are_refused_with_the_rule() {
        let refused = |v: Value| connection(&claims(v)).unwrap_err();
        let e = refused(json!({"sub": "a", "exp": 1, "channel": "x"}));
        assert!(
            e.starts_with("connection tokens may not have a channel claim"),
            "{e}"
        );
        assert!(refused(json!({"exp": 1})).contains("no sub claim"));
        assert!(refused(json!({"sub": 7, "exp": 1})).contains("sub must be a string"));
        let long = "x".repeat(MAX_NAME + 1);
        assert!(refused(json!({"sub": "a", "exp": 1, "name": long})).contains("at most 64"));
        let big = "x".repeat(MAX_INFO);
        assert!(refused(json!({"sub": "a", "exp": 1, "info": big})).contains("4 KiB"));
        let e = refused(json!({"sub": "a", "exp": 1, "channels": ["ok", "no spaces"]}));
        assert!(e.starts_with("channels: topics use only"), "{e}");
        let many: Vec<String> = (0..=MAX_CHANNELS).map(|i| format!("t{i}")).collect();
        assert!(refused(json!({"sub": "a", "exp": 1, "channels": many})).contains("more than 64"));
        assert!(refused(json!({"sub": "a", "exp": 1, "channels": "a,b"})).contains("array"));
        assert!(refused(json!({"sub": "a", "exp": 1, "iat": "now"})).contains("iat must be"));
        // Exactly at the limits is fine.
        let name = "é".repeat(MAX_NAME);
        assert!(connection(&claims(json!({"sub": "a", "exp": 1, "name": name}))).is_ok());
    }

    #[test]
    fn a_subscription_token_grants_its_channel_to_its_user() {
        let alice = Identity::user("alice");
        let token = claims(json!({"sub": "alice", "channel": "secret", "exp": 5, "info": [1]}));
        let grant = subscription(&token, &alice, "secret").unwrap();
        assert_eq!(grant.info.as_deref(), Some("[1]"));
        assert_eq!(grant.expires, Some(UNIX_EPOCH + Duration::from_secs(5)));
        let e = subscription(&token, &alice, "other").unwrap_err();
        assert_eq!(e, "the subscription token is for another channel");
        let e = subscription(&token, &Identity::user("bob"), "secret").unwrap_err();
        assert_eq!(e, "the subscription token is for another user");
        let e = subscription(&token, &Identity::anonymous(), "secret").unwrap_err();
        assert_eq!(e, "the subscription token is for another user");
        let anon = claims(json!({"sub": "", "channel": "secret", "exp": 5}));
        assert!(subscription(&anon, &Identity::anonymous(), "secret").is_ok());
        let conn = claims(json!({"sub": "alice", "exp": 5}));
        let e = subscription(&conn, &alice, "secret").unwrap_err();
        assert!(
            e.starts_with("subscription tokens need a channel claim"),
            "{e}"
        );
    }
}
