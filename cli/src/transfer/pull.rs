//! `helix pull`: each file into a temporary file beside its name, through directory handles (at most
//! `OPEN_FOLDERS` open), renamed into place only when its size and SHA-256 match.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;

use futures_util::{StreamExt, TryStreamExt};
use helix_core::domain::manifest::ManifestFile;
use helix_core::domain::{BundleName, Digest, DigestWriter, Manifest, WorkspaceId};
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;

use crate::client::{ClientError, Registry, chain};

use super::{Options, Progress, blob_path, hash_reader, in_file, other};

/// Pull `ws`/`name`@`version` into `dir`: what was written and what was already in place.
pub async fn pull(
    registry: &Registry,
    ws: &WorkspaceId,
    name: &BundleName,
    version: &BundleName,
    dir: &Path,
    opts: Options,
) -> Result<Value, ClientError> {
    // Every read of a pull is recorded with `via: pull` (docs/console.md, "Who read what").
    let registry = &registry.for_operation("pull");
    let path = crate::client::version_path_of(ws, name, version);
    let view = registry.get(&path).await?;
    let canonical = helix_core::domain::canonical::to_string(&view["manifest"]).map_err(other)?;
    let actual = Digest::of(canonical.as_bytes());
    if view["manifest_digest"].as_str() != Some(actual.to_string().as_str()) {
        return Err(other(format!(
            "digest_mismatch: the manifest served hashes to {actual}, not the version's {}",
            view["manifest_digest"]
        )));
    }
    let manifest = Manifest::parse(canonical.as_bytes(), name, version).map_err(other)?;

    let dest = Dest::open(dir)?;
    // Every folder first (created in order, so a path in the way is reported before any download);
    // a folder's handle is held only while a file in it is being checked or written.
    for f in &manifest.files {
        dest.folder(&f.path)?;
    }
    let files: Vec<_> = manifest.files.iter().zip(manifest.digests()).collect();
    // Files already in place are hashed as push hashes: on blocking threads, `--jobs` at a time.
    // A few files to a blocking trip: most are not there yet (one stat each).
    let held: Vec<Vec<bool>> = futures_util::stream::iter(files.chunks(HOLDS_PER_TRIP).map(|chunk| {
        let found: Result<Vec<_>, ClientError> = chunk
            .iter()
            .map(|(f, digest)| {
                let (folder, leaf) = dest.folder(&f.path)?;
                Ok((folder, leaf.to_owned(), f.size, digest.clone()))
            })
            .collect();
        async move {
            let found = found?;
            tokio::task::spawn_blocking(move || {
                found.iter().map(|(folder, leaf, size, digest)| folder.holds(leaf, *size, digest)).collect()
            })
            .await
            .map_err(other)?
        }
    }))
    .buffered(opts.jobs.max(1))
    .try_collect()
    .await?;
    let held: Vec<bool> = held.into_iter().flatten().collect();
    let kept = held.iter().filter(|h| **h).count();
    let todo: Vec<_> = files.into_iter().zip(&held).filter(|(_, h)| !**h).map(|(p, _)| p).collect();
    let total: u64 = todo.iter().map(|(f, _)| f.size).sum();
    let progress = Progress::start("downloading", total, opts.quiet);
    // Small files come many to a request (each digest once, written to every file that has it); what
    // the registry leaves out of a batch, and larger files, come one by one.
    let mut by_digest: std::collections::BTreeMap<&Digest, Vec<&ManifestFile>> = Default::default();
    for (f, d) in &todo {
        if f.size <= super::batch::BATCH_FILE_MAX {
            by_digest.entry(d).or_default().push(*f);
        }
    }
    let small: Vec<(&Digest, u64)> = by_digest.iter().map(|(d, fs)| (*d, fs[0].size)).collect();
    let batches = super::batch::plan(small, |(_, size)| *size, u64::MAX);
    let fetched: Vec<Vec<Digest>> = futures_util::stream::iter(batches.iter().map(|b| {
        let (dest, progress, by_digest) = (&dest, &progress, &by_digest);
        async move {
            let digests: Vec<&Digest> = b.iter().map(|(d, _)| *d).collect();
            let (body, places) = super::batch::fetch(registry, ws, &digests).await?;
            // The batch's files written, verified and made durable `WRITE_GROUP` at a time, each group in
            // one trip off the runtime (write_batch): the open files and folders stay bounded.
            let mut targets: Vec<(&ManifestFile, bytes::Bytes)> = places
                .iter()
                .flat_map(|(d, range)| by_digest.get(d).into_iter().flatten().map(|f| (*f, body.slice(range.clone()))))
                .collect();
            // By folder, so that a group's files share few folders (`write_groups`).
            targets.sort_by(|(a, _), (b, _)| folder_of(&a.path).cmp(folder_of(&b.path)));
            for group in write_groups(&targets) {
                let writes = group
                    .iter()
                    .map(|(f, bytes)| {
                        let (folder, leaf) = dest.folder(&f.path)?;
                        let (leaf, file, bytes) = (leaf.to_owned(), (*f).clone(), bytes.clone());
                        Ok(BatchFile { folder, leaf, file, bytes })
                    })
                    .collect::<Result<Vec<_>, ClientError>>()?;
                progress.add(tokio::task::spawn_blocking(move || write_batch(writes)).await.map_err(other)??);
            }
            let done: Vec<Digest> = places.into_iter().map(|(d, _)| d).collect();
            Ok::<_, ClientError>(done)
        }
    }))
    .buffer_unordered(opts.jobs.max(1))
    .try_collect()
    .await?;
    let fetched: std::collections::BTreeSet<&Digest> = fetched.iter().flatten().collect();
    let rest: Vec<_> = todo.iter().filter(|(_, d)| !fetched.contains(&d)).collect();
    futures_util::stream::iter(rest.iter().map(|(f, d)| {
        let (dest, progress) = (&dest, &progress);
        async move {
            let (folder, leaf) = dest.folder(&f.path)?;
            download(registry, ws, f, d, &folder, leaf, progress).await
        }
    }))
    .buffer_unordered(opts.jobs.max(1))
    .try_collect::<Vec<()>>()
    .await?;
    let elapsed = progress.finish();
    Ok(json!({
        "bundle": format!("{ws}/{}@{}", name.as_str(), version.as_str()),
        "manifest_digest": actual.to_string(),
        "state": view["state"],
        "files": manifest.files.len(),
        "downloaded_files": todo.len(),
        "downloaded_bytes": total,
        "kept_files": kept,
        "download_seconds": (elapsed.as_secs_f64() * 1000.0).round() / 1000.0,
    }))
}

