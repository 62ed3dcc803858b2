//! `Range: bytes=…` on a blob GET (RFC 9110 §14): one range is served as 206 with `Content-Range`;
//! a range that starts at or past the end is 416 `range_not_satisfiable` (with `Content-Range:
//! bytes */size`); anything else (another unit, several ranges, a malformed value) is ignored and the
//! whole blob is served, as RFC 9110 allows. Used by the fetch function (inline blobs) and by
//! `helix serve`'s local presigned GET; S3 serves ranges of its presigned GETs itself.

use crate::error::{Error, Result};

/// One satisfiable range of a blob: bytes `start..=end`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteRange {
    pub start: u64,
    /// Inclusive.
    pub end: u64,
}

impl ByteRange {
    pub fn len(&self) -> u64 {
        self.end - self.start + 1
    }

    pub fn is_empty(&self) -> bool {
        false
    }

    /// The `Content-Range` of this range of a blob of `size` bytes.
    pub fn content_range(&self, size: u64) -> String {
        format!("bytes {}-{}/{size}", self.start, self.end)
    }
}

/// The range a `Range` header asks of a blob of `size` bytes: None to serve it whole.
pub fn resolve(header: Option<&str>, size: u64) -> Result<Option<ByteRange>> {
    let Some(spec) = header.map(str::trim).and_then(|h| h.strip_prefix("bytes=")) else {
        return Ok(None);
    };
    let spec = spec.trim();
    if spec.contains(',') {
        return Ok(None);
    }
    let Some((first, last)) = spec.split_once('-') else {
        return Ok(None);
    };
    let number = |s: &str| -> Option<u64> {
        let s = s.trim();
        (!s.is_empty() && s.len() <= 20 && s.bytes().all(|b| b.is_ascii_digit())).then(|| s.parse().ok()).flatten()
    };
    let unsatisfiable = || Err(Error::RangeNotSatisfiable { size });
    if first.trim().is_empty() {
        // `bytes=-n`: the last n bytes.
        return match number(last) {
            Some(0) => unsatisfiable(),
            Some(_) if size == 0 => unsatisfiable(),
            Some(n) => Ok(Some(ByteRange { start: size.saturating_sub(n), end: size - 1 })),
            None => Ok(None),
        };
    }
    let Some(start) = number(first) else {
        return Ok(None);
    };
    // `bytes=a-` and `bytes=a-b` (an end past the blob is clipped to it).
    let end = if last.trim().is_empty() {
        u64::MAX
    } else {
        match number(last) {
            Some(end) if end >= start => end,
            _ => return Ok(None),
        }
    };
    if start >= size {
        return unsatisfiable();
    }
    Ok(Some(ByteRange { start, end: end.min(size - 1) }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(start: u64, end: u64) -> Option<ByteRange> {
        Some(ByteRange { start, end })
    }

    #[test]
    fn one_range_is_resolved_against_the_size() {
        assert_eq!(resolve(Some("bytes=0-9"), 100).unwrap(), r(0, 9));
        assert_eq!(resolve(Some("bytes=90-"), 100).unwrap(), r(90, 99));
        assert_eq!(resolve(Some("bytes=90-1000"), 100).unwrap(), r(90, 99), "an end past the blob is clipped");
        assert_eq!(resolve(Some("bytes=-10"), 100).unwrap(), r(90, 99));
        assert_eq!(resolve(Some("bytes=-1000"), 100).unwrap(), r(0, 99));
        assert_eq!(resolve(Some("bytes=99-99"), 100).unwrap(), r(99, 99));
        assert_eq!(r(90, 99).unwrap().content_range(100), "bytes 90-99/100");
        assert_eq!(r(90, 99).unwrap().len(), 10);
    }

    #[test]
    fn a_range_past_the_end_is_416_and_anything_malformed_is_ignored() {
        for past in ["bytes=100-", "bytes=100-200", "bytes=-0"] {
            assert!(matches!(resolve(Some(past), 100), Err(Error::RangeNotSatisfiable { size: 100 })), "{past}");
        }
        for ignored in ["items=0-1", "bytes=0-1,5-6", "bytes=a-b", "bytes=5-1", "bytes=", "bytes=-", "0-1", "bytes=1"] {
            assert_eq!(resolve(Some(ignored), 100).unwrap(), None, "{ignored}");
        }
        assert_eq!(resolve(None, 100).unwrap(), None);
        assert_eq!(resolve(Some("bytes=99999999999999999999999-"), 100).unwrap(), None, "overflow is malformed");
    }
}
