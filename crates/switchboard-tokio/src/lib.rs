//! # switchboard-tokio
//!
//! WebSocket connections on tokio, driving the sans-IO [`switchboard_proto`] core.
//!
//! - [`WebSocket<S>`] over any [`Transport`]: TCP, TLS, Unix sockets, hyper upgrades,
//!   in-memory duplex pipes, any other `AsyncRead + AsyncWrite` stream wrapped in [`Plain`],
//!   and io_uring's streams (feature `io-uring`), which read and send without copying.
//!   Message API ([`WebSocket::recv`], [`WebSocket::send`], [`WebSocket::close`]), batched
//!   writes ([`WebSocket::feed`] then one flush), and [`WebSocket::split`] into a reader and
//!   a writer for two tasks.
//! - Client: [`connect`] / [`ClientBuilder`] for `ws://` and `wss://` (rustls; bundled roots
//!   or a custom CA via [`tls::client_config`]), through HTTP `CONNECT` and SOCKS5 proxies
//!   ([`proxy`]: set by the program or read from `HTTPS_PROXY`, `ALL_PROXY`, `NO_PROXY`, …),
//!   over HTTP/1.1 or HTTP/2 (RFC 8441, [`h2`]: [`ClientBuilder::http2`], or several
//!   WebSockets on one connection with [`h2::H2Client`]).
//! - Server: [`accept`] / [`accept_with`] on a raw stream, with a callback that sees the path
//!   and headers and accepts or rejects with a status; [`upgrade`] for hyper 1.x (feature
//!   `hyper`); TLS from PEM files with [`tls::acceptor_from_pem`].
//!
//! Idle connections hold no buffers: read and write buffers come from a per-thread pool while
//! bytes are in flight and go back when they are empty.
//!
//! ## Example: an echo server and a client
//!
//! ```
//! use switchboard_tokio::{accept, connect, Config, Message};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let addr = listener.local_addr()?;
//! tokio::spawn(async move {
//!     let (tcp, _) = listener.accept().await?;
//!     let mut ws = accept(tcp, Config::default()).await?;
//!     while let Some(msg) = ws.recv().await? {
//!         ws.feed(&msg)?;
//!     }
//!     Ok::<_, switchboard_tokio::Error>(())
//! });
//!
//! let (mut ws, _response) = connect(&format!("ws://{addr}/")).await?;
//! ws.send(&Message::text("hello")).await?;
//! assert_eq!(ws.recv().await?, Some(Message::text("hello")));
//! ws.close(switchboard_proto::CloseCode::NORMAL, "done").await?;
//! # Ok(()) }
//! ```
//!
//! ## Optional features
//!
//! - `client` (default): [`connect`], [`ClientBuilder`], [`proxy`].
//! - `server` (default): [`accept`], [`accept_with`].
//! - `rustls` (default): `wss://` and TLS servers.
//! - `http2` (part of `client`): [`h2`], WebSocket over HTTP/2 (RFC 8441) with the `h2`
//!   crate.
//! - `hyper`: [`upgrade`], WebSocket upgrades on hyper 1.x.
//! - `http2-server`: `h2::H2Io`, a WebSocket on the stream of an HTTP/2 extended CONNECT
//!   that hyper's server accepted.
//! - `io-uring` (Linux): `uring`, TCP streams driven by io_uring (the switchboard-uring
//!   crate), a [`Transport`] that reads by taking the kernel's receive buffers and sends
//!   frames queued by reference without copying them.

#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]
// No unsafe code in any feature set: io_uring's is in the switchboard-uring crate.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

#[cfg(feature = "client")]
pub mod client;
mod error;
#[cfg(feature = "http2")]
pub mod h2;
#[cfg(feature = "client")]
mod maybe_tls;
mod pool;
mod prefixed;
#[cfg(feature = "client")]
pub mod proxy;
#[cfg(feature = "server")]
pub mod server;
#[cfg(feature = "server")]
mod socket;
mod split;
mod stream;
#[cfg(feature = "rustls")]
pub mod tls;
mod transport;
#[cfg(feature = "hyper")]
pub mod upgrade;
/// TCP streams driven by io_uring (feature `io-uring`, Linux): the
/// [switchboard-uring](switchboard_uring) crate. A `WebSocket<UringStream>` reads by taking
/// the ring's receive buffers and sends queued frames by reference (see [`Transport`]).
#[cfg(all(feature = "io-uring", target_os = "linux"))]
pub use switchboard_uring as uring;

#[cfg(feature = "client")]
pub use client::{client_handshake, connect, ClientBuilder};
pub use error::Error;
#[cfg(feature = "client")]
pub use h2::Http2;
#[cfg(feature = "client")]
pub use maybe_tls::MaybeTlsStream;
pub use prefixed::Prefixed;
#[cfg(feature = "server")]
pub use server::{
    accept, accept_with, leftover, read_first, read_request, refuse, upgrade_request, Decision,
    First,
};
#[cfg(feature = "server")]
pub use socket::SocketControl;
pub use split::{WsReader, WsWriter};
pub use stream::WebSocket;
pub use switchboard_proto::handshake::client::Response;
pub use switchboard_proto::handshake::server::Request;
pub use switchboard_proto::{
    self as proto, CloseCode, CloseFrame, Config, Event, Message, Role, Side, State, Text,
};
pub use transport::{Plain, ReadSize, Transport};
