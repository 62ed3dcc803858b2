//! `helix push` and `helix pull`: a directory to a bundle version and back.
//!
//! Push: every regular file under DIR is hashed as a stream; the manifest is built and checked by the
//! registry's own rules (`Manifest::parse`) before a byte leaves the machine; symlinks, special files
//! and names that are not UTF-8 are refused up front, all of them listed at once. Then each digest the
//! workspace lacks (a HEAD says so) is uploaded, a few at a time: inline up to the registry's
//! `inline_max`, through a presigned PUT and `complete` above it. A re-run after an interrupt
//! re-hashes, finds what is already linked and uploads only the rest. Last, the manifest is registered.
//!
//! Pull: the manifest is fetched and its digest checked against the version's record; each file is
//! streamed into a temporary file beside its final name, hashed as it arrives, and renamed into place
//! only when its size and SHA-256 match the manifest. A file already in place with the right digest is
//! kept (a re-run resumes); one with other content is refused, never overwritten.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::{StreamExt, TryStreamExt};
use helix_core::domain::manifest::ManifestFile;
use helix_core::domain::{BundleName, Digest, DigestWriter, Manifest, WorkspaceId};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::client::{ClientError, Registry, chain};

/// Read and write in chunks of this size (hashing, uploads, downloads).
const CHUNK: usize = 256 * 1024;

fn other(what: impl std::fmt::Display) -> ClientError {
    ClientError::Other(what.to_string())
}

/// Bytes done of a total, drawn on stderr while a terminal watches (bytes, rate, ETA); silent otherwise.
pub struct Progress {
    done: Arc<AtomicU64>,
    started: Instant,
    ticker: Option<tokio::task::JoinHandle<()>>,
}

impl Progress {
    pub fn start(label: &'static str, total: u64, quiet: bool) -> Progress {
        let done = Arc::new(AtomicU64::new(0));
        let started = Instant::now();
        let ticker = (!quiet && std::io::stderr().is_terminal()).then(|| {
            let done = done.clone();
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_millis(250)).await;
                    eprint!(
                        "\r{label}: {}\x1b[K",
                        progress_line(done.load(Ordering::Relaxed), total, started.elapsed())
                    );
                }
            })
        });
        Progress { done, started, ticker }
    }

    pub fn add(&self, n: u64) {
        self.done.fetch_add(n, Ordering::Relaxed);
    }

    /// Stop drawing; the elapsed time.
    pub fn finish(mut self) -> Duration {
        if let Some(t) = self.ticker.take() {
            t.abort();
            eprint!("\r\x1b[K");
        }
        self.started.elapsed()
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        // Dropped unfinished (an error, Ctrl-C): the line is cleared, not left dangling.
        if let Some(t) = self.ticker.take() {
            t.abort();
            eprint!("\r\x1b[K");
        }
    }
}

/// `12.0 MiB / 1.0 GiB  85.3 MiB/s  ETA 11s`
pub fn progress_line(done: u64, total: u64, elapsed: Duration) -> String {
    let rate = done as f64 / elapsed.as_secs_f64().max(0.001);
    let eta = if rate > 0.0 && done < total {
        format!("ETA {}s", ((total - done) as f64 / rate).ceil() as u64)
    } else {
        "ETA -".into()
    };
    format!("{} / {}  {}/s  {eta}", bytes(done), bytes(total), bytes(rate as u64))
}

/// Human-readable bytes (binary units).
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 { format!("{n} B") } else { format!("{value:.1} {}", UNITS[unit]) }
}

/// A regular file under the pushed directory.
#[derive(Debug)]
pub struct LocalFile {
    pub path: String,
    pub abs: PathBuf,
    pub size: u64,
}

