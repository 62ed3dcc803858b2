//! JSON logs via `tracing`, one line per request (see `http::Ctx::finish`). Logs go to stderr, so a
//! command's stdout stays for its output. Level from RUST_LOG (default info). Tests install the same
//! format over a capture buffer (`init_with_writer`) to prove no secret is ever logged.

use tracing_subscriber::Layer;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::fmt::MakeWriter;

/// Used when RUST_LOG is unset or unreadable: our own lines, and only warnings from the AWS SDK.
const DEFAULT_FILTER: &str = "info,aws_config=warn,aws_smithy_runtime=warn";

pub fn init() {
    init_with_writer(std::io::stderr);
}

pub fn init_with_writer<W>(writer: W)
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    // `Targets` reads RUST_LOG's `level,target=level` form without a regex engine (EnvFilter's
    // span and field matching pulled ~0.5 MB of regex code into every Lambda package).
    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|v| v.parse::<Targets>().ok())
        .unwrap_or_else(|| DEFAULT_FILTER.parse().expect("valid default filter"));
    let layer = tracing_subscriber::fmt::layer().json().with_current_span(false).with_writer(writer);
    let _ = tracing_subscriber::registry().with(layer.with_filter(filter)).try_init();
}
