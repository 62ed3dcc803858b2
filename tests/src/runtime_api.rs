//! A Lambda Runtime API emulator on 127.0.0.1, enough to run a function binary as Lambda does:
//! the process is started with AWS_LAMBDA_RUNTIME_API pointing here, polls
//! `GET /2018-06-01/runtime/invocation/next`, and answers each event on `.../{id}/response` or
//! `.../{id}/error` (`/runtime/init/error` if it fails to start). The conformance tests and
//! `make bench` (src/bin/lambda-bench.rs) both drive the release or debug binaries through it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use serde_json::{Value, json};
use tokio::sync::{Notify, mpsc, oneshot};

/// What a function answered to one invocation.
#[derive(Debug)]
pub enum Outcome {
    Response(Value),
    /// `/error`: the function reported a failure (errorType, errorMessage).
    Error(Value),
}

struct Invocation {
    id: String,
    event: Vec<u8>,
    reply: oneshot::Sender<Outcome>,
}

struct Shared {
    queue: tokio::sync::Mutex<mpsc::UnboundedReceiver<Invocation>>,
    pending: Mutex<HashMap<String, oneshot::Sender<Outcome>>>,
    first_poll: Mutex<Option<Instant>>,
    polled: Notify,
    init_error: Mutex<Option<Value>>,
}

pub struct RuntimeApi {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    sender: mpsc::UnboundedSender<Invocation>,
    next_id: Mutex<u64>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for RuntimeApi {
    fn drop(&mut self) {
        self.task.abort();
    }
}

const PREFIX: &str = "/2018-06-01/runtime";

impl RuntimeApi {
    pub async fn start() -> RuntimeApi {
        let (sender, receiver) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            queue: tokio::sync::Mutex::new(receiver),
            pending: Mutex::new(HashMap::new()),
            first_poll: Mutex::new(None),
            polled: Notify::new(),
            init_error: Mutex::new(None),
        });
        let router = Router::new()
            .route(&format!("{PREFIX}/invocation/next"), get(next))
            .route(&format!("{PREFIX}/invocation/{{id}}/response"), post(response))
            .route(&format!("{PREFIX}/invocation/{{id}}/error"), post(error))
            .route(&format!("{PREFIX}/init/error"), post(init_error))
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind runtime api");
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            axum::serve(listener, router).await.expect("runtime api");
        });
        RuntimeApi { addr, shared, sender, next_id: Mutex::new(0), task }
    }

    /// When the function first asked for an event (it has finished its init), waiting up to `timeout`.
    pub async fn first_poll(&self, timeout: Duration) -> Option<Instant> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.shared.polled.notified();
            if let Some(t) = *self.shared.first_poll.lock().unwrap() {
                return Some(t);
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return *self.shared.first_poll.lock().unwrap();
            }
        }
    }

    /// What the function posted to /runtime/init/error, if anything.
    pub fn init_error(&self) -> Option<Value> {
        self.shared.init_error.lock().unwrap().clone()
    }

    /// Hand the function one event and wait for its answer.
    pub async fn invoke(&self, event: &Value, timeout: Duration) -> Outcome {
        let id = {
            let mut n = self.next_id.lock().unwrap();
            *n += 1;
            format!("00000000-0000-4000-8000-{:012x}", *n)
        };
        let (reply, answer) = oneshot::channel();
        let event = serde_json::to_vec(event).unwrap();
        self.sender.send(Invocation { id: id.clone(), event, reply }).expect("runtime api running");
        match tokio::time::timeout(timeout, answer).await {
            Ok(Ok(outcome)) => outcome,
            Ok(Err(_)) => panic!("invocation {id}: the runtime API dropped it"),
            Err(_) => panic!("invocation {id}: no answer within {timeout:?}"),
        }
    }
}

