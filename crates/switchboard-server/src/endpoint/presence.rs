//! Presence, as the apps use it: a connection's id in the cluster, the entries they add,
//! the engine's presence operations run without blocking (failures logged, never fatal),
//! members in one order, and two engine operations waited for together.
//!
//! Presence lives in the engine (in memory on one node, in Redis for several), so every
//! node sees the same; an operation may be ready at once or a future, and nothing here
//! assumes which.

use std::sync::{Arc, OnceLock};

use rand::Rng;
use switchboard_hub::{EngineError, Hub, Op, PresenceEntry};
use tracing::debug;

/// Letters and digits in a node's id.
const NODE_ID_LEN: usize = 6;

/// A random node id: 6 letters and digits, made once per [`Server`](crate::Server), so that
/// client ids (`{node}.{n}`) are unique across the nodes of a cluster and across restarts.
pub(crate) fn node_id() -> Arc<str> {
    const CHARS: &[u8; 62] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    let mut rng = rand::rng();
    let id: String = (0..NODE_ID_LEN)
        .map(|_| char::from(CHARS[rng.random_range(0..CHARS.len())]))
        .collect();
    id.into()
}

/// Connection `n`'s id in the cluster: `{node}.{n}`.
pub(crate) fn client_id(node: &str, n: u64) -> Arc<str> {
    format!("{node}.{n}").into()
}

/// The empty string, shared: the user of an anonymous connection, the name of a `/ws` one.
/// Their entries allocate nothing for it.
pub(crate) fn empty() -> Arc<str> {
    static EMPTY: OnceLock<Arc<str>> = OnceLock::new();
    Arc::clone(EMPTY.get_or_init(|| Arc::from("")))
}

/// A connection's id, made the first time it is needed (an idle `/ws` connection that never
/// subscribes holds no string for it). 24 bytes: it is part of every `/ws` session.
pub(crate) struct ClientId {
    /// The node's id until the client's is made, then the client's.
    id: Arc<str>,
    /// The connection's number, or [`MADE`](Self::MADE) once `id` is the client's.
    n: u64,
}

impl ClientId {
    /// `n` when `id` is the client's id (connection numbers never get there).
    const MADE: u64 = u64::MAX;

    /// Connection `n` of `node`.
    pub(crate) fn new(node: Arc<str>, n: u64) -> Self {
        Self { id: node, n }
    }

    /// `{node}.{n}`.
    pub(crate) fn get(&mut self) -> &Arc<str> {
        if self.n != Self::MADE {
            self.id = client_id(&self.id, self.n);
            self.n = Self::MADE;
        }
        &self.id
    }
}

/// Members in the order every answer lists them: by name, then by client id (names need
/// not be unique).
pub(crate) fn sort(entries: &mut [PresenceEntry]) {
    entries.sort_unstable_by(|a, b| a.name.cmp(&b.name).then_with(|| a.client.cmp(&b.client)));
}

/// Logs a failed presence operation: the connection goes on (it is missing from the list,
/// or its entry stays until it expires).
pub(crate) fn log_failure(what: &str, topic: &str, result: &Result<(), EngineError>) {
    if let Err(e) = result {
        debug!(topic, error = %e, "presence {what} failed");
    }
}

/// Removes `client` from `topic`'s presence; a failure is logged (the entry stays until
/// the engine lets it expire).
pub(crate) fn removal(hub: &Hub, topic: &str, client: &str) -> Op<()> {
    match hub.presence_remove(topic, client).now() {
        Ok(result) => {
            log_failure("remove", topic, &result);
            Op::ready(())
        }
        Err(pending) => {
            let topic = topic.to_owned();
            Op::pending(async move { log_failure("remove", &topic, &pending.await) })
        }
    }
}

/// Runs `op` without waiting for it: done if it is ready, else on a task of its own (the
/// connection is going away: nothing waits for it).
pub(crate) fn run_later(op: Op<()>) {
    if let Err(pending) = op.now() {
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(pending);
        }
    }
}

/// Who is present in `topic` once `added` (this connection's own entry) is done, so the
/// list has it (unless adding it failed: logged, and the list goes without it).
pub(crate) fn after_add(
    hub: &Hub,
    topic: &str,
    added: Op<Result<(), EngineError>>,
) -> Op<Result<Vec<PresenceEntry>, EngineError>> {
    match added.now() {
        Ok(result) => {
            log_failure("add", topic, &result);
            hub.presence(topic)
        }
        Err(pending) => {
            let (hub, topic) = (hub.clone(), topic.to_owned());
            Op::pending(async move {
                log_failure("add", &topic, &pending.await);
                hub.presence(&topic).await
            })
        }
    }
}

/// Both results at once when both are ready, else one future that runs the two together.
pub(crate) fn both<A, B>(a: Op<A>, b: Op<B>) -> Op<(A, B)>
where
    A: Unpin + Send + 'static,
    B: Unpin + Send + 'static,
{
    match (a.now(), b.now()) {
        (Ok(a), Ok(b)) => Op::ready((a, b)),
        (a, b) => {
            let a = a.map_or_else(|op| op, Op::ready);
            let b = b.map_or_else(|op| op, Op::ready);
            Op::pending(async move { tokio::join!(a, b) })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_and_client_ids() {
        let (a, b) = (node_id(), node_id());
        assert_eq!(a.len(), NODE_ID_LEN);
        assert!(a.bytes().all(|c| c.is_ascii_alphanumeric()), "{a}");
        assert_ne!(a, b, "random (a clash is 1 in 56 billion)");
        let mut id = ClientId::new(Arc::clone(&a), 42);
        assert_eq!(&**id.get(), format!("{a}.42"));
        assert!(Arc::ptr_eq(&id.get().clone(), id.get()), "made once");
        assert_eq!(&**id.get(), format!("{a}.42"));
        assert_eq!(std::mem::size_of::<ClientId>(), 24);
        assert!(Arc::ptr_eq(&empty(), &empty()));
    }

    #[test]
    fn members_sort_by_name_then_client() {
        let e = |client: &str, name: &str| PresenceEntry {
            client: client.into(),
            user: empty(),
            name: name.into(),
            info: "".into(),
        };
        let mut v = vec![e("n.3", "Bob"), e("n.2", "Ada"), e("n.1", "Bob")];
        sort(&mut v);
        let got: Vec<_> = v.iter().map(|e| (&*e.name, &*e.client)).collect();
        assert_eq!(got, [("Ada", "n.2"), ("Bob", "n.1"), ("Bob", "n.3")]);
    }

    #[test]
    fn both_is_ready_when_both_are_and_a_future_otherwise() {
        let ready = both(Op::ready(1), Op::ready("a"));
        assert_eq!(ready.now().ok(), Some((1, "a")));
        let later = both(Op::ready(1), Op::pending(async { "b" }));
        let Err(op) = later.now() else {
            panic!("ready although one half is a future");
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        assert_eq!(rt.block_on(op), (1, "b"));
    }
}
