//! Proof URLs of an export (docs/security.md, "Proof URLs"): served by the registry under a grant it
//! signed, without a token; nothing in the answer for a small file or the manifest dates the shared
//! object; every alteration of workspace, digest, manifest, expiry or signature is refused.

use helix_core::domain::{Digest, Role, WorkspaceId};
use helix_core::proofs::{Grant, signed_query};
use serde_json::{Value, json};

use super::api::{complete, plan, post_json, put_blob, upload_to};
use super::{expect_problem, unique_blob};
use crate::{Backend, TestEnv};

/// GET `url` without any credential; the status, the headers and the bytes.
async fn fetch_anonymous(env: &TestEnv, url: &str) -> (u16, reqwest::header::HeaderMap, Vec<u8>) {
    let resp = env.http.get(url).send().await.unwrap();
    let (status, headers) = (resp.status().as_u16(), resp.headers().clone());
    (status, headers, resp.bytes().await.unwrap().to_vec())
}

/// The answer for `digest` is the verified bytes, with no header from the store: no Last-Modified,
/// no `x-amz-*` (version id, checksums), and an ETag (if any) derived from the digest alone.
fn assert_reveals_nothing_of_the_store(headers: &reqwest::header::HeaderMap, bytes: &[u8], digest: &str) {
    assert_eq!(Digest::of(bytes).to_string(), digest);
    assert!(headers.get("last-modified").is_none(), "{headers:?}");
    assert!(!headers.keys().any(|k| k.as_str().starts_with("x-amz-")), "{headers:?}");
    if let Some(etag) = headers.get("etag") {
        assert_eq!(etag.to_str().unwrap(), format!("\"{digest}\""), "an ETag other than the digest: {headers:?}");
    }
}

