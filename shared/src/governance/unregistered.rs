//! Reports of exports made while the registry was unreachable (the client's override): recorded
//! once per id per workspace, audited as `bundle.export_unregistered`.

use serde::Deserialize;
use serde_json::json;

use crate::App;
use crate::blobs::Caller;
use crate::domain::time::now_unix;
use crate::domain::{AuditDraft, BundleName, Outcome, WorkspaceId, bundle_ref};
use crate::error::{Error, Result};
use crate::ports::{Change, Commit};

/// What a client reports after an export it made while the registry could not be reached
/// (`HELIX_REGISTRY_ALLOW_UNREGISTERED_EXPORT=1`, the playbook's last resort). The client's own words:
/// the registry records them as reported, with the reporter's identity from the token.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnregisteredExport {
    /// `uex_` + 32 lowercase hex, chosen by the client: a report sent twice is recorded once.
    pub id: String,
    /// When the client made the export (RFC 3339).
    pub exported_at: String,
    /// The local account and host that made it.
    pub local_user: String,
    pub host: String,
    /// Why the override was used, and the error that made the registry unreachable.
    pub reason: String,
    pub error: String,
}

impl UnregisteredExport {
    fn check(&self) -> Result<()> {
        let id_ok = self
            .id
            .strip_prefix("uex_")
            .is_some_and(|h| h.len() == 32 && h.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
        if !id_ok {
            return Err(Error::BadRequest("id is uex_ + 32 lowercase hex".into()));
        }
        let at = time::OffsetDateTime::parse(&self.exported_at, &time::format_description::well_known::Rfc3339)
            .map_err(|_| Error::BadRequest("exported_at is an RFC 3339 time".into()))?;
        // A client's clock may be off a little; an export cannot have happened in the future.
        if at.unix_timestamp() > now_unix() + 300 {
            return Err(Error::BadRequest("exported_at is in the future".into()));
        }
        for (field, value, max) in [
            ("local_user", &self.local_user, 128),
            ("host", &self.host, 255),
            ("reason", &self.reason, 1024),
            ("error", &self.error, 1024),
        ] {
            if !crate::domain::is_safe_text(value, max) {
                return Err(Error::BadRequest(format!(
                    "{field} is 1 to {max} characters, without control, line-separator or invisible formatting characters"
                )));
            }
        }
        Ok(())
    }
}

/// Record a client's report of an unregistered export in the workspace's audit trail
/// (`bundle.export_unregistered`, outcome `warned`), once per report id. The version need not be
/// registered: an export of something the registry never saw is what an auditor most needs to see.
/// A report id is recorded once per workspace, whichever version a repeat names. Returns whether this
/// call recorded it (false: already recorded).
pub async fn report_unregistered_export(
    app: &App,
    caller: Caller<'_>,
    ws: &WorkspaceId,
    name: &BundleName,
    version: &BundleName,
    report: &UnregisteredExport,
) -> Result<bool> {
    report.check()?;
    let change = Change::RecordUnregisteredExport {
        workspace_id: ws.to_string(),
        name: name.as_str().to_owned(),
        version: version.as_str().to_owned(),
        id: report.id.clone(),
    };
    let event = AuditDraft {
        stream: ws.to_string(),
        actor: caller.principal.actor(),
        action: "bundle.export_unregistered".into(),
        entity_type: "bundle".into(),
        entity_id: bundle_ref(ws, name.as_str(), version.as_str()),
        outcome: Outcome::Warned,
        request_id: caller.request_id.into(),
        details: json!({
            "id": report.id,
            "exported_at": report.exported_at,
            "local_user": report.local_user.trim(),
            "host": report.host.trim(),
            "reason": report.reason.trim(),
            "error": report.error.trim(),
        }),
    };
    Ok(matches!(app.meta.commit(change, event).await?, Commit::Applied(_)))
}
