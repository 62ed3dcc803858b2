//! Containing one tenant (SPEC §2): an admin of every workspace suspends one workspace; from the next
//! request every request scoped to it, reads included, answers 403 `workspace_suspended` while other
//! workspaces go on; both switches are audited in the workspace's stream; status and metrics show it.
//! And "everything this user did": an admin of every workspace searches the audit trail by actor alone.

use helix_core::domain::Role;
use serde_json::{Value, json};

use super::api::{complete, get, get_blob, metrics_text, plan, post_json, put_blob, upload_to};
use super::bundles::one_file_bundle;
use super::{expect_problem, unique_blob};
use crate::{Backend, TestEnv};

const SUSPENDED: &str = "workspace_suspended";

pub async fn a_suspended_workspace_refuses_every_request_and_other_workspaces_go_on(b: Backend) {
    let env = TestEnv::start(b).await;
    let admin = env.token(Role::Admin, "*").await;
    let publisher = env.token(Role::Publisher, "team-a").await;
    let viewer = env.token(Role::Viewer, "team-a").await;
    let other = env.token(Role::Publisher, "team-b").await;
    let (kept, d) = unique_blob(64);
    let digest = d.to_string();
    for (token, ws) in [(&publisher, "team-a"), (&other, "team-b")] {
        assert_eq!(put_blob(&env, token, ws, &digest, kept.clone()).await.status(), 201);
    }
    one_file_bundle(&env, &publisher, "team-a", "1").await;
    // An upload planned before the suspension.
    let (staged, staged_digest) = unique_blob(5000);
    let (status, upload_plan) = plan(&env, &publisher, "team-a", &staged_digest.to_string(), 5000, json!({})).await;
    assert_eq!(status, 200, "{upload_plan}");

    // Who may suspend: an admin of every workspace, with a reason.
    let suspend = async |token: &str, ws: &str, body: Value| {
        post_json(&env, token, &format!("/v1/admin/workspaces/{ws}/suspend"), body).await
    };
    let ws_admin = env.token(Role::Admin, "team-b").await;
    let own_admin = env.token(Role::Admin, "team-a").await;
    expect_problem(suspend(&ws_admin, "team-a", json!({"reason": "x"})).await, 403, "forbidden_workspace").await;
    expect_problem(suspend(&own_admin, "team-a", json!({"reason": "x"})).await, 403, "forbidden_workspace").await;
    let star_publisher = env.token(Role::Publisher, "*").await;
    expect_problem(suspend(&star_publisher, "team-a", json!({"reason": "x"})).await, 403, "insufficient_role").await;
    expect_problem(suspend(&admin, "team-a", json!({"reason": ""})).await, 400, "invalid_request").await;
    expect_problem(suspend(&admin, "team-a", json!({})).await, 400, "invalid_request").await;
    expect_problem(suspend(&admin, "Team_A", json!({"reason": "x"})).await, 400, "invalid_workspace").await;
    assert!(env.audit("team-a").await.iter().all(|e| !e.action.starts_with("workspace.")), "refusals change nothing");

    let resp = suspend(&admin, "team-a", json!({"reason": "INC-7: team-a credentials leaked"})).await;
    assert_eq!(resp.status(), 200);
    let state: Value = resp.json().await.unwrap();
    assert_eq!(
        (&state["workspace_id"], &state["suspended"], &state["changed"], &state["reason"]),
        (&json!("team-a"), &json!(true), &json!(true), &json!("INC-7: team-a credentials leaked")),
        "{state}"
    );

    // Reads and writes of team-a, whoever asks, and whatever route its own credentials take.
    let body = expect_problem(put_blob(&env, &publisher, "team-a", &digest, kept.clone()).await, 403, SUSPENDED).await;
    assert!(body["detail"].as_str().unwrap().contains("INC-7"), "{body}");
    assert_eq!(body["workspace"], "team-a");
    expect_problem(get_blob(&env, &publisher, "team-a", &digest, "").await, 403, SUSPENDED).await;
    expect_problem(get_blob(&env, &viewer, "team-a", &digest, "").await, 403, SUSPENDED).await;
    expect_problem(get_blob(&env, &admin, "team-a", &digest, "").await, 403, SUSPENDED).await;
    let head = env
        .http
        .head(env.url(&format!("/v1/workspaces/team-a/blobs/{digest}")))
        .header("authorization", format!("Bearer {viewer}"))
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), 403);
    expect_problem(get(&env, &viewer, "/v1/workspaces/team-a/bundles").await, 403, SUSPENDED).await;
    expect_problem(get(&env, &viewer, "/v1/workspaces/team-a/bundles/model/versions/1").await, 403, SUSPENDED).await;
    expect_problem(get(&env, &viewer, "/v1/whoami").await, 403, SUSPENDED).await;
    expect_problem(get(&env, &viewer, "/v1/status").await, 403, SUSPENDED).await;
    expect_problem(post_json(&env, &publisher, "/v1/tokens/rotate", json!({})).await, 403, SUSPENDED).await;
    expect_problem(get(&env, &own_admin, "/v1/audit?workspace=team-a").await, 403, SUSPENDED).await;
    // The lifting switch is not the tenant's own to pull.
    let unsuspend = async |token: &str| {
        post_json(&env, token, "/v1/admin/workspaces/team-a/unsuspend", json!({"reason": "x"})).await
    };
    expect_problem(unsuspend(&own_admin).await, 403, SUSPENDED).await;
    // The upload planned before: the local stand-in for S3 refuses the bytes, and nothing can be linked.
    let uploaded = upload_to(&env, &upload_plan, staged, true).await;
    if b == Backend::Embedded {
        expect_problem(uploaded, 403, SUSPENDED).await;
    }
    expect_problem(
        complete(&env, &publisher, "team-a", &staged_digest.to_string(), &upload_plan).await,
        403,
        SUSPENDED,
    )
    .await;
    // A credential outside the workspace learns nothing of the switch.
    expect_problem(get_blob(&env, &other, "team-a", &digest, "").await, 403, "forbidden_workspace").await;

    // Other workspaces go on.
    let got = get_blob(&env, &other, "team-b", &digest, "").await;
    assert_eq!(got.bytes().await.unwrap().to_vec(), kept);
    let (more, d2) = unique_blob(48);
    assert_eq!(put_blob(&env, &other, "team-b", &d2.to_string(), more).await.status(), 201);

    // The operator sees it; a tenant does not see the list.
    let status: Value = get(&env, &admin, "/v1/status").await.json().await.unwrap();
    let listed = status["suspended_workspaces"].as_array().unwrap();
    assert_eq!(listed.len(), 1, "{status}");
    assert_eq!(
        (&listed[0]["workspace_id"], &listed[0]["reason"]),
        (&json!("team-a"), &json!("INC-7: team-a credentials leaked"))
    );
    let tenant: Value = get(&env, &other, "/v1/status").await.json().await.unwrap();
    assert!(tenant["suspended_workspaces"].is_null(), "{tenant}");
    let metrics = metrics_text(&env).await;
    assert!(metrics.contains("\nhelix_workspaces_suspended 1\n"), "{metrics}");

    // Suspending again changes nothing.
    let again: Value = suspend(&admin, "team-a", json!({"reason": "again"})).await.json().await.unwrap();
    assert_eq!((&again["changed"], &again["reason"]), (&json!(false), &json!("INC-7: team-a credentials leaked")));

    // Unsuspend: team-a works again; both switches are in its stream, with who and why.
    let resp = unsuspend(&admin).await;
    assert_eq!(resp.status(), 200);
    let state: Value = resp.json().await.unwrap();
    assert_eq!((&state["suspended"], &state["changed"]), (&json!(false), &json!(true)), "{state}");
    let got = get_blob(&env, &viewer, "team-a", &digest, "").await;
    assert_eq!(got.bytes().await.unwrap().to_vec(), kept);
    let (bytes, d3) = unique_blob(16);
    assert_eq!(put_blob(&env, &publisher, "team-a", &d3.to_string(), bytes).await.status(), 201);
    let admin_credential = format!("@{}", env.token_id(&admin).await);
    let switches: Vec<(String, String, Value)> = env
        .audit("team-a")
        .await
        .into_iter()
        .filter(|e| e.action.starts_with("workspace."))
        .map(|e| (e.action, e.actor, e.details["reason"].clone()))
        .collect();
    assert_eq!(switches.len(), 2, "{switches:?}");
    assert_eq!(
        (switches[0].0.as_str(), &switches[0].2, switches[1].0.as_str()),
        ("workspace.suspend", &json!("INC-7: team-a credentials leaked"), "workspace.unsuspend")
    );
    assert!(switches.iter().all(|(_, actor, _)| actor.ends_with(&admin_credential)), "{switches:?}");
    let unsuspend_again: Value = unsuspend(&admin).await.json().await.unwrap();
    assert_eq!(unsuspend_again["changed"], json!(false));
    let metrics = metrics_text(&env).await;
    assert!(metrics.contains("\nhelix_workspaces_suspended 0\n"), "{metrics}");
    let status: Value = get(&env, &admin, "/v1/status").await.json().await.unwrap();
    assert_eq!(status["suspended_workspaces"], json!([]));
}

