//! S3 BlobStore. Blob keys `{prefix}blobs/sha256/{hex[0..2]}/{hex}[.slot]`, staging keys
//! `{prefix}uploads/{ws}/{upload_id}`. Blob writes (PutObject, and a multipart copy from a verified
//! staging version, `multipart`) are conditional (`If-None-Match: *`, which the bucket policy
//! requires) and carry SHA-256 checksums: 412 means the object exists (the caller verifies it), 409
//! ConditionalRequestConflict means a concurrent write is in flight (retry). Clients only ever write
//! staging keys, so no client bytes reach a blob key unverified, even on a store that ignores checksums.
//! Every object the registry writes (blobs, audit documents) carries the configured Object Lock
//! retention; staging objects, written by clients through presigned PUTs, carry none.

mod multipart;
mod parts;

use crate::adapters::lazy::LazyClient;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_s3::error::SdkError;
use aws_sdk_s3::presigning::{PresignedRequest, PresigningConfig};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{ChecksumAlgorithm, ChecksumMode, ChecksumType};
use bytes::Bytes;

use crate::config::ObjectLock;
use crate::domain::Digest;
use crate::domain::time::now_unix;
use crate::error::{Dependency, Error, Result};
use crate::ports::{
    BlobBackendInfo, BlobHead, BlobKey, BlobReader, BlobStore, Presigned, PutOutcome, Staged, StoredPart, UploadRef,
};

const CONFLICT_RETRIES: u32 = 8;

pub struct S3BlobStore {
    client: LazyClient<aws_sdk_s3::Client>,
    bucket: String,
    prefix: String,
    strict_no_overwrite: bool,
    checksums_verified: bool,
    object_lock: Option<ObjectLock>,
    part_size: u64,
}

/// The Content-Type of every blob object, whatever its uploader sent.
const BLOB_CONTENT_TYPE: &str = "application/octet-stream";

/// What a conditional write writes: bytes (with the digest's checksum when known), or a file's
/// contents. Every one carries the configured retention: blobs and audit documents alike.
enum Write<'a> {
    Put {
        bytes: &'a Bytes,
        checksum: Option<String>,
        content_type: &'a str,
    },
    /// A file's contents, streamed from disk.
    File {
        path: &'a std::path::Path,
        checksum: String,
        content_type: &'a str,
    },
}

fn status_of<E>(e: &SdkError<E, aws_sdk_s3::config::http::HttpResponse>) -> Option<u16> {
    e.raw_response().map(|r| r.status().as_u16())
}

fn unavailable<E: std::error::Error + 'static>(e: SdkError<E, aws_sdk_s3::config::http::HttpResponse>) -> Error {
    Error::unavailable(Dependency::BlobStore, aws_sdk_s3::error::DisplayErrorContext(e))
}

impl S3BlobStore {
    /// One conditional write of `what` at `key` (`If-None-Match: *` in strict mode), retrying S3's 409
    /// on concurrent conditional writes. `Existed` is S3's 412, or (outside strict mode) an object a
    /// HEAD found first.
    async fn write_once(&self, key: &str, what: Write<'_>) -> Result<PutOutcome> {
        if !self.strict_no_overwrite && self.exists(key).await? {
            return Ok(PutOutcome::Existed);
        }
        let if_none_match = self.strict_no_overwrite.then(|| "*".to_owned());
        let mut attempt = 0;
        loop {
            let status = match &what {
                Write::Put { bytes, checksum, content_type } => self
                    .client
                    .put_object()
                    .bucket(&self.bucket)
                    .key(key)
                    .content_length(bytes.len() as i64)
                    .content_type(*content_type)
                    .checksum_algorithm(ChecksumAlgorithm::Sha256)
                    .set_checksum_sha256(checksum.clone())
                    .set_if_none_match(if_none_match.clone())
                    .set_object_lock_mode(self.retention().0)
                    .set_object_lock_retain_until_date(self.retention().1)
                    .body(ByteStream::from((*bytes).clone()))
                    .send()
                    .await
                    .map(|_| ())
                    .map_err(|e| (status_of(&e), unavailable(e))),
                Write::File { path, checksum, content_type } => match ByteStream::from_path(path).await {
                    Ok(body) => self
                        .client
                        .put_object()
                        .bucket(&self.bucket)
                        .key(key)
                        .content_type(*content_type)
                        .checksum_algorithm(ChecksumAlgorithm::Sha256)
                        .checksum_sha256(checksum.clone())
                        .set_if_none_match(if_none_match.clone())
                        .set_object_lock_mode(self.retention().0)
                        .set_object_lock_retain_until_date(self.retention().1)
                        .body(body)
                        .send()
                        .await
                        .map(|_| ())
                        .map_err(|e| (status_of(&e), unavailable(e))),
                    Err(e) => return Err(Error::Internal(format!("{}: {e}", path.display()))),
                },
            };
            match status {
                Ok(()) => return Ok(PutOutcome::Created),
                Err((Some(412), _)) => return Ok(PutOutcome::Existed),
                Err((Some(409), _)) if attempt < CONFLICT_RETRIES => {
                    attempt += 1;
                    crate::adapters::backoff(attempt).await;
                }
                Err((_, e)) => return Err(e),
            }
        }
    }

