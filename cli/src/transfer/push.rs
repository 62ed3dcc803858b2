//! `helix push`: walk the folder (refusing what is not a regular file), hash, ask the registry, upload
//! what the workspace lacks, register the manifest last.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use futures_util::{StreamExt, TryStreamExt};
use helix_core::domain::manifest::ManifestFile;
use helix_core::domain::{BundleName, Digest, Manifest, WorkspaceId};
use serde_json::{Value, json};
use tokio::io::AsyncReadExt;

use crate::client::{ClientError, Registry, chain};

use super::{CHUNK, Options, PARTIAL_PREFIX, Progress, blob_path, hash_file_parts, in_file, inline_max_of, other};

/// A regular file under the pushed directory.
#[derive(Debug, Clone)]
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

/// Files hashed in one blocking trip: at most this many, and at most `HASH_GROUP_BYTES` after the first.
const HASH_GROUP_FILES: usize = 64;
const HASH_GROUP_BYTES: u64 = 4 * 1024 * 1024;

/// `files` in order, cut into groups for hashing: many small files to a group, a large one alone.
fn hash_groups(files: &[LocalFile]) -> impl Iterator<Item = &[LocalFile]> {
    let mut groups = Vec::new();
    let (mut start, mut bytes) = (0, 0u64);
    for (i, f) in files.iter().enumerate() {
        if i > start && (i - start == HASH_GROUP_FILES || bytes + f.size > HASH_GROUP_BYTES) {
            groups.push(&files[start..i]);
            (start, bytes) = (i, 0);
        }
        bytes += f.size;
    }
    if start < files.len() {
        groups.push(&files[start..]);
    }
    groups.into_iter()
}

/// The manifest of `files` with these digests, checked by the registry's rules (paths, order,
/// collisions, counts and sizes).
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
    Manifest::parse(&body, name, version).map_err(|e| other(e.to_string()))
}

/// A file hashed: its digest, the bytes hashed, its parts' digests when it goes up in parts, and its
/// bytes when it goes up in a batch (`Kept`).
type Hashed = (Digest, u64, Option<Vec<Digest>>, Option<Kept>);

/// A small file's bytes, read once to hash them and kept for its batch (not read a second time).
pub(super) type Kept = bytes::Bytes;

/// A file of a wave: its digest, the file as hashed, its parts' digests, its kept bytes.
type Waved = (Digest, LocalFile, Option<Vec<Digest>>, Option<Kept>);

/// A wave is asked about when it holds this many new digests, or this many bytes kept.
const WAVE_KEPT_BYTES: u64 = 8 * 1024 * 1024;

/// Uploads queued while the push still hashes: many small files in one batch request, or one file.
enum Upload {
    Batch(Vec<(Digest, LocalFile, Option<Kept>)>),
    One(Digest, LocalFile, Option<Vec<Digest>>),
}

