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
pub async fn init() -> Result<Arc<App>, lambda_http::Error> {
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
    serve_http(init().await?, handle).await
}

/// `run_http` with an App built (and set up) by the caller.
pub async fn serve_http<F, Fut>(app: Arc<App>, handle: F) -> Result<(), lambda_http::Error>
where
    F: Fn(Arc<App>, Request) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Response> + Send + 'static,
{
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
    let handle = Arc::new(handle);
    serve_event(init().await?, move |app, event, invocation: Invocation| {
        let handle = handle.clone();
        async move { handle(app, event, invocation.request_id).await }
    })
    .await
}

/// One invocation of an event function: Lambda's request id, and when Lambda stops it (the
/// `Lambda-Runtime-Deadline-Ms` of the invocation, as an `Instant` of this process).
#[derive(Debug, Clone)]
pub struct Invocation {
    pub request_id: String,
    pub deadline: std::time::Instant,
}

impl Invocation {
    fn of(context: &lambda_runtime::Context) -> Invocation {
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or_default();
        let left = std::time::Duration::from_millis(context.deadline.saturating_sub(now_ms));
        Invocation { request_id: context.request_id.clone(), deadline: std::time::Instant::now() + left }
    }
}

/// `run_event` with an App built (and set up) by the caller, the handler given the invocation's deadline.
pub async fn serve_event<F, Fut>(app: Arc<App>, handle: F) -> Result<(), lambda_http::Error>
where
    F: Fn(Arc<App>, Value, Invocation) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = crate::Result<Value>> + Send + 'static,
{
    let handle = Arc::new(handle);
    lambda_runtime::run(lambda_runtime::service_fn(move |event: LambdaEvent<Value>| {
        let (app, handle) = (app.clone(), handle.clone());
        async move {
            let invocation = Invocation::of(&event.context);
            let request_id = invocation.request_id.clone();
            let started = std::time::Instant::now();
            let result = handle(app, event.payload, invocation).await;
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
