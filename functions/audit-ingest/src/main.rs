//! Lambda entry for audit-ingest: everything is built once by `run_event`; each invocation is one
//! CloudWatch Logs subscription delivery of read records.

// One event at a time per Lambda instance: a single-threaded runtime (no worker threads to start).
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_http::Error> {
    helix_core::lambda::run_event(|app, event, _request_id| async move { audit_ingest::handle(&app, &event).await })
        .await
}