    async fn exists(&self, key: &str) -> Result<bool> {
        match self.client.head_object().bucket(&self.bucket).key(key).send().await {
            Ok(_) => Ok(true),
            Err(e) if status_of(&e) == Some(404) => Ok(false),
            Err(e) => Err(unavailable(e)),
        }
    }

    /// `checksums_verified`: whether this store refuses bytes that do not match a signed
    /// `x-amz-checksum-sha256` (AWS S3 does; some S3-compatibles and moto do not).
    pub fn new(
        client: impl Into<LazyClient<aws_sdk_s3::Client>>,
        bucket: String,
        prefix: String,
        strict_no_overwrite: bool,
        checksums_verified: bool,
    ) -> S3BlobStore {
        S3BlobStore {
            client: client.into(),
            bucket,
            prefix,
            strict_no_overwrite,
            checksums_verified,
            object_lock: None,
            part_size: crate::config::DEFAULT_S3_PART_SIZE,
        }
    }

    /// Per-object retention on every write of a blob or document (PutObject, CreateMultipartUpload);
    /// never on staging objects (the presigned PUT carries none).
    pub fn with_object_lock(mut self, lock: Option<ObjectLock>) -> S3BlobStore {
        self.object_lock = lock;
        self
    }

    /// The part size of multipart document uploads; a file of at most one part is one PutObject.
    pub fn with_part_size(mut self, part_size: u64) -> S3BlobStore {
        self.part_size = part_size;
        self
    }

    pub fn key_of(&self, key: &BlobKey) -> String {
        format!("{}blobs/{}", self.prefix, key.storage_key())
    }

    /// Whether the store refuses a PutObject whose `x-amz-checksum-sha256` does not match its bytes:
    /// `Some(true)` refused, `Some(false)` accepted, `None` when the probe itself could not be made (no
    /// permission, an outage). The probe key is a staging key, removed afterwards.
    pub async fn refuses_wrong_checksums(&self) -> Option<bool> {
        let mut raw = [0u8; 8];
        getrandom::fill(&mut raw).ok()?;
        let key = format!("{}uploads/.checksum-probe/{}", self.prefix, hex::encode(raw));
        let sent = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(&key)
            .checksum_algorithm(ChecksumAlgorithm::Sha256)
            .checksum_sha256(Digest::of(b"other bytes").base64())
            .body(ByteStream::from_static(b"probe"))
            .send()
            .await;
        let refused = match sent {
            Ok(_) => Some(false),
            Err(e) if status_of(&e) == Some(400) => Some(true),
            Err(e) => {
                tracing::warn!(error = %aws_sdk_s3::error::DisplayErrorContext(e), "checksum probe failed");
                None
            }
        };
        // Some stores keep the bytes they refused: the probe object goes either way.
        let _ = self.client.delete_object().bucket(&self.bucket).key(&key).send().await;
        refused
    }

    fn upload_key(&self, upload: &UploadRef) -> String {
        format!("{}{}", self.prefix, upload.storage_key())
    }

    /// The staged object as it was pinned (its version, else its ETag), whole or a `range`.
    async fn get_pinned(&self, upload: &UploadRef, staged: &Staged, range: Option<String>) -> Result<BlobReader> {
        let get = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(self.upload_key(upload))
            .set_range(range)
            .set_version_id(staged.version_id.clone())
            .set_if_match(staged.etag.clone().filter(|_| staged.version_id.is_none()));
        match get.send().await {
            Ok(o) => Ok(Self::reader(o)),
            // Gone or replaced since it was pinned: the upload is no longer there to complete.
            Err(e) if matches!(status_of(&e), Some(404 | 412)) => Err(crate::Error::UploadMissing),
            Err(e) => Err(unavailable(e)),
        }
    }

