//! The four ports (SPEC §1). Each has an AWS adapter and an embedded adapter in `adapters/`, and one
//! contract suite in the helix-tests crate that both must pass.
//!
//! Shape rule: a meta-store state change can only be written together with its audit event
//! (`MetaStore::commit` takes both), so there is no change without its event and no event without
//! its change. Adapters must fail with `Error::Unavailable` naming their dependency when the backing
//! service cannot be reached, and must not report a write that did not happen.

use std::pin::Pin;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use serde::Serialize;
use tokio::io::AsyncRead;

use crate::domain::{AuditDraft, AuditEvent, Digest, TokenRecord, WorkspaceId};
use crate::error::Result;

// ---------------------------------------------------------------------------------------------
// BlobStore

#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub enum PutOutcome {
    Created,
    Existed,
}

#[derive(Debug, Clone, PartialEq)]
pub struct BlobHead {
    pub size: u64,
    /// The full-object SHA-256 the store itself computed and kept, when it has one.
    pub stored_sha256: Option<Digest>,
}

pub struct BlobReader {
    pub size: u64,
    pub body: Pin<Box<dyn AsyncRead + Send>>,
}

/// A request a client can make without credentials: method, URL and headers it must send.
#[derive(Debug, Clone, Serialize)]
pub struct Presigned {
    pub method: &'static str,
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub expires_at: i64,
}

/// What `/v1/status` may say about a blob store (never secrets).
#[derive(Debug, Clone, Serialize)]
pub struct BlobBackendInfo {
    pub backend: &'static str,
    pub location: String,
    pub prefix: String,
    pub strict_no_overwrite: bool,
}

#[async_trait]
pub trait BlobStore: Send + Sync {
    fn info(&self) -> BlobBackendInfo;

    /// Store `bytes` under `digest` unless an object is already there. The caller has checked that
    /// `bytes` hash to `digest`; when an object exists, the adapter checks that it does too and
    /// otherwise fails with `BlobIntegrity`. Two concurrent writers never both get `Created`.
    async fn put_if_absent(&self, digest: &Digest, bytes: Bytes) -> Result<PutOutcome>;

    async fn head(&self, digest: &Digest) -> Result<Option<BlobHead>>;

    /// Streaming read; memory stays flat in the blob size.
    async fn get(&self, digest: &Digest) -> Result<Option<BlobReader>>;

    /// A direct upload the client makes itself; the object still has to be verified at completion.
    async fn presign_put(&self, digest: &Digest, size: u64, ttl: Duration) -> Result<Presigned>;

    async fn presign_get(&self, digest: &Digest, ttl: Duration) -> Result<Presigned>;

    /// Store a small document (the audit exports) at `key` (relative to the store's prefix, e.g.
    /// `audit/2026/11/22/manifest.json`) unless something is already there: `Existed` leaves the
    /// stored bytes untouched for the caller to compare. Two writers never both get `Created`.
    async fn put_document_if_absent(&self, key: &str, bytes: Bytes) -> Result<PutOutcome>;

    /// A document's bytes, or None when there is none at `key`.
    async fn get_document(&self, key: &str) -> Result<Option<Bytes>>;

    /// Readiness probe: cheap, touches the backing service.
    async fn check(&self) -> Result<()>;
}

// ---------------------------------------------------------------------------------------------
// MetaStore

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BlobLink {
    pub workspace_id: String,
    pub digest: Digest,
    pub size: u64,
    pub linked_at: i64,
    pub linked_by: String,
}

/// A conditional state change. Each one fails its condition when its effect is already present.
#[derive(Debug, Clone)]
pub enum Change {
    /// Create a token (condition: no token with that SHA-256 or id).
    IssueToken(TokenRecord),
    /// Link a verified blob into a workspace (condition: not linked yet).
    LinkBlob(BlobLink),
    /// Disable a token (condition: it exists and is not disabled yet).
    RevokeToken { sha256: String },
    /// Disable `old_sha256` and create `new` with the same grant, at once (conditions of both).
    RotateToken { old_sha256: String, new: TokenRecord },
}

#[derive(Debug, Clone, PartialEq)]
pub enum Commit {
    /// The change and its audit event were written together.
    Applied(Box<AuditEvent>),
    /// The condition failed because the change is already in effect; nothing was written.
    AlreadyDone,
}

#[async_trait]
pub trait MetaStore: Send + Sync {
    fn backend(&self) -> &'static str;

    async fn token_by_sha256(&self, sha256: &str) -> Result<Option<TokenRecord>>;

    async fn token_by_id(&self, id: &str) -> Result<Option<TokenRecord>>;

    /// Every token record (never a secret: none is stored), in no particular order.
    async fn list_tokens(&self) -> Result<Vec<TokenRecord>>;

    async fn blob_link(&self, ws: &WorkspaceId, digest: &Digest) -> Result<Option<BlobLink>>;

    /// Apply `change` and append `event` atomically (one transaction across meta and audit).
    async fn commit(&self, change: Change, event: AuditDraft) -> Result<Commit>;

    /// Atomic add to a named counter (sharded where the backend needs it).
    async fn add_to_counter(&self, name: &str, delta: i64) -> Result<()>;

    async fn counter(&self, name: &str) -> Result<i64>;

    async fn check(&self) -> Result<()>;
}

// ---------------------------------------------------------------------------------------------
// AuditLog

#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    pub stream: String,
    /// Inclusive lower bound on `ts` (RFC 3339, compared as fixed-width strings).
    pub since: Option<String>,
    /// Exclusive upper bound on `ts`.
    pub until: Option<String>,
    /// Only events with a greater seq (pagination cursor).
    pub after_seq: Option<u64>,
    pub limit: usize,
}

#[async_trait]
pub trait AuditLog: Send + Sync {
    /// Append a standalone event (one with no meta-store change, such as a denial). Never
    /// overwrites: conditional on seq, re-reading the head and retrying on a lost race.
    async fn append(&self, draft: AuditDraft) -> Result<AuditEvent>;

    async fn head(&self, stream: &str) -> Result<Option<AuditEvent>>;

    /// Events of one stream in seq order.
    async fn query(&self, q: &AuditQuery) -> Result<Vec<AuditEvent>>;

    /// Every event whose `ts` falls on `day` (UTC, `YYYY-MM-DD`), of every stream, ordered by
    /// (stream, seq): what the daily export writes.
    async fn read_day(&self, day: &str) -> Result<Vec<AuditEvent>>;

    async fn check(&self) -> Result<()>;
}

// ---------------------------------------------------------------------------------------------
// Signer

pub const MAX_SIGNED_MESSAGE: usize = 4096;

#[derive(Debug, Clone, Serialize)]
pub struct PublicKeyInfo {
    pub key_id: String,
    /// DER SubjectPublicKeyInfo.
    #[serde(skip)]
    pub spki_der: Vec<u8>,
    pub pem: String,
}

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
        Ok(PublicKeyInfo { key_id: Digest::of(der).to_string(), spki_der: der.to_vec(), pem })
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
