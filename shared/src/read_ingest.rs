//! The `audit-ingest` function's work: a CloudWatch Logs subscription delivers the functions' read
//! records (`reads::ReadRecord::log_line`) as `{"awslogs":{"data": base64(gzip(JSON))}}`; each record
//! is appended to the audit trail once, keyed by its log event's id (a redelivered batch appends
//! nothing twice). Lines that are not read records are skipped; a record is checked as untrusted
//! input (`ReadRecord::from_log_line`) before it is appended.

use std::io::Read;

use base64::Engine;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::App;
use crate::error::{Error, Result};
use crate::reads::ReadRecord;

/// A decoded subscription payload can be at most this large (CloudWatch Logs sends ≤ 1 MB batches,
/// compressed; the bound stops a decompression bomb).
const MAX_DECODED: u64 = 16 * 1024 * 1024;

#[derive(Deserialize)]
struct Envelope {
    awslogs: AwsLogs,
}

#[derive(Deserialize)]
struct AwsLogs {
    data: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LogsData {
    pub message_type: String,
    #[serde(default)]
    pub log_group: String,
    #[serde(default)]
    pub log_events: Vec<LogEvent>,
}

#[derive(Deserialize)]
pub struct LogEvent {
    pub id: String,
    pub message: String,
}

/// The subscription payload of a Lambda event.
pub fn decode(event: &Value) -> Result<LogsData> {
    let bad = |m: String| Error::BadRequest(format!("not a CloudWatch Logs subscription event: {m}"));
    let env: Envelope = serde_json::from_value(event.clone()).map_err(|e| bad(e.to_string()))?;
    let gz =
        base64::engine::general_purpose::STANDARD.decode(env.awslogs.data.trim()).map_err(|e| bad(e.to_string()))?;
    let mut raw = Vec::new();
    flate2::read::GzDecoder::new(gz.as_slice())
        .take(MAX_DECODED)
        .read_to_end(&mut raw)
        .map_err(|e| bad(format!("gzip: {e}")))?;
    serde_json::from_slice(&raw).map_err(|e| bad(e.to_string()))
}

/// Append every read record of one delivery once. Fails (so Lambda retries the whole delivery) when
/// the audit log fails: what was appended before the failure is skipped on the retry by its key.
pub async fn ingest(app: &App, event: &Value) -> Result<Value> {
    let data = decode(event)?;
    if data.message_type != "DATA_MESSAGE" {
        // CONTROL_MESSAGE: CloudWatch Logs checking that the destination is reachable.
        return Ok(json!({"message_type": data.message_type, "appended": 0}));
    }
    let (mut appended, mut repeated, mut skipped) = (0u64, 0u64, 0u64);
    for e in &data.log_events {
        let Some(record) = ReadRecord::from_log_line(&e.message) else {
            skipped += 1;
            continue;
        };
        if e.id.is_empty() || e.id.len() > 128 || !e.id.bytes().all(|b| b.is_ascii_alphanumeric()) {
            skipped += 1;
            continue;
        }
        match app.audit.append_once(record.draft(), &format!("read#{}", e.id)).await? {
            Some(_) => appended += 1,
            None => repeated += 1,
        }
    }
    if skipped > 0 {
        tracing::warn!(log_group = %data.log_group, skipped, "lines that are not read records were skipped");
    }
    Ok(json!({"appended": appended, "already_appended": repeated, "skipped": skipped}))
}

/// A subscription event carrying `lines` as log events with the given ids (the tests and the deploy
/// rehearsal build real-shaped deliveries from a function's actual output with it).
pub fn subscription_event(log_group: &str, lines: &[(String, String)]) -> Value {
    use std::io::Write;
    let events: Vec<Value> =
        lines.iter().map(|(id, m)| json!({"id": id, "timestamp": 1_764_806_400_000u64, "message": m})).collect();
    let body = json!({
        "messageType": "DATA_MESSAGE",
        "owner": "123456789012",
        "logGroup": log_group,
        "logStream": "2026/12/04/[$LATEST]0123456789abcdef0123456789abcdef",
        "subscriptionFilters": ["helix-read-records"],
        "logEvents": events,
    });
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(body.to_string().as_bytes()).expect("in-memory gzip");
    let data = base64::engine::general_purpose::STANDARD.encode(gz.finish().expect("in-memory gzip"));
    json!({"awslogs": {"data": data}})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_delivery_decodes_to_its_log_events_and_garbage_is_refused() {
        let e = subscription_event("/aws/lambda/fetch", &[("1".into(), "hello".into())]);
        let d = decode(&e).unwrap();
        assert_eq!((d.message_type.as_str(), d.log_events.len()), ("DATA_MESSAGE", 1));
        assert_eq!(d.log_events[0].message, "hello");
        assert!(decode(&json!({"awslogs": {"data": "bm90IGd6aXA="}})).is_err());
        assert!(decode(&json!({"source": "aws.events"})).is_err());
    }
}
