//! Lambda entry for publish and for verify (one binary, two template functions): everything is built
//! once; HELIX_ENTRY selects what each invocation is. `http` (the default): an API Gateway request,
//! `publish::handle`. `verify` (VerifyFunction): a `verification.step` event from the verify bus, one
//! step of a large upload's verification (`publish::verify_step`; docs/decisions.md, "Unattended
//! verification on AWS").

// One event at a time per Lambda instance: a single-threaded runtime (no worker threads to start).
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_http::Error> {
    let app = helix_core::lambda::init().await?;
    let entry = publish::Entry::from_env(&app.config).map_err(|e| {
        tracing::error!(error = %e, "init failed");
        lambda_http::Error::from(e)
    })?;
    publish::bus::install(&app);
    match entry {
        publish::Entry::Http => {
            helix_core::lambda::serve_http(app, |app, req| async move { publish::handle(&app, req).await }).await
        }
        publish::Entry::Verify => {
            helix_core::lambda::serve_event(app, |app, event, invocation| async move {
                publish::verify_step(&app, &event, invocation.deadline).await
            })
            .await
        }
    }
}
