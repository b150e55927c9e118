//! permessage-deflate compression and decompression (RFC 7692 §7.2), on zlib-rs.
//!
//! - Outgoing: a message is compressed with a sync flush and the trailing `00 00 FF FF` is
//!   removed; messages under the threshold go out uncompressed.
//! - Incoming: the compressed frames of a message are collected (bounded by
//!   [`Config::max_message_size`](crate::Config::max_message_size)), then inflated with the
//!   trailer appended, into a buffer that is never allowed to grow past the same limit: a
//!   small frame that would inflate to a gigabyte costs at most the limit before it fails.
//! - Context takeover: where a direction keeps context, its zlib stream lives in the
//!   connection; where it does not, a per-thread stream is borrowed for one message and reset,
//!   so such connections hold no zlib memory between messages.
//! - Window 8: zlib refuses to compress raw deflate with an 8-bit window; a 9-bit window is
//!   used instead, which is safe because zlib never emits distances beyond `window - 262`
//!   (250 bytes for a 512-byte window), within what an 8-bit inflater accepts.

use std::cell::RefCell;

use zlib_rs::{Deflate, DeflateFlush, Inflate, InflateFlush, Status};

use crate::config::Role;
use crate::extension::{DeflateConfig, DeflateParams};

const TRAILER: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// Why inflating a message failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum InflateFailure {
    /// The data is not a valid deflate stream.
    Invalid,
    /// The inflated message would exceed the limit.
    TooLarge,
}

/// Key of a pooled per-thread compressor: window bits, level, memory level.
type DeflateKey = (u8, u8, u8);

thread_local! {
    static SHARED_DEFLATE: RefCell<Vec<(DeflateKey, Box<Deflate>)>> = const { RefCell::new(Vec::new()) };
    static SHARED_INFLATE: RefCell<Option<Box<Inflate>>> = const { RefCell::new(None) };
    /// Scratch output for compression, reused by every connection on the thread.
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// The compression state of one connection.
pub(crate) struct DeflateCodec {
    params: DeflateParams,
    role: Role,
    level: u8,
    mem_level: u8,
    threshold: usize,
    compressor: Option<Box<Deflate>>,
    decompressor: Option<Box<Inflate>>,
}

impl std::fmt::Debug for DeflateCodec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeflateCodec")
            .field("params", &self.params)
            .field("role", &self.role)
            .field("compressor", &self.compressor.is_some())
            .field("decompressor", &self.decompressor.is_some())
            .finish()
    }
}

fn new_deflate(key: DeflateKey) -> Box<Deflate> {
    let (bits, level, mem_level) = key;
    Box::new(Deflate::new_with_config(zlib_rs::DeflateConfig {
        level: i32::from(level.min(9)),
        window_bits: -i32::from(bits.clamp(9, 15)),
        mem_level: i32::from(mem_level.clamp(1, 9)),
        ..zlib_rs::DeflateConfig::default()
    }))
}

impl DeflateCodec {
    pub(crate) fn new(role: Role, params: DeflateParams, config: &DeflateConfig) -> Self {
        Self {
            params,
            role,
            level: config.level,
            mem_level: config.mem_level,
            threshold: config.threshold,
            compressor: None,
            decompressor: None,
        }
    }

    pub(crate) fn params(&self) -> &DeflateParams {
        &self.params
    }

    /// Whether a message of this size should be compressed.
    pub(crate) fn wants(&self, len: usize) -> bool {
        len >= self.threshold
    }

    /// (no context takeover, window bits) for what we send.
    fn ours(&self) -> (bool, u8) {
        match self.role {
            Role::Server => (
                self.params.server_no_context_takeover,
                self.params.server_max_window_bits,
            ),
            Role::Client => (
                self.params.client_no_context_takeover,
                self.params.client_max_window_bits,
            ),
        }
    }

    /// (no context takeover, window bits) for what the peer sends.
    fn theirs(&self) -> (bool, u8) {
        match self.role {
            Role::Server => (
                self.params.client_no_context_takeover,
                self.params.client_max_window_bits,
            ),
            Role::Client => (
                self.params.server_no_context_takeover,
                self.params.server_max_window_bits,
            ),
        }
    }

