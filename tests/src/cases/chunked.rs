//! Chunked uploads (issue 19 §3): a file of more than one part goes up part by part, each part's
//! SHA-256 signed into its URL, then joined, re-hashed whole and linked with the rules of a single
//! upload; and `helix push` resumes one inside a file. Small parts: 64 KiB on the embedded store, 5 MiB
//! (S3's and moto's smallest but the last) on the emulator.

use helix_core::domain::{BundleName, Digest, Role, WorkspaceId};
use serde_json::{Value, json};

use super::api::{bearer, complete, get_blob, post_json};
use super::{expect_problem, unique_blob};
use crate::fault_proxy::FaultProxy;
use crate::{Backend, TestEnv, emulator_endpoint};

pub(crate) fn part_size(b: Backend) -> usize {
    match b {
        Backend::Embedded => 64 * 1024,
        Backend::Emulator => 5 * 1024 * 1024,
    }
}

async fn env_for(b: Backend) -> TestEnv {
    TestEnv::start_with(b, &[("HELIX_INLINE_MAX", "1024"), ("HELIX_UPLOAD_PART_SIZE", &part_size(b).to_string())]).await
}

pub(crate) fn part_digests(bytes: &[u8], part: usize) -> Vec<String> {
    bytes.chunks(part).map(|c| Digest::of(c).to_string()).collect()
}

/// POST …/uploads with `part_sha256` (and `extra`): (status, answer).
pub(crate) async fn plan_parts(
    env: &TestEnv,
    token: &str,
    ws: &str,
    d: &Digest,
    size: usize,
    sha: &[String],
    extra: Value,
) -> (u16, Value) {
    let mut body = json!({"digest": d.to_string(), "size": size, "part_sha256": sha});
    body.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
    let resp = post_json(env, token, &format!("/v1/workspaces/{ws}/uploads"), body).await;
    (resp.status().as_u16(), resp.json().await.unwrap())
}

/// PUT `bytes` through one part's presigned request.
async fn send_part(env: &TestEnv, part: &Value, bytes: &[u8]) -> reqwest::Response {
    let mut req = env.http.put(part["url"].as_str().unwrap()).body(bytes.to_vec());
    for pair in part["headers"].as_array().unwrap() {
        let (k, v) = (pair[0].as_str().unwrap(), pair[1].as_str().unwrap());
        if !k.eq_ignore_ascii_case("content-length") && !k.eq_ignore_ascii_case("host") {
            req = req.header(k, v);
        }
    }
    req.send().await.unwrap()
}

fn part_of(plan: &Value, number: u64) -> &Value {
    plan["parts"].as_array().unwrap().iter().find(|p| p["number"] == number).expect("the part is planned")
}

pub(crate) async fn send_parts(env: &TestEnv, plan: &Value, bytes: &[u8], part: usize, skip: &[u64]) {
    for p in plan["parts"].as_array().unwrap() {
        let n = p["number"].as_u64().unwrap();
        if skip.contains(&n) {
            continue;
        }
        let chunk = &bytes[(n as usize - 1) * part..(n as usize * part).min(bytes.len())];
        let sent = send_part(env, p, chunk).await;
        assert!(sent.status().is_success(), "part {n}: {} {}", sent.status(), sent.text().await.unwrap());
    }
}

pub(crate) async fn linked(env: &TestEnv, token: &str, ws: &str, d: &Digest) -> bool {
    let url = env.url(&format!("/v1/workspaces/{ws}/blobs/{d}"));
    env.http.head(url).header("authorization", bearer(token)).send().await.unwrap().status().is_success()
}

