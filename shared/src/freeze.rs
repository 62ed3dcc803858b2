//! The freeze switch (SPEC §2, the kill switch of an incident runbook): an admin of every workspace
//! freezes the registry with a reason; from the very next request every mutating route, on every
//! function, answers 503 `registry_frozen` (the switch is read with the token lookup, in the same
//! round trip); reads, health and the unfreeze route keep working. Freeze and unfreeze are changes with
//! their audit events (`registry.freeze`, `registry.unfreeze`, stream `*`). The CLI's `helix teams`
//! commands write the store directly and are not frozen (revoking a token is what a freeze is for).

use serde_json::json;

use crate::App;
use crate::auth::Principal;
use crate::domain::time::now_rfc3339_ms;
use crate::domain::{AuditDraft, Outcome, Scope};
use crate::error::{Error, Result};
use crate::ports::{Change, Commit, Freeze};

/// 503 `registry_frozen`, with the reason, while the registry is frozen: the switch as already read
/// (with the caller's token), else read now.
pub async fn refuse_if_frozen(meta: &dyn crate::ports::MetaStore, known: Option<Freeze>) -> Result<()> {
    let freeze = match known {
        Some(f) => f,
        None => meta.freeze().await?,
    };
    if freeze.frozen {
        return Err(Error::RegistryFrozen(freeze.reason.unwrap_or_default()));
    }
    Ok(())
}

/// Set the switch. Returns the switch as it now is and whether this call moved it (a repeat is a no-op).
pub async fn set(
    app: &App,
    principal: &Principal,
    request_id: &str,
    frozen: bool,
    reason: &str,
) -> Result<(Freeze, bool)> {
    if principal.workspace_id != Scope::All {
        // A workspace's admin cannot stop everyone else's registry.
        return Err(Error::ForbiddenWorkspace);
    }
    record(app.meta.as_ref(), &principal.actor(), request_id, frozen, reason).await
}

/// Set the switch in `meta` as `actor`, with its audit event: the route's work, and `helix freeze` /
/// `helix unfreeze` on an operator machine (straight into the store, as `helix teams` writes: for a
/// registry whose API is down or not deployed yet, such as tables just restored).
pub async fn record(
    meta: &dyn crate::ports::MetaStore,
    actor: &str,
    request_id: &str,
    frozen: bool,
    reason: &str,
) -> Result<(Freeze, bool)> {
    let reason = crate::domain::switch_reason(reason)?;
    let state =
        Freeze { frozen, reason: Some(reason.to_owned()), by: Some(actor.to_owned()), at: Some(now_rfc3339_ms()) };
    let event = AuditDraft {
        stream: "*".into(),
        actor: actor.to_owned(),
        action: if frozen { "registry.freeze" } else { "registry.unfreeze" }.into(),
        entity_type: "registry".into(),
        entity_id: "freeze".into(),
        outcome: Outcome::Success,
        request_id: request_id.into(),
        details: json!({"reason": reason}),
    };
    match meta.commit(Change::SetFreeze(state.clone()), event).await? {
        Commit::Applied(_) => Ok((state, true)),
        Commit::AlreadyDone => Ok((meta.freeze().await?, false)),
    }
}
