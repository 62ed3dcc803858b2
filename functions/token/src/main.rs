//! Lambda entry for token: build the app once, serve every invocation with it.

use std::sync::Arc;

use helix_core::{App, Config, Mode};
use lambda_http::{Error, service_fn};

#[tokio::main]
async fn main() -> Result<(), Error> {
    helix_core::telemetry::init();
    let app = Arc::new(App::build(Config::from_env(Mode::Lambda)?).await?);
    lambda_http::run(service_fn(move |req| {
        let app = app.clone();
        async move { Ok::<_, std::convert::Infallible>(token::handle(&app, req).await) }
    }))
    .await
}
