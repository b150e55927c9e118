//! The loop of a hub-connected WebSocket (`/chat`, `/ws`): client messages go to the
//! endpoint's [`App`], which answers with [`Replies`] that the loop writes in order;
//! broadcast frames come out of the connection's [`Outbox`] and go to the socket when it
//! has room.

use std::collections::VecDeque;
use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::SystemTime;

use switchboard_hub::{Hub, Op, Outbox};
use switchboard_proto::SharedFrame;
use switchboard_proto::{Event, Message};
use switchboard_tokio::{SocketControl, Transport, WebSocket};
use tokio::io::{AsyncRead, AsyncWrite};
use tracing::{Instrument, Span};

use crate::auth::Identity;
use crate::close::{check_registration, finish, Stop};
use crate::config::ServerConfig;
use crate::error::{AppError, ErrorCode};
use crate::metrics::Metrics;
use crate::ratelimit::{MessageLimiter, Verdict};
use crate::registry::Registration;
use crate::Shared;

/// Broadcast frames move from the outbox to the socket's queue while less than this is
/// queued there; past it they wait in the outbox, where the slow-consumer bound applies.
const SOCKET_QUEUE_HIGH_WATER: usize = 64 * 1024;

/// What an endpoint's protocol does with a connection. It never touches the socket: it
/// works on the hub and its outbox and says what to send back in [`Ctx::replies`]. What
/// takes a while (an engine that asks Redis) it hands to [`Ctx::wait`]; the session stops
/// reading the client's messages until it is done and hands the result to [`App::done`].
pub(crate) trait App {
    /// What a wait ends with.
    type Waited: Send + 'static;
    /// Right after the handshake: say hello, subscribe.
    fn open(&mut self, cx: &mut Ctx<'_, Self::Waited>);
    /// A message from the client.
    fn message(&mut self, cx: &mut Ctx<'_, Self::Waited>, msg: Message);
    /// A wait ended (waits end in the order they were started).
    fn done(&mut self, cx: &mut Ctx<'_, Self::Waited>, waited: Self::Waited);
    /// The connection is over: unsubscribe, say goodbye to the others.
    fn close(&mut self, hub: &Hub);
    /// The connection is over because the server is shutting down: every other connection
    /// gets its own 1001, so a goodbye would only claim that someone left. Unsubscribe.
    fn shutdown(&mut self, hub: &Hub) {
        self.close(hub);
    }
}

/// What an app waits for: a future whose result goes to [`App::done`].
pub(crate) type Wait<W> = Pin<Box<dyn Future<Output = W> + Send>>;

/// At most this many waits run at once per connection (publishes through Redis, say); past
/// it, the client's next messages wait in the socket.
pub(crate) const MAX_WAITS: usize = 64;

/// What an app waits for: they run at the same time (a client's publishes go to Redis one
/// after the other without waiting for each answer, in order on one connection) and end,
/// for the app, in the order they were started.
pub(crate) struct Waits<W> {
    queue: VecDeque<Slot<W>>,
}

enum Slot<W> {
    Running(Wait<W>),
    Done(W),
}

impl<W> Default for Waits<W> {
    fn default() -> Self {
        Self {
            queue: VecDeque::new(),
        }
    }
}

impl<W> Waits<W> {
    fn push(&mut self, wait: Wait<W>) {
        self.queue.push_back(Slot::Running(wait));
    }

    pub(crate) fn len(&self) -> usize {
        self.queue.len()
    }

    /// Polls every running wait (each is polled first in the order started, so their
    /// requests go out in that order); the oldest one's result once it is done.
    pub(crate) fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<W>> {
        for slot in &mut self.queue {
            if let Slot::Running(wait) = slot {
                if let Poll::Ready(w) = wait.as_mut().poll(cx) {
                    *slot = Slot::Done(w);
                }
            }
        }
        match self.queue.front() {
            None => Poll::Ready(None),
            Some(Slot::Running(_)) => Poll::Pending,
            Some(Slot::Done(_)) => match self.queue.pop_front() {
                Some(Slot::Done(w)) => Poll::Ready(Some(w)),
                _ => Poll::Ready(None),
            },
        }
    }
}

/// What an [`App`] works with.
pub(crate) struct Ctx<'a, W> {
    /// Topics: subscribe, publish.
    pub(crate) hub: &'a Hub,
    /// This connection's outbox, which its subscriptions deliver to.
    pub(crate) outbox: &'a Arc<Outbox>,
    /// Who is connected (`None`: anonymous); see [`Ctx::identity`] and [`Ctx::refresh`].
    pub(crate) identity: &'a mut Option<Box<Identity>>,
    /// The server's settings: its authenticator, namespaces and limits.
    pub(crate) config: &'a ServerConfig,
    /// What to send back, in order.
    pub(crate) replies: &'a mut Replies,
    /// What the app waits for, oldest first.
    pub(crate) waits: &'a mut Waits<W>,
    /// The server's counters.
    pub(crate) metrics: &'a Metrics,
}

impl<W> Ctx<'_, W> {
    /// Counts a subscription with a position: recovered or not.
    pub(crate) fn count_recovery(&self, recovered: bool) {
        if recovered {
            self.metrics.recovered.add(1);
        } else {
            self.metrics.not_recovered.add(1);
        }
    }
}

impl<W> Ctx<'_, W> {
    /// Who is connected.
    pub(crate) fn identity(&self) -> &Identity {
        self.identity.as_deref().unwrap_or(&ANONYMOUS)
    }

