//! The freeze switch: an admin of every workspace freezes the registry; from the next request every
//! change on every function is 503 `registry_frozen` while reads and health go on; both switches are
//! audited; status and metrics show it.

use helix_core::domain::Role;
use serde_json::{Value, json};

use super::api::{get, get_blob, metrics_text, post_json, put_blob};
use super::{expect_problem, unique_blob};
use crate::{Backend, TestEnv};

pub async fn freeze_stops_every_change_under_a_running_publish_loop_and_reads_go_on(b: Backend) {
    let env = std::sync::Arc::new(TestEnv::start(b).await);
    let admin = env.token(Role::Admin, "*").await;
    let publisher = env.token(Role::Publisher, "team-a").await;
    let approver = env.token(Role::Approver, "team-a").await;
    let (kept, kept_digest) = unique_blob(64);
    assert_eq!(put_blob(&env, &publisher, "team-a", &kept_digest.to_string(), kept.clone()).await.status(), 201);
    // Before the freeze: a presigned upload plan, and a token to revoke during it.
    let (staged, staged_digest) = unique_blob(5000);
    let plan_body = json!({"digest": staged_digest.to_string(), "size": 5000});
    let upload_plan: Value =
        post_json(&env, &publisher, "/v1/workspaces/team-a/uploads", plan_body).await.json().await.unwrap();
    let doomed = env.token_of("mallory", Role::Publisher, "team-a").await;
    let doomed_id = env.token_id(&doomed).await;

    // A publish loop: each attempt's status, and whether it was sent after the freeze was answered.
    let frozen_at = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let loop_task = {
        let (env, publisher, frozen_at, stop) = (env.clone(), publisher.clone(), frozen_at.clone(), stop.clone());
        tokio::spawn(async move {
            let mut seen = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let after_freeze = frozen_at.load(std::sync::atomic::Ordering::SeqCst);
                let (bytes, d) = unique_blob(32);
                let resp = put_blob(&env, &publisher, "team-a", &d.to_string(), bytes).await;
                let status = resp.status().as_u16();
                let body: Value = resp.json().await.unwrap_or(Value::Null);
                seen.push((after_freeze, status, body["reason"].as_str().unwrap_or("").to_owned()));
            }
            seen
        })
    };
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;

    // Who may freeze: an admin of every workspace, with a reason.
    let ws_admin = env.token(Role::Admin, "team-a").await;
    let freeze = async |token: &str, body: Value| post_json(&env, token, "/v1/admin/freeze", body).await;
    expect_problem(freeze(&ws_admin, json!({"reason": "x"})).await, 403, "forbidden_workspace").await;
    expect_problem(freeze(&publisher, json!({"reason": "x"})).await, 403, "insufficient_role").await;
    expect_problem(freeze(&admin, json!({"reason": ""})).await, 400, "invalid_request").await;
    expect_problem(freeze(&admin, json!({})).await, 400, "invalid_request").await;

    let resp = freeze(&admin, json!({"reason": "INC-42: stolen publisher token"})).await;
    assert_eq!(resp.status(), 200);
    let state: Value = resp.json().await.unwrap();
    frozen_at.store(true, std::sync::atomic::Ordering::SeqCst);
    assert_eq!((&state["frozen"], &state["changed"]), (&json!(true), &json!(true)), "{state}");
    assert_eq!(state["reason"], "INC-42: stolen publisher token");
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;

    // Every function's changes are refused; reads and health keep working.
    let v = "/v1/workspaces/team-a/bundles/model/versions/1";
    expect_problem(post_json(&env, &approver, &format!("{v}/approve"), json!({})).await, 503, "registry_frozen").await;
    let issue = json!({"user": "x", "role": "viewer", "workspace_id": "team-a"});
    expect_problem(post_json(&env, &admin, "/v1/tokens", issue).await, 503, "registry_frozen").await;
    expect_problem(post_json(&env, &publisher, "/v1/tokens/rotate", json!({})).await, 503, "registry_frozen").await;
    let plan = json!({"digest": kept_digest.to_string(), "size": 64});
    expect_problem(post_json(&env, &publisher, "/v1/workspaces/team-a/uploads", plan).await, 503, "registry_frozen")
        .await;
    let got = get_blob(&env, &publisher, "team-a", &kept_digest.to_string(), "").await;
    assert_eq!(got.bytes().await.unwrap().to_vec(), kept, "reads go on");
    // The upload signed before the freeze: nothing it stages can be linked, and the local stand-in for
    // S3 refuses the bytes themselves.
    let uploaded = super::api::upload_to(&env, &upload_plan, staged, true).await;
    if b == Backend::Embedded {
        expect_problem(uploaded, 503, "registry_frozen").await;
    }
    let complete = format!("/v1/workspaces/team-a/uploads/{staged_digest}/complete");
    let body = json!({"upload_id": upload_plan["upload_id"]});
    expect_problem(post_json(&env, &publisher, &complete, body).await, 503, "registry_frozen").await;
    // Revoking only takes access away: it passes the freeze.
    let revoked = post_json(&env, &admin, &format!("/v1/tokens/{doomed_id}/revoke"), json!({})).await;
    assert_eq!(revoked.status(), 200);
    expect_problem(put_blob(&env, &doomed, "team-a", &kept_digest.to_string(), vec![]).await, 401, "token_revoked")
        .await;
    // A reason that would display as something else is refused.
    expect_problem(freeze(&admin, json!({"reason": "ok\u{202e}evil"})).await, 400, "invalid_request").await;
    assert_eq!(env.http.get(env.url("/healthz")).send().await.unwrap().status(), 200);
    assert_eq!(env.http.get(env.url("/readyz")).send().await.unwrap().status(), 200);
    let status: Value = get(&env, &publisher, "/v1/status").await.json().await.unwrap();
    assert_eq!(
        (&status["frozen"], &status["freeze"]["reason"]),
        (&json!(true), &json!("INC-42: stolen publisher token"))
    );
    let metrics = metrics_text(&env).await;
    assert!(metrics.contains("\nhelix_frozen 1\n"), "{metrics}");
    // Freezing again changes nothing.
    let again: Value = freeze(&admin, json!({"reason": "again"})).await.json().await.unwrap();
    assert_eq!(
        (&again["frozen"], &again["changed"], &again["reason"]),
        (&json!(true), &json!(false), &json!("INC-42: stolen publisher token"))
    );

    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let seen = loop_task.await.unwrap();
    assert!(seen.iter().any(|(after, s, _)| !after && *s == 201), "the loop published before the freeze: {seen:?}");
    let after: Vec<_> = seen.iter().filter(|(after, _, _)| *after).collect();
    assert!(!after.is_empty(), "the loop ran during the freeze");
    assert!(after.iter().all(|(_, s, r)| *s == 503 && r == "registry_frozen"), "{after:?}");

    // Unfreeze: changes work again; both switches are in the global stream.
    let resp = post_json(&env, &admin, "/v1/admin/unfreeze", json!({"reason": "INC-42 closed"})).await;
    assert_eq!(resp.status(), 200);
    let (bytes, d) = unique_blob(16);
    assert_eq!(put_blob(&env, &publisher, "team-a", &d.to_string(), bytes).await.status(), 201);
    let global = env.audit("*").await;
    let switches: Vec<(&str, &Value)> = global
        .iter()
        .filter(|e| e.action.starts_with("registry.") && e.outcome == helix_core::domain::Outcome::Success)
        .map(|e| (e.action.as_str(), &e.details["reason"]))
        .collect();
    assert_eq!(
        switches,
        [("registry.freeze", &json!("INC-42: stolen publisher token")), ("registry.unfreeze", &json!("INC-42 closed"))]
    );
    let metrics = metrics_text(&env).await;
    assert!(metrics.contains("\nhelix_frozen 0\n"));
}
