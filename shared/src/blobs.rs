//! Blob use cases shared by the publish and fetch functions: verify stored bytes, inline put,
//! direct-upload start and completion, fetch. A blob is visible in a workspace only once it is
//! linked there, and it is linked only after its bytes were verified against its digest.
//!
//! Proof of possession (docs/decisions.md): objects are global and deduplicated, links are per
//! workspace, and a link is made only from bytes the caller delivered (inline, or a staged upload
//! bound to the workspace) or from a link in a workspace the caller's grant covers (a mount). No
//! answer depends on what another workspace holds, and no object is trusted by its key alone.

use std::time::Duration;

use bytes::Bytes;
use serde::Serialize;
use serde_json::{Value, json};
use tokio::io::AsyncReadExt;

use crate::App;
use crate::auth::Principal;
use crate::domain::time::now_unix;
use crate::domain::{AuditDraft, Digest, DigestWriter, Manifest, Outcome, WorkspaceId};
use crate::error::{Dependency, Error, Result};
use crate::ports::{
    BLOB_SLOTS, BlobKey, BlobLink, BlobReader, BlobStore, BundleVersion, Change, Commit, Presigned, PutOutcome, Staged,
    UploadRef,
};

pub use crate::ports::UPLOAD_URL_TTL;
/// How long a presigned download URL lives.
pub const DOWNLOAD_URL_TTL: Duration = Duration::from_secs(300);
/// Largest single-request upload (S3's PutObject limit).
pub const MAX_UPLOAD_SIZE: u64 = 5 * 1024 * 1024 * 1024;

const READ_CHUNK: usize = 64 * 1024;

/// Proof that the object stored at a key has the digest's SHA-256.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verified {
    pub size: u64,
    /// True if the store's own full-object checksum was used instead of re-reading the bytes.
    pub by_store_checksum: bool,
}

impl Verified {
    pub(crate) fn method(&self) -> &'static str {
        if self.by_store_checksum { "store_checksum" } else { "rehash" }
    }
}

