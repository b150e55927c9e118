//! The options of who may connect and publish: the JWT keys of `/ws` and `/chat`
//! (`--jwt-hmac-secret`, `--jwt-public-key`, `--jwks`, …, `--allow-anonymous`) and the
//! publish API's keys (`--api-key`, several allowed).

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::bail;
use serde::Deserialize;
use switchboard_server::{JwtConfig, JwtError};

use super::FileConfig;

/// The algorithms `--jwt-algorithm` takes.
const ALGORITHMS: [&str; 11] = [
    "HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256",
    "ES384",
];

/// The JWT options of `switchboard serve` (flattened into its options).
#[derive(Debug, clap::Args)]
pub(crate) struct JwtArgs {
    /// An HMAC secret that signs connection and subscription tokens (HS256, HS384,
    /// HS512). With any key set, /ws and /chat need a valid token (`Authorization: Bearer`
    /// or `?token=`) unless --allow-anonymous. Repeatable, for rotation: every secret is
    /// tried. Prefer the environment variable (comma-separated) or the file over the flag
    /// (flags show in `ps`). `switchboard token` signs with the first one.
    #[arg(
        long,
        env = "SWITCHBOARD_JWT_HMAC_SECRET",
        hide_env_values = true,
        value_delimiter = ',',
        value_name = "SECRET"
    )]
    pub(crate) jwt_hmac_secret: Vec<String>,
    /// An RSA or EC public key in PEM (`PUBLIC KEY`, or a certificate) that checks tokens:
    /// RSA keys take RS256/384/512 and PS256/384/512, EC keys their curve's ES256 or ES384.
    /// Repeatable (comma-separated in the environment).
    #[arg(
        long,
        env = "SWITCHBOARD_JWT_PUBLIC_KEY",
        value_delimiter = ',',
        value_name = "FILE"
    )]
    jwt_public_key: Vec<PathBuf>,
    /// A JWKS document with the keys that check tokens: an https:// URL or a file. Keys are
    /// chosen by the token's `kid`; the document is loaded at start (the start fails if it
    /// cannot be), every --jwks-refresh, and when a token names an unknown `kid` (at most
    /// every 30 s).
    #[arg(long, env = "SWITCHBOARD_JWKS", value_name = "URL_OR_FILE")]
    jwks: Option<String>,
    /// How often the --jwks document is loaded again; a failed refresh keeps the keys.
    #[arg(long, env = "SWITCHBOARD_JWKS_REFRESH", value_name = "DURATION", value_parser = crate::duration::parse)]
    jwks_refresh: Option<Duration>,
    /// Also trust the CA certificates in this PEM file when fetching the --jwks URL
    /// (besides the bundled web roots).
    #[arg(long, env = "SWITCHBOARD_JWKS_CA_FILE", value_name = "FILE")]
    jwks_ca_file: Option<PathBuf>,
    /// Accept only tokens signed with this algorithm (repeatable), of those the keys take
    /// [default: every algorithm of each key's kind; `none` never].
    #[arg(
        long,
        env = "SWITCHBOARD_JWT_ALGORITHM",
        value_delimiter = ',',
        value_name = "ALG",
        value_parser = clap::builder::PossibleValuesParser::new(ALGORITHMS)
    )]
    jwt_algorithm: Vec<String>,
    /// With a JWT key set: let WebSockets without a token in, as anonymous guests (a bad
    /// token is still refused).
    #[arg(long, env = "SWITCHBOARD_ALLOW_ANONYMOUS", num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    allow_anonymous: Option<bool>,
}

/// A list in the config file that may also be written as one value: `api_key = "k"` or
/// `api_key = ["k1", "k2"]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct OneOrMany<T>(pub(crate) Vec<T>);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for OneOrMany<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw<T> {
            One(T),
            Many(Vec<T>),
        }
        Ok(Self(match Raw::deserialize(d)? {
            Raw::One(v) => vec![v],
            Raw::Many(v) => v,
        }))
    }
}

/// The values of a repeatable option: from the flags (or the environment) if any, else
/// from the file.
fn several<T: Clone>(given: &[T], file: Option<&OneOrMany<T>>) -> Vec<T> {
    if given.is_empty() {
        file.map(|f| f.0.clone()).unwrap_or_default()
    } else {
        given.to_vec()
    }
}

/// The publish API's keys (empty ones left out).
pub(crate) fn api_keys(given: &[String], f: &FileConfig) -> Vec<String> {
    let mut keys = several(given, f.api_key.as_ref());
    keys.retain(|k| !k.is_empty());
    keys
}

/// The JWT check as the options set it up.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct JwtSettings {
    pub(crate) hmac_secrets: Vec<String>,
    pub(crate) public_keys: Vec<PathBuf>,
    pub(crate) jwks: Option<String>,
    pub(crate) jwks_refresh: Option<Duration>,
    pub(crate) jwks_ca_file: Option<PathBuf>,
    pub(crate) algorithms: Vec<String>,
    pub(crate) allow_anonymous: bool,
}

impl fmt::Debug for JwtSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtSettings")
            .field("hmac_secrets", &self.hmac_secrets.len())
            .field("public_keys", &self.public_keys)
            .field("jwks", &self.jwks)
            .field("jwks_refresh", &self.jwks_refresh)
            .field("jwks_ca_file", &self.jwks_ca_file)
            .field("algorithms", &self.algorithms)
            .field("allow_anonymous", &self.allow_anonymous)
            .finish()
    }
}

