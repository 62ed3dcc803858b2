//! The token lifecycle: issue, list, revoke, rotate. Secrets are generated here and returned once;
//! only their SHA-256 is stored, and every change is audited (token id and hash, never the secret)
//! in the same commit. Used by the token function, `helix teams …` and the first-start bootstrap.
//!
//! Scope rule: an admin of one workspace manages that workspace's tokens only; global (`*`) tokens
//! are issued, listed and revoked by global admins only.

use serde_json::json;

use crate::auth::{Principal, PrincipalKind};
use crate::domain::token::{MAX_DESCRIPTION_LEN, MAX_USER_LEN, check_ttl};
use crate::domain::{AuditDraft, BearerToken, Outcome, Role, Scope, TokenRecord};
use crate::error::{Error, Result};
use crate::ports::{Change, Commit, MetaStore};

fn event(record: &TokenRecord, action: &str, actor: &str, request_id: &str) -> AuditDraft {
    AuditDraft {
        stream: record.workspace_id.as_str().to_owned(),
        actor: actor.to_owned(),
        action: action.into(),
        entity_type: "token".into(),
        entity_id: record.id.clone(),
        outcome: Outcome::Success,
        request_id: request_id.to_owned(),
        details: json!({
            "sha256": record.sha256, "user": record.user, "role": record.role.as_str(),
            "workspace_id": record.workspace_id.as_str(), "expires_at": record.expires_at,
        }),
    }
}

/// May `principal` (already at least admin) manage tokens of `scope`?
pub fn may_manage(principal: &Principal, scope: &Scope) -> Result<()> {
    match (&principal.workspace_id, scope) {
        (Scope::All, _) => Ok(()),
        (Scope::One(own), Scope::One(target)) if own == target => Ok(()),
        _ => Err(Error::ForbiddenWorkspace),
    }
}

pub struct Grant {
    pub user: String,
    pub role: Role,
    pub workspace_id: Scope,
    pub ttl_seconds: Option<i64>,
    pub description: Option<String>,
}

/// Issue a token; the returned secret is the only copy there will ever be.
pub async fn issue(
    meta: &dyn MetaStore,
    grant: Grant,
    actor: &str,
    request_id: &str,
) -> Result<(BearerToken, TokenRecord)> {
    let chars = grant.user.chars().count();
    if !(1..=MAX_USER_LEN).contains(&chars)
        || grant.user.chars().any(|c| c.is_control() || crate::domain::is_invisible_format(c))
    {
        return Err(Error::BadRequest(format!(
            "user must be 1 to {MAX_USER_LEN} characters, none of them control characters"
        )));
    }
    if grant.description.as_ref().is_some_and(|d| d.chars().count() > MAX_DESCRIPTION_LEN) {
        return Err(Error::BadRequest(format!("description must be at most {MAX_DESCRIPTION_LEN} characters")));
    }
    grant.ttl_seconds.map(check_ttl).transpose()?;
    let secret = BearerToken::generate();
    let record = TokenRecord::new(
        &secret,
        grant.user,
        grant.role,
        grant.workspace_id,
        grant.ttl_seconds,
        actor.to_owned(),
        grant.description,
    );
    let event = event(&record, "token.issue", actor, request_id);
    let refusal = match meta.commit(Change::IssueToken(record.clone()), event).await {
        Ok(Commit::Applied(_)) => return Ok((secret, record)),
        // 32 random bytes colliding with a stored token (never expected), or this very issue
        // committed and only its answer was lost (a store without idempotent re-sends).
        Ok(Commit::AlreadyDone) => Error::Internal("token id or hash collision".into()),
        Err(e @ Error::OutcomeUnknown(_)) => e,
        Err(e) => return Err(e),
    };
    resolve_by_read_back(meta, secret, record, refusal).await
}

/// A token change whose answer was lost or ambiguous: if the new token (whose hash is this request's
/// own) is stored and live, the change committed and the caller gets its secret; if the store cannot
/// say, the outcome stays unknown; otherwise `refusal`.
async fn resolve_by_read_back(
    meta: &dyn MetaStore,
    secret: BearerToken,
    record: TokenRecord,
    refusal: Error,
) -> Result<(BearerToken, TokenRecord)> {
    match meta.token_by_sha256(&record.sha256).await {
        Ok(Some(stored)) if stored.id == record.id && !stored.disabled => Ok((secret, record)),
        Ok(Some(_)) => Err(Error::TokenRevoked),
        Ok(None) => Err(refusal),
        Err(e) => Err(Error::OutcomeUnknown(format!("reading back the new token: {e}"))),
    }
}

/// The tokens `principal` may see, oldest first.
pub async fn list(meta: &dyn MetaStore, principal: Option<&Principal>) -> Result<Vec<TokenRecord>> {
    let all = meta.list_tokens().await?;
    Ok(all.into_iter().filter(|t| principal.is_none_or(|p| may_manage(p, &t.workspace_id).is_ok())).collect())
}

