//! Verifying receipts without trusting the store: signatures by a registry key within its window,
//! seq and `prev` chain, transition ids and the states they fold to. Used online and offline.

use serde_json::Value;

use crate::domain::Digest;
use crate::domain::governance::{Decision, State, next, transition_id};
use crate::error::Result;
use crate::ports::PublicKeyInfo;

use super::{RECEIPT_PAYLOAD_TYPE, Statement};

/// What an offline verification of receipts established.
#[derive(Debug)]
pub struct Verified {
    pub bundle: String,
    pub receipts: usize,
    /// The state the receipts yield (when they are a whole ledger, from seq 1).
    pub state: Option<State>,
    pub first_seq: u64,
    pub statements: Vec<Statement>,
    /// Each receipt's payload, as signed.
    pub payloads: Vec<Vec<u8>>,
}

/// Verify receipts offline, as `helix governance verify` does: every signature by one of `keys` (with
/// the key id the statement names), one bundle and manifest, seq without gaps, each `prev` the digest of
/// the previous payload (null for seq 1), each transition id recomputed from bundle, from and to, and
/// the states: each receipt's `from` is the state the ones before it yield, and its `to` is what the
/// state machine allows. One receipt alone is checked for its signature and transition id.
pub fn verify_receipts(
    envelopes: &[Vec<u8>],
    keys: &[PublicKeyInfo],
    whole_ledger: bool,
) -> std::result::Result<Verified, String> {
    if envelopes.is_empty() {
        return Err("no receipts".into());
    }
    let mut statements = Vec::new();
    let mut payloads = Vec::new();
    for (i, e) in envelopes.iter().enumerate() {
        let (payload, key) =
            crate::dsse::verify_by(e, RECEIPT_PAYLOAD_TYPE, keys).map_err(|why| format!("receipt {}: {why}", i + 1))?;
        let s: Statement = serde_json::from_slice(&payload).map_err(|why| format!("receipt {}: {why}", i + 1))?;
        // Within the signing key's validity window (a retired or leaked key signs nothing later).
        let at = time::OffsetDateTime::parse(&s.time, &time::format_description::well_known::Rfc3339)
            .map_err(|_| format!("seq {}: time {:?} is not RFC 3339", s.seq, s.time))?;
        if let Some(why) = key.outside_window(at, true) {
            return Err(format!("seq {}: {why}", s.seq));
        }
        let env: Value = serde_json::from_slice(e).map_err(|why| why.to_string())?;
        // Exactly one signature, by the key the statement names (which then verified it above).
        let sigs = env["signatures"].as_array().map(Vec::as_slice).unwrap_or_default();
        if sigs.len() != 1 || sigs[0]["keyid"] != s.key_id.as_str() {
            return Err(format!("seq {}: not exactly one signature by the key the statement names", s.seq));
        }
        s.decision().map_err(|e| format!("seq {}: {e}", s.seq))?;
        statements.push(s);
        payloads.push(payload);
    }
    let first = &statements[0];
    if whole_ledger && first.seq != 1 {
        if statements.iter().any(|s| s.seq == 1) {
            return Err(format!(
                "the ledger lists seq {} first and seq 1 later: the receipts are out of order",
                first.seq
            ));
        }
        return Err(format!("the ledger starts at seq {}: a receipt is missing (seq 1)", first.seq));
    }
    let parse_state = |name: &str, seq: u64| {
        State::ALL.into_iter().find(|s| s.as_str() == name).ok_or_else(|| format!("seq {seq}: unknown state {name:?}"))
    };
    let mut state = (first.seq == 1).then_some(State::Submitted);
    for (i, s) in statements.iter().enumerate() {
        if s.bundle != first.bundle || s.manifest != first.manifest {
            return Err(format!("seq {}: another bundle or manifest than seq {}", s.seq, first.seq));
        }
        let expected = first.seq + i as u64;
        if s.seq != expected {
            // The one that belongs here comes later (or this one came before): reordered, not lost.
            let reordered = s.seq < expected || statements[i..].iter().any(|t| t.seq == expected);
            return Err(if reordered {
                format!("seq {} where seq {expected} belongs: the receipts are out of order", s.seq)
            } else {
                format!("seq {} follows seq {}: a receipt is missing (seq {expected})", s.seq, expected - 1)
            });
        }
        let expected_prev = match i {
            0 if s.seq == 1 => None,
            0 => s.prev.clone(),
            _ => Some(Digest::of(&payloads[i - 1]).to_string()),
        };
        if s.prev != expected_prev {
            return Err(format!("seq {}: prev does not name the previous receipt", s.seq));
        }
        let (from, to) = (parse_state(&s.from, s.seq)?, parse_state(&s.to, s.seq)?);
        let recomputed = transition_id(&s.bundle, from, to).map_err(|e| e.to_string())?;
        if s.transition != recomputed.to_string() {
            return Err(format!("seq {}: transition {} is not that of {}→{}", s.seq, s.transition, s.from, s.to));
        }
        if let Some(current) = state {
            if from != current {
                return Err(format!("seq {}: from {} but the ledger is {}", s.seq, s.from, current.as_str()));
            }
            let decision = s.decision().map_err(|e| e.to_string())?;
            let after = next(current, decision).map_err(|r| format!("seq {}: {r:?}", s.seq))?;
            let claimed = if decision == Decision::Waive { State::Exported } else { after };
            if to != claimed {
                return Err(format!("seq {}: to {} but the state machine gives {}", s.seq, s.to, claimed.as_str()));
            }
            state = Some(after);
        }
    }
    Ok(Verified {
        bundle: first.bundle.clone(),
        receipts: statements.len(),
        state,
        first_seq: first.seq,
        payloads,
        statements: statements.clone(),
    })
}

/// The receipts in a file, and whether it is a whole ledger: one envelope, an array of them, or a
/// ledger (`{"receipts": [...]}`, as GET .../governance answers).
pub fn receipts_in(document: &[u8]) -> std::result::Result<(Vec<Vec<u8>>, bool), String> {
    let doc: Value = serde_json::from_slice(document).map_err(|e| format!("not JSON: {e}"))?;
    let (list, whole) = match &doc {
        Value::Object(o) if o.contains_key("payloadType") => (vec![doc.clone()], false),
        Value::Object(o) => {
            (o.get("receipts").and_then(Value::as_array).cloned().ok_or("no receipts in the file")?, true)
        }
        Value::Array(a) => (a.clone(), false),
        _ => return Err("not a receipt, a list of receipts or a ledger".into()),
    };
    let envelopes = list.iter().map(|r| serde_json::to_vec(r).map_err(|e| e.to_string())).collect::<Result<_, _>>()?;
    Ok((envelopes, whole))
}
