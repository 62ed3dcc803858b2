//! `make bench`: cold start of each function binary as a Lambda, against the Runtime API emulator
//! and the AWS emulator (moto), beside a Python/boto3 function doing the same set-up.
//!
//!   lambda-bench --bin-dir target/lambda-release --python .venv/bin/python [--runs 20] [--out FILE]
//!
//! Per function and run: a new process; *init* is exec to the first `GET .../invocation/next` (every
//! SDK client built), *first invocation* is the first event's round trip with real calls to the
//! emulator. Medians (and min/max) of the runs; the stripped binary and its zipped `bootstrap` sizes.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use helix_core::domain::Role;
use helix_tests::runtime_api::{FunctionProcess, Outcome, RuntimeApi, apigw_event, functions};
use helix_tests::{Backend, TestEnv};
use serde_json::{Value, json};

struct Args {
    bin_dir: PathBuf,
    python: PathBuf,
    runs: usize,
    out: Option<PathBuf>,
}

fn args() -> Args {
    let mut a =
        Args { bin_dir: "target/lambda-release".into(), python: ".venv/bin/python".into(), runs: 20, out: None };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--bin-dir" => a.bin_dir = value().into(),
            "--python" => a.python = value().into(),
            "--runs" => a.runs = value().parse().expect("--runs N"),
            "--out" => a.out = Some(value().into()),
            other => panic!("unknown argument {other}"),
        }
    }
    a
}

struct Sample {
    init: Duration,
    first: Duration,
}

async fn run_once(cmd: &Path, args: &[&str], env: &[(String, String)], event: &Value) -> Sample {
    let api = RuntimeApi::start().await;
    let mut process = FunctionProcess::spawn(cmd, args, &api, env);
    let Some(polled) = api.first_poll(Duration::from_secs(30)).await else {
        panic!("{}: never polled; output:\n{}", cmd.display(), process.output());
    };
    let init = polled - process.started;
    let t = Instant::now();
    let outcome = api.invoke(event, Duration::from_secs(30)).await;
    let first = t.elapsed();
    match outcome {
        // An HTTP function answers 2xx; audit-export, audit-ingest and notify answer their report (no statusCode).
        Outcome::Response(r) if r["statusCode"].as_u64().is_none_or(|s| s < 300) => {}
        other => panic!("{}: {other:?}\n{}", cmd.display(), process.output()),
    }
    let _ = process.child.kill().await;
    Sample { init, first }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 }
}

fn stats(v: &[f64]) -> String {
    let min = v.iter().copied().fold(f64::INFINITY, f64::min);
    let max = v.iter().copied().fold(0.0, f64::max);
    format!("{:.1} ({:.1}–{:.1})", median(v.to_vec()), min, max)
}

