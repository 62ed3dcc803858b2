//! Who read what (docs/decisions.md, "Read auditing"): every read by a principal is an audit event in
//! the stream of the workspace read, with the actor, the request id and the outcome; a refusal too;
//! nothing lands in another workspace's stream; a redelivered batch of read records is appended once.

use std::time::Duration;

use helix_cli::client::Registry;
use helix_cli::transfer::{self, Options};
use helix_core::domain::{BundleName, Role, WorkspaceId};
use helix_core::read_ingest;
use helix_core::reads::{BLOB_READ, ReadRecord};
use serde_json::{Value, json};

use super::api::{get, post_json, put_blob};
use super::unique_blob;
use crate::{Backend, TestEnv};

/// Every event of `action` in `ws`, as an admin of every workspace searches them.
pub async fn read_events(env: &TestEnv, admin: &str, ws: &str, action: &str) -> Vec<Value> {
    assert!(env.app.reads.flush(Duration::from_secs(30)).await, "read records still queued after 30 s");
    let resp = get(env, admin, &format!("/v1/audit?workspace={ws}&action={action}&limit=1000")).await;
    assert_eq!(resp.status(), 200);
    let page: Value = resp.json().await.unwrap();
    page["events"].as_array().unwrap().clone()
}

fn by_request<'a>(events: &'a [Value], request_id: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["request_id"] == request_id).collect()
}

fn request_id(resp: &reqwest::Response) -> String {
    resp.headers()["x-request-id"].to_str().unwrap().to_owned()
}

async fn send(env: &TestEnv, method: reqwest::Method, token: &str, path: &str) -> (u16, String) {
    let resp = env.http.request(method, env.url(path)).bearer_auth(token).send().await.unwrap();
    (resp.status().as_u16(), request_id(&resp))
}

pub async fn every_read_by_a_principal_is_audited_with_actor_request_id_and_outcome(b: Backend) {
    let env = TestEnv::start_with(b, &[("HELIX_GOVERNANCE_MODE", "off"), ("HELIX_INLINE_MAX", "1024")]).await;
    let publisher = env.token_of("pat", Role::Publisher, "team-a").await;
    let reader = env.token_of("rita", Role::Viewer, "team-a").await;
    let outsider = env.token_of("oscar", Role::Viewer, "team-b").await;
    let admin = env.token(Role::Admin, "*").await;
    let (bytes, digest) = unique_blob(300);
    assert_eq!(put_blob(&env, &publisher, "team-a", &digest.to_string(), bytes).await.status(), 201);
    let files = json!([{"path": "a.txt", "digest": digest, "size": 300}]);
    let manifest = json!({"schema": "helix.bundle.v1", "name": "model", "version": "1", "files": files});
    let version = "/v1/workspaces/team-a/bundles/model/versions/1";
    let put = env.http.put(env.url(version)).bearer_auth(&publisher).json(&manifest).send().await.unwrap();
    assert_eq!(put.status(), 201);
    let blob = format!("/v1/workspaces/team-a/blobs/{digest}");

    let (s, get_id) = send(&env, reqwest::Method::GET, &reader, &blob).await;
    assert_eq!(s, 200);
    let (s, head_id) = send(&env, reqwest::Method::HEAD, &reader, &blob).await;
    assert_eq!(s, 200);
    let (s, version_id) = send(&env, reqwest::Method::GET, &reader, version).await;
    assert_eq!(s, 200);
    let (missing, missing_d) = unique_blob(10);
    drop(missing);
    let (s, missing_id) =
        send(&env, reqwest::Method::GET, &reader, &format!("/v1/workspaces/team-a/blobs/{missing_d}")).await;
    assert_eq!(s, 404);
    let (s, denied_id) = send(&env, reqwest::Method::GET, &outsider, &blob).await;
    assert_eq!(s, 403);
    // No credential at all names no one: not a read by a principal (the request log has it).
    let anonymous = env.http.get(env.url(&blob)).send().await.unwrap();
    assert_eq!(anonymous.status(), 401);
    let anonymous_id = request_id(&anonymous);

    // A pull: the version and each file, marked `via: pull`.
    let registry = Registry::new(&env.server.url(), Some(reader.clone())).unwrap();
    let (ws, name, v) =
        (WorkspaceId::parse("team-a").unwrap(), BundleName::parse("model").unwrap(), BundleName::parse("1").unwrap());
    let out = env.dir.path().join("pulled");
    transfer::pull(&registry, &ws, &name, &v, &out, Options { jobs: 1, quiet: true, inline_max: None })
        .await
        .expect("pull");

    // An export's proof URL, fetched without a token.
    let done = post_json(&env, &publisher, &format!("{version}/export"), json!({})).await;
    assert_eq!(done.status(), 200);
    let done: Value = done.json().await.unwrap();
    let proof_url = done["proof"]["files"][0]["url"].as_str().unwrap().to_owned();
    let proof = env.http.get(&proof_url).send().await.unwrap();
    assert_eq!(proof.status(), 200);
    let proof_id = request_id(&proof);
    // A forged proof URL names no one either.
    let forged = env.http.get(proof_url.replace("sig=", "sig=AAAA")).send().await.unwrap();
    assert_eq!(forged.status(), 403);
    let forged_id = request_id(&forged);

    let blob_reads = read_events(&env, &admin, "team-a", BLOB_READ).await;
    let bundle_reads = read_events(&env, &admin, "team-a", "bundle.read").await;
    let one = |events: &[Value], id: &str| -> Value {
        let found = by_request(events, id);
        assert_eq!(found.len(), 1, "request {id}: {events:#?}");
        found[0].clone()
    };
    let e = one(&blob_reads, &get_id);
    assert_eq!(
        (e["actor"].as_str().unwrap().split('@').next(), e["outcome"].as_str()),
        (Some("rita"), Some("success"))
    );
    assert_eq!((e["entity_id"].as_str(), e["details"]["method"].as_str()), (Some(&*digest.to_string()), Some("GET")));
    assert_eq!(e["details"]["status"], 200);
    assert_eq!(one(&blob_reads, &head_id)["details"]["method"], "HEAD");
    let e = one(&bundle_reads, &version_id);
    assert_eq!((e["entity_id"].as_str(), e["outcome"].as_str()), (Some("team-a/model@1"), Some("success")));
    let e = one(&blob_reads, &missing_id);
    assert_eq!((e["outcome"].as_str(), e["details"]["reason"].as_str()), (Some("failed"), Some("blob_missing")));
    let e = one(&blob_reads, &denied_id);
    assert_eq!(e["actor"].as_str().unwrap().split('@').next(), Some("oscar"));
    assert_eq!((e["outcome"].as_str(), e["details"]["reason"].as_str()), (Some("denied"), Some("forbidden_workspace")));
    assert!(by_request(&blob_reads, &anonymous_id).is_empty() && by_request(&blob_reads, &forged_id).is_empty());
    let pulled: Vec<&Value> =
        blob_reads.iter().chain(&bundle_reads).filter(|e| e["details"]["via"] == "pull").collect();
    assert_eq!(pulled.len(), 2, "the version and its one file: {pulled:#?}");
    let e = one(&blob_reads, &proof_id);
    assert_eq!((e["actor"].as_str(), e["details"]["via"].as_str()), (Some("proof-url"), Some("proof_url")));
    assert!(e["details"]["manifest"].as_str().is_some_and(|m| m.starts_with("sha256:")), "{e}");

    // The outsider's refused read is team-a's record: nothing of it (or of team-a) is in team-b's stream.
    for action in [BLOB_READ, "bundle.read"] {
        assert!(read_events(&env, &admin, "team-b", action).await.is_empty());
    }
    let b_stream = get(&env, &admin, "/v1/audit?workspace=team-b&limit=1000").await.text().await.unwrap();
    assert!(!b_stream.contains(&denied_id) && !b_stream.contains("team-a"), "{b_stream}");
}

