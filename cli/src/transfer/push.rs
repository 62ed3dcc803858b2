//! `helix push`: walk the folder (refusing what is not a regular file), hash, ask the registry, upload
//! what the workspace lacks, register the manifest last.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

use futures_util::{StreamExt, TryStreamExt};
use helix_core::domain::manifest::ManifestFile;
use helix_core::domain::{BundleName, Digest, Manifest, WorkspaceId};
use serde_json::{Value, json};
use tokio::io::AsyncReadExt;

use crate::client::{ClientError, Registry, chain};

use super::{CHUNK, Options, PARTIAL_PREFIX, Progress, blob_path, hash_file_parts, in_file, inline_max_of, other};

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

    let inline_max = opts.inline_max.unwrap_or_else(|| inline_max_of(&status));
    let total: u64 = files.iter().map(|f| f.size).sum();
    let progress = Progress::start("hashing", total, opts.quiet);
    // Small files a few to a blocking trip (`hash_groups`), `jobs` trips at once. A file that goes up
    // in parts is alone in its group and has its parts hashed in the same read (`hash_file_parts`).
    type Hashed = (Digest, u64, Option<Vec<Digest>>);
    let hashes: Vec<Vec<Hashed>> = futures_util::stream::iter(hash_groups(&files).map(|group| {
        let done = progress.done.clone();
        let work: Vec<(PathBuf, u64, Option<u64>)> = group
            .iter()
            .map(|f| {
                let part_size = (f.size > inline_max).then(|| super::chunked::part_size_of(&status, f.size)).flatten();
                (f.abs.clone(), f.size, part_size)
            })
            .collect();
        async move {
            tokio::task::spawn_blocking(move || {
                work.iter().map(|(path, size, part_size)| hash_file_parts(path, &done, *size, *part_size)).collect()
            })
            .await
            .map_err(other)?
        }
    }))
    .buffered(opts.jobs.max(1))
    .try_collect()
    .await?;
    let hashes: Vec<Hashed> = hashes.into_iter().flatten().collect();
    progress.finish();
    // The manifest names the bytes that were hashed (a file that grew since the walk is pushed as hashed;
    // if it changes again before its upload, the registry refuses the upload with digest_mismatch).
    for (f, (_, len, _)) in files.iter_mut().zip(&hashes) {
        f.size = *len;
    }
    let (digests, part_digests): (Vec<Digest>, Vec<Option<Vec<Digest>>>) =
        hashes.into_iter().map(|(d, _, parts)| (d, parts)).unzip();
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

    // One upload per distinct digest; one request per 1,000 digests says which the workspace lacks.
    let mut distinct: std::collections::BTreeMap<Digest, &LocalFile> = Default::default();
    let mut parts_of: std::collections::HashMap<&Digest, &[Digest]> = Default::default();
    for ((f, d), parts) in files.iter().zip(&digests).zip(&part_digests) {
        distinct.entry(d.clone()).or_insert(f);
        if let Some(parts) = parts {
            parts_of.entry(d).or_insert(parts);
        }
    }
    let asked: Vec<&Digest> = distinct.keys().collect();
    let lacking = super::batch::missing(registry, ws, &asked, opts.jobs).await?;
    let missing: Vec<(&Digest, &LocalFile)> =
        distinct.iter().filter(|(d, _)| lacking.contains(*d)).map(|(d, f)| (d, *f)).collect();

    let upload_total: u64 = missing.iter().map(|(_, f)| f.size).sum();
    let progress = Progress::start("uploading", upload_total, opts.quiet);
    // Small files many to a request (no larger than the registry's inline body); larger ones each its own.
    let small_max = inline_max.min(super::batch::BATCH_FILE_MAX);
    let (small, large): (Vec<_>, Vec<_>) = missing.iter().copied().partition(|(_, f)| f.size <= small_max);
    let batches = super::batch::plan(small, |(_, f)| f.size, inline_max);
    let batched = futures_util::stream::iter(batches.iter().map(|b| super::batch::upload(registry, ws, b, &progress)))
        .buffer_unordered(opts.jobs.max(1))
        .try_collect::<Vec<()>>();
    let single = futures_util::stream::iter(large.iter().map(|(d, f)| {
        let parts = super::chunked::part_size_of(&status, f.size).map(|size| (size, parts_of.get(d).copied()));
        upload(registry, ws, d, f, inline_max, parts, &progress)
    }))
    .buffer_unordered(opts.jobs.max(1))
    .try_collect::<Vec<()>>();
    futures_util::try_join!(batched, single)?;
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
