//! publish: PUT a blob inline, start a direct upload, complete it. Parse → authorize → helix-core →
//! response; the rules (digest checks, verification before linking, audit) live in helix-core.

use helix_core::App;
use helix_core::blobs::{self, Caller, Linked};
use helix_core::domain::Digest;
use helix_core::http::{self, Ctx, Function, Request, Response, Route};
use serde::Deserialize;

pub async fn handle(app: &App, req: Request) -> Response {
    http::serve(app, req, Function::Publish, dispatch).await
}

#[derive(Deserialize)]
struct UploadRequest {
    digest: String,
    size: u64,
}

fn linked(l: &Linked) -> Response {
    http::json(if l.created { 201 } else { 200 }, l)
}

async fn dispatch(app: &App, ctx: &Ctx, route: Route, req: &Request) -> helix_core::Result<Response> {
    let principal = ctx.authorize(app, req, &route).await?;
    let caller = Caller { principal: &principal, request_id: &ctx.request_id };
    match &route {
        Route::PutBlob { ws, digest } => {
            let body = bytes::Bytes::copy_from_slice(http::body_bytes(req));
            Ok(linked(&blobs::put_inline(app, caller, ws, digest, body).await?))
        }
        Route::CreateUpload { .. } => {
            let body: UploadRequest = http::json_body(req)?;
            let digest = Digest::parse(&body.digest)?;
            Ok(http::json(200, &blobs::start_upload(app, &digest, body.size).await?))
        }
        Route::CompleteUpload { ws, digest } => Ok(linked(&blobs::complete_upload(app, caller, ws, digest).await?)),
        _ => Err(helix_core::Error::NotFound),
    }
}
