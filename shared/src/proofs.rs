//! Proof URLs of an official export: capabilities the registry signs and serves itself, never a
//! presigned GET of the shared content-addressed object (whose `Last-Modified`, ETag and version id
//! would date the first upload of the same bytes by any workspace; docs/security.md).
//!
//! One grant per export, signed once with the registry key (as receipts are, under its own DSSE
//! payload type, so it can never pass for a receipt or an audit checkpoint): "the manifest M, as
//! linked in workspace W, may be read without a token until T". A file's URL is
//! `/v1/proofs/{ws}/{digest}?manifest=M&exp=T&sig=S`; it serves `digest` only if it is M itself or a
//! file of M, linked in W. Blobs up to HELIX_INLINE_MAX are answered inline and verified, with headers
//! derived from the digest and size alone; larger ones with a 307 to a presigned GET of the store
//! (what remains of the leak, docs/security.md "Proof URLs"). Decision: docs/decisions.md.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use base64::Engine;
use serde::Serialize;

use crate::App;
use crate::blobs::{DOWNLOAD_URL_TTL, Fetched};
use crate::domain::time::now_unix;
use crate::domain::{Digest, WorkspaceId};
use crate::error::{Error, Result};
use crate::ports::{BlobKey, BundleVersion, Presigned};

/// The DSSE payload type of a proof grant (distinct from receipts and audit checkpoints).
pub const GRANT_PAYLOAD_TYPE: &str = "application/vnd.helix.proof-grant.v1";

/// The route a proof URL points at (the registry's own, unauthenticated).
pub const PROOF_PATH: &str = "/v1/proofs/";

/// Files an export answer carries a proof URL for (an answer must fit Lambda's 6 MB); the others
/// are fetched by digest (GET .../blobs/{digest}).
pub const PROOF_URL_FILES: usize = 1000;

/// Longest DER ECDSA P-256 signature (72 bytes) in base64url, with room to spare.
const MAX_SIG_CHARS: usize = 128;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// The proof part of an export answer.
#[derive(Debug, Serialize)]
pub struct Proof {
    pub expires_at: i64,
    pub manifest: Presigned,
    pub files: Vec<ProofFile>,
}

#[derive(Debug, Serialize)]
pub struct ProofFile {
    pub path: String,
    pub digest: Digest,
    /// A proof URL, for the first `PROOF_URL_FILES` files.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

impl Proof {
    /// Make every URL absolute under `base` (the registry's public URL, as the caller reached it).
    /// The use case builds paths; only the HTTP layer knows the address the client used.
    pub fn absolute(mut self, base: &str) -> Proof {
        let base = base.trim_end_matches('/');
        self.manifest.url = format!("{base}{}", self.manifest.url);
        for f in &mut self.files {
            if let Some(url) = &mut f.url {
                *url = format!("{base}{url}");
            }
        }
        self
    }
}

/// What a proof URL grants: `manifest` (and its files) as linked in `ws`, until `expires`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub ws: WorkspaceId,
    pub manifest: Digest,
    pub expires: i64,
}

impl Grant {
    /// What is signed: a fixed layout, no field can run into another (a workspace id has no newline).
    fn payload(&self) -> Vec<u8> {
        format!("helix proof grant v1\n{}\n{}\n{}", self.ws, self.manifest, self.expires).into_bytes()
    }

    fn message(&self) -> Vec<u8> {
        crate::dsse::pae(GRANT_PAYLOAD_TYPE, &self.payload())
    }

    /// The query string of a URL for this grant, signed with `sig`.
    fn query(&self, sig: &str) -> String {
        format!("manifest={}&exp={}&sig={sig}", self.manifest, self.expires)
    }
}

/// The proof of an export of version `v` of `ws`: one signed grant, one URL per file (the first
/// `PROOF_URL_FILES`) and one for the manifest. Paths only: see `Proof::absolute`.
pub async fn proof(
    app: &App,
    ws: &WorkspaceId,
    v: &BundleVersion,
    manifest: &crate::domain::Manifest,
    keys: &[BlobKey],
) -> Result<Proof> {
    let grant = Grant {
        ws: ws.clone(),
        manifest: v.manifest_digest.clone(),
        expires: now_unix() + DOWNLOAD_URL_TTL.as_secs() as i64,
    };
    let query = signed_query(app, &grant).await?;
    let url = |digest: &Digest| format!("{PROOF_PATH}{ws}/{digest}?{query}");
    let files = manifest
        .files
        .iter()
        .zip(keys)
        .enumerate()
        .map(|(i, (file, key))| ProofFile {
            path: file.path.clone(),
            digest: key.digest.clone(),
            url: (i < PROOF_URL_FILES).then(|| url(&key.digest)),
        })
        .collect();
    let manifest =
        Presigned { method: "GET", url: url(&v.manifest_digest), headers: Vec::new(), expires_at: grant.expires };
    Ok(Proof { expires_at: grant.expires, manifest, files })
}

