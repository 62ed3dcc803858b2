//! `GET /v1/governance/pending`: the versions a principal may decide now, across the workspaces its
//! credential covers. A version is waiting while it is `submitted` (neither approved, rejected nor
//! exported); for each one the answer says which decisions this principal's role allows and which the
//! registry would refuse it and why (`self_approval`: the user who registered a version may reject it,
//! never approve or waive it). Suspended workspaces are left out (every decision there is refused);
//! a frozen registry is said once, at the top (`frozen`): the list stays, for after the thaw.
//!
//! Bounded: at most `bundles::SCAN_BUDGET` versions are read per request, whatever the number of
//! workspaces; a page cut short carries `next_cursor` (`{ws}/{name}@{version}`, or `{ws}/` for the
//! start of a workspace).

use std::collections::BTreeSet;

use serde_json::{Value, json};

use crate::App;
use crate::auth::Principal;
use crate::bundles::{self, SCAN_BUDGET};
use crate::domain::governance::State;
use crate::domain::{BundleName, Role, Scope, WorkspaceId};
use crate::error::{Error, Result};
use crate::governance::same_user;
use crate::ports::BundleVersion;

/// Page size: default and most.
pub const PENDING_DEFAULT: usize = 100;
pub const PENDING_MAX: usize = 500;
/// Workspaces read per page of the workspace list, for a credential of every workspace.
const WORKSPACE_PAGE: usize = 100;

/// What `principal` may decide on `v`, and what it may not (with the registry's reason).
pub fn actions(principal: &Principal, v: &BundleVersion) -> (Vec<&'static str>, Vec<Value>) {
    let own = same_user(&principal.user, &v.registered_user);
    let mut allowed = Vec::new();
    let mut refused = Vec::new();
    for (action, min) in [("approve", Role::Approver), ("reject", Role::Approver), ("waive", Role::SafetyReviewer)] {
        if !principal.role.at_least(min) {
            continue;
        }
        if own && action != "reject" {
            refused.push(json!({"action": action, "reason": "self_approval"}));
        } else {
            allowed.push(action);
        }
    }
    (allowed, refused)
}

/// Where a page starts: a workspace's beginning, inside a workspace after a version, or after a
/// workspace (`{ws}/`, `{ws}/{name}@{version}`, `{ws}/~`).
enum From {
    Start,
    At(WorkspaceId, Option<(String, String)>),
    After(WorkspaceId),
}

fn parse_cursor(c: Option<&str>) -> Result<From> {
    let Some(c) = c else { return Ok(From::Start) };
    let bad = || Error::BadRequest("cursor is {ws}/, {ws}/~ or {ws}/{name}@{version}".into());
    let (ws, rest) = c.split_once('/').ok_or_else(bad)?;
    let ws = WorkspaceId::parse(ws)?;
    match rest {
        "" => Ok(From::At(ws, None)),
        "~" => Ok(From::After(ws)),
        _ => {
            let (name, version) = rest.split_once('@').ok_or_else(bad)?;
            let after = (BundleName::parse(name)?.to_string(), BundleName::parse(version)?.to_string());
            Ok(From::At(ws, Some(after)))
        }
    }
}

/// The workspaces to walk for `principal` from `from` on, without the suspended ones, and whether
/// more follow the last (a credential of every workspace reads the list a page at a time).
async fn workspaces(app: &App, principal: &Principal, from: &From) -> Result<(Vec<WorkspaceId>, bool)> {
    match &principal.workspace_id {
        Scope::One(own) => Ok((
            match from {
                From::Start => vec![own.clone()],
                From::At(ws, _) if ws == own => vec![own.clone()],
                _ => Vec::new(),
            },
            false,
        )),
        Scope::All => {
            let suspended: BTreeSet<String> =
                app.meta.suspended_workspaces().await?.into_iter().map(|s| s.workspace_id).collect();
            let (mut out, after) = match from {
                From::Start => (Vec::new(), None),
                From::At(ws, _) => (vec![ws.clone()], Some(ws)),
                From::After(ws) => (Vec::new(), Some(ws)),
            };
            let page = app.meta.list_workspaces(after, WORKSPACE_PAGE).await?;
            let more = page.len() == WORKSPACE_PAGE;
            for c in page {
                out.push(WorkspaceId::parse(&c.workspace_id)?);
            }
            out.retain(|w| !suspended.contains(w.as_str()));
            Ok((out, more))
        }
    }
}

/// A page of the versions `principal` may decide now.
pub async fn pending(app: &App, principal: &Principal, cursor: Option<&str>, limit: Option<usize>) -> Result<Value> {
    let limit = limit.unwrap_or(PENDING_DEFAULT);
    if !(1..=PENDING_MAX).contains(&limit) {
        return Err(Error::BadRequest(format!("limit is 1 to {PENDING_MAX}")));
    }
    let from = parse_cursor(cursor)?;
    let (list, more_workspaces) = workspaces(app, principal, &from).await?;
    let mut out: Vec<Value> = Vec::new();
    let mut budget = SCAN_BUDGET;
    let mut next: Option<String> = None;
    for (i, ws) in list.iter().enumerate() {
        let after = match &from {
            From::At(start, after) if start == ws => after.clone(),
            _ => None,
        };
        let found = bundles::scan(app, ws, after, Some(State::Submitted), limit - out.len(), budget).await?;
        budget -= found.scanned.min(budget);
        for (v, state) in &found.versions {
            let (allowed, refused) = actions(principal, v);
            if allowed.is_empty() {
                continue;
            }
            let mut item = bundles::listed(v, *state)?;
            item["actions"] = json!(allowed);
            item["refused"] = json!(refused);
            out.push(item);
        }
        if let Some((n, v)) = found.next {
            // Cut inside this workspace (the page is full, or the read budget is spent).
            next = Some(format!("{ws}/{n}@{v}"));
            break;
        }
        let last = i + 1 == list.len();
        if out.len() >= limit || budget == 0 || (last && more_workspaces) {
            // This workspace is done; more may follow it.
            next = (!last || more_workspaces).then(|| format!("{ws}/~"));
            break;
        }
    }
    let frozen = app.meta.freeze().await?.frozen;
    Ok(json!({"versions": out, "frozen": frozen, "next_cursor": next}))
}
