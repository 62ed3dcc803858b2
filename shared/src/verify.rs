//! Asynchronous verification of large uploads (issue 19 §3; docs/decisions.md, "Asynchronous
//! verification"). `complete` of an upload above HELIX_VERIFY_INLINE_MAX records a job (`VerifyJob`,
//! in the meta store) and answers 202 with a status URL; the job is then advanced in steps, by
//! `helix serve`'s background worker or by the status route itself (on AWS: each poll works for at
//! most HELIX_VERIFY_STEP_SECONDS), each step:
//!
//! - takes the job's lease (a conditional write over the version it read: of two workers, one wins;
//!   a lease still held by another worker is left alone);
//! - joins a chunked upload first (idempotent) and pins the staged object (version id, else ETag), so
//!   every step hashes, and the promote copies, the same bytes;
//! - hashes the next ranges of the staged object (ranged reads), carrying the SHA-256 state at 64-byte
//!   boundaries (`Sha256State`), and saves the state and offset after each range, each save conditional
//!   on the version it read (a worker that lost its lease stops at its next save);
//! - at the end: bytes that are not the digest's end the job `failed` (`digest_mismatch`), with the
//!   staging object, the plan and the parts removed, as a synchronous `complete` does; matching bytes are
//!   promoted and linked by the same code as `complete` (`blobs::promote_and_link`: one `upload.complete`
//!   event, no overwrite, the slots), after the freeze and the workspace's suspension are read again.

use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::json;
use tokio::io::AsyncReadExt;

use crate::App;
use crate::blobs::{Caller, LinkBy, Linked, Verified};
use crate::domain::time::now_unix;
use crate::domain::{Digest, Sha256State, WorkspaceId};
use crate::error::{Dependency, Error, Result};
use crate::ports::{BlobLink, Staged, UploadRef, VerifyDriver, VerifyJob, VerifyState};

/// How long a step's lease holds without a save. Every save renews it; a worker that died leaves the
/// job to whoever comes after this (a status poll, the next background pass).
pub const LEASE: Duration = Duration::from_secs(60);
/// The largest range read and hashed between two saves of the state.
const RANGE: u64 = 256 * 1024 * 1024;
const READ_CHUNK: usize = 1024 * 1024;

/// What one step may do: work until `until`, hash at most `max_bytes` (None: no byte limit).
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    pub until: Instant,
    pub max_bytes: Option<u64>,
}

impl Budget {
    /// The configured budget of one step (HELIX_VERIFY_STEP_SECONDS, HELIX_VERIFY_STEP_BYTES).
    pub fn of(app: &App) -> Budget {
        Budget {
            until: Instant::now() + Duration::from_secs(app.config.verify_step_seconds),
            max_bytes: app.config.verify_step_bytes,
        }
    }
}

/// What the status route and a 202 `complete` answer (the problem of a failed job aside).
#[derive(Debug, Serialize)]
pub struct Progress {
    pub state: VerifyState,
    pub digest: Digest,
    pub upload_id: String,
    pub size: u64,
    pub verified_bytes: u64,
    /// Where to ask next: `GET` it with the same credential.
    pub status_url: String,
}

impl Progress {
    pub fn of(job: &VerifyJob) -> Progress {
        Progress {
            state: job.state,
            digest: job.digest.clone(),
            upload_id: job.upload_id.clone(),
            size: job.size,
            verified_bytes: job.verified_bytes,
            status_url: status_url(job),
        }
    }
}

/// The status route of a job, relative to the API root.
pub fn status_url(job: &VerifyJob) -> String {
    format!("/v1/workspaces/{}/uploads/{}/status?upload_id={}", job.workspace_id, job.digest, job.upload_id)
}

/// What `complete` did: linked (201, or 200 when it was linked already), or, for an upload above
/// HELIX_VERIFY_INLINE_MAX, a verification started (or already under way, or ended in a refusal): 202.
#[derive(Debug)]
pub enum Completion {
    Linked(Linked),
    Verifying(Box<VerifyJob>),
}

