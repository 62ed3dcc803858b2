//! Verification jobs (`crate::verify`) in the `verify_jobs` table: one row per workspace and upload
//! id, the job as JSON beside its version, written only over the version it was read at. Jobs that
//! ended more than `ENDED_JOB_KEPT_SECONDS` ago are deleted when another job ends.

use rusqlite::{OptionalExtension, params};

use super::writer::Step;
use super::{SqliteStore, meta_err};
use crate::domain::WorkspaceId;
use crate::domain::time::now_unix;
use crate::error::{Error, Result};
use crate::ports::{ENDED_JOB_KEPT_SECONDS, VerifyJob};

impl SqliteStore {
    pub(super) async fn job(&self, ws: &WorkspaceId, upload_id: &str) -> Result<Option<VerifyJob>> {
        let (ws, id) = (ws.to_string(), upload_id.to_owned());
        let row: Option<String> = self
            .with(meta_err, move |c| {
                c.query_row(
                    "SELECT job FROM verify_jobs WHERE workspace_id = ?1 AND upload_id = ?2",
                    params![ws, id],
                    |r| r.get(0),
                )
                .optional()
            })
            .await?;
        row.map(|j| serde_json::from_str(&j).map_err(|e| Error::Internal(format!("a stored verification job: {e}"))))
            .transpose()
    }

    pub(super) async fn save_job(&self, job: &VerifyJob) -> Result<bool> {
        let body = serde_json::to_string(job).map_err(|e| Error::Internal(e.to_string()))?;
        let (ws, id, version) = (job.workspace_id.clone(), job.upload_id.clone(), job.version as i64);
        let ended = job.is_over();
        self.write(meta_err, move |c| {
            let written = if version == 1 {
                c.execute(
                    "INSERT OR IGNORE INTO verify_jobs (workspace_id, upload_id, version, job) VALUES (?1, ?2, ?3, ?4)",
                    params![ws, id, version, body],
                )?
            } else {
                c.execute(
                    "UPDATE verify_jobs SET version = ?3, job = ?4 WHERE workspace_id = ?1 AND upload_id = ?2 AND version = ?5",
                    params![ws, id, version, body, version - 1],
                )?
            };
            if written == 1 && ended {
                // Jobs that ended more than ENDED_JOB_KEPT_SECONDS ago go when another one ends.
                c.prepare_cached(
                    "DELETE FROM verify_jobs WHERE json_extract(job, '$.state') IN ('linked', 'failed')
                       AND json_extract(job, '$.updated_at') < ?1",
                )?
                .execute(params![now_unix() - ENDED_JOB_KEPT_SECONDS])?;
            }
            Ok(Step::Keep(written == 1))
        })
        .await
    }
}
