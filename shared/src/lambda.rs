//! The Lambda entries every function shares: JSON logs, configuration and adapters built once
//! (outside the handler, reused across warm invocations), then `lambda_http::run` for the HTTP
//! functions or `lambda_runtime::run` for the scheduled one.

use std::sync::Arc;

use lambda_http::lambda_runtime::{self, LambdaEvent};
use serde_json::Value;

use crate::http::{Request, Response};
use crate::{App, Config, Mode};

/// A failed start is one log line naming the cause (the variable, or the dependency) and a non-zero
/// exit before the first poll: Lambda reports an init failure and never routes a request here.
async fn init() -> Result<Arc<App>, lambda_http::Error> {
    crate::telemetry::init();
    let app = match Config::from_env(Mode::Lambda) {
        Ok(config) => App::build(config).await.map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    app.map(Arc::new).map_err(|e| {
        tracing::error!(error = %e, "init failed");
        e.into()
    })
}

pub async fn run_http<F, Fut>(handle: F) -> Result<(), lambda_http::Error>
where
    F: Fn(Arc<App>, Request) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Response> + Send + 'static,
{
    let app = init().await?;
    let handle = Arc::new(handle);
    lambda_http::run(lambda_http::service_fn(move |req| {
        let (app, handle) = (app.clone(), handle.clone());
        async move { Ok::<_, std::convert::Infallible>(handle(app, req).await) }
    }))
    .await
}

/// For functions invoked with a JSON event (the scheduler): the handler gets the event and the
/// Lambda request id; an `Err` is logged and reported to Lambda as a failed invocation.
pub async fn run_event<F, Fut>(handle: F) -> Result<(), lambda_http::Error>
where
    F: Fn(Arc<App>, Value, String) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = crate::Result<Value>> + Send + 'static,
{
    let app = init().await?;
    let handle = Arc::new(handle);
    lambda_runtime::run(lambda_runtime::service_fn(move |event: LambdaEvent<Value>| {
        let (app, handle) = (app.clone(), handle.clone());
        async move {
            let request_id = event.context.request_id.clone();
            let started = std::time::Instant::now();
            let result = handle(app, event.payload, request_id.clone()).await;
            let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
            match &result {
                Ok(_) => tracing::info!(lambda_request_id = %request_id, latency_ms, "event"),
                Err(e) => tracing::error!(lambda_request_id = %request_id, latency_ms, error = %e, "event"),
            }
            result.map_err(lambda_http::Error::from)
        }
    }))
    .await
}
