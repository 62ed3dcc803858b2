//! The progress line of a transfer: bytes, rate and ETA on stderr while a terminal watches.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Bytes done of a total, drawn on stderr while a terminal watches (bytes, rate, ETA); silent otherwise.
pub struct Progress {
    pub(super) done: Arc<AtomicU64>,
    started: Instant,
    quiet: bool,
    ticker: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Progress {
    pub fn start(label: &'static str, total: u64, quiet: bool) -> Progress {
        let progress = Progress::hidden(quiet);
        progress.show(label, total);
        progress
    }

    /// Counting from now, drawn only from `show` on (a push uploads while it still hashes, and the
    /// upload's line follows the hashing's).
    pub fn hidden(quiet: bool) -> Progress {
        Progress { done: Arc::new(AtomicU64::new(0)), started: Instant::now(), quiet, ticker: Mutex::new(None) }
    }

    /// Draw `label` and the bytes done of `total` from now on (the rate counts from the start).
    pub fn show(&self, label: &'static str, total: u64) {
        if self.quiet || !std::io::stderr().is_terminal() {
            return;
        }
        let (done, started) = (self.done.clone(), self.started);
        let ticker = tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(250)).await;
                eprint!("\r{label}: {}\x1b[K", progress_line(done.load(Ordering::Relaxed), total, started.elapsed()));
            }
        });
        if let Some(old) = self.ticker.lock().unwrap_or_else(|p| p.into_inner()).replace(ticker) {
            old.abort();
        }
    }

    pub fn add(&self, n: u64) {
        self.done.fetch_add(n, Ordering::Relaxed);
    }

    /// Stop drawing; the elapsed time.
    pub fn finish(self) -> Duration {
        self.stop();
        self.started.elapsed()
    }

    /// The line cleared, not left dangling (also when dropped unfinished: an error, Ctrl-C).
    fn stop(&self) {
        if let Some(t) = self.ticker.lock().unwrap_or_else(|p| p.into_inner()).take() {
            t.abort();
            eprint!("\r\x1b[K");
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `12.0 MiB / 1.0 GiB  85.3 MiB/s  ETA 11s`
pub fn progress_line(done: u64, total: u64, elapsed: Duration) -> String {
    let rate = done as f64 / elapsed.as_secs_f64().max(0.001);
    let eta = if rate > 0.0 && done < total {
        format!("ETA {}s", ((total - done) as f64 / rate).ceil() as u64)
    } else {
        "ETA -".into()
    };
    format!("{} / {}  {}/s  {eta}", bytes(done), bytes(total), bytes(rate as u64))
}

/// Human-readable bytes (binary units).
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 { format!("{n} B") } else { format!("{value:.1} {}", UNITS[unit]) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_shows_bytes_rate_and_eta() {
        let line = progress_line(512 * 1024 * 1024, 1024 * 1024 * 1024, Duration::from_secs(2));
        assert_eq!(line, "512.0 MiB / 1.0 GiB  256.0 MiB/s  ETA 2s");
        assert_eq!(bytes(1023), "1023 B");
    }
}
