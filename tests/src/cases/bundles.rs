//! Bundle versions over HTTP: registration of a manifest whose files are linked in the workspace,
//! reads, listing, and every refusal of SPEC §4 and the governance issue's bad-input list.

use helix_core::domain::{Digest, Role};
use serde_json::{Value, json};

use super::api::{get, metrics_text, post_json, put_blob};
use super::{expect_problem, unique_blob};
use crate::{Backend, TestEnv};

fn manifest(name: &str, version: &str, files: &[(&str, String, usize)]) -> Value {
    let files: Vec<Value> = files.iter().map(|(p, d, s)| json!({"path": p, "digest": d, "size": s})).collect();
    json!({"schema": "helix.bundle.v1", "name": name, "version": version, "files": files, "annotations": {"team": "a"}})
}

async fn register(env: &TestEnv, token: &str, ws: &str, name: &str, version: &str, body: &Value) -> reqwest::Response {
    let url = env.url(&format!("/v1/workspaces/{ws}/bundles/{name}/versions/{version}"));
    env.http.put(url).header("authorization", format!("Bearer {token}")).json(body).send().await.unwrap()
}

/// Two linked blobs of `ws`, as (path, digest, size) entries of a manifest.
async fn linked_files(env: &TestEnv, token: &str, ws: &str) -> Vec<(&'static str, String, usize)> {
    let mut files = Vec::new();
    for (path, len) in [("data/a.bin", 300), ("model.json", 120)] {
        let (bytes, d) = unique_blob(len);
        assert_eq!(put_blob(env, token, ws, &d.to_string(), bytes).await.status(), 201);
        files.push((path, d.to_string(), len));
    }
    files
}

pub async fn bundle_versions_register_once_read_back_and_list(b: Backend) {
    let env = TestEnv::start(b).await;
    let publisher = env.token(Role::Publisher, "team-a").await;
    let viewer = env.token(Role::Viewer, "team-a").await;
    let files = linked_files(&env, &publisher, "team-a").await;
    let body = manifest("model", "1.0", &files);

    let first = register(&env, &publisher, "team-a", "model", "1.0", &body).await;
    assert_eq!(first.status(), 201);
    let created: Value = first.json().await.unwrap();
    assert_eq!(
        (created["state"].as_str(), created["files"].as_u64(), created["bytes"].as_u64()),
        (Some("submitted"), Some(2), Some(420))
    );
    let digest = created["manifest_digest"].as_str().unwrap().to_owned();
    assert!(created["export_transition"].as_str().unwrap().starts_with("sha256:"));
    // The same manifest again (another layout of the same JSON): 200, nothing new.
    let spaced = serde_json::to_string_pretty(&body).unwrap();
    let url = env.url("/v1/workspaces/team-a/bundles/model/versions/1.0");
    let again =
        env.http.put(&url).header("authorization", format!("Bearer {publisher}")).body(spaced).send().await.unwrap();
    assert_eq!(again.status(), 200);
    assert_eq!(again.json::<Value>().await.unwrap()["manifest_digest"], digest.as_str());
    // Another manifest for the same version: 409.
    let other = manifest("model", "1.0", &files[..1]);
    let conflict =
        expect_problem(register(&env, &publisher, "team-a", "model", "1.0", &other).await, 409, "version_exists").await;
    assert!(conflict["detail"].as_str().unwrap().contains(&digest));

    // Read back: the canonical manifest, verified from the store, and the state.
    let got: Value = get(&env, &viewer, "/v1/workspaces/team-a/bundles/model/versions/1.0").await.json().await.unwrap();
    assert_eq!(got["manifest_digest"], digest.as_str());
    assert_eq!(got["manifest"]["files"][1]["path"], "model.json");
    assert_eq!(got["export_transition"], created["export_transition"]);
    assert!(got["registered_by"].as_str().unwrap().starts_with("publisher-user@tok_"));
    // The manifest is itself a blob of the workspace, whose digest is the version's identity.
    let blob = get(&env, &viewer, &format!("/v1/workspaces/team-a/blobs/{digest}")).await;
    let stored = blob.bytes().await.unwrap();
    assert_eq!(helix_core::domain::Digest::of(&stored).to_string(), digest);
    expect_problem(get(&env, &viewer, "/v1/workspaces/team-a/bundles/model/versions/2.0").await, 404, "bundle_missing")
        .await;
    let admin = env.token(Role::Admin, "*").await;
    expect_problem(get(&env, &admin, "/v1/workspaces/team-b/bundles/model/versions/1.0").await, 404, "bundle_missing")
        .await;

    // Listing, in (name, version) order, page by page.
    for (name, version) in [("model", "0.9"), ("alpha", "1"), ("model", "1.0-rc")] {
        assert_eq!(
            register(&env, &publisher, "team-a", name, version, &manifest(name, version, &files)).await.status(),
            201
        );
    }
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let q = match &cursor {
            Some(c) => format!("?limit=2&cursor={c}"),
            None => "?limit=2".into(),
        };
        let page: Value = get(&env, &viewer, &format!("/v1/workspaces/team-a/bundles{q}")).await.json().await.unwrap();
        for v in page["versions"].as_array().unwrap() {
            seen.push(format!("{}@{}", v["name"].as_str().unwrap(), v["version"].as_str().unwrap()));
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen, ["alpha@1", "model@0.9", "model@1.0", "model@1.0-rc"]);
    let empty: Value = get(&env, &admin, "/v1/workspaces/team-b/bundles").await.json().await.unwrap();
    assert_eq!(empty["versions"], json!([]));

    let events = env.audit("team-a").await;
    let registrations = events.iter().filter(|e| e.action == "bundle.register").count();
    assert_eq!(registrations, 4, "one event per registration, none for the repeat");
    helix_core::domain::audit::verify_chain(&events).unwrap();
}

