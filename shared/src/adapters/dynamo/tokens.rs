//! Tokens in the meta table: `TOKEN#{sha256}`/`TOKEN` holds the record (looked up by the hash of the
//! secret), `TOKENID#{id}`/`TOKENID` points from the id to it. Written by the token function only.

use aws_sdk_dynamodb::types::{AttributeValue, TransactWriteItem, Update};

use super::{DynamoStore, Item, build, err, get_n, get_s, n, s};
use crate::domain::{Scope, TokenRecord};
use crate::error::{Dependency, Result};

fn token_item(t: &TokenRecord) -> Item {
    let mut item = Item::from([
        ("pk".into(), s(format!("TOKEN#{}", t.sha256))),
        ("sk".into(), s("TOKEN")),
        ("id".into(), s(&t.id)),
        ("sha256".into(), s(&t.sha256)),
        ("user".into(), s(&t.user)),
        ("role".into(), s(t.role.as_str())),
        ("workspace_id".into(), s(t.workspace_id.as_str())),
        ("created_at".into(), n(t.created_at)),
        ("disabled".into(), AttributeValue::Bool(t.disabled)),
        ("created_by".into(), s(&t.created_by)),
    ]);
    if let Some(exp) = t.expires_at {
        item.insert("expires_at".into(), n(exp));
    }
    if let Some(d) = &t.description {
        item.insert("description".into(), s(d));
    }
    item
}

pub(super) fn token_from_item(item: &Item) -> Result<TokenRecord> {
    Ok(TokenRecord {
        id: get_s(item, "id")?,
        sha256: get_s(item, "sha256")?,
        user: get_s(item, "user")?,
        role: get_s(item, "role")?.parse()?,
        workspace_id: Scope::parse(&get_s(item, "workspace_id")?)?,
        created_at: get_n(item, "created_at")?.unwrap_or(0),
        expires_at: get_n(item, "expires_at")?,
        disabled: matches!(item.get("disabled"), Some(AttributeValue::Bool(true))),
        created_by: get_s(item, "created_by")?,
        description: get_s(item, "description").ok(),
        replaced_by: get_s(item, "replaced_by").ok(),
    })
}

impl DynamoStore {
    /// Disable a token, on condition that it exists and is still enabled; a rotation also records
    /// the token it was replaced by.
    pub(super) fn disable(&self, sha256: &str, replaced_by: Option<&str>) -> Result<TransactWriteItem> {
        let mut update = Update::builder()
            .table_name(&self.table)
            .key("pk", s(format!("TOKEN#{sha256}")))
            .key("sk", s("TOKEN"))
            .condition_expression("attribute_exists(pk) AND disabled = :f")
            .expression_attribute_values(":t", AttributeValue::Bool(true))
            .expression_attribute_values(":f", AttributeValue::Bool(false));
        update = match replaced_by {
            Some(id) => {
                update.update_expression("SET disabled = :t, replaced_by = :r").expression_attribute_values(":r", s(id))
            }
            None => update.update_expression("SET disabled = :t"),
        };
        Ok(TransactWriteItem::builder().update(build(update.build())?).build())
    }

    pub(super) fn issue_items(&self, t: &TokenRecord) -> Result<Vec<TransactWriteItem>> {
        let absent = "attribute_not_exists(pk)";
        let pointer = Item::from([
            ("pk".into(), s(format!("TOKENID#{}", t.id))),
            ("sk".into(), s("TOKENID")),
            ("sha256".into(), s(&t.sha256)),
        ]);
        Ok(vec![self.put(&self.table, token_item(t), absent)?, self.put(&self.table, pointer, absent)?])
    }

    pub(super) async fn token(&self, sha256: &str) -> Result<Option<TokenRecord>> {
        self.get_meta(format!("TOKEN#{sha256}"), "TOKEN").await?.as_ref().map(token_from_item).transpose()
    }

    pub(super) async fn token_of_id(&self, id: &str) -> Result<Option<TokenRecord>> {
        let Some(pointer) = self.get_meta(format!("TOKENID#{id}"), "TOKENID").await? else {
            return Ok(None);
        };
        self.token(&get_s(&pointer, "sha256")?).await
    }

    /// A filtered Scan: token listing is an admin action over a small set of items.
    pub(super) async fn scan_tokens(&self) -> Result<Vec<TokenRecord>> {
        let mut tokens = Vec::new();
        let mut start: Option<Item> = None;
        loop {
            let out = self
                .client
                .scan()
                .table_name(&self.table)
                .filter_expression("sk = :sk")
                .expression_attribute_values(":sk", s("TOKEN"))
                .consistent_read(true)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(err(Dependency::MetaStore))?;
            for item in out.items() {
                tokens.push(token_from_item(item)?);
            }
            match out.last_evaluated_key {
                Some(k) => start = Some(k),
                None => break,
            }
        }
        tokens.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        Ok(tokens)
    }
}
