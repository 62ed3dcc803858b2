//! Bad input, bad credentials and dependency outages: each refused with its documented status and
//! reason, and none of them changes any store.

use std::sync::Arc;

use helix_cli::serve::Server;
use helix_core::domain::Role;
use serde_json::{Value, json};

use super::api::{get_blob, post_json, put_blob};
use super::contract::store_token_record;
use super::{closed_port_url, expect_problem, unique_blob};
use crate::{Backend, TestEnv};

/// Nothing reached any store: no objects, no links, no events in the workspace stream.
async fn assert_unchanged(env: &TestEnv, ws: &str) {
    assert_eq!(env.stored_objects().await, 0, "no object stored");
    assert!(env.blob_events(ws).await.is_empty(), "no blob event in {ws}");
    assert_eq!(env.temp_files(), 0);
}

pub async fn malformed_input_is_refused_with_reason_and_changes_nothing(b: Backend) {
    let env = TestEnv::start_with(b, &[("HELIX_INLINE_MAX", "1024")]).await;
    let token = env.token(Role::Admin, "*").await;
    let (bytes, d) = unique_blob(100);
    let hex = d.hex().to_owned();
    for bad in [
        format!("md5:{hex}"),
        format!("sha256:{}", hex.to_uppercase()),
        format!("sha256:{}", &hex[..63]),
        format!("sha256:{hex}0"),
        hex.clone(),
        "sha256:..%2F..%2F..%2Fetc%2Fpasswd".into(),
        format!("sha256:{}%2F", &hex[..63]),
    ] {
        expect_problem(put_blob(&env, &token, "team-a", &bad, bytes.clone()).await, 400, "invalid_digest").await;
        expect_problem(get_blob(&env, &token, "team-a", &bad, "").await, 400, "invalid_digest").await;
    }
    for bad_ws in ["Team-A", "-team", "team_a", "a%2Fb", &"a".repeat(64)] {
        expect_problem(put_blob(&env, &token, bad_ws, &d.to_string(), bytes.clone()).await, 400, "invalid_workspace")
            .await;
    }
    let (other, _) = unique_blob(100);
    let body =
        expect_problem(put_blob(&env, &token, "team-a", &d.to_string(), other).await, 400, "digest_mismatch").await;
    assert!(body["detail"].as_str().unwrap().contains(&d.to_string()));

    let (big, big_d) = unique_blob(2000);
    expect_problem(put_blob(&env, &token, "team-a", &big_d.to_string(), big).await, 413, "payload_too_large").await;

    let uploads = "/v1/workspaces/team-a/uploads";
    expect_problem(
        post_json(&env, &token, uploads, json!({"digest": "sha256:nope", "size": 3})).await,
        400,
        "invalid_digest",
    )
    .await;
    expect_problem(
        post_json(&env, &token, uploads, json!({"digest": d.to_string(), "size": 0})).await,
        400,
        "invalid_request",
    )
    .await;
    let raw = env
        .http
        .post(env.url(uploads))
        .header("authorization", format!("Bearer {token}"))
        .body("{not json")
        .send()
        .await
        .unwrap();
    expect_problem(raw, 400, "invalid_request").await;
    let complete = format!("/v1/workspaces/team-a/uploads/{d}/complete");
    expect_problem(post_json(&env, &token, &complete, json!({})).await, 400, "invalid_request").await;
    for bad_id in ["nope", "../../blobs/x", &"A".repeat(32), &"0".repeat(33)] {
        expect_problem(post_json(&env, &token, &complete, json!({"upload_id": bad_id})).await, 400, "invalid_request")
            .await;
    }
    expect_problem(
        post_json(&env, &token, &complete, json!({"upload_id": "0".repeat(32)})).await,
        404,
        "upload_missing",
    )
    .await;
    expect_problem(
        post_json(&env, &token, uploads, json!({"digest": d.to_string(), "size": 3, "mount_from": "Bad/ws"})).await,
        400,
        "invalid_workspace",
    )
    .await;
    expect_problem(
        post_json(&env, &token, uploads, json!({"digest": d.to_string(), "size": 3, "surprise": 1})).await,
        400,
        "invalid_request",
    )
    .await;

    expect_problem(env.http.get(env.url("/v1/nowhere")).send().await.unwrap(), 404, "not_found").await;
    expect_problem(
        env.http.delete(env.url(&format!("/v1/workspaces/team-a/blobs/{d}"))).send().await.unwrap(),
        405,
        "method_not_allowed",
    )
    .await;
    assert_unchanged(&env, "team-a").await;
}

