//! health: liveness (never touches a dependency), readiness (probes each one), posture (viewer).

use helix_core::http::{self, Ctx, Function, Request, Response, Route};
use helix_core::{App, posture};
use serde_json::json;

pub async fn handle(app: &App, req: Request) -> Response {
    http::serve(app, req, Function::Health, dispatch).await
}

async fn dispatch(app: &App, ctx: &Ctx, route: Route, req: &Request) -> helix_core::Result<Response> {
    match route {
        Route::Healthz => Ok(http::json(200, &json!({"status": "ok", "version": env!("CARGO_PKG_VERSION")}))),
        Route::Readyz => {
            let r = posture::readiness(app).await;
            Ok(http::json(if r.ready { 200 } else { 503 }, &r))
        }
        Route::Status => {
            let principal = ctx.authorize(app, req, &route).await?;
            Ok(http::json(200, &posture::status(app, &principal).await?))
        }
        _ => Err(helix_core::Error::NotFound),
    }
}