    async fn head_key(&self, key: &str) -> Result<Option<aws_sdk_s3::operation::head_object::HeadObjectOutput>> {
        let out =
            self.client.head_object().bucket(&self.bucket).key(key).checksum_mode(ChecksumMode::Enabled).send().await;
        match out {
            Ok(o) => Ok(Some(o)),
            Err(e) if status_of(&e) == Some(404) => Ok(None),
            Err(e) => Err(unavailable(e)),
        }
    }

    fn reader(o: aws_sdk_s3::operation::get_object::GetObjectOutput) -> BlobReader {
        let size = o.content_length().unwrap_or(0).max(0) as u64;
        BlobReader { size, body: Box::pin(o.body.into_async_read()) }
    }

    fn presigned(method: &'static str, req: PresignedRequest, ttl: Duration) -> Presigned {
        Presigned {
            method,
            url: req.uri().to_owned(),
            headers: req.headers().map(|(k, v)| (k.to_owned(), v.to_owned())).collect(),
            expires_at: now_unix() + ttl.as_secs() as i64,
        }
    }

    fn presigning(ttl: Duration) -> Result<PresigningConfig> {
        PresigningConfig::expires_in(ttl).map_err(|e| Error::Internal(e.to_string()))
    }
}

#[async_trait]
impl BlobStore for S3BlobStore {
    fn info(&self) -> BlobBackendInfo {
        BlobBackendInfo {
            backend: "s3",
            location: self.bucket.clone(),
            prefix: self.prefix.clone(),
            strict_no_overwrite: self.strict_no_overwrite,
        }
    }

    fn checksums_verified(&self) -> bool {
        self.checksums_verified
    }

    async fn put_if_absent(&self, key: &BlobKey, bytes: Bytes) -> Result<PutOutcome> {
        let what = Write::Put { bytes: &bytes, checksum: Some(key.digest.base64()), content_type: BLOB_CONTENT_TYPE };
        self.write_once(&self.key_of(key), what).await
    }

    async fn head(&self, key: &BlobKey) -> Result<Option<BlobHead>> {
        Ok(self.head_key(&self.key_of(key)).await?.map(|o| BlobHead {
            size: o.content_length().unwrap_or(0).max(0) as u64,
            stored_sha256: blob_sha256(&o, &key.digest),
        }))
    }

    async fn get(&self, key: &BlobKey) -> Result<Option<BlobReader>> {
        match self.client.get_object().bucket(&self.bucket).key(self.key_of(key)).send().await {
            Ok(o) => Ok(Some(Self::reader(o))),
            Err(e) if status_of(&e) == Some(404) => Ok(None),
            Err(e) => Err(unavailable(e)),
        }
    }

    async fn staged(&self, upload: &UploadRef) -> Result<Option<Staged>> {
        Ok(self.head_key(&self.upload_key(upload)).await?.map(|o| Staged {
            size: o.content_length().unwrap_or(0).max(0) as u64,
            stored_sha256: full_object_sha256(&o),
            version_id: o.version_id().filter(|v| *v != "null").map(str::to_owned),
            etag: o.e_tag().map(str::to_owned),
        }))
    }

    async fn read_staged(&self, upload: &UploadRef, staged: &Staged) -> Result<BlobReader> {
        self.get_pinned(upload, staged, None).await
    }

    async fn read_staged_range(&self, upload: &UploadRef, staged: &Staged, start: u64, end: u64) -> Result<BlobReader> {
        if start >= end {
            return Ok(BlobReader { size: staged.size, body: Box::pin(tokio::io::empty()) });
        }
        self.get_pinned(upload, staged, Some(format!("bytes={start}-{}", end - 1))).await
    }

    /// A server-side multipart copy, not CopyObject: see `multipart`.
    async fn promote(&self, upload: &UploadRef, staged: &Staged, key: &BlobKey) -> Result<PutOutcome> {
        let blob_key = self.key_of(key);
        if staged.size == 0 {
            // Nothing to copy (and UploadPartCopy of an empty source is not a documented case).
            let what = Write::Put {
                bytes: &Bytes::new(),
                checksum: Some(key.digest.base64()),
                content_type: BLOB_CONTENT_TYPE,
            };
            return self.write_once(&blob_key, what).await;
        }
        let source = format!("{}/{}", self.bucket, self.upload_key(upload));
        let source = match &staged.version_id {
            Some(v) => format!(
                "{source}?versionId={}",
                percent_encoding::utf8_percent_encode(v, percent_encoding::NON_ALPHANUMERIC)
            ),
            None => source,
        };
        let if_match = staged.etag.clone().filter(|_| staged.version_id.is_none());
        self.multipart_copy(&multipart::CopySource { source, if_match, size: staged.size }, &blob_key).await
    }

