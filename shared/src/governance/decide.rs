//! Decisions (approve, reject, waive): the state first, separation of duties, idempotency while in
//! force, and the signed receipt appended with its audit event (`append`, which exports use too).

use serde_json::{Value, json};

use crate::App;
use crate::auth::Principal;
use crate::blobs::Caller;
use crate::domain::governance::{Decision, State, next, transition_id};
use crate::domain::time::{now_rfc3339_ms, now_unix};
use crate::domain::{AuditDraft, BundleName, Digest, Outcome, WorkspaceId, bundle_ref, canonical};
use crate::error::{Error, Result};
use crate::keys::record_signing_key;
use crate::ports::{BundleVersion, Change, Commit, LedgerReceipt};

use super::{
    APPEND_ATTEMPTS, Keys, Ledger, MAX_JUSTIFICATION, Position, RECEIPT_PAYLOAD_TYPE, Statement,
    WAIVER_DEFAULT_SECONDS, WAIVER_MAX_SECONDS, WAIVER_SCOPE, head_and_keys, ledger_with, version_of,
};

/// A waiver request's fields (the body of POST .../waivers).
pub struct WaiverRequest {
    pub transition: String,
    pub scope: String,
    pub justification: String,
    pub expires_in_seconds: Option<i64>,
}

/// The decision a route records.
pub enum Request {
    Approve,
    Reject,
    Waive(WaiverRequest),
}

/// Record a decision by `caller` on `ws`/`name`@`version`: the receipt (201 when made by this request,
/// 200 when the same decision by the same user, identical in every requested field, was already
/// recorded and is still in force). The version's state is checked first: a decision it forbids is
/// refused with the state's reason (409 `version_rejected`, `version_exported`), never answered with an
/// earlier receipt.
///
/// `read`: the bundle version as the request already read it with its credential (`version_of`).
pub async fn decide(
    app: &App,
    caller: Caller<'_>,
    ws: &WorkspaceId,
    name: &BundleName,
    version: &BundleName,
    request: Request,
    read: Option<Option<BundleVersion>>,
) -> Result<(LedgerReceipt, bool)> {
    let v = version_of(app, ws, name, version, read).await?;
    let principal = caller.principal;
    if !matches!(request, Request::Reject) && same_user(&principal.user, &v.registered_user) {
        return Err(Error::SelfApproval);
    }
    let bundle = bundle_ref(ws, name.as_str(), version.as_str());
    let (kind, decision) = match &request {
        Request::Approve => ("approval", Decision::Approve),
        Request::Reject => ("rejection", Decision::Reject),
        Request::Waive(_) => ("waiver", Decision::Waive),
    };
    if let Request::Waive(w) = &request {
        check_waiver_fields(w)?;
    }
    let identity = decision_identity(kind, principal, &request)?;
    let keys = Keys::default();
    for attempt in 0..APPEND_ATTEMPTS {
        // The state first, from the last receipt alone: an exported or rejected version refuses
        // (every re-export lengthens an exported version's ledger; none of it is read here).
        let head = head_and_keys(app, &keys, ws, name.as_str(), version.as_str(), &v.manifest_digest).await?;
        let head_transition = transition_id(&bundle, head.state, State::Exported)?;
        next(head.state, decision).map_err(|r| r.into_error(&head_transition))?;
        // Permitted: the whole ledger, which holds decisions only (no export yet), for the receipt this
        // very decision may already have. A ledger without a head is empty: not read again (a receipt
        // appended since is found by the append's conditional seq, and the loop reads again).
        let ledger = match head.statement {
            None => Ledger::default(),
            Some(_) => ledger_with(app, &keys, ws, name.as_str(), version.as_str(), &v.manifest_digest).await?,
        };
        let export_transition = transition_id(&bundle, ledger.state, State::Exported)?;
        let to = next(ledger.state, decision).map_err(|r| r.into_error(&export_transition))?;
        let (transition, from, to_s, waiver) = match &request {
            Request::Waive(w) => {
                if w.transition != export_transition.to_string() {
                    return Err(Error::WaiverInvalid(format!(
                        "the waiver names transition {}, but this version's export is {export_transition}",
                        w.transition
                    )));
                }
                (export_transition.clone(), ledger.state, State::Exported, Some(w))
            }
            _ => (transition_id(&bundle, ledger.state, to)?, ledger.state, to, None),
        };
        let now = now_unix();
        let (latest, occurrence) = latest_occurrence(&ledger, &identity);
        if let Some((receipt, statement)) = latest {
            // An approval or a rejection stays in force while the state permits it again (checked
            // above); a waiver until it expires.
            let in_force = statement.kind != "waiver" || statement.expires_at.is_some_and(|e| now < e);
            if in_force {
                return Ok((receipt.clone(), false));
            }
        }
        // Every waiver stays in the ledger that each decision and the first export read whole: bounded.
        let waivers = ledger.statements.iter().filter(|s| s.kind == "waiver").count() as u64;
        if waiver.is_some() && waivers >= app.config.waiver_limit {
            return Err(Error::GovernanceConflict {
                reason: "waiver_limit_reached",
                detail: format!(
                    "this version has {waivers} waivers, the most HELIX_WAIVER_LIMIT allows; a waiver still in \
                     force can be asked for again (the same request returns its receipt), or approve the version"
                ),
            });
        }
        let draft = Draft {
            kind,
            manifest: &v.manifest_digest,
            transition: &transition,
            from,
            to: to_s,
            scope: waiver.map(|w| w.scope.clone()),
            justification: waiver.map(|w| w.justification.clone()),
            expires_at: waiver.map(|w| now + w.expires_in_seconds.unwrap_or(WAIVER_DEFAULT_SECONDS)),
            details: None,
            outcome: Outcome::Success,
        };
        let key = decision_key(&identity, occurrence);
        if let Some(receipt) =
            append(app, &keys, caller, ws, name, version, ledger.next_position(), draft, Some(key)).await?
        {
            return Ok((receipt, true));
        }
        // The seq was taken by a concurrent decision, or this very decision was recorded concurrently:
        // read the ledger again (the loop finds the latter by its key).
        crate::adapters::backoff(attempt.min(5)).await;
    }
    Err(Error::unavailable(crate::error::Dependency::MetaStore, "could not claim the next ledger seq"))
}

