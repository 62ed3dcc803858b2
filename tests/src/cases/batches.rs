//! Batches (issue 19, helix_core::batch): which of many digests a workspace lacks, in one request and
//! only from its own links; many small blobs published in one request with a result per blob, each
//! under the rules of a single PUT and audited per link; limits, the freeze and the suspension refuse
//! a batch whole; a retried batch is idempotent; `helix push` and `helix pull` use batches.

use helix_core::batch::{MAX_BATCH_BLOBS, MAX_BATCH_BYTES, MAX_QUERY_DIGESTS, frame};
use helix_core::domain::{BundleName, Digest, Role, WorkspaceId};
use serde_json::{Value, json};

use super::api::{post_json, put_blob};
use super::{expect_problem, unique_blob};
use crate::fault_proxy::FaultProxy;
use crate::{Backend, TestEnv};

pub(super) async fn publish_batch(env: &TestEnv, token: &str, ws: &str, body: Vec<u8>) -> reqwest::Response {
    env.http
        .post(env.url(&format!("/v1/workspaces/{ws}/blob-batches")))
        .bearer_auth(token)
        .header("content-type", frame::CONTENT_TYPE)
        .body(body)
        .send()
        .await
        .unwrap()
}

async fn missing(env: &TestEnv, token: &str, ws: &str, digests: &[&Digest]) -> reqwest::Response {
    let body = json!({"digests": digests.iter().map(ToString::to_string).collect::<Vec<_>>()});
    post_json(env, token, &format!("/v1/workspaces/{ws}/missing-blobs"), body).await
}

