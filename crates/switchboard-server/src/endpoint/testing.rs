//! Running an [`App`] without a socket: what it replies and what its outbox receives, in
//! the order the session would write them; an engine whose operations are futures.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};

use serde_json::Value;
use switchboard_hub::{
    Body, Deliver, Engine, EngineError, HistoryPage, HistoryQuery, Hub, MemoryEngine, Op, Outbox,
    OutboxLimits, PresenceEntry, PresenceStats, Published, StreamOptions,
};
use switchboard_proto::Message;

use crate::auth::Identity;
use crate::session::{Action, App, Ctx, Replies, Waits};

/// Something sent to the client: a reply of the app's, or a broadcast frame.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Sent {
    /// A text reply, as JSON.
    Reply(Value),
    /// A broadcast text frame, as JSON.
    Frame(Value),
    /// A broadcast binary frame's payload.
    BinaryFrame(Vec<u8>),
}

impl Sent {
    /// The JSON of a text reply or frame.
    pub(crate) fn json(&self) -> &Value {
        match self {
            Self::Reply(v) | Self::Frame(v) => v,
            Self::BinaryFrame(_) => &Value::Null,
        }
    }

    /// The `type` of a text reply or frame.
    pub(crate) fn kind(&self) -> &str {
        self.json()["type"].as_str().unwrap_or_default()
    }
}

/// One client's side of an app: its outbox and identity, on a hub shared with others.
pub(crate) struct Client {
    hub: Hub,
    outbox: Arc<Outbox>,
    identity: Option<Box<Identity>>,
    config: crate::ServerConfig,
    replies: Replies,
    metrics: crate::metrics::Metrics,
}

impl Client {
    pub(crate) fn new(hub: &Hub) -> Self {
        Self {
            hub: hub.clone(),
            outbox: Arc::new(Outbox::new(OutboxLimits::default())),
            identity: None,
            config: crate::ServerConfig::default(),
            replies: Replies::default(),
            metrics: crate::metrics::Metrics::default(),
        }
    }

    /// The same client, connected as `identity`.
    pub(crate) fn with_identity(mut self, identity: Identity) -> Self {
        self.identity = Some(Box::new(identity));
        self
    }

    /// `f` on `app` with this client's context, then every wait it started (run to its
    /// end here, in order, as the session would) and every task it started (a broadcast or
    /// a presence removal that was not ready at once); what it replied.
    fn call<A: App>(
        &mut self,
        app: &mut A,
        f: impl FnOnce(&mut A, &mut Ctx<'_, A::Waited>),
    ) -> Vec<Sent> {
        let rt = runtime();
        let _in = rt.enter();
        let mut waits = Waits::default();
        let mut cx = Ctx {
            hub: &self.hub,
            outbox: &self.outbox,
            identity: &mut self.identity,
            config: &self.config,
            replies: &mut self.replies,
            waits: &mut waits,
            metrics: &self.metrics,
        };
        f(app, &mut cx);
        loop {
            while cx.waits.len() > 0 {
                let waited = rt.block_on(std::future::poll_fn(|c| cx.waits.poll_next(c)));
                if let Some(waited) = waited {
                    app.done(&mut cx, waited);
                }
            }
            settle(&rt);
            if cx.waits.len() == 0 {
                break;
            }
        }
        self.replies.take().into_iter().map(decode_action).collect()
    }

    /// Opens `app`; what it replied.
    pub(crate) fn open<A: App>(&mut self, app: &mut A) -> Vec<Sent> {
        self.call(app, |app, cx| app.open(cx))
    }

    /// Sends `msg` to `app`; what it replied.
    pub(crate) fn send<A: App>(&mut self, app: &mut A, msg: Message) -> Vec<Sent> {
        self.call(app, |app, cx| app.message(cx, msg))
    }

    /// Sends the JSON `v` as text.
    pub(crate) fn send_json<A: App>(&mut self, app: &mut A, v: &Value) -> Vec<Sent> {
        self.send(app, Message::text(v.to_string()))
    }

    /// The frames waiting in the outbox, taken.
    pub(crate) fn delivered(&self) -> Vec<Sent> {
        let mut out = Vec::new();
        self.outbox
            .drain(usize::MAX, |f| out.push(decode_frame(&f)));
        out
    }

    /// The frames waiting in the outbox, taken: their `type`s.
    pub(crate) fn delivered_kinds(&self) -> Vec<String> {
        let d = self.delivered();
        d.iter().map(|s| s.kind().to_string()).collect()
    }
}

/// A runtime for the waits and tasks of one call (the apps' tests mostly run on the
/// in-memory engine, whose operations are ready at once; [`TestEngine`] makes them futures).
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("a runtime: {e}"))
}

/// Lets the tasks started on `rt` run until they are done (they wait for nothing outside).
fn settle(rt: &tokio::runtime::Runtime) {
    rt.block_on(async {
        let metrics = tokio::runtime::Handle::current().metrics();
        for _ in 0..1000 {
            if metrics.num_alive_tasks() == 0 {
                return;
            }
            tokio::task::yield_now().await;
        }
        panic!("tasks still running: {}", metrics.num_alive_tasks());
    });
}

fn decode_action(a: Action) -> Sent {
    match a {
        Action::Reply(Message::Text(t)) => Sent::Reply(json(t.as_str())),
        Action::Reply(m) => panic!("a binary reply: {m:?}"),
        Action::Frame(f) => decode_frame(&f),
    }
}

fn json(s: &str) -> Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("not JSON ({e}): {s}"))
}

