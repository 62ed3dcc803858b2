//! Decisions mean what they say (issue 16, §2): a repeat returns a receipt only while it is in force
//! and identical; a decision the state forbids is a 409 whatever came before; every governance denial
//! is audited and counted; what is signed is bounded; ledger reads cost one receipt whatever the
//! ledger's length, and exports of one version are bounded.

use std::sync::atomic::Ordering;

use helix_core::domain::{Outcome, Role};
use serde_json::{Value, json};

use super::api::{get, metrics_text, post_json};
use super::bundles::one_file_bundle;
use super::expect_problem;
use crate::{Backend, TestEnv};

const BASE: &str = "/v1/workspaces/team-a/bundles/model/versions";

fn waiver(transition: &Value, justification: &str, lifetime: Option<i64>) -> Value {
    let mut w = json!({"transition": transition, "scope": "export_unapproved", "justification": justification});
    if let Some(l) = lifetime {
        w["expires_in_seconds"] = json!(l);
    }
    w
}

async fn transition(env: &TestEnv, token: &str, version: &str) -> Value {
    let v: Value = get(env, token, &format!("{BASE}/{version}")).await.json().await.unwrap();
    v["export_transition"].clone()
}

/// The status and body of a decision.
async fn decide(env: &TestEnv, token: &str, path: &str, body: Value) -> (u16, Value) {
    let resp = post_json(env, token, &format!("{BASE}/{path}"), body).await;
    (resp.status().as_u16(), resp.json().await.unwrap())
}

fn statement(receipt: &Value) -> Value {
    use base64::Engine;
    let payload = base64::engine::general_purpose::STANDARD.decode(receipt["payload"].as_str().unwrap()).unwrap();
    serde_json::from_slice(&payload).unwrap()
}

