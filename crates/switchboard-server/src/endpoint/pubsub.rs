//! `/ws`: generic publish/subscribe for applications (docs/protocol.md), and the message
//! format shared with `POST /api/publish`.

use std::borrow::Cow;
use std::sync::Arc;

use bytes::Bytes;
use serde::Deserialize;
use serde_json::value::RawValue;
use switchboard_hub::recovery;
use switchboard_hub::{
    Body, EngineError, HistoryPage, HistoryQuery, Hub, Op, PresenceEntry, PresenceStats, Published,
    StreamPosition, Subscription,
};
use switchboard_proto::Message;

use crate::auth::Identity;
use crate::endpoint::presence::{self, ClientId};
use crate::error::{AppError, ErrorCode};
use crate::namespace::{NamespaceRules, Namespaces};
use crate::render;
use crate::session::{App, Ctx};
use answer::{
    ack, error, history, presence_answer, published, stats_answer, subscribed_ack,
    subscribed_event, topic_error, unavailable,
};
use join_leave::Kind;

/// The subprotocol name clients may offer.
pub(crate) const SUBPROTOCOL: &str = "switchboard.pubsub.v1";

/// Topics: 1-128 characters from `A-Z a-z 0-9 _ - . : /`.
pub(crate) fn valid_topic(topic: &str) -> Result<(), AppError> {
    let invalid = |why: &str| Err(AppError::new(ErrorCode::InvalidTopic, why));
    if topic.is_empty() || topic.len() > 128 {
        return invalid("topics are 1-128 characters");
    }
    if !topic
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':' | b'/'))
    {
        return invalid("topics use only A-Z, a-z, 0-9, '_', '-', '.', ':' and '/'");
    }
    Ok(())
}

/// Why a topic may not be published to from outside the chat.
pub(crate) fn publishable(topic: &str) -> Result<(), AppError> {
    valid_topic(topic)?;
    if topic.starts_with("chat:") {
        return Err(AppError::new(
            ErrorCode::ReservedTopic,
            format!(
                "topics starting with \"chat:\" are chat rooms: subscribe to watch them, send with {}",
                crate::routes::path(crate::routes::Endpoint::Chat)
            ),
        ));
    }
    Ok(())
}

/// The body of a JSON publish: the `data` value's JSON text.
pub(crate) fn json_body(data: &RawValue) -> Body {
    render::body(render::JSON, data.get().to_owned())
}

/// The body of a binary publish to `topic`; `None` when the topic is too long for the
/// binary delivery layout (one byte of length).
pub(crate) fn binary_body(topic: &str, payload: impl Into<Bytes>) -> Option<Body> {
    u8::try_from(topic.len()).ok()?;
    Some(render::body(render::BINARY, payload))
}

/// At most this many publications per `history` request.
pub(crate) const HISTORY_LIMIT: usize = 300;
/// At most this many bytes of publications per `history` answer. The answer is one message,
/// queued whole on the connection: without a bound, a topic of large publications (100 of
/// 64 KiB) makes an answer larger than the connection's write buffer (4 MiB), and the
/// connection ends instead of answering.
pub(crate) const HISTORY_BYTES: usize = 1 << 20;

/// Splits a binary publish into its topic and payload.
fn binary_topic(b: &Bytes) -> Option<(&str, &[u8])> {
    let n = usize::from(*b.first()?);
    let topic = std::str::from_utf8(b.get(1..1 + n)?).ok()?;
    Some((topic, b.get(1 + n..)?))
}

/// At most this many bytes of clients per `presence` answer (like [`HISTORY_BYTES`]: the
/// answer is one message, and a topic with a crowd present would not fit the connection's
/// write buffer); past it, the first ones in order, and `"capped":true`.
pub(crate) const PRESENCE_BYTES: usize = 1 << 20;

