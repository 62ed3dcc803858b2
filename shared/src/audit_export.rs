//! The daily audit export (SPEC §5): for one UTC day, `{prefix}audit/YYYY/MM/DD/` gets
//! `events.jsonl` (canonical events ordered by stream, seq), `manifest.json` (counts, SHA-256 of the
//! JSONL, first/last seq and hash per stream, SHA-256 of the previous day's manifest) and
//! `checkpoint.json` (a DSSE envelope signed by the registry's key over a small statement), all
//! put-if-absent. Re-running a day rewrites nothing: events and manifest must be byte-identical, the
//! checkpoint must carry the same statement under a valid signature (ECDSA signatures are randomised,
//! so a fresh one would differ). Anything else fails loudly and is audited as `audit.export_mismatch`.
//! Only a day that is over (UTC) can be exported: a partial day would mismatch its final export.
//! A successful export appends no event (it changes no registry state; the files are its record).

use bytes::Bytes;
use serde_json::{Value, json};
use time::Date;

use crate::App;
use crate::domain::{AuditDraft, Digest, Outcome, canonical};
use crate::error::{Error, Result};
use crate::ports::PutOutcome;

pub const PAYLOAD_TYPE: &str = "application/vnd.helix.audit-checkpoint.v1+json";
const ACTOR: &str = "audit-export";
/// The files of one exported day, in the order they are written.
pub const FILES: [&str; 3] = ["events.jsonl", "manifest.json", "checkpoint.json"];

/// What one run did.
#[derive(Debug, serde::Serialize)]
pub struct ExportReport {
    pub day: String,
    pub event_count: usize,
    pub manifest_sha256: String,
    /// Files this run created; the others were already there, identical.
    pub written: Vec<String>,
    pub unchanged: Vec<String>,
}

/// `audit/YYYY/MM/DD/<file>`.
pub fn key(day: Date, file: &str) -> String {
    format!("audit/{:04}/{:02}/{:02}/{file}", day.year(), u8::from(day.month()), day.day())
}

pub fn day_string(day: Date) -> String {
    format!("{:04}-{:02}-{:02}", day.year(), u8::from(day.month()), day.day())
}

/// A day written `YYYY-MM-DD`, as `day_string` writes it.
pub fn parse_day(s: &str) -> Result<Date> {
    Date::parse(s, time::macros::format_description!("[year]-[month]-[day]"))
        .map_err(|_| Error::BadRequest(format!("day {s:?} is not YYYY-MM-DD")))
}

fn sha256(bytes: &[u8]) -> String {
    Digest::of(bytes).to_string()
}

/// Export `day`; `now` is the caller's clock (the function passes the real one).
pub async fn export_day(app: &App, day: Date, now: time::OffsetDateTime, request_id: &str) -> Result<ExportReport> {
    let day_s = day_string(day);
    if day >= now.to_offset(time::UtcOffset::UTC).date() {
        return Err(Error::BadRequest(format!("{day_s} is not over yet (UTC): only past days are exported")));
    }
    let events = app.audit.read_day(&day_s).await?;
    let mut jsonl = String::new();
    for e in &events {
        jsonl.push_str(&e.canonical()?);
        jsonl.push('\n');
    }

    let previous = day.previous_day().ok_or_else(|| Error::BadRequest("no day before this one".into()))?;
    let prev_manifest = app.blobs.get_document(&key(previous, "manifest.json")).await?;
    let prev_checkpoint = app.blobs.get_document(&key(previous, "checkpoint.json")).await?;

    let mut streams: Vec<Value> = Vec::new();
    for group in events.chunk_by(|a, b| a.stream == b.stream) {
        let (first, last) = (&group[0], &group[group.len() - 1]);
        streams.push(json!({
            "stream": first.stream, "count": group.len(),
            "first_seq": first.seq, "last_seq": last.seq, "first_hash": first.hash, "last_hash": last.hash,
        }));
    }
    let manifest = canonical::to_string(&json!({
        "day": day_s,
        "event_count": events.len(),
        "events_sha256": sha256(jsonl.as_bytes()),
        "streams": streams,
        "previous_manifest_sha256": prev_manifest.as_deref().map(sha256),
    }))?;
    let manifest_sha256 = sha256(manifest.as_bytes());
    let statement = canonical::to_string(&json!({
        "day": day_s,
        "manifest_sha256": manifest_sha256,
        "event_count": events.len(),
        "previous_checkpoint_sha256": prev_checkpoint.as_deref().map(sha256),
    }))?;

    let mut report = ExportReport {
        day: day_s.clone(),
        event_count: events.len(),
        manifest_sha256,
        written: Vec::new(),
        unchanged: Vec::new(),
    };
    for (file, bytes) in [(FILES[0], jsonl.into_bytes()), (FILES[1], manifest.into_bytes())] {
        store(app, day, file, Bytes::from(bytes), request_id, &mut report, |stored, ours| stored == ours).await?;
    }
    let key_info = app.signer.public_key().await?;
    let checkpoint = checkpoint(app, &key_info, &statement).await?;
    let same_statement = |stored: &[u8], _: &[u8]| verify_checkpoint(stored, &key_info).as_deref() == Ok(&statement);
    store(app, day, FILES[2], Bytes::from(checkpoint), request_id, &mut report, same_statement).await?;
    Ok(report)
}

/// Put one file if absent; when present, `same(stored, ours)` decides whether it is this export.
async fn store(
    app: &App,
    day: Date,
    file: &str,
    bytes: Bytes,
    request_id: &str,
    report: &mut ExportReport,
    same: impl Fn(&[u8], &[u8]) -> bool,
) -> Result<()> {
    let key = key(day, file);
    match app.blobs.put_document_if_absent(&key, bytes.clone()).await? {
        PutOutcome::Created => report.written.push(file.to_owned()),
        PutOutcome::Existed => {
            let stored = app.blobs.get_document(&key).await?.unwrap_or_default();
            if !same(&stored, &bytes) {
                let details = json!({"file": key, "stored_sha256": sha256(&stored), "expected_sha256": sha256(&bytes)});
                app.audit.append(mismatch(&report.day, request_id, details)).await?;
                return Err(Error::AuditExportMismatch(key));
            }
            report.unchanged.push(file.to_owned());
        }
    }
    Ok(())
}

fn mismatch(day: &str, request_id: &str, details: Value) -> AuditDraft {
    AuditDraft {
        stream: "*".into(),
        actor: ACTOR.into(),
        action: "audit.export_mismatch".into(),
        entity_type: "audit_day".into(),
        entity_id: day.to_owned(),
        outcome: Outcome::Failed,
        request_id: request_id.to_owned(),
        details,
    }
}

/// The DSSE envelope over `statement`, signed with the registry's key.
async fn checkpoint(app: &App, key: &crate::ports::PublicKeyInfo, statement: &str) -> Result<Vec<u8>> {
    Ok(crate::dsse::sign(app.signer.as_ref(), key, PAYLOAD_TYPE, statement.as_bytes()).await?.into_bytes())
}

/// The statement a stored checkpoint carries, if its signature verifies with `key`.
pub fn verify_checkpoint(stored: &[u8], key: &crate::ports::PublicKeyInfo) -> std::result::Result<String, String> {
    let payload = crate::dsse::verify(stored, PAYLOAD_TYPE, std::slice::from_ref(key))?;
    String::from_utf8(payload).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_pae_have_the_documented_shape() {
        let day = Date::from_calendar_date(2026, time::Month::March, 7).unwrap();
        assert_eq!(key(day, "manifest.json"), "audit/2026/03/07/manifest.json");
        assert_eq!(day_string(day), "2026-03-07");
    }
}