    /// Compresses one message and hands the payload (trailer removed) to `emit`.
    pub(crate) fn compress<R>(&mut self, input: &[u8], emit: impl FnOnce(&[u8]) -> R) -> Option<R> {
        let (no_context, bits) = self.ours();
        let key = (bits.max(9), self.level, self.mem_level);
        SCRATCH.with(|scratch| {
            let mut out = scratch.borrow_mut();
            let ok = if no_context {
                let mut d = SHARED_DEFLATE
                    .with(|p| {
                        let mut p = p.borrow_mut();
                        p.iter()
                            .position(|(k, _)| *k == key)
                            .map(|i| p.swap_remove(i).1)
                    })
                    .unwrap_or_else(|| new_deflate(key));
                let ok = deflate_sync(&mut d, input, &mut out);
                d.reset();
                SHARED_DEFLATE.with(|p| {
                    let mut p = p.borrow_mut();
                    if p.len() < 8 {
                        p.push((key, d));
                    }
                });
                ok
            } else {
                let d = self.compressor.get_or_insert_with(|| new_deflate(key));
                deflate_sync(d, input, &mut out)
            };
            if !ok {
                return None;
            }
            if out.ends_with(&TRAILER) {
                let n = out.len() - TRAILER.len();
                out.truncate(n);
            }
            // Incompressible: without context takeover nothing ties the next message to this
            // one, so it goes out as it is (RFC 7692 §6.1 allows either per message), shorter.
            if no_context && out.len() >= input.len() {
                return None;
            }
            if out.is_empty() {
                // zlib emits nothing for an empty sync flush right after another one; an empty
                // message is then the single empty-block byte (RFC 7692 §7.2.3.6).
                out.push(0x00);
            }
            let r = emit(&out);
            if out.capacity() > 256 * 1024 {
                *out = Vec::new();
            }
            Some(r)
        })
    }

    /// Inflates one complete compressed message into `out`, failing if it would exceed `max`.
    pub(crate) fn decompress(
        &mut self,
        input: &[u8],
        out: &mut Vec<u8>,
        max: usize,
    ) -> Result<(), InflateFailure> {
        let (no_context, bits) = self.theirs();
        if no_context {
            SHARED_INFLATE.with(|s| {
                let mut slot = s.borrow_mut();
                let inf = slot.get_or_insert_with(|| Box::new(Inflate::new(false, 15)));
                let r = inflate_message(inf, input, out, max);
                inf.reset(false);
                r
            })
        } else {
            let inf = self
                .decompressor
                .get_or_insert_with(|| Box::new(Inflate::new(false, bits.clamp(9, 15))));
            let r = inflate_message(inf, input, out, max);
            if r.is_err() {
                // The stream is unusable after an error; the connection fails anyway.
                self.decompressor = None;
            }
            r
        }
    }
}

/// Compresses all of `input` with a sync flush into `out` (cleared first).
fn deflate_sync(d: &mut Deflate, input: &[u8], out: &mut Vec<u8>) -> bool {
    out.clear();
    let mut consumed = 0;
    loop {
        let start = out.len();
        let space = (input.len() - consumed).max(64) + 64;
        out.resize(start + space, 0);
        let (in0, out0) = (d.total_in(), d.total_out());
        let r = d.compress(
            &input[consumed..],
            &mut out[start..],
            DeflateFlush::SyncFlush,
        );
        consumed += (d.total_in() - in0) as usize;
        let produced = (d.total_out() - out0) as usize;
        out.truncate(start + produced);
        match r {
            Ok(_) if consumed >= input.len() && produced < space => return true,
            Ok(_) => continue,
            Err(_) => return false,
        }
    }
}

/// Past this much inflated output, the buffer reserves the whole limit (see
/// [`inflate_message`]); it is also the most handed to the inflater per call.
const INFLATE_STEP: usize = 1 << 20;

