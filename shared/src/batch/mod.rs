//! Batches (issue 19): which of many digests a workspace lacks, in one request; many small blobs
//! published in one request with a result per blob, their links and audit events committed together;
//! many small blobs fetched in one request. Every rule of a single PUT holds for each blob (its bytes
//! verified against its digest, no overwrite, proof of possession, `inline_max`, the freeze and the
//! suspension on the route, one `blob.link` event per link); docs/decisions.md, "Batches".
//!
//! Limits (docs/openapi.yaml): on the AWS path API Gateway base64-encodes a binary body into the
//! Lambda event, and Lambda takes at most 6 MB of event and answers at most 6 MB, so a batch carries
//! at most `MAX_BATCH_BYTES` (4 MiB) of blob bytes and `MAX_BATCH_BLOBS` blobs, with a header line of
//! at most `MAX_BATCH_HEADER`: 4.25 MiB of body, 5.7 MB in base64. The same limits hold locally.

pub mod frame;

use std::collections::BTreeMap;

use bytes::Bytes;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::App;
use crate::blobs::{Caller, place_bytes};
use crate::domain::time::now_unix;
use crate::domain::{AuditDraft, Digest, Outcome, WorkspaceId};
use crate::error::{Error, Result};
use crate::http::problem::{classify, public_detail};
use crate::ports::{BlobKey, BlobLink, Commit, PutOutcome};

/// Digests one missing query or one batch fetch may name.
pub const MAX_QUERY_DIGESTS: usize = 1000;
/// Blobs one batch may carry (a publish) or answer (a fetch).
pub const MAX_BATCH_BLOBS: usize = 1000;
/// Bytes of blobs one batch may carry or answer.
pub const MAX_BATCH_BYTES: u64 = 4 * 1024 * 1024;
/// The longest header line of a batch (1,000 entries take about 95 KB).
pub const MAX_BATCH_HEADER: usize = 128 * 1024;
/// The longest body of a batch: its header line, the newline, its bytes.
pub const MAX_BATCH_BODY: usize = MAX_BATCH_HEADER + 1 + MAX_BATCH_BYTES as usize;
/// Blobs written to the store at once within one batch.
const PLACE_CONCURRENCY: usize = 16;

/// The body of a missing query or a batch fetch: `{"digests": [...]}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DigestList {
    pub digests: Vec<String>,
}

impl DigestList {
    /// The digests, parsed (400 `invalid_digest`) and bounded (413 `batch_too_large`), duplicates once.
    pub fn parse(self) -> Result<Vec<Digest>> {
        if self.digests.len() > MAX_QUERY_DIGESTS {
            return Err(Error::BatchTooLarge(format!(
                "{} digests; a request names at most {MAX_QUERY_DIGESTS}",
                self.digests.len()
            )));
        }
        let mut seen = std::collections::BTreeSet::new();
        let mut out = Vec::with_capacity(self.digests.len());
        for d in self.digests {
            let d = Digest::parse(&d)?;
            if seen.insert(d.clone()) {
                out.push(d);
            }
        }
        Ok(out)
    }
}

/// The answer to a missing query.
#[derive(Debug, Serialize)]
pub struct Missing {
    /// The digests asked for that are not linked in the workspace, in the order asked.
    pub missing: Vec<Digest>,
    /// How many distinct digests were asked for.
    pub asked: usize,
}

/// Which of `digests` `ws` does not link. Only `ws`'s links answer: a blob the store holds for other
/// workspaces is missing here, and its bytes must be sent (proof of possession), as for a single PUT.
pub async fn missing(app: &App, ws: &WorkspaceId, digests: &[Digest]) -> Result<Missing> {
    let linked: std::collections::BTreeSet<Digest> =
        app.meta.blob_links(ws, digests).await?.into_iter().map(|l| l.digest).collect();
    let missing = digests.iter().filter(|d| !linked.contains(*d)).cloned().collect();
    Ok(Missing { missing, asked: digests.len() })
}

/// What became of one blob of a batch.
#[derive(Debug, Clone, Serialize)]
pub struct BlobResult {
    pub digest: String,
    pub size: u64,
    /// `created` (linked by this request), `exists` (linked already) or `refused`.
    pub status: &'static str,
    /// The stable reason of a refusal (the single PUT's: `digest_mismatch`, `payload_too_large`, ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl BlobResult {
    fn new(digest: &Digest, size: u64, status: &'static str) -> BlobResult {
        BlobResult { digest: digest.to_string(), size, status, reason: None, detail: None }
    }

    fn refused(digest: &Digest, size: u64, e: &Error) -> BlobResult {
        BlobResult {
            reason: Some(classify(e).1),
            detail: Some(public_detail(e)),
            ..BlobResult::new(digest, size, "refused")
        }
    }
}

