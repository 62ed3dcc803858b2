//! Governance from the client: `helix governance approve|reject|waive`, and `helix export` (receipts
//! that never overwrite each other, failing closed when the registry is unreachable, and the
//! unregistered-export override, which covers only an unreachable registry and is reported later).

mod common;

use serde_json::json;
use std::process::Command;

use common::*;

/// `helix governance approve|reject|waive` against a running registry: identity and role from the
/// token, the receipt summarised in one line, idempotent, refusals with the registry's reason.
#[test]
fn governance_decisions_from_the_client() {
    let dir = tempfile::tempdir().unwrap();
    let (_server, url, _) = serve(dir.path());
    let token = |user: &str, role: &str| issue_token(dir.path(), user, role);
    let (ada, grace, linus) =
        (token("ada", "publisher"), token("grace", "approver"), token("linus", "safety_reviewer"));
    assert_eq!(put_status(&ada, "foo", &format!("{url}/v1/workspaces/demo/blobs/{FOO}")), "201");
    for v in ["1", "2"] {
        let manifest = json!({"schema": "helix.bundle.v1", "name": "model", "version": v,
            "files": [{"path": "f", "digest": FOO, "size": 3}]});
        let path = format!("{url}/v1/workspaces/demo/bundles/model/versions/{v}");
        assert_eq!(put_status(&ada, &manifest.to_string(), &path), "201");
    }
    let gov = |token: &str, args: &[&str]| {
        let out = client(dir.path(), &url, token).arg("governance").args(args).output().unwrap();
        (out.status.code(), String::from_utf8(out.stdout).unwrap(), String::from_utf8(out.stderr).unwrap())
    };
    let (code, stdout, stderr) = gov(&grace, &["approve", "demo/model@1"]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stdout.starts_with("approval receipt seq 1 for demo/model@1: submitted -> approved by grace (approver)"),
        "{stdout}"
    );
    assert_eq!(gov(&grace, &["approve", "demo/model@1"]).1, stdout, "the same decision again: the same receipt");
    let (code, _, stderr) = gov(&ada, &["approve", "demo/model@2"]);
    assert_eq!(code, Some(1));
    assert!(stderr.starts_with("helix: insufficient_role (403)"), "{stderr}");
    let (code, _, stderr) = gov(&grace, &["approve", "demo/model"]);
    assert_eq!(code, Some(1));
    assert!(stderr.contains("expected WORKSPACE/NAME@VERSION"), "{stderr}");

    // A waiver names the export transition the ledger shows, with a justification from a file.
    let ledger = Command::new("curl")
        .args([
            "-s",
            "-H",
            &format!("Authorization: Bearer {linus}"),
            &format!("{url}/v1/workspaces/demo/bundles/model/versions/2/governance"),
        ])
        .output()
        .unwrap();
    let ledger: serde_json::Value = serde_json::from_slice(&ledger.stdout).unwrap();
    let transition = ledger["export_transition"].as_str().expect("export_transition").to_owned();
    let why = dir.path().join("why.txt");
    std::fs::write(&why, "INC-7: the model is needed for the recall").unwrap();
    let just = format!("@{}", why.display());
    let (code, stdout, stderr) = gov(
        &linus,
        &[
            "waive",
            "demo/model@2",
            "--transition",
            &transition,
            "--justification",
            &just,
            "--expires-in",
            "2h",
            "--json",
        ],
    );
    assert_eq!(code, Some(0), "{stderr}");
    let answer: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(answer["seq"], 1);
    let (code, stdout, _) = gov(&grace, &["reject", "demo/model@1"]);
    assert_eq!(code, Some(0));
    assert!(stdout.starts_with("rejection receipt seq 2 for demo/model@1: approved -> rejected"), "{stdout}");
    let (code, _, stderr) = gov(&linus, &["approve", "demo/model@1"]);
    assert_eq!(code, Some(1));
    assert!(stderr.starts_with("helix: version_rejected (409)"), "a rejection is final: {stderr}");
}

