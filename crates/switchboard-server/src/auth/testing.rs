//! Tokens and keys the tests make: HS* with secrets, ES* with rcgen's keys, RS*/PS* with a
//! key the `openssl` command makes (once per test binary).

use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::Value;

use crate::Request;

/// Seconds since 1970, now.
pub(crate) fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// `claims` signed with `alg` and `key`, naming `kid` if given.
pub(crate) fn sign(claims: &Value, alg: Algorithm, key: &EncodingKey, kid: Option<&str>) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_string);
    jsonwebtoken::encode(&header, claims, key).unwrap()
}

/// `claims` signed HS256 with `secret`.
pub(crate) fn hs256(secret: &str, claims: &Value) -> String {
    sign(
        claims,
        Algorithm::HS256,
        &EncodingKey::from_secret(secret.as_bytes()),
        None,
    )
}

/// A token whose header is `header` (JSON), with `claims` and no signature.
pub(crate) fn unsigned(header: &str, claims: &Value) -> String {
    use base64::Engine as _;
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    format!(
        "{}.{}.",
        b64(header.as_bytes()),
        b64(claims.to_string().as_bytes())
    )
}

/// An EC key pair on `alg`'s curve: (its signing key, its public key PEM, the raw point).
pub(crate) fn ec_key(alg: &'static rcgen::SignatureAlgorithm) -> (EncodingKey, String, Vec<u8>) {
    let pair = rcgen::KeyPair::generate_for(alg).unwrap();
    let signing = EncodingKey::from_ec_pem(pair.serialize_pem().as_bytes()).unwrap();
    (
        signing,
        pair.public_key_pem(),
        pair.public_key_raw().to_vec(),
    )
}

/// An RSA key (2048 bits, made by `openssl` once): (its signing key, its public key PEM).
pub(crate) fn rsa_key() -> (EncodingKey, String) {
    static KEY: OnceLock<(String, String)> = OnceLock::new();
    let (private, public) = KEY.get_or_init(|| {
        let run = |args: &[&str], input: Option<&str>| {
            use std::io::Write as _;
            let mut child = std::process::Command::new("openssl")
                .args(args)
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("the openssl command (Debian: apt-get install openssl)");
            if let Some(input) = input {
                child
                    .stdin
                    .take()
                    .unwrap()
                    .write_all(input.as_bytes())
                    .unwrap();
            }
            let out = child.wait_with_output().unwrap();
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(out.status.success(), "openssl {args:?} failed: {err}");
            String::from_utf8(out.stdout).unwrap()
        };
        let private = run(
            &[
                "genpkey",
                "-algorithm",
                "RSA",
                "-pkeyopt",
                "rsa_keygen_bits:2048",
            ],
            None,
        );
        let public = run(&["pkey", "-pubout"], Some(&private));
        (private, public)
    });
    (
        EncodingKey::from_rsa_pem(private.as_bytes()).unwrap(),
        public.clone(),
    )
}

/// A handshake request with these extra header lines and this target.
pub(crate) fn request(target: &str, headers: &str) -> Request {
    let head = format!("GET {target} HTTP/1.1\r\nHost: x\r\n{headers}\r\n");
    let cfg = switchboard_proto::Config::default();
    match Request::parse(head.as_bytes(), &cfg) {
        Ok(Some((req, _))) => req,
        other => panic!("not a request: {other:?}"),
    }
}