/// POST uploads/{digest}/complete: an upload up to HELIX_VERIFY_INLINE_MAX verified, promoted and linked
/// within the request (`blobs::complete_now`); a larger one verified after the answer, in steps.
///
/// `read`: the link as the request already read it with its credential (`blobs::link_of`).
pub async fn complete_upload(
    app: &App,
    caller: Caller<'_>,
    ws: &WorkspaceId,
    digest: &Digest,
    upload_id: &str,
    read: Option<Option<BlobLink>>,
) -> Result<Completion> {
    let upload = UploadRef::parse(ws, upload_id)?;
    // Already linked (a retry): the staging object, if any, is left to expire.
    if let Some(existing) = crate::blobs::link_of(app, ws, digest, read).await? {
        return Ok(Completion::Linked(Linked::existing(existing)));
    }
    // A verification under way (or ended) for this upload: its state, whatever the size.
    if let Some(job) = job_of(app, ws, digest, &upload).await? {
        return Ok(Completion::Verifying(Box::new(job)));
    }
    // A chunked upload: every part stored (else 409 now); a single one: its staged object.
    let ready = crate::chunked::ready(app, &upload, digest).await?;
    let (size, staged) = match &ready {
        Some(r) => (r.size(), None),
        None => {
            let staged = app.blobs.staged(&upload).await?.ok_or(Error::UploadMissing)?;
            (staged.size, Some(staged))
        }
    };
    if size > app.config.verify_inline_max {
        let job = start(app, caller, ws, digest, &upload, size, ready.is_some()).await?;
        return Ok(Completion::Verifying(Box::new(job)));
    }
    crate::blobs::complete_now(app, caller, (&upload, digest), ready, staged).await.map(Completion::Linked)
}

/// The job of `upload`, when there is one for this digest (another digest's job under the same id is
/// not this upload's: 400, as `complete` answers for a plan of another digest).
pub async fn job_of(app: &App, ws: &WorkspaceId, digest: &Digest, upload: &UploadRef) -> Result<Option<VerifyJob>> {
    let Some(job) = app.meta.verify_job(ws, &upload.id).await? else { return Ok(None) };
    if &job.digest != digest {
        return Err(Error::BadRequest(format!("upload {} is an upload of {}, not of {digest}", upload.id, job.digest)));
    }
    Ok(Some(job))
}

/// Record the job of a large upload (`complete`'s asynchronous branch) and hand it to the background
/// worker when this process runs one. Two concurrent completes of one upload record it once.
async fn start(
    app: &App,
    caller: Caller<'_>,
    ws: &WorkspaceId,
    digest: &Digest,
    upload: &UploadRef,
    size: u64,
    chunked: bool,
) -> Result<VerifyJob> {
    let job = VerifyJob::started(
        ws,
        &upload.id,
        digest,
        size,
        chunked,
        caller.principal.actor(),
        caller.request_id.to_owned(),
    );
    if !app.meta.save_verify_job(&job).await? {
        // A concurrent complete recorded it first: its job is the answer.
        return job_of(app, ws, digest, upload).await?.ok_or_else(|| Error::Internal("a job vanished".into()));
    }
    tracing::info!(request_id = caller.request_id, workspace = %ws, upload = %upload.id, %digest, size, "verification started");
    // The job is recorded: a bus that refuses the event fails nothing (the polls still drive the job).
    if let Err(e) = kick(app, ws, &upload.id).await {
        tracing::warn!(request_id = caller.request_id, workspace = %ws, upload = %upload.id, error = %e,
            "the verification's first event was not put on the verify bus; the status polls drive it");
    }
    Ok(job)
}