/// SHA-256 and length of everything `reader` yields, read in chunks (memory flat in the size).
async fn hash_reader(reader: BlobReader) -> Result<(Digest, u64)> {
    let mut body = reader.body;
    let mut hasher = DigestWriter::default();
    let mut buf = vec![0u8; READ_CHUNK];
    loop {
        let n = body.read(&mut buf).await.map_err(|e| Error::unavailable(Dependency::BlobStore, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    let size = hasher.len();
    Ok((hasher.finish(), size))
}

/// The store's checksum when the store itself verified it; otherwise None (the caller re-hashes).
fn trusted_checksum(store: &dyn BlobStore, stored: Option<Digest>) -> Option<Digest> {
    stored.filter(|_| store.checksums_verified())
}

/// Verify the object at `key`: the store's own full-object SHA-256 when the store verifies
/// checksums, otherwise a streaming re-hash. `BlobIntegrity` when the bytes are not the digest's.
pub async fn verify_object(store: &dyn BlobStore, key: &BlobKey) -> Result<Verified> {
    let digest = &key.digest;
    let missing = || Error::BlobMissing(digest.to_string());
    let head = store.head(key).await?.ok_or_else(missing)?;
    if let Some(stored) = trusted_checksum(store, head.stored_sha256) {
        if &stored != digest {
            return Err(Error::BlobIntegrity(format!("{} holds a store checksum of {stored}", key.storage_key())));
        }
        return Ok(Verified { size: head.size, by_store_checksum: true });
    }
    let (actual, size) = hash_reader(store.get(key).await?.ok_or_else(missing)?).await?;
    if &actual != digest {
        return Err(Error::BlobIntegrity(format!("{} holds bytes that hash to {actual}", key.storage_key())));
    }
    Ok(Verified { size, by_store_checksum: false })
}

/// Verify a staged upload against the digest it was started for: its bytes (or, on a store that
/// verifies checksums, its checksum) must be the digest's. A mismatch is the client's fault: 400.
async fn verify_staged(
    store: &dyn BlobStore,
    upload: &UploadRef,
    staged: &Staged,
    digest: &Digest,
) -> Result<Verified> {
    let trusted = staged.stored_sha256.clone().filter(|_| store.staged_checksums_verified());
    let (actual, verified) = match trusted {
        Some(stored) => (stored, Verified { size: staged.size, by_store_checksum: true }),
        None => {
            let (actual, size) = hash_reader(store.read_staged(upload, staged).await?).await?;
            (actual, Verified { size, by_store_checksum: false })
        }
    };
    if &actual != digest {
        return Err(Error::DigestMismatch { expected: digest.to_string(), actual: actual.to_string() });
    }
    Ok(verified)
}

/// Verified bytes on their way to a blob key.
enum Source<'a> {
    Bytes(&'a Bytes),
    /// A staged upload, and whether the store's own checksum vouched for it (no re-hash was needed).
    Staged(&'a UploadRef, &'a Staged, bool),
}

/// Write verified bytes for `digest`, slot after slot: the first slot that is empty (written now)
/// or already holds the digest's bytes (verified now) is the blob's key. A slot whose object is
/// wrong is reported (error log and a `blob.integrity_failure` event in the global stream, for an
/// operator to heal) and skipped, so it never blocks a correct upload. A copy of a staged upload is
/// verified where it landed too: the pin (version id, else ETag) is only as good as the store's
/// honouring of it, and bytes that were never checked at their key are never linked.
/// `slot0` is the outcome of the write to the first slot when the caller made it already (a batch).
async fn place(
    app: &App,
    request_id: &str,
    digest: &Digest,
    source: Source<'_>,
    mut slot0: Option<PutOutcome>,
) -> Result<BlobKey> {
    for slot in 0..BLOB_SLOTS {
        let key = BlobKey { digest: digest.clone(), slot };
        let written = match (slot0.take(), &source) {
            (Some(written), _) => written,
            (None, Source::Bytes(bytes)) => app.blobs.put_if_absent(&key, (*bytes).clone()).await?,
            (None, Source::Staged(upload, staged, _)) => app.blobs.promote(upload, staged, &key).await?,
        };
        // Bytes written now were checked by the write itself; staged bytes the store verified and
        // promoted as the same file (not a copy) need no second check either.
        let exact = match source {
            Source::Bytes(_) => true,
            Source::Staged(_, _, by_store_checksum) => by_store_checksum && app.blobs.promote_is_exact(),
        };
        if written == PutOutcome::Created && exact {
            return Ok(key);
        }
        match verify_object(app.blobs.as_ref(), &key).await {
            Ok(_) => return Ok(key),
            Err(Error::BlobIntegrity(detail)) => report_poisoned(app, request_id, &key, &detail).await,
            Err(e) => return Err(e),
        }
    }
    Err(Error::BlobIntegrity(format!("every slot of {digest} holds wrong bytes")))
}

/// Place bytes the caller delivered (already checked against `digest`) at the digest's first good
/// slot, after the caller's own write to the first slot ended in `slot0` (a batch writes its blobs'
/// first slots together: crate::batch): `place`, with the same rules as an inline PUT.
pub(crate) async fn place_bytes(
    app: &App,
    request_id: &str,
    digest: &Digest,
    bytes: &Bytes,
    slot0: PutOutcome,
) -> Result<BlobKey> {
    place(app, request_id, digest, Source::Bytes(bytes), Some(slot0)).await
}

/// Log a wrong object under a blob key and audit it in the global stream, once per key per process
/// (a poisoned key met on every upload of its digest must not flood the `*` stream).
async fn report_poisoned(app: &App, request_id: &str, key: &BlobKey, detail: &str) {
    static REPORTED: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
    tracing::error!(request_id, digest = %key.digest, slot = key.slot, detail, "wrong object under a blob key; skipped (docs/decisions.md)");
    {
        let mut reported = REPORTED.lock().unwrap_or_else(|p| p.into_inner());
        let id = format!("{}#{}", app.blobs.info().location, key.storage_key());
        if reported.contains(&id) {
            return;
        }
        if reported.len() >= 1024 {
            reported.remove(0);
        }
        reported.push(id);
    }
    let event = AuditDraft {
        stream: "*".into(),
        actor: "registry".into(),
        action: "blob.integrity_failure".into(),
        entity_type: "blob".into(),
        entity_id: key.digest.to_string(),
        outcome: Outcome::Failed,
        request_id: request_id.into(),
        details: json!({"slot": key.slot, "key": key.storage_key(), "detail": detail}),
    };
    if let Err(e) = app.audit.append(event).await {
        tracing::error!(error = %e, "could not audit a wrong blob object");
    }
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

impl Linked {
    pub(crate) fn existing(link: BlobLink) -> Linked {
        Linked { digest: link.digest, workspace_id: link.workspace_id, size: link.size, created: false }
    }
}

/// Who is acting and under which request id: what every audit event of a use case records.
#[derive(Clone, Copy)]
pub struct Caller<'a> {
    pub principal: &'a Principal,
    pub request_id: &'a str,
}

/// Link verified bytes at `key` into `ws`, with its audit event in the same commit. The event says
/// nothing of whether the object was new to the store: that would tell `ws` what others hold.
async fn link(
    app: &App,
    caller: Caller<'_>,
    ws: &WorkspaceId,
    key: &BlobKey,
    size: u64,
    action: &str,
    details: Value,
) -> Result<Linked> {
    let actor = caller.principal.actor();
    let change = link_change(&actor, ws, key, size);
    let event = link_event(&actor, caller.request_id, ws, key, action, details);
    let commit = app.meta.commit(change, event).await?;
    Ok(Linked {
        digest: key.digest.clone(),
        workspace_id: ws.to_string(),
        size,
        created: matches!(commit, Commit::Applied(_)),
    })
}

fn link_change(actor: &str, ws: &WorkspaceId, key: &BlobKey, size: u64) -> Change {
    Change::LinkBlob(BlobLink {
        workspace_id: ws.to_string(),
        digest: key.digest.clone(),
        size,
        linked_at: now_unix(),
        linked_by: actor.to_owned(),
        slot: key.slot,
    })
}

fn link_event(
    actor: &str,
    request_id: &str,
    ws: &WorkspaceId,
    key: &BlobKey,
    action: &str,
    details: Value,
) -> AuditDraft {
    AuditDraft {
        stream: ws.to_string(),
        actor: actor.to_owned(),
        action: action.into(),
        entity_type: "blob".into(),
        entity_id: key.digest.to_string(),
        outcome: Outcome::Success,
        request_id: request_id.into(),
        details,
    }
}

/// The link of `digest` in `ws`: as the request already read it (`read`: with its credential, in the
/// same round trip: `Ctx::read_link`), else read now.
pub(crate) async fn link_of(
    app: &App,
    ws: &WorkspaceId,
    digest: &Digest,
    read: Option<Option<BlobLink>>,
) -> Result<Option<BlobLink>> {
    match read {
        Some(link) => Ok(link),
        None => app.meta.blob_link(ws, digest).await,
    }
}

/// PUT of a whole blob in the request body: the bytes are the proof of possession.
///
/// `read`: the link as the request already read it with its credential (`link_of`).
pub async fn put_inline(
    app: &App,
    caller: Caller<'_>,
    ws: &WorkspaceId,
    digest: &Digest,
    body: Bytes,
    read: Option<Option<BlobLink>>,
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
    if let Some(existing) = link_of(app, ws, digest, read).await? {
        return Ok(Linked::existing(existing));
    }
    let key = place(app, caller.request_id, digest, Source::Bytes(&body), None).await?;
    link(app, caller, ws, &key, size, "blob.link", json!({"size": size, "via": "inline"})).await
}

#[derive(Debug, Serialize)]
pub struct UploadPlan {
    pub digest: Digest,
    pub size: u64,
    /// True if the blob is already linked in this workspace (before, or now by `mount_from`):
    /// nothing to upload, nothing to complete.
    pub exists: bool,
    /// The workspace a mount linked it from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mounted_from: Option<String>,
    /// Pass it to `.../uploads/{digest}/complete` after the upload.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upload_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upload: Option<Presigned>,
    /// A chunked upload (`start_upload` with parts): the parts to send instead of `upload`.
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub chunked: Option<crate::chunked::PartsPlan>,
}

/// POST uploads. Proof of possession: `exists: true` only when the digest is linked in `ws`, or
/// linked in `mount_from` and the caller's grant covers `mount_from` (the OCI cross-repository
/// mount); otherwise a presigned upload of the bytes, bound to `ws` and a fresh upload id. What
/// other workspaces hold never changes the answer. With `parts` (`part_sha256`): a chunked upload
/// (`crate::chunked`), or with its `upload_id` the same one again: the parts the store holds and URLs
/// for the rest.
pub async fn start_upload(
    app: &App,
    caller: Caller<'_>,
    ws: &WorkspaceId,
    digest: &Digest,
    size: u64,
    mount_from: Option<&WorkspaceId>,
    parts: Option<crate::chunked::PartsRequest<'_>>,
) -> Result<UploadPlan> {
    let max = if parts.is_some() { crate::chunked::MAX_CHUNKED_SIZE } else { MAX_UPLOAD_SIZE };
    if size == 0 || size > max {
        let larger = if parts.is_some() { "" } else { " (larger files: part_sha256, a chunked upload)" };
        return Err(Error::BadRequest(format!("size must be an integer in 1..={max}{larger}")));
    }
    if let Some(done) = linked_or_mounted(app, caller, ws, digest, size, mount_from).await? {
        return Ok(done);
    }
    let Some(parts) = parts else {
        let upload = UploadRef::new(ws);
        let presigned = app.blobs.presign_upload(&upload, digest, size, UPLOAD_URL_TTL).await?;
        return Ok(UploadPlan {
            upload_id: Some(upload.id),
            upload: Some(presigned),
            ..empty_plan(digest, size, false, None)
        });
    };
    let (upload, parts) = crate::chunked::plan(app, ws, digest, size, parts).await?;
    Ok(UploadPlan { upload_id: Some(upload.id), chunked: Some(parts), ..empty_plan(digest, size, false, None) })
}

fn empty_plan(digest: &Digest, size: u64, exists: bool, mounted_from: Option<&WorkspaceId>) -> UploadPlan {
    UploadPlan {
        digest: digest.clone(),
        size,
        exists,
        mounted_from: mounted_from.map(ToString::to_string),
        upload_id: None,
        upload: None,
        chunked: None,
    }
}

/// The answer when nothing is to be uploaded: the digest is linked in `ws`, or now mounted into it.
async fn linked_or_mounted(
    app: &App,
    caller: Caller<'_>,
    ws: &WorkspaceId,
    digest: &Digest,
    size: u64,
    mount_from: Option<&WorkspaceId>,
) -> Result<Option<UploadPlan>> {
    let plan = |exists, mounted_from: Option<&WorkspaceId>| Some(empty_plan(digest, size, exists, mounted_from));
    if mount_from.is_some_and(|source| !caller.principal.workspace_id.covers(source)) {
        return Err(Error::ForbiddenWorkspace);
    }
    if let Some(existing) = app.meta.blob_link(ws, digest).await? {
        check_size(&existing, size)?;
        return Ok(plan(true, None));
    }
    if let Some(source) = mount_from.filter(|source| *source != ws)
        && let Some(found) = app.meta.blob_link(source, digest).await?
    {
        check_size(&found, size)?;
        // The source link's object is verified first (a HEAD on a store that verifies checksums):
        // a link made before proof of possession, or a key damaged since, is never spread.
        match verify_object(app.blobs.as_ref(), &found.key()).await {
            Ok(_) => {
                // The target's stream (read by the target's approvers) does not name the source: that
                // would tell them what another workspace holds. The source goes to the global stream,
                // which only admins of every workspace read.
                let details = json!({"size": found.size, "via": "mount"});
                let linked = link(app, caller, ws, &found.key(), found.size, "blob.mount", details).await?;
                if linked.created {
                    let source_event = AuditDraft {
                        stream: "*".into(),
                        actor: caller.principal.actor(),
                        action: "blob.mount_source".into(),
                        entity_type: "blob".into(),
                        entity_id: digest.to_string(),
                        outcome: Outcome::Success,
                        request_id: caller.request_id.into(),
                        details: json!({"workspace": ws.to_string(), "from": source.to_string()}),
                    };
                    if let Err(e) = app.audit.append(source_event).await {
                        tracing::error!(error = %e, "the mount is linked and audited in its workspace; recording its source failed");
                    }
                }
                return Ok(plan(true, Some(source)));
            }
            Err(Error::BlobIntegrity(detail)) => report_poisoned(app, caller.request_id, &found.key(), &detail).await,
            Err(e) => return Err(e),
        }
    }
    Ok(None)
}

/// A digest's size is fixed: a request naming another size for a linked blob is a client error.
fn check_size(link: &BlobLink, size: u64) -> Result<()> {
    if link.size != size {
        return Err(Error::BadRequest(format!("{} has {} bytes, not {size}", link.digest, link.size)));
    }
    Ok(())
}

/// POST uploads/{digest}/complete of an upload verified within the request (`verify::complete_upload`
/// decides which): join a chunked upload (`ready`, checked by `chunked::ready`), verify the staged
/// bytes of this workspace's upload (`staged`, when already read), promote them to the blob's key
/// (deduplicated: an existing correct object is reused), then link.
pub(crate) async fn complete_now(
    app: &App,
    caller: Caller<'_>,
    (upload, digest): (&UploadRef, &Digest),
    ready: Option<crate::chunked::Ready>,
    staged: Option<Staged>,
) -> Result<Linked> {
    let chunked = match ready {
        Some(ready) => Some(crate::chunked::join_ready(app, upload, ready).await?),
        None => None,
    };
    let staged = match staged {
        Some(s) => s,
        None => app.blobs.staged(upload).await?.ok_or(Error::UploadMissing)?,
    };
    let verified = match verify_staged(app.blobs.as_ref(), upload, &staged, digest).await {
        Ok(v) => v,
        Err(e @ Error::DigestMismatch { .. }) => {
            refuse_staged(app, upload, chunked.as_ref()).await;
            return Err(e);
        }
        Err(e) => return Err(e),
    };
    let by = LinkBy { actor: caller.principal.actor(), request_id: caller.request_id.to_owned() };
    promote_and_link(app, &by, (upload, digest), &staged, verified, chunked.as_ref(), json!({})).await
}

/// Who a link is made for, and in which request: a caller, or the caller a verification job recorded.
pub(crate) struct LinkBy {
    pub actor: String,
    pub request_id: String,
}

/// The end of every completion whose staged bytes hash to the digest: promote them to the blob's key,
/// link with one `upload.complete` event (`extra` merged into its details), then remove the staging
/// object and a chunked upload's plan and parts. The same code for `complete` and for a verification
/// job (`crate::verify`), so the rules of a link are the same.
pub(crate) async fn promote_and_link(
    app: &App,
    by: &LinkBy,
    (upload, digest): (&UploadRef, &Digest),
    staged: &Staged,
    verified: Verified,
    chunked: Option<&crate::chunked::Joined>,
    extra: Value,
) -> Result<Linked> {
    let key =
        place(app, &by.request_id, digest, Source::Staged(upload, staged, verified.by_store_checksum), None).await?;
    let mut details = json!({"size": verified.size, "verified_by": verified.method(), "upload_id": upload.id});
    if chunked.is_some() {
        details["chunked"] = json!(true);
    }
    if let (Some(d), Value::Object(extra)) = (details.as_object_mut(), extra) {
        d.extend(extra);
    }
    let change = link_change(&by.actor, &upload.workspace, &key, verified.size);
    let event = link_event(&by.actor, &by.request_id, &upload.workspace, &key, "upload.complete", details);
    let commit = app.meta.commit(change, event).await?;
    let linked = Linked {
        digest: key.digest.clone(),
        workspace_id: upload.workspace.to_string(),
        size: verified.size,
        created: matches!(commit, Commit::Applied(_)),
    };
    refuse_staged(app, upload, chunked).await;
    Ok(linked)
}

/// A staged upload whose bytes are not the digest's: the staging object, and a chunked upload's plan
/// and parts, removed (best effort).
pub(crate) async fn refuse_staged(app: &App, upload: &UploadRef, chunked: Option<&crate::chunked::Joined>) {
    discard(app, upload).await;
    if let Some(joined) = chunked {
        crate::chunked::discard(app, upload, joined).await;
    }
}

/// Staging objects are disposable (a lifecycle rule expires them too): a failed removal is logged.
async fn discard(app: &App, upload: &UploadRef) {
    if let Err(e) = app.blobs.discard(upload).await {
        tracing::warn!(error = %e, upload = %upload.storage_key(), "could not remove a staging object");
    }
}

pub enum Fetched {
    Inline { bytes: Bytes },
    Redirect(Presigned),
}

/// HEAD: the link's metadata, without touching the bytes.
///
/// `read`: the link as the request already read it with its credential (`link_of`).
pub async fn linked(app: &App, ws: &WorkspaceId, digest: &Digest, read: Option<Option<BlobLink>>) -> Result<BlobLink> {
    link_of(app, ws, digest, read).await?.ok_or_else(|| Error::BlobMissing(digest.to_string()))
}

/// GET: blobs up to HELIX_INLINE_MAX inline and verified; larger ones a short-lived presigned GET.
/// Small blobs are never redirected: the store's answer to a presigned GET carries the shared
/// object's `Last-Modified` and version id, which would tell a workspace when some workspace first
/// stored the same bytes (docs/decisions.md, "Proof of possession").
///
/// `read`: the link as the request already read it with its credential (`link_of`).
pub async fn fetch(app: &App, ws: &WorkspaceId, digest: &Digest, read: Option<Option<BlobLink>>) -> Result<Fetched> {
    let link = linked(app, ws, digest, read).await?;
    if link.size > app.config.inline_max {
        return Ok(Fetched::Redirect(app.blobs.presign_get(&link.key(), DOWNLOAD_URL_TTL).await?));
    }
    let mut reader = app
        .blobs
        .get(&link.key())
        .await?
        .ok_or_else(|| Error::BlobIntegrity(format!("{digest} is linked but its object is gone")))?;
    let mut bytes = Vec::with_capacity(link.size as usize);
    (&mut reader.body)
        .take(app.config.inline_max + 1)
        .read_to_end(&mut bytes)
        .await
        .map_err(|e| Error::unavailable(Dependency::BlobStore, e))?;
    let actual = Digest::of(&bytes);
    if &actual != digest {
        return Err(Error::BlobIntegrity(format!("{} holds bytes that hash to {actual}", link.key().storage_key())));
    }
    Ok(Fetched::Inline { bytes: bytes.into() })
}

/// A registered version's manifest, read back from the store and verified against its digest.
pub async fn stored_manifest(app: &App, ws: &WorkspaceId, v: &BundleVersion) -> Result<Manifest> {
    let gone = || Error::BlobIntegrity(format!("manifest {} of a registered version is gone", v.manifest_digest));
    let link = app.meta.blob_link(ws, &v.manifest_digest).await?.ok_or_else(gone)?;
    let reader = app.blobs.get(&link.key()).await?.ok_or_else(gone)?;
    let mut bytes = Vec::new();
    let mut body = reader.body;
    body.read_to_end(&mut bytes).await.map_err(|e| Error::unavailable(Dependency::BlobStore, e))?;
    if Digest::of(&bytes) != v.manifest_digest {
        return Err(Error::BlobIntegrity(format!("stored manifest {} does not hash to its digest", v.manifest_digest)));
    }
    serde_json::from_slice(&bytes).map_err(|e| Error::BlobIntegrity(format!("stored manifest: {e}")))
}
