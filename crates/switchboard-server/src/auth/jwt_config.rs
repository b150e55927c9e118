//! What the JWT check is configured with ([`JwtConfig`]) and why it could not start
//! ([`JwtError`]).

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

/// How often a JWKS is fetched again by default.
pub const JWKS_REFRESH: Duration = Duration::from_secs(300);

/// The keys and algorithms of a [`JwtAuthenticator`](crate::JwtAuthenticator): HMAC
/// secrets, RSA and EC public keys in PEM, a JWKS (a file or an `https://` URL), and an
/// optional allow-list of algorithms. Every key is tried (rotation: configure the old and the
/// new one); a token whose `kid` names a JWKS key is checked with that key only.
///
/// Each kind of key checks only its own algorithms: secrets HS256/HS384/HS512, RSA keys
/// RS256/384/512 and PS256/384/512, EC keys their curve's ES256 or ES384, a JWK its `alg`
/// (or its kind's); [`algorithm`](Self::algorithm) narrows that further. `none` is never
/// accepted.
#[derive(Clone, Default)]
#[non_exhaustive]
pub struct JwtConfig {
    pub(crate) hmac_secrets: Vec<Vec<u8>>,
    pub(crate) public_keys: Vec<PublicKey>,
    pub(crate) jwks: Option<String>,
    pub(crate) jwks_refresh: Option<Duration>,
    pub(crate) jwks_ca_file: Option<PathBuf>,
    pub(crate) algorithms: Vec<String>,
    pub(crate) unknown_kid_interval: Option<Duration>,
}

/// A PEM public key: a file to read, or its text.
#[derive(Clone)]
pub(crate) enum PublicKey {
    File(PathBuf),
    Pem(Vec<u8>),
}

impl fmt::Debug for JwtConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let keys: Vec<String> = self
            .public_keys
            .iter()
            .enumerate()
            .map(|(i, k)| match k {
                PublicKey::File(p) => p.display().to_string(),
                PublicKey::Pem(_) => format!("PEM {}", i + 1),
            })
            .collect();
        f.debug_struct("JwtConfig")
            .field("hmac_secrets", &self.hmac_secrets.len())
            .field("public_keys", &keys)
            .field("jwks", &self.jwks)
            .field("jwks_refresh", &self.refresh_every())
            .field("jwks_ca_file", &self.jwks_ca_file)
            .field("algorithms", &self.algorithms)
            .finish()
    }
}

impl JwtConfig {
    /// No keys yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds an HMAC secret (HS256, HS384, HS512).
    pub fn hmac_secret(mut self, secret: impl AsRef<[u8]>) -> Self {
        self.hmac_secrets.push(secret.as_ref().to_vec());
        self
    }

    /// Adds the RSA or EC public key in the PEM file `path` (`PUBLIC KEY`, `RSA PUBLIC KEY`
    /// or a `CERTIFICATE`), read by [`JwtAuthenticator::new`](crate::JwtAuthenticator::new).
    pub fn public_key_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.public_keys.push(PublicKey::File(path.into()));
        self
    }

    /// Adds an RSA or EC public key given as PEM text.
    pub fn public_key_pem(mut self, pem: impl AsRef<[u8]>) -> Self {
        self.public_keys.push(PublicKey::Pem(pem.as_ref().to_vec()));
        self
    }

    /// Takes keys from the JWKS document at `source`: an `https://` URL or a file. It is
    /// loaded when the authenticator starts (failing the start), again every
    /// [`jwks_refresh`](Self::jwks_refresh), and when a token names an unknown `kid` (at
    /// most every 30 s). A failed refresh keeps the keys it had.
    pub fn jwks(mut self, source: impl Into<String>) -> Self {
        self.jwks = Some(source.into());
        self
    }

    /// How often the JWKS is loaded again. Default [`JWKS_REFRESH`] (5 minutes).
    pub fn jwks_refresh(mut self, every: Duration) -> Self {
        self.jwks_refresh = Some(every);
        self
    }

    /// Also trusts the CA certificates in this PEM file when fetching the JWKS (besides the
    /// bundled webpki roots), for a JWKS served with a private CA.
    pub fn jwks_ca_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.jwks_ca_file = Some(path.into());
        self
    }

    /// Accepts only tokens signed with the algorithms named this way (`"RS256"`; call it
    /// once for each), of those the keys allow. Default: every algorithm of each key's kind.
    pub fn algorithm(mut self, name: impl Into<String>) -> Self {
        self.algorithms.push(name.into());
        self
    }

    /// How long after fetching the JWKS for an unknown `kid` another unknown `kid` may
    /// fetch it again. Default 30 s.
    pub fn unknown_kid_interval(mut self, every: Duration) -> Self {
        self.unknown_kid_interval = Some(every);
        self
    }

    /// Whether any key is configured (without one, [`JwtAuthenticator::new`] fails).
    ///
    /// [`JwtAuthenticator::new`]: crate::JwtAuthenticator::new
    pub fn has_keys(&self) -> bool {
        !self.hmac_secrets.is_empty() || !self.public_keys.is_empty() || self.jwks.is_some()
    }

    pub(crate) fn refresh_every(&self) -> Duration {
        self.jwks_refresh.unwrap_or(JWKS_REFRESH)
    }
}

/// Why a [`JwtAuthenticator`](crate::JwtAuthenticator) could not start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum JwtError {
    /// No secret, public key or JWKS is configured.
    #[error("no key to check tokens with: configure an HMAC secret, a public key or a JWKS")]
    NoKeys,
    /// An HMAC secret is the empty string.
    #[error("an HMAC secret is empty")]
    EmptySecret,
    /// An algorithm name that is not one of the supported ones.
    #[error("unknown JWT algorithm {name:?}: use one of {supported}")]
    UnknownAlgorithm {
        /// The name given.
        name: String,
        /// The supported names.
        supported: String,
    },
    /// A public key could not be read or is not an RSA or EC public key.
    #[error("public key {key}: {reason}")]
    PublicKey {
        /// The file (or `PEM N` for PEM text).
        key: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The JWKS could not be loaded (the first time: the start fails).
    #[error("cannot load the JWKS from {from}: {reason}")]
    Jwks {
        /// The URL or file.
        from: String,
        /// Why.
        reason: String,
    },
    /// The allow-list leaves no algorithm any configured key checks.
    #[error("no configured key checks the allowed algorithms ({allowed})")]
    NoAllowedAlgorithm {
        /// The allowed algorithms.
        allowed: String,
    },
    /// Fetching a JWKS needs a Tokio runtime, and there is none.
    #[error("fetching a JWKS needs a Tokio runtime")]
    NoRuntime,
}
