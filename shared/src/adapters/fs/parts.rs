//! The embedded store's chunked uploads (crate::chunked). A chunked upload is a folder
//! `uploads/{ws}/{id}.parts/` holding one file, `data`, into which every part is written at its own
//! offset (`(n - 1) × part size`, the size kept in `part_size` beside it), and one record per stored
//! part, `{n}.part` ("size digest"), written only after the part's bytes were hashed while written,
//! matched the signed size and SHA-256 (`receive_part`) and were fsynced. The plan is
//! `uploads/{ws}/{id}.plan`.
//!
//! Joining copies nothing: under an exclusive lock on `data` (part writers hold it shared, and a
//! writer that finds `data` moved away writes nothing), the records are checked again and `data` is
//! moved out of the folder, sealed; it is then hashed from where the hash begun while the parts arrived
//! stopped (`prefix`; from the start when that hash cannot be trusted) and published create-only at the
//! staging key with the SHA-256 of the sealed bytes, which `complete` compares with the digest, as for a
//! single upload. So the bytes are written once (as they arrive) and read once (mostly as they arrive),
//! where a join by concatenation wrote them twice and read them twice (docs/decisions.md, "Large
//! pushes" and "Hashing a chunked upload while it arrives").

use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use futures_util::{Stream, StreamExt};

use super::prefix::{self, WRITER_MARK};
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

/// In a parts folder: the file the parts are written into.
const DATA: &str = "data";
/// In a parts folder: the part size (decimal), the unit of the parts' offsets.
const PART_SIZE: &str = "part_size";

/// The bytes of a part written at a time (one in flight, the next being received: two per part).
const BATCH: usize = 512 * 1024;

fn record_name(number: u32) -> String {
    format!("{number}.part")
}

/// A part's record: "size digest".
fn parse_record(text: &str) -> Option<(u64, Digest)> {
    let (size, digest) = text.trim().split_once(' ')?;
    Some((size.parse().ok()?, Digest::parse(digest).ok()?))
}

/// True when `file` (opened at `path`) is still the file at `path`: not moved away by a join.
fn still_at(file: &std::fs::File, path: &Path) -> io::Result<bool> {
    let (open, named) = (file.metadata()?, std::fs::metadata(path));
    match named {
        Ok(named) => Ok(open.dev() == named.dev() && open.ino() == named.ino()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// `data` of a parts folder, opened for writing and locked (shared for a part, exclusive for the
/// join) without waiting: None when the lock is held the other way (a join under way; a part still
/// being written), or when the folder or its `data` is gone or was moved away by a join.
fn open_locked(dir: &Path, exclusive: bool) -> Result<Option<std::fs::File>> {
    let path = dir.join(DATA);
    let file = match std::fs::OpenOptions::new().read(true).write(true).open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err(e)),
    };
    let locked = if exclusive { file.try_lock() } else { file.try_lock_shared() };
    match locked {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => return Ok(None),
        Err(std::fs::TryLockError::Error(e)) => return Err(io_err(e)),
    }
    // Locked after a join moved it away (the join's lock is released by then): not this upload's any more.
    if !still_at(&file, &path).map_err(io_err)? {
        return Ok(None);
    }
    Ok(Some(file))
}

async fn read_part_size(dir: &Path) -> Result<u64> {
    match tokio::fs::read_to_string(dir.join(PART_SIZE)).await {
        Ok(text) => text.trim().parse::<u64>().map_err(|e| Error::Internal(format!("{}: {e}", dir.display()))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Err(Error::UploadMissing),
        Err(e) => Err(io_err(e)),
    }
}

/// True when part `number` is recorded at a full part's size (what the prefix hash may read).
fn recorded_whole(dir: &Path, number: u32, part_size: u64) -> bool {
    std::fs::read_to_string(dir.join(record_name(number)))
        .ok()
        .and_then(|text| parse_record(&text))
        .is_some_and(|(size, _)| size == part_size)
}

/// One part's bytes, hashed and written at their offset in the blocking pool, one step at a time
/// (`step`): a step owns the writer until its last write returned, so the writer (its lock, its
/// registration with the prefix hash) is never dropped while a write of it is in flight (a tokio file
/// would finish a write after the request that started it was dropped), and no thread waits on a body.
struct PartWriter {
    dir: PathBuf,
    /// `writer.{store id}`, left in the folder before any byte is written (`prefix`).
    mark: String,
    number: u32,
    offset: u64,
    size: u64,
    digest: Digest,
    file: std::fs::File,
    hasher: DigestWriter,
    /// Registered with the upload's prefix hash from before the record is removed until the writer is
    /// dropped, after its last write.
    _writing: Option<prefix::Writing>,
}

impl PartWriter {
    /// Before any byte: this store's mark, and the part's record removed.
    fn start(&mut self) -> Result<()> {
        use std::io::Seek;
        let mark = self.dir.join(&self.mark);
        if !mark.exists() {
            std::fs::write(&mark, b"").map_err(io_err)?;
        }
        match std::fs::remove_file(self.dir.join(record_name(self.number))) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err(e)),
        }
        self.file.seek(io::SeekFrom::Start(self.offset)).map_err(io_err)?;
        Ok(())
    }

    /// More of the part's bytes (`receive_part` refused the body before it grew past `size`).
    fn write(&mut self, chunks: &[Bytes]) -> Result<()> {
        chunks.iter().for_each(|c| self.hasher.update(c));
        write_all_vectored(&mut self.file, chunks).map_err(io_err)
    }

    /// The bytes checked, made durable, and recorded.
    fn finish(&mut self) -> Result<()> {
        if self.hasher.len() != self.size {
            return Err(Error::BadRequest("the part is shorter than its declared size".into()));
        }
        let actual = std::mem::take(&mut self.hasher).finish();
        if actual != self.digest {
            return Err(Error::DigestMismatch { expected: self.digest.to_string(), actual: actual.to_string() });
        }
        self.file.sync_data().map_err(io_err)?;
        let record_tmp = self.dir.join(format!("{}.part.{}", self.number, random_suffix()));
        let _guard = RemoveOnDrop(record_tmp.clone());
        std::fs::write(&record_tmp, format!("{} {}", self.size, self.digest)).map_err(io_err)?;
        std::fs::rename(&record_tmp, self.dir.join(record_name(self.number))).map_err(io_err)?;
        std::fs::File::open(&self.dir).and_then(|d| d.sync_all()).map_err(io_err)
    }
}