/// A receipt about to be signed: what differs between decisions.
pub(super) struct Draft<'a> {
    pub(super) kind: &'static str,
    pub(super) manifest: &'a Digest,
    pub(super) transition: &'a Digest,
    pub(super) from: State,
    pub(super) to: State,
    pub(super) scope: Option<String>,
    pub(super) justification: Option<String>,
    pub(super) expires_at: Option<i64>,
    pub(super) details: Option<Value>,
    pub(super) outcome: Outcome,
}

/// Sign the next receipt of `ledger` and append it with its audit event. `None` when another writer
/// took the seq (or `decision_key`) first: the caller reads the ledger again and decides again.
#[allow(clippy::too_many_arguments)]
pub(super) async fn append(
    app: &App,
    keys: &Keys,
    caller: Caller<'_>,
    ws: &WorkspaceId,
    name: &BundleName,
    version: &BundleName,
    at: Position,
    draft: Draft<'_>,
    decision_key: Option<String>,
) -> Result<Option<LedgerReceipt>> {
    let principal = caller.principal;
    let bundle = bundle_ref(ws, name.as_str(), version.as_str());
    let signer_key = app.signer.public_key().await?;
    // A retired key signs nothing more: its receipt would verify nowhere and, as the ledger's head,
    // leave the version unreadable for good. An instance still configured with it fails closed.
    if let Some(retired) =
        keys.get(app).await?.iter().find(|k| k.key_id == signer_key.key_id).and_then(|k| k.retired_at.as_ref())
    {
        return Err(Error::unavailable(
            crate::error::Dependency::Signer,
            format!("the signing key {} was retired at {retired}: configure the new key", signer_key.key_id),
        ));
    }
    record_signing_key(app, &caller.principal.actor(), caller.request_id, &signer_key).await?;
    let seq = at.seq;
    let statement = Statement {
        kind: draft.kind.into(),
        bundle: bundle.clone(),
        manifest: draft.manifest.to_string(),
        transition: draft.transition.to_string(),
        from: draft.from.as_str().into(),
        to: draft.to.as_str().into(),
        user: principal.user.clone(),
        role: principal.role.as_str().into(),
        credential: principal.credential_id.clone(),
        time: now_rfc3339_ms(),
        seq,
        prev: at.prev,
        key_id: signer_key.key_id.clone(),
        scope: draft.scope,
        justification: draft.justification,
        expires_at: draft.expires_at,
        details: draft.details.clone(),
    };
    let payload = canonical::to_string(&serde_json::to_value(&statement).map_err(|e| Error::Internal(e.to_string()))?)?;
    let envelope =
        crate::dsse::sign(app.signer.as_ref(), &signer_key, RECEIPT_PAYLOAD_TYPE, payload.as_bytes()).await?;
    let receipt = LedgerReceipt { seq, envelope, decision_key };
    // The state the receipt leaves: its `to`, or for a waiver (which only permits an export) its `from`.
    let left = if draft.kind == "waiver" { draft.from } else { draft.to };
    let change = Change::AppendReceipt {
        workspace_id: ws.to_string(),
        name: name.to_string(),
        version: version.to_string(),
        receipt: receipt.clone(),
        from: draft.from,
        state: left,
    };
    let action = if draft.kind == "export" { "bundle.export".to_owned() } else { format!("governance.{}", draft.kind) };
    let mut details = json!({"seq": seq, "transition": draft.transition, "from": draft.from.as_str(),
                             "to": draft.to.as_str(), "receipt": Digest::of(payload.as_bytes())});
    if let Some(extra) = draft.details {
        details["export"] = extra;
    }
    let event = AuditDraft {
        stream: ws.to_string(),
        actor: principal.actor(),
        action,
        entity_type: "bundle_version".into(),
        entity_id: bundle,
        outcome: draft.outcome,
        request_id: caller.request_id.into(),
        details,
    };
    Ok(match app.meta.commit(change, event).await? {
        Commit::Applied(_) => Some(receipt),
        Commit::AlreadyDone => None,
    })
}