pub async fn bad_manifests_and_unlinked_files_are_refused_and_change_nothing(b: Backend) {
    let env = TestEnv::start_with(b, &[("HELIX_INLINE_MAX", "65536")]).await;
    let publisher = env.token(Role::Publisher, "team-a").await;
    let files = linked_files(&env, &publisher, "team-a").await;
    let (d0, d1) = (files[0].1.clone(), files[1].1.clone());
    let bad: Vec<(Value, &str)> = vec![
        (manifest("model", "1", &[("../x", d0.clone(), 300)]), ".."),
        (manifest("model", "1", &[("a/./x", d0.clone(), 300)]), "."),
        (manifest("model", "1", &[("a//x", d0.clone(), 300)]), "empty segment"),
        (manifest("model", "1", &[("", d0.clone(), 300)]), "empty path"),
        (manifest("model", "1", &[("/abs", d0.clone(), 300)]), "absolute"),
        (manifest("model", "1", &[("a\\b", d0.clone(), 300)]), "backslash"),
        (manifest("model", "1", &[("b", d0.clone(), 300), ("a", d1.clone(), 120)]), "unsorted"),
        (manifest("model", "1", &[("a", d0.clone(), 300), ("a", d0.clone(), 300)]), "duplicate"),
        (manifest("other", "1", &[("a", d0.clone(), 300)]), "name differs from the URL"),
        (manifest("model", "2", &[("a", d0.clone(), 300)]), "version differs from the URL"),
        (manifest("model", "1", &[("a", d0.clone(), 299)]), "size differs from the blob's"),
        (json!({"schema": "helix.bundle.v9", "name": "model", "version": "1", "files": []}), "unknown schema"),
        (json!({"schema": "helix.bundle.v1", "name": "model", "version": "1", "files": [], "x": 1}), "unknown field"),
    ];
    for (body, what) in bad {
        let resp = register(&env, &publisher, "team-a", "model", "1", &body).await;
        let problem = expect_problem(resp, 400, "invalid_manifest").await;
        assert!(!problem["detail"].as_str().unwrap().is_empty(), "{what}");
    }
    // More bytes than the body limit (HELIX_INLINE_MAX, 64 KiB here); the file-count limit is a unit test.
    let many: Vec<(String, String, usize)> = (0..600).map(|i| (format!("f{i:05}"), d0.clone(), 300)).collect();
    let many: Vec<(&str, String, usize)> = many.iter().map(|(p, d, s)| (p.as_str(), d.clone(), *s)).collect();
    let body = manifest("model", "1", &many);
    let big = register(&env, &publisher, "team-a", "model", "1", &body).await;
    expect_problem(big, 413, "payload_too_large").await;
    // A digest only another workspace holds, and one nobody holds: both are missing here.
    let other = env.token(Role::Publisher, "team-b").await;
    let (theirs, theirs_d) = unique_blob(50);
    assert_eq!(put_blob(&env, &other, "team-b", &theirs_d.to_string(), theirs).await.status(), 201);
    let (_, nobody) = unique_blob(50);
    let body = manifest(
        "model",
        "1",
        &[("a", d0.clone(), 300), ("b", theirs_d.to_string(), 50), ("c", nobody.to_string(), 50)],
    );
    let problem =
        expect_problem(register(&env, &publisher, "team-a", "model", "1", &body).await, 409, "blob_missing").await;
    let mut expected = vec![theirs_d.to_string(), nobody.to_string()];
    expected.sort();
    assert_eq!(problem["missing"], json!(expected));
    // Bad names and versions in the path are refused before anything is read.
    let admin = env.token(Role::Admin, "*").await;
    for path in ["/v1/workspaces/team-a/bundles/-x/versions/1", "/v1/workspaces/team-a/bundles/x/versions/a%20b"] {
        let resp = env
            .http
            .put(env.url(path))
            .header("authorization", format!("Bearer {admin}"))
            .json(&json!({}))
            .send()
            .await
            .unwrap();
        expect_problem(resp, 400, "invalid_request").await;
    }
    expect_problem(get(&env, &admin, "/v1/workspaces/team-a/bundles?cursor=nope").await, 400, "invalid_request").await;
    assert!(env.audit("team-a").await.iter().all(|e| e.action != "bundle.register"), "nothing registered");
    let listed: Value = get(&env, &publisher, "/v1/workspaces/team-a/bundles").await.json().await.unwrap();
    assert_eq!(listed["versions"], json!([]));
}

/// The statements of a ledger's receipts, after checking what an offline verifier checks: each
/// signature with the published key, seq from 1 without gaps, each `prev` the digest of the previous
/// payload.
fn verified_statements(receipts: &[Value], key: &helix_core::ports::PublicKeyInfo) -> Vec<Value> {
    use base64::Engine;
    let mut prev: Option<String> = None;
    let mut out = Vec::new();
    for (i, r) in receipts.iter().enumerate() {
        let envelope = serde_json::to_vec(r).unwrap();
        let payload = helix_core::dsse::verify(
            &envelope,
            helix_core::governance::RECEIPT_PAYLOAD_TYPE,
            std::slice::from_ref(key),
        )
        .expect("signed by the registry key");
        let raw = base64::engine::general_purpose::STANDARD.decode(r["payload"].as_str().unwrap()).unwrap();
        assert_eq!(raw, payload);
        let statement: Value = serde_json::from_slice(&payload).unwrap();
        assert_eq!(statement["seq"], (i + 1) as u64, "gapless");
        assert_eq!(statement["prev"].as_str().map(str::to_owned), prev, "chained");
        prev = Some(helix_core::domain::Digest::of(&payload).to_string());
        out.push(statement);
    }
    out
}

