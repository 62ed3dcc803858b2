//! A verification job (`crate::verify`): a large upload's whole-file SHA-256, computed in steps that
//! may run in different processes, with its progress in the meta store. Staging state, like a chunked
//! upload's plan: not a governed change (the link it ends in is one, with its audit event).

use super::*;

/// Where a job is: hashing, hashed and matching (the link is next), or ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VerifyState {
    Verifying,
    /// The bytes hash to the digest; the promote and the link are next (a freeze or a suspension
    /// holds the job here until it is lifted).
    Verified,
    Linked,
    Failed,
}

/// One job, keyed by workspace and upload id. Every write is conditional on `version` (the version
/// read, plus one), so of two workers only one advances a job; the lease says who may try.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct VerifyJob {
    pub workspace_id: String,
    pub upload_id: String,
    pub digest: Digest,
    /// The size declared at the upload's start (a chunked upload's plan).
    pub size: u64,
    pub chunked: bool,
    /// Who completed the upload and in which request: the link's audit event names them.
    pub actor: String,
    pub request_id: String,
    pub state: VerifyState,
    /// Bytes hashed so far (a multiple of 64 until the end), and the SHA-256 state after them.
    pub verified_bytes: u64,
    pub sha_state: String,
    /// True when the store's own checksum of the staged bytes settled it (nothing was re-read).
    pub by_store_checksum: bool,
    /// The staged object as first read, pinned (version id, else ETag): the bytes hashed in every step
    /// and the bytes promoted are the same ones. None until the upload is joined.
    pub staged: Option<Staged>,
    /// Why a failed job failed: a problem reason (`digest_mismatch`, `upload_missing`) and its detail
    /// (for `digest_mismatch`, what the bytes hash to).
    pub reason: Option<String>,
    pub detail: Option<String>,
    /// The worker allowed to advance the job until `lease_until` (Unix seconds).
    pub lease_owner: Option<String>,
    pub lease_until: i64,
    pub steps: u64,
    pub version: u64,
    pub created_at: i64,
    pub updated_at: i64,
}

/// How long a job that has ended (linked or failed) is kept for its status URL, after its last write:
/// then it is removed (SQLite: when a later job ends; DynamoDB: the meta table's TTL on `purge_at`,
/// which typically deletes an expired item within two days of its time).
pub const ENDED_JOB_KEPT_SECONDS: i64 = 7 * 24 * 3600;

impl VerifyJob {
    /// A job as `complete` records it (version 1, nothing hashed, no lease), made now.
    pub fn started(
        ws: &WorkspaceId,
        upload_id: &str,
        digest: &Digest,
        size: u64,
        chunked: bool,
        actor: String,
        request_id: String,
    ) -> VerifyJob {
        let now = crate::domain::time::now_unix();
        VerifyJob {
            workspace_id: ws.to_string(),
            upload_id: upload_id.to_owned(),
            digest: digest.clone(),
            size,
            chunked,
            actor,
            request_id,
            state: VerifyState::Verifying,
            verified_bytes: 0,
            by_store_checksum: false,
            sha_state: crate::domain::Sha256State::default().words_hex(),
            staged: None,
            reason: None,
            detail: None,
            lease_owner: None,
            lease_until: 0,
            steps: 0,
            version: 1,
            created_at: now,
            updated_at: now,
        }
    }

    /// Linked or failed: nothing more happens to it.
    pub fn is_over(&self) -> bool {
        matches!(self.state, VerifyState::Linked | VerifyState::Failed)
    }

    /// When the job may be removed (Unix seconds): `ENDED_JOB_KEPT_SECONDS` after it ended; None while
    /// it runs.
    pub fn purge_at(&self) -> Option<i64> {
        self.is_over().then_some(self.updated_at.saturating_add(ENDED_JOB_KEPT_SECONDS))
    }
}

/// A bus that carries `verification.step` events to whatever drives a job unattended (on AWS: an
/// EventBridge bus whose rule invokes the verify function; `verify::drive`).
#[async_trait::async_trait]
pub trait VerifyBus: Send + Sync {
    /// Put one event naming the job of `upload_id` in `ws`. An error is the bus's refusal or an outage.
    async fn kick(&self, ws: &WorkspaceId, upload_id: &str) -> std::result::Result<(), String>;
}

/// What drives a job once `complete` recorded it, besides the status polls (`verify::start`,
/// `verify::drive`): `helix serve`'s background worker, reached by a channel in this process, or an
/// event bus (AWS: the verify function, one invocation per step).
#[derive(Clone)]
pub enum VerifyDriver {
    Local(tokio::sync::mpsc::UnboundedSender<(WorkspaceId, String)>),
    Bus(std::sync::Arc<dyn VerifyBus>),
}

/// The App's driver, set once (`verify::start_worker` in `helix serve`; the publish function on AWS
/// when HELIX_VERIFY_BUS_NAME is set). Unset: the polls alone advance a job.
pub type VerifyQueue = std::sync::OnceLock<VerifyDriver>;
