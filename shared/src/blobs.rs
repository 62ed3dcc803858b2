//! Blob use cases shared by the publish and fetch functions: verify stored bytes, inline put,
//! direct-upload start and completion, fetch. A blob is visible in a workspace only once it is
//! linked there, and it is linked only after its bytes were verified against its digest.

use std::time::Duration;

use bytes::Bytes;
use serde::Serialize;
use serde_json::{Value, json};
use tokio::io::AsyncReadExt;

use crate::App;
use crate::auth::Principal;
use crate::domain::time::now_unix;
use crate::domain::{AuditDraft, Digest, DigestWriter, Outcome, WorkspaceId};
use crate::error::{Error, Result};
use crate::ports::{BlobLink, BlobStore, Change, Commit, Presigned, PutOutcome};

/// How long a presigned upload URL lives.
pub const UPLOAD_URL_TTL: Duration = Duration::from_secs(900);
/// How long a presigned download URL lives.
pub const DOWNLOAD_URL_TTL: Duration = Duration::from_secs(300);
/// Largest single-request upload (S3's PutObject limit).
pub const MAX_UPLOAD_SIZE: u64 = 5 * 1024 * 1024 * 1024;

const READ_CHUNK: usize = 64 * 1024;

/// Proof that the object stored under `digest` has that SHA-256.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verified {
    pub size: u64,
    /// True if the store's own full-object checksum was used instead of re-reading the bytes.
    pub by_store_checksum: bool,
}

