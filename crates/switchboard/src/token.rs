//! `switchboard token`: a connection token (or, with `--channel`, a subscription token)
//! signed HS256 with the server's HMAC secret, for trying things out and for tests, like
//! Centrifugo's `gentoken`. Real applications issue tokens from their own backend.

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use serde_json::{json, Map, Value};

use crate::serve::UsageError;

/// Options of `switchboard token`.
#[derive(Debug, clap::Args)]
pub(crate) struct TokenArgs {
    /// The user id (the `sub` claim); "" makes a token for an anonymous user.
    #[arg(long, value_name = "USER")]
    sub: String,
    /// How long the token is valid: `exp` is now plus this (30s, 15m, 1h, 24h).
    #[arg(long, value_name = "DURATION", default_value = "1h", value_parser = crate::duration::parse)]
    ttl: Duration,
    /// The name others see (the `name` claim: the chat shows it), at most 64 characters.
    #[arg(long, value_name = "NAME")]
    name: Option<String>,
    /// Anything others may see in presence (the `info` claim), as JSON: '{"role":"admin"}'.
    #[arg(long, value_name = "JSON")]
    info: Option<String>,
    /// Topics the server subscribes the connection to when it opens (the `channels`
    /// claim), comma-separated.
    #[arg(long, value_delimiter = ',', value_name = "TOPICS")]
    channels: Vec<String>,
    /// Make a subscription token for this topic instead (the `channel` claim): it lets the
    /// user subscribe to a topic whose namespace needs one.
    #[arg(long, value_name = "TOPIC", conflicts_with_all = ["channels", "name"])]
    channel: Option<String>,
    /// The secret to sign with: the server's (`serve --jwt-hmac-secret`); of several, the
    /// first.
    #[arg(
        long,
        env = "SWITCHBOARD_JWT_HMAC_SECRET",
        hide_env_values = true,
        value_delimiter = ',',
        value_name = "SECRET"
    )]
    jwt_hmac_secret: Vec<String>,
    /// The server's config file, to take `jwt_hmac_secret` from.
    #[arg(long, env = "SWITCHBOARD_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
}

/// Prints the token and a newline.
pub(crate) fn run(a: TokenArgs) -> anyhow::Result<i32> {
    let secrets = crate::serve::hmac_secrets(&a.jwt_hmac_secret, a.config.as_deref())?;
    let Some(secret) = secrets.first() else {
        return Err(UsageError(
            "no secret to sign with: pass --jwt-hmac-secret or set SWITCHBOARD_JWT_HMAC_SECRET (the server's secret)".into(),
        )
        .into());
    };
    let claims = claims(&a, SystemTime::now()).map_err(|e| UsageError(format!("{e:#}")))?;
    let header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    let key = jsonwebtoken::EncodingKey::from_secret(secret.as_bytes());
    let token = jsonwebtoken::encode(&header, &claims, &key).context("signing the token")?;
    println!("{token}");
    Ok(0)
}

/// The claims of the token `a` asks for, issued at `now`.
fn claims(a: &TokenArgs, now: SystemTime) -> anyhow::Result<Value> {
    if a.ttl.is_zero() {
        bail!("--ttl must be more than 0 (for example 1h)");
    }
    let iat = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let exp = (iat + a.ttl).as_secs_f64().ceil() as u64;
    let mut c = Map::new();
    c.insert("sub".into(), json!(a.sub));
    c.insert("exp".into(), json!(exp));
    c.insert("iat".into(), json!(iat.as_secs()));
    if let Some(name) = &a.name {
        if name.chars().count() > 64 {
            bail!("--name is longer than 64 characters");
        }
        c.insert("name".into(), json!(name));
    }
    if let Some(info) = &a.info {
        let v: Value = serde_json::from_str(info).with_context(|| {
            format!("--info is not JSON (quote it: --info '{{\"role\":\"admin\"}}'): {info}")
        })?;
        if v.to_string().len() > 4096 {
            bail!("--info is larger than 4 KiB");
        }
        c.insert("info".into(), v);
    }
    for topic in a.channel.iter().chain(&a.channels) {
        check_topic(topic)?;
    }
    if !a.channels.is_empty() {
        if a.channels.len() > 64 {
            bail!("--channels lists more than 64 topics");
        }
        c.insert("channels".into(), json!(a.channels));
    }
    if let Some(channel) = &a.channel {
        c.insert("channel".into(), json!(channel));
    }
    Ok(Value::Object(c))
}

/// Topics are 1-128 characters from `A-Z a-z 0-9 _ - . : /` (as the server has them).
fn check_topic(topic: &str) -> anyhow::Result<()> {
    let ok = !topic.is_empty()
        && topic.len() <= 128
        && topic
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':' | b'/'));
    if !ok {
        bail!("{topic:?} is not a topic: topics are 1-128 characters from A-Z, a-z, 0-9, '_', '-', '.', ':' and '/'");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct T {
        #[command(flatten)]
        a: TokenArgs,
    }

    fn claims_of(args: &[&str]) -> anyhow::Result<Value> {
        let mut all = vec!["x"];
        all.extend_from_slice(args);
        let t = T::try_parse_from(all)?;
        claims(&t.a, UNIX_EPOCH + Duration::from_secs(1000))
    }

    #[test]
    fn the_claims_are_what_the_options_say() {
        let c = claims_of(&[
            "--sub",
            "alice",
            "--ttl",
            "1h",
            "--name",
            "Alice",
            "--info",
            "{\"a\":1}",
            "--channels",
            "news,user:alice",
        ])
        .unwrap();
        assert_eq!(
            c,
            json!({"sub": "alice", "exp": 4600, "iat": 1000, "name": "Alice",
                   "info": {"a": 1}, "channels": ["news", "user:alice"]})
        );
        let c = claims_of(&["--sub", "", "--channel", "secret", "--ttl", "90s"]).unwrap();
        assert_eq!(
            c,
            json!({"sub": "", "exp": 1090, "iat": 1000, "channel": "secret"})
        );
    }

    #[test]
    fn claims_the_server_would_refuse_are_refused_here() {
        let err = |args: &[&str]| format!("{:#}", claims_of(args).unwrap_err());
        assert!(err(&["--sub", "a", "--info", "{nope"]).contains("--info is not JSON"));
        assert!(err(&["--sub", "a", "--channels", "ok,not ok"]).contains("is not a topic"));
        assert!(err(&["--sub", "a", "--ttl", "0"]).contains("--ttl must be more than 0"));
        let long = "x".repeat(65);
        assert!(err(&["--sub", "a", "--name", &long]).contains("longer than 64"));
        assert!(err(&["--sub", "a", "--channel", "t", "--channels", "u"])
            .contains("cannot be used with"));
    }
}
