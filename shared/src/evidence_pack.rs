//! Evidence packs (issue 18): one tar archive holding everything a partner needs to check an official
//! export offline, with nothing but the archive and a key they pinned. `helix export --pack` writes it,
//! `helix verify-pack` checks it (the checks below; the receipt checks are `governance::verify_receipts`,
//! the same code as `helix governance verify` and the registry's own ledger reads).
//!
//! Layout (docs/decisions.md, "Evidence pack layout"), in this order, every entry a regular file:
//! - `PACK.json`: format, bundle, registry, when it was made (informational: nothing trusts it);
//! - `manifest.json`: the manifest as stored, canonical JSON (its SHA-256 is what the receipts sign);
//! - `keys.json`: the registry's published keys with their validity windows (GET /v1/governance/public-key);
//! - `ledger.json`: the version's whole ledger (GET …/governance), every receipt a DSSE envelope;
//! - `export-receipt.json`: the export receipt this pack was made with (one of the ledger's);
//! - `files/<path>`: each file of the manifest at its manifest path, in manifest order.
//!
//! The archive is read as a stream (each file hashed as it passes, never held in memory), nothing is
//! extracted, and an entry outside the layout is refused.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::Path;

use serde::Serialize;
use serde_json::Value;

use crate::domain::{Digest, DigestWriter, Manifest};
use crate::governance::{Statement, receipts_in, verify_receipts};
use crate::ports::PublicKeyInfo;

pub const FORMAT: &str = "helix.evidence-pack.v1";
pub const PACK_JSON: &str = "PACK.json";
pub const MANIFEST: &str = "manifest.json";
pub const KEYS: &str = "keys.json";
pub const LEDGER: &str = "ledger.json";
pub const EXPORT_RECEIPT: &str = "export-receipt.json";
pub const FILES: &str = "files/";

/// The largest document entry read into memory (a 20,000-file manifest is ~3 MB).
const MAX_DOCUMENT: u64 = 64 << 20;

/// What goes into a pack besides the files.
pub struct PackDocuments {
    /// PACK.json.
    pub about: Value,
    /// The manifest's canonical bytes.
    pub manifest: Vec<u8>,
    pub keys: Vec<u8>,
    pub ledger: Vec<u8>,
    pub export_receipt: Vec<u8>,
}

/// Write a pack to `out`: the documents, then every file of `manifest` read from `files_root/<path>`.
/// Headers are fixed (mode 0644, owner 0, time 0) so the same evidence gives the same archive.
pub fn write<W: Write>(out: W, docs: &PackDocuments, manifest: &Manifest, files_root: &Path) -> std::io::Result<W> {
    let mut tar = tar::Builder::new(out);
    let about = serde_json::to_vec_pretty(&docs.about).map_err(std::io::Error::other)?;
    for (name, bytes) in [
        (PACK_JSON, about.as_slice()),
        (MANIFEST, &docs.manifest),
        (KEYS, &docs.keys),
        (LEDGER, &docs.ledger),
        (EXPORT_RECEIPT, &docs.export_receipt),
    ] {
        tar.append_data(&mut header(bytes.len() as u64), name, bytes)?;
    }
    for f in &manifest.files {
        let file = std::fs::File::open(files_root.join(&f.path))?;
        let size = file.metadata()?.len();
        if size != f.size {
            return Err(std::io::Error::other(format!("{}: {size} bytes, the manifest says {}", f.path, f.size)));
        }
        tar.append_data(&mut header(size), format!("{FILES}{}", f.path), file)?;
    }
    tar.into_inner()
}

fn header(size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_size(size);
    h.set_mode(0o644);
    h.set_mtime(0);
    h.set_uid(0);
    h.set_gid(0);
    h
}

/// What a verified pack proves.
#[derive(Debug, Serialize)]
pub struct PackSummary {
    pub bundle: String,
    pub manifest_digest: String,
    pub files: usize,
    pub bytes: u64,
    pub receipts: usize,
    pub state: Option<String>,
    /// The seq of the export receipt the pack was made with.
    pub export_seq: u64,
    /// The keys that signed its receipts.
    pub key_ids: Vec<String>,
}