/// Push `dir` as `ws`/`name`@`version`: the registry's answer to the registration, with what was
/// uploaded added (`uploaded_files`, `uploaded_bytes`, `present_files`).
///
/// Hashing, asking and uploading overlap: files are hashed in path order, a few groups at a time, and
/// each wave of up to `MAX_QUERY_DIGESTS` new digests is asked about (one request) and its uploads
/// queued while the next files hash. A version registered already holds every wave back until the
/// whole folder is hashed and its manifest compared: other content is refused before a byte is sent.
pub async fn push(
    registry: &Registry,
    dir: &Path,
    ws: &WorkspaceId,
    name: &BundleName,
    version: &BundleName,
    opts: Options,
) -> Result<Value, ClientError> {
    let files = walk(dir)?;
    // The paths are checked before anything is hashed: a refused name fails at once.
    manifest(&files, &vec![Digest::of(b""); files.len()], name, version)
        .map_err(|e| other(format!("nothing was uploaded; {e}")))?;

    // The registry is asked first: nothing is hashed or uploaded for a push it would refuse.
    let (status, registered) = preflight(registry, ws, name, version).await?;

    let inline_max = opts.inline_max.unwrap_or_else(|| inline_max_of(&status));
    let jobs = opts.jobs.max(1);
    let small_max = inline_max.min(super::batch::BATCH_FILE_MAX);
    let total: u64 = files.iter().map(|f| f.size).sum();
    let hashing = Progress::start("hashing", total, opts.quiet);
    let uploading = Progress::hidden(opts.quiet);
    let first_upload = std::sync::OnceLock::new();
    let (to, queued) = tokio::sync::mpsc::channel::<Upload>(jobs);
    let mut queue = Queue { registry, ws, inline_max, small_max, to, small: Vec::new(), files: 0, bytes: 0 };

    let produce = async {
        // Small files a few to a blocking trip (`hash_groups`), `jobs` trips at once. A file that goes
        // up in parts is alone in its group and has its parts hashed in the same read (`hash_file_parts`).
        // A file that goes up in a batch keeps the bytes read to hash it (unless every wave is held back
        // until the whole folder is hashed: a version registered already).
        let keep_max = if registered.is_none() { small_max } else { 0 };
        let mut groups = futures_util::stream::iter(hash_groups(&files).map(|group| {
            let done = hashing.done.clone();
            let work: Vec<(PathBuf, u64, Option<u64>)> = group
                .iter()
                .map(|f| {
                    let part_size =
                        (f.size > inline_max).then(|| super::chunked::part_size_of(&status, f.size)).flatten();
                    (f.abs.clone(), f.size, part_size)
                })
                .collect();
            async move {
                tokio::task::spawn_blocking(move || -> Result<Vec<Hashed>, ClientError> {
                    let hash = |(path, size, part_size): &(PathBuf, u64, Option<u64>)| match *size <= keep_max {
                        true => read_small(path, &done, *size, keep_max).map(|(d, len, kept)| (d, len, None, kept)),
                        false => hash_file_parts(path, &done, *size, *part_size).map(|(d, len, p)| (d, len, p, None)),
                    };
                    work.iter().map(hash).collect()
                })
                .await
                .map_err(other)?
            }
        }))
        .buffered(jobs);
        // The manifest names the bytes that were hashed (a file that grew since the walk is pushed as
        // hashed; if it changes again before its upload, the registry refuses it: digest_mismatch).
        let mut hashed: Vec<(Digest, u64)> = Vec::with_capacity(files.len());
        let mut seen = std::collections::HashSet::new();
        let mut wave: Vec<Waved> = Vec::new();
        let mut wave_kept = 0u64;
        let mut held = Vec::new();
        while let Some(group) = groups.try_next().await? {
            for (digest, len, parts, kept) in group {
                if seen.insert(digest.clone()) {
                    let f = &files[hashed.len()];
                    wave_kept += kept.as_ref().map_or(0, |k| k.len() as u64);
                    wave.push((digest.clone(), LocalFile { size: len, ..f.clone() }, parts, kept));
                }
                hashed.push((digest, len));
                if wave.len() == helix_core::batch::MAX_QUERY_DIGESTS || wave_kept >= WAVE_KEPT_BYTES {
                    wave_kept = 0;
                    match registered {
                        Some(_) => held.push(std::mem::take(&mut wave)),
                        None => queue.wave(std::mem::take(&mut wave), false).await?,
                    }
                }
            }
        }
        drop(groups);
        hashing.finish();
        held.push(wave);
        let (digests, sizes): (Vec<Digest>, Vec<u64>) = hashed.into_iter().unzip();
        let as_hashed: Vec<LocalFile> =
            files.iter().zip(sizes).map(|(f, size)| LocalFile { size, ..f.clone() }).collect();
        let manifest = manifest(&as_hashed, &digests, name, version)
            .map_err(|e| other(format!("a file changed while it was hashed; the version was not registered: {e}")))?;
        if let Some(registered) = &registered {
            // Registered already: the same content is an idempotent re-run (nothing to upload); other
            // content is refused before a byte is uploaded.
            let local = Digest::of(manifest.canonical().map_err(other)?.as_bytes());
            if local.to_string() != *registered {
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
        let waves = held.len();
        for (n, wave) in held.into_iter().enumerate() {
            queue.wave(wave, n + 1 == waves).await?;
        }
        uploading.show("uploading", queue.bytes);
        // The last upload queued: the uploads end when they are done.
        let (queued_files, queued_bytes) = (queue.files, queue.bytes);
        drop(queue);
        Ok::<_, ClientError>((manifest, seen.len(), queued_files, queued_bytes))
    };
    let queued = futures_util::stream::unfold(queued, |mut q| async move { q.recv().await.map(|up| (up, q)) });
    let consume = queued
        .map(|up| {
            let uploading = &uploading;
            let status = &status;
            let first = &first_upload;
            async move {
                first.get_or_init(std::time::Instant::now);
                match up {
                    Upload::Batch(files) => super::batch::upload(registry, ws, files, uploading).await,
                    Upload::One(d, f, parts) => {
                        let parts = super::chunked::part_size_of(status, f.size).map(|size| (size, parts.as_deref()));
                        upload(registry, ws, &d, &f, inline_max, parts, uploading).await
                    }
                }
            }
        })
        .buffer_unordered(jobs)
        .try_collect::<Vec<()>>();
    let ((manifest, distinct, uploads, upload_total), _) = futures_util::try_join!(produce, consume)?;
    uploading.finish();
    // From the first upload on (uploads overlap the hashing); none when nothing was sent.
    let elapsed = first_upload.get().map(|t| t.elapsed()).unwrap_or_default();

    let body = manifest.canonical().map_err(other)?;
    let path = crate::client::version_path_of(ws, name, version);
    let req = registry.request(reqwest::Method::PUT, &path).header("content-type", "application/json").body(body);
    let mut answer: Value = registry.answer(req).await?.json().await.map_err(other)?;
    answer["uploaded_files"] = json!(uploads);
    answer["uploaded_bytes"] = json!(upload_total);
    answer["present_files"] = json!(distinct - uploads);
    answer["upload_seconds"] = json!((elapsed.as_secs_f64() * 1000.0).round() / 1000.0);
    Ok(answer)
}

/// What a push queues for upload as its waves are asked about.
struct Queue<'a> {
    registry: &'a Registry,
    ws: &'a WorkspaceId,
    inline_max: u64,
    /// Files up to this size go in batches.
    small_max: u64,
    to: tokio::sync::mpsc::Sender<Upload>,
    /// Small files not yet in a full batch: the next wave's join them.
    small: Vec<(Digest, LocalFile, Option<Kept>)>,
    /// Files queued and their bytes.
    files: usize,
    bytes: u64,
}

impl Queue<'_> {
    /// Ask which digests of `wave` (distinct, new to this push) the workspace lacks, and queue their
    /// uploads: files up to `BATCH_FILE_MAX` (and `inline_max`) many to a batch request, each larger
    /// one alone. The last batch waits for the next wave's small files unless this is the `last` wave.
    async fn wave(&mut self, wave: Vec<Waved>, last: bool) -> Result<(), ClientError> {
        let lacking = match wave.is_empty() {
            true => Default::default(),
            false => {
                let asked: Vec<&Digest> = wave.iter().map(|(d, _, _, _)| d).collect();
                super::batch::missing(self.registry, self.ws, &asked, 1).await?
            }
        };
        let mut ups = Vec::new();
        for (digest, file, parts, kept) in wave.into_iter().filter(|(d, _, _, _)| lacking.contains(d)) {
            self.files += 1;
            self.bytes += file.size;
            if file.size <= self.small_max {
                self.small.push((digest, file, kept));
            } else {
                ups.push(Upload::One(digest, file, parts));
            }
        }
        let mut batches = super::batch::plan(std::mem::take(&mut self.small), |(_, f, _)| f.size, self.inline_max);
        if !last && let Some(open) = batches.pop() {
            self.small = open;
        }
        for up in batches.into_iter().map(Upload::Batch).chain(ups) {
            // The uploads stopped (one failed): its error is the push's.
            if self.to.send(up).await.is_err() {
                return Ok(());
            }
        }
        Ok(())
    }
}

