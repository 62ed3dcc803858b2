//! `helix serve`: every route of every function in one process. Each request is handed, unchanged
//! but for a request id, to the same `handle` function Lambda runs. The only routes of its own are
//! `/_local/blobs/{digest}` and `/_local/uploads/{ws}/{id}`, the stand-ins for S3 presigned URLs on
//! the embedded backend: HMAC-signed and expiring, uploads streamed to disk while hashed (memory
//! flat in blob size). The web console's assets are served under `/console/` (`helix_core::console`).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use helix_core::adapters::fs::LocalGrant;
use helix_core::domain::{Digest, WorkspaceId};
use helix_core::http::problem::problem;
use helix_core::http::{Ctx, Function, RequestId, Route, new_request_id};
use helix_core::ports::{BlobKey, UploadRef};
use helix_core::{App, Error};
use http_body_util::BodyExt;
use tokio::net::TcpListener;

pub fn router(app: Arc<App>) -> Router {
    let host: ConsoleHost = (app.clone(), Arc::new(tokio::sync::OnceCell::new()));
    let console = Router::new()
        .route("/console", get(console))
        .route("/console/", get(console))
        .route("/console/{*file}", get(console))
        .with_state(host);
    Router::new()
        .route("/_local/blobs/{digest}", get(local_get))
        .route("/_local/uploads/{ws}/{id}", put(local_upload))
        .route("/_local/uploads/{ws}/{id}/parts/{number}", put(local_part))
        .merge(console)
        .fallback(dispatch)
        .with_state(app)
}

/// The console as this server hosts it, set up at its first request (helix_core::console::Host).
type ConsoleHost = (Arc<App>, Arc<tokio::sync::OnceCell<helix_core::console::Host>>);

/// A server running in the background until dropped.
pub struct Server {
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
    /// The governance notifications' deliverer, when HELIX_WEBHOOK_URL is set (`start_notifications`).
    notify: Option<tokio::task::JoinHandle<()>>,
}

impl Server {
    pub fn start(app: Arc<App>, listener: TcpListener) -> Server {
        let addr = listener.local_addr().expect("bound listener");
        if app.config.verify_background {
            // Large uploads' verifications, driven to their end after `complete` answered 202.
            helix_core::verify::start_worker(app.clone());
        }
        let task = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, router(app)).await {
                tracing::error!(error = %e, "server stopped");
            }
        });
        Server { addr, task, notify: None }
    }

    /// Start delivering governance notifications in the background (HELIX_WEBHOOK_URL): the cursor is
    /// set before this returns, so every decision made after it is delivered (helix_core::notify).
    pub async fn start_notifications(&mut self, app: &Arc<App>) -> Result<(), Error> {
        self.notify = helix_core::notify::start(app).await?;
        Ok(())
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
        if let Some(notify) = &self.notify {
            notify.abort();
        }
    }
}

fn into_axum(resp: helix_core::http::Response) -> Response {
    let (parts, body) = resp.into_parts();
    let bytes = match body {
        lambda_http::Body::Empty => Vec::new(),
        lambda_http::Body::Text(s) => s.into_bytes(),
        lambda_http::Body::Binary(b) => b,
        _ => Vec::new(),
    };
    Response::from_parts(parts, Body::from(bytes))
}