pub async fn reads_are_left_out_of_the_trail_when_read_auditing_is_off(b: Backend) {
    let env = TestEnv::start_with(b, &[("HELIX_AUDIT_READS", "off")]).await;
    let publisher = env.token(Role::Publisher, "team-a").await;
    let admin = env.token(Role::Admin, "*").await;
    let (bytes, digest) = unique_blob(50);
    assert_eq!(put_blob(&env, &publisher, "team-a", &digest.to_string(), bytes).await.status(), 201);
    let (s, _) = send(&env, reqwest::Method::GET, &publisher, &format!("/v1/workspaces/team-a/blobs/{digest}")).await;
    assert_eq!(s, 200);
    assert!(read_events(&env, &admin, "team-a", BLOB_READ).await.is_empty());
    assert!(super::api::metrics_text(&env).await.contains("helix_audit_reads 0"));
}

/// Read records as a function logs them, delivered twice (CloudWatch Logs delivers at least once):
/// appended once, each in its own workspace's stream; lines that are not read records are skipped.
pub async fn a_redelivered_batch_of_read_records_is_appended_once(b: Backend) {
    let env = TestEnv::start(b).await;
    let admin = env.token(Role::Admin, "*").await;
    let record = |ws: &str, id: &str| ReadRecord {
        workspace: ws.into(),
        action: BLOB_READ.into(),
        entity_type: "blob".into(),
        entity_id: format!("sha256:{}", "ab".repeat(32)),
        actor: "rita@tok_0123456789abcdef".into(),
        outcome: helix_core::domain::Outcome::Success,
        request_id: id.into(),
        details: json!({"method": "GET", "status": 200}),
    };
    let mut forged = record("team-a", "forged");
    forged.action = "token.issue".into();
    let lines = vec![
        ("3755".to_owned(), record("team-a", "req-a").log_line()),
        ("3756".to_owned(), r#"{"level":"INFO","fields":{"message":"request"}}"#.to_owned()),
        ("3757".to_owned(), record("team-b", "req-b").log_line()),
        ("3758".to_owned(), forged.log_line()),
    ];
    let event = read_ingest::subscription_event("/aws/lambda/helix-fetch", &lines);
    let first = read_ingest::ingest(&env.app, &event).await.unwrap();
    assert_eq!((first["appended"].as_u64(), first["skipped"].as_u64()), (Some(2), Some(2)), "{first}");
    let again = read_ingest::ingest(&env.app, &event).await.unwrap();
    assert_eq!((again["appended"].as_u64(), again["already_appended"].as_u64()), (Some(0), Some(2)), "{again}");
    let a = read_events(&env, &admin, "team-a", BLOB_READ).await;
    let b_events = read_events(&env, &admin, "team-b", BLOB_READ).await;
    assert_eq!((a.len(), b_events.len()), (1, 1), "{a:#?} {b_events:#?}");
    assert_eq!((a[0]["request_id"].as_str(), b_events[0]["request_id"].as_str()), (Some("req-a"), Some("req-b")));
    let garbage = json!({"awslogs": {"data": "bm90IGd6aXA="}});
    assert!(read_ingest::ingest(&env.app, &garbage).await.is_err(), "a body that is not gzip is refused");
}
