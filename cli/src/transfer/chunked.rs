//! `helix push` of a file above one part: a chunked upload (helix_core::chunked). The SHA-256 of each
//! part (the registry signs each into its part's URL, so the store refuses other bytes) is taken in
//! the same read as the file's own (`hash_file_parts`; read again here only when the file changed in
//! between), then the parts the registry asks for are sent, `PART_JOBS` at a time, each streamed from
//! its range of the file, and the upload is completed (the registry verifies the whole file's SHA-256
//! before linking).
//!
//! Resume inside a file: the upload id is kept in the client's state folder (`Registry::state_dir`,
//! `uploads/` + 32 hex of SHA-256 of registry, workspace and digest) until the upload is complete.
//! The next push asks for the plan with that id and the registry answers the parts it holds already:
//! only the rest are sent. A plan the registry no longer knows (expired after a day, or completed)
//! starts a new upload.

use std::path::PathBuf;
use std::sync::atomic::Ordering;

use futures_util::{StreamExt, TryStreamExt};
use helix_core::chunked::{part_count, part_size_for};
use helix_core::domain::{Digest, DigestWriter, WorkspaceId};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use super::push::LocalFile;
use super::{CHUNK, Progress, in_file, other};
use crate::client::{ClientError, Registry};

/// Whether a file of `size` bytes goes up in parts, given `/v1/status`'s `upload_part_size` (a
/// registry that does not say takes single uploads only).
pub(super) fn part_size_of(status: &Value, size: u64) -> Option<u64> {
    let configured = status["upload_part_size"].as_u64().filter(|p| *p > 0)?;
    let part_size = part_size_for(size, configured);
    (part_count(size, part_size) >= 2).then_some(part_size)
}

/// Where the id of the chunked upload of `digest` to `ws` at this registry is kept.
fn record_path(registry: &Registry, ws: &WorkspaceId, digest: &Digest) -> Option<PathBuf> {
    let name = Digest::of(format!("{}\n{ws}\n{digest}", registry.url).as_bytes()).hex()[..32].to_owned();
    registry.state_dir().map(|d| d.join("uploads").join(name))
}

/// Parts of one file in flight at once: enough to keep the store busy while one part waits for its
/// answer (each is streamed in `CHUNK`s, so memory stays flat: docs/decisions.md, "Large pushes").
pub(super) const PART_JOBS: usize = 4;

/// SHA-256 of each part of `part_size` bytes of the file (on a blocking thread).
async fn part_digests(file: &LocalFile, part_size: u64) -> Result<Vec<Digest>, ClientError> {
    let (path, size) = (file.abs.clone(), file.size);
    tokio::task::spawn_blocking(move || -> Result<Vec<Digest>, ClientError> {
        use std::io::Read;
        let err = |e: std::io::Error| other(format!("{}: {e}", path.display()));
        let mut f = std::fs::File::open(&path).map_err(err)?;
        let mut buf = vec![0u8; 4 * CHUNK];
        let mut digests = Vec::new();
        let mut left = size;
        while left > 0 {
            let mut part = DigestWriter::default();
            let mut want = part_size.min(left);
            while want > 0 {
                let n = f.read(&mut buf[..(want as usize).min(4 * CHUNK)]).map_err(err)?;
                if n == 0 {
                    return Err(other(format!("{}: shorter than when it was hashed", path.display())));
                }
                part.update(&buf[..n]);
                want -= n as u64;
                left -= n as u64;
            }
            digests.push(part.finish());
        }
        Ok(digests)
    })
    .await
    .map_err(|e| other(e.to_string()))?
}

