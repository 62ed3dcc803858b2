//! Governance decisions on a bundle version (SPEC §4): approve, reject, waive. Each is a signed
//! receipt (a DSSE envelope through the Signer port) appended to the version's ledger with a
//! conditional write on its seq, in the same commit as its audit event. The state a ledger yields is
//! the fold of `domain::governance::next` over its receipts. User and role come from the
//! authenticated principal, never from the body.
//!
//! Rules: separation of duties (the user who registered a version can neither approve nor waive it:
//! `403 self_approval`); the state first (a decision the version's state forbids is refused with the
//! state's reason, whatever was decided before); idempotency while in force (the same decision by the
//! same user, identical in every requested field, returns the receipt it made while that receipt is in
//! force: an expired waiver asked for again is a new receipt); a waiver covers exactly one transition,
//! in scope `export_unapproved`, until it expires. Reads, decisions and exports verify the ledger's
//! last receipt only (`head`), whatever its length; the whole ledger is read where it is short by
//! construction (before an export) and by GET .../governance (docs/security.md, "Ledger heads").
//!
//! This module holds the receipt, the ledger and its head; `decide` the decisions, `export` the official
//! export, `denials` the refusals on the record, `verify` receipt verification (online and offline),
//! `unregistered` the reports of exports made while the registry was unreachable.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::App;
use crate::domain::governance::{Decision, State, transition_id};
use crate::domain::{BundleName, Digest, WorkspaceId, bundle_ref};
use crate::error::{Error, Result};
use crate::keys::verification_keys;
use crate::ports::{BundleVersion, LedgerReceipt, PublicKeyInfo};

mod decide;
mod denials;
mod export;
mod unregistered;
mod verify;

pub use decide::same_user;
pub use decide::{Request, WaiverRequest, decide};
pub use denials::{DenialTarget, audit_denial, is_denial};
pub use export::{Exported, export};
pub use unregistered::{UnregisteredExport, report_unregistered_export};
pub use verify::{Verified, receipts_in, verify_receipts};

pub use crate::keys::RECEIPT_PAYLOAD_TYPE;

pub const WAIVER_SCOPE: &str = "export_unapproved";

/// Longest justification, in bytes as signed (JSON-escaped: `"` and `\` count 2, a control
/// character 6), so a receipt always fits the signer's 4096 bytes; a longer text is referenced by
/// the digest of a blob holding it.
pub const MAX_JUSTIFICATION: usize = 2048;

/// Waiver lifetime: default and most.
pub const WAIVER_DEFAULT_SECONDS: i64 = 86_400;

pub const WAIVER_MAX_SECONDS: i64 = 7 * 86_400;

/// Attempts at claiming the next seq before giving up with 503 (each loss means another decision won).
const APPEND_ATTEMPTS: u32 = 64;

/// What a receipt says (its payload, canonical JSON).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Statement {
    pub kind: String,
    pub bundle: String,
    pub manifest: String,
    /// The transition this receipt records (for a waiver: the transition it permits).
    pub transition: String,
    pub from: String,
    pub to: String,
    pub user: String,
    pub role: String,
    pub credential: String,
    pub time: String,
    pub seq: u64,
    pub prev: Option<String>,
    pub key_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub justification: Option<String>,
    /// Unix seconds after which a waiver no longer counts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<Value>,
}

impl Statement {
    pub fn decision(&self) -> Result<Decision> {
        Ok(match self.kind.as_str() {
            "approval" => Decision::Approve,
            "rejection" => Decision::Reject,
            "waiver" => Decision::Waive,
            "export" => Decision::Export { permitted: true },
            other => return Err(Error::Internal(format!("unknown receipt kind {other:?}"))),
        })
    }
}

/// A ledger read back: its receipts, their statements and payloads (verified), and the state they yield.
pub struct Ledger {
    pub receipts: Vec<LedgerReceipt>,
    pub statements: Vec<Statement>,
    payloads: Vec<Vec<u8>>,
    pub state: State,
}

impl Default for Ledger {
    /// An empty ledger: a version just submitted.
    fn default() -> Ledger {
        Ledger { receipts: Vec::new(), statements: Vec::new(), payloads: Vec::new(), state: State::Submitted }
    }
}

impl Ledger {
    /// The seq and `prev` of the next receipt: the digest of the last payload, as signed.
    fn next_position(&self) -> Position {
        Position {
            seq: self.receipts.last().map_or(1, |r| r.seq + 1),
            prev: self.payloads.last().map(|p| Digest::of(p).to_string()),
        }
    }

    /// A waiver that is live at `now` for `transition`.
    pub fn live_waiver(&self, transition: &Digest, now: i64) -> Option<&Statement> {
        self.statements.iter().find(|s| {
            s.kind == "waiver"
                && s.transition == transition.to_string()
                && s.scope.as_deref() == Some(WAIVER_SCOPE)
                && s.expires_at.is_some_and(|e| now < e)
        })
    }
}

