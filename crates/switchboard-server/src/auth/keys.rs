//! The keys tokens are checked with, and the algorithms each one accepts: pinned by the
//! configuration (the kind of key, a JWK's `alg`, the allow-list), never by the token.

use std::fmt;

use base64::Engine as _;
use jsonwebtoken::{Algorithm, DecodingKey};

/// The HMAC algorithms, for secrets.
pub(crate) const HMAC: &[Algorithm] = &[Algorithm::HS256, Algorithm::HS384, Algorithm::HS512];
/// The RSA algorithms (PKCS#1 v1.5 and PSS), for RSA public keys.
pub(crate) const RSA: &[Algorithm] = &[
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
];

/// Every algorithm a token may be signed with here (`none` is never one).
pub(crate) const SUPPORTED: &[Algorithm] = &[
    Algorithm::HS256,
    Algorithm::HS384,
    Algorithm::HS512,
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
];

/// The algorithm named `name` (`"RS256"`), if it is one of [`SUPPORTED`].
pub(crate) fn algorithm(name: &str) -> Option<Algorithm> {
    SUPPORTED.iter().copied().find(|a| name_of(*a) == name)
}

/// The name tokens give `alg` (`"RS256"`).
pub(crate) fn name_of(alg: Algorithm) -> &'static str {
    match alg {
        Algorithm::HS256 => "HS256",
        Algorithm::HS384 => "HS384",
        Algorithm::HS512 => "HS512",
        Algorithm::RS256 => "RS256",
        Algorithm::RS384 => "RS384",
        Algorithm::RS512 => "RS512",
        Algorithm::PS256 => "PS256",
        Algorithm::PS384 => "PS384",
        Algorithm::PS512 => "PS512",
        Algorithm::ES256 => "ES256",
        Algorithm::ES384 => "ES384",
        Algorithm::EdDSA => "EdDSA",
    }
}

/// The names of the supported algorithms, for messages: `HS256, HS384, …`.
pub(crate) fn supported_names() -> String {
    SUPPORTED
        .iter()
        .map(|a| name_of(*a))
        .collect::<Vec<_>>()
        .join(", ")
}

/// One key a token's signature may be checked with.
#[derive(Clone)]
pub(crate) struct Key {
    /// Its `kid` (JWKS keys; `None` for secrets and PEM files).
    pub(crate) kid: Option<String>,
    pub(crate) key: DecodingKey,
    /// The algorithms it checks, as configured (never empty for a key in use).
    pub(crate) algorithms: Vec<Algorithm>,
    /// Where it came from, for messages: `HMAC secret 2`, `/etc/jwt.pem`, `JWKS key "k1"`.
    pub(crate) label: String,
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let algorithms: Vec<_> = self.algorithms.iter().map(|a| name_of(*a)).collect();
        f.debug_struct("Key")
            .field("label", &self.label)
            .field("algorithms", &algorithms)
            .finish_non_exhaustive()
    }
}

impl Key {
    /// The HMAC secret `secret`, the `n`th configured (from 1).
    pub(crate) fn hmac(secret: &[u8], n: usize) -> Self {
        Self {
            kid: None,
            key: DecodingKey::from_secret(secret),
            algorithms: HMAC.to_vec(),
            label: format!("HMAC secret {n}"),
        }
    }

    /// An RSA or EC public key in PEM (`PUBLIC KEY`, `RSA PUBLIC KEY` or a `CERTIFICATE`),
    /// with the algorithms of its kind: RSA keys RS*/PS*, EC keys their curve's (P-256:
    /// ES256, P-384: ES384).
    pub(crate) fn from_pem(pem: &[u8], label: String) -> Result<Self, String> {
        let (tag, der) = pem_block(pem)
            .ok_or("not a PEM file (expected -----BEGIN PUBLIC KEY-----)".to_string())?;
        if tag.contains("PRIVATE") {
            return Err("this is a private key: give the public key \
                        (openssl pkey -in KEY -pubout -out PUBLIC.pem)"
                .into());
        }
        let rsa = DecodingKey::from_rsa_pem(pem);
        let (key, algorithms) = match rsa {
            Ok(key) => (key, RSA.to_vec()),
            Err(_) => {
                let curve = ec_curve(&der).ok_or(
                    "not an RSA or EC (P-256, P-384) public key in PEM \
                     (-----BEGIN PUBLIC KEY-----)",
                )?;
                let key = DecodingKey::from_ec_pem(pem)
                    .map_err(|e| format!("not a valid EC public key: {e}"))?;
                (key, vec![curve])
            }
        };
        Ok(Self {
            kid: None,
            key,
            algorithms,
            label,
        })
    }