/// Hand the job of `upload_id` in `ws` to the App's driver (`VerifyDriver`): `helix serve`'s worker, or
/// a `verification.step` event on the verify bus (AWS). Ok(false): no driver (the polls drive the job).
pub async fn kick(app: &App, ws: &WorkspaceId, upload_id: &str) -> std::result::Result<bool, String> {
    match app.verify_worker.get() {
        None => Ok(false),
        Some(VerifyDriver::Local(worker)) => {
            worker.send((ws.clone(), upload_id.to_owned())).map_err(|_| "the background worker stopped".to_owned())?;
            Ok(true)
        }
        Some(VerifyDriver::Bus(bus)) => bus.kick(ws, upload_id).await.map(|()| true),
    }
}

/// GET …/uploads/{digest}/status: the job of the upload, advanced by one step within the configured
/// budget when no other worker holds it (on AWS the polls are what drives a verification; a job whose
/// worker died is taken up by the next poll after its lease). A failed job is its problem (`failure`).
/// No job, but the digest linked in `ws` (a small upload completed at once, or a job's record gone):
/// linked, as a repeated `complete` answers 200.
pub async fn status(app: &App, ws: &WorkspaceId, digest: &Digest, upload_id: &str) -> Result<Progress> {
    let upload = UploadRef::parse(ws, upload_id)?;
    let job = match job_of(app, ws, digest, &upload).await? {
        Some(job) => job,
        None => {
            let link = app.meta.blob_link(ws, digest).await?.ok_or(Error::UploadMissing)?;
            let mut progress = Progress {
                state: VerifyState::Linked,
                digest: digest.clone(),
                upload_id: upload.id,
                size: link.size,
                verified_bytes: link.size,
                status_url: String::new(),
            };
            progress.status_url =
                format!("/v1/workspaces/{ws}/uploads/{digest}/status?upload_id={}", progress.upload_id);
            return Ok(progress);
        }
    };
    let job =
        if job.is_over() { job } else { advance(app, ws, upload_id, &worker_name("poll"), Budget::of(app)).await? };
    match job.state {
        VerifyState::Failed => Err(failure(&job)),
        _ => Ok(Progress::of(&job)),
    }
}

/// The error a failed job answers with: the same problem a synchronous `complete` would have.
pub fn failure(job: &VerifyJob) -> Error {
    let detail = job.detail.clone().unwrap_or_default();
    match job.reason.as_deref() {
        Some("digest_mismatch") => Error::DigestMismatch { expected: job.digest.to_string(), actual: detail },
        Some("upload_incomplete") => Error::UploadIncomplete(detail),
        _ => Error::UploadMissing,
    }
}

/// A random name for one worker (a lease's owner).
pub fn worker_name(kind: &str) -> String {
    format!("{kind}-{}", crate::domain::random_hex::<8>())
}

/// Write `job` over the version it was read at, renewing `owner`'s lease (or releasing it): the job as
/// written, or None when another worker wrote first (this one stops).
async fn save(app: &App, mut job: VerifyJob, owner: Option<&str>) -> Result<Option<VerifyJob>> {
    let now = now_unix();
    job.version += 1;
    job.updated_at = now;
    job.lease_owner = owner.map(str::to_owned);
    job.lease_until = if owner.is_some() { now + LEASE.as_secs() as i64 } else { 0 };
    Ok(app.meta.save_verify_job(&job).await?.then_some(job))
}

/// Run `work` while renewing `owner`'s lease on `job` every third of `LEASE` (a join or a promote of a
/// large file may outlast one lease): the job as last saved and what the work ended with; None when
/// another worker took the job meanwhile (the work is dropped where it stood).
async fn leased<T>(
    app: &App,
    mut job: VerifyJob,
    owner: &str,
    work: impl std::future::Future<Output = Result<T>>,
) -> Result<Option<(VerifyJob, Result<T>)>> {
    tokio::pin!(work);
    loop {
        tokio::select! {
            out = &mut work => return Ok(Some((job, out))),
            _ = tokio::time::sleep(LEASE / 3) => match save(app, job, Some(owner)).await? {
                Some(j) => job = j,
                None => return Ok(None),
            },
        }
    }
}

