//! End-to-end flows over HTTP against the local server's router (the functions' own handlers).

use helix_core::domain::Role;
use helix_core::domain::audit::verify_chain;
use serde_json::{Value, json};

use super::{expect_problem, unique_blob};
use crate::{Backend, TestEnv};

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

pub async fn put_blob(env: &TestEnv, token: &str, ws: &str, digest: &str, bytes: Vec<u8>) -> reqwest::Response {
    env.http
        .put(env.url(&format!("/v1/workspaces/{ws}/blobs/{digest}")))
        .header("authorization", bearer(token))
        .body(bytes)
        .send()
        .await
        .unwrap()
}

pub async fn get_blob(env: &TestEnv, token: &str, ws: &str, digest: &str, query: &str) -> reqwest::Response {
    env.http
        .get(env.url(&format!("/v1/workspaces/{ws}/blobs/{digest}{query}")))
        .header("authorization", bearer(token))
        .send()
        .await
        .unwrap()
}

pub async fn post_json(env: &TestEnv, token: &str, path: &str, body: Value) -> reqwest::Response {
    env.http.post(env.url(path)).header("authorization", bearer(token)).json(&body).send().await.unwrap()
}

/// Upload `bytes` through the presigned request a plan carries.
pub async fn upload_to(env: &TestEnv, plan: &Value, bytes: Vec<u8>, keep_checksum: bool) -> reqwest::Response {
    let upload = &plan["upload"];
    let mut req = env.http.put(upload["url"].as_str().unwrap()).body(bytes);
    for pair in upload["headers"].as_array().unwrap() {
        let (k, v) = (pair[0].as_str().unwrap(), pair[1].as_str().unwrap());
        let skip = k.eq_ignore_ascii_case("content-length")
            || k.eq_ignore_ascii_case("host")
            || (!keep_checksum && k.starts_with("x-amz-checksum"));
        if !skip {
            req = req.header(k, v);
        }
    }
    req.send().await.unwrap()
}

