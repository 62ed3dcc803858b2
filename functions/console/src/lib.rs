//! console: the web console's static assets (`GET /console`, `GET /console/{asset+}`), the same bytes
//! and headers `helix serve` answers (helix_core::console). The page calls the API on the same origin;
//! this function touches no store and reads no configuration.

use helix_core::http::{Request, Response};
use lambda_http::RequestExt;

pub fn handle(req: &Request) -> Response {
    let started = std::time::Instant::now();
    let resp = helix_core::console::serve(req.uri().path());
    let lambda_request_id = req.lambda_context_ref().map(|c| c.request_id.clone()).unwrap_or_else(|| "-".into());
    tracing::info!(
        method = %req.method(),
        route = req.uri().path(),
        status = resp.status().as_u16(),
        latency_ms = started.elapsed().as_secs_f64() * 1000.0,
        lambda_request_id,
        "request"
    );
    resp
}
