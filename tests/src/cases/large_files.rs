//! Files of any size (issue 19 §3): ranges of a blob on both paths (inline from the registry, and
//! the presigned GET a large blob is redirected to), and `helix pull` resuming inside a file.

use helix_core::domain::{BundleName, Role, WorkspaceId};
use serde_json::{Value, json};

use super::api::{bearer, complete, get_blob, post_json, put_blob, upload_to};
use super::{expect_problem, unique_blob};
use crate::fault_proxy::FaultProxy;
use crate::{Backend, TestEnv, emulator_endpoint};

async fn ranged(env: &TestEnv, url: &str, token: Option<&str>, range: &str) -> reqwest::Response {
    let mut req = env.http.get(url).header("range", range);
    if let Some(t) = token {
        req = req.header("authorization", bearer(t));
    }
    req.send().await.unwrap()
}

/// One range of a blob is answered 206 with `Content-Range`, inline (verified whole, then cut) and
/// from the presigned GET a large blob is redirected to; a range past the end is 416; a range the
/// server does not serve (several, malformed) is ignored and the whole blob comes back.
pub async fn ranges_of_a_blob_are_served_inline_and_through_the_presigned_get(b: Backend) {
    let env = TestEnv::start_with(b, &[("HELIX_INLINE_MAX", "1024")]).await;
    let publisher = env.token(Role::Publisher, "team-a").await;

    let (small, d) = unique_blob(1000);
    assert_eq!(put_blob(&env, &publisher, "team-a", &d.to_string(), small.clone()).await.status(), 201);
    let url = env.url(&format!("/v1/workspaces/team-a/blobs/{d}"));
    let head = env.http.head(&url).header("authorization", bearer(&publisher)).send().await.unwrap();
    assert_eq!(head.headers()["accept-ranges"], "bytes");
    for (range, want, content_range) in [
        ("bytes=10-19", &small[10..20], "bytes 10-19/1000"),
        ("bytes=990-", &small[990..], "bytes 990-999/1000"),
        ("bytes=-5", &small[995..], "bytes 995-999/1000"),
        ("bytes=900-5000", &small[900..], "bytes 900-999/1000"),
    ] {
        let got = ranged(&env, &url, Some(&publisher), range).await;
        assert_eq!(got.status(), 206, "{range}");
        assert_eq!(got.headers()["content-range"], content_range, "{range}");
        assert_eq!(got.headers()["content-length"], want.len().to_string().as_str());
        assert_eq!(got.bytes().await.unwrap().to_vec(), want, "{range}");
    }
    for ignored in ["bytes=0-1,5-6", "bytes=9-2", "items=0-1"] {
        let got = ranged(&env, &url, Some(&publisher), ignored).await;
        assert_eq!(got.status(), 200, "{ignored}");
        assert_eq!(got.bytes().await.unwrap().to_vec(), small, "{ignored}");
    }
    let past = ranged(&env, &url, Some(&publisher), "bytes=1000-").await;
    assert_eq!(past.headers()["content-range"], "bytes */1000");
    expect_problem(past, 416, "range_not_satisfiable").await;
    // The rules of a read hold first: another workspace's token learns nothing from a range.
    let other = env.token(Role::Viewer, "team-b").await;
    expect_problem(ranged(&env, &url, Some(&other), "bytes=0-9").await, 403, "forbidden_workspace").await;

    // A large blob: the redirect is the same, the presigned GET serves the range.
    let (large, d) = unique_blob(5000);
    let resp =
        post_json(&env, &publisher, "/v1/workspaces/team-a/uploads", json!({"digest": d.to_string(), "size": 5000}))
            .await;
    let plan: Value = resp.json().await.unwrap();
    assert!(upload_to(&env, &plan, large.clone(), true).await.status().is_success());
    assert_eq!(complete(&env, &publisher, "team-a", &d.to_string(), &plan).await.status(), 201);
    let redirect = get_blob(&env, &publisher, "team-a", &d.to_string(), "").await;
    assert_eq!(redirect.status(), 307);
    let location = redirect.headers()["location"].to_str().unwrap().to_owned();
    let got = ranged(&env, &location, None, "bytes=4000-").await;
    assert_eq!(got.status(), 206);
    assert_eq!(got.headers()["content-range"], "bytes 4000-4999/5000");
    assert_eq!(got.bytes().await.unwrap().to_vec(), &large[4000..]);
    let got = ranged(&env, &location, None, "bytes=-100").await;
    assert_eq!(got.status(), 206);
    assert_eq!(got.bytes().await.unwrap().to_vec(), &large[4900..]);
    assert_eq!(ranged(&env, &location, None, "bytes=5000-").await.status(), 416);
}