/// End a job as failed (`reason`, `detail`), the staged bytes and a chunked upload's plan and parts
/// removed as a refused `complete` removes them.
async fn fail(app: &App, upload: &UploadRef, mut job: VerifyJob, reason: &str, detail: String) -> Result<VerifyJob> {
    tracing::warn!(request_id = %job.request_id, workspace = %job.workspace_id, upload = %job.upload_id, digest = %job.digest, reason, detail, "verification failed");
    let chunked = if job.chunked { crate::chunked::joined(app, upload).await.ok().flatten() } else { None };
    crate::blobs::refuse_staged(app, upload, chunked.as_ref()).await;
    job.state = VerifyState::Failed;
    job.reason = Some(reason.to_owned());
    job.detail = Some(detail);
    Ok(save(app, job.clone(), None).await?.unwrap_or(job))
}

/// Advance the job of upload `upload_id` in `ws` as `owner`, within `budget`: the job as this step
/// left it (unchanged when another worker holds its lease). An outage is an error and leaves the job
/// where its last save put it, for the next step.
pub async fn advance(app: &App, ws: &WorkspaceId, upload_id: &str, owner: &str, budget: Budget) -> Result<VerifyJob> {
    let upload = UploadRef::parse(ws, upload_id)?;
    let mut job = app.meta.verify_job(ws, upload_id).await?.ok_or(Error::UploadMissing)?;
    if job.is_over() {
        return Ok(job);
    }
    let held = job.lease_owner.as_deref().is_some_and(|o| o != owner) && job.lease_until > now_unix();
    if held {
        return Ok(job);
    }
    job.steps += 1;
    job = match save(app, job, Some(owner)).await? {
        Some(j) => j,
        None => return lost(app, &upload).await,
    };
    // An error leaves the lease to expire rather than write again: the next step resumes from the last save.
    work(app, &upload, job, owner, budget).await.inspect_err(|e| {
        tracing::warn!(error = %e, workspace = %ws, upload = upload_id, "a verification step stopped");
    })
}

/// What `work` ended with when another worker took over: the job as stored.
async fn lost(app: &App, upload: &UploadRef) -> Result<VerifyJob> {
    app.meta.verify_job(&upload.workspace, &upload.id).await?.ok_or(Error::UploadMissing)
}

async fn work(app: &App, upload: &UploadRef, mut job: VerifyJob, owner: &str, budget: Budget) -> Result<VerifyJob> {
    if job.staged.is_none() {
        job = match pin(app, upload, job, owner).await? {
            Some(j) => j,
            None => return lost(app, upload).await,
        };
    }
    let mut hashed = 0u64;
    while job.state == VerifyState::Verifying {
        let room = budget.max_bytes.map(|m| m.saturating_sub(hashed));
        if Instant::now() >= budget.until || room == Some(0) {
            break;
        }
        let before = job.verified_bytes;
        job = match hash_range(app, upload, job, owner, room).await? {
            Some(j) => j,
            None => return lost(app, upload).await,
        };
        hashed += job.verified_bytes - before;
    }
    // The promote and link in this step only when it has time left (else the next step's own).
    if job.state == VerifyState::Verified && (hashed == 0 || Instant::now() < budget.until) {
        return link(app, upload, job, owner).await;
    }
    if job.is_over() {
        return Ok(job);
    }
    // The step's budget is spent: the lease is released for whoever steps next (a poll, the worker).
    match save(app, job, None).await? {
        Some(j) => Ok(j),
        None => lost(app, upload).await,
    }
}

