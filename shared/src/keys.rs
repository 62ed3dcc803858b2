//! The registry's signing-key history: every key that ever signed a receipt or an audit checkpoint,
//! recorded (and audited in the `*` stream) before its first signature, so a rotation never orphans
//! evidence. Governance (receipts) and the audit export (checkpoints) both read it; it imports neither.

use serde_json::{Value, json};

use crate::App;
use crate::domain::{AuditDraft, Outcome};
use crate::error::{Error, Result};
use crate::ports::{Change, PublicKeyInfo};

/// The DSSE payload type of a governance receipt.
pub const RECEIPT_PAYLOAD_TYPE: &str = "application/vnd.helix.receipt.v1+json";
/// The DSSE payload type of an audit checkpoint.
pub const CHECKPOINT_PAYLOAD_TYPE: &str = "application/vnd.helix.audit-checkpoint.v1+json";

/// `audit/keys/<hex of the key id>.pem`: where the audit export puts a key beside the days it signs.
pub fn key_file(key_id: &str) -> String {
    format!("audit/keys/{}.pem", key_id.strip_prefix("sha256:").unwrap_or(key_id))
}

/// `audit/keys/<hex of the key id>.retired.json`: a retired key's end of validity, beside its PEM
/// (`{"key_id", "retired_at", "reason"}`, canonical, written once).
pub fn retired_file(key_id: &str) -> String {
    format!("audit/keys/{}.retired.json", key_id.strip_prefix("sha256:").unwrap_or(key_id))
}

/// The document `retired_file` holds.
pub fn retired_doc(key_id: &str, retired_at: &str, reason: &str) -> Result<String> {
    crate::domain::canonical::to_string(&json!({"key_id": key_id, "retired_at": retired_at, "reason": reason}))
}

/// The keys receipts are verified with: the current signing key, and every earlier key the registry
/// signed receipts with (recorded when it first signed), so a key rotation never orphans evidence.
/// Each carries its validity window from the history (recorded, retired), which verification applies.
pub async fn verification_keys(app: &App) -> Result<Vec<PublicKeyInfo>> {
    let current = app.signer.public_key().await?;
    let mut keys = vec![current];
    for record in app.meta.signing_keys().await? {
        let mut key =
            public_key_from_pem(&record.pem).map_err(|e| Error::Internal(format!("a recorded signing key: {e}")))?;
        if key.key_id != record.key_id {
            return Err(Error::Internal(format!("the key recorded as {} is {}", record.key_id, key.key_id)));
        }
        key.valid_from = Some(record.recorded_at);
        key.retired_at = record.retired_at;
        match keys.iter_mut().find(|k| k.key_id == key.key_id) {
            Some(same) => *same = key,
            None => keys.push(key),
        }
    }
    Ok(keys)
}

/// Retire a recorded signing key now, for `reason`, audited in the `*` stream (`governance.key_retire`).
/// What it signed before stays valid; anything dated later no longer verifies. Refused for the key the
/// registry signs with now (rotate first, docs/runbook.md), an unknown key, or one already retired.
pub async fn retire_signing_key(
    app: &App,
    key_id: &str,
    reason: &str,
    actor: &str,
    request_id: &str,
) -> Result<String> {
    if !crate::domain::is_safe_text(reason, 500) {
        return Err(Error::BadRequest("a reason of 1 to 500 visible characters is required".into()));
    }
    if app.signer.public_key().await?.key_id == key_id {
        return Err(Error::BadRequest(format!(
            "{key_id} is the key the registry signs with now: rotate to a new key first, then retire this one"
        )));
    }
    let records = app.meta.signing_keys().await?;
    let record = records
        .iter()
        .find(|r| r.key_id == key_id)
        .ok_or_else(|| Error::BadRequest(format!("{key_id} is not in the registry's key history")))?;
    if let Some(at) = &record.retired_at {
        return Err(Error::BadRequest(format!("{key_id} was already retired at {at}")));
    }
    let at = crate::domain::time::now_rfc3339_ms();
    let event = AuditDraft {
        stream: "*".into(),
        actor: actor.to_owned(),
        action: "governance.key_retire".into(),
        entity_type: "signing_key".into(),
        entity_id: key_id.to_owned(),
        outcome: Outcome::Success,
        request_id: request_id.into(),
        details: json!({"reason": reason.trim(), "retired_at": at, "recorded_at": record.recorded_at}),
    };
    let change = Change::RetireSigningKey { key_id: key_id.to_owned(), at: at.clone(), reason: reason.trim().into() };
    match app.meta.commit(change, event).await? {
        crate::ports::Commit::Applied(_) => Ok(at),
        crate::ports::Commit::AlreadyDone => Err(Error::BadRequest(format!("{key_id} was retired meanwhile"))),
    }
}

