//! The token lifecycle over HTTP: issue, list, whoami, rotate, revoke; and workspace-admin scope.

use helix_core::domain::Role;
use serde_json::{Value, json};

use super::expect_problem;
use crate::{Backend, TestEnv};

async fn call(env: &TestEnv, method: &str, path: &str, token: &str, body: Option<Value>) -> reqwest::Response {
    let mut req =
        env.http.request(method.parse().unwrap(), env.url(path)).header("authorization", format!("Bearer {token}"));
    if let Some(b) = body {
        req = req.json(&b);
    }
    req.send().await.unwrap()
}

pub async fn token_lifecycle_issue_rotate_revoke_over_http(b: Backend) {
    let env = TestEnv::start(b).await;
    let admin = env.token(Role::Admin, "*").await;
    let grant =
        json!({"user": "ada", "role": "publisher", "workspace_id": "team-a", "ttl_seconds": 3600, "description": "ci"});
    let resp = call(&env, "POST", "/v1/tokens", &admin, Some(grant)).await;
    assert_eq!(resp.status(), 201);
    assert_eq!(resp.headers()["cache-control"], "no-store");
    let issued: Value = resp.json().await.unwrap();
    let secret = issued["token"].as_str().unwrap().to_owned();
    let id = issued["id"].as_str().unwrap().to_owned();
    assert!(
        secret.starts_with("hlx_") && issued["expires_at"].as_i64().unwrap() > issued["created_at"].as_i64().unwrap()
    );

    let listed = call(&env, "GET", "/v1/tokens", &admin, None).await.text().await.unwrap();
    assert!(listed.contains(&id) && !listed.contains(&secret), "listed without secrets");
    let me: Value = call(&env, "GET", "/v1/whoami", &secret, None).await.json().await.unwrap();
    assert_eq!(
        (me["user"].as_str(), me["role"].as_str(), me["workspace_id"].as_str()),
        (Some("ada"), Some("publisher"), Some("team-a"))
    );

    let rotated: Value = call(&env, "POST", "/v1/tokens/rotate", &secret, None).await.json().await.unwrap();
    let new_secret = rotated["token"].as_str().unwrap().to_owned();
    assert_ne!(new_secret, secret);
    assert_eq!(rotated["expires_at"], issued["expires_at"], "rotation keeps the expiry");
    expect_problem(call(&env, "GET", "/v1/whoami", &secret, None).await, 401, "token_revoked").await;
    let new_id = rotated["id"].as_str().unwrap().to_owned();
    assert_eq!(call(&env, "GET", "/v1/whoami", &new_secret, None).await.status(), 200);

    let revoke = format!("/v1/tokens/{new_id}/revoke");
    let first: Value = call(&env, "POST", &revoke, &admin, None).await.json().await.unwrap();
    assert_eq!(first["changed"], true);
    let again: Value = call(&env, "POST", &revoke, &admin, None).await.json().await.unwrap();
    assert_eq!(again["changed"], false, "revoking twice writes nothing");
    expect_problem(call(&env, "GET", "/v1/whoami", &new_secret, None).await, 401, "token_revoked").await;
    expect_problem(
        call(&env, "POST", "/v1/tokens/tok_0000000000000000/revoke", &admin, None).await,
        404,
        "token_not_found",
    )
    .await;
    expect_problem(call(&env, "POST", "/v1/tokens/nope/revoke", &admin, None).await, 400, "invalid_request").await;

    let events = env.audit("team-a").await;
    let actions: Vec<&str> = events.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(actions, ["token.issue", "token.rotate", "token.revoke"]);
    for e in &events {
        let line = e.canonical().unwrap();
        assert!(!line.contains(&secret) && !line.contains(&new_secret), "no secret in the audit trail");
    }
    helix_core::domain::audit::verify_chain(&events).unwrap();
}

