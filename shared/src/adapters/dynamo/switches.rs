//! The switches and counters of the meta table, written by the token function (switches) and in every
//! commit (counters): the freeze switch (`FREEZE`/`FREEZE`), one workspace's suspension
//! (`SUSPENDED`/`{ws}`), and the sharded business counters (`COUNTER#{group}#{n}`/`SHARD`). A request
//! reads its token and the switches it needs in one BatchGetItem (`gate`), with the one item its route
//! reads first (`gate_with`: a blob link, a bundle version).

use std::collections::BTreeMap;

use aws_sdk_dynamodb::types::{AttributeValue, TransactWriteItem, Update};

use super::{DynamoStore, Item, build, err, get_s, meta_key, n, s};
use crate::domain::WorkspaceId;
use crate::error::{Dependency, Error, Result};
use crate::ports::{Freeze, Gate, Prefetch, Prefetched, Suspension};

/// Counter shards, each its own partition (`COUNTER#{group}#{n}`): every commit moves one, so they
/// must not share a partition's write limit (32 × ~500 transactional adds/s).
const COUNTER_SHARDS: u8 = 32;

/// The freeze switch's item (`pk` = `sk` = `FREEZE`), written by the token function only.
pub(super) const FREEZE_PK: &str = "FREEZE";

/// The partition of the workspace suspension switches (`pk` = `SUSPENDED`, `sk` = the workspace id;
/// attributes `suspended` (BOOL), `reason`, `by`, `at`), written by the token function only. One
/// partition: status lists the suspended workspaces with one Query; a request reads its workspace's
/// item in the BatchGetItem that reads its token.
pub(super) const SUSPENDED_PK: &str = "SUSPENDED";

fn suspension_from_item(item: &Item) -> Result<Suspension> {
    Ok(Suspension {
        workspace_id: get_s(item, "sk")?,
        suspended: matches!(item.get("suspended"), Some(AttributeValue::Bool(true))),
        reason: get_s(item, "reason").ok(),
        by: get_s(item, "by").ok(),
        at: get_s(item, "at").ok(),
    })
}

fn freeze_from_item(item: &Item) -> Freeze {
    Freeze {
        frozen: matches!(item.get("frozen"), Some(AttributeValue::Bool(true))),
        reason: get_s(item, "reason").ok(),
        by: get_s(item, "by").ok(),
        at: get_s(item, "at").ok(),
    }
}

/// The position a switch is set to, by whom, when and why.
pub(super) struct Position<'a> {
    pub on: bool,
    pub reason: &'a Option<String>,
    pub by: &'a Option<String>,
    pub at: &'a Option<String>,
}

impl DynamoStore {
    /// Set the switch item (`pk`, `sk`) whose flag attribute is `flag`, on condition that it is not in
    /// that position already (freezing a frozen registry, or unsuspending a workspace that is not
    /// suspended, changes nothing).
    pub(super) fn switch_update(&self, pk: &str, sk: &str, flag: &str, to: Position<'_>) -> Result<TransactWriteItem> {
        let condition = if to.on { "attribute_not_exists(pk) OR #f = :other" } else { "#f = :other" };
        let text = |v: &Option<String>| s(v.clone().unwrap_or_default());
        let update = Update::builder()
            .table_name(&self.table)
            .key("pk", s(pk))
            .key("sk", s(sk))
            .update_expression("SET #f = :v, reason = :r, #by = :b, #at = :a")
            .condition_expression(condition)
            .expression_attribute_names("#f", flag)
            .expression_attribute_names("#by", "by")
            .expression_attribute_names("#at", "at")
            .expression_attribute_values(":v", AttributeValue::Bool(to.on))
            .expression_attribute_values(":other", AttributeValue::Bool(!to.on))
            .expression_attribute_values(":r", text(to.reason))
            .expression_attribute_values(":b", text(to.by))
            .expression_attribute_values(":a", text(to.at));
        Ok(TransactWriteItem::builder().update(build(update.build())?).build())
    }

    /// `ADD` to counters of a group: one shard item (`COUNTER#{group}#{n}` / `SHARD`, n at random), each
    /// counter an attribute.
    pub(super) fn counter_update(&self, group: &str, deltas: &[(String, i64)]) -> Result<Update> {
        let mut r = [0u8; 1];
        let _ = getrandom::fill(&mut r);
        let mut update = Update::builder()
            .table_name(&self.table)
            .key("pk", s(format!("COUNTER#{group}#{}", r[0] % COUNTER_SHARDS)))
            .key("sk", s("SHARD"));
        let mut adds = Vec::new();
        for (i, (name, delta)) in deltas.iter().enumerate() {
            adds.push(format!("#c{i} :c{i}"));
            update = update
                .expression_attribute_names(format!("#c{i}"), name)
                .expression_attribute_values(format!(":c{i}"), n(delta));
        }
        build(update.update_expression(format!("ADD {}", adds.join(", "))).build())
    }

