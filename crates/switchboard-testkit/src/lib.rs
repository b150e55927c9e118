//! Helpers shared by switchboard's tests: not part of any published crate.
//!
//! - [`alloc`]: counting global allocators for the no-allocation and idle-memory tests.
//! - [`python`]: the Python interpreter of the interop tests, and the check for `websockets`.
//! - [`server`]: starting a server and talking to it from the server's tests.
//! - [`redis`]: a real `redis-server` on a free port, for the Redis engine's tests.
//! - [`logs`]: capturing what the server logs.
//! - [`proxies`]: real HTTP `CONNECT` (tinyproxy) and SOCKS5 (microsocks) proxies.

#![allow(unreachable_pub, missing_docs)]

pub mod alloc;
pub mod logs;
pub mod proxies;
pub mod python;
pub mod redis;
pub mod server;