pub async fn workspace_admin_manages_only_its_own_workspace_tokens(b: Backend) {
    let env = TestEnv::start(b).await;
    let ws_admin = env.token(Role::Admin, "team-a").await;
    let global = env.token(Role::Admin, "*").await;
    let other = call(
        &env,
        "POST",
        "/v1/tokens",
        &global,
        Some(json!({"user": "bo", "role": "viewer", "workspace_id": "team-b"})),
    )
    .await;
    let other_id = other.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned();

    for ws in ["team-b", "*"] {
        let body = json!({"user": "x", "role": "viewer", "workspace_id": ws});
        expect_problem(call(&env, "POST", "/v1/tokens", &ws_admin, Some(body)).await, 403, "forbidden_workspace").await;
    }
    let ok = call(
        &env,
        "POST",
        "/v1/tokens",
        &ws_admin,
        Some(json!({"user": "x", "role": "approver", "workspace_id": "team-a"})),
    )
    .await;
    assert_eq!(ok.status(), 201);
    let listed: Value = call(&env, "GET", "/v1/tokens", &ws_admin, None).await.json().await.unwrap();
    assert!(listed["tokens"].as_array().unwrap().iter().all(|t| t["workspace_id"] == "team-a"), "{listed}");
    let revoke = format!("/v1/tokens/{other_id}/revoke");
    expect_problem(call(&env, "POST", &revoke, &ws_admin, None).await, 404, "token_not_found").await;
    let publisher = env.token(Role::Publisher, "team-a").await;
    expect_problem(call(&env, "GET", "/v1/tokens", &publisher, None).await, 403, "insufficient_role").await;
    for bad in [
        json!({"user": "x", "role": "root", "workspace_id": "team-a"}),
        json!({"user": "x", "role": "viewer", "workspace_id": "Team A"}),
        json!({"user": "", "role": "viewer", "workspace_id": "team-a"}),
        json!({"user": "x", "role": "viewer", "workspace_id": "team-a", "ttl_seconds": -5}),
        json!({"user": "x", "role": "viewer", "workspace_id": "team-a", "secret": "mine"}),
    ] {
        let (status, _) = super::problem(call(&env, "POST", "/v1/tokens", &global, Some(bad)).await).await;
        assert_eq!(status, 400);
    }
}

pub async fn revocation_by_sha256_takes_effect_on_the_next_request(b: Backend) {
    let env = TestEnv::start(b).await;
    let token = env.token(Role::Viewer, "team-a").await;
    assert_eq!(call(&env, "GET", "/v1/whoami", &token, None).await.status(), 200);
    let sha = helix_core::domain::BearerToken::parse(&token).unwrap().sha256();
    let target = helix_core::tokens::TokenRef::Sha256(sha.to_uppercase());
    let revoked =
        helix_core::tokens::revoke(env.app.meta.as_ref(), target, None, "cli:oncall", "incident").await.unwrap();
    assert!(revoked.changed && revoked.token.disabled && revoked.successors.is_empty());
    expect_problem(call(&env, "GET", "/v1/whoami", &token, None).await, 401, "token_revoked").await;
    let revoke_event = env.audit("team-a").await.into_iter().find(|e| e.action == "token.revoke").expect("audited");
    assert_eq!(revoke_event.actor, "cli:oncall");
}

/// A stolen token that rotates itself does not escape revocation: revoking it revokes every token it
/// was rotated into, and says which.
pub async fn revoking_a_rotated_token_revokes_what_it_was_rotated_into(b: Backend) {
    let env = TestEnv::start(b).await;
    let admin = env.token(Role::Admin, "*").await;
    let stolen = env.token(Role::Publisher, "team-a").await;
    let call = |method: reqwest::Method, path: &str, token: &str| {
        env.http.request(method, env.url(path)).header("authorization", format!("Bearer {token}"))
    };
    let whoami: Value = call(reqwest::Method::GET, "/v1/whoami", &stolen).send().await.unwrap().json().await.unwrap();
    let stolen_id = whoami["credential_id"].as_str().unwrap().to_owned();
    let first: Value =
        call(reqwest::Method::POST, "/v1/tokens/rotate", &stolen).send().await.unwrap().json().await.unwrap();
    let second: Value = call(reqwest::Method::POST, "/v1/tokens/rotate", first["token"].as_str().unwrap())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let live = second["token"].as_str().unwrap().to_owned();
    assert_eq!(call(reqwest::Method::GET, "/v1/whoami", &live).send().await.unwrap().status(), 200);

    let revoked = call(reqwest::Method::POST, &format!("/v1/tokens/{stolen_id}/revoke"), &admin).send().await.unwrap();
    assert_eq!(revoked.status(), 200);
    let body: Value = revoked.json().await.unwrap();
    assert_eq!(body["changed"], false, "the stolen token itself was already disabled by its rotation");
    assert_eq!(body["also_revoked"], json!([first["id"], second["id"]]), "{body}");
    expect_problem(call(reqwest::Method::GET, "/v1/whoami", &live).send().await.unwrap(), 401, "token_revoked").await;
}
