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