#[derive(Deserialize)]
struct Request<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(borrow, default)]
    topic: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    data: Option<&'a RawValue>,
    #[serde(borrow, default)]
    id: Option<&'a RawValue>,
    /// A `history` request's position.
    #[serde(default)]
    since: Option<Position>,
    /// A `subscribe` request's position to recover from.
    #[serde(default)]
    recover: Option<Position>,
    #[serde(default)]
    limit: Option<usize>,
    /// A `subscribe` request's subscription token; a `refresh` request's new connection
    /// token.
    #[serde(borrow, default)]
    token: Option<Cow<'a, str>>,
}

/// A position in a request.
#[derive(Deserialize)]
struct Position {
    offset: u64,
    epoch: String,
}

impl Position {
    fn get(&self) -> StreamPosition {
        StreamPosition {
            offset: self.offset,
            epoch: self.epoch.as_str().into(),
        }
    }
}

/// What a `/ws` connection waits for from the engine (see [`App::done`]).
pub(crate) enum Waited {
    Subscribed {
        id: Option<Box<RawValue>>,
        /// A subscription the server made (the token's `channels`): announced with a
        /// `subscribed` event.
        server: bool,
        sub: Subscription,
        from: Option<StreamPosition>,
        added: Result<(), EngineError>,
        page: Result<HistoryPage, EngineError>,
    },
    Unsubscribed {
        id: Option<Box<RawValue>>,
    },
    Published {
        id: Option<Box<RawValue>>,
        result: Result<Published, EngineError>,
    },
    History {
        id: Option<Box<RawValue>>,
        topic: String,
        from: Option<StreamPosition>,
        limit: usize,
        page: Result<HistoryPage, EngineError>,
    },
    Presence {
        id: Option<Box<RawValue>>,
        topic: String,
        result: Result<Vec<PresenceEntry>, EngineError>,
    },
    PresenceStats {
        id: Option<Box<RawValue>>,
        topic: String,
        result: Result<PresenceStats, EngineError>,
    },
}

/// Who a subscription's answer goes to: the request `id` of a client's subscribe, or a
/// `subscribed` event for one the server made.
#[derive(Clone, Copy)]
struct To<'a> {
    id: Option<&'a RawValue>,
    server: bool,
}

/// What a subscription token lets this connection do in `topic`, or why it is refused.
fn subscription_grant(
    cx: &Ctx<'_, Waited>,
    token: &str,
    topic: &str,
) -> Result<crate::auth::Grant, AppError> {
    let Some(auth) = &cx.config.websocket_authenticator else {
        return Err(AppError::new(
            ErrorCode::PermissionDenied,
            "this server does not use subscription tokens",
        ));
    };
    auth.subscription(token, cx.identity(), topic).map_err(|e| {
        AppError::new(
            ErrorCode::PermissionDenied,
            format!("the subscription token is not accepted: {e}"),
        )
    })
}

/// The request's id, owned, for an answer that comes later.
fn owned(id: Option<&RawValue>) -> Option<Box<RawValue>> {
    id.map(RawValue::to_owned)
}

/// What every `/ws` connection of a server shares (one allocation per server: each byte
/// of [`PubSub`] is part of every idle session, several times over).
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    /// Topics one connection may subscribe to.
    pub(crate) max_subscriptions: usize,
    /// Publications replayed at most per recovery (more missed: `capped`, not recovered).
    pub(crate) recovery_max: usize,
    /// The server's namespaces: their rules.
    pub(crate) namespaces: Namespaces,
}

/// One `/ws` connection.
pub(crate) struct PubSub {
    subs: Vec<Subscription>,
    /// The server's limits and namespaces.
    settings: Arc<Settings>,
    /// This connection's id in the cluster: its presence in the topics it subscribes to.
    client: ClientId,
    /// Where the client asks the server-made subscriptions to recover from
    /// (`?recover=TOPIC:OFFSET:EPOCH`), until they are made.
    #[allow(
        clippy::box_collection,
        reason = "a thin pointer: 8 bytes in every session rather than 24"
    )]
    recover: Option<Box<Vec<(String, StreamPosition)>>>,
    /// Who this connection is in `join` and `leave` events, made at its first join.
    #[allow(
        clippy::box_collection,
        reason = "a thin pointer: 8 bytes in every session rather than 16 or 24"
    )]
    who: Option<Box<String>>,
}