/// Every regular file under `root`, by manifest path. Symlinks, special files (FIFOs, sockets,
/// devices) and names that are not UTF-8 are all reported in one error, before anything is read.
pub fn walk(root: &Path) -> Result<Vec<LocalFile>, ClientError> {
    // The directory named is the user's choice (it may be a symlink to one); nothing under it is followed.
    let meta = std::fs::metadata(root).map_err(|e| other(format!("{}: {e}", root.display())))?;
    if !meta.is_dir() {
        return Err(other(format!("{} is not a directory", root.display())));
    }
    let mut files = Vec::new();
    let mut refused = Vec::new();
    let mut stack = vec![(root.to_path_buf(), String::new())];
    while let Some((dir, prefix)) = stack.pop() {
        let entries = std::fs::read_dir(&dir).map_err(|e| other(format!("{}: {e}", dir.display())))?;
        for entry in entries {
            let entry = entry.map_err(|e| other(format!("{}: {e}", dir.display())))?;
            let abs = entry.path();
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                refused.push(format!("{}: the name is not UTF-8", abs.display()));
                continue;
            };
            let partial = name.starts_with(PARTIAL_PREFIX);
            let path = if prefix.is_empty() { name } else { format!("{prefix}/{name}") };
            if partial {
                refused.push(format!("{path}: a partial download left by an interrupted helix pull (remove it)"));
                continue;
            }
            let kind = entry.file_type().map_err(|e| other(format!("{}: {e}", abs.display())))?;
            if kind.is_symlink() {
                refused.push(format!("{path}: a symlink (push the file it points to instead)"));
            } else if kind.is_dir() {
                stack.push((abs, path));
            } else if kind.is_file() {
                let size = entry.metadata().map_err(|e| other(format!("{}: {e}", abs.display())))?.len();
                files.push(LocalFile { path, abs, size });
            } else {
                refused.push(format!("{path}: not a regular file (a FIFO, socket or device)"));
            }
        }
    }
    if !refused.is_empty() {
        refused.sort();
        return Err(other(format!("nothing was uploaded; {} path(s) refused: {}", refused.len(), refused.join("; "))));
    }
    if files.is_empty() {
        return Err(other(format!("{} holds no files", root.display())));
    }
    files.sort_by(|a, b| a.path.as_bytes().cmp(b.path.as_bytes()));
    Ok(files)
}

/// The manifest of `files` with these digests, checked by the registry's rules (paths, order,
/// collisions, counts and sizes) here, before any upload.
pub fn manifest(
    files: &[LocalFile],
    digests: &[Digest],
    name: &BundleName,
    version: &BundleName,
) -> Result<Manifest, ClientError> {
    let m = Manifest {
        schema: helix_core::domain::manifest::MANIFEST_SCHEMA.into(),
        name: name.as_str().into(),
        version: version.as_str().into(),
        files: files
            .iter()
            .zip(digests)
            .map(|(f, d)| ManifestFile { path: f.path.clone(), digest: d.to_string(), size: f.size })
            .collect(),
        annotations: Default::default(),
    };
    let body = serde_json::to_vec(&m).map_err(other)?;
    Manifest::parse(&body, name, version).map_err(|e| other(format!("nothing was uploaded; {e}")))
}

/// SHA-256 and length of a file, read as a stream on a blocking thread (`done` counts its bytes).
pub(crate) fn hash_file(path: &Path, done: &AtomicU64) -> Result<(Digest, u64), ClientError> {
    let file = std::fs::File::open(path).map_err(|e| other(format!("{}: {e}", path.display())))?;
    hash_reader(file, path, done)
}

fn hash_reader(mut file: std::fs::File, path: &Path, done: &AtomicU64) -> Result<(Digest, u64), ClientError> {
    use std::io::Read;
    let mut digest = DigestWriter::default();
    // As large as the file, up to 1 MiB: 10,000 small files must not leave 10,000 MiB-sized buffers
    // in the allocator's per-thread arenas.
    let size = file.metadata().map(|m| m.len()).unwrap_or(0);
    let mut buf = vec![0u8; (size as usize).clamp(8 * 1024, 4 * CHUNK)];
    loop {
        let n = match file.read(&mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(other(format!("{}: {e}", path.display()))),
        };
        if n == 0 {
            let len = digest.len();
            return Ok((digest.finish(), len));
        }
        digest.update(&buf[..n]);
        done.fetch_add(n as u64, Ordering::Relaxed);
    }
}

/// What `helix push` and `helix pull` tune.
#[derive(Clone, Copy)]
pub struct Options {
    /// Files hashed, uploaded or downloaded at once.
    pub jobs: usize,
    /// No progress drawing, even on a terminal.
    pub quiet: bool,
    /// The registry's `inline_max` when the caller knows it already (else `/v1/status` is asked).
    pub inline_max: Option<u64>,
}

