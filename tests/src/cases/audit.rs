//! GET /v1/audit over HTTP, the daily export's unbroken chain (genesis, backfill, key history), and
//! `helix audit verify` against every kind of tampering.

use std::path::{Path, PathBuf};

use helix_core::audit_export::{self, FILES, export_day};
use helix_core::audit_verify::{self, DirEvidence};
use helix_core::domain::{AuditDraft, Outcome, Role};
use serde_json::{Value, json};
use time::{Date, OffsetDateTime};

use super::api::{get, post_json};
use super::bundles::one_file_bundle;
use super::expect_problem;
use crate::{Backend, TestEnv};

async fn get_audit(env: &TestEnv, token: &str, query: &str) -> reqwest::Response {
    get(env, token, &format!("/v1/audit?{query}")).await
}

/// "Every export in the last 7 days across all workspaces" is one call; pages follow the cursor; an
/// approver sees only their workspace; bad input is a 400 that names it.
pub async fn audit_query_answers_across_workspaces_with_cursor_and_refuses_outside_the_grant(b: Backend) {
    let env = TestEnv::start(b).await;
    for ws in ["team-a", "team-b", "team-c"] {
        let ada = env.token_of(&format!("ada-{ws}"), Role::Publisher, ws).await;
        let grace = env.token_of(&format!("grace-{ws}"), Role::Approver, ws).await;
        one_file_bundle(&env, &ada, ws, "1").await;
        let base = format!("/v1/workspaces/{ws}/bundles/model/versions/1");
        assert_eq!(post_json(&env, &grace, &format!("{base}/approve"), json!({})).await.status(), 201);
        assert_eq!(post_json(&env, &ada, &format!("{base}/export"), json!({})).await.status(), 200);
    }
    let admin = env.token(Role::Admin, "*").await;
    let week_ago = helix_core::domain::time::rfc3339_ms(OffsetDateTime::now_utc() - time::Duration::days(7));
    let q = format!("action=bundle.export&since={week_ago}");
    let resp = get_audit(&env, &admin, &q).await;
    assert_eq!(resp.status(), 200);
    let page: Value = resp.json().await.unwrap();
    let events = page["events"].as_array().unwrap();
    let streams: Vec<&str> = events.iter().map(|e| e["stream"].as_str().unwrap()).collect();
    assert_eq!(streams.len(), 3, "{page}");
    for ws in ["team-a", "team-b", "team-c"] {
        assert!(streams.contains(&ws), "{ws} in {streams:?}");
    }
    assert!(events.iter().all(|e| e["action"] == "bundle.export" && e["actor"].as_str().unwrap().starts_with("ada-")));
    assert_eq!(page["next_cursor"], Value::Null);

    // One at a time, following the cursor: the same three, in the same order, then no cursor.
    let mut walked = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let c = cursor.as_ref().map(|c| format!("&cursor={c}")).unwrap_or_default();
        let page: Value = get_audit(&env, &admin, &format!("{q}&limit=1{c}")).await.json().await.unwrap();
        walked.extend(page["events"].as_array().unwrap().iter().cloned());
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
        assert!(walked.len() <= 3, "the cursor loops");
    }
    assert_eq!(&walked, events);

    // JSON Lines: one canonical event per line, the cursor in a header.
    let resp = env
        .http
        .get(env.url(&format!("/v1/audit?{q}&limit=2")))
        .bearer_auth(&admin)
        .header("accept", "application/x-ndjson")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["content-type"], "application/x-ndjson");
    assert!(resp.headers().contains_key("x-helix-next-cursor"));
    let text = resp.text().await.unwrap();
    let lines: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines, events[..2]);

    // An approver: their own workspace, nothing else.
    let grace = env.token_of("grace-audit", Role::Approver, "team-a").await;
    let own: Value = get_audit(&env, &grace, "workspace=team-a").await.json().await.unwrap();
    let own = own["events"].as_array().unwrap();
    assert!(own.iter().any(|e| e["action"] == "bundle.export"));
    assert!(own.iter().all(|e| e["stream"] == "team-a"));
    expect_problem(get_audit(&env, &grace, "workspace=team-b").await, 403, "forbidden_workspace").await;
    expect_problem(get_audit(&env, &grace, "action=bundle.export").await, 403, "insufficient_role").await;
    expect_problem(get_audit(&env, &grace, "workspace=*").await, 403, "insufficient_role").await;
    let publisher = env.token(Role::Publisher, "team-a").await;
    expect_problem(get_audit(&env, &publisher, "workspace=team-a").await, 403, "insufficient_role").await;
    let ws_admin = env.token(Role::Admin, "team-a").await;
    expect_problem(get_audit(&env, &ws_admin, "action=bundle.export").await, 403, "forbidden_workspace").await;
    // The global stream is an admin's: token issues of `*` tokens land there.
    let global: Value = get_audit(&env, &admin, "workspace=*").await.json().await.unwrap();
    let global = global["events"].as_array().unwrap();
    assert!(global.iter().any(|e| e["action"] == "token.issue"), "the admin's own issue is there: {global:?}");
    assert!(global.iter().all(|e| e["stream"] == "*"));

    let overflow = base64::Engine::encode(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD,
        format!("2026-11-23T10:00:00.000Z#team-a#{}", u64::MAX),
    );
    let overflow = format!("workspace=team-a&cursor={overflow}");
    for bad in [
        "",
        "action=bundle.export&since=yesterday",
        "action=x&since=9999-12-31T23:59:59-23:59",
        &overflow,
        "action=x&limit=0",
        "action=x&limit=1001",
        "action=x&cursor=nope",
        "workspace=Team",
    ] {
        let reason = if bad.contains("Team") { "invalid_workspace" } else { "invalid_request" };
        expect_problem(get_audit(&env, &admin, bad).await, 400, reason).await;
    }
    expect_problem(get_audit(&env, "hlx_nope", "action=x").await, 401, "token_invalid").await;
}

