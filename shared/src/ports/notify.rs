//! Notifications: the outbox of governance events and the channels they are sent on.

use super::*;

/// One governance event in the outbox: its position (commit order, across streams) and the event.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxEntry {
    pub position: u64,
    pub event: AuditEvent,
}

/// The outbox a deliverer reads (`crate::notify`): every audit event whose action is one of
/// `domain::notification::NOTIFIED_ACTIONS`, recorded in the transaction that appends the event (so a
/// committed governance event is always in it, and nothing uncommitted ever is), in commit order; and
/// the deliverer's durable cursor. The embedded store has one; on AWS the audit table's DynamoDB
/// stream is the outbox and the event source mapping keeps the cursor (docs/notifications.md).
#[async_trait]
pub trait NotificationOutbox: Send + Sync {
    /// The position `channel` has delivered (or given up) up to; None when it never ran on this store.
    async fn outbox_cursor(&self, channel: &str) -> Result<Option<u64>>;

    /// The position of the last entry (0 when there is none).
    async fn outbox_end(&self) -> Result<u64>;

    /// Up to `limit` entries after `after`, in position order.
    async fn outbox_after(&self, after: u64, limit: usize) -> Result<Vec<OutboxEntry>>;

    /// Store `channel`'s cursor durably; it never moves back.
    async fn set_outbox_cursor(&self, channel: &str, position: u64) -> Result<()>;
}

/// A channel notifications are sent on (a signed webhook; EventBridge). One call is one attempt: the
/// deliverer retries, bounded. An error is the reason the attempt failed (for the log; never a secret).
#[async_trait]
pub trait NotificationSink: Send + Sync {
    /// The channel's name (the outbox cursor's, the metrics label): `webhook`, `eventbridge`.
    fn channel(&self) -> &'static str;

    async fn send(&self, notification: &crate::domain::notification::Notification) -> std::result::Result<(), String>;
}
