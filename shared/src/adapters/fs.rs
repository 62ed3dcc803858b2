//! Filesystem BlobStore. Layout `{root}/sha256/{hex[0..2]}/{hex}[.slot]` and staging files
//! `{root}/uploads/{ws}/{id}`, the same as S3's keys. Every file is written to a temp file, fsynced,
//! and published with a create-only hard link, so two concurrent writers cannot both win and a
//! reader never sees a partial file. Streamed uploads are hashed as they are written and never
//! published if they do not match their digest. Presigned URLs point at the local server and carry
//! an HMAC-SHA256 with a secret kept in the data dir.

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use tokio::io::AsyncWriteExt;

use crate::domain::{Digest, DigestWriter};
use crate::error::{Dependency, Error, Result};
use crate::ports::{
    BlobBackendInfo, BlobHead, BlobKey, BlobReader, BlobStore, Presigned, PutOutcome, Staged, StoredPart, UploadRef,
};

mod batch;
mod parts;
mod prefix;
mod presign;

pub use presign::{LocalGrant, LocalPresigner};

pub const LOCAL_BLOB_PATH: &str = "/_local/blobs/";
pub const LOCAL_UPLOAD_PATH: &str = "/_local/uploads/";

fn io_err(e: io::Error) -> Error {
    Error::unavailable(Dependency::BlobStore, e)
}

pub struct FsBlobStore {
    root: PathBuf,
    tmp: PathBuf,
    presigner: LocalPresigner,
    /// This store's name in the parts folders it writes (`prefix`).
    id: String,
    /// Chunked uploads whose whole-file hash is begun as their parts arrive.
    prefixes: prefix::Prefixes,
    /// Where the last join started hashing (tests).
    #[cfg(test)]
    joined_from: std::sync::atomic::AtomicU64,
}

impl FsBlobStore {
    /// `dir` is the data dir's blob folder; it and its temp and upload folders are created if missing.
    pub fn open(dir: &Path, presigner: LocalPresigner) -> io::Result<FsBlobStore> {
        let tmp = dir.join("tmp");
        for sub in ["sha256", "tmp", "uploads"] {
            std::fs::create_dir_all(dir.join(sub))?;
        }
        sweep(&dir.join("uploads"), STAGED_LIFETIME);
        // A write in progress touches its temp file at least every megabyte; one untouched for an hour
        // belongs to a process that died mid-write (SIGKILL, power loss): nothing will ever publish it.
        sweep(&tmp, TEMP_IDLE);
        Ok(FsBlobStore {
            root: dir.to_owned(),
            tmp,
            presigner,
            id: random_suffix(),
            prefixes: prefix::Prefixes::default(),
            #[cfg(test)]
            joined_from: Default::default(),
        })
    }

    pub fn presigner(&self) -> &LocalPresigner {
        &self.presigner
    }

    pub fn path_of(&self, key: &BlobKey) -> PathBuf {
        self.root.join(key.storage_key())
    }

    pub fn upload_path(&self, upload: &UploadRef) -> PathBuf {
        self.root.join(upload.storage_key())
    }

