//! Payload masking (RFC 6455 §5.3).
//!
//! Masking is a XOR of the payload with a repeating 4-byte key. It runs over every byte a server
//! receives, so it is written to let the compiler vectorize it: the key is spread over a 32-byte
//! block and the payload is processed in fixed 32-byte chunks, which LLVM turns into SIMD XORs
//! (SSE2 on any x86_64). On x86_64 CPUs with AVX2 (checked once, at run time) the same code is
//! compiled a second time for AVX2 and used for payloads of 128 bytes or more: twice the bytes
//! per instruction. That call is the crate's only `unsafe`.

/// XORs `buf` with `key`, as if `buf` started `offset` bytes into a masked payload.
///
/// Masking is its own inverse: applying it twice restores the input. `offset` lets a payload
/// that arrives in several reads be unmasked piece by piece.
///
/// ```
/// use switchboard_proto::mask::apply_mask;
/// let mut data = *b"Hello";
/// apply_mask(&mut data, [0x37, 0xfa, 0x21, 0x3d], 0);
/// assert_eq!(data, [0x7f, 0x9f, 0x4d, 0x51, 0x58]);
/// apply_mask(&mut data, [0x37, 0xfa, 0x21, 0x3d], 0);
/// assert_eq!(&data, b"Hello");
/// ```
#[inline]
pub fn apply_mask(buf: &mut [u8], key: [u8; 4], offset: usize) {
    #[cfg(all(target_arch = "x86_64", not(target_feature = "avx2")))]
    if buf.len() >= AVX2_MIN && std::arch::is_x86_feature_detected!("avx2") {
        #[allow(unsafe_code)]
        // SAFETY: the CPU supports AVX2, checked just above.
        unsafe {
            apply_mask_avx2(buf, key, offset)
        };
        return;
    }
    apply_mask_wide(buf, key, offset);
}

/// Payloads shorter than this are masked without AVX2 (the detection would cost more than
/// it saves).
#[cfg(all(target_arch = "x86_64", not(target_feature = "avx2")))]
const AVX2_MIN: usize = 128;

/// [`apply_mask_wide`] compiled for AVX2.
#[cfg(all(target_arch = "x86_64", not(target_feature = "avx2")))]
#[target_feature(enable = "avx2")]
fn apply_mask_avx2(buf: &mut [u8], key: [u8; 4], offset: usize) {
    apply_mask_wide(buf, key, offset);
}

/// The portable masking loop (see the module docs).
#[inline(always)]
fn apply_mask_wide(buf: &mut [u8], key: [u8; 4], offset: usize) {
    let key = rotate(key, offset);
    let mut chunks = buf.chunks_exact_mut(32);
    if chunks.len() > 0 {
        let mut wide = [0u8; 32];
        for (i, b) in wide.iter_mut().enumerate() {
            *b = key[i & 3];
        }
        for chunk in &mut chunks {
            for (b, k) in chunk.iter_mut().zip(wide.iter()) {
                *b ^= k;
            }
        }
    }
    // The remainder starts at a multiple of 32, so the key phase is unchanged. Small
    // payloads live entirely here: 8 bytes at a time, then the last few one by one.
    let key8 = u64::from_ne_bytes([
        key[0], key[1], key[2], key[3], key[0], key[1], key[2], key[3],
    ]);
    let mut words = chunks.into_remainder().chunks_exact_mut(8);
    for w in &mut words {
        let mut v = [0u8; 8];
        v.copy_from_slice(w);
        w.copy_from_slice(&(u64::from_ne_bytes(v) ^ key8).to_ne_bytes());
    }
    // Still a multiple of 8 (so of 4) from the start: the phase is unchanged again.
    for (i, b) in words.into_remainder().iter_mut().enumerate() {
        *b ^= key[i & 3];
    }
}

/// The key as seen from `offset` bytes into the payload.
#[inline]
fn rotate(key: [u8; 4], offset: usize) -> [u8; 4] {
    let s = offset & 3;
    [key[s], key[(s + 1) & 3], key[(s + 2) & 3], key[(s + 3) & 3]]
}

/// The byte-at-a-time reference the fast version is tested against.
#[cfg(test)]
fn apply_mask_scalar(buf: &mut [u8], key: [u8; 4], offset: usize) {
    for (i, b) in buf.iter_mut().enumerate() {
        *b ^= key[(i + offset) & 3];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_scalar_for_every_length_and_offset() {
        let key = [0x11, 0x8f, 0x3c, 0xd2];
        // Past AVX2_MIN too, so both compilations of the loop are checked where AVX2 runs.
        for len in (0..300).chain([1023, 1024, 1025, 16 * 1024 + 7]) {
            for offset in 0..8 {
                let data: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
                let mut fast = data.clone();
                let mut slow = data.clone();
                apply_mask(&mut fast, key, offset);
                apply_mask_scalar(&mut slow, key, offset);
                assert_eq!(fast, slow, "len {len} offset {offset}");
            }
        }
    }

    #[test]
    fn piecewise_equals_whole() {
        let key = [1, 2, 3, 4];
        let data: Vec<u8> = (0..1000u32).map(|i| i as u8).collect();
        let mut whole = data.clone();
        apply_mask(&mut whole, key, 0);
        let mut pieces = data.clone();
        let mut at = 0;
        for step in [1usize, 3, 7, 33, 64, 100, 792] {
            apply_mask(&mut pieces[at..at + step], key, at);
            at += step;
        }
        assert_eq!(at, 1000);
        assert_eq!(whole, pieces);
    }
}
