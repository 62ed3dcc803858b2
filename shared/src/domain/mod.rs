//! Pure domain types and rules: identifiers, roles, tokens, audit events, canonical JSON. No I/O here.

pub mod audit;
pub mod canonical;
pub mod digest;
pub mod governance;
pub mod ids;
pub mod manifest;
pub mod notification;
pub mod principal;
pub mod role;
pub mod sha_state;
pub mod time;
pub mod token;

pub use audit::{AuditDraft, AuditEvent, ChainHead, Outcome};
pub use digest::{Digest, DigestWriter};
pub use ids::{Scope, WorkspaceId, bundle_ref};
pub use manifest::{BundleName, Manifest};
pub use role::Role;
pub use sha_state::Sha256State;
pub use token::{BearerToken, TokenRecord};

/// `N` bytes from the OS random source as lowercase hex (2·N characters): ids, lease owners, temp
/// names. A machine without a random source cannot run the registry at all.
pub fn random_hex<const N: usize>() -> String {
    let mut raw = [0u8; N];
    getrandom::fill(&mut raw).expect("OS random source");
    hex::encode(raw)
}

/// Free text a caller may put into the audit trail or the registry's state (a reason, a host name):
/// 1 to `max_chars` characters after trimming, none of them control, line-separator or invisible
/// formatting characters (they would hide or reorder what an operator reads).
pub fn is_safe_text(value: &str, max_chars: usize) -> bool {
    let value = value.trim();
    !value.is_empty() && value.chars().count() <= max_chars && !value.chars().any(is_unsafe_char)
}

/// The reason given for a switch (freeze, suspension), trimmed: safe text of 1 to 1024 characters,
/// with no control character at its ends either (a newline is refused, not trimmed away, as
/// docs/openapi.yaml's pattern says).
pub fn switch_reason(reason: &str) -> crate::error::Result<&str> {
    if !is_safe_text(reason, 1024) || reason.chars().any(is_unsafe_char) {
        return Err(crate::error::Error::BadRequest(
            "reason is 1 to 1024 characters, without control, line-separator or invisible formatting characters".into(),
        ));
    }
    Ok(reason.trim())
}

/// A control, line-separator or invisible formatting character (what `is_safe_text` refuses).
pub fn is_unsafe_char(c: char) -> bool {
    c.is_control() || is_invisible_format(c) || matches!(c, '\u{2028}' | '\u{2029}')
}

/// Zero-width and bidirectional formatting characters: they make one name or path display as another.
pub fn is_invisible_format(c: char) -> bool {
    matches!(c, '\u{061C}' | '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{2064}' | '\u{2066}'..='\u{2069}' | '\u{FEFF}')
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_switch_reason_with_a_control_character_anywhere_is_refused() {
        assert_eq!(super::switch_reason(" drill ").unwrap(), "drill");
        for bad in ["\nI", "I\n", "\tI", "a\u{7}b", " "] {
            assert!(super::switch_reason(bad).is_err(), "{bad:?}");
        }
    }
}