    /// The client sent a new token (`refresh`): the authenticator checks it names the same
    /// user, and the connection's identity (and expiry) become the new token's.
    pub(crate) fn refresh(&mut self, token: &str) -> Result<(), AppError> {
        let Some(auth) = &self.config.websocket_authenticator else {
            return Err(AppError::new(
                ErrorCode::InvalidToken,
                "this server does not use tokens: there is nothing to refresh",
            ));
        };
        match auth.refresh(token, self.identity()) {
            Ok(identity) => {
                self.metrics.token_refreshes.add(1);
                *self.identity = Some(Box::new(identity));
                Ok(())
            }
            Err(e) => Err(AppError::new(
                ErrorCode::InvalidToken,
                format!("the token is not accepted: {e}"),
            )),
        }
    }

    /// Sends `msg` to this client only (after what was queued before it).
    pub(crate) fn reply(&mut self, msg: Message) {
        self.replies.push(Action::Reply(msg));
    }

    /// Sends a broadcast frame to this client only, in order with the replies (a recovery's
    /// replay).
    pub(crate) fn frame(&mut self, frame: SharedFrame) {
        self.replies.push(Action::Frame(frame));
    }

    /// Puts the frames waiting in the outbox before whatever is replied next (a chat room
    /// switch: the old room's frames before the new room's welcome). Frames delivered
    /// later stay in the outbox and go out after the replies.
    pub(crate) fn outbox_first(&mut self) {
        let Self {
            outbox, replies, ..
        } = self;
        outbox.drain(usize::MAX, |frame| replies.push(Action::Frame(frame)));
    }

    /// Hands the result of `op` to `now` at once when it is ready; otherwise waits for it
    /// and hands `later(result)` to [`App::done`].
    pub(crate) fn now_or_wait<T>(
        &mut self,
        op: Op<T>,
        now: impl FnOnce(&mut Self, T),
        later: impl FnOnce(T) -> W + Send + 'static,
    ) where
        T: Unpin + Send + 'static,
        W: 'static,
    {
        match op.now() {
            Ok(value) => now(self, value),
            Err(op) => self.wait(async move { later(op.await) }),
        }
    }

    /// Waits for `f` (after what the app already waits for), then hands its result to
    /// [`App::done`]. The client's next messages wait until then.
    pub(crate) fn wait(&mut self, f: impl Future<Output = W> + Send + 'static) {
        self.waits.push(Box::pin(f));
    }
}

/// One step of what a session writes.
#[derive(Debug)]
pub(crate) enum Action {
    /// A message to this client only.
    Reply(Message),
    /// A broadcast frame taken from the outbox ahead of the replies after it.
    Frame(SharedFrame),
}

/// The actions an [`App`] call produced, written in order by the session. The session
/// keeps one list and clears it after writing, so its capacity is reused.
#[derive(Debug, Default)]
pub(crate) struct Replies {
    actions: Vec<Action>,
}

impl Replies {
    fn push(&mut self, action: Action) {
        self.actions.push(action);
    }

    /// Takes what is queued, in order (tests; the session writes them instead).
    #[cfg(test)]
    pub(crate) fn take(&mut self) -> Vec<Action> {
        std::mem::take(&mut self.actions)
    }

