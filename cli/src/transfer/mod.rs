//! `helix push` and `helix pull`: a directory to a bundle version and back.
//!
//! Push: every regular file under DIR is hashed as a stream; the manifest is built and checked by the
//! registry's own rules (`Manifest::parse`) before a byte leaves the machine; symlinks, special files
//! and names that are not UTF-8 are refused up front, all of them listed at once. Then one request per 1,000
//! digests asks which the workspace lacks, and those are uploaded, a few requests at a time: files up
//! to 1 MiB (and `inline_max`) many to a batch request (up to 1,000 files or 4 MiB), larger ones inline
//! up to the registry's `inline_max`, through a presigned PUT and `complete` above it. A re-run after an interrupt
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
