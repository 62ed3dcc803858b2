//! Governance notifications on AWS (docs/notifications.md): the notify *binary*, under the Runtime API
//! emulator, gets a DynamoDB Streams event built from the audit table's records of real decisions (as
//! the stream's NEW_IMAGE carries them, filtered as the template's mapping filters) and puts each event
//! on an EventBridge bus on the emulator (a rule routes them to an SQS queue the test reads) and posts
//! the signed webhook; a record the webhook refuses is reported in `batchItemFailures`, and the batch
//! retried from it succeeds.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_dynamodb::types::AttributeValue;
use axum::http::{HeaderMap, StatusCode};
use helix_core::domain::Role;
use helix_core::domain::notification::{NOTIFIED_ACTIONS, verify};
use serde_json::{Value, json};

use super::api::post_json;
use super::bundles::one_file_bundle;
use crate::runtime_api::{FunctionProcess, Outcome, RuntimeApi, function_binaries};
use crate::{Backend, TestEnv};

const SECRET: &str = "test-webhook-secret-aws-0123456789";
const BASE: &str = "/v1/workspaces/team-a/bundles/model/versions";

/// A call to the emulator in the JSON protocol (EventBridge, SQS): the test's own setup and reads.
pub(crate) async fn aws_json(env: &TestEnv, service: &str, target: &str, body: Value) -> Value {
    let endpoint = &env.aws.as_ref().expect("the emulator").endpoint;
    let (content_type, target) = match service {
        "events" => ("application/x-amz-json-1.1", format!("AWSEvents.{target}")),
        "secretsmanager" => ("application/x-amz-json-1.1", format!("secretsmanager.{target}")),
        _ => ("application/x-amz-json-1.0", format!("AmazonSQS.{target}")),
    };
    let r = env
        .http
        .post(endpoint)
        .header("content-type", content_type)
        .header("x-amz-target", target.as_str())
        .header(
            "authorization",
            format!("AWS4-HMAC-SHA256 Credential=test/20261204/us-east-1/{service}/aws4_request, SignedHeaders=host, Signature=0"),
        )
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let status = r.status();
    let text = r.text().await.unwrap();
    assert!(status.is_success(), "{target}: {status} {text}");
    serde_json::from_str(&text).unwrap_or(Value::Null)
}

fn attr(v: &AttributeValue) -> Value {
    match v {
        AttributeValue::S(s) => json!({"S": s}),
        AttributeValue::N(n) => json!({"N": n}),
        AttributeValue::Bool(b) => json!({"BOOL": b}),
        AttributeValue::M(m) => json!({"M": image(m)}),
        AttributeValue::L(l) => json!({"L": l.iter().map(attr).collect::<Vec<_>>()}),
        other => panic!("an audit item attribute of an unexpected type: {other:?}"),
    }
}

fn image(item: &HashMap<String, AttributeValue>) -> Value {
    Value::Object(item.iter().map(|(k, v)| (k.clone(), attr(v))).collect())
}

/// The DynamoDB Streams event of `stream`'s audit items (NEW_IMAGE, INSERT), keeping only those the
/// template's filter passes (the published actions), with increasing sequence numbers.
async fn stream_event(env: &TestEnv, stream: &str) -> Value {
    let f = env.aws.as_ref().unwrap();
    let items = f
        .ddb
        .query()
        .table_name(&f.audit_table)
        .key_condition_expression("#s = :s")
        .expression_attribute_names("#s", "stream")
        .expression_attribute_values(":s", AttributeValue::S(stream.into()))
        .send()
        .await
        .unwrap()
        .items
        .unwrap_or_default();
    let records: Vec<Value> = items
        .iter()
        .filter(|i| i.get("action").and_then(|a| a.as_s().ok()).is_some_and(|a| NOTIFIED_ACTIONS.contains(&a.as_str())))
        .enumerate()
        .map(|(n, item)| {
            json!({
                "eventID": format!("{n:032x}"),
                "eventName": "INSERT",
                "eventVersion": "1.1",
                "eventSource": "aws:dynamodb",
                "awsRegion": "us-east-1",
                "dynamodb": {
                    "ApproximateCreationDateTime": 1_764_842_400,
                    "Keys": {"stream": attr(&item["stream"]), "seq": attr(&item["seq"])},
                    "NewImage": image(item),
                    "SequenceNumber": format!("{}", 4_000_000_000_000_000_000_000u128 + n as u128),
                    "SizeBytes": 900,
                    "StreamViewType": "NEW_IMAGE",
                },
                "eventSourceARN": format!("arn:aws:dynamodb:us-east-1:123456789012:table/{}/stream/2026-12-04T10:00:00.000", f.audit_table),
            })
        })
        .collect();
    json!({"Records": records})
}

