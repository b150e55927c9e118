//! Who a request comes from: the [`Authenticator`] seam. `POST /api/publish` asks the
//! configured one ([`ServerConfig::authenticator`](crate::ServerConfig::authenticator), or
//! by default the [`ApiKey`] check with [`ServerConfig::api_key`](crate::ServerConfig::api_key))
//! and publishes only for an accepted [`Identity`]. WebSocket handshakes (`/ws`, `/chat`) ask
//! [`ServerConfig::websocket_authenticator`](crate::ServerConfig::websocket_authenticator)
//! when one is set (the JWT check); the session keeps the [`Identity`], asks the same
//! authenticator to [`refresh`](Authenticator::refresh) it and to check
//! [subscription tokens](Authenticator::subscription).

use std::fmt;
use std::time::SystemTime;

use switchboard_proto::handshake::server::Request;

/// Who sent a request, as an [`Authenticator`] established it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Identity {
    /// The user the credentials name; `None`: anonymous (a token with an empty `sub` too).
    pub user: Option<String>,
    /// The name shown to others (the chat), from the token's `name`.
    pub name: Option<String>,
    /// Anything the backend wants others to see in presence: the JSON text of the token's
    /// `info` (valid JSON, as the authenticator checked).
    pub info: Option<String>,
    /// Topics the server subscribes the connection to when it opens (the token's
    /// `channels`).
    pub channels: Vec<String>,
    /// When the credentials expire (the token's `exp`); the connection must
    /// [refresh](Authenticator::refresh) them before, or it is closed.
    pub expires: Option<SystemTime>,
}

impl Identity {
    /// No one in particular.
    pub const fn anonymous() -> Self {
        Self {
            user: None,
            name: None,
            info: None,
            channels: Vec::new(),
            expires: None,
        }
    }

    /// The user `name`.
    pub fn user(name: impl Into<String>) -> Self {
        Self {
            user: Some(name.into()),
            ..Self::anonymous()
        }
    }

    /// The same identity, expiring at `at`.
    pub fn expiring(mut self, at: SystemTime) -> Self {
        self.expires = Some(at);
        self
    }

    /// Whether no user is known.
    pub fn is_anonymous(&self) -> bool {
        self.user.is_none()
    }
}

/// Why a request's credentials were not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// Nothing is configured to accept anyone (the publish API without an API key).
    #[error("no credentials are configured")]
    Disabled,
    /// The request carries no credentials (answered 401).
    #[error("no credentials")]
    Missing,
    /// The credentials are wrong (answered 403).
    #[error("wrong credentials")]
    Wrong,
    /// A token that is not accepted, and why in one line ("token expired", "bad signature",
    /// "algorithm HS512 is not allowed"): answered 401 with that reason.
    #[error("{0}")]
    Invalid(String),
}

/// What a subscription token grants: the topic it names, to the user it names.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Grant {
    /// When the token expires (checked when subscribing).
    pub expires: Option<SystemTime>,
    /// The JSON text of the token's `info`, shown in presence for this topic.
    pub info: Option<String>,
}

impl Grant {
    /// A grant without expiry or info.
    pub fn new() -> Self {
        Self::default()
    }
}

/// Checks the credentials of a request and says who sent it. Implementations must not log
/// the credentials; the server logs refusals (rate-limited) with the peer and the reason.
///
/// ```
/// use switchboard_server::{AuthError, Authenticator, Identity, Request, ServerConfig};
///
/// /// Accepts `X-User: NAME` for a fixed set of users (a toy: it checks nothing secret).
/// #[derive(Debug)]
/// struct Users(Vec<String>);
///
/// impl Authenticator for Users {
///     fn authenticate(&self, req: &Request) -> Result<Identity, AuthError> {
///         let name = req.header("x-user").ok_or(AuthError::Missing)?;
///         match self.0.iter().any(|u| u == name) {
///             true => Ok(Identity::user(name)),
///             false => Err(AuthError::Wrong),
///         }
///     }
/// }
///
/// let config = ServerConfig::default().authenticator(Users(vec!["ada".into()]));
/// # let _ = config;
/// ```
pub trait Authenticator: Send + Sync + fmt::Debug + 'static {
    /// Who sent `req`, or why it may not act.
    fn authenticate(&self, req: &Request) -> Result<Identity, AuthError>;

    /// A connection of `current` sent a new token (`{"type":"refresh","token":…}`): the
    /// identity it names, which must be the same user. By default refreshing is not
    /// supported ([`AuthError::Disabled`]).
    fn refresh(&self, token: &str, current: &Identity) -> Result<Identity, AuthError> {
        let _ = (token, current);
        Err(AuthError::Disabled)
    }

    /// Whether the subscription `token` lets `identity` subscribe to `topic` (a topic whose
    /// namespace needs one). By default there are no subscription tokens
    /// ([`AuthError::Disabled`]).
    fn subscription(
        &self,
        token: &str,
        identity: &Identity,
        topic: &str,
    ) -> Result<Grant, AuthError> {
        let _ = (token, identity, topic);
        Err(AuthError::Disabled)
    }
}

/// The API key check: the key as `Authorization: Bearer KEY` or `X-API-Key: KEY`, compared
/// in constant time. Without a key it accepts no one ([`AuthError::Disabled`]).
#[derive(Clone, Default)]
pub struct ApiKey {
    key: Option<String>,
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let key = self.key.as_ref().map(|_| "<set>");
        f.debug_struct("ApiKey").field("key", &key).finish()
    }
}

impl ApiKey {
    /// The check for `key` (`None`: accept no one).
    pub fn new(key: Option<String>) -> Self {
        Self { key }
    }

    /// The check with `key`, without owning it.
    pub(crate) fn check(key: Option<&str>, req: &Request) -> Result<Identity, AuthError> {
        let key = key.ok_or(AuthError::Disabled)?;
        let given = req
            .header("authorization")
            .and_then(|v| v.trim().strip_prefix("Bearer ").map(str::trim))
            .or_else(|| req.header("x-api-key").map(str::trim))
            .ok_or(AuthError::Missing)?;
        if constant_time_eq(given.as_bytes(), key.as_bytes()) {
            Ok(Identity::user("api-key"))
        } else {
            Err(AuthError::Wrong)
        }
    }
}

impl Authenticator for ApiKey {
    fn authenticate(&self, req: &Request) -> Result<Identity, AuthError> {
        Self::check(self.key.as_deref(), req)
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
    fn the_key_is_not_shown_in_debug_output() {
        let shown = format!("{:?}", ApiKey::new(Some("sekrit".into())));
        assert!(!shown.contains("sekrit"), "{shown}");
    }
}
