//! Round trips per route (issue 20 §2): every request the AWS adapters send, counted where the
//! emulator receives it (the fault proxy in front of moto), for one request of each route in the warm
//! steady state of an instance. The counts are the table of docs/performance.md ("Round trips per
//! request"): the test renders the table from what it measured and fails when the document says
//! otherwise, so a route that gains a call fails here until the document (and its review) says so.
//!
//! What an instance keeps between requests is made explicit, so the counts are deterministic:
//! request counters are flushed at most once per HELIX_METRICS_FLUSH_SECONDS (set to an hour here:
//! no flush lands inside a measured request), the SDK clients and the signing key's record are made
//! by the warm-up; the freeze and suspension switches are never cached (read with the token on every
//! request). What a cold instance adds is measured too, on a second App over the same stores.

use helix_core::domain::Role;
use serde_json::{Value, json};

use super::api::{get, get_blob, post_json, put_blob};
use super::bundles::one_file_bundle;
use super::unique_blob;
use crate::fault_proxy::{Call, FaultProxy, rounds};
use crate::{Backend, TestEnv, emulator_endpoint};

const BASE: &str = "/v1/workspaces/team-a/bundles/model/versions";

/// One measured route: its name in the table, and the calls of one request.
struct Row {
    route: &'static str,
    rounds: Vec<Vec<String>>,
}

impl Row {
    fn new(route: &'static str, calls: &[Call]) -> Row {
        Row { route, rounds: rounds(calls) }
    }

    fn in_all(&self) -> usize {
        self.rounds.iter().map(Vec::len).sum()
    }

    /// The calls, round by round (` → ` between rounds, ` + ` within one).
    fn calls(&self) -> String {
        let rounds: Vec<String> = self.rounds.iter().map(|r| r.join(" + ")).collect();
        rounds.join(" → ")
    }

    fn markdown(&self) -> String {
        format!("| {} | {} | {} | {} |", self.route, self.in_all(), self.rounds.len(), self.calls())
    }
}

/// The table as docs/performance.md holds it.
fn table(rows: &[Row]) -> String {
    let mut out = String::from("| Route (one request, warm instance) | In all | Sequential | Calls, in order |\n");
    out.push_str("|---|---|---|---|\n");
    for r in rows {
        out.push_str(&r.markdown());
        out.push('\n');
    }
    out
}

