//! Filesystem BlobStore. Layout `{root}/blobs/sha256/{hex[0..2]}/{hex}`, the same as S3's keys.
//! A blob is written to a temp file, fsynced, and published with a create-only hard link, so two
//! concurrent writers cannot both win and a reader never sees a partial file. Streamed uploads are
//! hashed as they are written and never published if they do not match their digest.
//! Presigned URLs point at the local server and carry an HMAC-SHA256 over method, digest, size and
//! expiry with a secret kept in the data dir.

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use tokio::io::AsyncWriteExt;

use crate::blobs::verify_object;
use crate::domain::time::now_unix;
use crate::domain::{Digest, DigestWriter};
use crate::error::{Dependency, Error, Result};
use crate::ports::{BlobBackendInfo, BlobHead, BlobReader, BlobStore, Presigned, PutOutcome};

pub const LOCAL_BLOB_PATH: &str = "/_local/blobs/";

fn io_err(e: io::Error) -> Error {
    Error::unavailable(Dependency::BlobStore, e)
}

/// Signs and checks the local server's presigned URLs.
#[derive(Clone)]
pub struct LocalPresigner {
    base_url: String,
    secret: Vec<u8>,
}

impl LocalPresigner {
    pub fn new(base_url: String, secret: Vec<u8>) -> LocalPresigner {
        LocalPresigner { base_url, secret }
    }

    /// Load the secret from `path`, creating it (32 random bytes, mode 0600) on first start.
    pub fn load_or_create(base_url: String, path: &Path) -> io::Result<LocalPresigner> {
        let secret = crate::adapters::local_key::read_or_create_secret_file(path, || {
            let mut raw = [0u8; 32];
            getrandom::fill(&mut raw).expect("OS random source");
            hex::encode(raw).into_bytes()
        })?;
        Ok(LocalPresigner::new(base_url, secret))
    }

    fn mac(&self, method: &str, digest: &Digest, size: u64, expires: i64) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.secret).expect("any key length");
        mac.update(format!("{method}\n{digest}\n{size}\n{expires}").as_bytes());
        mac
    }

    pub fn presign(&self, method: &'static str, digest: &Digest, size: u64, ttl: Duration) -> Presigned {
        let expires = now_unix() + ttl.as_secs() as i64;
        let sig = hex::encode(self.mac(method, digest, size, expires).finalize().into_bytes());
        Presigned {
            method,
            url: format!("{}{LOCAL_BLOB_PATH}{digest}?size={size}&expires={expires}&sig={sig}", self.base_url),
            headers: Vec::new(),
            expires_at: expires,
        }
    }

    /// Checks a presigned request; `size` is 0 for GET URLs.
    pub fn verify(&self, method: &str, digest: &Digest, size: u64, expires: i64, sig_hex: &str) -> Result<()> {
        let sig = hex::decode(sig_hex).map_err(|_| Error::TokenInvalid)?;
        self.mac(method, digest, size, expires).verify_slice(&sig).map_err(|_| Error::TokenInvalid)?;
        if now_unix() >= expires {
            return Err(Error::TokenExpired);
        }
        Ok(())
    }
}

pub struct FsBlobStore {
    root: PathBuf,
    tmp: PathBuf,
    presigner: LocalPresigner,
}

impl FsBlobStore {
    /// `dir` is the data dir's blob folder; it and its temp folder are created if missing.
    pub fn open(dir: &Path, presigner: LocalPresigner) -> io::Result<FsBlobStore> {
        let tmp = dir.join("tmp");
        std::fs::create_dir_all(dir.join("sha256"))?;
        std::fs::create_dir_all(&tmp)?;
        Ok(FsBlobStore { root: dir.to_owned(), tmp, presigner })
    }

    pub fn presigner(&self) -> &LocalPresigner {
        &self.presigner
    }

    pub fn path_of(&self, digest: &Digest) -> PathBuf {
        self.root.join(digest.storage_key())
    }