/// The first step: a chunked upload joined, the staged object read and pinned. A store that verified
/// the staged bytes' checksum itself (the embedded store's join hashes what it writes) settles the job
/// here, as it settles a synchronous `complete`.
async fn pin(app: &App, upload: &UploadRef, mut job: VerifyJob, owner: &str) -> Result<Option<VerifyJob>> {
    if job.chunked {
        let digest = job.digest.clone();
        let joined = match leased(app, job, owner, crate::chunked::join(app, upload, &digest)).await? {
            Some((j, joined)) => {
                job = j;
                joined
            }
            None => return Ok(None),
        };
        match joined {
            Ok(_) => {}
            Err(Error::UploadMissing) => {
                return fail(app, upload, job, "upload_missing", String::new()).await.map(Some);
            }
            Err(Error::UploadIncomplete(d)) => return fail(app, upload, job, "upload_incomplete", d).await.map(Some),
            Err(e) => return Err(e),
        }
    }
    let Some(staged) = app.blobs.staged(upload).await? else {
        return fail(app, upload, job, "upload_missing", "the staged upload is gone".into()).await.map(Some);
    };
    job.size = staged.size;
    let trusted = staged.stored_sha256.clone().filter(|_| app.blobs.staged_checksums_verified());
    if let Some(stored) = trusted {
        if stored != job.digest {
            return fail(app, upload, job, "digest_mismatch", stored.to_string()).await.map(Some);
        }
        job.state = VerifyState::Verified;
        job.verified_bytes = staged.size;
        job.by_store_checksum = true;
    }
    job.staged = Some(staged);
    save(app, job, Some(owner)).await
}

/// Hash the next range of the pinned staged object (at most `room` bytes, rounded down to whole blocks
/// unless it ends the file) and save the state after it; at the end of the file, compare.
async fn hash_range(
    app: &App,
    upload: &UploadRef,
    mut job: VerifyJob,
    owner: &str,
    room: Option<u64>,
) -> Result<Option<VerifyJob>> {
    let staged: Staged = job.staged.clone().ok_or_else(|| Error::Internal("hashing an unpinned upload".into()))?;
    let start = job.verified_bytes;
    let mut end = job.size.min(start + RANGE.min(room.unwrap_or(u64::MAX)));
    if end < job.size {
        end = (end - end % 64).max(start + 64).min(job.size);
    }
    let mut state = Sha256State::from_stored(&job.sha_state, start)?;
    let reader = match app.blobs.read_staged_range(upload, &staged, start, end).await {
        Ok(r) => r,
        Err(Error::UploadMissing) => {
            let detail = "the staged upload is gone or was replaced".to_owned();
            return fail(app, upload, job, "upload_missing", detail).await.map(Some);
        }
        Err(e) => return Err(e),
    };
    let mut body = reader.body;
    let mut buf = vec![0u8; READ_CHUNK];
    let mut filled = 0usize;
    let mut read = start;
    loop {
        let n = body.read(&mut buf[filled..]).await.map_err(|e| Error::unavailable(Dependency::BlobStore, e))?;
        if n == 0 {
            break;
        }
        filled += n;
        read += n as u64;
        if read > end {
            return Err(Error::unavailable(Dependency::BlobStore, "a ranged read answered more bytes than asked"));
        }
        let whole = filled - filled % 64;
        if filled == buf.len() || whole > 0 && filled > buf.len() / 2 {
            (state, buf) = hash_off_executor(state, buf, whole).await?;
            buf.copy_within(whole..filled, 0);
            filled -= whole;
        }
    }
    if read != end {
        return Err(Error::unavailable(Dependency::BlobStore, format!("a ranged read ended at {read}, not {end}")));
    }
    if end == job.size {
        let actual = Digest::from_raw(state.finish(&buf[..filled]));
        if actual != job.digest {
            return fail(app, upload, job, "digest_mismatch", actual.to_string()).await.map(Some);
        }
        job.state = VerifyState::Verified;
        job.verified_bytes = end;
    } else {
        state.update_blocks(&buf[..filled])?;
        job.verified_bytes = state.len();
        job.sha_state = state.words_hex();
    }
    save(app, job, Some(owner)).await
}

