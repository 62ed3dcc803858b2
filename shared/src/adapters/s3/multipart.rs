//! The S3 store's multipart writes (docs/decisions.md "Promote by multipart copy (D1)" and "Audit
//! days by multipart (D4)").
//!
//! - The promote of a staged upload is a server-side multipart copy: CreateMultipartUpload on the
//!   blob key (the registry's Content-Type, the blob's retention), UploadPartCopy from the pinned
//!   staging version (ranges of at most 5 GiB), CompleteMultipartUpload with `If-None-Match: *`.
//!   CopyObject is not used: under a bucket policy that enforces conditional writes AWS refuses it
//!   (403 without a conditional header, 501 with one), while CreateMultipartUpload/UploadPartCopy
//!   are exempt (`s3:ObjectCreationOperation` false) and the completion carries the header.
//! - A document file above one part (an audit day's events) is uploaded in parts, each with its own
//!   SHA-256 that S3 checks, and completed with `If-None-Match: *`; the whole file is hashed as it is
//!   read and must be the digest the caller computed, or the upload is aborted.
//!
//! Every failure after CreateMultipartUpload aborts the upload (best effort; the bucket lifecycle
//! aborts what is left after 2 days). 412 on completion is an object already at the key; 409
//! ConditionalRequestConflict restarts the whole upload, as the S3 API reference asks.

use aws_sdk_s3::primitives::{ByteStream, DateTime};
use aws_sdk_s3::types::{ChecksumAlgorithm, CompletedMultipartUpload, CompletedPart};
use tokio::io::AsyncReadExt;

use super::{BLOB_CONTENT_TYPE, CONFLICT_RETRIES, S3BlobStore, status_of, unavailable};
use crate::config::ObjectLockMode;
use crate::domain::{Digest, DigestWriter};
use crate::error::{Dependency, Error, Result};
use crate::ports::PutOutcome;

/// The largest part UploadPartCopy takes.
pub(super) const MAX_COPY_PART: u64 = 5 * 1024 * 1024 * 1024;
/// The most parts of one multipart upload.
pub(super) const MAX_PARTS: u64 = 10_000;

/// Why one attempt at a multipart write did not create the object.
enum Attempt {
    /// 412 on completion and an object is at the key.
    Existed,
    /// 409 ConditionalRequestConflict (or a 412 with nothing at the key): start again.
    Conflict,
    Failed(Error),
}

/// What the parts of one multipart upload are.
enum Parts<'a> {
    Copy(&'a CopySource),
    File { path: &'a std::path::Path, size: u64, part_size: u64, digest: &'a Digest },
}

/// A staged object, pinned: by version id in its source, else by ETag.
pub(super) struct CopySource {
    pub source: String,
    pub if_match: Option<String>,
    pub size: u64,
}

impl S3BlobStore {
    /// The retention of a blob or document written now: `x-amz-object-lock-mode` and
    /// `x-amz-object-lock-retain-until-date` (now + the configured days), or none.
    pub(super) fn retention(&self) -> (Option<aws_sdk_s3::types::ObjectLockMode>, Option<DateTime>) {
        match self.object_lock {
            None => (None, None),
            Some(lock) => {
                let mode = match lock.mode {
                    ObjectLockMode::Governance => aws_sdk_s3::types::ObjectLockMode::Governance,
                    ObjectLockMode::Compliance => aws_sdk_s3::types::ObjectLockMode::Compliance,
                };
                let until = crate::domain::time::now_unix() + i64::from(lock.days) * 86_400;
                (Some(mode), Some(DateTime::from_secs(until)))
            }
        }
    }

    /// Promote `from` to the blob key `key`: never overwrites (`Existed`), `UploadMissing` when the
    /// pinned staging version is gone.
    pub(super) async fn multipart_copy(&self, from: &CopySource, key: &str) -> Result<PutOutcome> {
        // A HEAD first: an existing blob costs no multipart upload (and, outside strict mode, this is
        // the only guard against overwriting).
        if self.exists(key).await? {
            return Ok(PutOutcome::Existed);
        }
        self.multipart(key, &Parts::Copy(from), BLOB_CONTENT_TYPE).await
    }

