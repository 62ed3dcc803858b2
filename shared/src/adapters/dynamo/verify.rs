//! Verification jobs (`crate::verify`) in the meta table: `VERIFY#{ws}` / `UPLOAD#{id}`, the job as
//! JSON beside its version, put only over the version it was read at (a conditional PutItem; IAM lets
//! only the publish and verify functions write the `VERIFY#` partition). An ended job carries
//! `purge_at`, the meta table's TTL attribute: DynamoDB deletes it (typically within two days) after
//! `ENDED_JOB_KEPT_SECONDS`.

use aws_sdk_dynamodb::operation::put_item::PutItemError;

use super::{DynamoStore, Item, err, get_n, get_s, n, s};
use crate::domain::WorkspaceId;
use crate::error::{Dependency, Error, Result};
use crate::ports::VerifyJob;

fn key(ws: &str, upload_id: &str) -> (String, String) {
    (format!("VERIFY#{ws}"), format!("UPLOAD#{upload_id}"))
}

impl DynamoStore {
    pub(super) async fn job(&self, ws: &WorkspaceId, upload_id: &str) -> Result<Option<VerifyJob>> {
        let (pk, sk) = key(ws.as_str(), upload_id);
        let Some(item) = self.get_meta(pk, &sk).await? else { return Ok(None) };
        let body = get_s(&item, "job")?;
        let job: VerifyJob =
            serde_json::from_str(&body).map_err(|e| Error::Internal(format!("a stored verification job: {e}")))?;
        if get_n(&item, "version")? != Some(job.version as i64) {
            return Err(Error::Internal("a stored verification job's version does not match its body".into()));
        }
        Ok(Some(job))
    }

    pub(super) async fn save_job(&self, job: &VerifyJob) -> Result<bool> {
        let (pk, sk) = key(&job.workspace_id, &job.upload_id);
        let body = serde_json::to_string(job).map_err(|e| Error::Internal(e.to_string()))?;
        let mut item = Item::from([
            ("pk".into(), s(pk)),
            ("sk".into(), s(sk)),
            ("version".into(), n(job.version)),
            ("job".into(), s(body)),
        ]);
        if let Some(at) = job.purge_at() {
            // The table's TTL attribute (infra/template.yaml): only an ended job carries it.
            item.insert("purge_at".into(), n(at));
        }
        let put = self.client.put_item().table_name(&self.table).set_item(Some(item));
        let put = if job.version == 1 {
            put.condition_expression("attribute_not_exists(pk)")
        } else {
            put.condition_expression("#v = :read")
                .expression_attribute_names("#v", "version")
                .expression_attribute_values(":read", n(job.version - 1))
        };
        match put.send().await {
            Ok(_) => Ok(true),
            Err(e) if matches!(e.as_service_error(), Some(PutItemError::ConditionalCheckFailedException(_))) => {
                Ok(false)
            }
            Err(e) => Err(err(Dependency::MetaStore)(e)),
        }
    }
}
