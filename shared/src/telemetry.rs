//! Logs via `tracing`, one line per request (see `http::Ctx::finish`). Logs go to stderr, so a
//! command's stdout stays for its output. Level from RUST_LOG (default info). Format (SPEC §7): JSON
//! in Lambda and when stderr is not a terminal, readable text on a terminal; HELIX_LOG_FORMAT=json or
//! text overrides it outside Lambda (a bad value fails the start through `Config`). Tests install the
//! JSON format over a capture buffer (`init_with_writer`) to prove no secret is ever logged.

use std::io::IsTerminal;

use tracing_subscriber::Layer;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::fmt::MakeWriter;

/// Used when RUST_LOG is unset or unreadable: our own lines, and only warnings from the AWS SDK.
const DEFAULT_FILTER: &str = "info,aws_config=warn,aws_smithy_runtime=warn";

/// The variable that chooses the log format.
pub const LOG_FORMAT_VAR: &str = "HELIX_LOG_FORMAT";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    /// One JSON object per line (CloudWatch Logs Insights, `jq`).
    Json,
    /// `time LEVEL message key=value …`, for a person at a terminal.
    Text,
}

impl LogFormat {
    /// Parse HELIX_LOG_FORMAT's value.
    pub fn parse(value: &str) -> Result<LogFormat, String> {
        match value {
            "json" => Ok(LogFormat::Json),
            "text" => Ok(LogFormat::Text),
            other => Err(format!("{other:?} is not json or text")),
        }
    }

    /// The format for a process: always JSON in Lambda; else the variable when it is valid; else text
    /// on a terminal and JSON otherwise (a file, a pipe, a log collector).
    pub fn choose(var: Option<&str>, in_lambda: bool, stderr_is_terminal: bool) -> LogFormat {
        if in_lambda {
            return LogFormat::Json;
        }
        match var.map(LogFormat::parse) {
            Some(Ok(format)) => format,
            _ if stderr_is_terminal => LogFormat::Text,
            _ => LogFormat::Json,
        }
    }

    /// This process's format, from its environment and its stderr.
    pub fn from_env() -> LogFormat {
        LogFormat::choose(
            std::env::var(LOG_FORMAT_VAR).ok().as_deref(),
            std::env::var_os("AWS_LAMBDA_FUNCTION_NAME").is_some(),
            std::io::stderr().is_terminal(),
        )
    }
}

/// Logs to stderr in this process's format.
pub fn init() {
    install(std::io::stderr, LogFormat::from_env());
}

/// Logs appended to `path` (created 0600 if missing) instead of stderr, in JSON: for a command whose
/// terminal output is a report and that runs a server inside itself (`helix smoke --backup-restore`).
pub fn init_to_file(path: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new().create(true).append(true).mode(0o600).open(path)?;
    install(std::sync::Mutex::new(file), LogFormat::Json);
    Ok(())
}

/// JSON logs to `writer` (the tests' capture buffer).
pub fn init_with_writer<W>(writer: W)
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    install(writer, LogFormat::Json);
}

fn install<W>(writer: W, format: LogFormat)
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    use tracing_subscriber::util::SubscriberInitExt;
    let _ = subscriber(writer, format).try_init();
}

/// The subscriber: the RUST_LOG filter over one formatting layer.
fn subscriber<W>(writer: W, format: LogFormat) -> impl tracing::Subscriber + Send + Sync
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    use tracing_subscriber::layer::SubscriberExt;
    // `Targets` reads RUST_LOG's `level,target=level` form without a regex engine (EnvFilter's
    // span and field matching pulled ~0.5 MB of regex code into every Lambda package).
    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|v| v.parse::<Targets>().ok())
        .unwrap_or_else(|| DEFAULT_FILTER.parse().expect("valid default filter"));
    let layer = match format {
        LogFormat::Json => tracing_subscriber::fmt::layer().json().with_current_span(false).with_writer(writer).boxed(),
        LogFormat::Text => tracing_subscriber::fmt::layer().compact().with_target(false).with_writer(writer).boxed(),
    };
    tracing_subscriber::registry().with(layer.with_filter(filter))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[test]
    fn json_in_lambda_and_off_a_terminal_text_on_a_terminal_unless_asked() {
        use LogFormat::{Json, Text};
        assert_eq!(LogFormat::choose(None, false, true), Text);
        assert_eq!(LogFormat::choose(None, false, false), Json);
        assert_eq!(LogFormat::choose(Some("json"), false, true), Json);
        assert_eq!(LogFormat::choose(Some("text"), false, false), Text);
        assert_eq!(LogFormat::choose(Some("text"), true, true), Json, "Lambda always logs JSON");
        assert_eq!(LogFormat::choose(None, true, true), Json);
        // A bad value is refused at start by Config; the logs themselves fall back to the default.
        assert_eq!(LogFormat::choose(Some("xml"), false, true), Text);
        assert!(LogFormat::parse("JSON").is_err());
    }

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buffer {
        fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(data);
            Ok(data.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn one_request_line(format: LogFormat) -> String {
        let buf = Buffer::default();
        let sink = buf.clone();
        tracing::subscriber::with_default(subscriber(move || sink.clone(), format), || {
            tracing::info!(request_id = "r1", method = "GET", route = "/healthz", status = 200, "request");
        });
        String::from_utf8(buf.0.lock().unwrap().clone()).unwrap()
    }

    #[test]
    fn text_lines_are_readable_and_json_lines_are_json() {
        let text = one_request_line(LogFormat::Text);
        assert_eq!(text.lines().count(), 1, "{text}");
        assert!(!text.starts_with('{'), "{text}");
        assert!(text.contains("INFO") && text.contains("request") && text.contains("status=200"), "{text}");
        assert!(text.contains("route=\"/healthz\""), "{text}");

        let json = one_request_line(LogFormat::Json);
        let line: serde_json::Value = serde_json::from_str(json.trim_end()).unwrap();
        assert_eq!(line["fields"]["status"], 200);
        assert_eq!(line["fields"]["message"], "request");
    }
}
