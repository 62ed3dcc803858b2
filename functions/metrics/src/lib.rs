//! metrics: GET /metrics, the Prometheus text exposition (format 0.0.4) of the registry's counters
//! (helix_core::metrics). Open unless HELIX_METRICS_MIN_ROLE names a role; then it needs a token of
//! at least that role.

use helix_core::App;
use helix_core::http::{self, Ctx, Function, Request, Response, Route};

pub async fn handle(app: &App, req: Request) -> Response {
    http::serve(app, req, Function::Metrics, dispatch).await
}

async fn dispatch(app: &App, ctx: &Ctx, route: Route, req: &Request) -> helix_core::Result<Response> {
    match &route {
        Route::Metrics => {
            if let Some(min) = app.config.metrics_min_role {
                ctx.authorize_with(app, req, min, None).await?;
            }
            // This instance's own counts, when due (a scrape is no way to force a write per request).
            app.metrics.flush_if_due(app.meta.as_ref()).await;
            let body = helix_core::metrics::render(app).await?;
            Ok(lambda_http::http::Response::builder()
                .status(200)
                .header("content-type", "text/plain; version=0.0.4; charset=utf-8")
                .header("cache-control", "no-store")
                .body(lambda_http::Body::Text(body))
                .expect("valid response"))
        }
        _ => Err(helix_core::Error::NotFound),
    }
}
