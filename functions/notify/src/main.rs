//! Lambda entry for notify: the configuration is read and the senders are set up once, outside the
//! handler (the EventBridge client is built with the SDK configuration every function shares); each
//! invocation is one batch of the audit table's stream.

use std::sync::Arc;

use lambda_http::lambda_runtime::{self, LambdaEvent};
use serde_json::Value;

// One batch at a time per Lambda instance: a single-threaded runtime.
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_http::Error> {
    helix_core::telemetry::init();
    let notifier = match notify::Notifier::from_env().await {
        Ok(n) => Arc::new(n),
        Err(e) => {
            tracing::error!(error = %e, "init failed");
            return Err(e.into());
        }
    };
    lambda_runtime::run(lambda_runtime::service_fn(move |event: LambdaEvent<Value>| {
        let notifier = notifier.clone();
        async move {
            let request_id = event.context.request_id.clone();
            let started = std::time::Instant::now();
            let result = notifier.handle(&event.payload).await;
            let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
            match &result {
                Ok(r) => tracing::info!(lambda_request_id = %request_id, latency_ms,
                    failures = r["batchItemFailures"].as_array().map_or(0, Vec::len), "event"),
                Err(e) => tracing::error!(lambda_request_id = %request_id, latency_ms, error = %e, "event"),
            }
            result.map_err(lambda_http::Error::from)
        }
    }))
    .await
}
