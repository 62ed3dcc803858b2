//! Port contracts: what every adapter of each port must do, whatever is behind it.

use std::time::Duration;

use bytes::Bytes;
use helix_core::Error;
use helix_core::domain::audit::verify_chain;
use helix_core::domain::{AuditDraft, BearerToken, Digest, Outcome, Role, Scope, TokenRecord, WorkspaceId};
use helix_core::ports::{AuditQuery, BlobKey, BlobLink, Change, Commit, PutOutcome, UploadRef};
use helix_core::tokens::{self, Grant};
use serde_json::json;
use tokio::io::AsyncReadExt;

use super::unique_blob;
use crate::{Backend, TestEnv};

pub async fn blob_store_put_if_absent_creates_once_then_reports_existing(b: Backend) {
    let env = TestEnv::start(b).await;
    let (bytes, d) = unique_blob(1000);
    let store = env.app.blobs.as_ref();
    let key = BlobKey::primary(&d);
    assert_eq!(store.put_if_absent(&key, Bytes::from(bytes.clone())).await.unwrap(), PutOutcome::Created);
    assert_eq!(store.put_if_absent(&key, Bytes::from(bytes)).await.unwrap(), PutOutcome::Existed);
    assert_eq!(store.head(&key).await.unwrap().unwrap().size, 1000);
    assert_eq!(env.stored_objects().await, 1);
    assert_eq!(env.temp_files(), 0);
}

/// A batch's puts and gets (`put_many_if_absent`, `get_many`) mean what the single ones do, blob by
/// blob and in order: a new key is `Created`, a taken one `Existed` and left alone (a planted wrong
/// object included), an absent key reads as None, and no temp file is left.
pub async fn blob_store_puts_and_gets_many_as_it_does_one_by_one(b: Backend) {
    let env = TestEnv::start(b).await;
    let store = env.app.blobs.as_ref();
    let blobs: Vec<(Vec<u8>, Digest)> = (0..40).map(|i| unique_blob(1 + i * 211)).collect();
    env.plant_object(&blobs[3].1, b"someone else's bytes").await;
    store.put_if_absent(&BlobKey::primary(&blobs[7].1), Bytes::from(blobs[7].0.clone())).await.unwrap();
    let items = blobs.iter().map(|(bytes, d)| (BlobKey::primary(d), Bytes::from(bytes.clone()))).collect();
    let outcomes: Vec<PutOutcome> =
        store.put_many_if_absent(items).await.into_iter().collect::<Result<_, _>>().unwrap();
    let existed: Vec<usize> = (0..40).filter(|&i| outcomes[i] == PutOutcome::Existed).collect();
    assert_eq!(existed, [3, 7], "{outcomes:?}");
    assert_eq!(env.stored_objects().await, 40);
    assert_eq!(env.temp_files(), 0);

    let (_, absent) = unique_blob(10);
    let mut keys: Vec<(BlobKey, u64)> = blobs.iter().map(|(b, d)| (BlobKey::primary(d), b.len() as u64)).collect();
    keys.insert(5, (BlobKey::primary(&absent), 10));
    let read = store.get_many(keys).await;
    assert_eq!(read.len(), 41);
    assert!(read[5].as_ref().unwrap().is_none(), "an absent key reads as None");
    let back: Vec<Vec<u8>> = read.into_iter().filter_map(|r| r.unwrap()).map(|b| b.to_vec()).collect();
    assert_eq!(back[3], b"someone else's bytes", "an existing object is never overwritten");
    for (i, (bytes, _)) in blobs.iter().enumerate().filter(|(i, _)| *i != 3) {
        assert_eq!(&back[i], bytes, "blob {i}");
    }
    // A read stops one byte past the size asked for (the caller's verification sees it is longer).
    let short = store.get_many(vec![(BlobKey::primary(&blobs[39].1), 5)]).await;
    assert_eq!(short[0].as_ref().unwrap().as_ref().unwrap().len(), 6);
}

pub async fn blob_store_streams_exact_bytes_and_reports_missing_as_none(b: Backend) {
    let env = TestEnv::start(b).await;
    let (bytes, d) = unique_blob(300_000);
    let store = env.app.blobs.as_ref();
    store.put_if_absent(&BlobKey::primary(&d), Bytes::from(bytes.clone())).await.unwrap();
    let mut reader = store.get(&BlobKey::primary(&d)).await.unwrap().expect("stored");
    assert_eq!(reader.size, 300_000);
    let mut back = Vec::new();
    reader.body.read_to_end(&mut back).await.unwrap();
    assert_eq!(back, bytes);
    assert!(store.head(&BlobKey { digest: d.clone(), slot: 1 }).await.unwrap().is_none(), "slots are separate keys");
    let (_, missing) = unique_blob(10);
    assert!(store.head(&BlobKey::primary(&missing)).await.unwrap().is_none());
    assert!(store.get(&BlobKey::primary(&missing)).await.unwrap().is_none());
    store.check().await.unwrap();
}

