//! Incremental UTF-8 validation for text messages that arrive in pieces.
//!
//! RFC 6455 §8.1 lets an endpoint fail a connection as soon as it sees invalid UTF-8 in a text
//! message, and Autobahn's 6.x cases require exactly that ("fail fast"): a validator that only
//! checks the whole message at the end is NON-STRICT. [`Utf8Validator`] is fed the payload as it
//! arrives (fragment by fragment, and read by read within a fragment) and reports the first
//! byte sequence that can never become valid, while a sequence that is merely cut off by the end
//! of the current piece is kept (at most 3 bytes) until more arrives.

/// The bytes seen so far can never be valid UTF-8.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("invalid UTF-8 in text payload")]
pub struct InvalidUtf8;

/// Validates a UTF-8 stream fed in arbitrary pieces.
///
/// ```
/// use switchboard_proto::utf8::Utf8Validator;
/// let mut v = Utf8Validator::default();
/// let euro = "€".as_bytes(); // e2 82 ac
/// assert!(v.feed(&euro[..1]).is_ok()); // cut off: fine so far
/// assert!(v.feed(&euro[1..]).is_ok());
/// assert!(v.finish().is_ok());
/// // 0xc0 can never start a valid sequence: reported at once.
/// assert!(Utf8Validator::default().feed(&[b'a', 0xc0]).is_err());
/// ```
#[derive(Debug, Default, Clone)]
pub struct Utf8Validator {
    /// Bytes of a code point cut off by the end of the previous piece.
    pending: [u8; 4],
    pending_len: u8,
}

impl Utf8Validator {
    /// Checks the next piece of the stream.
    pub fn feed(&mut self, mut input: &[u8]) -> Result<(), InvalidUtf8> {
        if self.pending_len > 0 {
            // Complete the cut-off code point with bytes from this piece.
            let have = self.pending_len as usize;
            let need = utf8_len(self.pending[0]).ok_or(InvalidUtf8)?;
            let take = (need - have).min(input.len());
            self.pending[have..have + take].copy_from_slice(&input[..take]);
            let now = have + take;
            match std::str::from_utf8(&self.pending[..now]) {
                Ok(_) => {
                    self.pending_len = 0;
                    input = &input[take..];
                }
                Err(e) if e.error_len().is_none() => {
                    // Still incomplete: the piece was too short to finish it.
                    self.pending_len = now as u8;
                    return Ok(());
                }
                Err(_) => return Err(InvalidUtf8),
            }
        }
        match std::str::from_utf8(input) {
            Ok(_) => Ok(()),
            Err(e) => match e.error_len() {
                Some(_) => Err(InvalidUtf8),
                None => {
                    let tail = &input[e.valid_up_to()..];
                    self.pending[..tail.len()].copy_from_slice(tail);
                    self.pending_len = tail.len() as u8;
                    Ok(())
                }
            },
        }
    }

    /// Ends the stream: an unfinished code point is an error. Resets the validator.
    pub fn finish(&mut self) -> Result<(), InvalidUtf8> {
        let incomplete = self.pending_len > 0;
        self.pending_len = 0;
        if incomplete {
            Err(InvalidUtf8)
        } else {
            Ok(())
        }
    }

    /// Forgets any cut-off code point.
    pub fn reset(&mut self) {
        self.pending_len = 0;
    }
}

/// The length of the sequence a leading byte starts, if it can start one.
fn utf8_len(first: u8) -> Option<usize> {
    match first {
        0x00..=0x7f => Some(1),
        0xc2..=0xdf => Some(2),
        0xe0..=0xef => Some(3),
        0xf0..=0xf4 => Some(4),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn check_split(bytes: &[u8], cuts: &[usize]) -> Result<(), InvalidUtf8> {
        let mut v = Utf8Validator::default();
        let mut at = 0;
        for &c in cuts {
            let c = c.min(bytes.len()).max(at);
            v.feed(&bytes[at..c])?;
            at = c;
        }
        v.feed(&bytes[at..])?;
        v.finish()
    }

    #[test]
    fn fails_fast_mid_stream() {
        let mut v = Utf8Validator::default();
        assert!(v.feed("κόσμε".as_bytes()).is_ok());
        // ED A0 80 is a UTF-16 surrogate: invalid as soon as the second byte is seen.
        assert!(v.feed(&[0xed]).is_ok());
        assert_eq!(v.feed(&[0xa0]), Err(InvalidUtf8));
    }

    #[test]
    fn cut_four_byte_sequence_one_byte_at_a_time() {
        let s = "a😀b".as_bytes();
        let mut v = Utf8Validator::default();
        for b in s {
            v.feed(std::slice::from_ref(b)).unwrap();
        }
        v.finish().unwrap();
    }

    #[test]
    fn unfinished_at_end_is_error() {
        let mut v = Utf8Validator::default();
        v.feed(&[0xf0, 0x9f]).unwrap();
        assert_eq!(v.finish(), Err(InvalidUtf8));
    }

    #[test]
    fn invalid_continuation_after_cut() {
        let mut v = Utf8Validator::default();
        v.feed(&[0xe2]).unwrap();
        assert_eq!(v.feed(&[0x28]), Err(InvalidUtf8));
    }

    proptest! {
        #[test]
        fn agrees_with_std(bytes in proptest::collection::vec(any::<u8>(), 0..64),
                           cuts in proptest::collection::vec(0usize..64, 0..6)) {
            let mut cuts = cuts;
            cuts.sort_unstable();
            let expected = std::str::from_utf8(&bytes).is_ok();
            prop_assert_eq!(check_split(&bytes, &cuts).is_ok(), expected);
        }

        #[test]
        fn valid_strings_pass_any_split(s in ".{0,40}", cuts in proptest::collection::vec(0usize..200, 0..6)) {
            let mut cuts = cuts;
            cuts.sort_unstable();
            prop_assert!(check_split(s.as_bytes(), &cuts).is_ok());
        }
    }
}
