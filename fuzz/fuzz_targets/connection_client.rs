//! Arbitrary bytes from a server, read in arbitrary pieces by a client-role `Connection`
//! (whose own frames are masked). Invariants: see `switchboard_fuzz::fuzz_connection`.
#![no_main]
use libfuzzer_sys::fuzz_target;
use switchboard_proto::Role;

fuzz_target!(|data: &[u8]| switchboard_fuzz::fuzz_connection(Role::Client, data));
