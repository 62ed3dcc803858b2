//! Governance notifications as signed webhooks on `helix serve` (issue 18, item 3;
//! docs/notifications.md): every governance event reaches a receiver that is down, then slow, then
//! answers 500, with a valid signature and the same id on every retry; no decision waits for it; a
//! notification whose attempts are spent is given up, logged and counted, and the next goes on.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{HeaderMap, StatusCode};
use helix_core::domain::Role;
use helix_core::domain::notification::{Notification, verify};
use serde_json::{Value, json};

use super::api::{metrics_text, post_json};
use super::bundles::one_file_bundle;
use crate::{Backend, TestEnv};

const SECRET: &str = "test-webhook-secret-0123456789";
const BASE: &str = "/v1/workspaces/team-a/bundles/model/versions";

/// One request the receiver got: its headers, its body and what it answered (None: not in time).
#[derive(Debug, Clone)]
struct Received {
    headers: HeaderMap,
    body: String,
    answered: Option<u16>,
}

/// A scripted receiver: the first request is held until `release` (slow), the second answers 500,
/// every later one 200.
#[derive(Default)]
struct Receiver {
    got: Mutex<Vec<Received>>,
    calls: AtomicUsize,
    held: tokio::sync::Notify,
    release: tokio::sync::Notify,
}

impl Receiver {
    async fn handle(self: Arc<Self>, headers: HeaderMap, body: String) -> StatusCode {
        let n = self.calls.fetch_add(1, Ordering::SeqCst);
        let index = {
            let mut got = self.got.lock().unwrap();
            got.push(Received { headers, body, answered: None });
            got.len() - 1
        };
        let status = match n {
            0 => {
                // Slow: held past the sender's timeout. Whatever it answers then reaches no one, so it
                // is not recorded as an answer (and hyper may drop this future with the connection).
                self.held.notify_one();
                self.release.notified().await;
                return StatusCode::OK;
            }
            1 => StatusCode::INTERNAL_SERVER_ERROR,
            _ => StatusCode::OK,
        };
        self.got.lock().unwrap()[index].answered = Some(status.as_u16());
        status
    }

    fn received(&self) -> Vec<Received> {
        self.got.lock().unwrap().clone()
    }

    /// The ids answered 200.
    fn delivered(&self) -> Vec<String> {
        self.received().iter().filter(|r| r.answered == Some(200)).map(id_of).collect()
    }
}

fn id_of(r: &Received) -> String {
    serde_json::from_str::<Value>(&r.body).unwrap()["id"].as_str().unwrap().to_owned()
}

async fn serve_receiver(port: u16, receiver: Arc<Receiver>) -> tokio::task::JoinHandle<()> {
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: HeaderMap, body: String| receiver.clone().handle(headers, body)),
    );
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.expect("the receiver's port is free again");
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    })
}

