//! Many small blobs made durable together (`BlobStore::put_many_if_absent`, a batch publish): each
//! blob's bytes are checked against its digest and written to a temp file; then every temp file is
//! made durable (`crate::durable`: one `syncfs` of the filesystem for a batch of many, else an fsync
//! each); then each is published create-only with a hard link; then each folder that gained a name
//! (and the parent of a folder created now) is made durable (again one `syncfs`, or an fsync each).
//! A blob is `Created` only once its bytes and its name are durable, as `write_new` makes them one
//! by one; the caller links it after that (the metadata commit comes last). A crash at any step
//! leaves temp files (removed here, or swept at the next start; an unnamed one the filesystem
//! removes itself) and at worst published names no commit links: content-addressed, verified
//! bytes, found and re-verified by the next upload of the digest (docs/decisions.md, "Batches on
//! the filesystem").
//!
//! Where one `syncfs` covers the batch (Linux), a temp file is unnamed (`O_TMPFILE`), kept open and
//! given its one name by `linkat` through `/proc/self/fd`: no name is made in the temp folder and
//! none removed, a third of the filesystem's work per blob on this repository's machines. Each
//! blob falls back to a named temp file when that is not possible (another filesystem, no /proc,
//! no descriptor left).

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use bytes::Bytes;
use rustix::fs::{AtFlags, Mode, OFlags};

use super::{RemoveOnDrop, io_err, random_suffix};
use crate::domain::Digest;
use crate::durable::Together;
use crate::error::{Error, Result};
use crate::ports::{BlobKey, PutOutcome};

/// A blob's bytes on their way to their name.
enum Temp {
    /// An unnamed file in the temp folder, open until it is linked.
    Unnamed(Unnamed),
    /// A named temp file (its name in the temp folder), removed when dropped.
    Named(RemoveOnDrop, String),
}

/// A blob of the batch on its way: its index, its temp file, and its key (relative to the store's root).
struct Pending {
    index: usize,
    temp: Temp,
    key: String,
}

/// Cleared for good when this system or filesystem cannot make and link unnamed files.
static UNNAMED: AtomicBool = AtomicBool::new(true);

/// Unnamed temp files open in this process, and the most it keeps open: half the descriptors its
/// limit leaves after 256 (a batch never takes the descriptors the rest of the server needs; past
/// the budget a blob goes through a named temp file, which is closed as soon as it is written).
static OPEN: AtomicUsize = AtomicUsize::new(0);

fn budget() -> usize {
    static BUDGET: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *BUDGET.get_or_init(|| {
        let soft = rustix::process::getrlimit(rustix::process::Resource::Nofile).current.unwrap_or(u64::MAX);
        (soft.saturating_sub(256) / 2).min(1 << 20) as usize
    })
}

/// An unnamed temp file, counted in `OPEN` while it is open.
struct Unnamed(File);

