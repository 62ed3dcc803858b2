//! publish: PUT a blob inline, many small blobs in one batch, start a direct upload, complete it (and
//! follow a large one's verification); register a bundle version.
//! Parse → authorize → helix-core → response; the rules (digest checks, verification before linking,
//! manifests, audit) live in helix-core.
//! The same binary is the verify function (HELIX_ENTRY=verify): one step of a large upload's
//! verification per `verification.step` event (`verify_step`), the next step's event put on the verify
//! bus (`bus`).

pub mod bus;

use helix_core::App;
use helix_core::blobs::{self, Caller, Linked};
use helix_core::bundles;
use helix_core::chunked::PartsRequest;
use helix_core::domain::{Digest, WorkspaceId};
use helix_core::http::{self, Ctx, Function, Request, Response, Route};
use helix_core::verify;
use serde::Deserialize;

/// What this binary serves (HELIX_ENTRY): API Gateway requests, or the verify bus's step events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entry {
    Http,
    Verify,
}

impl Entry {
    /// HELIX_ENTRY: `http` (default) or `verify`, which needs HELIX_VERIFY_BUS_NAME (the next step's
    /// event goes there). A bad value fails the start naming the variable.
    pub fn from_env(config: &helix_core::Config) -> Result<Entry, String> {
        Entry::parse(std::env::var("HELIX_ENTRY").ok().as_deref(), config)
    }

    pub fn parse(value: Option<&str>, config: &helix_core::Config) -> Result<Entry, String> {
        match value.map(str::trim) {
            None | Some("" | "http") => Ok(Entry::Http),
            Some("verify") if config.verify_bus.is_some() => Ok(Entry::Verify),
            Some("verify") => Err("configuration error: HELIX_VERIFY_BUS_NAME: must be set with HELIX_ENTRY=verify \
                 (the verify bus, where the next step's event is put)"
                .into()),
            Some(other) => Err(format!("configuration error: HELIX_ENTRY: {other:?} is not http or verify")),
        }
    }
}

/// The verify function's invocation: one step of the job the event names, within the invocation's
/// `deadline` (helix_core::verify::drive). An error fails the invocation: Lambda retries it (twice),
/// then hands the event to the on-failure queue.
pub async fn verify_step(
    app: &App,
    event: &serde_json::Value,
    deadline: std::time::Instant,
) -> helix_core::Result<serde_json::Value> {
    let driven = verify::drive(app, event, deadline).await?;
    tracing::info!(workspace = %driven.workspace, upload = %driven.upload_id, state = ?driven.state,
        verified_bytes = driven.verified_bytes, size = driven.size, steps = driven.steps,
        waited_seconds = driven.waited_seconds, next_step_put = driven.next_step_put, "verification step");
    serde_json::to_value(&driven).map_err(|e| helix_core::Error::Internal(e.to_string()))
}

pub async fn handle(app: &App, req: Request) -> Response {
    http::serve(app, req, Function::Publish, dispatch).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UploadRequest {
    digest: String,
    #[serde(deserialize_with = "http::whole_number")]
    size: u64,
    /// Link from this workspace instead of uploading (OCI cross-repository mount).
    mount_from: Option<String>,
    /// A chunked upload: the SHA-256 of each part, in order (helix_core::chunked).
    part_sha256: Option<Vec<String>>,
    /// With `part_sha256`: the chunked upload to resume (the parts stored and URLs for the rest).
    upload_id: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CompleteRequest {
    upload_id: String,
}

fn linked(l: &Linked) -> Response {
    http::json(if l.created { 201 } else { 200 }, l)
}

/// A verification's state: 202 with the status URL (`Location` too) while it runs, 200 once linked
/// (a failed one is the problem a synchronous `complete` answers: `verify::failure`).
fn verifying(progress: &verify::Progress) -> Response {
    if progress.state == helix_core::ports::VerifyState::Linked {
        return http::json(200, progress);
    }
    let mut resp = http::json(202, progress);
    if let Ok(v) = progress.status_url.parse() {
        resp.headers_mut().insert("location", v);
    }
    resp
}

async fn dispatch(app: &App, ctx: &Ctx, route: Route, req: &Request) -> helix_core::Result<Response> {
    let principal = ctx.authorize(app, req, &route).await?;
    let caller = Caller { principal: &principal, request_id: &ctx.request_id };
    match &route {
        Route::PutBlob { ws, digest } => {
            let body = bytes::Bytes::copy_from_slice(http::body_bytes(req));
            let read = ctx.read_link(ws, digest);
            Ok(linked(&blobs::put_inline(app, caller, ws, digest, body, read).await?))
        }
        Route::PublishBatch { ws } => {
            let body = bytes::Bytes::copy_from_slice(http::body_bytes(req));
            Ok(http::json(200, &helix_core::batch::publish(app, caller, ws, &body).await?))
        }
        Route::CreateUpload { ws } => {
            let body: UploadRequest = http::json_body(req)?;
            let digest = Digest::parse(&body.digest)?;
            let from = body.mount_from.as_deref().map(WorkspaceId::parse).transpose()?;
            let parts = match &body.part_sha256 {
                Some(parts) => parts.iter().map(|d| Digest::parse(d)).collect::<helix_core::Result<Vec<_>>>()?,
                None if body.upload_id.is_some() => {
                    return Err(helix_core::Error::BadRequest(
                        "upload_id is given with part_sha256 (a chunked upload)".into(),
                    ));
                }
                None => Vec::new(),
            };
            let request = body
                .part_sha256
                .is_some()
                .then(|| PartsRequest { part_sha256: &parts, upload_id: body.upload_id.as_deref() });
            let plan = blobs::start_upload(app, caller, ws, &digest, body.size, from.as_ref(), request).await?;
            Ok(http::json(200, &plan))
        }
        Route::PutBundleVersion { ws, name, version } => {
            let v = bundles::register(app, caller, ws, name, version, http::body_bytes(req)).await?;
            Ok(http::json(if v.created { 201 } else { 200 }, &v))
        }
        Route::CompleteUpload { ws, digest } => {
            let body: CompleteRequest = http::json_body(req)?;
            let read = ctx.read_link(ws, digest);
            match verify::complete_upload(app, caller, ws, digest, &body.upload_id, read).await? {
                verify::Completion::Linked(l) => Ok(linked(&l)),
                verify::Completion::Verifying(job) if job.state == helix_core::ports::VerifyState::Failed => {
                    Err(verify::failure(&job))
                }
                verify::Completion::Verifying(job) => Ok(verifying(&verify::Progress::of(&job))),
            }
        }
        Route::UploadStatus { ws, digest } => {
            let upload_id = http::query_param(req, "upload_id").ok_or_else(|| {
                helix_core::Error::BadRequest("upload_id (as POST .../uploads returned) is required".into())
            })?;
            Ok(verifying(&verify::status(app, ws, digest, &upload_id).await?))
        }
        _ => Err(helix_core::Error::NotFound),
    }
}
