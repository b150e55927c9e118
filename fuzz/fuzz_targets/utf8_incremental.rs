//! Differential test of `Utf8Validator` against `std::str::from_utf8`.
//!
//! Byte 0 = k (mod 8) cut points, the next k bytes are their positions (scaled to the text),
//! the rest is the text. Invariants: feeding the pieces in order, each `feed` fails exactly
//! when the text so far can never become valid UTF-8 (fail fast, never early), and the final
//! verdict (`finish`) equals `from_utf8(whole).is_ok()`.
#![no_main]
use libfuzzer_sys::fuzz_target;
use switchboard_proto::utf8::Utf8Validator;

fuzz_target!(|data: &[u8]| {
    let [k, rest @ ..] = data else { return };
    let k = usize::from(k % 8).min(rest.len());
    let (cut_bytes, text) = rest.split_at(k);
    let mut cuts: Vec<usize> = cut_bytes
        .iter()
        .map(|&c| usize::from(c) * (text.len() + 1) / 256)
        .collect();
    cuts.sort_unstable();
    cuts.push(text.len());

    let mut v = Utf8Validator::default();
    let mut at = 0;
    let mut verdict = Ok(());
    for &c in &cuts {
        let r = v.feed(&text[at..c]);
        // The prefix so far is hopeless iff from_utf8 reports an error with a length (an
        // error at end of input, `error_len() == None`, may still be completed).
        let hopeless = matches!(std::str::from_utf8(&text[..c]), Err(e) if e.error_len().is_some());
        assert_eq!(
            r.is_err(),
            hopeless,
            "feed verdict for prefix of {c} bytes, cuts {cuts:?}"
        );
        at = c;
        if r.is_err() {
            verdict = r;
            break;
        }
    }
    if verdict.is_ok() {
        verdict = v.finish();
    }
    assert_eq!(
        verdict.is_ok(),
        std::str::from_utf8(text).is_ok(),
        "cuts {cuts:?}"
    );
});