/// The export's files for `days`, plus genesis.json and every key of `app`'s key history, copied out
/// of the store into a fresh directory laid out as `audit/` is (what `aws s3 sync` of the prefix gives).
async fn evidence_dir(env: &TestEnv, days: &[Date]) -> PathBuf {
    evidence_dir_of(env, &env.app, days).await
}

async fn evidence_dir_of(env: &TestEnv, app: &helix_core::App, days: &[Date]) -> PathBuf {
    let dir = env.dir.path().join(format!("evidence-{}", helix_core::http::new_request_id()));
    let mut keys: Vec<String> = vec![audit_export::GENESIS_KEY.into()];
    for day in days {
        keys.extend(FILES.iter().map(|f| audit_export::key(*day, f)));
    }
    for k in helix_core::keys::verification_keys(app).await.unwrap() {
        keys.push(audit_export::key_file(&k.key_id));
        let retired = helix_core::keys::retired_file(&k.key_id);
        if app.blobs.get_document(&retired).await.unwrap().is_some() {
            keys.push(retired);
        }
    }
    for key in keys {
        let bytes = app.blobs.get_document(&key).await.unwrap().unwrap_or_else(|| panic!("{key} not stored"));
        let path = dir.join(&key);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, bytes).unwrap();
    }
    dir
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let target = to.join(e.file_name());
        if e.path().is_dir() {
            copy_dir(&e.path(), &target)
        } else {
            std::fs::copy(e.path(), target).map(|_| ()).unwrap()
        }
    }
}

async fn verify_dir(env: &TestEnv, dir: &Path) -> Result<audit_verify::Summary, String> {
    let key = env.app.signer.public_key().await.unwrap();
    audit_verify::verify(&DirEvidence::open(dir.to_owned()).unwrap(), &[key]).await
}

/// `helix audit verify ARGS`: (exit success, its one line of output).
async fn cli_audit(env: &TestEnv, args: &[&str], vars: &[(String, String)]) -> (bool, String) {
    let bins = tokio::task::spawn_blocking(|| crate::runtime_api::function_binaries().clone()).await.unwrap();
    let out = tokio::process::Command::new(bins.join("helix"))
        .arg("audit")
        .args(args)
        .env("HELIX_DATA_DIR", env.dir.path().join("cli-data"))
        .envs(vars.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .output()
        .await
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text.trim().to_owned())
}

/// `helix audit verify ARGS`: its exit code and output.
async fn cli_audit_code(env: &TestEnv, args: &[&str]) -> (Option<i32>, String) {
    let bins = tokio::task::spawn_blocking(|| crate::runtime_api::function_binaries().clone()).await.unwrap();
    let out = tokio::process::Command::new(bins.join("helix"))
        .arg("audit")
        .args(args)
        .env("HELIX_DATA_DIR", env.dir.path().join("cli-data"))
        .output()
        .await
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.code(), text.trim().to_owned())
}

