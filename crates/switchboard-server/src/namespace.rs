//! Namespaces: who may subscribe to a topic and publish to it, and how its stream is kept,
//! by the part of its name before the first `:` (docs/protocol.md, "Namespaces").
//!
//! `news` has no namespace (the rules of [`Namespaces::topics`]); `private:room1` is in
//! `private`. Two namespaces are built in: `chat` (the chat rooms: `/ws` may subscribe to
//! watch them, only `/chat` sends to them) and `user` (`user:ID` is the personal topic of the
//! user `ID`: only a connection of that user may subscribe to it, and clients may not publish
//! to it unless its rules say so; the backend publishes with the API).
//!
//! With nothing configured every topic is open, as Switchboard always was: anyone may
//! subscribe and publish, presence is on, history has the server's bounds. Once one namespace
//! besides the built-in ones is configured, a topic in a namespace that is not gets
//! `unknown_namespace`: the server knows what it serves (Centrifugo's rule).
//!
//! ```
//! use switchboard_server::{NamespaceRules, Namespaces, PublishRule, SubscribeRule};
//!
//! let namespaces = Namespaces::default().namespace(
//!     "private",
//!     NamespaceRules::closed().subscribe(SubscribeRule::Token).presence(false),
//! );
//! let private = namespaces.rules_for("private:room1").unwrap();
//! assert_eq!(private.publish, PublishRule::Nobody); // a namespace you name starts closed
//! assert!(namespaces.rules_for("news").is_some()); // no namespace: [topics]
//! assert!(namespaces.rules_for("chat:lobby").is_some()); // built in
//! assert!(namespaces.rules_for("other:x").is_none()); // unknown_namespace
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use switchboard_hub::{HistoryLimits, StreamOptions, TopicOptions};

use crate::auth::Identity;
use crate::error::{AppError, ErrorCode};

/// The chat rooms' namespace (`chat:ROOM`).
pub const CHAT_NAMESPACE: &str = "chat";
/// The namespace of personal topics (`user:ID`, for the user `ID` only).
pub const USER_NAMESPACE: &str = "user";

/// Who may subscribe to a namespace's topics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubscribeRule {
    /// Every connection, anonymous ones too.
    Anyone,
    /// Connections with a user (a connection token with a `sub`), or a subscription token.
    Authenticated,
    /// Only with a subscription token for the topic.
    Token,
}

/// Who may publish to a namespace's topics from a client (`/ws`; the backend's
/// `POST /api/publish` needs no permission).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PublishRule {
    /// No client: the backend publishes.
    Nobody,
    /// Connections subscribed to the topic.
    Subscribers,
    /// Connections with a user.
    Authenticated,
    /// Every connection.
    Anyone,
}

impl SubscribeRule {
    /// The rule as the config file writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Anyone => "anyone",
            Self::Authenticated => "authenticated",
            Self::Token => "token",
        }
    }
}

impl PublishRule {
    /// The rule as the config file writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Nobody => "nobody",
            Self::Subscribers => "subscribers",
            Self::Authenticated => "authenticated",
            Self::Anyone => "anyone",
        }
    }
}

/// The rules of one namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct NamespaceRules {
    /// Who may subscribe (for `user`, the owner rule replaces it).
    pub subscribe: SubscribeRule,
    /// Who may publish from a client.
    pub publish: PublishRule,
    /// Whether a `/ws` subscription makes the connection present in the topic (and
    /// `presence` requests are answered).
    pub presence: bool,
    /// Whether subscribers get `join` and `leave` events when a `/ws` connection that is
    /// present subscribes and unsubscribes (needs [`presence`](Self::presence)).
    pub join_leave: bool,
    /// Publications each topic's history keeps (`None`: the server's
    /// [`HubConfig::history_size`](crate::HubConfig)); 0 keeps none.
    pub history_size: Option<usize>,
    /// How long a publication stays in its topic's history (`None`: the server's
    /// [`HubConfig::history_ttl`](crate::HubConfig)); zero keeps none.
    pub history_ttl: Option<Duration>,
}