pub async fn decisions_repeat_only_while_in_force_and_identical(b: Backend) {
    let env = TestEnv::start(b).await;
    let ada = env.token_of("ada", Role::Publisher, "team-a").await;
    let grace = env.token_of("grace", Role::Approver, "team-a").await;
    let hopper = env.token_of("hopper", Role::Approver, "team-a").await;
    let linus = env.token_of("linus", Role::SafetyReviewer, "team-a").await;

    // An expired waiver asked for again is a new receipt, which lets the export through.
    one_file_bundle(&env, &ada, "team-a", "1").await;
    let t1 = transition(&env, &ada, "1").await;
    let (status, first) = decide(&env, &linus, "1/waivers", waiver(&t1, "INC-1", Some(2))).await;
    assert_eq!((status, first["seq"].as_u64()), (201, Some(1)), "{first}");
    let (status, again) = decide(&env, &linus, "1/waivers", waiver(&t1, "INC-1", Some(2))).await;
    assert_eq!((status, &again), (200, &first), "a repeat while it is in force: the same receipt");
    tokio::time::sleep(std::time::Duration::from_millis(3100)).await;
    expect_problem(post_json(&env, &ada, &format!("{BASE}/1/export"), json!({})).await, 403, "not_approved").await;
    let (status, renewed) = decide(&env, &linus, "1/waivers", waiver(&t1, "INC-1", Some(2))).await;
    assert_eq!((status, renewed["seq"].as_u64()), (201, Some(2)), "expired: a new waiver, not the dead one");
    let exported = post_json(&env, &ada, &format!("{BASE}/1/export"), json!({})).await;
    assert_eq!(exported.status(), 200);
    assert_eq!(exported.json::<Value>().await.unwrap()["governance"], "waived");

    // A request that differs in lifetime or justification is another decision, signed as asked.
    one_file_bundle(&env, &ada, "team-a", "2").await;
    let t2 = transition(&env, &ada, "2").await;
    let (status, week) = decide(&env, &linus, "2/waivers", waiver(&t2, "INC-2", Some(7 * 86_400))).await;
    assert_eq!(status, 201);
    let (status, minute) = decide(&env, &linus, "2/waivers", waiver(&t2, "INC-2", Some(60))).await;
    assert_eq!((status, minute["seq"].as_u64()), (201, Some(2)), "not the 7-day waiver: {minute}");
    let now = helix_core::domain::time::now_unix();
    let expires = statement(&minute["receipt"])["expires_at"].as_i64().unwrap();
    assert!((now + 55..=now + 65).contains(&expires), "a one-minute waiver: {expires} vs {now}");
    assert!(statement(&week["receipt"])["expires_at"].as_i64().unwrap() > now + 6 * 86_400);
    let (status, other) = decide(&env, &linus, "2/waivers", waiver(&t2, "INC-2, more", Some(60))).await;
    assert_eq!((status, other["seq"].as_u64()), (201, Some(3)));
    // No lifetime is the default lifetime: the same request as naming it.
    let (status, default) = decide(&env, &linus, "2/waivers", waiver(&t2, "INC-3", None)).await;
    assert_eq!(status, 201);
    let (status, named) = decide(&env, &linus, "2/waivers", waiver(&t2, "INC-3", Some(86_400))).await;
    assert_eq!((status, &named), (200, &default));

    // A decision the state forbids is a 409 with the state's reason, even by someone whose earlier
    // decision it would repeat.
    one_file_bundle(&env, &ada, "team-a", "3").await;
    let (status, approval) = decide(&env, &grace, "3/approve", json!({})).await;
    assert_eq!(status, 201);
    let (status, again) = decide(&env, &grace, "3/approve", json!({})).await;
    assert_eq!((status, &again), (200, &approval), "in force: the same approval");
    let (status, rejection) = decide(&env, &hopper, "3/reject", json!({})).await;
    assert_eq!(status, 201);
    expect_problem(post_json(&env, &grace, &format!("{BASE}/3/approve"), json!({})).await, 409, "version_rejected")
        .await;
    let (status, again) = decide(&env, &hopper, "3/reject", json!({})).await;
    assert_eq!((status, &again), (200, &rejection), "a rejection stays in force");
    // After an export, the waiver that let it through is spent: asking again is refused.
    expect_problem(
        post_json(&env, &linus, &format!("{BASE}/1/waivers"), waiver(&t1, "INC-1", Some(2))).await,
        409,
        "version_exported",
    )
    .await;
    let ledger: Value = get(&env, &ada, &format!("{BASE}/3/governance")).await.json().await.unwrap();
    assert_eq!(ledger["receipts"].as_array().unwrap().len(), 2, "nothing recorded for a refusal or a repeat");
}

/// The denied events of `stream`, as (action, reason, request id).
async fn denials(env: &TestEnv, stream: &str) -> Vec<(String, String, String)> {
    env.audit(stream)
        .await
        .into_iter()
        .filter(|e| e.outcome == Outcome::Denied)
        .map(|e| (e.action, e.details["reason"].as_str().unwrap_or("").to_owned(), e.request_id))
        .collect()
}

fn denials_total(metrics: &str) -> i64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix("helix_governance_denials_total "))
        .and_then(|v| v.trim().parse().ok())
        .expect("helix_governance_denials_total")
}

