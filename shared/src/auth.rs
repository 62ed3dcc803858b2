//! Authentication and authorization, shared by every function. A bearer credential becomes a
//! `Principal`; `Principal::authorize` is the one place the role order and workspace scope are
//! enforced. API tokens are looked up by SHA-256; OIDC JWTs are verified by `oidc::OidcVerifier`;
//! both yield the same `Principal`, so no handler knows which kind of credential it was given.

use std::sync::Arc;

pub use crate::domain::principal::{Principal, PrincipalKind};
use crate::domain::time::now_unix;
use crate::domain::{BearerToken, WorkspaceId};
use crate::error::{Error, Result};
use crate::oidc::OidcVerifier;
use crate::ports::{Gate, MetaStore, Prefetch};

/// Longest Authorization header we look at; anything longer is refused unparsed.
pub const MAX_AUTHORIZATION_LEN: usize = 8192;

enum Credential<'a> {
    ApiToken(&'a str),
    Jwt(&'a str),
}

fn credential(header: Option<&str>) -> Result<Credential<'_>> {
    let header = header.ok_or(Error::TokenMissing)?;
    if header.len() > MAX_AUTHORIZATION_LEN {
        return Err(Error::TokenInvalid);
    }
    if header.trim().eq_ignore_ascii_case("bearer") {
        return Err(Error::TokenMissing);
    }
    let (scheme, value) = header.split_once(' ').ok_or(Error::TokenInvalid)?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(Error::TokenInvalid);
    }
    let value = value.trim();
    if value.is_empty() {
        return Err(Error::TokenMissing);
    }
    if value.starts_with(crate::domain::token::TOKEN_PREFIX) {
        Ok(Credential::ApiToken(value))
    } else if value.split('.').count() == 3 {
        Ok(Credential::Jwt(value))
    } else {
        Err(Error::TokenInvalid)
    }
}

pub struct Authenticator {
    meta: Arc<dyn MetaStore>,
    oidc: Option<OidcVerifier>,
}

impl Authenticator {
    pub fn new(meta: Arc<dyn MetaStore>, oidc: Option<OidcVerifier>) -> Authenticator {
        Authenticator { meta, oidc }
    }

    /// Turn an Authorization header into a principal, or the reason it cannot be one, with the switches
    /// that concern the request: the freeze switch when `with_freeze` (a request that changes
    /// something), and the suspension of `workspace` (the workspace its route names). An API token's
    /// lookup brings them in the same round trip; a JWT's are read once it is verified, also in one
    /// round trip, for the route's workspace or else the JWT's own. A switch not in the `Gate` is one
    /// the caller reads if it needs it (an API token of one workspace on a route naming none).
    /// `prefetch` (the item the route reads first: a blob link, a bundle version) is read in the same
    /// round trip where the store can (`MetaStore::gate_with`); it is the caller's to use only once the
    /// principal is authorized.
    pub async fn authenticate(
        &self,
        authorization: Option<&str>,
        with_freeze: bool,
        workspace: Option<&WorkspaceId>,
        prefetch: Option<Prefetch<'_>>,
    ) -> Result<(Principal, Gate)> {
        match credential(authorization)? {
            Credential::ApiToken(raw) => {
                let token = BearerToken::parse(raw)?;
                let mut gate = self.read_gate(Some(&token.sha256()), with_freeze, workspace, prefetch).await?;
                let record = gate.token.take().ok_or(Error::TokenInvalid)?;
                if let Some(refusal) = record.refusal(now_unix()) {
                    return Err(refusal);
                }
                let principal = Principal {
                    user: record.user,
                    role: record.role,
                    workspace_id: record.workspace_id,
                    credential_id: record.id,
                    kind: PrincipalKind::ApiToken,
                };
                Ok((principal, gate))
            }
            Credential::Jwt(jwt) => match &self.oidc {
                Some(oidc) => {
                    let principal = oidc.verify(jwt).await?;
                    let scoped = crate::suspension::scope_of(workspace, &principal);
                    let gate = if with_freeze || scoped.is_some() || prefetch.is_some() {
                        self.read_gate(None, with_freeze, scoped, prefetch).await?
                    } else {
                        Gate::default()
                    };
                    Ok((principal, gate))
                }
                // OIDC not configured: a JWT is refused, never accepted unverified.
                None => Err(Error::TokenInvalid),
            },
        }
    }
}

impl Authenticator {
    async fn read_gate(
        &self,
        token_sha256: Option<&str>,
        with_freeze: bool,
        workspace: Option<&WorkspaceId>,
        prefetch: Option<Prefetch<'_>>,
    ) -> Result<Gate> {
        match prefetch {
            Some(p) => self.meta.gate_with(token_sha256, with_freeze, workspace, p).await,
            None => self.meta.gate(token_sha256, with_freeze, workspace).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authorization_headers_are_classified_before_any_lookup() {
        assert!(matches!(credential(None), Err(Error::TokenMissing)));
        assert!(matches!(credential(Some("Bearer ")), Err(Error::TokenMissing)));
        assert!(matches!(credential(Some("Bearer")), Err(Error::TokenMissing)));
        assert!(matches!(credential(Some("Basic dXNlcjpwYXNz")), Err(Error::TokenInvalid)));
        assert!(matches!(credential(Some("Bearer garbage")), Err(Error::TokenInvalid)));
        let long = format!("Bearer hlx_{}", "a".repeat(MAX_AUTHORIZATION_LEN));
        assert!(matches!(credential(Some(&long)), Err(Error::TokenInvalid)));
        assert!(matches!(credential(Some("bearer hlx_x")), Ok(Credential::ApiToken(_))));
        assert!(matches!(credential(Some("Bearer a.b.c")), Ok(Credential::Jwt(_))));
    }
}
