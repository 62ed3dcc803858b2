//! End-to-end flows over HTTP against the local server's router (the functions' own handlers).

use helix_core::domain::Role;
use helix_core::domain::audit::verify_chain;
use serde_json::{Value, json};

use super::{expect_problem, unique_blob};
use crate::{Backend, TestEnv};

pub fn bearer(token: &str) -> String {
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

pub async fn get(env: &TestEnv, token: &str, path: &str) -> reqwest::Response {
    env.http.get(env.url(path)).header("authorization", bearer(token)).send().await.unwrap()
}

/// The registry's `/metrics` text (open, as by default).
pub async fn metrics_text(env: &TestEnv) -> String {
    env.http.get(env.url("/metrics")).send().await.unwrap().text().await.unwrap()
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
    assert_eq!(status["verify_inline_max"].as_u64(), Some(env.app.config.verify_inline_max));
    assert_eq!(status["upload_part_size"].as_u64(), Some(env.app.config.upload_part_size));
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

    // A small blob is never redirected: a presigned GET of the shared object would carry its
    // Last-Modified and version id, telling team-a when any workspace first stored these bytes.
    let asked = get_blob(&env, &viewer, "team-a", &digest, "?redirect=1").await;
    assert_eq!(asked.status(), 200);
    assert!(asked.headers().get("last-modified").is_none() && asked.headers().get("x-amz-version-id").is_none());
    assert_eq!(asked.bytes().await.unwrap().to_vec(), bytes);

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
    let done = complete(&env, &publisher, "team-a", &d.to_string(), &plan).await;
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

    assert_eq!(env.stored_objects().await, 0, "the bytes are staged, not under the blob's key");
    let done = complete(&env, &publisher, "team-a", &d.to_string(), &plan).await;
    assert_eq!(done.status(), 201);
    assert_eq!(get_blob(&env, &publisher, "team-a", &d.to_string(), "").await.bytes().await.unwrap().to_vec(), bytes);
    assert_eq!(env.stored_objects().await, 1);
    assert_eq!(env.staged_uploads().await, 0, "the staging object is removed once promoted");

    let again: Value =
        post_json(&env, &publisher, path, json!({"digest": d.to_string(), "size": 70_000})).await.json().await.unwrap();
    assert_eq!(again["exists"], true);
    assert!(again.get("upload").is_none());
    // A retried complete is idempotent; the upload id is always required.
    assert_eq!(complete(&env, &publisher, "team-a", &d.to_string(), &plan).await.status(), 200);
    let url = format!("/v1/workspaces/team-a/uploads/{d}/complete");
    expect_problem(post_json(&env, &publisher, &url, json!({})).await, 400, "invalid_request").await;

    let events = env.audit("team-a").await;
    let completes: Vec<_> = events.iter().filter(|e| e.action == "upload.complete").collect();
    assert_eq!(completes.len(), 1);
    assert_eq!(completes[0].details["size"], 70_000);
    assert_eq!(completes[0].details["upload_id"], plan["upload_id"]);
}

/// Start an upload of `d` (`size` bytes) in `ws`; the plan as JSON.
pub async fn plan(env: &TestEnv, token: &str, ws: &str, d: &str, size: usize, extra: Value) -> (u16, Value) {
    let mut body = json!({"digest": d, "size": size});
    body.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
    let resp = post_json(env, token, &format!("/v1/workspaces/{ws}/uploads"), body).await;
    (resp.status().as_u16(), resp.json().await.unwrap())
}

/// Complete the upload a plan started.
pub async fn complete(env: &TestEnv, token: &str, ws: &str, d: &str, plan: &Value) -> reqwest::Response {
    let body = json!({"upload_id": plan["upload_id"]});
    post_json(env, token, &format!("/v1/workspaces/{ws}/uploads/{d}/complete"), body).await
}

/// A client that sends other bytes than the digest's through its presigned upload, to a store that
/// keeps them whatever checksum was signed (moto; a lax S3-compatible): complete re-hashes, refuses
/// with one clean message, removes the staging object, links nothing, and the digest is not poisoned:
/// the next correct upload of it succeeds.
pub async fn tampered_upload_is_refused_at_complete_and_never_poisons_the_digest(b: Backend) {
    let env = TestEnv::start(b).await;
    let publisher = env.token(Role::Publisher, "team-a").await;
    let (good, d) = unique_blob(4096);
    let (evil, _) = unique_blob(4096);
    let digest = d.to_string();
    let (_, first) = plan(&env, &publisher, "team-a", &digest, 4096, json!({})).await;
    // With the signed checksum header kept: a strict store refuses the bytes, moto keeps them.
    let up = upload_to(&env, &first, evil.clone(), true).await;
    if b == Backend::Embedded {
        assert_eq!(up.status(), 400, "the local upload endpoint hashes while streaming");
        // Bytes that reach the staging key some other way are still caught at complete.
        let upload = helix_core::ports::UploadRef::parse(
            &helix_core::domain::WorkspaceId::parse("team-a").unwrap(),
            first["upload_id"].as_str().unwrap(),
        )
        .unwrap();
        env.plant_staged(&upload, &evil).await;
    }
    let body =
        expect_problem(complete(&env, &publisher, "team-a", &digest, &first).await, 400, "digest_mismatch").await;
    let detail = body["detail"].as_str().unwrap();
    assert_eq!(
        detail,
        format!("the bytes hash to {}, not to the digest {digest}", helix_core::domain::Digest::of(&evil))
    );
    expect_problem(get_blob(&env, &publisher, "team-a", &digest, "").await, 404, "blob_missing").await;
    assert!(env.blob_events("team-a").await.is_empty(), "no link, no event");
    assert_eq!(env.stored_objects().await, 0, "nothing reached the blob's key");
    assert_eq!(env.staged_uploads().await, 0, "the refused staging object is removed");
    expect_problem(complete(&env, &publisher, "team-a", &digest, &first).await, 404, "upload_missing").await;

    // Not poisoned: a fresh plan still asks for the bytes, and the correct bytes link.
    let (_, second) = plan(&env, &publisher, "team-a", &digest, 4096, json!({})).await;
    assert_eq!(second["exists"], false);
    assert!(upload_to(&env, &second, good.clone(), true).await.status().is_success());
    assert_eq!(complete(&env, &publisher, "team-a", &digest, &second).await.status(), 201);
    assert_eq!(get_blob(&env, &publisher, "team-a", &digest, "").await.bytes().await.unwrap().to_vec(), good);
}

/// The cross-workspace attack: B knows a digest only A holds. Nothing B can send links it or reads
/// it without the bytes, and every answer B gets is the one it would get for a digest nobody holds.
pub async fn a_workspace_cannot_link_or_probe_another_workspaces_blob_by_digest(b: Backend) {
    let env = TestEnv::start(b).await;
    let a = env.token(Role::Publisher, "team-a").await;
    let attacker = env.token(Role::Publisher, "team-b").await;
    let (secret, held) = unique_blob(3000);
    let (_, nobody) = unique_blob(3000);
    assert_eq!(put_blob(&env, &a, "team-a", &held.to_string(), secret.clone()).await.status(), 201);

    // Same answer for "held by A" and "held by nobody", route after route.
    let mut answers = Vec::new();
    for d in [held.to_string(), nobody.to_string()] {
        let (status, p) = plan(&env, &attacker, "team-b", &d, 3000, json!({})).await;
        assert_eq!((status, &p["exists"]), (200, &json!(false)), "{p}");
        assert!(p["upload"]["url"].is_string() && p["upload_id"].is_string());
        let fake = json!({"upload_id": "0123456789abcdef0123456789abcdef"});
        let complete_url = format!("/v1/workspaces/team-b/uploads/{d}/complete");
        let with_fake = post_json(&env, &attacker, &complete_url, fake).await;
        let without_id = post_json(&env, &attacker, &complete_url, json!({})).await;
        // Another workspace's upload id names a staging key of that workspace only: absent here.
        let with_plan = complete(&env, &attacker, "team-b", &d, &p).await;
        let (mount_status, _) = plan(&env, &attacker, "team-b", &d, 3000, json!({"mount_from": "team-a"})).await;
        let fetched = get_blob(&env, &attacker, "team-b", &d, "").await.status().as_u16();
        let mut reasons = Vec::new();
        for r in [with_fake, without_id, with_plan] {
            let (status, body) = super::problem(r).await;
            reasons.push((status, body["reason"].as_str().unwrap().to_owned()));
        }
        answers.push((reasons, mount_status, fetched));
    }
    assert_eq!(answers[0], answers[1], "B learns nothing about what A holds");
    let (reasons, mount_status, fetched) = &answers[0];
    assert_eq!(
        reasons,
        &vec![
            (404, "upload_missing".to_owned()),
            (400, "invalid_request".to_owned()),
            (404, "upload_missing".to_owned())
        ]
    );
    assert_eq!((*mount_status, *fetched), (403, 404), "a mount needs a grant over the source; nothing is linked");
    assert!(env.blob_events("team-b").await.is_empty(), "nothing linked in team-b");

    // A's real, staged upload id is A's alone: B completing it names a staging key of B's.
    let (other, other_d) = unique_blob(2000);
    let (_, a_plan) = plan(&env, &a, "team-a", &other_d.to_string(), 2000, json!({})).await;
    assert!(upload_to(&env, &a_plan, other.clone(), true).await.status().is_success());
    expect_problem(complete(&env, &attacker, "team-b", &other_d.to_string(), &a_plan).await, 404, "upload_missing")
        .await;
    assert_eq!(complete(&env, &a, "team-a", &other_d.to_string(), &a_plan).await.status(), 201, "A's upload is intact");
    assert!(env.blob_events("team-b").await.is_empty());

    // With the bytes (proof of possession), B links; the store stays deduplicated.
    assert_eq!(put_blob(&env, &attacker, "team-b", &held.to_string(), secret.clone()).await.status(), 201);
    assert_eq!(env.stored_objects().await, 2, "one object per digest, shared by both workspaces");
    let events = env.blob_events("team-b").await;
    assert_eq!(events.len(), 1);
    assert!(events[0].details.get("object").is_none(), "the event does not say the object already existed");
}

/// The first workspace to upload some bytes does not choose how every later workspace receives
/// them: headers its client sent with the upload (Content-Encoding, Content-Type, Content-Disposition)
/// never reach the shared object's downloads.
pub async fn a_blobs_download_headers_are_the_registrys_not_its_first_uploaders(b: Backend) {
    let env = TestEnv::start_with(b, &[("HELIX_INLINE_MAX", "1024")]).await;
    let a = env.token(Role::Publisher, "team-a").await;
    let evil = env.token(Role::Publisher, "team-b").await;
    let (bytes, d) = unique_blob(5000);
    let digest = d.to_string();
    let (_, first) = plan(&env, &evil, "team-b", &digest, 5000, json!({})).await;
    let mut req = env.http.put(first["upload"]["url"].as_str().unwrap()).body(bytes.clone());
    for pair in first["upload"]["headers"].as_array().unwrap() {
        let (k, v) = (pair[0].as_str().unwrap(), pair[1].as_str().unwrap());
        if !k.eq_ignore_ascii_case("content-length") && !k.eq_ignore_ascii_case("host") {
            req = req.header(k, v);
        }
    }
    let req = req
        .header("content-encoding", "gzip")
        .header("content-type", "text/html")
        .header("content-disposition", "inline")
        .header("cache-control", "public, max-age=999999");
    assert!(req.send().await.unwrap().status().is_success());
    assert_eq!(complete(&env, &evil, "team-b", &digest, &first).await.status(), 201);

    let (_, second) = plan(&env, &a, "team-a", &digest, 5000, json!({})).await;
    assert!(upload_to(&env, &second, bytes.clone(), true).await.status().is_success());
    assert_eq!(complete(&env, &a, "team-a", &digest, &second).await.status(), 201);
    assert_eq!(env.stored_objects().await, 1, "deduplicated");
    let redirect = get_blob(&env, &a, "team-a", &digest, "").await;
    assert_eq!(redirect.status(), 307);
    let got = env.http.get(redirect.headers()["location"].to_str().unwrap()).send().await.unwrap();
    let header = |name: &str| got.headers().get(name).map(|v| v.to_str().unwrap().to_owned());
    assert_eq!(header("content-type").as_deref(), Some("application/octet-stream"));
    assert!(header("content-encoding").is_none_or(|e| e == "identity"), "{:?}", header("content-encoding"));
    assert!(header("content-disposition").is_some_and(|d| d.starts_with("attachment")), "{:?}", got.headers());
    assert!(header("cache-control").is_none_or(|c| !c.contains("999999")), "{:?}", got.headers());
    assert_eq!(got.bytes().await.unwrap().to_vec(), bytes);
}

/// OCI's cross-repository mount: a caller whose grant covers the source workspace links a blob into
/// the target without uploading; the link is audited in the target, its source in the global stream.
pub async fn mount_from_a_covered_workspace_links_without_upload(b: Backend) {
    let env = TestEnv::start(b).await;
    let a = env.token(Role::Publisher, "team-a").await;
    let global = env.token(Role::Publisher, "*").await;
    let (bytes, d) = unique_blob(1500);
    let digest = d.to_string();
    assert_eq!(put_blob(&env, &a, "team-a", &digest, bytes.clone()).await.status(), 201);

    let (status, p) = plan(&env, &global, "team-b", &digest, 1500, json!({"mount_from": "team-a"})).await;
    assert_eq!(status, 200);
    assert_eq!((&p["exists"], &p["mounted_from"]), (&json!(true), &json!("team-a")), "{p}");
    assert!(p.get("upload").is_none());
    assert_eq!(get_blob(&env, &global, "team-b", &digest, "").await.bytes().await.unwrap().to_vec(), bytes);
    let events = env.blob_events("team-b").await;
    assert_eq!(events.len(), 1);
    assert_eq!((events[0].action.as_str(), &events[0].details["via"]), ("blob.mount", &json!("mount")));
    assert!(events[0].details.get("from").is_none(), "team-b's trail does not say what team-a holds");
    let source = env.audit("*").await.into_iter().find(|e| e.action == "blob.mount_source").expect("in *");
    assert_eq!((&source.details["workspace"], &source.details["from"]), (&json!("team-b"), &json!("team-a")));
    // Mounting again is a no-op; a mount from a workspace without the blob falls back to an upload.
    let (_, again) = plan(&env, &global, "team-b", &digest, 1500, json!({"mount_from": "team-a"})).await;
    assert_eq!(again["exists"], true);
    assert_eq!(env.blob_events("team-b").await.len(), 1);
    let (_, other) = unique_blob(10);
    let (status, fallback) =
        plan(&env, &global, "team-c", &other.to_string(), 10, json!({"mount_from": "team-a"})).await;
    assert_eq!((status, &fallback["exists"]), (200, &json!(false)));
    assert!(fallback["upload_id"].is_string());
    // The size of a digest is fixed.
    let (status, _) = plan(&env, &global, "team-c", &digest, 1499, json!({"mount_from": "team-a"})).await;
    assert_eq!(status, 400);
    assert_eq!(env.stored_objects().await, 1);
}

/// Wrong bytes already under a digest's own key (a lax store, an operator's mistake, an object from
/// before uploads were staged) are detected, never served or linked, reported for an operator, and do
/// not block correct uploads: the verified bytes go to the next slot.
pub async fn a_wrong_object_under_a_digest_key_never_blocks_a_correct_upload(b: Backend) {
    let env = TestEnv::start_with(b, &[("HELIX_INLINE_MAX", "2048")]).await;
    let publisher = env.token(Role::Publisher, "team-a").await;
    let (small, small_d) = unique_blob(1000);
    let (large, large_d) = unique_blob(5000);
    env.plant_object(&small_d, b"poison").await;
    env.plant_object(&large_d, b"more poison").await;

    assert_eq!(put_blob(&env, &publisher, "team-a", &small_d.to_string(), small.clone()).await.status(), 201);
    assert_eq!(
        get_blob(&env, &publisher, "team-a", &small_d.to_string(), "").await.bytes().await.unwrap().to_vec(),
        small
    );

    let (_, p) = plan(&env, &publisher, "team-a", &large_d.to_string(), 5000, json!({})).await;
    assert!(upload_to(&env, &p, large.clone(), true).await.status().is_success());
    assert_eq!(complete(&env, &publisher, "team-a", &large_d.to_string(), &p).await.status(), 201);
    let redirect = get_blob(&env, &publisher, "team-a", &large_d.to_string(), "").await;
    assert_eq!(redirect.status(), 307);
    let followed = env.http.get(redirect.headers()["location"].to_str().unwrap()).send().await.unwrap();
    assert_eq!(followed.bytes().await.unwrap().to_vec(), large, "the redirect serves the verified slot");

    let ws = helix_core::domain::WorkspaceId::parse("team-a").unwrap();
    for d in [&small_d, &large_d] {
        let link = env.app.meta.blob_link(&ws, d).await.unwrap().unwrap();
        assert_eq!(link.slot, 1, "the poisoned slot 0 was skipped");
    }
    let failures: Vec<_> = env.audit("*").await.into_iter().filter(|e| e.action == "blob.integrity_failure").collect();
    assert_eq!(failures.len(), 2, "each poisoned key is reported in the global stream");
    assert!(failures.iter().all(|e| !e.request_id.is_empty()), "tied to the request that met it");
    assert!(env.audit("team-a").await.iter().all(|e| e.action != "blob.integrity_failure"), "not in the workspace's");

    // A link to a wrong object (made before uploads were verified, or damaged since) is never
    // spread by a mount: the source object is verified first, and the caller is asked for the bytes.
    let (legacy, legacy_d) = unique_blob(500);
    env.plant_object(&legacy_d, b"legacy poison").await;
    let link = helix_core::ports::BlobLink {
        workspace_id: "team-old".into(),
        digest: legacy_d.clone(),
        size: 500,
        linked_at: 1,
        linked_by: "before-proof-of-possession".into(),
        slot: 0,
    };
    let draft = helix_core::domain::AuditDraft {
        stream: "team-old".into(),
        actor: "tests".into(),
        action: "blob.link".into(),
        entity_type: "blob".into(),
        entity_id: legacy_d.to_string(),
        outcome: helix_core::domain::Outcome::Success,
        request_id: "legacy".into(),
        details: json!({}),
    };
    env.app.meta.commit(helix_core::ports::Change::LinkBlob(link), draft).await.unwrap();
    let global = env.token(Role::Publisher, "*").await;
    let (status, p) =
        plan(&env, &global, "team-c", &legacy_d.to_string(), 500, json!({"mount_from": "team-old"})).await;
    assert_eq!((status, &p["exists"]), (200, &json!(false)), "{p}");
    assert!(p["upload_id"].is_string(), "the bytes are asked for instead");
    assert!(env.blob_events("team-c").await.is_empty());
    assert_eq!(put_blob(&env, &global, "team-c", &legacy_d.to_string(), legacy.clone()).await.status(), 201);
    assert_eq!(
        get_blob(&env, &global, "team-c", &legacy_d.to_string(), "").await.bytes().await.unwrap().to_vec(),
        legacy
    );
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
    // The 63 losers committed nothing: one link event, and the link counters that share its
    // transaction counted one link. (On moto's stock threaded server a cancelled transaction's items
    // could survive; the emulator isolates DynamoDB: localstack/emulator.py, docs/decisions.md.)
    let events = env.audit("team-a").await;
    assert_eq!(events.iter().filter(|e| e.action == "blob.link" && e.entity_id == d.to_string()).count(), 1);
    verify_chain(&events).unwrap();
    let counters = env.app.meta.counters(helix_core::ports::BUSINESS_COUNTERS).await.unwrap();
    assert_eq!((counters.get("blob_links"), counters.get("blob_bytes")), (Some(&1), Some(&100_000)), "{counters:?}");
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
    assert_eq!(resp.status(), 200, "a 3-byte blob is served inline, whatever the query asks");

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

/// A function builds an AWS SDK client at the first request that needs it, never before: `publish`
/// and `fetch` build DynamoDB and S3 (no KMS client), `token` DynamoDB alone (no S3 client).
pub async fn each_function_builds_only_the_sdk_clients_its_requests_use(b: Backend) {
    assert_eq!(b, Backend::Emulator, "the AWS adapters");
    let env = TestEnv::start(b).await;
    let fixture =
        |name: &str| std::fs::read_to_string(format!("{}/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap();
    let placeholder = "hlx_EXAMPLEEXAMPLEEXAMPLEEXAMPLEEXAMPLEEXAMPL";
    let token = env.token(Role::Publisher, "team-a").await;
    let event = |name: &str| lambda_http::request::from_str(&fixture(name).replace(placeholder, &token)).unwrap();
    let built = |app: &helix_core::App| {
        let mut built = app.sdk_clients.built();
        built.sort();
        built
    };

    let app = env.app_with(&[]).await.unwrap();
    assert!(app.sdk_clients.built().is_empty(), "no SDK client is built before the first request");
    assert_eq!(publish::handle(&app, event("apigw-http-v2-put-blob.json")).await.status(), 201);
    assert_eq!(built(&app), ["dynamodb", "s3"], "publish: the token, link and audit items, the object");

    let app = env.app_with(&[]).await.unwrap();
    assert_eq!(fetch::handle(&app, event("apigw-http-v2-get-blob.json")).await.status(), 200);
    assert_eq!(built(&app), ["dynamodb", "s3"], "fetch: no KMS client");

    let app = env.app_with(&[]).await.unwrap();
    let whoami = crate::runtime_api::apigw_event("GET", "/v1/whoami", "/v1/whoami", "", Some(&token));
    let resp = token::handle(&app, lambda_http::request::from_str(&whoami.to_string()).unwrap()).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(built(&app), ["dynamodb"], "token: no S3 client");
}