/// The query string of a proof URL for `grant`, signed with the registry key.
pub async fn signed_query(app: &App, grant: &Grant) -> Result<String> {
    let sig = B64.encode(app.signer.sign(&grant.message()).await?);
    Ok(grant.query(&sig))
}

/// A proof URL's query, parsed: anything malformed is `proof_invalid` (never a 5xx).
pub fn parse_query(ws: &WorkspaceId, query: Option<&str>) -> Result<(Grant, Vec<u8>)> {
    let invalid = |why: &str| Error::ProofInvalid(why.into());
    let mut manifest = None;
    let mut expires = None;
    let mut sig = None;
    for (k, v) in url::form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        let slot = match k.as_ref() {
            "manifest" => &mut manifest,
            "exp" => &mut expires,
            "sig" => &mut sig,
            _ => return Err(invalid("a proof URL has exactly the parameters manifest, exp and sig")),
        };
        if slot.replace(v.into_owned()).is_some() {
            return Err(invalid("a proof URL names each parameter once"));
        }
    }
    let (Some(manifest), Some(expires), Some(sig)) = (manifest, expires, sig) else {
        return Err(invalid("a proof URL has the parameters manifest, exp and sig"));
    };
    let manifest = Digest::parse(&manifest).map_err(|_| invalid("manifest is not a digest"))?;
    let expires = expires.parse::<i64>().map_err(|_| invalid("exp is not a whole number of seconds"))?;
    if sig.len() > MAX_SIG_CHARS {
        return Err(invalid("sig is too long"));
    }
    let sig = B64.decode(sig.as_bytes()).map_err(|_| invalid("sig is not base64url"))?;
    Ok((Grant { ws: ws.clone(), manifest, expires }, sig))
}

/// Check a grant's signature (by the registry's current key), then its expiry. A grant signed by a
/// retired key fails like a forged one: proof URLs live minutes, a rotation only cuts those short.
pub async fn check(app: &App, grant: &Grant, sig: &[u8]) -> Result<()> {
    let key = app.signer.public_key().await?;
    if !key.verify(&grant.message(), sig) {
        return Err(Error::ProofInvalid("the signature does not match this workspace, digest and expiry".into()));
    }
    if now_unix() >= grant.expires {
        return Err(Error::ProofExpired);
    }
    Ok(())
}

/// GET /v1/proofs/{ws}/{digest}: serve `digest` under a valid grant if it is the granted manifest or
/// one of its files, linked in the grant's workspace.
pub async fn serve(app: &App, ws: &WorkspaceId, digest: &Digest, query: Option<&str>) -> Result<Fetched> {
    let (grant, sig) = parse_query(ws, query)?;
    check(app, &grant, &sig).await?;
    serve_granted(app, ws, digest, &grant).await
}

/// `serve` under a grant `check` accepted.
pub async fn serve_granted(app: &App, ws: &WorkspaceId, digest: &Digest, grant: &Grant) -> Result<Fetched> {
    // A grant is scoped to its workspace: a suspension stops it too (checked after the signature, so
    // a forged URL learns nothing of the switch).
    crate::suspension::refuse_if_suspended(app.meta.as_ref(), ws, None).await?;
    if digest != &grant.manifest && !manifest_files(app, ws, &grant.manifest).await?.contains(digest) {
        return Err(Error::ProofInvalid("this digest is not part of the granted manifest".into()));
    }
    let link = crate::blobs::linked(app, ws, digest, None).await?;
    if link.size > app.config.inline_max {
        // A large blob's store URL lives no longer than the grant it was reached through.
        let left = (grant.expires - now_unix()).clamp(1, DOWNLOAD_URL_TTL.as_secs() as i64) as u64;
        return Ok(Fetched::Redirect(app.blobs.presign_get(&link.key(), std::time::Duration::from_secs(left)).await?));
    }
    crate::blobs::fetch(app, ws, digest, None).await
}