/// The positions of `recover=TOPIC:OFFSET:EPOCH` query parameters: where the server-made
/// subscriptions (a token's `channels`) recover from.
pub(crate) fn recover_query(query: Option<&str>) -> Result<Vec<(String, StreamPosition)>, String> {
    let mut positions = Vec::new();
    for value in crate::http::query::query_params(query, "recover") {
        let value = value.map_err(|e| e.to_string())?;
        let bad = || {
            format!("recover={value:?} is not TOPIC:OFFSET:EPOCH (the last position seen of a topic the server subscribes you to)")
        };
        let mut parts = value.rsplitn(3, ':');
        let (Some(epoch), Some(offset), Some(topic)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(bad());
        };
        let offset = offset.parse().map_err(|_| bad())?;
        valid_topic(topic).map_err(|e| format!("recover={value:?}: {e}"))?;
        if positions.len() >= 64 {
            return Err("at most 64 recover= positions".to_string());
        }
        positions.push((
            topic.to_string(),
            StreamPosition {
                offset,
                epoch: epoch.into(),
            },
        ));
    }
    Ok(positions)
}

impl PubSub {
    /// A connection with these limits and no namespaces configured (tests).
    #[cfg(test)]
    pub(crate) fn new(max_subscriptions: usize, recovery_max: usize, client: ClientId) -> Self {
        let settings = Settings {
            max_subscriptions,
            recovery_max,
            namespaces: Namespaces::default(),
        };
        Self::with_settings(Arc::new(settings), client)
    }

    /// A connection of a server with `settings`.
    pub(crate) fn with_settings(settings: Arc<Settings>, client: ClientId) -> Self {
        Self {
            subs: Vec::new(),
            settings,
            client,
            recover: None,
            who: None,
        }
    }

    /// The same, with `namespaces` (tests).
    #[cfg(test)]
    pub(crate) fn namespaces(mut self, namespaces: Namespaces) -> Self {
        Arc::make_mut(&mut self.settings).namespaces = namespaces;
        self
    }

    /// The rules of `topic`'s namespace (`None`: unknown).
    fn rules(&self, topic: &str) -> Option<&NamespaceRules> {
        self.settings.namespaces.rules_for(topic)
    }

    /// Whether a `/ws` subscription to `topic` makes the connection present in it: its
    /// namespace has presence on, and it is not a chat room's topic, which a `/ws` client
    /// only watches (the room's members are its chat connections).
    fn adds_presence(&self, topic: &str) -> bool {
        !topic.starts_with("chat:") && self.rules(topic).is_some_and(|r| r.presence)
    }

    /// Tells `topic`'s subscribers that this connection joined or left it, when its
    /// namespace has `join_leave` and the connection is present in it. `identity`: who it
    /// is now (`None` when the connection is gone: who it was at its last join).
    fn announce(&mut self, hub: &Hub, topic: &str, kind: Kind, identity: Option<&Identity>) {
        let on = self.rules(topic).is_some_and(|r| r.join_leave);
        if !on || !self.adds_presence(topic) {
            return;
        }
        if let Some(identity) = identity {
            self.who = Some(Box::new(join_leave::who(self.client.get(), identity)));
        }
        if let Some(who) = &self.who {
            join_leave::send(hub.broadcast(topic, join_leave::event(kind, topic, who)));
        }
    }

    /// Where the server-made subscriptions recover from (see [`recover_query`]).
    pub(crate) fn recover(mut self, positions: Vec<(String, StreamPosition)>) -> Self {
        self.recover = (!positions.is_empty()).then(|| Box::new(positions));
        self
    }

