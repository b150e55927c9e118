//! Frame throughput: unmasking, parsing (server receiving masked client frames, the hot path
//! of every server) and encoding (server unmasked, client masked), for 16 B, 1 KiB and 64 KiB
//! payloads.
//!
//! ```sh
//! cargo bench -p switchboard-proto --bench frame
//! ```

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use switchboard_proto::frame::{FrameHeader, OpCode, MAX_HEADER_LEN};
use switchboard_proto::mask::apply_mask;
use switchboard_proto::{Config, Connection, Event, Message, Role};

const SIZES: [(usize, &str); 3] = [(16, "16B"), (1024, "1KiB"), (64 * 1024, "64KiB")];

/// One masked binary frame as a client sends it.
fn masked_frame(len: usize) -> Vec<u8> {
    let mut h = FrameHeader::new(OpCode::Binary, len as u64);
    h.mask = Some([0x12, 0x34, 0x56, 0x78]);
    let mut head = [0u8; MAX_HEADER_LEN];
    let n = h.encode(&mut head);
    let mut out = head[..n].to_vec();
    let mut payload: Vec<u8> = (0..len).map(|i| i as u8).collect();
    apply_mask(&mut payload, [0x12, 0x34, 0x56, 0x78], 0);
    out.extend_from_slice(&payload);
    out
}

fn unmask(c: &mut Criterion) {
    let mut g = c.benchmark_group("unmask");
    for (size, name) in SIZES {
        let mut buf = vec![0xa5u8; size];
        g.throughput(Throughput::Bytes(size as u64));
        g.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.iter(|| apply_mask(black_box(&mut buf), [1, 2, 3, 4], 0))
        });
    }
    g.finish();
}

fn parse(c: &mut Criterion) {
    let mut g = c.benchmark_group("parse_unmask");
    for (size, name) in SIZES {
        // A batch of frames per iteration, as one socket read would deliver them.
        let frames = (256 * 1024 / (size + 14)).clamp(1, 64);
        let wire: Vec<u8> = (0..frames).flat_map(|_| masked_frame(size)).collect();
        let mut conn = Connection::new(Role::Server, Config::default());
        g.throughput(Throughput::Bytes((size * frames) as u64));
        g.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.iter(|| {
                conn.handle_read(black_box(&wire));
                let mut n = 0;
                while let Ok(Some(Event::Message(m))) = conn.poll_event() {
                    n += m.payload().len();
                }
                assert_eq!(n, size * frames);
            })
        });
    }
    g.finish();
}

fn encode(c: &mut Criterion) {
    for (role, group) in [
        (Role::Server, "encode_server"),
        (Role::Client, "encode_client_masked"),
    ] {
        let mut g = c.benchmark_group(group);
        for (size, name) in SIZES {
            let msg = Message::binary(vec![7u8; size]);
            let mut conn = Connection::new(role, Config::default());
            g.throughput(Throughput::Bytes(size as u64));
            g.bench_function(BenchmarkId::from_parameter(name), |b| {
                b.iter(|| {
                    conn.send(black_box(&msg)).unwrap();
                    let n = conn.pending_transmit().len();
                    conn.advance_transmit(n);
                })
            });
        }
        g.finish();
    }
}

criterion_group!(benches, unmask, parse, encode);
criterion_main!(benches);
