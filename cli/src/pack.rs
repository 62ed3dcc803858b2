//! `helix export --pack FILE.tar` (and `helix pack` for an earlier export): after the official export, one archive with everything a partner needs
//! to check it offline (helix_core::evidence_pack: the layout, and the verification `helix verify-pack`
//! runs). The files come through `helix pull` (each checked against its digest), the manifest, ledger and
//! keys from the registry; the pack is verified with the registry's published keys before it is put in
//! place, create-only: an existing FILE is never overwritten.

use std::io::Write;
use std::path::{Path, PathBuf};

use helix_core::domain::{Digest, Manifest};
use helix_core::evidence_pack::{self, PackDocuments, PackSummary, Pins};
use serde_json::{Value, json};

use crate::client::{ClientError, Registry, bundle_parts, version_path_of};

/// Removes the pack's working folder however `make` ends.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn other(what: impl std::fmt::Display) -> ClientError {
    ClientError::Other(what.to_string())
}

/// Refuse a FILE that exists (before anything is exported for it).
pub fn check_free(file: &Path) -> Result<(), ClientError> {
    match std::fs::symlink_metadata(file) {
        Ok(_) => Err(ClientError::Usage(format!(
            "--pack {}: the file exists, and evidence is never overwritten: choose another name",
            file.display()
        ))),
        Err(_) => Ok(()),
    }
}

/// An earlier official export of `bundle`, as `make` takes it (`{"seq", "receipt"}`): the export
/// receipt with that seq, or the latest one, from the version's ledger, verified with the registry's
/// published keys first. No export is made: the pack of an export a partner already received.
pub async fn earlier_export(registry: &Registry, bundle: &str, seq: Option<u64>) -> Result<Value, ClientError> {
    let (ws, name, version) = bundle_parts(bundle)?;
    let path = version_path_of(&ws, &name, &version);
    let ledger = registry.get(&format!("{path}/governance")).await?;
    let keys = registry.get("/v1/governance/public-key").await?;
    let keys = helix_core::keys::keys_of_document(&keys).map_err(other)?;
    let document = serde_json::to_vec(&ledger).map_err(other)?;
    let (envelopes, _) = helix_core::governance::receipts_in(&document).map_err(other)?;
    let exports: Vec<(usize, u64)> = if envelopes.is_empty() {
        Vec::new() // a version nobody decided on yet
    } else {
        let verified = helix_core::governance::verify_receipts(&envelopes, &keys, true)
            .map_err(|e| other(format!("the ledger of {bundle} does not verify: {e}")))?;
        verified.statements.iter().enumerate().filter(|(_, s)| s.kind == "export").map(|(i, s)| (i, s.seq)).collect()
    };
    let listed = || exports.iter().map(|(_, n)| n.to_string()).collect::<Vec<_>>().join(", ");
    let (i, seq) = match seq {
        None => *exports.last().ok_or_else(|| {
            ClientError::Usage(format!("{bundle} was never exported: `helix export {bundle} --pack FILE` exports it"))
        })?,
        Some(n) => *exports.iter().find(|(_, s)| *s == n).ok_or_else(|| {
            ClientError::Usage(format!("seq {n} is not an export receipt of {bundle} (its exports: {})", listed()))
        })?,
    };
    Ok(json!({"seq": seq, "receipt": ledger["receipts"][i]}))
}

/// Make the evidence pack of `bundle`'s export (`answer`, the registry's export answer) at `file`.
pub async fn make(registry: &Registry, bundle: &str, answer: &Value, file: &Path) -> Result<PackSummary, ClientError> {
    let (ws, name, version) = bundle_parts(bundle)?;
    let path = version_path_of(&ws, &name, &version);
    let dir = match file.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    // Beside FILE: the same filesystem, so the finished pack is linked into place, not copied.
    let scratch = Scratch(crate::backup::temp_dir(Some(&dir), ".helix-pack").map_err(other)?);
    let files = scratch.0.join("files");
    let opts = crate::transfer::Options { jobs: 4, quiet: true, inline_max: None };
    crate::transfer::pull(registry, &ws, &name, &version, &files, opts).await?;
    let view = registry.get(&path).await?;
    let canonical = helix_core::domain::canonical::to_string(&view["manifest"]).map_err(other)?;
    let manifest = Manifest::parse(canonical.as_bytes(), &name, &version).map_err(other)?;
    let ledger = registry.get(&format!("{path}/governance")).await?;
    let keys = registry.get("/v1/governance/public-key").await?;
    let pretty = |v: &Value| serde_json::to_vec_pretty(v).map_err(other);
    let docs = PackDocuments {
        about: json!({
            "format": evidence_pack::FORMAT,
            "bundle": bundle,
            "registry": registry.url,
            "manifest_digest": Digest::of(canonical.as_bytes()).to_string(),
            "export_seq": answer["seq"],
            "made_at": helix_core::domain::time::now_rfc3339_ms(),
            "verify_with": "helix verify-pack FILE --public-key KEY.pem (or --key-fingerprint sha256:…, or --registry URL)",
        }),
        manifest: canonical.into_bytes(),
        keys: pretty(&keys)?,
        ledger: pretty(&ledger)?,
        export_receipt: pretty(&answer["receipt"])?,
    };
    let tmp = scratch.0.join("pack.tar");
    let out = std::fs::File::create_new(&tmp).map_err(|e| other(format!("{}: {e}", tmp.display())))?;
    let written = evidence_pack::write(std::io::BufWriter::new(out), &docs, &manifest, &files)
        .and_then(|mut w| {
            w.flush()?;
            w.into_inner().map_err(|e| e.into_error())
        })
        .and_then(|f| f.sync_all());
    written.map_err(|e| other(format!("writing the pack: {e}")))?;
    // Checked as the partner will check it, with the keys the registry publishes.
    let pins = Pins { keys: helix_core::keys::keys_of_document(&keys).map_err(other)?, fingerprints: Vec::new() };
    let summary = evidence_pack::verify(&tmp, &pins).map_err(|e| other(format!("the pack does not verify: {e}")))?;
    match std::fs::hard_link(&tmp, file) {
        Ok(()) => Ok(summary),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Err(other(format!(
            "--pack {}: the file appeared meanwhile, and evidence is never overwritten (the export itself is recorded)",
            file.display()
        ))),
        Err(e) => Err(other(format!("--pack {}: {e} (the export itself is recorded)", file.display()))),
    }
}