/// The destination of a pull, written only through directory handles: every folder under it is
/// opened without following symlinks (`openat`, `O_NOFOLLOW`), files are created relative to their
/// folder's handle and renamed into place without replacing anything. A symlink swapped in while the
/// pull runs cannot send a file elsewhere, and a file that appears meanwhile is not overwritten.
pub(super) struct Dest {
    root: std::sync::Arc<rustix::fd::OwnedFd>,
    shown: PathBuf,
    /// Folders recently opened, by their path under the destination: at most `OPEN_FOLDERS` handles
    /// are kept (a bundle of thousands of folders must not exhaust the open-file limit; macOS's
    /// default is 256). A folder dropped from here is opened again, the same way, when needed.
    folders: std::sync::Mutex<std::collections::HashMap<String, Folder>>,
}

/// A folder under the destination, by handle.
#[derive(Clone)]
pub(super) struct Folder {
    fd: std::sync::Arc<rustix::fd::OwnedFd>,
    shown: PathBuf,
}

/// Files checked for being in place already in one blocking trip (a stat each; a hash when present;
/// each holds its folder open meanwhile).
const HOLDS_PER_TRIP: usize = 16;

/// Files of a fetched batch written and made durable together. On Linux one `syncfs` covers the
/// group (helix_core::durable), so the group is large; elsewhere each file is fsynced as it is
/// written and the group stays small.
const WRITE_GROUP: usize = if cfg!(target_os = "linux") { 128 } else { 16 };

/// The most folders a group's files may be in: each file holds its folder open until it is placed
/// (its own file is closed once written), and `--jobs` groups are written at once, so a bundle of one
/// file per folder must not open `jobs × WRITE_GROUP` folders (macOS allows 256 open files by
/// default, many Linux machines 1,024).
const WRITE_GROUP_FOLDERS: usize = 16;

/// The folder part of a manifest path ("" at the top).
fn folder_of(path: &str) -> &str {
    path.rsplit_once('/').map_or("", |(dir, _)| dir)
}