    /// The local stand-in for a presigned PUT to S3 with a signed checksum and `If-None-Match: *`:
    /// stream `body` to a temp file while hashing (memory flat in the size), and publish it at the
    /// upload's staging key only if it has `size` bytes that hash to `digest`. A second PUT to the
    /// same upload is refused (412), as S3 refuses it.
    pub async fn receive_upload<S, E>(
        &self,
        upload: &UploadRef,
        digest: &Digest,
        size: u64,
        body: S,
    ) -> Result<PutOutcome>
    where
        S: Stream<Item = std::result::Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        let target = self.upload_path(upload);
        if tokio::fs::try_exists(&target).await.map_err(io_err)? {
            return Err(Error::PreconditionFailed("this upload has already been received".into()));
        }
        match self.write_new(&target, Some(digest), Some(size), body).await? {
            PutOutcome::Created => {
                // The digest these bytes were just checked against, for `complete` (a lost or
                // unreadable record only means `complete` re-hashes).
                let record = checksum_record(&target);
                if let Err(e) = tokio::fs::write(&record, digest.to_string()).await {
                    tracing::warn!(error = %e, record = %record.display(), "could not record a staged upload's checksum");
                }
                Ok(PutOutcome::Created)
            }
            PutOutcome::Existed => Err(Error::PreconditionFailed("this upload has already been received".into())),
        }
    }

    /// Stream `body` to a temp file while hashing, check it against `digest` and `size` when given,
    /// fsync, and publish it at `target` create-only. Nothing is left in the temp folder.
    async fn write_new<S, E>(
        &self,
        target: &Path,
        digest: Option<&Digest>,
        size: Option<u64>,
        mut body: S,
    ) -> Result<PutOutcome>
    where
        S: Stream<Item = std::result::Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        let tmp_path = self.tmp.join(format!("write.{}", random_suffix()));
        // Removes the temp file however this ends: an error, success (published by a hard link), or
        // the request dropped mid-body (a client that disconnects, Ctrl-C during `helix push`).
        let _guard = RemoveOnDrop(tmp_path.clone());
        let written = async {
            // Buffered: request bodies arrive in small chunks, and each write to a tokio file is a
            // trip to the blocking pool.
            let mut file = tokio::io::BufWriter::with_capacity(
                1 << 20,
                tokio::fs::File::create_new(&tmp_path).await.map_err(io_err)?,
            );
            let mut hasher = DigestWriter::default();
            while let Some(chunk) = body.next().await {
                let chunk = chunk.map_err(|e| Error::BadRequest(format!("upload interrupted: {e}")))?;
                if size.is_some_and(|max| hasher.len() + chunk.len() as u64 > max) {
                    return Err(Error::BadRequest("the upload is longer than its declared size".into()));
                }
                hasher.update(&chunk);
                file.write_all(&chunk).await.map_err(io_err)?;
            }
            if size.is_some_and(|n| n != hasher.len()) {
                return Err(Error::BadRequest("the upload is shorter than its declared size".into()));
            }
            let actual = hasher.finish();
            if let Some(digest) = digest
                && &actual != digest
            {
                return Err(Error::DigestMismatch { expected: digest.to_string(), actual: actual.to_string() });
            }
            file.flush().await.map_err(io_err)?;
            file.get_ref().sync_all().await.map_err(io_err)?;
            Ok(())
        }
        .await;
        match written {
            Ok(()) => self.publish(&tmp_path, target).await,
            Err(e) => Err(e),
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

    /// The object at `key`, read from byte `start` on (the local presigned GET of a range); the
    /// reader's `size` is the whole object's.
    pub async fn get_from(&self, key: &BlobKey, start: u64) -> Result<Option<BlobReader>> {
        self.open_file_at(&self.path_of(key), start).await
    }

    async fn open_file(&self, path: &Path) -> Result<Option<BlobReader>> {
        self.open_file_at(path, 0).await
    }

    async fn open_file_at(&self, path: &Path, start: u64) -> Result<Option<BlobReader>> {
        match tokio::fs::File::open(path).await {
            Ok(mut file) => {
                let size = file.metadata().await.map_err(io_err)?.len();
                if start > 0 {
                    use tokio::io::AsyncSeekExt;
                    file.seek(io::SeekFrom::Start(start)).await.map_err(io_err)?;
                }
                Ok(Some(BlobReader { size, body: Box::pin(file) }))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                self.check().await?;
                Ok(None)
            }
            Err(e) => Err(io_err(e)),
        }
    }
}

/// Staging files are kept as long as on S3 (the bucket's lifecycle rule): a day.
pub const STAGED_LIFETIME: Duration = Duration::from_secs(86_400);

/// A temp file (`tmp/write.*`) untouched this long at start belongs to a writer that died.
pub const TEMP_IDLE: Duration = Duration::from_secs(3_600);

/// The temp file of one write, removed when the write ends in any way (its future may be dropped
/// at any await: a synchronous remove, not a task that would never run).
struct RemoveOnDrop(PathBuf);

impl RemoveOnDrop {
    /// The file was removed (or renamed away) already: nothing is left to remove.
    fn disarm(&mut self) {
        self.0 = PathBuf::new();
    }
}

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        if !self.0.as_os_str().is_empty() {
            let _ = std::fs::remove_file(&self.0);
        }
    }
}