/// Rewrite the genesis day `day` of the export in `root` as a forger would: one event's actor
/// changed, its stream re-chained, the manifest and checkpoint rebuilt and signed with a fresh key,
/// `keys/` holding only that key. Returns the forger's key id.
async fn forge_genesis_day(env: &TestEnv, root: &Path, day: Date) -> String {
    let audit = root.join("audit");
    let day_dir = audit.join(audit_export::key(day, "x").trim_start_matches("audit/").trim_end_matches("/x"));
    let text = std::fs::read_to_string(day_dir.join("events.jsonl")).unwrap();
    let mut events: Vec<helix_core::domain::AuditEvent> =
        text.lines().map(|l| helix_core::domain::AuditEvent::from_canonical(l).unwrap()).collect();
    events[0].actor = "mallory@tok_forged".into();
    let mut tips: std::collections::HashMap<String, String> = Default::default();
    for e in &mut events {
        e.prev = tips.get(&e.stream).cloned();
        e.hash = e.compute_hash().unwrap();
        tips.insert(e.stream.clone(), e.hash.clone());
    }
    let jsonl: String = events.iter().map(|e| format!("{}\n", e.canonical().unwrap())).collect();
    let mut runs: Vec<Value> = Vec::new();
    let mut run: Option<audit_export::StreamRun> = None;
    for e in &events {
        match run.as_mut() {
            Some(r) if r.stream == e.stream => r.push(e),
            _ => runs.extend(run.replace(audit_export::StreamRun::start(e)).map(|r| r.entry())),
        }
    }
    runs.extend(run.map(|r| r.entry()));
    let day_s = audit_export::day_string(day);
    let count = events.len() as u64;
    let manifest =
        audit_export::manifest_doc(&day_s, count, &audit_export::sha256(jsonl.as_bytes()), runs, None).unwrap();
    let statement =
        audit_export::statement_doc(&day_s, true, &audit_export::sha256(manifest.as_bytes()), count, None).unwrap();
    let forger =
        helix_core::adapters::local_key::LocalKeySigner::load_or_create(&env.dir.path().join("forger.pem")).unwrap();
    use helix_core::ports::Signer;
    let key = forger.public_key().await.unwrap();
    let checkpoint =
        helix_core::dsse::sign(&forger, &key, audit_export::PAYLOAD_TYPE, statement.as_bytes()).await.unwrap();
    std::fs::write(day_dir.join("events.jsonl"), jsonl).unwrap();
    std::fs::write(day_dir.join("manifest.json"), manifest).unwrap();
    std::fs::write(day_dir.join("checkpoint.json"), checkpoint).unwrap();
    std::fs::remove_dir_all(audit.join("keys")).unwrap();
    let file = root.join(audit_export::key_file(&key.key_id));
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    std::fs::write(file, &key.pem).unwrap();
    key.key_id
}

/// A day rewritten (who did what), re-chained and re-signed with a fresh key whose PEM replaces the
/// export's `keys/`: `helix audit verify` without a pinned key refuses to judge (exit 2, saying how to
/// pin) instead of answering ok; pinned by PEM or by fingerprint, the forgery fails and the true
/// export verifies.
pub async fn audit_verify_needs_a_pinned_key_and_a_forged_day_fails_it(b: Backend) {
    let env = TestEnv::start(b).await;
    env.token(Role::Viewer, "team-a").await;
    env.token(Role::Publisher, "team-b").await;
    let today = audit_export::parse_day(env.audit("team-a").await[0].day()).unwrap();
    export_day(&env.app, today, run_time(today), "t").await.unwrap();
    let clean = evidence_dir(&env, &[today]).await;
    let forged = env.dir.path().join("forged");
    copy_dir(&clean, &forged);
    let forger = forge_genesis_day(&env, &forged, today).await;
    let key = env.app.signer.public_key().await.unwrap();
    assert_ne!(forger, key.key_id);
    // The forgery is internally consistent: its own key verifies it.
    let own = helix_core::keys::public_key_from_pem(
        &std::fs::read_to_string(forged.join(audit_export::key_file(&forger))).unwrap(),
    )
    .unwrap();
    audit_verify::verify(&DirEvidence::open(forged.clone()).unwrap(), &[own]).await.expect("self-consistent");

    let (code, line) = cli_audit_code(&env, &["verify", "--dir", forged.to_str().unwrap()]).await;
    assert_eq!(code, Some(2), "an unpinned verification is a usage error, never ok: {line}");
    assert!(
        line.contains("--public-key") && line.contains("--key-fingerprint") && line.contains("--registry"),
        "{line}"
    );
    let (code, _) = cli_audit_code(&env, &["verify", "--dir", clean.to_str().unwrap(), "--json"]).await;
    assert_eq!(code, Some(2), "the true export unpinned is refused too");

    let pem = env.dir.path().join("registry.pem");
    std::fs::write(&pem, &key.pem).unwrap();
    let by_pem = ["--public-key", pem.to_str().unwrap()];
    let by_fingerprint = ["--key-fingerprint", key.key_id.as_str()];
    for pin in [&by_pem, &by_fingerprint] {
        let (code, line) =
            cli_audit_code(&env, &[&["verify", "--dir", forged.to_str().unwrap()][..], pin].concat()).await;
        assert_eq!(code, Some(1), "{pin:?}: {line}");
        assert!(line.starts_with("helix: invalid:"), "{pin:?}: {line}");
        let (code, line) =
            cli_audit_code(&env, &[&["verify", "--dir", clean.to_str().unwrap()][..], pin].concat()).await;
        assert_eq!(code, Some(0), "{pin:?}: {line}");
        assert!(line.starts_with("ok: 1 day(s)") && line.contains(&key.key_id), "{pin:?}: {line}");
    }
    // A fingerprint is a key id; anything else is a usage error.
    let (code, line) =
        cli_audit_code(&env, &["verify", "--dir", clean.to_str().unwrap(), "--key-fingerprint", "sha256:../../x"])
            .await;
    assert_eq!(code, Some(2), "{line}");
}

