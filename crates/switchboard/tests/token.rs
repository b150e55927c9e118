//! `switchboard token` and the JWT options of `switchboard serve`, as users run them: the
//! real binary; its tokens checked with the secret and by the server's own check.

use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use switchboard_server::{Authenticator, JwtAuthenticator, JwtConfig, Request};

const BIN: &str = env!("CARGO_BIN_EXE_switchboard");

/// `switchboard ARGS` with `env` set and no inherited SWITCHBOARD_* secret or config:
/// (status, stdout, stderr).
fn run(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let out = Command::new(BIN)
        .args(args)
        .env_remove("SWITCHBOARD_JWT_HMAC_SECRET")
        .env_remove("SWITCHBOARD_CONFIG")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The token `switchboard token ARGS` prints (one line), checked.
fn token(args: &[&str], env: &[(&str, &str)]) -> String {
    let mut all = vec!["token"];
    all.extend_from_slice(args);
    let (code, out, err) = run(&all, env);
    assert_eq!(code, 0, "{err}");
    assert!(err.is_empty(), "{err}");
    let line = out.strip_suffix('\n').expect("a newline after the token");
    assert!(!line.contains('\n'), "{out}");
    line.to_string()
}

/// The claims of `token` if `secret` signed it (HS256, exp checked).
fn verified(token: &str, secret: &str) -> Result<Value, jsonwebtoken::errors::Error> {
    let v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
    jsonwebtoken::decode::<Value>(
        token,
        &jsonwebtoken::DecodingKey::from_secret(secret.as_bytes()),
        &v,
    )
    .map(|d| d.claims)
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn temp_file(name: &str, text: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("sb-token-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn token_signs_with_the_servers_secret_and_the_server_accepts_it() {
    let t = token(
        &[
            "--sub",
            "alice",
            "--ttl",
            "1h",
            "--name",
            "Alice",
            "--info",
            r#"{"role":"admin"}"#,
            "--channels",
            "news,user:alice",
            "--jwt-hmac-secret",
            "s3cret",
        ],
        &[],
    );
    let claims = verified(&t, "s3cret").unwrap();
    assert_eq!(claims["sub"], "alice");
    assert_eq!(claims["name"], "Alice");
    assert_eq!(claims["info"]["role"], "admin");
    assert_eq!(
        claims["channels"],
        serde_json::json!(["news", "user:alice"])
    );
    let exp = claims["exp"].as_u64().unwrap();
    assert!((now() + 3590..=now() + 3601).contains(&exp), "{exp}");
    assert!(verified(&t, "another").is_err());

    // The server's own check takes it, as it would from a browser's ?token=.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let auth = rt
        .block_on(JwtAuthenticator::new(
            JwtConfig::new().hmac_secret("s3cret"),
        ))
        .unwrap();
    let head = format!("GET /chat?room=a&token={t} HTTP/1.1\r\nHost: x\r\n\r\n");
    let (req, _) = Request::parse(head.as_bytes(), &Default::default())
        .unwrap()
        .unwrap();
    let who = auth.authenticate(&req).unwrap();
    assert_eq!(who.user.as_deref(), Some("alice"));
    assert_eq!(who.name.as_deref(), Some("Alice"));
    assert_eq!(who.info.as_deref(), Some(r#"{"role":"admin"}"#));
    assert_eq!(who.channels, ["news", "user:alice"]);
    let expires = who.expires.unwrap().duration_since(UNIX_EPOCH).unwrap();
    assert_eq!(expires, Duration::from_secs(exp));

    // A subscription token is for one channel, and not a connection token.
    let sub = token(
        &[
            "--sub",
            "alice",
            "--channel",
            "secret",
            "--jwt-hmac-secret",
            "s3cret",
        ],
        &[],
    );
    assert_eq!(verified(&sub, "s3cret").unwrap()["channel"], "secret");
    assert!(auth.subscription(&sub, &who, "secret").is_ok());
}

#[test]
fn token_finds_the_secret_where_serve_does() {
    // The environment: the first of several.
    let t = token(
        &["--sub", "bob"],
        &[("SWITCHBOARD_JWT_HMAC_SECRET", "first,second")],
    );
    assert!(verified(&t, "first").is_ok());
    // The config file, unless a flag says otherwise.
    let file = temp_file(
        "secret.toml",
        "jwt_hmac_secret = [\"from-file\", \"older\"]\n",
    );
    let f = file.to_str().unwrap();
    let t = token(&["--sub", "bob", "--config", f], &[]);
    assert!(verified(&t, "from-file").is_ok());
    let t = token(&["--sub", "bob"], &[("SWITCHBOARD_CONFIG", f)]);
    assert!(verified(&t, "from-file").is_ok());
    let t = token(
        &["--sub", "bob", "--config", f, "--jwt-hmac-secret", "flag"],
        &[],
    );
    assert!(verified(&t, "flag").is_ok());
}

#[test]
fn token_without_a_secret_says_where_to_put_it() {
    let (code, out, err) = run(&["token", "--sub", "alice", "--ttl", "1h"], &[]);
    assert_eq!(code, 2, "{err}");
    assert!(out.is_empty(), "{out}");
    assert_eq!(
        err,
        "error: no secret to sign with: pass --jwt-hmac-secret or set SWITCHBOARD_JWT_HMAC_SECRET (the server's secret)\n"
    );
    let (code, _, err) = run(
        &[
            "token",
            "--sub",
            "a",
            "--info",
            "{oops",
            "--jwt-hmac-secret",
            "s",
        ],
        &[],
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.starts_with("error: --info is not JSON"), "{err}");
}

/// `serve` refuses JWT options it cannot use with one `error:` line naming the fix, and
/// starts with a secret.
#[test]
fn serve_jwt_options_fail_in_one_line_or_start() {
    let refused = |args: &[&str]| {
        let mut all = vec!["serve", "--listen", "127.0.0.1:0", "--io-uring", "false"];
        all.extend_from_slice(args);
        let (code, _, err) = run(&all, &[]);
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
        assert!(err.starts_with("error: "), "{err}");
        (code, err)
    };
    let (code, err) = refused(&["--allow-anonymous"]);
    assert_eq!(code, 2);
    assert!(
        err.contains("add --jwt-hmac-secret, --jwt-public-key or --jwks"),
        "{err}"
    );
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!(
        "https://127.0.0.1:{}/jwks.json",
        closed.local_addr().unwrap().port()
    );
    drop(closed);
    let (code, err) = refused(&["--jwks", &url]);
    assert_eq!(code, 1);
    assert!(
        err.contains(&format!("cannot load the JWKS from {url}")) && err.contains("check --jwks"),
        "{err}"
    );
    let (code, err) = refused(&["--jwt-public-key", "/nonexistent/key.pem"]);
    assert_eq!(code, 1);
    assert!(err.contains("check --jwt-public-key"), "{err}");

    // With a secret it starts, and says WebSockets need a token.
    let mut child = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--io-uring", "false"])
        .env_remove("SWITCHBOARD_CONFIG")
        .env("SWITCHBOARD_JWT_HMAC_SECRET", "s3cret")
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut log = String::new();
    let found = loop {
        let mut line = String::new();
        if std::io::BufRead::read_line(&mut err, &mut line).unwrap() == 0 {
            break false;
        }
        log.push_str(&line);
        if line.contains("need a token") {
            break true;
        }
    };
    let _ = child.kill();
    let _ = child.wait();
    assert!(found, "{log}");
    assert!(
        log.contains("checked with 1 HMAC secret; without one: refused (401)"),
        "{log}"
    );
    assert!(!log.contains("s3cret"), "{log}");
}
