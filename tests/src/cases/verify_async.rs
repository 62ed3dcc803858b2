//! Asynchronous verification of large uploads (issue 19 §3; helix_core::verify): above
//! HELIX_VERIFY_INLINE_MAX, `complete` answers 202 with a status URL and the whole file's SHA-256 is
//! verified in resumable steps (driven by the status polls, as on AWS, or by `helix serve`'s background
//! worker), then linked with `complete`'s own rules and one event, or refused as `complete` refuses.
//! The embedded store verified the joined file's SHA-256 while writing it (one step settles it); on the
//! emulator (moto: nothing trusted) the staged object is re-read in ranges, a few KiB per step here.

use std::time::Duration;

use helix_core::domain::{BundleName, Digest, Role, WorkspaceId};
use helix_core::ports::VerifyState;
use helix_core::verify::{self, Budget};
use serde_json::{Value, json};

use super::api::{bearer, get_blob, post_json};
use super::chunked::{linked, part_digests, part_size, plan_parts, send_parts};
use super::{expect_problem, unique_blob};
use crate::{Backend, TestEnv};

/// Bytes one step hashes at most on the emulator: a file of a few parts takes many steps.
const STEP_BYTES: usize = 1024 * 1024;

/// Files above one part and a half are verified after the answer; the polls drive it (as on AWS)
/// unless `background`.
async fn env_for(b: Backend, background: bool) -> TestEnv {
    let part = part_size(b);
    let vars = [
        ("HELIX_INLINE_MAX", "1024".to_owned()),
        ("HELIX_UPLOAD_PART_SIZE", part.to_string()),
        ("HELIX_VERIFY_INLINE_MAX", (part + part / 2).to_string()),
        ("HELIX_VERIFY_STEP_BYTES", STEP_BYTES.to_string()),
        ("HELIX_VERIFY_BACKGROUND", if background { "on" } else { "off" }.to_owned()),
    ];
    let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
    TestEnv::start_with(b, &vars).await
}

/// A chunked upload of `bytes` (parts true to their own SHA-256s) planned for `d` and sent: its plan.
async fn sent(env: &TestEnv, token: &str, d: &Digest, bytes: &[u8]) -> Value {
    let part = part_size(env.backend);
    let (status, plan) = plan_parts(env, token, "team-a", d, bytes.len(), &part_digests(bytes, part), json!({})).await;
    assert_eq!(status, 200, "{plan}");
    send_parts(env, &plan, bytes, part, &[]).await;
    plan
}

async fn complete_of(env: &TestEnv, token: &str, d: &Digest, plan: &Value) -> reqwest::Response {
    let body = json!({"upload_id": plan["upload_id"]});
    post_json(env, token, &format!("/v1/workspaces/team-a/uploads/{d}/complete"), body).await
}

async fn poll(env: &TestEnv, token: &str, url: &str) -> reqwest::Response {
    env.http.get(env.url(url)).header("authorization", bearer(token)).send().await.unwrap()
}

async fn completes_of(env: &TestEnv, d: &Digest) -> Vec<helix_core::domain::AuditEvent> {
    let linking = ["upload.complete", "blob.link", "blob.mount"];
    env.audit("team-a")
        .await
        .into_iter()
        .filter(|e| e.entity_id == d.to_string() && linking.contains(&e.action.as_str()))
        .collect()
}

