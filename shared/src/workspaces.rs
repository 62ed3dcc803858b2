//! `GET /v1/workspaces`: the workspaces a credential covers, each with its counts (blob links and
//! bytes, bundle versions, versions per governance state) and whether it is suspended. A credential of
//! one workspace sees that workspace alone (never another's name or counts); a credential of every
//! workspace pages through all of them. The counts are the store's workspace counters, moved by every
//! commit in its own transaction (`ports::workspace_deltas`): one read per page, never a scan.

use std::collections::BTreeSet;

use serde_json::{Value, json};

use crate::App;
use crate::auth::Principal;
use crate::domain::{Scope, WorkspaceId};
use crate::error::{Error, Result};
use crate::ports::WorkspaceCounts;

/// Page size: default and most.
pub const LIST_DEFAULT: usize = 100;
pub const LIST_MAX: usize = 1000;

fn entry(c: &WorkspaceCounts, suspended: bool) -> Value {
    let n = |k: &str| c.counts.get(k).copied().unwrap_or(0).max(0);
    json!({
        "workspace_id": c.workspace_id,
        "blob_links": n("blob_links"),
        "blob_bytes": n("blob_bytes"),
        "bundle_versions": n("bundle_versions"),
        "states": {"submitted": n("submitted"), "approved": n("approved"), "rejected": n("rejected"),
                   "exported": n("exported")},
        "suspended": suspended,
    })
}

/// The workspaces `principal` covers, a page at a time (`cursor`: the last workspace id of the
/// previous page).
pub async fn list(app: &App, principal: &Principal, cursor: Option<&str>, limit: Option<usize>) -> Result<Value> {
    let limit = limit.unwrap_or(LIST_DEFAULT);
    if !(1..=LIST_MAX).contains(&limit) {
        return Err(Error::BadRequest(format!("limit is 1 to {LIST_MAX}")));
    }
    let after = cursor.map(WorkspaceId::parse).transpose()?;
    match &principal.workspace_id {
        // The request was refused already if this workspace is suspended (`Ctx::authorize`).
        Scope::One(ws) => {
            let page = if after.as_ref().is_some_and(|a| a >= ws) {
                Vec::new()
            } else {
                vec![entry(&app.meta.workspace_counts(ws).await?, false)]
            };
            Ok(json!({"workspaces": page, "next_cursor": null}))
        }
        Scope::All => {
            let page = app.meta.list_workspaces(after.as_ref(), limit).await?;
            let suspended: BTreeSet<String> =
                app.meta.suspended_workspaces().await?.into_iter().map(|s| s.workspace_id).collect();
            let next = (page.len() == limit).then(|| page.last().map(|c| c.workspace_id.clone())).flatten();
            let workspaces: Vec<Value> = page.iter().map(|c| entry(c, suspended.contains(&c.workspace_id))).collect();
            Ok(json!({"workspaces": workspaces, "next_cursor": next}))
        }
    }
}