/// The keys a verification trusts: given whole (a PEM, a saved keys.json, a registry's published keys),
/// or named by fingerprint (the pack's own key whose id is that fingerprint). At least one is needed.
#[derive(Default)]
pub struct Pins {
    pub keys: Vec<PublicKeyInfo>,
    pub fingerprints: Vec<String>,
}

/// Verify the pack at `path` against `pins`; the reason it fails names what is wrong.
pub fn verify(path: &Path, pins: &Pins) -> Result<PackSummary, String> {
    if pins.keys.is_empty() && pins.fingerprints.is_empty() {
        return Err("no pinned key: the keys a pack carries are not evidence on their own".into());
    }
    let read = read(path)?;
    let doc = |name: &str| read.documents.get(name).ok_or_else(|| format!("{name} is missing from the pack"));
    let about: Value = serde_json::from_slice(doc(PACK_JSON)?).map_err(|e| format!("{PACK_JSON}: {e}"))?;
    if about["format"] != FORMAT {
        return Err(format!("{PACK_JSON}: not a {FORMAT} pack (format {})", about["format"]));
    }
    let keys = trusted_keys(pins, doc(KEYS)?)?;

    // The ledger: every receipt signed by a trusted key within its window, chained from seq 1.
    let (envelopes, whole) = receipts_in(doc(LEDGER)?).map_err(|e| format!("{LEDGER}: {e}"))?;
    if !whole {
        return Err(format!("{LEDGER}: not a whole ledger ({{\"receipts\": [...]}})"));
    }
    let ledger = verify_receipts(&envelopes, &keys, true).map_err(|e| format!("{LEDGER}: {e}"))?;

    // The export receipt: signed, an export, one of the ledger's receipts.
    let (export, _) = receipts_in(doc(EXPORT_RECEIPT)?).map_err(|e| format!("{EXPORT_RECEIPT}: {e}"))?;
    let export = verify_receipts(&export, &keys, false).map_err(|e| format!("{EXPORT_RECEIPT}: {e}"))?;
    let statement: &Statement = &export.statements[0];
    if export.receipts != 1 || statement.kind != "export" {
        return Err(format!("{EXPORT_RECEIPT}: not one export receipt"));
    }
    if !ledger.payloads.contains(&export.payloads[0]) {
        return Err(format!("{EXPORT_RECEIPT}: seq {} is not a receipt of the ledger", statement.seq));
    }

    // The manifest the receipts sign, and the files it lists.
    let manifest_bytes = doc(MANIFEST)?;
    let manifest_digest = Digest::of(manifest_bytes).to_string();
    if manifest_digest != statement.manifest {
        return Err(format!(
            "{MANIFEST} hashes to {manifest_digest}; the receipts sign manifest {}: not the manifest exported",
            statement.manifest
        ));
    }
    let (name, version) = name_and_version(&statement.bundle)?;
    let manifest = Manifest::parse(manifest_bytes, &name, &version).map_err(|e| format!("{MANIFEST}: {e}"))?;
    let mut files = read.files;
    let mut bytes = 0;
    for f in &manifest.files {
        let (digest, size) =
            files.remove(&f.path).ok_or_else(|| format!("{FILES}{} is missing from the pack", f.path))?;
        if digest.to_string() != f.digest || size != f.size {
            return Err(format!(
                "{FILES}{}: the pack holds {digest} ({size} bytes), the manifest says {} ({} bytes)",
                f.path, f.digest, f.size
            ));
        }
        bytes += size;
    }
    if let Some(extra) = files.keys().next() {
        return Err(format!("{FILES}{extra} is not in the manifest"));
    }
    let mut key_ids: Vec<String> = ledger.statements.iter().map(|s| s.key_id.clone()).collect();
    key_ids.dedup();
    Ok(PackSummary {
        bundle: statement.bundle.clone(),
        manifest_digest,
        files: manifest.files.len(),
        bytes,
        receipts: ledger.receipts,
        state: ledger.state.map(|s| s.as_str().to_owned()),
        export_seq: statement.seq,
        key_ids,
    })
}

/// `ws/name@version` → (name, version).
fn name_and_version(bundle: &str) -> Result<(crate::domain::BundleName, crate::domain::BundleName), String> {
    let bad = || format!("the receipts name bundle {bundle:?}, not WORKSPACE/NAME@VERSION");
    let (_, rest) = bundle.split_once('/').ok_or_else(bad)?;
    let (name, version) = rest.split_once('@').ok_or_else(bad)?;
    let parse = |s: &str| crate::domain::BundleName::parse(s).map_err(|_| bad());
    Ok((parse(name)?, parse(version)?))
}