    /// Whether this connection is subscribed to `topic`.
    fn subscribed_to(&self, topic: &str) -> bool {
        self.subs.iter().any(|s| s.topic() == topic)
    }

    /// This connection's presence entry: its user, name and info (empty: anonymous, no
    /// name, none); `info` in place of the token's (a subscription token's).
    fn entry(&mut self, identity: &Identity, info: Option<&String>) -> PresenceEntry {
        let text = |s: Option<&String>| s.map_or_else(presence::empty, |s| Arc::from(s.as_str()));
        PresenceEntry {
            client: Arc::clone(self.client.get()),
            user: text(identity.user.as_ref()),
            name: text(identity.name.as_ref()),
            info: text(info.or(identity.info.as_ref())),
        }
    }

    fn handle(&mut self, cx: &mut Ctx<'_, Waited>, req: &Request<'_>) -> Result<(), AppError> {
        let topic = req.topic.as_deref().unwrap_or_default();
        match &*req.kind {
            "subscribe" => {
                let from = req.recover.as_ref().map(Position::get);
                self.subscribe(cx, req.id, topic, from, req.token.as_deref(), false)
            }
            "refresh" => {
                let token = req.token.as_deref().ok_or_else(|| {
                    AppError::new(ErrorCode::InvalidToken, "a refresh needs \"token\"")
                })?;
                cx.refresh(token)?;
                ack(cx, req.id);
                Ok(())
            }
            "unsubscribe" => self.unsubscribe(cx, req.id, topic),
            "publish" => {
                publishable(topic)?;
                let subscribed = self.subscribed_to(topic);
                let namespaces = &self.settings.namespaces;
                namespaces.check_publish(cx.identity(), topic, subscribed)?;
                let data = req.data.ok_or_else(|| {
                    AppError::new(ErrorCode::InvalidJson, "a publish needs \"data\"")
                })?;
                match cx.hub.publish(topic, json_body(data)).now() {
                    Ok(result) => published(cx, req.id, result),
                    Err(op) => {
                        let id = owned(req.id);
                        cx.wait(async move {
                            Waited::Published {
                                id,
                                result: op.await,
                            }
                        });
                    }
                }
                Ok(())
            }
            "history" => self.history(cx, req, topic),
            "presence" => self.presence(cx, req.id, topic),
            "presence_stats" => self.presence_stats(cx, req.id, topic),
            other => Err(AppError::new(
                ErrorCode::UnknownType,
                format!(
                    "unknown message type {other:?}; use subscribe, unsubscribe, publish, history, presence, presence_stats or refresh"
                ),
            )),
        }
    }

    /// Subscribes: the hub's subscription (and the history read of a recovery) and this
    /// connection's presence, together; then [`subscribed`](Self::subscribed).
    fn subscribe(
        &mut self,
        cx: &mut Ctx<'_, Waited>,
        id: Option<&RawValue>,
        topic: &str,
        from: Option<StreamPosition>,
        token: Option<&str>,
        server: bool,
    ) -> Result<(), AppError> {
        valid_topic(topic)?;
        if self.subs.iter().any(|s| s.topic() == topic) {
            ack(cx, id);
            return Ok(());
        }
        let grant = match token {
            Some(token) => Some(subscription_grant(cx, token, topic)?),
            None => None,
        };
        let namespaces = &self.settings.namespaces;
        if server {
            // The connection token named it: only its namespace must exist.
            namespaces.rules(topic)?;
        } else {
            namespaces.check_subscribe(cx.identity(), topic, grant.is_some())?;
        }
        if self.subs.len() >= self.settings.max_subscriptions {
            return Err(AppError::new(
                ErrorCode::TooManySubscriptions,
                format!(
                    "at most {} subscriptions per connection",
                    self.settings.max_subscriptions
                ),
            ));
        }
        let query = match &from {
            Some(from) => recovery::query(from, self.settings.recovery_max),
            None => HistoryQuery {
                since: None,
                limit: 0,
            },
        };
        let s = cx.hub.subscribe(topic, Arc::clone(cx.outbox), query);
        self.subs.push(s.subscription.clone());
        let added = if self.adds_presence(topic) {
            let info = grant.as_ref().and_then(|g| g.info.as_ref());
            let entry = self.entry(cx.identity(), info);
            cx.hub.presence_add(topic, entry)
        } else {
            Op::ready(Ok(()))
        };
        match presence::both(added, s.page).now() {
            Ok((added, page)) => {
                let to = To { id, server };
                self.subscribed(cx, to, &s.subscription, from.as_ref(), added, page);
            }
            Err(op) => {
                let (id, sub) = (owned(id), s.subscription);
                cx.wait(async move {
                    let (added, page) = op.await;
                    Waited::Subscribed {
                        id,
                        server,
                        sub,
                        from,
                        added,
                        page,
                    }
                });
            }
        }
        Ok(())
    }