pub async fn every_governance_denial_is_audited_and_counted(b: Backend) {
    let env = TestEnv::start(b).await;
    let ada = env.token_of("ada", Role::Publisher, "team-a").await;
    let ada_admin = env.token_of("ada", Role::Admin, "*").await;
    let grace = env.token_of("grace", Role::Approver, "team-a").await;
    let linus = env.token_of("linus", Role::SafetyReviewer, "team-a").await;
    let viewer = env.token_of("vera", Role::Viewer, "team-a").await;
    let ws_admin = env.token_of("wanda", Role::Admin, "team-a").await;
    one_file_bundle(&env, &ada, "team-a", "1").await;
    one_file_bundle(&env, &ada, "team-a", "2").await;
    assert_eq!(post_json(&env, &grace, &format!("{BASE}/2/reject"), json!({})).await.status(), 201);
    let t1 = transition(&env, &ada, "1").await;
    let before = denials_total(&metrics_text(&env).await);

    let cases: Vec<(&str, &str, Value, u16, &str, &str)> = vec![
        (&ada_admin, "1/approve", json!({}), 403, "self_approval", "governance.approval"),
        (&ada_admin, "1/waivers", waiver(&t1, "x", None), 403, "self_approval", "governance.waiver"),
        (&grace, "2/approve", json!({}), 409, "version_rejected", "governance.approval"),
        (&linus, "1/waivers", waiver(&t1, "", None), 400, "waiver_invalid", "governance.waiver"),
        (&linus, "1/waivers", json!({"transition": 5}), 400, "waiver_invalid", "governance.waiver"),
        (&ada, "1/approve", json!({}), 403, "insufficient_role", "governance.approval"),
        (&ada, "1/reject", json!({}), 403, "insufficient_role", "governance.rejection"),
        (&grace, "1/waivers", waiver(&t1, "x", None), 403, "insufficient_role", "governance.waiver"),
        (&viewer, "1/export", json!({}), 403, "insufficient_role", "bundle.export"),
    ];
    let mut expected = Vec::new();
    for (token, path, body, status, reason, action) in cases {
        let problem =
            expect_problem(post_json(&env, token, &format!("{BASE}/{path}"), body).await, status, reason).await;
        expected.push((action.to_owned(), reason.to_owned(), problem["request_id"].as_str().unwrap().to_owned()));
    }
    // A malformed waiver that is not even JSON.
    let resp = env
        .http
        .post(env.url(&format!("{BASE}/1/waivers")))
        .header("authorization", format!("Bearer {linus}"))
        .body("{not json")
        .send()
        .await
        .unwrap();
    let problem = expect_problem(resp, 400, "waiver_invalid").await;
    expected.push((
        "governance.waiver".into(),
        "waiver_invalid".into(),
        problem["request_id"].as_str().unwrap().into(),
    ));
    // A credential of another workspace writes nothing into team-a's trail (else any token could fill
    // any tenant's evidence with refusals of its choosing): refused, counted in the request metrics only.
    let outsider = env.token_of("eve", Role::Approver, "team-b").await;
    expect_problem(
        post_json(&env, &outsider, &format!("{BASE}/1/approve"), json!({})).await,
        403,
        "forbidden_workspace",
    )
    .await;
    assert_eq!(denials(&env, "team-a").await, expected);
    for e in env.audit("team-a").await.iter().filter(|e| e.outcome == Outcome::Denied) {
        assert!(e.entity_id.starts_with("team-a/model@"), "{e:?}");
        assert!(e.actor.contains("@tok_"), "the authenticated actor: {e:?}");
    }

    // A refused freeze, in the global stream.
    let mut global = Vec::new();
    for (token, body, status, reason) in [
        (&ws_admin, json!({"reason": "x"}), 403, "forbidden_workspace"),
        (&grace, json!({"reason": "x"}), 403, "insufficient_role"),
    ] {
        let problem = expect_problem(post_json(&env, token, "/v1/admin/freeze", body).await, status, reason).await;
        global.push(("registry.freeze".to_owned(), reason.to_owned(), problem["request_id"].as_str().unwrap().into()));
    }
    assert_eq!(denials(&env, "*").await, global);

    let after = denials_total(&metrics_text(&env).await);
    assert_eq!(after - before, (expected.len() + global.len()) as i64, "each denial counted once");
    helix_core::domain::audit::verify_chain(&env.audit("team-a").await).unwrap();

    // A suspended workspace's own credential is refused as suspended before its role is judged, so its
    // refusals add nothing to the contained tenant's trail either.
    let admin = env.token(Role::Admin, "*").await;
    let suspend = post_json(&env, &admin, "/v1/admin/workspaces/team-a/suspend", json!({"reason": "incident"})).await;
    assert_eq!(suspend.status(), 200);
    let trail = env.audit("team-a").await.len();
    expect_problem(post_json(&env, &grace, &format!("{BASE}/1/waivers"), json!({})).await, 403, "workspace_suspended")
        .await;
    assert_eq!(env.audit("team-a").await.len(), trail, "nothing written while suspended");
}

