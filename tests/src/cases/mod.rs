//! The test cases, each an `async fn(Backend)`, expanded into `#[tokio::test]`s for each backend by
//! `common_suite!` / `cases!`. `contract` exercises the ports directly; `api` drives the registry
//! over HTTP through `helix serve`'s router (the same handlers Lambda runs); `faults` breaks things.

pub mod api;
mod audit;
mod batches;
mod breaker;
mod bundles;
mod chunked;
mod conformance;
mod contract;
mod decisions;
mod export;
mod faults;
mod freeze;
mod large_files;
mod metrics;
mod notify;
mod notify_aws;
mod oidc;
mod pack;
mod proofs;
mod queues;
mod reads;
mod round_trips;
mod s3_writes;
mod smoke;
mod suspension;
mod tokens;
mod verify_async;
mod verify_aws;

pub use crate::rbac::rbac_matrix_holds_over_http;
pub use api::*;
pub use audit::*;
pub use batches::*;
pub use breaker::*;
pub use bundles::*;
pub use chunked::*;
pub use conformance::*;
pub use contract::*;
pub use decisions::*;
pub use export::*;
pub use faults::*;
pub use freeze::*;
pub use large_files::*;
pub use metrics::*;
pub use notify::*;
pub use notify_aws::*;
pub use oidc::*;
pub use pack::*;
pub use proofs::*;
pub use queues::*;
pub use reads::*;
pub use round_trips::*;
pub use s3_writes::*;
pub use smoke::*;
pub use suspension::*;
pub use tokens::*;
pub use verify_async::*;
pub use verify_aws::*;

use helix_core::domain::Digest;

/// Some bytes unique to this call, and their digest.
pub fn unique_blob(len: usize) -> (Vec<u8>, Digest) {
    let seed = helix_core::domain::BearerToken::generate().sha256();
    let bytes: Vec<u8> = seed.bytes().cycle().take(len).collect();
    let digest = Digest::of(&bytes);
    (bytes, digest)
}

/// A 127.0.0.1 port nothing listens on.
pub fn closed_port_url() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    drop(l);
    format!("http://127.0.0.1:{port}")
}

pub async fn problem(resp: reqwest::Response) -> (u16, serde_json::Value) {
    let status = resp.status().as_u16();
    let ct = resp.headers().get("content-type").map(|v| v.to_str().unwrap().to_owned());
    let body: serde_json::Value = resp.json().await.expect("json body");
    assert_eq!(ct.as_deref(), Some("application/problem+json"), "{body}");
    assert!(body["request_id"].as_str().is_some_and(|r| !r.is_empty()), "{body}");
    assert_eq!(body["status"].as_u64(), Some(u64::from(status)));
    (status, body)
}

/// Asserts a problem response with this status and reason.
pub async fn expect_problem(resp: reqwest::Response, status: u16, reason: &str) -> serde_json::Value {
    let (got, body) = problem(resp).await;
    assert_eq!((got, body["reason"].as_str().unwrap_or("")), (status, reason), "{body}");
    body
}

/// Start a second server over `app` (the same resources, some of them broken).
pub fn serve_app(app: helix_core::App) -> helix_cli::serve::Server {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    helix_cli::serve::Server::start(std::sync::Arc::new(app), tokio::net::TcpListener::from_std(listener).unwrap())
}
