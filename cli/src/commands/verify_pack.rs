//! `helix verify-pack FILE.tar`: check an evidence pack offline against a pinned key
//! (helix_core::evidence_pack::verify). Exit 0 with a one-line summary, 1 with a one-line reason, 2
//! without a pinned key (as `helix audit verify`).

use helix_core::evidence_pack::{self, Pins};

use super::{Res, Usage, out};

#[derive(clap::Args)]
pub struct VerifyPackArgs {
    /// The pack (`helix export … --pack FILE.tar`).
    file: std::path::PathBuf,
    /// A registry public key (PEM), or a saved GET /v1/governance/public-key answer (keys.json: every
    /// key with its validity window); repeat it for earlier keys.
    #[arg(long, conflicts_with = "registry")]
    public_key: Vec<std::path::PathBuf>,
    /// Trust the key the pack carries (keys.json) whose key id is this `sha256:…` fingerprint (GET
    /// /v1/governance/public-key shows it); repeat it for earlier keys.
    #[arg(long, conflicts_with = "registry", value_parser = helix_cli::client::key_fingerprint)]
    key_fingerprint: Vec<String>,
    /// Trust the keys this registry publishes (and their validity windows).
    #[arg(long)]
    registry: Option<String>,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
}

pub async fn run(args: VerifyPackArgs) -> Res {
    let VerifyPackArgs { file, public_key, key_fingerprint, registry, json } = args;
    if public_key.is_empty() && key_fingerprint.is_empty() && registry.is_none() {
        // The pack's own keys.json proves nothing: whoever forges a pack replaces it too.
        return Err(Usage(
            "helix verify-pack needs a key to trust: pin the registry's key with --public-key FILE.pem (or a saved \
             keys.json), --key-fingerprint sha256:HEX (its key_id, from GET /v1/governance/public-key), or \
             --registry URL; the keys a pack carries are not evidence on their own"
                .into(),
        )
        .into());
    }
    let keys = helix_cli::client::load_keys(registry.as_deref(), &public_key).await?;
    let pins = Pins { keys, fingerprints: key_fingerprint };
    let summary = tokio::task::spawn_blocking(move || evidence_pack::verify(&file, &pins))
        .await?
        .map_err(|e| format!("invalid: {e}"))?;
    if json {
        return out(&serde_json::json!({"ok": true, "keys_pinned": true, "summary": summary}).to_string());
    }
    out(&format!(
        "ok: {} (manifest {}): {} file(s), {} byte(s), each matching its digest; {} receipt(s) chained from seq 1, \
         state {}, export receipt seq {}; signed by {}",
        summary.bundle,
        summary.manifest_digest,
        summary.files,
        summary.bytes,
        summary.receipts,
        summary.state.as_deref().unwrap_or("?"),
        summary.export_seq,
        summary.key_ids.join(", ")
    ))
}
