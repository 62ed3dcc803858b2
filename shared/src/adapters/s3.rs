//! S3 BlobStore. Blob keys `{prefix}blobs/sha256/{hex[0..2]}/{hex}[.slot]`, staging keys
//! `{prefix}uploads/{ws}/{upload_id}`. Blob writes (PutObject, and CopyObject from a verified
//! staging version) are conditional (`If-None-Match: *`, which the bucket policy requires) and carry
//! the SHA-256 checksum: 412 means the object exists (the caller verifies it), 409
//! ConditionalRequestConflict means a concurrent write is in flight (retry). Clients only ever write
//! staging keys, so no client bytes reach a blob key unverified, even on a store that ignores checksums.

use crate::adapters::lazy::LazyClient;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_s3::error::SdkError;
use aws_sdk_s3::presigning::{PresignedRequest, PresigningConfig};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{ChecksumAlgorithm, ChecksumMode, MetadataDirective};
use bytes::Bytes;

use crate::domain::Digest;
use crate::domain::time::now_unix;
use crate::error::{Dependency, Error, Result};
use crate::ports::{
    BlobBackendInfo, BlobHead, BlobKey, BlobReader, BlobStore, Presigned, PutOutcome, Staged, UploadRef,
};

const CONFLICT_RETRIES: u32 = 8;

pub struct S3BlobStore {
    client: LazyClient<aws_sdk_s3::Client>,
    bucket: String,
    prefix: String,
    strict_no_overwrite: bool,
    checksums_verified: bool,
}

/// The Content-Type of every blob object, whatever its uploader sent.
const BLOB_CONTENT_TYPE: &str = "application/octet-stream";

/// What a conditional write writes: bytes (with the digest's checksum when known), or a copy of a
/// pinned staging object (by version id, else by ETag).
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
    Copy {
        source: String,
        if_match: Option<String>,
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
    /// on concurrent conditional writes. `Existed` is S3's 412, or an object a HEAD found first: outside
    /// strict mode, and before copies (moto ignores `If-None-Match` on CopyObject; S3 honours it).
    async fn write_once(&self, key: &str, what: Write<'_>) -> Result<PutOutcome> {
        let head_first = matches!(what, Write::Copy { .. }) || !self.strict_no_overwrite;
        if head_first && self.exists(key).await? {
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
                        .body(body)
                        .send()
                        .await
                        .map(|_| ())
                        .map_err(|e| (status_of(&e), unavailable(e))),
                    Err(e) => return Err(Error::Internal(format!("{}: {e}", path.display()))),
                },
                // The uploader's own headers (Content-Type, Content-Encoding, Content-Disposition…) are
                // not the blob's: the object every workspace downloads gets the registry's metadata.
                Write::Copy { source, if_match } => self
                    .client
                    .copy_object()
                    .bucket(&self.bucket)
                    .key(key)
                    .copy_source(source)
                    .set_copy_source_if_match(if_match.clone())
                    .metadata_directive(MetadataDirective::Replace)
                    .content_type(BLOB_CONTENT_TYPE)
                    .checksum_algorithm(ChecksumAlgorithm::Sha256)
                    .set_if_none_match(if_none_match.clone())
                    .send()
                    .await
                    .map(|_| ())
                    .map_err(|e| (status_of(&e), unavailable(e))),
            };
            match status {
                Ok(()) => return Ok(PutOutcome::Created),
                // On a copy, 412 is also the source's ETag pin failing: then the key is still empty.
                Err((Some(412), _)) if matches!(what, Write::Copy { .. }) && !self.exists(key).await? => {
                    return Err(Error::UploadMissing);
                }
                Err((Some(412), _)) => return Ok(PutOutcome::Existed),
                // A pinned staging version that is gone (expired, removed): the upload is no longer there.
                Err((Some(404), _)) if matches!(what, Write::Copy { .. }) => return Err(Error::UploadMissing),
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
        S3BlobStore { client: client.into(), bucket, prefix, strict_no_overwrite, checksums_verified }
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
            // A multipart composite checksum ("…-N") is not a full-object SHA-256: ignored.
            stored_sha256: o.checksum_sha256().and_then(Digest::from_base64),
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
            stored_sha256: o.checksum_sha256().and_then(Digest::from_base64),
            version_id: o.version_id().filter(|v| *v != "null").map(str::to_owned),
            etag: o.e_tag().map(str::to_owned),
        }))
    }

    async fn read_staged(&self, upload: &UploadRef, staged: &Staged) -> Result<BlobReader> {
        let get = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(self.upload_key(upload))
            .set_version_id(staged.version_id.clone())
            .set_if_match(staged.etag.clone().filter(|_| staged.version_id.is_none()));
        match get.send().await {
            Ok(o) => Ok(Self::reader(o)),
            // Gone or replaced since it was pinned: the upload is no longer there to complete.
            Err(e) if matches!(status_of(&e), Some(404 | 412)) => Err(crate::Error::UploadMissing),
            Err(e) => Err(unavailable(e)),
        }
    }

    async fn promote(&self, upload: &UploadRef, staged: &Staged, key: &BlobKey) -> Result<PutOutcome> {
        let source = format!("{}/{}", self.bucket, self.upload_key(upload));
        let source = match &staged.version_id {
            Some(v) => format!(
                "{source}?versionId={}",
                percent_encoding::utf8_percent_encode(v, percent_encoding::NON_ALPHANUMERIC)
            ),
            None => source,
        };
        let if_match = staged.etag.clone().filter(|_| staged.version_id.is_none());
        self.write_once(&self.key_of(key), Write::Copy { source, if_match }).await
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
        // S3 checks the full-object SHA-256 we send against what it received.
        let what = Write::File { path: file, checksum: digest.base64(), content_type: "application/x-ndjson" };
        self.write_once(&format!("{}{key}", self.prefix), what).await
    }

    async fn document_sha256(&self, key: &str) -> Result<Option<Digest>> {
        let key = format!("{}{key}", self.prefix);
        // A store that verifies checksums vouches for the one it kept (a day's events file is written
        // with `ChecksumSHA256`): a HEAD instead of downloading the whole day to hash it. Documents
        // written without one are downloaded and hashed.
        if self.checksums_verified() {
            match self.head_key(&key).await? {
                None => return Ok(None),
                Some(head) => {
                    if let Some(stored) = head.checksum_sha256().and_then(Digest::from_base64) {
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