    /// The token, the switches and (when `prefetch` names one) a blob link or a bundle version, in one
    /// BatchGetItem of the meta table: every item is read consistently, and a key left unprocessed is
    /// asked for again (`batch_get`), so an item that cannot be read is a 503, never "not frozen",
    /// "not linked" or "no such version".
    pub(super) async fn switches(
        &self,
        token_sha256: Option<&str>,
        freeze: bool,
        workspace: Option<&WorkspaceId>,
        prefetch: Option<Prefetch<'_>>,
    ) -> Result<Gate> {
        let mut keys = Vec::new();
        let prefetch_key = prefetch.map(|p| match p {
            Prefetch::Link { ws, digest } => super::catalog::link_key(ws, digest),
            Prefetch::Version { ws, name, version } => super::catalog::version_key(ws, name, version),
        });
        if let Some((pk, sk)) = &prefetch_key {
            keys.push(meta_key(pk.clone(), sk));
        }
        if let Some(sha) = token_sha256 {
            keys.push(meta_key(format!("TOKEN#{sha}"), "TOKEN"));
        }
        if freeze {
            keys.push(meta_key(FREEZE_PK, FREEZE_PK));
        }
        if let Some(ws) = workspace {
            keys.push(meta_key(SUSPENDED_PK, ws.as_str()));
            if freeze {
                // A change in `ws` appends to its stream: where that append goes, read now.
                keys.push(super::audit::head_hint_key(ws.as_str()));
            }
        }
        let mut gate = Gate {
            token: None,
            freeze: freeze.then(Freeze::default),
            suspension: workspace.map(|ws| Suspension { workspace_id: ws.to_string(), ..Suspension::default() }),
            prefetched: prefetch.map(|p| match p {
                Prefetch::Link { .. } => Prefetched::Link(None),
                Prefetch::Version { .. } => Prefetched::Version(None),
            }),
        };
        if keys.is_empty() {
            return Ok(gate);
        }
        // One round trip for all of them (BatchGetItem, read consistently).
        for item in self.batch_get(keys).await? {
            let pk = get_s(&item, "pk")?;
            if let (Some(p), Some((item_pk, item_sk))) = (prefetch, &prefetch_key)
                && &pk == item_pk
                && get_s(&item, "sk")? == *item_sk
            {
                gate.prefetched = Some(match p {
                    Prefetch::Link { ws, digest } => {
                        Prefetched::Link(Some(super::catalog::link_from_item(ws, digest, &item)?))
                    }
                    Prefetch::Version { ws, .. } => {
                        Prefetched::Version(Some(super::catalog::bundle_from_item(ws, &item)?))
                    }
                });
                continue;
            }
            match pk.as_str() {
                FREEZE_PK => gate.freeze = Some(freeze_from_item(&item)),
                SUSPENDED_PK => gate.suspension = Some(suspension_from_item(&item)?),
                p if p.starts_with(super::audit::HEAD_HINT_PK) => self.head_hint_read(&item),
                _ => gate.token = Some(super::tokens::token_from_item(&item)?),
            }
        }
        Ok(gate)
    }

    pub(super) async fn freeze_switch(&self) -> Result<Freeze> {
        Ok(self.get_meta(FREEZE_PK.into(), FREEZE_PK).await?.as_ref().map(freeze_from_item).unwrap_or_default())
    }

    pub(super) async fn suspensions(&self) -> Result<Vec<Suspension>> {
        let req = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("pk = :pk")
            .filter_expression("suspended = :t")
            .expression_attribute_values(":pk", s(SUSPENDED_PK))
            .expression_attribute_values(":t", AttributeValue::Bool(true))
            .consistent_read(true);
        self.meta_items(req).await?.iter().map(suspension_from_item).collect()
    }

    pub(super) async fn add_counters(&self, group: &str, deltas: &[(String, i64)]) -> Result<()> {
        // An update expression is at most 4 KB: 50 counters per write.
        for chunk in deltas.chunks(50) {
            let u = self.counter_update(group, chunk)?;
            self.client
                .update_item()
                .table_name(u.table_name())
                .set_key(Some(u.key().clone()))
                .update_expression(u.update_expression())
                .set_expression_attribute_names(u.expression_attribute_names().cloned())
                .set_expression_attribute_values(u.expression_attribute_values().cloned())
                .send()
                .await
                .map_err(err(Dependency::MetaStore))?;
        }
        Ok(())
    }

    pub(super) async fn counter_sums(&self, group: &str) -> Result<BTreeMap<String, i64>> {
        let keys = (0..COUNTER_SHARDS).map(|n| meta_key(format!("COUNTER#{group}#{n}"), "SHARD")).collect();
        let mut out = BTreeMap::new();
        for item in self.batch_get(keys).await? {
            for (k, v) in item {
                if let (false, AttributeValue::N(n)) = (k == "pk" || k == "sk", v) {
                    let n: i64 = n.parse().map_err(|_| Error::Internal(format!("counter {k} is not a number")))?;
                    *out.entry(k).or_insert(0) += n;
                }
            }
        }
        Ok(out)
    }
}