/// The registry a pull goes through in `a_pull_interrupted_inside_a_file_resumes_…`: a second server
/// on the same resources whose every answer passes a proxy, the presigned GETs too (on the embedded
/// backend they point at the server's public URL; on the emulator at the S3 endpoint).
struct Watched {
    _server: helix_cli::serve::Server,
    front: FaultProxy,
    s3: Option<FaultProxy>,
}

impl Watched {
    async fn start(env: &TestEnv) -> Watched {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let front = FaultProxy::start(&format!("http://{}", listener.local_addr().unwrap()), "none", 0).await;
        let s3 = match env.backend {
            Backend::Embedded => None,
            Backend::Emulator => Some(FaultProxy::start(&emulator_endpoint(), "none", 0).await),
        };
        let mut vars = vec![("HELIX_PUBLIC_URL", front.url.as_str())];
        if let Some(s3) = &s3 {
            vars.push(("AWS_ENDPOINT_URL", s3.url.as_str()));
        }
        let app = env.app_with(&vars).await.unwrap();
        let server = helix_cli::serve::Server::start(
            std::sync::Arc::new(app),
            tokio::net::TcpListener::from_std(listener).unwrap(),
        );
        Watched { _server: server, front, s3 }
    }

    fn proxies(&self) -> Vec<&FaultProxy> {
        std::iter::once(&self.front).chain(self.s3.as_ref()).collect()
    }

    /// The next answer longer than `bytes` is cut there, wherever it passes.
    fn cut_next_download_at(&self, bytes: usize) {
        for p in self.proxies() {
            p.cut_next_long_response.store(bytes, std::sync::atomic::Ordering::SeqCst);
        }
    }

    fn uncut(&self) {
        self.cut_next_download_at(0);
    }

    /// How many answers each proxy has sent so far (for `since`).
    fn mark(&self) -> Vec<usize> {
        self.proxies().iter().map(|p| p.responses.lock().unwrap().len()).collect()
    }

    /// Every answer since `mark`: (request head, bytes sent), from every proxy.
    fn since(&self, mark: &[usize]) -> Vec<(String, usize)> {
        let proxies = self.proxies();
        proxies.iter().zip(mark).flat_map(|(p, from)| p.responses.lock().unwrap()[*from..].to_vec()).collect()
    }
}