/// The largest blob the registry takes inline, as `/v1/status` says (its default when it does not).
pub fn inline_max_of(status: &Value) -> u64 {
    status["inline_max"].as_u64().unwrap_or(helix_core::config::DEFAULT_INLINE_MAX)
}

fn blob_path(ws: &WorkspaceId, digest: &Digest) -> String {
    format!("/v1/workspaces/{ws}/blobs/{digest}")
}

/// Push `dir` as `ws`/`name`@`version`: the registry's answer to the registration, with what was
/// uploaded added (`uploaded_files`, `uploaded_bytes`, `present_files`).
pub async fn push(
    registry: &Registry,
    dir: &Path,
    ws: &WorkspaceId,
    name: &BundleName,
    version: &BundleName,
    opts: Options,
) -> Result<Value, ClientError> {
    let mut files = walk(dir)?;
    // The paths are checked before anything is hashed: a refused name fails at once.
    manifest(&files, &vec![Digest::of(b""); files.len()], name, version)?;

    // The registry is asked first: nothing is hashed or uploaded for a push it would refuse.
    let (status, registered) = preflight(registry, ws, name, version).await?;

    let total: u64 = files.iter().map(|f| f.size).sum();
    let progress = Progress::start("hashing", total, opts.quiet);
    let hashes: Vec<(Digest, u64)> = futures_util::stream::iter(files.iter().map(|f| {
        let (path, done) = (f.abs.clone(), progress.done.clone());
        async move { tokio::task::spawn_blocking(move || hash_file(&path, &done)).await.map_err(other)? }
    }))
    .buffered(opts.jobs.max(1))
    .try_collect()
    .await?;
    progress.finish();
    // The manifest names the bytes that were hashed (a file that grew since the walk is pushed as hashed;
    // if it changes again before its upload, the registry refuses the upload with digest_mismatch).
    for (f, (_, len)) in files.iter_mut().zip(&hashes) {
        f.size = *len;
    }
    let digests: Vec<Digest> = hashes.into_iter().map(|(d, _)| d).collect();
    let manifest = manifest(&files, &digests, name, version)?;
    if let Some(registered) = registered {
        // Registered already: the same content is an idempotent re-run (nothing to upload); other
        // content is refused before a byte is uploaded.
        let local = Digest::of(manifest.canonical().map_err(other)?.as_bytes());
        if local.to_string() != registered {
            return Err(ClientError::Refused {
                status: 409,
                reason: "version_exists".into(),
                detail: format!(
                    "{ws}/{}@{} is registered with manifest {registered}; this folder's is {local}: push a new \
                     version (nothing was uploaded)",
                    name.as_str(),
                    version.as_str()
                ),
            });
        }
    }

    let inline_max = opts.inline_max.unwrap_or_else(|| inline_max_of(&status));

    // One upload per distinct digest; a HEAD says whether the workspace already holds it.
    let mut distinct: std::collections::BTreeMap<Digest, &LocalFile> = Default::default();
    for (f, d) in files.iter().zip(&digests) {
        distinct.entry(d.clone()).or_insert(f);
    }
    let present: Vec<bool> = futures_util::stream::iter(distinct.keys().map(|d| async move {
        match registry.answer(registry.request(reqwest::Method::HEAD, &blob_path(ws, d))).await {
            Ok(_) => Ok(true),
            Err(ClientError::Refused { status: 404, .. }) => Ok(false),
            // A HEAD's refusal has no body: the same GET names the reason.
            Err(ClientError::Refused { reason, .. }) if reason.starts_with("http_") => {
                registry.get(&blob_path(ws, d)).await.map(|_| true)
            }
            Err(e) => Err(e),
        }
    }))
    .buffered(4 * opts.jobs.max(1))
    .try_collect()
    .await?;
    let missing: Vec<(&Digest, &LocalFile)> =
        distinct.iter().zip(&present).filter(|(_, p)| !**p).map(|((d, f), _)| (d, *f)).collect();

    let upload_total: u64 = missing.iter().map(|(_, f)| f.size).sum();
    let progress = Progress::start("uploading", upload_total, opts.quiet);
    futures_util::stream::iter(missing.iter().map(|(d, f)| upload(registry, ws, d, f, inline_max, &progress)))
        .buffer_unordered(opts.jobs.max(1))
        .try_collect::<Vec<()>>()
        .await?;
    let elapsed = progress.finish();

    let body = manifest.canonical().map_err(other)?;
    let path = crate::client::version_path_of(ws, name, version);
    let req = registry.request(reqwest::Method::PUT, &path).header("content-type", "application/json").body(body);
    let mut answer: Value = registry.answer(req).await?.json().await.map_err(other)?;
    answer["uploaded_files"] = json!(missing.len());
    answer["uploaded_bytes"] = json!(upload_total);
    answer["present_files"] = json!(distinct.len() - missing.len());
    answer["upload_seconds"] = json!((elapsed.as_secs_f64() * 1000.0).round() / 1000.0);
    Ok(answer)
}

