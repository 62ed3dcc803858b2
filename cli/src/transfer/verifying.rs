//! A large upload's `complete` answers 202 while the registry verifies the whole file's SHA-256 after
//! the answer (helix_core::verify): follow its status URL until it is linked (or refused), waiting a
//! little longer between polls each time (250 ms doubling to 1 s: a poll is one small read for `helix
//! serve`, and on AWS each poll works up to 20 s itself, so a longer wait only delays the answer).
//! Giving up only when the registry has made no progress for `STALLED` (its verification stopped: an
//! outage, a freeze that lasts). A poll answered 503 (the freeze holding the link, a store outage) or
//! not answered at all is waited out like a job that has not progressed: the first poll after the
//! freeze is lifted links the file (docs/runbook.md, "File size limits").

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::client::{ClientError, Registry};

const STALLED: Duration = Duration::from_secs(15 * 60);
const MAX_WAIT: Duration = Duration::from_secs(1);
/// Between polls while the registry answers 503 or not at all.
const HELD_WAIT: Duration = Duration::from_secs(if cfg!(test) { 0 } else { 5 });

/// A refusal of a poll that a later poll may not give: the freeze, an outage, no answer.
fn held(e: &ClientError) -> bool {
    matches!(e, ClientError::Unreachable(_) | ClientError::Refused { status: 503, .. })
}

fn pending(answer: &Value) -> bool {
    matches!(answer["state"].as_str(), Some("verifying" | "verified"))
}

/// The answer of `complete` for the file at `path`: done when it linked; otherwise poll its status URL
/// until it is (a refusal there is the same error a synchronous `complete` would have given).
pub(super) async fn follow(registry: &Registry, mut answer: Value, path: &str) -> Result<(), ClientError> {
    let tell = std::io::stderr().is_terminal();
    let mut wait = Duration::from_millis(250);
    let mut last = (0u64, Instant::now());
    let mut refusal: Option<ClientError> = None;
    while pending(&answer) {
        let Some(url) = answer["status_url"].as_str().map(str::to_owned) else {
            return Err(ClientError::Other(format!("the registry's answer for {path} has no status URL")));
        };
        let (done, size) = (answer["verified_bytes"].as_u64().unwrap_or(0), answer["size"].as_u64().unwrap_or(0));
        if tell {
            let (done, size) = (super::bytes(done), super::bytes(size));
            eprint!("\r{path}: waiting for the registry to verify the file's SHA-256 ({done} of {size})\x1b[K");
        }
        if done > last.0 {
            last = (done, Instant::now());
        } else if last.1.elapsed() > STALLED {
            let why = refusal.map(|e| format!("; the last poll: {e}")).unwrap_or_default();
            return Err(ClientError::Other(format!(
                "{path}: the registry's verification made no progress for {} minutes ({url}){why}",
                STALLED.as_secs() / 60
            )));
        }
        tokio::time::sleep(if refusal.is_some() { HELD_WAIT } else { wait }).await;
        wait = (wait * 2).min(MAX_WAIT);
        match registry.get(&url).await {
            Ok(next) => (answer, refusal) = (next, None),
            Err(e) if held(&e) => {
                if tell {
                    eprint!("\r{path}: the registry holds the verification ({e}); asking again\x1b[K");
                }
                refusal = Some(e);
            }
            Err(e) => return Err(e),
        }
    }
    if tell {
        eprint!("\r\x1b[K");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// A registry that answers each poll with the next of `answers` (status, content type, body).
    async fn answering(answers: Vec<(u16, &'static str, String)>) -> (String, tokio::task::JoinHandle<usize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let served = tokio::spawn(async move {
            let mut polls = 0;
            for (status, kind, body) in answers {
                let (mut conn, _) = listener.accept().await.unwrap();
                let mut buf = vec![0u8; 4096];
                let _ = conn.read(&mut buf).await.unwrap();
                let head = format!(
                    "HTTP/1.1 {status} X\r\ncontent-type: {kind}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                    body.len()
                );
                conn.write_all(head.as_bytes()).await.unwrap();
                conn.write_all(body.as_bytes()).await.unwrap();
                polls += 1;
            }
            polls
        });
        (url, served)
    }

    fn job(state: &str) -> String {
        json!({"state": state, "status_url": "/v1/workspaces/w/uploads/d/status?upload_id=u", "size": 10, "verified_bytes": 10})
            .to_string()
    }

    /// The freeze holding the link answers 503 `registry_frozen`: push asks again until the link,
    /// where it used to give up at the first 503. Other refusals still end it at once.
    #[tokio::test]
    async fn a_poll_answered_503_is_asked_again_and_a_refusal_ends_the_wait() {
        let frozen =
            json!({"type": "about:blank", "status": 503, "reason": "registry_frozen", "detail": "frozen"}).to_string();
        let (url, served) = answering(vec![
            (503, "application/problem+json", frozen.clone()),
            (503, "application/problem+json", frozen),
            (200, "application/json", job("linked")),
        ])
        .await;
        let registry = Registry::new(&url, Some("hlx_test".into())).unwrap();
        follow(&registry, serde_json::from_str(&job("verified")).unwrap(), "big.bin").await.unwrap();
        assert_eq!(served.await.unwrap(), 3, "asked again after each 503, until linked");

        let suspended =
            json!({"type": "about:blank", "status": 403, "reason": "workspace_suspended", "detail": "s"}).to_string();
        let (url, served) = answering(vec![(403, "application/problem+json", suspended)]).await;
        let registry = Registry::new(&url, Some("hlx_test".into())).unwrap();
        match follow(&registry, serde_json::from_str(&job("verified")).unwrap(), "big.bin").await {
            Err(ClientError::Refused { status: 403, reason, .. }) => assert_eq!(reason, "workspace_suspended"),
            other => panic!("a refusal other than 503 ends the wait: {other:?}"),
        }
        assert_eq!(served.await.unwrap(), 1);
    }
}