impl Default for NamespaceRules {
    /// [`open`](Self::open).
    fn default() -> Self {
        Self::open()
    }
}

impl NamespaceRules {
    /// Everything allowed, as with no configuration: anyone subscribes and publishes,
    /// presence on, no join/leave events, the server's history bounds.
    pub const fn open() -> Self {
        Self {
            subscribe: SubscribeRule::Anyone,
            publish: PublishRule::Anyone,
            presence: true,
            join_leave: false,
            history_size: None,
            history_ttl: None,
        }
    }

    /// Nothing allowed that is not said (a namespace the config file names starts here):
    /// subscribing needs a subscription token, clients do not publish; presence on, no
    /// join/leave events, the server's history bounds.
    pub const fn closed() -> Self {
        Self {
            subscribe: SubscribeRule::Token,
            publish: PublishRule::Nobody,
            ..Self::open()
        }
    }

    /// The built-in `user` namespace: only the user `ID` subscribes to `user:ID`; clients
    /// do not publish.
    pub const fn user() -> Self {
        Self {
            publish: PublishRule::Nobody,
            ..Self::open()
        }
    }

    /// Sets [`subscribe`](Self::subscribe).
    pub fn subscribe(mut self, rule: SubscribeRule) -> Self {
        self.subscribe = rule;
        self
    }

    /// Sets [`publish`](Self::publish).
    pub fn publish(mut self, rule: PublishRule) -> Self {
        self.publish = rule;
        self
    }

    /// Sets [`presence`](Self::presence).
    pub fn presence(mut self, on: bool) -> Self {
        self.presence = on;
        self
    }

    /// Sets [`join_leave`](Self::join_leave).
    pub fn join_leave(mut self, on: bool) -> Self {
        self.join_leave = on;
        self
    }

    /// Sets [`history_size`](Self::history_size).
    pub fn history_size(mut self, n: usize) -> Self {
        self.history_size = Some(n);
        self
    }

    /// Sets [`history_ttl`](Self::history_ttl).
    pub fn history_ttl(mut self, ttl: Duration) -> Self {
        self.history_ttl = Some(ttl);
        self
    }

    /// Whether it sets its own history bounds.
    fn sets_history(&self) -> bool {
        self.history_size.is_some() || self.history_ttl.is_some()
    }
}

/// The namespaces a server knows and their rules
/// ([`ServerConfig::namespaces`](crate::ServerConfig::namespaces)). Cheap to clone (shared).
///
/// The `/ws` checks (`check_subscribe`, `check_publish`, `check_history`, `check_presence`)
/// answer `unknown_namespace` or `permission_denied` with a sentence saying what is needed.
#[derive(Clone, PartialEq, Eq)]
pub struct Namespaces {
    inner: Arc<Inner>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Inner {
    /// Topics without a namespace, and every namespace while none is configured.
    topics: NamespaceRules,
    /// The named ones, the built-in ones included.
    named: BTreeMap<String, NamespaceRules>,
    /// A namespace besides the built-in ones is configured: the others are unknown.
    closed: bool,
}

impl Default for Namespaces {
    /// No configuration: every topic open ([`NamespaceRules::open`]); `chat` open too,
    /// `user` with its owner rule ([`NamespaceRules::user`]).
    fn default() -> Self {
        let named = BTreeMap::from([
            (CHAT_NAMESPACE.to_owned(), NamespaceRules::open()),
            (USER_NAMESPACE.to_owned(), NamespaceRules::user()),
        ]);
        Self {
            inner: Arc::new(Inner {
                topics: NamespaceRules::open(),
                named,
                closed: false,
            }),
        }
    }
}

impl fmt::Debug for Namespaces {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Namespaces")
            .field("topics", &self.inner.topics)
            .field("named", &self.inner.named)
            .field("closed", &self.inner.closed)
            .finish()
    }
}

/// A topic's namespace: the part before its first `:` (`None`: it has none).
pub fn namespace_of(topic: &str) -> Option<&str> {
    topic.split_once(':').map(|(ns, _)| ns)
}

