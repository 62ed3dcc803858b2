//! `helix push` and `helix pull`: a directory to a bundle version and back.
//!
//! Push: every regular file under DIR is hashed as a stream; the manifest is built and checked by the
//! registry's own rules (`Manifest::parse`; its paths before anything is hashed); symlinks, special
//! files and names that are not UTF-8 are refused up front, all of them listed at once. While files
//! hash, one request per 1,000 new digests asks which the workspace lacks, and those are uploaded, a
//! few requests at a time: files up to 1 MiB (and `inline_max`) many to a batch request (up to 1,000
//! files or 4 MiB, their bytes kept from the hashing), larger ones inline up to the registry's
//! `inline_max`, through a presigned PUT and `complete` above it (`push`: waves). A re-run after an interrupt
//! re-hashes, finds what is already linked and uploads only the rest. Last, the manifest is registered.
//!
//! Pull: the manifest is fetched and its digest checked against the version's record; small files
//! come many to a batch fetch, the rest (and whatever the registry defers) one by one; each file is
//! streamed into a temporary file beside its final name, hashed as it arrives, and renamed into place
//! only when its size and SHA-256 match the manifest. A file already in place with the right digest is
//! kept (a re-run resumes); one with other content is refused, never overwritten.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use helix_core::domain::{Digest, DigestWriter, WorkspaceId};
use serde_json::Value;

use crate::client::ClientError;

/// Read and write in chunks of this size (hashing, uploads, downloads).
mod batch;
mod chunked;
mod progress;
mod pull;
mod push;
mod verifying;

pub use progress::{Progress, bytes, progress_line};
pub use pull::{PARTIAL_PREFIX, pull, resumable_name};
pub use push::{LocalFile, manifest, push, walk};

const CHUNK: usize = 256 * 1024;

fn other(what: impl std::fmt::Display) -> ClientError {
    ClientError::Other(what.to_string())
}

/// SHA-256 and length of a file, read as a stream on a blocking thread (`done` counts its bytes).
pub(crate) fn hash_file(path: &Path, done: &AtomicU64) -> Result<(Digest, u64), ClientError> {
    let file = std::fs::File::open(path).map_err(|e| other(format!("{}: {e}", path.display())))?;
    hash_reader(file, path, done)
}

/// `hash_file` of a file that goes up in parts of `part_size` (`chunked::part_size_of`): the SHA-256 of
/// each part too, taken in the same read of the file. The reading thread hashes the whole file; a
/// second thread hashes the parts from the same buffers (a few MiB in flight, memory flat in the
/// size), so the two hashes cost one read and, on two cores, about the time of one. The parts are
/// None when the file's length at reading is not the one its parts were sized for (it changed since
/// the walk): the upload hashes them again.
pub(crate) fn hash_file_parts(
    path: &Path,
    done: &AtomicU64,
    size: u64,
    part_size: Option<u64>,
) -> Result<(Digest, u64, Option<Vec<Digest>>), ClientError> {
    let Some(part_size) = part_size.filter(|p| *p > 0) else {
        let (digest, len) = hash_file(path, done)?;
        return Ok((digest, len, None));
    };
    use std::io::Read;
    let err = |e: std::io::Error| other(format!("{}: {e}", path.display()));
    let mut file = std::fs::File::open(path).map_err(err)?;
    // (bytes, whether they end a part); bounded: at most 4 buffers wait for the part hasher.
    let (to_parts, from_reader) = std::sync::mpsc::sync_channel::<(Vec<u8>, bool)>(4);
    // Hashed buffers come back to be read into again.
    let (give_back, take_back) = std::sync::mpsc::channel::<Vec<u8>>();
    std::thread::scope(|scope| {
        let parts = scope.spawn(move || {
            let mut digests = Vec::new();
            let mut part = DigestWriter::default();
            for (bytes, ends) in from_reader {
                part.update(&bytes);
                if ends {
                    digests.push(std::mem::take(&mut part).finish());
                }
                let _ = give_back.send(bytes);
            }
            if !part.is_empty() {
                // The last part, shorter than the others.
                digests.push(part.finish());
            }
            digests
        });
        let mut whole = DigestWriter::default();
        let mut in_part = 0u64;
        let read = loop {
            // Reads stop at each part's end, so every buffer lies within one part.
            let want = (part_size - in_part).min(4 * CHUNK as u64) as usize;
            let mut buf = take_back.try_recv().unwrap_or_default();
            buf.resize(want, 0);
            let n = match file.read(&mut buf) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => break Err(err(e)),
            };
            if n == 0 {
                break Ok(());
            }
            buf.truncate(n);
            whole.update(&buf);
            done.fetch_add(n as u64, Ordering::Relaxed);
            in_part += n as u64;
            let ends = in_part == part_size;
            if ends {
                in_part = 0;
            }
            if to_parts.send((buf, ends)).is_err() {
                break Err(other("the part hasher stopped"));
            }
        };
        drop(to_parts);
        let digests = parts.join().map_err(|_| other("the part hasher panicked"))?;
        read?;
        let len = whole.len();
        Ok((whole.finish(), len, (len == size).then_some(digests)))
    })
}