/// `state` advanced by the first `n` bytes of `buf`, on a blocking thread: a step hashes up to 256 MiB,
/// which on the executor would hold up every other request of `helix serve` sharing its thread.
async fn hash_off_executor(mut state: Sha256State, buf: Vec<u8>, n: usize) -> Result<(Sha256State, Vec<u8>)> {
    tokio::task::spawn_blocking(move || state.update_blocks(&buf[..n]).map(|()| (state, buf)))
        .await
        .map_err(|e| Error::Internal(format!("a hashing thread: {e}")))?
}

/// Hashed and matching: promote and link with `complete`'s own code, after the freeze and the
/// suspension are read again (a switch thrown during the verification holds the link: the job stays
/// `verified` and is linked by a step after the switch is lifted).
async fn link(app: &App, upload: &UploadRef, mut job: VerifyJob, owner: &str) -> Result<VerifyJob> {
    let held = async {
        crate::freeze::refuse_if_frozen(app.meta.as_ref(), None).await?;
        crate::suspension::refuse_if_suspended(app.meta.as_ref(), &upload.workspace, None).await
    };
    if let Err(e) = held.await {
        save(app, job, None).await?;
        return Err(e);
    }
    let staged = job.staged.clone().ok_or_else(|| Error::Internal("linking an unpinned upload".into()))?;
    let chunked = if job.chunked { crate::chunked::joined(app, upload).await? } else { None };
    let verified = Verified { size: job.size, by_store_checksum: job.by_store_checksum };
    let by = LinkBy { actor: job.actor.clone(), request_id: job.request_id.clone() };
    let extra = json!({"verified_async": true, "verification_steps": job.steps});
    let digest = job.digest.clone();
    let linked = match app.meta.blob_link(&upload.workspace, &digest).await? {
        Some(_) => None,
        None => {
            let promote =
                crate::blobs::promote_and_link(app, &by, (upload, &digest), &staged, verified, chunked.as_ref(), extra);
            let (j, done) = match leased(app, job, owner, promote).await? {
                Some(out) => out,
                None => return lost(app, upload).await,
            };
            job = j;
            match done {
                Ok(l) => Some(l),
                Err(Error::UploadMissing) => {
                    return fail(app, upload, job, "upload_missing", "the staged upload is gone".into()).await;
                }
                Err(e) => return Err(e),
            }
        }
    };
    tracing::info!(request_id = %job.request_id, workspace = %job.workspace_id, upload = %job.upload_id, digest = %job.digest, created = linked.is_some_and(|l| l.created), steps = job.steps, "verification linked");
    let mut done = job.clone();
    done.state = VerifyState::Linked;
    Ok(save(app, done, None).await?.unwrap_or(job))
}

/// `helix serve`: a task that drives each job `complete` starts to its end, step after step (each
/// step within the configured budget, its state saved, so a restart loses at most one range), at most
/// two jobs at a time. A job it cannot finish (an outage, a switch thrown) is left to the status polls.
pub fn start_worker(app: std::sync::Arc<App>) {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(WorkspaceId, String)>();
    if app.verify_worker.set(VerifyDriver::Local(tx)).is_err() {
        return;
    }
    let weak = std::sync::Arc::downgrade(&app);
    drop(app);
    tokio::spawn(async move {
        let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(2));
        let owner = worker_name("serve");
        while let Some((ws, id)) = rx.recv().await {
            let Some(app) = weak.upgrade() else { return };
            let permit = slots.clone().acquire_owned().await.expect("never closed");
            let owner = owner.clone();
            tokio::spawn(async move {
                let _permit = permit;
                loop {
                    match advance(&app, &ws, &id, &owner, Budget::of(&app)).await {
                        Ok(job) if job.is_over() => return,
                        Ok(job) if job.lease_owner.as_deref().is_some_and(|o| o != owner) => return,
                        Ok(_) => {}
                        Err(_) => return,
                    }
                }
            });
        }
    });
}

