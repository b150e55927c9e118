//! A JWKS document (a file or an `https://` URL): its keys by `kid`, loaded at start,
//! refreshed in the background every so often and when a token names a `kid` it does not
//! have (at most every 30 s). A failed refresh keeps the keys it had and logs a warning.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_rustls::rustls::ClientConfig;
use tracing::{info, warn};

use super::fetch;
use super::keys::{self, Key};

/// The shortest time between two fetches for unknown `kid`s, by default.
pub(crate) const UNKNOWN_KID_INTERVAL: Duration = Duration::from_secs(30);

/// Where the document is.
#[derive(Debug, Clone)]
pub(crate) enum Source {
    File(PathBuf),
    Url(String),
}

impl Source {
    /// `https://…` is a URL; `http://` is refused (keys must not travel in the clear);
    /// anything else is a file.
    pub(crate) fn parse(s: &str) -> Result<Self, String> {
        let lower = s.to_ascii_lowercase();
        if lower.starts_with("https://") {
            Ok(Self::Url(s.to_string()))
        } else if lower.starts_with("http://") {
            Err("JWKS URLs must be https:// (or give a file)".into())
        } else {
            Ok(Self::File(PathBuf::from(s)))
        }
    }

    fn shown(&self) -> String {
        match self {
            Self::File(p) => p.display().to_string(),
            Self::Url(u) => u.clone(),
        }
    }
}

/// The keys of a JWKS and how to load them again.
pub(crate) struct Jwks {
    source: Source,
    tls: Option<Arc<ClientConfig>>,
    allowed: Option<Vec<Algorithm>>,
    keys: Mutex<Arc<Vec<Key>>>,
    /// Wakes the refresh task: an unknown `kid`, or this set dropped.
    wake: Arc<Notify>,
    /// When an unknown `kid` last asked for a fetch.
    asked: Mutex<Option<Instant>>,
    unknown_kid_interval: Duration,
}

impl std::fmt::Debug for Jwks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Jwks")
            .field("source", &self.source.shown())
            .field("keys", &self.keys().len())
            .finish_non_exhaustive()
    }
}

impl Drop for Jwks {
    fn drop(&mut self) {
        self.wake.notify_one();
    }
}

impl Jwks {
    /// Loads the document from `source` (failing if it cannot), and refreshes it every
    /// `every` on the current Tokio runtime for as long as the returned set lives.
    pub(crate) async fn start(
        source: Source,
        tls: Option<Arc<ClientConfig>>,
        allowed: Option<Vec<Algorithm>>,
        every: Duration,
        unknown_kid_interval: Duration,
    ) -> Result<Arc<Self>, String> {
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|_| "fetching a JWKS needs a Tokio runtime".to_string())?;
        let jwks = Arc::new(Self {
            source,
            tls,
            allowed,
            keys: Mutex::new(Arc::new(Vec::new())),
            wake: Arc::new(Notify::new()),
            asked: Mutex::new(None),
            unknown_kid_interval,
        });
        let keys = jwks.load().await?;
        jwks.set(keys);
        runtime.spawn(refresh_loop(
            Arc::downgrade(&jwks),
            Arc::clone(&jwks.wake),
            every,
        ));
        Ok(jwks)
    }

    /// The keys now.
    pub(crate) fn keys(&self) -> Arc<Vec<Key>> {
        Arc::clone(&self.keys.lock().unwrap_or_else(PoisonError::into_inner))
    }

    fn set(&self, keys: Vec<Key>) {
        *self.keys.lock().unwrap_or_else(PoisonError::into_inner) = Arc::new(keys);
    }

    /// A token named a `kid` this set does not have: fetch the document again soon,
    /// unless an unknown `kid` did less than the interval ago.
    pub(crate) fn unknown_kid(&self) {
        let mut asked = self.asked.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        if asked.is_some_and(|at| now.duration_since(at) < self.unknown_kid_interval) {
            return;
        }
        *asked = Some(now);
        self.wake.notify_one();
    }

    /// The document's usable keys, or why there are none.
    async fn load(&self) -> Result<Vec<Key>, String> {
        let bytes = match (&self.source, &self.tls) {
            (Source::Url(url), Some(tls)) => fetch::get(url, Arc::clone(tls)).await?,
            (Source::Url(_), None) => return Err("no TLS client configuration".into()),
            (Source::File(path), _) => read_file(path)?,
        };
        let (keys, skipped) = parse(&bytes, self.allowed.as_deref())?;
        for why in skipped {
            warn!(jwks = %self.source.shown(), "JWKS key skipped: {why}");
        }
        Ok(keys)
    }

    /// Loads the document again; keeps the old keys if that fails.
    async fn refresh(&self) {
        match self.load().await {
            Ok(keys) => {
                let before = self.keys().len();
                if keys.len() != before {
                    info!(jwks = %self.source.shown(), keys = keys.len(), "JWKS refreshed");
                }
                self.set(keys);
            }
            Err(e) => warn!(
                jwks = %self.source.shown(),
                error = %e,
                "JWKS refresh failed; keeping the keys loaded before"
            ),
        }
    }
}

