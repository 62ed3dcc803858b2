//! notify: governance notifications on AWS (docs/notifications.md). The event source mapping of the
//! audit table's DynamoDB stream (filtered to the published actions) invokes it with a batch of
//! records; each governance event is put on the template's EventBridge bus and, when HELIX_WEBHOOK_URL
//! is set, posted as the signed webhook, each with a few attempts. The first record that cannot be
//! sent is reported as a partial batch failure: Lambda retries from it (bounded by the mapping's
//! `MaximumRetryAttempts`), so what was sent before it is not sent again and what follows waits.
//! A retried record may reach a channel twice, with the same id (at least once).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use helix_core::adapters::webhook::WebhookSink;
use helix_core::domain::notification::{Notification, SOURCE};
use helix_core::notify::{RetryPolicy, Stats, send_with_retries, stream_items};
use helix_core::ports::NotificationSink;
use serde_json::{Value, json};

/// Attempts per record and channel within one invocation (the mapping retries the batch after that).
const ATTEMPTS_PER_INVOCATION: u32 = 3;

pub struct Notifier {
    pub sinks: Vec<Arc<dyn NotificationSink>>,
    /// The registry's public URL, named in every notification (HELIX_PUBLIC_URL).
    pub registry: String,
    pub policy: RetryPolicy,
    pub stats: Stats,
}

impl Notifier {
    /// The function's configuration (HELIX_TABLE and the rest, as every function reads it: a bad one
    /// fails at init naming the variable), HELIX_EVENT_BUS_NAME (the bus; required), HELIX_PUBLIC_URL
    /// and HELIX_WEBHOOK_* (optional; the template passes the URL and the secret's ARN,
    /// HELIX_WEBHOOK_SECRET_ARN, whose value is read here, once: docs/notifications.md).
    pub async fn from_env() -> Result<Notifier, String> {
        let config = helix_core::Config::from_env(helix_core::Mode::Lambda).map_err(|e| e.to_string())?;
        let bus = std::env::var("HELIX_EVENT_BUS_NAME")
            .ok()
            .filter(|v| !v.trim().is_empty())
            .ok_or("configuration error: HELIX_EVENT_BUS_NAME: must be set (the EventBridge bus)")?;
        let sdk = helix_core::app::aws_sdk_config(&config).await;
        let events = aws_sdk_eventbridge::Client::new(&sdk);
        let webhook = match config.webhook.clone() {
            Some(w) => match w.secret_arn.clone() {
                Some(arn) => Some(w.with_secret(webhook_secret(&sdk, &arn).await?).map_err(|e| e.to_string())?),
                None => Some(w),
            },
            None => None,
        };
        Ok(Notifier::new(events, bus, webhook, config.public_url.clone()))
    }

    pub fn new(
        events: aws_sdk_eventbridge::Client,
        bus: String,
        webhook: Option<helix_core::config::WebhookConfig>,
        registry: String,
    ) -> Notifier {
        let backoff = webhook.as_ref().map_or(Duration::from_millis(500), |w| w.backoff.min(Duration::from_secs(2)));
        let mut sinks: Vec<Arc<dyn NotificationSink>> = vec![Arc::new(EventBridgeSink { client: events, bus })];
        if let Some(w) = webhook {
            sinks.push(Arc::new(WebhookSink::new(w)));
        }
        Notifier {
            sinks,
            registry,
            policy: RetryPolicy { attempts: ATTEMPTS_PER_INVOCATION, backoff },
            stats: Stats::default(),
        }
    }

    /// One batch: `{"batchItemFailures": [...]}` naming the first record not sent (none: all sent).
    pub async fn handle(&self, event: &Value) -> helix_core::Result<Value> {
        for item in stream_items(event, &self.registry)? {
            let Some(n) = item.notification else { continue };
            for sink in &self.sinks {
                if !send_with_retries(sink.as_ref(), &n, self.policy, &self.stats, None).await {
                    tracing::error!(channel = sink.channel(), id = %n.id, kind = n.kind,
                        stream = %n.event.stream, seq = n.event.seq,
                        "notification not sent; the batch is retried from it");
                    return Ok(json!({"batchItemFailures": [{"itemIdentifier": item.sequence_number}]}));
                }
            }
        }
        Ok(json!({"batchItemFailures": []}))
    }
}

/// The webhook's key: the SecretString of the Secrets Manager secret `arn` (GetSecretValue, the one
/// grant the template gives on that one secret). A failure fails the start, naming the ARN, never a value.
async fn webhook_secret(sdk: &aws_config::SdkConfig, arn: &str) -> Result<String, String> {
    let out = aws_sdk_secretsmanager::Client::new(sdk).get_secret_value().secret_id(arn).send().await.map_err(|e| {
        format!(
            "configuration error: HELIX_WEBHOOK_SECRET_ARN: {arn} could not be read: {}",
            aws_sdk_secretsmanager::error::DisplayErrorContext(e)
        )
    })?;
    out.secret_string
        .ok_or_else(|| format!("configuration error: HELIX_WEBHOOK_SECRET_ARN: {arn} holds no SecretString"))
}

/// EventBridge: one PutEvents entry per notification on the template's bus (`source` helix.registry,
/// `detail-type` as docs/notifications.md lists, `detail` the audit event with id and type).
pub struct EventBridgeSink {
    pub client: aws_sdk_eventbridge::Client,
    pub bus: String,
}

#[async_trait]
impl NotificationSink for EventBridgeSink {
    fn channel(&self) -> &'static str {
        "eventbridge"
    }

    async fn send(&self, n: &Notification) -> Result<(), String> {
        let entry = aws_sdk_eventbridge::types::PutEventsRequestEntry::builder()
            .event_bus_name(&self.bus)
            .source(SOURCE)
            .detail_type(n.detail_type)
            .detail(n.detail().to_string())
            .build();
        let out = self.client.put_events().entries(entry).send().await.map_err(|e| {
            use std::error::Error as _;
            let mut msg = e.to_string();
            let mut source = e.source();
            while let Some(s) = source {
                msg.push_str(&format!(": {s}"));
                source = s.source();
            }
            msg
        })?;
        if out.failed_entry_count() > 0 {
            let reason = out
                .entries()
                .iter()
                .find_map(|e| e.error_code().map(|c| format!("{c}: {}", e.error_message().unwrap_or(""))))
                .unwrap_or_default();
            return Err(format!("PutEvents refused the entry ({reason})"));
        }
        Ok(())
    }
}
