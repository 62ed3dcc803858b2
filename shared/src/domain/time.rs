//! Timestamps: stored as Unix seconds (tokens) or RFC 3339 UTC with milliseconds (audit events), so
//! that the string form sorts in time order and is identical on every backend.

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

pub fn now_unix() -> i64 {
    OffsetDateTime::now_utc().unix_timestamp()
}

/// `2026-11-23T13:23:04.123Z`: fixed width, so lexical order is time order.
pub fn now_rfc3339_ms() -> String {
    rfc3339_ms(OffsetDateTime::now_utc())
}

pub fn rfc3339_ms(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.millisecond()
    )
}

/// A UTC day written `YYYY-MM-DD`.
pub fn parse_day(s: &str) -> crate::error::Result<time::Date> {
    time::Date::parse(s, time::macros::format_description!("[year]-[month]-[day]"))
        .map_err(|_| crate::error::Error::BadRequest(format!("day {s:?} is not YYYY-MM-DD")))
}

/// `YYYY-MM-DD`, as `parse_day` reads it.
pub fn day_string(day: time::Date) -> String {
    format!("{:04}-{:02}-{:02}", day.year(), u8::from(day.month()), day.day())
}

pub fn unix_to_rfc3339(secs: i64) -> String {
    OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| secs.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn millisecond_timestamps_are_fixed_width_utc() {
        let t = OffsetDateTime::from_unix_timestamp(1_795_428_902).unwrap();
        assert_eq!(rfc3339_ms(t), "2026-11-23T10:15:02.000Z");
        assert_eq!(unix_to_rfc3339(0), "1970-01-01T00:00:00Z");
    }
}