/// Refreshes the set every `every`, or when woken, until it is dropped.
async fn refresh_loop(jwks: Weak<Jwks>, wake: Arc<Notify>, every: Duration) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            () = wake.notified() => {}
        }
        let Some(jwks) = jwks.upgrade() else { return };
        jwks.refresh().await;
    }
}

fn read_file(path: &std::path::Path) -> Result<Vec<u8>, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read it: {e}"))?;
    if bytes.len() > fetch::MAX_BODY {
        return Err(format!(
            "the document is larger than {} MiB",
            fetch::MAX_BODY >> 20
        ));
    }
    Ok(bytes)
}

/// The usable keys of a JWKS document, and why others were skipped.
pub(crate) fn parse(
    bytes: &[u8],
    allowed: Option<&[Algorithm]>,
) -> Result<(Vec<Key>, Vec<String>), String> {
    #[derive(serde::Deserialize)]
    struct Set {
        keys: Vec<serde_json::Value>,
    }
    let set: Set = serde_json::from_slice(bytes)
        .map_err(|e| format!("not a JWKS document ({{\"keys\": [...]}}): {e}"))?;
    let mut keys = Vec::new();
    let mut skipped = Vec::new();
    for (i, value) in set.keys.into_iter().enumerate() {
        let kid = value
            .get("kid")
            .and_then(|k| k.as_str())
            .map(str::to_string);
        let label = match &kid {
            Some(kid) => format!("JWKS key {kid:?}"),
            None => format!("JWKS key {}", i + 1),
        };
        let key = serde_json::from_value::<Jwk>(value)
            .map_err(|e| e.to_string())
            .and_then(|jwk| key_of(&jwk));
        match key {
            Ok((key, algorithms)) => {
                let mut key = Key {
                    kid,
                    key,
                    algorithms,
                    label,
                };
                key.narrow(allowed);
                if key.algorithms.is_empty() {
                    skipped.push(format!("{}: its algorithm is not allowed", key.label));
                } else if key.kid.is_some() && keys.iter().any(|k: &Key| k.kid == key.kid) {
                    skipped.push(format!("{}: the kid is used twice", key.label));
                } else {
                    keys.push(key);
                }
            }
            Err(why) => skipped.push(format!("{label}: {why}")),
        }
    }
    if keys.is_empty() {
        let why = skipped.first().map_or("it has no keys", String::as_str);
        return Err(format!("no usable key ({why})"));
    }
    Ok((keys, skipped))
}

/// A JWK's key and its algorithms: its `alg` if it has one, else those of its kind.
fn key_of(jwk: &Jwk) -> Result<(DecodingKey, Vec<Algorithm>), String> {
    if matches!(jwk.common.public_key_use, Some(ref u) if *u != PublicKeyUse::Signature) {
        return Err("not a signing key (use is not \"sig\")".into());
    }
    let by_kind: Vec<Algorithm> = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => keys::RSA.to_vec(),
        AlgorithmParameters::OctetKey(_) => keys::HMAC.to_vec(),
        AlgorithmParameters::EllipticCurve(p) => match p.curve {
            EllipticCurve::P256 => vec![Algorithm::ES256],
            EllipticCurve::P384 => vec![Algorithm::ES384],
            ref other => return Err(format!("curve {other:?} is not supported")),
        },
        AlgorithmParameters::OctetKeyPair(_) => {
            return Err("OKP (EdDSA) keys are not supported".into())
        }
    };
    let algorithms = match jwk.common.key_algorithm {
        None => by_kind,
        Some(alg) => {
            let named = signing_algorithm(alg)
                .ok_or_else(|| format!("alg {alg:?} is not a signing algorithm"))?;
            if !by_kind.contains(&named) {
                return Err(format!(
                    "alg {} does not fit the key's kind",
                    keys::name_of(named)
                ));
            }
            vec![named]
        }
    };
    let key = DecodingKey::from_jwk(jwk).map_err(|e| format!("invalid key: {e}"))?;
    Ok((key, algorithms))
}

/// The signing algorithm a JWK's `alg` names.
fn signing_algorithm(alg: KeyAlgorithm) -> Option<Algorithm> {
    keys::algorithm(&format!("{alg:?}"))
}

#[cfg(test)]
mod tests;