    /// Queues every action on `ws`, in order, and empties the list.
    fn write<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        ws: &mut WebSocket<S>,
        metrics: &Metrics,
        reg: &mut Registration,
    ) -> Result<(), Stop> {
        if self.actions.is_empty() {
            return Ok(());
        }
        let (mut msgs, mut bytes) = (0u64, 0u64);
        let mut result = Ok(());
        for action in self.actions.drain(..) {
            let sent = match action {
                Action::Reply(msg) => {
                    bytes += msg.payload().len() as u64;
                    ws.feed(&msg)
                }
                Action::Frame(frame) => {
                    bytes += frame.len() as u64;
                    ws.feed_shared(frame)
                }
            };
            msgs += 1;
            if let Err(e) = sent {
                result = Err(Stop::Failed(e));
                break;
            }
        }
        metrics.messages_out.add(msgs);
        metrics.bytes_out.add(bytes);
        reg.sent();
        result
    }
}

/// The boxed future of a `/chat` or `/ws` session, in the connection's span: the session,
/// then the open-connections count let go.
pub(crate) fn start<S, A>(
    ws: WebSocket<S>,
    app: A,
    identity: Identity,
    reg: Registration,
    shared: Arc<Shared>,
) -> Pin<Box<dyn Future<Output = ()> + Send>>
where
    S: Transport + SocketControl + Send + 'static,
    A: App + Send + 'static,
{
    let link = Link {
        outbox: Arc::new(Outbox::new(shared.config.outbox)),
        identity: (identity != ANONYMOUS).then(|| Box::new(identity)),
        shared,
    };
    // `run` itself, not an async block around it: the block would keep its own copy of
    // everything it hands over (the socket, the app) in every idle session.
    Box::pin(run(ws, app, link, reg).instrument(Span::current()))
}

/// What a session is linked to besides its socket: its outbox, who is connected, and the
/// server (its hub, counters and settings). Every byte here is in every idle session.
pub(crate) struct Link {
    pub(crate) outbox: Arc<Outbox>,
    /// Who is connected; `None`: anonymous (boxed, so an anonymous session holds 8 bytes
    /// for it).
    pub(crate) identity: Option<Box<Identity>>,
    /// The server: its hub, counters and settings.
    pub(crate) shared: Arc<Shared>,
}

/// The identity of every anonymous session.
static ANONYMOUS: Identity = Identity::anonymous();

fn move_frames<S: AsyncRead + AsyncWrite + Unpin>(
    ws: &mut WebSocket<S>,
    outbox: &Outbox,
    metrics: &Metrics,
    reg: &mut Registration,
    budget: usize,
) -> Result<(), Stop> {
    let mut result = Ok(());
    let mut n = 0;
    let bytes = outbox.drain(budget, |frame| {
        if result.is_ok() {
            n += 1;
            result = ws.feed_shared(frame).map_err(Stop::Failed);
        }
    });
    if n > 0 {
        metrics.messages_out.add(n);
        metrics.bytes_out.add(bytes as u64);
        reg.sent();
    }
    result
}

/// Runs a session to its end, closing the connection the way its end calls for; then it no
/// longer counts as open.
pub(crate) async fn run<S, A>(mut ws: WebSocket<S>, app: A, link: Link, mut reg: Registration)
where
    S: Transport + SocketControl,
    A: App,
{
    let mut session = Session {
        app,
        link,
        replies: Replies::default(),
        waits: Waits::default(),
        expiry: None,
        limiter: MessageLimiter::default(),
    };
    session.open();
    let stop = match session.write(&mut ws, &mut reg) {
        Err(stop) => stop,
        Ok(()) => poll_fn(|cx| session.poll(&mut ws, &mut reg, cx)).await,
    };
    if session.waits.len() > 0 {
        // What the client sent before it went (its last publishes, pipelined) still
        // happens; the answers have nowhere to go. Each engine operation has its own
        // timeout; this bound is only a backstop. Boxed: idle sessions do not carry it.
        Box::pin(drain(&mut session.waits)).await;
    }
    let Session {
        mut app,
        link: Link { outbox, shared, .. },
        ..
    } = session;
    let (hub, metrics) = (&shared.hub, &shared.metrics);
    // No more deliveries; leave every topic (the others see the leave now).
    outbox.close();
    if matches!(stop, Stop::Shutdown) || reg.is_triggered() {
        app.shutdown(hub);
    } else {
        app.close(hub);
    }
    match stop {
        // Everything accepted before the shutdown (or before the gap) still goes out, before
        // the close.
        Stop::Shutdown | Stop::Recover => {
            let _ = move_frames(&mut ws, &outbox, metrics, &mut reg, usize::MAX);
        }
        // Given up on: what waits for it will never be sent; let it go now, not after
        // the closing handshake's timeout.
        Stop::SlowConsumer => {
            outbox.discard();
        }
        _ => {}
    }
    let timeout = ws.connection().config().close_timeout;
    // Boxed: the closing steps' timers and nested futures would otherwise be part of every
    // idle session's state.
    Box::pin(finish(ws, stop, reg, timeout)).await;
    metrics.connections_open.fetch_sub(1, Ordering::Relaxed);
}