/// The adapter never vouches for an existing object: it reports `Existed`, leaves the stored bytes
/// alone, and `verify_object` (the one verification, in helix-core) catches the wrong ones, even when
/// the store kept a checksum that claims otherwise.
pub async fn blob_store_reports_an_existing_object_for_the_core_to_verify(b: Backend) {
    let env = TestEnv::start(b).await;
    let (bytes, d) = unique_blob(64);
    let key = BlobKey::primary(&d);
    env.plant_object(&d, b"not the bytes of that digest").await;
    assert_eq!(env.app.blobs.put_if_absent(&key, Bytes::from(bytes.clone())).await.unwrap(), PutOutcome::Existed);
    let err = helix_core::blobs::verify_object(env.app.blobs.as_ref(), &key).await.unwrap_err();
    assert!(matches!(err, Error::BlobIntegrity(_)), "{err:?}");
    let mut back = Vec::new();
    env.app.blobs.get(&key).await.unwrap().unwrap().body.read_to_end(&mut back).await.unwrap();
    assert_eq!(back, b"not the bytes of that digest", "never overwritten");
    let next = BlobKey { digest: d.clone(), slot: 1 };
    assert_eq!(env.app.blobs.put_if_absent(&next, Bytes::from(bytes)).await.unwrap(), PutOutcome::Created);
    assert!(helix_core::blobs::verify_object(env.app.blobs.as_ref(), &next).await.is_ok());
}

pub async fn blob_store_concurrent_puts_create_exactly_one_object(b: Backend) {
    let env = TestEnv::start(b).await;
    let (bytes, d) = unique_blob(50_000);
    let puts = (0..32).map(|_| {
        let (store, key, bytes) = (env.app.blobs.clone(), BlobKey::primary(&d), Bytes::from(bytes.clone()));
        tokio::spawn(async move { store.put_if_absent(&key, bytes).await })
    });
    let outcomes: Vec<PutOutcome> =
        futures_util::future::join_all(puts).await.into_iter().map(|r| r.unwrap().unwrap()).collect();
    assert_eq!(outcomes.iter().filter(|o| **o == PutOutcome::Created).count(), 1, "{outcomes:?}");
    assert_eq!(env.stored_objects().await, 1);
    assert_eq!(env.temp_files(), 0);
}

/// Send `bytes` to a presigned upload the way a client does: every header it names, but the ones
/// the HTTP client sets itself.
pub async fn send_presigned(env: &TestEnv, put: &helix_core::ports::Presigned, bytes: Vec<u8>) -> reqwest::Response {
    let mut req = env.http.put(&put.url).body(bytes);
    for (k, v) in &put.headers {
        if !k.eq_ignore_ascii_case("content-length") && !k.eq_ignore_ascii_case("host") {
            req = req.header(k, v);
        }
    }
    req.send().await.unwrap()
}

