//! Request counters of one instance (`Recorder`), counted in memory and flushed to the meta store at
//! most once per interval (the whole story is in `metrics`). `App` holds one; rendering `/metrics`
//! sits above `App` in `metrics`, so this part lives below it, on its own.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::error::Dependency;
use crate::ports::MetaStore;

/// The counter group request counts are flushed to.
pub const REQUEST_COUNTERS: &str = "requests";

/// One instance's request counts since its last flush.
pub struct Recorder {
    pending: Mutex<BTreeMap<String, i64>>,
    last_flush: Mutex<Instant>,
    interval: Duration,
}

/// The counter key of a request: `req|{function}|{route}|{status}|{reason}` (no part holds `|`).
fn request_key(function: &str, route: &str, status: u16, reason: &str) -> String {
    format!("req|{function}|{route}|{status}|{reason}")
}

impl Recorder {
    pub fn new(interval: Duration) -> Recorder {
        Recorder { pending: Mutex::default(), last_flush: Mutex::new(Instant::now()), interval }
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, i64>> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Count one answered request (in memory only).
    pub fn record(&self, function: &str, route: &str, status: u16, reason: &str, dependency: Option<Dependency>) {
        let mut p = self.pending();
        *p.entry(request_key(function, route, status, reason)).or_insert(0) += 1;
        if let Some(dep) = dependency {
            *p.entry(format!("dep|{}", dep.as_str())).or_insert(0) += 1;
        }
    }

    /// Flush if the interval has passed since the last flush.
    pub async fn flush_if_due(&self, meta: &dyn MetaStore) {
        {
            let mut last = self.last_flush.lock().unwrap_or_else(|p| p.into_inner());
            if last.elapsed() < self.interval {
                return;
            }
            *last = Instant::now();
        }
        self.flush(meta).await;
    }

    /// Add the pending counts to the store, 50 counters per write; the counts of a write that failed
    /// stay pending (logged, never raised), those of writes that succeeded do not.
    pub async fn flush(&self, meta: &dyn MetaStore) {
        let counts: Vec<(String, i64)> = std::mem::take(&mut *self.pending()).into_iter().collect();
        for chunk in counts.chunks(50) {
            if let Err(e) = meta.add_to_counters(REQUEST_COUNTERS, chunk).await {
                tracing::warn!(error = %e, counters = chunk.len(), "metrics flush failed; the counts stay for the next one");
                let mut p = self.pending();
                for (k, v) in chunk {
                    *p.entry(k.clone()).or_insert(0) += v;
                }
            }
        }
    }
}
