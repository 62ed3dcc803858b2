//! The Lambda entry every HTTP function shares: JSON logs, configuration and adapters built once
//! (outside the handler, reused across warm invocations), then `lambda_http::run`.

use std::sync::Arc;

use crate::http::{Request, Response};
use crate::{App, Config, Mode};

pub async fn run_http<F, Fut>(handle: F) -> Result<(), lambda_http::Error>
where
    F: Fn(Arc<App>, Request) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Response> + Send + 'static,
{
    crate::telemetry::init();
    // A failed start is one log line naming the cause (the variable, or the dependency) and a non-zero
    // exit before the first poll: Lambda reports an init failure and never routes a request here.
    let app = match Config::from_env(Mode::Lambda) {
        Ok(config) => App::build(config).await.map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    let app = match app {
        Ok(app) => Arc::new(app),
        Err(e) => {
            tracing::error!(error = %e, "init failed");
            return Err(e.into());
        }
    };
    let handle = Arc::new(handle);
    lambda_http::run(lambda_http::service_fn(move |req| {
        let (app, handle) = (app.clone(), handle.clone());
        async move { Ok::<_, std::convert::Infallible>(handle(app, req).await) }
    }))
    .await
}
