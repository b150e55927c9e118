//! permessage-deflate: throughput and ratio on realistic JSON chat traffic (100 B, 1 KiB and
//! 16 KiB messages), for the engine we use (zlib-rs) against flate2's default pure-Rust
//! backend (miniz_oxide), at levels 1 and 6, and end to end through `Connection` with and
//! without context takeover.
//!
//! ```sh
//! cargo bench -p switchboard-proto --bench deflate
//! ```
//! Compression ratios are printed to stderr before the timings.

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use switchboard_proto::extension::{DeflateConfig, DeflateParams};
use switchboard_proto::{Config, Connection, Event, Message, Role};

const WORDS: &[&str] = &[
    "hello", "world", "meeting", "at", "noon", "the", "deploy", "is", "green", "again", "lunch",
    "anyone", "ok", "thanks", "see", "you", "there", "ticket", "review", "merged", "build",
];

/// One chat message as the server broadcasts it, about 100-200 bytes of JSON.
fn chat_message(seq: u32) -> String {
    let mut text = String::new();
    let mut x = seq.wrapping_mul(2654435761);
    for _ in 0..(4 + seq % 8) {
        x = x.wrapping_mul(1103515245).wrapping_add(12345);
        text.push_str(WORDS[(x >> 16) as usize % WORDS.len()]);
        text.push(' ');
    }
    format!(
        r#"{{"type":"message","id":"m{seq:08}","room":"lobby","from":"guest-{}","text":"{}","ts":{},"seq":{seq}}}"#,
        1000 + x % 9000,
        text.trim_end(),
        1_764_000_000_000u64 + u64::from(seq) * 731
    )
}

/// A JSON payload of about `size` bytes: one message, or an array of them (history pages).
fn payload(size: usize, start: u32) -> Vec<u8> {
    if size <= 200 {
        let mut m = chat_message(start).into_bytes();
        m.truncate(size.max(m.len().min(size)));
        return m;
    }
    let mut s = String::from("[");
    let mut seq = start;
    while s.len() < size {
        if s.len() > 1 {
            s.push(',');
        }
        s.push_str(&chat_message(seq));
        seq += 1;
    }
    s.push(']');
    s.into_bytes()
}

const SIZES: [(usize, &str); 3] = [(100, "100B"), (1024, "1KiB"), (16 * 1024, "16KiB")];

fn zlib_rs_compress(level: i32, input: &[u8], out: &mut Vec<u8>, d: &mut zlib_rs::Deflate) {
    out.clear();
    out.resize(input.len() + 64, 0);
    let before = d.total_out();
    d.compress(input, out, zlib_rs::DeflateFlush::SyncFlush)
        .unwrap();
    out.truncate((d.total_out() - before) as usize);
    let _ = level;
}

fn miniz_compress(input: &[u8], out: &mut Vec<u8>, c: &mut flate2::Compress) {
    out.clear();
    out.reserve(input.len() + 64);
    c.compress_vec(input, out, flate2::FlushCompress::Sync)
        .unwrap();
}

fn engines(c: &mut Criterion) {
    // Ratios first: a stream of 200 messages per size, with context kept across them.
    for (size, name) in SIZES {
        let msgs: Vec<Vec<u8>> = (0..200).map(|i| payload(size, i * 37)).collect();
        let raw: usize = msgs.iter().map(Vec::len).sum();
        for level in [1, 6] {
            let mut d = zlib_rs::Deflate::new(level, false, 15);
            let mut out = Vec::new();
            let z: usize = msgs
                .iter()
                .map(|m| {
                    zlib_rs_compress(level, m, &mut out, &mut d);
                    out.len() - 4
                })
                .sum();
            let mut m = flate2::Compress::new(flate2::Compression::new(level as u32), false);
            let mz: usize = msgs
                .iter()
                .map(|msg| {
                    miniz_compress(msg, &mut out, &mut m);
                    out.len() - 4
                })
                .sum();
            // Each message compressed on its own (no context takeover).
            let nc: usize = msgs
                .iter()
                .map(|msg| {
                    let mut d = zlib_rs::Deflate::new(level, false, 15);
                    zlib_rs_compress(level, msg, &mut out, &mut d);
                    out.len() - 4
                })
                .sum();
            eprintln!(
                "ratio {name:>5} level {level}: zlib-rs {:.2}x, miniz_oxide {:.2}x, zlib-rs without context takeover {:.2}x",
                raw as f64 / z as f64, raw as f64 / mz as f64, raw as f64 / nc as f64
            );
        }
    }

    // Timings: a stream of distinct messages (compressing one message over and over would
    // only measure matches against itself), with context kept, as a chat connection sends.
    let mut g = c.benchmark_group("compress");
    for (size, name) in SIZES {
        let msgs: Vec<Vec<u8>> = (0..256).map(|i| payload(size, i * 37)).collect();
        let avg = msgs.iter().map(Vec::len).sum::<usize>() / msgs.len();
        g.throughput(Throughput::Bytes(avg as u64));
        for level in [1, 6] {
            let mut d = zlib_rs::Deflate::new(level, false, 15);
            let mut out = Vec::new();
            let mut i = 0;
            g.bench_function(BenchmarkId::new(format!("zlib-rs-l{level}"), name), |b| {
                b.iter(|| {
                    i = (i + 1) % msgs.len();
                    zlib_rs_compress(level, black_box(&msgs[i]), &mut out, &mut d)
                })
            });
            let mut m = flate2::Compress::new(flate2::Compression::new(level as u32), false);
            g.bench_function(BenchmarkId::new(format!("miniz-l{level}"), name), |b| {
                b.iter(|| {
                    i = (i + 1) % msgs.len();
                    miniz_compress(black_box(&msgs[i]), &mut out, &mut m)
                })
            });
        }
    }
    g.finish();
}

