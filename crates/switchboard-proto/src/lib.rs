//! # switchboard-proto
//!
//! A sans-IO implementation of the WebSocket protocol (RFC 6455): bytes in, frames and events
//! out. This crate opens no sockets, spawns no tasks and reads no clock; a transport (such as
//! `switchboard-tokio`) moves the bytes and keeps the timers.
//!
//! ```text
//!        network bytes                                 application
//!   ──────────────────────►  handle_read()
//!                           ┌──────────────┐  poll_event()  ──► Message / Ping / Pong / Close
//!                           │  Connection  │
//!                           └──────────────┘  ◄── send() / ping() / close()
//!   ◄──────────────────────  pending_transmit() + advance_transmit()
//! ```
//!
//! - [`handshake`]: the HTTP/1.1 upgrade and the HTTP/2 extended CONNECT (RFC 8441), both
//!   roles.
//! - [`Connection`]: framing, masking, fragmentation, UTF-8 validation, limits and the close
//!   handshake, with every protocol violation answered by the right close code
//!   ([`ProtocolError::close_code`]).
//! - [`frame`], [`mask`], [`utf8`], [`close`]: the building blocks, usable on their own.
//!
//! ## Example: a server connection answering a client's message
//!
//! ```
//! use switchboard_proto::{Config, Connection, Event, Message, Role};
//!
//! let mut server = Connection::new(Role::Server, Config::default());
//! // A masked text frame "Hi" as a client sends it.
//! server.handle_read(&[0x81, 0x82, 1, 2, 3, 4, b'H' ^ 1, b'i' ^ 2]);
//! while let Some(event) = server.poll_event()? {
//!     if let Event::Message(msg) = event {
//!         server.send(&msg)?; // echo
//!     }
//! }
//! assert_eq!(server.pending_transmit(), &[0x81, 0x02, b'H', b'i']);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]
#![deny(unsafe_code)] // one exception: the AVX2 call in `mask`
#![warn(missing_docs)]

pub mod close;
pub mod config;
pub mod connection;
mod deflate;
pub mod error;
pub mod extension;
pub mod frame;
pub mod handshake;
pub mod mask;
pub mod message;
pub mod utf8;

pub use close::{CloseCode, CloseFrame};
pub use config::{Config, Role};
pub use connection::{Connection, Event, FrameTrace, Side, State};
pub use error::{ProtocolError, SendError};
pub use frame::{OpCode, SharedFrame};
pub use message::{Message, Text};