/// How an operator names a token: by id, or by the SHA-256 of its secret (incident response).
pub enum TokenRef {
    Id(String),
    Sha256(String),
}

/// Disable a token; it is refused from its very next request. Revoking twice is not an error: the
/// second call reports `changed: false` and writes nothing. Every token it was rotated into is
/// revoked too (returned in order), so a stolen token that rotated itself is not out of reach.
pub async fn revoke(
    meta: &dyn MetaStore,
    target: TokenRef,
    principal: Option<&Principal>,
    actor: &str,
    request_id: &str,
) -> Result<Revoked> {
    let found = match &target {
        TokenRef::Id(id) => meta.token_by_id(id).await?,
        TokenRef::Sha256(sha) => meta.token_by_sha256(&sha.to_ascii_lowercase()).await?,
    };
    let record = found.ok_or(Error::TokenNotFound)?;
    if let Some(p) = principal {
        // Another workspace's token is reported as absent, not as forbidden: ids are not probed.
        may_manage(p, &record.workspace_id).map_err(|_| Error::TokenNotFound)?;
    }
    let changed = disable(meta, &record, actor, request_id, None).await?;
    let mut successors = Vec::new();
    // Re-read: a rotation may have committed between the lookup and the revocation.
    let mut next = meta.token_by_id(&record.id).await?.and_then(|t| t.replaced_by);
    while let Some(id) = next.take() {
        if successors.len() >= MAX_ROTATION_CHAIN {
            return Err(Error::Internal(format!("rotation chain of {} longer than {MAX_ROTATION_CHAIN}", record.id)));
        }
        let Some(successor) = meta.token_by_id(&id).await? else { break };
        disable(meta, &successor, actor, request_id, Some(&record.id)).await?;
        next = meta.token_by_id(&successor.id).await?.and_then(|t| t.replaced_by);
        successors.push(successor.id);
    }
    let mut record = record;
    record.disabled = true;
    Ok(Revoked { token: record, changed, successors })
}

/// Longest chain of rotations a revocation follows.
const MAX_ROTATION_CHAIN: usize = 1000;

/// The outcome of a revocation.
pub struct Revoked {
    pub token: TokenRecord,
    /// False when the token was already disabled.
    pub changed: bool,
    /// Tokens it had been rotated into, revoked with it, in order.
    pub successors: Vec<String>,
}

async fn disable(
    meta: &dyn MetaStore,
    record: &TokenRecord,
    actor: &str,
    request_id: &str,
    via: Option<&str>,
) -> Result<bool> {
    let mut draft = event(record, "token.revoke", actor, request_id);
    if let Some(origin) = via {
        draft.details["rotated_from"] = json!(origin);
    }
    let change = Change::RevokeToken { sha256: record.sha256.clone() };
    Ok(matches!(meta.commit(change, draft).await?, Commit::Applied(_)))
}

/// Replace the caller's own API token by a new secret with the same grant and expiry; the old one is
/// disabled in the same commit.
pub async fn rotate(
    meta: &dyn MetaStore,
    principal: &Principal,
    request_id: &str,
) -> Result<(BearerToken, TokenRecord)> {
    if principal.kind != PrincipalKind::ApiToken {
        return Err(Error::BadRequest("only API tokens rotate; renew an OIDC token at its issuer".into()));
    }
    let old = meta.token_by_id(&principal.credential_id).await?.ok_or(Error::TokenRevoked)?;
    let secret = BearerToken::generate();
    let mut new = TokenRecord::new(
        &secret,
        old.user.clone(),
        old.role,
        old.workspace_id.clone(),
        None,
        principal.actor(),
        old.description.clone(),
    );
    new.expires_at = old.expires_at;
    let mut draft = event(&new, "token.rotate", &principal.actor(), request_id);
    draft.details["replaces"] = json!(old.id);
    let refusal =
        match meta.commit(Change::RotateToken { old_sha256: old.sha256.clone(), new: new.clone() }, draft).await {
            Ok(Commit::Applied(_)) => return Ok((secret, new)),
            // Revoked or rotated by someone else, or this very rotation committed and only its answer
            // was lost (a store without idempotent re-sends reports the re-send as already done).
            Ok(Commit::AlreadyDone) => Error::TokenRevoked,
            Err(e @ Error::OutcomeUnknown(_)) => e,
            Err(e) => return Err(e),
        };
    // The new token's hash is this request's own: if it is stored, the rotation committed, the old
    // token is disabled, and the caller must get the new secret. Otherwise the old token still works.
    match meta.token_by_sha256(&new.sha256).await {
        Ok(Some(_)) => Ok((secret, new)),
        _ => Err(refusal),
    }
}
