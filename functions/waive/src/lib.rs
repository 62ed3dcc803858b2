//! waive: governance decisions on bundle versions (approve, reject, emergency waivers), the official
//! export (its receipt is signed too), and the registry's public key. The only HTTP function that signs
//! receipts and writes ledgers (docs/decisions.md, "Who may sign"). Parse → authorize → helix-core → response; the rules (separation of duties,
//! the state machine, signed receipts, idempotency) live in helix-core.

use helix_core::App;
use helix_core::blobs::Caller;
use helix_core::governance::{self, Request as Decision, WaiverRequest};
use helix_core::http::{self, Ctx, Function, Request, Response, Route};
use serde::Deserialize;
use serde_json::{Value, json};

pub async fn handle(app: &App, req: Request) -> Response {
    http::serve(app, req, Function::Waive, dispatch).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WaiverBody {
    transition: String,
    scope: String,
    justification: String,
    #[serde(default, deserialize_with = "http::optional_whole_number")]
    expires_in_seconds: Option<i64>,
}

fn receipt(created: bool, receipt: &helix_core::ports::LedgerReceipt) -> Response {
    let envelope: Value = serde_json::from_str(&receipt.envelope).unwrap_or(Value::Null);
    http::json(if created { 201 } else { 200 }, &json!({"seq": receipt.seq, "receipt": envelope}))
}

async fn dispatch(app: &App, ctx: &Ctx, route: Route, req: &Request) -> helix_core::Result<Response> {
    if let Route::GovernancePublicKey = route {
        return Ok(http::json(200, &helix_core::keys::public_keys_view(app).await?));
    }
    let result = decide_or_export(app, ctx, route.clone(), req).await;
    if let Err(e) = &result {
        audit_denial(app, ctx, &route, e).await;
    }
    result
}

/// Every governance denial on a decision or an export is audited in the workspace's stream (SPEC §4);
/// an unapproved export is audited by `governance::export` itself, with the transition it needed. A
/// request whose credential did not verify (401) names no actor and is not.
async fn audit_denial(app: &App, ctx: &Ctx, route: &Route, e: &helix_core::Error) {
    let (ws, name, version, action) = match route {
        Route::Approve { ws, name, version } => (ws, name, version, "governance.approval"),
        Route::Reject { ws, name, version } => (ws, name, version, "governance.rejection"),
        Route::Waive { ws, name, version } => (ws, name, version, "governance.waiver"),
        Route::Export { ws, name, version } => (ws, name, version, "bundle.export"),
        _ => return,
    };
    let Some(actor) = ctx.actor() else { return };
    // A credential of another workspace (`forbidden_workspace`) writes nothing into this workspace's
    // stream: otherwise any token could fill any tenant's audit trail with refusals it chose. Its
    // refusal is in the request log and the request metrics.
    if !governance::is_denial(e)
        || matches!(e, helix_core::Error::NotApproved { .. } | helix_core::Error::ForbiddenWorkspace)
    {
        return;
    }
    let stream = ws.to_string();
    let entity_id = helix_core::domain::bundle_ref(ws, name.as_str(), version.as_str());
    let target =
        governance::DenialTarget { stream: &stream, action, entity_type: "bundle_version", entity_id: &entity_id };
    governance::audit_denial(app, actor, &ctx.request_id, target, e).await;
}

async fn decide_or_export(app: &App, ctx: &Ctx, route: Route, req: &Request) -> helix_core::Result<Response> {
    let principal = ctx.authorize(app, req, &route).await?;
    let caller = Caller { principal: &principal, request_id: &ctx.request_id };
    let (ws, name, version, decision) = match route {
        Route::Approve { ws, name, version } => (ws, name, version, Decision::Approve),
        Route::Reject { ws, name, version } => (ws, name, version, Decision::Reject),
        Route::Export { ws, name, version } => {
            let read = ctx.read_version(&ws, name.as_str(), version.as_str());
            let mut exported = governance::export(app, caller, &ws, &name, &version, read).await?;
            exported.proof = exported.proof.absolute(&helix_core::proofs::base_url(app, req));
            return Ok(http::json(200, &exported));
        }
        Route::ReportUnregisteredExport { ws, name, version } => {
            let report: governance::UnregisteredExport = http::json_body(req)?;
            let recorded = governance::report_unregistered_export(app, caller, &ws, &name, &version, &report).await?;
            let answer = json!({"id": report.id, "recorded": recorded});
            return Ok(http::json(if recorded { 201 } else { 200 }, &answer));
        }
        Route::Waive { ws, name, version } => {
            // A malformed waiver is an invalid waiver (400 `waiver_invalid`, audited as a denial).
            let body: WaiverBody = http::json_body(req).map_err(|e| helix_core::Error::WaiverInvalid(e.to_string()))?;
            let waiver = WaiverRequest {
                transition: body.transition,
                scope: body.scope,
                justification: body.justification,
                expires_in_seconds: body.expires_in_seconds,
            };
            (ws, name, version, Decision::Waive(waiver))
        }
        _ => return Err(helix_core::Error::NotFound),
    };
    let read = ctx.read_version(&ws, name.as_str(), version.as_str());
    let (made, created) = governance::decide(app, caller, &ws, &name, &version, decision, read).await?;
    Ok(receipt(created, &made))
}
