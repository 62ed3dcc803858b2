//! Lambda entry for console: the assets are in the binary; the log and the OIDC sign-in settings are set up at start.

// One event at a time per Lambda instance: a single-threaded runtime (no worker threads to start).
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_http::Error> {
    helix_core::telemetry::init();
    let console = &*Box::leak(Box::new(console::from_env().await?));
    lambda_http::run(lambda_http::service_fn(move |req: lambda_http::Request| async move {
        Ok::<_, std::convert::Infallible>(console::handle(console, &req).await)
    }))
    .await
}