pub async fn governance_decisions_are_signed_receipts_with_separation_of_duties(b: Backend) {
    // 16 concurrent decisions below: on the emulator, a private emulator process.
    let (env, _moto) = TestEnv::start_private(b).await;
    let publisher = env.token_of("ada", Role::Publisher, "team-a").await;
    let approver = env.token_of("grace", Role::Approver, "team-a").await;
    let reviewer = env.token_of("linus", Role::SafetyReviewer, "team-a").await;
    let ada_admin = env.token_of("ada", Role::Admin, "*").await;
    let files = linked_files(&env, &publisher, "team-a").await;
    for version in ["1", "2", "3", "4"] {
        assert_eq!(
            register(&env, &publisher, "team-a", "model", version, &manifest("model", version, &files)).await.status(),
            201
        );
    }
    let base = "/v1/workspaces/team-a/bundles/model/versions";
    let key_doc: Value = env.http.get(env.url("/v1/governance/public-key")).send().await.unwrap().json().await.unwrap();
    let key = helix_core::ports::PublicKeyInfo::from_spki_der(&pkcs8_der(key_doc["pem"].as_str().unwrap())).unwrap();
    assert_eq!(key_doc["key_id"], key.key_id.as_str());
    assert_eq!(key_doc["jwk"]["crv"], "P-256");

    // Approval: by an approver; not by the registering user, whatever role and credential.
    expect_problem(
        post_json(&env, &publisher, &format!("{base}/1/approve"), json!({})).await,
        403,
        "insufficient_role",
    )
    .await;
    expect_problem(post_json(&env, &ada_admin, &format!("{base}/1/approve"), json!({})).await, 403, "self_approval")
        .await;
    let first = post_json(&env, &approver, &format!("{base}/1/approve"), json!({})).await;
    assert_eq!(first.status(), 201);
    let first: Value = first.json().await.unwrap();
    let again = post_json(&env, &approver, &format!("{base}/1/approve"), json!({})).await;
    assert_eq!(again.status(), 200, "idempotent");
    assert_eq!(again.json::<Value>().await.unwrap(), first, "the same receipt");
    let ledger: Value = get(&env, &publisher, &format!("{base}/1/governance")).await.json().await.unwrap();
    assert_eq!(ledger["state"], "approved");
    let statements = verified_statements(ledger["receipts"].as_array().unwrap(), &key);
    assert_eq!(statements.len(), 1);
    let s = &statements[0];
    assert_eq!(
        (s["kind"].as_str(), s["user"].as_str(), s["role"].as_str()),
        (Some("approval"), Some("grace"), Some("approver"))
    );
    assert_eq!((s["from"].as_str(), s["to"].as_str()), (Some("submitted"), Some("approved")));
    let version: Value = get(&env, &publisher, &format!("{base}/1")).await.json().await.unwrap();
    assert_eq!(version["state"], "approved");
    assert_eq!(s["manifest"], version["manifest_digest"]);

    // Rejection is final: no approval or waiver after it.
    assert_eq!(post_json(&env, &approver, &format!("{base}/2/reject"), json!({})).await.status(), 201);
    expect_problem(post_json(&env, &approver, &format!("{base}/2/approve"), json!({})).await, 409, "version_rejected")
        .await;

    // Waivers: a safety reviewer, for exactly the version's export transition, in scope, bounded.
    let v3: Value = get(&env, &publisher, &format!("{base}/3")).await.json().await.unwrap();
    let transition = v3["export_transition"].as_str().unwrap().to_owned();
    let waiver = |t: &str, scope: &str, justification: String| json!({"transition": t, "scope": scope, "justification": justification});
    let waivers = format!("{base}/3/waivers");
    expect_problem(
        post_json(&env, &approver, &waivers, waiver(&transition, "export_unapproved", "x".into())).await,
        403,
        "insufficient_role",
    )
    .await;
    use helix_core::domain::governance::{State, transition_id};
    let other = transition_id("team-a/model@2", State::Submitted, State::Exported).unwrap().to_string();
    for (body, what) in [
        (waiver(&other, "export_unapproved", "x".into()), "another transition"),
        (waiver(&transition, "everything", "x".into()), "another scope"),
        (waiver(&transition, "export_unapproved", "j".repeat(2049)), "justification over 2048 bytes"),
        (waiver(&transition, "export_unapproved", "  ".into()), "empty justification"),
    ] {
        let problem = expect_problem(post_json(&env, &reviewer, &waivers, body).await, 400, "waiver_invalid").await;
        assert!(!problem["detail"].as_str().unwrap().is_empty(), "{what}");
    }
    let made =
        post_json(&env, &reviewer, &waivers, waiver(&transition, "export_unapproved", "incident 42".into())).await;
    assert_eq!(made.status(), 201);
    let ledger: Value = get(&env, &publisher, &format!("{base}/3/governance")).await.json().await.unwrap();
    assert_eq!(ledger["state"], "submitted", "a waiver permits an export; it approves nothing");
    let w = &verified_statements(ledger["receipts"].as_array().unwrap(), &key)[0];
    assert_eq!(
        (w["kind"].as_str(), w["transition"].as_str(), w["scope"].as_str()),
        (Some("waiver"), Some(transition.as_str()), Some("export_unapproved"))
    );
    assert!(w["expires_at"].as_i64().unwrap() > helix_core::domain::time::now_unix());
    expect_problem(post_json(&env, &approver, &format!("{base}/3/waivers"), json!({})).await, 403, "insufficient_role")
        .await;
    expect_problem(post_json(&env, &approver, &format!("{base}/9/approve"), json!({})).await, 404, "bundle_missing")
        .await;

    // 16 approvers at once: a gapless, chained ledger of 16 receipts.
    let mut tokens = Vec::new();
    for i in 0..16 {
        tokens.push(env.token_of(&format!("approver-{i}"), Role::Approver, "team-a").await);
    }
    let url = env.url(&format!("{base}/4/approve"));
    let all = tokens.iter().map(|t| {
        let (http, url, auth) = (env.http.clone(), url.clone(), format!("Bearer {t}"));
        tokio::spawn(async move {
            http.post(url).header("authorization", auth).json(&json!({})).send().await.unwrap().status().as_u16()
        })
    });
    let statuses: Vec<u16> = futures_util::future::join_all(all).await.into_iter().map(Result::unwrap).collect();
    assert!(statuses.iter().all(|s| *s == 201), "{statuses:?}");
    let ledger: Value = get(&env, &publisher, &format!("{base}/4/governance")).await.json().await.unwrap();
    assert_eq!(verified_statements(ledger["receipts"].as_array().unwrap(), &key).len(), 16);

    let events = env.audit("team-a").await;
    let decisions = events
        .iter()
        .filter(|e| e.action.starts_with("governance.") && e.outcome == helix_core::domain::Outcome::Success)
        .count();
    assert_eq!(decisions, 1 + 1 + 1 + 16, "one event per receipt, none for a repeat or a refusal");
    helix_core::domain::audit::verify_chain(&events).unwrap();

    if b == Backend::Emulator {
        // The signer unreachable: 503, nothing recorded unsigned.
        let broken = env.app_with(&[("AWS_ENDPOINT_URL_KMS", &super::closed_port_url())]).await.unwrap();
        let broken = crate::cases::serve_app(broken);
        let url = format!("{}{base}/3/approve", broken.url());
        let resp = env
            .http
            .post(url)
            .header("authorization", format!("Bearer {approver}"))
            .json(&json!({}))
            .send()
            .await
            .unwrap();
        expect_problem(resp, 503, "signer_unavailable").await;
        let ledger: Value = get(&env, &publisher, &format!("{base}/3/governance")).await.json().await.unwrap();
        assert_eq!(ledger["receipts"].as_array().unwrap().len(), 1, "only the waiver");
    }
}

/// DER of a PEM public key.
fn pkcs8_der(pem: &str) -> Vec<u8> {
    use base64::Engine;
    let b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    base64::engine::general_purpose::STANDARD.decode(b64).unwrap()
}

/// A bundle of one fresh linked file in `ws`, registered by `token` as `name`@`version`; its digest.
pub(crate) async fn one_file_bundle(env: &TestEnv, token: &str, ws: &str, version: &str) -> helix_core::domain::Digest {
    let (bytes, d) = unique_blob(200);
    assert_eq!(put_blob(env, token, ws, &d.to_string(), bytes).await.status(), 201);
    let body = manifest("model", version, &[("f.bin", d.to_string(), 200)]);
    assert_eq!(register(env, token, ws, "model", version, &body).await.status(), 201);
    d
}