/// EventBridge's `source` and `detail-type` of the event that asks for a job's next step.
pub const EVENT_SOURCE: &str = "helix.verify";
pub const EVENT_DETAIL_TYPE: &str = "verification.step";
/// How long before an invocation's deadline its step's budget ends, at most: the step's last range
/// (at most 256 MiB read and hashed), the lease's release and the next step's event fit in it, so a
/// step never outlives its invocation holding the lease. A third of the invocation when it is short.
pub const DEADLINE_MARGIN: Duration = Duration::from_secs(60);

/// The `detail` of a step event: the job's workspace and upload id.
pub fn event_detail(ws: &WorkspaceId, upload_id: &str) -> serde_json::Value {
    json!({"workspace": ws.as_str(), "upload_id": upload_id})
}

/// The job a step event names: EventBridge's envelope (`source` helix.verify, `detail`), or its
/// `detail` alone (an operator's `aws lambda invoke`). Anything else is refused, never guessed.
pub fn parse_event(event: &serde_json::Value) -> Result<(WorkspaceId, String)> {
    let bad = |m: String| Error::BadRequest(format!("not a {EVENT_DETAIL_TYPE} event: {m}"));
    let detail = match event.get("detail") {
        Some(detail) => {
            if let Some(source) = event.get("source")
                && source.as_str() != Some(EVENT_SOURCE)
            {
                return Err(bad(format!("source {source}, not {EVENT_SOURCE}")));
            }
            detail
        }
        None => event,
    };
    let field = |name: &str| detail.get(name).and_then(serde_json::Value::as_str);
    let ws = field("workspace").ok_or_else(|| bad("detail.workspace is not a string".into()))?;
    let ws = WorkspaceId::parse(ws).map_err(|e| bad(e.to_string()))?;
    let id = field("upload_id").ok_or_else(|| bad("detail.upload_id is not a string".into()))?;
    let upload = UploadRef::parse(&ws, id).map_err(|e| bad(e.to_string()))?;
    Ok((ws, upload.id))
}

/// What one invocation of the verify function did (its answer, and its log line).
#[derive(Debug, Serialize)]
pub struct Driven {
    pub workspace: String,
    pub upload_id: String,
    /// The job as the invocation left it; None: no such job (ended long ago and removed).
    pub state: Option<VerifyState>,
    pub verified_bytes: u64,
    pub size: u64,
    pub steps: u64,
    /// Seconds spent waiting for another worker's lease to lapse.
    pub waited_seconds: u64,
    /// The next step's event was put (the job still runs).
    pub next_step_put: bool,
    /// The freeze or the workspace's suspension holds the link: no next event (the refusal).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub held: Option<String>,
}