/// Inflating the same streams, in order, with each engine.
fn decompress(c: &mut Criterion) {
    let mut g = c.benchmark_group("decompress");
    for (size, name) in SIZES {
        let msgs: Vec<Vec<u8>> = (0..256).map(|i| payload(size, i * 37)).collect();
        let avg = msgs.iter().map(Vec::len).sum::<usize>() / msgs.len();
        // One compressed stream (level 1, context kept), trailer left on each message.
        let mut d = zlib_rs::Deflate::new(1, false, 15);
        let mut tmp = Vec::new();
        let wire: Vec<Vec<u8>> = msgs
            .iter()
            .map(|m| {
                zlib_rs_compress(1, m, &mut tmp, &mut d);
                tmp.clone()
            })
            .collect();
        g.throughput(Throughput::Bytes(avg as u64));
        let mut out = vec![0u8; size * 2 + 1024];
        let mut inf = zlib_rs::Inflate::new(false, 15);
        let mut i = 0;
        g.bench_function(BenchmarkId::new("zlib-rs", name), |b| {
            b.iter(|| {
                inf.decompress(
                    black_box(&wire[i]),
                    &mut out,
                    zlib_rs::InflateFlush::SyncFlush,
                )
                .unwrap();
                i = (i + 1) % wire.len();
            })
        });
        let mut m = flate2::Decompress::new(false);
        let mut i = 0;
        let mut out = Vec::with_capacity(size * 2 + 1024);
        g.bench_function(BenchmarkId::new("miniz", name), |b| {
            b.iter(|| {
                out.clear();
                m.decompress_vec(black_box(&wire[i]), &mut out, flate2::FlushDecompress::Sync)
                    .unwrap();
                i = (i + 1) % wire.len();
            })
        });
    }
    g.finish();
}

/// Our path end to end: a client compresses (level 1), a server inflates.
fn connection(c: &mut Criterion) {
    let mut g = c.benchmark_group("connection_round_trip");
    for (no_context, label) in [(false, "context"), (true, "no-context")] {
        for (size, name) in SIZES {
            let p = DeflateParams {
                server_no_context_takeover: no_context,
                client_no_context_takeover: no_context,
                server_max_window_bits: 15,
                client_max_window_bits: 15,
            };
            let cfg = Config::default().deflate(Some(DeflateConfig::default().threshold(0)));
            let mut client = Connection::new(Role::Client, cfg).with_deflate(p);
            let mut server = Connection::new(Role::Server, cfg).with_deflate(p);
            let msgs: Vec<Message> = (0..64)
                .map(|i| Message::text(String::from_utf8(payload(size, i)).unwrap()))
                .collect();
            let bytes: usize = msgs.iter().map(|m| m.payload().len()).sum();
            g.throughput(Throughput::Bytes(bytes as u64));
            g.bench_function(BenchmarkId::new(label, name), |b| {
                b.iter(|| {
                    for m in &msgs {
                        client.send(m).unwrap();
                    }
                    server.handle_read(client.pending_transmit());
                    let n = client.pending_transmit().len();
                    client.advance_transmit(n);
                    let mut got = 0;
                    while let Ok(Some(Event::Message(_))) = server.poll_event() {
                        got += 1;
                    }
                    assert_eq!(got, msgs.len());
                })
            });
        }
    }
    g.finish();
}

criterion_group!(benches, engines, decompress, connection);
criterion_main!(benches);
