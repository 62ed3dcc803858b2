//! Delivering governance notifications from the outbox (docs/notifications.md, docs/decisions.md
//! "Notifications: an outbox of audit events"). A decision commits its audit event, and with it its
//! outbox entry, and answers; nothing on the request path waits for a receiver. A deliverer (one per
//! `helix serve`, in the background) reads the entries after its durable cursor, in commit order, sends
//! each with bounded retries (the wait doubles from HELIX_WEBHOOK_BACKOFF_MS, at most 64 times it;
//! HELIX_WEBHOOK_ATTEMPTS attempts), and moves its cursor past an entry only once it was delivered or
//! given up. A given-up notification is logged (error, with its id and type) and counted
//! (`helix_notifications_total{outcome="given_up"}`); the audit trail still holds the event. A crash
//! between a delivery and the cursor's write sends that notification again, with the same id: at least
//! once.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::App;
use crate::domain::notification::Notification;
use crate::error::Result;
use crate::ports::{MetaStore, NotificationOutbox, NotificationSink};

/// The counter group of delivery outcomes (`{channel}|delivered`, `{channel}|failed_attempts`,
/// `{channel}|given_up`), rendered as `helix_notifications_total` and
/// `helix_notification_failed_attempts_total`.
pub const NOTIFY_COUNTERS: &str = "notify";

/// Entries read per round.
const BATCH: usize = 100;
/// How often an idle deliverer looks for new entries.
const POLL: Duration = Duration::from_millis(250);

pub use crate::domain::notification::DeliveryStats as Stats;

/// Retries: `attempts` in all, waiting `backoff`, then twice that, … up to 64 times `backoff`.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    pub attempts: u32,
    pub backoff: Duration,
}

impl RetryPolicy {
    /// The wait after failed attempt `n` (1-based).
    pub fn delay(&self, n: u32) -> Duration {
        self.backoff.saturating_mul(1 << (n.saturating_sub(1)).min(6))
    }
}

pub struct Deliverer {
    pub outbox: Arc<dyn NotificationOutbox>,
    pub sink: Arc<dyn NotificationSink>,
    pub meta: Arc<dyn MetaStore>,
    /// The registry's public URL, named in every notification.
    pub registry: String,
    pub policy: RetryPolicy,
    pub stats: Arc<Stats>,
}

/// Start `app`'s webhook deliverer, when HELIX_WEBHOOK_URL is set and the meta store has an outbox
/// (the embedded store; on AWS the `notify` function reads the audit table's stream). The cursor is
/// set first: a channel that never ran starts at the outbox's end (history is not replayed to a
/// receiver configured later), and everything committed from here on is delivered.
pub async fn start(app: &Arc<App>) -> Result<Option<tokio::task::JoinHandle<()>>> {
    let Some(config) = app.config.webhook.clone() else { return Ok(None) };
    let Some(outbox) = app.outbox.clone() else {
        tracing::warn!(
            "HELIX_WEBHOOK_URL is set but this meta store has no outbox: on DynamoDB the notify function \
             delivers webhooks from the audit table's stream"
        );
        return Ok(None);
    };
    let policy = RetryPolicy { attempts: config.attempts, backoff: config.backoff };
    let sink: Arc<dyn NotificationSink> = Arc::new(crate::adapters::webhook::WebhookSink::new(config));
    let deliverer = Deliverer {
        outbox,
        sink,
        meta: app.meta.clone(),
        registry: app.config.public_url.clone(),
        policy,
        stats: app.notify_stats.clone(),
    };
    deliverer.init_cursor().await?;
    tracing::info!(
        channel = deliverer.sink.channel(),
        attempts = policy.attempts,
        "delivering governance notifications"
    );
    Ok(Some(tokio::spawn(deliverer.run())))
}

impl Deliverer {
    /// A channel that never ran starts at the outbox's end.
    pub async fn init_cursor(&self) -> Result<u64> {
        let channel = self.sink.channel();
        if let Some(at) = self.outbox.outbox_cursor(channel).await? {
            return Ok(at);
        }
        let end = self.outbox.outbox_end().await?;
        self.outbox.set_outbox_cursor(channel, end).await?;
        Ok(end)
    }

    /// Deliver forever: a round, then (when it found nothing, or the store failed) a short wait.
    pub async fn run(self) {
        loop {
            match self.round().await {
                Ok(0) => tokio::time::sleep(POLL).await,
                Ok(_) => {}
                Err(e) => {
                    tracing::error!(error = %e, channel = self.sink.channel(), "notification outbox unreadable");
                    tokio::time::sleep(POLL * 4).await;
                }
            }
        }
    }

