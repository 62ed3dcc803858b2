//! audit: GET /v1/audit, a search of the audit trail (helix_core::audit). JSON by default, JSON Lines
//! (`Accept: application/x-ndjson`) on request, with the next page's cursor in `next_cursor` (JSON)
//! or the `x-helix-next-cursor` header (both forms).

use helix_core::App;
use helix_core::audit::{self, Params};
use helix_core::http::{self, Ctx, Function, Request, Response, Route};

pub async fn handle(app: &App, req: Request) -> Response {
    http::serve(app, req, Function::Audit, dispatch).await
}

fn wants_ndjson(req: &Request) -> bool {
    req.headers()
        .get_all(lambda_http::http::header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.split(',').any(|t| t.trim().starts_with("application/x-ndjson")))
}

async fn dispatch(app: &App, ctx: &Ctx, route: Route, req: &Request) -> helix_core::Result<Response> {
    let principal = ctx.authorize(app, req, &route).await?;
    match &route {
        Route::SearchAudit => {
            let q = |name: &str| http::query_param(req, name);
            let params = Params {
                workspace: q("workspace"),
                action: q("action"),
                actor: q("actor"),
                since: q("since"),
                until: q("until"),
                cursor: q("cursor"),
                limit: q("limit"),
            };
            let page = audit::search(app, &principal, params).await?;
            let mut resp = if wants_ndjson(req) {
                let mut body = String::new();
                for e in &page.events {
                    body.push_str(&e.canonical()?);
                    body.push('\n');
                }
                lambda_http::http::Response::builder()
                    .status(200)
                    .header("content-type", "application/x-ndjson")
                    .body(lambda_http::Body::Text(body))
                    .expect("valid response")
            } else {
                http::json(200, &page)
            };
            if let Some(c) = &page.next_cursor
                && let Ok(v) = lambda_http::http::HeaderValue::from_str(c)
            {
                resp.headers_mut().insert("x-helix-next-cursor", v);
            }
            Ok(resp)
        }
        _ => Err(helix_core::Error::NotFound),
    }
}