/// Read a version's ledger and verify it as `helix governance verify` does (every signature, seq from
/// 1 without gaps, the `prev` chain, transition ids, states), and that every receipt is about this
/// version and this manifest and sits at its own seq. The store is not trusted: a receipt copied from
/// another version, a reordered or overwritten one, is an integrity error (500), never a state.
pub async fn ledger(app: &App, ws: &WorkspaceId, name: &str, version: &str, manifest: &Digest) -> Result<Ledger> {
    ledger_with(app, &Keys::default(), ws, name, version, manifest).await
}

/// The registry's verification keys (`keys::verification_keys`), read once per request, when first
/// needed: a decision reads the head, the ledger and signs, and each needs them.
#[derive(Default)]
pub(super) struct Keys(tokio::sync::OnceCell<Vec<PublicKeyInfo>>);

impl Keys {
    pub(super) async fn get(&self, app: &App) -> Result<&[PublicKeyInfo]> {
        self.0.get_or_try_init(|| verification_keys(app)).await.map(Vec::as_slice)
    }
}

/// A verified receipt must be about this version and manifest and sit where the store keeps it: one
/// copied from another version, or moved to another seq, is never a state.
fn check_placement(bundle: &str, manifest: &Digest, stored_seq: u64, s: &Statement) -> std::result::Result<(), String> {
    if s.bundle != bundle || s.manifest != manifest.to_string() || s.seq != stored_seq {
        return Err(format!(
            "the receipt stored at seq {stored_seq} is seq {} of {} ({})",
            s.seq, s.bundle, s.manifest
        ));
    }
    Ok(())
}

/// `ledger`, with the request's keys.
pub(super) async fn ledger_with(
    app: &App,
    keys: &Keys,
    ws: &WorkspaceId,
    name: &str,
    version: &str,
    manifest: &Digest,
) -> Result<Ledger> {
    let receipts = app.meta.ledger(ws, name, version).await?;
    app.receipts_read.fetch_add(receipts.len() as u64, std::sync::atomic::Ordering::Relaxed);
    if receipts.is_empty() {
        return Ok(Ledger { receipts, statements: Vec::new(), payloads: Vec::new(), state: State::Submitted });
    }
    let envelopes: Vec<Vec<u8>> = receipts.iter().map(|r| r.envelope.clone().into_bytes()).collect();
    let bundle = bundle_ref(ws, name, version);
    let broken = |why: String| Error::BlobIntegrity(format!("the ledger of {bundle} does not verify: {why}"));
    let verified = verify_receipts(&envelopes, keys.get(app).await?, true).map_err(broken)?;
    for (r, s) in receipts.iter().zip(&verified.statements) {
        check_placement(&bundle, manifest, r.seq, s).map_err(broken)?;
    }
    let state = verified.state.unwrap_or(State::Submitted);
    Ok(Ledger { receipts, statements: verified.statements, payloads: verified.payloads, state })
}

/// Where the next receipt goes: its seq and its `prev`.
#[derive(Clone, Debug)]
struct Position {
    seq: u64,
    prev: Option<String>,
}

/// A ledger's last receipt, verified, and the state it yields.
pub struct Head {
    pub statement: Option<Statement>,
    pub state: State,
    position: Position,
}

/// The state of a version from its ledger's last receipt alone: one store read and one signature
/// check whatever the ledger's length. The receipt must verify with a registry key (transition id
/// recomputed, one signature by the key it names), be about this version and manifest and sit at its
/// own seq; a receipt at seq 1 must start from `submitted`. The state is what that signed receipt
/// says: the registry signed it only after verifying the ledger before it (its `from` is the state it
/// found; `to`, or `from` for a waiver, the state it left). What storage alone could still do, and
/// where each thing is caught, is in docs/security.md ("Ledger heads").
pub async fn head(app: &App, ws: &WorkspaceId, name: &str, version: &str, manifest: &Digest) -> Result<Head> {
    head_with(app, &Keys::default(), ws, name, version, manifest).await
}

/// `head`, with the verification keys read at the same time as the head (`head_and_keys`): one round
/// trip instead of two when the ledger has receipts (a GET of a version).
pub async fn head_in_one_round(
    app: &App,
    ws: &WorkspaceId,
    name: &str,
    version: &str,
    manifest: &Digest,
) -> Result<Head> {
    head_and_keys(app, &Keys::default(), ws, name, version, manifest).await
}