    /// `put_document_file_if_absent` of a file larger than one part.
    pub(super) async fn multipart_file(
        &self,
        key: &str,
        path: &std::path::Path,
        size: u64,
        digest: &Digest,
        content_type: &str,
    ) -> Result<PutOutcome> {
        if self.exists(key).await? {
            return Ok(PutOutcome::Existed);
        }
        let part_size = part_size_for(size, self.part_size);
        self.multipart(key, &Parts::File { path, size, part_size, digest }, content_type).await
    }

    /// One multipart upload after another until one completes, finds an object at the key, fails,
    /// or the conflicts run out.
    async fn multipart(&self, key: &str, parts: &Parts<'_>, content_type: &str) -> Result<PutOutcome> {
        let mut attempt = 0;
        loop {
            let (mode, until) = self.retention();
            let created = self
                .client
                .create_multipart_upload()
                .bucket(&self.bucket)
                .key(key)
                .content_type(content_type)
                .checksum_algorithm(ChecksumAlgorithm::Sha256)
                .set_object_lock_mode(mode)
                .set_object_lock_retain_until_date(until)
                .send()
                .await
                .map_err(unavailable)?;
            let upload_id = created
                .upload_id()
                .ok_or_else(|| Error::unavailable(Dependency::BlobStore, "CreateMultipartUpload without an UploadId"))?
                .to_owned();
            let sent = match parts {
                Parts::Copy(from) => self.copy_parts(from, key, &upload_id).await,
                Parts::File { path, size, part_size, digest } => {
                    self.upload_parts(path, *size, *part_size, digest, key, &upload_id).await
                }
            };
            let outcome = match sent {
                Ok(parts) => self.complete(key, &upload_id, parts).await,
                Err(e) => Err(e),
            };
            if outcome.is_err() {
                self.abort(key, &upload_id).await;
            }
            match outcome {
                Ok(()) => return Ok(PutOutcome::Created),
                Err(Attempt::Existed) => return Ok(PutOutcome::Existed),
                Err(Attempt::Conflict) if attempt < CONFLICT_RETRIES => {
                    attempt += 1;
                    crate::adapters::backoff(attempt).await;
                }
                Err(Attempt::Conflict) => {
                    return Err(Error::unavailable(Dependency::BlobStore, "conditional writes kept conflicting (409)"));
                }
                Err(Attempt::Failed(e)) => return Err(e),
            }
        }
    }

    async fn copy_parts(
        &self,
        from: &CopySource,
        key: &str,
        upload_id: &str,
    ) -> std::result::Result<Vec<CompletedPart>, Attempt> {
        let mut parts = Vec::new();
        let (mut start, mut number) = (0u64, 1i32);
        while start < from.size {
            let end = (start + MAX_COPY_PART).min(from.size);
            let mut copy = self
                .client
                .upload_part_copy()
                .bucket(&self.bucket)
                .key(key)
                .upload_id(upload_id)
                .part_number(number)
                .copy_source(&from.source)
                .set_copy_source_if_match(from.if_match.clone());
            // S3 takes a range only from a source above 5 MB: a one-part copy sends none.
            if from.size > MAX_COPY_PART {
                copy = copy.copy_source_range(format!("bytes={start}-{}", end - 1));
            }
            let out = copy.send().await.map_err(|e| match status_of(&e) {
                // The pinned version is gone, or the ETag pin no longer holds: nothing to promote.
                Some(404 | 412) => Attempt::Failed(Error::UploadMissing),
                _ => Attempt::Failed(unavailable(e)),
            })?;
            let result = out.copy_part_result();
            parts.push(
                CompletedPart::builder()
                    .part_number(number)
                    .set_e_tag(result.and_then(|r| r.e_tag()).map(str::to_owned))
                    .set_checksum_sha256(result.and_then(|r| r.checksum_sha256()).map(str::to_owned))
                    .build(),
            );
            start = end;
            number += 1;
        }
        Ok(parts)
    }