/// The answer to a batch publish: a result per blob, in the order of the batch, and their counts.
#[derive(Debug, Serialize)]
pub struct Published {
    pub workspace_id: String,
    pub created: usize,
    pub exists: usize,
    pub refused: usize,
    pub results: Vec<BlobResult>,
}

/// Publish a framed batch into `ws` (the route already checked the token, the role, the freeze and the
/// suspension: a refusal there changes nothing). A malformed or oversized batch is refused whole (400,
/// 413) before anything is stored. Then per blob: over `inline_max` or bytes that do not hash to the
/// digest: `refused` (the others go on); linked in `ws` already: `exists`; otherwise its bytes are
/// stored (deduplicated, verified where they land) and it is linked with its `blob.link` event, all of
/// the batch's links in as few transactions as the store allows. A store outage before any link is
/// committed is a 503 with nothing linked; after some transaction committed, the links not committed
/// are `refused` with the outage's reason, and sending the batch again is idempotent.
pub async fn publish(app: &App, caller: Caller<'_>, ws: &WorkspaceId, body: &Bytes) -> Result<Published> {
    let blobs = frame::decode_publish(body)?;
    let mut results: Vec<Option<BlobResult>> = vec![None; blobs.len()];
    let limit = app.config.inline_max;
    // Each blob's bytes are hashed once: here, or by a store that hashes them as it stores them.
    let store_hashes = app.blobs.put_many_verifies();
    let mismatch = |digest: &Digest, bytes: &Bytes| {
        let actual = Digest::of(bytes);
        (&actual != digest).then(|| Error::DigestMismatch { expected: digest.to_string(), actual: actual.to_string() })
    };
    let mut candidates = Vec::new();
    for (i, (digest, bytes)) in blobs.iter().enumerate() {
        let size = bytes.len() as u64;
        if size > limit {
            results[i] = Some(BlobResult::refused(digest, size, &Error::PayloadTooLarge { limit }));
        } else if let Some(e) = (!store_hashes).then(|| mismatch(digest, bytes)).flatten() {
            results[i] = Some(BlobResult::refused(digest, size, &e));
        } else {
            candidates.push(i);
        }
    }
    let asked: Vec<Digest> = candidates.iter().map(|&i| blobs[i].0.clone()).collect();
    let linked: BTreeMap<Digest, BlobLink> =
        app.meta.blob_links(ws, &asked).await?.into_iter().map(|l| (l.digest.clone(), l)).collect();
    let mut to_place = Vec::new();
    for i in candidates {
        let (digest, bytes) = &blobs[i];
        match linked.get(digest) {
            // Linked already: `exists`, for bytes that are the digest's (the store did not see them).
            Some(l) => match store_hashes.then(|| mismatch(digest, bytes)).flatten() {
                Some(e) => results[i] = Some(BlobResult::refused(digest, bytes.len() as u64, &e)),
                None => results[i] = Some(BlobResult::new(&l.digest, l.size, "exists")),
            },
            None => to_place.push(i),
        }
    }
    // The first slots of all the batch's blobs written and made durable together; a blob whose first
    // slot is taken already goes on as a single PUT would (that object verified, else the next slot).
    let first: Vec<(BlobKey, Bytes)> =
        to_place.iter().map(|&i| (BlobKey::primary(&blobs[i].0), blobs[i].1.clone())).collect();
    let written = app.blobs.put_many_if_absent(first).await;
    let mut placed: Vec<(usize, Result<BlobKey>)> = Vec::with_capacity(to_place.len());
    let mut taken = Vec::new();
    for (&i, outcome) in to_place.iter().zip(written) {
        match outcome {
            Ok(PutOutcome::Created) => placed.push((i, Ok(BlobKey::primary(&blobs[i].0)))),
            // Bytes checked (here, or by the store before it looked for the key): placed as a PUT's.
            Ok(PutOutcome::Existed) => taken.push(i),
            Err(e @ Error::DigestMismatch { .. }) => {
                results[i] = Some(BlobResult::refused(&blobs[i].0, blobs[i].1.len() as u64, &e))
            }
            Err(e) => placed.push((i, Err(e))),
        }
    }
    let placing = taken.into_iter().map(|i| {
        let (digest, bytes) = &blobs[i];
        async move { (i, place_bytes(app, caller.request_id, digest, bytes, PutOutcome::Existed).await) }
    });
    placed.extend(futures_util::stream::iter(placing).buffer_unordered(PLACE_CONCURRENCY).collect::<Vec<_>>().await);
    placed.sort_by_key(|(i, _)| *i);
    let mut to_link = Vec::new();
    for (i, key) in placed {
        let (digest, bytes) = &blobs[i];
        match key {
            Ok(key) => to_link.push((i, key)),
            Err(e @ Error::BlobIntegrity(_)) => results[i] = Some(BlobResult::refused(digest, bytes.len() as u64, &e)),
            // The store failed: nothing of the batch is linked yet.
            Err(e) => return Err(e),
        }
    }
    let links: Vec<(BlobLink, AuditDraft)> = to_link
        .iter()
        .map(|(i, key)| {
            let size = blobs[*i].1.len() as u64;
            let link = BlobLink {
                workspace_id: ws.to_string(),
                digest: key.digest.clone(),
                size,
                linked_at: now_unix(),
                linked_by: caller.principal.actor(),
                slot: key.slot,
            };
            let event = AuditDraft {
                stream: ws.to_string(),
                actor: caller.principal.actor(),
                action: "blob.link".into(),
                entity_type: "blob".into(),
                entity_id: key.digest.to_string(),
                outcome: Outcome::Success,
                request_id: caller.request_id.into(),
                details: json!({"size": size, "via": "batch"}),
            };
            (link, event)
        })
        .collect();
    let committed = app.meta.commit_links(links).await;
    if let Some(e) = &committed.failed
        && committed.done.is_empty()
    {
        tracing::error!(error = %e, "a batch's links were not committed; nothing was linked");
        return Err(committed.failed.expect("checked above"));
    }
    for (n, (i, key)) in to_link.iter().enumerate() {
        let size = blobs[*i].1.len() as u64;
        results[*i] = Some(match (committed.done.get(n), &committed.failed) {
            (Some(Commit::Applied(_)), _) => BlobResult::new(&key.digest, size, "created"),
            (Some(Commit::AlreadyDone), _) => BlobResult::new(&key.digest, size, "exists"),
            (None, Some(e)) => BlobResult::refused(&key.digest, size, e),
            (None, None) => BlobResult::refused(&key.digest, size, &Error::Internal("no commit outcome".into())),
        });
    }
    if let Some(e) = &committed.failed {
        tracing::error!(error = %e, committed = committed.done.len(), "a batch was linked in part; the rest is refused");
    }
    let results: Vec<BlobResult> = results.into_iter().map(|r| r.expect("every blob has a result")).collect();
    let count = |s: &str| results.iter().filter(|r| r.status == s).count();
    Ok(Published {
        workspace_id: ws.to_string(),
        created: count("created"),
        exists: count("exists"),
        refused: count("refused"),
        results,
    })
}

