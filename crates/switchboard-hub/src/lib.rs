//! # switchboard-hub
//!
//! Topics and fan-out for Switchboard, independent of any socket or runtime:
//!
//! - [`Hub`]: a node's topics (a chat room is a topic) with concurrent subscribe,
//!   unsubscribe and publish. Each publication's frame is rendered once per node
//!   ([`Render`]) and the same [`SharedFrame`](switchboard_proto::frame::SharedFrame) goes
//!   into every subscriber's [`Outbox`], whose bounds ([`SlowConsumerPolicy`]) keep one slow
//!   client from holding up the others or growing memory.
//! - [`Engine`] (module [`engine`]): the seam to where positions, history and presence live
//!   and what brings publications to every node. [`MemoryEngine`] serves one node; the
//!   `switchboard-redis` crate serves several.
//! - [`stream::TopicStream`]: one topic's positions (offset and epoch) and bounded history
//!   in memory; [`recovery::decide`]: the all-or-nothing rule for a client that comes back.
//!
//! ```
//! use std::sync::Arc;
//! use switchboard_hub::{Body, HistoryQuery, Hub, HubConfig, Outbox, OutboxLimits, PresenceEntry};
//!
//! let hub = Hub::new(HubConfig::default());
//! let join = |name: &str| {
//!     let outbox = Arc::new(Outbox::new(OutboxLimits::default()));
//!     let s = hub.subscribe("chat:lobby", Arc::clone(&outbox), HistoryQuery { since: None, limit: 0 });
//!     let page = s.page.now().unwrap().unwrap(); // ready at once in memory
//!     hub.go_live(&s.subscription, &page.top, Vec::new());
//!     let me = PresenceEntry { client: name.into(), user: "".into(), name: name.into(), info: "".into() };
//!     hub.presence_add("chat:lobby", me).now().unwrap().unwrap();
//!     outbox
//! };
//! let ada = join("Ada");
//! let bob = join("Bob");
//! let members = hub.presence("chat:lobby").now().unwrap().unwrap();
//! assert_eq!(members.len(), 2);
//!
//! let published = hub.publish("chat:lobby", Body { kind: 0, data: "hi".into() }).now().unwrap().unwrap();
//! assert_eq!(published.position.offset, 1);
//! let (mut a, mut b) = (Vec::new(), Vec::new());
//! ada.drain(usize::MAX, |f| a.push(f));
//! bob.drain(usize::MAX, |f| b.push(f));
//! // One encoding, shared: both outboxes hold the very same bytes.
//! assert_eq!(a[0].as_ptr(), b[0].as_ptr());
//! assert_eq!(&a[0][2..], b"hi");
//! ```

#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod engine;
pub mod hub;
pub mod memory;
pub mod outbox;
mod presence;
pub mod recovery;
pub mod stream;
mod sync;

pub use engine::{
    Body, Deliver, Engine, EngineError, EngineMetric, HistoryPage, HistoryQuery, Op, PresenceEntry,
    PresenceStats, Publication, Published, StreamOptions,
};
pub use hub::{
    Hub, HubConfig, HubStats, PlainRender, Render, Subscribing, Subscription, TopicOptions,
};
pub use memory::MemoryEngine;
pub use outbox::{Outbox, OutboxLimits, Pushed, SlowConsumerPolicy};
pub use stream::{HistoryLimits, Recovery, StreamPosition, TopicStream};
