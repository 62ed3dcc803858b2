//! The daily audit export (helix_core::audit_export) on each backend: files, determinism, the chain
//! across days, signatures, and loud failure when a stored file was changed.

use base64::Engine;
use helix_core::Error;
use helix_core::audit_export::{self, FILES, export_day};
use helix_core::domain::{Digest, Role};
use serde_json::Value;
use time::{Date, OffsetDateTime};

use crate::{Backend, TestEnv};

async fn stored(env: &TestEnv, day: Date) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for f in FILES {
        let doc = env.app.blobs.get_document(&audit_export::key(day, f)).await.unwrap();
        out.push(doc.unwrap_or_else(|| panic!("{f} of {day} not stored")).to_vec());
    }
    out
}

fn sha(bytes: &[u8]) -> String {
    Digest::of(bytes).to_string()
}

pub async fn audit_export_writes_a_day_once_chains_days_and_detects_tampering(b: Backend) {
    let env = TestEnv::start(b).await;
    // Events today in three streams (token issues land in their workspace's stream).
    env.token(Role::Viewer, "team-a").await;
    env.token(Role::Publisher, "team-b").await;
    env.token(Role::Admin, "*").await;
    env.token(Role::Viewer, "team-a").await;
    let today_s = env.audit("team-a").await[0].ts[..10].to_owned();
    let today = audit_export::parse_day(&today_s).unwrap();
    let yesterday = today.previous_day().unwrap();
    // The export only takes days that are over: pretend it is tomorrow, 00:15 UTC.
    let tomorrow = OffsetDateTime::new_utc(today.next_day().unwrap(), time::Time::from_hms(0, 15, 0).unwrap());

    let refused = export_day(&env.app, today, OffsetDateTime::now_utc(), "t").await;
    assert!(matches!(refused, Err(Error::BadRequest(_))), "today is not settled: {refused:?}");

    // Yesterday first (no events), then today: today's manifest and checkpoint name yesterday's.
    let y = export_day(&env.app, yesterday, tomorrow, "t").await.unwrap();
    assert_eq!((y.event_count, y.written.len()), (0, 3));
    let report = export_day(&env.app, today, tomorrow, "t").await.unwrap();
    assert_eq!(report.written, FILES);
    // Four token issues, and the signing key's record in the key history (made by the first export).
    assert_eq!(report.event_count, 5);
    let [events, manifest, checkpoint] = <[Vec<u8>; 3]>::try_from(stored(&env, today).await).unwrap();
    let [_, y_manifest, y_checkpoint] = <[Vec<u8>; 3]>::try_from(stored(&env, yesterday).await).unwrap();

    // events.jsonl: the day's canonical events, ordered by stream then seq.
    let expected: String = audit_export::read_day(&env.app, &today_s)
        .await
        .unwrap()
        .iter()
        .map(|e| e.canonical().unwrap() + "\n")
        .collect();
    assert_eq!(String::from_utf8(events.clone()).unwrap(), expected);
    let streams: Vec<String> =
        expected.lines().map(|l| serde_json::from_str::<Value>(l).unwrap()["stream"].to_string()).collect();
    assert_eq!(streams, ["\"*\"", "\"*\"", "\"team-a\"", "\"team-a\"", "\"team-b\""]);

    let m: Value = serde_json::from_slice(&manifest).unwrap();
    assert_eq!(m["day"], today_s);
    assert_eq!(m["event_count"], 5);
    assert_eq!(m["events_sha256"], sha(&events));
    assert_eq!(m["previous_manifest_sha256"], sha(&y_manifest));
    let team_a = m["streams"].as_array().unwrap().iter().find(|s| s["stream"] == "team-a").unwrap().clone();
    assert_eq!(
        (team_a["count"].as_u64(), team_a["first_seq"].as_u64(), team_a["last_seq"].as_u64()),
        (Some(2), Some(1), Some(2))
    );
    assert_eq!(report.manifest_sha256, sha(&manifest));

    // checkpoint.json: DSSE over the statement, signed by the registry key (checked independently here).
    let env_json: Value = serde_json::from_slice(&checkpoint).unwrap();
    assert_eq!(env_json["payloadType"], audit_export::PAYLOAD_TYPE);
    let b64 = base64::engine::general_purpose::STANDARD;
    let payload = b64.decode(env_json["payload"].as_str().unwrap()).unwrap();
    let statement: Value = serde_json::from_slice(&payload).unwrap();
    assert_eq!(statement["day"], today_s);
    assert_eq!(statement["manifest_sha256"], sha(&manifest));
    assert_eq!(statement["event_count"], 5);
    assert_eq!(statement["previous_checkpoint_sha256"], sha(&y_checkpoint));
    let key = env.app.signer.public_key().await.unwrap();
    let sig = b64.decode(env_json["signatures"][0]["sig"].as_str().unwrap()).unwrap();
    assert_eq!(env_json["signatures"][0]["keyid"], key.key_id.as_str());
    assert!(key.verify(&helix_core::dsse::pae(audit_export::PAYLOAD_TYPE, &payload), &sig));

    // Re-running the day rewrites nothing and leaves identical bytes.
    let again = export_day(&env.app, today, tomorrow, "t").await.unwrap();
    assert!(again.written.is_empty());
    assert_eq!(again.unchanged, FILES);
    assert_eq!(stored(&env, today).await, vec![events.clone(), manifest.clone(), checkpoint.clone()]);
    assert!(env.audit("*").await.iter().all(|e| e.action != "audit.export_mismatch"));

    // A stored manifest changed behind the registry's back: the re-run fails loudly and is audited.
    let manifest_key = audit_export::key(today, "manifest.json");
    env.plant_document(&manifest_key, b"{\"day\":\"forged\"}").await;
    let err = export_day(&env.app, today, tomorrow, "t2").await.unwrap_err();
    assert!(matches!(&err, Error::AuditExportMismatch(k) if *k == manifest_key), "{err:?}");
    let mismatch = env.audit("*").await.into_iter().find(|e| e.action == "audit.export_mismatch").expect("audited");
    assert_eq!(mismatch.entity_id, today_s);
    assert_eq!(mismatch.details["file"], manifest_key);
    assert_eq!(mismatch.details["stored_sha256"], sha(b"{\"day\":\"forged\"}"));

    // A checkpoint signed by someone else is no checkpoint of ours.
    let other = TestEnv::start(b).await;
    let forged = r#"{"payloadType":"application/vnd.helix.audit-checkpoint.v1+json","payload":"e30=","signatures":[]}"#;
    other.plant_document(&audit_export::key(yesterday, "checkpoint.json"), forged.as_bytes()).await;
    let err = export_day(&other.app, yesterday, tomorrow, "t3").await.unwrap_err();
    assert!(matches!(&err, Error::AuditExportMismatch(k) if k.ends_with("checkpoint.json")), "{err:?}");
}