/// A file of three parts: planned with each part's SHA-256, sent part by part, joined, re-hashed and
/// linked with one `upload.complete` event; complete again is the same answer (200); a missing part is
/// `upload_incomplete` (nothing linked) until it is sent; another workspace can neither resume nor
/// complete the plan; sizes and counts that do not fit are refused; a file of one part is one upload.
pub async fn a_chunked_upload_is_joined_rehashed_and_linked_once_with_every_rule_of_an_upload(b: Backend) {
    let env = env_for(b).await;
    let part = part_size(b);
    let publisher = env.token(Role::Publisher, "team-a").await;
    let other = env.token(Role::Publisher, "team-b").await;
    let (bytes, d) = unique_blob(2 * part + part / 5);
    let sha = part_digests(&bytes, part);
    assert_eq!(sha.len(), 3);

    let (status, wrong) = plan_parts(&env, &publisher, "team-a", &d, bytes.len(), &sha[..2], json!({})).await;
    assert_eq!((status, wrong["reason"].as_str()), (400, Some("invalid_request")), "{wrong}");
    let (status, plan) = plan_parts(&env, &publisher, "team-a", &d, bytes.len(), &sha, json!({})).await;
    assert_eq!(status, 200, "{plan}");
    assert_eq!((plan["part_size"].as_u64(), plan["part_count"].as_u64()), (Some(part as u64), Some(3)), "{plan}");
    assert!(plan["upload"].is_null(), "parts, not one upload: {plan}");
    let id = plan["upload_id"].as_str().unwrap().to_owned();
    if b == Backend::Emulator {
        let headers = part_of(&plan, 1)["headers"].to_string();
        assert!(headers.contains("x-amz-checksum-sha256"), "the part's SHA-256 is signed in: {headers}");
    }

    // Parts 1 and 3 only: complete names what is missing, links nothing, and can be asked again.
    send_parts(&env, &plan, &bytes, part, &[2]).await;
    let incomplete =
        post_json(&env, &publisher, &format!("/v1/workspaces/team-a/uploads/{d}/complete"), json!({"upload_id": id}))
            .await;
    let body = expect_problem(incomplete, 409, "upload_incomplete").await;
    assert!(body["detail"].as_str().unwrap().contains("1 of 3 parts"), "{body}");
    assert!(!linked(&env, &publisher, "team-a", &d).await);

    // Asked again with its id: the stored parts, and a URL for the one left.
    let (status, again) = plan_parts(&env, &publisher, "team-a", &d, bytes.len(), &sha, json!({"upload_id": id})).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["parts_stored"], json!([1, 3]), "{again}");
    assert_eq!(again["parts"].as_array().unwrap().len(), 1);

    // Another workspace: neither its plan nor its completion reaches team-a's upload.
    let (status, foreign) = plan_parts(&env, &other, "team-b", &d, bytes.len(), &sha, json!({"upload_id": id})).await;
    assert_eq!((status, foreign["reason"].as_str()), (404, Some("upload_missing")), "{foreign}");
    let foreign =
        post_json(&env, &other, &format!("/v1/workspaces/team-b/uploads/{d}/complete"), json!({"upload_id": id})).await;
    expect_problem(foreign, 404, "upload_missing").await;
    let cross =
        post_json(&env, &other, &format!("/v1/workspaces/team-a/uploads/{d}/complete"), json!({"upload_id": id})).await;
    expect_problem(cross, 403, "forbidden_workspace").await;

    send_parts(&env, &again, &bytes, part, &[]).await;
    let done = complete(&env, &publisher, "team-a", &d.to_string(), &plan).await;
    assert_eq!(done.status(), 201, "{}", done.text().await.unwrap());
    let retry = complete(&env, &publisher, "team-a", &d.to_string(), &plan).await;
    assert_eq!(retry.status(), 200, "a retried complete is the same link");
    let got = get_blob(&env, &publisher, "team-a", &d.to_string(), "").await;
    let got = match got.status().as_u16() {
        307 => env.http.get(got.headers()["location"].to_str().unwrap()).send().await.unwrap(),
        _ => got,
    };
    assert_eq!(got.bytes().await.unwrap().to_vec(), bytes);
    let events = env.audit("team-a").await;
    let completes: Vec<_> =
        events.iter().filter(|e| e.action == "upload.complete" && e.entity_id == d.to_string()).collect();
    assert_eq!(completes.len(), 1, "one event for one link");
    assert_eq!(completes[0].details["chunked"], true);
    assert_eq!(completes[0].details["size"], bytes.len());
    let links = ["blob.link", "blob.mount"];
    assert!(!events.iter().any(|e| e.entity_id == d.to_string() && links.contains(&e.action.as_str())));
    // Joined and linked: the plan is gone, so is its upload id.
    let (status, _) = plan_parts(&env, &publisher, "team-a", &d, bytes.len(), &sha, json!({"upload_id": id})).await;
    assert_eq!(status, 200, "linked already: nothing to upload");

    // A plan's body is larger than HELIX_INLINE_MAX (1 KiB here) when the file has many parts: taken.
    let many = 40;
    let (_, dm) = unique_blob(1);
    let shas: Vec<String> = (0..many).map(|i| Digest::of(&[i as u8]).to_string()).collect();
    let (status, big_plan) = plan_parts(&env, &publisher, "team-a", &dm, many * part, &shas, json!({})).await;
    assert_eq!(status, 200, "{big_plan}");
    assert_eq!(big_plan["parts"].as_array().unwrap().len(), many);

    // One part only: a single upload, as before.
    let (small, ds) = unique_blob(part);
    let (status, one) =
        plan_parts(&env, &publisher, "team-a", &ds, small.len(), &part_digests(&small, part), json!({})).await;
    assert_eq!((status, one["reason"].as_str()), (400, Some("invalid_request")), "{one}");
    let plain = post_json(
        &env,
        &publisher,
        "/v1/workspaces/team-a/uploads",
        json!({"digest": ds.to_string(), "size": small.len()}),
    )
    .await;
    let plain: Value = plain.json().await.unwrap();
    assert!(plain["upload"]["url"].is_string() && plain["parts"].is_null(), "{plain}");
}

