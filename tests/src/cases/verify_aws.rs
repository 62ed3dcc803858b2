//! Unattended verification on AWS (docs/decisions.md, "Unattended verification on AWS"): `complete` of a
//! large upload puts a `verification.step` event on the verify bus (an EventBridge bus on the emulator;
//! a rule routes its events to an SQS queue the test reads, as the template's rule routes them to
//! VerifyFunction); the verify entry (`publish::verify_step`), given each event in turn, advances the
//! job one step and puts the next step's event, until the job is linked: no status poll is made. A
//! lease held by a dead worker is waited out and taken over; a bus that refuses the next step's event
//! fails the invocation (Lambda retries it) with the step's progress saved.

use std::time::{Duration, Instant};

use helix_core::domain::time::now_unix;
use helix_core::domain::{Digest, Role, WorkspaceId};
use helix_core::ports::VerifyState;
use serde_json::{Value, json};

use super::api::post_json;
use super::chunked::{linked, part_digests, part_size, plan_parts, send_parts};
use super::notify_aws::aws_json;
use super::unique_blob;
use crate::{Backend, TestEnv};

/// Bytes one step hashes at most: a file of a few parts takes many invocations.
const STEP_BYTES: usize = 1024 * 1024;

/// A registry whose publish App has the verify bus (an EventBridge bus on the emulator, with a rule to
/// a queue): the env and the queue's URL. Polls do not drive anything here: none is made.
async fn env_with_bus(b: Backend) -> (TestEnv, String) {
    assert_eq!(b, Backend::Emulator, "the verify bus is EventBridge: AWS adapters only");
    let part = part_size(b);
    let bus = format!("helix-verify-{}", helix_core::domain::random_hex::<5>());
    let vars = [
        ("HELIX_INLINE_MAX", "1024".to_owned()),
        ("HELIX_UPLOAD_PART_SIZE", part.to_string()),
        ("HELIX_VERIFY_INLINE_MAX", (part + part / 2).to_string()),
        ("HELIX_VERIFY_STEP_BYTES", STEP_BYTES.to_string()),
        ("HELIX_VERIFY_BACKGROUND", "off".to_owned()),
        ("HELIX_VERIFY_BUS_NAME", bus.clone()),
    ];
    let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let env = TestEnv::start_with(b, &vars).await;
    aws_json(&env, "events", "CreateEventBus", json!({"Name": bus})).await;
    let queue = aws_json(&env, "sqs", "CreateQueue", json!({"QueueName": format!("{bus}-steps")})).await;
    let queue_url = queue["QueueUrl"].as_str().unwrap().to_owned();
    let attrs =
        aws_json(&env, "sqs", "GetQueueAttributes", json!({"QueueUrl": queue_url, "AttributeNames": ["QueueArn"]}))
            .await;
    let queue_arn = attrs["Attributes"]["QueueArn"].as_str().unwrap().to_owned();
    // The template's rule (VerifyFunction's Step event), with a queue as its target.
    let pattern =
        json!({"source": [helix_core::verify::EVENT_SOURCE], "detail-type": [helix_core::verify::EVENT_DETAIL_TYPE]});
    aws_json(
        &env,
        "events",
        "PutRule",
        json!({"Name": "steps", "EventBusName": bus, "EventPattern": pattern.to_string()}),
    )
    .await;
    aws_json(
        &env,
        "events",
        "PutTargets",
        json!({"Rule": "steps", "EventBusName": bus, "Targets": [{"Id": "q", "Arn": queue_arn}]}),
    )
    .await;
    assert!(publish::bus::install(&env.app), "the publish function's App puts step events on the bus");
    (env, queue_url)
}

/// The step events on the queue now (each taken off it).
async fn step_events(env: &TestEnv, queue_url: &str) -> Vec<Value> {
    let mut got = Vec::new();
    loop {
        let m = aws_json(env, "sqs", "ReceiveMessage", json!({"QueueUrl": queue_url, "MaxNumberOfMessages": 10})).await;
        let msgs = m["Messages"].as_array().cloned().unwrap_or_default();
        if msgs.is_empty() {
            return got;
        }
        for msg in msgs {
            got.push(serde_json::from_str(msg["Body"].as_str().unwrap()).unwrap());
            let receipt = msg["ReceiptHandle"].as_str().unwrap();
            aws_json(env, "sqs", "DeleteMessage", json!({"QueueUrl": queue_url, "ReceiptHandle": receipt})).await;
        }
    }
}

