//! The JWT check: [`JwtAuthenticator`] verifies connection tokens (from
//! `Authorization: Bearer …` or `?token=…`), refreshed tokens and subscription tokens
//! with the keys of a [`JwtConfig`].

use std::fmt;
use std::sync::Arc;

use base64::Engine as _;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, Validation};
use serde_json::{Map, Value};

use super::jwks::{self, Jwks};
use super::jwt_config::{JwtConfig, JwtError, PublicKey};
use super::keys::{self, Key};
use super::{claims, AuthError, Authenticator, Grant, Identity};
use crate::http::query_param;
use crate::Request;

/// Checks JSON Web Tokens: the [`Authenticator`] for `/ws` and `/chat`
/// ([`ServerConfig::websocket_authenticator`](crate::ServerConfig::websocket_authenticator)).
///
/// A connection token is taken from `Authorization: Bearer TOKEN` or the query parameter
/// `token` (browsers cannot set headers on a WebSocket). Its claims: `sub` (the user id,
/// `""` for anonymous), `exp` (required), and optionally `name` (≤ 64 characters), `info`
/// (any JSON, ≤ 4 KiB), `channels` (≤ 64 topics to subscribe the connection to), `iat`,
/// `nbf`. A subscription token has `sub`, `channel` (the topic), `exp` and optionally
/// `info`; neither kind is accepted as the other. `exp` and `nbf` are checked without
/// leeway: keep the clocks of the issuer and the server in sync.
///
/// Refusals are [`AuthError::Invalid`] with a one-line reason ("token expired",
/// "bad signature", "algorithm HS256 is not allowed for this key", …); no token at all is
/// [`AuthError::Missing`]. Tokens are never logged.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use switchboard_server::{Authenticator, JwtAuthenticator, JwtConfig, Request, ServerConfig};
///
/// let auth = JwtAuthenticator::new(JwtConfig::new().hmac_secret("s3cret")).await?;
///
/// // What a backend would issue (this one: HS256, for "alice", until 2100).
/// let token = "eyJhbGciOiJIUzI1NiJ9.\
///     eyJzdWIiOiJhbGljZSIsImV4cCI6NDEwMjQ0NDgwMCwibmFtZSI6IkFsaWNlIn0.\
///     ZJDxgmguODH1lDTYbOyRREysLW23hHMS4ZJl5ww3aGw";
/// let head = format!("GET /ws HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\r\n");
/// let (req, _) = Request::parse(head.as_bytes(), &Default::default())?.expect("a whole head");
/// let who = auth.authenticate(&req)?;
/// assert_eq!(who.user.as_deref(), Some("alice"));
/// assert_eq!(who.name.as_deref(), Some("Alice"));
///
/// let config = ServerConfig::default().websocket_authenticator(auth);
/// # let _ = config;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct JwtAuthenticator {
    inner: Arc<Inner>,
}

struct Inner {
    /// HMAC secrets and PEM public keys.
    keys: Vec<Key>,
    jwks: Option<Arc<Jwks>>,
    /// The `--jwt-algorithm` allow-list, if any.
    allowed: Option<Vec<Algorithm>>,
}

impl fmt::Debug for JwtAuthenticator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtAuthenticator")
            .field("keys", &self.inner.keys)
            .field("jwks", &self.inner.jwks)
            .finish()
    }
}

impl JwtAuthenticator {
    /// Loads the keys of `config`: reads the PEM files and the JWKS (fetching it if it is a
    /// URL, and refreshing it in the background on the current Tokio runtime for as long as
    /// this authenticator lives).
    pub async fn new(config: JwtConfig) -> Result<Self, JwtError> {
        let allowed = allow_list(&config.algorithms)?;
        let mut keys = Vec::new();
        for (i, secret) in config.hmac_secrets.iter().enumerate() {
            if secret.is_empty() {
                return Err(JwtError::EmptySecret);
            }
            keys.push(Key::hmac(secret, i + 1));
        }
        for (i, source) in config.public_keys.iter().enumerate() {
            keys.push(public_key(source, i + 1)?);
        }
        for key in &mut keys {
            key.narrow(allowed.as_deref());
        }
        keys.retain(|k| !k.algorithms.is_empty());
        let jwks = match &config.jwks {
            None => None,
            Some(from) => Some(start_jwks(&config, from, allowed.clone()).await?),
        };
        if keys.is_empty() && jwks.is_none() {
            return Err(match allowed {
                Some(a) if config.has_keys() => JwtError::NoAllowedAlgorithm {
                    allowed: a
                        .iter()
                        .map(|a| keys::name_of(*a))
                        .collect::<Vec<_>>()
                        .join(", "),
                },
                _ => JwtError::NoKeys,
            });
        }
        Ok(Self {
            inner: Arc::new(Inner {
                keys,
                jwks,
                allowed,
            }),
        })
    }

