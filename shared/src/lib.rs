//! helix-core: everything the Helix functions share.
//!
//! `domain` holds pure types and rules (no I/O), `ports` the four storage/signing traits, `adapters`
//! their AWS and embedded implementations, `http` the request/response plumbing every handler uses,
//! `config` the typed environment read once at start, and `app` the state a function builds once.

pub mod adapters;
pub mod app;
pub mod audit;
pub mod audit_export;
pub mod audit_verify;
pub mod auth;
pub mod batch;
pub mod blobs;
pub mod bundles;
pub mod chunked;
pub mod config;
pub mod console;
pub mod domain;
pub mod dsse;
pub mod durable;
pub mod error;
#[cfg(feature = "pack")]
pub mod evidence_pack;
pub mod freeze;
pub mod governance;
pub mod http;
pub mod keys;
pub mod lambda;
pub mod metrics;
pub mod notify;
pub mod oidc;
pub mod pending;
pub mod ports;
pub mod posture;
pub mod proofs;
pub mod read_ingest;
pub mod read_records;
pub mod reads;
pub mod request_counts;
pub mod suspension;
pub mod telemetry;
pub mod tokens;
pub mod verify;
pub mod workspaces;

pub use app::App;
pub use config::{Config, Mode};
pub use error::{Error, Result};
