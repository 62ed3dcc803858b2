//! The local server's presigned URLs (`FsBlobStore`'s stand-in for S3's): an HMAC-SHA256 with a secret
//! kept in the data dir over method, resource, digest, size and expiry.

use std::io;
use std::path::Path;
use std::time::Duration;

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use super::{LOCAL_BLOB_PATH, LOCAL_UPLOAD_PATH};
use crate::domain::Digest;
use crate::domain::time::now_unix;
use crate::error::{Error, Result};
use crate::ports::{BlobKey, Presigned, UploadRef};

/// Signs and checks the local server's presigned URLs: an HMAC-SHA256 over method, resource (the
/// storage key), digest, size and expiry, so a URL works for exactly one object or one upload.
#[derive(Clone)]
pub struct LocalPresigner {
    base_url: String,
    secret: Vec<u8>,
}

/// What a local presigned URL grants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalGrant {
    pub method: &'static str,
    /// `blobs/sha256/ab/<hex>[.n]` or `uploads/<ws>/<id>`.
    pub resource: String,
    /// The digest an upload must hash to (empty for GET).
    pub digest: String,
    pub size: u64,
    pub expires: i64,
}

impl LocalGrant {
    /// A download of one slot of one blob.
    pub fn get(key: &BlobKey, expires: i64) -> LocalGrant {
        LocalGrant {
            method: "GET",
            resource: format!("blobs/{}", key.storage_key()),
            digest: String::new(),
            size: 0,
            expires,
        }
    }

    /// An upload of part `number` of a chunked upload, of `size` bytes that hash to `digest`.
    pub fn part(upload: &UploadRef, number: u32, digest: &Digest, size: u64, expires: i64) -> LocalGrant {
        LocalGrant {
            method: "PUT",
            resource: format!("{}/parts/{number}", upload.storage_key()),
            digest: digest.to_string(),
            size,
            expires,
        }
    }

    /// An upload to one staging key, of `size` bytes that hash to `digest`.
    pub fn upload(upload: &UploadRef, digest: &Digest, size: u64, expires: i64) -> LocalGrant {
        LocalGrant { method: "PUT", resource: upload.storage_key(), digest: digest.to_string(), size, expires }
    }
}

impl LocalPresigner {
    pub fn new(base_url: String, secret: Vec<u8>) -> LocalPresigner {
        LocalPresigner { base_url, secret }
    }

    /// Load the secret from `path`, creating it (32 random bytes as 64 hex, mode 0600) on first
    /// start. Anything else in the file (empty, truncated, edited) refuses the start: an empty HMAC
    /// key would let anyone sign local presigned URLs.
    pub fn load_or_create(base_url: String, path: &Path) -> io::Result<LocalPresigner> {
        let secret = crate::adapters::local_key::read_or_create_secret_file(path, || {
            crate::domain::random_hex::<32>().into_bytes()
        })?;
        if secret.len() != 64 || !secret.iter().all(u8::is_ascii_hexdigit) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: not a presign secret (64 hex characters); remove it to create a new one", path.display()),
            ));
        }
        Ok(LocalPresigner::new(base_url, secret))
    }

    pub(super) fn mac(&self, g: &LocalGrant) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.secret).expect("any key length");
        mac.update(format!("{}\n{}\n{}\n{}\n{}", g.method, g.resource, g.digest, g.size, g.expires).as_bytes());
        mac
    }

    fn sign(&self, g: &LocalGrant) -> String {
        hex::encode(self.mac(g).finalize().into_bytes())
    }

    /// A presigned request for `grant`, at `path_and_query` (which names what the grant covers).
    fn presigned(&self, grant: &LocalGrant, path_and_query: String) -> Presigned {
        let url = format!("{}{path_and_query}&expires={}&sig={}", self.base_url, grant.expires, self.sign(grant));
        Presigned { method: grant.method, url, headers: Vec::new(), expires_at: grant.expires }
    }

    pub(super) fn get_url(&self, key: &BlobKey, ttl: Duration) -> Presigned {
        let grant = LocalGrant::get(key, now_unix() + ttl.as_secs() as i64);
        self.presigned(&grant, format!("{LOCAL_BLOB_PATH}{}?slot={}", key.digest, key.slot))
    }

    pub(super) fn upload_url(&self, upload: &UploadRef, digest: &Digest, size: u64, ttl: Duration) -> Presigned {
        let grant = LocalGrant::upload(upload, digest, size, now_unix() + ttl.as_secs() as i64);
        let path = format!("{LOCAL_UPLOAD_PATH}{}/{}?digest={digest}&size={size}", upload.workspace, upload.id);
        self.presigned(&grant, path)
    }

    pub(super) fn part_url(
        &self,
        upload: &UploadRef,
        number: u32,
        digest: &Digest,
        size: u64,
        ttl: Duration,
    ) -> Presigned {
        let grant = LocalGrant::part(upload, number, digest, size, now_unix() + ttl.as_secs() as i64);
        let path =
            format!("{LOCAL_UPLOAD_PATH}{}/{}/parts/{number}?digest={digest}&size={size}", upload.workspace, upload.id);
        self.presigned(&grant, path)
    }

    /// Checks a presigned request's signature, then its expiry. A `sig` that is not an HMAC-SHA256 in
    /// lowercase hex (what this presigner writes, and docs/openapi.yaml's pattern) is malformed input,
    /// 400; a well-formed one that does not match is 401 `token_invalid`.
    pub fn verify(&self, grant: &LocalGrant, sig_hex: &str) -> Result<()> {
        if sig_hex.len() != 64 || !crate::domain::digest::is_lower_hex(sig_hex) {
            return Err(Error::BadRequest("sig: not an HMAC-SHA256 in lowercase hex (64 characters)".into()));
        }
        let sig = hex::decode(sig_hex).map_err(|_| Error::TokenInvalid)?;
        self.mac(grant).verify_slice(&sig).map_err(|_| Error::TokenInvalid)?;
        if now_unix() >= grant.expires {
            return Err(Error::TokenExpired);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A malformed signature is a 400, a wrong one a 401, an expired one `token_expired`.
    #[test]
    fn presigned_signatures_are_checked_for_shape_then_value_then_expiry() {
        let p = LocalPresigner::new("http://127.0.0.1:1".into(), vec![7; 32]);
        let key = BlobKey { digest: Digest::of(b"x"), slot: 3 };
        let grant = LocalGrant::get(&key, now_unix() + 60);
        let good = hex::encode(p.mac(&grant).finalize().into_bytes());
        assert!(p.verify(&grant, &good).is_ok());
        for malformed in ["", "zz", &good[..63], &good.to_uppercase(), &format!("{good}0"), "\u{4}l,\u{12}"] {
            assert!(matches!(p.verify(&grant, malformed), Err(Error::BadRequest(_))), "{malformed:?}");
        }
        let wrong = format!("{}{}", if good.starts_with('0') { "1" } else { "0" }, &good[1..]);
        assert!(matches!(p.verify(&grant, &wrong), Err(Error::TokenInvalid)));
        let old = LocalGrant::get(&key, now_unix() - 1);
        let sig = hex::encode(p.mac(&old).finalize().into_bytes());
        assert!(matches!(p.verify(&old, &sig), Err(Error::TokenExpired)));
    }
}
