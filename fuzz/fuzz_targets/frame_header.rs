//! `FrameHeader::parse` on arbitrary bytes.
//!
//! Invariants: a parsed header used at most the input, exactly 2 + extended length + mask
//! bytes; every shorter prefix is "incomplete" (never an error or another header); encoding
//! it again (shortest length form) parses back to the same header, and equals the input
//! bytes whenever the input used the shortest form too.
#![no_main]
use libfuzzer_sys::fuzz_target;
use switchboard_proto::frame::{FrameHeader, MAX_HEADER_LEN};

fuzz_target!(|data: &[u8]| {
    let Ok(Some((h, n))) = FrameHeader::parse(data) else {
        return;
    };
    assert!(
        n <= data.len() && n <= MAX_HEADER_LEN,
        "used {n} of {}",
        data.len()
    );
    let ext = match data[1] & 0x7f {
        126 => 2,
        127 => 8,
        _ => 0,
    };
    let mask = if h.mask.is_some() { 4 } else { 0 };
    assert_eq!(n, 2 + ext + mask, "header length");
    assert!(h.payload_len < 1 << 63);
    for cut in 0..n {
        assert_eq!(
            FrameHeader::parse(&data[..cut]),
            Ok(None),
            "prefix of {cut} bytes"
        );
    }
    // Trailing bytes (payload) must not change the header.
    assert_eq!(FrameHeader::parse(&data[..n]), Ok(Some((h, n))));

    let mut buf = [0u8; MAX_HEADER_LEN];
    let m = h.encode(&mut buf);
    assert!(
        m <= n,
        "shortest encoding is longer than the input's ({m} > {n})"
    );
    assert_eq!(
        FrameHeader::parse(&buf[..m]),
        Ok(Some((h, m))),
        "round trip"
    );
    let shortest = match h.payload_len {
        0..=125 => ext == 0,
        126..=0xffff => ext == 2,
        _ => ext == 8,
    };
    if shortest {
        assert_eq!(
            &buf[..m],
            &data[..n],
            "re-encoding differs from a shortest-form input"
        );
    }
});