/// Verify the stored object: the store's own full-object SHA-256 when it has one, otherwise a
/// streaming re-hash (never trusting that the store checked bytes it cannot show a checksum for).
pub async fn verify_object(store: &dyn BlobStore, digest: &Digest) -> Result<Verified> {
    let head = store.head(digest).await?.ok_or_else(|| Error::BlobMissing(digest.to_string()))?;
    if let Some(stored) = head.stored_sha256 {
        if &stored != digest {
            return Err(Error::BlobIntegrity(format!("store checksum {stored} for {digest}")));
        }
        return Ok(Verified { size: head.size, by_store_checksum: true });
    }
    let mut reader = store.get(digest).await?.ok_or_else(|| Error::BlobMissing(digest.to_string()))?;
    let mut hasher = DigestWriter::default();
    let mut buf = vec![0u8; READ_CHUNK];
    loop {
        let n =
            reader.body.read(&mut buf).await.map_err(|e| Error::unavailable(crate::error::Dependency::BlobStore, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    let size = hasher.len();
    let actual = hasher.finish();
    if &actual != digest {
        return Err(Error::BlobIntegrity(format!("stored bytes hash to {actual}, not {digest}")));
    }
    Ok(Verified { size, by_store_checksum: false })
}

/// Result of linking a blob into a workspace.
#[derive(Debug, Clone, Serialize)]
pub struct Linked {
    pub digest: Digest,
    pub workspace_id: String,
    pub size: u64,
    /// True if this request created the link (HTTP 201), false if it was already there (200).
    pub created: bool,
}

/// Who is acting and under which request id: what every audit event of a use case records.
#[derive(Clone, Copy)]
pub struct Caller<'a> {
    pub principal: &'a Principal,
    pub request_id: &'a str,
}

/// Link a verified blob into `ws`, with its audit event in the same commit.
async fn link(
    app: &App,
    caller: Caller<'_>,
    ws: &WorkspaceId,
    digest: &Digest,
    size: u64,
    action: &str,
    details: Value,
) -> Result<Linked> {
    let change = Change::LinkBlob(BlobLink {
        workspace_id: ws.to_string(),
        digest: digest.clone(),
        size,
        linked_at: now_unix(),
        linked_by: caller.principal.actor(),
    });
    let event = AuditDraft {
        stream: ws.to_string(),
        actor: caller.principal.actor(),
        action: action.into(),
        entity_type: "blob".into(),
        entity_id: digest.to_string(),
        outcome: Outcome::Success,
        request_id: caller.request_id.into(),
        details,
    };
    let commit = app.meta.commit(change, event).await?;
    Ok(Linked {
        digest: digest.clone(),
        workspace_id: ws.to_string(),
        size,
        created: matches!(commit, Commit::Applied(_)),
    })
}

/// PUT of a whole blob in the request body.
pub async fn put_inline(
    app: &App,
    caller: Caller<'_>,
    ws: &WorkspaceId,
    digest: &Digest,
    body: Bytes,
) -> Result<Linked> {
    let limit = app.config.inline_max;
    if body.len() as u64 > limit {
        return Err(Error::PayloadTooLarge { limit });
    }
    let actual = Digest::of(&body);
    if &actual != digest {
        return Err(Error::DigestMismatch { expected: digest.to_string(), actual: actual.to_string() });
    }
    let size = body.len() as u64;
    if app.meta.blob_link(ws, digest).await?.is_some() {
        return Ok(Linked { digest: digest.clone(), workspace_id: ws.to_string(), size, created: false });
    }
    let object = match app.blobs.put_if_absent(digest, body).await? {
        PutOutcome::Created => "created",
        PutOutcome::Existed => "existing",
    };
    link(app, caller, ws, digest, size, "blob.link", json!({"size": size, "object": object, "via": "inline"})).await
}

#[derive(Debug, Serialize)]
pub struct UploadPlan {
    pub digest: Digest,
    pub size: u64,
    /// True if the store already holds this object: call complete to link it, no upload needed.
    pub exists: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upload: Option<Presigned>,
}

/// POST uploads: a presigned PUT for a blob the store does not have yet.
pub async fn start_upload(app: &App, digest: &Digest, size: u64) -> Result<UploadPlan> {
    if size == 0 || size > MAX_UPLOAD_SIZE {
        return Err(Error::BadRequest(format!("size must be in 1..={MAX_UPLOAD_SIZE}")));
    }
    if let Some(head) = app.blobs.head(digest).await?
        && head.size == size
    {
        return Ok(UploadPlan { digest: digest.clone(), size, exists: true, upload: None });
    }
    let upload = app.blobs.presign_put(digest, size, UPLOAD_URL_TTL).await?;
    Ok(UploadPlan { digest: digest.clone(), size, exists: false, upload: Some(upload) })
}

/// POST uploads/{digest}/complete: verify the stored object, then link it.
pub async fn complete_upload(app: &App, caller: Caller<'_>, ws: &WorkspaceId, digest: &Digest) -> Result<Linked> {
    if let Some(existing) = app.meta.blob_link(ws, digest).await? {
        return Ok(Linked {
            digest: digest.clone(),
            workspace_id: ws.to_string(),
            size: existing.size,
            created: false,
        });
    }
    let verified = match verify_object(app.blobs.as_ref(), digest).await {
        // The uploaded bytes are not the digest's: the client's upload was wrong; nothing is linked.
        Err(Error::BlobIntegrity(detail)) => {
            return Err(Error::DigestMismatch { expected: digest.to_string(), actual: detail });
        }
        other => other?,
    };
    let details = json!({"size": verified.size, "verified_by": if verified.by_store_checksum { "store_checksum" } else { "rehash" }});
    link(app, caller, ws, digest, verified.size, "upload.complete", details).await
}

pub enum Fetched {
    Inline { bytes: Bytes },
    Redirect(Presigned),
}

/// HEAD: the link's metadata, without touching the bytes.
pub async fn linked(app: &App, ws: &WorkspaceId, digest: &Digest) -> Result<BlobLink> {
    app.meta.blob_link(ws, digest).await?.ok_or_else(|| Error::BlobMissing(digest.to_string()))
}

/// GET: small blobs inline and verified; large ones (or on request) a short-lived presigned GET.
pub async fn fetch(app: &App, ws: &WorkspaceId, digest: &Digest, redirect: bool) -> Result<Fetched> {
    let link = linked(app, ws, digest).await?;
    if redirect || link.size > app.config.inline_max {
        return Ok(Fetched::Redirect(app.blobs.presign_get(digest, DOWNLOAD_URL_TTL).await?));
    }
    let mut reader = app
        .blobs
        .get(digest)
        .await?
        .ok_or_else(|| Error::BlobIntegrity(format!("{digest} is linked but its object is gone")))?;
    let mut bytes = Vec::with_capacity(link.size as usize);
    (&mut reader.body)
        .take(app.config.inline_max + 1)
        .read_to_end(&mut bytes)
        .await
        .map_err(|e| Error::unavailable(crate::error::Dependency::BlobStore, e))?;
    let actual = Digest::of(&bytes);
    if &actual != digest {
        return Err(Error::BlobIntegrity(format!("stored bytes hash to {actual}")));
    }
    Ok(Fetched::Inline { bytes: bytes.into() })
}
