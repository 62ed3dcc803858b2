//! GET /v1/audit (SPEC §2, §5): search the audit trail. An approver searches the workspaces their
//! grant covers (`workspace` is required); an admin whose grant covers every workspace may leave it
//! out (every workspace) or name `*` (the global stream of token, key and export events). A search
//! names a workspace, an action or (an admin of every workspace only) an actor: "every export in the
//! last 7 days across all workspaces" is one indexed query per index shard, "everything this user did"
//! one indexed query, never a table scan; everything of a day is the daily export.
//! Results come in (ts, stream, seq) order with an opaque cursor for the next page.

use base64::Engine;
use serde::Serialize;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::App;
use crate::auth::Principal;
use crate::domain::audit::parse_at_key;
use crate::domain::time::rfc3339_ms;
use crate::domain::{AuditEvent, Role, Scope, WorkspaceId};
use crate::error::{Error, Result};
use crate::ports::AuditSearch;

pub const DEFAULT_LIMIT: usize = 100;
pub const MAX_LIMIT: usize = 1000;

/// The query string of GET /v1/audit, as given.
#[derive(Debug, Default, Clone)]
pub struct Params {
    pub workspace: Option<String>,
    pub action: Option<String>,
    pub actor: Option<String>,
    pub since: Option<String>,
    pub until: Option<String>,
    pub cursor: Option<String>,
    pub limit: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct Page {
    pub events: Vec<AuditEvent>,
    /// Pass as `cursor` for the next page; null on the last page.
    pub next_cursor: Option<String>,
}

/// A time bound: RFC 3339 (any offset) or a UTC day `YYYY-MM-DD`, as the fixed-width UTC form events
/// carry, so bounds compare as strings.
fn time_bound(name: &str, value: &str) -> Result<String> {
    let bad = || Error::BadRequest(format!("{name} is an RFC 3339 time (2026-11-23T10:00:00Z) or a day (2026-11-23)"));
    if let Ok(t) = OffsetDateTime::parse(value, &Rfc3339) {
        // An offset can push a time past what UTC represents (9999-12-31T23:59:59-23:59).
        return t.checked_to_offset(time::UtcOffset::UTC).map(rfc3339_ms).ok_or_else(bad);
    }
    let day = crate::audit_export::parse_day(value).map_err(|_| bad())?;
    Ok(rfc3339_ms(OffsetDateTime::new_utc(day, time::Time::MIDNIGHT)))
}

/// A short field value: 1–256 characters, none of them control, line-separator or invisible
/// formatting characters.
fn field(name: &str, value: Option<String>) -> Result<Option<String>> {
    match value {
        Some(v) if !crate::domain::is_safe_text(&v, 256) => Err(Error::BadRequest(format!(
            "{name} is 1 to 256 characters, none of them control, line-separator or invisible formatting characters"
        ))),
        other => Ok(other),
    }
}

fn encode_cursor(at: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(at)
}

fn decode_cursor(cursor: &str) -> Result<String> {
    let bad = || Error::BadRequest("cursor is not one this registry returned".into());
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(cursor).map_err(|_| bad())?;
    let at = String::from_utf8(raw).map_err(|_| bad())?;
    parse_at_key(&at)?;
    Ok(at)
}

/// Check the caller may run this search, then run it.
pub async fn search(app: &App, principal: &Principal, p: Params) -> Result<Page> {
    let stream = match p.workspace.as_deref() {
        Some("*") | None => {
            // The global stream, or every workspace: an admin of every workspace.
            principal.authorize(Role::Admin, None)?;
            if principal.workspace_id != Scope::All {
                return Err(Error::ForbiddenWorkspace);
            }
            p.workspace.clone()
        }
        Some(ws) => {
            let ws = WorkspaceId::parse(ws)?;
            principal.authorize(Role::Approver, Some(&ws))?;
            Some(ws.to_string())
        }
    };
    let action = field("action", p.action)?;
    let actor = field("actor", p.actor)?;
    if stream.is_none() && action.is_none() && actor.is_none() {
        return Err(Error::BadRequest(
            "name a workspace, an action or an actor (every event of a day is the daily export: helix audit export)"
                .into(),
        ));
    }
    let since = p.since.as_deref().map(|v| time_bound("since", v)).transpose()?;
    let until = p.until.as_deref().map(|v| time_bound("until", v)).transpose()?;
    let limit = match p.limit.as_deref() {
        None => DEFAULT_LIMIT,
        Some(l) => match l.parse::<usize>() {
            Ok(n) if (1..=MAX_LIMIT).contains(&n) => n,
            _ => return Err(Error::BadRequest(format!("limit is a number from 1 to {MAX_LIMIT}"))),
        },
    };
    let after = p.cursor.as_deref().map(decode_cursor).transpose()?;
    let q = AuditSearch { stream, action, actor, since, until, after, limit: limit + 1 };
    if let (Some(s), Some(u)) = (&q.since, &q.until)
        && s >= u
    {
        return Ok(Page { events: Vec::new(), next_cursor: None });
    }
    let page = app.audit.search(&q).await?;
    let mut events = page.events;
    let more = events.len() > limit;
    events.truncate(limit);
    // More matches, or the store stopped at its read bound (a short, even empty, page): go on.
    let next_cursor = match (more, page.resume_after) {
        (true, _) => events.last().map(|e| encode_cursor(&e.at_key())),
        (false, resume) => resume.as_deref().map(encode_cursor),
    };
    Ok(Page { events, next_cursor })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_bounds_take_rfc3339_or_a_day_and_compare_as_events_do() {
        assert_eq!(time_bound("since", "2026-11-23").unwrap(), "2026-11-23T00:00:00.000Z");
        assert_eq!(time_bound("since", "2026-11-23T10:00:00+02:00").unwrap(), "2026-11-23T08:00:00.000Z");
        assert_eq!(time_bound("since", "2026-11-23T10:00:00.5Z").unwrap(), "2026-11-23T10:00:00.500Z");
        for bad in ["yesterday", "2026-13-01", "7d", "", "9999-12-31T23:59:59-23:59"] {
            assert!(time_bound("since", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn cursors_round_trip_and_forged_ones_are_refused() {
        let at = "2026-11-23T10:00:00.000Z#team-a#00000000000000000003";
        assert_eq!(decode_cursor(&encode_cursor(at)).unwrap(), at);
        assert!(decode_cursor("not base64!").is_err());
        assert!(decode_cursor(&encode_cursor("2026#x")).is_err());
    }
}
