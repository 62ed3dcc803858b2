//! `helix keys`: the registry's signing-key history, straight in its store (as `helix freeze`):
//! list each key with its validity window, and retire one (audited as `governance.key_retire` in the
//! `*` stream by `cli:$USER`). A retired key verifies only what is dated before its retirement.

use clap::Subcommand;
use helix_core::{App, Config};

#[derive(Subcommand)]
pub enum KeysCommand {
    /// Every key the registry has signed with: key id, recorded (first used), retired (and why).
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Retire a key of the history (after a rotation, or at once when it leaked): receipts and audit
    /// days dated after now no longer verify with it. The current signing key cannot be retired:
    /// rotate first (docs/runbook.md).
    Retire {
        /// The key id, `sha256:…` (helix keys list, or GET /v1/governance/public-key).
        key_id: String,
        /// Why (kept in the key history and the audit event).
        #[arg(long)]
        reason: String,
    },
}

pub async fn run(config: Config, command: KeysCommand, actor: &str) -> Result<String, Box<dyn std::error::Error>> {
    let app = App::build(config).await?;
    match command {
        KeysCommand::List { json } => {
            let current = app.signer.public_key().await?.key_id;
            let records = app.meta.signing_keys().await?;
            if json {
                let keys: Vec<serde_json::Value> = records
                    .iter()
                    .map(|r| {
                        serde_json::json!({"key_id": r.key_id, "current": r.key_id == current,
                            "valid_from": r.recorded_at, "retired_at": r.retired_at, "retired_reason": r.retired_reason})
                    })
                    .collect();
                return Ok(serde_json::json!({"current": current, "keys": keys}).to_string());
            }
            let mut lines = vec![format!("current signing key: {current}")];
            for r in &records {
                let end = match (&r.retired_at, &r.retired_reason) {
                    (Some(at), reason) => format!("retired {at} ({})", reason.as_deref().unwrap_or("")),
                    (None, _) => "not retired".into(),
                };
                lines.push(format!("{}  from {}  {end}", r.key_id, r.recorded_at));
            }
            Ok(lines.join("\n"))
        }
        KeysCommand::Retire { key_id, reason } => {
            let request_id = helix_core::http::new_request_id();
            let at = helix_core::keys::retire_signing_key(&app, &key_id, &reason, actor, &request_id).await?;
            Ok(format!("key {key_id} retired at {at}: what it signed dated later no longer verifies"))
        }
    }
}
