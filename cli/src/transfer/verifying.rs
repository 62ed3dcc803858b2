//! A large upload's `complete` answers 202 while the registry verifies the whole file's SHA-256 after
//! the answer (helix_core::verify): follow its status URL until it is linked (or refused), waiting a
//! little longer between polls each time (250 ms doubling to 1 s: a poll is one small read for `helix
//! serve`, and on AWS each poll works up to 20 s itself, so a longer wait only delays the answer).
//! Giving up only when the registry has made no progress for `STALLED` (its verification stopped: an
//! outage, a freeze that lasts).

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::client::{ClientError, Registry};

const STALLED: Duration = Duration::from_secs(15 * 60);
const MAX_WAIT: Duration = Duration::from_secs(1);

fn pending(answer: &Value) -> bool {
    matches!(answer["state"].as_str(), Some("verifying" | "verified"))
}

/// The answer of `complete` for the file at `path`: done when it linked; otherwise poll its status URL
/// until it is (a refusal there is the same error a synchronous `complete` would have given).
pub(super) async fn follow(registry: &Registry, mut answer: Value, path: &str) -> Result<(), ClientError> {
    let tell = std::io::stderr().is_terminal();
    let mut wait = Duration::from_millis(250);
    let mut last = (0u64, Instant::now());
    while pending(&answer) {
        let Some(url) = answer["status_url"].as_str().map(str::to_owned) else {
            return Err(ClientError::Other(format!("the registry's answer for {path} has no status URL")));
        };
        let (done, size) = (answer["verified_bytes"].as_u64().unwrap_or(0), answer["size"].as_u64().unwrap_or(0));
        if tell {
            eprint!("\r{path}: waiting for the registry to verify the file's SHA-256 ({done} of {size} bytes)\x1b[K");
        }
        if done > last.0 {
            last = (done, Instant::now());
        } else if last.1.elapsed() > STALLED {
            return Err(ClientError::Other(format!(
                "{path}: the registry's verification made no progress for {} minutes ({url})",
                STALLED.as_secs() / 60
            )));
        }
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(MAX_WAIT);
        answer = registry.get(&url).await?;
    }
    if tell {
        eprint!("\r\x1b[K");
    }
    Ok(())
}