/// A file of three parts above the threshold: `complete` answers 202 with `Location` (nothing linked
/// yet), a repeated `complete` the same 202; each poll advances the verification (on the emulator a
/// step of at most 1 MiB, alternately by a poll and by another App on the same stores, as another
/// invocation would: the SHA-256 state is carried in the meta store), until 200; then the blob is
/// served, with exactly one `upload.complete` event. Below the threshold `complete` still links at once.
pub async fn a_large_upload_is_verified_after_a_202_in_resumable_steps_and_linked_once(b: Backend) {
    let env = env_for(b, false).await;
    let part = part_size(b);
    let publisher = env.token(Role::Publisher, "team-a").await;
    let other = env.token(Role::Publisher, "team-b").await;
    let (bytes, d) = unique_blob(2 * part + part / 5);
    let plan = sent(&env, &publisher, &d, &bytes).await;
    let id = plan["upload_id"].as_str().unwrap().to_owned();

    let first = complete_of(&env, &publisher, &d, &plan).await;
    assert_eq!(first.status(), 202);
    let location = first.headers()["location"].to_str().unwrap().to_owned();
    let body: Value = first.json().await.unwrap();
    assert_eq!(body["state"], "verifying", "{body}");
    assert_eq!((body["size"].as_u64(), body["verified_bytes"].as_u64()), (Some(bytes.len() as u64), Some(0)));
    assert_eq!(body["status_url"], location.as_str());
    assert_eq!(location, format!("/v1/workspaces/team-a/uploads/{d}/status?upload_id={id}"));
    assert!(!linked(&env, &publisher, "team-a", &d).await, "nothing is linked before the verification");
    let again = complete_of(&env, &publisher, &d, &plan).await;
    assert_eq!(again.status(), 202, "a repeated complete is the same verification");
    let again: Value = again.json().await.unwrap();
    assert_eq!(again["upload_id"], id.as_str());

    // Another workspace's credential, another digest, an unknown upload: refused, nothing advanced.
    expect_problem(poll(&env, &other, &location).await, 403, "forbidden_workspace").await;
    let (_, d2) = unique_blob(10);
    let wrong = format!("/v1/workspaces/team-a/uploads/{d2}/status?upload_id={id}");
    expect_problem(poll(&env, &publisher, &wrong).await, 400, "invalid_request").await;
    let unknown = format!("/v1/workspaces/team-a/uploads/{d2}/status?upload_id={}", "0".repeat(32));
    expect_problem(poll(&env, &publisher, &unknown).await, 404, "upload_missing").await;
    let job = env.app.meta.verify_job(&WorkspaceId::parse("team-a").unwrap(), &id).await.unwrap().unwrap();
    assert_eq!((job.state, job.verified_bytes, job.steps), (VerifyState::Verifying, 0, 0), "{job:?}");

    // Steps, alternately by a poll and by another process's App, until linked.
    let second = env.app_with(&[]).await.unwrap();
    let ws = WorkspaceId::parse("team-a").unwrap();
    let mut seen = vec![0u64];
    let mut answers = 0;
    loop {
        answers += 1;
        assert!(answers < 100, "the verification ends");
        if answers % 2 == 0 {
            let budget = Budget {
                until: std::time::Instant::now() + Duration::from_secs(20),
                max_bytes: Some(STEP_BYTES as u64),
            };
            let job =
                verify::advance(&second, &ws, &id, &verify::worker_name("other-invocation"), budget).await.unwrap();
            seen.push(job.verified_bytes);
            if job.state == VerifyState::Linked {
                break;
            }
            continue;
        }
        let resp = poll(&env, &publisher, &location).await;
        let status = resp.status().as_u16();
        let body: Value = resp.json().await.unwrap();
        seen.push(body["verified_bytes"].as_u64().unwrap());
        if status == 200 {
            assert_eq!(body["state"], "linked", "{body}");
            break;
        }
        assert_eq!(status, 202, "{body}");
    }
    assert!(seen.windows(2).all(|w| w[0] <= w[1]), "progress only grows: {seen:?}");
    let job = env.app.meta.verify_job(&ws, &id).await.unwrap().unwrap();
    assert_eq!(job.state, VerifyState::Linked);
    if b == Backend::Emulator {
        let steps = bytes.len().div_ceil(STEP_BYTES) as u64;
        assert!(job.steps >= steps, "{} bytes in steps of {STEP_BYTES}: {} steps", bytes.len(), job.steps);
        assert!(seen.iter().filter(|&&v| v > 0 && v < bytes.len() as u64).count() >= 2, "partial progress: {seen:?}");
    }

    let got = get_blob(&env, &publisher, "team-a", &d.to_string(), "").await;
    let got = match got.status().as_u16() {
        307 => env.http.get(got.headers()["location"].to_str().unwrap()).send().await.unwrap(),
        _ => got,
    };
    assert_eq!(got.bytes().await.unwrap().to_vec(), bytes);
    let events = completes_of(&env, &d).await;
    assert_eq!(events.len(), 1, "one event for one link: {events:?}");
    assert_eq!(events[0].action, "upload.complete");
    assert_eq!(
        (events[0].details["verified_async"].clone(), events[0].details["chunked"].clone()),
        (json!(true), json!(true))
    );
    assert_eq!(events[0].details["upload_id"], id.as_str());
    assert!(events[0].actor.starts_with("publisher-user@"), "the completing caller: {}", events[0].actor);
    // Linked: complete and status answer 200.
    assert_eq!(complete_of(&env, &publisher, &d, &plan).await.status(), 200);
    assert_eq!(poll(&env, &publisher, &location).await.status(), 200);

    // Below the threshold: linked within complete (201), as before.
    let (small, ds) = unique_blob(part + part / 4);
    let plan = sent(&env, &publisher, &ds, &small).await;
    assert_eq!(complete_of(&env, &publisher, &ds, &plan).await.status(), 201);
}

