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
        return Ok(http::json(200, &governance::public_keys_view(app).await?));
    }
    let principal = ctx.authorize(app, req, &route).await?;
    let caller = Caller { principal: &principal, request_id: &ctx.request_id };
    let (ws, name, version, decision) = match route {
        Route::Approve { ws, name, version } => (ws, name, version, Decision::Approve),
        Route::Reject { ws, name, version } => (ws, name, version, Decision::Reject),
        Route::Export { ws, name, version } => {
            let mut exported = governance::export(app, caller, &ws, &name, &version).await?;
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
            let body: WaiverBody = http::json_body(req)?;
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
    let (made, created) = governance::decide(app, caller, &ws, &name, &version, decision).await?;
    Ok(receipt(created, &made))
}