/// A whole, unmasked server frame: its payload, by opcode.
fn decode_frame(f: &[u8]) -> Sent {
    assert!(f.len() >= 2 && f[0] & 0x80 != 0, "not a final frame: {f:?}");
    assert_eq!(f[1] & 0x80, 0, "a masked server frame");
    let (len, start) = match f[1] & 0x7f {
        126 => (usize::from(u16::from_be_bytes([f[2], f[3]])), 4),
        127 => (
            usize::try_from(u64::from_be_bytes(f[2..10].try_into().unwrap())).unwrap(),
            10,
        ),
        n => (usize::from(n), 2),
    };
    let payload = &f[start..];
    assert_eq!(payload.len(), len, "frame length");
    match f[0] & 0x0f {
        1 => Sent::Frame(json(std::str::from_utf8(payload).unwrap())),
        2 => Sent::BinaryFrame(payload.to_vec()),
        op => panic!("opcode {op} in a broadcast frame"),
    }
}

/// An engine for the apps' tests: the in-memory engine, with every operation turned into a
/// future that runs only when polled (as an engine that asks a server: nothing may assume
/// an operation is ready at once), and presence that fails on demand.
#[derive(Debug)]
pub(crate) struct TestEngine {
    inner: Arc<MemoryEngine>,
    deferred: bool,
    presence_fails: AtomicBool,
}

impl TestEngine {
    /// Presence operations fail (`unavailable`) from now on, or work again.
    pub(crate) fn fail_presence(&self, fail: bool) {
        self.presence_fails.store(fail, Ordering::Relaxed);
    }

    fn op<T: Unpin + Send + 'static>(
        &self,
        f: impl FnOnce(&MemoryEngine) -> Op<T> + Send + 'static,
    ) -> Op<T> {
        if !self.deferred {
            return f(&self.inner);
        }
        let inner = Arc::clone(&self.inner);
        Op::pending(async move { f(&inner).await })
    }

    fn presence_op<T: Unpin + Send + 'static>(
        &self,
        f: impl FnOnce(&MemoryEngine) -> Op<Result<T, EngineError>> + Send + 'static,
    ) -> Op<Result<T, EngineError>> {
        if self.presence_fails.load(Ordering::Relaxed) {
            return self.op(|_| Op::ready(Err(EngineError::Unavailable("test".into()))));
        }
        self.op(f)
    }
}

impl Engine for TestEngine {
    fn attach(&self, hub: Weak<dyn Deliver>) {
        self.inner.attach(hub);
    }
    fn publish(
        &self,
        topic: &str,
        body: Body,
        options: StreamOptions,
    ) -> Op<Result<Published, EngineError>> {
        let topic = topic.to_owned();
        self.op(move |e| e.publish(&topic, body, options))
    }
    fn broadcast(&self, topic: &str, body: Body) -> Op<Result<(), EngineError>> {
        let topic = topic.to_owned();
        self.op(move |e| e.broadcast(&topic, body))
    }
    fn history(&self, topic: &str, query: HistoryQuery) -> Op<Result<HistoryPage, EngineError>> {
        let topic = topic.to_owned();
        self.op(move |e| e.history(&topic, query))
    }
    fn subscribe(&self, topic: &str) -> Op<Result<(), EngineError>> {
        let topic = topic.to_owned();
        self.op(move |e| e.subscribe(&topic))
    }
    fn unsubscribe(&self, topic: &str) {
        self.inner.unsubscribe(topic);
    }
    fn presence_add(&self, topic: &str, entry: PresenceEntry) -> Op<Result<(), EngineError>> {
        let topic = topic.to_owned();
        self.presence_op(move |e| e.presence_add(&topic, entry))
    }
    fn presence_remove(&self, topic: &str, client: &str) -> Op<Result<(), EngineError>> {
        let (topic, client) = (topic.to_owned(), client.to_owned());
        self.presence_op(move |e| e.presence_remove(&topic, &client))
    }
    fn presence(&self, topic: &str) -> Op<Result<Vec<PresenceEntry>, EngineError>> {
        let topic = topic.to_owned();
        self.presence_op(move |e| e.presence(&topic))
    }
    fn presence_stats(&self, topic: &str) -> Op<Result<PresenceStats, EngineError>> {
        let topic = topic.to_owned();
        self.presence_op(move |e| e.presence_stats(&topic))
    }
}

/// A hub on a [`TestEngine`] (`deferred`: every operation a future), and the engine.
pub(crate) fn test_hub(deferred: bool) -> (Hub, Arc<TestEngine>) {
    let engine = Arc::new(TestEngine {
        inner: Arc::new(MemoryEngine::new()),
        deferred,
        presence_fails: AtomicBool::new(false),
    });
    let hub = crate::render::hub_on(
        Arc::clone(&engine) as Arc<dyn Engine>,
        StreamOptions::default(),
    );
    (hub, engine)
}

/// Runs `f` (an app's close or shutdown) where it can start tasks, then lets what it
/// started run to its end: what the server's runtime does with a presence removal that is
/// not ready at once.
pub(crate) fn with_runtime(f: impl FnOnce()) {
    let rt = runtime();
    {
        let _in = rt.enter();
        f();
    }
    settle(&rt);
}

/// Waits for an engine operation (ready or not).
pub(crate) fn wait<T: Unpin>(op: Op<T>) -> T {
    runtime().block_on(op)
}

/// The client ids present in `topic`, sorted, asked of the hub's engine.
pub(crate) fn present_in(hub: &Hub, topic: &str) -> Vec<String> {
    let entries = wait(hub.presence(topic)).unwrap_or_else(|e| panic!("presence: {e}"));
    let mut ids: Vec<_> = entries.iter().map(|e| e.client.to_string()).collect();
    ids.sort();
    ids
}
