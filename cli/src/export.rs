//! `helix export WS/NAME@VERSION`: the official export (integrity and governance checked by the
//! registry, a signed receipt saved, proof URLs printed), and the incident playbook's last resort.
//!
//! When the registry cannot be reached the export fails closed with `registry_unreachable` (exit 3).
//! With `HELIX_REGISTRY_ALLOW_UNREGISTERED_EXPORT=1` and a `--reason`, it instead prints a loud
//! warning and writes a local record of the override (no receipt: nothing was checked or signed).
//! Every later client command that reaches the same registry with a token first reports the pending
//! records to the registry's audit trail (`bundle.export_unregistered`), and moves each one it
//! reported from `pending/` to `reported/`. A registry that answers with a refusal (a frozen
//! registry, a 4xx) is not "unreachable": the override never bypasses a refusal or a freeze.

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use crate::client::{ClientError, Registry, bundle_parts, version_path, version_path_of};

pub const OVERRIDE_ENV: &str = "HELIX_REGISTRY_ALLOW_UNREGISTERED_EXPORT";

/// Where the client keeps its own records: HELIX_STATE_DIR, else $XDG_STATE_HOME/helix, else
/// ~/.local/state/helix; None without any of them (never the current folder).
pub fn state_dir() -> Option<PathBuf> {
    let var = |name: &str| std::env::var_os(name).filter(|d| !d.is_empty()).map(PathBuf::from);
    var("HELIX_STATE_DIR")
        .or_else(|| var("XDG_STATE_HOME").map(|d| d.join("helix")))
        .or_else(|| var("HOME").map(|d| d.join(".local/state/helix")))
}

fn overrides_dir(which: &str) -> Option<PathBuf> {
    state_dir().map(|d| d.join("unregistered-exports").join(which))
}

/// Did the registry not answer at all, or answer that it cannot serve: a gateway error (502, 503,
/// 504 without the API's problem body) or a dependency it needs is down (`*_unavailable`)? Every
/// other answer is final: a 4xx, a freeze, a blob that fails its integrity check, an internal error,
/// `outcome_unknown` (the export may have happened).
fn unreachable(e: &ClientError) -> bool {
    match e {
        ClientError::Unreachable(_) => true,
        ClientError::Refused { status: 502..=504, reason, .. } => {
            reason.ends_with("_unavailable") || reason.starts_with("http_")
        }
        ClientError::Refused { .. } | ClientError::Other(_) | ClientError::Usage(_) => false,
    }
}

/// `text` made fit for the registry's report limits: unsafe characters (control, line separators,
/// invisible formatting) become spaces, and at most `max` characters are kept.
fn fit(text: &str, max: usize) -> String {
    let clean: String =
        text.chars().map(|c| if helix_core::domain::is_unsafe_char(c) { ' ' } else { c }).take(max).collect();
    let clean = clean.trim();
    if clean.is_empty() { "unknown".into() } else { clean.to_owned() }
}

pub enum Exported {
    /// The registry exported it: its answer, and where the receipt was saved.
    Official { answer: Value, receipt: PathBuf },
    /// The override: the local record and its file.
    Unregistered { record: Value, file: PathBuf },
}

/// The official export of `bundle` (WS/NAME@VERSION); the receipt goes to `receipt` (default
/// `NAME-VERSION.export-receipt.json` in the current folder).
pub async fn export(
    registry: &Registry,
    bundle: &str,
    receipt: Option<PathBuf>,
    reason: Option<&str>,
) -> Result<Exported, ClientError> {
    let (ws, name, version) = bundle_parts(bundle)?;
    let path = version_path_of(&ws, &name, &version);
    match registry.post(&format!("{path}/export"), &json!({})).await {
        Ok(answer) if !answer["receipt"].is_object() => {
            Err(ClientError::Other(format!("the registry's export answer has no receipt: {answer}")))
        }
        Ok(answer) => {
            let file = receipt.unwrap_or_else(|| PathBuf::from(format!("{name}-{version}.export-receipt.json")));
            let envelope =
                serde_json::to_string_pretty(&answer["receipt"]).map_err(|e| ClientError::Other(e.to_string()))?;
            let file = write_new(&file, &(envelope + "\n"))
                .map_err(|e| ClientError::Other(format!("the export is recorded, but {}: {e}", file.display())))?;
            Ok(Exported::Official { answer, receipt: file })
        }
        Err(e) if unreachable(&e) && std::env::var(OVERRIDE_ENV).as_deref() == Ok("1") => {
            // The reason must be one the registry will record when it answers again.
            let reason = reason.filter(|r| helix_core::domain::is_safe_text(r, 1024)).ok_or_else(|| {
                ClientError::Other(format!(
                    "{e}; {OVERRIDE_ENV}=1 also needs --reason: why this export cannot wait for the registry \
                     (one line, 1 to 1024 characters)"
                ))
            })?;
            let mut raw = [0u8; 16];
            getrandom::fill(&mut raw).map_err(|e| ClientError::Other(e.to_string()))?;
            let record = json!({
                "id": format!("uex_{}", hex::encode(raw)),
                "registry": registry.url,
                "bundle": bundle,
                "exported_at": helix_core::domain::time::now_rfc3339_ms(),
                "local_user": fit(&std::env::var("USER").unwrap_or_default(), 128),
                "host": fit(&hostname(), 255),
                "reason": reason.trim(),
                "error": fit(&e.to_string(), 1024),
            });
            let file = write_record(&record)?;
            Ok(Exported::Unregistered { record, file })
        }
        Err(e) => Err(e),
    }
}