    /// Stream `body` to disk while hashing; publish only if it hashes to `digest` (and has
    /// `expected_size` bytes, when given). Memory stays flat in the blob size.
    pub async fn put_stream<S, E>(&self, digest: &Digest, expected_size: Option<u64>, mut body: S) -> Result<PutOutcome>
    where
        S: Stream<Item = std::result::Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        let final_path = self.path_of(digest);
        if tokio::fs::try_exists(&final_path).await.map_err(io_err)? {
            return self.existing(digest).await;
        }
        let tmp_path = self.tmp.join(format!("{}.{}", digest.hex(), random_suffix()));
        let written = async {
            let mut file = tokio::fs::File::create_new(&tmp_path).await.map_err(io_err)?;
            let mut hasher = DigestWriter::default();
            while let Some(chunk) = body.next().await {
                let chunk = chunk.map_err(|e| Error::BadRequest(format!("upload interrupted: {e}")))?;
                if expected_size.is_some_and(|max| hasher.len() + chunk.len() as u64 > max) {
                    return Err(Error::BadRequest("the upload is longer than its declared size".into()));
                }
                hasher.update(&chunk);
                file.write_all(&chunk).await.map_err(io_err)?;
            }
            if expected_size.is_some_and(|n| n != hasher.len()) {
                return Err(Error::BadRequest("the upload is shorter than its declared size".into()));
            }
            let actual = hasher.finish();
            if &actual != digest {
                return Err(Error::DigestMismatch { expected: digest.to_string(), actual: actual.to_string() });
            }
            file.sync_all().await.map_err(io_err)?;
            Ok(())
        }
        .await;
        let outcome = match written {
            Ok(()) => self.publish(&tmp_path, &final_path).await,
            Err(e) => Err(e),
        };
        let _ = tokio::fs::remove_file(&tmp_path).await;
        match outcome? {
            PutOutcome::Created => Ok(PutOutcome::Created),
            PutOutcome::Existed => self.existing(digest).await,
        }
    }

    /// Create-only publish: a hard link fails if the name exists, so exactly one writer wins.
    async fn publish(&self, tmp: &Path, final_path: &Path) -> Result<PutOutcome> {
        let (tmp, final_path) = (tmp.to_owned(), final_path.to_owned());
        tokio::task::spawn_blocking(move || -> io::Result<PutOutcome> {
            let dir = final_path.parent().expect("blob path has a parent");
            std::fs::create_dir_all(dir)?;
            match std::fs::hard_link(&tmp, &final_path) {
                Ok(()) => {
                    std::fs::File::open(dir)?.sync_all()?;
                    Ok(PutOutcome::Created)
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(PutOutcome::Existed),
                Err(e) => Err(e),
            }
        })
        .await
        .map_err(|e| Error::Internal(e.to_string()))?
        .map_err(io_err)
    }

    /// Where a document lives: under the store's root, next to `sha256/` (keys are ours, never a caller's).
    fn document_path(&self, key: &str) -> Result<PathBuf> {
        let ok = !key.is_empty() && key.split('/').all(|s| !s.is_empty() && s != "." && s != "..");
        if ok { Ok(self.root.join(key)) } else { Err(Error::Internal(format!("bad document key {key:?}"))) }
    }

    async fn existing(&self, digest: &Digest) -> Result<PutOutcome> {
        verify_object(self, digest).await?;
        Ok(PutOutcome::Existed)
    }
}

fn random_suffix() -> String {
    let mut raw = [0u8; 8];
    getrandom::fill(&mut raw).expect("OS random source");
    hex::encode(raw)
}

#[async_trait]
impl BlobStore for FsBlobStore {
    fn info(&self) -> BlobBackendInfo {
        BlobBackendInfo {
            backend: "fs",
            location: self.root.display().to_string(),
            prefix: String::new(),
            strict_no_overwrite: true,
        }
    }

    async fn put_if_absent(&self, digest: &Digest, bytes: Bytes) -> Result<PutOutcome> {
        let size = bytes.len() as u64;
        let body = futures_util::stream::iter([Ok::<_, io::Error>(bytes)]);
        self.put_stream(digest, Some(size), body).await
    }

    async fn put_document_if_absent(&self, key: &str, bytes: Bytes) -> Result<PutOutcome> {
        let final_path = self.document_path(key)?;
        let tmp_path = self.tmp.join(format!("document.{}", random_suffix()));
        let written = async {
            let mut file = tokio::fs::File::create_new(&tmp_path).await?;
            file.write_all(&bytes).await?;
            file.sync_all().await
        };
        let outcome = match written.await {
            Ok(()) => self.publish(&tmp_path, &final_path).await,
            Err(e) => Err(io_err(e)),
        };
        let _ = tokio::fs::remove_file(&tmp_path).await;
        outcome
    }

    async fn get_document(&self, key: &str) -> Result<Option<Bytes>> {
        match tokio::fs::read(self.document_path(key)?).await {
            Ok(b) => Ok(Some(Bytes::from(b))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err(e)),
        }
    }

    async fn head(&self, digest: &Digest) -> Result<Option<BlobHead>> {
        match tokio::fs::metadata(self.path_of(digest)).await {
            Ok(m) => Ok(Some(BlobHead { size: m.len(), stored_sha256: None })),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                self.check().await?;
                Ok(None)
            }
            Err(e) => Err(io_err(e)),
        }
    }

    async fn get(&self, digest: &Digest) -> Result<Option<BlobReader>> {
        match tokio::fs::File::open(self.path_of(digest)).await {
            Ok(file) => {
                let size = file.metadata().await.map_err(io_err)?.len();
                Ok(Some(BlobReader { size, body: Box::pin(file) }))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                self.check().await?;
                Ok(None)
            }
            Err(e) => Err(io_err(e)),
        }
    }

    async fn presign_put(&self, digest: &Digest, size: u64, ttl: Duration) -> Result<Presigned> {
        Ok(self.presigner.presign("PUT", digest, size, ttl))
    }

    async fn presign_get(&self, digest: &Digest, ttl: Duration) -> Result<Presigned> {
        Ok(self.presigner.presign("GET", digest, 0, ttl))
    }

    /// The blob and temp folders must be directories we can reach.
    async fn check(&self) -> Result<()> {
        for dir in [self.root.join("sha256"), self.tmp.clone()] {
            let meta = tokio::fs::metadata(&dir).await.map_err(io_err)?;
            if !meta.is_dir() {
                return Err(Error::unavailable(Dependency::BlobStore, format!("{} is not a directory", dir.display())));
            }
        }
        Ok(())
    }
}
