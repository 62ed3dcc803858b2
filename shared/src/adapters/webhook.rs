//! The signed webhook (docs/notifications.md): one POST of the notification's JSON body to
//! HELIX_WEBHOOK_URL, with `X-Helix-Timestamp` (Unix seconds, at this attempt) and
//! `X-Helix-Signature: sha256=<hex HMAC-SHA256 of "<timestamp>.<body>">`. A 2xx answer within the
//! timeout is a delivery; anything else is a failed attempt (the deliverer retries, bounded). Redirects
//! are not followed (a signed body is for the configured receiver only). The secret is never logged.

use std::time::Duration;

use async_trait::async_trait;

use crate::config::WebhookConfig;
use crate::domain::notification::{Notification, sign};
use crate::domain::time::now_unix;
use crate::ports::NotificationSink;

pub struct WebhookSink {
    http: reqwest::Client,
    config: WebhookConfig,
}

impl WebhookSink {
    pub fn new(config: WebhookConfig) -> WebhookSink {
        let http = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.timeout.min(Duration::from_secs(5)))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("helix-registry/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("http client");
        WebhookSink { http, config }
    }
}

#[async_trait]
impl NotificationSink for WebhookSink {
    fn channel(&self) -> &'static str {
        "webhook"
    }

    async fn send(&self, n: &Notification) -> Result<(), String> {
        let body = n.body();
        let ts = now_unix();
        let signature = sign(self.config.secret.expose().as_bytes(), ts, body.as_bytes());
        let resp = self
            .http
            .post(&self.config.url)
            .header("content-type", "application/json")
            .header("x-helix-event-id", &n.id)
            .header("x-helix-event-type", n.kind)
            .header("x-helix-timestamp", ts.to_string())
            .header("x-helix-signature", signature)
            .body(body)
            .send()
            .await
            // Without the URL: reqwest's error names it, and a URL may carry a token in its query.
            .map_err(|e| format!("no answer: {}", e.without_url()))?;
        let status = resp.status();
        if status.is_success() { Ok(()) } else { Err(format!("answered {status}")) }
    }
}
