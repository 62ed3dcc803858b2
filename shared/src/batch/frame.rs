//! The framed body of a blob batch (both directions): one line of JSON naming each blob's digest and
//! size, a `\n`, then the blobs' bytes concatenated in that order. Nothing else: the length of the
//! body is the header's line, its newline and the sum of the sizes, exactly.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::{MAX_BATCH_BLOBS, MAX_BATCH_BYTES, MAX_BATCH_HEADER};
use crate::domain::Digest;
use crate::error::{Error, Result};

/// The media type of a framed batch (requests may also say `application/octet-stream`).
pub const CONTENT_TYPE: &str = "application/vnd.helix.blob-batch";

/// One blob of a frame's header.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    pub digest: String,
    #[serde(deserialize_with = "crate::http::whole_number")]
    pub size: u64,
}

/// The header of a publish request.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct PublishHeader {
    blobs: Vec<Entry>,
}

/// The header of a fetch answer: the blobs that follow, and the digests asked for that do not.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct FetchHeader {
    pub blobs: Vec<Entry>,
    /// Not linked in the workspace.
    #[serde(default)]
    pub missing: Vec<String>,
    /// Linked, but left out of this answer (larger than `inline_max`, or over the answer's byte
    /// budget): fetch them singly or in another batch.
    #[serde(default)]
    pub deferred: Vec<String>,
}

/// A frame of `header` (one JSON line) and `blobs`.
pub fn encode<H: Serialize>(header: &H, blobs: &[&[u8]]) -> Vec<u8> {
    let head = serde_json::to_vec(header).expect("serializable header");
    let mut out = Vec::with_capacity(head.len() + 1 + blobs.iter().map(|b| b.len()).sum::<usize>());
    out.extend_from_slice(&head);
    out.push(b'\n');
    for b in blobs {
        out.extend_from_slice(b);
    }
    out
}

/// A publish request's frame of `(digest, bytes)`.
pub fn encode_publish(blobs: &[(Digest, &[u8])]) -> Vec<u8> {
    let header = PublishHeader {
        blobs: blobs.iter().map(|(d, b)| Entry { digest: d.to_string(), size: b.len() as u64 }).collect(),
    };
    encode(&header, &blobs.iter().map(|(_, b)| *b).collect::<Vec<_>>())
}

/// Split a frame into its header line and the bytes after it.
fn split(body: &[u8], max_header: usize) -> Result<(&[u8], &[u8])> {
    let window = &body[..body.len().min(max_header + 1)];
    match window.iter().position(|&b| b == b'\n') {
        Some(at) => Ok((&body[..at], &body[at + 1..])),
        None if body.len() > max_header => {
            Err(Error::BatchTooLarge(format!("the batch header is longer than {max_header} bytes")))
        }
        None => Err(Error::BadRequest("a batch is a JSON header line, a newline, then the bytes".into())),
    }
}

/// The blobs of a publish request, each `(digest, bytes)`, checked against the batch's limits (413
/// `batch_too_large`) and its own shape (400): 1..=`MAX_BATCH_BLOBS` distinct digests, at most
/// `MAX_BATCH_BYTES` of bytes, and a body exactly as long as the header says. Whether each blob's
/// bytes are its digest's is for the caller (a per-blob result).
pub fn decode_publish(body: &Bytes) -> Result<Vec<(Digest, Bytes)>> {
    let (head, rest) = split(body, MAX_BATCH_HEADER)?;
    let header: PublishHeader = serde_json::from_slice(head)
        .map_err(|e| Error::BadRequest(format!("invalid batch header (one line of JSON): {e}")))?;
    let n = header.blobs.len();
    if n == 0 {
        return Err(Error::BadRequest("a batch names at least one blob".into()));
    }
    if n > MAX_BATCH_BLOBS {
        return Err(Error::BatchTooLarge(format!("{n} blobs; a batch holds at most {MAX_BATCH_BLOBS}")));
    }
    let total = header.blobs.iter().try_fold(0u64, |sum, e| sum.checked_add(e.size));
    match total {
        Some(t) if t <= MAX_BATCH_BYTES => {}
        _ => return Err(Error::BatchTooLarge(format!("a batch holds at most {MAX_BATCH_BYTES} bytes of blobs"))),
    }
    let total = total.unwrap_or(0);
    if rest.len() as u64 != total {
        return Err(Error::BadRequest(format!("the header names {total} bytes of blobs; {} follow it", rest.len())));
    }
    let mut seen = std::collections::BTreeSet::new();
    let offset = body.len() - rest.len();
    let mut at = offset;
    let mut blobs = Vec::with_capacity(n);
    for e in header.blobs {
        let digest = Digest::parse(&e.digest)?;
        if !seen.insert(digest.clone()) {
            return Err(Error::BadRequest(format!("{digest} is named twice in the batch")));
        }
        let end = at + e.size as usize;
        blobs.push((digest, body.slice(at..end)));
        at = end;
    }
    Ok(blobs)
}

