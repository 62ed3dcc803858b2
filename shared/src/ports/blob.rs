//! The blob store: content-addressed bytes, staged uploads, presigned URLs.

use super::*;

#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub enum PutOutcome {
    Created,
    Existed,
}

#[derive(Debug, Clone, PartialEq)]
pub struct BlobHead {
    pub size: u64,
    /// The full-object SHA-256 the store itself computed and kept, when it has one.
    pub stored_sha256: Option<Digest>,
}

pub struct BlobReader {
    pub size: u64,
    pub body: Pin<Box<dyn AsyncRead + Send>>,
}

/// A request a client can make without credentials: method, URL and headers it must send.
#[derive(Debug, Clone, Serialize)]
pub struct Presigned {
    pub method: &'static str,
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub expires_at: i64,
}

/// What `/v1/status` may say about a blob store (never secrets).
#[derive(Debug, Clone, Serialize)]
pub struct BlobBackendInfo {
    pub backend: &'static str,
    pub location: String,
    pub prefix: String,
    pub strict_no_overwrite: bool,
}

/// Where a blob's bytes live: its digest and a slot. Slot 0 is the digest's own key
/// (`sha256/ab/<hex>`); slot n > 0 (`sha256/ab/<hex>.n`) is used only when every lower slot holds
/// bytes that do not hash to the digest, so a wrong object under a digest's key is never served or
/// linked and never blocks a correct upload (docs/decisions.md, "Proof of possession").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobKey {
    pub digest: Digest,
    pub slot: u8,
}

/// Blobs `put_many_if_absent`'s default puts at once.
pub const PUT_MANY_CONCURRENCY: usize = 16;

/// Slots tried before a blob is refused as unstorable (each failed one is a poisoned object an
/// operator must remove; docs/runbook.md).
pub const BLOB_SLOTS: u8 = 4;

impl BlobKey {
    pub fn primary(digest: &Digest) -> BlobKey {
        BlobKey { digest: digest.clone(), slot: 0 }
    }

    /// Below a store's `blobs/` root, the same on S3 and on disk.
    pub fn storage_key(&self) -> String {
        match self.slot {
            0 => self.digest.storage_key(),
            n => format!("{}.{n}", self.digest.storage_key()),
        }
    }
}

/// A direct upload's staging object: written by the client through a presigned PUT bound to one
/// workspace and one upload id, verified by the registry, then promoted to a `BlobKey`. Key
/// `uploads/{ws}/{id}`: a caller can only complete uploads of a workspace it may publish to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadRef {
    pub workspace: WorkspaceId,
    pub id: String,
}

impl UploadRef {
    /// A new upload of `workspace` with a random id (32 lowercase hex).
    pub fn new(workspace: &WorkspaceId) -> UploadRef {
        UploadRef { workspace: workspace.clone(), id: crate::domain::random_hex::<16>() }
    }

    pub fn parse(workspace: &WorkspaceId, id: &str) -> Result<UploadRef> {
        let ok = id.len() == 32 && id.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if !ok {
            return Err(crate::Error::BadRequest("upload_id is 32 lowercase hex, as POST .../uploads returned".into()));
        }
        Ok(UploadRef { workspace: workspace.clone(), id: id.to_owned() })
    }

    /// Below a store's `blobs/`-sibling root: `uploads/{ws}/{id}`.
    pub fn storage_key(&self) -> String {
        format!("uploads/{}/{}", self.workspace, self.id)
    }
}

/// What the store holds for an upload, pinned: the version (or ETag) read here is the one verified
/// and the one promoted, even if the client writes the staging key again in between.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct Staged {
    pub size: u64,
    /// The store's own full-object SHA-256, when it has one (trusted only if the store verifies).
    pub stored_sha256: Option<Digest>,
    pub version_id: Option<String>,
    pub etag: Option<String>,
}

/// How long a presigned upload URL (a whole upload, or one part) lives.
pub const UPLOAD_URL_TTL: Duration = Duration::from_secs(900);

/// The most parts of one chunked upload (S3's limit; the embedded store's too).
pub const MAX_PARTS: u64 = 10_000;