/// `targets` cut into groups of at most `WRITE_GROUP` files in at most `WRITE_GROUP_FOLDERS` folders.
fn write_groups<'t, T>(targets: &'t [(&ManifestFile, T)]) -> Vec<&'t [(&'t ManifestFile, T)]> {
    let mut groups = Vec::new();
    let (mut start, mut folders) = (0, std::collections::HashSet::<&str>::new());
    for (i, (f, _)) in targets.iter().enumerate() {
        let folder = folder_of(&f.path);
        if i > start
            && (i - start == WRITE_GROUP || (!folders.contains(folder) && folders.len() == WRITE_GROUP_FOLDERS))
        {
            groups.push(&targets[start..i]);
            (start, folders) = (i, Default::default());
        }
        folders.insert(folder);
    }
    if start < targets.len() {
        groups.push(&targets[start..]);
    }
    groups
}

/// Folder handles a pull keeps open between files (besides those of the files in flight).
pub(super) const OPEN_FOLDERS: usize = 64;

pub(super) fn dir_flags() -> rustix::fs::OFlags {
    use rustix::fs::OFlags;
    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC
}

impl Dest {
    fn open(dir: &Path) -> Result<Dest, ClientError> {
        std::fs::create_dir_all(dir).map_err(|e| other(format!("{}: {e}", dir.display())))?;
        // The destination itself is the user's choice (it may be a symlink); what is under it is not.
        let flags = rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::DIRECTORY | rustix::fs::OFlags::CLOEXEC;
        let fd = rustix::fs::open(dir, flags, rustix::fs::Mode::empty())
            .map_err(|e| other(format!("{}: {}", dir.display(), std::io::Error::from(e))))?;
        Ok(Dest { root: std::sync::Arc::new(fd), shown: dir.to_path_buf(), folders: Default::default() })
    }

    /// The folder of a manifest path (created as needed) and the file's name in it.
    fn folder<'p>(&self, path: &'p str) -> Result<(Folder, &'p str), ClientError> {
        let (parents, leaf) = path.rsplit_once('/').map_or(("", path), |(p, l)| (p, l));
        Ok((self.folder_at(parents)?, leaf))
    }

    /// The folder at `parents` ("" is the destination), opened once: its parent first, then itself
    /// without following a symlink.
    fn folder_at(&self, parents: &str) -> Result<Folder, ClientError> {
        if parents.is_empty() {
            return Ok(Folder { fd: self.root.clone(), shown: self.shown.clone() });
        }
        if let Some(known) = self.folders.lock().expect("folder cache").get(parents) {
            return Ok(known.clone());
        }
        let (up, seg) = parents.rsplit_once('/').unwrap_or(("", parents));
        let at = self.folder_at(up)?;
        let shown = at.shown.join(seg);
        let in_the_way = || other(format!("{} is in the way (not a folder)", shown.display()));
        let fd = match rustix::fs::openat(at.fd.as_ref(), seg, dir_flags(), rustix::fs::Mode::empty()) {
            Ok(fd) => fd,
            Err(rustix::io::Errno::NOENT) => {
                match rustix::fs::mkdirat(at.fd.as_ref(), seg, rustix::fs::Mode::from_raw_mode(0o755)) {
                    Ok(()) | Err(rustix::io::Errno::EXIST) => {}
                    Err(e) => return Err(other(format!("{}: {}", shown.display(), std::io::Error::from(e)))),
                }
                rustix::fs::openat(at.fd.as_ref(), seg, dir_flags(), rustix::fs::Mode::empty())
                    .map_err(|_| in_the_way())?
            }
            Err(rustix::io::Errno::NOTDIR | rustix::io::Errno::LOOP) => return Err(in_the_way()),
            Err(e) => return Err(other(format!("{}: {}", shown.display(), std::io::Error::from(e)))),
        };
        let folder = Folder { fd: std::sync::Arc::new(fd), shown };
        let mut folders = self.folders.lock().expect("folder cache");
        if folders.len() >= OPEN_FOLDERS {
            // Handles still in use stay open through their clones; the rest close here.
            folders.clear();
        }
        folders.insert(parents.to_owned(), folder.clone());
        Ok(folder)
    }
}

