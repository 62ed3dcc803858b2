//! GET /metrics: the exposition passes promtool, business counters are exact (moved in the commit),
//! request counters reach the store only when an instance flushes, and the gate works.

use std::collections::BTreeMap;

use helix_core::domain::Role;
use serde_json::json;

use super::api::post_json;
use super::api::put_blob;
use super::bundles::one_file_bundle;
use super::{expect_problem, serve_app, unique_blob};
use crate::{Backend, TestEnv};

/// `name{labels} value` lines of an exposition, as a map.
fn samples(text: &str) -> BTreeMap<String, i64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (k, v) = l.rsplit_once(' ').unwrap();
            (k.to_owned(), v.parse().unwrap())
        })
        .collect()
}

async fn scrape(env: &TestEnv, base: &str, token: Option<&str>) -> reqwest::Response {
    let mut req = env.http.get(format!("{base}/metrics"));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    req.send().await.unwrap()
}

async fn metrics(env: &TestEnv, base: &str) -> BTreeMap<String, i64> {
    let resp = scrape(env, base, None).await;
    assert_eq!(resp.status(), 200);
    samples(&resp.text().await.unwrap())
}

/// promtool (Prometheus's own checker, unpacked from Debian's package by scripts/promtool.sh).
fn promtool_check(text: &str) {
    let script = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/promtool.sh");
    let out = std::process::Command::new(&script).output().expect("scripts/promtool.sh runs");
    assert!(out.status.success(), "promtool unavailable: {}", String::from_utf8_lossy(&out.stderr));
    let promtool = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let mut child = std::process::Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "promtool check metrics failed:\n{said}\n{text}");
}

/// Ten publishes through one instance raise the publish counter by exactly ten, and only once that
/// instance flushes (another instance reads the store); business counters are exact at once; the
/// output passes `promtool check metrics`.
pub async fn metrics_count_requests_after_a_flush_and_business_counters_exactly(b: Backend) {
    let env = TestEnv::start_with(b, &[("HELIX_METRICS_FLUSH_SECONDS", "3600")]).await;
    let publisher = env.token(Role::Publisher, "team-a").await;
    // A second instance over the same stores: what a scrape served by another Lambda sees.
    let reader = serve_app(env.app_with(&[]).await.unwrap());
    let before = metrics(&env, &reader.url()).await;
    let key = "helix_requests_total{function=\"publish\",route=\"PUT /v1/workspaces/{ws}/blobs/{digest}\",status=\"201\",reason=\"\"}";
    let count = |m: &BTreeMap<String, i64>, k: &str| m.get(k).copied().unwrap_or(0);
    let mut bytes = 0;
    for n in 0..10 {
        let (body, d) = unique_blob(100 + n);
        bytes += body.len() as i64;
        assert_eq!(put_blob(&env, &publisher, "team-a", &d.to_string(), body).await.status(), 201);
    }
    // The same bytes again: 200, no new link, no business counter moves.
    let (body, d) = unique_blob(50);
    assert_eq!(put_blob(&env, &publisher, "team-a", &d.to_string(), body.clone()).await.status(), 201);
    assert_eq!(put_blob(&env, &publisher, "team-a", &d.to_string(), body.clone()).await.status(), 200);
    bytes += body.len() as i64;

    let unflushed = metrics(&env, &reader.url()).await;
    assert_eq!(count(&unflushed, key), count(&before, key), "nothing written per request before a flush");
    assert_eq!(count(&unflushed, "helix_blobs") - count(&before, "helix_blobs"), 11, "exact, in the commit");
    assert_eq!(count(&unflushed, "helix_blob_bytes") - count(&before, "helix_blob_bytes"), bytes);

    env.app.metrics.flush(env.app.meta.as_ref()).await;
    let after = metrics(&env, &reader.url()).await;
    assert_eq!(count(&after, key) - count(&before, key), 11, "ten publishes and one more, exactly");
    let again = "helix_requests_total{function=\"publish\",route=\"PUT /v1/workspaces/{ws}/blobs/{digest}\",status=\"200\",reason=\"\"}";
    assert_eq!(count(&after, again) - count(&before, again), 1);
    env.app.metrics.flush(env.app.meta.as_ref()).await;
    assert_eq!(count(&metrics(&env, &reader.url()).await, key), count(&after, key), "a flush moves counts once");

    // Governance: a refused export is a denial, an approval and an export are receipts.
    let ada = env.token_of("ada", Role::Publisher, "team-a").await;
    let grace = env.token_of("grace", Role::Approver, "team-a").await;
    one_file_bundle(&env, &ada, "team-a", "1").await;
    let v = "/v1/workspaces/team-a/bundles/model/versions/1";
    expect_problem(post_json(&env, &ada, &format!("{v}/export"), json!({})).await, 403, "not_approved").await;
    assert_eq!(post_json(&env, &grace, &format!("{v}/approve"), json!({})).await.status(), 201);
    assert_eq!(post_json(&env, &ada, &format!("{v}/export"), json!({})).await.status(), 200);
    let m = metrics(&env, &reader.url()).await;
    let moved = |k: &str| count(&m, k) - count(&before, k);
    assert_eq!(
        (moved("helix_governance_denials_total"), moved("helix_approvals_total"), moved("helix_exports_total")),
        (1, 1, 1)
    );
    assert_eq!(moved("helix_bundle_versions"), 1);
    assert_eq!(moved("helix_tokens_enabled"), 2, "ada and grace");
    // Every audit event counted: the store's own count of events since `before`.
    let mut events = 0;
    for stream in ["team-a", "*"] {
        events += env.audit(stream).await.len() as i64;
    }
    assert_eq!(count(&m, "helix_audit_events_total"), events);
    assert_eq!(m["helix_governance_mode{mode=\"enforce\"}"], 1);
    assert!(m.keys().any(|k| k.starts_with("helix_build_info{")));

    let text = scrape(&env, &reader.url(), None).await;
    assert_eq!(text.headers()["content-type"], "text/plain; version=0.0.4; charset=utf-8");
    promtool_check(&text.text().await.unwrap());
}

/// HELIX_METRICS_MIN_ROLE gates the scrape with a token of at least that role.
pub async fn metrics_can_require_a_role(b: Backend) {
    let env = TestEnv::start_with(b, &[("HELIX_METRICS_MIN_ROLE", "approver")]).await;
    let url = env.url("");
    let url = url.trim_end_matches('/');
    expect_problem(scrape(&env, url, None).await, 401, "token_missing").await;
    let viewer = env.token(Role::Viewer, "team-a").await;
    expect_problem(scrape(&env, url, Some(&viewer)).await, 403, "insufficient_role").await;
    let approver = env.token(Role::Approver, "team-a").await;
    assert_eq!(scrape(&env, url, Some(&approver)).await.status(), 200);
}
