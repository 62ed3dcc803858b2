//! What workspaces hold, in the meta table: blob links (`WS#{ws}`/`BLOB#{digest}`), bundle versions
//! (`WS#{ws}`/`BUNDLE#{name}#{version}`), governance ledgers (`GOV#{ws}`/`LEDGER#…`, one item per
//! receipt, and `DECISION#…` markers), unregistered-export reports (`GOV#{ws}`/`UNREGISTERED#{id}`)
//! and the signing-key history (`GOV#keys`/`KEY#{key_id}`). Every put is conditional on the item not
//! existing: a link, a version, a receipt at a seq is written once.

use std::collections::HashMap;

use aws_sdk_dynamodb::operation::query::builders::QueryFluentBuilder;
use aws_sdk_dynamodb::types::{Put, TransactWriteItem, Update};

use super::{ABSENT, DynamoStore, Item, build, err, get_n, get_s, n, s};
use crate::domain::governance::State;
use crate::domain::time::now_rfc3339_ms;
use crate::domain::{Digest, WorkspaceId};
use crate::error::{Dependency, Error, Result};
use crate::ports::{BlobLink, BundleVersion, LedgerReceipt, SigningKeyRecord, WORKSPACE_COUNTERS, WorkspaceCounts};

/// The partition of the workspaces' counters: one item per workspace (`COUNTER#workspaces`/`{ws}`),
/// each counter an attribute, moved by `ADD` in the commit that changes what it counts. Written by
/// whichever function commits (the `COUNTER#*` grant every writer holds), read by `fetch`
/// (`GET /v1/workspaces`: one Query for a credential of every workspace, one GetItem otherwise).
const WORKSPACES_PK: &str = "COUNTER#workspaces";

/// Sort key of a version's state record under its workspace's governance partition:
/// `STATE#{name}#{version}` (the bundle keys' order), written with each receipt.
fn state_sk(name: &str, version: &str) -> String {
    format!("STATE#{name}#{version}")
}

fn counts_from_item(item: &Item) -> Result<WorkspaceCounts> {
    let mut counts = std::collections::BTreeMap::new();
    for c in WORKSPACE_COUNTERS {
        if let Some(v) = get_n(item, c)? {
            counts.insert(c.to_owned(), v);
        }
    }
    Ok(WorkspaceCounts { workspace_id: get_s(item, "sk")?, counts })
}

/// Sort key of a bundle version under its workspace's partition: `BUNDLE#{name}#{version}` (names
/// and versions never hold `#`, which sorts before every character they may hold, so the key order is
/// the (name, version) order).
fn bundle_sk(name: &str, version: &str) -> String {
    format!("BUNDLE#{name}#{version}")
}

/// The key (`pk`, `sk`) of `name`@`version` in `ws`.
pub(super) fn version_key(ws: &WorkspaceId, name: &str, version: &str) -> (String, String) {
    (format!("WS#{ws}"), bundle_sk(name, version))
}

pub(super) fn bundle_from_item(ws: &WorkspaceId, item: &Item) -> Result<BundleVersion> {
    let n = |k: &str| get_n(item, k).map(|v| v.unwrap_or(0));
    Ok(BundleVersion {
        workspace_id: ws.to_string(),
        name: get_s(item, "name")?,
        version: get_s(item, "version")?,
        manifest_digest: Digest::parse(&get_s(item, "manifest_digest")?)?,
        files: n("files")? as u64,
        bytes: n("bytes")? as u64,
        registered_at: n("registered_at")?,
        registered_by: get_s(item, "registered_by")?,
        registered_user: get_s(item, "registered_user")?,
    })
}

/// The partition of the keys the registry signed with (written by the ledger writer, `waive`).
const SIGNING_KEYS_PK: &str = "GOV#keys";

/// Sort key of a ledger receipt: `LEDGER#{name}#{version}#{seq:020}` (zero-padded: key order is seq
/// order).
fn ledger_sk(name: &str, version: &str, seq: u64) -> String {
    format!("LEDGER#{name}#{version}#{seq:020}")
}

fn receipt_from_item(item: &Item) -> Result<LedgerReceipt> {
    Ok(LedgerReceipt {
        seq: get_n(item, "seq")?.unwrap_or(0) as u64,
        envelope: get_s(item, "envelope")?,
        decision_key: get_s(item, "decision_key").ok(),
    })
}