/// How long a session that ended waits at most for its app's engine operations.
const DRAIN_WAITS: std::time::Duration = std::time::Duration::from_secs(10);

/// Runs every wait to its end (bounded by [`DRAIN_WAITS`]), dropping the results.
async fn drain<W>(waits: &mut Waits<W>) {
    let all = poll_fn(|cx| loop {
        match waits.poll_next(cx) {
            Poll::Ready(Some(_)) => continue,
            Poll::Ready(None) => return Poll::Ready(()),
            Poll::Pending => return Poll::Pending,
        }
    });
    if tokio::time::timeout(DRAIN_WAITS, all).await.is_err() {
        tracing::debug!("engine operations of a closed session did not end in time");
    }
}

/// An open session, besides its socket and registration: the app, what it is linked to,
/// the list its replies go through, what it waits for and its rate limits' buckets.
struct Session<A: App> {
    app: A,
    link: Link,
    replies: Replies,
    waits: Waits<A::Waited>,
    /// When the connection's token expires, and the timer for it (only for sessions whose
    /// identity expires).
    expiry: Option<Box<Expiry>>,
    limiter: MessageLimiter,
}

/// The timer of an identity that expires.
struct Expiry {
    at: SystemTime,
    timer: Pin<Box<tokio::time::Sleep>>,
}

impl Expiry {
    fn new(at: SystemTime) -> Self {
        let left = at
            .duration_since(SystemTime::now())
            .unwrap_or(std::time::Duration::ZERO);
        Self {
            at,
            timer: Box::pin(tokio::time::sleep(left)),
        }
    }
}

impl<A: App> Session<A> {
    /// Runs `f` on the app with its context; its replies wait in the list.
    fn with_app(&mut self, f: impl FnOnce(&mut A, &mut Ctx<'_, A::Waited>)) {
        let Self {
            app,
            link,
            replies,
            waits,
            expiry,
            ..
        } = self;
        f(
            app,
            &mut Ctx {
                hub: &link.shared.hub,
                outbox: &link.outbox,
                identity: &mut link.identity,
                config: &link.shared.config,
                replies,
                waits,
                metrics: &link.shared.metrics,
            },
        );
        // A refresh may have moved the expiry.
        let at = link.identity.as_ref().and_then(|i| i.expires);
        if expiry.as_ref().map(|e| e.at) != at {
            *expiry = at.map(|at| Box::new(Expiry::new(at)));
        }
    }

    /// `Ready` once the connection's token has expired.
    fn poll_expiry(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        match &mut self.expiry {
            Some(e) => e.timer.as_mut().poll(cx),
            None => Poll::Pending,
        }
    }

    /// Opens the app.
    fn open(&mut self) {
        self.with_app(|app, cx| app.open(cx));
    }

    /// Hands `msg` to the app.
    fn message(&mut self, msg: Message) {
        self.with_app(|app, cx| app.message(cx, msg));
    }

    /// Hands `msg` to the app unless it is over the connection's messages or bytes a
    /// second: then it is dropped, the first of a flood with a `rate_limited` error event
    /// in its place; `Err` when the client went on past its warning (closed with 1008).
    fn receive(&mut self, msg: Message, reg: &Registration) -> Result<(), Stop> {
        let rates = reg.message_rates();
        let limit = match self
            .limiter
            .check(rates, msg.payload().len(), || reg.clock())
        {
            Verdict::Pass => {
                self.message(msg);
                return Ok(());
            }
            Verdict::Warn(limit) => {
                self.replies.push(Action::Reply(rates.event(limit)));
                limit
            }
            Verdict::Drop(limit) => limit,
            Verdict::Close(limit) => {
                self.link.shared.metrics.rate_limited(limit);
                return Err(Stop::RateLimited);
            }
        };
        self.link.shared.metrics.rate_limited(limit);
        Ok(())
    }

    /// Queues the waiting replies on the socket, in order.
    fn write<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        ws: &mut WebSocket<S>,
        reg: &mut Registration,
    ) -> Result<(), Stop> {
        self.replies.write(ws, &self.link.shared.metrics, reg)
    }

    /// Hands the app the results of the waits that ended, in order; `Ready` when it had
    /// one (its replies wait in the list).
    fn poll_wait(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        match self.waits.poll_next(cx) {
            Poll::Ready(Some(waited)) => {
                self.with_app(|app, cx| app.done(cx, waited));
                Poll::Ready(())
            }
            _ => Poll::Pending,
        }
    }

