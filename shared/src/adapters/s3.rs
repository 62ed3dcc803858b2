//! S3 BlobStore. Keys `{prefix}blobs/sha256/{hex[0..2]}/{hex}`. Puts are conditional
//! (`If-None-Match: *`) and carry the SHA-256 checksum, so S3 refuses bytes that do not match and
//! never overwrites: 412 means the object exists (then it is verified, else `blob_integrity_error`),
//! 409 ConditionalRequestConflict means a concurrent write is in flight (retry).

use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_s3::error::SdkError;
use aws_sdk_s3::presigning::{PresignedRequest, PresigningConfig};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{ChecksumAlgorithm, ChecksumMode};
use bytes::Bytes;

use crate::blobs::verify_object;
use crate::domain::Digest;
use crate::domain::time::now_unix;
use crate::error::{Dependency, Error, Result};
use crate::ports::{BlobBackendInfo, BlobHead, BlobReader, BlobStore, Presigned, PutOutcome};

const CONFLICT_RETRIES: u32 = 8;

pub struct S3BlobStore {
    client: aws_sdk_s3::Client,
    bucket: String,
    prefix: String,
    strict_no_overwrite: bool,
}

fn status_of<E>(e: &SdkError<E, aws_sdk_s3::config::http::HttpResponse>) -> Option<u16> {
    e.raw_response().map(|r| r.status().as_u16())
}

fn unavailable<E: std::error::Error + 'static>(e: SdkError<E, aws_sdk_s3::config::http::HttpResponse>) -> Error {
    Error::unavailable(Dependency::BlobStore, aws_sdk_s3::error::DisplayErrorContext(e))
}

impl S3BlobStore {
    /// One PutObject with `If-None-Match: *` (in strict mode) and a SHA-256 checksum (signed in when
    /// the digest is known), retrying S3's 409 on concurrent conditional writes. `Existed` is S3's 412.
    async fn put(
        &self,
        key: String,
        bytes: Bytes,
        digest: Option<&Digest>,
        content_type: Option<&str>,
    ) -> Result<PutOutcome> {
        let mut attempt = 0;
        loop {
            let mut put = self
                .client
                .put_object()
                .bucket(&self.bucket)
                .key(&key)
                .content_length(bytes.len() as i64)
                .set_content_type(content_type.map(str::to_owned))
                .checksum_algorithm(ChecksumAlgorithm::Sha256)
                .set_checksum_sha256(digest.map(Digest::base64))
                .body(ByteStream::from(bytes.clone()));
            if self.strict_no_overwrite {
                put = put.if_none_match("*");
            }
            match put.send().await {
                Ok(_) => return Ok(PutOutcome::Created),
                Err(e) if status_of(&e) == Some(412) => return Ok(PutOutcome::Existed),
                Err(e) if status_of(&e) == Some(409) && attempt < CONFLICT_RETRIES => {
                    attempt += 1;
                    crate::adapters::backoff(attempt).await;
                }
                Err(e) => return Err(unavailable(e)),
            }
        }
    }

    pub fn new(client: aws_sdk_s3::Client, bucket: String, prefix: String, strict_no_overwrite: bool) -> S3BlobStore {
        S3BlobStore { client, bucket, prefix, strict_no_overwrite }
    }

    pub fn key_of(&self, digest: &Digest) -> String {
        format!("{}blobs/{}", self.prefix, digest.storage_key())
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

    async fn put_if_absent(&self, digest: &Digest, bytes: Bytes) -> Result<PutOutcome> {
        if !self.strict_no_overwrite {
            match verify_object(self, digest).await {
                Ok(_) => return Ok(PutOutcome::Existed),
                Err(Error::BlobMissing(_)) => {}
                Err(e) => return Err(e),
            }
        }
        match self.put(self.key_of(digest), bytes, Some(digest), None).await? {
            PutOutcome::Created => Ok(PutOutcome::Created),
            PutOutcome::Existed => {
                verify_object(self, digest).await?;
                Ok(PutOutcome::Existed)
            }
        }
    }

    async fn head(&self, digest: &Digest) -> Result<Option<BlobHead>> {
        let out = self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(self.key_of(digest))
            .checksum_mode(ChecksumMode::Enabled)
            .send()
            .await;
        match out {
            Ok(o) => Ok(Some(BlobHead {
                size: o.content_length().unwrap_or(0).max(0) as u64,
                // A multipart composite checksum ("…-N") is not a full-object SHA-256: ignored.
                stored_sha256: o.checksum_sha256().and_then(Digest::from_base64),
            })),
            Err(e) if status_of(&e) == Some(404) => Ok(None),
            Err(e) => Err(unavailable(e)),
        }
    }

    async fn get(&self, digest: &Digest) -> Result<Option<BlobReader>> {
        match self.client.get_object().bucket(&self.bucket).key(self.key_of(digest)).send().await {
            Ok(o) => {
                let size = o.content_length().unwrap_or(0).max(0) as u64;
                Ok(Some(BlobReader { size, body: Box::pin(o.body.into_async_read()) }))
            }
            Err(e) if status_of(&e) == Some(404) => Ok(None),
            Err(e) => Err(unavailable(e)),
        }
    }

    async fn put_document_if_absent(&self, key: &str, bytes: Bytes) -> Result<PutOutcome> {
        let key = format!("{}{key}", self.prefix);
        if !self.strict_no_overwrite && self.client.head_object().bucket(&self.bucket).key(&key).send().await.is_ok() {
            return Ok(PutOutcome::Existed);
        }
        self.put(key, bytes, None, Some("application/json")).await
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

    async fn presign_put(&self, digest: &Digest, size: u64, ttl: Duration) -> Result<Presigned> {
        let checksum = digest.base64();
        let mut put = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(self.key_of(digest))
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

    async fn presign_get(&self, digest: &Digest, ttl: Duration) -> Result<Presigned> {
        let req = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(self.key_of(digest))
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