/// Remove a blob's object behind the registry's back.
async fn delete_object(env: &TestEnv, d: &helix_core::domain::Digest) {
    let key = helix_core::ports::BlobKey::primary(d);
    match &env.aws {
        None => std::fs::remove_file(env.app.fs_blobs.as_ref().unwrap().path_of(&key)).unwrap(),
        Some(f) => {
            f.s3.delete_object().bucket(&f.bucket).key(format!("blobs/{}", key.storage_key())).send().await.unwrap();
        }
    }
}

pub async fn governed_export_checks_integrity_and_governance_in_every_mode(b: Backend) {
    let env = TestEnv::start(b).await;
    let ada = env.token_of("ada", Role::Publisher, "team-a").await;
    let grace = env.token_of("grace", Role::Approver, "team-a").await;
    let linus = env.token_of("linus", Role::SafetyReviewer, "team-a").await;
    let base = "/v1/workspaces/team-a/bundles/model/versions";
    let export = |v: &str| format!("{base}/{v}/export");

    // Not approved: refused, naming the transition a waiver would have to cover; the denial is audited.
    let d1 = one_file_bundle(&env, &ada, "team-a", "1").await;
    let v1: Value = get(&env, &ada, &format!("{base}/1")).await.json().await.unwrap();
    let refused = expect_problem(post_json(&env, &ada, &export("1"), json!({})).await, 403, "not_approved").await;
    assert_eq!(refused["transition"], v1["export_transition"]);
    let denials: Vec<_> = env.audit("team-a").await.into_iter().filter(|e| e.action == "bundle.export").collect();
    assert_eq!(denials.len(), 1);
    assert_eq!(denials[0].outcome, helix_core::domain::Outcome::Denied);

    // A waiver for exactly that transition lets it export, with proof URLs that serve the bytes.
    let waiver =
        json!({"transition": v1["export_transition"], "scope": "export_unapproved", "justification": "incident 7"});
    assert_eq!(post_json(&env, &linus, &format!("{base}/1/waivers"), waiver).await.status(), 201);
    let done = post_json(&env, &ada, &export("1"), json!({})).await;
    assert_eq!(done.status(), 200);
    let done: Value = done.json().await.unwrap();
    assert_eq!(done["governance"], "waived");
    let manifest_bytes =
        env.http.get(done["proof"]["manifest"]["url"].as_str().unwrap()).send().await.unwrap().bytes().await.unwrap();
    assert_eq!(helix_core::domain::Digest::of(&manifest_bytes).to_string(), v1["manifest_digest"].as_str().unwrap());
    let file = &done["proof"]["files"][0];
    assert_eq!((file["path"].as_str(), file["digest"].as_str()), (Some("f.bin"), Some(d1.to_string().as_str())));
    let file_bytes = env.http.get(file["url"].as_str().unwrap()).send().await.unwrap().bytes().await.unwrap();
    assert_eq!(helix_core::domain::Digest::of(&file_bytes), d1);
    let ledger: Value = get(&env, &ada, &format!("{base}/1/governance")).await.json().await.unwrap();
    assert_eq!(ledger["state"], "exported");
    let key = env.app.signer.public_key().await.unwrap();
    let statements = verified_statements(ledger["receipts"].as_array().unwrap(), &key);
    assert_eq!(statements.iter().map(|s| s["kind"].as_str().unwrap()).collect::<Vec<_>>(), ["waiver", "export"]);
    assert_eq!(statements[1]["details"]["governance"], "waived");
    // Final: another export is a re-export; no decision after it.
    assert_eq!(
        post_json(&env, &ada, &export("1"), json!({})).await.json::<Value>().await.unwrap()["governance"],
        "re-export"
    );
    expect_problem(post_json(&env, &grace, &format!("{base}/1/approve"), json!({})).await, 409, "version_exported")
        .await;

    // Approved by another user: exports.
    one_file_bundle(&env, &ada, "team-a", "2").await;
    assert_eq!(post_json(&env, &grace, &format!("{base}/2/approve"), json!({})).await.status(), 201);
    assert_eq!(
        post_json(&env, &ada, &export("2"), json!({})).await.json::<Value>().await.unwrap()["governance"],
        "approved"
    );

    // An expired waiver unblocks nothing.
    one_file_bundle(&env, &ada, "team-a", "3").await;
    let v3: Value = get(&env, &ada, &format!("{base}/3")).await.json().await.unwrap();
    let short = json!({"transition": v3["export_transition"], "scope": "export_unapproved", "justification": "x",
        "expires_in_seconds": 1});
    assert_eq!(post_json(&env, &linus, &format!("{base}/3/waivers"), short).await.status(), 201);
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    expect_problem(post_json(&env, &ada, &export("3"), json!({})).await, 403, "not_approved").await;

    // Integrity blocks in every mode: a corrupted file, a deleted one.
    let d4 = one_file_bundle(&env, &ada, "team-a", "4").await;
    assert_eq!(post_json(&env, &grace, &format!("{base}/4/approve"), json!({})).await.status(), 201);
    env.plant_object(&d4, b"not the bytes").await;
    expect_problem(post_json(&env, &ada, &export("4"), json!({})).await, 500, "blob_integrity_error").await;
    let d5 = one_file_bundle(&env, &ada, "team-a", "5").await;
    assert_eq!(post_json(&env, &grace, &format!("{base}/5/approve"), json!({})).await.status(), 201);
    delete_object(&env, &d5).await;
    let missing = expect_problem(post_json(&env, &ada, &export("5"), json!({})).await, 409, "blob_missing").await;
    assert_eq!(missing["missing"], json!([d5.to_string()]));
    for v in ["4", "5"] {
        let ledger: Value = get(&env, &ada, &format!("{base}/{v}/governance")).await.json().await.unwrap();
        assert_eq!(ledger["state"], "approved", "a refused export records nothing");
    }

    // warn: governance recorded, not enforced; off: not checked. Integrity still blocks.
    for (mode, expected) in [("warn", "warned"), ("off", "off")] {
        let env = TestEnv::start_with(b, &[("HELIX_GOVERNANCE_MODE", mode)]).await;
        let ada = env.token_of("ada", Role::Publisher, "team-a").await;
        one_file_bundle(&env, &ada, "team-a", "1").await;
        let done = post_json(&env, &ada, &export("1"), json!({})).await;
        assert_eq!(done.status(), 200, "{mode}");
        assert_eq!(done.json::<Value>().await.unwrap()["governance"], expected);
        let outcome = env.audit("team-a").await.into_iter().find(|e| e.action == "bundle.export").unwrap().outcome;
        let want =
            if mode == "warn" { helix_core::domain::Outcome::Warned } else { helix_core::domain::Outcome::Success };
        assert_eq!(outcome, want, "{mode}");
        let d = one_file_bundle(&env, &ada, "team-a", "2").await;
        env.plant_object(&d, b"bad").await;
        expect_problem(post_json(&env, &ada, &export("2"), json!({})).await, 500, "blob_integrity_error").await;
        // A rejection is final whatever the mode.
        let grace = env.token_of("grace", Role::Approver, "team-a").await;
        one_file_bundle(&env, &ada, "team-a", "3").await;
        assert_eq!(post_json(&env, &grace, &format!("{base}/3/reject"), json!({})).await.status(), 201);
        expect_problem(post_json(&env, &ada, &export("3"), json!({})).await, 409, "version_rejected").await;
    }

    if b == Backend::Emulator {
        // No unsigned export: the signer unreachable is a 503 and nothing is recorded.
        one_file_bundle(&env, &ada, "team-a", "6").await;
        assert_eq!(post_json(&env, &grace, &format!("{base}/6/approve"), json!({})).await.status(), 201);
        let broken = crate::cases::serve_app(
            env.app_with(&[("AWS_ENDPOINT_URL_KMS", &super::closed_port_url())]).await.unwrap(),
        );
        let url = format!("{}{}", broken.url(), export("6"));
        let resp =
            env.http.post(url).header("authorization", format!("Bearer {ada}")).json(&json!({})).send().await.unwrap();
        expect_problem(resp, 503, "signer_unavailable").await;
        let ledger: Value = get(&env, &ada, &format!("{base}/6/governance")).await.json().await.unwrap();
        assert_eq!(ledger["state"], "approved");
    }
}