/// A staged upload goes to its own key (never a blob key), is read back pinned, promoted to a blob
/// key create-only, and discarded; a presigned GET then serves the blob.
pub async fn blob_store_staged_upload_promotes_and_presigned_get_round_trips(b: Backend) {
    let env = TestEnv::start(b).await;
    let (bytes, d) = unique_blob(20_000);
    let store = env.app.blobs.as_ref();
    let ws = WorkspaceId::parse("team-a").unwrap();
    let upload = UploadRef::new(&ws);
    let put = store.presign_upload(&upload, &d, bytes.len() as u64, Duration::from_secs(60)).await.unwrap();
    assert_eq!(put.method, "PUT");
    assert!(put.url.contains(&upload.id), "the URL is bound to this upload: {}", put.url);
    if b == Backend::Emulator {
        // Checksum and no-overwrite condition are signed into the URL, so S3 enforces both.
        let signed = put.url.split("X-Amz-SignedHeaders=").nth(1).unwrap_or("").split('&').next().unwrap_or("");
        assert!(signed.contains("if-none-match") && signed.contains("x-amz-checksum-sha256"), "{}", put.url);
        let names: Vec<String> = put.headers.iter().map(|(k, _)| k.to_ascii_lowercase()).collect();
        assert!(names.contains(&"x-amz-checksum-sha256".to_owned()), "{:?}", put.headers);
    }
    let resp = send_presigned(&env, &put, bytes.clone()).await;
    assert!(resp.status().is_success(), "{} {}", resp.status(), resp.text().await.unwrap());
    assert_eq!(env.stored_objects().await, 0, "an upload never writes a blob key");
    let staged = store.staged(&upload).await.unwrap().expect("staged");
    assert_eq!(staged.size, 20_000);
    if store.staged_checksums_verified() {
        // The checksum the store verified as the bytes arrived: `complete` trusts it, no re-hash.
        assert_eq!(staged.stored_sha256.as_ref(), Some(&d));
    }
    let mut back = Vec::new();
    store.read_staged(&upload, &staged).await.unwrap().body.read_to_end(&mut back).await.unwrap();
    assert_eq!(back, bytes);
    let key = BlobKey::primary(&d);
    assert_eq!(store.promote(&upload, &staged, &key).await.unwrap(), PutOutcome::Created);
    assert_eq!(store.promote(&upload, &staged, &key).await.unwrap(), PutOutcome::Existed, "create-only");
    store.discard(&upload).await.unwrap();
    store.discard(&upload).await.unwrap();
    assert!(store.staged(&upload).await.unwrap().is_none());
    assert_eq!(env.staged_uploads().await, 0);
    assert_eq!(store.head(&key).await.unwrap().unwrap().size, 20_000);
    let get = store.presign_get(&key, Duration::from_secs(60)).await.unwrap();
    let back = env.http.get(&get.url).send().await.unwrap();
    assert_eq!(back.status(), 200);
    assert_eq!(back.bytes().await.unwrap().to_vec(), bytes);
}

fn draft(stream: &str, n: usize) -> AuditDraft {
    AuditDraft {
        stream: stream.into(),
        actor: "tests".into(),
        action: "test.event".into(),
        entity_type: "test".into(),
        entity_id: format!("e{n}"),
        outcome: Outcome::Success,
        request_id: format!("r{n}"),
        details: json!({"n": n}),
    }
}

fn link(ws: &str, d: &Digest) -> Change {
    Change::LinkBlob(BlobLink {
        workspace_id: ws.into(),
        digest: d.clone(),
        size: 1,
        linked_at: 1,
        linked_by: "tests".into(),
        slot: 0,
    })
}

pub async fn meta_store_issued_token_round_trips_and_a_duplicate_is_already_done(b: Backend) {
    let env = TestEnv::start(b).await;
    let grant = Grant {
        user: "ada".into(),
        role: Role::Approver,
        workspace_id: Scope::parse("team-a").unwrap(),
        ttl_seconds: Some(3600),
        description: Some("d".into()),
    };
    let (secret, record) = tokens::issue(env.app.meta.as_ref(), grant, "tests", "r1").await.unwrap();
    let stored = env.app.meta.token_by_sha256(&secret.sha256()).await.unwrap().expect("stored");
    assert_eq!(stored, record);
    assert_eq!(stored.expires_at, Some(stored.created_at + 3600));
    let again = env.app.meta.commit(Change::IssueToken(record.clone()), draft("team-a", 9)).await.unwrap();
    assert_eq!(again, Commit::AlreadyDone);
    assert!(env.app.meta.token_by_sha256(&BearerToken::generate().sha256()).await.unwrap().is_none());
    let events = env.audit("team-a").await;
    assert_eq!(events.len(), 1, "the duplicate wrote no event");
    assert_eq!((events[0].action.as_str(), events[0].entity_id.as_str()), ("token.issue", record.id.as_str()));
    assert!(!events[0].canonical().unwrap().contains(secret.expose()), "the secret never reaches the audit log");
}

pub async fn meta_store_link_commits_with_its_audit_event_and_only_once(b: Backend) {
    let env = TestEnv::start(b).await;
    let ws = WorkspaceId::parse("team-a").unwrap();
    let (_, d) = unique_blob(8);
    assert!(env.app.meta.blob_link(&ws, &d).await.unwrap().is_none());
    let Commit::Applied(event) = env.app.meta.commit(link("team-a", &d), draft("team-a", 1)).await.unwrap() else {
        panic!("first link applies")
    };
    assert_eq!((event.seq, event.prev.as_deref()), (1, None));
    assert_eq!(env.app.meta.blob_link(&ws, &d).await.unwrap().unwrap().digest, d);
    assert_eq!(env.app.meta.commit(link("team-a", &d), draft("team-a", 2)).await.unwrap(), Commit::AlreadyDone);
    assert_eq!(env.app.audit.head("team-a").await.unwrap().unwrap(), *event);
    assert!(env.app.meta.blob_link(&WorkspaceId::parse("team-b").unwrap(), &d).await.unwrap().is_none());
}