/// What an action needs, said as the end of "subscribing to "x" needs …".
fn denied(action: &str, topic: &str, needs: &str) -> AppError {
    AppError::new(
        ErrorCode::PermissionDenied,
        format!("{action} {topic:?} needs {needs}"),
    )
}

/// The connection's user; a token with an empty `sub` is anonymous too.
fn user_of(identity: &Identity) -> Option<&str> {
    identity.user.as_deref().filter(|u| !u.is_empty())
}

impl Namespaces {
    /// No configuration (see [`Default`]).
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the rules of topics without a namespace (and of every namespace while no
    /// [`namespace`](Self::namespace) besides the built-in ones is set).
    pub fn topics(mut self, rules: NamespaceRules) -> Self {
        Arc::make_mut(&mut self.inner).topics = rules;
        self
    }

    /// Sets the rules of the namespace `name` (topics `name:…`). A name besides the
    /// built-in `chat` and `user` makes every namespace not set unknown. For `user`, only
    /// the user `ID` may subscribe to `user:ID` whatever [`NamespaceRules::subscribe`] says.
    /// A name with a `:` matches no topic (the config file refuses it).
    pub fn namespace(mut self, name: impl Into<String>, rules: NamespaceRules) -> Self {
        let name = name.into();
        let inner = Arc::make_mut(&mut self.inner);
        inner.closed |= name != CHAT_NAMESPACE && name != USER_NAMESPACE;
        inner.named.insert(name, rules);
        self
    }

    /// The rules of `topic`'s namespace; `None` when the namespace is unknown.
    pub fn rules_for(&self, topic: &str) -> Option<&NamespaceRules> {
        match namespace_of(topic) {
            None => Some(&self.inner.topics),
            Some(ns) => match self.inner.named.get(ns) {
                Some(rules) => Some(rules),
                None if !self.inner.closed => Some(&self.inner.topics),
                None => None,
            },
        }
    }

    /// Whether the namespace sets its own history bounds anywhere (else every topic has
    /// the server's).
    fn sets_history(&self) -> bool {
        self.inner.topics.sets_history() || self.inner.named.values().any(|r| r.sets_history())
    }

    /// Each topic's stream options for the hub: its namespace's history bounds, `defaults`
    /// where it sets none (and for unknown namespaces: the API may publish anywhere).
    pub(crate) fn stream_options(&self, defaults: HistoryLimits) -> impl TopicOptions {
        StreamOptionsOf {
            namespaces: self.sets_history().then(|| self.clone()),
            defaults,
        }
    }
}

/// The checks of `/ws` and `/chat` (docs/protocol.md, "Namespaces").
impl Namespaces {
    /// The rules of `topic`'s namespace, or `unknown_namespace` naming the ones there are.
    pub(crate) fn rules(&self, topic: &str) -> Result<&NamespaceRules, AppError> {
        self.rules_for(topic).ok_or_else(|| {
            let ns = namespace_of(topic).unwrap_or_default();
            let known: Vec<&str> = self.inner.named.keys().map(String::as_str).collect();
            AppError::new(
                ErrorCode::UnknownNamespace,
                format!(
                    "no namespace {ns:?} on this server (its namespaces: {})",
                    known.join(", ")
                ),
            )
        })
    }

    /// Whether `identity` may subscribe to `topic` (`has_subscription_token`: the subscribe
    /// came with a valid subscription token for it). `unknown_namespace` or
    /// `permission_denied` saying what is needed.
    pub(crate) fn check_subscribe(
        &self,
        identity: &Identity,
        topic: &str,
        has_subscription_token: bool,
    ) -> Result<&NamespaceRules, AppError> {
        self.check_reading("subscribing to", identity, topic, has_subscription_token)
    }

    /// Whether `identity` may read `topic`'s history: as for subscribing (Centrifugo's
    /// rule); a connection subscribed to it passed that already.
    pub(crate) fn check_history(
        &self,
        identity: &Identity,
        topic: &str,
        subscribed: bool,
    ) -> Result<&NamespaceRules, AppError> {
        let rules = self.rules(topic)?;
        if subscribed {
            return Ok(rules);
        }
        self.check_reading("reading the history of", identity, topic, false)
    }

