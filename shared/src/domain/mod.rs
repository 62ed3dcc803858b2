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

/// Free text a caller may put into the audit trail or the registry's state (a reason, a host name):
/// 1 to `max_chars` characters after trimming, none of them control, line-separator or invisible
/// formatting characters (they would hide or reorder what an operator reads).
pub fn is_safe_text(value: &str, max_chars: usize) -> bool {
    let unsafe_char =
        |c: char| c.is_control() || crate::tokens::is_invisible_format(c) || matches!(c, '\u{2028}' | '\u{2029}');
    let value = value.trim();
    !value.is_empty() && value.chars().count() <= max_chars && !value.chars().any(unsafe_char)
}
