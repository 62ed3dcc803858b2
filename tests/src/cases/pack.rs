//! Evidence packs (`helix export --pack`, `helix verify-pack`), on both backends: a pack made after an
//! official export verifies offline with nothing but a pinned key; every tampering a partner could
//! receive (a flipped byte in a file, receipts reordered or dropped, the whole pack re-signed with
//! another key and its keys replaced, a truncated copy) fails with its own reason; a pack is never
//! written over an existing file.

use base64::Engine;
use helix_cli::client::Registry;
use helix_cli::export::Exported;
use helix_core::domain::{BundleName, Digest, Role, WorkspaceId};
use helix_core::evidence_pack::{self, Pins};
use helix_core::ports::{PublicKeyInfo, Signer};
use serde_json::{Value, json};

use super::api::{get, post_json};
use crate::{Backend, TestEnv};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// The entries of a pack, in order: (name, bytes).
fn entries(pack: &std::path::Path) -> Vec<(String, Vec<u8>)> {
    use std::io::Read;
    let mut archive = tar::Archive::new(std::fs::File::open(pack).unwrap());
    archive
        .entries()
        .unwrap()
        .map(|e| {
            let mut e = e.unwrap();
            let name = e.path().unwrap().to_string_lossy().into_owned();
            let mut bytes = Vec::new();
            e.read_to_end(&mut bytes).unwrap();
            (name, bytes)
        })
        .collect()
}

/// A pack with these entries (as someone who rewrites a pack would write it).
fn repack(entries: &[(String, Vec<u8>)], out: &std::path::Path) {
    let mut tar = tar::Builder::new(std::fs::File::create(out).unwrap());
    for (name, bytes) in entries {
        let mut h = tar::Header::new_gnu();
        h.set_size(bytes.len() as u64);
        h.set_mode(0o644);
        tar.append_data(&mut h, name, bytes.as_slice()).unwrap();
    }
    tar.finish().unwrap();
}

fn doc(entries: &[(String, Vec<u8>)], name: &str) -> Value {
    serde_json::from_slice(&entries.iter().find(|(n, _)| n == name).unwrap().1).unwrap()
}

fn set_doc(entries: &mut [(String, Vec<u8>)], name: &str, value: &Value) {
    entries.iter_mut().find(|(n, _)| n == name).unwrap().1 = serde_json::to_vec_pretty(value).unwrap();
}

/// Re-sign every receipt of the pack with `key` (its key id in every statement, the chain re-linked)
/// and replace its keys with that key: a forgery consistent in itself.
async fn forge(entries: &mut [(String, Vec<u8>)], signer: &dyn Signer, key: &PublicKeyInfo) {
    let mut ledger = doc(entries, evidence_pack::LEDGER);
    let mut prev: Option<String> = None;
    let mut forged = Vec::new();
    for receipt in ledger["receipts"].as_array().unwrap() {
        let mut statement: Value =
            serde_json::from_slice(&B64.decode(receipt["payload"].as_str().unwrap()).unwrap()).unwrap();
        statement["key_id"] = json!(key.key_id);
        statement["prev"] = json!(prev);
        let payload = helix_core::domain::canonical::to_string(&statement).unwrap();
        prev = Some(Digest::of(payload.as_bytes()).to_string());
        let envelope =
            helix_core::dsse::sign(signer, key, helix_core::governance::RECEIPT_PAYLOAD_TYPE, payload.as_bytes())
                .await
                .unwrap();
        forged.push(serde_json::from_str::<Value>(&envelope).unwrap());
    }
    ledger["receipts"] = json!(forged);
    set_doc(entries, evidence_pack::LEDGER, &ledger);
    set_doc(entries, evidence_pack::EXPORT_RECEIPT, forged.last().unwrap());
    let keys = helix_core::keys::public_key_view(key).unwrap();
    set_doc(entries, evidence_pack::KEYS, &json!({"key_id": keys["key_id"], "pem": keys["pem"], "previous": []}));
}