fn days_back(today: Date, n: u16) -> Date {
    (0..n).fold(today, |d, _| d.previous_day().unwrap())
}

/// Day-boundary time: `day` plus one day, 00:15 UTC (when the schedule exports `day`).
fn run_time(day: Date) -> OffsetDateTime {
    OffsetDateTime::new_utc(day.next_day().unwrap(), time::Time::from_hms(0, 15, 0).unwrap())
}

/// The genesis is recorded once; a run exports the missing days before the one asked for, oldest
/// first; the whole chain verifies offline, with the CLI too; nothing is exported before the genesis
/// or before a day is settled.
pub async fn audit_export_backfills_missing_days_and_the_chain_verifies_offline(b: Backend) {
    let env = TestEnv::start(b).await;
    env.token(Role::Viewer, "team-a").await;
    env.token(Role::Publisher, "team-b").await;
    let today = audit_export::parse_day(env.audit("team-a").await[0].day()).unwrap();
    let genesis_day = days_back(today, 3);

    let first = export_day(&env.app, genesis_day, run_time(today), "t").await.unwrap();
    assert!(first.genesis && first.backfilled.is_empty(), "{first:?}");
    assert_eq!(audit_export::genesis(&env.app).await.unwrap(), Some(genesis_day));
    // Two days were never exported: asking for today exports them first.
    let report = export_day(&env.app, today, run_time(today), "t").await.unwrap();
    let expect: Vec<String> = [2, 1].iter().map(|n| audit_export::day_string(days_back(today, *n))).collect();
    assert_eq!(report.backfilled, expect);
    assert!(!report.genesis);
    let today_s = audit_export::day_string(today);
    assert_eq!(report.event_count as usize, audit_export::read_day(&env.app, &today_s).await.unwrap().len());
    assert!(report.event_count >= 2);
    let before = export_day(&env.app, days_back(today, 4), run_time(today), "t").await;
    assert!(matches!(before, Err(helix_core::Error::BadRequest(_))), "before the genesis: {before:?}");
    let unsettled = export_day(&env.app, today, run_time(today) - time::Duration::minutes(12), "t").await;
    assert!(matches!(unsettled, Err(helix_core::Error::BadRequest(_))), "00:03 is not settled: {unsettled:?}");
    // The key that signed is in the export and in the registry's key history.
    let key = env.app.signer.public_key().await.unwrap();
    assert!(env.app.meta.signing_keys().await.unwrap().iter().any(|r| r.pem.trim() == key.pem.trim()));

    let days: Vec<Date> = (0..4).rev().map(|n| days_back(today, n)).collect();
    let dir = evidence_dir(&env, &days).await;
    let summary = verify_dir(&env, &dir).await.unwrap();
    assert_eq!((summary.days, summary.first_day.clone()), (4, audit_export::day_string(genesis_day)));
    assert_eq!(summary.events, report.event_count);

    let pem = env.dir.path().join("registry.pem");
    std::fs::write(&pem, &key.pem).unwrap();
    let (ok, line) =
        cli_audit(&env, &["verify", "--dir", dir.to_str().unwrap(), "--public-key", pem.to_str().unwrap()], &[]).await;
    assert!(ok && line.starts_with("ok: 4 day(s)"), "{line}");
    assert_eq!(line.lines().count(), 1, "{line}");
    if let Some(f) = &env.aws {
        // Straight from the bucket, with the registry's own AWS environment, the key pinned by its id.
        let args = ["verify", "--bucket", &f.bucket, "--key-fingerprint", &key.key_id];
        let (ok, line) = cli_audit(&env, &args, &env.lambda_env()).await;
        assert!(ok && line.starts_with("ok: 4 day(s)"), "{line}");
    }
}

