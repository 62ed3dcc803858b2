//! token: issue, list, revoke and rotate API tokens; whoami; the freeze and suspension switches. Secrets appear in exactly one response
//! (the one that creates them) and nowhere else: not in lists, logs, audit events or errors.

use helix_core::App;
use helix_core::domain::{Role, Scope};
use helix_core::http::{self, Ctx, Function, Request, Response, Route};
use helix_core::tokens::{self, Grant, TokenRef};
use serde::Deserialize;
use serde_json::json;

pub async fn handle(app: &App, req: Request) -> Response {
    http::serve(app, req, Function::Token, dispatch).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct IssueRequest {
    user: String,
    role: String,
    workspace_id: String,
    #[serde(default, deserialize_with = "http::optional_whole_number")]
    ttl_seconds: Option<i64>,
    description: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FreezeRequest {
    reason: String,
}

/// A response that carries a secret: never cached.
fn secret_response(status: u16, secret: &str, record: &helix_core::domain::TokenRecord) -> Response {
    let mut body = serde_json::to_value(record).expect("serializable");
    body["token"] = json!(secret);
    let mut resp = http::json(status, &body);
    resp.headers_mut().insert("cache-control", lambda_http::http::HeaderValue::from_static("no-store"));
    resp
}

async fn dispatch(app: &App, ctx: &Ctx, route: Route, req: &Request) -> helix_core::Result<Response> {
    let switch = matches!(route, Route::Freeze | Route::Unfreeze).then(|| route == Route::Freeze);
    let result = dispatch_route(app, ctx, route, req).await;
    // A refused freeze or unfreeze is a governance denial: audited in the global stream (SPEC §4).
    if let (Some(frozen), Err(e), Some(actor)) = (switch, &result, ctx.actor())
        && (helix_core::governance::is_denial(e) || matches!(e, helix_core::Error::BadRequest(_)))
    {
        let target = helix_core::governance::DenialTarget {
            stream: "*",
            action: if frozen { "registry.freeze" } else { "registry.unfreeze" },
            entity_type: "registry",
            entity_id: "freeze",
        };
        helix_core::governance::audit_denial(app, actor, &ctx.request_id, target, e).await;
    }
    result
}

async fn dispatch_route(app: &App, ctx: &Ctx, route: Route, req: &Request) -> helix_core::Result<Response> {
    let principal = ctx.authorize(app, req, &route).await?;
    let actor = principal.actor();
    match route {
        Route::IssueToken => {
            let body: IssueRequest = http::json_body(req)?;
            let grant = Grant {
                user: body.user,
                role: body.role.parse::<Role>()?,
                workspace_id: Scope::parse(&body.workspace_id)?,
                ttl_seconds: body.ttl_seconds,
                description: body.description,
            };
            tokens::may_manage(&principal, &grant.workspace_id)?;
            let (secret, record) = tokens::issue(app.meta.as_ref(), grant, &actor, &ctx.request_id).await?;
            Ok(secret_response(201, secret.expose(), &record))
        }
        Route::Freeze | Route::Unfreeze => {
            let body: FreezeRequest = http::json_body(req)?;
            let frozen = route == Route::Freeze;
            let (state, changed) =
                helix_core::freeze::set(app, &principal, &ctx.request_id, frozen, &body.reason).await?;
            let mut view = serde_json::to_value(&state).expect("serializable");
            view["changed"] = json!(changed);
            Ok(http::json(200, &view))
        }
        Route::Suspend { ref ws } | Route::Unsuspend { ref ws } => {
            let body: FreezeRequest = http::json_body(req)?;
            let suspended = matches!(route, Route::Suspend { .. });
            let (state, changed) = helix_core::suspension::set(
                app.meta.as_ref(),
                &principal,
                &ctx.request_id,
                ws,
                suspended,
                &body.reason,
            )
            .await?;
            let mut view = serde_json::to_value(&state).expect("serializable");
            view["changed"] = json!(changed);
            Ok(http::json(200, &view))
        }
        Route::ListTokens => {
            let list = tokens::list(app.meta.as_ref(), Some(&principal)).await?;
            Ok(http::json(200, &json!({ "tokens": list })))
        }
        Route::RevokeToken { id } => {
            let revoked =
                tokens::revoke(app.meta.as_ref(), TokenRef::Id(id.0), Some(&principal), &actor, &ctx.request_id)
                    .await?;
            let body = json!({"token": revoked.token, "changed": revoked.changed, "also_revoked": revoked.successors});
            Ok(http::json(200, &body))
        }
        Route::RotateToken => {
            let (secret, record) = tokens::rotate(app.meta.as_ref(), &principal, &ctx.request_id).await?;
            Ok(secret_response(201, secret.expose(), &record))
        }
        Route::Whoami => Ok(http::json(200, &principal)),
        _ => Err(helix_core::Error::NotFound),
    }
}