async fn search_as(env: &TestEnv, token: &str, query: &str) -> Value {
    get(env, token, &format!("/v1/audit?{query}")).await.json().await.unwrap()
}

/// Everything one actor did, across workspaces, in time order and page by page: an admin of every
/// workspace asks by actor alone; anyone else is refused.
pub async fn an_admin_of_every_workspace_searches_the_audit_trail_by_actor_alone(b: Backend) {
    let env = TestEnv::start(b).await;
    let admin = env.token(Role::Admin, "*").await;
    let mallory = env.token_of("mallory", Role::Publisher, "*").await;
    let bystander = env.token_of("ada", Role::Publisher, "team-b").await;
    let mut mine = Vec::new();
    for ws in ["team-a", "team-b", "team-c"] {
        let (bytes, d) = unique_blob(32);
        assert_eq!(put_blob(&env, &mallory, ws, &d.to_string(), bytes).await.status(), 201);
        mine.push((ws.to_owned(), d.to_string()));
        let (bytes, d) = unique_blob(32);
        assert_eq!(put_blob(&env, &bystander, "team-b", &d.to_string(), bytes).await.status(), 201);
    }
    // A user whose name begins with mallory's: never in mallory's answers (the actor is matched
    // whole, on every search shape: by actor alone, within a workspace, within an action).
    let namesake = env.token_of("mallory-ann", Role::Publisher, "*").await;
    for ws in ["team-a", "team-b"] {
        let (bytes, d) = unique_blob(32);
        assert_eq!(put_blob(&env, &namesake, ws, &d.to_string(), bytes).await.status(), 201);
    }
    let actor = format!("mallory@{}", env.token_id(&mallory).await);
    for query in
        ["actor=mallory", "actor=mallory&workspace=team-a", "actor=mallory&action=blob.link", "actor=mallory%40"]
    {
        let page: Value = search_as(&env, &admin, query).await;
        assert_eq!(page["events"], json!([]), "{query}: a prefix of an actor matches nothing");
    }
    let search = async |token: &str, query: String| get(&env, token, &format!("/v1/audit?{query}")).await;
    for query in [format!("actor={actor}&workspace=team-a"), format!("actor={actor}&action=blob.link&workspace=team-a")]
    {
        let page: Value = search(&admin, query.clone()).await.json().await.unwrap();
        let actors: Vec<&Value> = page["events"].as_array().unwrap().iter().map(|e| &e["actor"]).collect();
        assert_eq!(actors, vec![&json!(actor)], "{query}: {page}");
    }

    let page: Value = search(&admin, format!("actor={actor}")).await.json().await.unwrap();
    let found: Vec<(String, String)> = page["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["stream"].as_str().unwrap().to_owned(), e["entity_id"].as_str().unwrap().to_owned()))
        .collect();
    assert_eq!(found, mine, "{page}");
    assert!(page["events"].as_array().unwrap().iter().all(|e| e["actor"] == json!(actor)));

    // Page by page, with time bounds too.
    let first: Value = search(&admin, format!("actor={actor}&limit=2")).await.json().await.unwrap();
    assert_eq!(first["events"].as_array().unwrap().len(), 2);
    let cursor = first["next_cursor"].as_str().expect("a next page").to_owned();
    let rest: Value = search(&admin, format!("actor={actor}&limit=2&cursor={cursor}")).await.json().await.unwrap();
    assert_eq!(rest["events"][0]["entity_id"], json!(mine[2].1));
    assert_eq!(rest["events"].as_array().unwrap().len(), 1);
    let empty: Value = search(&admin, format!("actor={actor}&until=2000-01-01")).await.json().await.unwrap();
    assert_eq!(empty["events"], json!([]));
    let nobody: Value = search(&admin, "actor=nobody@tok_0000000000000000".into()).await.json().await.unwrap();
    assert_eq!(nobody["events"], json!([]));

    // Only an admin of every workspace may ask across workspaces.
    let approver = env.token(Role::Approver, "team-a").await;
    let ws_admin = env.token(Role::Admin, "team-a").await;
    let star_approver = env.token(Role::Approver, "*").await;
    expect_problem(search(&approver, format!("actor={actor}")).await, 403, "insufficient_role").await;
    expect_problem(search(&star_approver, format!("actor={actor}")).await, 403, "insufficient_role").await;
    expect_problem(search(&ws_admin, format!("actor={actor}")).await, 403, "forbidden_workspace").await;
    // Within its own workspace an approver may still filter by actor.
    let own: Value = search(&approver, format!("workspace=team-a&actor={actor}")).await.json().await.unwrap();
    assert_eq!(own["events"].as_array().unwrap().len(), 1, "{own}");
    expect_problem(search(&admin, "actor=bad%0Aactor".into()).await, 400, "invalid_request").await;
}