/// A chunked upload of three parts, sent and completed (202): its digest, upload id and bytes.
async fn completed(env: &TestEnv, token: &str) -> (Digest, String, Vec<u8>) {
    let part = part_size(env.backend);
    let (bytes, d) = unique_blob(2 * part + part / 5);
    let (status, plan) =
        plan_parts(env, token, "team-a", &d, bytes.len(), &part_digests(&bytes, part), json!({})).await;
    assert_eq!(status, 200, "{plan}");
    send_parts(env, &plan, &bytes, part, &[]).await;
    let body = json!({"upload_id": plan["upload_id"]});
    let resp = post_json(env, token, &format!("/v1/workspaces/team-a/uploads/{d}/complete"), body).await;
    assert_eq!(resp.status(), 202, "above HELIX_VERIFY_INLINE_MAX: verified after the answer");
    (d, plan["upload_id"].as_str().unwrap().to_owned(), bytes)
}

/// Another process's App on the same stores and bus (a VerifyFunction instance).
async fn verify_instance(env: &TestEnv) -> helix_core::App {
    let app = env.app_with(&[]).await.unwrap();
    assert!(publish::bus::install(&app));
    app
}

pub async fn the_verify_entry_alone_links_a_large_upload_step_after_step_each_next_step_put_on_the_bus(b: Backend) {
    let (env, queue) = env_with_bus(b).await;
    let publisher = env.token(Role::Publisher, "team-a").await;
    let (d, id, bytes) = completed(&env, &publisher).await;
    let ws = WorkspaceId::parse("team-a").unwrap();

    // complete's event: EventBridge's envelope around the job's workspace and upload id.
    let mut pending = step_events(&env, &queue).await;
    assert_eq!(pending.len(), 1, "complete puts one step event: {pending:?}");
    let first = &pending[0];
    assert_eq!(first["source"], helix_core::verify::EVENT_SOURCE);
    assert_eq!(first["detail-type"], helix_core::verify::EVENT_DETAIL_TYPE);
    assert_eq!(first["detail"], json!({"workspace": "team-a", "upload_id": id}));

    // Each event to a fresh invocation, as the rule invokes VerifyFunction; nothing else drives the job.
    let mut invocations = 0u64;
    let mut seen = Vec::new();
    let last = loop {
        assert_eq!(pending.len(), 1, "one event per step, never two: {pending:?}");
        let event = pending.remove(0);
        invocations += 1;
        assert!(invocations < 40, "the verification ends");
        let instance = verify_instance(&env).await;
        let answer = publish::verify_step(&instance, &event, Instant::now() + Duration::from_secs(120)).await.unwrap();
        seen.push(answer["verified_bytes"].as_u64().unwrap());
        pending = step_events(&env, &queue).await;
        if answer["state"] == "linked" {
            assert_eq!(answer["next_step_put"], false, "{answer}");
            break answer;
        }
        assert_eq!(answer["state"], "verifying", "{answer}");
        assert_eq!(answer["next_step_put"], true, "{answer}");
        assert_eq!(pending.len(), 1, "the step put the next step's event: {answer}");
    };
    assert!(pending.is_empty(), "no event after the link: {pending:?}");
    let steps = (bytes.len().div_ceil(STEP_BYTES)) as u64;
    assert!(invocations >= steps, "{} bytes in steps of {STEP_BYTES}: {invocations} invocations", bytes.len());
    assert!(seen.windows(2).all(|w| w[0] < w[1]), "every invocation advanced the job: {seen:?}");
    let job = env.app.meta.verify_job(&ws, &id).await.unwrap().unwrap();
    assert_eq!((job.state, job.steps, job.verified_bytes), (VerifyState::Linked, invocations, bytes.len() as u64));
    assert_eq!(last["steps"].as_u64(), Some(invocations));
    assert!(linked(&env, &publisher, "team-a", &d).await);
    let events: Vec<_> = env
        .audit("team-a")
        .await
        .into_iter()
        .filter(|e| e.entity_id == d.to_string() && e.action == "upload.complete")
        .collect();
    assert_eq!(events.len(), 1, "one event for one link: {events:?}");
    // A late duplicate of a step event (EventBridge delivers at least once) changes nothing.
    let again = publish::verify_step(
        &verify_instance(&env).await,
        &json!({"detail": {"workspace": "team-a", "upload_id": id}}),
        Instant::now() + Duration::from_secs(60),
    )
    .await
    .unwrap();
    assert_eq!((again["state"].as_str(), again["next_step_put"].as_bool()), (Some("linked"), Some(false)));
    assert!(step_events(&env, &queue).await.is_empty());
}