    /// A subscription's history read is done: the ack (with the position and whether it
    /// recovered), then the replay, then what came meanwhile; from then on, live. A
    /// presence that could not be added is logged: the subscription stands without it.
    fn subscribed(
        &mut self,
        cx: &mut Ctx<'_, Waited>,
        to: To<'_>,
        sub: &Subscription,
        from: Option<&StreamPosition>,
        added: Result<(), EngineError>,
        page: Result<HistoryPage, EngineError>,
    ) {
        presence::log_failure("add", sub.topic(), &added);
        let page = match page {
            Ok(page) => page,
            Err(e) => {
                cx.hub.unsubscribe(sub);
                self.subs.retain(|s| s != sub);
                self.leave_presence(cx.hub, sub.topic());
                let e = unavailable(&e);
                return match (to.server, to.id) {
                    (true, _) => cx.reply(topic_error(sub.topic(), &e)),
                    (false, id) => cx.reply(error(id, &e)),
                };
            }
        };
        let mut decision = from.map(|f| recovery::decide(f, &page, self.settings.recovery_max));
        let mut replay = Vec::new();
        if let Some(d) = decision.as_mut().filter(|d| d.recovered) {
            replay = page.publications.iter().map(|p| cx.hub.render(p)).collect();
            if replay.iter().map(|f| f.len()).sum::<usize>() > HISTORY_BYTES {
                // Too much to send at once: like more than the cap.
                replay.clear();
                *d = recovery::Decision {
                    recovered: false,
                    capped: true,
                };
            }
        }
        if let Some(d) = decision {
            cx.count_recovery(d.recovered);
        }
        let frames = cx.hub.go_live(sub, &page.top, replay);
        if to.server {
            subscribed_event(cx, sub.topic(), &page.top, decision);
        } else if let Some(id) = to.id {
            subscribed_ack(cx, id, &page.top, decision);
        }
        for f in frames {
            cx.frame(f);
        }
        self.announce(cx.hub, sub.topic(), Kind::Join, Some(cx.identity()));
    }

    /// The removal of this connection's presence in `topic` (nothing for a chat room's
    /// topic, which it only watched).
    fn presence_removal(&mut self, hub: &Hub, topic: &str) -> Op<()> {
        if self.adds_presence(topic) {
            presence::removal(hub, topic, self.client.get())
        } else {
            Op::ready(())
        }
    }

    /// Removes this connection's presence in `topic` without waiting.
    fn leave_presence(&mut self, hub: &Hub, topic: &str) {
        presence::run_later(self.presence_removal(hub, topic));
    }