#[test]
fn export_fails_closed_when_unreachable_and_the_override_is_reported_when_the_registry_answers() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (server, url, lines) = serve(&data);
    let admin = lines.iter().find_map(|l| l.strip_prefix("admin token: ")).unwrap().to_owned();
    let publisher = issue_token(&data, "ada", "publisher");
    let src = dir.path().join("src");
    source_tree(&src, 2, 10);
    push_approved_model(&data, &url, &publisher, &src);
    // The official export: receipt saved, verifiable offline; proof URLs printed.
    let receipt = dir.path().join("receipt.json");
    let exported = client(&data, &url, &publisher)
        .args(["export", "demo/model@1", "--receipt", receipt.to_str().unwrap()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&exported.stdout);
    assert!(
        exported.status.success() && text.contains("governance: approved") && text.contains("/v1/proofs/demo/"),
        "{text}"
    );
    let verified =
        helix(&data).args(["governance", "verify", receipt.to_str().unwrap(), "--registry", &url]).output().unwrap();
    assert!(String::from_utf8_lossy(&verified.stdout).starts_with("ok: 1 receipt(s) of demo/model@1"));
    let verified = helix(&data)
        .args(["governance", "verify", receipt.to_str().unwrap(), "--registry", &url, "--json"])
        .output()
        .unwrap();
    let verified: serde_json::Value = serde_json::from_slice(&verified.stdout).unwrap();
    assert_eq!((verified["ok"].as_bool(), verified["receipts"].as_u64()), (Some(true), Some(1)));

    drop(server);
    let export = |env: &[(&str, &str)], args: &[&str]| {
        client(&data, &url, &publisher)
            .envs(env.iter().copied())
            .args(["export", "demo/model@1"])
            .args(args)
            .output()
            .unwrap()
    };
    let closed = export(&[], &[]);
    assert_eq!(closed.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&closed.stderr).starts_with("helix: registry_unreachable: "));
    let pending = data.join("client-state/unregistered-exports/pending");
    let allow = [("HELIX_REGISTRY_ALLOW_UNREGISTERED_EXPORT", "1")];
    let no_reason = export(&allow, &[]);
    assert_eq!(no_reason.status.code(), Some(1), "the override needs a reason");
    assert!(files_under(&pending).is_empty());
    let overridden = export(&allow, &["--reason", "partner deadline; registry down"]);
    let warning = String::from_utf8_lossy(&overridden.stderr);
    assert!(overridden.status.success() && warning.contains("UNREGISTERED EXPORT of demo/model@1"), "{warning}");
    let records = files_under(&pending);
    assert_eq!(records.len(), 1);
    let record: serde_json::Value = serde_json::from_slice(&std::fs::read(&records[0]).unwrap()).unwrap();
    assert_eq!(record["reason"], "partner deadline; registry down");

    // The registry answers again (same address): the next client command reports the record, once.
    let listen = url.trim_start_matches("http://");
    let (_server, _, _) = serve_with(&data, &[], listen);
    let status = client(&data, &url, &publisher).arg("status").output().unwrap();
    assert!(String::from_utf8_lossy(&status.stderr).contains("reported the unregistered export"));
    assert!(files_under(&pending).is_empty());
    assert_eq!(files_under(&data.join("client-state/unregistered-exports/reported")).len(), 1);
    let events = client(&data, &url, &admin)
        .args(["audit", "query", "--workspace", "demo", "--action", "bundle.export_unregistered", "--json"])
        .output()
        .unwrap();
    let events: Vec<serde_json::Value> =
        String::from_utf8_lossy(&events.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(events.len(), 1, "recorded once");
    assert_eq!(
        (events[0]["outcome"].as_str(), events[0]["details"]["id"].clone()),
        (Some("warned"), record["id"].clone())
    );
    assert!(events[0]["actor"].as_str().unwrap().starts_with("ada@"));
    // The same report again (a client that crashed before moving its record) is not recorded twice.
    let body = serde_json::json!({"id": record["id"], "exported_at": record["exported_at"], "local_user": "x",
        "host": "h", "reason": "r", "error": "e"});
    let path = format!("{url}/v1/workspaces/demo/bundles/model/versions/1/unregistered-exports");
    assert_eq!(post_status(&publisher, &body, &path), "200");
}

