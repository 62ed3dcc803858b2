//! Bad input, bad credentials and dependency outages: each refused with its documented status and
//! reason, and none of them changes any store.

use std::sync::Arc;

use helix_core::domain::Role;
use helix_core::ports::BlobKey;
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
    let wrong_method = env.http.delete(env.url(&format!("/v1/workspaces/team-a/blobs/{d}"))).send().await.unwrap();
    assert_eq!(wrong_method.headers()["allow"], "GET, HEAD, PUT", "RFC 9110: a 405 lists the methods");
    expect_problem(wrong_method, 405, "method_not_allowed").await;
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

use super::serve_app as serve;

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

/// The data dir holds the signing key and the presign secret: it is created 0700 (and an existing
/// one opened to others is tightened), its secret files are 0600.
pub async fn embedded_data_dir_is_private_and_its_secret_files_are_0600(b: Backend) {
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(b, Backend::Embedded);
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let env = TestEnv::start(b).await;
    assert_eq!(mode(&env.data_dir()), 0o700);
    for secret in [helix_core::app::SIGNING_KEY_FILE, helix_core::app::PRESIGN_SECRET_FILE] {
        assert_eq!(mode(&env.data_dir().join(secret)), 0o600, "{secret}");
    }
    std::fs::set_permissions(env.data_dir(), std::fs::Permissions::from_mode(0o755)).unwrap();
    env.app_with(&[]).await.expect("restart on the same data dir");
    assert_eq!(mode(&env.data_dir()), 0o700, "tightened at start");
}

/// A commit the store applied but whose answer was lost is resolved, never reported as "nothing
/// changed": the adapter re-sends the transaction with the same client request token, a rotation
/// hands its caller the new secret whatever the re-send says, and a change that may or may not have
/// happened is a 503 `outcome_unknown`, not a `*_unavailable` that claims nothing changed.
pub async fn a_commit_whose_answer_is_lost_is_resolved_or_reported_as_unknown(b: Backend) {
    assert_eq!(b, Backend::Emulator, "needs a network between the registry and its store");
    let env = TestEnv::start(b).await;
    let endpoint = env.aws.as_ref().unwrap().endpoint.clone();
    let proxy = crate::fault_proxy::FaultProxy::start(&endpoint, "TransactWriteItems", 3).await;
    let server = serve(env.app_with(&[("AWS_ENDPOINT_URL_DYNAMODB", &proxy.url)]).await.unwrap());
    let call = |method: reqwest::Method, path: &str, token: &str| {
        env.http.request(method, format!("{}{path}", server.url())).header("authorization", format!("Bearer {token}"))
    };

    // The first answers are lost after the rotation committed.
    let old = env.token(Role::Publisher, "team-a").await;
    let rotated = call(reqwest::Method::POST, "/v1/tokens/rotate", &old).send().await.unwrap();
    assert_eq!(rotated.status(), 201, "the caller gets the new secret");
    let new = rotated.json::<Value>().await.unwrap()["token"].as_str().unwrap().to_owned();
    assert!(proxy.seen.load(std::sync::atomic::Ordering::SeqCst) > 3, "the transaction was sent again");
    let tokens = proxy.tokens.lock().unwrap().clone();
    assert!(tokens.len() >= 4 && tokens.iter().all(|t| *t == tokens[0]), "re-sent with the same token: {tokens:?}");
    expect_problem(call(reqwest::Method::GET, "/v1/whoami", &old).send().await.unwrap(), 401, "token_revoked").await;
    assert_eq!(call(reqwest::Method::GET, "/v1/whoami", &new).send().await.unwrap().status(), 200);
    let rotations = env.audit("team-a").await.into_iter().filter(|e| e.action == "token.rotate").count();
    assert_eq!(rotations, 1, "one rotation, one event");

    // Every answer lost: a link that was in fact applied is reported as unknown, not as unchanged.
    proxy.drops.store(usize::MAX, std::sync::atomic::Ordering::SeqCst);
    let (bytes, d) = unique_blob(100);
    let put = call(reqwest::Method::PUT, &format!("/v1/workspaces/team-a/blobs/{d}"), &new).body(bytes.clone());
    let body = expect_problem(put.send().await.unwrap(), 503, "outcome_unknown").await;
    assert!(body["detail"].as_str().unwrap().contains("may or may not"), "{body}");
    assert_eq!(get_blob(&env, &new, "team-a", &d.to_string(), "").await.bytes().await.unwrap().to_vec(), bytes);
    // A rotation whose answers are all lost still hands out its secret: the new token is stored.
    let rotated = call(reqwest::Method::POST, "/v1/tokens/rotate", &new).send().await.unwrap();
    assert_eq!(rotated.status(), 201);
    let newer = rotated.json::<Value>().await.unwrap()["token"].as_str().unwrap().to_owned();
    assert_eq!(whoami_status(&env, &newer).await, 200);
    assert_eq!(whoami_status(&env, &new).await, 401);

    // What DynamoDB itself does: a re-send with the same token is answered with the first outcome.
    // The lost commit is then reported as done, and as made by this request (201, created).
    let dynamo_like = crate::fault_proxy::FaultProxy::start_with(&endpoint, "TransactWriteItems", 2, true).await;
    let server = serve(env.app_with(&[("AWS_ENDPOINT_URL_DYNAMODB", &dynamo_like.url)]).await.unwrap());
    let (bytes, d) = unique_blob(100);
    let put = env
        .http
        .put(format!("{}/v1/workspaces/team-a/blobs/{d}", server.url()))
        .header("authorization", format!("Bearer {newer}"))
        .body(bytes.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 201);
    assert_eq!(put.json::<Value>().await.unwrap()["created"], true);
    let links = env.blob_events("team-a").await.into_iter().filter(|e| e.entity_id == d.to_string()).count();
    assert_eq!(links, 1, "one link, one event");
    assert_eq!(dynamo_like.seen.load(std::sync::atomic::Ordering::SeqCst), 3, "answered on the second re-send");
}