pub(super) fn bundle_item(b: &BundleVersion) -> Item {
    Item::from([
        ("pk".into(), s(format!("WS#{}", b.workspace_id))),
        ("sk".into(), s(bundle_sk(&b.name, &b.version))),
        ("name".into(), s(&b.name)),
        ("version".into(), s(&b.version)),
        ("manifest_digest".into(), s(b.manifest_digest.to_string())),
        ("files".into(), n(b.files)),
        ("bytes".into(), n(b.bytes)),
        ("registered_at".into(), n(b.registered_at)),
        ("registered_by".into(), s(&b.registered_by)),
        ("registered_user".into(), s(&b.registered_user)),
        // A version starts `submitted`; its receipts record the states after (`STATE#` records).
        ("initial_state".into(), s(State::Submitted.as_str())),
    ])
}

/// The key (`pk`, `sk`) of `digest`'s link in `ws`.
pub(super) fn link_key(ws: &WorkspaceId, digest: &Digest) -> (String, String) {
    (format!("WS#{ws}"), format!("BLOB#{digest}"))
}

/// The link a stored link item holds (`ws` and `digest` are its key).
pub(super) fn link_from_item(ws: &WorkspaceId, digest: &Digest, item: &Item) -> Result<BlobLink> {
    Ok(BlobLink {
        workspace_id: ws.to_string(),
        digest: digest.clone(),
        size: get_n(item, "size")?.unwrap_or(0) as u64,
        linked_at: get_n(item, "linked_at")?.unwrap_or(0),
        linked_by: get_s(item, "linked_by")?,
        slot: u8::try_from(get_n(item, "slot")?.unwrap_or(0))
            .map_err(|_| Error::Internal("stored link has a bad slot".into()))?,
    })
}

pub(super) fn link_item(l: &BlobLink) -> Item {
    Item::from([
        ("pk".into(), s(format!("WS#{}", l.workspace_id))),
        ("sk".into(), s(format!("BLOB#{}", l.digest))),
        ("size".into(), n(l.size)),
        ("linked_at".into(), n(l.linked_at)),
        ("linked_by".into(), s(&l.linked_by)),
        ("slot".into(), n(l.slot)),
    ])
}

pub(super) fn unregistered_export_item(workspace_id: &str, name: &str, version: &str, id: &str) -> Item {
    Item::from([
        ("pk".into(), s(format!("GOV#{workspace_id}"))),
        ("sk".into(), s(format!("UNREGISTERED#{id}"))),
        ("bundle".into(), s(format!("{name}@{version}"))),
        ("recorded_at".into(), s(now_rfc3339_ms())),
    ])
}

pub(super) fn signing_key_item(key_id: &str, pem: &str) -> Item {
    Item::from([
        ("pk".into(), s(SIGNING_KEYS_PK)),
        ("sk".into(), s(format!("KEY#{key_id}"))),
        ("pem".into(), s(pem)),
        ("recorded_at".into(), s(now_rfc3339_ms())),
    ])
}

impl DynamoStore {
    /// Retire a recorded key, on condition that it is recorded and not retired yet.
    pub(super) fn retire_key(&self, key_id: &str, at: &str, reason: &str) -> Result<TransactWriteItem> {
        let update = Update::builder()
            .table_name(&self.table)
            .key("pk", s(SIGNING_KEYS_PK))
            .key("sk", s(format!("KEY#{key_id}")))
            .update_expression("SET retired_at = :at, retired_reason = :r")
            .condition_expression("attribute_exists(pem) AND attribute_not_exists(retired_at)")
            .expression_attribute_values(":at", s(at))
            .expression_attribute_values(":r", s(reason));
        Ok(TransactWriteItem::builder().update(build(update.build())?).build())
    }