/// The webhook receiver: what it got; it answers 500 to the event ids in `refuse`.
#[derive(Default)]
struct Hook {
    got: Mutex<Vec<(HeaderMap, String)>>,
    refuse: Mutex<Vec<String>>,
}

pub async fn notify_binary_puts_stream_records_on_eventbridge_and_signs_webhooks_reporting_failed_records(b: Backend) {
    assert_eq!(b, Backend::Emulator, "the binary runs in Lambda mode: AWS adapters only");
    let env = TestEnv::start(b).await;
    let ada = env.token_of("ada", Role::Publisher, "team-a").await;
    let grace = env.token_of("grace", Role::Approver, "team-a").await;
    one_file_bundle(&env, &ada, "team-a", "1").await;
    assert_eq!(post_json(&env, &grace, &format!("{BASE}/1/approve"), json!({})).await.status(), 201);
    assert_eq!(post_json(&env, &ada, &format!("{BASE}/1/export"), json!({})).await.status(), 200);
    let event = stream_event(&env, "team-a").await;
    let records = event["Records"].as_array().unwrap().clone();
    let action = |r: &Value| r["dynamodb"]["NewImage"]["action"]["S"].as_str().unwrap().to_owned();
    let actions: Vec<String> = records.iter().map(action).collect();
    assert_eq!(actions, ["bundle.register", "governance.approval", "bundle.export"], "the decisions' records");
    let hash = |r: &Value| {
        serde_json::from_str::<Value>(r["dynamodb"]["NewImage"]["event"]["S"].as_str().unwrap()).unwrap()["hash"]
            .as_str()
            .unwrap()
            .to_owned()
    };

    // The bus, and a rule routing the registry's events to a queue the test reads.
    let suffix = &env.aws.as_ref().unwrap().table;
    let bus = format!("governance-{suffix}");
    aws_json(&env, "events", "CreateEventBus", json!({"Name": bus})).await;
    let queue = aws_json(&env, "sqs", "CreateQueue", json!({"QueueName": format!("notified-{suffix}")})).await;
    let queue_url = queue["QueueUrl"].as_str().unwrap().to_owned();
    let attrs =
        aws_json(&env, "sqs", "GetQueueAttributes", json!({"QueueUrl": queue_url, "AttributeNames": ["QueueArn"]}))
            .await;
    let queue_arn = attrs["Attributes"]["QueueArn"].as_str().unwrap().to_owned();
    let pattern = json!({"source": ["helix.registry"]}).to_string();
    aws_json(&env, "events", "PutRule", json!({"Name": "to-queue", "EventBusName": bus, "EventPattern": pattern}))
        .await;
    aws_json(
        &env,
        "events",
        "PutTargets",
        json!({"Rule": "to-queue", "EventBusName": bus, "Targets": [{"Id": "q", "Arn": queue_arn}]}),
    )
    .await;

    // The webhook receiver refuses the approval.
    let hook = Arc::new(Hook::default());
    hook.refuse.lock().unwrap().push(hash(&records[1]));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let h = hook.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: HeaderMap, body: String| {
            let h = h.clone();
            async move {
                let id = serde_json::from_str::<Value>(&body).unwrap()["id"].as_str().unwrap().to_owned();
                h.got.lock().unwrap().push((headers, body));
                if h.refuse.lock().unwrap().contains(&id) { StatusCode::INTERNAL_SERVER_ERROR } else { StatusCode::OK }
            }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let mut vars = env.lambda_env();
    for (k, v) in [
        ("HELIX_EVENT_BUS_NAME", bus.as_str()),
        ("HELIX_WEBHOOK_URL", url.as_str()),
        ("HELIX_WEBHOOK_SECRET", SECRET),
        ("HELIX_WEBHOOK_BACKOFF_MS", "10"),
        ("HELIX_WEBHOOK_TIMEOUT_MS", "2000"),
    ] {
        vars.push((k.to_owned(), v.to_owned()));
    }
    let bin = tokio::task::spawn_blocking(|| function_binaries().join("notify")).await.unwrap();
    let api = RuntimeApi::start().await;
    let p = FunctionProcess::spawn(&bin, &[], &api, &vars);
    assert!(api.first_poll(Duration::from_secs(20)).await.is_some(), "notify never polled:\n{}", p.output());
    let invoke = async |event: &Value| match api.invoke(event, Duration::from_secs(60)).await {
        Outcome::Response(r) => r,
        Outcome::Error(e) => panic!("notify reported an error: {e}\n{}", p.output()),
    };

    // The approval is refused by the webhook: it is the failed record; the export after it waits.
    let r = invoke(&event).await;
    let failed = &records[1]["dynamodb"]["SequenceNumber"];
    assert_eq!(r, json!({"batchItemFailures": [{"itemIdentifier": failed}]}), "{}", p.output());
    let got = hook.got.lock().unwrap().clone();
    let ids: Vec<String> = got
        .iter()
        .map(|(_, body)| serde_json::from_str::<Value>(body).unwrap()["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        ids,
        [hash(&records[0]), hash(&records[1]), hash(&records[1]), hash(&records[1])],
        "3 attempts, then reported"
    );
    let now = helix_core::domain::time::now_unix();
    for (headers, body) in &got {
        let h = |k: &str| headers[k].to_str().unwrap().to_owned();
        verify(SECRET.as_bytes(), &h("x-helix-timestamp"), &h("x-helix-signature"), body.as_bytes(), now)
            .expect("a valid signature");
    }
    assert_eq!(serde_json::from_str::<Value>(&got[0].1).unwrap()["type"], "version.registered");

    // Lambda retries from the failed record: the receiver takes it now, and the export follows.
    hook.refuse.lock().unwrap().clear();
    let retry = json!({"Records": records[1..]});
    assert_eq!(invoke(&retry).await, json!({"batchItemFailures": []}));
    let types: Vec<String> = hook.got.lock().unwrap()[4..]
        .iter()
        .map(|(_, b)| serde_json::from_str::<Value>(b).unwrap()["type"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(types, ["version.approved", "version.exported"]);

    // EventBridge: each event reached the bus with the documented source, detail-type and detail (the
    // approval twice, with the same id: at least once).
    let mut seen: Vec<Value> = Vec::new();
    for _ in 0..20 {
        let m = aws_json(
            &env,
            "sqs",
            "ReceiveMessage",
            json!({"QueueUrl": queue_url, "MaxNumberOfMessages": 10, "WaitTimeSeconds": 1}),
        )
        .await;
        for msg in m["Messages"].as_array().into_iter().flatten() {
            seen.push(serde_json::from_str(msg["Body"].as_str().unwrap()).unwrap());
        }
        if seen.len() >= 4 {
            break;
        }
    }
    let mut on_bus: Vec<(String, String)> = seen
        .iter()
        .map(|e| {
            assert_eq!(e["source"], "helix.registry", "{e}");
            assert_eq!(e["detail"]["workspace"], "team-a", "{e}");
            (e["detail-type"].as_str().unwrap().to_owned(), e["detail"]["id"].as_str().unwrap().to_owned())
        })
        .collect();
    on_bus.sort();
    let mut want = vec![
        ("Version Registered".to_owned(), hash(&records[0])),
        ("Version Approved".to_owned(), hash(&records[1])),
        ("Version Approved".to_owned(), hash(&records[1])),
        ("Version Exported".to_owned(), hash(&records[2])),
    ];
    want.sort();
    assert_eq!(on_bus, want, "{seen:?}");

    // Not a stream event: a failed invocation (Lambda retries the batch), the process goes on.
    match api.invoke(&json!({"not": "a stream event"}), Duration::from_secs(30)).await {
        Outcome::Error(e) => assert!(e["errorMessage"].as_str().unwrap().contains("DynamoDB Streams"), "{e}"),
        Outcome::Response(r) => panic!("answered: {r}"),
    }
}

/// On AWS the webhook's key stays in Secrets Manager: the template gives notify the secret's ARN
/// (HELIX_WEBHOOK_SECRET_ARN), notify reads it once at start (GetSecretValue) and signs every delivery
/// with it; a secret it cannot read fails the start, naming the ARN.
pub async fn notify_binary_reads_the_webhook_key_from_secrets_manager_and_signs_with_it(b: Backend) {
    assert_eq!(b, Backend::Emulator, "the binary runs in Lambda mode: AWS adapters only");
    let env = TestEnv::start(b).await;
    let ada = env.token_of("ada", Role::Publisher, "team-a").await;
    one_file_bundle(&env, &ada, "team-a", "1").await;
    let event = stream_event(&env, "team-a").await;
    assert_eq!(event["Records"].as_array().unwrap().len(), 1, "the registration");
    let suffix = &env.aws.as_ref().unwrap().table;
    let bus = format!("governance-sm-{suffix}");
    aws_json(&env, "events", "CreateEventBus", json!({"Name": bus})).await;
    let key = format!("sm-key-{suffix}-0123456789abcdef");
    let created = aws_json(
        &env,
        "secretsmanager",
        "CreateSecret",
        json!({"Name": format!("hook-{suffix}"), "SecretString": key}),
    )
    .await;
    let arn = created["ARN"].as_str().unwrap().to_owned();

    let got: Arc<Mutex<Vec<(HeaderMap, String)>>> = Arc::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let g = got.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: HeaderMap, body: String| {
            let g = g.clone();
            async move {
                g.lock().unwrap().push((headers, body));
                StatusCode::OK
            }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let bin = tokio::task::spawn_blocking(|| function_binaries().join("notify")).await.unwrap();
    let with = |secret_arn: &str| {
        let mut vars = env.lambda_env();
        for (k, v) in [
            ("HELIX_EVENT_BUS_NAME", bus.as_str()),
            ("HELIX_WEBHOOK_URL", url.as_str()),
            ("HELIX_WEBHOOK_SECRET_ARN", secret_arn),
        ] {
            vars.push((k.to_owned(), v.to_owned()));
        }
        vars
    };
    let api = RuntimeApi::start().await;
    let p = FunctionProcess::spawn(&bin, &[], &api, &with(&arn));
    assert!(api.first_poll(Duration::from_secs(20)).await.is_some(), "notify never polled:\n{}", p.output());
    match api.invoke(&event, Duration::from_secs(60)).await {
        Outcome::Response(r) => assert_eq!(r, json!({"batchItemFailures": []}), "{}", p.output()),
        Outcome::Error(e) => panic!("notify reported an error: {e}\n{}", p.output()),
    }
    let got = got.lock().unwrap().clone();
    assert_eq!(got.len(), 1, "one delivery");
    let (headers, body) = &got[0];
    let h = |k: &str| headers[k].to_str().unwrap().to_owned();
    let now = helix_core::domain::time::now_unix();
    let (ts, sig) = (h("x-helix-timestamp"), h("x-helix-signature"));
    verify(key.as_bytes(), &ts, &sig, body.as_bytes(), now).expect("signed with the secret's value");
    assert!(verify(SECRET.as_bytes(), &ts, &sig, body.as_bytes(), now).is_err(), "and with no other key");
    assert!(!p.output().contains(&key), "the key is never logged");

    // A secret that is not there: the start fails, naming the variable and the ARN.
    let missing = format!("{}-gone", &arn[..arn.len() - 7]);
    let api = RuntimeApi::start().await;
    let mut p = FunctionProcess::spawn(&bin, &[], &api, &with(&missing));
    let status = p.exit(Duration::from_secs(20)).await.unwrap_or_else(|| panic!("still running:\n{}", p.output()));
    assert!(!status.success() && api.first_poll(Duration::from_millis(1)).await.is_none(), "started without its key");
    let out = p.output();
    assert!(out.contains("HELIX_WEBHOOK_SECRET_ARN") && out.contains(&missing), "{out}");
}