async fn next(State(s): State<Arc<Shared>>) -> (StatusCode, HeaderMap, Vec<u8>) {
    {
        let mut first = s.first_poll.lock().unwrap();
        if first.is_none() {
            *first = Some(Instant::now());
            s.polled.notify_waiters();
        }
    }
    let inv = s.queue.lock().await.recv().await;
    let Some(inv) = inv else { return (StatusCode::GONE, HeaderMap::new(), Vec::new()) };
    s.pending.lock().unwrap().insert(inv.id.clone(), inv.reply);
    let deadline = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() + 30_000;
    let mut h = HeaderMap::new();
    h.insert("content-type", "application/json".parse().unwrap());
    h.insert("lambda-runtime-aws-request-id", inv.id.parse().unwrap());
    h.insert("lambda-runtime-deadline-ms", deadline.to_string().parse().unwrap());
    h.insert(
        "lambda-runtime-invoked-function-arn",
        "arn:aws:lambda:us-east-1:123456789012:function:helix-conformance".parse().unwrap(),
    );
    h.insert(
        "lambda-runtime-trace-id",
        "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=0".parse().unwrap(),
    );
    (StatusCode::OK, h, inv.event)
}

fn deliver(s: &Shared, id: &str, outcome: Outcome) -> StatusCode {
    match s.pending.lock().unwrap().remove(id) {
        Some(reply) => {
            let _ = reply.send(outcome);
            StatusCode::ACCEPTED
        }
        None => StatusCode::BAD_REQUEST,
    }
}

fn json_or_text(body: &Bytes) -> Value {
    serde_json::from_slice(body).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(body).into()))
}

async fn response(State(s): State<Arc<Shared>>, UrlPath(id): UrlPath<String>, body: Bytes) -> StatusCode {
    deliver(&s, &id, Outcome::Response(json_or_text(&body)))
}

async fn error(State(s): State<Arc<Shared>>, UrlPath(id): UrlPath<String>, body: Bytes) -> StatusCode {
    deliver(&s, &id, Outcome::Error(json_or_text(&body)))
}

async fn init_error(State(s): State<Arc<Shared>>, body: Bytes) -> StatusCode {
    *s.init_error.lock().unwrap() = Some(json_or_text(&body));
    StatusCode::ACCEPTED
}

/// A function process started as the Lambda service starts one: a clean environment holding only
/// the Lambda variables, the AWS credentials and what the caller adds.
pub struct FunctionProcess {
    pub child: tokio::process::Child,
    pub started: Instant,
    output: Arc<Mutex<Vec<u8>>>,
    /// The tasks copying stdout and stderr into `output`: done once the process closed both pipes.
    readers: Vec<tokio::task::JoinHandle<()>>,
}

impl FunctionProcess {
    pub fn spawn(bin: &Path, args: &[&str], api: &RuntimeApi, env: &[(String, String)]) -> FunctionProcess {
        FunctionProcess::spawn_via(&[], bin, args, api, env)
    }

    /// `spawn`, with the binary started by a wrapper command (`wrapper` then `bin` then `args`).
    pub fn spawn_via(
        wrapper: &[&str],
        bin: &Path,
        args: &[&str],
        api: &RuntimeApi,
        env: &[(String, String)],
    ) -> FunctionProcess {
        let name = bin.file_name().unwrap().to_string_lossy().into_owned();
        let mut cmd = match wrapper.split_first() {
            Some((program, rest)) => {
                let mut c = tokio::process::Command::new(program);
                c.args(rest).arg(bin);
                c
            }
            None => tokio::process::Command::new(bin),
        };
        cmd.args(args)
            .env_clear()
            .env("AWS_LAMBDA_RUNTIME_API", api.addr.to_string())
            .env("AWS_LAMBDA_FUNCTION_NAME", format!("helix-{name}"))
            .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
            .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256")
            .env("AWS_LAMBDA_LOG_GROUP_NAME", format!("/helix/conformance/{name}"))
            .env("AWS_LAMBDA_LOG_STREAM_NAME", "2026/11/23/[$LATEST]conformance")
            .env("AWS_REGION", "us-east-1")
            .env("AWS_DEFAULT_REGION", "us-east-1")
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env("AWS_SESSION_TOKEN", "testing")
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let started = Instant::now();
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("{}: {e}", bin.display()));
        let output = Arc::new(Mutex::new(Vec::new()));
        let mut readers = Vec::new();
        for pipe in [
            child.stdout.take().map(|p| Box::new(p) as Box<dyn tokio::io::AsyncRead + Unpin + Send>),
            child.stderr.take().map(|p| Box::new(p) as Box<dyn tokio::io::AsyncRead + Unpin + Send>),
        ]
        .into_iter()
        .flatten()
        {
            let sink = output.clone();
            readers.push(tokio::spawn(async move {
                use tokio::io::AsyncReadExt;
                let mut pipe = pipe;
                let mut buf = [0u8; 8192];
                while let Ok(n) = pipe.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    sink.lock().unwrap().extend_from_slice(&buf[..n]);
                }
            }));
        }
        FunctionProcess { child, started, output, readers }
    }

    /// Everything the process wrote to stdout and stderr so far.
    pub fn output(&self) -> String {
        String::from_utf8_lossy(&self.output.lock().unwrap()).into_owned()
    }

    /// What the process wrote, once `done` holds for it or `timeout` has passed (the caller's assertion
    /// then shows what was there). A function logs a request after it posted the answer, so the line
    /// may still be on its way through the pipe when the answer arrives (seen on a loaded machine).
    pub async fn output_when(&self, done: impl Fn(&str) -> bool, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let out = self.output();
            if done(&out) || Instant::now() >= deadline {
                return out;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Wait for the process to exit on its own, and for what it wrote to be read (an exited process's
    /// last lines may still sit in the pipes: on a loaded machine `output` right after `wait` missed them).
    pub async fn exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let status = tokio::time::timeout(timeout, self.child.wait()).await.ok().map(|r| r.expect("wait"))?;
        for reader in self.readers.drain(..) {
            let _ = tokio::time::timeout(timeout, reader).await;
        }
        Some(status)
    }
}

/// Where cargo put this workspace's binaries for the profile the tests were built with.
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    // target/<profile>/deps/<test-binary> or target/<profile>/<bin>
    let dir = exe.parent().unwrap();
    if dir.ends_with("deps") { dir.parent().unwrap().to_path_buf() } else { dir.to_path_buf() }
}

