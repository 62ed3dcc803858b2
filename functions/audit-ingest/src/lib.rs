//! audit-ingest: the read records the functions log (`helix_core::reads`), delivered by a CloudWatch
//! Logs subscription, appended to the audit trail once each (`helix_core::read_ingest`). A failed
//! append fails the invocation: Lambda retries the delivery, and what was appended is not appended
//! again (keyed by log event id).

use helix_core::App;
use helix_core::error::Result;
use serde_json::Value;

pub async fn handle(app: &App, event: &Value) -> Result<Value> {
    helix_core::read_ingest::ingest(app, event).await
}