/// Remove files older than `max_age` under `dir` (staging files at start, and in a workspace's
/// folder whenever it plans an upload; temp files at start), so abandoned uploads do not fill the
/// disk for good.
///
/// A chunked upload's writer marks (`writer.{store id}`, parts::prefix) are never removed on their own:
/// while a part that store wrote may be joined, its mark must be there. A parts folder left with
/// nothing but marks (its `data` and records swept: no part can be written or joined), and whose
/// entries had not changed for `max_age` (not a folder being created), is removed whole.
fn sweep(dir: &Path, max_age: Duration) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    let old =
        |meta: &std::fs::Metadata| meta.modified().ok().and_then(|m| m.elapsed().ok()).is_some_and(|age| age > max_age);
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(meta) = entry.metadata() else { continue };
        if meta.is_dir() {
            sweep(&path, max_age);
            if old(&meta) && parts::only_marks_left(&path) {
                let _ = std::fs::remove_dir_all(&path);
            }
        } else if entry.file_name().to_string_lossy().starts_with(prefix::WRITER_MARK) {
            continue;
        } else if old(&meta) {
            let _ = std::fs::remove_file(&path);
        }
    }
}

/// Beside a staged upload: the SHA-256 the local presigned PUT verified while writing it.
fn checksum_record(staged: &Path) -> PathBuf {
    let mut name = staged.as_os_str().to_owned();
    name.push(".sha256");
    PathBuf::from(name)
}

