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

    fn write(&mut self, chunks: &[Bytes]) -> Result<()> {
        for chunk in chunks {
            if self.hasher.len() + chunk.len() as u64 > self.size {
                return Err(Error::BadRequest("the part is longer than its declared size".into()));
            }
            self.hasher.update(chunk);
        }
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
mod tests {
    use super::*;
    use crate::adapters::fs::LocalPresigner;
    use crate::ports::{BlobStore, Staged};

    fn parts_of(bytes: &[u8], size: usize) -> Vec<(u32, Bytes, Digest)> {
        bytes.chunks(size).enumerate().map(|(i, c)| (i as u32 + 1, Bytes::copy_from_slice(c), Digest::of(c))).collect()
    }

    async fn send(store: &FsBlobStore, upload: &UploadRef, part: &(u32, Bytes, Digest)) -> Result<()> {
        let body = futures_util::stream::iter([Ok::<_, io::Error>(part.1.clone())]);
        store.receive_part(upload, part.0, &part.2, part.1.len() as u64, body).await
    }

    /// The join copies nothing and trusts nothing it did not read: parts land at their offsets in one
    /// file, a join refuses while a part is being written (and when a part was sent again since the
    /// listing), the joined file's recorded SHA-256 is the one of what was read, and a part sent after
    /// the join can neither reach the sealed file nor be stored.
    #[tokio::test]
    async fn parts_are_joined_in_place_and_a_part_in_flight_or_late_cannot_change_the_joined_file() {
        let dir = tempfile::tempdir().unwrap();
        let store =
            FsBlobStore::open(dir.path(), LocalPresigner::new("http://127.0.0.1:1".into(), vec![7; 32])).unwrap();
        let upload = UploadRef::new(&crate::domain::WorkspaceId::parse("demo").unwrap());
        let file: Vec<u8> = (0..150u32).map(|i| (i * 7 % 251) as u8).collect();
        let parts = parts_of(&file, 64);
        store.begin_parts(&upload, 64).await.unwrap();
        // Out of order, as concurrent parts arrive; a wrong part is not stored.
        for n in [3, 1, 2] {
            send(&store, &upload, &parts[n - 1]).await.unwrap();
        }
        let wrong = (2, Bytes::from(vec![0u8; 64]), parts[1].2.clone());
        assert!(matches!(send(&store, &upload, &wrong).await, Err(Error::DigestMismatch { .. })));
        let listed = store.list_part_files(&upload).await.unwrap().unwrap();
        assert_eq!(
            listed.iter().map(|p| p.number).collect::<Vec<_>>(),
            [1, 3],
            "part 2 was overwritten by wrong bytes"
        );
        send(&store, &upload, &parts[1]).await.unwrap();
        let listed = store.list_part_files(&upload).await.unwrap().unwrap();
        assert_eq!(listed.iter().map(|p| (p.number, p.size)).collect::<Vec<_>>(), [(1, 64), (2, 64), (3, 22)]);

        // Part 3 sent again, its body hanging: the join refuses (409), then refuses the listing it
        // was given (part 3 is not stored any more), until part 3 is stored again.
        let (started, mut got_body) = tokio::sync::mpsc::channel::<()>(1);
        let hanging = futures_util::stream::unfold(0u8, move |sent| {
            let started = started.clone();
            async move {
                if sent == 0 {
                    return Some((Ok::<_, io::Error>(Bytes::from_static(b"zz")), 1));
                }
                let _ = started.send(()).await;
                futures_util::future::pending::<()>().await;
                None
            }
        });
        let mut resend = Box::pin(store.receive_part(&upload, 3, &parts[2].2, 22, Box::pin(hanging)));
        tokio::select! {
            r = &mut resend => panic!("a hanging body cannot end the part: {r:?}"),
            _ = got_body.recv() => {}
        }
        match store.join_part_files(&upload, &listed).await {
            Err(Error::UploadIncomplete(why)) => assert!(why.contains("being written"), "{why}"),
            other => panic!("joined while a part was written: {other:?}"),
        }
        drop(resend);
        // The dropped part's writer ends its writes, then lets go of the lock.
        let refused = loop {
            match store.join_part_files(&upload, &listed).await {
                Err(Error::UploadIncomplete(why)) if why.contains("being written") => {
                    tokio::time::sleep(std::time::Duration::from_millis(5)).await
                }
                other => break other,
            }
        };
        match refused {
            Err(Error::UploadIncomplete(why)) => assert!(why.contains("part 3"), "{why}"),
            other => panic!("joined a part that is no longer stored: {other:?}"),
        }
        send(&store, &upload, &parts[2]).await.unwrap();
        assert_eq!(store.join_part_files(&upload, &listed).await.unwrap(), PutOutcome::Created);
        let staged = store.staged(&upload).await.unwrap().unwrap();
        assert_eq!((staged.size, staged.stored_sha256), (150, Some(Digest::of(&file))));
        assert_eq!(std::fs::read(store.upload_path(&upload)).unwrap(), file);

        // After the join: a part finds no upload, the joined file is untouched, nothing is left in tmp.
        let late = (1, Bytes::from(vec![9u8; 64]), Digest::of(&[9u8; 64]));
        assert!(matches!(send(&store, &upload, &late).await, Err(Error::UploadMissing)));
        assert!(matches!(send(&store, &upload, &parts[0]).await, Err(Error::UploadMissing)));
        assert_eq!(std::fs::read(store.upload_path(&upload)).unwrap(), file);
        assert_eq!(store.join_part_files(&upload, &listed).await.unwrap(), PutOutcome::Existed);
        assert_eq!(std::fs::read_dir(dir.path().join("tmp")).unwrap().count(), 0);
        assert!(store.list_part_files(&upload).await.unwrap().is_none(), "joined: nothing to resume");
    }

    fn store_at(dir: &Path) -> std::sync::Arc<FsBlobStore> {
        std::sync::Arc::new(
            FsBlobStore::open(dir, LocalPresigner::new("http://127.0.0.1:1".into(), vec![7; 32])).unwrap(),
        )
    }

    /// Part `number` sent with `bytes` (declared as `declared`), its body held until the sender fires:
    /// the writer is at work (registered, the part's record removed) and writes nothing before.
    fn held(
        store: &std::sync::Arc<FsBlobStore>,
        upload: &UploadRef,
        number: u32,
        bytes: Bytes,
        declared: &Digest,
    ) -> (tokio::sync::oneshot::Sender<()>, tokio::task::JoinHandle<Result<()>>) {
        let (go, wait) = tokio::sync::oneshot::channel::<()>();
        let body = Box::pin(futures_util::stream::once(async move {
            let _ = wait.await;
            Ok::<_, io::Error>(bytes)
        }));
        let (store, upload, declared) = (store.clone(), upload.clone(), declared.clone());
        let size = 64;
        let task = tokio::spawn(async move { store.receive_part(&upload, number, &declared, size, body).await });
        (go, task)
    }

    async fn until(what: &str, mut done: impl FnMut() -> bool) {
        for _ in 0..2000 {
            if done() {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        panic!("timed out waiting for {what}");
    }

    /// Four full parts and a short one, 64 bytes a part.
    fn five_parts() -> (Vec<u8>, Vec<(u32, Bytes, Digest)>) {
        let file: Vec<u8> = (0..278u32).map(|i| (i * 13 % 251) as u8).collect();
        let parts = parts_of(&file, 64);
        (file, parts)
    }

    /// The join's recorded SHA-256 is the one of the bytes it sealed, whatever the prefix hash did.
    fn assert_sealed_hash_is_of_the_bytes(store: &FsBlobStore, upload: &UploadRef, staged: &Staged) {
        let on_disk = std::fs::read(store.upload_path(upload)).unwrap();
        assert_eq!(staged.stored_sha256, Some(Digest::of(&on_disk)), "the recorded SHA-256 is not of the sealed bytes");
    }

    /// Parts stored in order are hashed as they arrive: the join reads only what follows the last
    /// full part the prefix reached, and the result is the SHA-256 of the whole file.
    #[tokio::test]
    async fn a_join_reads_only_what_the_hash_of_arriving_parts_did_not_reach() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_at(dir.path());
        let upload = UploadRef::new(&crate::domain::WorkspaceId::parse("demo").unwrap());
        let (file, parts) = five_parts();
        store.begin_parts(&upload, 64).await.unwrap();
        let folder = parts_dir(&store.upload_path(&upload));
        for part in &parts {
            send(&store, &upload, part).await.unwrap();
        }
        store.prefixes.get(&folder).unwrap().settled().await;
        let listed = store.list_part_files(&upload).await.unwrap().unwrap();
        assert_eq!(store.join_part_files(&upload, &listed).await.unwrap(), PutOutcome::Created);
        assert_eq!(store.joined_from.load(std::sync::atomic::Ordering::SeqCst), 256, "the four full parts were hashed");
        let staged = store.staged(&upload).await.unwrap().unwrap();
        assert_eq!(staged.stored_sha256, Some(Digest::of(&file)));
        assert!(store.prefixes.get(&folder).is_none(), "a joined upload is not followed");
    }

    /// Wrong bytes can reach a recorded part when two writers of it overlap: the second removes the
    /// record, the first records its right bytes, then the second writes wrong ones and is refused.
    /// The prefix hash must never have read the part before those bytes: a part with a writer at work
    /// is not read (1), a writer on a part already read voids the hash (2), and a part written by
    /// another store on the same folder voids it too (3). Each join records the SHA-256 of the bytes
    /// it sealed, which is not the file's.
    #[tokio::test]
    async fn bytes_written_after_the_prefix_hash_read_them_are_never_taken_for_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_at(dir.path());
        let ws = crate::domain::WorkspaceId::parse("demo").unwrap();
        let (file, parts) = five_parts();
        let wrong = Bytes::from(vec![0u8; 64]);
        for case in 1..=3 {
            let upload = UploadRef::new(&ws);
            store.begin_parts(&upload, 64).await.unwrap();
            let folder = parts_dir(&store.upload_path(&upload));
            let prefix = store.prefixes.get(&folder).unwrap();
            let other = store_at(dir.path());
            let (late, writer) = match case {
                // (1) The late writer starts before part 2 was ever stored, so before it could be read.
                1 => {
                    send(&store, &upload, &parts[0]).await.unwrap();
                    let late = held(&store, &upload, 2, wrong.clone(), &parts[1].2);
                    until("the writer's registration", || prefix.writers(2) == 1).await;
                    (late, &store)
                }
                // (2) and (3): every part stored and read, then the late writer starts on part 2.
                _ => {
                    for part in &parts {
                        send(&store, &upload, part).await.unwrap();
                    }
                    prefix.settled().await;
                    let writer = if case == 2 { &store } else { &other };
                    let late = held(writer, &upload, 2, wrong.clone(), &parts[1].2);
                    let record = folder.join(record_name(2));
                    until("the record's removal", || !record.exists()).await;
                    (late, writer)
                }
            };
            // The first writer stores the right bytes of part 2 (and the rest) while the late one waits.
            for part in &parts[1..] {
                send(writer, &upload, part).await.unwrap();
            }
            prefix.settled().await;
            let (go, task) = late;
            go.send(()).unwrap();
            assert!(matches!(task.await.unwrap(), Err(Error::DigestMismatch { .. })), "case {case}");
            let listed = store.list_part_files(&upload).await.unwrap().unwrap();
            assert_eq!(listed.len(), 5, "case {case}: the first writer's record stands");
            assert_eq!(store.join_part_files(&upload, &listed).await.unwrap(), PutOutcome::Created);
            let staged = store.staged(&upload).await.unwrap().unwrap();
            assert_sealed_hash_is_of_the_bytes(&store, &upload, &staged);
            assert_ne!(staged.stored_sha256, Some(Digest::of(&file)), "case {case}: wrong bytes passed for the file");
            let joined_from = store.joined_from.load(std::sync::atomic::Ordering::SeqCst);
            assert_eq!(joined_from, if case == 1 { 64 } else { 0 }, "case {case}");
        }
    }

    // ---------------------------------------------------------------- breaker review attacks

    fn ws() -> crate::domain::WorkspaceId {
        crate::domain::WorkspaceId::parse("demo").unwrap()
    }

    /// A held part whose body never ends until `go` fires (or is dropped).
    fn pending_part(
        store: &std::sync::Arc<FsBlobStore>,
        upload: &UploadRef,
        number: u32,
        declared: &Digest,
        size: u64,
    ) -> (tokio::sync::oneshot::Sender<()>, tokio::task::JoinHandle<Result<()>>) {
        let (go, wait) = tokio::sync::oneshot::channel::<()>();
        let body = Box::pin(futures_util::stream::once(async move {
            let _ = wait.await;
            Err::<Bytes, _>(io::Error::other("client went away"))
        }));
        let (store, upload, declared) = (store.clone(), upload.clone(), declared.clone());
        let task = tokio::spawn(async move { store.receive_part(&upload, number, &declared, size, body).await });
        (go, task)
    }

    /// B1: every part in flight pins a blocking-pool thread for the whole body (PartWriter blocks in
    /// `blocking_recv`), so 512 slow part bodies (the default `max_blocking_threads`) stall every
    /// `spawn_blocking` / `tokio::fs` call of the process (blob reads, sweeps, other parts, joins).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn breaker_slow_part_bodies_do_not_starve_the_blocking_pool() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_at(dir.path());
        let upload = UploadRef::new(&ws());
        store.begin_parts(&upload, 64).await.unwrap();
        let declared = Digest::of(&[1u8; 64]);
        let mut held = Vec::new();
        for _ in 0..520 {
            held.push(pending_part(&store, &upload, 1, &declared, 64));
        }
        tokio::time::sleep(std::time::Duration::from_secs(2)).await;
        let probe = tokio::time::timeout(std::time::Duration::from_secs(5), tokio::fs::metadata(dir.path())).await;
        let unrelated =
            tokio::time::timeout(std::time::Duration::from_secs(5), tokio::task::spawn_blocking(|| 42)).await;
        for (go, _) in &mut held {
            let _ = std::mem::replace(go, tokio::sync::oneshot::channel().0);
        }
        for (_, task) in held {
            let _ = task.await;
        }
        assert!(probe.is_ok(), "tokio::fs stalled for 5 s behind 520 slow part bodies");
        assert!(unrelated.is_ok(), "spawn_blocking stalled for 5 s behind 520 slow part bodies");
    }

    /// B2: abandoned uploads are never forgotten: the sweep removes files, never folders, so
    /// `retain(|dir| dir.exists())` keeps them, and after 256 abandoned uploads no upload of this
    /// process is ever followed again (the join hashes every byte again).
    #[tokio::test]
    async fn breaker_abandoned_uploads_do_not_switch_off_the_prefix_hash_for_good() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_at(dir.path());
        for _ in 0..256 {
            let abandoned = UploadRef::new(&ws());
            store.begin_parts(&abandoned, 64).await.unwrap();
            // What the 24 h sweep leaves of it: the folder, empty.
            let folder = parts_dir(&store.upload_path(&abandoned));
            for e in std::fs::read_dir(&folder).unwrap() {
                std::fs::remove_file(e.unwrap().path()).unwrap();
            }
        }
        let upload = UploadRef::new(&ws());
        let (file, parts) = five_parts();
        store.begin_parts(&upload, 64).await.unwrap();
        let folder = parts_dir(&store.upload_path(&upload));
        for part in &parts {
            send(&store, &upload, part).await.unwrap();
        }
        if let Some(p) = store.prefixes.get(&folder) {
            p.settled().await;
        }
        let listed = store.list_part_files(&upload).await.unwrap().unwrap();
        store.join_part_files(&upload, &listed).await.unwrap();
        assert_eq!(store.staged(&upload).await.unwrap().unwrap().stored_sha256, Some(Digest::of(&file)));
        assert_eq!(
            store.joined_from.load(std::sync::atomic::Ordering::SeqCst),
            256,
            "the 257th upload is not followed: 256 abandoned uploads disabled the prefix hash"
        );
    }

    /// B3: the other store's mark is written once (`if !mark.exists()`), so its mtime is that of
    /// its first part; the staging sweep (files older than 24 h, run whenever the workspace plans a
    /// single upload) removes it while the records it wrote later stand, and the join then trusts a
    /// prefix that the other store's writer changed under.
    #[tokio::test]
    async fn breaker_the_sweep_cannot_remove_another_stores_mark() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_at(dir.path());
        let other = store_at(dir.path());
        let upload = UploadRef::new(&ws());
        let (file, parts) = five_parts();
        store.begin_parts(&upload, 64).await.unwrap();
        let folder = parts_dir(&store.upload_path(&upload));
        let prefix = store.prefixes.get(&folder).unwrap();
        for part in &parts {
            send(&store, &upload, part).await.unwrap();
        }
        prefix.settled().await;
        // The other store's overlapping writers of part 2 (already hashed here): wrong bytes under a record.
        let late = held(&other, &upload, 2, Bytes::from(vec![0u8; 64]), &parts[1].2);
        let record = folder.join(record_name(2));
        until("the record's removal", || !record.exists()).await;
        send(&other, &upload, &parts[1]).await.unwrap();
        let (go, task) = late;
        go.send(()).unwrap();
        assert!(matches!(task.await.unwrap(), Err(Error::DigestMismatch { .. })));
        // The other store's mark dates from its first part, over a day ago (simulated); the part_size
        // file too. The workspace plans a single upload: the sweep runs.
        let old = std::time::SystemTime::now() - std::time::Duration::from_secs(25 * 3600);
        for e in std::fs::read_dir(&folder).unwrap() {
            let e = e.unwrap();
            let name = e.file_name().to_string_lossy().into_owned();
            if name == format!("{WRITER_MARK}{}", other.id) || name == PART_SIZE {
                std::fs::File::options().write(true).open(e.path()).unwrap().set_modified(old).unwrap();
            }
        }
        super::super::sweep(&dir.path().join("uploads"), super::super::STAGED_LIFETIME);
        let listed = store.list_part_files(&upload).await.unwrap().unwrap();
        assert_eq!(listed.len(), 5);
        store.join_part_files(&upload, &listed).await.unwrap();
        let staged = store.staged(&upload).await.unwrap().unwrap();
        let on_disk = std::fs::read(store.upload_path(&upload)).unwrap();
        assert_ne!(on_disk, file, "the sealed bytes are wrong (part 2 zeros)");
        assert_ne!(
            staged.stored_sha256,
            Some(Digest::of(&file)),
            "wrong bytes recorded under the file's digest: `complete` would link them"
        );
        assert_sealed_hash_is_of_the_bytes(&store, &upload, &staged);
    }

    /// Held up? Concurrency storm on one store: right and wrong re-sends of every part, some dropped
    /// mid-body, some declared short; then a join. The recorded SHA-256 must be that of the sealed bytes.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn breaker_storm_of_overlapping_resends_never_records_a_wrong_hash() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_at(dir.path());
        let (file, parts) = five_parts();
        let mut trusted = 0;
        for round in 0..40u32 {
            let upload = UploadRef::new(&ws());
            store.begin_parts(&upload, 64).await.unwrap();
            let folder = parts_dir(&store.upload_path(&upload));
            let prefix = store.prefixes.get(&folder).unwrap();
            let mut tasks = Vec::new();
            for i in 0..30u32 {
                let k = (round * 7 + i * 3) % 5;
                let part = parts[k as usize].clone();
                let store = store.clone();
                let upload = upload.clone();
                let kind = (round + i) % 4;
                tasks.push(tokio::spawn(async move {
                    tokio::time::sleep(std::time::Duration::from_micros(u64::from((i * 37 + round) % 500))).await;
                    match kind {
                        // right bytes
                        0 | 1 => send(&store, &upload, &part).await,
                        // wrong bytes, right declared digest, in two chunks with a pause
                        2 => {
                            let n = part.1.len();
                            let wrong = Bytes::from(vec![0xAAu8; n]);
                            let (a, b) = (wrong.slice(..n / 2), wrong.slice(n / 2..));
                            let body = futures_util::stream::iter([Ok::<_, io::Error>(a)]).chain(
                                futures_util::stream::once(async move {
                                    tokio::time::sleep(std::time::Duration::from_micros(300)).await;
                                    Ok(b)
                                }),
                            );
                            store.receive_part(&upload, part.0, &part.2, n as u64, Box::pin(body)).await
                        }
                        // wrong bytes then the request dropped mid-body
                        _ => {
                            let n = part.1.len();
                            let wrong = Bytes::from(vec![0x55u8; n / 2]);
                            let body = futures_util::stream::iter([Ok::<_, io::Error>(wrong)])
                                .chain(futures_util::stream::pending());
                            let fut = store.receive_part(&upload, part.0, &part.2, n as u64, Box::pin(body));
                            let _ = tokio::time::timeout(std::time::Duration::from_millis(2), fut).await;
                            Ok(())
                        }
                    }
                }));
            }
            for t in tasks {
                let _ = t.await.unwrap();
            }
            // Make sure every part is recorded (right bytes sent last only where missing).
            let listed = loop {
                let listed = store.list_part_files(&upload).await.unwrap().unwrap();
                if listed.len() == 5 {
                    break listed;
                }
                let have: Vec<u32> = listed.iter().map(|p| p.number).collect();
                for part in &parts {
                    if !have.contains(&part.0) {
                        let _ = send(&store, &upload, part).await;
                    }
                }
            };
            prefix.settled().await;
            let joined = loop {
                match store.join_part_files(&upload, &listed).await {
                    Err(Error::UploadIncomplete(why)) if why.contains("being written") => {
                        tokio::time::sleep(std::time::Duration::from_millis(2)).await
                    }
                    other => break other,
                }
            };
            joined.unwrap();
            let staged = store.staged(&upload).await.unwrap().unwrap();
            assert_sealed_hash_is_of_the_bytes(&store, &upload, &staged);
            if store.joined_from.load(std::sync::atomic::Ordering::SeqCst) > 0 {
                trusted += 1;
            }
            let _ = &file;
        }
        eprintln!("storm: the prefix was trusted in {trusted} of 40 joins");
    }

    /// Held up? A file of exactly four full parts (the last one at part_size), a part size that does
    /// not divide the file, and a restart (a new store on the data dir) before the join; a resume
    /// listing is not disturbed by the marks.
    #[tokio::test]
    async fn breaker_edges_of_sizes_and_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_at(dir.path());
        // Last part of declared size == part_size.
        let file: Vec<u8> = (0..256u32).map(|i| (i * 31 % 251) as u8).collect();
        let parts = parts_of(&file, 64);
        let upload = UploadRef::new(&ws());
        store.begin_parts(&upload, 64).await.unwrap();
        for part in parts.iter().rev() {
            send(&store, &upload, part).await.unwrap();
        }
        store.prefixes.get(&parts_dir(&store.upload_path(&upload))).unwrap().settled().await;
        let listed = store.list_part_files(&upload).await.unwrap().unwrap();
        store.join_part_files(&upload, &listed).await.unwrap();
        let staged = store.staged(&upload).await.unwrap().unwrap();
        assert_eq!(staged.stored_sha256, Some(Digest::of(&file)));
        assert_sealed_hash_is_of_the_bytes(&store, &upload, &staged);

        // A restart mid-upload: the new store lists (marks ignored), receives the rest, joins whole.
        let (file, parts) = five_parts();
        let upload = UploadRef::new(&ws());
        store.begin_parts(&upload, 64).await.unwrap();
        for part in &parts[..3] {
            send(&store, &upload, part).await.unwrap();
        }
        let restarted = store_at(dir.path());
        let listed = restarted.list_part_files(&upload).await.unwrap().unwrap();
        assert_eq!(listed.iter().map(|p| p.number).collect::<Vec<_>>(), [1, 2, 3]);
        for part in &parts[3..] {
            send(&restarted, &upload, part).await.unwrap();
        }
        // The old store (still alive, same dir) joins: the new store's mark makes it hash everything.
        let listed = store.list_part_files(&upload).await.unwrap().unwrap();
        store.join_part_files(&upload, &listed).await.unwrap();
        assert_eq!(store.joined_from.load(std::sync::atomic::Ordering::SeqCst), 0);
        let staged = store.staged(&upload).await.unwrap().unwrap();
        assert_eq!(staged.stored_sha256, Some(Digest::of(&file)));
    }

    /// The sweep never removes a writer's mark on its own, and removes a parts folder left with
    /// nothing but marks once it has not changed for a day; a folder just made is left alone.
    #[tokio::test]
    async fn the_sweep_keeps_marks_and_removes_a_dead_parts_folder_whole() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_at(dir.path());
        let (dead, fresh) = (UploadRef::new(&ws()), UploadRef::new(&ws()));
        let (_, parts) = five_parts();
        let day_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(25 * 3600);
        let age = |path: &Path| {
            let f = std::fs::File::open(path).unwrap();
            f.set_modified(day_ago).unwrap();
        };
        for upload in [&dead, &fresh] {
            store.begin_parts(upload, 64).await.unwrap();
            send(&store, upload, &parts[0]).await.unwrap();
        }
        let (dead_dir, fresh_dir) = (parts_dir(&store.upload_path(&dead)), parts_dir(&store.upload_path(&fresh)));
        let mark = format!("{WRITER_MARK}{}", store.id);
        // Everything in both folders a day old; the fresh folder's own entries just changed.
        for folder in [&dead_dir, &fresh_dir] {
            for e in std::fs::read_dir(folder).unwrap() {
                age(&e.unwrap().path());
            }
        }
        age(&dead_dir);
        super::super::sweep(&dir.path().join("uploads"), super::super::STAGED_LIFETIME);
        assert!(!dead_dir.exists(), "a folder left with its mark alone is removed whole");
        let left: Vec<String> = std::fs::read_dir(&fresh_dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(left, [mark], "the old files are swept, the mark stays, the folder being used stays");
    }
}
