//! What the console reads (issue 18, item 2): the workspaces a credential covers with their counts,
//! each version's state in the listing (`?state=` filters), and the versions a caller may decide now
//! across its workspaces. A credential of one workspace never sees another's names or counts.

use helix_core::domain::Role;
use serde_json::{Value, json};

use super::api::{get, post_json};
use super::bundles::one_file_bundle;
use super::expect_problem;
use crate::{Backend, TestEnv};

const A: &str = "/v1/workspaces/team-a/bundles/model/versions";

async fn json_of(env: &TestEnv, token: &str, path: &str) -> Value {
    let resp = get(env, token, path).await;
    assert_eq!(resp.status(), 200, "{path}");
    resp.json().await.unwrap()
}

/// `name@version` → state of a listing page.
fn states(page: &Value) -> Vec<(String, String)> {
    page["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            (format!("{}@{}", v["name"].as_str().unwrap(), v["version"].as_str().unwrap()), v["state"].to_string())
        })
        .collect()
}

fn pending_names(page: &Value) -> Vec<String> {
    page["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            format!(
                "{}/{}@{}",
                v["workspace_id"].as_str().unwrap(),
                v["name"].as_str().unwrap(),
                v["version"].as_str().unwrap()
            )
        })
        .collect()
}

pub async fn workspaces_and_listed_states_stay_inside_the_grant(b: Backend) {
    let env = TestEnv::start(b).await;
    let ada = env.token_of("ada", Role::Publisher, "team-a").await;
    let bob = env.token_of("bob", Role::Publisher, "team-b").await;
    let grace = env.token_of("grace", Role::Approver, "team-a").await;
    let admin = env.token(Role::Admin, "*").await;
    for v in ["1", "2", "3"] {
        one_file_bundle(&env, &ada, "team-a", v).await;
    }
    one_file_bundle(&env, &bob, "team-b", "1").await;
    assert_eq!(post_json(&env, &grace, &format!("{A}/1/approve"), json!({})).await.status(), 201);
    assert_eq!(post_json(&env, &grace, &format!("{A}/2/reject"), json!({})).await.status(), 201);

    // One workspace's credential: that workspace, its counts, and nothing of team-b.
    let resp = get(&env, &ada, "/v1/workspaces").await;
    assert_eq!(resp.status(), 200);
    let text = resp.text().await.unwrap();
    assert!(!text.contains("team-b"), "another workspace's name never shows: {text}");
    let mine: Value = serde_json::from_str(&text).unwrap();
    let expected_a = json!({"workspace_id": "team-a", "blob_links": 6, "blob_bytes": mine["workspaces"][0]["blob_bytes"],
        "bundle_versions": 3, "states": {"submitted": 1, "approved": 1, "rejected": 1, "exported": 0},
        "suspended": false});
    assert_eq!(mine, json!({"workspaces": [expected_a.clone()], "next_cursor": null}));
    assert!(mine["workspaces"][0]["blob_bytes"].as_i64().unwrap() > 600, "3 files of 200 bytes and 3 manifests");
    let theirs = json_of(&env, &bob, "/v1/workspaces").await;
    assert_eq!(theirs["workspaces"][0]["bundle_versions"], 1, "team-b's counts are its own");
    assert_eq!(theirs["workspaces"][0]["states"]["submitted"], 1);
    assert!(!theirs.to_string().contains("team-a"));

    // Every workspace's admin: both, in order, a page at a time.
    let all = json_of(&env, &admin, "/v1/workspaces").await;
    let ids: Vec<&str> =
        all["workspaces"].as_array().unwrap().iter().map(|w| w["workspace_id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["team-a", "team-b"]);
    assert_eq!(all["workspaces"][0], expected_a);
    let first = json_of(&env, &admin, "/v1/workspaces?limit=1").await;
    assert_eq!(first["next_cursor"], "team-a");
    let second = json_of(&env, &admin, "/v1/workspaces?limit=1&cursor=team-a").await;
    assert_eq!(second["workspaces"][0]["workspace_id"], "team-b");
    expect_problem(get(&env, &admin, "/v1/workspaces?limit=0").await, 400, "invalid_request").await;
    expect_problem(get(&env, &admin, "/v1/workspaces?cursor=Bad%20ws").await, 400, "invalid_workspace").await;

    // The listing carries each version's state, and `?state=` filters.
    let listed = json_of(&env, &ada, "/v1/workspaces/team-a/bundles").await;
    let want = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
        pairs.iter().map(|(v, s)| (v.to_string(), format!("\"{s}\""))).collect()
    };
    assert_eq!(states(&listed), want(&[("model@1", "approved"), ("model@2", "rejected"), ("model@3", "submitted")]));
    assert_eq!(listed["versions"][2]["registered_user"], "ada");
    for (filter, expected) in [("submitted", "model@3"), ("approved", "model@1"), ("rejected", "model@2")] {
        let page = json_of(&env, &ada, &format!("/v1/workspaces/team-a/bundles?state={filter}")).await;
        assert_eq!(states(&page), want(&[(expected, filter)]), "?state={filter}");
    }
    let none = json_of(&env, &ada, "/v1/workspaces/team-a/bundles?state=exported").await;
    assert_eq!(none["versions"], json!([]));
    // A filtered page of one: the cursor goes on after the last version read.
    let page = json_of(&env, &ada, "/v1/workspaces/team-a/bundles?state=rejected&limit=1").await;
    assert_eq!((states(&page).len(), page["next_cursor"].as_str()), (1, Some("model@2")));
    let rest = json_of(&env, &ada, "/v1/workspaces/team-a/bundles?state=rejected&limit=1&cursor=model@2").await;
    assert_eq!(rest["versions"], json!([]));
    expect_problem(get(&env, &ada, "/v1/workspaces/team-a/bundles?state=bogus").await, 400, "invalid_request").await;
    expect_problem(get(&env, &bob, "/v1/workspaces/team-a/bundles?state=submitted").await, 403, "forbidden_workspace")
        .await;

    // The state moves with an export, and a suspended workspace says so to the admin of every workspace.
    let exported = post_json(&env, &ada, &format!("{A}/1/export"), json!({})).await;
    assert_eq!(exported.status(), 200, "{}", exported.text().await.unwrap());
    let suspend = post_json(&env, &admin, "/v1/admin/workspaces/team-b/suspend", json!({"reason": "incident"})).await;
    assert_eq!(suspend.status(), 200);
    let all = json_of(&env, &admin, "/v1/workspaces").await;
    assert_eq!(all["workspaces"][0]["states"], json!({"submitted": 1, "approved": 0, "rejected": 1, "exported": 1}));
    assert_eq!(
        (all["workspaces"][0]["suspended"].as_bool(), all["workspaces"][1]["suspended"].as_bool()),
        (Some(false), Some(true))
    );
    expect_problem(get(&env, &bob, "/v1/workspaces").await, 403, "workspace_suspended").await;
}

pub async fn pending_lists_what_each_caller_may_decide_now_across_its_workspaces(b: Backend) {
    let env = TestEnv::start(b).await;
    // ada registers (as an approver: she may publish too), so she may reject but never approve or waive.
    let ada = env.token_of("ada", Role::Approver, "team-a").await;
    let bob = env.token_of("bob", Role::Publisher, "team-b").await;
    let grace = env.token_of("grace", Role::Approver, "team-a").await;
    let sam = env.token_of("sam", Role::SafetyReviewer, "team-a").await;
    let other = env.token_of("olga", Role::Admin, "team-b").await;
    let admin = env.token_of("root", Role::Admin, "*").await;
    one_file_bundle(&env, &ada, "team-a", "1").await;
    one_file_bundle(&env, &ada, "team-a", "2").await;
    one_file_bundle(&env, &bob, "team-b", "1").await;

    let page = json_of(&env, &grace, "/v1/governance/pending").await;
    assert_eq!(pending_names(&page), ["team-a/model@1", "team-a/model@2"]);
    assert_eq!(page["versions"][0]["actions"], json!(["approve", "reject"]));
    assert_eq!(page["versions"][0]["refused"], json!([]));
    assert_eq!(page["versions"][0]["registered_user"], "ada");
    assert_eq!(page["versions"][0]["state"], "submitted");
    assert_eq!(page["frozen"], false);
    assert!(!page.to_string().contains("team-b"), "another workspace never shows");

    // The registrant: reject only; approving and waiving are refused, as the server would refuse them.
    let own = json_of(&env, &ada, "/v1/governance/pending").await;
    assert_eq!(own["versions"][0]["actions"], json!(["reject"]));
    assert_eq!(own["versions"][0]["refused"], json!([{"action": "approve", "reason": "self_approval"}]));
    expect_problem(post_json(&env, &ada, &format!("{A}/1/approve"), json!({})).await, 403, "self_approval").await;
    let reviewer = json_of(&env, &sam, "/v1/governance/pending").await;
    assert_eq!(reviewer["versions"][1]["actions"], json!(["approve", "reject", "waive"]));
    let theirs = json_of(&env, &other, "/v1/governance/pending").await;
    assert_eq!(pending_names(&theirs), ["team-b/model@1"]);

    // Below approver: refused.
    let viewer = env.token(Role::Viewer, "team-a").await;
    let publisher = env.token(Role::Publisher, "team-a").await;
    expect_problem(get(&env, &viewer, "/v1/governance/pending").await, 403, "insufficient_role").await;
    expect_problem(get(&env, &publisher, "/v1/governance/pending").await, 403, "insufficient_role").await;
    expect_problem(get(&env, &grace, "/v1/governance/pending?cursor=nope").await, 400, "invalid_request").await;

    // A decided version leaves the queue.
    assert_eq!(post_json(&env, &grace, &format!("{A}/1/approve"), json!({})).await.status(), 201);
    let page = json_of(&env, &grace, "/v1/governance/pending").await;
    assert_eq!(pending_names(&page), ["team-a/model@2"]);

    // Every workspace's admin sees every workspace's queue, a page at a time.
    let all = json_of(&env, &admin, "/v1/governance/pending").await;
    assert_eq!(pending_names(&all), ["team-a/model@2", "team-b/model@1"]);
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..10 {
        let q = cursor.as_ref().map_or("?limit=1".to_owned(), |c| format!("?limit=1&cursor={c}"));
        let page = json_of(&env, &admin, &format!("/v1/governance/pending{q}")).await;
        seen.extend(pending_names(&page));
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen, ["team-a/model@2", "team-b/model@1"], "paged");

    // A suspended workspace's versions cannot be decided: left out. A freeze is said at the top.
    let resp = post_json(&env, &admin, "/v1/admin/workspaces/team-b/suspend", json!({"reason": "incident"})).await;
    assert_eq!(resp.status(), 200);
    let all = json_of(&env, &admin, "/v1/governance/pending").await;
    assert_eq!(pending_names(&all), ["team-a/model@2"]);
    assert_eq!(post_json(&env, &admin, "/v1/admin/freeze", json!({"reason": "drill"})).await.status(), 200);
    let frozen = json_of(&env, &grace, "/v1/governance/pending").await;
    assert_eq!((frozen["frozen"].as_bool(), pending_names(&frozen).len()), (Some(true), 1));
}