/// `helix pull` interrupted inside a large file keeps what arrived; the next pull hashes it again,
/// asks for the rest by range (through the registry's redirect, to the presigned GET) and places the
/// file only once all of it verifies. Kept bytes that are wrong fail that verification, are removed,
/// and the pull after that fetches the file whole.
pub async fn a_pull_interrupted_inside_a_file_resumes_by_range_and_fetches_only_the_rest(b: Backend) {
    const SIZE: usize = 300_000;
    let env = TestEnv::start_with(b, &[("HELIX_INLINE_MAX", "1024")]).await;
    let publisher = env.token(Role::Publisher, "team-a").await;
    let src = env.dir.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    let (big, d) = unique_blob(SIZE);
    std::fs::write(src.join("big.bin"), &big).unwrap();
    let (ws, name, version) =
        (WorkspaceId::parse("team-a").unwrap(), BundleName::parse("large").unwrap(), BundleName::parse("1").unwrap());
    let opts = helix_cli::transfer::Options { jobs: 2, quiet: true, inline_max: None };
    let direct = helix_cli::client::Registry::new(&env.url(""), Some(publisher.clone())).unwrap();
    helix_cli::transfer::push(&direct, &src, &ws, &name, &version, opts).await.unwrap();

    let watched = Watched::start(&env).await;
    let registry = helix_cli::client::Registry::new(&watched.front.url, Some(publisher.clone())).unwrap();
    let out = env.dir.path().join("out");
    let partial = out.join(helix_cli::transfer::resumable_name("big.bin", &d));

    // Cut a third of the way into the file: the pull fails, what arrived is kept.
    watched.cut_next_download_at(SIZE / 3);
    let failed = helix_cli::transfer::pull(&registry, &ws, &name, &version, &out, opts).await;
    assert!(failed.is_err(), "the download was cut: {failed:?}");
    assert!(!out.join("big.bin").exists(), "nothing is placed before it is whole and verified");
    let kept = std::fs::metadata(&partial).expect("the interrupted download is kept").len() as usize;
    assert!(kept > 0 && kept < SIZE, "kept {kept} bytes");
    assert_eq!(std::fs::read(&partial).unwrap(), &big[..kept]);

    watched.uncut();
    let before = watched.mark();
    let pulled = helix_cli::transfer::pull(&registry, &ws, &name, &version, &out, opts).await.unwrap();
    assert_eq!(pulled["downloaded_files"], 1, "{pulled}");
    assert_eq!(std::fs::read(out.join("big.bin")).unwrap(), big);
    assert!(!partial.exists(), "the kept bytes became the file");
    let answers = watched.since(&before);
    let asked = format!("range: bytes={kept}-");
    let ranged: Vec<&(String, usize)> = answers.iter().filter(|(head, _)| head.contains(&asked)).collect();
    assert!(!ranged.is_empty(), "the rest was asked for by range: {answers:#?}");
    let largest = answers.iter().map(|(_, n)| *n).max().unwrap();
    assert!(largest < SIZE - kept + 4096, "only the rest came: {largest} bytes in one answer, {kept} were kept");
    // Every answer to a GET of the blob (the registry's redirect and the presigned GET), not the
    // emulator's DynamoDB and KMS answers that share its proxy.
    let blob_gets: Vec<(&str, usize)> = answers
        .iter()
        .filter(|(head, _)| head.starts_with("get ") && head.lines().next().unwrap().contains("/blobs/"))
        .map(|(head, n)| (head.lines().next().unwrap(), *n))
        .collect();
    let total: usize = blob_gets.iter().map(|(_, n)| *n).sum();
    assert!(
        total < SIZE - kept + 4096,
        "the resumed pull moved {total} bytes of the blob ({kept} of {SIZE} were kept): {blob_gets:#?}"
    );

    // Kept bytes that are not the file's: the resumed file fails verification and is not placed, the
    // kept bytes are removed, and the next pull fetches the whole file.
    let out = env.dir.path().join("out-2");
    let partial = out.join(helix_cli::transfer::resumable_name("big.bin", &d));
    watched.cut_next_download_at(SIZE / 2);
    assert!(helix_cli::transfer::pull(&registry, &ws, &name, &version, &out, opts).await.is_err());
    watched.uncut();
    let kept = std::fs::metadata(&partial).unwrap().len() as usize;
    std::fs::write(&partial, vec![b'x'; kept]).unwrap();
    let refused = helix_cli::transfer::pull(&registry, &ws, &name, &version, &out, opts).await.unwrap_err();
    assert!(refused.to_string().contains("digest_mismatch"), "{refused}");
    assert!(!out.join("big.bin").exists() && !partial.exists(), "wrong bytes are neither placed nor kept");
    helix_cli::transfer::pull(&registry, &ws, &name, &version, &out, opts).await.unwrap();
    assert_eq!(std::fs::read(out.join("big.bin")).unwrap(), big);
}