/// One part of a chunked upload as the store holds it (`BlobStore::stored_parts`).
#[derive(Debug, Clone, PartialEq)]
pub struct StoredPart {
    pub number: u32,
    pub size: u64,
    /// The part's SHA-256 as the store recorded it, when it keeps one.
    pub sha256: Option<Digest>,
    pub etag: Option<String>,
}

#[async_trait]
pub trait BlobStore: Send + Sync {
    fn info(&self) -> BlobBackendInfo;

    /// True when the store itself verifies `x-amz-checksum-sha256` on write and refuses bytes that
    /// do not match, so its stored checksum is proof of the bytes (AWS S3). False for stores that
    /// may keep a checksum they never checked (some S3-compatibles, moto): the registry re-hashes.
    fn checksums_verified(&self) -> bool;

    /// True when a staged upload's `stored_sha256` was checked by the store itself against the bytes
    /// as they arrived (the local presigned PUT hashes while it writes): `complete` need not re-hash.
    fn staged_checksums_verified(&self) -> bool {
        self.checksums_verified()
    }

    /// True when `promote` makes the blob key the very bytes that were staged (a hard link of the
    /// same file), not a copy: verified staged bytes need no second check where they landed.
    fn promote_is_exact(&self) -> bool {
        false
    }

    /// Store `bytes` at `key` unless an object is already there (`Existed`: the caller verifies it,
    /// the adapter never does). Two concurrent writers never both get `Created`.
    async fn put_if_absent(&self, key: &BlobKey, bytes: Bytes) -> Result<PutOutcome>;

    /// True when `put_many_if_absent` hashes each blob's bytes itself before it stores them or reports
    /// `Existed` (`DigestMismatch` otherwise): a batch publish then hashes them once, there (the
    /// filesystem store). Otherwise the batch hashes them before calling it.
    fn put_many_verifies(&self) -> bool {
        false
    }

    /// `put_if_absent` for each of many small blobs (a batch publish): the outcomes in order. A
    /// `Created` is as durable as `put_if_absent`'s before this returns. The filesystem store writes
    /// the whole batch, then makes it durable together; the default puts a few at a time.
    async fn put_many_if_absent(&self, items: Vec<(BlobKey, Bytes)>) -> Vec<Result<PutOutcome>> {
        let puts = items.into_iter().map(|(key, bytes)| async move { self.put_if_absent(&key, bytes).await });
        use futures_util::StreamExt;
        futures_util::stream::iter(puts).buffered(PUT_MANY_CONCURRENCY).collect().await
    }

    async fn head(&self, key: &BlobKey) -> Result<Option<BlobHead>>;

    /// Many small objects whole (a batch fetch), in order: each `(key, size)` read up to one byte
    /// more than `size` (the caller verifies it), None when there is no object at the key. The
    /// filesystem store reads them in one trip off the runtime; the default gets a few at a time.
    async fn get_many(&self, keys: Vec<(BlobKey, u64)>) -> Vec<Result<Option<Bytes>>> {
        use futures_util::StreamExt;
        use tokio::io::AsyncReadExt;
        let reads = keys.into_iter().map(|(key, size)| async move {
            let Some(reader) = self.get(&key).await? else { return Ok(None) };
            let mut bytes = Vec::with_capacity(size as usize);
            let mut body = reader.body.take(size + 1);
            body.read_to_end(&mut bytes)
                .await
                .map_err(|e| crate::Error::unavailable(crate::error::Dependency::BlobStore, e))?;
            Ok(Some(Bytes::from(bytes)))
        });
        futures_util::stream::iter(reads).buffered(PUT_MANY_CONCURRENCY).collect().await
    }

    /// Streaming read; memory stays flat in the blob size.
    async fn get(&self, key: &BlobKey) -> Result<Option<BlobReader>>;

    async fn presign_get(&self, key: &BlobKey, ttl: Duration) -> Result<Presigned>;

    /// A direct upload to `upload`'s staging key, with `digest` and `size` signed in where the
    /// store can check them; the object is verified again at completion whatever the store did.
    async fn presign_upload(&self, upload: &UploadRef, digest: &Digest, size: u64, ttl: Duration) -> Result<Presigned>;

    async fn staged(&self, upload: &UploadRef) -> Result<Option<Staged>>;

