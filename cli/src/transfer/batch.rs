//! Batches for `helix push` and `helix pull` (helix_core::batch): one request asks which of many
//! digests the workspace lacks; small files go up many to a request, and come down many to a request.

use futures_util::{StreamExt, TryStreamExt};
use helix_core::batch::{MAX_BATCH_BLOBS, MAX_BATCH_BYTES, MAX_QUERY_DIGESTS, frame};
use helix_core::domain::{Digest, WorkspaceId};
use serde_json::json;

use super::push::{Kept, LocalFile};
use super::{Progress, in_file, other};
use crate::client::{ClientError, Registry};

/// Files up to this size travel in batches; larger ones keep their own request (a single PUT, or a
/// presigned upload above `inline_max`).
pub const BATCH_FILE_MAX: u64 = 1024 * 1024;

/// Which of `digests` the workspace lacks: one request per `MAX_QUERY_DIGESTS`, `jobs` at a time.
pub async fn missing(
    registry: &Registry,
    ws: &WorkspaceId,
    digests: &[&Digest],
    jobs: usize,
) -> Result<std::collections::BTreeSet<Digest>, ClientError> {
    let path = format!("/v1/workspaces/{ws}/missing-blobs");
    let answers: Vec<serde_json::Value> = futures_util::stream::iter(digests.chunks(MAX_QUERY_DIGESTS).map(|chunk| {
        let body = json!({"digests": chunk.iter().map(ToString::to_string).collect::<Vec<_>>()});
        let path = &path;
        async move { registry.post(path, &body).await }
    }))
    .buffered(jobs.max(1))
    .try_collect()
    .await?;
    let mut out = std::collections::BTreeSet::new();
    for a in answers {
        for d in a["missing"].as_array().into_iter().flatten() {
            out.insert(Digest::parse(d.as_str().unwrap_or_default()).map_err(other)?);
        }
    }
    Ok(out)
}

/// Group items of `size` into batches of at most `MAX_BATCH_BLOBS` items and `budget` bytes (at most
/// `MAX_BATCH_BYTES`), in order.
pub fn plan<T>(items: Vec<T>, size: impl Fn(&T) -> u64, budget: u64) -> Vec<Vec<T>> {
    let budget = budget.min(MAX_BATCH_BYTES);
    let mut batches: Vec<Vec<T>> = Vec::new();
    let mut bytes = 0u64;
    for item in items {
        let s = size(&item);
        let full = batches.last().is_none_or(|b| b.len() == MAX_BATCH_BLOBS || bytes + s > budget);
        if full {
            batches.push(Vec::new());
            bytes = 0;
        }
        bytes += s;
        batches.last_mut().expect("pushed above").push(item);
    }
    batches
}

/// Publish one batch of small files (each a distinct digest, with the bytes kept from its hashing, or
/// None to read it now): the first refused blob is the error, naming its file; the others of the
/// batch are linked (a re-run sends only what is still missing).
pub async fn upload(
    registry: &Registry,
    ws: &WorkspaceId,
    files: Vec<(Digest, LocalFile, Option<Kept>)>,
    progress: &Progress,
) -> Result<(), ClientError> {
    // Those not kept, read in one trip off the runtime (not one per file).
    let files = tokio::task::spawn_blocking(move || {
        let read = |(d, f, kept): (Digest, LocalFile, Option<Kept>)| -> Result<_, ClientError> {
            let bytes = match kept {
                Some(k) => k,
                None => std::fs::read(&f.abs).map_err(|e| other(format!("{}: {e}", f.abs.display())))?.into(),
            };
            Ok((d, f, bytes))
        };
        files.into_iter().map(read).collect::<Result<Vec<_>, ClientError>>()
    })
    .await
    .map_err(other)??;
    let blobs: Vec<(Digest, &[u8])> = files.iter().map(|(d, _, c)| (d.clone(), c.as_ref())).collect();
    let body = frame::encode_publish(&blobs);
    let req = registry
        .request(reqwest::Method::POST, &format!("/v1/workspaces/{ws}/blob-batches"))
        .header("content-type", frame::CONTENT_TYPE)
        .body(body);
    let answer: serde_json::Value = registry.answer(req).await?.json().await.map_err(other)?;
    for (r, (_, f, _)) in answer["results"].as_array().into_iter().flatten().zip(&files) {
        if r["status"] == "refused" {
            let refused = ClientError::Refused {
                status: 400,
                reason: r["reason"].as_str().unwrap_or("refused").to_owned(),
                detail: r["detail"].as_str().unwrap_or_default().to_owned(),
            };
            return Err(in_file(refused, &f.path));
        }
    }
    progress.add(files.iter().map(|(_, f, _)| f.size).sum());
    Ok(())
}

/// Fetch one batch of digests: the answer's body and, for each blob served, its digest and its place
/// in the body (the caller verifies each as it writes it); the digests the registry left out (deferred,
/// or missing: a single GET names the error) are simply not among them.
pub async fn fetch(
    registry: &Registry,
    ws: &WorkspaceId,
    digests: &[&Digest],
) -> Result<(bytes::Bytes, Vec<(Digest, std::ops::Range<usize>)>), ClientError> {
    let body = json!({"digests": digests.iter().map(ToString::to_string).collect::<Vec<_>>()});
    let req = registry.request(reqwest::Method::POST, &format!("/v1/workspaces/{ws}/blob-fetches")).json(&body);
    let bytes = registry.answer(req).await?.bytes().await.map_err(|e| ClientError::Unreachable(e.to_string()))?;
    let (_, blobs) = frame::split_fetch(&bytes).map_err(|e| other(format!("a batch fetch: {e}")))?;
    let base = bytes.as_ptr() as usize;
    let places = blobs
        .into_iter()
        .map(|(d, b)| {
            let start = b.as_ptr() as usize - base;
            (d, start..start + b.len())
        })
        .collect();
    Ok((bytes, places))
}

#[cfg(test)]
mod tests {
    #[test]
    fn batches_hold_at_most_their_count_and_their_budget() {
        let sizes = vec![3u64, 3, 3, 5, 1, 9];
        let plan = super::plan(sizes, |s| *s, 6);
        assert_eq!(plan, vec![vec![3, 3], vec![3], vec![5, 1], vec![9]]);
        let many = super::plan(vec![1u64; super::MAX_BATCH_BLOBS + 1], |s| *s, u64::MAX);
        assert_eq!(many.iter().map(Vec::len).collect::<Vec<_>>(), [super::MAX_BATCH_BLOBS, 1]);
    }
}
