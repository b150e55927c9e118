//! Who a request comes from: the [`Authenticator`] seam. `POST /api/publish` asks the
//! configured one ([`ServerConfig::authenticator`](crate::ServerConfig::authenticator), or
//! by default the [`ApiKey`] check with [`ServerConfig::api_keys`](crate::ServerConfig::api_keys))
//! and publishes only for an accepted [`Identity`]. WebSocket handshakes (`/ws`, `/chat`) ask
//! [`ServerConfig::websocket_authenticator`](crate::ServerConfig::websocket_authenticator)
//! when one is set (the JWT check, [`JwtAuthenticator`]); the session keeps the [`Identity`], asks the same
//! authenticator to [`refresh`](Authenticator::refresh) it and to check
//! [subscription tokens](Authenticator::subscription).

mod api_key;
mod claims;
mod fetch;
mod jwks;
mod jwt;
mod jwt_config;
mod keys;
#[cfg(test)]
mod testing;

use std::fmt;
use std::time::SystemTime;

use switchboard_proto::handshake::server::Request;

pub use api_key::ApiKey;
pub use jwt::JwtAuthenticator;
pub use jwt_config::{JwtConfig, JwtError, JWKS_REFRESH};

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