    /// A receipt at its seq, and the marker of its decision (a second receipt of the same decision
    /// fails the marker's condition).
    pub(super) fn receipt_items(
        &self,
        workspace_id: &str,
        name: &str,
        version: &str,
        receipt: &LedgerReceipt,
        state: State,
    ) -> Result<Vec<TransactWriteItem>> {
        let pk = format!("GOV#{workspace_id}");
        let mut item = Item::from([
            ("pk".into(), s(&pk)),
            ("sk".into(), s(ledger_sk(name, version, receipt.seq))),
            ("seq".into(), n(receipt.seq)),
            ("envelope".into(), s(&receipt.envelope)),
        ]);
        let mut items = Vec::new();
        if let Some(key) = &receipt.decision_key {
            item.insert("decision_key".into(), s(key));
            // The decision's own item: a second receipt of the same decision fails its condition.
            let marker = Item::from([
                ("pk".into(), s(&pk)),
                ("sk".into(), s(format!("DECISION#{name}#{version}#{key}"))),
                ("seq".into(), n(receipt.seq)),
            ]);
            items.push(self.put(&self.table, marker, ABSENT)?);
        }
        items.insert(0, self.put(&self.table, item, ABSENT)?);
        // The version's state as this receipt leaves it (a later seq only: the receipt's own condition
        // already orders them).
        let record = Item::from([
            ("pk".into(), s(&pk)),
            ("sk".into(), s(state_sk(name, version))),
            ("state".into(), s(state.as_str())),
            ("seq".into(), n(receipt.seq)),
        ]);
        let put = Put::builder()
            .table_name(&self.table)
            .set_item(Some(record))
            .condition_expression("attribute_not_exists(seq) OR seq < :seq")
            .expression_attribute_values(":seq", n(receipt.seq));
        items.push(TransactWriteItem::builder().put(build(put.build())?).build());
        Ok(items)
    }

    /// `ADD` to one workspace's counters (its item in `COUNTER#workspaces`).
    pub(super) fn workspace_counter_update(&self, ws: &str, deltas: &[(String, i64)]) -> Result<TransactWriteItem> {
        let mut update = Update::builder().table_name(&self.table).key("pk", s(WORKSPACES_PK)).key("sk", s(ws));
        let mut adds = Vec::new();
        for (i, (name, delta)) in deltas.iter().enumerate() {
            adds.push(format!("#w{i} :w{i}"));
            update = update
                .expression_attribute_names(format!("#w{i}"), name)
                .expression_attribute_values(format!(":w{i}"), n(delta));
        }
        let update = build(update.update_expression(format!("ADD {}", adds.join(", "))).build())?;
        Ok(TransactWriteItem::builder().update(update).build())
    }

    pub(super) async fn counts(&self, ws: &WorkspaceId) -> Result<WorkspaceCounts> {
        match self.get_meta(WORKSPACES_PK.into(), ws.as_str()).await? {
            Some(item) => counts_from_item(&item),
            None => Ok(WorkspaceCounts { workspace_id: ws.to_string(), ..WorkspaceCounts::default() }),
        }
    }

    pub(super) async fn workspaces(&self, after: Option<&WorkspaceId>, limit: usize) -> Result<Vec<WorkspaceCounts>> {
        let start = after.map(|a| Item::from([("pk".into(), s(WORKSPACES_PK)), ("sk".into(), s(a.as_str()))]));
        let req = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("pk = :pk")
            .expression_attribute_values(":pk", s(WORKSPACES_PK))
            .consistent_read(true);
        self.meta_items_from(req, start, limit).await?.iter().map(counts_from_item).collect()
    }

    /// The state records of the versions from `first` to `last` (name, version), inclusive: one
    /// key-range Query of the workspace's governance partition, at most one item per version.
    async fn states_between(
        &self,
        ws: &WorkspaceId,
        first: (&str, &str),
        last: (&str, &str),
    ) -> Result<HashMap<(String, String), State>> {
        let req = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("pk = :pk AND sk BETWEEN :a AND :b")
            .expression_attribute_values(":pk", s(format!("GOV#{ws}")))
            .expression_attribute_values(":a", s(state_sk(first.0, first.1)))
            .expression_attribute_values(":b", s(state_sk(last.0, last.1)))
            .consistent_read(true);
        let mut out = HashMap::new();
        for item in self.meta_items(req).await? {
            let sk = get_s(&item, "sk")?;
            let state = get_s(&item, "state")?;
            let (name, version) = sk
                .trim_start_matches("STATE#")
                .split_once('#')
                .ok_or_else(|| Error::Internal(format!("bad state record {sk}")))?;
            if let Some(st) = State::parse(&state) {
                out.insert((name.to_owned(), version.to_owned()), st);
            }
        }
        Ok(out)
    }

    pub(super) async fn link(&self, ws: &WorkspaceId, digest: &Digest) -> Result<Option<BlobLink>> {
        let (pk, sk) = link_key(ws, digest);
        self.get_meta(pk, &sk).await?.as_ref().map(|item| link_from_item(ws, digest, item)).transpose()
    }

