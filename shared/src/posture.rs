//! What the health function reports: readiness (every dependency probed, with its latency) and the
//! registry's posture for `/v1/status` (configuration a reviewer may see; never secrets).

use std::time::Instant;

use serde::Serialize;
use serde_json::{Value, json};

use crate::App;
use crate::error::{Dependency, Result};

#[derive(Debug, Serialize)]
pub struct DependencyStatus {
    pub name: &'static str,
    pub ok: bool,
    pub ms: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct Readiness {
    pub ready: bool,
    pub dependencies: Vec<DependencyStatus>,
}

async fn probe(dep: Dependency, fut: impl Future<Output = Result<()>>) -> DependencyStatus {
    let started = Instant::now();
    let result = fut.await;
    let ms = (started.elapsed().as_secs_f64() * 1000.0 * 10.0).round() / 10.0;
    if let Err(e) = &result {
        tracing::warn!(dependency = dep.as_str(), error = %e, "readiness probe failed");
    }
    DependencyStatus {
        name: dep.as_str(),
        ok: result.is_ok(),
        ms,
        reason: result.err().map(|e| crate::http::problem::classify(&e).1.to_owned()),
    }
}

/// Probe all four dependencies concurrently.
pub async fn readiness(app: &App) -> Readiness {
    let (b, m, a, s) = tokio::join!(
        probe(Dependency::BlobStore, app.blobs.check()),
        probe(Dependency::MetaStore, app.meta.check()),
        probe(Dependency::AuditLog, app.audit.check()),
        probe(Dependency::Signer, app.signer.check()),
    );
    let dependencies = vec![b, m, a, s];
    Readiness { ready: dependencies.iter().all(|d| d.ok), dependencies }
}

/// The posture `principal` may see: a credential of every workspace also sees which workspaces are
/// suspended, why, by whom and since when (a tenant never learns of another).
pub async fn status(app: &App, principal: &crate::auth::Principal) -> Result<Value> {
    let key = app.signer.public_key().await?;
    let freeze = app.meta.freeze().await?;
    let suspended = match principal.workspace_id {
        crate::domain::Scope::All => Some(app.meta.suspended_workspaces().await?),
        crate::domain::Scope::One(_) => None,
    };
    let blobs = app.blobs.info();
    Ok(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "governance_mode": app.config.governance_mode.as_str(),
        "blob_backend": blobs.backend,
        "blob_location": blobs.location,
        "blob_prefix": blobs.prefix,
        "strict_no_overwrite": blobs.strict_no_overwrite,
        "meta_backend": app.meta.backend(),
        "signer_backend": app.signer.backend(),
        "signer_key_id": key.key_id,
        "inline_max": app.config.inline_max,
        // Files above one part are uploaded in parts of this size (larger for files of more than 10,000).
        "upload_part_size": app.config.upload_part_size,
        // Uploads above this are answered 202 by `complete` and verified afterwards (a status URL).
        "verify_inline_max": app.config.verify_inline_max,
        "oidc": app.config.oidc.as_ref().map(|o| o.issuer.clone()),
        // The freeze switch: while frozen, every change is refused (why, who and when it was last set).
        "frozen": freeze.frozen,
        // Who threw the switch is in the audit trail (admins); a viewer sees why and when.
        "freeze": {"frozen": freeze.frozen, "reason": freeze.reason, "at": freeze.at},
        // Only for a credential of every workspace (null otherwise): the workspaces suspended now.
        "suspended_workspaces": suspended,
    }))
}
