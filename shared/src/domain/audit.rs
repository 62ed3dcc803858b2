//! Audit events and the hash chain (SPEC §5). An event's `hash` is `sha256:` of its canonical JSON
//! without `hash`; `prev` is the previous event's hash in the same stream (null for seq 1). Events
//! are sealed only by an AuditLog adapter, which knows the head of the stream.

use serde::{Deserialize, Serialize};
use serde_json::Value;

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

/// What sealing the next event of a stream needs of its head: its place, time and hash.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChainHead {
    pub seq: u64,
    pub ts: String,
    pub hash: String,
}

impl From<&AuditEvent> for ChainHead {
    fn from(e: &AuditEvent) -> ChainHead {
        ChainHead { seq: e.seq, ts: e.ts.clone(), hash: e.hash.clone() }
    }
}

impl AuditDraft {
    /// Give the draft its place after `head` (None: first in the stream) and compute its hash. `now`
    /// is the writer's clock; `ts` never goes back within a stream (a writer whose clock is behind
    /// the head's takes the head's time), so a day's events are a contiguous run of each stream's seq
    /// and time order is seq order.
    pub fn seal(self, head: Option<&AuditEvent>, now: String) -> Result<AuditEvent> {
        self.seal_after(head.map(ChainHead::from).as_ref(), now)
    }

    /// `seal` after a head known only by its place, time and hash.
    pub fn seal_after(self, head: Option<&ChainHead>, now: String) -> Result<AuditEvent> {
        Ok(self.seal_after_with_line(head, now)?.0)
    }

    /// `seal_after`, with the event's canonical line (`AuditEvent::canonical`), both from one
    /// serialization.
    pub fn seal_after_with_line(self, head: Option<&ChainHead>, now: String) -> Result<(AuditEvent, String)> {
        let ts = match head {
            Some(h) if h.ts > now => h.ts.clone(),
            _ => now,
        };
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
        let (unhashed, at) = event.unhashed_canonical()?;
        event.hash = Digest::of(&unhashed).to_string();
        let line = with_hash(&unhashed, at, &event.hash)?;
        Ok((event, line))
    }
}

/// How many partitions the audit indexes spread a day (or an action) over: a stream always lands on
/// the same one, so each index partition holds whole streams, in seq order.
pub const AUDIT_SHARDS: u8 = 16;

/// The index shard of `stream`: the first byte of its SHA-256, modulo `AUDIT_SHARDS`.
pub fn shard_of(stream: &str) -> u8 {
    Digest::of(stream.as_bytes()).raw()[0] % AUDIT_SHARDS
}

/// The parts of an `at_key` (a search cursor): ts, stream, seq.
pub fn parse_at_key(at: &str) -> Result<(String, String, u64)> {
    let bad = || Error::BadRequest("cursor is not one this registry returned".into());
    let mut parts = at.splitn(3, '#');
    let (ts, stream, seq) =
        (parts.next().ok_or_else(bad)?, parts.next().ok_or_else(bad)?, parts.next().ok_or_else(bad)?);
    let stream_ok = stream == "*" || crate::domain::WorkspaceId::parse(stream).is_ok();
    let ts_ok = ts.len() == 24 && ts.is_ascii() && ts.ends_with('Z');
    if !ts_ok || !stream_ok || seq.len() != 20 {
        return Err(bad());
    }
    let seq: u64 = seq.parse().map_err(|_| bad())?;
    if seq == u64::MAX {
        return Err(bad());
    }
    Ok((ts.to_owned(), stream.to_owned(), seq))
}

/// The parts of an `ord_key`: stream, seq.
pub fn parse_ord_key(ord: &str) -> Result<(String, u64)> {
    let bad = || Error::Internal(format!("not an ord key: {ord:?}"));
    let (stream, seq) = ord.rsplit_once('#').ok_or_else(bad)?;
    Ok((stream.to_owned(), seq.parse().map_err(|_| bad())?))
}

