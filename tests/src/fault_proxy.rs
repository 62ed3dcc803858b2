//! A fault-injecting HTTP/1.1 proxy on 127.0.0.1 for the AWS emulator: it forwards each request to
//! the upstream and, for requests whose `x-amz-target` names a chosen operation, can drop the
//! response after the upstream has applied the request (the ambiguous failure of a commit whose
//! answer is lost). It records each such request's `ClientRequestToken`, and in `idempotent` mode it
//! answers a repeated token with the answer of its first request, as DynamoDB does for ten minutes
//! (moto does not). One request per connection (`connection: close` both ways), enough for the SDK.
//! Every request's head (request line and headers, lowercased) is kept in `requests`, and the next
//! `hidden_blob_heads` HEADs of a `/blobs/` key are answered 404 without reaching the upstream (an
//! object created by a concurrent writer just after the registry looked). `calls` counts what reached
//! the emulator: each request's operation (`operation`) and when it began and ended at the proxy, so
//! a test can say how many requests a route made in all and how many of them were sequential.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

pub struct FaultProxy {
    pub url: String,
    /// Responses still to drop for the target operation (`usize::MAX`: all of them).
    pub drops: Arc<AtomicUsize>,
    /// Requests of the target operation seen so far.
    pub seen: Arc<AtomicUsize>,
    /// The `ClientRequestToken` of each request of the target operation, in order.
    pub tokens: Arc<Mutex<Vec<String>>>,
    /// The head of every request, in arrival order.
    pub requests: Arc<Mutex<Vec<String>>>,
    /// HEADs of `/blobs/` keys still to answer 404 without forwarding them.
    pub hidden_blob_heads: Arc<AtomicUsize>,
    /// Every request that reached the proxy, with its operation and span (`Call`).
    pub calls: Arc<Mutex<Vec<Call>>>,
    /// BatchGetItems still to answer with every key unprocessed, without forwarding them (DynamoDB's
    /// answer when it throttles a batch read; `usize::MAX`: all of them).
    pub unprocessed_batch_reads: Arc<AtomicUsize>,
    /// When not 0: the next response longer than this many bytes is cut there (the connection closes
    /// mid-body, as a download interrupted by the network), once.
    pub cut_next_long_response: Arc<AtomicUsize>,
    /// Each request's head and the bytes of its answer sent to the client (head and body).
    pub responses: Arc<Mutex<Vec<(String, usize)>>>,
    /// Part uploads (a PUT to `uploads/`, of `/parts/` or with `partNumber=`) still to forward; then each is answered
    /// 503 without reaching the upstream (`usize::MAX`: every one is forwarded).
    pub part_uploads_left: Arc<AtomicUsize>,
    /// When set: a part upload let through waits (up to 10 s) until one has been answered 503, so
    /// the parts refused come back before any let through does.
    pub hold_parts_until_one_refused: Arc<std::sync::atomic::AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

/// One request as the emulator saw it: its operation (`operation`), when it arrived whole at the
/// proxy and when its answer came back (None: no answer yet, or dropped).
#[derive(Clone, Debug)]
pub struct Call {
    pub operation: String,
    pub began: std::time::Instant,
    pub ended: Option<std::time::Instant>,
}

/// Calls grouped into rounds: a call that began after every call of the current round had ended
/// starts the next round. Calls of one round overlapped (were in flight together); the number of
/// rounds is how many of them were sequential.
pub fn rounds(calls: &[Call]) -> Vec<Vec<String>> {
    let mut sorted: Vec<&Call> = calls.iter().collect();
    sorted.sort_by_key(|c| c.began);
    let mut out: Vec<Vec<String>> = Vec::new();
    let mut round_end: Option<std::time::Instant> = None;
    for c in sorted {
        let ended = c.ended.unwrap_or(c.began);
        match round_end {
            Some(end) if c.began < end => {
                out.last_mut().expect("a round").push(c.operation.clone());
                round_end = Some(end.max(ended));
            }
            _ => {
                out.push(vec![c.operation.clone()]);
                round_end = Some(ended);
            }
        }
    }
    for round in &mut out {
        round.sort();
    }
    out
}

/// The AWS operation a (lowercased) request head is: `DynamoDB GetItem`, `KMS Sign` (by its
/// `x-amz-target`), else an S3 operation (`s3_operation`).
pub fn operation(head: &str) -> String {
    const NAMES: [&str; 17] = [
        "GetItem",
        "BatchGetItem",
        "Query",
        "Scan",
        "PutItem",
        "UpdateItem",
        "DeleteItem",
        "BatchWriteItem",
        "TransactWriteItems",
        "TransactGetItems",
        "DescribeTable",
        "Sign",
        "Verify",
        "GetPublicKey",
        "DescribeKey",
        "ListKeys",
        "CreateKey",
    ];
    let target = head.lines().find_map(|l| l.strip_prefix("x-amz-target:")).map(str::trim);
    match target.and_then(|t| t.split_once('.')) {
        Some((service, op)) => {
            let service = if service.starts_with("dynamodb") {
                "DynamoDB"
            } else if service.starts_with("trentservice") {
                "KMS"
            } else {
                service
            };
            let op = NAMES.iter().find(|n| n.eq_ignore_ascii_case(op)).map_or(op.to_owned(), |n| (*n).to_owned());
            format!("{service} {op}")
        }
        None => format!("S3 {}", s3_operation(head)),
    }
}

/// What the relay shares between connections.
#[derive(Clone)]
struct Faults {
    operation: &'static str,
    drops: Arc<AtomicUsize>,
    seen: Arc<AtomicUsize>,
    tokens: Arc<Mutex<Vec<String>>>,
    /// The first answer per token (idempotent mode only).
    answers: Option<Arc<Mutex<Answers>>>,
    requests: Arc<Mutex<Vec<String>>>,
    hidden_blob_heads: Arc<AtomicUsize>,
    calls: Arc<Mutex<Vec<Call>>>,
    unprocessed_batch_reads: Arc<AtomicUsize>,
    cut_next_long_response: Arc<AtomicUsize>,
    responses: Arc<Mutex<Vec<(String, usize)>>>,
    part_uploads_left: Arc<AtomicUsize>,
    hold_parts_until_one_refused: Arc<std::sync::atomic::AtomicBool>,
    part_uploads_refused: Arc<AtomicUsize>,
}

/// The first raw answer to each `ClientRequestToken`.
type Answers = HashMap<String, Vec<u8>>;

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FaultProxy {
    /// Proxy to `upstream` (`http://host:port`), dropping the responses of the first `drops` requests
    /// whose `x-amz-target` ends with `operation`.
    pub async fn start(upstream: &str, operation: &'static str, drops: usize) -> FaultProxy {
        FaultProxy::start_with(upstream, operation, drops, false).await
    }

    /// `start`, answering a repeated `ClientRequestToken` with its first answer when `idempotent`.
    pub async fn start_with(upstream: &str, operation: &'static str, drops: usize, idempotent: bool) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let upstream = upstream.trim_start_matches("http://").trim_end_matches('/').to_owned();
        let faults = Faults {
            operation,
            drops: Arc::new(AtomicUsize::new(drops)),
            seen: Arc::new(AtomicUsize::new(0)),
            tokens: Arc::new(Mutex::new(Vec::new())),
            answers: idempotent.then(|| Arc::new(Mutex::new(HashMap::new()))),
            requests: Arc::new(Mutex::new(Vec::new())),
            hidden_blob_heads: Arc::new(AtomicUsize::new(0)),
            calls: Arc::new(Mutex::new(Vec::new())),
            unprocessed_batch_reads: Arc::new(AtomicUsize::new(0)),
            cut_next_long_response: Arc::new(AtomicUsize::new(0)),
            responses: Arc::new(Mutex::new(Vec::new())),
            part_uploads_left: Arc::new(AtomicUsize::new(usize::MAX)),
            hold_parts_until_one_refused: Arc::new(std::sync::atomic::AtomicBool::new(false)),
            part_uploads_refused: Arc::new(AtomicUsize::new(0)),
        };
        let part_uploads_left = faults.part_uploads_left.clone();
        let hold_parts_until_one_refused = faults.hold_parts_until_one_refused.clone();
        let (drops, seen, tokens) = (faults.drops.clone(), faults.seen.clone(), faults.tokens.clone());
        let (requests, hidden_blob_heads) = (faults.requests.clone(), faults.hidden_blob_heads.clone());
        let (calls, unprocessed_batch_reads) = (faults.calls.clone(), faults.unprocessed_batch_reads.clone());
        let (cut_next_long_response, responses) = (faults.cut_next_long_response.clone(), faults.responses.clone());
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let (upstream, faults) = (upstream.clone(), faults.clone());
                tokio::spawn(async move {
                    let _ = relay(client, &upstream, &faults).await;
                });
            }
        });
        FaultProxy {
            url,
            drops,
            seen,
            tokens,
            requests,
            hidden_blob_heads,
            calls,
            unprocessed_batch_reads,
            cut_next_long_response,
            responses,
            part_uploads_left,
            hold_parts_until_one_refused,
            task,
        }
    }

    /// The calls that began while `work` ran.
    pub async fn calls_of<F: std::future::Future>(&self, work: F) -> (F::Output, Vec<Call>) {
        let before = self.calls.lock().unwrap().len();
        let out = work.await;
        (out, self.calls.lock().unwrap()[before..].to_vec())
    }

    /// The S3 operations seen so far (`s3_operation`), with their request heads.
    pub fn s3_operations(&self) -> Vec<(&'static str, String)> {
        self.requests.lock().unwrap().iter().map(|h| (s3_operation(h), h.clone())).collect()
    }
}