/// Wait (bounded) until `done` holds; the bound is a hang guard, not a timing assertion.
async fn until(what: &str, done: impl AsyncFn() -> bool) {
    for _ in 0..600 {
        if done().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("gave up waiting until {what}");
}

/// Every published notification the audit trail of these streams holds, in commit order per stream.
async fn expected(env: &TestEnv, streams: &[&str]) -> Vec<Notification> {
    let mut all = Vec::new();
    for s in streams {
        all.extend(env.audit(s).await.iter().filter_map(|e| Notification::of(e, &env.app.config.public_url)));
    }
    all
}

fn webhook_env(url: &str, attempts: &str, timeout_ms: &str) -> Vec<(&'static str, String)> {
    vec![
        ("HELIX_WEBHOOK_URL", url.to_owned()),
        ("HELIX_WEBHOOK_SECRET", SECRET.to_owned()),
        ("HELIX_WEBHOOK_ATTEMPTS", attempts.to_owned()),
        ("HELIX_WEBHOOK_BACKOFF_MS", "20".to_owned()),
        ("HELIX_WEBHOOK_TIMEOUT_MS", timeout_ms.to_owned()),
    ]
}

pub async fn governance_events_reach_a_webhook_that_is_down_slow_then_failing_and_no_decision_waits(b: Backend) {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let url = format!("http://127.0.0.1:{port}/hook");
    let vars = webhook_env(&url, "100", "2000");
    let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let env = TestEnv::start_with(b, &vars).await;
    let stats = env.app.notify_stats.clone();
    let admin = env.token(Role::Admin, "*").await;
    let ada = env.token_of("ada", Role::Publisher, "team-a").await;
    let grace = env.token_of("grace", Role::Approver, "team-a").await;

    // The receiver is down: every decision succeeds, and nothing has answered them.
    one_file_bundle(&env, &ada, "team-a", "1").await;
    assert_eq!(post_json(&env, &grace, &format!("{BASE}/1/approve"), json!({})).await.status(), 201);
    assert_eq!(post_json(&env, &ada, &format!("{BASE}/1/export"), json!({})).await.status(), 200);
    one_file_bundle(&env, &ada, "team-a", "2").await;
    assert_eq!(post_json(&env, &ada, &format!("{BASE}/2/export"), json!({})).await.status(), 403, "export denied");
    assert_eq!(post_json(&env, &ada, &format!("{BASE}/2/approve"), json!({})).await.status(), 403, "self approval");
    let freeze = post_json(&env, &admin, "/v1/admin/freeze", json!({"reason": "INC-7 drill"})).await;
    assert_eq!(freeze.status(), 200);
    assert_eq!(post_json(&env, &admin, "/v1/admin/unfreeze", json!({"reason": "drill over"})).await.status(), 200);
    let suspend = post_json(&env, &admin, "/v1/admin/workspaces/team-b/suspend", json!({"reason": "INC-8"})).await;
    assert_eq!(suspend.status(), 200);
    until("an attempt failed against the closed port", async || stats.failed_attempts.load(Ordering::SeqCst) >= 1)
        .await;
    assert_eq!(stats.delivered.load(Ordering::SeqCst), 0);

    // It comes up slow: while it holds the first delivery unanswered, a decision is made and answered.
    let receiver = Arc::new(Receiver::default());
    let _server = serve_receiver(port, receiver.clone()).await;
    receiver.held.notified().await;
    let failed_before = stats.failed_attempts.load(Ordering::SeqCst);
    let reject = post_json(&env, &grace, &format!("{BASE}/2/reject"), json!({})).await;
    assert_eq!(reject.status(), 201, "decided while the receiver holds a delivery");
    let answered: Vec<Option<u16>> = receiver.received().iter().map(|r| r.answered).collect();
    assert!(!answered.contains(&Some(200)), "nothing was delivered yet: {answered:?}");
    // The held attempt times out (a failure), then the receiver lets go; a 500 follows, then 200s.
    until("the slow attempt timed out", async || stats.failed_attempts.load(Ordering::SeqCst) > failed_before).await;
    receiver.release.notify_one();

    let want = expected(&env, &["team-a", "team-b", "*"]).await;
    let kinds: std::collections::BTreeSet<&str> = want.iter().map(|n| n.kind).collect();
    for kind in [
        "version.registered",
        "version.approved",
        "version.rejected",
        "version.exported",
        "export.denied",
        "decision.denied",
        "registry.frozen",
        "registry.unfrozen",
        "workspace.suspended",
    ] {
        assert!(kinds.contains(kind), "{kind} is in the audit trail: {kinds:?}");
    }
    until("every governance event was delivered", async || {
        let got = receiver.delivered();
        want.iter().all(|n| got.contains(&n.id))
    })
    .await;

    let received = receiver.received();
    // Retries carry the same id and the same body: down (never received), slow, 500, then 200.
    let first = &received[..3];
    assert_eq!(first.iter().map(|r| r.answered).collect::<Vec<_>>(), [None, Some(500), Some(200)]);
    assert!(first.iter().all(|r| r.body == first[0].body), "the same body on every attempt");
    assert_eq!(id_of(&first[0]), want.iter().find(|n| n.kind == "version.registered").unwrap().id);
    // Every request is signed over `<timestamp>.<body>` with the shared secret, and says what it is.
    let now = helix_core::domain::time::now_unix();
    for r in &received {
        let h = |name: &str| r.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
        verify(SECRET.as_bytes(), &h("x-helix-timestamp"), &h("x-helix-signature"), r.body.as_bytes(), now)
            .unwrap_or_else(|e| panic!("{e}: {r:?}"));
        assert!(
            verify(
                b"another-secret-entirely",
                &h("x-helix-timestamp"),
                &h("x-helix-signature"),
                r.body.as_bytes(),
                now
            )
            .is_err()
        );
        assert_eq!(h("x-helix-event-id"), id_of(r));
        assert_eq!(h("content-type"), "application/json");
        let body: Value = serde_json::from_str(&r.body).unwrap();
        let n = want.iter().find(|n| n.id == id_of(r)).expect("only governance events are sent");
        assert_eq!((body["type"].as_str(), body["source"].as_str()), (Some(n.kind), Some("helix.registry")));
        assert_eq!(body["time"], n.time);
        assert_eq!(body["event"]["hash"], n.event.hash);
    }
    // Each delivered exactly once here (the receiver answered 200 once per id).
    let delivered = receiver.delivered();
    assert_eq!(delivered.len(), want.len(), "{delivered:?}");
    // The sender counts a delivery after the receiver's 200 (its own write to the store): the
    // counter catches up with the receiver within moments, and never passes it.
    let counted = format!("helix_notifications_total{{channel=\"webhook\",outcome=\"delivered\"}} {}", want.len());
    until("the sender counted every delivery", async || metrics_text(&env).await.contains(&counted)).await;
    let text = metrics_text(&env).await;
    assert!(text.contains(&counted), "{text}");
    assert!(!text.contains("outcome=\"given_up\"} 1"), "{text}");
    assert!(!crate::captured_logs().contains(SECRET), "the secret is never logged");
}

pub async fn a_notification_whose_attempts_are_spent_is_given_up_logged_counted_and_the_next_goes_on(b: Backend) {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let vars = webhook_env(&format!("http://127.0.0.1:{port}/hook"), "3", "300");
    let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let env = TestEnv::start_with(b, &vars).await;
    let stats = env.app.notify_stats.clone();
    let admin = env.token(Role::Admin, "*").await;
    assert_eq!(post_json(&env, &admin, "/v1/admin/freeze", json!({"reason": "INC-9"})).await.status(), 200);
    until("the freeze was given up", async || stats.given_up.load(Ordering::SeqCst) == 1).await;
    assert_eq!(stats.failed_attempts.load(Ordering::SeqCst), 3, "exactly its attempts, no more");

    // The receiver is up now (it answers 200 from its third request): the next event is delivered,
    // the given-up one is not sent again.
    let receiver = Arc::new(Receiver::default());
    receiver.calls.store(2, Ordering::SeqCst);
    let _server = serve_receiver(port, receiver.clone()).await;
    assert_eq!(post_json(&env, &admin, "/v1/admin/unfreeze", json!({"reason": "over"})).await.status(), 200);
    until("the unfreeze was delivered", async || stats.delivered.load(Ordering::SeqCst) == 1).await;
    let kinds: Vec<String> = receiver
        .received()
        .iter()
        .map(|r| serde_json::from_str::<Value>(&r.body).unwrap()["type"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(kinds, ["registry.unfrozen"]);
    let text = metrics_text(&env).await;
    assert!(text.contains("helix_notifications_total{channel=\"webhook\",outcome=\"given_up\"} 1"), "{text}");
    assert!(text.contains("helix_notification_failed_attempts_total{channel=\"webhook\"} 3"), "{text}");
    let logs = crate::captured_logs();
    assert!(logs.lines().any(|l| l.contains("notification given up") && l.contains("registry.frozen")), "logged");

    // The cursor is durable: a registry opened again on the same data dir finds nothing to send.
    let again = env.app_with(&[]).await.unwrap();
    let outbox = again.outbox.clone().expect("the embedded store has an outbox");
    let end = outbox.outbox_end().await.unwrap();
    assert_eq!(end, 2, "the freeze and the unfreeze");
    for _ in 0..200 {
        if outbox.outbox_cursor("webhook").await.unwrap() == Some(end) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        outbox.outbox_cursor("webhook").await.unwrap(),
        Some(end),
        "past the given-up one and the delivered one"
    );
    let restarted = helix_core::notify::Deliverer {
        outbox,
        sink: Arc::new(helix_core::adapters::webhook::WebhookSink::new(again.config.webhook.clone().unwrap())),
        meta: again.meta.clone(),
        registry: again.config.public_url.clone(),
        policy: helix_core::notify::RetryPolicy { attempts: 1, backoff: Duration::from_millis(1) },
        stats: Default::default(),
    };
    assert_eq!(restarted.round().await.unwrap(), 0, "nothing is sent again");
    assert_eq!(receiver.received().len(), 1);
}
