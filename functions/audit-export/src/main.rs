//! Lambda entry for audit-export: everything is built once by `run_event`; each scheduled event
//! exports one day.

// One event at a time per Lambda instance: a single-threaded runtime (no worker threads to start).
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_http::Error> {
    helix_core::lambda::run_event(|app, event, request_id| async move {
        audit_export::handle(&app, &event, &request_id).await
    })
    .await
}
