//! Lambda entry for console: the assets are in the binary; the log is set up and the settings checked at
//! start, the host built at the first request.

// One event at a time per Lambda instance: a single-threaded runtime (no worker threads to start).
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_http::Error> {
    helix_core::telemetry::init();
    // A bad setting still stops the start (checking it is cheap); the host itself (the bucket's
    // presigned-download origin, which needs an SDK configuration, and the HTTP client for the
    // issuer's discovery) is built at the first request, so none of it is paid before the first poll.
    console::check_env()?;
    let host: &'static tokio::sync::OnceCell<helix_core::console::Host> = Box::leak(Box::default());
    lambda_http::run(lambda_http::service_fn(move |req: lambda_http::Request| async move {
        let console = host.get_or_try_init(console::from_env).await.map_err(lambda_http::Error::from)?;
        Ok::<_, lambda_http::Error>(console::handle(console, &req).await)
    }))
    .await
}