/// Run `helix governance verify` (the CLI binary, as an operator would) on `doc`; exit code and the
/// one line it printed.
async fn cli_verify(env: &TestEnv, doc: &Value, key_args: &[String]) -> (bool, String) {
    let dir = tokio::task::spawn_blocking(|| crate::runtime_api::function_binaries().clone()).await.unwrap();
    let file = env.dir.path().join(format!("ledger-{}.json", helix_core::domain::BearerToken::generate().sha256()));
    std::fs::write(&file, serde_json::to_vec(doc).unwrap()).unwrap();
    let out = tokio::process::Command::new(dir.join("helix"))
        .args(["governance", "verify"])
        .arg(&file)
        .args(key_args)
        .env("HELIX_DATA_DIR", env.dir.path().join("cli-data"))
        .output()
        .await
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text.trim().to_owned())
}

pub async fn ledgers_verify_offline_and_every_tampering_is_caught(b: Backend) {
    use base64::Engine;
    let env = TestEnv::start(b).await;
    let ada = env.token_of("ada", Role::Publisher, "team-a").await;
    let grace = env.token_of("grace", Role::Approver, "team-a").await;
    let hopper = env.token_of("hopper", Role::Approver, "team-a").await;
    let base = "/v1/workspaces/team-a/bundles/model/versions";
    one_file_bundle(&env, &ada, "team-a", "1").await;
    for approver in [&grace, &hopper] {
        assert_eq!(post_json(&env, approver, &format!("{base}/1/approve"), json!({})).await.status(), 201);
    }
    assert_eq!(post_json(&env, &ada, &format!("{base}/1/export"), json!({})).await.status(), 200);
    let ledger: Value = get(&env, &ada, &format!("{base}/1/governance")).await.json().await.unwrap();
    let key: Value = env.http.get(env.url("/v1/governance/public-key")).send().await.unwrap().json().await.unwrap();
    let pem = env.dir.path().join("key.pem");
    std::fs::write(&pem, key["pem"].as_str().unwrap()).unwrap();
    let with_key = vec!["--public-key".to_owned(), pem.display().to_string()];

    let (ok, line) = cli_verify(&env, &ledger, &with_key).await;
    assert!(ok, "{line}");
    assert!(line.starts_with("ok: 3 receipt(s) of team-a/model@1 from seq 1, state exported"), "{line}");
    let (ok, line) = cli_verify(&env, &ledger, &["--registry".to_owned(), env.url("")]).await;
    assert!(ok, "the key fetched from the registry: {line}");
    let (ok, line) = cli_verify(&env, &ledger["receipts"][1], &with_key).await;
    assert!(ok && line.contains("from seq 2"), "one receipt alone: {line}");

    // One changed byte anywhere in a payload, a removed receipt, two swapped, a forged key.
    let receipts = ledger["receipts"].as_array().unwrap().clone();
    let mut changed = ledger.clone();
    let payload = base64::engine::general_purpose::STANDARD.decode(receipts[1]["payload"].as_str().unwrap()).unwrap();
    let mut flipped = payload.clone();
    let at = String::from_utf8_lossy(&payload).find("hopper").unwrap();
    flipped[at] = b'H';
    changed["receipts"][1]["payload"] = json!(base64::engine::general_purpose::STANDARD.encode(&flipped));
    let mut first_removed = ledger.clone();
    first_removed["receipts"] = json!(receipts[1..]);
    let mut middle_removed = ledger.clone();
    middle_removed["receipts"] = json!([receipts[0], receipts[2]]);
    let mut swapped = ledger.clone();
    swapped["receipts"] = json!([receipts[1], receipts[0], receipts[2]]);
    for (doc, what) in [
        (changed, "a changed byte"),
        (first_removed, "the first receipt removed"),
        (middle_removed, "a middle receipt removed"),
        (swapped, "two receipts swapped"),
    ] {
        let (ok, line) = cli_verify(&env, &doc, &with_key).await;
        assert!(!ok && line.starts_with("helix: invalid:"), "{what}: {line}");
        assert_eq!(line.lines().count(), 1, "one line: {line}");
    }
    let other_pem = {
        use helix_core::ports::Signer;
        let other =
            helix_core::adapters::local_key::LocalKeySigner::load_or_create(&env.dir.path().join("other.key")).unwrap();
        other.public_key().await.unwrap().pem
    };
    let other_path = env.dir.path().join("other.pem");
    std::fs::write(&other_path, other_pem).unwrap();
    let (ok, line) = cli_verify(&env, &ledger, &["--public-key".to_owned(), other_path.display().to_string()]).await;
    assert!(!ok && line.contains("no valid signature"), "another key: {line}");
}