/// The function binaries and the `helix` CLI, built (or brought up to date) once per test process with the same cargo,
/// profile and target directory as the tests themselves, so a test never runs a stale binary.
pub fn function_binaries() -> &'static PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT.get_or_init(|| {
        let dir = bin_dir();
        let profile = dir.file_name().unwrap().to_string_lossy().into_owned();
        let mut cmd = std::process::Command::new(env!("CARGO"));
        cmd.current_dir(env!("CARGO_MANIFEST_DIR")).args(["build", "--quiet"]);
        if profile != "debug" {
            cmd.args(["--profile", &profile]);
        }
        for f in functions() {
            cmd.args(["-p", f.as_str()]);
        }
        // And the `helix` CLI, which cases run as an operator would.
        cmd.args(["-p", "helix-cli"]);
        let status = cmd.status().expect("run cargo build for the function binaries");
        assert!(status.success(), "cargo build of the function binaries failed");
        dir
    })
}

/// Every Lambda function: the crates under functions/ (each binary has its crate's name).
pub fn functions() -> Vec<String> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../functions");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// The functions behind API Gateway: those the route table names (the rest take JSON events).
pub fn http_functions() -> Vec<&'static str> {
    let mut names: Vec<&'static str> = helix_core::http::route::ROUTES.iter().map(|r| r.function.as_str()).collect();
    names.sort();
    names.dedup();
    names
}

/// A JSON fixture from tests/fixtures (real-shaped API Gateway and EventBridge events).
pub fn fixture(name: &str) -> Value {
    let path = format!("{}/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// An API Gateway HTTP API (payload 2.0) event for `method path?query`, shaped like the fixtures
/// (the get-blob fixture with its method, route, path, query and bearer replaced).
pub fn apigw_event(method: &str, route: &str, path: &str, query: &str, bearer: Option<&str>) -> Value {
    let mut e = fixture("apigw-http-v2-get-blob.json");
    e["routeKey"] = json!(format!("{method} {route}"));
    e["requestContext"]["routeKey"] = e["routeKey"].clone();
    e["rawPath"] = json!(path);
    e["requestContext"]["http"]["path"] = json!(path);
    e["requestContext"]["http"]["method"] = json!(method);
    e["rawQueryString"] = json!(query);
    if query.is_empty() {
        e.as_object_mut().unwrap().remove("queryStringParameters");
    }
    e.as_object_mut().unwrap().remove("pathParameters");
    let headers = e["headers"].as_object_mut().unwrap();
    match bearer {
        Some(t) => headers.insert("authorization".into(), json!(format!("Bearer {t}"))),
        None => headers.remove("authorization"),
    };
    e
}
