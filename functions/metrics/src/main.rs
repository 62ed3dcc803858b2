//! Lambda entry for metrics: everything is built once by `run_http`; each invocation calls the handler.

// One event at a time per Lambda instance: a single-threaded runtime (no worker threads to start).
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_http::Error> {
    helix_core::lambda::run_http(|app, req| async move { metrics::handle(&app, req).await }).await
}
