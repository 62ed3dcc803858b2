//! `make bench` (audit part), on the embedded backend (SQLite, files, the local key), in process:
//! appends per second on one stream (one writer) and on 8 streams (8 writers at once), then the daily
//! export of a day of N events and its offline verification, each timed, with the process's peak
//! resident memory (VmHWM) after each phase.
//!
//!   audit-bench [--appends 5000] [--events 100000] [--out FILE]
//!
//! The export's day is the events appended here ("today"), exported as if it were tomorrow 00:15.

use std::time::{Duration, Instant};

use helix_core::audit_export;
use helix_core::audit_verify::{self, DirEvidence};
use helix_core::domain::{AuditDraft, Outcome};
use helix_tests::{Backend, TestEnv};
use serde_json::json;

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.windows(2).find(|w| w[0] == name).map(|w| w[1].parse().expect("a number")).unwrap_or(default)
}

/// Peak resident set size of this process so far, in MiB.
fn peak_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kb: f64 = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    kb / 1024.0
}

fn draft(stream: &str, n: usize) -> AuditDraft {
    AuditDraft {
        stream: stream.into(),
        actor: format!("bench@tok_{n:016x}"),
        action: "blob.link".into(),
        entity_type: "blob".into(),
        entity_id: format!("sha256:{n:064x}"),
        outcome: Outcome::Success,
        request_id: format!("req-{n}"),
        details: json!({"size": n, "slot": 0}),
    }
}

async fn append_rate(env: &TestEnv, streams: usize, per_stream: usize) -> (f64, Duration) {
    let t = Instant::now();
    let tasks: Vec<_> = (0..streams)
        .map(|s| {
            let audit = env.app.audit.clone();
            tokio::spawn(async move {
                for n in 0..per_stream {
                    audit.append(draft(&format!("ws-{s}"), n)).await.unwrap();
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let took = t.elapsed();
    ((streams * per_stream) as f64 / took.as_secs_f64(), took)
}

#[tokio::main]
async fn main() {
    let appends = arg("--appends", 5000);
    let events = arg("--events", 100_000);
    let out = std::env::args().collect::<Vec<_>>().windows(2).find(|w| w[0] == "--out").map(|w| w[1].clone());
    let mut report = String::from("| phase | result | peak RSS so far |\n|---|---|---|\n");
    let mut row = |phase: &str, result: String| {
        let line = format!("| {phase} | {result} | {:.0} MiB |\n", peak_mib());
        eprint!("{line}");
        report.push_str(&line);
    };

    let env = TestEnv::start(Backend::Embedded).await;
    let (rate, took) = append_rate(&env, 1, appends).await;
    row("append, one stream, one writer", format!("{appends} in {:.2} s: {rate:.0}/s", took.as_secs_f64()));
    let (rate, took) = append_rate(&env, 8, appends / 8).await;
    row("append, 8 streams, 8 writers", format!("{} in {:.2} s: {rate:.0}/s", appends / 8 * 8, took.as_secs_f64()));

    // A day of `events` (spread over 16 workspaces), exported and verified.
    let env = TestEnv::start(Backend::Embedded).await;
    let (rate, took) = append_rate(&env, 16, events / 16).await;
    row("set-up: the day's events", format!("{} in {:.1} s ({rate:.0}/s)", events / 16 * 16, took.as_secs_f64()));
    let today = time::OffsetDateTime::now_utc().date();
    let run_at = time::OffsetDateTime::new_utc(today.next_day().unwrap(), time::Time::from_hms(0, 15, 0).unwrap());
    let t = Instant::now();
    let r = audit_export::export_through(&env.app, today, run_at, "bench", usize::MAX).await.unwrap();
    row("export of the day", format!("{} events in {:.2} s", r.event_count, t.elapsed().as_secs_f64()));
    let key = env.app.signer.public_key().await.unwrap();
    let dir = env.data_dir().join(helix_core::app::BLOB_DIR);
    let t = Instant::now();
    let summary = audit_verify::verify(&DirEvidence::open(dir).unwrap(), &[key]).await.unwrap();
    row("helix audit verify (in process)", format!("{} events in {:.2} s", summary.events, t.elapsed().as_secs_f64()));

    if let Some(path) = out {
        std::fs::create_dir_all(std::path::Path::new(&path).parent().unwrap()).unwrap();
        std::fs::write(&path, report).unwrap();
    }
}