    /// The claims of `token` once its signature, `exp` and `nbf` are checked, or why not.
    fn verify(&self, token: &str) -> Result<Map<String, Value>, String> {
        let header = peek_header(token)?;
        let Some(alg) = keys::algorithm(&header.alg) else {
            return Err(format!("algorithm {} is not allowed", shown(&header.alg)));
        };
        if self
            .inner
            .allowed
            .as_ref()
            .is_some_and(|a| !a.contains(&alg))
        {
            return Err(format!("algorithm {} is not allowed", keys::name_of(alg)));
        }
        let jwks_keys = self.inner.jwks.as_ref().map(|j| j.keys());
        let jwks_keys = jwks_keys.as_deref().map_or(&[][..], Vec::as_slice);
        let by_kid = header
            .kid
            .as_deref()
            .and_then(|kid| jwks_keys.iter().find(|k| k.kid.as_deref() == Some(kid)));
        let candidates: Vec<&Key> = match (by_kid, &header.kid) {
            (Some(key), _) => vec![key],
            // A kid the JWKS does not know: only the other keys may check it.
            (None, Some(_)) if self.inner.jwks.is_some() => self.inner.keys.iter().collect(),
            (None, _) => self.inner.keys.iter().chain(jwks_keys).collect(),
        };
        let unknown_kid = by_kid.is_none() && self.inner.jwks.is_some();
        let refused = |why: String| match (&header.kid, unknown_kid) {
            (Some(kid), true) => {
                if let Some(jwks) = &self.inner.jwks {
                    jwks.unknown_kid();
                }
                format!("unknown key id {}", shown(kid))
            }
            _ => why,
        };
        let fitting: Vec<&Key> = candidates.into_iter().filter(|k| k.accepts(alg)).collect();
        if fitting.is_empty() {
            let which = if by_kid.is_some() || self.key_count() == 1 {
                "this key"
            } else {
                "the configured keys"
            };
            return Err(refused(format!(
                "algorithm {} is not allowed for {which}",
                keys::name_of(alg)
            )));
        }
        let validation = validation(alg);
        for key in fitting {
            match jsonwebtoken::decode::<Map<String, Value>>(token, &key.key, &validation) {
                Ok(data) => return Ok(data.claims),
                Err(e) if *e.kind() == ErrorKind::InvalidSignature => continue,
                Err(e) => return Err(reason(e.kind())),
            }
        }
        Err(refused("bad signature".into()))
    }

    fn key_count(&self) -> usize {
        self.inner.keys.len() + self.inner.jwks.as_ref().map_or(0, |j| j.keys().len())
    }

    /// The identity a connection token names.
    pub fn connection_token(&self, token: &str) -> Result<Identity, AuthError> {
        let claims = self.verify(token).map_err(AuthError::Invalid)?;
        claims::connection(&claims).map_err(AuthError::Invalid)
    }
}

impl Authenticator for JwtAuthenticator {
    fn authenticate(&self, req: &Request) -> Result<Identity, AuthError> {
        let token = token_of(req)?;
        self.connection_token(&token)
    }

    fn refresh(&self, token: &str, current: &Identity) -> Result<Identity, AuthError> {
        let identity = self.connection_token(token)?;
        if identity.user != current.user {
            return Err(AuthError::Invalid(
                "the new token is for another user".into(),
            ));
        }
        Ok(identity)
    }

    fn subscription(
        &self,
        token: &str,
        identity: &Identity,
        topic: &str,
    ) -> Result<Grant, AuthError> {
        let claims = self.verify(token).map_err(AuthError::Invalid)?;
        claims::subscription(&claims, identity, topic).map_err(AuthError::Invalid)
    }
}

/// The token of a request: `Authorization: Bearer TOKEN`, else `?token=TOKEN`.
fn token_of(req: &Request) -> Result<String, AuthError> {
    let bearer = req.header("authorization").and_then(|v| {
        let v = v.trim();
        let (scheme, rest) = v.split_once(' ')?;
        scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
    });
    if let Some(t) = bearer.filter(|t| !t.is_empty()) {
        return Ok(t.to_string());
    }
    match query_param(req.query(), "token") {
        None => Err(AuthError::Missing),
        Some(Ok(t)) if t.is_empty() => Err(AuthError::Missing),
        Some(Ok(t)) => Ok(t),
        Some(Err(_)) => Err(AuthError::Invalid("malformed token".into())),
    }
}