pub async fn a_justification_is_bounded_as_signed_not_as_typed(b: Backend) {
    let env = TestEnv::start(b).await;
    let ada = env.token_of("ada", Role::Publisher, "team-a").await;
    let linus = env.token_of("linus", Role::SafetyReviewer, "team-a").await;
    one_file_bundle(&env, &ada, "team-a", "1").await;
    let t = transition(&env, &ada, "1").await;
    // 2048 bytes typed, 4096 signed (each `"` escapes to two): a 400 with the limit, not a 500.
    for typed in ["\"".repeat(2048), "\\".repeat(2048), "\u{1}".repeat(400)] {
        let resp = post_json(&env, &linus, &format!("{BASE}/1/waivers"), waiver(&t, &typed, None)).await;
        let problem = expect_problem(resp, 400, "waiver_invalid").await;
        assert!(problem["detail"].as_str().unwrap().contains("2048 bytes as signed"), "{problem}");
    }
    let ledger: Value = get(&env, &ada, &format!("{BASE}/1/governance")).await.json().await.unwrap();
    assert_eq!(ledger["receipts"], json!([]), "nothing signed");
    // Within the limit as signed: signed and recorded as typed.
    let fits = format!("{}{}", "\"".repeat(1000), "x".repeat(48));
    let (status, made) = decide(&env, &linus, "1/waivers", waiver(&t, &fits, None)).await;
    assert_eq!(status, 201, "{made}");
    assert_eq!(statement(&made["receipt"])["justification"], fits.as_str());
}

pub async fn ledger_reads_cost_one_receipt_whatever_its_length_and_exports_are_bounded(b: Backend) {
    let env = TestEnv::start_with(b, &[("HELIX_EXPORT_LIMIT", "12")]).await;
    let ada = env.token_of("ada", Role::Publisher, "team-a").await;
    let grace = env.token_of("grace", Role::Approver, "team-a").await;
    one_file_bundle(&env, &ada, "team-a", "1").await;
    assert_eq!(post_json(&env, &grace, &format!("{BASE}/1/approve"), json!({})).await.status(), 201);
    let export = async || post_json(&env, &ada, &format!("{BASE}/1/export"), json!({})).await;
    // The first export reads the whole ledger (decisions only): the head, then every receipt, so it never
    // extends evidence that does not verify.
    let before_first = env.app.receipts_read.load(Ordering::SeqCst);
    assert_eq!(export().await.status(), 200);
    assert_eq!(env.app.receipts_read.load(Ordering::SeqCst) - before_first, 2, "head + the one approval");

    // Receipts read from the store (each one verified) by one request of each kind on the hot path.
    let reads = async || {
        let count = || env.app.receipts_read.load(Ordering::SeqCst);
        let mut per_request = Vec::new();
        let start = count();
        assert_eq!(get(&env, &ada, &format!("{BASE}/1")).await.status(), 200);
        per_request.push(count() - start);
        let start = count();
        assert_eq!(export().await.status(), 200);
        per_request.push(count() - start);
        let start = count();
        expect_problem(post_json(&env, &grace, &format!("{BASE}/1/approve"), json!({})).await, 409, "version_exported")
            .await;
        per_request.push(count() - start);
        per_request
    };
    let short = reads().await;
    for _ in 0..6 {
        assert_eq!(export().await.status(), 200);
    }
    let long = reads().await;
    assert_eq!(short, vec![1, 1, 1], "one receipt per read, decision and export");
    assert_eq!(long, short, "the same after more re-exports");

    // The bound: HELIX_EXPORT_LIMIT exports of a version (12 here), then 409 export_limit_reached.
    let ledger: Value = get(&env, &ada, &format!("{BASE}/1/governance")).await.json().await.unwrap();
    let receipts = ledger["receipts"].as_array().unwrap();
    let exports = receipts.iter().filter(|r| statement(r)["kind"] == "export").count();
    assert_eq!(exports, 9);
    assert_eq!(statement(receipts.last().unwrap())["details"]["number"], 9, "each export receipt counts, signed");
    for _ in exports..12 {
        assert_eq!(export().await.status(), 200);
    }
    let refused = expect_problem(export().await, 409, "export_limit_reached").await;
    assert!(refused["detail"].as_str().unwrap().contains("12 times"), "{refused}");
    let ledger: Value = get(&env, &ada, &format!("{BASE}/1/governance")).await.json().await.unwrap();
    assert_eq!(ledger["receipts"].as_array().unwrap().len(), 13, "an approval and 12 exports, no more");
    let last = env.audit("team-a").await.pop().unwrap();
    assert_eq!((last.outcome, last.details["reason"].as_str()), (Outcome::Denied, Some("export_limit_reached")));
    // Reading the whole ledger (GET .../governance) still verifies every receipt.
    let start = env.app.receipts_read.load(Ordering::SeqCst);
    assert_eq!(get(&env, &ada, &format!("{BASE}/1/governance")).await.status(), 200);
    assert_eq!(env.app.receipts_read.load(Ordering::SeqCst) - start, 13);
}