    fn poll<S>(
        &mut self,
        ws: &mut WebSocket<S>,
        reg: &mut Registration,
        cx: &mut Context<'_>,
    ) -> Poll<Stop>
    where
        S: Transport,
    {
        if let Some(stop) = check_registration(ws, reg) {
            return Poll::Ready(stop);
        }
        if self.poll_expiry(cx).is_ready() {
            return Poll::Ready(Stop::TokenExpired);
        }
        loop {
            let (outbox, metrics) = (&self.link.outbox, &self.link.shared.metrics);
            if outbox.is_overflowed() {
                return Poll::Ready(Stop::SlowConsumer);
            }
            if outbox.is_lost() {
                return Poll::Ready(Stop::Recover);
            }
            // Registered before taking frames, so a push in between wakes us.
            outbox.register(cx.waker());
            let queued = ws.connection().queued_transmit();
            if queued < SOCKET_QUEUE_HIGH_WATER {
                if let Err(stop) =
                    move_frames(ws, outbox, metrics, reg, SOCKET_QUEUE_HIGH_WATER - queued)
                {
                    return Poll::Ready(stop);
                }
            }
            if self.waits.len() > 0 {
                if self.poll_wait(cx).is_ready() {
                    if let Err(stop) = self.write(ws, reg) {
                        return Poll::Ready(stop);
                    }
                    continue;
                }
                if self.waits.len() >= MAX_WAITS {
                    // The client's next messages wait (in the socket) until a wait ends;
                    // what is queued still goes out.
                    if let Poll::Ready(Err(e)) = ws.poll_flush(cx) {
                        return Poll::Ready(Stop::Failed(e));
                    }
                    return if reg.register(cx.waker()) {
                        Poll::Ready(Stop::Shutdown)
                    } else {
                        Poll::Pending
                    };
                }
            }
            match ws.poll_next_event(cx) {
                Poll::Ready(Ok(Some(Event::Message(m)))) => {
                    reg.received(true);
                    self.link.shared.metrics.messages_in.add(1);
                    self.link
                        .shared
                        .metrics
                        .bytes_in
                        .add(m.payload().len() as u64);
                    if let Err(stop) = self.receive(m, reg) {
                        return Poll::Ready(stop);
                    }
                    if let Err(stop) = self.write(ws, reg) {
                        return Poll::Ready(stop);
                    }
                }
                Poll::Ready(Ok(Some(Event::Close(_)))) => return Poll::Ready(Stop::PeerClosed),
                Poll::Ready(Ok(Some(_))) => reg.received(false),
                Poll::Ready(Ok(None)) => return Poll::Ready(Stop::Ended),
                Poll::Ready(Err(e)) => return Poll::Ready(Stop::Failed(e)),
                Poll::Pending => {
                    // More frames arrived while the socket has room: go round again.
                    if self.link.outbox.has_frames()
                        && ws.connection().queued_transmit() < SOCKET_QUEUE_HIGH_WATER
                    {
                        continue;
                    }
                    return if reg.register(cx.waker()) {
                        Poll::Ready(Stop::Shutdown)
                    } else {
                        Poll::Pending
                    };
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    /// A subscribed, idle connection is this future (boxed) plus its outbox and hub entry:
    /// keep it small (benchmarks/README.md has the whole connection's cost).
    #[tokio::test]
    async fn session_future_stays_small() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let _c = tokio::net::TcpStream::connect(l.local_addr().unwrap())
            .await
            .unwrap();
        let (a, _) = l.accept().await.unwrap();
        let ws = switchboard_tokio::WebSocket::from_raw(
            a,
            switchboard_proto::Role::Server,
            switchboard_proto::Config::default(),
        );
        let registry = std::sync::Arc::new(crate::registry::Registry::new(
            crate::config::Limits::default(),
            crate::config::HeartbeatConfig::default(),
            Default::default(),
        ));
        let reg = crate::registry::Registration::new(registry, [127, 0, 0, 1].into())
            .map_err(|_| ())
            .unwrap();
        let link = super::Link {
            outbox: std::sync::Arc::new(switchboard_hub::Outbox::new(Default::default())),
            identity: None,
            shared: std::sync::Arc::clone(&crate::Server::new(Default::default()).shared),
        };
        let client = crate::endpoint::presence::ClientId::new("node01".into(), 1);
        let app = crate::endpoint::pubsub::PubSub::new(8, 300, client);
        let f = super::run(ws, app, link, reg);
        let size = std::mem::size_of_val(&f);
        assert!(size <= 1024, "session future is {size} bytes");
    }
}
