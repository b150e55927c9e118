//! WebSocket over HTTP/2 (RFC 8441) with the `h2` crate (feature `http2`, part of `client`).
//!
//! Over HTTP/2 a WebSocket is one stream of a connection, opened by a `CONNECT` request with
//! `:protocol websocket` once the server's SETTINGS enabled it
//! (`SETTINGS_ENABLE_CONNECT_PROTOCOL`), answered `200`. Several WebSockets (and other
//! requests) share one TCP or TLS connection, each with its own flow control.
//!
//! - [`ClientBuilder::http2`](crate::ClientBuilder::http2) with [`Http2::Prefer`] or
//!   [`Http2::Force`]: [`connect`](crate::ClientBuilder::connect) does it all (ALPN, the
//!   connection, the fallback to HTTP/1.1).
//! - [`H2Client`]: an HTTP/2 connection of its own, for several WebSockets on it.
//! - [`websocket_on`] / [`extended_connect`]: a WebSocket on an `h2` connection the caller
//!   made.
//! - [`H2Stream`]: the stream as a [`Transport`](crate::Transport), so `WebSocket<H2Stream>`
//!   behaves as over TCP.
//! - Server side (feature `http2-server`): `H2Io` and `extended_upgrade`, a WebSocket on the
//!   stream of an extended CONNECT that hyper's HTTP/2 server accepted.
//!
//! # Cost compared with HTTP/1.1
//!
//! A WebSocket over HTTP/1.1 writes its frames to the socket itself (no copy in user space
//! over io_uring, one vectored write otherwise). Over HTTP/2 each write goes to the
//! connection's driver task, which frames it as DATA (9 bytes a frame, at most 16 KiB each)
//! and copies small ones into its write buffer; reads copy each DATA frame once (as a socket
//! read does). On the server, hyper's upgraded stream adds an allocation and a copy per
//! write and a task per stream. Use HTTP/2 for what it brings (one connection for many
//! WebSockets and requests, browsers that pool), HTTP/1.1 for the lowest cost per message.

mod client;
#[cfg(feature = "client")]
mod connect;
mod error;
mod stream;
#[cfg(feature = "http2-server")]
mod upgraded;

pub use client::{extended_connect, websocket_on, H2Client, Http2Settings};
#[cfg(feature = "client")]
pub(crate) use connect::h2_websocket;
#[cfg(feature = "client")]
pub use connect::{Http2, Opened};
pub use error::Http2Error;
pub use stream::H2Stream;
#[cfg(feature = "http2-server")]
pub use upgraded::{
    accept_response, extended_request, extended_upgrade, ExtendedUpgradeFut, H2Io, H2WebSocket,
};
