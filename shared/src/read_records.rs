//! The reads a route makes and their records (`reads`): a blob's GET and HEAD and a version's GET by
//! a principal, and a proof URL's fetch under a valid grant, each answered or refused, become one
//! read record in the stream of the workspace read. A request whose credential was never verified
//! (no token, a bad one, a forged proof URL) names no one and is not recorded: the request log has
//! it. `helix pull` says so in `x-helix-operation: pull`, kept in the record's `via`.

use serde_json::{Value, json};

use crate::App;
use crate::domain::{Digest, WorkspaceId};
use crate::error::Error;
use crate::http::{Ctx, Request, Response, Route, problem};
use crate::proofs::Grant;
use crate::reads::{BLOB_READ, BUNDLE_READ, Failure, PROOF_URL_ACTOR, ReadRecord};

/// The header a client sets to say which of its operations a read belongs to.
pub const OPERATION_HEADER: &str = "x-helix-operation";
/// The operations kept (anything else is left out of the record).
const OPERATIONS: [&str; 2] = ["pull", "verify"];

/// The workspace, action and entity of a route that is a read; None for any other route.
fn target(route: &Route) -> Option<(&WorkspaceId, &'static str, String)> {
    match route {
        Route::GetBlob { ws, digest } | Route::HeadBlob { ws, digest } | Route::GetProof { ws, digest } => {
            Some((ws, BLOB_READ, digest.to_string()))
        }
        Route::GetBundleVersion { ws, name, version } => {
            Some((ws, BUNDLE_READ, crate::domain::bundle_ref(ws, name.as_str(), version.as_str())))
        }
        _ => None,
    }
}

fn details(req: &Request, result: &crate::Result<Response>) -> Value {
    let mut d = json!({"method": req.method().as_str()});
    if let Ok(resp) = result {
        d["status"] = json!(resp.status().as_u16());
    }
    if let Some(op) = req.headers().get(OPERATION_HEADER).and_then(|v| v.to_str().ok())
        && OPERATIONS.contains(&op)
    {
        d["via"] = json!(op);
    }
    d
}

fn failure(result: &crate::Result<Response>) -> Option<Failure<'_>> {
    result.as_ref().err().map(|e: &Error| {
        let (status, reason) = problem::classify(e);
        Failure { error: e, status, reason }
    })
}

/// Record `route`'s read by the request's principal, if it is a read and a principal was verified.
pub async fn record(app: &App, ctx: &Ctx, req: &Request, route: &Route, result: &crate::Result<Response>) {
    if !app.reads.enabled() {
        return;
    }
    if let (Route::FetchBatch { ws }, Some(actor)) = (route, ctx.actor()) {
        return record_batch(app, ctx, req, ws, actor, result).await;
    }
    let (Some((ws, action, entity)), Some(actor)) = (target(route), ctx.actor()) else { return };
    let record = ReadRecord::new(ws, action, entity, actor, &ctx.request_id, failure(result), details(req, result));
    app.reads.record(record).await;
}

/// Record a proof URL's fetch of `digest` under `grant` (the URL is the credential: actor `proof-url`,
/// the granted manifest and the grant's expiry in `details`).
pub async fn record_proof(
    app: &App,
    ctx: &Ctx,
    req: &Request,
    digest: &Digest,
    grant: &Grant,
    result: &crate::Result<Response>,
) {
    if !app.reads.enabled() {
        return;
    }
    let mut d = details(req, result);
    d["via"] = json!("proof_url");
    d["manifest"] = json!(grant.manifest.to_string());
    d["grant_expires"] = json!(grant.expires);
    let record =
        ReadRecord::new(&grant.ws, BLOB_READ, digest.to_string(), PROOF_URL_ACTOR, &ctx.request_id, failure(result), d);
    app.reads.record(record).await;
}

/// A batch fetch (`POST …/blob-fetches`, what `helix pull` uses for small files): one `blob.read` per
/// blob the answer carries (`details.batch`), one `failed` (`blob_missing`) per digest not linked in
/// the workspace; the deferred ones are read (and recorded) when fetched singly. A refused batch is
/// one record, entity `batch`, with the refusal.
async fn record_batch(
    app: &App,
    ctx: &Ctx,
    req: &Request,
    ws: &WorkspaceId,
    actor: &str,
    result: &crate::Result<Response>,
) {
    let mut d = details(req, result);
    d["batch"] = json!(true);
    let served = match result {
        Ok(resp) => crate::batch::frame::split_fetch(resp.body().as_ref()).ok().map(|(h, _)| h),
        Err(_) => None,
    };
    let Some(header) = served else {
        let record = ReadRecord::new(ws, BLOB_READ, "batch".into(), actor, &ctx.request_id, failure(result), d);
        return app.reads.record(record).await;
    };
    for entry in &header.blobs {
        let record = ReadRecord::new(ws, BLOB_READ, entry.digest.clone(), actor, &ctx.request_id, None, d.clone());
        app.reads.record(record).await;
    }
    let missing = Error::BlobMissing("not linked in this workspace".into());
    let (status, reason) = problem::classify(&missing);
    for digest in &header.missing {
        let failed = Some(Failure { error: &missing, status, reason });
        let record = ReadRecord::new(ws, BLOB_READ, digest.clone(), actor, &ctx.request_id, failed, d.clone());
        app.reads.record(record).await;
    }
}