pub async fn an_evidence_pack_verifies_offline_and_every_tampering_fails_with_its_reason(b: Backend) {
    let env = TestEnv::start(b).await;
    let ada = env.token_of("ada", Role::Publisher, "team-a").await;
    let grace = env.token_of("grace", Role::Approver, "team-a").await;
    // A small tree: nested folders, an empty file, one file above the inline limit.
    let src = env.dir.path().join("src");
    std::fs::create_dir_all(src.join("weights/shard")).unwrap();
    std::fs::write(src.join("README.md"), b"model card\n").unwrap();
    std::fs::write(src.join("empty"), b"").unwrap();
    std::fs::write(src.join("weights/shard/0.bin"), vec![7u8; 300_000]).unwrap();
    let registry = Registry::new(&env.url(""), Some(ada.clone())).unwrap();
    let (ws, name, version) =
        (WorkspaceId::parse("team-a").unwrap(), BundleName::parse("model").unwrap(), BundleName::parse("1").unwrap());
    let opts = helix_cli::transfer::Options { jobs: 2, quiet: true, inline_max: None };
    helix_cli::transfer::push(&registry, &src, &ws, &name, &version, opts).await.unwrap();
    let base = "/v1/workspaces/team-a/bundles/model/versions/1";
    assert_eq!(post_json(&env, &grace, &format!("{base}/approve"), json!({})).await.status(), 201);
    let receipt = env.dir.path().join("receipt.json");
    let Exported::Official { answer, .. } =
        helix_cli::export::export(&registry, "team-a/model@1", Some(receipt), None).await.unwrap()
    else {
        panic!("an official export")
    };
    let pack = env.dir.path().join("model-1.tar");
    let made = helix_cli::pack::make(&registry, "team-a/model@1", &answer, &pack).await.unwrap();
    assert_eq!((made.files, made.receipts, made.export_seq), (3, 2, 2));

    // A partner with the pack and the registry's key (a PEM, or its fingerprint): nothing else.
    let published: Value =
        env.http.get(env.url("/v1/governance/public-key")).send().await.unwrap().json().await.unwrap();
    let key = helix_core::keys::public_key_from_pem(published["pem"].as_str().unwrap()).unwrap();
    let pinned = Pins { keys: vec![key.clone()], fingerprints: Vec::new() };
    let summary = evidence_pack::verify(&pack, &pinned).unwrap();
    assert_eq!((summary.bundle.as_str(), summary.state.as_deref()), ("team-a/model@1", Some("exported")));
    assert_eq!((summary.files, summary.bytes, summary.key_ids.clone()), (3, 300_011, vec![key.key_id.clone()]));
    let by_fingerprint = Pins { keys: Vec::new(), fingerprints: vec![key.key_id.clone()] };
    assert!(evidence_pack::verify(&pack, &by_fingerprint).is_ok());
    let unpinned = evidence_pack::verify(&pack, &Pins::default()).unwrap_err();
    assert!(unpinned.contains("no pinned key"), "{unpinned}");

    // Never over an existing file: the second pack is refused, the first left as it was.
    let before = std::fs::read(&pack).unwrap();
    let again = helix_cli::pack::make(&registry, "team-a/model@1", &answer, &pack).await.unwrap_err();
    assert!(again.to_string().contains("never overwritten"), "{again}");
    assert_eq!(std::fs::read(&pack).unwrap(), before);
    assert!(helix_cli::pack::check_free(&pack).is_err());

    let original = entries(&pack);
    let tampered = |what: &str| env.dir.path().join(format!("{what}.tar"));
    let mut reasons = Vec::new();

    // A flipped byte in a file.
    let mut flipped = original.clone();
    let (_, bytes) = flipped.iter_mut().find(|(n, _)| n == "files/weights/shard/0.bin").unwrap();
    bytes[1234] ^= 1;
    repack(&flipped, &tampered("flipped"));
    reasons.push(("a flipped byte", evidence_pack::verify(&tampered("flipped"), &pinned), "files/weights/shard/0.bin"));

    // Two receipts swapped; the first one dropped.
    let ledger = doc(&original, evidence_pack::LEDGER);
    let receipts = ledger["receipts"].as_array().unwrap().clone();
    for (what, list, expect) in [
        ("reordered", json!([receipts[1], receipts[0]]), "out of order"),
        ("dropped", json!([receipts[1]]), "a receipt is missing"),
    ] {
        let mut changed = original.clone();
        let mut l = ledger.clone();
        l["receipts"] = list;
        set_doc(&mut changed, evidence_pack::LEDGER, &l);
        repack(&changed, &tampered(what));
        reasons.push((what, evidence_pack::verify(&tampered(what), &pinned), expect));
    }

    // Everything re-signed with another key, the pack's keys replaced by it: consistent in itself (it
    // verifies against the forger's key), refused against the pinned one.
    let forger =
        helix_core::adapters::local_key::LocalKeySigner::load_or_create(&env.dir.path().join("forger.key")).unwrap();
    let forger_key = forger.public_key().await.unwrap();
    let mut forged = original.clone();
    forge(&mut forged, &forger, &forger_key).await;
    repack(&forged, &tampered("forged"));
    let self_consistent = Pins { keys: vec![forger_key.clone()], fingerprints: Vec::new() };
    assert!(evidence_pack::verify(&tampered("forged"), &self_consistent).is_ok(), "the forgery is consistent");
    let by_pack_key = Pins { keys: Vec::new(), fingerprints: vec![key.key_id.clone()] };
    let fingerprint_refusal = evidence_pack::verify(&tampered("forged"), &by_pack_key).unwrap_err();
    assert!(fingerprint_refusal.contains(&key.key_id), "{fingerprint_refusal}");
    reasons.push(("a swapped key", evidence_pack::verify(&tampered("forged"), &pinned), "not a key you trust"));

    // Truncated: in the middle of a file, and exactly at the end of the last entry.
    for (what, keep) in [("cut-mid-file", before.len() / 2), ("cut-at-entry", before.len() - 1024)] {
        std::fs::write(tampered(what), &before[..keep]).unwrap();
        reasons.push((what, evidence_pack::verify(&tampered(what), &pinned), "truncated"));
    }

    let mut seen = std::collections::HashSet::new();
    for (what, verdict, expect) in reasons {
        let reason = verdict.expect_err(what);
        assert!(reason.contains(expect), "{what}: {reason}");
        assert_eq!(reason.lines().count(), 1, "{what}: one line: {reason}");
        if !what.starts_with("cut-") {
            assert!(seen.insert(reason.clone()), "{what}: a reason of its own: {reason}");
        }
    }
}