fn hash_reader(mut file: std::fs::File, path: &Path, done: &AtomicU64) -> Result<(Digest, u64), ClientError> {
    use std::io::Read;
    let mut digest = DigestWriter::default();
    // As large as the file, up to 1 MiB: 10,000 small files must not leave 10,000 MiB-sized buffers
    // in the allocator's per-thread arenas.
    let size = file.metadata().map(|m| m.len()).unwrap_or(0);
    let mut buf = vec![0u8; (size as usize).clamp(8 * 1024, 4 * CHUNK)];
    loop {
        let n = match file.read(&mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(other(format!("{}: {e}", path.display()))),
        };
        if n == 0 {
            let len = digest.len();
            return Ok((digest.finish(), len));
        }
        digest.update(&buf[..n]);
        done.fetch_add(n as u64, Ordering::Relaxed);
    }
}

/// What `helix push` and `helix pull` tune.
#[derive(Clone, Copy)]
pub struct Options {
    /// Files hashed, uploaded or downloaded at once.
    pub jobs: usize,
    /// No progress drawing, even on a terminal.
    pub quiet: bool,
    /// The registry's `inline_max` when the caller knows it already (else `/v1/status` is asked).
    pub inline_max: Option<u64>,
}

/// The largest blob the registry takes inline, as `/v1/status` says (its default when it does not).
pub fn inline_max_of(status: &Value) -> u64 {
    status["inline_max"].as_u64().unwrap_or(helix_core::config::DEFAULT_INLINE_MAX)
}

fn blob_path(ws: &WorkspaceId, digest: &Digest) -> String {
    format!("/v1/workspaces/{ws}/blobs/{digest}")
}

/// A refusal about one file names the file.
fn in_file(e: ClientError, path: &str) -> ClientError {
    match e {
        ClientError::Refused { status, reason, detail } => {
            ClientError::Refused { status, reason, detail: format!("{path}: {detail}") }
        }
        e => e,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One read gives the file's SHA-256 and each part's (the last one shorter, or whole when the
    /// size is a multiple of the part size); a file whose length is not the one its parts were sized
    /// for gives no parts (the upload hashes them again).
    #[test]
    fn parts_are_hashed_in_the_same_read_as_the_file() {
        let dir = tempfile::tempdir().unwrap();
        for (len, part) in [(10 * CHUNK + 5, 3 * CHUNK as u64 + 1), (8 * CHUNK, 2 * CHUNK as u64), (100, 7)] {
            let bytes: Vec<u8> = (0..len).map(|i| (i * 31 % 253) as u8).collect();
            let path = dir.path().join("f");
            std::fs::write(&path, &bytes).unwrap();
            let done = AtomicU64::new(0);
            let (digest, read, parts) = hash_file_parts(&path, &done, len as u64, Some(part)).unwrap();
            assert_eq!((digest, read, done.load(Ordering::Relaxed)), (Digest::of(&bytes), len as u64, len as u64));
            let want: Vec<Digest> = bytes.chunks(part as usize).map(Digest::of).collect();
            assert_eq!(parts, Some(want), "{len} in parts of {part}");
            let (_, _, grown) = hash_file_parts(&path, &done, len as u64 - 1, Some(part)).unwrap();
            assert_eq!(grown, None);
        }
    }
}