/// A verifier that is not our code: Python `cryptography` (installed with the emulator in the test
/// venv) checks every receipt's ECDSA P-256 / SHA-256 signature over the DSSE pre-authentication
/// encoding, with the PEM the registry publishes, for the KMS key and for the local key.
pub async fn receipts_verify_with_an_independent_ecdsa_implementation(b: Backend) {
    assert_eq!(b, Backend::Emulator, "the Python venv is the emulator suite's");
    for signer in ["kms", "local"] {
        let env = TestEnv::start_with(b, &[("HELIX_SIGNER_BACKEND", signer)]).await;
        let ada = env.token_of("ada", Role::Publisher, "team-a").await;
        let grace = env.token_of("grace", Role::Approver, "team-a").await;
        let base = "/v1/workspaces/team-a/bundles/model/versions";
        one_file_bundle(&env, &ada, "team-a", "1").await;
        assert_eq!(post_json(&env, &grace, &format!("{base}/1/approve"), json!({})).await.status(), 201);
        assert_eq!(post_json(&env, &ada, &format!("{base}/1/export"), json!({})).await.status(), 200);
        let ledger: Value = get(&env, &ada, &format!("{base}/1/governance")).await.json().await.unwrap();
        let key: Value = env.http.get(env.url("/v1/governance/public-key")).send().await.unwrap().json().await.unwrap();
        let dir = env.dir.path();
        std::fs::write(dir.join("key.pem"), key["pem"].as_str().unwrap()).unwrap();
        std::fs::write(dir.join("ledger.json"), serde_json::to_vec(&ledger).unwrap()).unwrap();
        let script = r#"
import base64, json, sys
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
key = serialization.load_pem_public_key(open(sys.argv[1], "rb").read())
ledger = json.load(open(sys.argv[2]))
for r in ledger["receipts"]:
    t = r["payloadType"].encode()
    p = base64.b64decode(r["payload"])
    pae = b"DSSEv1 %d %s %d %s" % (len(t), t, len(p), p)
    for s in r["signatures"]:
        key.verify(base64.b64decode(s["sig"]), pae, ec.ECDSA(hashes.SHA256()))
print("verified", len(ledger["receipts"]))
"#;
        let python = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/python");
        let out = tokio::process::Command::new(&python)
            .args(["-c", script])
            .arg(dir.join("key.pem"))
            .arg(dir.join("ledger.json"))
            .output()
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", python.display()));
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success() && text.trim() == "verified 2", "{signer}: {text}");
    }
}

/// `team-a/model` at versions 1 and 2, ada's, and version 1 approved by grace: (env, ada, grace).
async fn two_versions_the_first_approved(b: Backend) -> (TestEnv, String, String) {
    two_versions_with_overrides(b, &[]).await
}

async fn two_versions_with_overrides(b: Backend, overrides: &[(&str, &str)]) -> (TestEnv, String, String) {
    let env = TestEnv::start_with(b, overrides).await;
    let ada = env.token_of("ada", Role::Publisher, "team-a").await;
    let grace = env.token_of("grace", Role::Approver, "team-a").await;
    one_file_bundle(&env, &ada, "team-a", "1").await;
    one_file_bundle(&env, &ada, "team-a", "2").await;
    let approve = "/v1/workspaces/team-a/bundles/model/versions/1/approve";
    assert_eq!(post_json(&env, &grace, approve, json!({})).await.status(), 201);
    (env, ada, grace)
}

/// The store is not trusted with governance: a genuine receipt copied into another version's ledger
/// (what a writer of the meta table could do without the key) is an integrity error wherever the
/// ledger is read, never an approval.
pub async fn a_receipt_copied_into_another_ledger_is_never_a_state(b: Backend) {
    let (env, ada, _) = two_versions_the_first_approved(b).await;
    let base = "/v1/workspaces/team-a/bundles/model/versions";
    let ws = helix_core::domain::WorkspaceId::parse("team-a").unwrap();
    let genuine = env.app.meta.ledger(&ws, "model", "1").await.unwrap().remove(0);
    let forged = helix_core::ports::Change::AppendReceipt {
        workspace_id: "team-a".into(),
        name: "model".into(),
        version: "2".into(),
        receipt: helix_core::ports::LedgerReceipt { seq: 1, envelope: genuine.envelope, decision_key: None },
        from: helix_core::domain::governance::State::Submitted,
        state: helix_core::domain::governance::State::Approved,
    };
    let draft = helix_core::domain::AuditDraft {
        stream: "team-a".into(),
        actor: "intruder".into(),
        action: "governance.approval".into(),
        entity_type: "bundle_version".into(),
        entity_id: "team-a/model@2".into(),
        outcome: helix_core::domain::Outcome::Success,
        request_id: "forged".into(),
        details: json!({}),
    };
    env.app.meta.commit(forged, draft).await.unwrap();
    expect_problem(get(&env, &ada, &format!("{base}/2/governance")).await, 500, "blob_integrity_error").await;
    expect_problem(get(&env, &ada, &format!("{base}/2")).await, 500, "blob_integrity_error").await;
    expect_problem(post_json(&env, &ada, &format!("{base}/2/export"), json!({})).await, 500, "blob_integrity_error")
        .await;
    let ledger: Value = get(&env, &ada, &format!("{base}/1/governance")).await.json().await.unwrap();
    assert_eq!(ledger["state"], "approved", "the genuine ledger is untouched");
}

/// Two registries in one process that share a signing key but not a store: each records the key in
/// its own store when it first signs (what "already recorded" remembers belongs to one App).
pub async fn a_signing_key_shared_by_two_stores_is_recorded_in_each(b: Backend) {
    let (first, _, _) = two_versions_the_first_approved(b).await;
    let key_id = first.app.signer.public_key().await.unwrap().key_id;
    let same_key_dir = tempfile::tempdir().unwrap();
    let same_key = match b {
        Backend::Embedded => {
            let file = helix_core::app::SIGNING_KEY_FILE;
            std::fs::copy(first.data_dir().join(file), same_key_dir.path().join(file)).unwrap();
            ("HELIX_DATA_DIR", same_key_dir.path().display().to_string())
        }
        Backend::Emulator => ("HELIX_KMS_KEY_ID", first.aws.as_ref().unwrap().key_id.clone()),
    };
    let (second, _, _) = two_versions_with_overrides(b, &[(same_key.0, same_key.1.as_str())]).await;
    assert_eq!(second.app.signer.public_key().await.unwrap().key_id, key_id, "one key");
    let recorded: Vec<String> = second
        .app
        .meta
        .signing_keys()
        .await
        .unwrap()
        .iter()
        .map(|r| helix_core::keys::public_key_from_pem(&r.pem).unwrap().key_id)
        .collect();
    assert_eq!(recorded, vec![key_id], "the second store has the key its receipt was signed with");
}