/// Parts true to their own SHA-256s but not the digest's file: 202, then the verification ends failed
/// with `digest_mismatch` (the status and a repeated complete), nothing linked or audited as linked,
/// the plan and parts removed; the right file then goes up.
pub async fn a_large_upload_of_wrong_bytes_ends_failed_with_digest_mismatch_and_links_nothing(b: Backend) {
    let env = env_for(b, false).await;
    let part = part_size(b);
    let publisher = env.token(Role::Publisher, "team-a").await;
    let (bytes, d) = unique_blob(2 * part + 100);
    let (wrong, _) = unique_blob(bytes.len());
    let plan = sent(&env, &publisher, &d, &wrong).await;
    let id = plan["upload_id"].as_str().unwrap().to_owned();
    let first = complete_of(&env, &publisher, &d, &plan).await;
    assert_eq!(first.status(), 202);
    let location = first.headers()["location"].to_str().unwrap().to_owned();
    let mut polls = 0;
    let refused = loop {
        polls += 1;
        assert!(polls < 100, "the verification ends");
        let resp = poll(&env, &publisher, &location).await;
        if resp.status() != 202 {
            break resp;
        }
    };
    let body = expect_problem(refused, 400, "digest_mismatch").await;
    assert!(body["detail"].as_str().unwrap().contains(&d.to_string()), "{body}");
    expect_problem(poll(&env, &publisher, &location).await, 400, "digest_mismatch").await;
    expect_problem(complete_of(&env, &publisher, &d, &plan).await, 400, "digest_mismatch").await;
    assert!(!linked(&env, &publisher, "team-a", &d).await);
    assert!(completes_of(&env, &d).await.is_empty(), "nothing audited as linked");
    let sha = part_digests(&wrong, part);
    let (status, gone) = plan_parts(&env, &publisher, "team-a", &d, bytes.len(), &sha, json!({"upload_id": id})).await;
    assert_eq!((status, gone["reason"].as_str()), (404, Some("upload_missing")), "plan and parts removed: {gone}");

    let plan = sent(&env, &publisher, &d, &bytes).await;
    assert_eq!(complete_of(&env, &publisher, &d, &plan).await.status(), 202);
    let location =
        format!("/v1/workspaces/team-a/uploads/{d}/status?upload_id={}", plan["upload_id"].as_str().unwrap());
    let mut polls = 0;
    while poll(&env, &publisher, &location).await.status() == 202 {
        polls += 1;
        assert!(polls < 100, "the verification ends");
    }
    assert!(linked(&env, &publisher, "team-a", &d).await, "the digest is not poisoned");
}