/// What the registry would refuse, asked before a byte is hashed: reachable, the token valid, a
/// publisher's role on `ws`, not frozen. Its `/v1/status`, and the manifest digest of the version
/// when it is registered already (the caller compares it with its own before uploading anything).
pub(super) async fn preflight(
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

/// Upload one blob the workspace lacks: inline up to `inline_max`, in parts above one part
/// (`parts`: the part size, as the registry's status says, and the parts' SHA-256 when the hashing
/// took them), else presigned PUT and complete.
pub(super) async fn upload(
    registry: &Registry,
    ws: &WorkspaceId,
    digest: &Digest,
    file: &LocalFile,
    inline_max: u64,
    parts: Option<(u64, Option<&[Digest]>)>,
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
    if let Some((part_size, hashed)) = parts {
        return super::chunked::upload(registry, ws, digest, file, part_size, hashed, progress).await;
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
    store_accepted(resp, &format!("the upload of {}", file.path)).await?;
    let path = format!("/v1/workspaces/{ws}/uploads/{digest}/complete");
    let answer = registry.post(&path, &json!({"upload_id": upload_id})).await.map_err(|e| in_file(e, &file.path))?;
    super::verifying::follow(registry, answer, &file.path).await.map_err(|e| in_file(e, &file.path))
}

/// A presigned upload's answer: success, or the store's refusal of `what`: the reason and detail of a
/// problem+json answer (the embedded store's: `registry_frozen`, `digest_mismatch`…), else
/// `upload_refused` with the first 300 characters of what the store said (S3's XML).
pub(super) async fn store_accepted(resp: reqwest::Response, what: &str) -> Result<(), ClientError> {
    if resp.status().is_success() {
        return Ok(());
    }
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap_or_default();
    // The embedded store's part route answers problem+json (its reason: `registry_frozen`, …); S3 XML.
    let problem: Option<(String, String)> = serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .and_then(|p| Some((p["reason"].as_str()?.to_owned(), p["detail"].as_str().unwrap_or_default().to_owned())));
    let (reason, said) = problem.unwrap_or_else(|| ("upload_refused".into(), text.chars().take(300).collect()));
    Err(ClientError::Refused { status, reason, detail: format!("the store refused {what}: {said}") })
}

/// A small file (`size` bytes at the walk) read whole, up to one byte more than `max` (a file that
/// grew past it is hashed as a stream and read again for its upload), hashed, and its bytes kept.
fn read_small(path: &Path, done: &AtomicU64, size: u64, max: u64) -> Result<(Digest, u64, Option<Kept>), ClientError> {
    use std::io::Read;
    let file = std::fs::File::open(path).map_err(|e| other(format!("{}: {e}", path.display())))?;
    // Room for the whole file and the read that finds its end: no buffer grown along the way.
    let mut bytes = Vec::with_capacity(size.min(max) as usize + 1);
    file.take(max + 1).read_to_end(&mut bytes).map_err(|e| other(format!("{}: {e}", path.display())))?;
    if bytes.len() as u64 > max {
        // Grown since the walk: hashed as a stream, like any larger file.
        let (digest, len) = super::hash_file(path, done)?;
        return Ok((digest, len, None));
    }
    done.fetch_add(bytes.len() as u64, Ordering::Relaxed);
    let len = bytes.len() as u64;
    Ok((Digest::of(&bytes), len, Some(Kept::from(bytes))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashing_groups_many_small_files_and_leaves_a_large_one_alone() {
        let file = |size| LocalFile { path: String::new(), abs: PathBuf::new(), size };
        let mut files: Vec<LocalFile> = (0..130).map(|_| file(10)).collect();
        files.insert(3, file(HASH_GROUP_BYTES * 2));
        let sizes: Vec<usize> = hash_groups(&files).map(<[LocalFile]>::len).collect();
        assert_eq!(sizes, [3, 1, 64, 63]);
        assert_eq!(sizes.iter().sum::<usize>(), files.len(), "every file once, in order");
        assert_eq!(hash_groups(&[]).count(), 0);
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
