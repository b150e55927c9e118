//! # switchboard-hub
//!
//! Topics and fan-out for Switchboard, independent of any socket or runtime:
//!
//! - [`Hub`]: topics (a chat room is a topic) with concurrent subscribe, unsubscribe and
//!   publish, presence ([`Member`]) and a short history per topic.
//! - [`Outbox`]: each subscriber's bounded queue. A publish encodes the WebSocket frame once
//!   and pushes the same [`SharedFrame`](switchboard_proto::frame::SharedFrame) into every
//!   outbox; the connection's task writes it when its socket has room. Past the bounds,
//!   [`SlowConsumerPolicy`] cuts the subscriber off or drops its oldest frames: one slow
//!   client never holds up the others or grows memory without bound.
//! - [`Broker`]: what carries a publication to every node's hub. [`InMemoryBroker`] (the
//!   default) delivers on this node; a broker for several nodes implements the same trait,
//!   so the hub's callers do not change.
//! - [`stream::TopicStream`]: one topic's stream positions (offset and epoch), its bounded
//!   history, and the all-or-nothing recovery decision for a client that reconnects.
//!
//! ```
//! use std::sync::Arc;
//! use switchboard_hub::{Hub, HubConfig, Member, Outbox, OutboxLimits};
//! use switchboard_proto::Message;
//!
//! let hub = Hub::new(HubConfig::default());
//! let ada = Arc::new(Outbox::new(OutboxLimits::default()));
//! let bob = Arc::new(Outbox::new(OutboxLimits::default()));
//! let member = |id: &str, name: &str| Some(Member { id: id.into(), name: name.into() });
//! hub.subscribe("chat:lobby", Arc::clone(&ada), member("u1", "Ada"));
//! let joined = hub.subscribe("chat:lobby", Arc::clone(&bob), member("u2", "Bob"));
//! assert_eq!(joined.members.len(), 2);
//!
//! let published = hub
//!     .publish_with("chat:lobby", |at| Message::text(format!("message {}", at.offset)))
//!     .unwrap();
//! assert_eq!(published.position.offset, 1);
//! let (mut a, mut b) = (Vec::new(), Vec::new());
//! ada.drain(usize::MAX, |f| a.push(f));
//! bob.drain(usize::MAX, |f| b.push(f));
//! // One encoding, shared: both outboxes hold the very same bytes.
//! assert_eq!(a[0].as_ptr(), b[0].as_ptr());
//! assert_eq!(&a[0][2..], b"message 1");
//! ```

#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod broker;
pub mod engine;
pub mod hub;
pub mod outbox;
pub mod stream;

pub use broker::{Broker, BrokerError, Deliver, InMemoryBroker, Publication};
pub use hub::{
    History, Hub, HubConfig, HubStats, Joined, Member, PublishError, Published, Subscription,
};
pub use outbox::{Outbox, OutboxLimits, Pushed, SlowConsumerPolicy};
pub use stream::{HistoryLimits, Recovery, StreamPosition, TopicStream};
