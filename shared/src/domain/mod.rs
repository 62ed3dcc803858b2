//! Pure domain types and rules: identifiers, roles, tokens, audit events, canonical JSON. No I/O here.

pub mod audit;
pub mod canonical;
pub mod digest;
pub mod governance;
pub mod ids;
pub mod manifest;
pub mod role;
pub mod time;
pub mod token;

pub use audit::{AuditDraft, AuditEvent, Outcome};
pub use digest::{Digest, DigestWriter};
pub use ids::{Scope, WorkspaceId};
pub use manifest::{BundleName, Manifest};
pub use role::Role;
pub use token::{BearerToken, TokenRecord};
