//! The official export: every file's integrity, the governance gate of HELIX_GOVERNANCE_MODE, a
//! signed export receipt and proof URLs; a bounded number of exports per version.

use serde::Serialize;
use serde_json::{Value, json};

use crate::App;
use crate::blobs::Caller;
use crate::domain::governance::{Decision, State, next, transition_id};
use crate::domain::time::now_unix;
use crate::domain::{BundleName, Digest, Outcome, WorkspaceId, bundle_ref};
use crate::error::{Error, Result};
use crate::ports::BundleVersion;

use super::{APPEND_ATTEMPTS, Head, Keys, Ledger, head_and_keys, ledger, ledger_with, version_of};

use super::decide::{Draft, append};
use super::denials::deny;

/// Files verified at once during an export.
pub(super) const EXPORT_PARALLELISM: usize = 16;

/// The answer to an official export: the receipt and short-lived proof URLs.
#[derive(Debug, Serialize)]
pub struct Exported {
    pub seq: u64,
    pub receipt: Value,
    /// How governance let it through: `approved`, `waived`, `re-export`, `warned` (warn mode) or `off`.
    pub governance: &'static str,
    pub proof: Proof,
}

pub use crate::proofs::Proof;

/// POST .../export (SPEC §4): every file intact (checked in parallel, bounded), the governance gate
/// of HELIX_GOVERNANCE_MODE, a signed export receipt appended to the ledger, and proof URLs of the
/// manifest and every file (`proofs`: registry-signed, never a presigned GET of a shared object). A
/// refusal by governance is audited as a denial.
///
/// `read`: the bundle version as the request already read it with its credential (`version_of`).
pub async fn export(
    app: &App,
    caller: Caller<'_>,
    ws: &WorkspaceId,
    name: &BundleName,
    version: &BundleName,
    read: Option<Option<BundleVersion>>,
) -> Result<Exported> {
    use crate::config::GovernanceMode;
    let v = version_of(app, ws, name, version, read).await?;
    let bundle = bundle_ref(ws, name.as_str(), version.as_str());
    let manifest = crate::blobs::stored_manifest(app, ws, &v).await?;
    let keys = check_integrity(app, ws, &v, &manifest).await?;
    let enforce = app.config.governance_mode == GovernanceMode::Enforce;
    let verifying = Keys::default();
    for attempt in 0..APPEND_ATTEMPTS {
        // The last receipt gives the state and the exports so far. Before the first export the ledger
        // holds decisions only: short by construction, so it is read and verified whole (an export never
        // extends evidence that does not verify, and a waiver is found there). A re-export reads the
        // last receipt alone, whatever the length (docs/security.md, "Ledger heads").
        let head = head_and_keys(app, &verifying, ws, name.as_str(), version.as_str(), &v.manifest_digest).await?;
        let first_export = head.statement.as_ref().is_none_or(|s| s.kind != "export");
        let (state, position, waiver) = if first_export {
            // No head: the ledger is empty (not read again; the append's conditional seq catches a
            // receipt appended since).
            let ledger = match head.statement {
                None => Ledger::default(),
                Some(_) => {
                    ledger_with(app, &verifying, ws, name.as_str(), version.as_str(), &v.manifest_digest).await?
                }
            };
            let transition = transition_id(&bundle, ledger.state, State::Exported)?;
            let waiver = (ledger.state == State::Submitted && enforce)
                .then(|| ledger.live_waiver(&transition, now_unix()).map(|w| w.seq))
                .flatten();
            (ledger.state, ledger.next_position(), waiver)
        } else {
            (head.state, head.position.clone(), None)
        };
        let transition = transition_id(&bundle, state, State::Exported)?;
        // A rejection is final in every mode: `warn` and `off` relax the approval, not a refusal.
        if state == State::Rejected {
            return Err(crate::domain::governance::Refusal::VersionRejected.into_error(&transition));
        }
        let number = exports_so_far(app, ws, name, version, &v, &head).await? + 1;
        if number > app.config.export_limit {
            return Err(Error::GovernanceConflict {
                reason: "export_limit_reached",
                detail: format!(
                    "this version was exported {} times, the most HELIX_EXPORT_LIMIT allows; its receipts and \
                     proof stay readable (GET .../governance, GET .../blobs/{{digest}}); publish a new version to \
                     export again",
                    number - 1
                ),
            });
        }
        let (permitted, governance) = match (app.config.governance_mode, state, waiver) {
            (_, State::Exported, _) => (true, "re-export"),
            (_, State::Approved, _) => (true, "approved"),
            (GovernanceMode::Enforce, State::Submitted, Some(_)) => (true, "waived"),
            (GovernanceMode::Enforce, _, _) => (false, "denied"),
            (GovernanceMode::Warn, _, _) => (true, "warned"),
            (GovernanceMode::Off, _, _) => (true, "off"),
        };
        let to = match next(state, Decision::Export { permitted }) {
            Ok(to) => to,
            Err(refusal) => {
                deny(app, caller, &bundle, &transition, state).await;
                return Err(refusal.into_error(&transition));
            }
        };
        let details = json!({
            "mode": app.config.governance_mode.as_str(), "governance": governance,
            "files": v.files, "bytes": v.bytes,
            "waiver_seq": waiver, "number": number,
        });
        let draft = Draft {
            kind: "export",
            manifest: &v.manifest_digest,
            transition: &transition,
            from: state,
            to,
            scope: None,
            justification: None,
            expires_at: None,
            details: Some(details),
            outcome: if governance == "warned" { Outcome::Warned } else { Outcome::Success },
        };
        // The proof is built before the receipt: an export is never recorded without its answer.
        let proof = crate::proofs::proof(app, ws, &v, &manifest, &keys).await?;
        if let Some(receipt) = append(app, &verifying, caller, ws, name, version, position, draft, None).await? {
            let envelope: Value = serde_json::from_str(&receipt.envelope).unwrap_or(Value::Null);
            return Ok(Exported { seq: receipt.seq, receipt: envelope, governance, proof });
        }
        crate::adapters::backoff(attempt.min(5)).await;
    }
    Err(Error::unavailable(crate::error::Dependency::MetaStore, "could not claim the next ledger seq"))
}