/// One blob of a fetch answer: its digest and its bytes (verified).
pub type Fetched = (Digest, Vec<u8>);

/// One blob of a fetch answer as served: its digest and its bytes within the answer (not verified).
pub type Served<'a> = (Digest, &'a [u8]);

/// A fetch answer's header and its blobs' bytes, split by the header's sizes but not hashed (for a
/// client that verifies each blob as it writes it).
pub fn split_fetch(body: &[u8]) -> Result<(FetchHeader, Vec<Served<'_>>)> {
    let (head, rest) = split(body, body.len())?;
    let header: FetchHeader =
        serde_json::from_slice(head).map_err(|e| Error::BadRequest(format!("invalid batch header: {e}")))?;
    let total: u64 = header.blobs.iter().map(|e| e.size).sum();
    if rest.len() as u64 != total {
        return Err(Error::BadRequest(format!("the header names {total} bytes; {} follow it", rest.len())));
    }
    let mut at = 0usize;
    let mut blobs = Vec::with_capacity(header.blobs.len());
    for e in &header.blobs {
        blobs.push((Digest::parse(&e.digest)?, &rest[at..at + e.size as usize]));
        at += e.size as usize;
    }
    Ok((header, blobs))
}

/// A fetch answer's header and its blobs, each checked against its digest (a client's side).
pub fn decode_fetch(body: &[u8]) -> Result<(FetchHeader, Vec<Fetched>)> {
    let (header, blobs) = split_fetch(body)?;
    let mut out = Vec::with_capacity(blobs.len());
    for (digest, bytes) in blobs {
        let actual = Digest::of(bytes);
        if actual != digest {
            return Err(Error::DigestMismatch { expected: digest.to_string(), actual: actual.to_string() });
        }
        out.push((digest, bytes.to_vec()));
    }
    Ok((header, out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_publish_frame_round_trips_and_its_shape_is_checked() {
        let (a, b) = (b"alpha".as_slice(), b"".as_slice());
        let frame = encode_publish(&[(Digest::of(a), a), (Digest::of(b"x"), b)]);
        let blobs = decode_publish(&Bytes::from(frame.clone())).unwrap();
        assert_eq!(blobs.len(), 2);
        assert_eq!((&blobs[0].0, blobs[0].1.as_ref()), (&Digest::of(a), a));
        assert!(blobs[1].1.is_empty());
        let short = Bytes::from(frame[..frame.len() - 1].to_vec());
        assert!(matches!(decode_publish(&short), Err(Error::BadRequest(_))));
        let twice = encode_publish(&[(Digest::of(a), a), (Digest::of(a), a)]);
        assert!(matches!(decode_publish(&Bytes::from(twice)), Err(Error::BadRequest(_))));
        assert!(matches!(decode_publish(&Bytes::from_static(b"no newline")), Err(Error::BadRequest(_))));
        assert!(matches!(decode_publish(&Bytes::from_static(b"{\"blobs\":[]}\n")), Err(Error::BadRequest(_))));
        let long = vec![b' '; MAX_BATCH_HEADER + 2];
        assert!(matches!(decode_publish(&Bytes::from(long)), Err(Error::BatchTooLarge(_))));
        let big = format!("{{\"blobs\":[{{\"digest\":\"{}\",\"size\":{}}}]}}\n", Digest::of(a), MAX_BATCH_BYTES + 1);
        assert!(matches!(decode_publish(&Bytes::from(big)), Err(Error::BatchTooLarge(_))));
    }
}
