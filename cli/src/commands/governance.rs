//! `helix governance`: decisions over HTTP (approve, reject, waive) and offline receipt verification.

use clap::Subcommand;

use super::{Res, out, s_of};

#[derive(Subcommand)]
pub enum GovernanceCommand {
    /// Approve a bundle version (an approver other than who registered it). Prints the signed receipt's
    /// seq, or the receipt itself with --json. HELIX_URL and HELIX_TOKEN: identity and role come from
    /// the token.
    Approve {
        /// WORKSPACE/NAME@VERSION
        bundle: String,
        /// Print the registry's answer (with the signed receipt) as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Reject a bundle version (final).
    Reject {
        /// WORKSPACE/NAME@VERSION
        bundle: String,
        /// Print the registry's answer (with the signed receipt) as JSON.
        #[arg(long)]
        json: bool,
    },
    /// An emergency waiver (a safety reviewer): lets exactly this export transition go through while
    /// the version is not approved, until it expires.
    Waive {
        /// WORKSPACE/NAME@VERSION
        bundle: String,
        /// The export transition id the waiver covers (sha256:…; GET …/governance shows it).
        #[arg(long)]
        transition: String,
        /// What the waiver lets through. The only scope is `export_unapproved`: the export of this
        /// version, by this transition id, while it is not approved (it never approves the version, nor
        /// covers a rejected one, another version or another transition). The registry refuses any
        /// other scope (400 `waiver_invalid`).
        #[arg(long, default_value = "export_unapproved")]
        scope: String,
        /// The justification, or @FILE to read it from a file (at most 2048 bytes).
        #[arg(long)]
        justification: String,
        /// 90s, 45m, 12h, 7d (at most 7 days; the registry's default is 24 h).
        #[arg(long)]
        expires_in: Option<String>,
        /// Print the registry's answer (with the signed receipt) as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Verify a receipt, a list of receipts or a whole ledger (GET .../governance) offline: signatures,
    /// seq and prev chain, transition ids, and the state it yields. Exit 0 with a one-line summary, or
    /// 1 with a one-line reason.
    Verify {
        /// The JSON file.
        file: std::path::PathBuf,
        /// A registry public key (PEM), as GET /v1/governance/public-key gives it; repeat it for the
        /// keys of earlier rotations.
        #[arg(long, conflicts_with = "registry", required_unless_present = "registry")]
        public_key: Vec<std::path::PathBuf>,
        /// Fetch the public key from this registry instead (https, or http on loopback).
        #[arg(long)]
        registry: Option<String>,
        /// Print the summary as JSON.
        #[arg(long)]
        json: bool,
    },
}

pub async fn run(command: GovernanceCommand) -> Res {
    match command {
        GovernanceCommand::Approve { bundle, json } => decide(&bundle, "approve", serde_json::json!({}), json).await,
        GovernanceCommand::Reject { bundle, json } => decide(&bundle, "reject", serde_json::json!({}), json).await,
        GovernanceCommand::Waive { bundle, transition, scope, justification, expires_in, json } => {
            let justification = match justification.strip_prefix('@') {
                Some(path) => std::fs::read_to_string(path).map_err(|e| format!("--justification {path}: {e}"))?,
                None => justification,
            };
            let mut body =
                serde_json::json!({"transition": transition, "scope": scope, "justification": justification});
            if let Some(e) = expires_in {
                body["expires_in_seconds"] = serde_json::json!(helix_cli::client::duration_seconds(&e)?);
            }
            decide(&bundle, "waivers", body, json).await
        }
        GovernanceCommand::Verify { file, public_key, registry, json } => {
            verify(&file, &public_key, registry.as_deref(), json).await
        }
    }
}

async fn verify(file: &std::path::Path, public_key: &[std::path::PathBuf], registry: Option<&str>, json: bool) -> Res {
    let keys = helix_cli::client::load_keys(registry, public_key).await?;
    let document = std::fs::read(file).map_err(|e| format!("{}: {e}", file.display()))?;
    let (receipts, whole) = helix_core::governance::receipts_in(&document).map_err(|e| format!("invalid: {e}"))?;
    let verified =
        helix_core::governance::verify_receipts(&receipts, &keys, whole).map_err(|e| format!("invalid: {e}"))?;
    if json {
        return out(&serde_json::json!({"ok": true, "receipts": verified.receipts, "bundle": verified.bundle,
            "first_seq": verified.first_seq, "state": verified.state.map(|s| s.as_str()),
            "signed_by": signers(&verified.statements)})
        .to_string());
    }
    let state = verified.state.map(|s| format!(", state {}", s.as_str())).unwrap_or_default();
    println!(
        "ok: {} receipt(s) of {} from seq {}{state}, signed by {}",
        verified.receipts,
        verified.bundle,
        verified.first_seq,
        signers(&verified.statements)
    );
    Ok(())
}

/// POST a governance decision and print its receipt (seq and kind, or the whole answer with --json).
async fn decide(bundle: &str, what: &str, body: serde_json::Value, json: bool) -> Res {
    let registry = helix_cli::export::connect().await?;
    let path = format!("{}/{what}", helix_cli::client::version_path(bundle)?);
    let answer = registry.post(&path, &body).await?;
    if json {
        return out(&answer.to_string());
    }
    use base64::Engine;
    let payload = answer["receipt"]["payload"].as_str().unwrap_or_default();
    let statement: serde_json::Value = base64::engine::general_purpose::STANDARD
        .decode(payload)
        .ok()
        .and_then(|p| serde_json::from_slice(&p).ok())
        .unwrap_or_default();
    out(&format!(
        "{} receipt seq {} for {bundle}: {} -> {} by {} ({}), key {}",
        s_of(&statement["kind"]),
        answer["seq"],
        s_of(&statement["from"]),
        s_of(&statement["to"]),
        s_of(&statement["user"]),
        s_of(&statement["role"]),
        s_of(&statement["key_id"])
    ))
}

/// The key ids that signed `statements`, in order of first use.
fn signers(statements: &[helix_core::governance::Statement]) -> String {
    let mut ids: Vec<&str> = Vec::new();
    for s in statements {
        if !ids.contains(&s.key_id.as_str()) {
            ids.push(&s.key_id);
        }
    }
    ids.join(", ")
}