#[test]
fn the_override_never_covers_an_answer_only_an_unreachable_registry() {
    let (dir, data, _server, url, admin, publisher) = small_inline_registry();
    let src = dir.path().join("src");
    source_tree(&src, 1, 100_000);
    push_approved_model(&data, &url, &publisher, &src);
    let pending = data.join("client-state/unregistered-exports/pending");
    let export = |reason: &str| {
        client(&data, &url, &publisher)
            .env("HELIX_REGISTRY_ALLOW_UNREGISTERED_EXPORT", "1")
            .args(["export", "demo/model@1", "--reason", reason])
            .output()
            .unwrap()
    };

    // A frozen registry answered: no override.
    let freeze = serde_json::json!({"reason": "drill"});
    assert_eq!(post_status(&admin, &freeze, &format!("{url}/v1/admin/freeze")), "200");
    let frozen = export("the registry is frozen");
    assert_eq!(frozen.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&frozen.stderr).starts_with("helix: registry_frozen (503)"));
    let unfreeze = serde_json::json!({"reason": "drill over"});
    assert_eq!(post_status(&admin, &unfreeze, &format!("{url}/v1/admin/unfreeze")), "200");

    // Stored bytes that fail their integrity check: an answer, not an outage.
    let stored =
        files_under(&data.join("blobs")).into_iter().max_by_key(|p| std::fs::metadata(p).unwrap().len()).unwrap();
    let mut bytes = std::fs::read(&stored).unwrap();
    bytes[10] ^= 1;
    std::fs::write(&stored, bytes).unwrap();
    let corrupt = export("bytes are corrupt");
    let err = String::from_utf8_lossy(&corrupt.stderr);
    assert!(corrupt.status.code() == Some(3) && err.starts_with("helix: blob_integrity_error (500)"), "{err}");
    assert!(files_under(&pending).is_empty(), "no override was recorded for an answer");

    // Unreachable, but a reason the registry would refuse to record: refused here, nothing written.
    let dead = client(&data, "http://127.0.0.1:9", &publisher)
        .env("HELIX_REGISTRY_ALLOW_UNREGISTERED_EXPORT", "1")
        .args(["export", "demo/model@1", "--reason", "two\nlines"])
        .output()
        .unwrap();
    assert_eq!(dead.status.code(), Some(1), "{}", String::from_utf8_lossy(&dead.stderr));
    assert!(files_under(&pending).is_empty());
}

