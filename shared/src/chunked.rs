//! Chunked uploads: a file of more than one part is uploaded part by part, each part's SHA-256 signed
//! into its presigned URL so the store refuses other bytes (S3: UploadPart with
//! `x-amz-checksum-sha256`; the embedded store: the local part route, hashed while written), then
//! joined into the upload's staging object (on disk without a copy: the parts' file sealed and
//! hashed), re-hashed whole and linked by `blobs::complete_now` (or, above HELIX_VERIFY_INLINE_MAX,
//! by `crate::verify` in resumable steps) with every rule of a single upload (docs/decisions.md,
//! "Chunked uploads" and "Large pushes").
//!
//! The plan (digest, size, part size, the store's id of the upload) is a small document beside the
//! staging key (`uploads/{ws}/{id}.plan`), written create-only by the registry and never by a client:
//! asking again with the same `upload_id` answers the parts the store holds already (S3 ListParts)
//! and URLs for the rest, so an interrupted push resumes inside a file.

use std::collections::BTreeSet;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::App;
use crate::domain::{Digest, WorkspaceId};
use crate::error::{Error, Result};
use crate::ports::{Presigned, PutOutcome, StoredPart, UPLOAD_URL_TTL, UploadRef};

pub use crate::ports::MAX_PARTS;
/// The largest file of a chunked upload: S3's largest object, 5 TiB.
pub const MAX_CHUNKED_SIZE: u64 = crate::domain::manifest::MAX_FILE_SIZE;
/// Presigned part URLs in one answer, at most (10,000 would pass Lambda's 6 MB response): the client
/// sends these, then asks again with its `upload_id` for the next ones.
pub const PARTS_PER_PLAN: usize = 1000;

/// The part size of a file of `size` bytes: the configured one, or larger when the file needs more
/// than 10,000 parts of it.
pub fn part_size_for(size: u64, configured: u64) -> u64 {
    configured.max(size.div_ceil(MAX_PARTS))
}

/// The number of parts of `size` bytes in parts of `part_size`.
pub fn part_count(size: u64, part_size: u64) -> u64 {
    size.div_ceil(part_size)
}

/// The size of part `number` (1-based) of a file of `size` bytes.
fn part_len(size: u64, part_size: u64, number: u64) -> u64 {
    part_size.min(size - (number - 1) * part_size)
}

/// One part to send: its number and the presigned request that sends it.
#[derive(Debug, Clone, Serialize)]
pub struct PartUpload {
    pub number: u32,
    #[serde(flatten)]
    pub request: Presigned,
}

/// What `POST …/uploads` answers for a chunked upload, beside the upload id.
#[derive(Debug, Serialize)]
pub struct PartsPlan {
    pub part_size: u64,
    pub part_count: u64,
    /// Parts still to send (at most `PARTS_PER_PLAN`; ask again for the rest).
    pub parts: Vec<PartUpload>,
    /// Parts the store holds already, with the declared size and SHA-256.
    pub parts_stored: Vec<u32>,
}

/// What a client asks of a chunked upload: each part's SHA-256 in order, and the upload to resume.
#[derive(Clone, Copy)]
pub struct PartsRequest<'a> {
    pub part_sha256: &'a [Digest],
    pub upload_id: Option<&'a str>,
}

/// The plan document of a chunked upload.
#[derive(Debug, Serialize, Deserialize)]
struct PlanRecord {
    digest: String,
    size: u64,
    part_size: u64,
    part_count: u64,
    store_id: String,
}

