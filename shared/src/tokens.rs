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
    if !(1..=MAX_USER_LEN).contains(&chars) || grant.user.chars().any(char::is_control) {
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
    match meta.commit(Change::IssueToken(record.clone()), event).await? {
        Commit::Applied(_) => Ok((secret, record)),
        // 32 random bytes colliding with a stored token: never expected; refuse rather than share.
        Commit::AlreadyDone => Err(Error::Internal("token id or hash collision".into())),
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
/// second call reports `changed: false` and writes nothing.
pub async fn revoke(
    meta: &dyn MetaStore,
    target: TokenRef,
    principal: Option<&Principal>,
    actor: &str,
    request_id: &str,
) -> Result<(TokenRecord, bool)> {
    let found = match &target {
        TokenRef::Id(id) => meta.token_by_id(id).await?,
        TokenRef::Sha256(sha) => meta.token_by_sha256(&sha.to_ascii_lowercase()).await?,
    };
    let mut record = found.ok_or(Error::TokenNotFound)?;
    if let Some(p) = principal {
        // Another workspace's token is reported as absent, not as forbidden: ids are not probed.
        may_manage(p, &record.workspace_id).map_err(|_| Error::TokenNotFound)?;
    }
    let change = Change::RevokeToken { sha256: record.sha256.clone() };
    let changed =
        matches!(meta.commit(change, event(&record, "token.revoke", actor, request_id)).await?, Commit::Applied(_));
    record.disabled = true;
    Ok((record, changed))
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
