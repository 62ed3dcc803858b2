//! DSSE envelopes (the format in-toto and Sigstore use), the one implementation behind receipts and
//! audit checkpoints: `{"payloadType", "payload": base64, "signatures": [{"keyid", "sig"}]}` where `sig`
//! is the registry key's ECDSA P-256 / SHA-256 signature (DER, base64) over the pre-authentication
//! encoding of payloadType and payload. Envelopes are written as canonical JSON.

use base64::Engine;
use serde_json::{Value, json};

use crate::domain::canonical;
use crate::error::{Error, Result};
use crate::ports::{MAX_SIGNED_MESSAGE, PublicKeyInfo, Signer};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// DSSE pre-authentication encoding: what is signed.
pub fn pae(payload_type: &str, payload: &[u8]) -> Vec<u8> {
    let mut m = format!("DSSEv1 {} {} {} ", payload_type.len(), payload_type, payload.len()).into_bytes();
    m.extend_from_slice(payload);
    m
}

/// Sign `payload` as `payload_type` with the registry key: the canonical envelope. A statement whose
/// encoding exceeds what the signer takes (4096 bytes) is refused before any signing.
pub async fn sign(signer: &dyn Signer, key: &PublicKeyInfo, payload_type: &str, payload: &[u8]) -> Result<String> {
    let message = pae(payload_type, payload);
    if message.len() > MAX_SIGNED_MESSAGE {
        return Err(Error::Internal(format!("a signed statement is at most {MAX_SIGNED_MESSAGE} bytes")));
    }
    let sig = signer.sign(&message).await?;
    let envelope = json!({
        "payloadType": payload_type,
        "payload": B64.encode(payload),
        "signatures": [{"keyid": key.key_id, "sig": B64.encode(sig)}],
    });
    canonical::to_string(&envelope)
}

/// The payload of `envelope` if it is of `payload_type` and carries a valid signature by one of
/// `keys` (a key id names its key); otherwise the reason.
pub fn verify(envelope: &[u8], payload_type: &str, keys: &[PublicKeyInfo]) -> std::result::Result<Vec<u8>, String> {
    verify_by(envelope, payload_type, keys).map(|(payload, _)| payload)
}

/// `verify`, and the key whose signature verified (the first, in the envelope's order).
pub fn verify_by<'k>(
    envelope: &[u8],
    payload_type: &str,
    keys: &'k [PublicKeyInfo],
) -> std::result::Result<(Vec<u8>, &'k PublicKeyInfo), String> {
    let env: Value = serde_json::from_slice(envelope).map_err(|e| format!("not a DSSE envelope: {e}"))?;
    if env["payloadType"] != payload_type {
        return Err(format!("payloadType is not {payload_type}"));
    }
    let payload = B64.decode(env["payload"].as_str().unwrap_or_default()).map_err(|e| format!("payload: {e}"))?;
    let sigs = env["signatures"].as_array().ok_or("no signatures")?;
    let message = pae(payload_type, &payload);
    let by = sigs.iter().find_map(|s| {
        keys.iter().find(|key| {
            s["keyid"] == key.key_id.as_str()
                && B64.decode(s["sig"].as_str().unwrap_or_default()).is_ok_and(|sig| key.verify(&message, &sig))
        })
    });
    match by {
        Some(key) => Ok((payload, key)),
        None => {
            // Say which: a key nobody pinned, or a pinned key whose signature does not verify.
            let ids: Vec<&str> = sigs.iter().filter_map(|s| s["keyid"].as_str()).collect();
            let pinned = ids.iter().any(|id| keys.iter().any(|k| k.key_id == *id));
            Err(if pinned {
                format!("no valid signature by a registry key: the signature by {} does not verify", ids.join(", "))
            } else {
                format!("no valid signature by a registry key: signed by {}, not a key you trust", ids.join(", "))
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pae_has_the_dsse_shape() {
        assert_eq!(pae("t/x", b"hi"), b"DSSEv1 3 t/x 2 hi");
        assert_eq!(pae("", b""), b"DSSEv1 0  0 ");
    }
}