    /// Unsubscribes; acks once the presence is gone from the engine (so that a `presence`
    /// request after the ack does not list it), and before the client's next request.
    fn unsubscribe(
        &mut self,
        cx: &mut Ctx<'_, Waited>,
        id: Option<&RawValue>,
        topic: &str,
    ) -> Result<(), AppError> {
        let Some(i) = self.subs.iter().position(|s| s.topic() == topic) else {
            return Err(AppError::new(
                ErrorCode::NotSubscribed,
                format!("not subscribed to {topic:?}"),
            ));
        };
        let sub = self.subs.swap_remove(i);
        cx.hub.unsubscribe(&sub);
        self.announce(cx.hub, topic, Kind::Leave, Some(cx.identity()));
        match self.presence_removal(cx.hub, topic).now() {
            Ok(()) => ack(cx, id),
            Err(op) => {
                let id = owned(id);
                cx.wait(async move {
                    op.await;
                    Waited::Unsubscribed { id }
                });
            }
        }
        Ok(())
    }

    /// Presence requests are for subscribers of the topic (as Centrifugo's client-side
    /// presence): a topic's crowd is not for anyone to list.
    fn check_subscribed(&self, topic: &str) -> Result<(), AppError> {
        valid_topic(topic)?;
        let subscribed = self.subscribed_to(topic);
        self.settings.namespaces.check_presence(topic, subscribed)?;
        Ok(())
    }

    /// A `presence` request: who is present in `topic`, on every node.
    fn presence(
        &mut self,
        cx: &mut Ctx<'_, Waited>,
        id: Option<&RawValue>,
        topic: &str,
    ) -> Result<(), AppError> {
        self.check_subscribed(topic)?;
        let (owned_id, owned_topic) = (owned(id), topic.to_owned());
        cx.now_or_wait(
            cx.hub.presence(topic),
            |cx, result| presence_answer(cx, id, topic, result),
            move |result| Waited::Presence {
                id: owned_id,
                topic: owned_topic,
                result,
            },
        );
        Ok(())
    }

    /// A `presence_stats` request: how many are present in `topic`, on every node.
    fn presence_stats(
        &mut self,
        cx: &mut Ctx<'_, Waited>,
        id: Option<&RawValue>,
        topic: &str,
    ) -> Result<(), AppError> {
        self.check_subscribed(topic)?;
        let (owned_id, owned_topic) = (owned(id), topic.to_owned());
        cx.now_or_wait(
            cx.hub.presence_stats(topic),
            |cx, result| stats_answer(cx, id, topic, result),
            move |result| Waited::PresenceStats {
                id: owned_id,
                topic: owned_topic,
                result,
            },
        );
        Ok(())
    }

    /// A `history` request.
    fn history(
        &self,
        cx: &mut Ctx<'_, Waited>,
        req: &Request<'_>,
        topic: &str,
    ) -> Result<(), AppError> {
        valid_topic(topic)?;
        let subscribed = self.subscribed_to(topic);
        self.settings
            .namespaces
            .check_history(cx.identity(), topic, subscribed)?;
        let from = req.since.as_ref().map(Position::get);
        let limit = req.limit.unwrap_or(HISTORY_LIMIT).min(HISTORY_LIMIT);
        let query = HistoryQuery {
            since: from.as_ref().map(|f| f.offset),
            limit,
        };
        match cx.hub.history(topic, query).now() {
            Ok(page) => history(cx, req.id, topic, from.as_ref(), limit, page),
            Err(op) => {
                let (id, topic) = (owned(req.id), topic.to_owned());
                cx.wait(async move {
                    Waited::History {
                        id,
                        topic,
                        from,
                        limit,
                        page: op.await,
                    }
                });
            }
        }
        Ok(())
    }