impl Folder {
    /// Is a regular file `leaf` already here with `size` bytes hashing to `digest`? False if there is
    /// none; anything else under that name (other content, a symlink, a folder) is in the way.
    fn holds(&self, leaf: &str, size: u64, digest: &Digest) -> Result<bool, ClientError> {
        use rustix::fs::{FileType, OFlags};
        let shown = self.shown.join(leaf);
        let fail = |e: rustix::io::Errno| other(format!("{}: {}", shown.display(), std::io::Error::from(e)));
        let in_the_way = || other(format!("{} exists with other content: not overwritten", shown.display()));
        let stat = match rustix::fs::statat(self.fd.as_ref(), leaf, rustix::fs::AtFlags::SYMLINK_NOFOLLOW) {
            Ok(stat) => stat,
            Err(rustix::io::Errno::NOENT) => return Ok(false),
            Err(e) => return Err(fail(e)),
        };
        // Only a regular file of the right size is worth hashing.
        if FileType::from_raw_mode(stat.st_mode) != FileType::RegularFile || stat.st_size as u64 != size {
            return Err(in_the_way());
        }
        let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let fd = rustix::fs::openat(self.fd.as_ref(), leaf, flags, rustix::fs::Mode::empty()).map_err(fail)?;
        let (held, _) = hash_reader(std::fs::File::from(fd), &shown, &AtomicU64::new(0))?;
        if &held != digest {
            return Err(in_the_way());
        }
        Ok(true)
    }
}

/// A temporary file removed when dropped, unless it was moved into place or is kept for a later
/// pull to resume (`keep`: a download that was interrupted).
pub(super) struct Partial {
    folder: Folder,
    name: Option<String>,
    keep: bool,
    /// Named after its file (`resumable_name`), not at random: a later pull resumes it.
    resumable: bool,
}

impl Drop for Partial {
    fn drop(&mut self) {
        if let Some(name) = self.name.take()
            && !self.keep
        {
            let _ = rustix::fs::unlinkat(self.folder.fd.as_ref(), name.as_str(), rustix::fs::AtFlags::empty());
        }
    }
}

/// The prefix of `helix pull`'s temporary files (`helix push` refuses them).
pub const PARTIAL_PREFIX: &str = ".helix-part-";

/// A temporary file being written: its handle, the hash of what it holds so far, and its guard.
struct Temp {
    out: tokio::fs::File,
    hash: DigestWriter,
    partial: Partial,
}

impl Temp {
    fn name(&self) -> &str {
        self.partial.name.as_deref().expect("a temporary file not yet placed")
    }

    fn shown(&self) -> PathBuf {
        self.partial.folder.shown.join(self.name())
    }

    /// Empty it, to be written from the first byte again.
    async fn restart(&mut self) -> Result<(), ClientError> {
        let shown = self.shown();
        self.out.set_len(0).await.map_err(|e| other(format!("{}: {e}", shown.display())))?;
        use tokio::io::AsyncSeekExt;
        self.out.seek(std::io::SeekFrom::Start(0)).await.map_err(|e| other(format!("{}: {e}", shown.display())))?;
        self.hash = DigestWriter::default();
        Ok(())
    }
}

/// A new temporary file with a random name beside `leaf` (for a batch's files), removed unless it is placed.
fn random_temp(folder: &Folder) -> Result<(std::fs::File, Partial), ClientError> {
    let mut rand = [0u8; 6];
    getrandom::fill(&mut rand).map_err(other)?;
    // A fixed-length name: a 255-byte file name still has room for its temporary file.
    let temp = format!("{PARTIAL_PREFIX}{}", hex::encode(rand));
    let shown = folder.shown.join(&temp);
    use rustix::fs::OFlags;
    let fd = rustix::fs::openat(
        folder.fd.as_ref(),
        temp.as_str(),
        OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        rustix::fs::Mode::from_raw_mode(0o644),
    )
    .map_err(|e| other(format!("{}: {}", shown.display(), std::io::Error::from(e))))?;
    let partial = Partial { folder: folder.clone(), name: Some(temp), keep: false, resumable: false };
    Ok((std::fs::File::from(fd), partial))
}