/// Every kind of tampering with exported evidence is caught by `helix audit verify`, with a
/// one-line reason and a failing exit.
pub async fn audit_verify_catches_every_kind_of_tampering(b: Backend) {
    let env = TestEnv::start(b).await;
    for n in 0..3 {
        env.token(Role::Viewer, "team-a").await;
        env.token(Role::Viewer, if n == 0 { "team-b" } else { "*" }).await;
    }
    let today = audit_export::parse_day(env.audit("team-a").await[0].day()).unwrap();
    let days: Vec<Date> = (0..3).rev().map(|n| days_back(today, n)).collect();
    export_day(&env.app, days[0], run_time(today), "t").await.unwrap();
    export_day(&env.app, today, run_time(today), "t").await.unwrap();
    let clean = evidence_dir(&env, &days).await;
    verify_dir(&env, &clean).await.expect("the untouched export verifies");

    let day_dir = |root: &Path, d: Date| {
        root.join("audit").join(audit_export::key(d, "x").trim_start_matches("audit/").trim_end_matches("/x"))
    };
    let events_of = |root: &Path| day_dir(root, today).join("events.jsonl");
    let lines = |root: &Path| -> Vec<String> {
        std::fs::read_to_string(events_of(root)).unwrap().lines().map(str::to_owned).collect()
    };
    let write_lines = |root: &Path, l: &[String]| {
        std::fs::write(events_of(root), l.iter().map(|x| format!("{x}\n")).collect::<String>()).unwrap()
    };
    // A checkpoint that still verifies but is not the one the next day links: the same envelope,
    // re-serialised (a KMS signer could also sign the statement anew: ECDSA signatures are randomised).
    let yesterday_checkpoint = std::fs::read(day_dir(&clean, days[1]).join("checkpoint.json")).unwrap();
    let v: Value = serde_json::from_slice(&yesterday_checkpoint).unwrap();
    let resigned = serde_json::to_vec_pretty(&v).unwrap();
    assert_ne!(resigned, yesterday_checkpoint);
    let key = env.app.signer.public_key().await.unwrap();
    audit_export::verify_checkpoint(&resigned, &key).expect("still a valid checkpoint");

    type Tamper<'a> = Box<dyn Fn(&Path) + 'a>;
    let cases: Vec<(&str, Tamper, &str)> = vec![
        (
            "changed event",
            Box::new(|r| {
                let mut l = lines(r);
                let mut e = helix_core::domain::AuditEvent::from_canonical(&l[1]).unwrap();
                e.actor = "mallory".into();
                l[1] = e.canonical().unwrap();
                write_lines(r, &l);
            }),
            "does not hash",
        ),
        (
            "changed event, hash recomputed",
            Box::new(|r| {
                let mut l = lines(r);
                let mut e = helix_core::domain::AuditEvent::from_canonical(&l[1]).unwrap();
                e.actor = "mallory".into();
                e.hash = e.compute_hash().unwrap();
                l[1] = e.canonical().unwrap();
                write_lines(r, &l);
            }),
            "does not link",
        ),
        (
            "inserted event",
            Box::new(|r| {
                let mut l = lines(r);
                let copy = l[1].clone();
                l.insert(2, copy);
                write_lines(r, &l);
            }),
            "out of (stream, seq) order",
        ),
        (
            "reordered events",
            Box::new(|r| {
                let mut l = lines(r);
                l.swap(1, 2);
                write_lines(r, &l);
            }),
            "seq 3 follows seq 1",
        ),
        (
            "deleted event",
            Box::new(|r| {
                let mut l = lines(r);
                l.remove(1);
                write_lines(r, &l);
            }),
            "missing or inserted",
        ),
        (
            "deleted last event",
            Box::new(|r| {
                let mut l = lines(r);
                l.pop();
                write_lines(r, &l);
            }),
            "manifest.json does not match",
        ),
        ("deleted day", Box::new(|r| std::fs::remove_dir_all(day_dir(r, days[1])).unwrap()), "is missing"),
        (
            "deleted genesis day",
            Box::new(|r| std::fs::remove_dir_all(day_dir(r, days[0])).unwrap()),
            "genesis.json names",
        ),
        (
            "deleted genesis day and record",
            Box::new(|r| {
                std::fs::remove_dir_all(day_dir(r, days[0])).unwrap();
                std::fs::remove_file(r.join(audit_export::GENESIS_KEY)).unwrap();
            }),
            "not the genesis",
        ),
        (
            "replaced day",
            Box::new(|r| {
                // Yesterday's files swapped for the genesis day's (both empty days, genuinely signed).
                for f in FILES {
                    std::fs::copy(day_dir(r, days[0]).join(f), day_dir(r, days[1]).join(f)).unwrap();
                }
            }),
            "manifest.json does not match",
        ),
        (
            "replaced checkpoint",
            Box::new(|r| {
                std::fs::write(day_dir(r, days[1]).join("checkpoint.json"), &resigned).unwrap();
            }),
            "signed statement does not match",
        ),
        (
            "forged checkpoint",
            Box::new(|r| {
                let forged = r#"{"payloadType":"application/vnd.helix.audit-checkpoint.v1+json","payload":"e30=","signatures":[]}"#;
                std::fs::write(day_dir(r, today).join("checkpoint.json"), forged).unwrap();
            }),
            "checkpoint.json",
        ),
        (
            "an extra file",
            Box::new(|r| std::fs::write(day_dir(r, today).join("events.jsonl.orig"), b"{}").unwrap()),
            "unexpected file",
        ),
        (
            "a day spelled another way",
            Box::new(|r| {
                let d = r.join("audit").join("+2026").join("01").join("01");
                std::fs::create_dir_all(&d).unwrap();
                std::fs::write(d.join("events.jsonl"), b"junk").unwrap();
            }),
            "unexpected file",
        ),
        (
            "a symbolic link",
            Box::new(|r| std::os::unix::fs::symlink("..", day_dir(r, today).join("loop")).unwrap()),
            "symbolic link",
        ),
        (
            "truncated file",
            Box::new(|r| {
                let text = std::fs::read_to_string(events_of(r)).unwrap();
                std::fs::write(events_of(r), &text[..text.len() - 10]).unwrap();
            }),
            "newline",
        ),
    ];
    for (name, tamper, expect) in cases {
        let copy = env.dir.path().join(format!("tampered-{}", helix_core::http::new_request_id()));
        copy_dir(&clean, &copy);
        tamper(&copy);
        let err = verify_dir(&env, &copy).await.expect_err(name);
        assert!(err.contains(expect), "{name}: {err}");
        if name == "deleted event" {
            let args = ["verify", "--dir", copy.to_str().unwrap(), "--key-fingerprint", &key.key_id];
            let (ok, line) = cli_audit(&env, &args, &[]).await;
            assert!(!ok && line.starts_with("helix: invalid:") && line.lines().count() == 1, "{line}");
        }
    }
    // Which days the export holds is not the verifier's to guess: the last day deleted still verifies
    // as a shorter chain, and the summary says where it ends (docs/runbook.md: check the last day).
    let copy = env.dir.path().join("tampered-last-day");
    copy_dir(&clean, &copy);
    std::fs::remove_dir_all(day_dir(&copy, today)).unwrap();
    assert_eq!(verify_dir(&env, &copy).await.unwrap().last_day, audit_export::day_string(days[1]));
}