/// After a signing-key rotation, what the earlier key signed still verifies: the registry records
/// every key it signs receipts with, verifies ledgers with all of them, and publishes them all.
pub async fn receipts_stay_verifiable_after_a_signing_key_rotation(b: Backend) {
    let (env, ada, grace) = two_versions_the_first_approved(b).await;
    let base = "/v1/workspaces/team-a/bundles/model/versions";
    let old_key = env.app.signer.public_key().await.unwrap().key_id;

    // Rotate: a new key (a new local key file, or a new KMS key), the same stores.
    let rotated = env.app_with_a_new_signing_key().await;
    let new_key = rotated.signer.public_key().await.unwrap().key_id;
    assert_ne!(old_key, new_key);
    let server = crate::cases::serve_app(rotated);
    let at = |path: &str| format!("{}{path}", server.url());
    let call = |method: reqwest::Method, path: &str, token: &str| {
        env.http.request(method, at(path)).header("authorization", format!("Bearer {token}"))
    };
    let ledger: Value =
        call(reqwest::Method::GET, &format!("{base}/1/governance"), &ada).send().await.unwrap().json().await.unwrap();
    assert_eq!(ledger["state"], "approved", "the old key's receipt still verifies");
    assert_eq!(call(reqwest::Method::POST, &format!("{base}/2/approve"), &grace).send().await.unwrap().status(), 201);
    assert_eq!(call(reqwest::Method::POST, &format!("{base}/1/export"), &ada).send().await.unwrap().status(), 200);
    let keys: Value = env.http.get(at("/v1/governance/public-key")).send().await.unwrap().json().await.unwrap();
    assert_eq!(keys["key_id"], new_key.as_str());
    assert_eq!(keys["previous"].as_array().unwrap().len(), 1);
    assert_eq!(keys["previous"][0]["key_id"], old_key.as_str());
    // Offline: a ledger signed by both keys verifies with the keys the registry publishes.
    let ledger: Value =
        call(reqwest::Method::GET, &format!("{base}/1/governance"), &ada).send().await.unwrap().json().await.unwrap();
    let (ok, line) = cli_verify(&env, &ledger, &["--registry".to_owned(), server.url()]).await;
    assert!(ok && line.contains(&old_key) && line.contains(&new_key), "{line}");
}

/// A retired key verifies what it signed before its retirement and nothing dated later, in the
/// registry's own ledger reads, with the keys it publishes (`helix governance verify --registry`),
/// naming the key. Retiring is audited in the `*` stream; the current key cannot be retired.
/// An approval of `version` of `model` signed with `env`'s own key, appended straight to the store (a
/// leaked key's receipt planted by whoever can write the meta store).
async fn plant_approval(env: &TestEnv, ws: &helix_core::domain::WorkspaceId, version: &str, manifest: &Digest) {
    use helix_core::domain::governance::{State, transition_id};
    use helix_core::ports::{Change, LedgerReceipt};
    let bundle = helix_core::domain::bundle_ref(ws, "model", version);
    let key = env.app.signer.public_key().await.unwrap();
    let statement = helix_core::governance::Statement {
        kind: "approval".into(),
        bundle: bundle.clone(),
        manifest: manifest.to_string(),
        transition: transition_id(&bundle, State::Submitted, State::Approved).unwrap().to_string(),
        from: "submitted".into(),
        to: "approved".into(),
        user: "mallory".into(),
        role: "approver".into(),
        credential: "tok_leaked".into(),
        time: helix_core::domain::time::now_rfc3339_ms(),
        seq: 1,
        prev: None,
        key_id: key.key_id.clone(),
        scope: None,
        justification: None,
        expires_at: None,
        details: None,
    };
    let payload = helix_core::domain::canonical::to_string(&serde_json::to_value(&statement).unwrap()).unwrap();
    let envelope = helix_core::dsse::sign(
        env.app.signer.as_ref(),
        &key,
        helix_core::governance::RECEIPT_PAYLOAD_TYPE,
        payload.as_bytes(),
    )
    .await
    .unwrap();
    let receipt = LedgerReceipt { seq: 1, envelope, decision_key: None };
    let change = Change::AppendReceipt {
        workspace_id: ws.to_string(),
        name: "model".into(),
        version: version.into(),
        receipt,
        from: helix_core::domain::governance::State::Submitted,
        state: helix_core::domain::governance::State::Approved,
    };
    let draft = helix_core::domain::AuditDraft {
        stream: ws.to_string(),
        actor: "mallory@tok_leaked".into(),
        action: "governance.approval".into(),
        entity_type: "bundle_version".into(),
        entity_id: bundle,
        outcome: helix_core::domain::Outcome::Success,
        request_id: "planted".into(),
        details: json!({}),
    };
    env.app.meta.commit(change, draft).await.unwrap();
}

