//! Audit events and the hash chain (SPEC §5). An event's `hash` is `sha256:` of its canonical JSON
//! without `hash`; `prev` is the previous event's hash in the same stream (null for seq 1). Events
//! are sealed only by an AuditLog adapter, which knows the head of the stream.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::canonical;
use super::digest::Digest;
use crate::error::{Error, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Success,
    Denied,
    Warned,
    Failed,
}

/// An event before it has a place in its stream.
#[derive(Clone, Debug, PartialEq)]
pub struct AuditDraft {
    pub stream: String,
    pub actor: String,
    pub action: String,
    pub entity_type: String,
    pub entity_id: String,
    pub outcome: Outcome,
    pub request_id: String,
    pub details: Value,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AuditEvent {
    pub stream: String,
    pub seq: u64,
    pub ts: String,
    pub actor: String,
    pub action: String,
    pub entity_type: String,
    pub entity_id: String,
    pub outcome: Outcome,
    pub request_id: String,
    pub details: Value,
    pub prev: Option<String>,
    pub hash: String,
}

impl AuditDraft {
    /// Give the draft its place after `head` (None: first in the stream) and compute its hash.
    pub fn seal(self, head: Option<&AuditEvent>, ts: String) -> Result<AuditEvent> {
        let mut event = AuditEvent {
            stream: self.stream,
            seq: head.map_or(1, |h| h.seq + 1),
            ts,
            actor: self.actor,
            action: self.action,
            entity_type: self.entity_type,
            entity_id: self.entity_id,
            outcome: self.outcome,
            request_id: self.request_id,
            details: self.details,
            prev: head.map(|h| h.hash.clone()),
            hash: String::new(),
        };
        event.hash = event.compute_hash()?;
        Ok(event)
    }
}

impl AuditEvent {
    fn unhashed_json(&self) -> Value {
        json!({
            "stream": self.stream, "seq": self.seq, "ts": self.ts, "actor": self.actor,
            "action": self.action, "entity_type": self.entity_type, "entity_id": self.entity_id,
            "outcome": self.outcome, "request_id": self.request_id, "details": self.details,
            "prev": self.prev,
        })
    }

    pub fn compute_hash(&self) -> Result<String> {
        let canon = canonical::to_string(&self.unhashed_json())?;
        Ok(Digest::of(canon.as_bytes()).to_string())
    }

    /// The canonical line stored by adapters and written to exports.
    pub fn canonical(&self) -> Result<String> {
        let mut v = self.unhashed_json();
        v["hash"] = Value::String(self.hash.clone());
        canonical::to_string(&v)
    }

    pub fn from_canonical(line: &str) -> Result<AuditEvent> {
        serde_json::from_str(line).map_err(|e| Error::Internal(format!("stored audit event: {e}")))
    }

    /// Checks this event's own hash and that it follows `prev_event` (None: must be seq 1).
    pub fn verify_after(&self, prev_event: Option<&AuditEvent>) -> Result<()> {
        let expect_seq = prev_event.map_or(1, |p| p.seq + 1);
        let expect_prev = prev_event.map(|p| p.hash.clone());
        if self.seq != expect_seq || self.prev != expect_prev {
            return Err(Error::Internal(format!("audit chain broken at {}#{}", self.stream, self.seq)));
        }
        if self.compute_hash()? != self.hash {
            return Err(Error::Internal(format!("audit hash mismatch at {}#{}", self.stream, self.seq)));
        }
        Ok(())
    }
}

/// Checks a run of events of one stream, starting at seq 1.
pub fn verify_chain(events: &[AuditEvent]) -> Result<()> {
    let mut prev = None;
    for e in events {
        e.verify_after(prev)?;
        prev = Some(e);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn draft(n: u32) -> AuditDraft {
        AuditDraft {
            stream: "team-a".into(),
            actor: "alice".into(),
            action: "blob.link".into(),
            entity_type: "blob".into(),
            entity_id: format!("e{n}"),
            outcome: Outcome::Success,
            request_id: "r".into(),
            details: json!({"size": 3}),
        }
    }

    #[test]
    fn sealed_events_chain_and_verify() {
        let a = draft(1).seal(None, "2026-11-23T00:00:00.000Z".into()).unwrap();
        let b = draft(2).seal(Some(&a), "2026-11-23T00:00:01.000Z".into()).unwrap();
        assert_eq!((a.seq, b.seq), (1, 2));
        assert_eq!(b.prev.as_deref(), Some(a.hash.as_str()));
        verify_chain(&[a.clone(), b.clone()]).unwrap();
        let round = AuditEvent::from_canonical(&b.canonical().unwrap()).unwrap();
        assert_eq!(round, b);
    }

    #[test]
    fn tampering_with_any_field_breaks_the_chain() {
        let a = draft(1).seal(None, "t".into()).unwrap();
        let mut b = draft(2).seal(Some(&a), "t".into()).unwrap();
        b.actor = "mallory".into();
        assert!(verify_chain(&[a.clone(), b]).is_err());
        let c = draft(3).seal(None, "t".into()).unwrap();
        assert!(verify_chain(&[a, c]).is_err(), "a second seq 1 is not a successor");
    }
}
