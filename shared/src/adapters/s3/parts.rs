//! The S3 store's chunked uploads (crate::chunked): CreateMultipartUpload on the staging key
//! `uploads/{ws}/{id}` with `ChecksumAlgorithm=SHA256`, one presigned UploadPart per part with its
//! `x-amz-checksum-sha256` signed in (S3 refuses a part whose bytes do not match, and a part sent
//! without it), ListParts for what is stored, CompleteMultipartUpload (`If-None-Match: *` in strict
//! mode) to join them. The plan is a small object `uploads/{ws}/{id}.plan`, written by the registry
//! only. S3 keeps a composite checksum of the joined object (a checksum of the parts' checksums), never
//! the file's: `complete` re-hashes it (`full_object_sha256` is None for it).

use std::time::Duration;

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{ChecksumAlgorithm, CompletedMultipartUpload, CompletedPart};
use bytes::Bytes;

use super::{S3BlobStore, status_of, unavailable};
use crate::domain::Digest;
use crate::error::{Dependency, Error, Result};
use crate::ports::{Presigned, PutOutcome, StoredPart, UploadRef};

impl S3BlobStore {
    fn plan_key(&self, upload: &UploadRef) -> String {
        format!("{}.plan", self.upload_key(upload))
    }

    pub(super) async fn create_parts(&self, upload: &UploadRef) -> Result<String> {
        let created = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(self.upload_key(upload))
            .content_type(super::BLOB_CONTENT_TYPE)
            .checksum_algorithm(ChecksumAlgorithm::Sha256)
            .send()
            .await
            .map_err(unavailable)?;
        created
            .upload_id()
            .map(str::to_owned)
            .ok_or_else(|| Error::unavailable(Dependency::BlobStore, "CreateMultipartUpload without an UploadId"))
    }

    pub(super) async fn presign_upload_part(
        &self,
        upload: &UploadRef,
        store_id: &str,
        number: u32,
        sha256: &Digest,
        size: u64,
        ttl: Duration,
    ) -> Result<Presigned> {
        let checksum = sha256.base64();
        // The presigner drops checksum_sha256 (aws-sdk-rust#1103): the header is put on the request
        // before signing, so it is signed in and S3 checks the part's bytes against it.
        let req = self
            .client
            .upload_part()
            .bucket(&self.bucket)
            .key(self.upload_key(upload))
            .upload_id(store_id)
            .part_number(number as i32)
            .content_length(size as i64)
            .checksum_sha256(checksum.clone())
            .customize()
            .mutate_request(move |r| {
                r.headers_mut().insert("x-amz-checksum-sha256", checksum.clone());
            })
            .presigned(Self::presigning(ttl)?)
            .await
            .map_err(unavailable)?;
        Ok(Self::presigned("PUT", req, ttl))
    }

    /// Every part S3 holds (ListParts, 1,000 a page); None when S3 knows no such upload.
    pub(super) async fn list_upload_parts(
        &self,
        upload: &UploadRef,
        store_id: &str,
    ) -> Result<Option<Vec<StoredPart>>> {
        let mut parts = Vec::new();
        let mut marker: Option<String> = None;
        loop {
            let page = self
                .client
                .list_parts()
                .bucket(&self.bucket)
                .key(self.upload_key(upload))
                .upload_id(store_id)
                .set_part_number_marker(marker.clone())
                .send()
                .await;
            let page = match page {
                Ok(p) => p,
                Err(e) if status_of(&e) == Some(404) => return Ok(None),
                Err(e) => return Err(unavailable(e)),
            };
            for p in page.parts() {
                let (Some(number), Some(size)) = (p.part_number(), p.size()) else { continue };
                parts.push(StoredPart {
                    number: number.max(0) as u32,
                    size: size.max(0) as u64,
                    sha256: p.checksum_sha256().and_then(Digest::from_base64),
                    etag: p.e_tag().map(str::to_owned),
                });
            }
            match (page.is_truncated(), page.next_part_number_marker()) {
                (Some(true), Some(next)) if marker.as_deref() != Some(next) => marker = Some(next.to_owned()),
                _ => break,
            }
        }
        parts.sort_by_key(|p| p.number);
        Ok(Some(parts))
    }

    pub(super) async fn complete_parts(
        &self,
        upload: &UploadRef,
        store_id: &str,
        parts: &[StoredPart],
    ) -> Result<PutOutcome> {
        let completed = parts
            .iter()
            .map(|p| {
                CompletedPart::builder()
                    .part_number(p.number as i32)
                    .set_e_tag(p.etag.clone())
                    .set_checksum_sha256(p.sha256.as_ref().map(Digest::base64))
                    .build()
            })
            .collect();
        let sent = self
            .client
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(self.upload_key(upload))
            .upload_id(store_id)
            .multipart_upload(CompletedMultipartUpload::builder().set_parts(Some(completed)).build())
            .set_if_none_match(self.strict_no_overwrite.then(|| "*".to_owned()))
            .send()
            .await;
        match sent {
            Ok(_) => Ok(PutOutcome::Created),
            // Joined already (a concurrent or repeated complete), or the upload is gone.
            Err(e) if matches!(status_of(&e), Some(404 | 412)) => {
                if self.head_key(&self.upload_key(upload)).await?.is_some() {
                    Ok(PutOutcome::Existed)
                } else {
                    Err(Error::UploadMissing)
                }
            }
            Err(e) => Err(unavailable(e)),
        }
    }

    pub(super) async fn put_plan_object(&self, upload: &UploadRef, plan: Bytes) -> Result<PutOutcome> {
        let sent = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(self.plan_key(upload))
            .content_type("application/json")
            .set_if_none_match(self.strict_no_overwrite.then(|| "*".to_owned()))
            .body(ByteStream::from(plan))
            .send()
            .await;
        match sent {
            Ok(_) => Ok(PutOutcome::Created),
            Err(e) if status_of(&e) == Some(412) => Ok(PutOutcome::Existed),
            Err(e) => Err(unavailable(e)),
        }
    }

    pub(super) async fn get_plan_object(&self, upload: &UploadRef) -> Result<Option<Bytes>> {
        match self.client.get_object().bucket(&self.bucket).key(self.plan_key(upload)).send().await {
            Ok(o) => {
                let body = o.body.collect().await.map_err(|e| Error::unavailable(Dependency::BlobStore, e))?;
                Ok(Some(body.into_bytes()))
            }
            Err(e) if status_of(&e) == Some(404) => Ok(None),
            Err(e) => Err(unavailable(e)),
        }
    }

    pub(super) async fn remove_parts(&self, upload: &UploadRef, store_id: &str) -> Result<()> {
        let aborted = self
            .client
            .abort_multipart_upload()
            .bucket(&self.bucket)
            .key(self.upload_key(upload))
            .upload_id(store_id)
            .send()
            .await;
        match aborted {
            Ok(_) => {}
            // Joined (completed) or aborted before: nothing to abort.
            Err(e) if status_of(&e) == Some(404) => {}
            Err(e) => return Err(unavailable(e)),
        }
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(self.plan_key(upload))
            .send()
            .await
            .map_err(unavailable)?;
        Ok(())
    }
}