/// Every API route: buffer the body (bounded by HELIX_INLINE_MAX, as API Gateway bounds Lambda's),
/// then call the owning function's handler.
async fn dispatch(State(app): State<Arc<App>>, req: Request) -> Response {
    let (mut parts, body) = req.into_parts();
    parts.extensions.insert(RequestId(new_request_id()));
    // A batch of small blobs may be a little larger than one inline blob (helix_core::batch), and so may
    // the plan of a chunked upload (a SHA-256 per part, up to 10,000 parts: ~750 KB), whatever
    // HELIX_INLINE_MAX is (API Gateway and Lambda take 6 MB).
    let route = Route::parse(&parts.method, parts.uri.path());
    let batch = matches!(route, Ok(Route::PublishBatch { .. }));
    let plan = matches!(route, Ok(Route::CreateUpload { .. }));
    let limit = match (batch, plan) {
        (true, _) => helix_core::batch::MAX_BATCH_BODY as u64,
        (_, true) => (helix_core::batch::MAX_BATCH_BODY as u64).max(app.config.inline_max),
        _ => app.config.inline_max,
    };
    let bytes = match http_body_util::Limited::new(body, limit as usize).collect().await {
        Ok(c) => c.to_bytes(),
        Err(_) => {
            let req = lambda_http::Request::from_parts(parts, lambda_http::Body::Empty);
            let ctx = Ctx::begin(&req);
            let e = if batch {
                Error::BatchTooLarge(format!("a batch body is at most {limit} bytes"))
            } else {
                Error::PayloadTooLarge { limit }
            };
            return into_axum(ctx.finish(Err(e)));
        }
    };
    let body = if bytes.is_empty() { lambda_http::Body::Empty } else { lambda_http::Body::Binary(Vec::from(bytes)) };
    let req = lambda_http::Request::from_parts(parts, body);
    let function = Route::parse(req.method(), req.uri().path()).map(|r| r.function()).unwrap_or(Function::Health);
    let resp = match function {
        Function::Publish => publish::handle(&app, req).await,
        Function::Fetch => fetch::handle(&app, req).await,
        Function::Health => health::handle(&app, req).await,
        Function::Token => token::handle(&app, req).await,
        Function::Waive => waive::handle(&app, req).await,
        Function::Audit => audit::handle(&app, req).await,
        Function::Metrics => metrics::handle(&app, req).await,
    };
    into_axum(resp)
}

/// The web console's static assets, with their Content-Security-Policy, and its sign-in settings.
async fn console(State((app, host)): State<ConsoleHost>, uri: axum::http::Uri) -> Response {
    let host = host.get_or_init(|| helix_core::console::Host::from_config(&app.config)).await;
    into_axum(host.serve(uri.path()).await)
}

/// Read size of the local presigned GET.
const LOCAL_IO_CHUNK: usize = 1 << 20;

/// The query of a local presigned URL; anything missing or malformed is a 400 problem.
struct Query(Vec<(String, String)>);

impl Query {
    fn of(uri: &axum::http::Uri) -> Query {
        Query(url::form_urlencoded::parse(uri.query().unwrap_or("").as_bytes()).into_owned().collect())
    }

    fn get(&self, name: &str) -> Result<&str, Error> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .ok_or_else(|| Error::BadRequest(format!("the presigned URL lacks `{name}`")))
    }

    fn number<T: std::str::FromStr>(&self, name: &str) -> Result<T, Error> {
        self.get(name)?.parse().map_err(|_| Error::BadRequest(format!("`{name}` is not a number")))
    }

    /// `expires`, Unix seconds within the range docs/openapi.yaml gives (a malformed URL is a 400,
    /// never a signature check).
    fn expires(&self) -> Result<i64, Error> {
        Some(self.number::<i64>("expires")?)
            .filter(|e| (0..=9_999_999_999).contains(e))
            .ok_or_else(|| Error::BadRequest("`expires` is Unix seconds, at most 9999999999".into()))
    }
}

fn local_problem(e: Error) -> Response {
    let id = new_request_id();
    if matches!(e, Error::Unavailable { .. } | Error::Internal(_)) {
        tracing::error!(request_id = %id, error = %e, "local blob endpoint");
    }
    into_axum(problem(&e, &id))
}

/// Stand-in for a presigned S3 PUT to an upload's staging key (checksum and If-None-Match signed in).
async fn local_upload(State(app): State<Arc<App>>, Path((ws, id)): Path<(String, String)>, req: Request) -> Response {
    let result = async {
        let q = Query::of(req.uri());
        let upload = UploadRef::parse(&WorkspaceId::parse(&ws)?, &id)?;
        let digest = Digest::parse(q.get("digest")?)?;
        let grant = LocalGrant::upload(&upload, &digest, q.number("size")?, q.expires()?);
        let store = app.fs_blobs.as_ref().ok_or(Error::NotFound)?;
        store.presigner().verify(&grant, q.get("sig")?)?;
        // A URL signed before a freeze or its workspace's suspension writes nothing during it (on S3 it
        // stays valid for its 15 minutes, but nothing it stages can be linked: `complete` is refused).
        let gate = app.meta.gate(None, true, Some(&upload.workspace)).await?;
        helix_core::suspension::refuse_if_suspended(app.meta.as_ref(), &upload.workspace, gate.suspension).await?;
        helix_core::freeze::refuse_if_frozen(app.meta.as_ref(), gate.freeze).await?;
        store.receive_upload(&upload, &digest, grant.size, req.into_body().into_data_stream()).await
    }
    .await;
    match result {
        Ok(_) => axum::http::StatusCode::CREATED.into_response(),
        Err(e) => local_problem(e),
    }
}