/// What the registry would refuse, asked before a byte is hashed: reachable, the token valid, a
/// publisher's role on `ws`, not frozen. Its `/v1/status`, and the manifest digest of the version
/// when it is registered already (the caller compares it with its own before uploading anything).
async fn preflight(
    registry: &Registry,
    ws: &WorkspaceId,
    name: &BundleName,
    version: &BundleName,
) -> Result<(Value, Option<String>), ClientError> {
    let status = registry.get("/v1/status").await?;
    let whoami = registry.get("/v1/whoami").await?;
    let (role, scope) = (whoami["role"].as_str().unwrap_or_default(), whoami["workspace_id"].as_str());
    let refused = |status: u16, reason: &str, detail: String| ClientError::Refused {
        status,
        reason: reason.into(),
        detail: format!("{detail} (checked before anything was hashed or uploaded)"),
    };
    if scope != Some("*") && scope != Some(ws.as_str()) {
        return Err(refused(
            403,
            "forbidden_workspace",
            format!("this token is for workspace {}, not {ws}", scope.unwrap_or("?")),
        ));
    }
    if !role.parse::<helix_core::domain::Role>().is_ok_and(|r| r.at_least(helix_core::domain::Role::Publisher)) {
        return Err(refused(403, "insufficient_role", format!("pushing needs a publisher; this token is a {role}")));
    }
    if status["frozen"] == true {
        let why = status["freeze"]["reason"].as_str().unwrap_or_default();
        return Err(refused(503, "registry_frozen", format!("the registry is frozen: {why}")));
    }
    match registry.get(&crate::client::version_path_of(ws, name, version)).await {
        Ok(view) => Ok((status, Some(view["manifest_digest"].as_str().unwrap_or_default().to_owned()))),
        Err(ClientError::Refused { status: 404, .. }) => Ok((status, None)),
        Err(e) => Err(e),
    }
}

/// Upload one blob the workspace lacks: inline up to `inline_max`, else presigned PUT and complete.
async fn upload(
    registry: &Registry,
    ws: &WorkspaceId,
    digest: &Digest,
    file: &LocalFile,
    inline_max: u64,
    progress: &Progress,
) -> Result<(), ClientError> {
    let read_err = |e: std::io::Error| other(format!("{}: {e}", file.abs.display()));
    if file.size <= inline_max {
        let bytes = tokio::fs::read(&file.abs).await.map_err(read_err)?;
        let req = registry.request(reqwest::Method::PUT, &blob_path(ws, digest)).body(bytes);
        registry.answer(req).await.map_err(|e| in_file(e, &file.path))?;
        progress.add(file.size);
        return Ok(());
    }
    let plan = registry
        .post(&format!("/v1/workspaces/{ws}/uploads"), &json!({"digest": digest.to_string(), "size": file.size}))
        .await
        .map_err(|e| in_file(e, &file.path))?;
    if plan["exists"] == true {
        progress.add(file.size);
        return Ok(());
    }
    let (Some(url), Some(method), Some(upload_id)) =
        (plan["upload"]["url"].as_str(), plan["upload"]["method"].as_str(), plan["upload_id"].as_str())
    else {
        return Err(other(format!("the registry's upload plan for {} has no URL", file.path)));
    };
    let mut req = registry.presigned(method, url)?;
    for h in plan["upload"]["headers"].as_array().into_iter().flatten() {
        if let (Some(k), Some(v)) = (h[0].as_str(), h[1].as_str()) {
            req = req.header(k, v);
        }
    }
    let handle = tokio::fs::File::open(&file.abs).await.map_err(read_err)?;
    let done = progress.done.clone();
    // Streamed: memory stays flat whatever the file's size.
    let body = tokio_util::io::ReaderStream::with_capacity(handle.take(file.size), CHUNK).inspect_ok(move |chunk| {
        done.fetch_add(chunk.len() as u64, Ordering::Relaxed);
    });
    let req = req.header("content-length", file.size).body(reqwest::Body::wrap_stream(body));
    let resp =
        req.send().await.map_err(|e| ClientError::Unreachable(format!("upload of {}: {}", file.path, chain(&e))))?;
    if !resp.status().is_success() {
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        return Err(ClientError::Refused {
            status,
            reason: "upload_refused".into(),
            detail: format!(
                "the store refused the upload of {}: {}",
                file.path,
                text.chars().take(300).collect::<String>()
            ),
        });
    }
    let path = format!("/v1/workspaces/{ws}/uploads/{digest}/complete");
    registry.post(&path, &json!({"upload_id": upload_id})).await.map_err(|e| in_file(e, &file.path))?;
    Ok(())
}