pub async fn waivers_of_one_version_are_bounded_and_a_repeat_in_force_still_answers(b: Backend) {
    let env = TestEnv::start_with(b, &[("HELIX_WAIVER_LIMIT", "3")]).await;
    let ada = env.token_of("ada", Role::Publisher, "team-a").await;
    let linus = env.token_of("linus", Role::SafetyReviewer, "team-a").await;
    one_file_bundle(&env, &ada, "team-a", "1").await;
    let t = transition(&env, &ada, "1").await;
    let mut made = Vec::new();
    for n in 1..=3 {
        let (status, receipt) = decide(&env, &linus, "1/waivers", waiver(&t, &format!("INC-{n}"), None)).await;
        assert_eq!((status, receipt["seq"].as_u64()), (201, Some(n)), "{receipt}");
        made.push(receipt);
    }
    // A fourth distinct waiver: refused, audited, and the ledger does not grow.
    let refused = expect_problem(
        post_json(&env, &linus, &format!("{BASE}/1/waivers"), waiver(&t, "INC-4", None)).await,
        409,
        "waiver_limit_reached",
    )
    .await;
    assert!(refused["detail"].as_str().unwrap().contains("3 waivers"), "{refused}");
    let last = env.audit("team-a").await.pop().unwrap();
    assert_eq!((last.outcome, last.details["reason"].as_str()), (Outcome::Denied, Some("waiver_limit_reached")));
    let ledger: Value = get(&env, &ada, &format!("{BASE}/1/governance")).await.json().await.unwrap();
    assert_eq!(ledger["receipts"].as_array().unwrap().len(), 3, "three waivers, no more");
    // A waiver still in force asked for again still answers with its receipt.
    let (status, again) = decide(&env, &linus, "1/waivers", waiver(&t, "INC-2", None)).await;
    assert_eq!((status, &again), (200, &made[1]));
    // The bound is per version: another version takes its own waivers.
    one_file_bundle(&env, &ada, "team-a", "2").await;
    let t2 = transition(&env, &ada, "2").await;
    let (status, other) = decide(&env, &linus, "2/waivers", waiver(&t2, "INC-4", None)).await;
    assert_eq!((status, other["seq"].as_u64()), (201, Some(1)), "{other}");
}
