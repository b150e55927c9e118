//! Helpers shared by switchboard's tests: not part of any published crate.
//!
//! - [`alloc`]: counting global allocators for the no-allocation and idle-memory tests.
//! - [`server`]: starting a server and talking to it from the server's tests.

#![allow(unreachable_pub, missing_docs)]

pub mod alloc;
pub mod server;
