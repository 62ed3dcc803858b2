//! The verify bus on AWS (docs/decisions.md, "Unattended verification on AWS"): a `verification.step`
//! event per job step, put on the stack's own EventBridge bus (HELIX_VERIFY_BUS_NAME), whose rule
//! invokes the verify function (this binary's event entry). Here, not in helix-core: only this binary
//! talks to the verify bus, and the EventBridge client stays out of the other functions.

use std::sync::Arc;

use async_trait::async_trait;
use helix_core::domain::WorkspaceId;
use helix_core::ports::{VerifyBus, VerifyDriver};
use helix_core::{App, Config};

pub struct EventBridgeBus {
    bus: String,
    config: Config,
    /// Built at the first event (a publish instance that completes no large upload builds none).
    client: tokio::sync::OnceCell<aws_sdk_eventbridge::Client>,
}

impl EventBridgeBus {
    pub fn new(config: &Config, bus: &str) -> EventBridgeBus {
        EventBridgeBus { bus: bus.to_owned(), config: config.clone(), client: Default::default() }
    }

    async fn client(&self) -> &aws_sdk_eventbridge::Client {
        self.client
            .get_or_init(|| async {
                let sdk = helix_core::app::aws_sdk_config(&self.config).await;
                let mut b = aws_sdk_eventbridge::config::Builder::from(&sdk);
                if let Some(ep) = &self.config.events_endpoint_url {
                    b = b.endpoint_url(ep);
                }
                aws_sdk_eventbridge::Client::from_conf(b.build())
            })
            .await
    }
}

#[async_trait]
impl VerifyBus for EventBridgeBus {
    async fn kick(&self, ws: &WorkspaceId, upload_id: &str) -> Result<(), String> {
        let entry = aws_sdk_eventbridge::types::PutEventsRequestEntry::builder()
            .event_bus_name(&self.bus)
            .source(helix_core::verify::EVENT_SOURCE)
            .detail_type(helix_core::verify::EVENT_DETAIL_TYPE)
            .detail(helix_core::verify::event_detail(ws, upload_id).to_string())
            .build();
        let out = self.client().await.put_events().entries(entry).send().await.map_err(|e| {
            format!("PutEvents on {}: {}", self.bus, aws_sdk_eventbridge::error::DisplayErrorContext(e))
        })?;
        if out.failed_entry_count() > 0 {
            let reason = out
                .entries()
                .iter()
                .find_map(|e| e.error_code().map(|c| format!("{c}: {}", e.error_message().unwrap_or(""))))
                .unwrap_or_default();
            return Err(format!("PutEvents on {} refused the entry ({reason})", self.bus));
        }
        Ok(())
    }
}

/// Set `app`'s verification driver to the verify bus when HELIX_VERIFY_BUS_NAME names one (else the
/// status polls alone drive a job, as before). True when it is set.
pub fn install(app: &App) -> bool {
    match &app.config.verify_bus {
        Some(bus) => {
            let bus = EventBridgeBus::new(&app.config, bus);
            app.verify_worker.set(VerifyDriver::Bus(Arc::new(bus))).is_ok()
        }
        None => false,
    }
}