/// Upload `file` (of digest `digest`) to `ws` in parts of `part_size`, resuming a kept upload.
pub(super) async fn upload(
    registry: &Registry,
    ws: &WorkspaceId,
    digest: &Digest,
    file: &LocalFile,
    part_size: u64,
    hashed: Option<&[Digest]>,
    progress: &Progress,
) -> Result<(), ClientError> {
    let count = part_count(file.size, part_size) as usize;
    let sha: Vec<String> = match hashed.filter(|h| h.len() == count) {
        Some(hashed) => hashed.iter().map(ToString::to_string).collect(),
        None => part_digests(file, part_size).await?.iter().map(ToString::to_string).collect(),
    };
    let record = record_path(registry, ws, digest);
    let mut upload_id = match &record {
        Some(p) => tokio::fs::read_to_string(p).await.ok().map(|s| s.trim().to_owned()).filter(|s| !s.is_empty()),
        None => None,
    };
    let mut first = true;
    loop {
        let mut body = json!({"digest": digest.to_string(), "size": file.size, "part_sha256": sha});
        if let Some(id) = &upload_id {
            body["upload_id"] = json!(id);
        }
        let plan = match registry.post(&format!("/v1/workspaces/{ws}/uploads"), &body).await {
            Ok(plan) => plan,
            // A kept upload the registry no longer knows (expired, completed, another file): a new one.
            Err(ClientError::Refused { status: 400 | 404, .. }) if upload_id.is_some() => {
                forget(&record).await;
                upload_id = None;
                continue;
            }
            Err(e) => return Err(in_file(e, &file.path)),
        };
        if plan["exists"] == true {
            forget(&record).await;
            progress.add(file.size);
            return Ok(());
        }
        let id = plan["upload_id"].as_str().ok_or_else(|| other("the registry's plan has no upload_id"))?.to_owned();
        if upload_id.as_deref() != Some(id.as_str()) {
            if let Some(p) = &record {
                // Best effort: without the record a push still works, it only cannot resume.
                if let Some(dir) = p.parent() {
                    let _ = tokio::fs::create_dir_all(dir).await;
                }
                let _ = tokio::fs::write(p, &id).await;
            }
            upload_id = Some(id);
        }
        if first {
            let stored = plan["parts_stored"].as_array().map_or(0, Vec::len) as u64;
            progress.add((stored * part_size).min(file.size));
            first = false;
        }
        let parts = plan["parts"].as_array().cloned().unwrap_or_default();
        if parts.is_empty() {
            break;
        }
        // A URL about to expire is not used: the next answer has a fresh one (and lists what was sent).
        // After a failure no part is started, and the parts in flight are let finish (stored parts
        // are what a resumed push does not send again); then the first failure is the answer.
        let failed = std::sync::atomic::AtomicBool::new(false);
        let usable = |part: &&Value| {
            !failed.load(Ordering::Relaxed)
                && part["expires_at"].as_i64().is_none_or(|e| e - helix_core::domain::time::now_unix() >= 60)
        };
        let sent: Vec<Result<(), ClientError>> = futures_util::stream::iter(parts.iter().filter(usable).map(|part| {
            let failed = &failed;
            async move {
                let sent = send_part(registry, file, part, part_size, progress).await;
                if sent.is_err() {
                    failed.store(true, Ordering::Relaxed);
                }
                sent
            }
        }))
        .buffer_unordered(PART_JOBS)
        .collect()
        .await;
        sent.into_iter().collect::<Result<Vec<()>, _>>()?;
    }
    let path = format!("/v1/workspaces/{ws}/uploads/{digest}/complete");
    let answer = registry.post(&path, &json!({"upload_id": upload_id})).await.map_err(|e| in_file(e, &file.path))?;
    super::verifying::follow(registry, answer, &file.path).await.map_err(|e| in_file(e, &file.path))?;
    forget(&record).await;
    Ok(())
}

async fn forget(record: &Option<PathBuf>) {
    if let Some(p) = record {
        let _ = tokio::fs::remove_file(p).await;
    }
}

/// PUT one part, streamed from its range of the file.
async fn send_part(
    registry: &Registry,
    file: &LocalFile,
    part: &Value,
    part_size: u64,
    progress: &Progress,
) -> Result<(), ClientError> {
    let (Some(number), Some(url), Some(method)) =
        (part["number"].as_u64(), part["url"].as_str(), part["method"].as_str())
    else {
        return Err(other(format!("the registry's plan for {} has a part without a URL", file.path)));
    };
    let start = (number - 1) * part_size;
    let len = part_size.min(file.size.saturating_sub(start));
    let mut req = registry.presigned(method, url)?;
    for h in part["headers"].as_array().into_iter().flatten() {
        if let (Some(k), Some(v)) = (h[0].as_str(), h[1].as_str())
            && !k.eq_ignore_ascii_case("content-length")
        {
            req = req.header(k, v);
        }
    }
    let read_err = |e: std::io::Error| other(format!("{}: {e}", file.abs.display()));
    let mut handle = tokio::fs::File::open(&file.abs).await.map_err(read_err)?;
    handle.seek(std::io::SeekFrom::Start(start)).await.map_err(read_err)?;
    let done = progress.done.clone();
    let body = tokio_util::io::ReaderStream::with_capacity(handle.take(len), CHUNK).inspect_ok(move |chunk| {
        done.fetch_add(chunk.len() as u64, Ordering::Relaxed);
    });
    let req = req.header("content-length", len).body(reqwest::Body::wrap_stream(body));
    let resp = req
        .send()
        .await
        .map_err(|e| ClientError::Unreachable(format!("upload of part {number} of {}: {e}", file.path)))?;
    super::push::store_accepted(resp, &format!("part {number} of {}", file.path)).await
}
