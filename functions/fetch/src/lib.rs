//! fetch: HEAD and GET of a linked blob; which of many digests a workspace lacks, and many small
//! blobs in one framed answer (helix_core::batch). Blobs up to HELIX_INLINE_MAX come inline and verified;
//! larger ones as a 307 to a short-lived presigned GET. Bundle versions and the workspace's listing
//! (with each version's state, `?state=` filters); the workspaces a credential covers, with their
//! counts; the versions the caller may decide now, across those workspaces.
//! Proof URLs of exports (`/v1/proofs/...`, no token: the URL carries a registry-signed grant).

use helix_core::App;
use helix_core::batch;
use helix_core::blobs::{self, Fetched};
use helix_core::bundles;
use helix_core::http::{self, Ctx, Function, Request, Response, Route, range};
use helix_core::{proofs, read_records};

pub async fn handle(app: &App, req: Request) -> Response {
    http::serve(app, req, Function::Fetch, dispatch).await
}

fn blob_response(status: u16, digest: &str, size: u64, body: lambda_http::Body) -> Response {
    lambda_http::http::Response::builder()
        .status(status)
        .header("content-type", "application/octet-stream")
        .header("content-length", size)
        .header("accept-ranges", "bytes")
        .header("etag", format!("\"{digest}\""))
        .header("x-helix-digest", digest)
        .header("cache-control", "private, max-age=31536000, immutable")
        .body(body)
        .expect("valid response")
}

/// The answer to a blob GET: inline bytes (verified whole, then the one range `Range` asks for, as
/// 206), or a 307 to a presigned GET, which serves ranges itself (the client sends `Range` again).
fn fetched(req: &Request, digest: &str, fetched: Fetched) -> helix_core::Result<Response> {
    Ok(match fetched {
        Fetched::Inline { bytes } => {
            let size = bytes.len() as u64;
            let asked = req.headers().get("range").and_then(|v| v.to_str().ok());
            match range::resolve(asked, size)? {
                None => blob_response(200, digest, size, lambda_http::Body::Binary(bytes.to_vec())),
                Some(r) => {
                    let part = bytes.slice(r.start as usize..=r.end as usize).to_vec();
                    let mut resp = blob_response(206, digest, r.len(), lambda_http::Body::Binary(part));
                    let value = r.content_range(size).parse().expect("a valid header value");
                    resp.headers_mut().insert("content-range", value);
                    resp
                }
            }
        }
        Fetched::Redirect(presigned) => lambda_http::http::Response::builder()
            .status(307)
            .header("location", presigned.url)
            .header("cache-control", "no-store")
            .body(lambda_http::Body::Empty)
            .expect("valid response"),
    })
}

async fn dispatch(app: &App, ctx: &Ctx, route: Route, req: &Request) -> helix_core::Result<Response> {
    // A proof URL is its own credential (a grant the registry signed): no token. A fetch under a
    // valid grant is a read on the record (a forged or malformed URL names no one).
    if let Route::GetProof { ws, digest } = &route {
        let (grant, sig) = proofs::parse_query(ws, req.uri().query())?;
        let result = match proofs::check(app, &grant, &sig).await {
            // Signed by the registry: recorded whether it is still valid or expired.
            Ok(()) => {
                proofs::serve_granted(app, ws, digest, &grant).await.and_then(|f| fetched(req, &digest.to_string(), f))
            }
            Err(e @ helix_core::Error::ProofExpired) => Err(e),
            Err(e) => return Err(e),
        };
        read_records::record_proof(app, ctx, req, digest, &grant, &result).await;
        return result;
    }
    // Reads are recorded whatever their outcome (a refusal too), once a principal was verified.
    let result = answer(app, ctx, &route, req).await;
    read_records::record(app, ctx, req, &route, &result).await;
    result
}

async fn answer(app: &App, ctx: &Ctx, route: &Route, req: &Request) -> helix_core::Result<Response> {
    let principal = ctx.authorize(app, req, route).await?;
    let limit = || -> helix_core::Result<Option<usize>> {
        match http::query_param(req, "limit") {
            None => Ok(None),
            Some(l) => Ok(Some(l.parse().map_err(|_| helix_core::Error::BadRequest("limit is a number".into()))?)),
        }
    };
    let cursor = http::query_param(req, "cursor");
    match route {
        Route::HeadBlob { ws, digest } => {
            let link = blobs::linked(app, ws, digest, ctx.read_link(ws, digest)).await?;
            Ok(blob_response(200, &digest.to_string(), link.size, lambda_http::Body::Empty))
        }
        Route::MissingBlobs { ws } => {
            let digests = http::json_body::<batch::DigestList>(req)?.parse()?;
            Ok(http::json(200, &batch::missing(app, ws, &digests).await?))
        }
        Route::FetchBatch { ws } => {
            let digests = http::json_body::<batch::DigestList>(req)?.parse()?;
            let framed = batch::fetch(app, ws, &digests).await?;
            Ok(lambda_http::http::Response::builder()
                .status(200)
                .header("content-type", batch::frame::CONTENT_TYPE)
                .header("cache-control", "private, no-store")
                .body(lambda_http::Body::Binary(framed))
                .expect("valid response"))
        }
        Route::GetBlob { ws, digest } => {
            let got = blobs::fetch(app, ws, digest, ctx.read_link(ws, digest)).await?;
            fetched(req, &digest.to_string(), got)
        }
        Route::GetBundleVersion { ws, name, version } => {
            let read = ctx.read_version(ws, name.as_str(), version.as_str());
            Ok(http::json(200, &bundles::get(app, ws, name, version, read).await?))
        }
        Route::GetGovernance { ws, name, version } => {
            let read = ctx.read_version(ws, name.as_str(), version.as_str());
            Ok(http::json(200, &helix_core::governance::view(app, ws, name, version, read).await?))
        }
        Route::ListBundles { ws } => {
            let state = http::query_param(req, "state");
            Ok(http::json(200, &bundles::list(app, ws, cursor.as_deref(), limit()?, state.as_deref()).await?))
        }
        Route::ListWorkspaces => {
            Ok(http::json(200, &helix_core::workspaces::list(app, &principal, cursor.as_deref(), limit()?).await?))
        }
        Route::PendingDecisions => {
            Ok(http::json(200, &helix_core::pending::pending(app, &principal, cursor.as_deref(), limit()?).await?))
        }
        _ => Err(helix_core::Error::NotFound),
    }
}
