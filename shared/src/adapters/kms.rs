//! KMS Signer: an ECC_NIST_P256 SIGN_VERIFY key, ECDSA_SHA_256 with MessageType RAW (KMS hashes the
//! message itself; messages are at most 4096 bytes). The public key is fetched once and cached for
//! the life of the process (warm invocations reuse it).

use crate::adapters::lazy::LazyClient;
use async_trait::async_trait;
use aws_sdk_kms::error::DisplayErrorContext;
use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::{MessageType, SigningAlgorithmSpec};
use tokio::sync::OnceCell;

use crate::error::{Dependency, Error, Result};
use crate::ports::{MAX_SIGNED_MESSAGE, PublicKeyInfo, Signer};

pub struct KmsSigner {
    client: LazyClient<aws_sdk_kms::Client>,
    key_id: String,
    public: OnceCell<PublicKeyInfo>,
}

impl KmsSigner {
    pub fn new(client: impl Into<LazyClient<aws_sdk_kms::Client>>, key_id: String) -> KmsSigner {
        KmsSigner { client: client.into(), key_id, public: OnceCell::new() }
    }

    async fn fetch_public_key(&self) -> Result<PublicKeyInfo> {
        let out = self
            .client
            .get_public_key()
            .key_id(&self.key_id)
            .send()
            .await
            .map_err(|e| Error::unavailable(Dependency::Signer, DisplayErrorContext(e)))?;
        let der =
            out.public_key().ok_or_else(|| Error::unavailable(Dependency::Signer, "GetPublicKey returned no key"))?;
        PublicKeyInfo::from_spki_der(der.as_ref())
    }
}

#[async_trait]
impl Signer for KmsSigner {
    fn backend(&self) -> &'static str {
        "kms"
    }

    async fn sign(&self, message: &[u8]) -> Result<Vec<u8>> {
        if message.len() > MAX_SIGNED_MESSAGE {
            return Err(Error::Internal(format!("signed messages are at most {MAX_SIGNED_MESSAGE} bytes")));
        }
        let out = self
            .client
            .sign()
            .key_id(&self.key_id)
            .message(Blob::new(message))
            .message_type(MessageType::Raw)
            .signing_algorithm(SigningAlgorithmSpec::EcdsaSha256)
            .send()
            .await
            .map_err(|e| Error::unavailable(Dependency::Signer, DisplayErrorContext(e)))?;
        let sig =
            out.signature().ok_or_else(|| Error::unavailable(Dependency::Signer, "Sign returned no signature"))?;
        Ok(sig.as_ref().to_vec())
    }

    async fn public_key(&self) -> Result<PublicKeyInfo> {
        self.public.get_or_try_init(|| self.fetch_public_key()).await.cloned()
    }

    /// Readiness asks KMS every time (the cached key says nothing about reachability now).
    async fn check(&self) -> Result<()> {
        self.fetch_public_key().await.map(|_| ())
    }
}