/// A job whose lease another worker holds is left alone (a poll answers its state and advances
/// nothing); once the lease has run out, two workers racing for it (a poll and another process's
/// App) make one link and one event; a freeze holds the link of a verified upload until it is lifted.
pub async fn a_verification_leased_to_another_worker_is_not_advanced_twice(b: Backend) {
    let env = env_for(b, false).await;
    let part = part_size(b);
    let publisher = env.token(Role::Publisher, "team-a").await;
    let admin = env.token(Role::Admin, "*").await;
    let ws = WorkspaceId::parse("team-a").unwrap();
    let (bytes, d) = unique_blob(2 * part + 7);
    let plan = sent(&env, &publisher, &d, &bytes).await;
    let id = plan["upload_id"].as_str().unwrap().to_owned();
    let location = complete_of(&env, &publisher, &d, &plan).await.headers()["location"].to_str().unwrap().to_owned();

    // Another worker holds the lease: polls answer 202 and change nothing.
    let mut job = env.app.meta.verify_job(&ws, &id).await.unwrap().unwrap();
    job.version += 1;
    job.lease_owner = Some("another-worker".into());
    job.lease_until = helix_core::domain::time::now_unix() + 600;
    assert!(env.app.meta.save_verify_job(&job).await.unwrap());
    for _ in 0..3 {
        assert_eq!(poll(&env, &publisher, &location).await.status(), 202);
    }
    assert_eq!(env.app.meta.verify_job(&ws, &id).await.unwrap().unwrap(), job, "not advanced under another's lease");
    // A stale write (a worker that lost its lease) is refused by the version condition.
    let mut stale = job.clone();
    stale.verified_bytes = 64;
    assert!(!env.app.meta.save_verify_job(&stale).await.unwrap(), "a write over an older version is refused");

    // A freeze holds the link: the hashing may go on, the link waits (503), nothing is linked.
    let frozen = post_json(&env, &admin, "/v1/admin/freeze", json!({"reason": "incident drill"})).await;
    assert_eq!(frozen.status(), 200);
    job.version += 1;
    job.lease_until = 0;
    assert!(env.app.meta.save_verify_job(&job).await.unwrap());
    let mut polls = 0;
    loop {
        polls += 1;
        assert!(polls < 100, "the verification reaches the link");
        let resp = poll(&env, &publisher, &location).await;
        if resp.status() == 503 {
            expect_problem(resp, 503, "registry_frozen").await;
            break;
        }
        assert_eq!(resp.status(), 202);
    }
    assert_eq!(env.app.meta.verify_job(&ws, &id).await.unwrap().unwrap().state, VerifyState::Verified);
    assert!(!linked(&env, &publisher, "team-a", &d).await, "nothing linked while frozen");
    assert_eq!(post_json(&env, &admin, "/v1/admin/unfreeze", json!({"reason": "drill over"})).await.status(), 200);

    // Two workers race for the expired lease: one link, one event.
    let second = env.app_with(&[]).await.unwrap();
    let budget = Budget { until: std::time::Instant::now() + Duration::from_secs(20), max_bytes: None };
    let (a, b2) = tokio::join!(
        verify::advance(&env.app, &ws, &id, "worker-a", budget),
        verify::advance(&second, &ws, &id, "worker-b", budget)
    );
    let (a, b2) = (a.unwrap(), b2.unwrap());
    assert!(a.state == VerifyState::Linked || b2.state == VerifyState::Linked, "one of them linked: {a:?} {b2:?}");
    let mut polls = 0;
    while poll(&env, &publisher, &location).await.status() == 202 {
        polls += 1;
        assert!(polls < 100);
    }
    assert!(linked(&env, &publisher, "team-a", &d).await);
    assert_eq!(completes_of(&env, &d).await.len(), 1, "exactly one event");
}

