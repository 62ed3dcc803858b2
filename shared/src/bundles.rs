//! Bundle versions (SPEC §4): registration of a manifest, reads, listing. A version is immutable:
//! its canonical manifest is stored as a blob linked in the workspace, and that blob's digest is the
//! version's identity. Every file the manifest names must already be linked in the workspace, with the
//! size the manifest says; the registration and its audit event commit together.

use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt};
use serde::Serialize;
use serde_json::{Value, json};

use crate::App;
use crate::blobs::{self, Caller};
use crate::domain::governance::{State, transition_id};
use crate::domain::time::now_unix;
use crate::domain::{AuditDraft, BundleName, Digest, Manifest, Outcome, WorkspaceId, bundle_ref};
use crate::error::{Error, Result};
use crate::ports::{BundleVersion, Change, Commit};

/// Most missing digests a `blob_missing` answer lists.
const MAX_LISTED_MISSING: usize = 1000;
/// Page size of the bundle listing: default and most.
pub const LIST_DEFAULT: usize = 100;
pub const LIST_MAX: usize = 1000;

/// A bundle version as the API shows it: its record, its state, and (on GET) its manifest.
#[derive(Debug, Serialize)]
pub struct VersionView {
    #[serde(flatten)]
    pub record: BundleVersion,
    pub state: State,
    /// The transition an export would take now: the id a waiver would have to cover.
    pub export_transition: Digest,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub manifest: Option<Value>,
    /// True when this request registered it (HTTP 201).
    #[serde(skip)]
    pub created: bool,
}

/// `ws/name@version`: how receipts and transition ids name a version.
fn view(record: BundleVersion, state: State, manifest: Option<Value>, created: bool) -> Result<VersionView> {
    let ws = WorkspaceId::parse(&record.workspace_id)?;
    let export_transition = transition_id(&bundle_ref(&ws, &record.name, &record.version), state, State::Exported)?;
    Ok(VersionView { record, state, export_transition, manifest, created })
}

/// PUT a manifest as `name`@`version` in `ws`. The same manifest again is a no-op (200); another one
/// is `409 version_exists`.
pub async fn register(
    app: &App,
    caller: Caller<'_>,
    ws: &WorkspaceId,
    name: &BundleName,
    version: &BundleName,
    body: &[u8],
) -> Result<VersionView> {
    let limit = app.config.inline_max;
    if body.len() as u64 > limit {
        return Err(Error::PayloadTooLarge { limit });
    }
    let manifest = Manifest::parse(body, name, version)?;
    let canonical = Bytes::from(manifest.canonical()?);
    let digest = Digest::of(&canonical);
    if let Some(existing) = app.meta.bundle_version(ws, name.as_str(), version.as_str()).await? {
        return same_or_conflict(app, existing, &digest).await;
    }
    check_files(app, ws, &manifest).await?;
    // The manifest is a blob of the workspace: the bytes are the registry's own, so no upload.
    blobs::put_inline(app, caller, ws, &digest, canonical.clone(), None).await?;
    let version_record = BundleVersion {
        workspace_id: ws.to_string(),
        name: name.to_string(),
        version: version.to_string(),
        manifest_digest: digest.clone(),
        files: manifest.files.len() as u64,
        bytes: manifest.files.iter().map(|f| f.size).sum(),
        registered_at: now_unix(),
        registered_by: caller.principal.actor(),
        registered_user: caller.principal.user.clone(),
    };
    let event = AuditDraft {
        stream: ws.to_string(),
        actor: caller.principal.actor(),
        action: "bundle.register".into(),
        entity_type: "bundle_version".into(),
        entity_id: bundle_ref(ws, name.as_str(), version.as_str()),
        outcome: Outcome::Success,
        request_id: caller.request_id.into(),
        details: json!({"manifest_digest": digest, "files": version_record.files, "bytes": version_record.bytes}),
    };
    match app.meta.commit(Change::RegisterBundle(version_record.clone()), event).await? {
        Commit::Applied(_) => view(version_record, State::Submitted, None, true),
        // Registered concurrently: by the same manifest (a retry) or another one.
        Commit::AlreadyDone => {
            let existing = app.meta.bundle_version(ws, name.as_str(), version.as_str()).await?;
            same_or_conflict(app, existing.ok_or_else(|| Error::Internal("registration vanished".into()))?, &digest)
                .await
        }
    }
}

async fn same_or_conflict(app: &App, existing: BundleVersion, digest: &Digest) -> Result<VersionView> {
    if &existing.manifest_digest == digest {
        let ws = WorkspaceId::parse(&existing.workspace_id)?;
        let state = crate::governance::head(app, &ws, &existing.name, &existing.version, &existing.manifest_digest)
            .await?
            .state;
        view(existing, state, None, false)
    } else {
        Err(Error::VersionExists(existing.manifest_digest.to_string()))
    }
}

/// Link lookups a registration makes at once.
const LINK_LOOKUPS: usize = 4;

