//! console: the web console's static assets (`GET /console`, `GET /console/{asset+}`), the same bytes
//! and headers `helix serve` answers (helix_core::console). The page calls the API on the same origin;
//! this function touches no store; its only configuration is the OIDC sign-in (HELIX_OIDC_ISSUER,
//! HELIX_OIDC_AUDIENCE, HELIX_OIDC_CLIENT_ID: `/console/config.json` and the policy's connect-src).

use helix_core::console::Console;
use helix_core::http::{Request, Response};
use lambda_http::RequestExt;

/// The console as configured by the process environment; a bad setting fails the start.
pub fn from_env() -> Result<Console, helix_core::config::ConfigError> {
    let sign_in = helix_core::config::sign_in_from_lookup(|k| std::env::var(k).ok())?;
    Ok(Console::new(sign_in.as_ref()))
}

pub fn handle(console: &Console, req: &Request) -> Response {
    let started = std::time::Instant::now();
    let resp = console.serve(req.uri().path());
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