pub async fn bad_credentials_are_refused_with_reason_and_change_nothing(b: Backend) {
    let env = TestEnv::start(b).await;
    let (bytes, d) = unique_blob(100);
    let url = env.url(&format!("/v1/workspaces/team-a/blobs/{d}"));
    let put = |auth: Option<String>| {
        let mut req = env.http.put(&url).body(bytes.clone());
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        req.send()
    };
    let expired = store_token_record(&env, |r| r.expires_at = Some(r.created_at - 1)).await;
    let revoked = store_token_record(&env, |r| r.disabled = true).await;
    let other_ws = env.token(Role::Admin, "team-b").await;
    let viewer = env.token(Role::Viewer, "team-a").await;
    let valid = env.token(Role::Publisher, "team-a").await;
    let mut flipped = valid.clone().into_bytes();
    let last = flipped.len() - 1;
    flipped[last] = if flipped[last] == b'A' { b'B' } else { b'A' };
    let flipped = String::from_utf8(flipped).unwrap();
    let unknown = helix_core::domain::BearerToken::generate().expose().to_owned();

    let cases: Vec<(Option<String>, u16, &str)> = vec![
        (None, 401, "token_missing"),
        (Some("Bearer".into()), 401, "token_missing"),
        (Some(format!("Basic {valid}")), 401, "token_invalid"),
        (Some("Bearer not-a-token".into()), 401, "token_invalid"),
        (Some(format!("Bearer {unknown}")), 401, "token_invalid"),
        (Some(format!("Bearer {flipped}")), 401, "token_invalid"),
        (Some(format!("Bearer {}", "x".repeat(9000))), 401, "token_invalid"),
        (Some("Bearer eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.".into()), 401, "token_invalid"),
        (Some(format!("Bearer {expired}")), 401, "token_expired"),
        (Some(format!("Bearer {revoked}")), 401, "token_revoked"),
        (Some(format!("Bearer {other_ws}")), 403, "forbidden_workspace"),
        (Some(format!("Bearer {viewer}")), 403, "insufficient_role"),
    ];
    for (auth, status, reason) in cases {
        let body = expect_problem(put(auth.clone()).await.unwrap(), status, reason).await;
        let text = body.to_string();
        for secret in [&valid, &expired, &revoked, &other_ws, &viewer] {
            assert!(!text.contains(secret.as_str()), "no secret in an error body");
        }
    }
    assert_unchanged(&env, "team-a").await;
    assert_eq!(put(Some(format!("Bearer {valid}"))).await.unwrap().status(), 201, "the valid token works");
}

/// Start a second server over `app` (the same resources, some of them broken).
fn serve(app: helix_core::App) -> Server {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    Server::start(Arc::new(app), tokio::net::TcpListener::from_std(listener).unwrap())
}

pub async fn blob_store_outage_is_503_and_changes_nothing(b: Backend) {
    let env = TestEnv::start(b).await;
    let token = env.token(Role::Publisher, "team-a").await;
    let (bytes, d) = unique_blob(100);
    let broken = match b {
        Backend::Embedded => {
            // The blob folder disappears and something else takes its name.
            let blobs = env.data_dir().join(helix_core::app::BLOB_DIR);
            std::fs::rename(&blobs, env.data_dir().join("blobs.lost")).unwrap();
            std::fs::write(&blobs, b"not a directory").unwrap();
            None
        }
        Backend::Emulator => Some(serve(env.app_with(&[("HELIX_S3_ENDPOINT_URL", &closed_port_url())]).await.unwrap())),
    };
    let base = broken.as_ref().map(|s| s.url()).unwrap_or_else(|| env.url(""));
    let put = env
        .http
        .put(format!("{base}/v1/workspaces/team-a/blobs/{d}"))
        .header("authorization", format!("Bearer {token}"))
        .body(bytes)
        .send()
        .await
        .unwrap();
    let body = expect_problem(put, 503, "blob_store_unavailable").await;
    assert!(!body["detail"].as_str().unwrap().contains("127.0.0.1"), "no endpoint in the body: {body}");
    assert!(env.blob_events("team-a").await.is_empty(), "nothing reported as done");
    let admin = env.token(Role::Admin, "*").await;
    expect_problem(get_blob(&env, &admin, "team-a", &d.to_string(), "").await, 404, "blob_missing").await;
    let ready = env.http.get(format!("{base}/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 503);
    let ready: Value = ready.json().await.unwrap();
    let deps = ready["dependencies"].as_array().unwrap();
    assert_eq!(deps[0]["name"], "blob_store");
    assert_eq!(deps[0]["ok"], false);
    assert_eq!(deps[0]["reason"], "blob_store_unavailable");
    assert!(deps[1..].iter().all(|d| d["ok"] == true), "{ready}");
}

pub async fn meta_store_outage_is_503_and_changes_nothing(b: Backend) {
    assert_eq!(b, Backend::Emulator, "the embedded store is a file in the process; its outage is the blob one");
    let env = TestEnv::start(b).await;
    let token = env.token(Role::Publisher, "team-a").await;
    let broken = serve(env.app_with(&[("AWS_ENDPOINT_URL_DYNAMODB", &closed_port_url())]).await.unwrap());
    let (bytes, d) = unique_blob(100);
    let put = env
        .http
        .put(format!("{}/v1/workspaces/team-a/blobs/{d}", broken.url()))
        .header("authorization", format!("Bearer {token}"))
        .body(bytes)
        .send()
        .await
        .unwrap();
    expect_problem(put, 503, "meta_store_unavailable").await;
    assert_eq!(env.stored_objects().await, 0, "authorization failed closed before any write");
    let ready: Value = env.http.get(format!("{}/readyz", broken.url())).send().await.unwrap().json().await.unwrap();
    let ok: Vec<bool> = ready["dependencies"].as_array().unwrap().iter().map(|d| d["ok"].as_bool().unwrap()).collect();
    assert_eq!(ok, [true, false, false, true], "{ready}");
}

pub async fn signer_outage_fails_readiness_and_status(b: Backend) {
    assert_eq!(b, Backend::Emulator);
    let env = TestEnv::start(b).await;
    let token = env.token(Role::Viewer, "team-a").await;
    let broken = serve(env.app_with(&[("AWS_ENDPOINT_URL_KMS", &closed_port_url())]).await.unwrap());
    let status = env
        .http
        .get(format!("{}/v1/status", broken.url()))
        .header("authorization", format!("Bearer {token}"))
        .send()
        .await
        .unwrap();
    expect_problem(status, 503, "signer_unavailable").await;
    let ready: Value = env.http.get(format!("{}/readyz", broken.url())).send().await.unwrap().json().await.unwrap();
    assert_eq!(ready["ready"], false);
    assert_eq!(ready["dependencies"][3]["reason"], "signer_unavailable");
}
