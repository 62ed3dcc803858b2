//! Lambda entry for console: the assets are in the binary; nothing but the log is set up at start.

// One event at a time per Lambda instance: a single-threaded runtime (no worker threads to start).
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_http::Error> {
    helix_core::telemetry::init();
    lambda_http::run(lambda_http::service_fn(|req: lambda_http::Request| async move {
        Ok::<_, std::convert::Infallible>(console::handle(&req))
    }))
    .await
}