fn random_suffix() -> String {
    crate::domain::random_hex::<8>()
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

    /// Files carry no checksum: every verification of a blob re-hashes.
    fn checksums_verified(&self) -> bool {
        false
    }

    /// A staged upload's checksum record is written by this store after it hashed the bytes while
    /// writing them (`receive_upload`), and staging files are never rewritten.
    fn staged_checksums_verified(&self) -> bool {
        true
    }

    /// `promote` hard-links the staged file: the blob key is the verified file itself.
    fn promote_is_exact(&self) -> bool {
        true
    }

    async fn put_if_absent(&self, key: &BlobKey, bytes: Bytes) -> Result<PutOutcome> {
        let size = bytes.len() as u64;
        let body = futures_util::stream::iter([Ok::<_, io::Error>(bytes)]);
        self.write_new(&self.path_of(key), Some(&key.digest), Some(size), body).await
    }

    /// `batch::put_many` hashes every blob before it looks for its key.
    fn put_many_verifies(&self) -> bool {
        true
    }

    /// The batch is written, fsynced and published together (`batch`), on one blocking thread (its
    /// fsyncs on a few): one trip off the runtime instead of several per blob.
    async fn put_many_if_absent(&self, items: Vec<(BlobKey, Bytes)>) -> Vec<Result<PutOutcome>> {
        let (root, tmp, n) = (self.root.clone(), self.tmp.clone(), items.len());
        match tokio::task::spawn_blocking(move || batch::put_many(&root, &tmp, &items)).await {
            Ok(outcomes) => outcomes,
            Err(e) => (0..n).map(|_| Err(Error::Internal(e.to_string()))).collect(),
        }
    }

    async fn put_document_if_absent(&self, key: &str, bytes: Bytes) -> Result<PutOutcome> {
        let body = futures_util::stream::iter([Ok::<_, io::Error>(bytes)]);
        self.write_new(&self.document_path(key)?, None, None, body).await
    }

    async fn put_document_file_if_absent(&self, key: &str, file: &Path, digest: &Digest) -> Result<PutOutcome> {
        let f = tokio::fs::File::open(file).await.map_err(io_err)?;
        self.write_new(&self.document_path(key)?, Some(digest), None, tokio_util::io::ReaderStream::new(f)).await
    }

    async fn document_sha256(&self, key: &str) -> Result<Option<Digest>> {
        use tokio::io::AsyncReadExt;
        let mut f = match tokio::fs::File::open(self.document_path(key)?).await {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err(e)),
        };
        let mut hasher = DigestWriter::default();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = f.read(&mut buf).await.map_err(io_err)?;
            if n == 0 {
                return Ok(Some(hasher.finish()));
            }
            hasher.update(&buf[..n]);
        }
    }

    async fn get_document(&self, key: &str) -> Result<Option<Bytes>> {
        match tokio::fs::read(self.document_path(key)?).await {
            Ok(b) => Ok(Some(Bytes::from(b))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err(e)),
        }
    }

    async fn head(&self, key: &BlobKey) -> Result<Option<BlobHead>> {
        match tokio::fs::metadata(self.path_of(key)).await {
            Ok(m) => Ok(Some(BlobHead { size: m.len(), stored_sha256: None })),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                self.check().await?;
                Ok(None)
            }
            Err(e) => Err(io_err(e)),
        }
    }

    async fn get_many(&self, keys: Vec<(BlobKey, u64)>) -> Vec<Result<Option<Bytes>>> {
        let paths: Vec<(PathBuf, u64)> = keys.iter().map(|(key, size)| (self.path_of(key), *size)).collect();
        let n = paths.len();
        let read =
            tokio::task::spawn_blocking(move || paths.iter().map(|(p, size)| batch::read_small(p, *size)).collect())
                .await
                .unwrap_or_else(|e| (0..n).map(|_| Err(io::Error::other(e.to_string()))).collect::<Vec<_>>());
        // A missing file is None only while the store's folders are there (as `get` says).
        let absent = read.iter().any(|r| matches!(r, Ok(None)));
        let reachable = if absent { self.check().await.err() } else { None };
        read.into_iter()
            .map(|r| match (r, &reachable) {
                (Ok(None), Some(e)) => Err(Error::unavailable(Dependency::BlobStore, e)),
                (r, _) => r.map_err(io_err),
            })
            .collect()
    }

    async fn get(&self, key: &BlobKey) -> Result<Option<BlobReader>> {
        self.open_file(&self.path_of(key)).await
    }

    async fn presign_get(&self, key: &BlobKey, ttl: Duration) -> Result<Presigned> {
        Ok(self.presigner.get_url(key, ttl))
    }

    async fn presign_upload(&self, upload: &UploadRef, digest: &Digest, size: u64, ttl: Duration) -> Result<Presigned> {
        let dir = self.root.join("uploads").join(upload.workspace.as_str());
        tokio::task::spawn_blocking(move || sweep(&dir, STAGED_LIFETIME))
            .await
            .map_err(|e| Error::Internal(e.to_string()))?;
        Ok(self.presigner.upload_url(upload, digest, size, ttl))
    }

    async fn staged(&self, upload: &UploadRef) -> Result<Option<Staged>> {
        match tokio::fs::metadata(self.upload_path(upload)).await {
            Ok(m) => {
                let recorded = tokio::fs::read_to_string(checksum_record(&self.upload_path(upload))).await.ok();
                let stored_sha256 = recorded.and_then(|d| Digest::parse(d.trim()).ok());
                Ok(Some(Staged { size: m.len(), stored_sha256, version_id: None, etag: None }))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                self.check().await?;
                Ok(None)
            }
            Err(e) => Err(io_err(e)),
        }
    }

    /// Staging files are published create-only and never rewritten, so the path is the pin.
    async fn read_staged(&self, upload: &UploadRef, _staged: &Staged) -> Result<BlobReader> {
        self.open_file(&self.upload_path(upload)).await?.ok_or(Error::UploadMissing)
    }

    async fn read_staged_range(
        &self,
        upload: &UploadRef,
        _staged: &Staged,
        start: u64,
        end: u64,
    ) -> Result<BlobReader> {
        use tokio::io::AsyncReadExt;
        let reader = self.open_file_at(&self.upload_path(upload), start).await?.ok_or(Error::UploadMissing)?;
        Ok(BlobReader { size: reader.size, body: Box::pin(reader.body.take(end.saturating_sub(start))) })
    }

    async fn promote(&self, upload: &UploadRef, _staged: &Staged, key: &BlobKey) -> Result<PutOutcome> {
        match self.publish(&self.upload_path(upload), &self.path_of(key)).await {
            Err(Error::Unavailable { .. }) if !self.upload_path(upload).exists() => Err(Error::UploadMissing),
            other => other,
        }
    }

    async fn begin_parts(&self, upload: &UploadRef, part_size: u64) -> Result<String> {
        self.begin_parts_dir(upload, part_size).await
    }

    async fn presign_part(
        &self,
        upload: &UploadRef,
        _store_id: &str,
        number: u32,
        sha256: &Digest,
        size: u64,
        ttl: Duration,
    ) -> Result<Presigned> {
        Ok(self.presigner.part_url(upload, number, sha256, size, ttl))
    }

    async fn stored_parts(&self, upload: &UploadRef, _store_id: &str) -> Result<Option<Vec<StoredPart>>> {
        self.list_part_files(upload).await
    }

    async fn join_parts(&self, upload: &UploadRef, _store_id: &str, parts: &[StoredPart]) -> Result<PutOutcome> {
        self.join_part_files(upload, parts).await
    }

    async fn put_plan(&self, upload: &UploadRef, plan: Bytes) -> Result<PutOutcome> {
        let body = futures_util::stream::iter([Ok::<_, io::Error>(plan)]);
        self.write_new(&parts::plan_path(&self.upload_path(upload)), None, None, body).await
    }

    async fn get_plan(&self, upload: &UploadRef) -> Result<Option<Bytes>> {
        match tokio::fs::read(parts::plan_path(&self.upload_path(upload))).await {
            Ok(b) => Ok(Some(Bytes::from(b))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err(e)),
        }
    }

    async fn discard_parts(&self, upload: &UploadRef, _store_id: &str) -> Result<()> {
        self.remove_parts(upload).await
    }

    async fn discard(&self, upload: &UploadRef) -> Result<()> {
        let _ = tokio::fs::remove_file(checksum_record(&self.upload_path(upload))).await;
        match tokio::fs::remove_file(self.upload_path(upload)).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err(e)),
        }
    }

    /// The blob, temp and upload folders must be directories we can reach.
    async fn check(&self) -> Result<()> {
        for dir in [self.root.join("sha256"), self.tmp.clone(), self.root.join("uploads")] {
            let meta = tokio::fs::metadata(&dir).await.map_err(io_err)?;
            if !meta.is_dir() {
                return Err(Error::unavailable(Dependency::BlobStore, format!("{} is not a directory", dir.display())));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(dir: &Path) -> FsBlobStore {
        FsBlobStore::open(dir, LocalPresigner::new("http://127.0.0.1:1".into(), vec![7; 32])).unwrap()
    }

    fn temp_files(dir: &Path) -> Vec<PathBuf> {
        std::fs::read_dir(dir.join("tmp")).unwrap().map(|e| e.unwrap().path()).collect()
    }

    /// An upload whose body stops mid-way and whose request is dropped (the client went away, Ctrl-C
    /// during `helix push`): no temp file, no staging file is left behind.
    #[tokio::test]
    async fn an_interrupted_upload_leaves_no_file_behind() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = store(dir.path());
        let upload = UploadRef::new(&crate::domain::WorkspaceId::parse("demo").unwrap());
        let digest = Digest::of(&[0u8; 100]);
        let (started, mut got_body) = tokio::sync::mpsc::channel::<()>(1);
        // Half the body, then nothing more: the request hangs until it is dropped.
        let body = futures_util::stream::unfold(0u8, move |sent| {
            let started = started.clone();
            async move {
                if sent == 0 {
                    return Some((Ok::<_, std::io::Error>(Bytes::from_static(&[0u8; 50])), 1));
                }
                let _ = started.send(()).await;
                futures_util::future::pending::<()>().await;
                None
            }
        });
        let receiving = blobs.receive_upload(&upload, &digest, 100, Box::pin(body));
        tokio::select! {
            r = receiving => panic!("a hanging body cannot end the upload: {r:?}"),
            _ = got_body.recv() => {}
        }
        // The request is gone (dropped with the select): nothing of it stays.
        assert_eq!(temp_files(dir.path()), Vec::<PathBuf>::new());
        assert!(!blobs.upload_path(&upload).exists());
        assert!(blobs.staged(&upload).await.unwrap().is_none());

        // A body that breaks off with an error: the same.
        let broken = futures_util::stream::iter([
            Ok(Bytes::from_static(&[0u8; 50])),
            Err(std::io::Error::other("connection reset")),
        ]);
        assert!(blobs.receive_upload(&upload, &digest, 100, broken).await.is_err());
        assert_eq!(temp_files(dir.path()), Vec::<PathBuf>::new());
        assert!(!blobs.upload_path(&upload).exists());
    }

    /// A temp file left by a process that died mid-write (untouched for an hour) is removed at the next
    /// start; a fresh one (a write of another process going on) is kept.
    #[test]
    fn a_dead_writers_temp_file_is_removed_at_start() {
        let dir = tempfile::tempdir().unwrap();
        drop(store(dir.path()));
        let stale = dir.path().join("tmp/write.dead");
        let live = dir.path().join("tmp/write.live");
        for path in [&stale, &live] {
            std::fs::write(path, b"").unwrap();
        }
        let old = std::time::SystemTime::now() - TEMP_IDLE - Duration::from_secs(60);
        std::fs::File::options().write(true).open(&stale).unwrap().set_modified(old).unwrap();
        drop(store(dir.path()));
        assert_eq!(temp_files(dir.path()), vec![live]);
    }
}
