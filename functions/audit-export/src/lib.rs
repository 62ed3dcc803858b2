//! audit-export: the daily export of the audit trail (SPEC §5). EventBridge Scheduler invokes it
//! shortly after midnight UTC with `{"time": "<scheduled time>"}` and it exports the previous UTC day;
//! an operator can invoke it with `{"day": "YYYY-MM-DD"}` to export (or re-check) a given day.

use helix_core::App;
use helix_core::audit_export::{export_day, parse_day};
use helix_core::error::{Error, Result};
use serde_json::Value;
use time::Date;
use time::format_description::well_known::Rfc3339;

pub async fn handle(app: &App, event: &Value, request_id: &str) -> Result<Value> {
    let day = day_of(event)?;
    let report = export_day(app, day, time::OffsetDateTime::now_utc(), request_id).await?;
    serde_json::to_value(report).map_err(|e| Error::Internal(e.to_string()))
}

/// The day an event asks for: `day` itself, or the UTC day before `time` (the scheduler's run time,
/// or an EventBridge scheduled event's).
pub fn day_of(event: &Value) -> Result<Date> {
    if let Some(day) = event.get("day") {
        return parse_day(day.as_str().ok_or_else(|| Error::BadRequest("day is a string YYYY-MM-DD".into()))?);
    }
    if let Some(at) = event.get("time").and_then(Value::as_str) {
        let at = time::OffsetDateTime::parse(at, &Rfc3339)
            .map_err(|_| Error::BadRequest(format!("time {at:?} is not RFC 3339")))?;
        let day = at.to_offset(time::UtcOffset::UTC).date();
        return day.previous_day().ok_or_else(|| Error::BadRequest("no day before this one".into()));
    }
    Err(Error::BadRequest("the event names neither a day nor a time".into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_scheduled_event_exports_the_previous_utc_day_and_a_day_is_taken_as_is() {
        let d = |s: &str| parse_day(s).unwrap();
        let fixture = include_str!("../../../tests/fixtures/eventbridge-scheduled.json");
        let event: Value = serde_json::from_str(fixture).unwrap();
        assert_eq!(day_of(&event).unwrap(), d("2026-11-22"), "fixture time 2026-11-23T00:15:00Z");
        assert_eq!(day_of(&json!({"time": "2026-03-01T00:15:00+02:00"})).unwrap(), d("2026-02-27"));
        assert_eq!(day_of(&json!({"day": "2026-11-20"})).unwrap(), d("2026-11-20"));
        for bad in [json!({}), json!({"day": "20261120"}), json!({"day": 7}), json!({"time": "yesterday"})] {
            assert!(matches!(day_of(&bad), Err(Error::BadRequest(_))), "{bad}");
        }
    }
}
