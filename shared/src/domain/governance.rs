//! The governance state machine of a bundle version (SPEC §4), one pure function: `next`. Every
//! decision is checked here, whoever records it.
//!
//! | state \ decision | approve  | reject   | waive            | export (permitted) | export (not) |
//! |------------------|----------|----------|------------------|--------------------|--------------|
//! | submitted        | approved | rejected | submitted        | exported           | not_approved |
//! | approved         | approved | rejected | waiver_invalid   | exported           | exported     |
//! | rejected         | version_rejected (every decision but an export a mode permits)            |
//! | exported         | version_exported (every decision but a re-export)                          |
//!
//! Rules where the SPEC is silent (docs/decisions.md): a rejection is final for a version (publish a
//! new version); an approval can still be withdrawn by a later rejection until the version is
//! exported; an export is final; a waiver is only for a version that is neither approved nor
//! rejected. Whether an export is permitted (approved, a live waiver for its transition, or a
//! governance mode that does not enforce) is decided by the caller and passed in.

use serde::Serialize;
use serde_json::json;

use super::canonical;
use super::digest::Digest;
use crate::error::{Error, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    Submitted,
    Approved,
    Rejected,
    Exported,
}

impl State {
    pub const ALL: [State; 4] = [State::Submitted, State::Approved, State::Rejected, State::Exported];

    pub fn as_str(self) -> &'static str {
        match self {
            State::Submitted => "submitted",
            State::Approved => "approved",
            State::Rejected => "rejected",
            State::Exported => "exported",
        }
    }

    pub fn parse(s: &str) -> Option<State> {
        State::ALL.into_iter().find(|st| st.as_str() == s)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    Approve,
    Reject,
    Waive,
    /// `permitted`: approved, a live waiver covers the transition, or the mode does not enforce.
    Export {
        permitted: bool,
    },
}

impl Decision {
    pub const ALL: [Decision; 5] = [
        Decision::Approve,
        Decision::Reject,
        Decision::Waive,
        Decision::Export { permitted: true },
        Decision::Export { permitted: false },
    ];
}

/// Why a decision cannot be recorded in a state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    NotApproved,
    VersionRejected,
    VersionExported,
    WaiverNotNeeded,
}

impl Refusal {
    pub fn into_error(self, transition: &Digest) -> Error {
        match self {
            Refusal::NotApproved => Error::NotApproved { transition: transition.to_string() },
            Refusal::VersionRejected => Error::GovernanceConflict {
                reason: "version_rejected",
                detail: "the version was rejected; register a new version".into(),
            },
            Refusal::VersionExported => Error::GovernanceConflict {
                reason: "version_exported",
                detail: "the version was exported; decisions on it are final".into(),
            },
            Refusal::WaiverNotNeeded => Error::WaiverInvalid("the version is approved: no waiver is needed".into()),
        }
    }
}

/// The state a decision leads to from `state`, or why it cannot be recorded.
pub fn next(state: State, decision: Decision) -> std::result::Result<State, Refusal> {
    use Decision::*;
    use State::*;
    match (state, decision) {
        (Exported, Export { .. }) => Ok(Exported),
        (Exported, _) => Err(Refusal::VersionExported),
        (Rejected, Export { permitted: true }) => Ok(Exported),
        (Rejected, Reject) => Ok(Rejected),
        (Rejected, _) => Err(Refusal::VersionRejected),
        (Submitted | Approved, Approve) => Ok(Approved),
        (Submitted | Approved, Reject) => Ok(Rejected),
        (Submitted, Waive) => Ok(Submitted),
        (Approved, Waive) => Err(Refusal::WaiverNotNeeded),
        (Approved, Export { .. }) => Ok(Exported),
        (Submitted, Export { permitted: true }) => Ok(Exported),
        (Submitted, Export { permitted: false }) => Err(Refusal::NotApproved),
    }
}

/// The transition id: `sha256:` of the canonical `{bundle, from, to}`, where `bundle` names the
/// version (`ws/name@version`). A waiver covers exactly one transition id.
pub fn transition_id(bundle: &str, from: State, to: State) -> Result<Digest> {
    let statement = canonical::to_string(&json!({"bundle": bundle, "from": from.as_str(), "to": to.as_str()}))?;
    Ok(Digest::of(statement.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_state_and_decision_pair_has_the_documented_outcome() {
        use Decision::*;
        use Refusal::*;
        use State::*;
        let yes = Export { permitted: true };
        let no = Export { permitted: false };
        let table: [(State, [std::result::Result<State, Refusal>; 5]); 4] = [
            // approve, reject, waive, export (permitted), export (not permitted)
            (Submitted, [Ok(Approved), Ok(Rejected), Ok(Submitted), Ok(Exported), Err(NotApproved)]),
            (Approved, [Ok(Approved), Ok(Rejected), Err(WaiverNotNeeded), Ok(Exported), Ok(Exported)]),
            (Rejected, [Err(VersionRejected), Ok(Rejected), Err(VersionRejected), Ok(Exported), Err(VersionRejected)]),
            (Exported, [Err(VersionExported), Err(VersionExported), Err(VersionExported), Ok(Exported), Ok(Exported)]),
        ];
        assert_eq!(Decision::ALL, [Approve, Reject, Waive, yes, no]);
        for (state, outcomes) in table {
            for (decision, expected) in Decision::ALL.into_iter().zip(outcomes) {
                assert_eq!(next(state, decision), expected, "{state:?} + {decision:?}");
            }
        }
        assert_eq!(State::ALL.len(), 4, "the table covers every state");
    }

    #[test]
    fn transition_ids_name_the_version_and_both_states() {
        let a = transition_id("team-a/model@1.0", State::Submitted, State::Exported).unwrap();
        assert_eq!(a, transition_id("team-a/model@1.0", State::Submitted, State::Exported).unwrap());
        assert_ne!(a, transition_id("team-a/model@1.1", State::Submitted, State::Exported).unwrap());
        assert_ne!(a, transition_id("team-a/model@1.0", State::Approved, State::Exported).unwrap());
        let expected = Digest::of(br#"{"bundle":"team-a/model@1.0","from":"submitted","to":"exported"}"#);
        assert_eq!(a, expected);
    }
}