/// `[day, next day)` as `ts` bounds: `ts >= "2026-11-23" AND ts < "2026-11-24"` is that UTC day.
pub fn day_bounds(day: &str) -> Result<(String, String)> {
    let next =
        super::time::parse_day(day)?.next_day().ok_or_else(|| Error::BadRequest("no day after this one".into()))?;
    Ok((day.to_owned(), super::time::day_string(next)))
}

impl AuditEvent {
    /// `{ts}#{stream}#{seq:020}`: sorts in (ts, stream, seq) order, the order of audit queries and the
    /// key their cursor names. Streams never hold `#`.
    pub fn at_key(&self) -> String {
        format!("{}#{}#{:020}", self.ts, self.stream, self.seq)
    }

    /// `{stream}#{seq:020}`: sorts in (stream, seq) order, the order of an exported day.
    pub fn ord_key(&self) -> String {
        format!("{}#{:020}", self.stream, self.seq)
    }

    /// The UTC day of `ts` (`YYYY-MM-DD`).
    pub fn day(&self) -> &str {
        self.ts.get(..10).unwrap_or(&self.ts)
    }

    /// The canonical JSON of the event without `hash`, and the offset where `,"hash":…` goes in it:
    /// the fields written in their sorted key order (`hash` sorts between `entity_type` and
    /// `outcome`), the same bytes as `canonical::to_string` of the event as an object (a test holds
    /// them equal), without building that object.
    fn unhashed_canonical(&self) -> Result<(Vec<u8>, usize)> {
        let mut out = Vec::with_capacity(320 + self.entity_id.len());
        let text = |out: &mut Vec<u8>, key: &str, value: &str| {
            out.extend_from_slice(key.as_bytes());
            canonical::write_str(value, out);
        };
        text(&mut out, "{\"action\":", &self.action);
        text(&mut out, ",\"actor\":", &self.actor);
        out.extend_from_slice(b",\"details\":");
        canonical::write(&self.details, &mut out)?;
        text(&mut out, ",\"entity_id\":", &self.entity_id);
        text(&mut out, ",\"entity_type\":", &self.entity_type);
        let at = out.len();
        out.extend_from_slice(b",\"outcome\":");
        serde_json::to_writer(&mut out, &self.outcome).map_err(|e| Error::Internal(format!("audit outcome: {e}")))?;
        match &self.prev {
            Some(prev) => text(&mut out, ",\"prev\":", prev),
            None => out.extend_from_slice(b",\"prev\":null"),
        }
        text(&mut out, ",\"request_id\":", &self.request_id);
        out.extend_from_slice(format!(",\"seq\":{}", self.seq).as_bytes());
        text(&mut out, ",\"stream\":", &self.stream);
        text(&mut out, ",\"ts\":", &self.ts);
        out.push(b'}');
        Ok((out, at))
    }

    pub fn compute_hash(&self) -> Result<String> {
        Ok(Digest::of(&self.unhashed_canonical()?.0).to_string())
    }

    /// `canonical()` and `compute_hash()` from one serialization: the line (with the stored hash) and
    /// the hash its fields give (what a verifier compares with the stored one).
    pub fn canonical_and_hash(&self) -> Result<(String, String)> {
        let (unhashed, at) = self.unhashed_canonical()?;
        Ok((with_hash(&unhashed, at, &self.hash)?, Digest::of(&unhashed).to_string()))
    }

