//! Between publishing and delivery: the [`Broker`] trait.
//!
//! [`Hub::publish`](crate::Hub::publish) hands every publication to the broker; the broker
//! brings it to every node's hub (this one included) by calling
//! [`Deliver::deliver`]. The default [`InMemoryBroker`] delivers at once, on this node
//! only. A broker for several nodes (Redis pub/sub, say) implements the same trait: it sends
//! the publication out, and calls `deliver` when a publication comes in, so nothing that
//! calls the hub changes. [`Broker::interest`] tells it which topics this node has
//! subscribers for, so it subscribes upstream only to those.

use std::sync::{Arc, OnceLock, Weak};

use switchboard_proto::frame::SharedFrame;

/// One message published to a topic, as it travels between nodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publication {
    /// The topic.
    pub topic: Arc<str>,
    /// The complete server frame, encoded once
    /// ([`switchboard_proto::frame::encode_shared`]).
    pub frame: SharedFrame,
}

/// The receiving side of a broker: a hub delivering to its local subscribers.
pub trait Deliver: Send + Sync {
    /// Hands the publication to every local subscriber of its topic; returns how many.
    fn deliver(&self, publication: &Publication) -> usize;
}

/// Why a publication could not be handed on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BrokerError {
    /// The broker is not connected to its upstream (and said why).
    #[error("broker unavailable: {0}")]
    Unavailable(String),
    /// The broker's outgoing queue is full.
    #[error("broker queue full")]
    Full,
}

/// Carries publications to every node.
pub trait Broker: Send + Sync + std::fmt::Debug {
    /// Called once by [`Hub::new`](crate::Hub::new) with the local delivery side.
    fn attach(&self, local: Weak<dyn Deliver>);

    /// Sends a publication to every node. Returns the number of subscribers it reached on
    /// this node when the broker delivers synchronously, `None` when that is not known yet.
    fn publish(&self, publication: Publication) -> Result<Option<usize>, BrokerError>;

    /// This node gained its first subscriber to `topic` (`true`) or lost its last (`false`).
    fn interest(&self, topic: &str, subscribed: bool);
}

/// Delivers publications on this node only, synchronously: publish returns after every
/// local subscriber's outbox has the frame.
#[derive(Debug, Default)]
pub struct InMemoryBroker {
    local: OnceLock<Weak<dyn Deliver>>,
}

impl InMemoryBroker {
    /// A broker for one node.
    pub fn new() -> Self {
        Self::default()
    }
}

impl Broker for InMemoryBroker {
    fn attach(&self, local: Weak<dyn Deliver>) {
        let _ = self.local.set(local);
    }

    fn publish(&self, publication: Publication) -> Result<Option<usize>, BrokerError> {
        let local = self
            .local
            .get()
            .and_then(Weak::upgrade)
            .ok_or_else(|| BrokerError::Unavailable("no hub attached".into()))?;
        Ok(Some(local.deliver(&publication)))
    }

    fn interest(&self, _topic: &str, _subscribed: bool) {}
}
