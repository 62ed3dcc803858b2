//! `helix backup` and `helix restore`: the embedded backend's data dir, copied consistently while
//! `helix serve` runs, and put back into a fresh data dir. (On AWS the equivalents are DynamoDB
//! point-in-time recovery and S3 versioning: docs/deploy.md, "Restore drill".)
//!
//! Backup, in this order: the SQLite snapshot (`VACUUM INTO`: every transaction committed before
//! it, nothing after); the blob tree (a blob is written before its link commits, so every blob the
//! snapshot links is on disk when the copy runs), following a symlinked folder (blobs moved to a
//! bigger disk) and leaving out the store's scratch (`tmp/`) and staging uploads (`uploads/`,
//! disposable, and their checksum records must never come back from a copy); the signing key and the
//! local presigning secret. Then every blob the snapshot links must be in the copy, and `BACKUP.json`
//! records the schema version and the SHA-256 of every file that is not a blob (a blob's name is its
//! digest). Everything is fsynced; a failed backup removes what it wrote.
//!
//! Restore checks before anything reaches the data dir: the schema is one this build reads and the
//! database's own, every recorded file hashes as recorded, every blob file hashes to its name,
//! every linked blob is there, and the blob folder holds nothing else (no staging state, which
//! it could not verify) but the signed audit export. It copies into a temporary sibling and renames it into place.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use helix_core::adapters::sqlite::{SCHEMA_VERSION, SqliteStore};
use helix_core::app::{BLOB_DIR, PRESIGN_SECRET_FILE, SIGNING_KEY_FILE, SQLITE_FILE};
use helix_core::domain::Digest;
use serde_json::{Value, json};

/// What a backup holds, written beside it as `BACKUP.json`.
pub const MANIFEST: &str = "BACKUP.json";
/// Folders of the blob store a backup leaves out: scratch files and staging uploads.
const SKIPPED: [&str; 2] = ["tmp", "uploads"];

type Res<T> = Result<T, Box<dyn std::error::Error>>;

fn io(path: &Path) -> impl Fn(std::io::Error) -> String + '_ {
    move |e| format!("{}: {e}", path.display())
}

/// A directory that does not exist yet, or is empty: created 0700.
fn fresh_dir(dir: &Path) -> Res<()> {
    if dir.exists() && std::fs::read_dir(dir).map_err(io(dir))?.next().is_some() {
        return Err(format!("{} is not empty: a backup or restore never writes over data", dir.display()).into());
    }
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(io(dir))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(io(dir))?;
    Ok(())
}

/// `path` made absolute and resolved as far as it exists (a path not created yet keeps its tail).
fn resolved(path: &Path) -> PathBuf {
    let mut existing = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let mut tail = Vec::new();
    while !existing.exists() {
        let Some(last) = existing.components().next_back() else { break };
        tail.push(last.as_os_str().to_owned());
        if !existing.pop() {
            break;
        }
    }
    let mut out = existing.canonicalize().unwrap_or_else(|_| existing.to_path_buf());
    for part in tail.iter().rev() {
        match part.to_str() {
            Some("..") => {
                out.pop();
            }
            Some(".") => {}
            _ => out.push(part),
        }
    }
    out
}

/// Neither directory may hold the other: a backup into the data dir would copy itself.
fn apart(a: &Path, b: &Path) -> Res<()> {
    let (ra, rb) = (resolved(a), resolved(b));
    if ra.starts_with(&rb) || rb.starts_with(&ra) {
        return Err(format!("{} and {} must not be inside one another", a.display(), b.display()).into());
    }
    Ok(())
}

fn sha256_of(path: &Path) -> Res<Digest> {
    Ok(crate::transfer::hash_file(path, &std::sync::atomic::AtomicU64::new(0))?.0)
}

/// Copy one file, 0600, fsynced; false if it vanished meanwhile (a sweep).
fn copy_file(from: &Path, to: &Path) -> Res<Option<u64>> {
    let mut src = match std::fs::File::open(from) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io(from)(e).into()),
    };
    let mut dst = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(to).map_err(io(to))?;
    let n = std::io::copy(&mut src, &mut dst).map_err(io(to))?;
    dst.sync_all().map_err(io(to))?;
    Ok(Some(n))
}

/// Copy the tree `from` into `to`: regular files, and folders (a symlinked folder is followed);
/// `skip` names top-level folders left out. The files and bytes copied.
fn copy_tree(from: &Path, to: &Path, skip: &[&str]) -> Res<(u64, u64)> {
    let (mut files, mut bytes) = (0, 0);
    if !from.exists() {
        return Ok((0, 0));
    }
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(to).map_err(io(to))?;
    for entry in std::fs::read_dir(from).map_err(io(from))? {
        let entry = entry.map_err(io(from))?;
        let name = entry.file_name();
        if skip.iter().any(|s| name == *s) {
            continue;
        }
        let path = entry.path();
        let meta = match std::fs::metadata(&path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io(&path)(e).into()),
        };
        let target = to.join(&name);
        if meta.is_dir() {
            let (f, b) = copy_tree(&path, &target, &[])?;
            files += f;
            bytes += b;
        } else if meta.is_file()
            && let Some(n) = copy_file(&path, &target)?
        {
            files += 1;
            bytes += n;
        }
    }
    std::fs::File::open(to).and_then(|d| d.sync_all()).map_err(io(to))?;
    Ok((files, bytes))
}

