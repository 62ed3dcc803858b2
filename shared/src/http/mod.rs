//! HTTP plumbing shared by every function and by `helix serve`: the route table, problem+json,
//! the per-request context (request id, authorization, the one log line), response builders.

pub mod ctx;
pub mod problem;
pub mod route;

pub use ctx::{Ctx, RequestId, new_request_id};
pub use route::{Function, Route};

pub type Request = lambda_http::Request;
pub type Response = lambda_http::Response<lambda_http::Body>;

use serde::Serialize;

/// The whole life of one request in one function: context, route (404 if another function owns
/// it), the function's `dispatch`, then problem+json mapping and the log line.
pub async fn serve<F>(app: &crate::App, req: Request, owner: Function, dispatch: F) -> Response
where
    F: AsyncFn(&crate::App, &Ctx, Route, &Request) -> crate::Result<Response>,
{
    let ctx = Ctx::begin(&req);
    let result = match ctx.route(&req, owner) {
        Ok(route) => dispatch(app, &ctx, route, &req).await,
        Err(e) => Err(e),
    };
    ctx.finish(result)
}

pub fn json(status: u16, value: &impl Serialize) -> Response {
    let body = serde_json::to_string(value).expect("serializable response");
    http::Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(lambda_http::Body::Text(body))
        .expect("valid response")
}

/// The body of a request as bytes, whatever form Lambda or the local server delivered it in.
pub fn body_bytes(req: &Request) -> &[u8] {
    req.body().as_ref()
}

/// Parse a JSON request body into `T`; a malformed body is a 400 `invalid_request`.
pub fn json_body<T: serde::de::DeserializeOwned>(req: &Request) -> crate::Result<T> {
    serde_json::from_slice(body_bytes(req)).map_err(|e| crate::Error::BadRequest(format!("invalid JSON body: {e}")))
}

/// Value of a query-string parameter (from the URI, identical in Lambda and locally).
pub fn query_param(req: &Request, name: &str) -> Option<String> {
    url::form_urlencoded::parse(req.uri().query()?.as_bytes()).find(|(k, _)| k == name).map(|(_, v)| v.into_owned())
}