pub async fn meta_store_counters_add_atomically(b: Backend) {
    let env = TestEnv::start(b).await;
    let deltas = |a: i64, b: i64| vec![("a".to_owned(), a), ("b|x y".to_owned(), b)];
    let adds = (0..20).map(|_| {
        let meta = env.app.meta.clone();
        tokio::spawn(async move { meta.add_to_counters("group-t", &deltas(1, 2)).await })
    });
    for r in futures_util::future::join_all(adds).await {
        r.unwrap().unwrap();
    }
    let got = env.app.meta.counters("group-t").await.unwrap();
    assert_eq!(got.into_iter().collect::<Vec<_>>(), deltas(20, 40));
    env.app.meta.add_to_counters("group-t", &deltas(-5, 0)).await.unwrap();
    assert_eq!(env.app.meta.counters("group-t").await.unwrap()["a"], 15);
    assert!(env.app.meta.counters("never-touched").await.unwrap().is_empty());
    // 120 counters in one add (more than one update expression holds on DynamoDB).
    let many: Vec<(String, i64)> = (0..120).map(|i| (format!("k{i:03}"), i)).collect();
    env.app.meta.add_to_counters("group-many", &many).await.unwrap();
    assert_eq!(env.app.meta.counters("group-many").await.unwrap().into_iter().collect::<Vec<_>>(), many);
}

pub async fn audit_log_concurrent_appends_form_a_gapless_verified_chain(b: Backend) {
    let (env, _moto) = TestEnv::start_private(b).await;
    let mut tasks = Vec::new();
    for n in 0..12 {
        let audit = env.app.audit.clone();
        tasks.push(tokio::spawn(async move { audit.append(draft("s1", n)).await.map(|_| ()) }));
    }
    for n in 12..16 {
        let meta = env.app.meta.clone();
        let (_, d) = unique_blob(4);
        tasks.push(tokio::spawn(async move { meta.commit(link("s1", &d), draft("s1", n)).await.map(|_| ()) }));
    }
    for t in futures_util::future::join_all(tasks).await {
        t.unwrap().unwrap();
    }
    let events = env.audit("s1").await;
    assert_eq!(events.iter().map(|e| e.seq).collect::<Vec<_>>(), (1..=16).collect::<Vec<u64>>());
    verify_chain(&events).unwrap();
    let mut ids: Vec<&str> = events.iter().map(|e| e.entity_id.as_str()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 16, "every append landed exactly once");
    assert!(env.audit("s2").await.is_empty(), "streams are separate");
}

