//! API tokens (SPEC §3): `hlx_` + 43 base64url characters (32 random bytes from the OS). Only the
//! SHA-256 of a token is ever stored or logged; the secret exists in memory once, when issued.

use std::fmt;

use base64::Engine;
use serde::Serialize;

use super::digest::Digest;
use super::ids::Scope;
use super::role::Role;
use crate::error::{Error, Result};

pub const TOKEN_PREFIX: &str = "hlx_";
const TOKEN_BODY_LEN: usize = 43;

/// A bearer secret. Debug and Display never print it.
pub struct BearerToken(String);

impl BearerToken {
    pub fn generate() -> BearerToken {
        let mut raw = [0u8; 32];
        getrandom::fill(&mut raw).expect("OS random source");
        BearerToken(format!("{TOKEN_PREFIX}{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)))
    }

    /// Accepts only the exact API token shape; anything else is `token_invalid`.
    pub fn parse(s: &str) -> Result<BearerToken> {
        let body = s.strip_prefix(TOKEN_PREFIX).ok_or(Error::TokenInvalid)?;
        let ok =
            body.len() == TOKEN_BODY_LEN && body.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if ok { Ok(BearerToken(s.to_owned())) } else { Err(Error::TokenInvalid) }
    }

    /// Hex SHA-256 of the secret: the only form that is stored, listed and logged.
    pub fn sha256(&self) -> String {
        Digest::of(self.0.as_bytes()).hex().to_owned()
    }

    /// The secret itself, for printing exactly once to the person it is issued to.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BearerToken(sha256:{})", self.sha256())
    }
}

/// What the meta store keeps about a token.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TokenRecord {
    pub id: String,
    pub sha256: String,
    pub user: String,
    pub role: Role,
    #[serde(serialize_with = "scope_str")]
    pub workspace_id: Scope,
    pub created_at: i64,
    pub expires_at: Option<i64>,
    pub disabled: bool,
    pub created_by: String,
    pub description: Option<String>,
    /// The token this one was rotated into: revoking this one revokes that one too, so a stolen
    /// token cannot escape revocation by rotating itself.
    pub replaced_by: Option<String>,
}

fn scope_str<S: serde::Serializer>(s: &Scope, ser: S) -> std::result::Result<S::Ok, S::Error> {
    ser.serialize_str(s.as_str())
}

impl TokenRecord {
    /// A new record for `secret`; its id is public and derived from nothing secret.
    pub fn new(
        secret: &BearerToken,
        user: String,
        role: Role,
        workspace_id: Scope,
        ttl_seconds: Option<i64>,
        created_by: String,
        description: Option<String>,
    ) -> TokenRecord {
        let mut raw = [0u8; 8];
        getrandom::fill(&mut raw).expect("OS random source");
        let now = super::time::now_unix();
        TokenRecord {
            id: format!("tok_{}", hex::encode(raw)),
            sha256: secret.sha256(),
            user,
            role,
            workspace_id,
            created_at: now,
            expires_at: ttl_seconds.map(|ttl| now + ttl),
            disabled: false,
            created_by,
            description,
            replaced_by: None,
        }
    }

    /// Why this token may not be used at `now`, if it may not.
    pub fn refusal(&self, now: i64) -> Option<Error> {
        if self.disabled {
            Some(Error::TokenRevoked)
        } else if self.expires_at.is_some_and(|exp| now >= exp) {
            Some(Error::TokenExpired)
        } else {
            None
        }
    }
}

/// `30d`, `12h`, `45m`, `90s` or plain seconds.
/// Longest token lifetime: 3650 days.
pub const MAX_TTL_SECONDS: i64 = 3650 * 86_400;
/// Longest `user`, in characters (Unicode scalar values, as JSON Schema's `maxLength` counts).
pub const MAX_USER_LEN: usize = 256;
/// Longest token `description`, in characters.
pub const MAX_DESCRIPTION_LEN: usize = 1024;

/// A token lifetime in seconds, within 1..=MAX_TTL_SECONDS.
pub fn check_ttl(seconds: i64) -> Result<i64> {
    if (1..=MAX_TTL_SECONDS).contains(&seconds) {
        Ok(seconds)
    } else {
        Err(Error::BadRequest(format!("a token lifetime is 1 to {MAX_TTL_SECONDS} seconds (3650 days)")))
    }
}

pub fn parse_ttl(s: &str) -> Result<i64> {
    let (num, unit) = match s.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => (&s[..i], c),
        _ => (s, 's'),
    };
    let n: i64 = num.parse().map_err(|_| Error::BadRequest(format!("bad ttl {s:?}")))?;
    let mult = match unit {
        's' => 1,
        'm' => 60,
        'h' => 3600,
        'd' => 86_400,
        _ => return Err(Error::BadRequest(format!("bad ttl unit in {s:?} (s, m, h, d)"))),
    };
    check_ttl(n.checked_mul(mult).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_tokens_have_the_documented_shape_and_parse() {
        let t = BearerToken::generate();
        assert_eq!(t.expose().len(), 4 + 43);
        assert_eq!(BearerToken::parse(t.expose()).unwrap().sha256(), t.sha256());
        assert_ne!(BearerToken::generate().sha256(), t.sha256());
        assert!(!format!("{t:?}").contains(t.expose()));
    }

    #[test]
    fn malformed_tokens_are_invalid() {
        let t = BearerToken::generate();
        for bad in
            ["", "hlx_", "Bearer x", &t.expose()[1..], &format!("{}A", t.expose()), &t.expose().replace("hlx_", "hlx-")]
        {
            assert!(matches!(BearerToken::parse(bad), Err(Error::TokenInvalid)), "{bad}");
        }
    }

    #[test]
    fn disabled_and_expired_records_are_refused_with_reason() {
        let t = BearerToken::generate();
        let mut r = TokenRecord::new(&t, "u".into(), Role::Viewer, Scope::All, Some(10), "x".into(), None);
        assert!(r.refusal(r.created_at).is_none());
        assert!(matches!(r.refusal(r.created_at + 10), Some(Error::TokenExpired)));
        r.disabled = true;
        assert!(matches!(r.refusal(r.created_at), Some(Error::TokenRevoked)));
    }

    #[test]
    fn ttls_parse_with_units() {
        assert_eq!(parse_ttl("30d").unwrap(), 30 * 86_400);
        assert_eq!(parse_ttl("90").unwrap(), 90);
        assert_eq!(parse_ttl("2h").unwrap(), 7200);
        assert!(parse_ttl("0s").is_err());
        assert!(parse_ttl("3w").is_err());
        assert!(parse_ttl("d").is_err());
    }
}