/// Plan (or re-plan, with `upload_id`) a chunked upload of `size` bytes hashing to `digest`, whose
/// parts hash to `part_sha256` in order. The caller checked the workspace and the existing link.
pub async fn plan(
    app: &App,
    ws: &WorkspaceId,
    digest: &Digest,
    size: u64,
    request: PartsRequest<'_>,
) -> Result<(UploadRef, PartsPlan)> {
    let PartsRequest { part_sha256, upload_id } = request;
    if size == 0 || size > MAX_CHUNKED_SIZE {
        return Err(Error::BadRequest(format!("size must be an integer in 1..={MAX_CHUNKED_SIZE}")));
    }
    let part_size = part_size_for(size, app.config.upload_part_size);
    let count = part_count(size, part_size);
    if count < 2 {
        return Err(Error::BadRequest(format!(
            "a file of at most one part ({part_size} bytes) is one upload: leave out part_sha256"
        )));
    }
    if part_sha256.len() as u64 != count {
        return Err(Error::BadRequest(format!(
            "part_sha256 must have {count} entries: the SHA-256 of each part of {part_size} bytes (the last one shorter)"
        )));
    }
    let (upload, record, stored) = match upload_id {
        None => {
            let upload = UploadRef::new(ws);
            let store_id = app.blobs.begin_parts(&upload, part_size).await?;
            let record = PlanRecord { digest: digest.to_string(), size, part_size, part_count: count, store_id };
            let bytes = Bytes::from(serde_json::to_vec(&record).map_err(|e| Error::Internal(e.to_string()))?);
            if app.blobs.put_plan(&upload, bytes).await? != PutOutcome::Created {
                return Err(Error::Internal("a new upload id already has a plan".into()));
            }
            (upload, record, Vec::new())
        }
        Some(id) => {
            let upload = UploadRef::parse(ws, id)?;
            let record = read_plan(app, &upload).await?.ok_or(Error::UploadMissing)?;
            if record.digest != digest.to_string() || record.size != size {
                return Err(Error::BadRequest(format!(
                    "upload {id} is an upload of {} ({} bytes), not of {digest} ({size} bytes)",
                    record.digest, record.size
                )));
            }
            if record.part_size != part_size {
                return Err(Error::BadRequest(format!(
                    "upload {id} has parts of {} bytes: part_sha256 must have {} entries of those",
                    record.part_size, record.part_count
                )));
            }
            let stored = if app.blobs.staged(&upload).await?.is_some() {
                // Joined already (a complete that failed after the join): every part is there.
                (1..=count as u32).collect()
            } else {
                let parts = app.blobs.stored_parts(&upload, &record.store_id).await?.ok_or(Error::UploadMissing)?;
                matching(&parts, &record, part_sha256)
            };
            (upload, record, stored)
        }
    };
    let stored_set: BTreeSet<u32> = stored.iter().copied().collect();
    let mut parts = Vec::new();
    for number in (1..=count as u32).filter(|n| !stored_set.contains(n)).take(PARTS_PER_PLAN) {
        let len = part_len(size, part_size, u64::from(number));
        let sha = &part_sha256[number as usize - 1];
        let request = app.blobs.presign_part(&upload, &record.store_id, number, sha, len, UPLOAD_URL_TTL).await?;
        parts.push(PartUpload { number, request });
    }
    Ok((upload, PartsPlan { part_size, part_count: count, parts, parts_stored: stored }))
}

/// The parts the store holds with the size and (where the store keeps it) SHA-256 declared now.
fn matching(parts: &[StoredPart], record: &PlanRecord, part_sha256: &[Digest]) -> Vec<u32> {
    parts
        .iter()
        .filter(|p| {
            let n = u64::from(p.number);
            (1..=record.part_count).contains(&n)
                && p.size == part_len(record.size, record.part_size, n)
                && p.sha256.as_ref().is_none_or(|s| s == &part_sha256[p.number as usize - 1])
        })
        .map(|p| p.number)
        .collect()
}

async fn read_plan(app: &App, upload: &UploadRef) -> Result<Option<PlanRecord>> {
    match app.blobs.get_plan(upload).await? {
        None => Ok(None),
        Some(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| Error::Internal(format!("the plan of {}: {e}", upload.storage_key()))),
    }
}

/// A chunked upload, joined: what `complete` discards with it.
pub(crate) struct Joined {
    store_id: String,
}

/// A chunked upload whose parts are all stored (or joined already): what `join_ready` joins.
pub(crate) struct Ready {
    record: PlanRecord,
    /// The parts in order, or None when the staging object is there already.
    parts: Option<Vec<StoredPart>>,
}

impl Ready {
    /// The file's size, as planned.
    pub(crate) fn size(&self) -> u64 {
        self.record.size
    }
}