/// What the header of a token says, read before anything is trusted: which algorithm
/// and which key to check it with.
struct Header {
    alg: String,
    kid: Option<String>,
}

fn peek_header(token: &str) -> Result<Header, String> {
    let malformed = || "malformed token".to_string();
    let mut parts = token.split('.');
    let (Some(head), Some(_), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(malformed());
    };
    let json = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(head)
        .map_err(|_| malformed())?;
    let Ok(Value::Object(h)) = serde_json::from_slice::<Value>(&json) else {
        return Err(malformed());
    };
    let alg = match h.get("alg") {
        Some(Value::String(a)) => a.clone(),
        _ => return Err(malformed()),
    };
    let kid = match h.get("kid") {
        None | Some(Value::Null) => None,
        Some(Value::String(k)) => Some(k.clone()),
        Some(_) => return Err(malformed()),
    };
    Ok(Header { alg, kid })
}

/// The checks of every token: the signature with `alg`, `exp` required and checked
/// without leeway, `nbf` checked if given.
fn validation(alg: Algorithm) -> Validation {
    let mut v = Validation::new(alg);
    v.leeway = 0;
    v.validate_nbf = true;
    v.validate_aud = false;
    v
}

/// The one-line reason for a failed check.
fn reason(kind: &ErrorKind) -> String {
    match kind {
        ErrorKind::ExpiredSignature => "token expired".into(),
        ErrorKind::ImmatureSignature => "token not valid yet".into(),
        ErrorKind::InvalidSignature => "bad signature".into(),
        ErrorKind::MissingRequiredClaim(c) => {
            format!("the token has no valid {c} claim (seconds since 1970)")
        }
        ErrorKind::InvalidToken
        | ErrorKind::Base64(_)
        | ErrorKind::Json(_)
        | ErrorKind::Utf8(_) => "malformed token".into(),
        _ => "invalid token".into(),
    }
}

/// Something the token says (an `alg`, a `kid`), safe to put in a one-line reason.
fn shown(s: &str) -> String {
    let plain =
        s.len() <= 64 && !s.is_empty() && s.bytes().all(|b| b.is_ascii_graphic() && b != b'"');
    if plain {
        s.to_string()
    } else {
        let cut: String = s.chars().take(64).collect();
        format!("{cut:?}")
    }
}

fn allow_list(names: &[String]) -> Result<Option<Vec<Algorithm>>, JwtError> {
    if names.is_empty() {
        return Ok(None);
    }
    names
        .iter()
        .map(|n| {
            keys::algorithm(n).ok_or_else(|| JwtError::UnknownAlgorithm {
                name: n.clone(),
                supported: keys::supported_names(),
            })
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

fn public_key(source: &PublicKey, n: usize) -> Result<Key, JwtError> {
    let (label, pem) = match source {
        PublicKey::File(path) => {
            let label = path.display().to_string();
            let pem = std::fs::read(path).map_err(|e| JwtError::PublicKey {
                key: label.clone(),
                reason: format!("cannot read it: {e}"),
            })?;
            (label, pem)
        }
        PublicKey::Pem(pem) => (format!("PEM {n}"), pem.clone()),
    };
    Key::from_pem(&pem, label.clone()).map_err(|reason| JwtError::PublicKey { key: label, reason })
}

async fn start_jwks(
    config: &JwtConfig,
    from: &str,
    allowed: Option<Vec<Algorithm>>,
) -> Result<Arc<Jwks>, JwtError> {
    let failed = |reason: String| JwtError::Jwks {
        from: from.to_string(),
        reason,
    };
    let source = jwks::Source::parse(from).map_err(failed)?;
    let tls = match source {
        jwks::Source::Url(_) => Some(
            switchboard_tokio::tls::client_config(config.jwks_ca_file.as_deref())
                .map_err(|e| failed(format!("the CA file: {e}")))?,
        ),
        jwks::Source::File(_) => None,
    };
    let interval = config
        .unknown_kid_interval
        .unwrap_or(jwks::UNKNOWN_KID_INTERVAL);
    Jwks::start(source, tls, allowed, config.refresh_every(), interval)
        .await
        .map_err(|reason| match tokio::runtime::Handle::try_current() {
            Err(_) => JwtError::NoRuntime,
            Ok(_) => failed(reason),
        })
}

#[cfg(test)]
mod tests;