pub async fn healthz_and_readyz_report_every_dependency(b: Backend) {
    let env = TestEnv::start(b).await;
    let live: Value = env.http.get(env.url("/healthz")).send().await.unwrap().json().await.unwrap();
    assert_eq!(live["status"], "ok");
    let resp = env.http.get(env.url("/readyz")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let ready: Value = resp.json().await.unwrap();
    assert_eq!(ready["ready"], true);
    let names: Vec<&str> =
        ready["dependencies"].as_array().unwrap().iter().map(|d| d["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["blob_store", "meta_store", "audit_log", "signer"]);
    assert!(ready["dependencies"].as_array().unwrap().iter().all(|d| d["ok"] == true && d["ms"].is_number()));
}

pub async fn status_needs_a_viewer_token_and_shows_no_secret(b: Backend) {
    let env = TestEnv::start(b).await;
    expect_problem(env.http.get(env.url("/v1/status")).send().await.unwrap(), 401, "token_missing").await;
    let token = env.token(Role::Viewer, "team-a").await;
    let resp = env.http.get(env.url("/v1/status")).header("authorization", bearer(&token)).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let text = resp.text().await.unwrap();
    let status: Value = serde_json::from_str(&text).unwrap();
    let expected_backend = if b == Backend::Embedded { "fs" } else { "s3" };
    assert_eq!(status["blob_backend"], expected_backend);
    assert_eq!(status["governance_mode"], "enforce");
    assert_eq!(status["strict_no_overwrite"], true);
    assert!(status["signer_key_id"].as_str().unwrap().starts_with("sha256:"));
    assert!(!text.contains(&token) && !text.contains("hlx_"), "{text}");
    if b == Backend::Embedded {
        let presign_secret =
            std::fs::read_to_string(env.data_dir().join(helix_core::app::PRESIGN_SECRET_FILE)).unwrap();
        assert!(!text.contains(presign_secret.trim()));
    }
}

pub async fn publish_then_fetch_round_trips_and_second_put_is_idempotent(b: Backend) {
    let env = TestEnv::start(b).await;
    let publisher = env.token(Role::Publisher, "team-a").await;
    let viewer = env.token(Role::Viewer, "team-a").await;
    let (bytes, d) = unique_blob(5000);
    let digest = d.to_string();

    let first = put_blob(&env, &publisher, "team-a", &digest, bytes.clone()).await;
    assert_eq!(first.status(), 201);
    let body: Value = first.json().await.unwrap();
    assert_eq!(body, json!({"digest": digest, "workspace_id": "team-a", "size": 5000, "created": true}));
    let second = put_blob(&env, &publisher, "team-a", &digest, bytes.clone()).await;
    assert_eq!(second.status(), 200);
    assert_eq!(second.json::<Value>().await.unwrap()["created"], false);

    let got = get_blob(&env, &viewer, "team-a", &digest, "").await;
    assert_eq!(got.status(), 200);
    assert_eq!(got.headers()["x-helix-digest"], digest.as_str());
    assert_eq!(got.bytes().await.unwrap().to_vec(), bytes);

    let head = env
        .http
        .head(env.url(&format!("/v1/workspaces/team-a/blobs/{digest}")))
        .header("authorization", bearer(&viewer))
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), 200);
    assert_eq!(head.headers()["content-length"], "5000");

    let redirect = get_blob(&env, &viewer, "team-a", &digest, "?redirect=1").await;
    assert_eq!(redirect.status(), 307);
    let location = redirect.headers()["location"].to_str().unwrap().to_owned();
    let followed = env.http.get(&location).send().await.unwrap();
    assert_eq!(followed.status(), 200);
    assert_eq!(followed.bytes().await.unwrap().to_vec(), bytes);

    // Content is global but visibility is per workspace: not linked in team-b.
    let admin = env.token(Role::Admin, "*").await;
    expect_problem(get_blob(&env, &admin, "team-b", &digest, "").await, 404, "blob_missing").await;

    let events = env.audit("team-a").await;
    let links: Vec<_> = events.iter().filter(|e| e.action == "blob.link").collect();
    assert_eq!(links.len(), 1, "one event for one link");
    assert_eq!(links[0].entity_id, digest);
    assert!(links[0].actor.starts_with("publisher-user@tok_"));
    verify_chain(&events).unwrap();
    assert_eq!(env.stored_objects().await, 1);
}

pub async fn large_blob_is_fetched_through_a_presigned_redirect(b: Backend) {
    let env = TestEnv::start_with(b, &[("HELIX_INLINE_MAX", "1024")]).await;
    let publisher = env.token(Role::Publisher, "team-a").await;
    let (bytes, d) = unique_blob(5000);
    let plan: Value =
        post_json(&env, &publisher, "/v1/workspaces/team-a/uploads", json!({"digest": d.to_string(), "size": 5000}))
            .await
            .json()
            .await
            .unwrap();
    assert!(upload_to(&env, &plan, bytes.clone(), true).await.status().is_success());
    let done = post_json(&env, &publisher, &format!("/v1/workspaces/team-a/uploads/{d}/complete"), json!({})).await;
    assert_eq!(done.status(), 201);
    let got = get_blob(&env, &publisher, "team-a", &d.to_string(), "").await;
    assert_eq!(got.status(), 307, "larger than HELIX_INLINE_MAX is never inline");
    let followed = env.http.get(got.headers()["location"].to_str().unwrap()).send().await.unwrap();
    assert_eq!(followed.bytes().await.unwrap().to_vec(), bytes);
}

pub async fn direct_upload_links_only_after_verification(b: Backend) {
    let env = TestEnv::start(b).await;
    let publisher = env.token(Role::Publisher, "team-a").await;
    let (bytes, d) = unique_blob(70_000);
    let path = "/v1/workspaces/team-a/uploads";
    let resp = post_json(&env, &publisher, path, json!({"digest": d.to_string(), "size": 70_000})).await;
    assert_eq!(resp.status(), 200);
    let plan: Value = resp.json().await.unwrap();
    assert_eq!(plan["exists"], false);
    assert_eq!(plan["upload"]["method"], "PUT");

    // Not linked before complete, even once the bytes are there.
    let up = upload_to(&env, &plan, bytes.clone(), true).await;
    assert!(up.status().is_success(), "{}", up.status());
    expect_problem(get_blob(&env, &publisher, "team-a", &d.to_string(), "").await, 404, "blob_missing").await;

    let complete = format!("/v1/workspaces/team-a/uploads/{d}/complete");
    let done = post_json(&env, &publisher, &complete, json!({})).await;
    assert_eq!(done.status(), 201);
    assert_eq!(get_blob(&env, &publisher, "team-a", &d.to_string(), "").await.bytes().await.unwrap().to_vec(), bytes);

    let again: Value =
        post_json(&env, &publisher, path, json!({"digest": d.to_string(), "size": 70_000})).await.json().await.unwrap();
    assert_eq!(again["exists"], true);
    assert!(again.get("upload").is_none());
    assert_eq!(post_json(&env, &publisher, &complete, json!({})).await.status(), 200);

    let events = env.audit("team-a").await;
    let completes: Vec<_> = events.iter().filter(|e| e.action == "upload.complete").collect();
    assert_eq!(completes.len(), 1);
    assert_eq!(completes[0].details["size"], 70_000);
}

pub async fn tampered_upload_is_refused_at_complete_and_leaves_no_link(b: Backend) {
    let env = TestEnv::start(b).await;
    let publisher = env.token(Role::Publisher, "team-a").await;
    let (_, d) = unique_blob(4096);
    let (evil, _) = unique_blob(4096);
    let plan: Value =
        post_json(&env, &publisher, "/v1/workspaces/team-a/uploads", json!({"digest": d.to_string(), "size": 4096}))
            .await
            .json()
            .await
            .unwrap();
    // The attacker sends other bytes of the same size, without the checksum header S3 would check.
    let up = upload_to(&env, &plan, evil.clone(), false).await;
    if b == Backend::Embedded {
        assert_eq!(up.status(), 400, "the local upload endpoint hashes while streaming");
        assert_eq!(env.stored_objects().await, 0);
        // Bytes that reach the store some other way are still caught at complete.
        env.plant_object(&d, &evil).await;
    }
    let complete = format!("/v1/workspaces/team-a/uploads/{d}/complete");
    expect_problem(post_json(&env, &publisher, &complete, json!({})).await, 400, "digest_mismatch").await;
    expect_problem(get_blob(&env, &publisher, "team-a", &d.to_string(), "").await, 404, "blob_missing").await;
    assert!(env.blob_events("team-a").await.is_empty(), "no link, no event");
}

pub async fn concurrent_puts_of_one_new_blob_create_one_object_and_one_event(b: Backend) {
    let env = TestEnv::start(b).await;
    let publisher = env.token(Role::Publisher, "team-a").await;
    let (bytes, d) = unique_blob(100_000);
    let puts = (0..64).map(|_| {
        let (http, url, auth, body) =
            (env.http.clone(), env.url(&format!("/v1/workspaces/team-a/blobs/{d}")), bearer(&publisher), bytes.clone());
        tokio::spawn(async move {
            http.put(url).header("authorization", auth).body(body).send().await.unwrap().status().as_u16()
        })
    });
    let statuses: Vec<u16> = futures_util::future::join_all(puts).await.into_iter().map(Result::unwrap).collect();
    assert_eq!(statuses.iter().filter(|s| **s == 201).count(), 1, "{statuses:?}");
    assert_eq!(statuses.iter().filter(|s| **s == 200).count(), 63, "{statuses:?}");
    assert_eq!(env.stored_objects().await, 1, "exactly one object written");
    assert_eq!(env.temp_files(), 0);
    let events = env.audit("team-a").await;
    assert_eq!(events.iter().filter(|e| e.action == "blob.link" && e.entity_id == d.to_string()).count(), 1);
    verify_chain(&events).unwrap();
}

pub async fn lambda_fixture_events_are_served_by_the_handlers(b: Backend) {
    let env = TestEnv::start(b).await;
    let fixture =
        |name: &str| std::fs::read_to_string(format!("{}/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap();
    let placeholder = "hlx_EXAMPLEEXAMPLEEXAMPLEEXAMPLEEXAMPLEEXAMPL";

    // As shipped, the fixture's token has the right shape but is unknown.
    let req = lambda_http::request::from_str(&fixture("apigw-http-v2-put-blob.json")).unwrap();
    let resp = publish::handle(&env.app, req).await;
    assert_eq!(resp.status(), 401);
    assert_eq!(resp.headers()["x-request-id"], "JKJaYnPLvHcESHB=", "API Gateway's request id is the request id");

    let token = env.token(Role::Publisher, "team-a").await;
    let req =
        lambda_http::request::from_str(&fixture("apigw-http-v2-put-blob.json").replace(placeholder, &token)).unwrap();
    let resp = publish::handle(&env.app, req).await;
    assert_eq!(resp.status(), 201, "{:?}", resp.body());
    let events = env.blob_events("team-a").await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].request_id, "JKJaYnPLvHcESHB=");
    assert_eq!(events[0].details["size"], 3, "the base64 body was decoded: 'foo'");

    let req =
        lambda_http::request::from_str(&fixture("apigw-http-v2-get-blob.json").replace(placeholder, &token)).unwrap();
    let resp = fetch::handle(&env.app, req).await;
    assert_eq!(resp.status(), 307, "?redirect=1 from rawQueryString");

    // A route that belongs to another function is not served by this one.
    let req =
        lambda_http::request::from_str(&fixture("apigw-http-v2-get-blob.json").replace(placeholder, &token)).unwrap();
    assert_eq!(publish::handle(&env.app, req).await.status(), 404);
}

/// `helix serve` on any mix of adapters: S3 blobs with SQLite and a local key in a data dir that does
/// not exist yet.
pub async fn mixed_backends_s3_blobs_with_embedded_meta_and_key_serve_together(b: Backend) {
    let env = TestEnv::start_with(b, &[("HELIX_META_BACKEND", "sqlite"), ("HELIX_SIGNER_BACKEND", "local")]).await;
    assert!(env.data_dir().join(helix_core::app::SQLITE_FILE).is_file());
    assert_eq!(env.http.get(env.url("/readyz")).send().await.unwrap().status(), 200);
    let publisher = env.token(Role::Publisher, "team-a").await;
    let (bytes, d) = unique_blob(100);
    assert_eq!(put_blob(&env, &publisher, "team-a", &d.to_string(), bytes.clone()).await.status(), 201);
    assert_eq!(env.stored_objects().await, 1, "the object went to S3");
    assert_eq!(get_blob(&env, &publisher, "team-a", &d.to_string(), "").await.bytes().await.unwrap().to_vec(), bytes);
}
