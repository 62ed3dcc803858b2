//! `helix smoke` against a running registry, on both backends: every step of the lifecycle passes
//! and is timed; a registry that cannot do a step fails the run at that step, and the run's tokens
//! are revoked whatever happened. On the embedded backend, with the backup and restore drill.

use helix_cli::smoke::{Smoke, run};
use helix_core::domain::Role;
use serde_json::json;

use super::api::{get, post_json};
use crate::{Backend, TestEnv};

const LIFECYCLE: [&str; 10] =
    ["ready", "status", "tokens", "publish-small", "publish-large", "approve", "export", "verify", "fetch", "audit"];
const BACKUP: [&str; 5] = ["backup", "restore", "restored-serve", "restored-data", "restored-audit"];

pub async fn smoke_runs_the_whole_lifecycle_and_names_the_step_that_fails(b: Backend) {
    let env = TestEnv::start(b).await;
    let admin = env.token(Role::Admin, "*").await;
    // On the embedded backend the drill backs up this registry's data dir while it serves.
    let backup_restore = (b == Backend::Embedded).then(|| env.data_dir());
    let report =
        run(Smoke { url: env.url(""), token: admin.clone(), backup_restore: backup_restore.clone(), work_dir: None })
            .await
            .unwrap();
    assert!(report.failed().is_none(), "{:#?}", report.steps);
    let names: Vec<&str> = report.steps.iter().map(|s| s.step).collect();
    let mut expected: Vec<&str> = LIFECYCLE.to_vec();
    if backup_restore.is_some() {
        expected.extend(BACKUP);
    }
    expected.push("revoke");
    assert_eq!(names, expected);
    assert!(report.steps.iter().all(|s| s.ms > 0.0));
    // The run's tokens are revoked: the registry lists them disabled.
    let tokens: serde_json::Value = get(&env, &admin, "/v1/tokens").await.json().await.unwrap();
    let smoke_tokens: Vec<_> = tokens["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["workspace_id"] == report.workspace.as_str())
        .collect();
    assert_eq!(smoke_tokens.len(), 2);
    assert!(smoke_tokens.iter().all(|t| t["disabled"] == true), "{smoke_tokens:?}");

    // A workspace admin cannot issue tokens for the smoke's own workspace: the run stops there.
    let local_admin = env.token(Role::Admin, "team-a").await;
    let report =
        run(Smoke { url: env.url(""), token: local_admin, backup_restore: None, work_dir: None }).await.unwrap();
    let failed = report.failed().expect("a failed step");
    assert_eq!(failed.step, "tokens");
    assert!(failed.detail.contains("forbidden_workspace"), "{}", failed.detail);

    // A frozen registry fails the run at its status step, before anything is written.
    let freeze = post_json(&env, &admin, "/v1/admin/freeze", json!({"reason": "smoke test of the smoke"})).await;
    assert_eq!(freeze.status(), 200);
    let report = run(Smoke { url: env.url(""), token: admin, backup_restore: None, work_dir: None }).await.unwrap();
    let failed = report.failed().expect("a failed step");
    assert_eq!((failed.step, report.steps.len()), ("status", 2));
    assert!(failed.detail.contains("frozen"), "{}", failed.detail);
}
