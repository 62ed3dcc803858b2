//! `helix verify-pack FILE.tar`: check an evidence pack offline against a pinned key
//! (helix_core::evidence_pack::verify). Exit 0 with a one-line summary, 1 with a one-line reason, 2
//! without a pinned key (as `helix audit verify`).

use helix_core::evidence_pack::{self, Pins};

use super::{PinArgs, Res, out};

#[derive(clap::Args)]
pub struct VerifyPackArgs {
    /// The pack (`helix export … --pack FILE.tar`).
    file: std::path::PathBuf,
    #[command(flatten)]
    pins: PinArgs,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
}

pub async fn run(args: VerifyPackArgs) -> Res {
    let VerifyPackArgs { file, pins, json } = args;
    // The pack's own keys.json proves nothing: whoever forges a pack replaces it too.
    let keys = pins
        .keys(
            "helix verify-pack needs a key to trust: pin the registry's key with --public-key FILE.pem (or a saved \
             keys.json), --key-fingerprint sha256:HEX (its key_id, from GET /v1/governance/public-key), or \
             --registry URL; the keys a pack carries are not evidence on their own",
        )
        .await?;
    let pins = Pins { keys, fingerprints: pins.key_fingerprint };
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