/// Every file's blob is linked in `ws` with the manifest's size (lookups in parallel, bounded).
async fn check_files(app: &App, ws: &WorkspaceId, manifest: &Manifest) -> Result<()> {
    let digests = manifest.digests();
    let mut distinct = digests.clone();
    distinct.sort();
    distinct.dedup();
    // The workspace's links of every distinct digest, many to a lookup (`blob_links`), a few lookups at
    // once (a manifest of 10,000 files is 10 of them, on the path of every push's last request).
    // Collected first: a lazy map's closure in this future's state would make it not `Send` for every lifetime.
    let lookups: Vec<_> =
        distinct.chunks(crate::batch::MAX_QUERY_DIGESTS).map(|chunk| app.meta.blob_links(ws, chunk)).collect();
    let found: Vec<Vec<crate::ports::BlobLink>> =
        futures_util::stream::iter(lookups).buffer_unordered(LINK_LOOKUPS).try_collect().await?;
    let linked: std::collections::BTreeMap<Digest, u64> =
        found.into_iter().flatten().map(|l| (l.digest, l.size)).collect();
    let mut missing = Vec::new();
    for (digest, f) in digests.iter().zip(&manifest.files) {
        match linked.get(digest) {
            None => missing.push(digest.to_string()),
            Some(&size) if size != f.size => {
                return Err(Error::InvalidManifest(format!(
                    "{:?}: size {}, but its blob has {size} bytes",
                    f.path, f.size
                )));
            }
            Some(_) => {}
        }
    }
    missing.sort();
    missing.dedup();
    if missing.is_empty() {
        return Ok(());
    }
    missing.truncate(MAX_LISTED_MISSING);
    Err(Error::BlobsMissing(missing))
}

/// GET a version: its record, state, and manifest (read back from the store and verified). `read`: the
/// version as the request already read it with its credential (`Ctx::read_version`), if it did.
pub async fn get(
    app: &App,
    ws: &WorkspaceId,
    name: &BundleName,
    version: &BundleName,
    read: Option<Option<BundleVersion>>,
) -> Result<VersionView> {
    let v = crate::governance::version_of(app, ws, name, version, read).await?;
    let manifest = blobs::stored_manifest(app, ws, &v).await?;
    let manifest = serde_json::to_value(&manifest).map_err(|e| Error::Internal(e.to_string()))?;
    let state =
        crate::governance::head_in_one_round(app, ws, name.as_str(), version.as_str(), &v.manifest_digest).await?.state;
    view(v, state, Some(manifest), false)
}

/// Most versions one listing request reads when it filters by state: a filter that matches little
/// answers a short (even empty) page with a `next_cursor` to go on from, so every request is bounded.
pub const SCAN_BUDGET: usize = 1000;

/// What one bounded walk of a workspace's versions found.
pub struct Scan {
    /// The versions that matched, each with its state, in (name, version) order.
    pub versions: Vec<(BundleVersion, State)>,
    /// How many versions were read.
    pub scanned: usize,
    /// Where to go on from (the last version read) when the walk stopped before the end.
    pub next: Option<(String, String)>,
}

/// Walk `ws`'s versions after `after`, in (name, version) order, keeping those in `filter` (all when
/// None), until `limit` kept, `budget` read or the end.
pub async fn scan(
    app: &App,
    ws: &WorkspaceId,
    mut after: Option<(String, String)>,
    filter: Option<State>,
    limit: usize,
    budget: usize,
) -> Result<Scan> {
    let mut out = Scan { versions: Vec::new(), scanned: 0, next: None };
    while out.versions.len() < limit && out.scanned < budget {
        let want = (limit - out.versions.len()).min(budget - out.scanned);
        let page = app.meta.list_bundles(ws, after.clone(), want).await?;
        let full = page.len() == want;
        let page = crate::governance::states(app, ws, page).await?;
        for (v, state) in page {
            out.scanned += 1;
            after = Some((v.name.clone(), v.version.clone()));
            if filter.is_none_or(|f| f == state) {
                out.versions.push((v, state));
            }
        }
        if !full {
            return Ok(out);
        }
    }
    out.next = after;
    Ok(out)
}

fn parse_cursor(c: &str) -> Result<(String, String)> {
    let (name, version) = c.split_once('@').ok_or_else(|| Error::BadRequest("cursor is name@version".into()))?;
    Ok((BundleName::parse(name)?.to_string(), BundleName::parse(version)?.to_string()))
}

/// A version as listings show it: its record, its state and the transition an export would take.
pub fn listed(v: &BundleVersion, state: State) -> Result<Value> {
    let ws = WorkspaceId::parse(&v.workspace_id)?;
    let export_transition = transition_id(&bundle_ref(&ws, &v.name, &v.version), state, State::Exported)?;
    Ok(json!({"workspace_id": v.workspace_id, "name": v.name, "version": v.version,
              "manifest_digest": v.manifest_digest, "files": v.files, "bytes": v.bytes,
              "registered_at": v.registered_at, "registered_by": v.registered_by,
              "registered_user": v.registered_user, "state": state, "export_transition": export_transition}))
}

/// A page of the workspace's bundle versions with their governance state, ordered by (name, version),
/// only those in `state` when given; the cursor is the last `name@version` the previous page read.
pub async fn list(
    app: &App,
    ws: &WorkspaceId,
    cursor: Option<&str>,
    limit: Option<usize>,
    state: Option<&str>,
) -> Result<Value> {
    let limit = limit.unwrap_or(LIST_DEFAULT);
    if !(1..=LIST_MAX).contains(&limit) {
        return Err(Error::BadRequest(format!("limit is 1 to {LIST_MAX}")));
    }
    let filter = match state {
        None => None,
        Some(s) => Some(
            State::parse(s)
                .ok_or_else(|| Error::BadRequest("state is one of submitted, approved, rejected, exported".into()))?,
        ),
    };
    let after = cursor.map(parse_cursor).transpose()?;
    let found = scan(app, ws, after, filter, limit, SCAN_BUDGET.max(limit)).await?;
    let versions: Vec<Value> = found.versions.iter().map(|(v, st)| listed(v, *st)).collect::<Result<_>>()?;
    let next = found.next.map(|(n, v)| format!("{n}@{v}"));
    Ok(json!({"workspace_id": ws.to_string(), "versions": versions, "next_cursor": next}))
}
