//! The publish API's key check: [`ApiKey`].

use std::fmt;

use super::{AuthError, Authenticator, Identity};
use crate::Request;

/// The API key check: a key as `Authorization: Bearer KEY` or `X-API-Key: KEY`, compared
/// in constant time with every configured key (several: rotation, or one per backend).
/// Without a key it accepts no one ([`AuthError::Disabled`]).
#[derive(Clone, Default)]
pub struct ApiKey {
    keys: Vec<String>,
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiKey")
            .field("keys", &self.keys.len())
            .finish()
    }
}

impl ApiKey {
    /// The check for `key` (`None`: accept no one).
    pub fn new(key: Option<String>) -> Self {
        Self::any_of(key)
    }

    /// The check accepting any of `keys` (none: accept no one; empty keys are left out).
    pub fn any_of(keys: impl IntoIterator<Item = String>) -> Self {
        Self {
            keys: keys.into_iter().filter(|k| !k.is_empty()).collect(),
        }
    }

    /// The check with `keys`, without owning them.
    pub(crate) fn check(keys: &[String], req: &Request) -> Result<Identity, AuthError> {
        if keys.iter().all(String::is_empty) {
            return Err(AuthError::Disabled);
        }
        let given = req
            .header("authorization")
            .and_then(|v| v.trim().strip_prefix("Bearer ").map(str::trim))
            .or_else(|| req.header("x-api-key").map(str::trim))
            .ok_or(AuthError::Missing)?;
        // Every key is compared, whichever matches.
        let matched = keys.iter().filter(|k| !k.is_empty()).fold(false, |m, k| {
            m | constant_time_eq(given.as_bytes(), k.as_bytes())
        });
        if matched {
            Ok(Identity::user("api-key"))
        } else {
            Err(AuthError::Wrong)
        }
    }
}

impl Authenticator for ApiKey {
    fn authenticate(&self, req: &Request) -> Result<Identity, AuthError> {
        Self::check(&self.keys, req)
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(headers: &str) -> Request {
        let head = format!("POST /api/publish HTTP/1.1\r\nHost: x\r\n{headers}\r\n");
        let cfg = switchboard_proto::Config::default();
        match Request::parse(head.as_bytes(), &cfg) {
            Ok(Some((req, _))) => req,
            other => panic!("not a request: {other:?}"),
        }
    }

    #[test]
    fn the_api_key_is_taken_from_either_header() {
        let check = |h: &str| ApiKey::new(Some("k3y".into())).authenticate(&request(h));
        assert_eq!(
            check("Authorization: Bearer k3y\r\n"),
            Ok(Identity::user("api-key"))
        );
        assert_eq!(check("X-API-Key:  k3y \r\n"), Ok(Identity::user("api-key")));
        assert_eq!(check("Authorization: Bearer k3\r\n"), Err(AuthError::Wrong));
        assert_eq!(
            check("Authorization: Basic k3y\r\n"),
            Err(AuthError::Missing)
        );
        assert_eq!(check(""), Err(AuthError::Missing));
        let none = ApiKey::default().authenticate(&request("Authorization: Bearer k3y\r\n"));
        assert_eq!(none, Err(AuthError::Disabled));
    }

    #[test]
    fn any_of_several_keys_is_accepted() {
        let keys = ApiKey::any_of(["old".to_string(), String::new(), "new".to_string()]);
        let check = |h: &str| keys.authenticate(&request(h));
        assert!(check("Authorization: Bearer old\r\n").is_ok());
        assert!(check("X-API-Key: new\r\n").is_ok());
        assert_eq!(check("Authorization: Bearer \r\n"), Err(AuthError::Missing));
        assert_eq!(check("X-API-Key: neww\r\n"), Err(AuthError::Wrong));
        let empty = ApiKey::any_of([String::new()]);
        assert_eq!(
            empty.authenticate(&request("X-API-Key: x\r\n")),
            Err(AuthError::Disabled)
        );
    }

    #[test]
    fn the_key_is_not_shown_in_debug_output() {
        let shown = format!("{:?}", ApiKey::new(Some("sekrit".into())));
        assert!(!shown.contains("sekrit"), "{shown}");
    }
}
