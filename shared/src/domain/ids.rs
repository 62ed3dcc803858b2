//! Workspace ids and token scopes. A workspace id is `[a-z0-9][a-z0-9-]{0,62}`; `*` is the global
//! scope (admin tokens, global audit stream) and never a workspace.

use std::fmt;

use crate::error::{Error, Result};

/// How receipts, audit events and messages name a bundle version: `ws/name@version`.
pub fn bundle_ref(ws: &WorkspaceId, name: &str, version: &str) -> String {
    format!("{ws}/{name}@{version}")
}

#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct WorkspaceId(String);

impl WorkspaceId {
    pub fn parse(s: &str) -> Result<WorkspaceId> {
        let b = s.as_bytes();
        let ok = !b.is_empty()
            && b.len() <= 63
            && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
            && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-');
        if ok {
            Ok(WorkspaceId(s.to_owned()))
        } else {
            Err(Error::InvalidWorkspace("a workspace id matches [a-z0-9][a-z0-9-]{0,62}".into()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for WorkspaceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a credential may touch: every workspace, or one.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Scope {
    All,
    One(WorkspaceId),
}

impl Scope {
    pub fn parse(s: &str) -> Result<Scope> {
        if s == "*" { Ok(Scope::All) } else { WorkspaceId::parse(s).map(Scope::One) }
    }

    pub fn covers(&self, ws: &WorkspaceId) -> bool {
        match self {
            Scope::All => true,
            Scope::One(own) => own == ws,
        }
    }

    /// The audit stream this scope writes to: its workspace, or `*`.
    pub fn as_str(&self) -> &str {
        match self {
            Scope::All => "*",
            Scope::One(ws) => ws.as_str(),
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workspace_ids_follow_the_pattern() {
        for good in ["a", "team-a", "0", "a-", &"a".repeat(63)] {
            assert!(WorkspaceId::parse(good).is_ok(), "{good}");
        }
        for bad in ["", "-a", "Team", "a_b", "a/b", "..", "*", "a b", &"a".repeat(64)] {
            assert!(WorkspaceId::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn global_scope_covers_every_workspace_and_one_scope_only_its_own() {
        let a = WorkspaceId::parse("a").unwrap();
        let b = WorkspaceId::parse("b").unwrap();
        assert!(Scope::parse("*").unwrap().covers(&b));
        assert!(Scope::One(a.clone()).covers(&a));
        assert!(!Scope::One(a).covers(&b));
    }
}