pub async fn audit_log_query_filters_by_time_and_cursor(b: Backend) {
    let env = TestEnv::start(b).await;
    let mut events = Vec::new();
    for n in 0..3 {
        events.push(env.app.audit.append(draft("q", n)).await.unwrap());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let q = |since: Option<&str>, until: Option<&str>, after: Option<u64>, limit: usize| AuditQuery {
        stream: "q".into(),
        since: since.map(str::to_owned),
        until: until.map(str::to_owned),
        after_seq: after,
        limit,
    };
    let seqs = |v: Vec<helix_core::domain::AuditEvent>| v.into_iter().map(|e| e.seq).collect::<Vec<_>>();
    let audit = env.app.audit.as_ref();
    assert_eq!(seqs(audit.query(&q(None, None, None, 10)).await.unwrap()), vec![1, 2, 3]);
    assert_eq!(seqs(audit.query(&q(Some(&events[1].ts), None, None, 10)).await.unwrap()), vec![2, 3]);
    assert_eq!(seqs(audit.query(&q(None, Some(&events[2].ts), None, 10)).await.unwrap()), vec![1, 2]);
    assert_eq!(seqs(audit.query(&q(None, None, Some(1), 1)).await.unwrap()), vec![2]);
    assert_eq!(audit.head("q").await.unwrap().unwrap(), events[2]);
    assert!(audit.head("empty").await.unwrap().is_none());
}

/// `read_day` gives every stream's events of that UTC day, ordered by (stream, seq), and nothing else.
pub async fn audit_log_read_day_returns_that_days_events_of_every_stream_in_order(b: Backend) {
    let env = TestEnv::start(b).await;
    for (stream, n) in [("b", 0), ("a", 0), ("b", 1), ("a", 1), ("a", 2)] {
        env.app.audit.append(draft(stream, n)).await.unwrap();
    }
    let day = env.audit("a").await[0].ts[..10].to_owned();
    let events = helix_core::audit_export::read_day(&env.app, &day).await.unwrap();
    let order: Vec<(String, u64)> = events.iter().map(|e| (e.stream.clone(), e.seq)).collect();
    let expected: Vec<(String, u64)> =
        [("a", 1), ("a", 2), ("a", 3), ("b", 1), ("b", 2)].iter().map(|(s, q)| (s.to_string(), *q)).collect();
    // Another test's events cannot be in this test's fresh store, so the day holds exactly these.
    assert_eq!(order, expected);
    assert!(events.iter().all(|e| e.ts.starts_with(&day)));
    assert!(helix_core::audit_export::read_day(&env.app, "2001-01-01").await.unwrap().is_empty());
}

/// Documents (the audit export's files) are put once; a second put leaves the first bytes.
pub async fn blob_store_documents_are_put_once_and_read_back(b: Backend) {
    let env = TestEnv::start(b).await;
    let store = env.app.blobs.as_ref();
    let key = "audit/2026/11/22/manifest.json";
    assert!(store.get_document(key).await.unwrap().is_none());
    assert_eq!(store.put_document_if_absent(key, Bytes::from_static(b"{\"a\":1}")).await.unwrap(), PutOutcome::Created);
    assert_eq!(store.put_document_if_absent(key, Bytes::from_static(b"{\"a\":2}")).await.unwrap(), PutOutcome::Existed);
    assert_eq!(store.get_document(key).await.unwrap().unwrap(), Bytes::from_static(b"{\"a\":1}"));
}

pub async fn signer_signatures_verify_with_the_published_public_key(b: Backend) {
    use p256::ecdsa::signature::Verifier;
    use p256::pkcs8::DecodePublicKey;
    let env = TestEnv::start(b).await;
    let signer = env.app.signer.as_ref();
    let pk = signer.public_key().await.unwrap();
    assert_eq!(pk.key_id, Digest::of(&pk.spki_der).to_string());
    assert!(pk.pem.starts_with("-----BEGIN PUBLIC KEY-----"));
    let msg = b"DSSEv1 36 application/vnd.helix.receipt.v1+json 2 {}";
    let sig = signer.sign(msg).await.unwrap();
    // Verified by the p256 crate directly, not through our own helper.
    let key = p256::ecdsa::VerifyingKey::from_public_key_der(&pk.spki_der).unwrap();
    let der = p256::ecdsa::DerSignature::try_from(sig.as_slice()).unwrap();
    key.verify(msg, &der).expect("signature verifies");
    assert!(key.verify(b"another message", &der).is_err());
    assert!(pk.verify(msg, &sig) && !pk.verify(b"x", &sig));
    assert!(signer.sign(&vec![0u8; 4097]).await.is_err(), "over 4096 bytes is refused");
    assert_eq!(signer.public_key().await.unwrap().key_id, pk.key_id, "the key id is stable");
    signer.check().await.unwrap();
}

/// A record stored as-is, for states the API cannot produce yet (expired, disabled).
pub async fn store_token_record(env: &TestEnv, mutate: impl FnOnce(&mut TokenRecord)) -> String {
    let secret = BearerToken::generate();
    let mut record = TokenRecord::new(&secret, "eve".into(), Role::Admin, Scope::All, None, "tests".into(), None);
    mutate(&mut record);
    env.app.meta.commit(Change::IssueToken(record), draft("*", 0)).await.unwrap();
    secret.expose().to_owned()
}

/// With HELIX_S3_STRICT_NO_OVERWRITE=0 the S3 adapter checks before it writes instead of relying on
/// If-None-Match; the answers must be the same as in strict mode.
pub async fn s3_without_strict_no_overwrite_still_verifies_existing_objects(b: Backend) {
    let env = TestEnv::start_with(b, &[("HELIX_S3_STRICT_NO_OVERWRITE", "0")]).await;
    assert!(!env.app.blobs.info().strict_no_overwrite);
    let (bytes, d) = unique_blob(500);
    let key = BlobKey::primary(&d);
    assert_eq!(env.app.blobs.put_if_absent(&key, Bytes::from(bytes.clone())).await.unwrap(), PutOutcome::Created);
    assert_eq!(env.app.blobs.put_if_absent(&key, Bytes::from(bytes)).await.unwrap(), PutOutcome::Existed);
    assert_eq!(env.stored_objects().await, 1, "an existing object is not written again");
    let (good, bad) = unique_blob(50);
    env.plant_object(&bad, b"other bytes").await;
    let bad_key = BlobKey::primary(&bad);
    assert_eq!(env.app.blobs.put_if_absent(&bad_key, Bytes::from(good)).await.unwrap(), PutOutcome::Existed);
    let err = helix_core::blobs::verify_object(env.app.blobs.as_ref(), &bad_key).await.unwrap_err();
    assert!(matches!(err, Error::BlobIntegrity(_)), "{err:?}");
}

/// Audit searches (GET /v1/audit's port): by action across every stream, by stream, with actor and
/// time filters, in (ts, stream, seq) order, and a cursor that walks every page exactly once.
pub async fn audit_log_search_filters_and_pages_in_time_order(b: Backend) {
    use helix_core::domain::AuditEvent;
    use helix_core::ports::AuditSearch;
    let env = TestEnv::start(b).await;
    let mut all = Vec::new();
    for i in 0..12 {
        let mut d = draft(["s-a", "s-b", "*"][i % 3], i);
        d.action = if i % 2 == 0 { "x.export".into() } else { "x.other".into() };
        d.actor = if i < 6 { "ada".into() } else { "bob".into() };
        all.push(env.app.audit.append(d).await.unwrap());
        if i == 5 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    let audit = env.app.audit.as_ref();
    let keys = |v: &[AuditEvent]| v.iter().map(AuditEvent::at_key).collect::<Vec<_>>();
    let expect = |f: &dyn Fn(&AuditEvent) -> bool| {
        let mut v: Vec<AuditEvent> = all.iter().filter(|e| f(e)).cloned().collect();
        v.sort_by_key(AuditEvent::at_key);
        keys(&v)
    };
    // Every page of 2, following the cursor.
    let pages = |q: AuditSearch| async move {
        let mut out = Vec::new();
        let mut q = AuditSearch { limit: 2, ..q };
        loop {
            let page = audit.search(&q).await.unwrap();
            assert!(page.events.len() <= 2);
            out.extend(page.events.iter().map(AuditEvent::at_key));
            q.after = match (page.events.len(), page.resume_after) {
                (2, _) => Some(page.events[1].at_key()),
                // The store stopped at its read bound: go on after where it stopped.
                (_, Some(resume)) => Some(resume),
                _ => return out,
            };
        }
    };
    let by_action = AuditSearch { action: Some("x.export".into()), ..Default::default() };
    assert_eq!(pages(by_action.clone()).await, expect(&|e| e.action == "x.export"));
    let by_stream = AuditSearch { stream: Some("s-a".into()), ..Default::default() };
    assert_eq!(pages(by_stream.clone()).await, expect(&|e| e.stream == "s-a"));
    let both = AuditSearch { stream: Some("s-b".into()), action: Some("x.other".into()), ..Default::default() };
    assert_eq!(pages(both).await, expect(&|e| e.stream == "s-b" && e.action == "x.other"));
    let actor = AuditSearch { actor: Some("bob".into()), ..by_action.clone() };
    assert_eq!(pages(actor).await, expect(&|e| e.action == "x.export" && e.actor == "bob"));
    // Time bounds: since inclusive, until exclusive, on both paths.
    let (since, until) = (all[6].ts.clone(), all[11].ts.clone());
    let window = |e: &AuditEvent| e.ts >= since && e.ts < until;
    let q = AuditSearch { since: Some(since.clone()), until: Some(until.clone()), ..by_action.clone() };
    assert_eq!(pages(q).await, expect(&|e| e.action == "x.export" && window(e)));
    let q = AuditSearch { since: Some(since.clone()), until: Some(until.clone()), ..by_stream.clone() };
    assert_eq!(pages(q).await, expect(&|e| e.stream == "s-a" && window(e)));
    assert!(!expect(&|e| e.stream == "s-a" && window(e)).is_empty(), "the window is not empty");
    let q = AuditSearch { since: Some("2001-01-01".into()), until: Some("2001-01-02".into()), ..by_action };
    assert!(audit.search(&q).await.unwrap().events.is_empty());
    // A search naming neither would read everything: refused.
    assert!(matches!(audit.search(&AuditSearch { limit: 5, ..Default::default() }).await, Err(Error::BadRequest(_))));
}