/// A registry with an event today, yesterday exported and signed with its first key, then an App of the
/// same stores with a new signing key: (env, today, yesterday, the old key, the rotated App).
async fn yesterday_exported_then_rotated(
    b: Backend,
) -> (TestEnv, Date, Date, helix_core::ports::PublicKeyInfo, helix_core::App) {
    let env = TestEnv::start(b).await;
    env.token(Role::Viewer, "team-a").await;
    let today = audit_export::parse_day(env.audit("team-a").await[0].day()).unwrap();
    let yesterday = days_back(today, 1);
    export_day(&env.app, yesterday, run_time(today), "t").await.unwrap();
    let old_key = env.app.signer.public_key().await.unwrap();
    let rotated = env.app_with_a_new_signing_key().await;
    (env, today, yesterday, old_key, rotated)
}

/// A day that ends after its signing key was retired does not verify offline, naming the key: with
/// the retirement the export records beside the key (`keys/<hex>.retired.json`), or, without that file,
/// with the registry's key history; a day that ended before the retirement still verifies.
pub async fn audit_days_signed_by_a_retired_key_after_its_retirement_do_not_verify(b: Backend) {
    let (env, today, yesterday, old_key, rotated) = yesterday_exported_then_rotated(b).await;
    helix_core::keys::retire_signing_key(&rotated, &old_key.key_id, "leaked", "cli:ops", "r").await.unwrap();
    // The new key is recorded (an event of today) before today is exported.
    let new_key = rotated.signer.public_key().await.unwrap();
    helix_core::keys::record_signing_key(&rotated, "t", "r", &new_key).await.unwrap();
    // An instance still holding the old key signs today (which ends after the retirement).
    export_day(&env.app, today, run_time(today), "t").await.unwrap();
    let again = export_day(&rotated, today, run_time(today), "t").await.unwrap();
    assert_eq!(again.unchanged, FILES, "{again:?}");
    let retired = rotated.blobs.get_document(&helix_core::keys::retired_file(&old_key.key_id)).await.unwrap();
    assert!(
        retired.is_some_and(|d| String::from_utf8_lossy(&d).contains("leaked")),
        "the export records the retirement"
    );

    let dir = evidence_dir_of(&env, &rotated, &[yesterday, today]).await;
    let pinned_pem = helix_core::keys::public_key_from_pem(&old_key.pem).unwrap();
    let err = audit_verify::verify(&DirEvidence::open(dir.clone()).unwrap(), std::slice::from_ref(&pinned_pem))
        .await
        .unwrap_err();
    let today_s = audit_export::day_string(today);
    assert!(err.contains(&today_s) && err.contains(&old_key.key_id) && err.contains("retired"), "{err}");
    // Without the file, the registry's key history still knows.
    std::fs::remove_file(dir.join(helix_core::keys::retired_file(&old_key.key_id))).unwrap();
    let history = helix_core::keys::verification_keys(&rotated).await.unwrap();
    let err = audit_verify::verify(&DirEvidence::open(dir.clone()).unwrap(), &history).await.unwrap_err();
    assert!(err.contains(&today_s) && err.contains(&old_key.key_id), "{err}");
    // The day that ended before the retirement verifies with the same keys.
    std::fs::remove_dir_all(
        dir.join("audit").join(audit_export::key(today, "x").trim_start_matches("audit/").trim_end_matches("/x")),
    )
    .unwrap();
    let summary = audit_verify::verify(&DirEvidence::open(dir).unwrap(), &history).await.unwrap();
    assert_eq!(summary.last_day, audit_export::day_string(yesterday));
}