/// The name of the temporary file of `leaf` with `digest`: the same on every run, so a pull that was
/// interrupted inside a file resumes where it stopped (fixed length, as `random_temp`'s).
pub fn resumable_name(leaf: &str, digest: &Digest) -> String {
    let id = Digest::of(format!("{digest}\n{leaf}").as_bytes());
    format!("{PARTIAL_PREFIX}{}", &id.hex()[..24])
}

/// The temporary file of `leaf` kept by an interrupted pull (created empty if there is none), locked
/// against a second pull into the same folder, its bytes hashed again (nothing in it is trusted: the
/// whole file is verified before it is placed). One longer than the file is emptied.
async fn resumable_temp(folder: &Folder, leaf: &str, digest: &Digest, size: u64) -> Result<Temp, ClientError> {
    let name = resumable_name(leaf, digest);
    let shown = folder.shown.join(&name);
    let fail = {
        let shown = shown.clone();
        move |e: std::io::Error| other(format!("{}: {e}", shown.display()))
    };
    use rustix::fs::OFlags;
    // Non-blocking: a FIFO planted under the name must not hang the pull (it is refused below).
    let flags = OFlags::RDWR | OFlags::CREATE | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
    let fd = rustix::fs::openat(folder.fd.as_ref(), name.as_str(), flags, rustix::fs::Mode::from_raw_mode(0o644))
        .map_err(|e| fail(e.into()))?;
    let stat = rustix::fs::fstat(&fd).map_err(|e| fail(e.into()))?;
    if rustix::fs::FileType::from_raw_mode(stat.st_mode) != rustix::fs::FileType::RegularFile {
        return Err(other(format!("{} is in the way (not a regular file)", shown.display())));
    }
    match rustix::fs::flock(&fd, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => {}
        Err(rustix::io::Errno::WOULDBLOCK) => {
            return Err(other(format!("{}: another helix pull is writing this file", shown.display())));
        }
        Err(e) => return Err(fail(e.into())),
    }
    let file = std::fs::File::from(fd);
    let hashed = tokio::task::spawn_blocking(move || -> std::io::Result<(std::fs::File, DigestWriter)> {
        use std::io::{Read, Seek};
        let mut file = file;
        let mut hash = DigestWriter::default();
        if file.metadata()?.len() > size {
            file.set_len(0)?;
        }
        let mut buf = vec![0u8; super::CHUNK];
        loop {
            let n = match file.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            hash.update(&buf[..n]);
        }
        file.seek(std::io::SeekFrom::Start(hash.len()))?;
        Ok((file, hash))
    })
    .await
    .map_err(other)?
    .map_err(fail)?;
    let (file, hash) = hashed;
    // Kept after a failure only once it holds something to resume from (`place`).
    let partial = Partial { folder: folder.clone(), name: Some(name), keep: !hash.is_empty(), resumable: true };
    Ok(Temp { out: tokio::fs::File::from_std(file), hash, partial })
}

/// Download one file. Its temporary file is kept when the download is interrupted, and the next pull
/// asks only for the rest (`Range: bytes=N-`, sent again to the presigned GET the registry redirects
/// to); what was kept is hashed again and the whole file verified before it is placed.
pub(super) async fn download(
    registry: &Registry,
    ws: &WorkspaceId,
    file: &ManifestFile,
    digest: &Digest,
    folder: &Folder,
    leaf: &str,
    progress: &Progress,
) -> Result<(), ClientError> {
    let mut temp = resumable_temp(folder, leaf, digest, file.size).await?;
    let kept = temp.hash.len();
    if kept == file.size {
        progress.add(kept);
        return place(file, digest, temp, leaf, progress, futures_util::stream::empty()).await;
    }
    let resp = match get_blob(registry, ws, digest, kept, &file.path).await {
        // The registry knows the blob as shorter than what was kept: start again from the first byte.
        Err(ClientError::Refused { status: 416, .. }) if kept > 0 => {
            temp.restart().await?;
            get_blob(registry, ws, digest, 0, &file.path).await?
        }
        answer => answer?,
    };
    let kept = temp.hash.len();
    if kept > 0 {
        let at = resp.headers().get("content-range").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
        if resp.status() != reqwest::StatusCode::PARTIAL_CONTENT {
            // The whole file (a server that ignores ranges): written from the first byte.
            temp.restart().await?;
        } else if at.starts_with(&format!("bytes {kept}-")) {
            progress.add(kept);
        } else {
            temp.partial.keep = false;
            return Err(other(format!("{}: the registry answered range {at:?}, not bytes {kept}-", file.path)));
        }
    }
    let path = file.path.clone();
    let chunks = resp
        .bytes_stream()
        .map(move |c| c.map_err(|e| ClientError::Unreachable(format!("download of {path}: {}", chain(&e)))));
    place(file, digest, temp, leaf, progress, chunks).await
}

