//! The one error type of helix-core. Every variant has exactly one HTTP status and one stable
//! `reason`, assigned in `http::problem::classify` (the single place to read the table of reasons).

use std::fmt;

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The dependencies a request can find unavailable; each has its own `*_unavailable` reason.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dependency {
    BlobStore,
    MetaStore,
    AuditLog,
    Signer,
    /// The OIDC identity provider's keys (JWKS).
    IdentityProvider,
}

impl Dependency {
    pub fn as_str(self) -> &'static str {
        match self {
            Dependency::BlobStore => "blob_store",
            Dependency::MetaStore => "meta_store",
            Dependency::AuditLog => "audit_log",
            Dependency::Signer => "signer",
            Dependency::IdentityProvider => "idp",
        }
    }
}

impl fmt::Display for Dependency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    InvalidDigest(String),
    #[error("{0}")]
    InvalidWorkspace(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("the bytes hash to {actual}, not to the digest {expected}")]
    DigestMismatch { expected: String, actual: String },
    #[error("the body is larger than the limit of {limit} bytes")]
    PayloadTooLarge { limit: u64 },
    /// A batch over one of its limits (blobs, bytes, digests, header): nothing was read into the store.
    #[error("{0}")]
    BatchTooLarge(String),
    #[error("no blob {0} in this workspace or store")]
    BlobMissing(String),
    #[error("{0}")]
    PreconditionFailed(String),
    /// A `Range` that starts at or past the end of a blob of `size` bytes.
    #[error("the range starts at or past the end of the blob ({size} bytes)")]
    RangeNotSatisfiable { size: u64 },
    #[error("invalid manifest: {0}")]
    InvalidManifest(String),
    #[error("this version is registered with another manifest ({0}); versions are immutable")]
    VersionExists(String),
    /// Files of a manifest whose blobs are not linked in the workspace (the digests, at most 1000).
    #[error("{} file(s) of the manifest are not linked in this workspace", .0.len())]
    BlobsMissing(Vec<String>),
    #[error("no such bundle version in this workspace")]
    BundleMissing,
    /// The version is not approved and no live waiver covers `transition`.
    #[error("the version is not approved and no live waiver covers its export (transition {transition})")]
    NotApproved { transition: String },
    /// A decision the governance state machine refuses (`reason`: version_rejected, version_exported).
    #[error("{detail}")]
    GovernanceConflict { reason: &'static str, detail: String },
    #[error("{0}")]
    WaiverInvalid(String),
    #[error("the user who registered a version can neither approve nor waive it (separation of duties)")]
    SelfApproval,
    #[error("no such upload in this workspace: start one with POST .../uploads and PUT the bytes to its URL")]
    UploadMissing,
    /// `complete` of a chunked upload some of whose parts the store does not hold (which ones).
    #[error("the upload is incomplete: {0}; send them, then complete again")]
    UploadIncomplete(String),
    #[error("stored object does not match its digest: {0}")]
    BlobIntegrity(String),
    #[error("no such token")]
    TokenNotFound,
    #[error("no such route")]
    NotFound,
    /// The path exists with other methods: `allow` lists them (the `Allow` header of the 405).
    #[error("method not allowed on this route")]
    MethodNotAllowed { allow: &'static [&'static str] },
    #[error("no bearer token was sent")]
    TokenMissing,
    #[error("the bearer token is malformed or unknown")]
    TokenInvalid,
    #[error("the token has expired")]
    TokenExpired,
    #[error("the token has been revoked")]
    TokenRevoked,
    #[error("this route needs role {need} or higher; the token has {have}")]
    /// Role names (`Role::as_str`): the error type sits below the domain and does not import it.
    InsufficientRole { need: &'static str, have: &'static str },
    #[error("the token is not valid for this workspace")]
    ForbiddenWorkspace,
    #[error("{dep} unavailable: {detail}")]
    Unavailable { dep: Dependency, detail: String },
    /// The store refused a change as invalid (e.g. an item over its size limit): the request's fault.
    #[error("the store refused this change as invalid; nothing was changed")]
    StoreRefused(String),
    /// A commit that may or may not have happened (the store gave no definite answer in time).
    #[error("the outcome of this change is unknown: {0}")]
    OutcomeUnknown(String),
    #[error("internal error: {0}")]
    Internal(String),
    #[error("a stored audit export file differs from what the audit log yields: {0}")]
    AuditExportMismatch(String),
    /// A day cannot be exported (its predecessor cannot be, or the log does not add up yet); nothing
    /// signed was written.
    #[error("audit export blocked: {0}")]
    AuditExportBlocked(String),
    /// The registry is frozen (the kill switch): no change until an admin unfreezes it.
    #[error("the registry is frozen ({0}); reads keep working, changes are refused until an admin unfreezes it")]
    RegistryFrozen(String),
    /// The workspace is suspended (one tenant contained): every request scoped to it is refused until
    /// an admin of every workspace unsuspends it.
    #[error(
        "workspace {workspace} is suspended ({reason}); every request scoped to it is refused until an admin of every workspace unsuspends it"
    )]
    WorkspaceSuspended { workspace: String, reason: String },
    /// A proof URL that is malformed, forged, altered, or names what its grant does not cover.
    #[error("this proof URL is not valid: {0}")]
    ProofInvalid(String),
    #[error("this proof URL has expired; export again for new ones")]
    ProofExpired,
}

impl Error {
    pub fn unavailable(dep: Dependency, detail: impl fmt::Display) -> Error {
        Error::Unavailable { dep, detail: detail.to_string() }
    }
}
