//! Roles are ordered: viewer < publisher < approver < safety_reviewer < admin. "min role" means at least.

use std::fmt;
use std::str::FromStr;

use crate::error::Error;

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug, Hash)]
pub enum Role {
    Viewer,
    Publisher,
    Approver,
    SafetyReviewer,
    Admin,
}

impl Role {
    pub const ALL: [Role; 5] = [Role::Viewer, Role::Publisher, Role::Approver, Role::SafetyReviewer, Role::Admin];

    pub fn at_least(self, min: Role) -> bool {
        self >= min
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Publisher => "publisher",
            Role::Approver => "approver",
            Role::SafetyReviewer => "safety_reviewer",
            Role::Admin => "admin",
        }
    }
}

impl FromStr for Role {
    type Err = Error;
    fn from_str(s: &str) -> Result<Role, Error> {
        Role::ALL.into_iter().find(|r| r.as_str() == s).ok_or_else(|| Error::BadRequest(format!("unknown role {s:?}")))
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl serde::Serialize for Role {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_are_ordered_and_round_trip() {
        assert!(Role::Admin.at_least(Role::SafetyReviewer));
        assert!(Role::SafetyReviewer.at_least(Role::Approver));
        assert!(Role::Publisher.at_least(Role::Viewer));
        assert!(!Role::Viewer.at_least(Role::Publisher));
        for r in Role::ALL {
            assert_eq!(r.as_str().parse::<Role>().unwrap(), r);
        }
        assert!("root".parse::<Role>().is_err());
    }
}