    /// A binary publish: `[N][topic][payload]`, delivered with its position.
    fn publish_binary(&self, cx: &mut Ctx<'_, Waited>, b: &Bytes) -> Result<(), AppError> {
        let bad = || {
            AppError::new(
                ErrorCode::InvalidBinary,
                "binary messages are: 1 byte N, N bytes of UTF-8 topic, payload",
            )
        };
        let (topic, payload) = binary_topic(b).ok_or_else(bad)?;
        publishable(topic)?;
        let subscribed = self.subscribed_to(topic);
        self.settings
            .namespaces
            .check_publish(cx.identity(), topic, subscribed)?;
        let body = binary_body(topic, b.slice_ref(payload)).ok_or_else(bad)?;
        match cx.hub.publish(topic, body).now() {
            Ok(Err(e)) => Err(unavailable(&e)),
            Ok(Ok(_)) => Ok(()),
            Err(op) => {
                cx.wait(async move {
                    Waited::Published {
                        id: None,
                        result: op.await,
                    }
                });
                Ok(())
            }
        }
    }
}

impl App for PubSub {
    type Waited = Waited;

    /// Subscribes to the topics the token names (`channels`), recovering each from the
    /// position the client gave in the URL, if any; each is announced with a `subscribed`
    /// event (or an `error` event naming the topic).
    fn open(&mut self, cx: &mut Ctx<'_, Waited>) {
        let channels = cx.identity().channels.clone();
        let mut recover = self.recover.take().map(|b| *b).unwrap_or_default();
        for topic in &channels {
            let from = recover
                .iter()
                .position(|(t, _)| t == topic)
                .map(|i| recover.swap_remove(i).1);
            if let Err(e) = self.subscribe(cx, None, topic, from, None, true) {
                cx.reply(topic_error(topic, &e));
            }
        }
    }

    fn message(&mut self, cx: &mut Ctx<'_, Waited>, msg: Message) {
        let text = match msg {
            Message::Binary(b) => {
                if let Err(e) = self.publish_binary(cx, &b) {
                    cx.reply(error(None, &e));
                }
                return;
            }
            Message::Text(t) => t,
        };
        let req: Request<'_> = match serde_json::from_str(text.as_str()) {
            Ok(r) => r,
            Err(e) => {
                let e = AppError::new(
                    ErrorCode::InvalidJson,
                    format!(
                        "expected a JSON object like {{\"type\":\"subscribe\",\"topic\":\"news\"}}: {e}"
                    ),
                );
                return cx.reply(error(None, &e));
            }
        };
        if let Err(e) = self.handle(cx, &req) {
            cx.reply(error(req.id, &e));
        }
    }

    fn done(&mut self, cx: &mut Ctx<'_, Waited>, waited: Waited) {
        match waited {
            Waited::Subscribed {
                id,
                server,
                sub,
                from,
                added,
                page,
            } => {
                if self.subs.contains(&sub) {
                    let to = To {
                        id: id.as_deref(),
                        server,
                    };
                    self.subscribed(cx, to, &sub, from.as_ref(), added, page);
                } else {
                    // Given back before its history came: its presence goes too (even after
                    // a failed add, which an engine may still write later); the subscribe
                    // still gets its answer, and nothing is replayed.
                    self.leave_presence(cx.hub, sub.topic());
                    match page {
                        Ok(_) => ack(cx, id.as_deref()),
                        Err(e) => cx.reply(error(id.as_deref(), &unavailable(&e))),
                    }
                }
            }
            Waited::Unsubscribed { id } => ack(cx, id.as_deref()),
            Waited::Published { id, result } => published(cx, id.as_deref(), result),
            Waited::History {
                id,
                topic,
                from,
                limit,
                page,
            } => history(cx, id.as_deref(), &topic, from.as_ref(), limit, page),
            Waited::Presence { id, topic, result } => {
                presence_answer(cx, id.as_deref(), &topic, result);
            }
            Waited::PresenceStats { id, topic, result } => {
                stats_answer(cx, id.as_deref(), &topic, result);
            }
        }
    }

    fn close(&mut self, hub: &Hub) {
        for s in std::mem::take(&mut self.subs) {
            hub.unsubscribe(&s);
            self.announce(hub, s.topic(), Kind::Leave, None);
            self.leave_presence(hub, s.topic());
        }
    }
}

mod answer;
mod join_leave;
#[cfg(test)]
mod tests;
