//! problem+json (RFC 9457). `classify` is the single table from error to HTTP status and stable
//! `reason`. The body carries the error's own message except for dependency and internal failures,
//! whose details (endpoints, AWS error text) go to the log only, under the request id.

use serde_json::json;

use super::Response;
use crate::error::{Dependency, Error};

pub fn classify(e: &Error) -> (u16, &'static str) {
    match e {
        Error::InvalidDigest(_) => (400, "invalid_digest"),
        Error::InvalidWorkspace(_) => (400, "invalid_workspace"),
        Error::BadRequest(_) => (400, "invalid_request"),
        Error::DigestMismatch { .. } => (400, "digest_mismatch"),
        Error::PayloadTooLarge { .. } => (413, "payload_too_large"),
        Error::BatchTooLarge(_) => (413, "batch_too_large"),
        Error::BlobMissing(_) => (404, "blob_missing"),
        Error::UploadMissing => (404, "upload_missing"),
        Error::UploadIncomplete(_) => (409, "upload_incomplete"),
        Error::PreconditionFailed(_) => (412, "precondition_failed"),
        Error::RangeNotSatisfiable { .. } => (416, "range_not_satisfiable"),
        Error::InvalidManifest(_) => (400, "invalid_manifest"),
        Error::VersionExists(_) => (409, "version_exists"),
        Error::BlobsMissing(_) => (409, "blob_missing"),
        Error::BundleMissing => (404, "bundle_missing"),
        Error::NotApproved { .. } => (403, "not_approved"),
        Error::GovernanceConflict { reason, .. } => (409, reason),
        Error::WaiverInvalid(_) => (400, "waiver_invalid"),
        Error::SelfApproval => (403, "self_approval"),
        Error::BlobIntegrity(_) => (500, "blob_integrity_error"),
        Error::AuditExportMismatch(_) => (500, "audit_export_mismatch"),
        Error::AuditExportBlocked(_) => (500, "audit_export_blocked"),
        Error::RegistryFrozen(_) => (503, "registry_frozen"),
        Error::ProofInvalid(_) => (403, "proof_invalid"),
        Error::ProofExpired => (403, "proof_expired"),
        Error::TokenNotFound => (404, "token_not_found"),
        Error::NotFound => (404, "not_found"),
        Error::MethodNotAllowed { .. } => (405, "method_not_allowed"),
        Error::TokenMissing => (401, "token_missing"),
        Error::TokenInvalid => (401, "token_invalid"),
        Error::TokenExpired => (401, "token_expired"),
        Error::TokenRevoked => (401, "token_revoked"),
        Error::InsufficientRole { .. } => (403, "insufficient_role"),
        Error::ForbiddenWorkspace => (403, "forbidden_workspace"),
        Error::WorkspaceSuspended { .. } => (403, "workspace_suspended"),
        Error::Unavailable { dep: Dependency::BlobStore, .. } => (503, "blob_store_unavailable"),
        Error::Unavailable { dep: Dependency::MetaStore, .. } => (503, "meta_store_unavailable"),
        Error::Unavailable { dep: Dependency::AuditLog, .. } => (503, "audit_log_unavailable"),
        Error::Unavailable { dep: Dependency::Signer, .. } => (503, "signer_unavailable"),
        Error::Unavailable { dep: Dependency::IdentityProvider, .. } => (503, "idp_unavailable"),
        Error::StoreRefused(_) => (400, "invalid_request"),
        Error::OutcomeUnknown(_) => (503, "outcome_unknown"),
        Error::Internal(_) => (500, "internal_error"),
    }
}

fn title(status: u16) -> &'static str {
    match status {
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        409 => "Conflict",
        412 => "Precondition Failed",
        413 => "Content Too Large",
        416 => "Range Not Satisfiable",
        503 => "Service Unavailable",
        _ => "Internal Server Error",
    }
}

/// The detail a caller may see.
pub fn public_detail(e: &Error) -> String {
    match e {
        Error::Unavailable { dep, .. } => {
            format!("the {} could not be reached; nothing was changed", dep.as_str().replace('_', " "))
        }
        Error::OutcomeUnknown(_) => "the store gave no definite answer: the change may or may not have been applied; \
             repeating the same request is safe"
            .into(),
        Error::StoreRefused(_) => {
            "the store refused this change as invalid (a value too large?); nothing was changed".into()
        }
        Error::Internal(_) | Error::BlobIntegrity(_) | Error::AuditExportMismatch(_) | Error::AuditExportBlocked(_) => {
            "the registry found an inconsistency; see the logs under this request id".into()
        }
        other => other.to_string(),
    }
}

pub fn problem(e: &Error, request_id: &str) -> Response {
    let (status, reason) = classify(e);
    let mut body = json!({
        "type": format!("https://helix.dev/problems/{reason}"),
        "title": title(status),
        "status": status,
        "detail": public_detail(e),
        "reason": reason,
        "request_id": request_id,
    });
    // Members a client acts on: which digests to upload, which transition a waiver must cover.
    match e {
        Error::BlobsMissing(digests) => body["missing"] = json!(digests),
        Error::NotApproved { transition } => body["transition"] = json!(transition),
        Error::WorkspaceSuspended { workspace, .. } => body["workspace"] = json!(workspace),
        _ => {}
    }
    let mut builder = http::Response::builder().status(status).header("content-type", "application/problem+json");
    if status == 401 {
        builder = builder.header("www-authenticate", "Bearer");
    }
    if let Error::MethodNotAllowed { allow } = e {
        builder = builder.header("allow", allow.join(", "));
    }
    if let Error::RangeNotSatisfiable { size } = e {
        builder = builder.header("content-range", format!("bytes */{size}"));
    }
    builder.body(lambda_http::Body::Text(body.to_string())).expect("valid response")
}