/// The freeze thrown while a job runs holds its link: the step that reaches the link ends the
/// invocation without an error (no retry, no alarm) and without a next event; the job stays `verified`
/// and nothing is linked. After the freeze is lifted, the event re-sent (the runbook's way) links it.
pub async fn a_freeze_holds_an_unattended_verification_without_failing_and_a_resent_event_links_it(b: Backend) {
    let (env, queue) = env_with_bus(b).await;
    let publisher = env.token(Role::Publisher, "team-a").await;
    let admin = env.token(Role::Admin, "*").await;
    let (d, id, _) = completed(&env, &publisher).await;
    let ws = WorkspaceId::parse("team-a").unwrap();
    let mut pending = step_events(&env, &queue).await;
    assert_eq!(post_json(&env, &admin, "/v1/admin/freeze", json!({"reason": "drill"})).await.status(), 200);
    let mut invocations = 0;
    let held = loop {
        invocations += 1;
        assert!(invocations < 40, "the verification reaches the link");
        assert_eq!(pending.len(), 1, "{pending:?}");
        let event = pending.remove(0);
        let instance = verify_instance(&env).await;
        let answer = publish::verify_step(&instance, &event, Instant::now() + Duration::from_secs(120)).await.unwrap();
        pending = step_events(&env, &queue).await;
        if answer.get("held").is_some() {
            break answer;
        }
        assert_eq!(answer["next_step_put"], true, "{answer}");
    };
    assert_eq!((held["state"].as_str(), held["next_step_put"].as_bool()), (Some("verified"), Some(false)), "{held}");
    assert!(held["held"].as_str().unwrap().contains("frozen"), "{held}");
    assert!(pending.is_empty(), "no event while held: {pending:?}");
    assert_eq!(env.app.meta.verify_job(&ws, &id).await.unwrap().unwrap().state, VerifyState::Verified);
    assert!(!linked(&env, &publisher, "team-a", &d).await, "nothing linked while frozen");

    assert_eq!(post_json(&env, &admin, "/v1/admin/unfreeze", json!({"reason": "drill over"})).await.status(), 200);
    let resent = json!({"workspace": "team-a", "upload_id": id});
    let answer = publish::verify_step(&verify_instance(&env).await, &resent, Instant::now() + Duration::from_secs(120))
        .await
        .unwrap();
    assert_eq!(answer["state"], "linked", "{answer}");
    assert!(linked(&env, &publisher, "team-a", &d).await);
}

pub async fn the_verify_entry_takes_over_a_dead_workers_lease_and_fails_when_the_bus_refuses_the_next_step(b: Backend) {
    let (env, queue) = env_with_bus(b).await;
    let publisher = env.token(Role::Publisher, "team-a").await;
    let (_, id, _) = completed(&env, &publisher).await;
    let ws = WorkspaceId::parse("team-a").unwrap();
    let event = step_events(&env, &queue).await.pop().expect("complete's step event");

    // A worker took the job and died: its lease lapses in 3 s.
    let hold = |secs: i64| {
        let (env, ws, id) = (&env, ws.clone(), id.clone());
        async move {
            let mut job = env.app.meta.verify_job(&ws, &id).await.unwrap().unwrap();
            job.version += 1;
            job.lease_owner = Some("verify-dead".into());
            job.lease_until = now_unix() + secs;
            assert!(env.app.meta.save_verify_job(&job).await.unwrap());
        }
    };
    hold(3).await;
    let started = Instant::now();
    let answer = publish::verify_step(&verify_instance(&env).await, &event, Instant::now() + Duration::from_secs(120))
        .await
        .unwrap();
    assert!(started.elapsed() >= Duration::from_secs(2), "waited for the lease: {:?}", started.elapsed());
    assert!(answer["waited_seconds"].as_u64().is_some_and(|w| w >= 2), "{answer}");
    let job = env.app.meta.verify_job(&ws, &id).await.unwrap().unwrap();
    assert_eq!(job.steps, 1, "taken over and advanced: {job:?}");
    assert!(job.verified_bytes > 0 && job.lease_owner.is_none(), "the step ended and released the lease: {job:?}");
    assert_eq!(step_events(&env, &queue).await.len(), 1, "and put the next step's event");

    // A live holder whose lease outlasts this invocation's budget: left to the next invocation (its event put).
    hold(50).await;
    let started = Instant::now();
    let answer = publish::verify_step(&verify_instance(&env).await, &event, Instant::now() + Duration::from_secs(6))
        .await
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
    assert_eq!((answer["steps"].as_u64(), answer["next_step_put"].as_bool()), (Some(1), Some(true)), "{answer}");
    assert_eq!(step_events(&env, &queue).await.len(), 1);

    // The lease released, a bus that refuses the next step's event: the step is saved, the invocation fails.
    let mut job = env.app.meta.verify_job(&ws, &id).await.unwrap().unwrap();
    job.version += 1;
    job.lease_owner = None;
    job.lease_until = 0;
    assert!(env.app.meta.save_verify_job(&job).await.unwrap());
    let broken = env.app_with(&[("HELIX_VERIFY_BUS_NAME", "helix-no-such-bus")]).await.unwrap();
    assert!(publish::bus::install(&broken));
    let err = publish::verify_step(&broken, &event, Instant::now() + Duration::from_secs(120)).await.unwrap_err();
    assert!(err.to_string().contains("verify bus"), "{err}");
    let after = env.app.meta.verify_job(&ws, &id).await.unwrap().unwrap();
    assert_eq!(after.steps, 2, "the step ran: {after:?}");
    assert!(after.verified_bytes > job.verified_bytes && after.lease_owner.is_none(), "{after:?}");

    // complete with that bus still answers 202: the job is recorded, the polls drive it.
    let broken_env_publisher = publisher.clone();
    // A publish instance whose bus fails (`broken`), completing a second upload.
    let (d2, id2, _) = {
        let part = part_size(env.backend);
        let (bytes, d) = unique_blob(2 * part + part / 5);
        let (status, plan) =
            plan_parts(&env, &broken_env_publisher, "team-a", &d, bytes.len(), &part_digests(&bytes, part), json!({}))
                .await;
        assert_eq!(status, 200, "{plan}");
        send_parts(&env, &plan, &bytes, part, &[]).await;
        (d, plan["upload_id"].as_str().unwrap().to_owned(), bytes)
    };
    let principal = helix_core::domain::principal::Principal {
        user: "ada".into(),
        role: Role::Publisher,
        workspace_id: helix_core::domain::Scope::parse("team-a").unwrap(),
        credential_id: "tok_broken_bus".into(),
        kind: helix_core::domain::principal::PrincipalKind::ApiToken,
    };
    let caller = helix_core::blobs::Caller { principal: &principal, request_id: "req-broken-bus" };
    let started = helix_core::verify::complete_upload(&broken, caller, &ws, &d2, &id2, None).await.unwrap();
    assert!(matches!(started, helix_core::verify::Completion::Verifying(_)), "{started:?}");
    assert!(env.app.meta.verify_job(&ws, &id2).await.unwrap().is_some(), "the job is recorded");
}

