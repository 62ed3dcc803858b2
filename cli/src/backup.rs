//! `helix backup` and `helix restore`: the embedded backend's data dir, copied consistently while
//! `helix serve` runs, and put back into a fresh data dir. (On AWS the equivalents are DynamoDB
//! point-in-time recovery and S3 versioning: docs/deploy.md, "Backups and restore".)
//!
//! Order matters: the SQLite snapshot is taken first (`VACUUM INTO`: every transaction committed
//! before it, nothing after), then the blobs are copied. A blob is written before its link commits,
//! so every blob the snapshot links is already on disk when the copy runs. The signing key and the
//! local presigning secret are copied too (0600): receipts and audit days stay verifiable with the
//! same key id, and the restored registry keeps its identity.

use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use helix_core::app::{BLOB_DIR, PRESIGN_SECRET_FILE, SIGNING_KEY_FILE, SQLITE_FILE};
use serde_json::{Value, json};

/// What a backup holds, written beside it as `BACKUP.json`.
pub const MANIFEST: &str = "BACKUP.json";

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

/// Copy the tree `from` into `to` (regular files and folders only); the files and bytes copied.
fn copy_tree(from: &Path, to: &Path) -> Res<(u64, u64)> {
    let (mut files, mut bytes) = (0, 0);
    if !from.exists() {
        return Ok((0, 0));
    }
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(to).map_err(io(to))?;
    for entry in std::fs::read_dir(from).map_err(io(from))? {
        let entry = entry.map_err(io(from))?;
        let kind = entry.file_type().map_err(io(&entry.path()))?;
        let target = to.join(entry.file_name());
        if kind.is_dir() {
            let (f, b) = copy_tree(&entry.path(), &target)?;
            files += f;
            bytes += b;
        } else if kind.is_file() {
            bytes += std::fs::copy(entry.path(), &target).map_err(io(&entry.path()))?;
            files += 1;
        }
    }
    Ok((files, bytes))
}

fn copy_secret(from: &Path, to: &Path) -> Res<bool> {
    if !from.exists() {
        return Ok(false);
    }
    std::fs::copy(from, to).map_err(io(from))?;
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(0o600)).map_err(io(to))?;
    Ok(true)
}

/// Back up `data_dir` into the new directory `out`.
pub fn backup(data_dir: &Path, out: &Path) -> Res<Value> {
    let db = data_dir.join(SQLITE_FILE);
    if !db.exists() {
        return Err(format!("{} has no {SQLITE_FILE}: not an embedded data dir", data_dir.display()).into());
    }
    fresh_dir(out)?;
    let schema = helix_core::adapters::sqlite::SqliteStore::snapshot(&db, &out.join(SQLITE_FILE))?;
    let (blob_files, blob_bytes) = copy_tree(&data_dir.join(BLOB_DIR), &out.join(BLOB_DIR))?;
    let key = copy_secret(&data_dir.join(SIGNING_KEY_FILE), &out.join(SIGNING_KEY_FILE))?;
    copy_secret(&data_dir.join(PRESIGN_SECRET_FILE), &out.join(PRESIGN_SECRET_FILE))?;
    let db_bytes = std::fs::read(out.join(SQLITE_FILE)).map_err(io(out))?;
    let manifest = json!({
        "kind": "helix.backup.v1",
        "created_at": helix_core::domain::time::now_rfc3339_ms(),
        "source": data_dir.display().to_string(),
        "schema_version": schema,
        "database_sha256": helix_core::domain::Digest::of(&db_bytes).to_string(),
        "blob_files": blob_files,
        "blob_bytes": blob_bytes,
        "signing_key": key,
    });
    std::fs::write(out.join(MANIFEST), serde_json::to_string_pretty(&manifest)? + "\n").map_err(io(out))?;
    Ok(manifest)
}

/// Restore the backup `from` into the fresh data dir `data_dir`, after checking the database is the
/// one the backup recorded.
pub fn restore(from: &Path, data_dir: &Path) -> Res<Value> {
    let manifest: Value = serde_json::from_slice(&std::fs::read(from.join(MANIFEST)).map_err(io(from))?)
        .map_err(|e| format!("{}: {e}", from.join(MANIFEST).display()))?;
    let db_bytes = std::fs::read(from.join(SQLITE_FILE)).map_err(io(from))?;
    let actual = helix_core::domain::Digest::of(&db_bytes).to_string();
    if manifest["database_sha256"].as_str() != Some(actual.as_str()) {
        return Err(format!("{}: the database hashes to {actual}, not what the backup recorded", from.display()).into());
    }
    fresh_dir(data_dir)?;
    std::fs::copy(from.join(SQLITE_FILE), data_dir.join(SQLITE_FILE)).map_err(io(from))?;
    let (blob_files, _) = copy_tree(&from.join(BLOB_DIR), &data_dir.join(BLOB_DIR))?;
    copy_secret(&from.join(SIGNING_KEY_FILE), &data_dir.join(SIGNING_KEY_FILE))?;
    copy_secret(&from.join(PRESIGN_SECRET_FILE), &data_dir.join(PRESIGN_SECRET_FILE))?;
    if blob_files != manifest["blob_files"].as_u64().unwrap_or(0) {
        return Err(format!(
            "{}: {blob_files} blob files, the backup recorded {}",
            from.display(),
            manifest["blob_files"]
        )
        .into());
    }
    Ok(
        json!({"restored_from": from.display().to_string(), "data_dir": data_dir.display().to_string(), "backup": manifest}),
    )
}

/// A fresh temporary directory under the system's temp dir.
pub fn temp_dir(prefix: &str) -> Res<PathBuf> {
    let mut raw = [0u8; 6];
    getrandom::fill(&mut raw)?;
    let dir = std::env::temp_dir().join(format!("{prefix}-{}", hex::encode(raw)));
    fresh_dir(&dir)?;
    Ok(dir)
}
