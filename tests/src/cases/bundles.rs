//! Bundle versions over HTTP: registration of a manifest whose files are linked in the workspace,
//! reads, listing, and every refusal of SPEC §4 and the governance issue's bad-input list.

use helix_core::domain::Role;
use serde_json::{Value, json};

use super::api::put_blob;
use super::{expect_problem, unique_blob};
use crate::{Backend, TestEnv};

fn manifest(name: &str, version: &str, files: &[(&str, String, usize)]) -> Value {
    let files: Vec<Value> = files.iter().map(|(p, d, s)| json!({"path": p, "digest": d, "size": s})).collect();
    json!({"schema": "helix.bundle.v1", "name": name, "version": version, "files": files, "annotations": {"team": "a"}})
}

async fn register(env: &TestEnv, token: &str, ws: &str, name: &str, version: &str, body: &Value) -> reqwest::Response {
    let url = env.url(&format!("/v1/workspaces/{ws}/bundles/{name}/versions/{version}"));
    env.http.put(url).header("authorization", format!("Bearer {token}")).json(body).send().await.unwrap()
}

async fn get(env: &TestEnv, token: &str, path: &str) -> reqwest::Response {
    env.http.get(env.url(path)).header("authorization", format!("Bearer {token}")).send().await.unwrap()
}

/// Two linked blobs of `ws`, as (path, digest, size) entries of a manifest.
async fn linked_files(env: &TestEnv, token: &str, ws: &str) -> Vec<(&'static str, String, usize)> {
    let mut files = Vec::new();
    for (path, len) in [("data/a.bin", 300), ("model.json", 120)] {
        let (bytes, d) = unique_blob(len);
        assert_eq!(put_blob(env, token, ws, &d.to_string(), bytes).await.status(), 201);
        files.push((path, d.to_string(), len));
    }
    files
}

pub async fn bundle_versions_register_once_read_back_and_list(b: Backend) {
    let env = TestEnv::start(b).await;
    let publisher = env.token(Role::Publisher, "team-a").await;
    let viewer = env.token(Role::Viewer, "team-a").await;
    let files = linked_files(&env, &publisher, "team-a").await;
    let body = manifest("model", "1.0", &files);

    let first = register(&env, &publisher, "team-a", "model", "1.0", &body).await;
    assert_eq!(first.status(), 201);
    let created: Value = first.json().await.unwrap();
    assert_eq!(
        (created["state"].as_str(), created["files"].as_u64(), created["bytes"].as_u64()),
        (Some("submitted"), Some(2), Some(420))
    );
    let digest = created["manifest_digest"].as_str().unwrap().to_owned();
    assert!(created["export_transition"].as_str().unwrap().starts_with("sha256:"));
    // The same manifest again (another layout of the same JSON): 200, nothing new.
    let spaced = serde_json::to_string_pretty(&body).unwrap();
    let url = env.url("/v1/workspaces/team-a/bundles/model/versions/1.0");
    let again =
        env.http.put(&url).header("authorization", format!("Bearer {publisher}")).body(spaced).send().await.unwrap();
    assert_eq!(again.status(), 200);
    assert_eq!(again.json::<Value>().await.unwrap()["manifest_digest"], digest.as_str());
    // Another manifest for the same version: 409.
    let other = manifest("model", "1.0", &files[..1]);
    let conflict =
        expect_problem(register(&env, &publisher, "team-a", "model", "1.0", &other).await, 409, "version_exists").await;
    assert!(conflict["detail"].as_str().unwrap().contains(&digest));

    // Read back: the canonical manifest, verified from the store, and the state.
    let got: Value = get(&env, &viewer, "/v1/workspaces/team-a/bundles/model/versions/1.0").await.json().await.unwrap();
    assert_eq!(got["manifest_digest"], digest.as_str());
    assert_eq!(got["manifest"]["files"][1]["path"], "model.json");
    assert_eq!(got["export_transition"], created["export_transition"]);
    assert!(got["registered_by"].as_str().unwrap().starts_with("publisher-user@tok_"));
    // The manifest is itself a blob of the workspace, whose digest is the version's identity.
    let blob = get(&env, &viewer, &format!("/v1/workspaces/team-a/blobs/{digest}")).await;
    let stored = blob.bytes().await.unwrap();
    assert_eq!(helix_core::domain::Digest::of(&stored).to_string(), digest);
    expect_problem(get(&env, &viewer, "/v1/workspaces/team-a/bundles/model/versions/2.0").await, 404, "bundle_missing")
        .await;
    let admin = env.token(Role::Admin, "*").await;
    expect_problem(get(&env, &admin, "/v1/workspaces/team-b/bundles/model/versions/1.0").await, 404, "bundle_missing")
        .await;

    // Listing, in (name, version) order, page by page.
    for (name, version) in [("model", "0.9"), ("alpha", "1"), ("model", "1.0-rc")] {
        assert_eq!(
            register(&env, &publisher, "team-a", name, version, &manifest(name, version, &files)).await.status(),
            201
        );
    }
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let q = match &cursor {
            Some(c) => format!("?limit=2&cursor={c}"),
            None => "?limit=2".into(),
        };
        let page: Value = get(&env, &viewer, &format!("/v1/workspaces/team-a/bundles{q}")).await.json().await.unwrap();
        for v in page["versions"].as_array().unwrap() {
            seen.push(format!("{}@{}", v["name"].as_str().unwrap(), v["version"].as_str().unwrap()));
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen, ["alpha@1", "model@0.9", "model@1.0", "model@1.0-rc"]);
    let empty: Value = get(&env, &admin, "/v1/workspaces/team-b/bundles").await.json().await.unwrap();
    assert_eq!(empty["versions"], json!([]));

    let events = env.audit("team-a").await;
    let registrations = events.iter().filter(|e| e.action == "bundle.register").count();
    assert_eq!(registrations, 4, "one event per registration, none for the repeat");
    helix_core::domain::audit::verify_chain(&events).unwrap();
}