type Step = tokio::task::JoinHandle<(PartWriter, Result<()>)>;

/// Run `op` on `writer` in the blocking pool; the writer comes back with the result (`done`).
fn step(mut writer: PartWriter, op: impl FnOnce(&mut PartWriter) -> Result<()> + Send + 'static) -> Step {
    tokio::task::spawn_blocking(move || {
        let result = op(&mut writer);
        (writer, result)
    })
}

async fn done(step: Step) -> Result<PartWriter> {
    let (writer, result) = step.await.map_err(|e| Error::Internal(e.to_string()))?;
    result.map(|()| writer)
}

/// `write_all` over a batch of chunks, one `writev` for as many as it takes.
fn write_all_vectored(file: &mut std::fs::File, chunks: &[Bytes]) -> io::Result<()> {
    use std::io::{IoSlice, Write};
    let mut slices: Vec<IoSlice<'_>> = chunks.iter().map(|c| IoSlice::new(c)).collect();
    let mut slices = &mut slices[..];
    while !slices.is_empty() {
        match file.write_vectored(slices) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => IoSlice::advance_slices(&mut slices, n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// True when `dir` is a parts folder holding nothing but writer marks (swept: the upload is dead).
pub(super) fn only_marks_left(dir: &Path) -> bool {
    if !dir.as_os_str().to_string_lossy().ends_with(".parts") {
        return false;
    }
    let Ok(entries) = std::fs::read_dir(dir) else { return false };
    entries.flatten().all(|e| e.file_name().to_string_lossy().starts_with(WRITER_MARK))
}

/// True when the only writer's mark in `dir` is `own` (or there is none): no other store wrote a part.
fn only_mark(dir: &Path, own: &str) -> io::Result<bool> {
    for entry in std::fs::read_dir(dir)? {
        let name = entry?.file_name();
        let name = name.to_string_lossy();
        if name.starts_with(WRITER_MARK) && name != own {
            return Ok(false);
        }
    }
    Ok(true)
}

impl FsBlobStore {
    pub(super) async fn begin_parts_dir(&self, upload: &UploadRef, part_size: u64) -> Result<String> {
        let dir = parts_dir(&self.upload_path(upload));
        tokio::fs::create_dir_all(&dir).await.map_err(io_err)?;
        tokio::fs::write(dir.join(PART_SIZE), part_size.to_string()).await.map_err(io_err)?;
        tokio::fs::File::create_new(dir.join(DATA)).await.map_err(io_err)?;
        std::fs::File::open(&dir).and_then(|d| d.sync_all()).map_err(io_err)?;
        self.prefixes.follow(&dir, dir.join(DATA), part_size);
        Ok(upload.id.clone())
    }

    /// The local stand-in for a presigned UploadPart with a signed `x-amz-checksum-sha256`: stream
    /// `body` into the upload's `data` at the part's offset while hashing, and record it as part
    /// `number` only if it has `size` bytes that hash to `digest` (a mismatch is 400
    /// `digest_mismatch`, and the part is not stored). A part sent again replaces the one before, as
    /// on S3: its record is removed before its bytes change, and written again only once they match.
    ///
    /// The bytes are hashed and written by one blocking task that owns the file (`PartWriter`): when
    /// the request is dropped mid-body, that task still ends every write before it unregisters from
    /// the upload's prefix hash (`prefix::Writing`) and releases the lock.
    pub async fn receive_part<S, E>(
        &self,
        upload: &UploadRef,
        number: u32,
        digest: &Digest,
        size: u64,
        mut body: S,
    ) -> Result<()>
    where
        S: Stream<Item = std::result::Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        if !(1..=crate::ports::MAX_PARTS as u32).contains(&number) {
            return Err(Error::BadRequest("a part number is from 1 to 10000".into()));
        }
        let dir = parts_dir(&self.upload_path(upload));
        let part_size = read_part_size(&dir).await?;
        if size > part_size {
            return Err(Error::BadRequest(format!("a part has at most {part_size} bytes")));
        }
        // Held (shared) until the part is recorded: a join waits for no one, it refuses while a part is written.
        let file = {
            let dir = dir.clone();
            tokio::task::spawn_blocking(move || open_locked(&dir, false))
                .await
                .map_err(|e| Error::Internal(e.to_string()))??
                .ok_or(Error::UploadMissing)?
        };
        let prefix = self.prefixes.get(&dir);
        let writer = PartWriter {
            dir: dir.clone(),
            mark: format!("{WRITER_MARK}{}", self.id),
            number,
            offset: u64::from(number - 1) * part_size,
            size,
            digest: digest.clone(),
            file,
            hasher: DigestWriter::default(),
            _writing: prefix.as_ref().map(|p| p.writing(number)),
        };
        // The body's chunks as they came (no copy), a batch of about `BATCH` bytes written while the
        // next is received. A request dropped (or refused) mid-part leaves its writer to the step in
        // flight, which drops it after its write.
        let mut last = step(writer, PartWriter::start);
        let (mut batch, mut batched, mut received) = (Vec::new(), 0usize, 0u64);
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| Error::BadRequest(format!("upload interrupted: {e}")))?;
            received += chunk.len() as u64;
            if received > size {
                return Err(Error::BadRequest("the part is longer than its declared size".into()));
            }
            batched += chunk.len();
            batch.push(chunk);
            if batched >= BATCH {
                let writer = done(last).await?;
                let chunks = std::mem::take(&mut batch);
                batched = 0;
                last = step(writer, move |w| w.write(&chunks));
            }
        }
        let mut writer = done(last).await?;
        if !batch.is_empty() {
            writer = done(step(writer, move |w| w.write(&batch))).await?;
        }
        drop(done(step(writer, PartWriter::finish)).await?);
        if let Some(prefix) = prefix {
            self.prefixes.advance_later(&prefix, move |n| recorded_whole(&dir, n, part_size));
        }
        Ok(())
    }

    pub(super) async fn list_part_files(&self, upload: &UploadRef) -> Result<Option<Vec<StoredPart>>> {
        let dir = parts_dir(&self.upload_path(upload));
        // No `data`: never begun, joined (sealed), or a folder of another layout: nothing to resume.
        if !tokio::fs::try_exists(dir.join(DATA)).await.map_err(io_err)? {
            return Ok(None);
        }
        let mut entries = match tokio::fs::read_dir(&dir).await {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err(e)),
        };
        let mut parts = Vec::new();
        while let Some(entry) = entries.next_entry().await.map_err(io_err)? {
            let name = entry.file_name();
            let Some(number) = name.to_str().and_then(|n| n.strip_suffix(".part")).and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            let text = match tokio::fs::read_to_string(entry.path()).await {
                Ok(t) => t,
                // Removed since the listing: a part being sent again.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io_err(e)),
            };
            if let Some((size, sha256)) = parse_record(&text) {
                parts.push(StoredPart { number, size, sha256: Some(sha256), etag: None });
            }
        }
        parts.sort_by_key(|p| p.number);
        Ok(Some(parts))
    }

    /// Seal `data` (every part in `parts` still recorded as listed, none being written), hash it and
    /// publish it create-only at the staging key with the SHA-256 that was read.
    pub(super) async fn join_part_files(&self, upload: &UploadRef, parts: &[StoredPart]) -> Result<PutOutcome> {
        let target = self.upload_path(upload);
        if tokio::fs::try_exists(&target).await.map_err(io_err)? {
            return Ok(PutOutcome::Existed);
        }
        let dir = parts_dir(&target);
        let sealed = self.tmp.join(format!("join.{}", random_suffix()));
        let _guard = RemoveOnDrop(sealed.clone());
        let expected: Vec<StoredPart> = parts.to_vec();
        let (dir2, sealed2) = (dir.clone(), sealed.clone());
        let prefix = self.prefixes.get(&dir);
        let own_mark = format!("{WRITER_MARK}{}", self.id);
        let digest = tokio::task::spawn_blocking(move || -> Result<(Digest, u64)> {
            use std::io::{Read, Seek};
            let Some(mut file) = open_locked(&dir2, true)? else {
                if std::fs::exists(dir2.join(DATA)).map_err(io_err)? {
                    return Err(Error::UploadIncomplete("a part is still being written".into()));
                }
                return Err(Error::UploadMissing);
            };
            // Under the lock no part is being written: the records are the parts' bytes.
            let mut total = 0u64;
            for part in &expected {
                let text = std::fs::read_to_string(dir2.join(record_name(part.number))).ok();
                let same = text.as_deref().and_then(parse_record).is_some_and(|(size, sha256)| {
                    size == part.size && part.sha256.as_ref().is_none_or(|listed| *listed == sha256)
                });
                if !same {
                    return Err(Error::UploadIncomplete(format!("part {} was sent again meanwhile", part.number)));
                }
                total += part.size;
            }
            if file.metadata().map_err(io_err)?.len() != total {
                file.set_len(total).map_err(io_err)?;
                file.sync_all().map_err(io_err)?;
            }
            // Moved out of the folder while locked: no part can be written into it any more.
            std::fs::rename(dir2.join(DATA), &sealed2).map_err(io_err)?;
            // What was hashed while the parts arrived, if it can be trusted (`prefix`); the rest is read now.
            let (start, mut hasher) = match prefix.map(|p| p.seal()) {
                Some((start, hasher))
                    if start > 0
                        && start <= total
                        && only_mark(&dir2, &own_mark).map_err(io_err)?
                        && hasher.len() == start =>
                {
                    (start, hasher)
                }
                _ => (0, DigestWriter::default()),
            };
            file.seek(io::SeekFrom::Start(start)).map_err(io_err)?;
            let mut buf = vec![0u8; 1 << 20];
            loop {
                let n = match file.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(io_err(e)),
                };
                hasher.update(&buf[..n]);
            }
            Ok((hasher.finish(), start))
        })
        .await
        .map_err(|e| Error::Internal(e.to_string()))?;
        // Sealed (even when the hash failed after): nothing more to follow.
        if digest.is_ok() || !dir.join(DATA).exists() {
            self.prefixes.take(&dir);
        }
        let (digest, hashed_before) = digest?;
        tracing::debug!(upload = %upload.id, hashed_before, "joined");
        #[cfg(test)]
        self.joined_from.store(hashed_before, std::sync::atomic::Ordering::SeqCst);
        let outcome = self.publish(&sealed, &target).await?;
        if outcome == PutOutcome::Created {
            // The SHA-256 of the bytes just read, for `complete` to compare with the digest.
            let record = checksum_record(&target);
            if let Err(e) = tokio::fs::write(&record, digest.to_string()).await {
                tracing::warn!(error = %e, record = %record.display(), "could not record a joined upload's checksum");
            }
        }
        Ok(outcome)
    }

    pub(super) async fn remove_parts(&self, upload: &UploadRef) -> Result<()> {
        let staged = self.upload_path(upload);
        self.prefixes.take(&parts_dir(&staged));
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

#[cfg(test)]
#[path = "parts_tests.rs"]
mod tests;