/// Size of `bin` zipped as `bootstrap` with deflate level 9 (what cargo-lambda's zip amounts to).
fn zipped_size(python: &Path, bin: &Path) -> u64 {
    let script = "import sys, zipfile, io\nb = io.BytesIO()\nwith zipfile.ZipFile(b, 'w', zipfile.ZIP_DEFLATED, compresslevel=9) as z:\n    z.write(sys.argv[1], 'bootstrap')\nprint(len(b.getvalue()))";
    let out = std::process::Command::new(python).args(["-c", script]).arg(bin).output().expect("python zip");
    String::from_utf8_lossy(&out.stdout).trim().parse().expect("zip size")
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let a = args();
    let env = TestEnv::start(Backend::Emulator).await;
    let admin = env.token(Role::Admin, "*").await;
    let mut vars = env.lambda_env();
    // notify's bus (only notify reads it; an empty batch puts nothing on it).
    vars.push(("HELIX_EVENT_BUS_NAME".into(), "lambda-bench".into()));
    let digest = "sha256:2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae";
    let blob = format!("/v1/workspaces/team-a/blobs/{digest}");
    let blob_route = "/v1/workspaces/{ws}/blobs/{digest}";
    let mut put = apigw_event("PUT", blob_route, &blob, "", Some(&admin));
    put["headers"]["content-type"] = json!("application/octet-stream");
    put["body"] = json!("Zm9v"); // "foo"
    put["isBase64Encoded"] = json!(true);
    let mut audit_search = apigw_event("GET", "/v1/audit", "/v1/audit", "workspace=team-a", Some(&admin));
    audit_search["queryStringParameters"] = json!({"workspace": "team-a"});
    let plan: Vec<(&str, Value)> = vec![
        ("health", apigw_event("GET", "/readyz", "/readyz", "", None)),
        ("publish", put),
        ("fetch", apigw_event("GET", blob_route, &blob, "", Some(&admin))),
        ("token", apigw_event("GET", "/v1/whoami", "/v1/whoami", "", Some(&admin))),
        ("waive", apigw_event("GET", "/v1/governance/public-key", "/v1/governance/public-key", "", None)),
        ("audit", audit_search),
        ("metrics", apigw_event("GET", "/metrics", "/metrics", "", None)),
        // console: its page (assets compiled in; no store, no key).
        ("console", apigw_event("GET", "/console", "/console", "", None)),
        // notify: an empty batch of the audit table's stream (no EventBridge call to make).
        ("notify", json!({"Records": []})),
    ];
    // audit-export: the first run exports yesterday (empty on a fresh emulator), later runs re-check it.
    let yesterday = time::OffsetDateTime::now_utc().date().previous_day().unwrap();
    let mut plan = plan;
    plan.push(("audit-export", json!({"day": helix_core::audit_export::day_string(yesterday)})));
    // audit-ingest: a CloudWatch Logs delivery of one read record (appended once; later runs: already there).
    let record = helix_core::reads::ReadRecord {
        workspace: "team-a".into(),
        action: helix_core::reads::BLOB_READ.into(),
        entity_type: "blob".into(),
        entity_id: digest.into(),
        actor: "bench@tok_0123456789abcdef".into(),
        outcome: helix_core::domain::Outcome::Success,
        request_id: "lambda-bench".into(),
        details: json!({"method": "GET", "status": 200}),
    };
    let delivery =
        helix_core::read_ingest::subscription_event("/helix/bench/fetch", &[("1".into(), record.log_line())]);
    plan.push(("audit-ingest", delivery));

    let mut measured: Vec<String> = plan.iter().map(|(f, _)| f.to_string()).collect();
    measured.sort();
    assert_eq!(measured, functions(), "every function is measured");
    let mut rows = Vec::new();
    let mut python_init = 0.0;
    let python_script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("bench/python_function.py");
    let targets: Vec<(String, PathBuf, Vec<String>, Value)> = plan
        .iter()
        .map(|(f, e)| (f.to_string(), a.bin_dir.join(f), vec![], e.clone()))
        .chain([(
            "python-boto3".to_string(),
            a.python.clone(),
            vec![python_script.display().to_string()],
            plan[0].1.clone(),
        )])
        .collect();
    for (name, cmd, cmd_args, ev) in &targets {
        let cmd_args: Vec<&str> = cmd_args.iter().map(String::as_str).collect();
        // One warm-up run (page cache, emulator connection pools) that is not counted.
        run_once(cmd, &cmd_args, &vars, ev).await;
        let mut inits = Vec::new();
        let mut firsts = Vec::new();
        for _ in 0..a.runs {
            let s = run_once(cmd, &cmd_args, &vars, ev).await;
            inits.push(ms(s.init));
            firsts.push(ms(s.first));
        }
        let (size, zipped) = if name.starts_with("python") {
            ("—".to_string(), "—".to_string())
        } else {
            let size = std::fs::metadata(cmd).expect("binary").len();
            let zipped = zipped_size(&a.python, cmd);
            (format!("{:.2} MB", size as f64 / 1e6), format!("{:.2} MB", zipped as f64 / 1e6))
        };
        let init_median = median(inits.clone());
        if name.starts_with("python") {
            python_init = init_median;
        }
        eprintln!("{name}: init {} ms, first invocation {} ms", stats(&inits), stats(&firsts));
        rows.push((name.clone(), init_median, stats(&inits), stats(&firsts), size, zipped));
    }

    let mut md = String::from(
        "| function | init ms, median (min–max) | first invocation ms | × faster init than Python | binary | zipped |\n\
         |---|---|---|---|---|---|\n",
    );
    for (name, init_median, init, first, size, zipped) in &rows {
        let speedup = if name.starts_with("python") { "1".into() } else { format!("{:.0}", python_init / init_median) };
        md.push_str(&format!("| {name} | {init} | {first} | {speedup} | {size} | {zipped} |\n"));
    }
    md.push_str(&format!(
        "\n{} runs per function after one warm-up; binaries from {}; AWS emulator at {}.\n",
        a.runs,
        a.bin_dir.display(),
        env.aws.as_ref().unwrap().endpoint
    ));
    println!("{md}");
    if let Some(out) = a.out {
        std::fs::create_dir_all(out.parent().unwrap()).unwrap();
        std::fs::write(out, md).unwrap();
    }
}