/// The keys to verify with: the pinned keys, and the pack's key of each pinned fingerprint. A pinned key
/// without a validity window takes the one the pack's keys.json gives it (that can only narrow it).
fn trusted_keys(pins: &Pins, keys_json: &[u8]) -> Result<Vec<PublicKeyInfo>, String> {
    let doc: Value = serde_json::from_slice(keys_json).map_err(|e| format!("{KEYS}: {e}"))?;
    let carried = crate::keys::keys_of_document(&doc).map_err(|e| format!("{KEYS}: {e}"))?;
    let mut keys = pins.keys.clone();
    for fingerprint in &pins.fingerprints {
        let key = carried
            .iter()
            .find(|k| &k.key_id == fingerprint)
            .ok_or_else(|| format!("{KEYS}: no key {fingerprint} (the pinned fingerprint) in the pack"))?;
        keys.push(key.clone());
    }
    for key in &mut keys {
        if let Some(c) = carried.iter().find(|c| c.key_id == key.key_id) {
            key.valid_from = key.valid_from.take().or_else(|| c.valid_from.clone());
            key.retired_at = key.retired_at.take().or_else(|| c.retired_at.clone());
        }
    }
    Ok(keys)
}

/// A pack as read: its documents, and each file's digest and size (hashed as it streamed past).
struct Contents {
    documents: BTreeMap<String, Vec<u8>>,
    files: BTreeMap<String, (Digest, u64)>,
}

fn read(path: &Path) -> Result<Contents, String> {
    use std::io::{Seek, SeekFrom};
    let mut file = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    // tar ends with two zero blocks; a copy cut short (at any point, even between entries) lacks them.
    let len = file.metadata().map_err(|e| e.to_string())?.len();
    let mut tail = [0u8; 1024];
    let ended = len >= 1024
        && len % 512 == 0
        && file.seek(SeekFrom::End(-1024)).is_ok()
        && file.read_exact(&mut tail).is_ok()
        && tail.iter().all(|b| *b == 0);
    if !ended {
        return Err(format!("the archive is truncated ({len} bytes, no end-of-archive blocks): copy it again"));
    }
    file.seek(SeekFrom::Start(0)).map_err(|e| e.to_string())?;
    let damaged = |e: std::io::Error| format!("the archive is truncated or damaged: {e}");
    let mut archive = tar::Archive::new(std::io::BufReader::new(file));
    let mut documents = BTreeMap::new();
    let mut files = BTreeMap::new();
    for entry in archive.entries().map_err(damaged)? {
        let mut entry = entry.map_err(damaged)?;
        let name = String::from_utf8(entry.path_bytes().into_owned()).map_err(|_| "an entry name is not UTF-8")?;
        if entry.header().entry_type() != tar::EntryType::Regular {
            return Err(format!("{name}: not a regular file (a pack holds only files)"));
        }
        let size = entry.size();
        if let Some(path) = name.strip_prefix(FILES) {
            let mut hasher = DigestWriter::default();
            std::io::copy(&mut entry, &mut hasher).map_err(damaged)?;
            if hasher.len() != size {
                return Err(format!("the archive is truncated or damaged: {name} is cut short"));
            }
            if files.insert(path.to_owned(), (hasher.finish(), size)).is_some() {
                return Err(format!("{name} is in the pack twice"));
            }
        } else if [PACK_JSON, MANIFEST, KEYS, LEDGER, EXPORT_RECEIPT].contains(&name.as_str()) {
            if size > MAX_DOCUMENT {
                return Err(format!("{name}: {size} bytes, more than a pack's documents hold"));
            }
            let mut bytes = Vec::with_capacity(size as usize);
            entry.read_to_end(&mut bytes).map_err(damaged)?;
            if documents.insert(name.clone(), bytes).is_some() {
                return Err(format!("{name} is in the pack twice"));
            }
        } else {
            return Err(format!("{name}: not part of an evidence pack"));
        }
    }
    Ok(Contents { documents, files })
}
