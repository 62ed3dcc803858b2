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
    let app = Arc::new(App::build(Config::from_env(Mode::Lambda)?).await?);
    let handle = Arc::new(handle);
    lambda_http::run(lambda_http::service_fn(move |req| {
        let (app, handle) = (app.clone(), handle.clone());
        async move { Ok::<_, std::convert::Infallible>(handle(app, req).await) }
    }))
    .await
}