/// Write `text` to `file`, or, when that exists, to the first free `STEM-2.EXT`, `STEM-3.EXT`, …:
/// a receipt is evidence, and an earlier one is never overwritten. Where it went.
pub fn write_new(file: &Path, text: &str) -> std::io::Result<PathBuf> {
    use std::io::Write;
    let stem = file.file_stem().unwrap_or_default().to_string_lossy().into_owned();
    let ext = file.extension().map(|e| format!(".{}", e.to_string_lossy())).unwrap_or_default();
    for n in 1..10_000 {
        let candidate = if n == 1 { file.to_path_buf() } else { file.with_file_name(format!("{stem}-{n}{ext}")) };
        match std::fs::OpenOptions::new().write(true).create_new(true).open(&candidate) {
            Ok(mut f) => {
                f.write_all(text.as_bytes())?;
                f.sync_all()?;
                return Ok(candidate);
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(std::io::Error::other("9,999 receipts of that name already: choose --receipt"))
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown".into())
}

/// Write the record under `pending/`, readable by its owner only.
fn write_record(record: &Value) -> Result<PathBuf, ClientError> {
    use std::io::Write;
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    let dir = overrides_dir("pending")
        .ok_or_else(|| ClientError::Other("no place for the override record: set HELIX_STATE_DIR (or HOME)".into()))?;
    let fail =
        |e: std::io::Error| ClientError::Other(format!("cannot write the override record in {}: {e}", dir.display()));
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(&dir).map_err(fail)?;
    let file = dir.join(format!("{}.json", record["id"].as_str().unwrap_or_default()));
    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&file).map_err(fail)?;
    f.write_all(serde_json::to_string_pretty(record).unwrap_or_default().as_bytes()).map_err(fail)?;
    f.sync_all().map_err(fail)?;
    Ok(file)
}

/// Override records not yet reported: to the registry at `url`, and to any registry.
pub fn pending_records(url: &str) -> (usize, usize) {
    let Some(Ok(entries)) = overrides_dir("pending").map(std::fs::read_dir) else { return (0, 0) };
    let records: Vec<Value> = entries
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
        .map(|e| std::fs::read(e.path()).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default())
        .collect();
    (records.iter().filter(|r| r["registry"].as_str() == Some(url)).count(), records.len())
}

/// The registry from the environment, after reporting any pending override records to it.
pub async fn connect() -> Result<Registry, ClientError> {
    let registry = Registry::from_env()?;
    if registry.has_token() {
        report_pending(&registry).await;
    }
    Ok(registry)
}

/// Report every pending override record made against this registry; each one the registry
/// recorded moves to `reported/`. What happened is said on stderr; nothing here fails the command.
pub async fn report_pending(registry: &Registry) {
    let Some(Ok(entries)) = overrides_dir("pending").map(std::fs::read_dir) else { return };
    let mut files: Vec<PathBuf> =
        entries.flatten().map(|e| e.path()).filter(|p| p.extension().is_some_and(|x| x == "json")).collect();
    files.sort();
    for file in files {
        let Some(record) = std::fs::read(&file).ok().and_then(|b| serde_json::from_slice::<Value>(&b).ok()) else {
            eprintln!("helix: {} is not an override record; left alone", file.display());
            continue;
        };
        if record["registry"].as_str() != Some(registry.url.as_str()) {
            continue;
        }
        match report(registry, &record).await {
            Ok(()) => {
                let reported = overrides_dir("reported").expect("pending was found under the state dir");
                let moved = std::fs::create_dir_all(&reported)
                    .and_then(|()| std::fs::rename(&file, reported.join(file.file_name().unwrap_or_default())));
                eprintln!(
                    "helix: reported the unregistered export {} of {} to the registry's audit trail{}",
                    record["id"].as_str().unwrap_or_default(),
                    record["bundle"].as_str().unwrap_or_default(),
                    moved.err().map(|e| format!(" (but could not move its record: {e})")).unwrap_or_default()
                );
            }
            // Still out of reach: try again next time, quietly.
            Err(e) if unreachable(&e) => return,
            Err(e) => eprintln!(
                "helix: could not report the unregistered export in {} ({e}); it stays pending",
                file.display()
            ),
        }
    }
}

/// Send one record; Ok only when the registry says it holds it (recorded now or before).
async fn report(registry: &Registry, record: &Value) -> Result<(), ClientError> {
    let bundle = record["bundle"].as_str().unwrap_or_default();
    let path = format!("{}/unregistered-exports", version_path(bundle)?);
    let mut body = json!({});
    for k in ["id", "exported_at", "local_user", "host", "reason", "error"] {
        body[k] = record[k].clone();
    }
    let answer = registry.post(&path, &body).await?;
    if answer["id"] != record["id"] || !answer["recorded"].is_boolean() {
        return Err(ClientError::Other(format!("the answer does not acknowledge the record: {answer}")));
    }
    Ok(())
}

/// The warning an unregistered export prints (stderr), whatever else is printed.
pub fn warning(record: &Value, file: &Path) -> String {
    let line = "!".repeat(78);
    format!(
        "{line}\n!! UNREGISTERED EXPORT of {bundle}: the registry could not be reached, or could not serve.\n\
         !! Nothing was checked: no integrity check, no governance check, no signed receipt.\n\
         !! {OVERRIDE_ENV}=1 was set; reason given: {reason}\n\
         !! Local record: {file}\n\
         !! It is reported to the registry's audit trail by the next helix command that reaches it.\n{line}",
        bundle = record["bundle"].as_str().unwrap_or_default(),
        reason = record["reason"].as_str().unwrap_or_default(),
        file = file.display(),
    )
}
