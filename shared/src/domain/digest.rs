//! Content digests: `sha256:` + 64 lowercase hex. The only accepted form, so a digest string can be
//! used as a path or key component without further escaping (no uppercase twins, no traversal).

use std::fmt;

use base64::Engine;
use sha2::{Digest as _, Sha256};

use crate::error::{Error, Result};

#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    hex: String,
}

/// Only `0-9a-f`: the one form this registry writes hex in (digests, HMACs), so a check of a value
/// that should be one is a comparison of shape before any decoding.
pub fn is_lower_hex(s: &str) -> bool {
    s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

impl Digest {
    pub const PREFIX: &'static str = "sha256:";

    /// Parse `sha256:<64 lowercase hex>`; anything else is `invalid_digest`.
    pub fn parse(s: &str) -> Result<Digest> {
        let hex = s
            .strip_prefix(Self::PREFIX)
            .ok_or_else(|| Error::InvalidDigest("a digest starts with 'sha256:'".into()))?;
        if hex.len() != 64 {
            return Err(Error::InvalidDigest("a sha256 digest has 64 hex characters".into()));
        }
        if !is_lower_hex(hex) {
            return Err(Error::InvalidDigest("a digest is lowercase hex".into()));
        }
        Ok(Digest { hex: hex.to_owned() })
    }

    pub fn of(bytes: &[u8]) -> Digest {
        Digest::from_raw(Sha256::digest(bytes).into())
    }

    pub fn from_raw(raw: [u8; 32]) -> Digest {
        Digest { hex: hex::encode(raw) }
    }

    /// From S3's base64 `ChecksumSHA256` value; `None` if it is not a 32-byte base64 string.
    pub fn from_base64(b64: &str) -> Option<Digest> {
        let raw = base64::engine::general_purpose::STANDARD.decode(b64).ok()?;
        Some(Digest::from_raw(raw.try_into().ok()?))
    }

    pub fn hex(&self) -> &str {
        &self.hex
    }

    pub fn raw(&self) -> [u8; 32] {
        let mut out = [0u8; 32];
        hex::decode_to_slice(&self.hex, &mut out).expect("validated hex");
        out
    }

    /// Where the blob lives below a store's `blobs/` root: `sha256/{hex[0..2]}/{hex}`, the same on S3
    /// and on disk.
    pub fn storage_key(&self) -> String {
        format!("sha256/{}/{}", &self.hex[..2], self.hex)
    }

    /// The form S3 uses for `x-amz-checksum-sha256`.
    pub fn base64(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(self.raw())
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", Self::PREFIX, self.hex)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl serde::Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Digest, D::Error> {
        let s = String::deserialize(d)?;
        Digest::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// Incremental SHA-256 over a stream, counting bytes as it goes.
#[derive(Default, Clone)]
pub struct DigestWriter {
    hasher: Sha256,
    len: u64,
}

impl DigestWriter {
    pub fn update(&mut self, chunk: &[u8]) {
        self.hasher.update(chunk);
        self.len += chunk.len() as u64;
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn finish(self) -> Digest {
        Digest::from_raw(self.hasher.finalize().into())
    }
}

/// So a reader can be hashed with `std::io::copy`.
impl std::io::Write for DigestWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.update(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FOO: &str = "sha256:2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae";

    #[test]
    fn digest_of_bytes_matches_known_value() {
        assert_eq!(Digest::of(b"foo").to_string(), FOO);
        assert_eq!(Digest::parse(FOO).unwrap(), Digest::of(b"foo"));
    }

    #[test]
    fn malformed_digests_are_refused() {
        let upper = FOO.to_uppercase().replace("SHA256", "sha256");
        for bad in [
            "",
            "sha256:",
            "md5:2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae",
            "2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae",
            &FOO[..70],
            &upper,
            "sha256:../../../../etc/passwd/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
            "sha256:2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7a/",
            &format!("{FOO}0"),
        ] {
            assert!(matches!(Digest::parse(bad), Err(Error::InvalidDigest(_))), "accepted {bad:?}");
        }
    }

    #[test]
    fn base64_round_trips_through_s3_checksum_form() {
        let d = Digest::of(b"foo");
        assert_eq!(Digest::from_base64(&d.base64()), Some(d));
        assert_eq!(Digest::from_base64("not base64!"), None);
        assert_eq!(Digest::from_base64("AAAA"), None);
    }

    #[test]
    fn streaming_writer_equals_one_shot_digest() {
        let mut w = DigestWriter::default();
        w.update(b"fo");
        w.update(b"o");
        assert_eq!(w.len(), 3);
        assert_eq!(w.finish(), Digest::of(b"foo"));
    }
}
