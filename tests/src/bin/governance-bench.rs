//! `make bench` (governance part): on the embedded backend (files, SQLite, the local key), a bundle
//! of N files already linked in a workspace is registered, approved, exported, and its ledger verified
//! offline, each step timed; then the same export again (a re-export) to separate first-touch costs.
//!
//!   governance-bench [--files 10000] [--file-bytes 1024] [--out FILE]
//!
//! The files are linked through the core (not over HTTP) so that the set-up is not what is measured.

use std::time::{Duration, Instant};

use helix_core::auth::{Principal, PrincipalKind};
use helix_core::blobs::{self, Caller};
use helix_core::domain::{BundleName, Digest, Role, Scope, WorkspaceId};
use helix_tests::{Backend, TestEnv};
use serde_json::json;

fn principal(user: &str, role: Role) -> Principal {
    Principal {
        user: user.into(),
        role,
        workspace_id: Scope::All,
        credential_id: format!("bench-{user}"),
        kind: PrincipalKind::ApiToken,
    }
}

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.windows(2).find(|w| w[0] == name).map(|w| w[1].parse().expect("a number")).unwrap_or(default)
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1000.0)
}

#[tokio::main]
async fn main() {
    let files = arg("--files", 10_000);
    let size = arg("--file-bytes", 1024);
    let out = std::env::args().collect::<Vec<_>>().windows(2).find(|w| w[0] == "--out").map(|w| w[1].clone());
    let env = TestEnv::start(Backend::Embedded).await;
    let app = env.app.as_ref();
    let ws = WorkspaceId::parse("bench").unwrap();
    let (publisher, approver) = (principal("ada", Role::Publisher), principal("grace", Role::Approver));
    let caller = |p| Caller { principal: p, request_id: "bench" };

    let started = Instant::now();
    let mut entries = Vec::with_capacity(files);
    for i in 0..files {
        let bytes: Vec<u8> = format!("file {i} ").bytes().cycle().take(size).collect();
        let digest = Digest::of(&bytes);
        blobs::put_inline(app, caller(&publisher), &ws, &digest, bytes.into(), None).await.unwrap();
        entries.push(json!({"path": format!("data/{i:06}.bin"), "digest": digest.to_string(), "size": size}));
    }
    let linking = started.elapsed();
    let manifest = json!({"schema": "helix.bundle.v1", "name": "big", "version": "1", "files": entries});
    let body = serde_json::to_vec(&manifest).unwrap();
    let (name, version) = (BundleName::parse("big").unwrap(), BundleName::parse("1").unwrap());

    let t = Instant::now();
    helix_core::bundles::register(app, caller(&publisher), &ws, &name, &version, &body).await.unwrap();
    let register = t.elapsed();
    let t = Instant::now();
    helix_core::governance::decide(
        app,
        caller(&approver),
        &ws,
        &name,
        &version,
        helix_core::governance::Request::Approve,
        None,
    )
    .await
    .unwrap();
    let approve = t.elapsed();
    let t = Instant::now();
    let exported = helix_core::governance::export(app, caller(&publisher), &ws, &name, &version, None).await.unwrap();
    let export = t.elapsed();
    assert_eq!(exported.proof.files.len(), files);
    let t = Instant::now();
    helix_core::governance::export(app, caller(&publisher), &ws, &name, &version, None).await.unwrap();
    let reexport = t.elapsed();
    let ledger = helix_core::governance::view(app, &ws, &name, &version, None).await.unwrap();
    let document = serde_json::to_vec(&ledger).unwrap();
    let key = helix_core::ports::Signer::public_key(app.signer.as_ref()).await.unwrap();
    let t = Instant::now();
    let (receipts, whole) = helix_core::governance::receipts_in(&document).unwrap();
    let verified = helix_core::governance::verify_receipts(&receipts, std::slice::from_ref(&key), whole).unwrap();
    let verify = t.elapsed();
    assert_eq!(verified.receipts, 3);

    let report = format!(
        "## Governance on the embedded backend: {files} files of {size} bytes\n\n\
         Command: `governance-bench --files {files} --file-bytes {size}` (`make bench`). Set-up (linking the \
         files through the core, not measured below): {}.\n\n\
         | step | time |\n|---|---|\n\
         | register the manifest ({} bytes; every file's link checked, 32 at a time) | {} |\n\
         | approve (read and verify the ledger, sign, append) | {} |\n\
         | export (re-hash every file, 16 at a time; sign; {files} presigned URLs) | {} |\n\
         | export again (re-export) | {} |\n\
         | verify the ledger offline (3 receipts) | {} |\n",
        ms(linking),
        body.len(),
        ms(register),
        ms(approve),
        ms(export),
        ms(reexport),
        ms(verify),
    );
    println!("{report}");
    if let Some(path) = out {
        std::fs::create_dir_all(std::path::Path::new(&path).parent().unwrap()).unwrap();
        std::fs::write(path, report).unwrap();
    }
}