/// Bytes that are not the file's: a part whose bytes do not match its signed SHA-256 is refused where
/// the store checks (the local part route; AWS S3), and what a lax store keeps (moto) is caught at
/// complete; parts that match their SHA-256s but are not the digest's file are `digest_mismatch` at
/// complete, nothing is linked, the plan and parts are removed, and a correct upload then succeeds.
pub async fn chunked_uploads_of_wrong_bytes_are_refused_and_link_nothing(b: Backend) {
    let env = env_for(b).await;
    let part = part_size(b);
    let publisher = env.token(Role::Publisher, "team-a").await;
    let (bytes, d) = unique_blob(part + part / 2);
    let sha = part_digests(&bytes, part);

    // A part with other bytes than its signed SHA-256.
    let (_, plan) = plan_parts(&env, &publisher, "team-a", &d, bytes.len(), &sha, json!({})).await;
    let mut evil = bytes[..part].to_vec();
    evil[7] ^= 1;
    let refused = send_part(&env, part_of(&plan, 1), &evil).await;
    match b {
        Backend::Embedded => {
            expect_problem(refused, 400, "digest_mismatch").await;
        }
        // moto keeps bytes whatever checksum was signed (AWS answers 400 BadDigest): complete catches it.
        Backend::Emulator => assert!(refused.status().is_success()),
    }
    send_parts(&env, &plan, &bytes, part, &[1]).await;
    let done = complete(&env, &publisher, "team-a", &d.to_string(), &plan).await;
    match b {
        Backend::Embedded => {
            expect_problem(done, 409, "upload_incomplete").await;
        }
        Backend::Emulator => {
            expect_problem(done, 400, "digest_mismatch").await;
        }
    }
    assert!(!linked(&env, &publisher, "team-a", &d).await);

    // Parts true to their SHA-256s, but of another file than the digest's: nothing linked, and
    // nothing placed under a blob key (the whole file is verified before it goes anywhere but staging).
    let (wrong, _) = unique_blob(bytes.len());
    let wrong_sha = part_digests(&wrong, part);
    let (_, plan) = plan_parts(&env, &publisher, "team-a", &d, bytes.len(), &wrong_sha, json!({})).await;
    send_parts(&env, &plan, &wrong, part, &[]).await;
    let objects = env.stored_objects().await;
    let done = complete(&env, &publisher, "team-a", &d.to_string(), &plan).await;
    expect_problem(done, 400, "digest_mismatch").await;
    assert!(!linked(&env, &publisher, "team-a", &d).await);
    assert_eq!(env.stored_objects().await, objects, "no blob object was written");
    if b == Backend::Embedded {
        let tmp = env.data_dir().join(helix_core::app::BLOB_DIR).join("tmp");
        assert_eq!(std::fs::read_dir(tmp).unwrap().count(), 0, "the sealed parts are removed with the refusal");
    }
    let id = plan["upload_id"].as_str().unwrap();
    let (status, gone) =
        plan_parts(&env, &publisher, "team-a", &d, bytes.len(), &wrong_sha, json!({"upload_id": id})).await;
    assert_eq!((status, gone["reason"].as_str()), (404, Some("upload_missing")), "refused: plan and parts removed");
    let linking = ["upload.complete", "blob.link", "blob.mount"];
    let events = env.audit("team-a").await;
    assert!(
        !events.iter().any(|e| e.entity_id == d.to_string() && linking.contains(&e.action.as_str())),
        "nothing audited as linked: {:?}",
        events.iter().map(|e| &e.action).collect::<Vec<_>>()
    );

    // The digest is not poisoned: the right file goes up.
    let (_, plan) = plan_parts(&env, &publisher, "team-a", &d, bytes.len(), &sha, json!({})).await;
    send_parts(&env, &plan, &bytes, part, &[]).await;
    assert_eq!(complete(&env, &publisher, "team-a", &d.to_string(), &plan).await.status(), 201);
}

