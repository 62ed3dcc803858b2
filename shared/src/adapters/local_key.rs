//! Local P-256 signer: a PKCS#8 PEM key file in the data dir, created on first start with mode 0600
//! (create-only, so two processes starting together cannot write two different keys).

use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use async_trait::async_trait;
use p256::ecdsa::signature::Signer as _;
use p256::ecdsa::{DerSignature, SigningKey};
use p256::pkcs8::{DecodePrivateKey, EncodePrivateKey, EncodePublicKey, LineEnding};

use crate::error::{Dependency, Error, Result};
use crate::ports::{MAX_SIGNED_MESSAGE, PublicKeyInfo, Signer};

/// Read a secret file, or create it (mode 0600, create-only) with `make()` if it does not exist.
pub fn read_or_create_secret_file(path: &Path, make: impl FnOnce() -> Vec<u8>) -> io::Result<Vec<u8>> {
    match std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path) {
        Ok(mut f) => {
            let bytes = make();
            f.write_all(&bytes)?;
            f.sync_all()?;
            Ok(bytes)
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => std::fs::read(path),
        Err(e) => Err(e),
    }
}

pub struct LocalKeySigner {
    key: SigningKey,
    info: PublicKeyInfo,
}

impl LocalKeySigner {
    pub fn load_or_create(path: &Path) -> Result<LocalKeySigner> {
        let unavailable =
            |e: &dyn std::fmt::Display| Error::unavailable(Dependency::Signer, format!("{}: {e}", path.display()));
        let pem = read_or_create_secret_file(path, || {
            let key = loop {
                let mut raw = [0u8; 32];
                getrandom::fill(&mut raw).expect("OS random source");
                if let Ok(k) = SigningKey::from_slice(&raw) {
                    break k;
                }
            };
            key.to_pkcs8_pem(LineEnding::LF).expect("encode key").as_bytes().to_vec()
        })
        .map_err(|e| unavailable(&e))?;
        let pem = String::from_utf8(pem).map_err(|e| unavailable(&e))?;
        let key = SigningKey::from_pkcs8_pem(&pem).map_err(|e| unavailable(&e))?;
        let der = key.verifying_key().to_public_key_der().map_err(|e| unavailable(&e))?;
        let info = PublicKeyInfo::from_spki_der(der.as_bytes())?;
        Ok(LocalKeySigner { key, info })
    }
}

#[async_trait]
impl Signer for LocalKeySigner {
    fn backend(&self) -> &'static str {
        "local"
    }

    async fn sign(&self, message: &[u8]) -> Result<Vec<u8>> {
        if message.len() > MAX_SIGNED_MESSAGE {
            return Err(Error::Internal(format!("signed messages are at most {MAX_SIGNED_MESSAGE} bytes")));
        }
        let sig: DerSignature = self.key.sign(message);
        Ok(sig.as_bytes().to_vec())
    }

    async fn public_key(&self) -> Result<PublicKeyInfo> {
        Ok(self.info.clone())
    }

    async fn check(&self) -> Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[tokio::test]
    async fn key_file_is_created_once_with_mode_0600_and_reloads_to_the_same_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("signing-key.pem");
        let first = LocalKeySigner::load_or_create(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let again = LocalKeySigner::load_or_create(&path).unwrap();
        assert_eq!(first.public_key().await.unwrap().key_id, again.public_key().await.unwrap().key_id);
        let sig = first.sign(b"m").await.unwrap();
        assert!(again.public_key().await.unwrap().verify(b"m", &sig));
    }

    #[test]
    fn a_corrupt_key_file_is_an_unavailable_signer_not_a_new_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("signing-key.pem");
        std::fs::write(&path, "garbage").unwrap();
        assert!(matches!(
            LocalKeySigner::load_or_create(&path),
            Err(Error::Unavailable { dep: Dependency::Signer, .. })
        ));
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "garbage", "never overwritten");
    }
}