pub async fn a_retired_signing_key_verifies_only_what_it_signed_before(b: Backend) {
    let (env, ada, grace) = two_versions_the_first_approved(b).await;
    let base = "/v1/workspaces/team-a/bundles/model/versions";
    let ws = helix_core::domain::WorkspaceId::parse("team-a").unwrap();
    let old_key = env.app.signer.public_key().await.unwrap().key_id;
    let rotated = env.app_with_a_new_signing_key().await;
    let new_key = rotated.signer.public_key().await.unwrap().key_id;

    let refused = helix_core::keys::retire_signing_key(&rotated, &new_key, "test", "cli:test", "r1").await;
    assert!(matches!(&refused, Err(helix_core::Error::BadRequest(m)) if m.contains("rotate")), "{refused:?}");
    let unknown =
        helix_core::keys::retire_signing_key(&rotated, &format!("sha256:{}", "0".repeat(64)), "x", "a", "r").await;
    assert!(matches!(unknown, Err(helix_core::Error::BadRequest(_))), "{unknown:?}");
    match b {
        // Straight in the store, as an operator would: `helix keys retire`.
        Backend::Embedded => {
            let bins = tokio::task::spawn_blocking(|| crate::runtime_api::function_binaries().clone()).await.unwrap();
            let helix = |args: &[&str]| {
                std::process::Command::new(bins.join("helix"))
                    .args(args)
                    .env("HELIX_DATA_DIR", env.data_dir())
                    .env("USER", "ops")
                    .output()
                    .unwrap()
            };
            let out = helix(&["keys", "retire", &old_key, "--reason", "leaked in a laptop backup"]);
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            let list = helix(&["keys", "list", "--json"]);
            let list: Value = serde_json::from_slice(&list.stdout).unwrap();
            assert_eq!(list["current"], new_key.as_str());
            let old = list["keys"].as_array().unwrap().iter().find(|k| k["key_id"] == old_key.as_str()).unwrap();
            assert_eq!(old["retired_reason"], "leaked in a laptop backup");
            let again = helix(&["keys", "retire", &old_key, "--reason", "twice"]);
            assert!(!again.status.success() && String::from_utf8_lossy(&again.stderr).contains("already retired"));
        }
        Backend::Emulator => {
            helix_core::keys::retire_signing_key(&rotated, &old_key, "leaked in a laptop backup", "cli:ops", "r2")
                .await
                .unwrap();
        }
    }
    let event = env.audit("*").await.into_iter().find(|e| e.action == "governance.key_retire").expect("audited");
    assert_eq!(
        (event.entity_id.as_str(), event.details["reason"].as_str()),
        (old_key.as_str(), Some("leaked in a laptop backup"))
    );
    let records = env.app.meta.signing_keys().await.unwrap();
    let old = records.iter().find(|r| r.key_id == old_key).unwrap();
    assert!(old.retired_at.is_some() && old.retired_at.as_deref() > Some(old.recorded_at.as_str()), "{old:?}");

    // Before: version 1's approval, signed by the old key before its retirement, still counts.
    let v1 = helix_core::governance::ledger(
        &rotated,
        &ws,
        "model",
        "1",
        &env.app.meta.bundle_version(&ws, "model", "1").await.unwrap().unwrap().manifest_digest,
    )
    .await
    .unwrap();
    assert_eq!(v1.state.as_str(), "approved");
    // After: an instance still configured with the old key refuses to sign (503, nothing recorded) ...
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let refused = post_json(&env, &grace, &format!("{base}/2/approve"), json!({})).await;
    expect_problem(refused, 503, "signer_unavailable").await;
    assert!(env.app.meta.ledger(&ws, "model", "2").await.unwrap().is_empty(), "nothing recorded");
    // ... and an approval of version 2 that whoever holds the leaked key signs and plants in the store
    // is dated after the retirement: it verifies nowhere, with a reason that names the key.
    let v2_manifest = env.app.meta.bundle_version(&ws, "model", "2").await.unwrap().unwrap().manifest_digest;
    plant_approval(&env, &ws, "2", &v2_manifest).await;
    let err = helix_core::governance::ledger(&rotated, &ws, "model", "2", &v2_manifest).await.err().expect("refused");
    assert!(err.to_string().contains(&old_key) && err.to_string().contains("retired"), "{err}");
    let server = crate::cases::serve_app(rotated);
    let resp = env.http.get(format!("{}{base}/2/governance", server.url())).bearer_auth(&ada).send().await.unwrap();
    expect_problem(resp, 500, "blob_integrity_error").await;
    let resp = env.http.get(format!("{}{base}/1/governance", server.url())).bearer_auth(&ada).send().await.unwrap();
    let v1_doc: Value = resp.json().await.unwrap();
    assert_eq!(v1_doc["state"], "approved");
    // Offline with the registry's published key history: its windows travel with the keys.
    let keys: Value =
        env.http.get(format!("{}/v1/governance/public-key", server.url())).send().await.unwrap().json().await.unwrap();
    assert!(keys["previous"][0]["retired_at"].is_string(), "{keys}");
    let registry = ["--registry".to_owned(), server.url()];
    let (ok, line) = cli_verify(&env, &v1_doc, &registry).await;
    assert!(ok, "{line}");
    let envelopes: Vec<Value> = env
        .app
        .meta
        .ledger(&ws, "model", "2")
        .await
        .unwrap()
        .iter()
        .map(|r| serde_json::from_str(&r.envelope).unwrap())
        .collect();
    let (ok, line) = cli_verify(&env, &json!({"receipts": envelopes}), &registry).await;
    assert!(!ok && line.contains(&old_key) && line.contains("retired"), "{line}");
}

/// An export a client made while the registry was unreachable is reported afterwards: recorded once
/// per report id in the workspace's trail (outcome `warned`, the reporter from the token), counted,
/// and refused when malformed. Governance of a workspace named `keys` (whose partition name is that
/// of the registry's signing-key history on DynamoDB) breaks nobody's key listing.
pub async fn unregistered_exports_are_recorded_once_and_a_workspace_named_keys_breaks_no_one(b: Backend) {
    let env = TestEnv::start(b).await;
    let publisher = env.token_of("ada", Role::Publisher, "keys").await;
    let approver = env.token_of("grace", Role::Approver, "keys").await;
    let files = linked_files(&env, &publisher, "keys").await;
    assert_eq!(register(&env, &publisher, "keys", "model", "1", &manifest("model", "1", &files)).await.status(), 201);
    let base = "/v1/workspaces/keys/bundles/model/versions/1";
    assert_eq!(post_json(&env, &approver, &format!("{base}/approve"), json!({})).await.status(), 201);
    let key = env.http.get(env.url("/v1/governance/public-key")).send().await.unwrap();
    assert_eq!(key.status(), 200, "the key history is not confused by the workspace's ledger");
    assert_eq!(post_json(&env, &publisher, &format!("{base}/export"), json!({})).await.status(), 200);

    let report = json!({"id": "uex_00112233445566778899aabbccddeeff", "exported_at": "2026-12-01T03:04:05Z",
        "local_user": "ada", "host": "lab-7", "reason": "registry down, partner deadline", "error": "connection refused"});
    let path = "/v1/workspaces/keys/bundles/model/versions/9/unregistered-exports";
    let first = post_json(&env, &publisher, path, report.clone()).await;
    assert_eq!(first.status(), 201, "a version the registry never saw is recorded too");
    assert_eq!(first.json::<Value>().await.unwrap(), json!({"id": report["id"], "recorded": true}));
    let again = post_json(&env, &publisher, path, report.clone()).await;
    assert_eq!(again.json::<Value>().await.unwrap()["recorded"], false);
    for (field, bad) in [
        ("id", json!("uex_XYZ")),
        ("exported_at", json!("yesterday")),
        ("host", json!("a\u{202e}b")),
        ("reason", json!("")),
    ] {
        let mut body = report.clone();
        body[field] = bad;
        body["id"] = if field == "id" { body["id"].clone() } else { json!("uex_ffeeddccbbaa99887766554433221100") };
        expect_problem(post_json(&env, &publisher, path, body).await, 400, "invalid_request").await;
    }
    let viewer = env.token_of("vic", Role::Viewer, "keys").await;
    expect_problem(post_json(&env, &viewer, path, report.clone()).await, 403, "insufficient_role").await;
    let outsider = env.token_of("eve", Role::Publisher, "other").await;
    expect_problem(post_json(&env, &outsider, path, report.clone()).await, 403, "forbidden_workspace").await;

    let events: Vec<_> =
        env.audit("keys").await.into_iter().filter(|e| e.action == "bundle.export_unregistered").collect();
    assert_eq!(events.len(), 1, "recorded once");
    let e = &events[0];
    assert_eq!((e.entity_id.as_str(), e.outcome), ("keys/model@9", helix_core::domain::Outcome::Warned));
    assert!(e.actor.starts_with("ada@tok_"));
    assert_eq!((e.details["host"].as_str(), e.details["id"].clone()), (Some("lab-7"), report["id"].clone()));
    let metrics = metrics_text(&env).await;
    assert!(metrics.lines().any(|l| l == "helix_unregistered_exports_total 1"), "{metrics}");
}
