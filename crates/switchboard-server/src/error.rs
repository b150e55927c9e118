//! The errors of the app layer: the codes endpoints send back in `error` events
//! ([`AppError`]), and the handshakes refused before a WebSocket opens ([`Rejection`]).

use crate::metrics::Reject;

/// The `code` of an `error` event (docs/protocol.md lists them per endpoint).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ErrorCode {
    /// Not the JSON the endpoint expects (chat: text starting with `{`; pub/sub: any text),
    /// or a publish without `data`.
    InvalidJson,
    /// A `type` the endpoint does not know.
    UnknownType,
    /// Chat: blank or too long text.
    InvalidText,
    /// Chat: a room name outside the rules.
    InvalidRoom,
    /// Chat: a name outside the rules (`?name=`; refused with 400, never an event).
    InvalidName,
    /// Chat: a binary message.
    BinaryUnsupported,
    /// Pub/sub: a topic name outside the rules.
    InvalidTopic,
    /// Pub/sub: publishing to a chat room's topic.
    ReservedTopic,
    /// Pub/sub: past the subscriptions one connection may hold.
    TooManySubscriptions,
    /// Pub/sub: unsubscribing from a topic not subscribed to.
    NotSubscribed,
    /// Pub/sub: a binary message without the topic prefix.
    InvalidBinary,
    /// Pub/sub: the hub could not take the publish (its broker failed).
    Unavailable,
    /// The connection may not do this to this topic (its namespace's rules, a `user:` topic
    /// of someone else, a subscription token missing or not valid).
    PermissionDenied,
    /// A topic in a namespace the server does not know.
    UnknownNamespace,
    /// Too many messages or bytes per second from this connection.
    RateLimited,
    /// A `refresh` with a token that is not accepted.
    InvalidToken,
}

impl ErrorCode {
    /// The code as it appears on the wire.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::InvalidJson => "invalid_json",
            Self::UnknownType => "unknown_type",
            Self::InvalidText => "invalid_text",
            Self::InvalidRoom => "invalid_room",
            Self::InvalidName => "invalid_name",
            Self::BinaryUnsupported => "binary_unsupported",
            Self::InvalidTopic => "invalid_topic",
            Self::ReservedTopic => "reserved_topic",
            Self::TooManySubscriptions => "too_many_subscriptions",
            Self::NotSubscribed => "not_subscribed",
            Self::InvalidBinary => "invalid_binary",
            Self::Unavailable => "unavailable",
            Self::PermissionDenied => "permission_denied",
            Self::UnknownNamespace => "unknown_namespace",
            Self::RateLimited => "rate_limited",
            Self::InvalidToken => "invalid_token",
        }
    }
}

/// A client request an endpoint refuses: its code and the sentence that explains it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub(crate) struct AppError {
    pub(crate) code: ErrorCode,
    pub(crate) message: String,
}

impl AppError {
    pub(crate) fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    /// The `error` event, as every endpoint sends it (`/ws` adds the `id` of the request
    /// it answers): `{"type":"error","code":…,"message":…}`. For what the session sends on
    /// its own, before a message reaches the endpoint (`rate_limited`).
    pub(crate) fn event(&self) -> switchboard_proto::Message {
        #[derive(serde::Serialize)]
        struct Event<'a> {
            #[serde(rename = "type")]
            kind: &'static str,
            code: &'a str,
            message: &'a str,
        }
        let event = Event {
            kind: "error",
            code: self.code.as_str(),
            message: &self.message,
        };
        // Serializing a struct of strings cannot fail.
        switchboard_proto::Message::text(serde_json::to_string(&event).unwrap_or_default())
    }
}

/// A WebSocket handshake refused: the reason it is counted under, and the body sent with
/// the reason's status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Rejection {
    pub(crate) reason: Reject,
    pub(crate) body: String,
}

impl Rejection {
    pub(crate) fn new(reason: Reject, body: impl Into<String>) -> Self {
        Self {
            reason,
            body: body.into(),
        }
    }

    /// 400: a valid handshake with parameters the endpoint refuses.
    pub(crate) fn bad_request(body: impl Into<String>) -> Self {
        Self::new(Reject::BadRequest, body)
    }

    /// The HTTP status sent.
    pub(crate) fn status(&self) -> u16 {
        match self.reason {
            Reject::NotFound => 404,
            Reject::Origin => 403,
            Reject::ConnectionLimit | Reject::PerIpLimit => 503,
            Reject::RateLimit => 429,
            Reject::BadRequest => 400,
            Reject::Unauthorized => 401,
            Reject::Forbidden => 403,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_spelled_as_on_the_wire() {
        assert_eq!(ErrorCode::InvalidJson.as_str(), "invalid_json");
        assert_eq!(ErrorCode::NotSubscribed.as_str(), "not_subscribed");
        assert_eq!(
            ErrorCode::TooManySubscriptions.as_str(),
            "too_many_subscriptions"
        );
        let e = AppError::new(ErrorCode::InvalidRoom, "room names are 1-64 characters");
        assert_eq!(e.to_string(), "room names are 1-64 characters");
    }

    #[test]
    fn each_rejection_has_its_status() {
        assert_eq!(Rejection::bad_request("x").status(), 400);
        assert_eq!(Rejection::new(Reject::NotFound, "x").status(), 404);
        assert_eq!(Rejection::new(Reject::Origin, "x").status(), 403);
        assert_eq!(Rejection::new(Reject::PerIpLimit, "x").status(), 503);
        assert_eq!(Rejection::new(Reject::ConnectionLimit, "x").status(), 503);
        assert_eq!(Rejection::new(Reject::RateLimit, "x").status(), 429);
    }

    #[test]
    fn the_error_event_has_the_endpoints_shape() {
        let e = AppError::new(ErrorCode::RateLimited, "too \"fast\"");
        let switchboard_proto::Message::Text(t) = e.event() else {
            panic!("a text message");
        };
        assert_eq!(
            t.as_str(),
            r#"{"type":"error","code":"rate_limited","message":"too \"fast\""}"#
        );
    }
}
