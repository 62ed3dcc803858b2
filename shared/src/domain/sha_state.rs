//! A SHA-256 whose state can be stored and carried on: the eight words of the compression state and
//! the number of bytes hashed, always at a 64-byte block boundary, so a verification of a large file
//! can stop (a Lambda invocation's time is up) and go on elsewhere from a stored record
//! (`crate::verify`). The padding of FIPS 180-4 §5.1.1 is done here at `finish`.

use sha2::block_api::compress256;

use crate::error::{Error, Result};

/// FIPS 180-4 §5.3.3: the initial hash value of SHA-256.
const H0: [u32; 8] = [0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19];

/// The state of a SHA-256 after `len` bytes, `len` a multiple of 64.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sha256State {
    h: [u32; 8],
    len: u64,
}

impl Default for Sha256State {
    fn default() -> Self {
        Sha256State { h: H0, len: 0 }
    }
}

/// Whole 64-byte blocks of `data` as the compression function takes them.
fn blocks(data: &[u8]) -> &[[u8; 64]] {
    let (blocks, rest) = data.as_chunks::<64>();
    debug_assert!(rest.is_empty());
    blocks
}

impl Sha256State {
    /// Bytes hashed so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Hash `data`, a whole number of 64-byte blocks (anything else is a caller's bug: Internal).
    pub fn update_blocks(&mut self, data: &[u8]) -> Result<()> {
        if !data.len().is_multiple_of(64) {
            return Err(Error::Internal(format!("{} bytes are not whole SHA-256 blocks", data.len())));
        }
        compress256(&mut self.h, blocks(data));
        self.len += data.len() as u64;
        Ok(())
    }

    /// The digest of everything hashed and then `tail` (any length), with the padding.
    pub fn finish(mut self, tail: &[u8]) -> [u8; 32] {
        let whole = tail.len() - tail.len() % 64;
        compress256(&mut self.h, blocks(&tail[..whole]));
        let rest = &tail[whole..];
        let bits = (self.len + tail.len() as u64).wrapping_mul(8);
        let mut last = [0u8; 128];
        last[..rest.len()].copy_from_slice(rest);
        last[rest.len()] = 0x80;
        let n = if rest.len() < 56 { 64 } else { 128 };
        last[n - 8..n].copy_from_slice(&bits.to_be_bytes());
        compress256(&mut self.h, blocks(&last[..n]));
        let mut out = [0u8; 32];
        for (chunk, word) in out.chunks_exact_mut(4).zip(self.h) {
            chunk.copy_from_slice(&word.to_be_bytes());
        }
        out
    }

    /// The stored form: the eight words as 64 lowercase hex (big-endian), the length apart.
    pub fn words_hex(&self) -> String {
        self.h.iter().map(|w| format!("{w:08x}")).collect()
    }

    /// From its stored form; a length that is not at a block boundary or words that are not 64 hex
    /// are a damaged record (Internal).
    pub fn from_stored(words_hex: &str, len: u64) -> Result<Sha256State> {
        let bad = || Error::Internal(format!("a stored SHA-256 state is damaged ({len} bytes, {words_hex:?})"));
        if words_hex.len() != 64 || !super::digest::is_lower_hex(words_hex) || !len.is_multiple_of(64) {
            return Err(bad());
        }
        let mut h = [0u32; 8];
        for (i, w) in h.iter_mut().enumerate() {
            *w = u32::from_str_radix(&words_hex[i * 8..i * 8 + 8], 16).map_err(|_| bad())?;
        }
        Ok(Sha256State { h, len })
    }
}

#[cfg(test)]
mod tests {
    use sha2::{Digest as _, Sha256};

    use super::*;

    fn data(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect()
    }

    /// Hash `bytes` stopping at each block boundary in `splits`, storing and restoring the state each
    /// time, as a verification carried over several invocations does.
    fn carried(bytes: &[u8], splits: &[usize]) -> [u8; 32] {
        let mut state = Sha256State::default();
        let mut at = 0;
        for &s in splits {
            state.update_blocks(&bytes[at..s]).unwrap();
            at = s;
            state = Sha256State::from_stored(&state.words_hex(), state.len()).unwrap();
        }
        state.finish(&bytes[at..])
    }

    #[test]
    fn a_carried_sha256_equals_the_one_shot_digest_for_every_length_and_split() {
        let bytes = data(4 * 64 + 130);
        for n in 0..bytes.len() {
            let want: [u8; 32] = Sha256::digest(&bytes[..n]).into();
            assert_eq!(carried(&bytes[..n], &[]), want, "{n} bytes, no split");
            let boundaries: Vec<usize> = (1..=n / 64).map(|b| b * 64).collect();
            for (i, &split) in boundaries.iter().enumerate() {
                assert_eq!(carried(&bytes[..n], &[split]), want, "{n} bytes split at {split}");
                assert_eq!(carried(&bytes[..n], &boundaries[..=i]), want, "{n} bytes split at every block to {split}");
            }
        }
        let big = data(3 * 1024 * 1024 + 7);
        let want: [u8; 32] = Sha256::digest(&big).into();
        assert_eq!(carried(&big, &[64 * 1024, 1024 * 1024, 3 * 1024 * 1024]), want);
    }

    #[test]
    fn only_whole_blocks_are_carried_and_a_damaged_record_is_refused() {
        let mut s = Sha256State::default();
        assert!(s.update_blocks(&[0u8; 65]).is_err());
        assert_eq!(s.len(), 0);
        s.update_blocks(&[0u8; 128]).unwrap();
        let words = s.words_hex();
        assert!(Sha256State::from_stored(&words, 100).is_err());
        assert!(Sha256State::from_stored(&words[1..], 128).is_err());
        assert!(Sha256State::from_stored(&words.to_uppercase(), 128).is_err());
        assert_eq!(Sha256State::from_stored(&words, 128).unwrap(), s);
    }
}