/// The JWT check the options ask for: `None` without any key (everyone connects, as
/// without these options); options that need a key without one are mistakes.
pub(crate) fn jwt_settings(a: &JwtArgs, f: &FileConfig) -> anyhow::Result<Option<JwtSettings>> {
    let mut hmac_secrets = several(&a.jwt_hmac_secret, f.jwt_hmac_secret.as_ref());
    hmac_secrets.retain(|s| !s.is_empty());
    let public_keys = several(&a.jwt_public_key, f.jwt_public_key.as_ref());
    let jwks = a
        .jwks
        .clone()
        .or_else(|| f.jwks.clone())
        .filter(|j| !j.is_empty());
    let jwks_refresh = a.jwks_refresh.or(f.jwks_refresh.map(|d| d.0));
    let jwks_ca_file = a.jwks_ca_file.clone().or_else(|| f.jwks_ca_file.clone());
    let algorithms = several(&a.jwt_algorithm, f.jwt_algorithm.as_ref());
    let allow_anonymous = a.allow_anonymous.or(f.allow_anonymous);
    if jwks.is_none() {
        if jwks_refresh.is_some() {
            bail!("--jwks-refresh is set but there is no JWKS: add --jwks URL_OR_FILE (SWITCHBOARD_JWKS, or jwks = \"...\" in the config file)");
        }
        if jwks_ca_file.is_some() {
            bail!("--jwks-ca-file is set but there is no JWKS: add --jwks URL_OR_FILE (SWITCHBOARD_JWKS, or jwks = \"...\" in the config file)");
        }
    }
    if jwks_refresh.is_some_and(|d| d.is_zero()) {
        bail!("--jwks-refresh must be more than 0 (5m is the default)");
    }
    if let Some(alg) = algorithms
        .iter()
        .find(|a| !ALGORITHMS.contains(&a.as_str()))
    {
        bail!(
            "jwt_algorithm {alg:?} is not one of {}",
            ALGORITHMS.join(", ")
        );
    }
    let any_key = !hmac_secrets.is_empty() || !public_keys.is_empty() || jwks.is_some();
    if !any_key {
        if allow_anonymous == Some(true) {
            bail!("--allow-anonymous needs a key to check tokens with: add --jwt-hmac-secret, --jwt-public-key or --jwks (without any, every WebSocket is an anonymous guest already)");
        }
        if !algorithms.is_empty() {
            bail!("--jwt-algorithm is set but there is no key to check tokens with: add --jwt-hmac-secret, --jwt-public-key or --jwks");
        }
        return Ok(None);
    }
    Ok(Some(JwtSettings {
        hmac_secrets,
        public_keys,
        jwks,
        jwks_refresh,
        jwks_ca_file,
        algorithms,
        allow_anonymous: allow_anonymous.unwrap_or(false),
    }))
}

impl JwtSettings {
    /// The library's configuration of the check.
    pub(crate) fn config(&self) -> JwtConfig {
        let mut c = JwtConfig::new();
        for s in &self.hmac_secrets {
            c = c.hmac_secret(s);
        }
        for p in &self.public_keys {
            c = c.public_key_file(p);
        }
        if let Some(j) = &self.jwks {
            c = c.jwks(j);
        }
        if let Some(d) = self.jwks_refresh {
            c = c.jwks_refresh(d);
        }
        if let Some(ca) = &self.jwks_ca_file {
            c = c.jwks_ca_file(ca);
        }
        for alg in &self.algorithms {
            c = c.algorithm(alg);
        }
        c
    }

    /// What checks tokens, for the start log: `2 HMAC secrets, 1 public key, JWKS URL`.
    pub(crate) fn summary(&self) -> String {
        let plural = |n: usize, what: &str| format!("{n} {what}{}", if n == 1 { "" } else { "s" });
        let mut parts = Vec::new();
        if !self.hmac_secrets.is_empty() {
            parts.push(plural(self.hmac_secrets.len(), "HMAC secret"));
        }
        if !self.public_keys.is_empty() {
            parts.push(plural(self.public_keys.len(), "public key"));
        }
        if let Some(j) = &self.jwks {
            parts.push(format!("JWKS {j}"));
        }
        if !self.algorithms.is_empty() {
            parts.push(format!("algorithms {}", self.algorithms.join(", ")));
        }
        parts.join(", ")
    }
}

/// The HMAC secrets `serve` checks tokens with, given these `--jwt-hmac-secret` values
/// (flags or environment) and this config file: what `switchboard token` signs with.
pub(crate) fn hmac_secrets(
    given: &[String],
    config: Option<&std::path::Path>,
) -> anyhow::Result<Vec<String>> {
    let f = match config {
        Some(p) => super::read_file(p)?,
        None => FileConfig::default(),
    };
    let mut secrets = several(given, f.jwt_hmac_secret.as_ref());
    secrets.retain(|s| !s.is_empty());
    Ok(secrets)
}

/// What to do about a JWT set-up that could not start, for the one `error:` line.
pub(crate) fn fix(e: &JwtError) -> &'static str {
    match e {
        JwtError::Jwks { .. } => {
            "check --jwks; for a server with a private CA add --jwks-ca-file"
        }
        JwtError::PublicKey { .. } => {
            "check --jwt-public-key: it takes a file with an RSA or EC public key in PEM"
        }
        JwtError::EmptySecret => "give --jwt-hmac-secret a value",
        JwtError::NoAllowedAlgorithm { .. } => {
            "allow an algorithm of the configured keys with --jwt-algorithm, or add a key of that kind"
        }
        _ => "check the --jwt-* and --jwks options",
    }
}