fn statuses(answer: &Value) -> Vec<(String, String)> {
    answer["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["status"].as_str().unwrap().to_owned(), r["reason"].as_str().unwrap_or("").to_owned()))
        .collect()
}

fn links_of(events: &[helix_core::domain::AuditEvent]) -> usize {
    events.iter().filter(|e| e.action == "blob.link").count()
}

pub async fn the_missing_query_answers_only_from_this_workspaces_links(b: Backend) {
    let env = TestEnv::start(b).await;
    let a = env.token(Role::Viewer, "team-a").await;
    let pub_a = env.token(Role::Publisher, "team-a").await;
    let pub_b = env.token(Role::Publisher, "team-b").await;
    let (mine, mine_d) = unique_blob(100);
    let (theirs, theirs_d) = unique_blob(100);
    let (_, nobodys_d) = unique_blob(100);
    assert_eq!(put_blob(&env, &pub_a, "team-a", &mine_d.to_string(), mine).await.status(), 201);
    // Stored globally for team-b: still missing in team-a (its bytes must be sent there).
    assert_eq!(put_blob(&env, &pub_b, "team-b", &theirs_d.to_string(), theirs).await.status(), 201);
    let resp = missing(&env, &a, "team-a", &[&theirs_d, &mine_d, &nobodys_d, &theirs_d]).await;
    assert_eq!(resp.status(), 200);
    let answer: Value = resp.json().await.unwrap();
    assert_eq!(answer["missing"], json!([theirs_d.to_string(), nobodys_d.to_string()]), "{answer}");
    assert_eq!(answer["asked"], 3);

    // Bounded, and malformed digests are refused with their reason.
    let many: Vec<String> = (0..=MAX_QUERY_DIGESTS).map(|i| Digest::of(&i.to_be_bytes()).to_string()).collect();
    let path = "/v1/workspaces/team-a/missing-blobs";
    expect_problem(post_json(&env, &a, path, json!({"digests": many})).await, 413, "batch_too_large").await;
    expect_problem(post_json(&env, &a, path, json!({"digests": ["sha256:nope"]})).await, 400, "invalid_digest").await;
    expect_problem(post_json(&env, &a, path, json!({"digest": []})).await, 400, "invalid_request").await;
    // Another workspace's credential learns nothing of team-a.
    let b_viewer = env.token(Role::Viewer, "team-b").await;
    expect_problem(missing(&env, &b_viewer, "team-a", &[&mine_d]).await, 403, "forbidden_workspace").await;
}

pub async fn a_batch_links_each_blob_with_its_event_refuses_a_bad_one_alone_and_repeats_idempotently(b: Backend) {
    let env = TestEnv::start(b).await;
    let publisher = env.token(Role::Publisher, "team-a").await;
    let other = env.token(Role::Publisher, "team-b").await;
    let blobs: Vec<(Vec<u8>, Digest)> = (0..60).map(|i| unique_blob(512 + i * 37)).collect();
    // One already linked here, one stored for team-b only (sent again: linked here as new).
    assert_eq!(put_blob(&env, &publisher, "team-a", &blobs[0].1.to_string(), blobs[0].0.clone()).await.status(), 201);
    assert_eq!(put_blob(&env, &other, "team-b", &blobs[1].1.to_string(), blobs[1].0.clone()).await.status(), 201);
    let before_events = links_of(&env.blob_events("team-a").await);
    let (_, wrong) = unique_blob(700);
    let mut items: Vec<(Digest, &[u8])> = blobs.iter().map(|(bytes, d)| (d.clone(), bytes.as_slice())).collect();
    // Bytes that are not their digest's: refused alone.
    items.insert(5, (wrong.clone(), blobs[2].0.as_slice()));
    let body = frame::encode_publish(&items);
    let resp = publish_batch(&env, &publisher, "team-a", body.clone()).await;
    assert_eq!(resp.status(), 200);
    let answer: Value = resp.json().await.unwrap();
    let got = statuses(&answer);
    assert_eq!(got.len(), 61);
    assert_eq!(got[0], ("exists".into(), "".into()), "{answer}");
    assert_eq!(got[5], ("refused".into(), "digest_mismatch".into()), "{answer}");
    assert_eq!(
        (answer["created"].as_u64(), answer["exists"].as_u64(), answer["refused"].as_u64()),
        (Some(59), Some(1), Some(1))
    );
    assert_eq!(answer["results"][1]["digest"], blobs[1].1.to_string());
    assert_eq!(
        answer["results"][1]["status"], "created",
        "a blob stored for another workspace is linked from the bytes sent"
    );

    // One `blob.link` event per link, in the workspace's stream, and the exact link counter.
    let events = env.blob_events("team-a").await;
    assert_eq!(links_of(&events) - before_events, 59);
    let batch_events: Vec<_> = events.iter().filter(|e| e.details["via"] == "batch").collect();
    assert_eq!(batch_events.len(), 59);
    assert!(batch_events.iter().all(|e| e.stream == "team-a" && e.actor.contains('@')));
    helix_core::domain::audit::verify_chain(&env.audit("team-a").await).unwrap();
    for (bytes, d) in &blobs {
        let got = super::api::get_blob(&env, &publisher, "team-a", &d.to_string(), "").await;
        assert_eq!(got.bytes().await.unwrap().to_vec(), *bytes);
    }
    let wrong_there = super::api::get_blob(&env, &publisher, "team-a", &wrong.to_string(), "").await;
    assert_eq!(wrong_there.status(), 404, "the refused blob is not linked");

    // The same batch again: nothing new, no event, the same refusal.
    let stored = env.stored_objects().await;
    let again: Value = publish_batch(&env, &publisher, "team-a", body).await.json().await.unwrap();
    assert_eq!(
        (again["created"].as_u64(), again["exists"].as_u64(), again["refused"].as_u64()),
        (Some(0), Some(60), Some(1))
    );
    assert_eq!(links_of(&env.blob_events("team-a").await) - before_events, 59);
    assert_eq!(env.stored_objects().await, stored);
    let counts: Value =
        env.http.get(env.url("/v1/workspaces")).bearer_auth(&publisher).send().await.unwrap().json().await.unwrap();
    assert_eq!(counts["workspaces"][0]["blob_links"], 60, "the exact link counter: {counts}");

    // Wrong bytes under a digest team-a links already, or one only team-b's blob holds (where the
    // filesystem store hashes the bytes it is given, not the batch route): refused, nothing linked.
    let (b_only, b_only_d) = unique_blob(900);
    assert_eq!(put_blob(&env, &other, "team-b", &b_only_d.to_string(), b_only.clone()).await.status(), 201);
    let junk = vec![7u8; 900];
    let body = frame::encode_publish(&[(blobs[0].1.clone(), junk.as_slice()), (b_only_d.clone(), junk.as_slice())]);
    let wrong: Value = publish_batch(&env, &publisher, "team-a", body).await.json().await.unwrap();
    assert_eq!(
        statuses(&wrong),
        [("refused".into(), "digest_mismatch".into()), ("refused".into(), "digest_mismatch".into())]
    );
    let b_only_there = super::api::get_blob(&env, &publisher, "team-a", &b_only_d.to_string(), "").await;
    assert_eq!(b_only_there.status(), 404, "bytes that are not the digest's link nothing");
    assert_eq!(links_of(&env.blob_events("team-a").await) - before_events, 59);
}

pub async fn a_batch_over_its_limits_or_malformed_is_refused_whole_and_changes_nothing(b: Backend) {
    let env = TestEnv::start(b).await;
    let publisher = env.token(Role::Publisher, "team-a").await;
    let (ok, ok_d) = unique_blob(100);
    let stored = env.stored_objects().await;
    let events = env.audit("team-a").await.len();
    let header = |entries: Vec<Value>| format!("{}\n", json!({"blobs": entries})).into_bytes();
    // Too many blobs, too many bytes (as declared, and as sent), a header without its newline.
    let entry = json!({"digest": ok_d.to_string(), "size": 0});
    let too_many = header(vec![entry; MAX_BATCH_BLOBS + 1]);
    let too_big = header(vec![json!({"digest": ok_d.to_string(), "size": MAX_BATCH_BYTES + 1})]);
    let (big, big_d) = unique_blob(MAX_BATCH_BYTES as usize / 2 + 1);
    let (big2, big2_d) = unique_blob(MAX_BATCH_BYTES as usize / 2 + 1);
    let sent_big = frame::encode_publish(&[(big_d, big.as_slice()), (big2_d, big2.as_slice()), (ok_d.clone(), &ok)]);
    for body in [too_many, too_big, sent_big, vec![b'{'; 200 * 1024]] {
        expect_problem(publish_batch(&env, &publisher, "team-a", body).await, 413, "batch_too_large").await;
    }
    // Malformed: a length other than the header's, a digest named twice, no blob, not JSON.
    let mut short = frame::encode_publish(&[(ok_d.clone(), ok.as_slice())]);
    short.pop();
    let twice = frame::encode_publish(&[(ok_d.clone(), ok.as_slice()), (ok_d.clone(), ok.as_slice())]);
    for body in [short, twice, header(vec![]), b"not a frame\n".to_vec()] {
        expect_problem(publish_batch(&env, &publisher, "team-a", body).await, 400, "invalid_request").await;
    }
    assert_eq!(env.stored_objects().await, stored, "nothing stored");
    assert_eq!(env.audit("team-a").await.len(), events, "nothing audited");
    // A viewer may ask but not publish.
    let viewer = env.token(Role::Viewer, "team-a").await;
    let good = frame::encode_publish(&[(ok_d.clone(), ok.as_slice())]);
    expect_problem(publish_batch(&env, &viewer, "team-a", good.clone()).await, 403, "insufficient_role").await;
    assert_eq!(publish_batch(&env, &publisher, "team-a", good).await.status(), 200);
}

pub async fn a_frozen_registry_or_a_suspended_workspace_refuses_a_batch_whole(b: Backend) {
    let env = TestEnv::start(b).await;
    let admin = env.token(Role::Admin, "*").await;
    let publisher = env.token(Role::Publisher, "team-a").await;
    let (bytes, d) = unique_blob(300);
    let body = frame::encode_publish(&[(d.clone(), bytes.as_slice())]);
    let stored = env.stored_objects().await;

    assert_eq!(post_json(&env, &admin, "/v1/admin/freeze", json!({"reason": "batch test"})).await.status(), 200);
    expect_problem(publish_batch(&env, &publisher, "team-a", body.clone()).await, 503, "registry_frozen").await;
    // The batch reads go on while frozen.
    assert_eq!(missing(&env, &publisher, "team-a", &[&d]).await.status(), 200);
    let fetch = post_json(&env, &publisher, "/v1/workspaces/team-a/blob-fetches", json!({"digests": [d.to_string()]}));
    assert_eq!(fetch.await.status(), 200);
    assert_eq!(post_json(&env, &admin, "/v1/admin/unfreeze", json!({"reason": "done"})).await.status(), 200);

    let suspend = "/v1/admin/workspaces/team-a/suspend";
    assert_eq!(post_json(&env, &admin, suspend, json!({"reason": "batch test"})).await.status(), 200);
    expect_problem(publish_batch(&env, &publisher, "team-a", body.clone()).await, 403, "workspace_suspended").await;
    expect_problem(missing(&env, &publisher, "team-a", &[&d]).await, 403, "workspace_suspended").await;
    assert_eq!(env.stored_objects().await, stored, "nothing stored while refused");
    let unsuspend = "/v1/admin/workspaces/team-a/unsuspend";
    assert_eq!(post_json(&env, &admin, unsuspend, json!({"reason": "done"})).await.status(), 200);
    let answer: Value = publish_batch(&env, &publisher, "team-a", body).await.json().await.unwrap();
    assert_eq!(answer["created"], 1, "{answer}");
}

/// A batch's bytes are made durable before the commit that links them: when that commit fails (here
/// a trigger refuses the links, as a crash between the writes and the commit would leave them),
/// the batch is a 503 with nothing linked and no event, the bytes written meanwhile are unlinked
/// objects nothing serves, and the same batch sent again links every blob with one event each.
pub async fn a_batch_whose_links_do_not_commit_links_nothing_and_its_retry_links_each_once(b: Backend) {
    assert_eq!(b, Backend::Embedded, "the commit is failed through the SQLite file");
    let env = TestEnv::start(b).await;
    let publisher = env.token(Role::Publisher, "team-a").await;
    let blobs: Vec<(Vec<u8>, Digest)> = (0..30).map(|i| unique_blob(300 + i * 101)).collect();
    let items: Vec<(Digest, &[u8])> = blobs.iter().map(|(bytes, d)| (d.clone(), bytes.as_slice())).collect();
    let body = frame::encode_publish(&items);
    let db = rusqlite::Connection::open(env.data_dir().join(helix_core::app::SQLITE_FILE)).unwrap();
    db.execute_batch("CREATE TRIGGER no_links BEFORE INSERT ON blob_links BEGIN SELECT RAISE(ABORT, 'crash'); END")
        .unwrap();
    let (events, stored) = (env.audit("team-a").await.len(), env.stored_objects().await);

    expect_problem(publish_batch(&env, &publisher, "team-a", body.clone()).await, 503, "meta_store_unavailable").await;
    assert_eq!(env.audit("team-a").await.len(), events, "no event for a link that was not committed");
    assert_eq!(env.stored_objects().await, stored + 30, "the bytes were written (and made durable) first");
    for (_, d) in &blobs {
        let got = super::api::get_blob(&env, &publisher, "team-a", &d.to_string(), "").await;
        assert_eq!(got.status(), 404, "an unlinked object is not served");
    }
    assert_eq!(env.temp_files(), 0);

    db.execute_batch("DROP TRIGGER no_links").unwrap();
    let answer: Value = publish_batch(&env, &publisher, "team-a", body).await.json().await.unwrap();
    assert_eq!(answer["created"], 30, "{answer}");
    assert_eq!(links_of(&env.blob_events("team-a").await), 30, "one event per link");
    assert_eq!(env.stored_objects().await, stored + 30, "the objects written before were verified and reused");
    for (bytes, d) in &blobs {
        let got = super::api::get_blob(&env, &publisher, "team-a", &d.to_string(), "").await;
        assert_eq!(got.bytes().await.unwrap().to_vec(), *bytes);
    }
}

/// A batch's blob whose digest key already holds wrong bytes is placed in the next slot, as a single
/// PUT's would be; the blobs beside it are written together as usual. A pull of several files with
/// the same content writes each of them.
pub async fn a_batch_skips_a_wrong_object_under_a_digest_key_and_pulls_write_every_copy(b: Backend) {
    let env = TestEnv::start(b).await;
    let publisher = env.token(Role::Publisher, "team-a").await;
    let blobs: Vec<(Vec<u8>, Digest)> = (0..12).map(|i| unique_blob(200 + i * 50)).collect();
    env.plant_object(&blobs[4].1, b"poison").await;
    let items: Vec<(Digest, &[u8])> = blobs.iter().map(|(bytes, d)| (d.clone(), bytes.as_slice())).collect();
    let answer: Value =
        publish_batch(&env, &publisher, "team-a", frame::encode_publish(&items)).await.json().await.unwrap();
    assert_eq!(answer["created"], 12, "{answer}");
    let ws = WorkspaceId::parse("team-a").unwrap();
    let link = env.app.meta.blob_link(&ws, &blobs[4].1).await.unwrap().unwrap();
    assert_eq!(link.slot, 1, "the wrong object at slot 0 was skipped");
    let fetched =
        post_json(&env, &publisher, "/v1/workspaces/team-a/blob-fetches", json!({"digests": [blobs[4].1.to_string()]}));
    let (_, served) = frame::decode_fetch(&fetched.await.bytes().await.unwrap()).unwrap();
    assert_eq!(served, vec![(blobs[4].1.clone(), blobs[4].0.clone())], "the verified slot is served");

    let src = env.dir.path().join("copies");
    for i in 0..5 {
        std::fs::create_dir_all(src.join(format!("d{i}"))).unwrap();
        std::fs::write(src.join(format!("d{i}/same")), b"one content, five paths").unwrap();
        std::fs::write(src.join(format!("d{i}/own")), format!("own {i}")).unwrap();
    }
    let registry = helix_cli::client::Registry::new(&env.url(""), Some(publisher.clone())).unwrap();
    let (name, version) = (BundleName::parse("copies").unwrap(), BundleName::parse("1").unwrap());
    let opts = helix_cli::transfer::Options { jobs: 2, quiet: true, inline_max: None };
    helix_cli::transfer::push(&registry, &src, &ws, &name, &version, opts).await.unwrap();
    let out = env.dir.path().join("copies-out");
    let pulled = helix_cli::transfer::pull(&registry, &ws, &name, &version, &out, opts).await.unwrap();
    assert_eq!(pulled["downloaded_files"], 10, "{pulled}");
    for i in 0..5 {
        assert_eq!(std::fs::read(out.join(format!("d{i}/same"))).unwrap(), b"one content, five paths");
        assert_eq!(std::fs::read(out.join(format!("d{i}/own"))).unwrap(), format!("own {i}").as_bytes());
    }
    let leftovers: Vec<_> = walkdir(&out).into_iter().filter(|p| p.contains(".helix-part-")).collect();
    assert!(leftovers.is_empty(), "no temporary file is left: {leftovers:?}");
}

fn walkdir(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walkdir(&p));
        } else {
            out.push(p.display().to_string());
        }
    }
    out
}