    /// Deliver (or give up) every entry after the cursor, up to a batch, moving the cursor past each.
    /// Returns how many entries it handled.
    pub async fn round(&self) -> Result<usize> {
        let channel = self.sink.channel();
        let cursor = self.init_cursor().await?;
        let entries = self.outbox.outbox_after(cursor, BATCH).await?;
        for entry in &entries {
            if let Some(n) = Notification::of(&entry.event, &self.registry) {
                self.deliver(&n).await;
            }
            self.outbox.set_outbox_cursor(channel, entry.position).await?;
        }
        Ok(entries.len())
    }

    /// Send `n` until it is delivered or its attempts are spent; never fails.
    async fn deliver(&self, n: &Notification) {
        let delivered =
            send_with_retries(self.sink.as_ref(), n, self.policy, &self.stats, Some(self.meta.as_ref())).await;
        if !delivered {
            tracing::error!(channel = self.sink.channel(), id = %n.id, kind = n.kind, attempts = self.policy.attempts,
                stream = %n.event.stream, seq = n.event.seq,
                "notification given up (the audit trail holds the event; docs/runbook.md)");
        }
    }
}

/// Send `n` on `sink` until it is delivered (true) or `policy.attempts` attempts failed (false), waiting
/// between attempts; each outcome counted in `stats` and, when given, in the store's `notify` counters.
pub async fn send_with_retries(
    sink: &dyn NotificationSink,
    n: &Notification,
    policy: RetryPolicy,
    stats: &Stats,
    counters: Option<&dyn MetaStore>,
) -> bool {
    let channel = sink.channel();
    let count = async |outcome: &str| {
        if let Some(meta) = counters
            && let Err(e) = meta.add_to_counters(NOTIFY_COUNTERS, &[(format!("{channel}|{outcome}"), 1)]).await
        {
            tracing::warn!(error = %e, "could not count a notification outcome");
        }
    };
    for attempt in 1..=policy.attempts {
        match sink.send(n).await {
            Ok(()) => {
                stats.delivered.fetch_add(1, Ordering::Relaxed);
                count("delivered").await;
                tracing::debug!(channel, id = %n.id, kind = n.kind, attempt, "notification delivered");
                return true;
            }
            Err(reason) => {
                stats.failed_attempts.fetch_add(1, Ordering::Relaxed);
                count("failed_attempts").await;
                tracing::warn!(channel, id = %n.id, kind = n.kind, attempt, of = policy.attempts, %reason,
                    "notification attempt failed");
                if attempt < policy.attempts {
                    tokio::time::sleep(policy.delay(attempt)).await;
                }
            }
        }
    }
    stats.given_up.fetch_add(1, Ordering::Relaxed);
    count("given_up").await;
    false
}

/// One record of a DynamoDB Streams event of the audit table (the outbox on AWS): its sequence number
/// (the `itemIdentifier` a partial batch failure names) and, when it inserted a published governance
/// event, that event's notification.
#[derive(Debug, Clone)]
pub struct StreamItem {
    pub sequence_number: String,
    pub notification: Option<Notification>,
}

/// The records of a DynamoDB Streams event (`Records[].dynamodb.NewImage.event.S`: the canonical audit
/// event the adapter stores), in stream order. Only inserts are events (the audit table is append-only;
/// its resource policy refuses updates and deletes).
pub fn stream_items(event: &serde_json::Value, registry: &str) -> Result<Vec<StreamItem>> {
    let bad = |what: &str| crate::Error::BadRequest(format!("not a DynamoDB Streams event of the audit table: {what}"));
    let records = event.get("Records").and_then(serde_json::Value::as_array).ok_or_else(|| bad("no Records"))?;
    records
        .iter()
        .map(|r| {
            let sequence_number = r
                .pointer("/dynamodb/SequenceNumber")
                .and_then(serde_json::Value::as_str)
                .ok_or_else(|| bad("a record without dynamodb.SequenceNumber"))?
                .to_owned();
            let line = r.pointer("/dynamodb/NewImage/event/S").and_then(serde_json::Value::as_str);
            let notification = match (r.get("eventName").and_then(serde_json::Value::as_str), line) {
                (Some("INSERT"), Some(line)) => {
                    Notification::of(&crate::domain::AuditEvent::from_canonical(line)?, registry)
                }
                _ => None,
            };
            Ok(StreamItem { sequence_number, notification })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_double_from_the_first_wait_up_to_64_times_it() {
        let p = RetryPolicy { attempts: 10, backoff: Duration::from_millis(1000) };
        let waits: Vec<u64> = (1..10).map(|n| p.delay(n).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 64, 64, 64]);
    }
}