/// Users compared for separation of duties: trimmed and case-folded, so "Ada " is "ada".
pub fn same_user(a: &str, b: &str) -> bool {
    a.trim().to_lowercase() == b.trim().to_lowercase()
}

pub(super) fn check_waiver_fields(w: &WaiverRequest) -> Result<()> {
    if w.scope != WAIVER_SCOPE {
        return Err(Error::WaiverInvalid(format!("scope must be {WAIVER_SCOPE:?}")));
    }
    // What is signed is bounded, not what was typed: the justification as the statement holds it.
    let signed = serde_json::to_string(&w.justification).map_or(usize::MAX, |j| j.len() - 2);
    if w.justification.trim().is_empty() || signed > MAX_JUSTIFICATION {
        return Err(Error::WaiverInvalid(format!(
            "a justification is 1 to {MAX_JUSTIFICATION} bytes as signed (JSON-escaped: each \" and \\ counts 2 \
             bytes, each control character 6); this one is {signed}: reference a longer text by the digest of a \
             blob holding it"
        )));
    }
    if w.expires_in_seconds.is_some_and(|s| !(1..=WAIVER_MAX_SECONDS).contains(&s)) {
        return Err(Error::WaiverInvalid(format!("expires_in_seconds is 1 to {WAIVER_MAX_SECONDS}")));
    }
    Digest::parse(&w.transition).map_err(|_| Error::WaiverInvalid("transition is a sha256: digest".into()))?;
    Ok(())
}

/// A decision's identity: kind and user (the same approval by the same user through another token is
/// the same decision), and for a waiver everything it asks for (transition, scope, justification,
/// lifetime): a request that differs in any of them is another decision.
pub(super) fn decision_identity(kind: &str, principal: &Principal, request: &Request) -> Result<String> {
    let covers = match request {
        Request::Waive(w) => json!({"transition": w.transition, "scope": w.scope, "justification": w.justification,
            "expires_in_seconds": w.expires_in_seconds.unwrap_or(WAIVER_DEFAULT_SECONDS)}),
        _ => Value::Null,
    };
    canonical::to_string(&json!({"kind": kind, "user": principal.user, "covers": covers}))
}

/// The stored key of the `occurrence`-th receipt of one decision (0 for the first; a waiver asked for
/// again after it expired is the next occurrence). The first keeps the form keys always had.
pub(super) fn decision_key(identity: &str, occurrence: u64) -> String {
    match occurrence {
        0 => Digest::of(identity.as_bytes()).hex().to_owned(),
        n => Digest::of(format!("{identity}#{n}").as_bytes()).hex().to_owned(),
    }
}

/// The latest receipt of a decision in `ledger` (with its statement), and the occurrence a new one
/// would be.
pub(super) fn latest_occurrence<'l>(
    ledger: &'l Ledger,
    identity: &str,
) -> (Option<(&'l LedgerReceipt, &'l Statement)>, u64) {
    let mut latest = None;
    let mut occurrence = 0;
    loop {
        let key = decision_key(identity, occurrence);
        let found =
            ledger.receipts.iter().zip(&ledger.statements).find(|(r, _)| r.decision_key.as_deref() == Some(&key));
        match found {
            Some(f) => {
                latest = Some(f);
                occurrence += 1;
            }
            None => return (latest, occurrence),
        }
    }
}