async fn status(resp: reqwest::Response) -> (u16, Value) {
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

async fn transition(env: &TestEnv, token: &str, version: &str) -> Value {
    let v: Value = get(env, token, &format!("{BASE}/{version}")).await.json().await.unwrap();
    v["export_transition"].clone()
}

fn waiver(transition: &Value) -> Value {
    json!({"transition": transition, "scope": "export_unapproved", "justification": "INC-7"})
}

pub async fn round_trips_per_route_are_counted_at_the_emulator_and_documented(b: Backend) {
    assert_eq!(b, Backend::Emulator);
    let proxy = FaultProxy::start(&emulator_endpoint(), "none", 0).await;
    // Reads are recorded as a log line on Lambda (no store call: `read_records_reach_the_audit_trail_…`
    // shows the fetch binary makes none); in this process they would be a background append, counted
    // here as if the route made it. Off, so the counts are the function's.
    let overrides = [
        ("AWS_ENDPOINT_URL", proxy.url.as_str()),
        ("HELIX_METRICS_FLUSH_SECONDS", "3600"),
        ("HELIX_AUDIT_READS", "off"),
    ];
    let env = TestEnv::start_with(b, &overrides).await;
    let ada = env.token_of("ada", Role::Publisher, "team-a").await;
    let grace = env.token_of("grace", Role::Approver, "team-a").await;
    let hopper = env.token_of("hopper", Role::Approver, "team-a").await;
    let linus = env.token_of("linus", Role::SafetyReviewer, "team-a").await;

    // Warm-up: every route once (clients, the signing key's record, whatever an instance keeps).
    let warm = one_file_bundle(&env, &ada, "team-a", "w1").await;
    assert_eq!(get_blob(&env, &ada, "team-a", &warm.to_string(), "").await.status(), 200);
    assert_eq!(post_json(&env, &grace, &format!("{BASE}/w1/approve"), json!({})).await.status(), 201);
    assert_eq!(post_json(&env, &ada, &format!("{BASE}/w1/export"), json!({})).await.status(), 200);
    one_file_bundle(&env, &ada, "team-a", "w2").await;
    assert_eq!(post_json(&env, &hopper, &format!("{BASE}/w2/reject"), json!({})).await.status(), 201);
    one_file_bundle(&env, &ada, "team-a", "w3").await;
    let t = transition(&env, &ada, "w3").await;
    assert_eq!(post_json(&env, &linus, &format!("{BASE}/w3/waivers"), waiver(&t)).await.status(), 201);
    for v in ["1", "2", "3"] {
        one_file_bundle(&env, &ada, "team-a", v).await;
    }
    let t3 = transition(&env, &ada, "3").await;

    let mut rows = Vec::new();
    let (bytes, d) = unique_blob(300);
    let digest = d.to_string();
    let (r, calls) = proxy.calls_of(put_blob(&env, &ada, "team-a", &digest, bytes.clone())).await;
    assert_eq!(r.status(), 201);
    rows.push(Row::new("PUT a new small blob (inline)", &calls));
    let (r, calls) = proxy.calls_of(put_blob(&env, &ada, "team-a", &digest, bytes.clone())).await;
    assert_eq!(r.status(), 200);
    rows.push(Row::new("PUT a small blob already linked", &calls));
    let (r, calls) = proxy.calls_of(get_blob(&env, &ada, "team-a", &digest, "")).await;
    assert_eq!(r.bytes().await.unwrap().to_vec(), bytes);
    rows.push(Row::new("GET a small blob (inline)", &calls));
    let head = env.http.head(env.url(&format!("/v1/workspaces/team-a/blobs/{digest}")));
    let (r, calls) = proxy.calls_of(head.header("authorization", format!("Bearer {ada}")).send()).await;
    assert_eq!(r.unwrap().status(), 200);
    rows.push(Row::new("HEAD a blob", &calls));
    let (r, calls) = proxy.calls_of(post_json(&env, &grace, &format!("{BASE}/1/approve"), json!({}))).await;
    assert_eq!(status(r).await.0, 201);
    rows.push(Row::new("POST approve", &calls));
    let (r, calls) = proxy.calls_of(post_json(&env, &hopper, &format!("{BASE}/2/reject"), json!({}))).await;
    assert_eq!(status(r).await.0, 201);
    rows.push(Row::new("POST reject", &calls));
    let (r, calls) = proxy.calls_of(post_json(&env, &linus, &format!("{BASE}/3/waivers"), waiver(&t3))).await;
    assert_eq!(status(r).await.0, 201);
    rows.push(Row::new("POST waivers", &calls));
    let (r, calls) = proxy.calls_of(post_json(&env, &ada, &format!("{BASE}/1/export"), json!({}))).await;
    let (code, body) = status(r).await;
    assert_eq!(code, 200, "{body}");
    rows.push(Row::new("POST export (approved)", &calls));
    let (r, calls) = proxy.calls_of(get(&env, &ada, &format!("{BASE}/1"))).await;
    assert_eq!(status(r).await.0, 200);
    rows.push(Row::new("GET a version", &calls));
    let (r, calls) = proxy.calls_of(get(&env, &ada, &format!("{BASE}/1/governance"))).await;
    assert_eq!(status(r).await.0, 200);
    rows.push(Row::new("GET a version's governance", &calls));

    let measured = table(&rows);
    println!("round trips per request, counted at the emulator:\n{measured}");
    // The goals of issue 20 §2, whatever the document says.
    let get = rows.iter().find(|r| r.route.starts_with("GET a small")).unwrap();
    let put = rows.iter().find(|r| r.route.starts_with("PUT a new small")).unwrap();
    assert!(get.in_all() <= GOAL_GET && put.in_all() <= GOAL_PUT, "{measured}");
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/performance.md")).unwrap();
    assert!(
        doc.contains(&measured),
        "docs/performance.md (\"Round trips per request\") must hold the measured table:\n{measured}"
    );
}

/// Issue 20 §2's goals: a small GET makes at most this many requests to the stores in all, a PUT of
/// a new small blob at most this many.
const GOAL_GET: usize = 2;
const GOAL_PUT: usize = 3;

/// A blob route reads its link in the BatchGetItem that reads the token and the switches. DynamoDB may
/// leave keys of a batch read unprocessed (throttling): they are asked for again, and a batch that
/// never finishes is a 503 — never "not linked", "not frozen" or "not suspended" — with nothing
/// stored. The fault proxy answers BatchGetItems with every key unprocessed.
pub async fn a_batch_read_left_unprocessed_is_retried_and_never_read_as_absent(b: Backend) {
    use std::sync::atomic::Ordering;
    assert_eq!(b, Backend::Emulator);
    let proxy = FaultProxy::start(&emulator_endpoint(), "none", 0).await;
    let env = TestEnv::start_with(b, &[("AWS_ENDPOINT_URL", proxy.url.as_str())]).await;
    let ada = env.token(Role::Publisher, "team-a").await;
    let (bytes, d) = unique_blob(300);
    assert_eq!(put_blob(&env, &ada, "team-a", &d.to_string(), bytes.clone()).await.status(), 201);

    // Unprocessed twice, then answered: the read goes on, and the blob is served.
    proxy.unprocessed_batch_reads.store(2, Ordering::SeqCst);
    let (r, calls) = proxy.calls_of(get_blob(&env, &ada, "team-a", &d.to_string(), "")).await;
    assert_eq!(r.bytes().await.unwrap().to_vec(), bytes);
    let batches = calls.iter().filter(|c| c.operation == "DynamoDB BatchGetItem").count();
    assert_eq!(batches, 3, "asked again until processed: {calls:?}");

    // Never processed: every blob route is a 503, and a PUT stores nothing.
    proxy.unprocessed_batch_reads.store(usize::MAX, Ordering::SeqCst);
    super::expect_problem(get_blob(&env, &ada, "team-a", &d.to_string(), "").await, 503, "meta_store_unavailable")
        .await;
    let (other, od) = unique_blob(300);
    let put = put_blob(&env, &ada, "team-a", &od.to_string(), other).await;
    super::expect_problem(put, 503, "meta_store_unavailable").await;
    proxy.unprocessed_batch_reads.store(0, Ordering::SeqCst);
    assert_eq!(env.stored_objects().await, 1, "only the first blob's object");
    let linked: Vec<_> =
        env.blob_events("team-a").await.into_iter().filter(|e| e.entity_id == od.to_string()).collect();
    assert!(linked.is_empty(), "nothing linked: {linked:?}");
}

/// The audit head is a guess the conditional seq checks: two instances (two Apps over the same tables)
/// appending to one stream in turn each find their remembered head stale, and every append still lands
/// at the next seq, linked to the event before it. On DynamoDB the stream's head hint, read with the
/// credential, makes the stale memory cost nothing: each PUT of a new small blob is one BatchGetItem,
/// one PutObject and one transaction whichever instance appended last (5 requests before the hint: a
/// cancelled transaction, the head's Query, the transaction again). A hint that names another audit
/// table (written before a restore, so possibly ahead of the restored chain) is ignored.
pub async fn appends_from_two_instances_to_one_stream_stay_one_chain(b: Backend) {
    let (proxy, env) = counting_env(b).await;
    let other = super::serve_app(env.app_with(&[]).await.unwrap());
    let ada = env.token(Role::Publisher, "team-a").await;
    let put = |i: usize| {
        let (bytes, d) = unique_blob(100);
        let url = if i.is_multiple_of(2) { env.url("") } else { other.url() };
        env.http.put(format!("{url}/v1/workspaces/team-a/blobs/{d}")).bearer_auth(&ada).body(bytes).send()
    };
    for i in 0..8 {
        let (r, calls) = counted(proxy.as_ref(), async { put(i).await.unwrap() }).await;
        assert_eq!(r.status(), 201, "append {i}");
        // Both instances warm (their SDK clients built): every append after is three requests.
        if let (Some(calls), true) = (calls, i >= 2) {
            assert_eq!(calls, ["DynamoDB BatchGetItem", "S3 PutObject", "DynamoDB TransactWriteItems"], "append {i}");
        }
    }
    if let Some(f) = &env.aws {
        // A hint from before a restore: far ahead, naming another audit table. A new instance (no
        // memory) must not build on it: it reads the head, and the chain stays dense.
        let hint = [
            ("pk", aws_sdk_dynamodb::types::AttributeValue::S("AUDITHEAD#team-a".into())),
            ("sk", aws_sdk_dynamodb::types::AttributeValue::S("HEAD".into())),
            ("seq", aws_sdk_dynamodb::types::AttributeValue::N("1000".into())),
            ("ts", aws_sdk_dynamodb::types::AttributeValue::S("2026-01-01T00:00:00.000Z".into())),
            ("hash", aws_sdk_dynamodb::types::AttributeValue::S(format!("sha256:{}", "0".repeat(64)))),
            ("audit_table", aws_sdk_dynamodb::types::AttributeValue::S(format!("{}-before-restore", f.audit_table))),
        ];
        let mut item = f.ddb.put_item().table_name(&f.table);
        for (k, v) in hint {
            item = item.item(k, v);
        }
        item.send().await.unwrap();
        let fresh = super::serve_app(env.app_with(&[]).await.unwrap());
        let (bytes, d) = unique_blob(100);
        let r = env.http.put(format!("{}/v1/workspaces/team-a/blobs/{d}", fresh.url())).bearer_auth(&ada).body(bytes);
        assert_eq!(r.send().await.unwrap().status(), 201);
    }
    let events = env.audit("team-a").await;
    let expected = if env.aws.is_some() { 10 } else { 9 };
    assert_eq!(events.len(), expected, "the token's issue and every link: {events:?}");
    for (i, pair) in events.windows(2).enumerate() {
        assert_eq!((pair[1].seq, pair[1].prev.as_deref()), (pair[0].seq + 1, Some(pair[0].hash.as_str())), "at {i}");
    }
}

/// A registry whose store requests can be counted: on the emulator, through a fault proxy (request
/// counters flushed hourly and reads not recorded, so only the route's own calls are counted).
async fn counting_env(b: Backend) -> (Option<FaultProxy>, TestEnv) {
    let proxy = match b {
        Backend::Emulator => Some(FaultProxy::start(&emulator_endpoint(), "none", 0).await),
        Backend::Embedded => None,
    };
    let mut overrides = vec![("HELIX_METRICS_FLUSH_SECONDS", "3600"), ("HELIX_AUDIT_READS", "off")];
    if let Some(p) = &proxy {
        overrides.push(("AWS_ENDPOINT_URL", p.url.as_str()));
    }
    let env = TestEnv::start_with(b, &overrides).await;
    (proxy, env)
}

/// The calls of `work` at the emulator (None on the embedded backend: nothing to count).
async fn counted<F: std::future::Future<Output = reqwest::Response>>(
    proxy: Option<&FaultProxy>,
    work: F,
) -> (reqwest::Response, Option<Vec<String>>) {
    match proxy {
        Some(p) => {
            let (r, calls) = p.calls_of(work).await;
            (r, Some(calls.into_iter().map(|c| c.operation).collect()))
        }
        None => (work.await, None),
    }
}

/// A problem's body without its request id (what differs between two identical refusals).
async fn refusal(resp: reqwest::Response, status: u16, reason: &str) -> Value {
    let mut body = super::expect_problem(resp, status, reason).await;
    body.as_object_mut().unwrap().remove("request_id");
    body
}

/// A decision and an export read their bundle version in the BatchGetItem that reads the credential
/// and the switches (DynamoDB: no GetItem of their own), and keep it only once the principal is
/// authorized: a credential of another workspace gets the same 403 whether the version exists or not,
/// after the same single read; the freeze and a suspension still refuse first, whether it exists or
/// not; a batch read the store could not complete is a 503, never 404 `bundle_missing`.
pub async fn a_decision_reads_its_version_with_the_credential_and_tells_an_outsider_nothing(b: Backend) {
    use std::sync::atomic::Ordering;
    let (proxy, env) = counting_env(b).await;
    let proxy = proxy.as_ref();
    let ada = env.token_of("ada", Role::Publisher, "team-a").await;
    let grace = env.token_of("grace", Role::Approver, "team-a").await;
    let linus = env.token_of("linus", Role::SafetyReviewer, "team-a").await;
    let viewer = env.token_of("vera", Role::Viewer, "team-a").await;
    // An admin of team-b may do everything there, nothing in team-a.
    let eve = env.token_of("eve", Role::Admin, "team-b").await;
    let admin = env.token(Role::Admin, "*").await;
    one_file_bundle(&env, &ada, "team-a", "1").await;
    let t = transition(&env, &ada, "1").await;
    let routes = [
        ("approve", &grace, json!({})),
        ("reject", &grace, json!({})),
        ("waivers", &linus, waiver(&t)),
        ("export", &ada, json!({})),
    ];
    let post = async |token: &str, version: &str, route: &str, body: &Value| {
        post_json(&env, token, &format!("{BASE}/{version}/{route}"), body.clone()).await
    };

    for (route, allowed, body) in &routes {
        // Another workspace's credential: one read (the credential's), the same answer either way.
        let mut answers = Vec::new();
        for version in ["1", "absent"] {
            let (r, calls) = counted(proxy, post(&eve, version, route, body)).await;
            answers.push(refusal(r, 403, "forbidden_workspace").await);
            if let Some(calls) = calls {
                assert_eq!(calls, ["DynamoDB BatchGetItem"], "{route} of {version} by an outsider");
            }
        }
        assert_eq!(answers[0], answers[1], "an outsider's {route} tells nothing of whether the version exists");
        // A credential of the workspace without the role: the same answer either way.
        let existing = refusal(post(&viewer, "1", route, body).await, 403, "insufficient_role").await;
        assert_eq!(existing, refusal(post(&viewer, "absent", route, body).await, 403, "insufficient_role").await);
        // Authorized, and no such version: 404 from the credential's read alone (no GetItem of its own).
        let (r, calls) = counted(proxy, post(allowed, "absent", route, body)).await;
        super::expect_problem(r, 404, "bundle_missing").await;
        if let Some(calls) = calls {
            assert_eq!(calls, ["DynamoDB BatchGetItem"], "{route} of a version that does not exist");
        }
    }

    // A batch read never completed is a 503, whether the version exists or not: never "not found".
    if let Some(p) = proxy {
        p.unprocessed_batch_reads.store(usize::MAX, Ordering::SeqCst);
        for (route, allowed, body) in &routes {
            for version in ["1", "absent"] {
                super::expect_problem(post(allowed, version, route, body).await, 503, "meta_store_unavailable").await;
            }
        }
        p.unprocessed_batch_reads.store(0, Ordering::SeqCst);
    }

    // The freeze and a suspension are still read on every change, before the version matters.
    assert_eq!(post_json(&env, &admin, "/v1/admin/freeze", json!({"reason": "INC-9"})).await.status(), 200);
    for version in ["1", "absent"] {
        super::expect_problem(post(&grace, version, "approve", &json!({})).await, 503, "registry_frozen").await;
    }
    assert_eq!(post_json(&env, &admin, "/v1/admin/unfreeze", json!({"reason": "INC-9"})).await.status(), 200);
    let suspend = json!({"reason": "INC-10"});
    assert_eq!(post_json(&env, &admin, "/v1/admin/workspaces/team-a/suspend", suspend.clone()).await.status(), 200);
    let mut answers = Vec::new();
    for version in ["1", "absent"] {
        super::expect_problem(post(&grace, version, "approve", &json!({})).await, 403, "workspace_suspended").await;
        answers.push(refusal(post(&eve, version, "approve", &json!({})).await, 403, "forbidden_workspace").await);
    }
    assert_eq!(answers[0], answers[1], "an outsider learns nothing of the suspension or the version");
    assert_eq!(post_json(&env, &admin, "/v1/admin/workspaces/team-a/unsuspend", suspend).await.status(), 200);

    // Refusals recorded nothing: the first approval is this one, read with the credential alone.
    let (r, calls) = counted(proxy, post(&grace, "1", "approve", &json!({}))).await;
    let (code, made) = status(r).await;
    assert_eq!((code, &made["seq"]), (201, &json!(1)), "{made}");
    if let Some(calls) = calls {
        assert_eq!(calls.first().map(String::as_str), Some("DynamoDB BatchGetItem"), "{calls:?}");
        assert!(!calls.iter().any(|c| c == "DynamoDB GetItem"), "no read of the version of its own: {calls:?}");
    }
    let (code, exported) = status(post(&ada, "1", "export", &json!({})).await).await;
    assert_eq!((code, &exported["governance"]), (200, &json!("approved")), "{exported}");
}