    /// The subscribe rule (the owner rule for `user:ID`), for `action`.
    fn check_reading(
        &self,
        action: &str,
        identity: &Identity,
        topic: &str,
        token: bool,
    ) -> Result<&NamespaceRules, AppError> {
        let rules = self.rules(topic)?;
        if let Some(owner) = topic.strip_prefix("user:") {
            return match user_of(identity) {
                Some(user) if user == owner => Ok(rules),
                _ => Err(denied(
                    action,
                    topic,
                    &format!(
                        "a connection of user {owner:?} (personal topics are their user's only)"
                    ),
                )),
            };
        }
        match rules.subscribe {
            SubscribeRule::Anyone => Ok(rules),
            SubscribeRule::Authenticated if token || user_of(identity).is_some() => Ok(rules),
            SubscribeRule::Authenticated => Err(denied(
                action,
                topic,
                "an authenticated connection (a token with a user) or a subscription token",
            )),
            SubscribeRule::Token if token => Ok(rules),
            SubscribeRule::Token => Err(denied(action, topic, "a subscription token")),
        }
    }

    /// Whether `identity` may publish to `topic` from a client (`subscribed`: the
    /// connection is subscribed to it).
    pub(crate) fn check_publish(
        &self,
        identity: &Identity,
        topic: &str,
        subscribed: bool,
    ) -> Result<&NamespaceRules, AppError> {
        let rules = self.rules(topic)?;
        let allowed = match rules.publish {
            PublishRule::Anyone => true,
            PublishRule::Authenticated => user_of(identity).is_some(),
            PublishRule::Subscribers => subscribed,
            PublishRule::Nobody => false,
        };
        if allowed {
            return Ok(rules);
        }
        Err(match rules.publish {
            PublishRule::Subscribers => denied("publishing to", topic, "a subscription to it"),
            PublishRule::Authenticated => denied(
                "publishing to",
                topic,
                "an authenticated connection (a token with a user)",
            ),
            _ => AppError::new(
                ErrorCode::PermissionDenied,
                format!(
                    "clients may not publish to {topic:?}: its namespace takes publications from the backend (POST /api/publish)"
                ),
            ),
        })
    }

    /// Whether `presence` and `presence_stats` may be asked of `topic`: its namespace has
    /// presence on (else `permission_denied`) and the connection is `subscribed` (else
    /// `not_subscribed`).
    pub(crate) fn check_presence(
        &self,
        topic: &str,
        subscribed: bool,
    ) -> Result<&NamespaceRules, AppError> {
        let rules = self.rules(topic)?;
        if !rules.presence {
            let whose = namespace_of(topic).map_or_else(
                || "topics without a namespace".to_owned(),
                |ns| format!("the {ns:?} namespace"),
            );
            return Err(AppError::new(
                ErrorCode::PermissionDenied,
                format!("presence is off in {whose}"),
            ));
        }
        if !subscribed {
            return Err(AppError::new(
                ErrorCode::NotSubscribed,
                format!("subscribe to {topic:?} to ask who is present in it"),
            ));
        }
        Ok(rules)
    }
}

/// [`Namespaces::stream_options`].
struct StreamOptionsOf {
    /// `None` when no namespace sets history bounds: every topic gets the defaults at once.
    namespaces: Option<Namespaces>,
    defaults: HistoryLimits,
}

impl TopicOptions for StreamOptionsOf {
    fn options(&self, topic: &str) -> StreamOptions {
        let rules = self.namespaces.as_ref().and_then(|ns| ns.rules_for(topic));
        let d = self.defaults;
        StreamOptions::new(rules.map_or(d, |r| HistoryLimits {
            size: r.history_size.unwrap_or(d.size),
            ttl: r.history_ttl.unwrap_or(d.ttl),
        }))
    }
}

#[cfg(test)]
mod tests;