/// `helix pack`: the pack of an export a partner already received (the latest, or a given seq), made
/// later without exporting again; a seq that is not an export, or a version never exported, is a usage
/// error naming what there is.
pub async fn a_pack_of_an_earlier_export_covers_that_export_without_exporting_again(b: Backend) {
    let env = TestEnv::start(b).await;
    let ada = env.token_of("ada", Role::Publisher, "team-a").await;
    let grace = env.token_of("grace", Role::Approver, "team-a").await;
    let src = env.dir.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("weights.bin"), vec![3u8; 5000]).unwrap();
    let registry = Registry::new(&env.url(""), Some(ada.clone())).unwrap();
    let opts = helix_cli::transfer::Options { jobs: 2, quiet: true, inline_max: None };
    for version in ["1", "2"] {
        let (ws, name, v) = (
            WorkspaceId::parse("team-a").unwrap(),
            BundleName::parse("model").unwrap(),
            BundleName::parse(version).unwrap(),
        );
        helix_cli::transfer::push(&registry, &src, &ws, &name, &v, opts).await.unwrap();
    }
    let base = "/v1/workspaces/team-a/bundles/model/versions/1";
    assert_eq!(post_json(&env, &grace, &format!("{base}/approve"), json!({})).await.status(), 201);
    for _ in 0..2 {
        let out = helix_cli::export::export(&registry, "team-a/model@1", Some(env.dir.path().join("r.json")), None);
        assert!(matches!(out.await.unwrap(), Exported::Official { .. }));
    }
    let receipts = || async {
        let ledger: Value = get(&env, &ada, &format!("{base}/governance")).await.json().await.unwrap();
        ledger["receipts"].as_array().unwrap().len()
    };
    assert_eq!(receipts().await, 3, "submitted→approved, two exports (seq 2, 3)");

    let published: Value =
        env.http.get(env.url("/v1/governance/public-key")).send().await.unwrap().json().await.unwrap();
    let key = helix_core::keys::public_key_from_pem(published["pem"].as_str().unwrap()).unwrap();
    let pinned = Pins { keys: vec![key], fingerprints: Vec::new() };
    for (seq, want) in [(Some(2), 2), (None, 3)] {
        let export = helix_cli::pack::earlier_export(&registry, "team-a/model@1", seq).await.unwrap();
        assert_eq!(export["seq"], want);
        let pack = env.dir.path().join(format!("earlier-{want}.tar"));
        let made = helix_cli::pack::make(&registry, "team-a/model@1", &export, &pack).await.unwrap();
        let summary = evidence_pack::verify(&pack, &pinned).unwrap();
        assert_eq!((made.export_seq, summary.export_seq, summary.files, summary.receipts), (want, want, 1, 3));
        let receipt = doc(&entries(&pack), evidence_pack::EXPORT_RECEIPT);
        let statement: Value =
            serde_json::from_slice(&B64.decode(receipt["payload"].as_str().unwrap()).unwrap()).unwrap();
        assert_eq!((statement["kind"].as_str(), statement["seq"].as_u64()), (Some("export"), Some(want)));
    }
    assert_eq!(receipts().await, 3, "packing exported nothing");

    let not_export = helix_cli::pack::earlier_export(&registry, "team-a/model@1", Some(1)).await.unwrap_err();
    assert_eq!(not_export.exit_code(), 2, "{not_export}");
    assert!(not_export.to_string().contains("its exports: 2, 3"), "{not_export}");
    let never = helix_cli::pack::earlier_export(&registry, "team-a/model@2", None).await.unwrap_err();
    assert_eq!(never.exit_code(), 2, "{never}");
    assert!(never.to_string().contains("never exported"), "{never}");
}