/// Inflates `input` followed by the sync-flush trailer.
fn inflate_message(
    inf: &mut Inflate,
    input: &[u8],
    out: &mut Vec<u8>,
    max: usize,
) -> Result<(), InflateFailure> {
    for chunk in [input, &TRAILER[..]] {
        let mut consumed = 0;
        loop {
            let allowed = (max + 1).saturating_sub(out.len());
            if allowed == 0 {
                return Err(InflateFailure::TooLarge);
            }
            let start = out.len();
            // Growth: doubling up to [`INFLATE_STEP`]; past it, the whole bound (`max + 1`)
            // is reserved at once, and the buffer is filled a step at a time. Memory the
            // inflater has not written is reserved, not touched, so a message inflating to
            // the limit costs the limit and a step or two, never a growing series of copies
            // (small exact steps made one reallocate thousands of times and left the
            // allocator holding four times the limit).
            let want = ((chunk.len() - consumed) * 4).max(4096).min(allowed);
            if out.capacity() - start < want {
                let target = if start + want > INFLATE_STEP {
                    max + 1
                } else {
                    (out.capacity() * 2).clamp(start + want, INFLATE_STEP.min(max + 1))
                };
                out.reserve_exact(target.max(start + want) - start);
            }
            // Zeroed (so touched) only as far as this call may write.
            let space = (out.capacity() - start).min(allowed).min(INFLATE_STEP);
            out.resize(start + space, 0);
            let (in0, out0) = (inf.total_in(), inf.total_out());
            let r = inf.decompress(
                &chunk[consumed..],
                &mut out[start..],
                InflateFlush::SyncFlush,
            );
            consumed += (inf.total_in() - in0) as usize;
            let produced = (inf.total_out() - out0) as usize;
            out.truncate(start + produced);
            if out.len() > max {
                return Err(InflateFailure::TooLarge);
            }
            match r {
                Ok(Status::StreamEnd) => {
                    // The peer ended its stream with a final block: anything after it is
                    // invalid, and the next message starts a new stream.
                    inf.reset(false);
                    return if consumed < chunk.len() && !std::ptr::eq(chunk, &TRAILER[..]) {
                        Err(InflateFailure::Invalid)
                    } else {
                        Ok(())
                    };
                }
                Ok(_) if consumed >= chunk.len() && produced < space => break,
                Ok(Status::BufError) if produced == 0 && consumed >= chunk.len() => break,
                Ok(_) => continue,
                Err(_) => return Err(InflateFailure::Invalid),
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn params(snct: bool, cnct: bool, sbits: u8, cbits: u8) -> DeflateParams {
        DeflateParams {
            server_no_context_takeover: snct,
            client_no_context_takeover: cnct,
            server_max_window_bits: sbits,
            client_max_window_bits: cbits,
        }
    }

    fn round_trip(p: DeflateParams, messages: &[Vec<u8>]) {
        let cfg = DeflateConfig::default();
        let mut server = DeflateCodec::new(Role::Server, p, &cfg);
        let mut client = DeflateCodec::new(Role::Client, p, &cfg);
        for m in messages {
            // `None`: not shorter compressed, sent as it is (only without context takeover).
            match server.compress(m, |c| c.to_vec()) {
                Some(wire) => {
                    let mut out = Vec::new();
                    client.decompress(&wire, &mut out, 1 << 20).unwrap();
                    assert_eq!(&out[..], &m[..]);
                }
                None => assert!(p.server_no_context_takeover),
            }
            match client.compress(m, |c| c.to_vec()) {
                Some(wire) => {
                    let mut out = Vec::new();
                    server.decompress(&wire, &mut out, 1 << 20).unwrap();
                    assert_eq!(&out[..], &m[..]);
                }
                None => assert!(p.client_no_context_takeover),
            }
        }
    }

    #[test]
    fn compresses_json_well() {
        let msg = br#"{"type":"message","room":"lobby","from":"guest-42","text":"hello everyone, how are you doing today?"}"#.repeat(10);
        let mut c = DeflateCodec::new(
            Role::Server,
            params(false, false, 15, 15),
            &DeflateConfig::default(),
        );
        let n = c.compress(&msg, |c| c.len()).unwrap();
        assert!(n * 5 < msg.len(), "{n} vs {}", msg.len());
    }

    #[test]
    fn inflate_is_bounded() {
        // 1 MiB of zeros compresses to about a kilobyte.
        let zeros = vec![0u8; 1 << 20];
        let mut c = DeflateCodec::new(
            Role::Client,
            params(false, false, 15, 15),
            &DeflateConfig::default(),
        );
        let wire = c.compress(&zeros, |c| c.to_vec()).unwrap();
        assert!(wire.len() < 32 * 1024, "{}", wire.len());
        let mut s = DeflateCodec::new(
            Role::Server,
            params(false, false, 15, 15),
            &DeflateConfig::default(),
        );
        let mut out = Vec::new();
        assert_eq!(
            s.decompress(&wire, &mut out, 64 * 1024),
            Err(InflateFailure::TooLarge)
        );
        assert!(
            out.capacity() <= 64 * 1024 + 4096 + 1,
            "allocated {}",
            out.capacity()
        );
    }

    #[test]
    fn empty_messages_with_context_takeover() {
        // A second empty sync flush produces no output at all; it must still decode.
        let msgs = vec![vec![], vec![], b"after two empty messages".to_vec()];
        round_trip(params(false, false, 10, 10), &msgs);
    }

    #[test]
    fn garbage_is_invalid() {
        let mut s = DeflateCodec::new(
            Role::Server,
            params(false, false, 15, 15),
            &DeflateConfig::default(),
        );
        let mut out = Vec::new();
        assert_eq!(
            s.decompress(&[0xff, 0xff, 0xff, 0xff, 0x00], &mut out, 1 << 20),
            Err(InflateFailure::Invalid)
        );
    }

    #[test]
    fn every_parameter_combination() {
        let msgs: Vec<Vec<u8>> = (0..20)
            .map(|i| {
                format!(
                    "message {i}: {}",
                    "lorem ipsum dolor sit amet ".repeat(i * 7)
                )
                .into_bytes()
            })
            .collect();
        for snct in [false, true] {
            for cnct in [false, true] {
                for sbits in 8..=15 {
                    for cbits in [8, 9, 12, 15] {
                        round_trip(params(snct, cnct, sbits, cbits), &msgs);
                    }
                }
            }
        }
    }

    proptest! {
        #[test]
        fn arbitrary_messages_round_trip(msgs in proptest::collection::vec(proptest::collection::vec(0u8..4, 0..3000), 1..6),
                                         snct: bool, cnct: bool, bits in 8u8..=15) {
            round_trip(params(snct, cnct, bits, bits), &msgs);
        }
    }
}