    /// The pinned bytes of a staged upload.
    async fn read_staged(&self, upload: &UploadRef, staged: &Staged) -> Result<BlobReader>;

    /// Bytes `start..end` of the pinned staged upload (a step of an asynchronous verification,
    /// `crate::verify`). The default reads from the start and skips; stores read the range.
    async fn read_staged_range(&self, upload: &UploadRef, staged: &Staged, start: u64, end: u64) -> Result<BlobReader> {
        use tokio::io::AsyncReadExt;
        let mut reader = self.read_staged(upload, staged).await?;
        let mut skip = (&mut reader.body).take(start);
        tokio::io::copy(&mut skip, &mut tokio::io::sink())
            .await
            .map_err(|e| crate::Error::unavailable(crate::error::Dependency::BlobStore, e))?;
        Ok(BlobReader { size: reader.size, body: Box::pin(reader.body.take(end - start)) })
    }

    /// Copy the pinned, verified staging object to `key` unless an object is already there (the
    /// same contract as `put_if_absent`).
    async fn promote(&self, upload: &UploadRef, staged: &Staged, key: &BlobKey) -> Result<PutOutcome>;

    /// Remove a staging object (done, or refused); a missing one is not an error.
    async fn discard(&self, upload: &UploadRef) -> Result<()>;

    /// Begin a chunked upload whose parts (of `part_size` bytes, the last one shorter) join into
    /// `upload`'s staging object: the store's own id of it (S3's UploadId), kept in the upload's plan
    /// (`put_plan`).
    async fn begin_parts(&self, upload: &UploadRef, part_size: u64) -> Result<String>;

    /// A direct upload of part `number` of a chunked upload: `size` bytes that hash to `sha256`, both
    /// signed in, so the store refuses other bytes.
    async fn presign_part(
        &self,
        upload: &UploadRef,
        store_id: &str,
        number: u32,
        sha256: &Digest,
        size: u64,
        ttl: Duration,
    ) -> Result<Presigned>;

    /// The parts received so far, by number; None when the store no longer knows the chunked upload
    /// (joined already, aborted, or never begun).
    async fn stored_parts(&self, upload: &UploadRef, store_id: &str) -> Result<Option<Vec<StoredPart>>>;

    /// Join `parts` (in order, each as `stored_parts` listed it) into the upload's staging object:
    /// `Existed` when the staging object is there already (a joined upload), `UploadMissing` when
    /// neither the parts nor the object are.
    async fn join_parts(&self, upload: &UploadRef, store_id: &str, parts: &[StoredPart]) -> Result<PutOutcome>;

    /// Store a chunked upload's plan (a small document beside its staging key, never a client's to
    /// write) unless one is there already; no retention (it is staging state).
    async fn put_plan(&self, upload: &UploadRef, plan: Bytes) -> Result<PutOutcome>;

    /// A chunked upload's plan, or None.
    async fn get_plan(&self, upload: &UploadRef) -> Result<Option<Bytes>>;

    /// Remove what a chunked upload left beside its staging object: its plan, and its parts (S3:
    /// abort). Nothing there is not an error.
    async fn discard_parts(&self, upload: &UploadRef, store_id: &str) -> Result<()>;

    /// Store a small document (the audit exports) at `key` (relative to the store's prefix, e.g.
    /// `audit/2026/11/22/manifest.json`) unless something is already there: `Existed` leaves the
    /// stored bytes untouched for the caller to compare. Two writers never both get `Created`.
    async fn put_document_if_absent(&self, key: &str, bytes: Bytes) -> Result<PutOutcome>;

    /// A document's bytes, or None when there is none at `key`.
    async fn get_document(&self, key: &str) -> Result<Option<Bytes>>;

    /// `put_document_if_absent` of a file's contents, streamed (an exported day may be large), which
    /// must hash to `digest` as the store receives them (the file is not trusted after it was written).
    async fn put_document_file_if_absent(
        &self,
        key: &str,
        file: &std::path::Path,
        digest: &Digest,
    ) -> Result<PutOutcome>;

    /// The SHA-256 of a stored document, read as a stream; None when there is none at `key`.
    async fn document_sha256(&self, key: &str) -> Result<Option<Digest>>;

    /// Readiness probe: cheap, touches the backing service.
    async fn check(&self) -> Result<()>;
}
