//! Governance notifications (docs/notifications.md): which audit events are published, the JSON a
//! receiver gets (the same on EventBridge and in a webhook), and the webhook signature. Pure: the
//! outbox, the deliverer and the senders are elsewhere (`crate::notify`, `adapters::webhook`).
//!
//! A notification is derived from one committed audit event, never from a request: the audit trail is
//! the durable record of every governance event (denials, freeze and suspension included), so what was
//! decided is what is published, and a notification can be sent again after a crash with the same id.

use hmac::{Hmac, KeyInit, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

use super::audit::{AuditEvent, Outcome};

/// A process's delivery counts (tests read them; the metrics are the store's `notify` counters).
#[derive(Debug, Default)]
pub struct DeliveryStats {
    pub delivered: std::sync::atomic::AtomicU64,
    pub failed_attempts: std::sync::atomic::AtomicU64,
    pub given_up: std::sync::atomic::AtomicU64,
}

/// The `source` of every notification (EventBridge's `source`, the webhook body's `source`).
pub const SOURCE: &str = "helix.registry";

/// The audit actions that may be published (each with the outcomes `kind` names). The embedded outbox
/// records these, the DynamoDB stream's filter passes these; `kind` decides on the outcome.
pub const NOTIFIED_ACTIONS: [&str; 10] = [
    "bundle.register",
    "governance.approval",
    "governance.rejection",
    "governance.waiver",
    "bundle.export",
    "bundle.export_unregistered",
    "registry.freeze",
    "registry.unfreeze",
    "workspace.suspend",
    "workspace.unsuspend",
];

/// What a governance event is, for a receiver: the webhook body's `type` and EventBridge's
/// `detail-type`. None: the event is not a governance event that is published.
pub fn kind(action: &str, outcome: Outcome) -> Option<(&'static str, &'static str)> {
    use Outcome::*;
    Some(match (action, outcome) {
        ("bundle.register", Success) => ("version.registered", "Version Registered"),
        ("governance.approval", Success) => ("version.approved", "Version Approved"),
        ("governance.rejection", Success) => ("version.rejected", "Version Rejected"),
        ("governance.waiver", Success) => ("version.waived", "Version Waived"),
        ("bundle.export", Success | Warned) => ("version.exported", "Version Exported"),
        ("bundle.export", Denied) => ("export.denied", "Export Denied"),
        ("governance.approval" | "governance.rejection" | "governance.waiver", Denied) => {
            ("decision.denied", "Decision Denied")
        }
        ("bundle.export_unregistered", Success | Warned) => ("export.unregistered", "Unregistered Export Reported"),
        ("registry.freeze", Success) => ("registry.frozen", "Registry Frozen"),
        ("registry.unfreeze", Success) => ("registry.unfrozen", "Registry Unfrozen"),
        ("registry.freeze" | "registry.unfreeze", Denied) => ("freeze.denied", "Freeze Denied"),
        ("workspace.suspend", Success) => ("workspace.suspended", "Workspace Suspended"),
        ("workspace.unsuspend", Success) => ("workspace.unsuspended", "Workspace Unsuspended"),
        _ => return None,
    })
}

/// One notification: what the webhook body and the EventBridge entry carry.
#[derive(Debug, Clone, PartialEq)]
pub struct Notification {
    /// Stable and unique: the audit event's hash (`sha256:` of the event, which names its stream, seq,
    /// time and predecessor). Every retry, and both channels, carry the same id: receivers deduplicate
    /// on it, and can find the event in the audit trail with it.
    pub id: String,
    /// `version.approved`, … (`kind`).
    pub kind: &'static str,
    /// EventBridge's `detail-type`: `Version Approved`, … (`kind`).
    pub detail_type: &'static str,
    /// When it happened: the audit event's `ts` (RFC 3339, UTC, milliseconds).
    pub time: String,
    /// The registry's public URL (who sends it; receivers of several registries tell them apart).
    pub registry: String,
    pub event: AuditEvent,
}

impl Notification {
    /// The notification of `event`, when it is a published governance event.
    pub fn of(event: &AuditEvent, registry: &str) -> Option<Notification> {
        let (kind, detail_type) = kind(&event.action, event.outcome)?;
        Some(Notification {
            id: event.hash.clone(),
            kind,
            detail_type,
            time: event.ts.clone(),
            registry: registry.to_owned(),
            event: event.clone(),
        })
    }

    /// EventBridge's `detail` (and the webhook body's `event`): the audit event, as the trail holds it.
    pub fn detail(&self) -> Value {
        let e = &self.event;
        json!({
            "id": self.id,
            "type": self.kind,
            "registry": self.registry,
            "workspace": if e.stream == "*" { Value::Null } else { Value::String(e.stream.clone()) },
            "stream": e.stream, "seq": e.seq, "ts": e.ts, "actor": e.actor, "action": e.action,
            "entity_type": e.entity_type, "entity_id": e.entity_id, "outcome": e.outcome,
            "request_id": e.request_id, "details": e.details, "hash": e.hash,
        })
    }

    /// The webhook body: the same bytes on every attempt (the signature's timestamp changes, the body
    /// does not).
    pub fn body(&self) -> String {
        json!({
            "id": self.id,
            "type": self.kind,
            "detail_type": self.detail_type,
            "source": SOURCE,
            "time": self.time,
            "registry": self.registry,
            "event": self.detail(),
        })
        .to_string()
    }
}

/// The `X-Helix-Signature` value: `sha256=` and the lowercase hex HMAC-SHA256, keyed with the shared
/// secret, of `<timestamp>.<body>` (the timestamp as sent in `X-Helix-Timestamp`, Unix seconds).
pub fn sign(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    format!("sha256={}", hex::encode(mac(secret, timestamp, body).finalize().into_bytes()))
}

fn mac(secret: &[u8], timestamp: i64, body: &[u8]) -> Hmac<Sha256> {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("any key length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// How far a receiver lets `X-Helix-Timestamp` be from its own clock (the recipe in
/// docs/notifications.md): a captured delivery replayed later is refused.
pub const MAX_SIGNATURE_AGE_SECONDS: i64 = 300;

/// A receiver's check (the recipe in docs/notifications.md, as code): the signature is the secret's
/// over `<timestamp>.<body>` (compared in constant time) and the timestamp is within
/// `MAX_SIGNATURE_AGE_SECONDS` of `now`. The reason when it is not.
pub fn verify(secret: &[u8], timestamp: &str, signature: &str, body: &[u8], now: i64) -> Result<(), &'static str> {
    let ts: i64 = timestamp.parse().map_err(|_| "X-Helix-Timestamp is not Unix seconds")?;
    if (now - ts).abs() > MAX_SIGNATURE_AGE_SECONDS {
        return Err("X-Helix-Timestamp is more than 5 minutes from now (a replay, or a clock off)");
    }
    let hex_sig = signature.strip_prefix("sha256=").ok_or("X-Helix-Signature does not start with sha256=")?;
    let raw = hex::decode(hex_sig).map_err(|_| "X-Helix-Signature is not hex")?;
    mac(secret, ts, body).verify_slice(&raw).map_err(|_| "X-Helix-Signature does not match")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::AuditDraft;

    fn event(action: &str, outcome: Outcome) -> AuditEvent {
        AuditDraft {
            stream: "team-a".into(),
            actor: "bob@tok_1".into(),
            action: action.into(),
            entity_type: "bundle_version".into(),
            entity_id: "team-a/model@1".into(),
            outcome,
            request_id: "r1".into(),
            details: json!({"scope": "export"}),
        }
        .seal(None, "2026-12-04T10:00:00.000Z".into())
        .unwrap()
    }

    #[test]
    fn every_listed_governance_event_is_published_and_nothing_else() {
        for action in NOTIFIED_ACTIONS {
            let outcome = if action == "bundle.export_unregistered" { Outcome::Warned } else { Outcome::Success };
            assert!(kind(action, outcome).is_some(), "{action}");
        }
        assert_eq!(kind("bundle.export", Outcome::Denied), Some(("export.denied", "Export Denied")));
        assert_eq!(kind("governance.approval", Outcome::Denied).unwrap().0, "decision.denied");
        for (action, outcome) in
            [("blob.link", Outcome::Success), ("token.issue", Outcome::Success), ("blob.read", Outcome::Success)]
        {
            assert_eq!(kind(action, outcome), None, "{action}");
        }
        assert!(NOTIFIED_ACTIONS.iter().all(|a| !a.contains('#')));
    }

    #[test]
    fn a_notification_carries_the_audit_events_hash_as_its_stable_id() {
        let e = event("governance.approval", Outcome::Success);
        let n = Notification::of(&e, "https://registry.example").unwrap();
        assert_eq!(n.id, e.hash);
        assert_eq!(n.body(), Notification::of(&e, "https://registry.example").unwrap().body(), "same bytes again");
        let body: Value = serde_json::from_str(&n.body()).unwrap();
        assert_eq!(body["type"], "version.approved");
        assert_eq!(body["source"], SOURCE);
        assert_eq!(body["time"], "2026-12-04T10:00:00.000Z");
        assert_eq!(body["event"]["workspace"], "team-a");
        assert_eq!(body["event"]["entity_id"], "team-a/model@1");
        assert_eq!(body["event"]["hash"], e.hash);
        assert!(Notification::of(&event("blob.link", Outcome::Success), "r").is_none());
    }

    #[test]
    fn signatures_verify_and_any_change_or_a_stale_timestamp_is_refused() {
        let (secret, body, ts) = (b"s3cret".as_slice(), br#"{"id":"x"}"#.as_slice(), 1_764_842_400);
        let sig = sign(secret, ts, body);
        assert!(sig.starts_with("sha256=") && sig.len() == 7 + 64);
        assert_eq!(verify(secret, &ts.to_string(), &sig, body, ts + 10), Ok(()));
        assert!(verify(b"other", &ts.to_string(), &sig, body, ts).is_err());
        assert!(verify(secret, &ts.to_string(), &sig, br#"{"id":"y"}"#, ts).is_err());
        assert!(verify(secret, &(ts + 1).to_string(), &sig, body, ts).is_err(), "the timestamp is signed");
        assert!(verify(secret, &ts.to_string(), &sig, body, ts + 301).is_err(), "stale");
        assert!(verify(secret, &ts.to_string(), &sig[7..], body, ts).is_err());
        // A fixed vector (docs/notifications.md shows it; Python's hmac gives the same).
        assert_eq!(sig, "sha256=23ff367fa2313bd006d78afcccb12d28727f05779d654214a4999084416ac225");
    }
}
