//! Batches of blob links (issue 19): which of many digests a workspace links, in one query; many
//! links and their audit events in one write (one savepoint of the writer's transaction, so one
//! COMMIT and one WAL fsync for the whole batch).

use std::collections::BTreeMap;

use rusqlite::params_from_iter;

use super::{SqliteStore, audit, catalog, meta_err};
use crate::domain::{AuditDraft, Digest, WorkspaceId};
use crate::error::Result;
use crate::ports::{BlobLink, Change, Commit, LinksCommit, summed, workspace_deltas};

use super::writer::Step;

/// Digests per `IN (...)` list (SQLite's default bound on parameters is far above it).
const DIGESTS_PER_QUERY: usize = 500;

impl SqliteStore {
    pub(super) async fn links_among(&self, ws: &WorkspaceId, digests: &[Digest]) -> Result<Vec<BlobLink>> {
        let ws = ws.to_string();
        let digests: Vec<String> = digests.iter().map(ToString::to_string).collect();
        self.with(meta_err, move |c| {
            let mut links = Vec::new();
            for chunk in digests.chunks(DIGESTS_PER_QUERY) {
                let marks = vec!["?"; chunk.len()].join(", ");
                let mut stmt = c.prepare(&format!(
                    "SELECT digest, size, linked_at, linked_by, slot FROM blob_links
                     WHERE workspace_id = ? AND digest IN ({marks})"
                ))?;
                let args = std::iter::once(ws.as_str()).chain(chunk.iter().map(String::as_str));
                let rows = stmt.query_map(params_from_iter(args), |r| {
                    let digest: String = r.get(0)?;
                    Ok(BlobLink {
                        workspace_id: ws.clone(),
                        digest: Digest::parse(&digest)
                            .map_err(|e| rusqlite::Error::InvalidParameterName(e.to_string()))?,
                        size: r.get::<_, i64>(1)? as u64,
                        linked_at: r.get(2)?,
                        linked_by: r.get(3)?,
                        slot: r.get(4)?,
                    })
                })?;
                links.extend(rows.collect::<rusqlite::Result<Vec<_>>>()?);
            }
            Ok(links)
        })
        .await
    }

    /// Every link with its event in one write: a link already present is `AlreadyDone` and writes
    /// nothing (no event, no counter); the others are committed together or not at all, their counters
    /// moved once by the sums and their events sealed one after the other (`append_many_in`).
    pub(super) async fn link_many(&self, links: Vec<(BlobLink, AuditDraft)>) -> LinksCommit {
        let written = self
            .write(meta_err, move |tx| {
                let mut applied = Vec::with_capacity(links.len());
                let mut events = Vec::with_capacity(links.len());
                let mut counts: BTreeMap<String, BTreeMap<String, i64>> = BTreeMap::new();
                for (link, event) in links {
                    let new = catalog::link_blob(tx, &link)? == 1;
                    applied.push(new);
                    if new {
                        let change = Change::LinkBlob(link);
                        if let Some((ws, deltas)) = workspace_deltas(&change) {
                            summed(counts.entry(ws.to_owned()).or_default(), deltas);
                        }
                        events.push((event, Some(change)));
                    }
                }
                for (ws, sums) in counts {
                    catalog::add_workspace_counts(tx, &ws, &sums.into_iter().collect::<Vec<_>>())?;
                }
                let mut sealed = audit::append_many_in(tx, events)?.into_iter();
                // One sealed event per new link, in order; a shortfall would be a bug: the write fails whole.
                let short = || rusqlite::Error::InvalidParameterName("a new link without its event".into());
                let done = applied
                    .into_iter()
                    .map(|new| match new {
                        true => sealed.next().map(|e| Commit::Applied(Box::new(e))).ok_or_else(short),
                        false => Ok(Commit::AlreadyDone),
                    })
                    .collect::<rusqlite::Result<Vec<_>>>()?;
                Ok(Step::Keep(done))
            })
            .await;
        match written {
            Ok(done) => LinksCommit { done, failed: None },
            Err(e) => LinksCommit { done: Vec::new(), failed: Some(e) },
        }
    }
}