    /// The canonical line stored by adapters and written to exports.
    pub fn canonical(&self) -> Result<String> {
        let (unhashed, at) = self.unhashed_canonical()?;
        with_hash(&unhashed, at, &self.hash)
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

/// The canonical line: `unhashed` with `,"hash":"…"` at `at`.
fn with_hash(unhashed: &[u8], at: usize, hash: &str) -> Result<String> {
    let mut line = Vec::with_capacity(unhashed.len() + hash.len() + 12);
    line.extend_from_slice(&unhashed[..at]);
    line.extend_from_slice(b",\"hash\":");
    canonical::write_str(hash, &mut line);
    line.extend_from_slice(&unhashed[at..]);
    canonical::into_string(line)
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
    use serde_json::json;

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
    fn time_never_goes_back_within_a_stream_and_keys_sort_in_their_documented_order() {
        let a = draft(1).seal(None, "2026-11-23T10:00:00.000Z".into()).unwrap();
        let b = draft(2).seal(Some(&a), "2026-11-23T09:59:59.000Z".into()).unwrap();
        assert_eq!(b.ts, a.ts, "a writer whose clock is behind takes the head's time");
        let c = draft(3).seal(Some(&b), "2026-11-23T10:00:01.000Z".into()).unwrap();
        assert_eq!(c.ts, "2026-11-23T10:00:01.000Z");
        assert!(a.at_key() < b.at_key() && b.at_key() < c.at_key());
        let mut other = draft(1).seal(None, a.ts.clone()).unwrap();
        other.stream = "team-a-x".into();
        assert!(a.ord_key() < other.ord_key(), "team-a before team-a-x, as (stream, seq) orders them");
        assert_eq!(a.day(), "2026-11-23");
        assert_eq!(parse_at_key(&c.at_key()).unwrap(), (c.ts.clone(), "team-a".to_owned(), 3));
        assert_eq!(parse_ord_key(&c.ord_key()).unwrap(), ("team-a".to_owned(), 3));
        assert!(parse_at_key("x#y").is_err() && parse_at_key("2026-11-23T10:00:01.000Z#a#12").is_err());
        assert_eq!(day_bounds("2026-12-31").unwrap(), ("2026-12-31".to_owned(), "2027-01-01".to_owned()));
        // Stored index keys depend on it: the first byte of SHA-256, modulo 16, never another spread.
        assert_eq!((shard_of("team-a"), shard_of("*"), shard_of("demo")), (6, 8, 10));
        assert!(shard_of("team-a") < AUDIT_SHARDS);
        assert_ne!((0..64).map(|i| shard_of(&format!("ws-{i}"))).collect::<std::collections::BTreeSet<_>>().len(), 1);
    }

    /// The field-by-field writer against the definition: canonical JSON of the event as an object.
    #[test]
    fn the_written_canonical_form_is_canonical_json_of_the_event() {
        let by_value = |e: &AuditEvent, hashed: bool| {
            let mut v = json!({
                "stream": e.stream, "seq": e.seq, "ts": e.ts, "actor": e.actor, "action": e.action,
                "entity_type": e.entity_type, "entity_id": e.entity_id, "outcome": e.outcome,
                "request_id": e.request_id, "details": e.details, "prev": e.prev,
            });
            if hashed {
                v["hash"] = json!(e.hash);
            }
            canonical::to_string(&v).unwrap()
        };
        let mut odd = draft(7);
        odd.actor = "ünïcode \"quoted\" \\ 𝄞 \u{1}".into();
        odd.details = json!({"z": [1, {"b": null, "a": "x\ny"}], "é": -3, "a": true});
        odd.outcome = Outcome::Denied;
        let a = draft(1).seal(None, "2026-11-23T00:00:00.000Z".into()).unwrap();
        let (b, line) =
            odd.seal_after_with_line(Some(&ChainHead::from(&a)), "2026-11-23T00:00:01.000Z".into()).unwrap();
        for e in [&a, &b] {
            assert_eq!(e.canonical().unwrap(), by_value(e, true));
            assert_eq!(e.hash, Digest::of(by_value(e, false).as_bytes()).to_string());
        }
        assert_eq!(line, b.canonical().unwrap());
        assert_eq!(b.canonical_and_hash().unwrap(), (line, b.compute_hash().unwrap()));
        let mut float = draft(2);
        float.details = json!({"x": 1.5});
        assert!(float.seal(None, "t".into()).is_err(), "canonical JSON has integers only");
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