/// GET a blob from byte `from` on, following the registry's redirect to a presigned GET (which is
/// asked for the same range).
async fn get_blob(
    registry: &Registry,
    ws: &WorkspaceId,
    digest: &Digest,
    from: u64,
    path: &str,
) -> Result<reqwest::Response, ClientError> {
    let ranged =
        |req: reqwest::RequestBuilder| if from > 0 { req.header("range", format!("bytes={from}-")) } else { req };
    let req = ranged(registry.request(reqwest::Method::GET, &blob_path(ws, digest)));
    let resp = registry.answer_or_redirect(req).await.map_err(|e| in_file(e, path))?;
    if !resp.status().is_redirection() {
        return Ok(resp);
    }
    let location = resp
        .headers()
        .get("location")
        .and_then(|l| l.to_str().ok())
        .ok_or_else(|| other(format!("{path}: a redirect without a location")))?
        .to_owned();
    registry.answer(ranged(registry.presigned("GET", &location)?)).await.map_err(|e| in_file(e, path))
}

/// Append `chunks` to `temp`, then move it into place as `leaf` when the whole file (what it held
/// before and what came now) has the manifest's size and SHA-256. An interrupted stream leaves a
/// resumable temporary file as it is (flushed); wrong bytes remove it.
async fn place(
    file: &ManifestFile,
    digest: &Digest,
    mut temp: Temp,
    leaf: &str,
    progress: &Progress,
    chunks: impl futures_util::Stream<Item = Result<bytes::Bytes, ClientError>>,
) -> Result<(), ClientError> {
    let shown = temp.shown();
    let write_err = |e: std::io::Error| other(format!("{}: {e}", shown.display()));
    let mut body = std::pin::pin!(chunks);
    while let Some(chunk) = body.next().await {
        let chunk = match chunk {
            Ok(chunk) => chunk,
            Err(e) => {
                // What arrived stays for the next pull to resume from (a random temporary file, of a
                // batch, is never resumed: removed as always).
                temp.out.flush().await.map_err(write_err)?;
                temp.partial.keep = temp.partial.resumable && !temp.hash.is_empty();
                return Err(e);
            }
        };
        temp.hash.update(&chunk);
        if temp.hash.len() > file.size {
            temp.partial.keep = false;
            return Err(other(format!(
                "digest_mismatch: {}: the registry served more than its {} bytes",
                file.path, file.size
            )));
        }
        temp.out.write_all(&chunk).await.map_err(write_err)?;
        progress.add(chunk.len() as u64);
    }
    temp.out.flush().await.map_err(write_err)?;
    let Temp { out, hash, mut partial } = temp;
    let len = hash.len();
    let actual = hash.finish();
    if len != file.size || &actual != digest {
        partial.keep = false;
        return Err(other(format!(
            "digest_mismatch: {}: the registry served {len} bytes hashing to {actual}, not {digest}; this file was not written",
            file.path
        )));
    }
    out.sync_all().await.map_err(write_err)?;
    drop(out);
    into_place(partial, leaf)
}

/// Move a complete, fsynced temporary file into place as `leaf`, without replacing anything: a file
/// that appeared meanwhile is not overwritten.
fn into_place(mut partial: Partial, leaf: &str) -> Result<(), ClientError> {
    let folder = partial.folder.clone();
    let temp_name = partial.name.clone().expect("a temporary file not yet placed");
    // Whatever happens now, the temporary file is not kept: placed, or in the way of a file that appeared.
    partial.keep = false;
    let target = folder.shown.join(leaf);
    let placed = match rustix::fs::renameat_with(
        folder.fd.as_ref(),
        temp_name.as_str(),
        folder.fd.as_ref(),
        leaf,
        rustix::fs::RenameFlags::NOREPLACE,
    ) {
        Err(rustix::io::Errno::INVAL | rustix::io::Errno::NOSYS) => {
            // A filesystem without rename-without-replace: a hard link fails the same way on an existing name.
            rustix::fs::linkat(
                folder.fd.as_ref(),
                temp_name.as_str(),
                folder.fd.as_ref(),
                leaf,
                rustix::fs::AtFlags::empty(),
            )
        }
        other => other.map(|()| partial.name = None),
    };
    match placed {
        Ok(()) => Ok(()),
        Err(rustix::io::Errno::EXIST) => {
            Err(other(format!("{} appeared during the pull: not overwritten", target.display())))
        }
        Err(e) => Err(other(format!("{}: {}", target.display(), std::io::Error::from(e)))),
    }
}