    /// Keeps only the algorithms in `allowed` (the `--jwt-algorithm` allow-list).
    pub(crate) fn narrow(&mut self, allowed: Option<&[Algorithm]>) {
        if let Some(allowed) = allowed {
            self.algorithms.retain(|a| allowed.contains(a));
        }
    }

    /// Whether this key checks `alg` tokens.
    pub(crate) fn accepts(&self, alg: Algorithm) -> bool {
        self.algorithms.contains(&alg)
    }
}

/// The label and the DER content of the first PEM block in `pem`.
fn pem_block(pem: &[u8]) -> Option<(String, Vec<u8>)> {
    let text = std::str::from_utf8(pem).ok()?;
    let begin = text.find("-----BEGIN ")?;
    let rest = &text[begin + "-----BEGIN ".len()..];
    let (tag, rest) = rest.split_once("-----")?;
    let end = rest.find("-----END ")?;
    let body: String = rest[..end]
        .chars()
        .filter(|c| !c.is_ascii_whitespace())
        .collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(body)
        .ok()?;
    Some((tag.to_string(), der))
}

/// DER of the algorithm identifier of an EC public key on P-256: the OIDs
/// id-ecPublicKey (1.2.840.10045.2.1) and prime256v1 (1.2.840.10045.3.1.7), side by side
/// as in a SubjectPublicKeyInfo.
const EC_P256: &[u8] = &[
    0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d,
    0x03, 0x01, 0x07,
];
/// The same for P-384 (secp384r1, 1.3.132.0.34).
const EC_P384: &[u8] = &[
    0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22,
];

/// The algorithm of the EC public key in `der` (a SubjectPublicKeyInfo, or a certificate
/// holding one), by its curve.
fn ec_curve(der: &[u8]) -> Option<Algorithm> {
    let has = |oids: &[u8]| der.windows(oids.len()).any(|w| w == oids);
    if has(EC_P256) {
        Some(Algorithm::ES256)
    } else if has(EC_P384) {
        Some(Algorithm::ES384)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn algorithm_names_round_trip_and_none_is_not_one() {
        for a in SUPPORTED {
            assert_eq!(algorithm(name_of(*a)), Some(*a));
        }
        assert_eq!(algorithm("none"), None);
        assert_eq!(algorithm("EdDSA"), None);
        assert_eq!(algorithm("hs256"), None);
    }

    #[test]
    fn ec_keys_are_pinned_to_their_curve() {
        for (alg, want) in [
            (&rcgen::PKCS_ECDSA_P256_SHA256, Algorithm::ES256),
            (&rcgen::PKCS_ECDSA_P384_SHA384, Algorithm::ES384),
        ] {
            let pair = rcgen::KeyPair::generate_for(alg).unwrap();
            let key = Key::from_pem(pair.public_key_pem().as_bytes(), "k".into()).unwrap();
            assert_eq!(key.algorithms, vec![want]);
        }
    }

    #[test]
    fn private_keys_and_other_files_are_refused_with_the_fix() {
        let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let err = Key::from_pem(pair.serialize_pem().as_bytes(), "k".into()).unwrap_err();
        assert!(err.contains("-pubout"), "{err}");
        let err = Key::from_pem(b"hello", "k".into()).unwrap_err();
        assert!(err.contains("not a PEM file"), "{err}");
        let ed = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
        let err = Key::from_pem(ed.public_key_pem().as_bytes(), "k".into()).unwrap_err();
        assert!(err.contains("not an RSA or EC"), "{err}");
    }
}
