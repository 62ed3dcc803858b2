//! The embedded store's chunked uploads (crate::chunked): parts are files `uploads/{ws}/{id}.parts/{n}`,
//! each written through the signed local part route (`receive_part`: hashed while written, refused
//! unless it has the signed size and SHA-256), with the SHA-256 it was checked against beside it
//! (`{n}.sha256`). The plan is `uploads/{ws}/{id}.plan`. Joining concatenates the parts in order into
//! a temp file while hashing it, and publishes it create-only at the staging key with the SHA-256 of
//! what was written: `complete` compares that with the digest, as for a single upload.

use std::io;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use futures_util::Stream;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{FsBlobStore, RemoveOnDrop, checksum_record, io_err, random_suffix};
use crate::domain::{Digest, DigestWriter};
use crate::error::{Error, Result};
use crate::ports::{PutOutcome, StoredPart, UploadRef};

/// Beside a staging path: the chunked upload's plan.
pub(super) fn plan_path(staged: &Path) -> PathBuf {
    sibling(staged, ".plan")
}

/// Beside a staging path: the folder of a chunked upload's parts.
pub(super) fn parts_dir(staged: &Path) -> PathBuf {
    sibling(staged, ".parts")
}

fn sibling(staged: &Path, suffix: &str) -> PathBuf {
    let mut name = staged.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

impl FsBlobStore {
    pub(super) async fn begin_parts_dir(&self, upload: &UploadRef) -> Result<String> {
        tokio::fs::create_dir_all(parts_dir(&self.upload_path(upload))).await.map_err(io_err)?;
        Ok(upload.id.clone())
    }

    /// The local stand-in for a presigned UploadPart with a signed `x-amz-checksum-sha256`: stream
    /// `body` to a file while hashing, and keep it as part `number` only if it has `size` bytes that
    /// hash to `digest` (a mismatch is 400 `digest_mismatch`, and nothing is kept). A part sent again
    /// replaces the one before, as on S3.
    pub async fn receive_part<S, E>(
        &self,
        upload: &UploadRef,
        number: u32,
        digest: &Digest,
        size: u64,
        body: S,
    ) -> Result<()>
    where
        S: Stream<Item = std::result::Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        if !(1..=crate::ports::MAX_PARTS as u32).contains(&number) {
            return Err(Error::BadRequest("a part number is from 1 to 10000".into()));
        }
        let dir = parts_dir(&self.upload_path(upload));
        if !tokio::fs::try_exists(&dir).await.map_err(io_err)? {
            return Err(Error::UploadMissing);
        }
        let incoming = dir.join(format!("{number}.incoming.{}", random_suffix()));
        let _guard = RemoveOnDrop(incoming.clone());
        if self.write_new(&incoming, Some(digest), Some(size), body).await? != PutOutcome::Created {
            return Err(Error::Internal("a fresh part name was taken".into()));
        }
        let target = dir.join(number.to_string());
        tokio::fs::rename(&incoming, &target).await.map_err(io_err)?;
        // After the part: a record older than its part only makes a resumed push send the part again.
        let record = dir.join(format!("{number}.sha256"));
        let record_tmp = dir.join(format!("{number}.sha256.{}", random_suffix()));
        let written = async {
            tokio::fs::write(&record_tmp, digest.to_string()).await?;
            tokio::fs::rename(&record_tmp, &record).await
        };
        if let Err(e) = written.await {
            let _ = tokio::fs::remove_file(&record_tmp).await;
            tracing::warn!(error = %e, record = %record.display(), "could not record a part's checksum");
        }
        std::fs::File::open(&dir).and_then(|d| d.sync_all()).map_err(io_err)?;
        Ok(())
    }

    pub(super) async fn list_part_files(&self, upload: &UploadRef) -> Result<Option<Vec<StoredPart>>> {
        let dir = parts_dir(&self.upload_path(upload));
        let mut entries = match tokio::fs::read_dir(&dir).await {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err(e)),
        };
        let mut parts = Vec::new();
        while let Some(entry) = entries.next_entry().await.map_err(io_err)? {
            let Some(number) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
            let size = entry.metadata().await.map_err(io_err)?.len();
            let recorded = tokio::fs::read_to_string(dir.join(format!("{number}.sha256"))).await.ok();
            let sha256 = recorded.and_then(|d| Digest::parse(d.trim()).ok());
            parts.push(StoredPart { number, size, sha256, etag: None });
        }
        parts.sort_by_key(|p| p.number);
        Ok(Some(parts))
    }

    /// Concatenate `parts` into the staging file (create-only), hashing what is written.
    pub(super) async fn join_part_files(&self, upload: &UploadRef, parts: &[StoredPart]) -> Result<PutOutcome> {
        let target = self.upload_path(upload);
        if tokio::fs::try_exists(&target).await.map_err(io_err)? {
            return Ok(PutOutcome::Existed);
        }
        let dir = parts_dir(&target);
        let tmp_path = self.tmp.join(format!("join.{}", random_suffix()));
        let _guard = RemoveOnDrop(tmp_path.clone());
        let mut out =
            tokio::io::BufWriter::with_capacity(1 << 20, tokio::fs::File::create_new(&tmp_path).await.map_err(io_err)?);
        let mut hasher = DigestWriter::default();
        let mut buf = vec![0u8; 1 << 20];
        for part in parts {
            let mut file = match tokio::fs::File::open(dir.join(part.number.to_string())).await {
                Ok(f) => f,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(Error::UploadMissing),
                Err(e) => return Err(io_err(e)),
            };
            loop {
                let n = file.read(&mut buf).await.map_err(io_err)?;
                if n == 0 {
                    break;
                }
                hasher.update(&buf[..n]);
                out.write_all(&buf[..n]).await.map_err(io_err)?;
            }
        }
        out.flush().await.map_err(io_err)?;
        out.get_ref().sync_all().await.map_err(io_err)?;
        let outcome = self.publish(&tmp_path, &target).await?;
        if outcome == PutOutcome::Created {
            // The SHA-256 of the bytes just written, for `complete` to compare with the digest.
            let record = checksum_record(&target);
            if let Err(e) = tokio::fs::write(&record, hasher.finish().to_string()).await {
                tracing::warn!(error = %e, record = %record.display(), "could not record a joined upload's checksum");
            }
        }
        Ok(outcome)
    }

    pub(super) async fn remove_parts(&self, upload: &UploadRef) -> Result<()> {
        let staged = self.upload_path(upload);
        for result in
            [tokio::fs::remove_dir_all(parts_dir(&staged)).await, tokio::fs::remove_file(plan_path(&staged)).await]
        {
            match result {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err(e)),
            }
        }
        Ok(())
    }
}
