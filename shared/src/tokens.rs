//! Issuing API tokens: generate the secret, store only its SHA-256 with the grant, audit the issue
//! (token id and hash, never the secret) in the same commit. Used by `helix teams token`, by the
//! local server's first-start bootstrap, and (next) by the token function.

use serde_json::json;

use crate::domain::{AuditDraft, BearerToken, Outcome, Role, Scope, TokenRecord};
use crate::error::{Error, Result};
use crate::ports::{Change, Commit, MetaStore};

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
    if grant.user.trim().is_empty() || grant.user.len() > 256 {
        return Err(Error::BadRequest("user must be 1 to 256 characters".into()));
    }
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
    let event = AuditDraft {
        stream: record.workspace_id.as_str().to_owned(),
        actor: actor.to_owned(),
        action: "token.issue".into(),
        entity_type: "token".into(),
        entity_id: record.id.clone(),
        outcome: Outcome::Success,
        request_id: request_id.to_owned(),
        details: json!({
            "sha256": record.sha256, "user": record.user, "role": record.role.as_str(),
            "workspace_id": record.workspace_id.as_str(), "expires_at": record.expires_at,
        }),
    };
    match meta.commit(Change::IssueToken(record.clone()), event).await? {
        Commit::Applied(_) => Ok((secret, record)),
        // 32 random bytes colliding with a stored token: never expected; refuse rather than share.
        Commit::AlreadyDone => Err(Error::Internal("token id or hash collision".into())),
    }
}