/// Stand-in for a presigned S3 UploadPart of a chunked upload (its checksum signed in): the same
/// gates as `local_upload`.
async fn local_part(
    State(app): State<Arc<App>>,
    Path((ws, id, number)): Path<(String, String, String)>,
    req: Request,
) -> Response {
    let result = async {
        let q = Query::of(req.uri());
        let upload = UploadRef::parse(&WorkspaceId::parse(&ws)?, &id)?;
        let number: u32 = number
            .parse()
            .ok()
            .filter(|n| (1..=10_000).contains(n))
            .ok_or_else(|| Error::BadRequest("a part number is from 1 to 10000".into()))?;
        let digest = Digest::parse(q.get("digest")?)?;
        let grant = LocalGrant::part(&upload, number, &digest, q.number("size")?, q.expires()?);
        let store = app.fs_blobs.as_ref().ok_or(Error::NotFound)?;
        store.presigner().verify(&grant, q.get("sig")?)?;
        let gate = app.meta.gate(None, true, Some(&upload.workspace)).await?;
        helix_core::suspension::refuse_if_suspended(app.meta.as_ref(), &upload.workspace, gate.suspension).await?;
        helix_core::freeze::refuse_if_frozen(app.meta.as_ref(), gate.freeze).await?;
        store.receive_part(&upload, number, &digest, grant.size, req.into_body().into_data_stream()).await
    }
    .await;
    match result {
        Ok(()) => axum::http::StatusCode::OK.into_response(),
        Err(e) => local_problem(e),
    }
}

/// Stand-in for a presigned S3 GET of a blob's object (one slot of one digest), with S3's answer to
/// one `Range: bytes=…` (206 and `Content-Range`; 416 past the end; anything else served whole).
async fn local_get(
    State(app): State<Arc<App>>,
    Path(digest): Path<String>,
    uri: axum::http::Uri,
    headers: axum::http::HeaderMap,
) -> Response {
    let q = Query::of(&uri);
    let result = async {
        let key = BlobKey { digest: Digest::parse(&digest)?, slot: q.number("slot")? };
        let grant = LocalGrant::get(&key, q.expires()?);
        let store = app.fs_blobs.as_ref().ok_or(Error::NotFound)?;
        store.presigner().verify(&grant, q.get("sig")?)?;
        let missing = || Error::BlobMissing(key.digest.to_string());
        let size = helix_core::ports::BlobStore::head(store.as_ref(), &key).await?.ok_or_else(missing)?.size;
        let asked = headers.get("range").and_then(|v| v.to_str().ok());
        let range = helix_core::http::range::resolve(asked, size)?;
        let reader = store.get_from(&key, range.map_or(0, |r| r.start)).await?.ok_or_else(missing)?;
        Ok::<_, Error>((reader, range, key.digest))
    }
    .await;
    match result {
        Ok((reader, range, digest)) => {
            let (status, length) = match range {
                Some(r) => (axum::http::StatusCode::PARTIAL_CONTENT, r.len()),
                None => (axum::http::StatusCode::OK, reader.size),
            };
            let mut resp = Response::builder()
                .status(status)
                .header("content-type", "application/octet-stream")
                .header("content-disposition", format!("attachment; filename=\"{}\"", digest.hex()))
                .header("content-length", length)
                .header("accept-ranges", "bytes")
                .header("x-helix-digest", digest.to_string());
            if let Some(r) = range {
                resp = resp.header("content-range", r.content_range(reader.size));
            }
            // 1 MiB reads: the default 4 KiB made a 1 GiB download 262,144 blocking-pool reads.
            let body = tokio::io::AsyncReadExt::take(reader.body, length);
            resp.body(Body::from_stream(tokio_util::io::ReaderStream::with_capacity(body, LOCAL_IO_CHUNK)))
                .expect("valid response")
        }
        Err(e) => local_problem(e),
    }
}
