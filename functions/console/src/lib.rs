//! console: the web console's static assets (`GET /console`, `GET /console/{asset+}`), the same bytes
//! and headers `helix serve` answers (helix_core::console). The page calls the API on the same origin;
//! this function touches no store and calls no AWS API; from the configuration it reads the OIDC
//! sign-in (HELIX_OIDC_ISSUER, HELIX_OIDC_AUDIENCE, HELIX_OIDC_CLIENT_ID: `/console/config.json` and
//! the policy's connect-src; the issuer's discovery document names its token endpoint) and the bucket
//! (HELIX_S3_BUCKET, its endpoint, AWS_REGION: the origin of its presigned downloads, worked out
//! offline, in connect-src for the evidence pack's large files).

use helix_core::console::Host;
use helix_core::http::{Request, Response};
use lambda_http::RequestExt;

/// The console as configured by the process environment.
pub async fn from_env() -> Result<Host, helix_core::config::ConfigError> {
    Host::from_lookup(|k| std::env::var(k).ok()).await
}

/// The settings `from_env` reads, checked without building anything (a bad one fails the start).
pub fn check_env() -> Result<(), helix_core::config::ConfigError> {
    helix_core::config::sign_in_from_lookup(|k| std::env::var(k).ok().filter(|v| !v.trim().is_empty()))?;
    Ok(())
}

pub async fn handle(console: &Host, req: &Request) -> Response {
    let started = std::time::Instant::now();
    let resp = console.serve(req.uri().path()).await;
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