/// `helix push` of a file above one part goes up in parts; a push cut off after some parts keeps its
/// upload id, and the next push asks the registry which parts it holds and sends only the others.
pub async fn a_push_interrupted_inside_a_file_resumes_and_sends_only_the_remaining_parts(b: Backend) {
    let env = env_for(b).await;
    let part = part_size(b);
    let publisher = env.token(Role::Publisher, "team-a").await;
    let src = env.dir.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    let parts = match b {
        Backend::Embedded => 5,
        Backend::Emulator => 3,
    };
    let (big, d) = unique_blob((parts - 1) * part + part / 3);
    std::fs::write(src.join("big.bin"), &big).unwrap();

    // The part uploads pass a proxy: the embedded store's (presigned URLs name the public URL), or S3's.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let front = FaultProxy::start(&format!("http://{}", listener.local_addr().unwrap()), "none", 0).await;
    let s3 = match b {
        Backend::Embedded => None,
        Backend::Emulator => Some(FaultProxy::start(&emulator_endpoint(), "none", 0).await),
    };
    let mut vars = vec![
        ("HELIX_PUBLIC_URL", front.url.clone()),
        ("HELIX_INLINE_MAX", "1024".to_owned()),
        ("HELIX_UPLOAD_PART_SIZE", part.to_string()),
    ];
    if let Some(s3) = &s3 {
        vars.push(("AWS_ENDPOINT_URL", s3.url.clone()));
    }
    let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let app = env.app_with(&vars).await.unwrap();
    let _server =
        helix_cli::serve::Server::start(std::sync::Arc::new(app), tokio::net::TcpListener::from_std(listener).unwrap());
    let watched = s3.as_ref().unwrap_or(&front);
    let part_puts = |from: usize| -> Vec<String> {
        watched.requests.lock().unwrap()[from..]
            .iter()
            .map(|h| h.lines().next().unwrap().to_owned())
            .filter(|l| l.starts_with("put ") && l.contains("/uploads/"))
            .filter(|l| l.contains("/parts/") || l.contains("partnumber="))
            .collect()
    };

    let state = env.dir.path().join("client-state");
    let registry = helix_cli::client::Registry::new(&front.url, Some(publisher.clone()))
        .unwrap()
        .with_state_dir(Some(state.clone()));
    let (ws, name, version) =
        (WorkspaceId::parse("team-a").unwrap(), BundleName::parse("huge").unwrap(), BundleName::parse("1").unwrap());
    let opts = helix_cli::transfer::Options { jobs: 2, quiet: true, inline_max: None };

    // Two parts go up, then the store stops answering part uploads: the push fails, the id is kept.
    // Parts go up 4 at a time: after the first refusal no part is started, those in flight finish. The
    // two let through are held until a refusal has been answered, so no slot frees before it (else a
    // fifth part could start, rightly, before any refusal came back).
    watched.part_uploads_left.store(2, std::sync::atomic::Ordering::SeqCst);
    watched.hold_parts_until_one_refused.store(true, std::sync::atomic::Ordering::SeqCst);
    let failed = helix_cli::transfer::push(&registry, &src, &ws, &name, &version, opts).await;
    watched.hold_parts_until_one_refused.store(false, std::sync::atomic::Ordering::SeqCst);
    assert!(failed.is_err(), "the third part was refused: {failed:?}");
    let first = part_puts(0).len();
    assert_eq!(first, 4.min(parts), "4 parts in flight (two let through, the rest refused), none after");
    let kept: Vec<_> = std::fs::read_dir(state.join("uploads")).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(kept.len(), 1, "the upload id is kept to resume");
    // Which two the store holds (the ones the proxy let through, whichever arrived first).
    let id = std::fs::read_to_string(&kept[0]).unwrap();
    let sha = part_digests(&big, part);
    let (status, held) = plan_parts(&env, &publisher, "team-a", &d, big.len(), &sha, json!({"upload_id": id})).await;
    assert_eq!(status, 200, "{held}");
    let stored: Vec<u64> = held["parts_stored"].as_array().unwrap().iter().map(|n| n.as_u64().unwrap()).collect();
    assert_eq!(stored.len(), 2, "the two parts let through were stored whole: {held}");

    watched.part_uploads_left.store(usize::MAX, std::sync::atomic::Ordering::SeqCst);
    let mark = watched.requests.lock().unwrap().len();
    let pushed = helix_cli::transfer::push(&registry, &src, &ws, &name, &version, opts).await.unwrap();
    let resent = part_puts(mark);
    assert_eq!(resent.len(), parts - 2, "only the parts not stored: {resent:#?}");
    for &n in &stored {
        let (local, s3) = (format!("/parts/{n}?"), format!("partnumber={n}&"));
        assert!(!resent.iter().any(|l| l.contains(&local) || l.contains(&s3)), "part {n} again: {resent:#?}");
    }
    assert_eq!(pushed["uploaded_files"], 1, "{pushed}");
    assert_eq!(std::fs::read_dir(state.join("uploads")).unwrap().count(), 0, "done: nothing left to resume");

    let out = env.dir.path().join("out");
    let direct = helix_cli::client::Registry::new(&env.url(""), Some(publisher.clone())).unwrap();
    helix_cli::transfer::pull(&direct, &ws, &name, &version, &out, opts).await.unwrap();
    assert_eq!(std::fs::read(out.join("big.bin")).unwrap(), big);
    assert!(linked(&env, &publisher, "team-a", &d).await);
}