    pub(super) async fn version(&self, ws: &WorkspaceId, name: &str, version: &str) -> Result<Option<BundleVersion>> {
        let (pk, sk) = version_key(ws, name, version);
        let item = self.get_meta(pk, &sk).await?;
        item.as_ref().map(|i| bundle_from_item(ws, i)).transpose()
    }

    pub(super) async fn key_history(&self) -> Result<Vec<SigningKeyRecord>> {
        let req = self
            .client
            .query()
            .table_name(&self.table)
            // `GOV#keys` is also the governance partition of a workspace named `keys`: only KEY# items.
            .key_condition_expression("pk = :pk AND begins_with(sk, :key)")
            .expression_attribute_values(":pk", s(SIGNING_KEYS_PK))
            .expression_attribute_values(":key", s("KEY#"))
            .consistent_read(true);
        let optional = |i: &Item, k: &str| i.get(k).and_then(|v| v.as_s().ok()).cloned();
        let mut keys: Vec<SigningKeyRecord> = self
            .meta_items(req)
            .await?
            .iter()
            .map(|i| {
                Ok(SigningKeyRecord {
                    key_id: get_s(i, "sk")?.trim_start_matches("KEY#").to_owned(),
                    pem: get_s(i, "pem")?,
                    recorded_at: get_s(i, "recorded_at")?,
                    retired_at: optional(i, "retired_at"),
                    retired_reason: optional(i, "retired_reason"),
                })
            })
            .collect::<Result<_>>()?;
        keys.sort_by(|a, b| (&a.recorded_at, &a.key_id).cmp(&(&b.recorded_at, &b.key_id)));
        Ok(keys)
    }

    /// A version's ledger receipts, in seq order, read consistently.
    fn ledger_query(&self, ws: &WorkspaceId, name: &str, version: &str) -> QueryFluentBuilder {
        self.client
            .query()
            .table_name(&self.table)
            .key_condition_expression("pk = :pk AND begins_with(sk, :l)")
            .expression_attribute_values(":pk", s(format!("GOV#{ws}")))
            .expression_attribute_values(":l", s(format!("LEDGER#{name}#{version}#")))
            .consistent_read(true)
    }

    pub(super) async fn receipts(&self, ws: &WorkspaceId, name: &str, version: &str) -> Result<Vec<LedgerReceipt>> {
        let req = self.ledger_query(ws, name, version);
        self.meta_items(req).await?.iter().map(receipt_from_item).collect()
    }

    pub(super) async fn last_receipt(
        &self,
        ws: &WorkspaceId,
        name: &str,
        version: &str,
    ) -> Result<Option<LedgerReceipt>> {
        // Sort keys are zero-padded seqs: the last item in key order is the highest seq.
        let page = self
            .ledger_query(ws, name, version)
            .scan_index_forward(false)
            .limit(1)
            .send()
            .await
            .map_err(err(Dependency::MetaStore))?;
        page.items().first().map(receipt_from_item).transpose()
    }

    pub(super) async fn versions(
        &self,
        ws: &WorkspaceId,
        after: Option<(String, String)>,
        limit: usize,
    ) -> Result<Vec<(BundleVersion, Option<State>)>> {
        let page = self.version_records(ws, after, limit).await?;
        let (Some((first, _)), Some((last, _))) = (page.first(), page.last()) else { return Ok(Vec::new()) };
        let mut states = self.states_between(ws, (&first.name, &first.version), (&last.name, &last.version)).await?;
        Ok(page
            .into_iter()
            .map(|(v, initial)| {
                let st = states.remove(&(v.name.clone(), v.version.clone())).or(initial);
                (v, st)
            })
            .collect())
    }

    async fn version_records(
        &self,
        ws: &WorkspaceId,
        after: Option<(String, String)>,
        limit: usize,
    ) -> Result<Vec<(BundleVersion, Option<State>)>> {
        let pk = format!("WS#{ws}");
        let start = after
            .map(|(name, version)| Item::from([("pk".into(), s(&pk)), ("sk".into(), s(bundle_sk(&name, &version)))]));
        let req = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("pk = :pk AND begins_with(sk, :b)")
            .expression_attribute_values(":pk", s(&pk))
            .expression_attribute_values(":b", s("BUNDLE#"))
            .consistent_read(true);
        self.meta_items_from(req, start, limit)
            .await?
            .iter()
            .map(|item| {
                let initial = item.get("initial_state").and_then(|v| v.as_s().ok()).and_then(|v| State::parse(v));
                Ok((bundle_from_item(ws, item)?, initial))
            })
            .collect()
    }
}
