//! Arbitrary bytes from a client, read in arbitrary pieces by a server-role `Connection`.
//! Invariants: see `switchboard_fuzz::fuzz_connection`.
#![no_main]
use libfuzzer_sys::fuzz_target;
use switchboard_proto::Role;

fuzz_target!(|data: &[u8]| switchboard_fuzz::fuzz_connection(Role::Server, data));
