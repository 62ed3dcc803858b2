//! `helix teams suspend` / `helix teams unsuspend`: one workspace's suspension switch, straight in the
//! configured store (as `helix freeze` writes the freeze switch: for a registry whose API is down, or
//! an operator without an admin token of every workspace at hand). Audited in the workspace's stream
//! as `workspace.suspend` / `workspace.unsuspend` by the operator (`cli:$USER`).
//! Over HTTP, `POST /v1/admin/workspaces/{ws}/suspend` and `.../unsuspend` do the same.

use helix_core::domain::WorkspaceId;
use helix_core::ports::MetaStore;

/// Set `workspace`'s switch in `meta` as `actor`; the sentence to print (what the switch is now, and whether
/// this call moved it).
pub async fn switch(
    meta: &dyn MetaStore,
    workspace: &str,
    suspended: bool,
    reason: &str,
    actor: &str,
) -> Result<String, Box<dyn std::error::Error>> {
    let ws = WorkspaceId::parse(workspace)?;
    let (state, moved) = helix_core::suspension::record(meta, actor, "cli", &ws, suspended, reason).await?;
    let what = if state.suspended { "suspended" } else { "not suspended" };
    let how = if moved { "now" } else { "already" };
    Ok(format!("workspace {ws} is {how} {what}: {}", state.reason.unwrap_or_default()))
}