/// 8 writers × 500 appends on one stream: 4000 events, seq 1..4000 without a gap, and the day
/// exports and verifies. On the emulator 8 × 50: moto answers a query by sorting the whole partition
/// and copies every table at each transaction, one DynamoDB request at a time (localstack/emulator.py),
/// so its cost grows with the stream; at 8 × 100 on a loaded machine (the fuzz suite beside it) a
/// transaction waited over the registry's 6 s attempt timeout and the append failed closed
/// (`outcome_unknown`), the registry's right answer to a store that slow. The contention is the same
/// at 8 × 50. HELIX_TEST_APPENDS overrides the count per writer.
pub async fn audit_concurrent_appends_on_one_stream_export_and_verify(b: Backend) {
    let (env, _moto) = TestEnv::start_private(b).await;
    let default = if b == Backend::Embedded { 500 } else { 50 };
    let per_writer: u64 = std::env::var("HELIX_TEST_APPENDS").ok().and_then(|v| v.parse().ok()).unwrap_or(default);
    let writers: Vec<_> = (0..8)
        .map(|w| {
            let audit = env.app.audit.clone();
            tokio::spawn(async move {
                for n in 0..per_writer {
                    let draft = AuditDraft {
                        stream: "hot".into(),
                        actor: format!("writer-{w}"),
                        action: "test.append".into(),
                        entity_type: "test".into(),
                        entity_id: format!("{w}-{n}"),
                        outcome: Outcome::Success,
                        request_id: format!("r-{w}-{n}"),
                        details: json!({}),
                    };
                    audit.append(draft).await.unwrap();
                }
            })
        })
        .collect();
    for w in writers {
        w.await.unwrap();
    }
    let events = env.audit("hot").await;
    assert_eq!(events.iter().map(|e| e.seq).collect::<Vec<_>>(), (1..=8 * per_writer).collect::<Vec<_>>());
    helix_core::domain::audit::verify_chain(&events).unwrap();
    let days: Vec<Date> = {
        let mut d: Vec<Date> = events.iter().map(|e| audit_export::parse_day(e.day()).unwrap()).collect();
        d.dedup();
        d
    };
    // (A run across midnight spreads the events over two days; each is exported and the chain holds.)
    let last = *days.last().unwrap();
    export_day(&env.app, days[0], run_time(last), "t").await.unwrap();
    let report = export_day(&env.app, last, run_time(last), "t").await.unwrap();
    assert_eq!(report.backfilled.len(), days.len() - 1);
    let dir = evidence_dir(&env, &days).await;
    let summary = verify_dir(&env, &dir).await.unwrap();
    assert_eq!(
        summary.events,
        8 * per_writer
            + env
                .audit("*")
                .await
                .iter()
                .filter(|e| days.iter().any(|d| audit_export::day_string(*d) == e.day()))
                .count() as u64
    );
}

