//! Many small blobs made durable together (`BlobStore::put_many_if_absent`, a batch publish): each
//! blob's bytes are checked against its digest and written to a temp file; then every temp file is
//! made durable (`crate::durable`: one `syncfs` of the filesystem for a batch of many, else an fsync
//! each); then each is published create-only with a hard link; then each folder that gained a name
//! (and the parent of a folder created now) is made durable (again one `syncfs`, or an fsync each).
//! A blob is `Created` only once its bytes and its name are durable, as `write_new` makes them one
//! by one; the caller links it after that (the metadata commit comes last). A crash at any step leaves temp files (removed here, or swept at
//! the next start) and at worst published names no commit links: content-addressed, verified
//! bytes, found and re-verified by the next upload of the digest (docs/decisions.md, "Batches on
//! the filesystem").

use std::collections::BTreeSet;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use bytes::Bytes;

use super::{RemoveOnDrop, io_err, random_suffix};
use crate::domain::Digest;
use crate::durable::Together;
use crate::error::{Error, Result};
use crate::ports::{BlobKey, PutOutcome};

/// A blob of the batch on its way: its index, its temp file (removed when dropped) and where it goes.
struct Pending {
    index: usize,
    temp: RemoveOnDrop,
    target: PathBuf,
}

/// Store each `(key, bytes)` unless an object is already at its key: the outcomes in order, with
/// `put_if_absent`'s meaning (`DigestMismatch` for bytes that are not the key's digest's).
pub(super) fn put_many(root: &Path, tmp: &Path, items: &[(BlobKey, Bytes)]) -> Vec<Result<PutOutcome>> {
    let mut out: Vec<Option<Result<PutOutcome>>> = items.iter().map(|_| None).collect();
    let mut to_write = Vec::new();
    for (index, (key, bytes)) in items.iter().enumerate() {
        let actual = Digest::of(bytes);
        if actual != key.digest {
            let e = Error::DigestMismatch { expected: key.digest.to_string(), actual: actual.to_string() };
            out[index] = Some(Err(e));
            continue;
        }
        let target = root.join(key.storage_key());
        match std::fs::symlink_metadata(&target) {
            // Taken already: nothing to write (the caller verifies what is there).
            Ok(_) => out[index] = Some(Ok(PutOutcome::Existed)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => to_write.push((index, target)),
            Err(e) => out[index] = Some(Err(io_err(e))),
        }
    }

    // Every file's bytes durable before any name points at it.
    let mut together = Together::new(to_write.len());
    let mut pending = Vec::with_capacity(to_write.len());
    for (index, target) in to_write {
        let written = write_temp(tmp, &items[index].1).and_then(|(temp, file)| together.add(file).map(|()| temp));
        match written {
            Ok(temp) => pending.push(Pending { index, temp, target }),
            Err(e) => out[index] = Some(Err(io_err(e))),
        }
    }
    if let Err(e) = together.sync() {
        for p in pending.drain(..) {
            out[p.index] = Some(Err(io_err(io::Error::new(e.kind(), e.to_string()))));
        }
    }
    let mut folders = BTreeSet::new();
    let mut linked = Vec::new();
    for p in &pending {
        let published = (|| {
            let folder = p.target.parent().expect("a blob path has a parent");
            if !folders.contains(folder) && !folder.is_dir() {
                std::fs::create_dir_all(folder)?;
                // The new folder's own name must be durable too.
                folders.insert(folder.parent().expect("a blob folder has a parent").to_owned());
            }
            std::fs::hard_link(&p.temp.0, &p.target)
        })();
        match published {
            Ok(()) => {
                folders.insert(p.target.parent().expect("a blob path has a parent").to_owned());
                linked.push(p);
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => out[p.index] = Some(Ok(PutOutcome::Existed)),
            Err(e) => out[p.index] = Some(Err(io_err(e))),
        }
    }

    // Each folder once, after all of its new names.
    let folders: Vec<PathBuf> = folders.into_iter().collect();
    let failed: Vec<(&PathBuf, io::Error)> =
        folders.iter().zip(together.sync_dirs(&folders)).filter_map(|(dir, r)| r.err().map(|e| (dir, e))).collect();
    for p in linked {
        let folder = p.target.parent().expect("a blob path has a parent");
        let grand = folder.parent();
        out[p.index] =
            Some(match failed.iter().find(|(dir, _)| dir.as_path() == folder || Some(dir.as_path()) == grand) {
                Some((_, e)) => Err(io_err(io::Error::new(e.kind(), e.to_string()))),
                None => Ok(PutOutcome::Created),
            });
    }
    // The temp names go with `pending` (the published files keep their own names).
    drop(pending);
    out.into_iter()
        .map(|o| o.unwrap_or_else(|| Err(Error::Internal("a blob of the batch had no outcome".into()))))
        .collect()
}

/// A new temp file under `tmp` holding `bytes` (not yet durable).
fn write_temp(tmp: &Path, bytes: &[u8]) -> io::Result<(RemoveOnDrop, std::fs::File)> {
    let path = tmp.join(format!("write.{}", random_suffix()));
    let mut file = std::fs::File::create_new(&path)?;
    let temp = RemoveOnDrop(path);
    file.write_all(bytes)?;
    Ok((temp, file))
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