/// The verify function's invocation (a `verification.step` event; docs/decisions.md, "Unattended
/// verification on AWS"): the job named, when it runs, advanced by one step whose budget ends
/// `DEADLINE_MARGIN` before `deadline` (and after HELIX_VERIFY_STEP_BYTES, when set). A lease another
/// worker holds is waited out (a dead worker's lapses within `LEASE`); a live holder that outlasts
/// this invocation's budget is left to the next one. Still running after the step: the next step's
/// event is put on the bus, and a bus that refuses it fails the invocation (Lambda's asynchronous retry
/// runs it again: nothing is lost, the step's progress is saved). An outage fails it the same way.
pub async fn drive(app: &App, event: &serde_json::Value, deadline: Instant) -> Result<Driven> {
    let (ws, id) = parse_event(event)?;
    let now = Instant::now();
    let left = deadline.saturating_duration_since(now);
    let until = now + left - DEADLINE_MARGIN.min(left / 3);
    let owner = worker_name("verify");
    let mut out = Driven {
        workspace: ws.to_string(),
        upload_id: id.clone(),
        state: None,
        verified_bytes: 0,
        size: 0,
        steps: 0,
        waited_seconds: 0,
        next_step_put: false,
        held: None,
    };
    let job = loop {
        let Some(job) = app.meta.verify_job(&ws, &id).await? else {
            tracing::warn!(workspace = %ws, upload = %id, "a step event for a job that is not (or no longer) recorded");
            return Ok(out);
        };
        if job.is_over() {
            break job;
        }
        let held_by = job.lease_owner.as_deref().filter(|o| *o != owner && job.lease_until > now_unix());
        if let Some(holder) = held_by {
            let wait = Duration::from_secs((job.lease_until - now_unix()).max(0) as u64 + 1);
            if Instant::now() + wait >= until {
                // A live holder (its lease renewed) outlasts this budget: the next invocation waits on.
                tracing::info!(workspace = %ws, upload = %id, holder, "the job's lease outlasts this invocation");
                break job;
            }
            tracing::info!(workspace = %ws, upload = %id, holder, wait_seconds = wait.as_secs(), "waiting for another worker's lease");
            tokio::time::sleep(wait).await;
            out.waited_seconds += wait.as_secs();
            continue;
        }
        let job = match advance(app, &ws, &id, &owner, Budget { until, max_bytes: app.config.verify_step_bytes }).await
        {
            Ok(job) => job,
            // An operator's switch holds the link: no retry and no next event would change that (and
            // failing would raise the function's alarm, a deployment's rollback alarm). The job stays
            // `verified`; the first status poll after the switch is lifted links it, or the operator
            // re-sends this event (docs/runbook.md, "A verification is stuck").
            Err(e @ (Error::RegistryFrozen(_) | Error::WorkspaceSuspended { .. })) => {
                tracing::warn!(workspace = %ws, upload = %id, error = %e, "verification held by a switch: left to the next poll or a re-sent event");
                out.held = Some(e.to_string());
                match app.meta.verify_job(&ws, &id).await? {
                    Some(job) => break job,
                    None => return Ok(out),
                }
            }
            Err(e) => return Err(e),
        };
        // Taken by another worker between the read and this step's lease: wait for it (next turn).
        if job.is_over() || job.lease_owner.as_deref().is_none_or(|o| o == owner) {
            break job;
        }
    };
    out.state = Some(job.state);
    out.verified_bytes = job.verified_bytes;
    out.size = job.size;
    out.steps = job.steps;
    if !job.is_over() && out.held.is_none() {
        kick(app, &ws, &id)
            .await
            .map_err(|e| Error::Internal(format!("the next verification step was not put on the verify bus: {e}")))?;
        out.next_step_put = true;
    }
    Ok(out)
}

#[cfg(test)]
mod event_tests {
    use super::*;

    #[test]
    fn a_step_event_names_its_job_and_anything_else_is_refused_not_guessed() {
        let id = "0123456789abcdef0123456789abcdef";
        let envelope = json!({"version": "0", "id": "e", "detail-type": EVENT_DETAIL_TYPE, "source": EVENT_SOURCE,
            "account": "123456789012", "time": "2026-12-04T10:00:00Z", "region": "us-east-1", "resources": [],
            "detail": {"workspace": "team-a", "upload_id": id}});
        let (ws, upload) = parse_event(&envelope).unwrap();
        assert_eq!((ws.as_str(), upload.as_str()), ("team-a", id));
        let detail = event_detail(&ws, id);
        assert_eq!(parse_event(&detail).unwrap().1, id, "an operator's invoke with the detail alone");
        for bad in [
            json!({}),
            json!(null),
            json!("team-a"),
            json!({"detail": "team-a"}),
            json!({"detail": {"workspace": "team-a"}}),
            json!({"detail": {"workspace": 7, "upload_id": id}}),
            json!({"detail": {"workspace": "Team A/..", "upload_id": id}}),
            json!({"detail": {"workspace": "team-a", "upload_id": "../../blobs/x"}}),
            json!({"source": "helix.registry", "detail": {"workspace": "team-a", "upload_id": id}}),
        ] {
            match parse_event(&bad) {
                Err(Error::BadRequest(m)) => assert!(m.contains(EVENT_DETAIL_TYPE), "{m}"),
                other => panic!("{bad}: {other:?}"),
            }
        }
    }
}