async fn whoami_status(env: &TestEnv, token: &str) -> u16 {
    env.http
        .get(env.url("/v1/whoami"))
        .header("authorization", format!("Bearer {token}"))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// Every token body field has a limit, refused with 400 before any store is touched; JSON integers
/// may come as whole floats. On DynamoDB an item the store itself refuses is a 400, not an outage,
/// and is not retried.
pub async fn token_fields_are_bounded_and_refused_with_reason(b: Backend) {
    let env = TestEnv::start(b).await;
    let admin = env.token(Role::Admin, "*").await;
    let issue = |body: Value| post_json(&env, &admin, "/v1/tokens", body);
    let base = || json!({"user": "u", "role": "viewer", "workspace_id": "team-a"});
    let with = |k: &str, v: Value| {
        let mut b = base();
        b[k] = v;
        b
    };
    for (body, what) in [
        (with("ttl_seconds", json!(i64::MAX - 1)), "ttl near i64::MAX"),
        (with("ttl_seconds", json!(0)), "zero ttl"),
        (with("ttl_seconds", json!(3650 * 86_400 + 1)), "ttl over 3650 days"),
        (with("ttl_seconds", json!(1.5)), "fractional ttl"),
        (with("ttl", json!("1h")), "ttl strings are the CLI's, not the API's"),
        (with("description", json!("d".repeat(1025))), "description over 1024 characters"),
        (with("user", json!("u".repeat(257))), "user over 256 characters"),
        (with("user", json!("")), "empty user"),
        (with("user", json!("a\u{0}b")), "control character in user"),
        (with("user", json!("ad\u{202E}nimda")), "a bidirectional override in user"),
    ] {
        let body = expect_problem(issue(body).await, 400, "invalid_request").await;
        assert!(!body["detail"].as_str().unwrap().is_empty(), "{what}");
    }
    assert!(env.audit("team-a").await.is_empty(), "nothing issued");
    let ok = issue(json!({"user": "u", "role": "viewer", "workspace_id": "team-a", "ttl_seconds": 3600.0,
        "description": "é".repeat(1024)}))
    .await;
    assert_eq!(ok.status(), 201, "a whole float is an integer; 1024 characters (2048 bytes) is within the limit");
    let plan = post_json(
        &env,
        &admin,
        "/v1/workspaces/team-a/uploads",
        json!({"digest": unique_blob(3).1.to_string(), "size": 3.0}),
    )
    .await;
    assert_eq!(plan.status(), 200);

    if b == Backend::Emulator {
        // Past the API's limits, straight at the store: DynamoDB refuses an item over 400 KB.
        let started = std::time::Instant::now();
        let secret = helix_core::domain::BearerToken::generate();
        let record = helix_core::domain::TokenRecord::new(
            &secret,
            "big".into(),
            Role::Viewer,
            helix_core::domain::Scope::parse("team-a").unwrap(),
            None,
            "tests".into(),
            Some("x".repeat(500_000)),
        );
        let draft = helix_core::domain::AuditDraft {
            stream: "team-a".into(),
            actor: "tests".into(),
            action: "token.issue".into(),
            entity_type: "token".into(),
            entity_id: record.id.clone(),
            outcome: helix_core::domain::Outcome::Success,
            request_id: "r".into(),
            details: json!({}),
        };
        let err = env.app.meta.commit(helix_core::ports::Change::IssueToken(record), draft).await.unwrap_err();
        assert_eq!(helix_core::http::problem::classify(&err), (400, "invalid_request"), "{err:?}");
        assert!(started.elapsed() < std::time::Duration::from_secs(5), "refused, not retried as an outage");
    }
}

/// An operator who declares a custom S3 store checksum-verifying is taken at their word only if the
/// store refuses a wrong checksum: moto keeps it, so the registry refuses to start, naming the variable.
pub async fn declaring_a_lax_store_checksum_verifying_fails_at_start(b: Backend) {
    assert_eq!(b, Backend::Emulator);
    let env = TestEnv::start(b).await;
    let err = match env.app_with(&[("HELIX_S3_VERIFIES_CHECKSUMS", "1")]).await {
        Ok(_) => panic!("started on a store that accepts wrong checksums"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("HELIX_S3_VERIFIES_CHECKSUMS"), "{err}");
    assert_eq!(env.staged_uploads().await, 0, "the probe object is removed");
    env.app_with(&[("HELIX_S3_VERIFIES_CHECKSUMS", "0")]).await.expect("re-hashing works on any store");
}

/// One request of the stall drill.
struct Attempt {
    digest: String,
    bytes: Vec<u8>,
    started: std::time::Instant,
    took: std::time::Duration,
    status: u16,
    reason: String,
}

/// The store stalls under a publish load (moto paused with SIGSTOP for longer than the SDK's
/// timeouts, then resumed): requests fail within a bounded time with 503 and never hang; nothing is
/// acknowledged that is not there afterwards; a 503 that says "nothing was changed" changed nothing;
/// the registry serves again once the store is back.
pub async fn a_stalled_store_fails_requests_in_bounded_time_and_loses_no_acknowledged_write(b: Backend) {
    use std::time::{Duration, Instant};
    assert_eq!(b, Backend::Emulator);
    let moto = crate::PrivateMoto::start().await;
    let env = Arc::new(TestEnv::start_at(&moto.endpoint, &[]).await);
    let token = env.token(Role::Publisher, "team-a").await;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let workers: Vec<_> = (0..6)
        .map(|_| {
            let (env, token, stop) = (env.clone(), token.clone(), stop.clone());
            tokio::spawn(async move {
                let mut attempts = Vec::new();
                while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    let (bytes, d) = unique_blob(1024);
                    let started = Instant::now();
                    let resp = put_blob(&env, &token, "team-a", &d.to_string(), bytes.clone()).await;
                    let status = resp.status().as_u16();
                    let body: Value = resp.json().await.unwrap_or(Value::Null);
                    let reason = body["reason"].as_str().unwrap_or("").to_owned();
                    attempts.push(Attempt {
                        digest: d.to_string(),
                        bytes,
                        started,
                        took: started.elapsed(),
                        status,
                        reason,
                    });
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                attempts
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(2)).await;
    moto.signal("STOP");
    let paused = Instant::now();
    tokio::time::sleep(Duration::from_secs(32)).await;
    moto.signal("CONT");
    let resumed = Instant::now();
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let mut attempts = Vec::new();
    for w in workers {
        attempts.extend(w.await.unwrap());
    }

    let done = |a: &Attempt| a.started + a.took;
    let mut tally = std::collections::BTreeMap::new();
    for a in &attempts {
        *tally.entry(format!("{} {}", a.status, a.reason)).or_insert(0) += 1;
    }
    let slowest = attempts.iter().map(|a| a.took).max().unwrap_or_default();
    eprintln!("stall drill: {} requests, answers {tally:?}, slowest {slowest:?}", attempts.len());
    for a in &attempts {
        assert!(a.took < Duration::from_secs(40), "a request hung for {:?}", a.took);
        match (a.status, a.reason.as_str()) {
            (200 | 201, _) => {}
            (
                503,
                "blob_store_unavailable" | "meta_store_unavailable" | "audit_log_unavailable" | "outcome_unknown",
            ) => {}
            other => panic!("unexpected answer during the drill: {other:?}"),
        }
        // Begun and answered while the store was paused: never a success.
        if a.started > paused && done(a) < resumed {
            assert_eq!(a.status, 503, "success reported while the store was stalled");
        }
    }
    // Requests in flight when the store stopped answering time out while it is still paused.
    let felt = attempts.iter().filter(|a| a.status == 503 && done(a) > paused && done(a) < resumed).count();
    assert!(felt > 0, "the stall was felt: 503s answered while the store was paused");
    assert!(attempts.iter().any(|a| a.started > resumed && a.status == 201), "publishing works again after the stall");
    assert!(attempts.iter().any(|a| a.started < paused && a.status == 201), "publishing worked before it");

    for a in &attempts {
        let got = get_blob(&env, &token, "team-a", &a.digest, "").await;
        match (a.status, a.reason.as_str()) {
            (200 | 201, _) => {
                assert_eq!(got.status(), 200, "an acknowledged write is present");
                assert_eq!(got.bytes().await.unwrap().to_vec(), a.bytes);
            }
            // May or may not have been applied: either answer is honest.
            (503, "outcome_unknown") => assert!(matches!(got.status().as_u16(), 200 | 404)),
            // "Nothing was changed" must be true.
            _ => assert_eq!(got.status(), 404, "a 503 {} left a link behind", a.reason),
        }
    }
    let events = env.audit("team-a").await;
    helix_core::domain::audit::verify_chain(&events).unwrap();
    let acknowledged = attempts.iter().filter(|a| a.status / 100 == 2).count();
    assert!(events.iter().filter(|e| e.action == "blob.link").count() >= acknowledged);
}

/// The tampered-upload and wrong-checksum cases against an S3 that, unlike moto, checks signed
/// checksums and SigV4 presigned signatures (s3s-fs in process, tests/src/strict_s3.rs): the store
/// refuses tampered bytes and forged URLs; bytes it refused but kept are still caught by the
/// registry; correct uploads, copies (pinned by ETag: no versioning), presigned GETs and a declared
/// checksum-verifying configuration all work against it.
pub async fn a_strict_s3_refuses_tampered_uploads_and_forged_urls_and_the_registry_still_verifies(b: Backend) {
    use super::api::{complete, plan, upload_to};
    assert_eq!(b, Backend::Emulator);
    let strict = crate::strict_s3::StrictS3::start("helix-strict").await;
    let staged_file =
        |plan: &Value| strict.dir.path().join("helix-strict/uploads/team-a").join(plan["upload_id"].as_str().unwrap());
    let overrides = [
        ("HELIX_S3_ENDPOINT_URL", strict.url.as_str()),
        ("HELIX_S3_BUCKET", "helix-strict"),
        ("HELIX_INLINE_MAX", "1024"),
    ];
    let env = TestEnv::start_with(b, &overrides).await;
    let publisher = env.token(Role::Publisher, "team-a").await;
    let (good, d) = unique_blob(5000);
    let (evil, _) = unique_blob(5000);
    let digest = d.to_string();

    // Tampered bytes under the signed checksum: refused by the store itself.
    let (_, first) = plan(&env, &publisher, "team-a", &digest, 5000, json!({})).await;
    assert_eq!(upload_to(&env, &first, evil.clone(), true).await.status(), 400, "BadDigest from the store");
    // A forged signature, and the signature of one upload used for another key: refused.
    let url = first["upload"]["url"].as_str().unwrap().to_owned();
    let forged_sig = {
        let mut f = first.clone();
        let last = url.chars().last().unwrap();
        f["upload"]["url"] = json!(format!("{}{}", &url[..url.len() - 1], if last == '0' { '1' } else { '0' }));
        f
    };
    assert_eq!(upload_to(&env, &forged_sig, good.clone(), true).await.status(), 403);
    let other_key = {
        let mut f = first.clone();
        let id = first["upload_id"].as_str().unwrap();
        f["upload"]["url"] = json!(url.replace(id, &"0".repeat(32)));
        f
    };
    assert_eq!(upload_to(&env, &other_key, good.clone(), true).await.status(), 403);
    // This store keeps the bytes it refused: the registry, not the store, must refuse to link them.
    assert_eq!(std::fs::read(staged_file(&first)).unwrap(), evil, "s3s-fs keeps refused bytes");
    expect_problem(complete(&env, &publisher, "team-a", &digest, &first).await, 400, "digest_mismatch").await;
    assert!(!staged_file(&first).exists(), "and removes them");
    expect_problem(get_blob(&env, &publisher, "team-a", &digest, "").await, 404, "blob_missing").await;

    // The correct upload goes through: staged, verified, copied (ETag-pinned), linked, served.
    let (_, second) = plan(&env, &publisher, "team-a", &digest, 5000, json!({})).await;
    let up = upload_to(&env, &second, good.clone(), true).await;
    assert!(up.status().is_success(), "{}", up.status());
    assert_eq!(complete(&env, &publisher, "team-a", &digest, &second).await.status(), 201);
    let redirect = get_blob(&env, &publisher, "team-a", &digest, "").await;
    assert_eq!(redirect.status(), 307);
    let location = redirect.headers()["location"].to_str().unwrap().to_owned();
    let got = env.http.get(&location).send().await.unwrap();
    assert_eq!(got.status(), 200);
    assert_eq!(got.bytes().await.unwrap().to_vec(), good);
    let mut forged = location.clone();
    let last = forged.pop().unwrap();
    forged.push(if last == '0' { '1' } else { '0' });
    assert_eq!(env.http.get(&forged).send().await.unwrap().status(), 403, "a forged download URL is refused");

    // Inline puts with their checksum, and a wrong object planted under a digest's own key.
    let (small, small_d) = unique_blob(600);
    let planted = strict.dir.path().join("helix-strict/blobs").join(BlobKey::primary(&small_d).storage_key());
    std::fs::create_dir_all(planted.parent().unwrap()).unwrap();
    std::fs::write(&planted, b"poison").unwrap();
    assert_eq!(put_blob(&env, &publisher, "team-a", &small_d.to_string(), small.clone()).await.status(), 201);
    assert_eq!(
        get_blob(&env, &publisher, "team-a", &small_d.to_string(), "").await.bytes().await.unwrap().to_vec(),
        small
    );
    let ws = helix_core::domain::WorkspaceId::parse("team-a").unwrap();
    assert_eq!(env.app.meta.blob_link(&ws, &small_d).await.unwrap().unwrap().slot, 1);

    // This store refuses wrong checksums: declaring so passes the start-up probe.
    env.app_with(&[("HELIX_S3_VERIFIES_CHECKSUMS", "1")]).await.expect("a checksum-verifying store is accepted");
    let probes = strict.dir.path().join("helix-strict/uploads/.checksum-probe");
    let left = std::fs::read_dir(&probes).map(|d| d.count()).unwrap_or(0);
    assert_eq!(left, 0, "the refused probe object is removed too");
}

/// A presign secret file that is not one (empty after a crash, truncated, edited) refuses the start:
/// an empty HMAC key would let anyone sign local presigned URLs.
pub async fn an_empty_presign_secret_refuses_to_start(b: Backend) {
    assert_eq!(b, Backend::Embedded);
    let env = TestEnv::start(b).await;
    let secret = env.data_dir().join(helix_core::app::PRESIGN_SECRET_FILE);
    for bad in ["", "abc", &"z".repeat(64)] {
        std::fs::write(&secret, bad).unwrap();
        let err = match env.app_with(&[]).await {
            Ok(_) => panic!("started with presign secret {bad:?}"),
            Err(e) => e.to_string(),
        };
        assert!(err.contains("presign"), "{err}");
    }
}