/// The publish *binary* with HELIX_ENTRY=verify, under the Runtime API emulator, as VerifyFunction runs
/// it: each step event it is given (complete's, then its own) advances the job within the invocation's
/// deadline until linked; a malformed event is a function error naming what it expected; without the
/// bus the entry refuses to start, naming the variable.
pub async fn the_publish_binary_with_the_verify_entry_answers_step_events_until_linked(b: Backend) {
    use crate::runtime_api::{FunctionProcess, Outcome, RuntimeApi, function_binaries};
    let (env, queue) = env_with_bus(b).await;
    let publisher = env.token(Role::Publisher, "team-a").await;
    let (d, id, _) = completed(&env, &publisher).await;
    let dir = tokio::task::spawn_blocking(|| function_binaries().clone()).await.unwrap();
    let api = RuntimeApi::start().await;
    let mut vars = env.lambda_env();
    vars.push(("HELIX_ENTRY".into(), "verify".into()));
    let process = FunctionProcess::spawn(&dir.join("publish"), &[], &api, &vars);
    assert!(api.first_poll(Duration::from_secs(20)).await.is_some(), "never polled:\n{}", process.output());

    let mut invocations = 0;
    let mut pending = step_events(&env, &queue).await;
    let last = loop {
        assert_eq!(pending.len(), 1, "{pending:?}");
        invocations += 1;
        assert!(invocations < 40, "the verification ends");
        let answer = match api.invoke(&pending.remove(0), Duration::from_secs(60)).await {
            Outcome::Response(r) => r,
            Outcome::Error(e) => panic!("the step failed: {e}\n{}", process.output()),
        };
        pending = step_events(&env, &queue).await;
        if answer["state"] == "linked" {
            break answer;
        }
    };
    assert!(invocations >= 3, "{invocations} invocations: {last}");
    assert!(pending.is_empty());
    assert!(linked(&env, &publisher, "team-a", &d).await);
    let job = env.app.meta.verify_job(&WorkspaceId::parse("team-a").unwrap(), &id).await.unwrap().unwrap();
    assert_eq!((job.state, job.steps), (VerifyState::Linked, invocations));
    match api.invoke(&json!({"detail": {"workspace": "team-a"}}), Duration::from_secs(30)).await {
        Outcome::Error(e) => {
            assert!(e["errorMessage"].as_str().unwrap_or_default().contains("verification.step"), "{e}")
        }
        Outcome::Response(r) => panic!("a malformed event was answered: {r}"),
    }

    let api = RuntimeApi::start().await;
    let vars: Vec<(String, String)> = vars.into_iter().filter(|(k, _)| k != "HELIX_VERIFY_BUS_NAME").collect();
    let mut process = FunctionProcess::spawn(&dir.join("publish"), &[], &api, &vars);
    let status = process.exit(Duration::from_secs(20)).await.expect("the verify entry without a bus exits");
    assert!(!status.success());
    let out = process.output();
    assert!(out.contains("init failed") && out.contains("HELIX_VERIFY_BUS_NAME"), "{out}");
}