/// Manifests whose file digests were read recently (by digest: a manifest is immutable).
const MANIFEST_CACHE: usize = 16;

type ManifestCache = Mutex<Vec<(Digest, Arc<HashSet<Digest>>)>>;

/// The file digests of the manifest `digest` as linked in `ws`, read and verified once per instance.
async fn manifest_files(app: &App, ws: &WorkspaceId, digest: &Digest) -> Result<Arc<HashSet<Digest>>> {
    static CACHE: ManifestCache = Mutex::new(Vec::new());
    if let Some((_, files)) = CACHE.lock().unwrap_or_else(|p| p.into_inner()).iter().find(|(d, _)| d == digest) {
        return Ok(files.clone());
    }
    let gone = || Error::BlobMissing(digest.to_string());
    let link = app.meta.blob_link(ws, digest).await?.ok_or_else(gone)?;
    let reader = app.blobs.get(&link.key()).await?.ok_or_else(gone)?;
    let mut bytes = Vec::new();
    let mut body = reader.body;
    tokio::io::AsyncReadExt::read_to_end(&mut body, &mut bytes)
        .await
        .map_err(|e| Error::unavailable(crate::error::Dependency::BlobStore, e))?;
    if &Digest::of(&bytes) != digest {
        return Err(Error::BlobIntegrity(format!("stored manifest {digest} does not hash to its digest")));
    }
    let manifest: crate::domain::Manifest =
        serde_json::from_slice(&bytes).map_err(|e| Error::BlobIntegrity(format!("stored manifest {digest}: {e}")))?;
    let files: Arc<HashSet<Digest>> =
        Arc::new(manifest.files.iter().filter_map(|f| Digest::parse(&f.digest).ok()).collect());
    let mut cache = CACHE.lock().unwrap_or_else(|p| p.into_inner());
    if cache.len() >= MANIFEST_CACHE {
        cache.remove(0);
    }
    cache.push((digest.clone(), files.clone()));
    Ok(files)
}

/// The registry's address as the client reached it: API Gateway's domain name on Lambda, otherwise
/// HELIX_PUBLIC_URL (the local server).
pub fn base_url(app: &App, req: &crate::http::Request) -> String {
    use lambda_http::RequestExt;
    use lambda_http::request::RequestContext;
    match req.request_context_ref() {
        Some(RequestContext::ApiGatewayV2(c)) => match c.domain_name.as_deref() {
            Some(domain) if !domain.is_empty() => format!("https://{domain}"),
            _ => app.config.public_url.clone(),
        },
        _ => app.config.public_url.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae";

    fn ws() -> WorkspaceId {
        WorkspaceId::parse("team-a").unwrap()
    }

    #[test]
    fn a_grant_signs_workspace_manifest_and_expiry_under_its_own_payload_type() {
        let g = Grant { ws: ws(), manifest: Digest::parse(D).unwrap(), expires: 42 };
        let m = String::from_utf8(g.message()).unwrap();
        assert!(m.starts_with(&format!("DSSEv1 {} {GRANT_PAYLOAD_TYPE} ", GRANT_PAYLOAD_TYPE.len())));
        assert!(m.ends_with(&format!("\nteam-a\n{D}\n42")));
        let other = Grant { ws: WorkspaceId::parse("team-b").unwrap(), ..g.clone() };
        assert_ne!(g.message(), other.message());
    }

    #[test]
    fn malformed_queries_are_proof_invalid() {
        let q = |s: &str| parse_query(&ws(), Some(s)).map(|_| ());
        for bad in [
            "",
            "manifest=x&exp=1&sig=AA",
            &format!("manifest={D}&exp=soon&sig=AA"),
            &format!("manifest={D}&exp=1&sig=***"),
            &format!("manifest={D}&exp=1&sig=AA&sig=AA"),
            &format!("manifest={D}&exp=1&sig=AA&extra=1"),
            &format!("manifest={D}&exp=1&sig={}", "A".repeat(200)),
        ] {
            assert!(matches!(q(bad), Err(Error::ProofInvalid(_))), "{bad}");
        }
        assert!(parse_query(&ws(), None).is_err());
        assert!(q(&format!("manifest={D}&exp=1&sig=AAAA")).is_ok());
    }
}
