//! `make bench` (read auditing): small-blob GET throughput of `helix serve`'s router on the embedded
//! backend (files, SQLite), in process, with read auditing on and off (HELIX_AUDIT_READS), alternated
//! round by round so both see the same machine. Each round: a fresh registry, one 1 KiB blob, then
//! `--clients` concurrent keep-alive clients GET it for `--seconds`. After an "on" round the queue is
//! drained and the trail must hold one `blob.read` per answered GET (the records are not lost).
//!
//!   read-bench [--rounds 3] [--seconds 5] [--clients 16] [--out FILE]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use helix_core::domain::Role;
use helix_core::ports::AuditSearch;
use helix_tests::{Backend, TestEnv};

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.windows(2).find(|w| w[0] == name).map(|w| w[1].parse().expect("a number")).unwrap_or(default)
}

/// GETs per second of one round, and (auditing on) the seconds the queue took to drain after it.
async fn round(audit: bool, seconds: u64, clients: usize) -> (f64, f64) {
    let env = TestEnv::start_with(Backend::Embedded, &[("HELIX_AUDIT_READS", if audit { "on" } else { "off" })]).await;
    let token = env.token(Role::Publisher, "bench").await;
    let bytes: Vec<u8> = (0..1024u32).map(|i| (i % 251) as u8).collect();
    let digest = helix_core::domain::Digest::of(&bytes);
    let url = env.url(&format!("/v1/workspaces/bench/blobs/{digest}"));
    let put = env.http.put(&url).bearer_auth(&token).body(bytes).send().await.unwrap();
    assert_eq!(put.status(), 201);
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (http, url, token, stop, done) = (env.http.clone(), url.clone(), token.clone(), stop.clone(), done.clone());
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let r = http.get(&url).bearer_auth(&token).send().await.unwrap();
                assert_eq!(r.status(), 200);
                r.bytes().await.unwrap();
                done.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    let elapsed = started.elapsed().as_secs_f64();
    let n = done.load(Ordering::Relaxed);
    let drain_started = Instant::now();
    let mut drain = 0.0;
    if audit {
        assert!(env.app.reads.flush(Duration::from_secs(120)).await, "the read queue did not drain");
        drain = drain_started.elapsed().as_secs_f64();
        assert_eq!(env.app.reads.dropped(), 0);
        let mut stored = 0u64;
        let mut after = None;
        loop {
            let q = AuditSearch {
                stream: Some("bench".into()),
                action: Some("blob.read".into()),
                after: after.clone(),
                limit: 1000,
                ..Default::default()
            };
            let page = env.app.audit.search(&q).await.unwrap();
            stored += page.events.len() as u64;
            after = page.events.last().map(|e| e.at_key()).or(page.resume_after);
            if after.is_none() {
                break;
            }
        }
        assert_eq!(stored, n, "one blob.read per answered GET");
    }
    (n as f64 / elapsed, drain)
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let rounds = arg("--rounds", 3);
    let seconds = arg("--seconds", 5) as u64;
    let clients = arg("--clients", 16);
    let out = std::env::args().collect::<Vec<_>>().windows(2).find(|w| w[0] == "--out").map(|w| w[1].clone());
    let (mut on, mut off, mut drains) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..rounds {
        let (rate, drain) = round(true, seconds, clients).await;
        on.push(rate);
        drains.push(drain);
        off.push(round(false, seconds, clients).await.0);
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let (m_on, m_off) = (mean(&on), mean(&off));
    let fmt = |v: &[f64]| v.iter().map(|r| format!("{r:.0}")).collect::<Vec<_>>().join(", ");
    let mut report = String::new();
    report.push_str(&format!(
        "Small-blob GET (1 KiB, inline) through `helix serve`'s router, embedded backend, {clients} clients, \
         {rounds} rounds of {seconds} s each, alternated.\n\n| read auditing | GET/s per round | mean GET/s |\n|---|---|---|\n"
    ));
    report.push_str(&format!("| on (`HELIX_AUDIT_READS=on`) | {} | {m_on:.0} |\n", fmt(&on)));
    report.push_str(&format!("| off | {} | {m_off:.0} |\n", fmt(&off)));
    report.push_str(&format!(
        "\nWith auditing on: {:.1} % of the throughput without it; every answered GET became one `blob.read` \
         event; the queue drained {:.2} s (worst round) after the load stopped.\n",
        100.0 * m_on / m_off,
        drains.iter().cloned().fold(0.0, f64::max)
    ));
    print!("{report}");
    if let Some(path) = out {
        if let Some(dir) = std::path::Path::new(&path).parent() {
            std::fs::create_dir_all(dir).unwrap();
        }
        std::fs::write(&path, report).unwrap();
    }
}