    async fn discard(&self, upload: &UploadRef) -> Result<()> {
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(self.upload_key(upload))
            .send()
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn begin_parts(&self, upload: &UploadRef, _part_size: u64) -> Result<String> {
        self.create_parts(upload).await
    }

    async fn presign_part(
        &self,
        upload: &UploadRef,
        store_id: &str,
        number: u32,
        sha256: &Digest,
        size: u64,
        ttl: Duration,
    ) -> Result<Presigned> {
        self.presign_upload_part(upload, store_id, number, sha256, size, ttl).await
    }

    async fn stored_parts(&self, upload: &UploadRef, store_id: &str) -> Result<Option<Vec<StoredPart>>> {
        self.list_upload_parts(upload, store_id).await
    }

    async fn join_parts(&self, upload: &UploadRef, store_id: &str, parts: &[StoredPart]) -> Result<PutOutcome> {
        self.complete_parts(upload, store_id, parts).await
    }

    async fn put_plan(&self, upload: &UploadRef, plan: Bytes) -> Result<PutOutcome> {
        self.put_plan_object(upload, plan).await
    }

    async fn get_plan(&self, upload: &UploadRef) -> Result<Option<Bytes>> {
        self.get_plan_object(upload).await
    }

    async fn discard_parts(&self, upload: &UploadRef, store_id: &str) -> Result<()> {
        self.remove_parts(upload, store_id).await
    }

    async fn put_document_if_absent(&self, key: &str, bytes: Bytes) -> Result<PutOutcome> {
        let what = Write::Put { bytes: &bytes, checksum: None, content_type: "application/json" };
        self.write_once(&format!("{}{key}", self.prefix), what).await
    }

    async fn put_document_file_if_absent(
        &self,
        key: &str,
        file: &std::path::Path,
        digest: &Digest,
    ) -> Result<PutOutcome> {
        let key = format!("{}{key}", self.prefix);
        let content_type = "application/x-ndjson";
        let size =
            tokio::fs::metadata(file).await.map_err(|e| Error::Internal(format!("{}: {e}", file.display())))?.len();
        if size > self.part_size {
            // Above one part: parts with their own SHA-256 (S3 checks each), the whole file re-hashed
            // as it is read (multipart.rs). S3 then keeps a composite checksum, not the file's.
            return self.multipart_file(&key, file, size, digest, content_type).await;
        }
        // S3 checks the full-object SHA-256 we send against what it received.
        let what = Write::File { path: file, checksum: digest.base64(), content_type };
        self.write_once(&key, what).await
    }

    async fn document_sha256(&self, key: &str) -> Result<Option<Digest>> {
        let key = format!("{}{key}", self.prefix);
        // A store that verifies checksums vouches for the full-object one it kept (a day's events file
        // of one part is written with `ChecksumSHA256`): a HEAD instead of downloading the whole day to
        // hash it. Documents written without one, and multipart days (S3 keeps a checksum of the
        // parts' checksums, not the file's), are downloaded and hashed: docs/decisions.md (D4).
        if self.checksums_verified() {
            match self.head_key(&key).await? {
                None => return Ok(None),
                Some(head) => {
                    if let Some(stored) = full_object_sha256(&head) {
                        return Ok(Some(stored));
                    }
                }
            }
        }
        match self.client.get_object().bucket(&self.bucket).key(&key).send().await {
            Ok(mut o) => {
                let mut hasher = crate::domain::DigestWriter::default();
                while let Some(chunk) =
                    o.body.try_next().await.map_err(|e| Error::unavailable(Dependency::BlobStore, e))?
                {
                    hasher.update(&chunk);
                }
                Ok(Some(hasher.finish()))
            }
            Err(e) if status_of(&e) == Some(404) => Ok(None),
            Err(e) => Err(unavailable(e)),
        }
    }

    async fn get_document(&self, key: &str) -> Result<Option<Bytes>> {
        let key = format!("{}{key}", self.prefix);
        match self.client.get_object().bucket(&self.bucket).key(&key).send().await {
            Ok(o) => {
                let body = o.body.collect().await.map_err(|e| Error::unavailable(Dependency::BlobStore, e))?;
                Ok(Some(body.into_bytes()))
            }
            Err(e) if status_of(&e) == Some(404) => Ok(None),
            Err(e) => Err(unavailable(e)),
        }
    }

    async fn presign_upload(&self, upload: &UploadRef, digest: &Digest, size: u64, ttl: Duration) -> Result<Presigned> {
        let checksum = digest.base64();
        let mut put = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(self.upload_key(upload))
            .content_length(size as i64)
            .checksum_sha256(checksum.clone());
        if self.strict_no_overwrite {
            put = put.if_none_match("*");
        }
        // The presigner drops checksum_sha256 (aws-sdk-rust#1103): put the header on the request
        // before signing so it is signed in and S3 checks the uploaded bytes against it.
        let req = put
            .customize()
            .mutate_request(move |r| {
                r.headers_mut().insert("x-amz-checksum-sha256", checksum.clone());
            })
            .presigned(Self::presigning(ttl)?)
            .await
            .map_err(unavailable)?;
        Ok(Self::presigned("PUT", req, ttl))
    }

    /// The response headers are the registry's, whatever the object carries (an object stored before
    /// copies replaced metadata may still hold its uploader's): bytes, as an attachment, not encoded.
    async fn presign_get(&self, key: &BlobKey, ttl: Duration) -> Result<Presigned> {
        let req = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(self.key_of(key))
            .response_content_type(BLOB_CONTENT_TYPE)
            .response_content_disposition(format!("attachment; filename=\"{}\"", key.digest.hex()))
            .response_content_encoding("identity")
            .presigned(Self::presigning(ttl)?)
            .await
            .map_err(unavailable)?;
        Ok(Self::presigned("GET", req, ttl))
    }

    async fn check(&self) -> Result<()> {
        self.client.head_bucket().bucket(&self.bucket).send().await.map_err(unavailable)?;
        Ok(())
    }
}

type HeadOutput = aws_sdk_s3::operation::head_object::HeadObjectOutput;

/// The object's full-object SHA-256, when the checksum S3 reports is one: a multipart object's is
/// a checksum of its parts' checksums (COMPOSITE, "…-N"), not the object's.
fn full_object_sha256(o: &HeadOutput) -> Option<Digest> {
    if o.checksum_type() == Some(&ChecksumType::Composite) {
        return None;
    }
    o.checksum_sha256().and_then(Digest::from_base64)
}

/// A blob object's SHA-256 as S3 vouches for it. A promoted blob is a one-part multipart copy (a
/// staged upload is one PUT, at most 5 GB): S3 keeps SHA-256 of the part's SHA-256 ("…-1"), which
/// equals SHA-256(`digest`) exactly when the bytes hash to `digest` (a composite that equals it has
/// one part, the digest). Any other composite proves nothing: None, and the caller re-hashes.
fn blob_sha256(o: &HeadOutput, digest: &Digest) -> Option<Digest> {
    let value = o.checksum_sha256()?;
    let composite = o.checksum_type() == Some(&ChecksumType::Composite) || value.contains('-');
    if !composite {
        return Digest::from_base64(value);
    }
    let of_parts = value.rsplit_once('-').map_or(value, |(v, _)| v);
    (Digest::from_base64(of_parts)? == Digest::of(&digest.raw())).then(|| digest.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(checksum: &str, kind: Option<ChecksumType>) -> HeadOutput {
        HeadOutput::builder().checksum_sha256(checksum).set_checksum_type(kind).build()
    }

    #[test]
    fn a_one_part_composite_of_the_digest_proves_the_digest_and_nothing_else_does() {
        let d = Digest::of(b"blob bytes");
        let one_part = format!("{}-1", Digest::of(&d.raw()).base64());
        assert_eq!(blob_sha256(&head(&one_part, Some(ChecksumType::Composite)), &d), Some(d.clone()));
        assert_eq!(blob_sha256(&head(&one_part, None), &d), Some(d.clone()), "the suffix alone marks it");
        let other = Digest::of(b"other bytes");
        assert_eq!(blob_sha256(&head(&one_part, None), &other), None, "another digest's composite: re-hash");
        let two_parts = format!("{}-2", Digest::of(b"two part checksums").base64());
        assert_eq!(blob_sha256(&head(&two_parts, None), &d), None);
        assert_eq!(blob_sha256(&head(&d.base64(), Some(ChecksumType::FullObject)), &d), Some(d.clone()));
        assert_eq!(full_object_sha256(&head(&one_part, Some(ChecksumType::Composite))), None);
        assert_eq!(full_object_sha256(&head(&one_part, None)), None, "\"…-1\" is no SHA-256");
        assert_eq!(full_object_sha256(&head(&d.base64(), None)), Some(d));
    }
}