/// Many small linked blobs in one framed answer (`frame::FetchHeader`), each read from the store and
/// verified against its digest (a wrong object is a 500 `blob_integrity_error`, as for a single GET).
/// Digests not linked in `ws` are `missing`; blobs over `inline_max`, or past `MAX_BATCH_BYTES` or
/// `MAX_BATCH_BLOBS` of the answer, are `deferred` (fetch them singly or in another batch).
pub async fn fetch(app: &App, ws: &WorkspaceId, digests: &[Digest]) -> Result<Vec<u8>> {
    let linked: BTreeMap<Digest, BlobLink> =
        app.meta.blob_links(ws, digests).await?.into_iter().map(|l| (l.digest.clone(), l)).collect();
    let mut header = frame::FetchHeader::default();
    let mut chosen = Vec::new();
    let mut budget = MAX_BATCH_BYTES;
    for d in digests {
        match linked.get(d) {
            None => header.missing.push(d.to_string()),
            Some(l) if l.size > app.config.inline_max || l.size > budget || chosen.len() == MAX_BATCH_BLOBS => {
                header.deferred.push(d.to_string())
            }
            Some(l) => {
                budget -= l.size;
                chosen.push(l.clone());
            }
        }
    }
    let read = app.blobs.get_many(chosen.iter().map(|l| (l.key(), l.size)).collect()).await;
    let bytes: Vec<Bytes> = chosen.iter().zip(read).map(|(l, r)| verified(l, r)).collect::<Result<_>>()?;
    header.blobs = chosen.iter().map(|l| frame::Entry { digest: l.digest.to_string(), size: l.size }).collect();
    Ok(frame::encode(&header, &bytes.iter().map(Bytes::as_ref).collect::<Vec<&[u8]>>()))
}

/// A linked blob's bytes as the store read them, verified against its digest.
fn verified(l: &BlobLink, read: Result<Option<Bytes>>) -> Result<Bytes> {
    let bytes = read?.ok_or_else(|| Error::BlobIntegrity(format!("{} is linked but its object is gone", l.digest)))?;
    let actual = Digest::of(&bytes);
    if actual != l.digest {
        return Err(Error::BlobIntegrity(format!("{} holds bytes that hash to {actual}", l.key().storage_key())));
    }
    Ok(bytes)
}