/// How many official exports a version's ledger holds, from its last receipt: the `number` a signed
/// export receipt carries (0 when the last receipt is no export: exports are final, so none came
/// before). A ledger whose last export predates `number` is counted once by reading it whole.
pub(super) async fn exports_so_far(
    app: &App,
    ws: &WorkspaceId,
    name: &BundleName,
    version: &BundleName,
    v: &BundleVersion,
    head: &Head,
) -> Result<u64> {
    let Some(last) = head.statement.as_ref().filter(|s| s.kind == "export") else { return Ok(0) };
    if let Some(n) = last.details.as_ref().and_then(|d| d["number"].as_u64()) {
        return Ok(n);
    }
    let ledger = ledger(app, ws, name.as_str(), version.as_str(), &v.manifest_digest).await?;
    Ok(ledger.statements.iter().filter(|s| s.kind == "export").count() as u64)
}

/// Every file of the manifest linked in `ws` and intact in the store: its key, in manifest order.
pub(super) async fn check_integrity(
    app: &App,
    ws: &WorkspaceId,
    v: &BundleVersion,
    manifest: &crate::domain::Manifest,
) -> Result<Vec<crate::ports::BlobKey>> {
    use futures_util::{StreamExt, TryStreamExt};
    let digests = manifest.digests();
    let checked: Vec<(Digest, Result<crate::ports::BlobKey>)> = futures_util::stream::iter(digests)
        .map(|digest| async move {
            let result = async {
                let link =
                    app.meta.blob_link(ws, &digest).await?.ok_or_else(|| Error::BlobMissing(digest.to_string()))?;
                crate::blobs::verify_object(app.blobs.as_ref(), &link.key()).await?;
                Ok(link.key())
            }
            .await;
            Ok::<_, Error>((digest, result))
        })
        .buffered(EXPORT_PARALLELISM)
        .try_collect()
        .await?;
    let mut missing = Vec::new();
    let mut keys = Vec::with_capacity(checked.len());
    for (digest, result) in checked {
        match result {
            Ok(key) => keys.push(key),
            Err(Error::BlobMissing(_)) => missing.push(digest.to_string()),
            Err(Error::BlobIntegrity(detail)) => {
                return Err(Error::BlobIntegrity(format!("{} of {}@{}: {detail}", digest, v.name, v.version)));
            }
            Err(e) => return Err(e),
        }
    }
    if !missing.is_empty() {
        missing.sort();
        missing.dedup();
        missing.truncate(1000);
        return Err(Error::BlobsMissing(missing));
    }
    Ok(keys)
}
