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

/// Read a secret file, or create it with `make()` if it does not exist. Creation is atomic: the
/// bytes are written and fsynced to a private temp file (mode 0600) in the same folder, which is then
/// hard-linked to `path` create-only. A reader therefore never sees an empty or partial secret, and
/// when two processes start at once exactly one secret wins and both load it. An existing file open
/// to group or others is set to 0600 (with a warning); temp files a crash left behind are removed.
pub fn read_or_create_secret_file(path: &Path, make: impl FnOnce() -> Vec<u8>) -> io::Result<Vec<u8>> {
    use std::os::unix::fs::PermissionsExt;
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("secret");
    if let Ok(bytes) = std::fs::read(path) {
        let mode = std::fs::metadata(path)?.permissions().mode();
        if mode & 0o077 != 0 {
            tracing::warn!(file = %path.display(), mode = format!("{:o}", mode & 0o777), "secret file was open to others; set to 0600");
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
        }
        remove_stale_temp_files(dir, name);
        return Ok(bytes);
    }
    let mut raw = [0u8; 8];
    getrandom::fill(&mut raw).map_err(io::Error::other)?;
    let tmp = dir.join(format!(".{name}.{}.tmp", hex::encode(raw)));
    let bytes = make();
    let written = (|| {
        let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp)?;
        f.write_all(&bytes)?;
        f.sync_all()?;
        match std::fs::hard_link(&tmp, path) {
            Ok(()) => std::fs::File::open(dir)?.sync_all(),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
            // A filesystem without hard links (some network and container mounts): create-only
            // still guarantees one winner; a reader may then briefly see a partial file.
            Err(e) if matches!(e.kind(), io::ErrorKind::Unsupported | io::ErrorKind::PermissionDenied) => {
                tracing::warn!(file = %path.display(), "no hard links here; writing the secret in place");
                match std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path) {
                    Ok(mut f) => {
                        f.write_all(&bytes)?;
                        f.sync_all()
                    }
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
                    Err(e) => Err(e),
                }
            }
            Err(e) => Err(e),
        }
    })();
    let _ = std::fs::remove_file(&tmp);
    written?;
    std::fs::read(path)
}

/// Temp files of an earlier start that crashed before linking its secret into place.
fn remove_stale_temp_files(dir: &Path, name: &str) {
    let prefix = format!(".{name}.");
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let file = entry.file_name();
        let file = file.to_string_lossy();
        let stale = entry.metadata().ok().and_then(|m| m.modified().ok()).and_then(|t| t.elapsed().ok());
        if file.starts_with(&prefix) && file.ends_with(".tmp") && stale.is_some_and(|age| age.as_secs() > 60) {
            let _ = std::fs::remove_file(entry.path());
        }
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
    fn processes_starting_together_never_load_an_empty_or_different_secret() {
        for _ in 0..20 {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("presign.key");
            let barrier = std::sync::Arc::new(std::sync::Barrier::new(8));
            let loaded: Vec<Vec<u8>> = (0..8u8)
                .map(|i| {
                    let (path, barrier) = (path.clone(), barrier.clone());
                    std::thread::spawn(move || {
                        barrier.wait();
                        read_or_create_secret_file(&path, || vec![b'a' + i; 64]).unwrap()
                    })
                })
                .collect::<Vec<_>>()
                .into_iter()
                .map(|t| t.join().unwrap())
                .collect();
            assert!(loaded.iter().all(|s| s.len() == 64), "never empty or partial");
            assert!(loaded.iter().all(|s| s == &loaded[0]), "one secret wins and every starter loads it");
            assert_eq!(std::fs::read(&path).unwrap(), loaded[0]);
            assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "no temp file left behind");
            assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        }
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