/// A P-256 public key from its PEM (SubjectPublicKeyInfo).
pub fn public_key_from_pem(pem: &str) -> Result<PublicKeyInfo> {
    use p256::pkcs8::{DecodePublicKey, EncodePublicKey};
    let key = p256::PublicKey::from_public_key_pem(pem.trim())
        .map_err(|e| Error::BadRequest(format!("not a P-256 public key PEM: {e}")))?;
    let der = key.to_public_key_der().map_err(|e| Error::Internal(e.to_string()))?;
    PublicKeyInfo::from_spki_der(der.as_bytes())
}

/// The keys of a GET /v1/governance/public-key answer (the current key, then `previous`), each with the
/// validity window the registry's key history gives it. `keys.json` saved by an auditor, and an
/// evidence pack's `keys.json`, have this form.
pub fn keys_of_document(doc: &Value) -> std::result::Result<Vec<PublicKeyInfo>, String> {
    std::iter::once(doc)
        .chain(doc["previous"].as_array().into_iter().flatten())
        .map(|k| {
            let pem = k["pem"].as_str().ok_or("a published key has no pem")?;
            let mut key = public_key_from_pem(pem).map_err(|e| e.to_string())?;
            key.valid_from = k["valid_from"].as_str().map(str::to_owned);
            key.retired_at = k["retired_at"].as_str().map(str::to_owned);
            Ok(key)
        })
        .collect()
}

/// Record the current signing key before its first receipt (once per App; a repeat is a no-op in
/// the store too), audited in the global stream.
pub async fn record_signing_key(app: &App, actor: &str, request_id: &str, key: &PublicKeyInfo) -> Result<()> {
    let recorded = || app.recorded_signing_keys.lock().unwrap_or_else(|p| p.into_inner());
    if recorded().contains(&key.key_id) {
        return Ok(());
    }
    let event = AuditDraft {
        stream: "*".into(),
        actor: actor.to_owned(),
        action: "governance.signing_key".into(),
        entity_type: "signing_key".into(),
        entity_id: key.key_id.clone(),
        outcome: Outcome::Success,
        request_id: request_id.into(),
        details: json!({"pem": key.pem}),
    };
    app.meta.commit(Change::RecordSigningKey { key_id: key.key_id.clone(), pem: key.pem.clone() }, event).await?;
    recorded().push(key.key_id.clone());
    Ok(())
}

/// GET /v1/governance/public-key: the key receipts and checkpoints are verified with, as PEM and JWK,
/// with its key id (`sha256:` of the DER SubjectPublicKeyInfo).
pub async fn public_keys_view(app: &App) -> Result<Value> {
    let keys = verification_keys(app).await?;
    let mut view = public_key_view(&keys[0])?;
    let previous: Vec<Value> = keys[1..]
        .iter()
        .map(|k| {
            public_key_view(k).map(|v| {
                json!({"key_id": v["key_id"], "pem": v["pem"], "jwk": v["jwk"], "valid_from": v["valid_from"],
                       "retired_at": v["retired_at"]})
            })
        })
        .collect::<Result<_>>()?;
    view["previous"] = json!(previous);
    Ok(view)
}

/// One key as PEM, JWK and key id.
pub fn public_key_view(key: &PublicKeyInfo) -> Result<Value> {
    use base64::Engine;
    // A P-256 SubjectPublicKeyInfo (validated when the key was loaded) ends with the uncompressed
    // point: 0x04 || X (32 bytes) || Y (32 bytes).
    let der = &key.spki_der;
    let point = der.get(der.len().saturating_sub(65)..).filter(|p| p.len() == 65 && p[0] == 4);
    let point = point.ok_or_else(|| Error::Internal("public key is not an uncompressed P-256 point".into()))?;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let (x, y) = (&point[1..33], &point[33..]);
    let jwk = json!({"kty": "EC", "crv": "P-256", "x": b64.encode(x), "y": b64.encode(y), "kid": key.key_id,
                     "alg": "ES256", "use": "sig"});
    Ok(json!({"key_id": key.key_id, "pem": key.pem, "jwk": jwk, "algorithm": "ECDSA_P256_SHA256",
              "valid_from": key.valid_from, "retired_at": key.retired_at,
              "payload_types": [RECEIPT_PAYLOAD_TYPE, CHECKPOINT_PAYLOAD_TYPE]}))
}
