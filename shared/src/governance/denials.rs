//! Governance refusals on the record: each is an audit event (outcome `denied`) in the stream of the
//! workspace concerned, counted in `helix_governance_denials_total`.

use serde_json::json;

use crate::App;
use crate::blobs::Caller;
use crate::domain::governance::State;
use crate::domain::{AuditDraft, Digest, Outcome};
use crate::error::Error;

/// Whether a refusal of a governance route (approve, reject, waive, export) or of the freeze switch is
/// a governance denial, audited with outcome `denied` and counted in `helix_governance_denials_total`
/// (SPEC §4): separation of duties, a state that forbids the decision, an invalid waiver, the export
/// limit, a role or workspace the credential lacks, an unapproved export (`deny`, in `export`).
pub fn is_denial(e: &Error) -> bool {
    matches!(
        e,
        Error::SelfApproval
            | Error::GovernanceConflict { .. }
            | Error::WaiverInvalid(_)
            | Error::NotApproved { .. }
            | Error::InsufficientRole { .. }
            | Error::ForbiddenWorkspace
    )
}

/// Audit a refusal as `denied` in `stream`: the reason (the problem's `reason`), its status and
/// detail, under the request id. Best effort: the refusal stands whether or not it is recorded.
pub async fn audit_denial(app: &App, actor: &str, request_id: &str, target: DenialTarget<'_>, e: &Error) {
    let (status, reason) = crate::http::problem::classify(e);
    let event = AuditDraft {
        stream: target.stream.to_owned(),
        actor: actor.to_owned(),
        action: target.action.to_owned(),
        entity_type: target.entity_type.to_owned(),
        entity_id: target.entity_id.to_owned(),
        outcome: Outcome::Denied,
        request_id: request_id.into(),
        details: json!({"reason": reason, "status": status, "detail": e.to_string()}),
    };
    if let Err(e) = app.audit.append(event).await {
        tracing::error!(error = %e, "could not audit a governance denial");
    }
}

/// What a denial was about: the stream it is recorded in and the action and entity it refused.
pub struct DenialTarget<'a> {
    pub stream: &'a str,
    pub action: &'a str,
    pub entity_type: &'a str,
    pub entity_id: &'a str,
}

/// Audit a governance refusal (best effort: the refusal stands whether or not it is recorded).
pub(super) async fn deny(app: &App, caller: Caller<'_>, bundle: &str, transition: &Digest, state: State) {
    let event = AuditDraft {
        stream: bundle.split('/').next().unwrap_or("*").to_owned(),
        actor: caller.principal.actor(),
        action: "bundle.export".into(),
        entity_type: "bundle_version".into(),
        entity_id: bundle.to_owned(),
        outcome: Outcome::Denied,
        request_id: caller.request_id.into(),
        details: json!({"reason": "not_approved", "state": state.as_str(), "transition": transition}),
    };
    if let Err(e) = app.audit.append(event).await {
        tracing::error!(error = %e, "could not audit an export denial");
    }
}
