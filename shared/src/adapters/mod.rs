//! Adapters: one AWS and one embedded implementation of each port.
//!
//! | port      | AWS            | embedded                |
//! |-----------|----------------|-------------------------|
//! | BlobStore | `s3`           | `fs`                    |
//! | MetaStore | `dynamo`       | `sqlite`                |
//! | AuditLog  | `dynamo`       | `sqlite`                |
//! | Signer    | `kms`          | `local_key`             |
//! | NotificationOutbox | DynamoDB stream (`notify` function) | `sqlite` |
//! | NotificationSink | `webhook` (both), EventBridge (`notify` function) | `webhook` |
//!
//! `sqlite` is behind the `sqlite` cargo feature, so Lambda binaries do not carry SQLite. The AWS
//! adapters build their SDK client at its first use (`lazy`).

pub mod dynamo;
pub mod fs;
pub mod kms;
pub mod lazy;
pub mod local_key;
pub mod s3;
#[cfg(feature = "sqlite")]
pub mod sqlite;
pub mod webhook;

/// Bounded retry with jitter for optimistic writes that lost a race (audit seq, S3 409).
pub(crate) async fn backoff(attempt: u32) {
    let mut r = [0u8; 1];
    let _ = getrandom::fill(&mut r);
    let base = 2u64.saturating_pow(attempt.min(6));
    let ms = base + u64::from(r[0]) % (base * 2 + 1);
    tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
}
