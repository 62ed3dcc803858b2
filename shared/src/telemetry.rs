//! JSON logs via `tracing`, one line per request (see `http::Ctx::finish`). Logs go to stderr, so a
//! command's stdout stays for its output. Level from RUST_LOG (default info). Tests install the same
//! format over a capture buffer (`init_with_writer`) to prove no secret is ever logged.

use tracing_subscriber::fmt::MakeWriter;

pub fn init() {
    init_with_writer(std::io::stderr);
}

pub fn init_with_writer<W>(writer: W)
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,aws_config=warn,aws_smithy_runtime=warn"));
    let _ = tracing_subscriber::fmt()
        .json()
        .with_env_filter(filter)
        .with_current_span(false)
        .with_writer(writer)
        .try_init();
}
