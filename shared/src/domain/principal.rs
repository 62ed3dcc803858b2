//! Who is calling: the one shape both credential kinds (API tokens, OIDC JWTs) are turned into, and
//! the one place the role order and the workspace scope are enforced (`Principal::authorize`).

use serde::Serialize;

use super::{Role, Scope, WorkspaceId};
use crate::error::{Error, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PrincipalKind {
    ApiToken,
    Oidc,
}

/// Who is calling, as established from a verified credential (never from the request body).
#[derive(Clone, Debug, Serialize)]
pub struct Principal {
    pub user: String,
    pub role: Role,
    #[serde(serialize_with = "scope_str")]
    pub workspace_id: Scope,
    /// The token id (never its secret) or the JWT subject.
    pub credential_id: String,
    pub kind: PrincipalKind,
}

fn scope_str<S: serde::Serializer>(s: &Scope, ser: S) -> std::result::Result<S::Ok, S::Error> {
    ser.serialize_str(s.as_str())
}

impl Principal {
    /// At least `min` role, and (for a workspace route) a scope that covers the workspace.
    pub fn authorize(&self, min: Role, ws: Option<&WorkspaceId>) -> Result<()> {
        if let Some(ws) = ws
            && !self.workspace_id.covers(ws)
        {
            return Err(Error::ForbiddenWorkspace);
        }
        if !self.role.at_least(min) {
            return Err(Error::InsufficientRole { need: min.as_str(), have: self.role.as_str() });
        }
        Ok(())
    }

    /// How the audit trail names this principal: user and credential id.
    pub fn actor(&self) -> String {
        format!("{}@{}", self.user, self.credential_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(role: Role, scope: &str) -> Principal {
        Principal {
            user: "u".into(),
            role,
            workspace_id: Scope::parse(scope).unwrap(),
            credential_id: "tok_1".into(),
            kind: PrincipalKind::ApiToken,
        }
    }

    #[test]
    fn authorization_checks_workspace_then_role() {
        let a = WorkspaceId::parse("a").unwrap();
        let b = WorkspaceId::parse("b").unwrap();
        assert!(p(Role::Publisher, "a").authorize(Role::Publisher, Some(&a)).is_ok());
        assert!(matches!(p(Role::Publisher, "a").authorize(Role::Publisher, Some(&b)), Err(Error::ForbiddenWorkspace)));
        assert!(matches!(
            p(Role::Viewer, "a").authorize(Role::Publisher, Some(&a)),
            Err(Error::InsufficientRole { .. })
        ));
        assert!(p(Role::Viewer, "*").authorize(Role::Viewer, Some(&b)).is_ok());
        assert!(p(Role::Viewer, "a").authorize(Role::Viewer, None).is_ok());
    }
}