pub async fn proof_urls_reveal_nothing_of_the_shared_object_and_hold_only_for_their_grant(b: Backend) {
    let env = TestEnv::start_with(b, &[("HELIX_GOVERNANCE_MODE", "off"), ("HELIX_INLINE_MAX", "1024")]).await;
    let victim = env.token(Role::Publisher, "team-b").await;
    let attacker = env.token(Role::Publisher, "team-a").await;
    let admin = env.token(Role::Admin, "*").await;

    // The victim stores a small file first, and one the attacker will never hold.
    let (small, small_d) = unique_blob(200);
    assert_eq!(put_blob(&env, &victim, "team-b", &small_d.to_string(), small.clone()).await.status(), 201);
    let (private, private_d) = unique_blob(300);
    assert_eq!(put_blob(&env, &victim, "team-b", &private_d.to_string(), private).await.status(), 201);

    // The attacker guesses the same bytes, adds a large file and one outside the bundle, and exports.
    assert_eq!(put_blob(&env, &attacker, "team-a", &small_d.to_string(), small).await.status(), 201);
    let (large, large_d) = unique_blob(5000);
    let (_, upload) = plan(&env, &attacker, "team-a", &large_d.to_string(), 5000, json!({})).await;
    assert!(upload_to(&env, &upload, large, true).await.status().is_success());
    assert_eq!(complete(&env, &attacker, "team-a", &large_d.to_string(), &upload).await.status(), 201);
    let (other, other_d) = unique_blob(100);
    assert_eq!(put_blob(&env, &attacker, "team-a", &other_d.to_string(), other).await.status(), 201);
    let files = json!([{"path": "large.bin", "digest": large_d, "size": 5000},
                       {"path": "small.txt", "digest": small_d, "size": 200}]);
    let manifest = json!({"schema": "helix.bundle.v1", "name": "guess", "version": "1", "files": files});
    let base = "/v1/workspaces/team-a/bundles/guess/versions/1";
    let url = env.url(base);
    let put = env.http.put(url).header("authorization", format!("Bearer {attacker}")).json(&manifest);
    let put = put.send().await.unwrap();
    assert_eq!(put.status(), 201, "{}", put.text().await.unwrap());
    let done = post_json(&env, &attacker, &format!("{base}/export"), json!({})).await;
    assert_eq!(done.status(), 200);
    let done: Value = done.json().await.unwrap();
    let proof = &done["proof"];
    let manifest_url = proof["manifest"]["url"].as_str().unwrap().to_owned();
    let large_url = proof["files"][0]["url"].as_str().unwrap().to_owned();
    let small_url = proof["files"][1]["url"].as_str().unwrap().to_owned();

    // Registry URLs (never the store's), served without a token, bytes verified, nothing dated.
    let registry = format!("{}/v1/proofs/team-a/", env.server.url());
    for u in [&manifest_url, &small_url, &large_url] {
        assert!(u.starts_with(&registry), "{u}");
    }
    let (status, headers, bytes) = fetch_anonymous(&env, &small_url).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&bytes));
    assert_reveals_nothing_of_the_store(&headers, &bytes, &small_d.to_string());
    let (status, headers, bytes) = fetch_anonymous(&env, &manifest_url).await;
    assert_eq!(status, 200);
    let version: Value = super::api::get(&env, &attacker, base).await.json().await.unwrap();
    assert_reveals_nothing_of_the_store(&headers, &bytes, version["manifest_digest"].as_str().unwrap());
    // A large file is a redirect to the store, living no longer than the grant (docs/security.md).
    let (status, headers, _) = fetch_anonymous(&env, &large_url).await;
    assert_eq!(status, 307);
    let (_, _, bytes) = fetch_anonymous(&env, headers["location"].to_str().unwrap()).await;
    assert_eq!(Digest::of(&bytes), large_d);

    // Every alteration is refused, with or without a token, and nothing is served.
    let query = small_url.split_once('?').unwrap().1.to_owned();
    let param = |name: &str| query.split('&').find_map(|p| p.strip_prefix(&format!("{name}="))).unwrap().to_owned();
    let (manifest_d, exp, sig) = (param("manifest"), param("exp"), param("sig"));
    let at = |ws: &str, d: &Digest, q: &str| env.url(&format!("/v1/proofs/{ws}/{d}?{q}"));
    let mut flipped = sig.clone().into_bytes();
    flipped[10] = if flipped[10] == b'A' { b'B' } else { b'A' };
    let flipped = String::from_utf8(flipped).unwrap();
    let forged = [
        // Another workspace that holds the same bytes: the grant names team-a.
        at("team-b", &small_d, &query),
        // A blob only linked in team-b, and one of team-a outside the granted manifest.
        at("team-a", &private_d, &query),
        at("team-b", &private_d, &query),
        at("team-a", &other_d, &query),
        // Expiry, manifest and signature altered, missing or garbage.
        at("team-a", &small_d, &format!("manifest={manifest_d}&exp={}&sig={sig}", exp.parse::<i64>().unwrap() + 3600)),
        at("team-a", &small_d, &format!("manifest={other_d}&exp={exp}&sig={sig}")),
        at("team-a", &small_d, &format!("manifest={manifest_d}&exp={exp}&sig={flipped}")),
        at("team-a", &small_d, &format!("manifest={manifest_d}&exp={exp}")),
        at("team-a", &small_d, &format!("manifest={manifest_d}&exp={exp}&sig=%00%ff")),
        at("team-a", &small_d, &format!("manifest=sha256:zz&exp={exp}&sig={sig}")),
        at("team-a", &small_d, &format!("manifest={manifest_d}&exp=tomorrow&sig={sig}")),
        at("team-a", &small_d, ""),
    ];
    for url in &forged {
        expect_problem(env.http.get(url).send().await.unwrap(), 403, "proof_invalid").await;
        let with_token = env.http.get(url).header("authorization", format!("Bearer {admin}"));
        expect_problem(with_token.send().await.unwrap(), 403, "proof_invalid").await;
    }

    // A grant the registry really signed, but expired: refused as expired.
    let grant = Grant {
        ws: WorkspaceId::parse("team-a").unwrap(),
        manifest: Digest::parse(&manifest_d).unwrap(),
        expires: helix_core::domain::time::now_unix() - 1,
    };
    let expired = signed_query(&env.app, &grant).await.unwrap();
    expect_problem(env.http.get(at("team-a", &small_d, &expired)).send().await.unwrap(), 403, "proof_expired").await;
    // ... and the same grant, still live, serves: the refusal above was the expiry alone.
    let live = signed_query(&env.app, &Grant { expires: grant.expires + 120, ..grant }).await.unwrap();
    assert_eq!(env.http.get(at("team-a", &small_d, &live)).send().await.unwrap().status(), 200);
    // Only GET: the route changes nothing.
    let posted = env.http.post(&small_url).send().await.unwrap();
    assert_eq!(posted.status(), 405);

    // A suspended workspace's proof URLs stop at once (a grant is scoped to its workspace); a forged
    // one still learns only that it is invalid; lifted, the same URL serves again.
    let suspend = "/v1/admin/workspaces/team-a/suspend";
    assert_eq!(post_json(&env, &admin, suspend, json!({"reason": "incident"})).await.status(), 200);
    expect_problem(env.http.get(&small_url).send().await.unwrap(), 403, "workspace_suspended").await;
    expect_problem(env.http.get(&forged[6]).send().await.unwrap(), 403, "proof_invalid").await;
    let unsuspend = "/v1/admin/workspaces/team-a/unsuspend";
    assert_eq!(post_json(&env, &admin, unsuspend, json!({"reason": "over"})).await.status(), 200);
    assert_eq!(env.http.get(&small_url).send().await.unwrap().status(), 200);
}