/// Before `complete` reads a staged upload: when `upload` is chunked, check every part is stored with
/// its size (else 409 `upload_incomplete`, naming the missing ones). None for an upload that is not
/// chunked.
pub(crate) async fn ready(app: &App, upload: &UploadRef, digest: &Digest) -> Result<Option<Ready>> {
    let Some(record) = read_plan(app, upload).await? else { return Ok(None) };
    if record.digest != digest.to_string() {
        return Err(Error::BadRequest(format!(
            "upload {} is an upload of {}, not of {digest}",
            upload.id, record.digest
        )));
    }
    if app.blobs.staged(upload).await?.is_some() {
        return Ok(Some(Ready { record, parts: None }));
    }
    let Some(parts) = app.blobs.stored_parts(upload, &record.store_id).await? else {
        // Joined by a concurrent complete since the look above, or gone.
        return match app.blobs.staged(upload).await? {
            Some(_) => Ok(Some(Ready { record, parts: None })),
            None => Err(Error::UploadMissing),
        };
    };
    let mut ordered = Vec::with_capacity(record.part_count as usize);
    let mut missing = Vec::new();
    for n in 1..=record.part_count {
        let want = part_len(record.size, record.part_size, n);
        match parts.iter().find(|p| u64::from(p.number) == n && p.size == want) {
            Some(p) => ordered.push(p.clone()),
            None => missing.push(n.to_string()),
        }
    }
    if !missing.is_empty() {
        let shown = if missing.len() > 20 { format!("{}, …", missing[..20].join(", ")) } else { missing.join(", ") };
        return Err(Error::UploadIncomplete(format!(
            "{} of {} parts are missing (or not of their size): {shown}",
            missing.len(),
            record.part_count
        )));
    }
    Ok(Some(Ready { record, parts: Some(ordered) }))
}

/// Join a ready chunked upload's parts into its staging object (already joined: nothing to do).
pub(crate) async fn join_ready(app: &App, upload: &UploadRef, ready: Ready) -> Result<Joined> {
    if let Some(parts) = &ready.parts {
        app.blobs.join_parts(upload, &ready.record.store_id, parts).await?;
    }
    Ok(Joined { store_id: ready.record.store_id })
}

/// `ready`, then `join_ready`: a chunked upload's staging object, joined. None for an upload that is
/// not chunked.
pub(crate) async fn join(app: &App, upload: &UploadRef, digest: &Digest) -> Result<Option<Joined>> {
    match ready(app, upload, digest).await? {
        Some(r) => join_ready(app, upload, r).await.map(Some),
        None => Ok(None),
    }
}

/// A chunked upload as joined (its plan read, nothing joined): what to discard with it. None when it
/// has no plan (not chunked, or removed already).
pub(crate) async fn joined(app: &App, upload: &UploadRef) -> Result<Option<Joined>> {
    Ok(read_plan(app, upload).await?.map(|r| Joined { store_id: r.store_id }))
}

/// Remove a chunked upload's plan and parts (best effort: the lifecycle removes what is left).
pub(crate) async fn discard(app: &App, upload: &UploadRef, joined: &Joined) {
    if let Err(e) = app.blobs.discard_parts(upload, &joined.store_id).await {
        tracing::warn!(error = %e, upload = %upload.storage_key(), "could not remove a chunked upload's plan or parts");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_grow_so_that_ten_thousand_hold_the_file_and_the_last_is_shorter() {
        let mib = 1024 * 1024;
        assert_eq!(part_size_for(100 * mib, 64 * mib), 64 * mib);
        let tib = 1024 * 1024 * mib;
        let grown = part_size_for(tib, 64 * mib);
        assert!(grown > 64 * mib && part_count(tib, grown) <= MAX_PARTS, "{grown}");
        let five = part_size_for(MAX_CHUNKED_SIZE, 64 * mib);
        assert!(part_count(MAX_CHUNKED_SIZE, five) <= MAX_PARTS && five <= 5 * 1024 * mib);
        assert_eq!(part_count(11 * mib, 5 * mib), 3);
        assert_eq!(part_len(11 * mib, 5 * mib, 3), mib);
        assert_eq!(part_len(10 * mib, 5 * mib, 2), 5 * mib);
    }
}