/// The S3 REST operation a (lowercased) request head is, by method, query and `x-amz-copy-source`.
pub fn s3_operation(head: &str) -> &'static str {
    let first = head.lines().next().unwrap_or_default();
    let mut words = first.split_whitespace();
    let (method, target) = (words.next().unwrap_or_default(), words.next().unwrap_or_default());
    let query: Vec<&str> = target.split_once('?').map(|(_, q)| q.split('&').collect()).unwrap_or_default();
    let has = |name: &str| query.iter().any(|p| p.split('=').next() == Some(name));
    let copy = head.lines().any(|l| l.starts_with("x-amz-copy-source:"));
    match method {
        "post" if has("uploads") => "CreateMultipartUpload",
        "post" if has("uploadid") => "CompleteMultipartUpload",
        "delete" if has("uploadid") => "AbortMultipartUpload",
        "put" if has("uploadid") && copy => "UploadPartCopy",
        "put" if has("uploadid") => "UploadPart",
        "put" if copy => "CopyObject",
        "put" => "PutObject",
        "head" => "HeadObject",
        "get" => "GetObject",
        "delete" => "DeleteObject",
        _ => "other",
    }
}

async fn relay(mut client: TcpStream, upstream: &str, faults: &Faults) -> std::io::Result<()> {
    let request = read_request(&mut client).await?;
    let split = request.windows(4).position(|w| w == b"\r\n\r\n").unwrap_or(0);
    let head = String::from_utf8_lossy(&request[..split]).to_ascii_lowercase();
    faults.requests.lock().unwrap().push(head.clone());
    let call = {
        let mut calls = faults.calls.lock().unwrap();
        calls.push(Call { operation: operation(&head), began: std::time::Instant::now(), ended: None });
        calls.len() - 1
    };
    let first_line = head.lines().next().unwrap_or_default();
    let part_put = first_line.starts_with("put ")
        && first_line.contains("/uploads/")
        && (first_line.contains("/parts/") || first_line.contains("partnumber="));
    if part_put && faults.part_uploads_left.fetch_update(Ordering::SeqCst, Ordering::SeqCst, countdown).is_err() {
        client.write_all(b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nconnection: close\r\n\r\n").await?;
        faults.part_uploads_refused.fetch_add(1, Ordering::SeqCst);
        return client.shutdown().await;
    }
    if part_put && faults.hold_parts_until_one_refused.load(Ordering::SeqCst) {
        let until = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while faults.part_uploads_refused.load(Ordering::SeqCst) == 0 && std::time::Instant::now() < until {
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
    }
    if first_line.starts_with("head ")
        && first_line.contains("/blobs/")
        && faults.hidden_blob_heads.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok()
    {
        client.write_all(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n").await?;
        return client.shutdown().await;
    }
    if head.lines().any(|l| l.starts_with("x-amz-target:") && l.trim_end().ends_with(".batchgetitem"))
        && faults.unprocessed_batch_reads.fetch_update(Ordering::SeqCst, Ordering::SeqCst, countdown).is_ok()
    {
        let body: serde_json::Value =
            serde_json::from_slice(&request[(split + 4).min(request.len())..]).unwrap_or_default();
        let answer = serde_json::json!({"Responses": {}, "UnprocessedKeys": body["RequestItems"]}).to_string();
        let response = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/x-amz-json-1.0\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{answer}",
            answer.len()
        );
        client.write_all(response.as_bytes()).await?;
        return client.shutdown().await;
    }
    let operation = faults.operation.to_ascii_lowercase();
    let targeted = head.lines().any(|l| l.starts_with("x-amz-target:") && l.trim_end().ends_with(&operation));
    let token = targeted
        .then(|| serde_json::from_slice::<serde_json::Value>(&request[(split + 4).min(request.len())..]).ok())
        .flatten()
        .and_then(|body| body["ClientRequestToken"].as_str().map(str::to_owned));
    if let Some(t) = &token {
        faults.tokens.lock().unwrap().push(t.clone());
    }
    let remembered = match (&faults.answers, &token) {
        (Some(answers), Some(t)) => answers.lock().unwrap().get(t).cloned(),
        _ => None,
    };
    let response = match remembered {
        Some(first) => first,
        None => {
            let mut up = TcpStream::connect(upstream).await?;
            up.write_all(&with_header(&request, b"connection: close\r\n")).await?;
            let mut response = Vec::new();
            up.read_to_end(&mut response).await?;
            if let (Some(answers), Some(t)) = (&faults.answers, &token) {
                answers.lock().unwrap().insert(t.clone(), response.clone());
            }
            response
        }
    };
    if targeted {
        faults.seen.fetch_add(1, Ordering::SeqCst);
        let dropped = faults.drops.fetch_update(Ordering::SeqCst, Ordering::SeqCst, countdown);
        if dropped.is_ok() {
            return Ok(()); // applied upstream; the client never hears of it
        }
    }
    if let Some(c) = faults.calls.lock().unwrap().get_mut(call) {
        c.ended = Some(std::time::Instant::now());
    }
    let mut response = with_header(&response, b"connection: close\r\n");
    let cut = faults.cut_next_long_response.load(Ordering::SeqCst);
    if cut > 0
        && response.len() > cut
        && faults.cut_next_long_response.compare_exchange(cut, 0, Ordering::SeqCst, Ordering::SeqCst).is_ok()
    {
        response.truncate(cut);
    }
    faults.responses.lock().unwrap().push((head, response.len()));
    client.write_all(&response).await?;
    client.shutdown().await
}

/// One fewer still to do (`usize::MAX`: every one), None when none is left.
fn countdown(n: usize) -> Option<usize> {
    match n {
        0 => None,
        usize::MAX => Some(usize::MAX),
        n => Some(n - 1),
    }
}

/// One whole request: head up to the blank line, then `content-length` bytes of body.
async fn read_request(client: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:").map(|v| v.trim().parse().unwrap_or(0)))
                .unwrap_or(0);
            if buf.len() >= end + 4 + length {
                return Ok(buf);
            }
        }
        let n = client.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// `message` with `header` added after its first line, and its own `connection:` header removed.
fn with_header(message: &[u8], header: &[u8]) -> Vec<u8> {
    let first = message.windows(2).position(|w| w == b"\r\n").map(|i| i + 2).unwrap_or(message.len());
    let end = message.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 2).unwrap_or(first);
    let mut out = message[..first].to_vec();
    out.extend_from_slice(header);
    for line in message[first..end].split_inclusive(|b| *b == b'\n') {
        if !line.to_ascii_lowercase().starts_with(b"connection:") {
            out.extend_from_slice(line);
        }
    }
    out.extend_from_slice(&message[end..]);
    out
}