/// Every blob `db` links must be a file under `blobs`; the schema version of `db`.
fn links_present(db: &Path, blobs: &Path) -> Res<usize> {
    let (schema, keys) = SqliteStore::linked_keys(db)?;
    let missing: Vec<String> =
        keys.iter().filter(|k| !blobs.join(k.storage_key()).is_file()).map(|k| k.storage_key()).collect();
    if !missing.is_empty() {
        return Err(format!(
            "{} linked blob(s) missing from {} (first: {})",
            missing.len(),
            blobs.display(),
            missing[0]
        )
        .into());
    }
    Ok(schema)
}

/// Back up `data_dir` into the new directory `out`; its record.
pub fn backup(data_dir: &Path, out: &Path) -> Res<Value> {
    let db = data_dir.join(SQLITE_FILE);
    if !db.exists() {
        return Err(format!("{} has no {SQLITE_FILE}: not an embedded data dir", data_dir.display()).into());
    }
    apart(data_dir, out)?;
    fresh_dir(out)?;
    let result = write_backup(data_dir, out);
    if result.is_err() {
        // Nothing half-written is left to be mistaken for a backup.
        let _ = std::fs::remove_dir_all(out);
    }
    result
}

fn write_backup(data_dir: &Path, out: &Path) -> Res<Value> {
    let db = out.join(SQLITE_FILE);
    SqliteStore::snapshot(&data_dir.join(SQLITE_FILE), &db)?;
    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o600)).map_err(io(&db))?;
    std::fs::File::open(&db).and_then(|f| f.sync_all()).map_err(io(&db))?;
    let (blob_files, blob_bytes) = copy_tree(&data_dir.join(BLOB_DIR), &out.join(BLOB_DIR), &SKIPPED)?;
    let mut files = serde_json::Map::new();
    for name in [SQLITE_FILE, SIGNING_KEY_FILE, PRESIGN_SECRET_FILE] {
        let (from, to) = (data_dir.join(name), out.join(name));
        if name != SQLITE_FILE && copy_file(&from, &to)?.is_none() {
            continue;
        }
        files.insert(name.into(), json!(sha256_of(&to)?.to_string()));
    }
    let schema = links_present(&db, &out.join(BLOB_DIR))?;
    let manifest = json!({
        "kind": "helix.backup.v1",
        "created_at": helix_core::domain::time::now_rfc3339_ms(),
        "source": data_dir.display().to_string(),
        "schema_version": schema,
        "files": files,
        "blob_files": blob_files,
        "blob_bytes": blob_bytes,
    });
    let path = out.join(MANIFEST);
    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&path).map_err(io(&path))?;
    f.write_all((serde_json::to_string_pretty(&manifest)? + "\n").as_bytes()).map_err(io(&path))?;
    f.sync_all().map_err(io(&path))?;
    std::fs::File::open(out).and_then(|d| d.sync_all()).map_err(io(out))?;
    Ok(manifest)
}

/// Every file under `blobs/sha256/` hashes to the digest its name says; how many.
fn blobs_match_their_names(blobs: &Path) -> Res<u64> {
    let mut checked = 0;
    let mut stack = vec![blobs.join("sha256")];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for entry in entries {
            let path = entry.map_err(io(&dir))?.path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            let hex = name.split('.').next().unwrap_or_default();
            let named = Digest::parse(&format!("sha256:{hex}"))
                .map_err(|_| format!("{}: not a blob of this store", path.display()))?;
            let actual = sha256_of(&path)?;
            if actual != named {
                return Err(
                    format!("{}: the bytes hash to {actual}, not the digest its name says", path.display()).into()
                );
            }
            checked += 1;
        }
    }
    Ok(checked)
}

/// What the blob folder of a backup may hold: blobs (each checked against its name) and the audit
/// export (signed days and their keys; `helix audit verify` with a pinned key checks them).
const BLOB_FOLDERS: [&str; 2] = ["sha256", "audit"];

/// Nothing under `blobs/` but `BLOB_FOLDERS`. Staging state (`uploads/`, `tmp/`) is scratch that
/// `helix backup` never copies, and restore cannot verify it: `complete` trusts a staged upload's
/// checksum record, so a forged one would link wrong bytes under a digest. A backup carrying it
/// has been changed since it was made: refused (docs/decisions.md, "Restore refuses staging state").
fn blob_folders_known(blobs: &Path) -> Res<()> {
    let Ok(entries) = std::fs::read_dir(blobs) else { return Ok(()) };
    for entry in entries {
        let entry = entry.map_err(io(blobs))?;
        let name = entry.file_name();
        let path = entry.path();
        if SKIPPED.iter().any(|s| name == *s) {
            return Err(format!(
                "{}: staging state (scratch that helix backup never copies, and restore cannot verify): \
                 this backup was changed after it was made",
                path.display()
            )
            .into());
        }
        if !BLOB_FOLDERS.iter().any(|k| name == *k) || !path.is_dir() {
            return Err(format!("{}: not part of a helix backup", path.display()).into());
        }
    }
    Ok(())
}

