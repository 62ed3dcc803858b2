//! Per-workspace suspension (SPEC §2, "contain one tenant without stopping everyone"): an admin of
//! every workspace suspends one workspace with a reason; from the very next request, every request
//! scoped to it (a route naming it, or a credential whose grant is that workspace alone; reads too,
//! API tokens and JWTs alike, and the local upload URL) answers 403 `workspace_suspended`; other
//! workspaces go on. The switch is read with the caller's token in the same round trip
//! (`MetaStore::gate`). Suspend and unsuspend are changes with their audit events
//! (`workspace.suspend`, `workspace.unsuspend`) in the workspace's own stream.

use serde_json::json;

use crate::domain::principal::Principal;
use crate::domain::time::now_rfc3339_ms;
use crate::domain::{AuditDraft, Outcome, Scope, WorkspaceId};
use crate::error::{Error, Result};
use crate::ports::{Change, Commit, MetaStore, Suspension};

/// The workspace a request is scoped to: the one its route names, else the one its credential's grant
/// is limited to (a workspace token asking `whoami`, rotating itself or searching the audit trail).
/// A credential of every workspace on a route naming none is scoped to no workspace.
pub fn scope_of<'a>(route_ws: Option<&'a WorkspaceId>, principal: &'a Principal) -> Option<&'a WorkspaceId> {
    route_ws.or(match &principal.workspace_id {
        Scope::One(ws) => Some(ws),
        Scope::All => None,
    })
}

/// 403 `workspace_suspended`, with the reason, while `ws` is suspended: the switch as already read (with
/// the caller's token), else read now.
pub async fn refuse_if_suspended(meta: &dyn MetaStore, ws: &WorkspaceId, known: Option<Suspension>) -> Result<()> {
    let state = match known {
        Some(s) if s.workspace_id == ws.as_str() => s,
        _ => meta.gate(None, false, Some(ws)).await?.suspension.unwrap_or_default(),
    };
    if state.suspended {
        return Err(Error::WorkspaceSuspended { workspace: ws.to_string(), reason: state.reason.unwrap_or_default() });
    }
    Ok(())
}

/// Set `ws`'s switch as `principal` (the route's work): an admin of every workspace only. Returns the
/// switch as it now is and whether this call moved it (a repeat is a no-op).
pub async fn set(
    meta: &dyn MetaStore,
    principal: &Principal,
    request_id: &str,
    ws: &WorkspaceId,
    suspended: bool,
    reason: &str,
) -> Result<(Suspension, bool)> {
    if principal.workspace_id != Scope::All {
        // A workspace's admin can neither contain another tenant nor lift its own containment.
        return Err(Error::ForbiddenWorkspace);
    }
    record(meta, &principal.actor(), request_id, ws, suspended, reason).await
}

/// Set `ws`'s switch in `meta` as `actor`, with its audit event: the route's work, and `helix teams
/// suspend` / `unsuspend` on an operator machine (straight into the store, as `helix freeze` writes).
pub async fn record(
    meta: &dyn MetaStore,
    actor: &str,
    request_id: &str,
    ws: &WorkspaceId,
    suspended: bool,
    reason: &str,
) -> Result<(Suspension, bool)> {
    let reason = crate::domain::switch_reason(reason)?;
    let state = Suspension {
        workspace_id: ws.to_string(),
        suspended,
        reason: Some(reason.to_owned()),
        by: Some(actor.to_owned()),
        at: Some(now_rfc3339_ms()),
    };
    let event = AuditDraft {
        // The tenant's own stream: its approvers see it in their history, and an admin of every
        // workspace finds every suspension with `?action=workspace.suspend`.
        stream: ws.to_string(),
        actor: actor.to_owned(),
        action: if suspended { "workspace.suspend" } else { "workspace.unsuspend" }.into(),
        entity_type: "workspace".into(),
        entity_id: ws.to_string(),
        outcome: Outcome::Success,
        request_id: request_id.into(),
        details: json!({"reason": reason}),
    };
    match meta.commit(Change::SetSuspension(state.clone()), event).await? {
        Commit::Applied(_) => Ok((state, true)),
        Commit::AlreadyDone => Ok((meta.gate(None, false, Some(ws)).await?.suspension.unwrap_or_default(), false)),
    }
}