impl Drop for Unnamed {
    fn drop(&mut self) {
        OPEN.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Store each `(key, bytes)` unless an object is already at its key: the outcomes in order, with
/// `put_if_absent`'s meaning (`DigestMismatch` for bytes that are not the key's digest's). Names are
/// resolved from the store's root and temp folders opened once (not walked from `/` for each file).
pub(super) fn put_many(root: &Path, tmp: &Path, items: &[(BlobKey, Bytes)]) -> Vec<Result<PutOutcome>> {
    put_many_with(root, tmp, items, Together::new)
}

/// `put_many`, its files made durable by `together(files to write)`.
fn put_many_with(
    root: &Path,
    tmp: &Path,
    items: &[(BlobKey, Bytes)],
    together: impl FnOnce(usize) -> Together,
) -> Vec<Result<PutOutcome>> {
    let (root_dir, tmp_dir) = match (open_dir(root), open_dir(tmp)) {
        (Ok(r), Ok(t)) => (r, t),
        (Err(e), _) | (_, Err(e)) => return items.iter().map(|_| Err(io_err(io::Error::from(e)))).collect(),
    };
    let mut out: Vec<Option<Result<PutOutcome>>> = items.iter().map(|_| None).collect();
    let mut to_write = Vec::new();
    for (index, (key, bytes)) in items.iter().enumerate() {
        let actual = Digest::of(bytes);
        if actual != key.digest {
            let e = Error::DigestMismatch { expected: key.digest.to_string(), actual: actual.to_string() };
            out[index] = Some(Err(e));
            continue;
        }
        let key = key.storage_key();
        match rustix::fs::statat(&root_dir, key.as_str(), AtFlags::SYMLINK_NOFOLLOW) {
            // Taken already: nothing to write (the caller verifies what is there).
            Ok(_) => out[index] = Some(Ok(PutOutcome::Existed)),
            Err(rustix::io::Errno::NOENT) => to_write.push((index, key)),
            Err(e) => out[index] = Some(Err(io_err(e.into()))),
        }
    }

    // Every file's bytes durable before any name points at it. Named temp files share one random
    // part, drawn once for the batch.
    let mut together = together(to_write.len());
    let mut naming =
        Naming { root, root_dir: &root_dir, tmp_dir: &tmp_dir, folders: BTreeSet::new(), linked: Vec::new() };
    let mut pending = Vec::with_capacity(to_write.len());
    let mut unnamed = UNNAMED.load(Ordering::Relaxed);
    let batch = random_suffix();
    for (index, key) in to_write {
        let bytes = &items[index].1;
        let mut written = None;
        if unnamed && together.one_sync() {
            match write_unnamed(&tmp_dir, bytes) {
                Made::File(file) => {
                    written = Some(file.and_then(|f| together.add_open(&f.0).map(|()| Temp::Unnamed(f))))
                }
                // No descriptor (or none of the budget) left: the files so far are made durable and
                // named now, which closes them, and the rest of the batch goes through named files.
                Made::Spent => {
                    unnamed = false;
                    naming.name(&together, std::mem::take(&mut pending), &mut out);
                }
                Made::Named => {}
            }
        }
        let written = written.unwrap_or_else(|| {
            let name = format!("write.{batch}.{index}");
            write_named(&tmp_dir, tmp, &name, bytes)
                .and_then(|(temp, file)| together.add(file).map(|()| Temp::Named(temp, name)))
        });
        match written {
            Ok(temp) => pending.push(Pending { index, temp, key }),
            Err(e) => out[index] = Some(Err(io_err(e))),
        }
    }
    naming.name(&together, pending, &mut out);
    let Naming { folders, linked, .. } = naming;

    // Each folder once, after all of its new names.
    let folders: Vec<PathBuf> = folders.into_iter().collect();
    let failed: Vec<(&PathBuf, io::Error)> =
        folders.iter().zip(together.sync_dirs(&folders)).filter_map(|(dir, r)| r.err().map(|e| (dir, e))).collect();
    for (index, target) in linked {
        let folder = target.parent().expect("a blob path has a parent");
        let grand = folder.parent();
        out[index] =
            Some(match failed.iter().find(|(dir, _)| dir.as_path() == folder || Some(dir.as_path()) == grand) {
                Some((_, e)) => Err(io_err(io::Error::new(e.kind(), e.to_string()))),
                None => Ok(PutOutcome::Created),
            });
    }
    out.into_iter()
        .map(|o| o.unwrap_or_else(|| Err(Error::Internal("a blob of the batch had no outcome".into()))))
        .collect()
}

/// The names a batch gives its blobs: the folders that gained one (made durable at the end) and the
/// blobs named, with their paths.
struct Naming<'a> {
    root: &'a Path,
    root_dir: &'a OwnedFd,
    tmp_dir: &'a OwnedFd,
    folders: BTreeSet<PathBuf>,
    linked: Vec<(usize, PathBuf)>,
}

impl Naming<'_> {
    /// Make `pending`'s bytes durable (`together.sync()`), then give each blob its name, create-only
    /// (`AlreadyExists` is `Existed`); then the named temp files go, from the open temp folder (one
    /// that cannot be removed now is left to its guard, then to the sweep at start), and the unnamed
    /// ones close. The names are made durable by the caller, once for the batch.
    fn name(&mut self, together: &Together, pending: Vec<Pending>, out: &mut [Option<Result<PutOutcome>>]) {
        if pending.is_empty() {
            return;
        }
        if let Err(e) = together.sync() {
            for p in pending {
                out[p.index] = Some(Err(io_err(io::Error::new(e.kind(), e.to_string()))));
            }
            return;
        }
        for p in &pending {
            let target = self.root.join(&p.key);
            let published = (|| {
                let folder = target.parent().expect("a blob path has a parent");
                if !self.folders.contains(folder) && !folder.is_dir() {
                    std::fs::create_dir_all(folder)?;
                    // The new folder's own name must be durable too.
                    self.folders.insert(folder.parent().expect("a blob folder has a parent").to_owned());
                }
                // A hard link, not a rename: a rename across folders takes the filesystem's rename
                // lock (Linux), and the batches of concurrent requests would wait on each other.
                match &p.temp {
                    Temp::Unnamed(file) => link_unnamed(&file.0, self.root_dir, &p.key, together.one_sync()),
                    Temp::Named(_, name) => {
                        rustix::fs::linkat(self.tmp_dir, name.as_str(), self.root_dir, p.key.as_str(), AtFlags::empty())
                            .map_err(io::Error::from)
                    }
                }
            })();
            match published {
                Ok(()) => {
                    self.folders.insert(target.parent().expect("a blob path has a parent").to_owned());
                    self.linked.push((p.index, target));
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => out[p.index] = Some(Ok(PutOutcome::Existed)),
                Err(e) => out[p.index] = Some(Err(io_err(e))),
            }
        }
        for p in pending {
            if let Temp::Named(mut temp, name) = p.temp
                && rustix::fs::unlinkat(self.tmp_dir, name.as_str(), AtFlags::empty()).is_ok()
            {
                temp.disarm();
            }
        }
    }
}

fn open_dir(path: &Path) -> rustix::io::Result<OwnedFd> {
    rustix::fs::open(path, OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())
}

/// A new temp file `name` in the temp folder `dir` (at `path`) holding `bytes` (not yet durable).
fn write_named(dir: &OwnedFd, path: &Path, name: &str, bytes: &[u8]) -> io::Result<(RemoveOnDrop, File)> {
    let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::CLOEXEC;
    let mut file = File::from(rustix::fs::openat(dir, name, flags, Mode::from_raw_mode(0o666))?);
    let temp = RemoveOnDrop(path.join(name));
    file.write_all(bytes)?;
    Ok((temp, file))
}

/// What `write_unnamed` made.
enum Made {
    /// An unnamed file holding the bytes (not yet durable), or the error that writing them met.
    File(io::Result<Unnamed>),
    /// No descriptor left, or none of the budget of open unnamed files: the files this batch holds
    /// open should be named (and closed) before it goes on with named files.
    Spent,
    /// This file through a named temp file (unnamed files are off for good where the system or the
    /// filesystem has none, logged once, or this one met another error).
    Named,
}

/// A new unnamed file in the temp folder `dir` holding `bytes`.
#[cfg(target_os = "linux")]
fn write_unnamed(dir: &OwnedFd, bytes: &[u8]) -> Made {
    use rustix::io::Errno;
    static PROC: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    if !*PROC.get_or_init(|| Path::new("/proc/self/fd").is_dir()) {
        UNNAMED.store(false, Ordering::Relaxed);
        return Made::Named;
    }
    if OPEN.fetch_add(1, Ordering::Relaxed) >= budget() {
        OPEN.fetch_sub(1, Ordering::Relaxed);
        return Made::Spent;
    }
    let flags = OFlags::WRONLY | OFlags::TMPFILE | OFlags::CLOEXEC;
    let mut file = match rustix::fs::openat(dir, ".", flags, Mode::from_raw_mode(0o666)) {
        Ok(fd) => Unnamed(File::from(fd)),
        Err(e) => {
            OPEN.fetch_sub(1, Ordering::Relaxed);
            return match e {
                Errno::MFILE | Errno::NFILE => Made::Spent,
                // Not supported (EISDIR: a kernel without O_TMPFILE): never again in this process.
                Errno::OPNOTSUPP | Errno::ISDIR | Errno::INVAL => {
                    tracing::info!(error = %e, "unnamed temp files are not available here; batches use named ones");
                    UNNAMED.store(false, Ordering::Relaxed);
                    Made::Named
                }
                // Anything else (no space, a quota...) for this file only: the named file meets it too.
                _ => Made::Named,
            };
        }
    };
    Made::File(file.0.write_all(bytes).map(|()| file))
}

#[cfg(not(target_os = "linux"))]
fn write_unnamed(_dir: &OwnedFd, _bytes: &[u8]) -> Made {
    UNNAMED.store(false, Ordering::Relaxed);
    Made::Named
}

/// Give an unnamed file its name `key` under `root` (`AlreadyExists` when taken): `linkat` of the
/// descriptor itself (`AT_EMPTY_PATH`, which needs `CAP_DAC_READ_SEARCH` on older kernels), else
/// through its `/proc/self/fd` entry (a lookup in /proc for each file, which any process may do). When one `syncfs` will not cover the batch after all (the first file found
/// its filesystem unsound), the file is fsynced again once named, so its link count is durable with
/// its name.
fn link_unnamed(file: &File, root: &OwnedFd, key: &str, one_sync: bool) -> io::Result<()> {
    use rustix::io::Errno;
    // Whether `AT_EMPTY_PATH` was refused here once: then every file goes through /proc.
    static THROUGH_PROC: AtomicBool = AtomicBool::new(false);
    let direct = match THROUGH_PROC.load(Ordering::Relaxed) {
        true => Err(Errno::NOENT),
        false => rustix::fs::linkat(file, "", root, key, AtFlags::EMPTY_PATH),
    };
    match direct {
        Ok(()) => {}
        // Refused (ENOENT without the right to link a descriptor) or not known: through /proc.
        Err(Errno::NOENT | Errno::PERM | Errno::INVAL) => {
            let proc = format!("/proc/self/fd/{}", file.as_raw_fd());
            rustix::fs::linkat(rustix::fs::CWD, proc.as_str(), root, key, AtFlags::SYMLINK_FOLLOW)?;
            THROUGH_PROC.store(true, Ordering::Relaxed);
        }
        Err(e) => return Err(e.into()),
    }
    if !one_sync {
        file.sync_all()?;
    }
    #[cfg(test)]
    LINKED_UNNAMED.with(|n| n.set(n.get() + 1));
    Ok(())
}

#[cfg(test)]
thread_local! {
    /// Blobs this thread named from unnamed files (a test calls `put_many` on its own thread, so other
    /// tests' batches are not counted).
    static LINKED_UNNAMED: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// A small object read whole, up to one byte more than `size` (None when there is none).
pub(super) fn read_small(path: &Path, size: u64) -> io::Result<Option<Bytes>> {
    use std::io::Read;
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut bytes = Vec::with_capacity(size as usize + 1);
    file.take(size + 1).read_to_end(&mut bytes)?;
    Ok(Some(Bytes::from(bytes)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The tests that read or move the process's count of open unnamed files, one at a time.
    static COUNTS: std::sync::Mutex<()> = std::sync::Mutex::new(());

    fn blobs(n: usize, salt: u8) -> Vec<(BlobKey, Bytes)> {
        (0..n)
            .map(|i| {
                let bytes: Vec<u8> =
                    (0..(300 + i * 97)).map(|j| (j as u8).wrapping_mul(31).wrapping_add(salt ^ i as u8)).collect();
                (BlobKey::primary(&Digest::of(&bytes)), Bytes::from(bytes))
            })
            .collect()
    }

    fn store() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let tmp = dir.path().join("tmp");
        std::fs::create_dir(&tmp).unwrap();
        (dir, tmp)
    }

    fn check(root: &Path, tmp: &Path, items: &[(BlobKey, Bytes)], got: Vec<Result<PutOutcome>>, want: PutOutcome) {
        assert!(got.iter().all(|o| matches!(o, Ok(w) if *w == want)), "{got:?}");
        for (key, bytes) in items {
            assert_eq!(std::fs::read(root.join(key.storage_key())).unwrap(), bytes.as_ref());
        }
        assert_eq!(std::fs::read_dir(tmp).unwrap().count(), 0, "no temp file is left, named or not");
    }

    /// A batch of many (one `syncfs`) gives each blob its name from an unnamed file where this system
    /// has them (Linux, a filesystem whose `syncfs` stands for fsyncs), a batch that fsyncs each file
    /// from named temp files; either way every blob is stored with its bytes, nothing is left in the
    /// temp folder, and the same batch again finds every key taken. The path is chosen here, not by
    /// what the machine holds unwritten at the time (`Together::new`), so every run takes both.
    #[test]
    fn many_blobs_are_named_from_unnamed_files_few_from_named_ones_and_no_temp_file_stays() {
        let _one = COUNTS.lock().unwrap_or_else(|p| p.into_inner());
        for (n, salt, syncfs) in [(40, 1u8, true), (3, 2, false)] {
            let (dir, tmp) = store();
            let items = blobs(n, salt);
            let unnamed_before = LINKED_UNNAMED.with(std::cell::Cell::get);
            let got = put_many_with(dir.path(), &tmp, &items, |_| Together::planned(syncfs));
            check(dir.path(), &tmp, &items, got, PutOutcome::Created);
            let sound = crate::durable::syncfs_is_sound(&File::open(&tmp).unwrap());
            let unnamed = cfg!(target_os = "linux") && syncfs && sound;
            if unnamed {
                assert!(
                    LINKED_UNNAMED.with(std::cell::Cell::get) >= unnamed_before + n,
                    "{n} blobs through unnamed files"
                );
            }
            let linked = LINKED_UNNAMED.with(std::cell::Cell::get) - unnamed_before;
            assert_eq!(linked, if unnamed { n } else { 0 }, "{n} blobs, syncfs {syncfs}");
            check(dir.path(), &tmp, &items, put_many(dir.path(), &tmp, &items), PutOutcome::Existed);
        }
    }

    /// Past the budget of unnamed files open in the process, blobs go through named temp files: the
    /// batch is stored all the same (a batch never takes the descriptors the server needs).
    #[test]
    fn past_the_budget_of_open_unnamed_files_a_batch_uses_named_ones() {
        let _one = COUNTS.lock().unwrap_or_else(|p| p.into_inner());
        let (dir, tmp) = store();
        let items = blobs(40, 3);
        let budget = budget();
        OPEN.fetch_add(budget, Ordering::Relaxed);
        let got = put_many(dir.path(), &tmp, &items);
        OPEN.fetch_sub(budget, Ordering::Relaxed);
        check(dir.path(), &tmp, &items, got, PutOutcome::Created);
    }

    /// Bytes that are not their key's digest's are refused before anything is written (the batch
    /// route leaves this check to the store: `put_many_verifies`), the others stored.
    #[test]
    fn bytes_that_are_not_the_digest_s_are_refused_and_the_rest_stored() {
        let (dir, tmp) = store();
        let mut items = blobs(20, 4);
        let wrong = Digest::of(b"something else");
        items[7].0 = BlobKey::primary(&wrong);
        let got = put_many(dir.path(), &tmp, &items);
        assert!(matches!(&got[7], Err(Error::DigestMismatch { .. })), "{:?}", got[7]);
        assert!(!dir.path().join(BlobKey::primary(&wrong).storage_key()).exists());
        let (good, got): (Vec<_>, Vec<_>) =
            items.into_iter().zip(got).enumerate().filter(|(i, _)| *i != 7).map(|(_, pair)| pair).unzip();
        check(dir.path(), &tmp, &good, got, PutOutcome::Created);
    }
}
