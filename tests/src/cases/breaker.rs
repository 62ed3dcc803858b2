//! Adversarial cases for the batch publish on the filesystem store (unnamed temp files, one hash per
//! blob) and the push in waves (issue 19, fifth session): concurrent batches of the same digests,
//! forged bytes racing the true ones, descriptors, a version registered with other content, a batch
//! refused in the middle of a push.

use std::collections::BTreeMap;

use helix_core::batch::frame;
use helix_core::domain::{BundleName, Digest, Role, WorkspaceId};
use serde_json::Value;

use super::unique_blob;
use crate::fault_proxy::FaultProxy;
use crate::{Backend, TestEnv};

async fn publish(env: &TestEnv, token: &str, ws: &str, body: Vec<u8>) -> (u16, Value) {
    let resp = super::batches::publish_batch(env, token, ws, body).await;
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// Descriptors of this process open on files under `dir` (an unnamed file reads `dir/tmp/#N (deleted)`).
fn open_fds_under(dir: &std::path::Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir("/proc/self/fd") else { return Vec::new() };
    entries
        .flatten()
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .filter(|t| t.starts_with(dir))
        .map(|t| t.display().to_string())
        .collect()
}

/// Eight requests at once, four into each of two workspaces, each a batch of the same 1,000 small
/// blobs (in different orders): every blob is `created` exactly once per workspace and `exists`
/// otherwise, nothing is refused or failed, one object per digest, no temp file, no descriptor kept.
/// Run it under `ulimit -n 256` / `512` too (the unnamed files' budget, named ones past it).
pub async fn concurrent_batches_of_the_same_digests_link_each_once_and_leave_nothing(b: Backend) {
    let env = TestEnv::start(b).await;
    let tokens = [env.token(Role::Publisher, "team-a").await, env.token(Role::Publisher, "team-b").await];
    let blobs: Vec<(Vec<u8>, Digest)> = (0..1000).map(|i| unique_blob(200 + (i * 37) % 3000)).collect();
    let stored = env.stored_objects().await;
    let fds_before = open_fds_under(&env.data_dir().join(helix_core::app::BLOB_DIR));
    let mut requests = Vec::new();
    let env_ref = &env;
    for r in 0..8usize {
        let mut items: Vec<(Digest, &[u8])> = blobs.iter().map(|(bytes, d)| (d.clone(), bytes.as_slice())).collect();
        items.rotate_left(r * 125);
        if r % 2 == 1 {
            items.reverse();
        }
        let body = frame::encode_publish(&items);
        let (token, ws) = (&tokens[r % 2], ["team-a", "team-b"][r % 2]);
        requests.push(async move { (ws, publish(env_ref, token, ws, body).await) });
    }
    let answers = futures_util::future::join_all(requests).await;
    let mut created: BTreeMap<(&str, String), usize> = BTreeMap::new();
    for (ws, (status, answer)) in &answers {
        assert_eq!(*status, 200, "{answer}");
        assert_eq!(answer["refused"], 0, "{answer}");
        for r in answer["results"].as_array().unwrap() {
            let n = created.entry((ws, r["digest"].as_str().unwrap().to_owned())).or_default();
            match r["status"].as_str().unwrap() {
                "created" => *n += 1,
                "exists" => {}
                other => panic!("{other}: {r}"),
            }
        }
    }
    assert_eq!(created.len(), 2000);
    let wrong: Vec<_> = created.iter().filter(|(_, n)| **n != 1).collect();
    assert!(wrong.is_empty(), "created once per workspace: {wrong:?}");
    assert_eq!(env.stored_objects().await, stored + 1000, "one object per digest");
    assert_eq!(env.temp_files(), 0, "no temp file left");
    let fds_after = open_fds_under(&env.data_dir().join(helix_core::app::BLOB_DIR));
    assert!(fds_after.len() <= fds_before.len(), "descriptors kept: {fds_before:?} before, {fds_after:?} after");
    for (bytes, d) in blobs.iter().step_by(97) {
        for ws in ["team-a", "team-b"] {
            let got = super::api::get_blob(&env, &tokens[(ws == "team-b") as usize], ws, &d.to_string(), "").await;
            assert_eq!(got.bytes().await.unwrap().to_vec(), *bytes);
        }
    }
}

/// Forged bytes under digests (stored for another workspace, linked here already, or stored
/// nowhere), in batches large enough for one `syncfs` (unnamed temp files), sent while the true bytes
/// of the same digests are being published by others: every forged blob is refused, none is linked
/// in the forger's workspace, and every stored object holds its digest's bytes.
pub async fn forged_bytes_racing_the_true_ones_link_nothing(b: Backend) {
    let env = TestEnv::start(b).await;
    let honest = env.token(Role::Publisher, "team-a").await;
    let forger = env.token(Role::Publisher, "team-b").await;
    let blobs: Vec<(Vec<u8>, Digest)> = (0..400).map(|i| unique_blob(300 + i)).collect();
    // Some linked in the forger's workspace already (the route must hash those itself).
    let pre: Vec<(Digest, &[u8])> = blobs[..50].iter().map(|(bytes, d)| (d.clone(), bytes.as_slice())).collect();
    assert_eq!(publish(&env, &forger, "team-b", frame::encode_publish(&pre)).await.0, 200);
    for round in 0..5 {
        let honest_items: Vec<(Digest, &[u8])> =
            blobs.iter().skip(50).map(|(bytes, d)| (d.clone(), bytes.as_slice())).collect();
        // The same size as the true bytes, one byte different.
        let forged: Vec<(Digest, Vec<u8>)> = blobs
            .iter()
            .map(|(bytes, d)| {
                let mut f = bytes.clone();
                f[round * 7 % bytes.len()] ^= 1;
                (d.clone(), f)
            })
            .collect();
        let forged_items: Vec<(Digest, &[u8])> = forged.iter().map(|(d, f)| (d.clone(), f.as_slice())).collect();
        let honest_body = frame::encode_publish(&honest_items);
        let forged_body = frame::encode_publish(&forged_items);
        let (h, f1, f2) = tokio::join!(
            publish(&env, &honest, "team-a", honest_body),
            publish(&env, &forger, "team-b", forged_body.clone()),
            publish(&env, &forger, "team-b", forged_body),
        );
        assert_eq!(h.0, 200, "{}", h.1);
        for (status, answer) in [f1, f2] {
            assert_eq!(status, 200, "{answer}");
            assert_eq!(answer["refused"], 400, "every forged blob refused: {answer}");
            assert!(answer["results"].as_array().unwrap().iter().all(|r| r["reason"] == "digest_mismatch"), "{answer}");
        }
    }
    let ws_b = WorkspaceId::parse("team-b").unwrap();
    for (bytes, d) in &blobs {
        let link = env.app.meta.blob_link(&ws_b, d).await.unwrap();
        assert_eq!(link.is_some(), blobs[..50].iter().any(|(_, p)| p == d), "{d}");
        let got = super::api::get_blob(&env, &honest, "team-a", &d.to_string(), "").await;
        if blobs[..50].iter().all(|(_, p)| p != d) {
            assert_eq!(got.bytes().await.unwrap().to_vec(), *bytes);
        }
    }
    assert_eq!(env.temp_files(), 0);
}

fn write_tree(dir: &std::path::Path, n: usize, salt: &str) {
    for i in 0..n {
        let sub = dir.join(format!("d{:02}", i % 13));
        std::fs::create_dir_all(&sub).unwrap();
        std::fs::write(sub.join(format!("f{i:05}")), format!("{salt} file {i} ").repeat(1 + i % 11)).unwrap();
    }
}

/// A version registered with other content: a push of 2,500 files (three waves of new digests) is
/// refused `version_exists` and sends no `missing-blobs`, no batch, no blob, no upload.
pub async fn a_push_onto_a_version_registered_with_other_content_sends_nothing(b: Backend) {
    let env = TestEnv::start(b).await;
    let publisher = env.token(Role::Publisher, "team-a").await;
    let (ws, name, version) =
        (WorkspaceId::parse("team-a").unwrap(), BundleName::parse("waves").unwrap(), BundleName::parse("1").unwrap());
    let opts = helix_cli::transfer::Options { jobs: 4, quiet: true, inline_max: None };
    let first = env.dir.path().join("first");
    write_tree(&first, 30, "first");
    let registry = helix_cli::client::Registry::new(&env.url(""), Some(publisher.clone())).unwrap();
    helix_cli::transfer::push(&registry, &first, &ws, &name, &version, opts).await.unwrap();

    let other = env.dir.path().join("other");
    write_tree(&other, 2500, "other");
    let proxy = FaultProxy::start(&env.url(""), "none", 0).await;
    let through = helix_cli::client::Registry::new(&proxy.url, Some(publisher.clone())).unwrap();
    let stored = env.stored_objects().await;
    let refused = helix_cli::transfer::push(&through, &other, &ws, &name, &version, opts).await.unwrap_err();
    assert!(refused.to_string().contains("version_exists"), "{refused}");
    let sent: Vec<String> =
        proxy.requests.lock().unwrap().iter().map(|h| h.lines().next().unwrap_or("").to_owned()).collect();
    assert!(
        !sent.iter().any(|l| l.contains("missing-blobs")
            || l.contains("blob-batches")
            || l.contains("/blobs/")
            || l.contains("/uploads")),
        "{sent:#?}"
    );
    assert_eq!(env.stored_objects().await, stored, "nothing stored");
}

/// A batch refused in the middle of a push (the registry frozen once the first batch has gone
/// through, while later waves still hash and queue): the push stops with the refusal within a bounded
/// time (no wave left waiting on a queue nobody reads), and no version is registered.
pub async fn a_batch_refused_in_the_middle_of_a_push_stops_it(b: Backend) {
    let env = TestEnv::start(b).await;
    let publisher = env.token(Role::Publisher, "team-a").await;
    let admin = env.token(Role::Admin, "*").await;
    let (ws, name, version) =
        (WorkspaceId::parse("team-a").unwrap(), BundleName::parse("refused").unwrap(), BundleName::parse("1").unwrap());
    let src = env.dir.path().join("src");
    write_tree(&src, 6000, "mid");
    let proxy = FaultProxy::start(&env.url(""), "none", 0).await;
    let registry = helix_cli::client::Registry::new(&proxy.url, Some(publisher.clone())).unwrap();
    let opts = helix_cli::transfer::Options { jobs: 2, quiet: true, inline_max: None };
    let requests = proxy.requests.clone();
    let freeze = async {
        loop {
            if requests.lock().unwrap().iter().any(|h| h.contains("blob-batches")) {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        }
        let body = serde_json::json!({"reason": "mid-push"});
        assert_eq!(super::api::post_json(&env, &admin, "/v1/admin/freeze", body).await.status(), 200);
    };
    let push = tokio::time::timeout(
        std::time::Duration::from_secs(120),
        helix_cli::transfer::push(&registry, &src, &ws, &name, &version, opts),
    );
    let (pushed, ()) = tokio::join!(push, freeze);
    let err = pushed.expect("the push ends").unwrap_err().to_string();
    assert!(err.contains("registry_frozen"), "{err}");
    let view = env
        .http
        .get(env.url("/v1/workspaces/team-a/bundles/refused/versions/1"))
        .bearer_auth(&publisher)
        .send()
        .await
        .unwrap();
    assert_eq!(view.status(), 404, "no version registered");
}

/// Batches cut off by the client (a timeout shorter than the batch takes: the server's request future
/// is dropped mid-way), and batches failing for want of descriptors (run under `ulimit -n 128`): no
/// temp file and no descriptor stays behind, and each batch sent again afterwards links every blob
/// with its bytes.
pub async fn batches_cut_off_or_starved_of_descriptors_leave_nothing_and_retry_cleanly(b: Backend) {
    let env = TestEnv::start(b).await;
    let token = env.token(Role::Publisher, "team-a").await;
    let blob_dir = env.data_dir().join(helix_core::app::BLOB_DIR);
    let sets: Vec<Vec<(Vec<u8>, Digest)>> =
        (0..6).map(|_| (0..1000).map(|i| unique_blob(100 + (i * 53) % 3500)).collect()).collect();
    let bodies: Vec<Vec<u8>> = sets
        .iter()
        .map(|set| frame::encode_publish(&set.iter().map(|(b, d)| (d.clone(), b.as_slice())).collect::<Vec<_>>()))
        .collect();
    let fds_before = open_fds_under(&blob_dir);
    let short = reqwest::Client::builder().timeout(std::time::Duration::from_millis(40)).build().unwrap();
    let cut = bodies.iter().map(|body| {
        short
            .post(env.url("/v1/workspaces/team-a/blob-batches"))
            .bearer_auth(&token)
            .header("content-type", frame::CONTENT_TYPE)
            .body(body.clone())
            .send()
    });
    let outcomes = futures_util::future::join_all(cut).await;
    let statuses: Vec<String> = outcomes
        .iter()
        .map(|o| match o {
            Ok(r) => r.status().to_string(),
            Err(e) => format!("cut: timeout={}", e.is_timeout()),
        })
        .collect();
    eprintln!("cut-off batches: {statuses:?}");
    // The blocking writes go on after the request is gone: wait for them to end.
    let mut waited = 0;
    while (env.temp_files() > 0 || open_fds_under(&blob_dir).len() > fds_before.len()) && waited < 200 {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        waited += 1;
    }
    assert_eq!(env.temp_files(), 0, "no temp file left by a request cut off");
    let fds = open_fds_under(&blob_dir);
    assert!(fds.len() <= fds_before.len(), "descriptors left: {fds:?}");

    // All at once (under a low `ulimit -n` some may fail for want of descriptors: a 503, nothing left).
    let at_once = bodies.iter().map(|body| publish(&env, &token, "team-a", body.clone()));
    for (status, answer) in futures_util::future::join_all(at_once).await {
        assert!(status == 200 || answer["reason"] == "blob_store_unavailable", "{status} {answer}");
        if status == 200 {
            assert_eq!(answer["refused"], 0, "{answer}");
        }
    }
    assert_eq!(env.temp_files(), 0, "no temp file left by a starved batch");
    let fds = open_fds_under(&blob_dir);
    assert!(fds.len() <= fds_before.len(), "descriptors left: {fds:?}");
    // One at a time: every blob linked with its bytes.
    for body in &bodies {
        let (status, answer) = publish(&env, &token, "team-a", body.clone()).await;
        assert_eq!(status, 200, "{answer}");
        assert_eq!(answer["refused"], 0, "{answer}");
    }
    for set in &sets {
        for (bytes, d) in set.iter().step_by(111) {
            let got = super::api::get_blob(&env, &token, "team-a", &d.to_string(), "").await;
            assert_eq!(got.bytes().await.unwrap().to_vec(), *bytes);
        }
    }
}

/// Files rewritten while a push of 3,000 files runs (one flipping between 10 bytes and 2 MiB, one
/// between two small contents of different lengths): the push either registers a version whose every
/// file pulls back verified, or fails naming the file that changed; it never hangs.
pub async fn files_rewritten_during_a_push_register_consistent_content_or_fail_naming_them(b: Backend) {
    let env = TestEnv::start(b).await;
    let publisher = env.token(Role::Publisher, "team-a").await;
    let ws = WorkspaceId::parse("team-a").unwrap();
    let registry = helix_cli::client::Registry::new(&env.url(""), Some(publisher.clone())).unwrap();
    let opts = helix_cli::transfer::Options { jobs: 3, quiet: true, inline_max: None };
    let mut outcomes = Vec::new();
    for round in 0..2 {
        let src = env.dir.path().join(format!("src{round}"));
        write_tree(&src, 600, &format!("round {round}"));
        let flip = src.join("d05/f00005");
        let small = src.join("d07/f00007");
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let writer = {
            let stop = stop.clone();
            let (flip, small) = (flip.clone(), small.clone());
            std::thread::spawn(move || {
                let big = vec![b'x'; 2 << 20];
                let mut i = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let _ = std::fs::write(&flip, if i.is_multiple_of(2) { &big[..] } else { &b"tiny flip!"[..] });
                    let _ = std::fs::write(&small, format!("small {i} ").repeat(1 + (i % 5) as usize));
                    i += 1;
                }
            })
        };
        let version = BundleName::parse(&format!("{round}")).unwrap();
        let name = BundleName::parse("changing").unwrap();
        let pushed = tokio::time::timeout(
            std::time::Duration::from_secs(120),
            helix_cli::transfer::push(&registry, &src, &ws, &name, &version, opts),
        )
        .await
        .expect("the push ends");
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        writer.join().unwrap();
        match pushed {
            Ok(answer) => {
                let out = env.dir.path().join(format!("out{round}"));
                let pulled = helix_cli::transfer::pull(&registry, &ws, &name, &version, &out, opts).await;
                assert!(pulled.is_ok(), "a registered version pulls back verified: {pulled:?}");
                outcomes.push(format!("ok {}", answer["uploaded_files"]));
            }
            Err(e) => {
                let e = e.to_string();
                assert!(e.contains("d05/f00005") || e.contains("d07/f00007"), "names the file: {e}");
                outcomes.push(format!("refused: {e}"));
            }
        }
    }
    eprintln!("{outcomes:#?}");
}
