//! The signer: the registry key that signs receipts and checkpoints.

use super::*;

pub const MAX_SIGNED_MESSAGE: usize = 4096;

#[derive(Debug, Clone, Serialize)]
pub struct PublicKeyInfo {
    pub key_id: String,
    /// DER SubjectPublicKeyInfo.
    #[serde(skip)]
    pub spki_der: Vec<u8>,
    pub pem: String,
    /// The key's validity window, when known (from the key history): recorded before its first
    /// signature, and retired (RFC 3339 times).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub valid_from: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retired_at: Option<String>,
}

/// One key of the signing-key history (`MetaStore::signing_keys`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SigningKeyRecord {
    pub key_id: String,
    pub pem: String,
    /// When it was recorded: before its first signature.
    pub recorded_at: String,
    pub retired_at: Option<String>,
    pub retired_reason: Option<String>,
}

/// Instance clocks differ by a second or so; a receipt may be dated this much before its key was
/// recorded by another instance.
pub const KEY_WINDOW_LEEWAY: time::Duration = time::Duration::minutes(5);

#[async_trait]
pub trait Signer: Send + Sync {
    fn backend(&self) -> &'static str;

    /// ECDSA P-256 over SHA-256 of `message` (at most 4096 bytes); DER signature.
    async fn sign(&self, message: &[u8]) -> Result<Vec<u8>>;

    async fn public_key(&self) -> Result<PublicKeyInfo>;

    async fn check(&self) -> Result<()>;
}

impl PublicKeyInfo {
    /// From a DER SubjectPublicKeyInfo; refuses anything that is not a P-256 key. The key id is
    /// `sha256:` of the DER, so it names the key itself whatever holds it (KMS or a local file).
    pub fn from_spki_der(der: &[u8]) -> Result<PublicKeyInfo> {
        use p256::pkcs8::{DecodePublicKey, EncodePublicKey, LineEnding};
        let bad = |e: &dyn std::fmt::Display| {
            crate::Error::unavailable(crate::error::Dependency::Signer, format!("public key: {e}"))
        };
        let key = p256::PublicKey::from_public_key_der(der).map_err(|e| bad(&e))?;
        let pem = key.to_public_key_pem(LineEnding::LF).map_err(|e| bad(&e))?;
        Ok(PublicKeyInfo {
            key_id: Digest::of(der).to_string(),
            spki_der: der.to_vec(),
            pem,
            valid_from: None,
            retired_at: None,
        })
    }

    /// Why this key cannot have signed something dated `at`, if it cannot: `at` is after the key was
    /// retired, or (when `check_start`) before it was recorded, beyond `KEY_WINDOW_LEEWAY`. The
    /// reason names the key.
    pub fn outside_window(&self, at: time::OffsetDateTime, check_start: bool) -> Option<String> {
        let parse = |t: &str| time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).ok();
        let shown = crate::domain::time::rfc3339_ms(at);
        if let Some(retired) = self.retired_at.as_deref()
            && parse(retired).is_none_or(|r| at > r)
        {
            return Some(format!(
                "key {} was retired at {retired}: nothing it signed dated {shown} counts",
                self.key_id
            ));
        }
        if check_start
            && let Some(from) = self.valid_from.as_deref()
            && parse(from).is_none_or(|f| at < f - KEY_WINDOW_LEEWAY)
        {
            return Some(format!("key {} was first used at {from}: it signed nothing dated {shown}", self.key_id));
        }
        None
    }

    /// Verify a DER ECDSA P-256/SHA-256 signature over `message` with this key.
    pub fn verify(&self, message: &[u8], der_sig: &[u8]) -> bool {
        use p256::ecdsa::signature::Verifier;
        use p256::pkcs8::DecodePublicKey;
        let Ok(key) = p256::ecdsa::VerifyingKey::from_public_key_der(&self.spki_der) else { return false };
        let Ok(sig) = p256::ecdsa::DerSignature::try_from(der_sig) else { return false };
        key.verify(message, &sig).is_ok()
    }
}