/// After a signing-key rotation, re-running a day signed with the old key is no mismatch (the old key
/// is in the registry's key history, recorded by the export itself), new days are signed with the new
/// key, and the chain verifies with both keys, not with the new one alone.
pub async fn audit_export_days_signed_before_a_key_rotation_still_verify(b: Backend) {
    let (env, today, yesterday, old_key, rotated) = yesterday_exported_then_rotated(b).await;
    let new_key = rotated.signer.public_key().await.unwrap();
    assert_ne!(old_key.key_id, new_key.key_id);
    let again = export_day(&rotated, yesterday, run_time(today), "t").await.unwrap();
    assert_eq!(again.unchanged, FILES, "the old key's checkpoint is still ours: {again:?}");
    export_day(&rotated, today, run_time(today), "t").await.unwrap();
    assert!(env.audit("*").await.iter().all(|e| e.action != "audit.export_mismatch"));

    let dir = evidence_dir_of(&env, &rotated, &[yesterday, today]).await;
    let evidence = DirEvidence::open(dir.clone()).unwrap();
    let both = audit_verify::verify(&evidence, &[new_key.clone(), old_key.clone()]).await.unwrap();
    assert_eq!(both.key_ids, [old_key.key_id.clone(), new_key.key_id.clone()]);
    let err = audit_verify::verify(&evidence, std::slice::from_ref(&new_key)).await.unwrap_err();
    assert!(err.contains(&audit_export::day_string(yesterday)) && err.contains("checkpoint.json"), "{err}");
    // The keys the export carries are both, each under its own id, each pinned by it.
    let args = ["verify", "--dir", dir.to_str().unwrap(), "--key-fingerprint", &old_key.key_id];
    let (ok, line) = cli_audit(&env, &[&args[..], &["--key-fingerprint", &new_key.key_id]].concat(), &[]).await;
    assert!(ok && line.contains(&old_key.key_id) && line.contains(&new_key.key_id), "{line}");
}

/// The first export starts at the trail's earliest event however long ago it was: read in one request
/// (the streams' births on DynamoDB, the day index's lowest key on SQLite), where the export once
/// probed the 400 days before the asked one (6,400 index queries on DynamoDB) and left out any
/// event older than that.
pub async fn the_first_export_starts_at_the_trails_first_event_however_old(b: Backend) {
    let env = TestEnv::start(b).await;
    env.token(Role::Viewer, "team-a").await;
    env.token(Role::Publisher, "team-b").await;
    let mut days = Vec::new();
    for stream in ["team-a", "team-b", "*"] {
        days.extend(env.audit(stream).await.first().map(|e| e.day().to_owned()));
    }
    let first = days.into_iter().min().expect("events");
    assert_eq!(env.app.audit.first_event_day().await.unwrap(), Some(first.clone()));
    let today = audit_export::parse_day(&first).unwrap();
    // Asked for a day 500 days on, the first run starts at the first event's day (and, bounded to two
    // days per run here, stops after it): that day is the genesis.
    let later = (0..500).fold(today, |d, _| d.next_day().unwrap());
    let _progress = audit_export::export_through(&env.app, later, run_time(later), "t", 2).await;
    assert_eq!(audit_export::genesis(&env.app).await.unwrap(), Some(today), "the genesis is the first event's day");
}