/// A refusal about one file names the file.
fn in_file(e: ClientError, path: &str) -> ClientError {
    match e {
        ClientError::Refused { status, reason, detail } => {
            ClientError::Refused { status, reason, detail: format!("{path}: {detail}") }
        }
        e => e,
    }
}

/// Pull `ws`/`name`@`version` into `dir`: what was written and what was already in place.
pub async fn pull(
    registry: &Registry,
    ws: &WorkspaceId,
    name: &BundleName,
    version: &BundleName,
    dir: &Path,
    opts: Options,
) -> Result<Value, ClientError> {
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
    let held: Vec<bool> = futures_util::stream::iter(files.iter().map(|(f, digest)| {
        let (size, digest) = (f.size, digest.clone());
        let found = dest.folder(&f.path).map(|(folder, leaf)| (folder, leaf.to_owned()));
        async move {
            let (folder, leaf) = found?;
            tokio::task::spawn_blocking(move || folder.holds(&leaf, size, &digest)).await.map_err(other)?
        }
    }))
    .buffered(opts.jobs.max(1))
    .try_collect()
    .await?;
    let kept = held.iter().filter(|h| **h).count();
    let todo: Vec<_> = files.into_iter().zip(&held).filter(|(_, h)| !**h).map(|(p, _)| p).collect();
    let total: u64 = todo.iter().map(|(f, _)| f.size).sum();
    let progress = Progress::start("downloading", total, opts.quiet);
    futures_util::stream::iter(todo.iter().map(|(f, d)| {
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
struct Dest {
    root: std::sync::Arc<rustix::fd::OwnedFd>,
    shown: PathBuf,
    /// Folders recently opened, by their path under the destination: at most `OPEN_FOLDERS` handles
    /// are kept (a bundle of thousands of folders must not exhaust the open-file limit; macOS's
    /// default is 256). A folder dropped from here is opened again, the same way, when needed.
    folders: std::sync::Mutex<std::collections::HashMap<String, Folder>>,
}

/// A folder under the destination, by handle.
#[derive(Clone)]
struct Folder {
    fd: std::sync::Arc<rustix::fd::OwnedFd>,
    shown: PathBuf,
}

/// Folder handles a pull keeps open between files (besides those of the files in flight).
const OPEN_FOLDERS: usize = 64;

fn dir_flags() -> rustix::fs::OFlags {
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

/// A temporary file removed when dropped, unless it was moved into place.
struct Partial {
    folder: Folder,
    name: Option<String>,
}

impl Drop for Partial {
    fn drop(&mut self) {
        if let Some(name) = self.name.take() {
            let _ = rustix::fs::unlinkat(self.folder.fd.as_ref(), name.as_str(), rustix::fs::AtFlags::empty());
        }
    }
}

/// The prefix of `helix pull`'s temporary files (`helix push` refuses them).
pub const PARTIAL_PREFIX: &str = ".helix-part-";

async fn download(
    registry: &Registry,
    ws: &WorkspaceId,
    file: &ManifestFile,
    digest: &Digest,
    folder: &Folder,
    leaf: &str,
    progress: &Progress,
) -> Result<(), ClientError> {
    let req = registry.request(reqwest::Method::GET, &blob_path(ws, digest));
    let mut resp = registry.answer_or_redirect(req).await.map_err(|e| in_file(e, &file.path))?;
    if resp.status().is_redirection() {
        let location = resp
            .headers()
            .get("location")
            .and_then(|l| l.to_str().ok())
            .ok_or_else(|| other(format!("{}: a redirect without a location", file.path)))?
            .to_owned();
        resp = registry.answer(registry.presigned("GET", &location)?).await.map_err(|e| in_file(e, &file.path))?;
    }
    let mut rand = [0u8; 6];
    getrandom::fill(&mut rand).map_err(other)?;
    // A fixed-length name: a 255-byte file name still has room for its temporary file.
    let temp = format!("{PARTIAL_PREFIX}{}", hex::encode(rand));
    let shown = folder.shown.join(&temp);
    let write_err = |e: std::io::Error| other(format!("{}: {e}", shown.display()));
    use rustix::fs::OFlags;
    let fd = rustix::fs::openat(
        folder.fd.as_ref(),
        temp.as_str(),
        OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        rustix::fs::Mode::from_raw_mode(0o644),
    )
    .map_err(|e| write_err(e.into()))?;
    let mut partial = Partial { folder: folder.clone(), name: Some(temp.clone()) };
    let mut out = tokio::fs::File::from_std(std::fs::File::from(fd));
    let mut hash = DigestWriter::default();
    let mut body = resp.bytes_stream();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| ClientError::Unreachable(format!("download of {}: {}", file.path, chain(&e))))?;
        hash.update(&chunk);
        if hash.len() > file.size {
            return Err(other(format!(
                "digest_mismatch: {}: the registry served more than its {} bytes",
                file.path, file.size
            )));
        }
        out.write_all(&chunk).await.map_err(write_err)?;
        progress.add(chunk.len() as u64);
    }
    let len = hash.len();
    let actual = hash.finish();
    if len != file.size || &actual != digest {
        return Err(other(format!(
            "digest_mismatch: {}: the registry served {len} bytes hashing to {actual}, not {digest}; this file was not written",
            file.path
        )));
    }
    out.sync_all().await.map_err(write_err)?;
    drop(out);
    // Into place without replacing anything: a file that appeared meanwhile is not overwritten.
    let target = folder.shown.join(leaf);
    let placed = match rustix::fs::renameat_with(
        folder.fd.as_ref(),
        temp.as_str(),
        folder.fd.as_ref(),
        leaf,
        rustix::fs::RenameFlags::NOREPLACE,
    ) {
        Err(rustix::io::Errno::INVAL | rustix::io::Errno::NOSYS) => {
            // A filesystem without rename-without-replace: a hard link fails the same way on an existing name.
            rustix::fs::linkat(
                folder.fd.as_ref(),
                temp.as_str(),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_shows_bytes_rate_and_eta() {
        let line = progress_line(512 * 1024 * 1024, 1024 * 1024 * 1024, Duration::from_secs(2));
        assert_eq!(line, "512.0 MiB / 1.0 GiB  256.0 MiB/s  ETA 2s");
        assert_eq!(bytes(1023), "1023 B");
    }

    #[test]
    fn walk_refuses_symlinks_and_special_files_all_at_once() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("sub/a.txt"), b"a").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", dir.path().join("link")).unwrap();
        let fifo = rustix::fs::FileType::Fifo;
        rustix::fs::mknodat(rustix::fs::CWD, dir.path().join("pipe"), fifo, rustix::fs::Mode::from_raw_mode(0o600), 0)
            .unwrap();
        let err = walk(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains("2 path(s) refused") && err.contains("link: a symlink") && err.contains("pipe: not a regular"),
            "{err}"
        );
        std::fs::remove_file(dir.path().join("link")).unwrap();
        std::fs::remove_file(dir.path().join("pipe")).unwrap();
        let files = walk(dir.path()).unwrap();
        assert_eq!(files.iter().map(|f| f.path.as_str()).collect::<Vec<_>>(), ["sub/a.txt"]);
    }
}
