//! Metrics (SPEC §7, `GET /metrics`). Lambda instances share no memory, so every counter lives in the
//! meta store:
//! - **business counters** (`ports::counter_deltas`: audit events, governance denials, blob links and
//!   bytes, enabled tokens, bundle versions, receipts by kind) are exact: the store moves them in the
//!   very transaction that commits the change and its event;
//! - **request counters** (per function, route, status and reason; dependency errors) are counted in
//!   memory by each instance (`Recorder`) and flushed as one sharded atomic add at most once per
//!   `HELIX_METRICS_FLUSH_SECONDS` (10), at the end of a request: never an extra write per request,
//!   and a failed flush keeps the counts for the next one and fails nothing. What an instance counted
//!   since its last flush is lost if it is reclaimed before serving again (Lambda reclaims idle
//!   instances without notice), or if a flush takes over a second and is abandoned: at most one flush
//!   interval of that instance's requests. A write whose answer is lost but which was applied may be
//!   counted again by the next flush. Request counters are approximate; business counters are exact.

use crate::App;
use crate::error::Result;
use crate::ports::BUSINESS_COUNTERS;

pub use crate::request_counts::{REQUEST_COUNTERS, Recorder};

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

struct Family {
    name: &'static str,
    kind: &'static str,
    help: &'static str,
    samples: Vec<(String, i64)>,
}

/// The Prometheus text exposition (format 0.0.4) of the store's counters and this build's posture.
pub async fn render(app: &App) -> Result<String> {
    let business = app.meta.counters(BUSINESS_COUNTERS).await?;
    let requests = app.meta.counters(REQUEST_COUNTERS).await?;
    let b = |k: &str| business.get(k).copied().unwrap_or(0);
    let mut families = vec![
        Family {
            name: "helix_requests_total",
            kind: "counter",
            help: "Requests answered, by function, route, status and problem reason (flushed by each instance).",
            samples: requests
                .iter()
                .filter_map(|(k, v)| {
                    let parts: Vec<&str> = k.strip_prefix("req|")?.splitn(4, '|').collect();
                    let [function, route, status, reason] = parts[..] else { return None };
                    Some((
                        format!(
                            "{{function=\"{}\",route=\"{}\",status=\"{}\",reason=\"{}\"}}",
                            escape(function),
                            escape(route),
                            escape(status),
                            escape(reason)
                        ),
                        *v,
                    ))
                })
                .collect(),
        },
        Family {
            name: "helix_dependency_errors_total",
            kind: "counter",
            help: "Requests answered 503 because a dependency failed, by dependency.",
            samples: requests
                .iter()
                .filter_map(|(k, v)| Some((format!("{{dependency=\"{}\"}}", escape(k.strip_prefix("dep|")?)), *v)))
                .collect(),
        },
    ];
    for (name, kind, help, key) in [
        ("helix_blobs", "gauge", "Blob links (a blob linked in two workspaces counts twice).", "blob_links"),
        ("helix_blob_bytes", "gauge", "Bytes of linked blobs.", "blob_bytes"),
        (
            "helix_tokens_enabled",
            "gauge",
            "API tokens issued and not revoked or rotated away (expired ones included).",
            "tokens_enabled",
        ),
        ("helix_bundle_versions", "gauge", "Registered bundle versions.", "bundle_versions"),
        (
            "helix_workspaces_suspended",
            "gauge",
            "Workspaces suspended now (every request scoped to them refused).",
            "workspaces_suspended",
        ),
        ("helix_audit_events_total", "counter", "Audit events appended.", "audit_events"),
        (
            "helix_governance_denials_total",
            "counter",
            "Governance decisions, exports and freeze switches refused (audited as denied).",
            "governance_denials",
        ),
        ("helix_approvals_total", "counter", "Approval receipts.", "approvals"),
        ("helix_rejections_total", "counter", "Rejection receipts.", "rejections"),
        ("helix_waivers_total", "counter", "Emergency waiver receipts.", "waivers"),
        ("helix_exports_total", "counter", "Official export receipts.", "exports"),
        (
            "helix_unregistered_exports_total",
            "counter",
            "Exports clients made while the registry was unreachable (the override), as reported since.",
            "unregistered_exports",
        ),
    ] {
        families.push(Family { name, kind, help, samples: vec![(String::new(), b(key))] });
    }
    let notify = app.meta.counters(crate::notify::NOTIFY_COUNTERS).await?;
    let by_outcome = |wanted: &[&str]| -> Vec<(String, i64)> {
        notify
            .iter()
            .filter_map(|(k, v)| {
                let (channel, outcome) = k.split_once('|')?;
                wanted.contains(&outcome).then(|| {
                    let labels = format!("channel=\"{}\"", escape(channel));
                    let labels =
                        if wanted.len() > 1 { format!("{labels},outcome=\"{}\"", escape(outcome)) } else { labels };
                    (format!("{{{labels}}}"), *v)
                })
            })
            .collect()
    };
    families.push(Family {
        name: "helix_notifications_total",
        kind: "counter",
        help: "Governance notifications delivered, or given up after their last attempt, by channel.",
        samples: by_outcome(&["delivered", "given_up"]),
    });
    families.push(Family {
        name: "helix_notification_failed_attempts_total",
        kind: "counter",
        help: "Notification attempts that failed (each retried until delivered or given up), by channel.",
        samples: by_outcome(&["failed_attempts"]),
    });
    let c = &app.config;
    families.push(Family {
        name: "helix_frozen",
        kind: "gauge",
        help: "1 while the registry is frozen (every change refused), else 0.",
        samples: vec![(String::new(), i64::from(app.meta.freeze().await?.frozen))],
    });
    families.push(Family {
        name: "helix_build_info",
        kind: "gauge",
        help: "This build and its backends.",
        samples: vec![(
            format!(
                "{{version=\"{}\",blob_backend=\"{}\",meta_backend=\"{}\",signer_backend=\"{}\"}}",
                env!("CARGO_PKG_VERSION"),
                app.blobs.info().backend,
                app.meta.backend(),
                app.signer.backend()
            ),
            1,
        )],
    });
    families.push(Family {
        name: "helix_governance_mode",
        kind: "gauge",
        help: "The governance mode in force (1 for the current one).",
        samples: ["enforce", "warn", "off"]
            .iter()
            .map(|m| (format!("{{mode=\"{m}\"}}"), i64::from(c.governance_mode.as_str() == *m)))
            .collect(),
    });
    families.push(Family {
        name: "helix_audit_reads",
        kind: "gauge",
        help: "1 while reads are recorded in the audit trail (HELIX_AUDIT_READS), else 0.",
        samples: vec![(String::new(), i64::from(app.reads.enabled()))],
    });
    families.push(Family {
        name: "helix_read_records_dropped_total",
        kind: "counter",
        help: "Read records this process could not queue or store (helix serve; logged with the record).",
        samples: vec![(String::new(), app.reads.dropped() as i64)],
    });
    let mut out = String::new();
    for f in families {
        out.push_str(&format!("# HELP {} {}\n# TYPE {} {}\n", f.name, f.help, f.name, f.kind));
        for (labels, v) in f.samples {
            out.push_str(&format!("{}{labels} {v}\n", f.name));
        }
    }
    Ok(out)
}