pub async fn bad_manifests_and_unlinked_files_are_refused_and_change_nothing(b: Backend) {
    let env = TestEnv::start_with(b, &[("HELIX_INLINE_MAX", "65536")]).await;
    let publisher = env.token(Role::Publisher, "team-a").await;
    let files = linked_files(&env, &publisher, "team-a").await;
    let (d0, d1) = (files[0].1.clone(), files[1].1.clone());
    let bad: Vec<(Value, &str)> = vec![
        (manifest("model", "1", &[("../x", d0.clone(), 300)]), ".."),
        (manifest("model", "1", &[("a/./x", d0.clone(), 300)]), "."),
        (manifest("model", "1", &[("a//x", d0.clone(), 300)]), "empty segment"),
        (manifest("model", "1", &[("", d0.clone(), 300)]), "empty path"),
        (manifest("model", "1", &[("/abs", d0.clone(), 300)]), "absolute"),
        (manifest("model", "1", &[("a\\b", d0.clone(), 300)]), "backslash"),
        (manifest("model", "1", &[("b", d0.clone(), 300), ("a", d1.clone(), 120)]), "unsorted"),
        (manifest("model", "1", &[("a", d0.clone(), 300), ("a", d0.clone(), 300)]), "duplicate"),
        (manifest("other", "1", &[("a", d0.clone(), 300)]), "name differs from the URL"),
        (manifest("model", "2", &[("a", d0.clone(), 300)]), "version differs from the URL"),
        (manifest("model", "1", &[("a", d0.clone(), 299)]), "size differs from the blob's"),
        (json!({"schema": "helix.bundle.v9", "name": "model", "version": "1", "files": []}), "unknown schema"),
        (json!({"schema": "helix.bundle.v1", "name": "model", "version": "1", "files": [], "x": 1}), "unknown field"),
    ];
    for (body, what) in bad {
        let resp = register(&env, &publisher, "team-a", "model", "1", &body).await;
        let problem = expect_problem(resp, 400, "invalid_manifest").await;
        assert!(!problem["detail"].as_str().unwrap().is_empty(), "{what}");
    }
    // More bytes than the body limit (HELIX_INLINE_MAX, 64 KiB here); the file-count limit is a unit test.
    let many: Vec<(String, String, usize)> = (0..600).map(|i| (format!("f{i:05}"), d0.clone(), 300)).collect();
    let many: Vec<(&str, String, usize)> = many.iter().map(|(p, d, s)| (p.as_str(), d.clone(), *s)).collect();
    let body = manifest("model", "1", &many);
    let big = register(&env, &publisher, "team-a", "model", "1", &body).await;
    expect_problem(big, 413, "payload_too_large").await;
    // A digest only another workspace holds, and one nobody holds: both are missing here.
    let other = env.token(Role::Publisher, "team-b").await;
    let (theirs, theirs_d) = unique_blob(50);
    assert_eq!(put_blob(&env, &other, "team-b", &theirs_d.to_string(), theirs).await.status(), 201);
    let (_, nobody) = unique_blob(50);
    let body = manifest(
        "model",
        "1",
        &[("a", d0.clone(), 300), ("b", theirs_d.to_string(), 50), ("c", nobody.to_string(), 50)],
    );
    let problem =
        expect_problem(register(&env, &publisher, "team-a", "model", "1", &body).await, 409, "blob_missing").await;
    let mut expected = vec![theirs_d.to_string(), nobody.to_string()];
    expected.sort();
    assert_eq!(problem["missing"], json!(expected));
    // Bad names and versions in the path are refused before anything is read.
    let admin = env.token(Role::Admin, "*").await;
    for path in ["/v1/workspaces/team-a/bundles/-x/versions/1", "/v1/workspaces/team-a/bundles/x/versions/a%20b"] {
        let resp = env
            .http
            .put(env.url(path))
            .header("authorization", format!("Bearer {admin}"))
            .json(&json!({}))
            .send()
            .await
            .unwrap();
        expect_problem(resp, 400, "invalid_request").await;
    }
    expect_problem(
        env.http
            .get(env.url("/v1/workspaces/team-a/bundles?cursor=nope"))
            .header("authorization", format!("Bearer {admin}"))
            .send()
            .await
            .unwrap(),
        400,
        "invalid_request",
    )
    .await;
    assert!(env.audit("team-a").await.iter().all(|e| e.action != "bundle.register"), "nothing registered");
    let listed: Value = env
        .http
        .get(env.url("/v1/workspaces/team-a/bundles"))
        .header("authorization", format!("Bearer {publisher}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed["versions"], json!([]));
}