/// Check the backup `from` whole: schema, recorded files, blobs against their names, linked blobs.
pub fn check(from: &Path) -> Res<Value> {
    let path = from.join(MANIFEST);
    let manifest: Value = serde_json::from_slice(&std::fs::read(&path).map_err(io(&path))?)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if manifest["kind"] != "helix.backup.v1" {
        return Err(format!("{}: not a helix backup record", path.display()).into());
    }
    let recorded = manifest["schema_version"].as_u64().unwrap_or(u64::MAX) as usize;
    if recorded > SCHEMA_VERSION {
        return Err(format!(
            "the backup is schema version {recorded}, newer than this build's {SCHEMA_VERSION}: upgrade helix"
        )
        .into());
    }
    let files = manifest["files"].as_object().ok_or("the backup record lists no files")?;
    for entry in std::fs::read_dir(from).map_err(io(from))? {
        let name = entry.map_err(io(from))?.file_name();
        let known = [MANIFEST, BLOB_DIR, SQLITE_FILE, SIGNING_KEY_FILE, PRESIGN_SECRET_FILE].iter().any(|k| name == *k);
        if !known {
            return Err(format!("{}: not part of a helix backup", from.join(name).display()).into());
        }
    }
    if !files.contains_key(SQLITE_FILE) {
        return Err("the backup record has no database".into());
    }
    for (name, digest) in files {
        let actual = sha256_of(&from.join(name))?.to_string();
        if digest.as_str() != Some(actual.as_str()) {
            return Err(
                format!("{}: hashes to {actual}, not what the backup recorded", from.join(name).display()).into()
            );
        }
    }
    for extra in [SIGNING_KEY_FILE, PRESIGN_SECRET_FILE] {
        if from.join(extra).exists() && !files.contains_key(extra) {
            return Err(format!("{}: not in the backup record", from.join(extra).display()).into());
        }
    }
    let blobs = from.join(BLOB_DIR);
    blob_folders_known(&blobs)?;
    let schema = links_present(&from.join(SQLITE_FILE), &blobs)?;
    if schema != recorded {
        return Err(format!("the database is schema version {schema}, the record says {recorded}").into());
    }
    let checked = blobs_match_their_names(&blobs)?;
    Ok(json!({"backup": manifest, "blobs_checked": checked}))
}

/// Restore the backup `from` into the new or empty data dir `data_dir`: copied beside the target,
/// the copy checked whole (`check`: what lands is what was checked, each byte read once), then
/// renamed into place. The data dir is never half restored.
pub fn restore(from: &Path, data_dir: &Path) -> Res<Value> {
    apart(from, data_dir)?;
    if data_dir.exists() && std::fs::read_dir(data_dir).map_err(io(data_dir))?.next().is_some() {
        return Err(format!("{} is not empty: a restore never writes over data", data_dir.display()).into());
    }
    let parent = resolved(data_dir).parent().map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("."));
    std::fs::create_dir_all(&parent).map_err(io(&parent))?;
    let staging = parent.join(format!(".helix-restore-{}", random_hex()?));
    let result = (|| -> Res<Value> {
        fresh_dir(&staging)?;
        copy_tree(from, &staging, &[])?;
        let checked = check(&staging)?;
        std::fs::remove_file(staging.join(MANIFEST)).map_err(io(&staging))?;
        if data_dir.exists() {
            std::fs::remove_dir(data_dir).map_err(io(data_dir))?;
        }
        std::fs::rename(&staging, data_dir).map_err(io(data_dir))?;
        std::fs::File::open(&parent).and_then(|d| d.sync_all()).map_err(io(&parent))?;
        Ok(checked)
    })();
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&staging);
    }
    let checked = result?;
    Ok(
        json!({"restored_from": from.display().to_string(), "data_dir": data_dir.display().to_string(), "checked": checked}),
    )
}

fn random_hex() -> Res<String> {
    let mut raw = [0u8; 6];
    getrandom::fill(&mut raw)?;
    Ok(hex::encode(raw))
}

/// A fresh temporary directory under `base` (default: the system's temp dir).
pub fn temp_dir(base: Option<&Path>, prefix: &str) -> Res<PathBuf> {
    let base = base.map(Path::to_path_buf).unwrap_or_else(std::env::temp_dir);
    let dir = base.join(format!("{prefix}-{}", random_hex()?));
    fresh_dir(&dir)?;
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_directories_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir(&data).unwrap();
        assert!(apart(&data, &data.join("blobs/nightly")).is_err());
        assert!(apart(&data.join("x/.."), &data.join("later")).is_err(), "resolved before comparing");
        assert!(apart(&data, &dir.path().join("backup")).is_ok());
    }
}