/// `head_with`, with the verification keys read at the same time: a decision and an export need both
/// (the keys verify the head, and refuse signing with a retired key), and neither read waits for the
/// other (one round trip instead of two; `Keys` still reads them once per request).
pub(super) async fn head_and_keys(
    app: &App,
    keys: &Keys,
    ws: &WorkspaceId,
    name: &str,
    version: &str,
    manifest: &Digest,
) -> Result<Head> {
    let (head, read) =
        futures_util::future::join(head_with(app, keys, ws, name, version, manifest), keys.get(app)).await;
    read?;
    head
}

/// `head`, with the request's keys.
pub(super) async fn head_with(
    app: &App,
    keys: &Keys,
    ws: &WorkspaceId,
    name: &str,
    version: &str,
    manifest: &Digest,
) -> Result<Head> {
    let Some(last) = app.meta.ledger_head(ws, name, version).await? else {
        return Ok(Head { statement: None, state: State::Submitted, position: Position { seq: 1, prev: None } });
    };
    app.receipts_read.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let bundle = bundle_ref(ws, name, version);
    let broken = |why: String| Error::BlobIntegrity(format!("the ledger of {bundle} does not verify: {why}"));
    let mut verified =
        verify_receipts(&[last.envelope.clone().into_bytes()], keys.get(app).await?, false).map_err(broken)?;
    let s = verified.statements.remove(0);
    check_placement(&bundle, manifest, last.seq, &s).map_err(broken)?;
    let left = if s.kind == "waiver" { &s.from } else { &s.to };
    let state = State::ALL
        .into_iter()
        .find(|st| st.as_str() == left)
        .ok_or_else(|| broken(format!("seq {}: unknown state {left:?}", s.seq)))?;
    let position = Position { seq: last.seq + 1, prev: Some(Digest::of(&verified.payloads[0]).to_string()) };
    Ok(Head { statement: Some(s), state, position })
}

/// Listed versions with their state: the recorded one, else (a version decided before states were
/// recorded) its verified ledger head's, read a few at a time with one read of the keys.
pub async fn states(
    app: &App,
    ws: &WorkspaceId,
    page: Vec<(BundleVersion, Option<State>)>,
) -> Result<Vec<(BundleVersion, State)>> {
    use futures_util::{StreamExt, TryStreamExt};
    let keys = Keys::default();
    let keys = &keys;
    futures_util::stream::iter(page)
        .map(|(v, recorded)| async move {
            let state = match recorded {
                Some(st) => st,
                None => head_with(app, keys, ws, &v.name, &v.version, &v.manifest_digest).await?.state,
            };
            Ok::<_, Error>((v, state))
        })
        .buffered(16)
        .try_collect()
        .await
}

/// The statement of a receipt envelope, if a registry key signed it.
pub fn open_receipt(envelope: &[u8], keys: &[PublicKeyInfo]) -> std::result::Result<Statement, String> {
    let payload = crate::dsse::verify(envelope, RECEIPT_PAYLOAD_TYPE, keys)?;
    serde_json::from_slice(&payload).map_err(|e| format!("not a receipt statement: {e}"))
}

/// The bundle version `name`@`version` of `ws` (404 `bundle_missing` when there is none): as the
/// request already read it with its credential (`read`: `Ctx::read_version`, once the principal was
/// authorized), else read now.
pub(crate) async fn version_of(
    app: &App,
    ws: &WorkspaceId,
    name: &BundleName,
    version: &BundleName,
    read: Option<Option<BundleVersion>>,
) -> Result<BundleVersion> {
    let found = match read {
        Some(read) => read,
        None => app.meta.bundle_version(ws, name.as_str(), version.as_str()).await?,
    };
    found.ok_or(Error::BundleMissing)
}

/// GET .../governance: every receipt in order, and the state it yields. `read`: the version as the
/// request already read it with its credential (`Ctx::read_version`), if it did.
pub async fn view(
    app: &App,
    ws: &WorkspaceId,
    name: &BundleName,
    version: &BundleName,
    read: Option<Option<BundleVersion>>,
) -> Result<Value> {
    let v = version_of(app, ws, name, version, read).await?;
    // The ledger and the keys that verify it, read at the same time (`Keys` reads them once).
    let keys = Keys::default();
    let (l, read) = futures_util::future::join(
        ledger_with(app, &keys, ws, name.as_str(), version.as_str(), &v.manifest_digest),
        keys.get(app),
    )
    .await;
    read?;
    let l = l?;
    let bundle = bundle_ref(ws, name.as_str(), version.as_str());
    let receipts: Vec<Value> =
        l.receipts.iter().map(|r| serde_json::from_str(&r.envelope).unwrap_or(Value::Null)).collect();
    Ok(json!({
        "bundle": bundle,
        "manifest_digest": v.manifest_digest,
        "state": l.state,
        "export_transition": transition_id(&bundle, l.state, State::Exported)?,
        "receipts": receipts,
    }))
}