/// One file of a fetched batch: where it goes and the bytes served for it (not yet verified).
pub(super) struct BatchFile {
    folder: Folder,
    leaf: String,
    file: ManifestFile,
    bytes: bytes::Bytes,
}

/// Write a fetched batch's files (blocking): each verified against the manifest (size and SHA-256,
/// once per digest) and written to a temporary file; then every temporary file made durable (one
/// `syncfs`, or an fsync each: helix_core::durable::Together); then each moved into place as
/// `write_file` does. Nothing is placed before all of the batch's files are durable; a failure removes every temporary file. The bytes written.
fn write_batch(files: Vec<BatchFile>) -> Result<u64, ClientError> {
    let mut checked: std::collections::BTreeMap<&str, bool> = Default::default();
    for f in &files {
        let ok = *checked.entry(f.file.digest.as_str()).or_insert_with(|| {
            f.bytes.len() as u64 == f.file.size && Digest::of(&f.bytes).to_string() == f.file.digest
        });
        if !ok {
            return Err(other(format!(
                "digest_mismatch: {}: the registry served {} bytes hashing to {}, not {}; this file was not written",
                f.file.path,
                f.bytes.len(),
                Digest::of(&f.bytes),
                f.file.digest
            )));
        }
    }
    // Durable together (helix_core::durable): one syncfs for the group where it can, else an fsync each.
    let mut together = helix_core::durable::Together::new(files.len());
    let mut temps = Vec::with_capacity(files.len());
    for f in &files {
        use std::io::Write;
        let (mut out, partial) = random_temp(&f.folder)?;
        let shown = partial.folder.shown.join(partial.name.as_deref().unwrap_or_default());
        out.write_all(&f.bytes)
            .and_then(|()| together.add(out))
            .map_err(|e| other(format!("{}: {e}", shown.display())))?;
        temps.push(partial);
    }
    together.sync().map_err(|e| other(format!("{}: {e}", files[0].folder.shown.display())))?;
    let mut written = 0;
    for (partial, f) in temps.into_iter().zip(&files) {
        into_place(partial, &f.leaf)?;
        written += f.file.size;
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(paths: &[String]) -> Vec<ManifestFile> {
        paths.iter().map(|p| ManifestFile { path: p.clone(), digest: String::new(), size: 1 }).collect()
    }

    #[test]
    fn a_write_group_holds_few_folders_open_and_many_files_of_one_folder() {
        // One file per folder: 16 folders a group, however many files a group could hold.
        let spread = files(&(0..100).map(|i| format!("d{i:03}/f")).collect::<Vec<_>>());
        let targets: Vec<(&ManifestFile, ())> = spread.iter().map(|f| (f, ())).collect();
        let sizes: Vec<usize> = write_groups(&targets).iter().map(|g| g.len()).collect();
        assert_eq!(sizes, [16, 16, 16, 16, 16, 16, 4]);
        // One folder: groups of WRITE_GROUP files; files at the top count as one folder.
        let packed = files(&(0..300).map(|i| format!("data/f{i:03}")).collect::<Vec<_>>());
        let targets: Vec<(&ManifestFile, ())> = packed.iter().map(|f| (f, ())).collect();
        let groups = write_groups(&targets);
        assert!(groups.iter().all(|g| g.len() <= WRITE_GROUP));
        assert_eq!(groups.iter().map(|g| g.len()).sum::<usize>(), 300);
        assert_eq!(groups.len(), 300usize.div_ceil(WRITE_GROUP));
        let top = files(&["a".into(), "b".into(), "x/c".into()]);
        let targets: Vec<(&ManifestFile, ())> = top.iter().map(|f| (f, ())).collect();
        assert_eq!(write_groups(&targets).len(), 1);
    }
}