#[test]
fn a_re_export_never_overwrites_a_receipt_and_many_proof_urls_are_summarised() {
    let (dir, data, _server, url, _, publisher) = small_inline_registry();
    let src = dir.path().join("src");
    source_tree(&src, 20, 10);
    push_approved_model(&data, &url, &publisher, &src);
    let work = dir.path().join("work");
    std::fs::create_dir(&work).unwrap();
    let export = |args: &[&str]| {
        let out = client(&data, &url, &publisher)
            .current_dir(&work)
            .args(["export", "demo/model@1"])
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    let first = export(&[]);
    assert!(first.lines().count() <= 3 && first.contains("23 file proof URL(s)"), "summarised:\n{first}");
    let second = export(&["--urls", "urls.tsv"]);
    assert!(
        second.contains("saved to model-1.export-receipt-2.json") && second.contains("written to urls.tsv"),
        "{second}"
    );
    let receipt =
        |name: &str| -> serde_json::Value { serde_json::from_slice(&std::fs::read(work.join(name)).unwrap()).unwrap() };
    assert_ne!(
        receipt("model-1.export-receipt.json"),
        receipt("model-1.export-receipt-2.json"),
        "the first receipt is kept"
    );
    let urls = std::fs::read_to_string(work.join("urls.tsv")).unwrap();
    assert_eq!(urls.lines().count(), 24, "the manifest and every file");
}

/// `helix export --pack` and `helix verify-pack` as a partner runs it: the pack verifies with the
/// registry's key (a PEM, a fingerprint or the registry), without one it is a usage error (exit 2), a
/// changed pack fails in one line (exit 1), and an existing pack file is never overwritten (exit 2,
/// before anything is exported).
#[test]
fn an_evidence_pack_verifies_with_a_pinned_key_only_and_is_never_overwritten() {
    let (dir, data, _server, url, _, publisher) = small_inline_registry();
    let src = dir.path().join("src");
    source_tree(&src, 12, 100_000);
    push_approved_model(&data, &url, &publisher, &src);
    let work = dir.path().join("work");
    std::fs::create_dir(&work).unwrap();
    let run = |args: &[&str]| {
        let out = client(&data, &url, &publisher).current_dir(&work).args(args).output().unwrap();
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        (out.status.code(), text)
    };
    let (code, text) = run(&["export", "demo/model@1", "--pack", "model-1.tar"]);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("evidence pack model-1.tar: 15 file(s)") && text.contains("2 receipt(s)"), "{text}");
    let receipts = || {
        let json = |e: &std::fs::DirEntry| e.path().extension().is_some_and(|x| x == "json");
        std::fs::read_dir(&work).unwrap().filter(|e| json(e.as_ref().unwrap())).count()
    };
    let before = std::fs::read(work.join("model-1.tar")).unwrap();

    // The partner's side: the pack and a pinned key, no token, no registry.
    let published = Command::new("curl").args(["-s", &format!("{url}/v1/governance/public-key")]).output().unwrap();
    let published: serde_json::Value = serde_json::from_slice(&published.stdout).unwrap();
    let key_id = published["key_id"].as_str().unwrap().to_owned();
    std::fs::write(work.join("registry.pem"), published["pem"].as_str().unwrap()).unwrap();
    let verify = |args: &[&str]| {
        let out = helix(&data).current_dir(&work).arg("verify-pack").args(args).output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    for pin in [vec!["--public-key", "registry.pem"], vec!["--key-fingerprint", &key_id], vec!["--registry", &url]] {
        let (code, stdout, stderr) = verify(&[&["model-1.tar"], pin.as_slice()].concat());
        assert_eq!(code, Some(0), "{pin:?}: {stderr}");
        assert!(stdout.starts_with("ok: demo/model@1") && stdout.contains("15 file(s)"), "{stdout}");
        assert!(stdout.contains("state exported") && stdout.contains(&key_id), "{stdout}");
    }
    let (code, _, stderr) = verify(&["model-1.tar"]);
    assert!(code == Some(2) && stderr.contains("--public-key") && stderr.lines().count() == 1, "{stderr}");

    // A byte changed anywhere in a file's content: exit 1, one line naming what is wrong.
    let mut changed = before.clone();
    let at = changed.windows(8).position(|w| w == b"file 11\n").unwrap();
    changed[at] = b'F';
    std::fs::write(work.join("changed.tar"), &changed).unwrap();
    let (code, _, stderr) = verify(&["changed.tar", "--public-key", "registry.pem"]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.starts_with("helix: invalid: files/") && stderr.lines().count() == 1, "{stderr}");

    // The same pack file again: refused before anything is exported (no new receipt), the pack kept.
    let receipts_before = receipts();
    let (code, text) = run(&["export", "demo/model@1", "--pack", "model-1.tar"]);
    assert!(code == Some(2) && text.contains("never overwritten"), "{text}");
    assert_eq!(receipts(), receipts_before, "nothing exported");
    assert_eq!(std::fs::read(work.join("model-1.tar")).unwrap(), before);
}