/// `helix serve` verifies in the background: after the 202 nobody polls, and the blob is linked; and
/// `helix push` of a large file follows the 202 to the link by itself.
pub async fn helix_serve_verifies_in_the_background_and_push_follows_the_202(b: Backend) {
    let env = env_for(b, true).await;
    let part = part_size(b);
    let publisher = env.token(Role::Publisher, "team-a").await;
    let (bytes, d) = unique_blob(2 * part + 3);
    let plan = sent(&env, &publisher, &d, &bytes).await;
    assert_eq!(complete_of(&env, &publisher, &d, &plan).await.status(), 202);
    let mut waited = 0;
    while !linked(&env, &publisher, "team-a", &d).await {
        waited += 1;
        assert!(waited < 600, "the background worker links it");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(completes_of(&env, &d).await.len(), 1);

    // The CLI, against a registry whose verifications only the polls drive.
    let polled = env_for(b, false).await;
    let token = polled.token(Role::Publisher, "team-a").await;
    let src = polled.dir.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    let (big, dbig) = unique_blob(2 * part + part / 3);
    std::fs::write(src.join("big.bin"), &big).unwrap();
    let registry = helix_cli::client::Registry::new(&polled.url(""), Some(token.clone()))
        .unwrap()
        .with_state_dir(Some(polled.dir.path().join("client-state")));
    let (ws, name, version) =
        (WorkspaceId::parse("team-a").unwrap(), BundleName::parse("huge").unwrap(), BundleName::parse("1").unwrap());
    let opts = helix_cli::transfer::Options { jobs: 2, quiet: true, inline_max: None };
    let pushed = helix_cli::transfer::push(&registry, &src, &ws, &name, &version, opts).await.unwrap();
    assert_eq!(pushed["uploaded_files"], 1, "{pushed}");
    assert!(linked(&polled, &token, "team-a", &dbig).await);
    let out = polled.dir.path().join("out");
    helix_cli::transfer::pull(&registry, &ws, &name, &version, &out, opts).await.unwrap();
    assert_eq!(std::fs::read(out.join("big.bin")).unwrap(), big);
}

/// An ended job (linked or failed) is kept `ENDED_JOB_KEPT_SECONDS` for its status URL, then removed;
/// a running one never is. SQLite deletes expired ones when another job ends; on DynamoDB an ended job
/// carries `purge_at`, the meta table's TTL attribute, and AWS deletes it (moto does not expire items:
/// the attribute is what is checked there).
pub async fn an_ended_verification_job_is_kept_seven_days_then_removed_and_a_running_one_never(b: Backend) {
    use helix_core::ports::{ENDED_JOB_KEPT_SECONDS, VerifyJob};
    let env = env_for(b, false).await;
    let ws = WorkspaceId::parse("team-a").unwrap();
    let now = helix_core::domain::time::now_unix();
    let job = |id: &str, state: VerifyState, age_days: i64| VerifyJob {
        state,
        created_at: now - age_days * 86400,
        updated_at: now - age_days * 86400,
        ..VerifyJob::started(&ws, id, &unique_blob(10).1, 10, false, "test".into(), "r".into())
    };
    let jobs = [
        job("ended-8-days-ago", VerifyState::Failed, 8),
        job("linked-8-days-ago", VerifyState::Linked, 8),
        job("ended-6-days-ago", VerifyState::Linked, 6),
        job("running-30-days", VerifyState::Verifying, 30),
        job("verified-30-days", VerifyState::Verified, 30),
    ];
    for j in &jobs {
        assert!(env.app.meta.save_verify_job(j).await.unwrap(), "{}", j.upload_id);
        assert_eq!(j.purge_at(), j.is_over().then_some(j.updated_at + ENDED_JOB_KEPT_SECONDS));
    }
    // A job ends now.
    let mut ending = job("ending-now", VerifyState::Verifying, 0);
    assert!(env.app.meta.save_verify_job(&ending).await.unwrap());
    ending.version += 1;
    ending.state = VerifyState::Linked;
    assert!(env.app.meta.save_verify_job(&ending).await.unwrap());

    let kept = |id: &'static str| {
        let (app, ws) = (env.app.clone(), ws.clone());
        async move { app.meta.verify_job(&ws, id).await.unwrap().is_some() }
    };
    for id in ["ended-6-days-ago", "running-30-days", "verified-30-days", "ending-now"] {
        assert!(kept(id).await, "{id} is kept");
    }
    match &env.aws {
        None => {
            for id in ["ended-8-days-ago", "linked-8-days-ago"] {
                assert!(!kept(id).await, "{id} was removed when another job ended");
            }
        }
        Some(aws) => {
            for j in &jobs {
                let item = aws
                    .ddb
                    .get_item()
                    .table_name(&aws.table)
                    .key("pk", aws_sdk_dynamodb::types::AttributeValue::S(format!("VERIFY#{ws}")))
                    .key("sk", aws_sdk_dynamodb::types::AttributeValue::S(format!("UPLOAD#{}", j.upload_id)))
                    .send()
                    .await
                    .unwrap()
                    .item
                    .unwrap();
                let purge_at = item.get("purge_at").map(|v| v.as_n().unwrap().parse::<i64>().unwrap());
                assert_eq!(purge_at, j.purge_at(), "{}", j.upload_id);
            }
        }
    }
}