pub async fn push_and_pull_of_many_small_files_use_batches(b: Backend) {
    let env = TestEnv::start(b).await;
    let publisher = env.token(Role::Publisher, "team-a").await;
    let src = env.dir.path().join("src");
    for i in 0..300 {
        let dir = src.join(format!("part-{}", i % 7));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("f{i}")), format!("file {i} ").repeat(1 + i % 40)).unwrap();
    }
    // Every request the client sends passes this proxy, which keeps each one's request line.
    let proxy = FaultProxy::start(&env.url(""), "none", 0).await;
    let registry = helix_cli::client::Registry::new(&proxy.url, Some(publisher.clone())).unwrap();
    let (ws, name, version) =
        (WorkspaceId::parse("team-a").unwrap(), BundleName::parse("many").unwrap(), BundleName::parse("1").unwrap());
    let opts = helix_cli::transfer::Options { jobs: 4, quiet: true, inline_max: None };
    let pushed = helix_cli::transfer::push(&registry, &src, &ws, &name, &version, opts).await.unwrap();
    assert_eq!(pushed["uploaded_files"], 300, "{pushed}");
    let lines = |from: usize| -> Vec<String> {
        proxy.requests.lock().unwrap()[from..].iter().map(|h| h.lines().next().unwrap_or("").to_owned()).collect()
    };
    let sent = lines(0);
    // status, whoami, the version (404), one missing query, one batch, the manifest.
    assert!(sent.len() <= 8, "a 300-file push took {} requests: {sent:#?}", sent.len());
    assert!(sent.iter().any(|l| l.contains("/blob-batches")), "{sent:#?}");
    assert!(!sent.iter().any(|l| l.contains("/blobs/")), "no single-blob request: {sent:#?}");

    let before = sent.len();
    let out = env.dir.path().join("out");
    let pulled = helix_cli::transfer::pull(&registry, &ws, &name, &version, &out, opts).await.unwrap();
    assert_eq!(pulled["downloaded_files"], 300, "{pulled}");
    let sent = lines(before);
    assert!(sent.len() <= 4, "a 300-file pull took {} requests: {sent:#?}", sent.len());
    assert!(sent.iter().any(|l| l.contains("/blob-fetches")), "{sent:#?}");
    for i in 0..300 {
        let rel = format!("part-{}/f{i}", i % 7);
        assert_eq!(std::fs::read(out.join(&rel)).unwrap(), std::fs::read(src.join(&rel)).unwrap(), "{rel}");
    }
}