    async fn upload_parts(
        &self,
        path: &std::path::Path,
        size: u64,
        part_size: u64,
        digest: &Digest,
        key: &str,
        upload_id: &str,
    ) -> std::result::Result<Vec<CompletedPart>, Attempt> {
        let io = |e: std::io::Error| Attempt::Failed(Error::Internal(format!("{}: {e}", path.display())));
        let mut file = tokio::fs::File::open(path).await.map_err(io)?;
        let mut whole = DigestWriter::default();
        let mut parts = Vec::new();
        let (mut done, mut number) = (0u64, 1i32);
        while done < size {
            let len = part_size.min(size - done) as usize;
            let mut buf = vec![0u8; len];
            file.read_exact(&mut buf).await.map_err(io)?;
            whole.update(&buf);
            let checksum = Digest::of(&buf).base64();
            let out = self
                .client
                .upload_part()
                .bucket(&self.bucket)
                .key(key)
                .upload_id(upload_id)
                .part_number(number)
                .content_length(len as i64)
                .checksum_algorithm(ChecksumAlgorithm::Sha256)
                .checksum_sha256(checksum.clone())
                .body(ByteStream::from(buf))
                .send()
                .await
                .map_err(|e| Attempt::Failed(unavailable(e)))?;
            parts.push(
                CompletedPart::builder()
                    .part_number(number)
                    .set_e_tag(out.e_tag().map(str::to_owned))
                    .checksum_sha256(checksum)
                    .build(),
            );
            done += len as u64;
            number += 1;
        }
        // The parts S3 checked are the file as read now: it must still be the file the caller hashed.
        if whole.len() != size || &whole.finish() != digest {
            return Err(Attempt::Failed(Error::Internal(format!(
                "{} changed after it was hashed: not stored",
                path.display()
            ))));
        }
        Ok(parts)
    }

    async fn complete(
        &self,
        key: &str,
        upload_id: &str,
        parts: Vec<CompletedPart>,
    ) -> std::result::Result<(), Attempt> {
        let sent = self
            .client
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(upload_id)
            .multipart_upload(CompletedMultipartUpload::builder().set_parts(Some(parts)).build())
            .set_if_none_match(self.strict_no_overwrite.then(|| "*".to_owned()))
            .send()
            .await;
        match sent {
            Ok(_) => Ok(()),
            Err(e) => match status_of(&e) {
                Some(412) => match self.exists(key).await {
                    Ok(true) => Err(Attempt::Existed),
                    Ok(false) => Err(Attempt::Conflict),
                    Err(e) => Err(Attempt::Failed(e)),
                },
                Some(409) => Err(Attempt::Conflict),
                _ => Err(Attempt::Failed(unavailable(e))),
            },
        }
    }

    /// Best effort: what is left is aborted by the bucket lifecycle.
    async fn abort(&self, key: &str, upload_id: &str) {
        let aborted =
            self.client.abort_multipart_upload().bucket(&self.bucket).key(key).upload_id(upload_id).send().await;
        if let Err(e) = aborted {
            tracing::warn!(key, error = %aws_sdk_s3::error::DisplayErrorContext(e), "abort of a multipart upload failed");
        }
    }
}

/// The configured part size, or larger when the file needs more than 10,000 parts of it.
pub(super) fn part_size_for(size: u64, configured: u64) -> u64 {
    configured.max(size.div_ceil(MAX_PARTS))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_grow_so_that_ten_thousand_hold_the_file() {
        let mib = 1024 * 1024;
        assert_eq!(part_size_for(100 * mib, 64 * mib), 64 * mib);
        assert_eq!(part_size_for(10_000 * 64 * mib, 64 * mib), 64 * mib);
        let five_tib = 5 * 1024 * 1024 * mib;
        let grown = part_size_for(five_tib, 64 * mib);
        assert!(grown * MAX_PARTS >= five_tib && grown <= MAX_COPY_PART, "{grown}");
    }
}
