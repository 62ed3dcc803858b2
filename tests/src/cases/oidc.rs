//! OIDC end to end with an independent issuer: an RSA key generated here, JWKS and discovery
//! served from 127.0.0.1, tokens signed here; and the attacks a JWT verifier must refuse.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rsa::{KeyPair, KeySize};
use aws_lc_rs::signature::KeyPair as _;
use base64::Engine;
use helix_core::domain::Role;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

use super::{closed_port_url, expect_problem, unique_blob};
use crate::{Backend, TestEnv};

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn now() -> i64 {
    helix_core::domain::time::now_unix()
}

/// An RSA signing key with its JWK.
pub struct SigningKey {
    pub kid: String,
    pub encoding: EncodingKey,
    pub jwk: Value,
    pub spki_der: Vec<u8>,
}

impl SigningKey {
    pub fn generate(kid: &str) -> SigningKey {
        let pair = KeyPair::generate(KeySize::Rsa2048).unwrap();
        let pkcs8_der = AsDer::<aws_lc_rs::encoding::Pkcs8V1Der>::as_der(&pair).unwrap();
        let info = pkcs8::PrivateKeyInfoRef::try_from(pkcs8_der.as_ref()).unwrap();
        let encoding = EncodingKey::from_rsa_der(info.private_key.as_bytes());
        let public = pair.public_key();
        let jwk = json!({
            "kty": "RSA", "use": "sig", "alg": "RS256", "kid": kid,
            "n": b64(public.modulus().big_endian_without_leading_zero()),
            "e": b64(public.exponent().big_endian_without_leading_zero()),
        });
        let spki_der = AsDer::<aws_lc_rs::encoding::PublicKeyX509Der>::as_der(public).unwrap().as_ref().to_vec();
        SigningKey { kid: kid.into(), encoding, jwk, spki_der }
    }
}

/// A minimal OIDC issuer on 127.0.0.1: discovery document and JWKS, counting JWKS fetches.
pub struct Issuer {
    pub url: String,
    pub key: SigningKey,
    pub keys: Arc<std::sync::Mutex<Vec<Value>>>,
    pub jwks_fetches: Arc<AtomicUsize>,
    /// While set, the JWKS endpoint answers 500 (an IdP outage).
    pub failing: Arc<std::sync::atomic::AtomicBool>,
    /// While set, the JWKS endpoint takes 10 s to answer (longer than the verifier waits).
    pub slow: Arc<std::sync::atomic::AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Issuer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Issuer {
    pub async fn start() -> Issuer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let key = SigningKey::generate("key-1");
        let keys = Arc::new(std::sync::Mutex::new(vec![key.jwk.clone()]));
        let jwks_fetches = Arc::new(AtomicUsize::new(0));
        let discovery = json!({"issuer": url, "jwks_uri": format!("{url}/jwks.json")});
        let failing = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let slow = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (k, f, down, lag) = (keys.clone(), jwks_fetches.clone(), failing.clone(), slow.clone());
        let discovery = discovery.to_string();
        let json = |body: String| ([(axum::http::header::CONTENT_TYPE, "application/json")], body);
        let app = axum::Router::new()
            .route(
                "/.well-known/openid-configuration",
                axum::routing::get(move || {
                    let body = discovery.clone();
                    async move { json(body) }
                }),
            )
            .route(
                "/jwks.json",
                axum::routing::get(move || {
                    f.fetch_add(1, Ordering::SeqCst);
                    let status = if down.load(Ordering::SeqCst) {
                        axum::http::StatusCode::INTERNAL_SERVER_ERROR
                    } else {
                        axum::http::StatusCode::OK
                    };
                    let body = json!({"keys": k.lock().unwrap().clone()}).to_string();
                    let delay = lag.load(Ordering::SeqCst);
                    async move {
                        if delay {
                            tokio::time::sleep(std::time::Duration::from_secs(10)).await;
                        }
                        (status, json(body))
                    }
                }),
            );
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Issuer { url, key, keys, jwks_fetches, failing, slow, task }
    }

    pub fn claims(&self, role: &str, ws: &str) -> Value {
        json!({
            "iss": self.url, "aud": "helix", "sub": "oidc-user-1", "exp": now() + 300, "nbf": now() - 5,
            "iat": now(), "helix_role": role, "helix_workspace": ws,
        })
    }

    pub fn sign_with(&self, key: &SigningKey, claims: &Value) -> String {
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(key.kid.clone());
        jsonwebtoken::encode(&header, claims, &key.encoding).unwrap()
    }

    pub fn sign(&self, claims: &Value) -> String {
        self.sign_with(&self.key, claims)
    }
}

async fn oidc_env(b: Backend, issuer: &Issuer, extra: &[(&str, &str)]) -> TestEnv {
    let mut vars = vec![("HELIX_OIDC_ISSUER", issuer.url.as_str()), ("HELIX_OIDC_AUDIENCE", "helix")];
    vars.extend_from_slice(extra);
    TestEnv::start_with(b, &vars).await
}

async fn whoami(env: &TestEnv, bearer: &str) -> reqwest::Response {
    env.http.get(env.url("/v1/whoami")).header("authorization", format!("Bearer {bearer}")).send().await.unwrap()
}

pub async fn oidc_tokens_from_a_local_issuer_drive_the_registry(b: Backend) {
    let issuer = Issuer::start().await;
    let env = oidc_env(b, &issuer, &[]).await;
    let publisher = issuer.sign(&issuer.claims("publisher", "team-a"));
    let me: Value = whoami(&env, &publisher).await.json().await.unwrap();
    assert_eq!(
        (me["kind"].as_str(), me["role"].as_str(), me["workspace_id"].as_str()),
        (Some("oidc"), Some("publisher"), Some("team-a"))
    );

    let (bytes, d) = unique_blob(64);
    let put = |bearer: String, ws: &'static str| {
        let (http, url, body) = (env.http.clone(), env.url(&format!("/v1/workspaces/{ws}/blobs/{d}")), bytes.clone());
        async move { http.put(url).header("authorization", format!("Bearer {bearer}")).body(body).send().await.unwrap() }
    };
    assert_eq!(put(publisher.clone(), "team-a").await.status(), 201);
    let events = env.blob_events("team-a").await;
    assert_eq!(events[0].actor, "oidc-user-1@oidc:oidc-user-1");

    let viewer = issuer.sign(&issuer.claims("viewer", "team-a"));
    expect_problem(put(viewer, "team-a").await, 403, "insufficient_role").await;
    expect_problem(put(publisher.clone(), "team-b").await, 403, "forbidden_workspace").await;
    let rotate = env
        .http
        .post(env.url("/v1/tokens/rotate"))
        .header("authorization", format!("Bearer {publisher}"))
        .send()
        .await
        .unwrap();
    expect_problem(rotate, 400, "invalid_request").await;
    let api = env.token(Role::Viewer, "team-a").await;
    assert_eq!(whoami(&env, &api).await.status(), 200, "API tokens work beside OIDC");
}

pub async fn jwt_attacks_are_refused_with_reason(b: Backend) {
    let issuer = Issuer::start().await;
    let env = oidc_env(b, &issuer, &[]).await;
    let good = issuer.claims("admin", "*");
    let with = |k: &str, v: Value| {
        let mut c = good.clone();
        c[k] = v;
        c
    };
    let header_b64 = |h: Value| b64(h.to_string().as_bytes());
    let payload = b64(good.to_string().as_bytes());
    let valid = issuer.sign(&good);
    let mut parts: Vec<&str> = valid.split('.').collect();
    let admin_payload = b64(with("sub", json!("mallory")).to_string().as_bytes());
    parts[1] = &admin_payload;
    let tampered = parts.join(".");
    let mut hs = Header::new(Algorithm::HS256);
    hs.kid = Some(issuer.key.kid.clone());
    let hs256_with_public_key =
        jsonwebtoken::encode(&hs, &good, &EncodingKey::from_secret(&issuer.key.spki_der)).unwrap();
    let impostor = SigningKey::generate("key-1");

    let cases: Vec<(&str, String, &str)> = vec![
        ("alg none", format!("{}.{payload}.", header_b64(json!({"alg": "none", "kid": "key-1"}))), "token_invalid"),
        ("HS256 keyed with the RSA public key", hs256_with_public_key, "token_invalid"),
        ("wrong iss", issuer.sign(&with("iss", json!("https://evil.example"))), "token_invalid"),
        ("wrong aud", issuer.sign(&with("aud", json!("someone-else"))), "token_invalid"),
        ("expired beyond leeway", issuer.sign(&with("exp", json!(now() - 120))), "token_expired"),
        ("nbf in the future", issuer.sign(&with("nbf", json!(now() + 600))), "token_invalid"),
        ("unknown kid", issuer.sign_with(&SigningKey::generate("key-unknown"), &good), "token_invalid"),
        ("same kid, another key", issuer.sign_with(&impostor, &good), "token_invalid"),
        ("tampered payload", tampered, "token_invalid"),
        ("role claim not a role", issuer.sign(&with("helix_role", json!("root"))), "token_invalid"),
        ("no workspace claim", issuer.sign(&with("helix_workspace", Value::Null)), "token_invalid"),
        ("garbage", "a.b.c".into(), "token_invalid"),
    ];
    for (name, jwt, reason) in cases {
        let body = expect_problem(whoami(&env, &jwt).await, 401, reason).await;
        assert!(!body.to_string().contains(&jwt), "{name}: the JWT is not echoed");
    }
    assert_eq!(whoami(&env, &issuer.sign(&with("exp", json!(now() - 30)))).await.status(), 200, "within 60 s leeway");
    assert_eq!(whoami(&env, &valid).await.status(), 200);
}

pub async fn unknown_kids_refetch_the_jwks_at_most_once_per_interval(b: Backend) {
    let issuer = Issuer::start().await;
    let env = oidc_env(b, &issuer, &[]).await;
    assert_eq!(whoami(&env, &issuer.sign(&issuer.claims("viewer", "team-a"))).await.status(), 200);
    assert_eq!(issuer.jwks_fetches.load(Ordering::SeqCst), 1);
    let stranger = SigningKey::generate("key-2");
    for _ in 0..5 {
        expect_problem(
            whoami(&env, &issuer.sign_with(&stranger, &issuer.claims("viewer", "team-a"))).await,
            401,
            "token_invalid",
        )
        .await;
    }
    assert_eq!(issuer.jwks_fetches.load(Ordering::SeqCst), 1, "cached across requests; no refetch within the interval");

    // With no interval, a key the issuer has just published is picked up on first sight.
    let eager = oidc_env(b, &issuer, &[("HELIX_OIDC_REFETCH_SECONDS", "0")]).await;
    issuer.keys.lock().unwrap().push(stranger.jwk.clone());
    assert_eq!(whoami(&eager, &issuer.sign_with(&stranger, &issuer.claims("viewer", "team-a"))).await.status(), 200);
}

pub async fn idp_outage_refuses_jwts_with_503_and_api_tokens_still_work(b: Backend) {
    let issuer = Issuer::start().await;
    let dead = closed_port_url();
    let env = TestEnv::start_with(b, &[("HELIX_OIDC_ISSUER", &dead), ("HELIX_OIDC_AUDIENCE", "helix")]).await;
    let mut claims = issuer.claims("viewer", "team-a");
    claims["iss"] = json!(dead);
    expect_problem(whoami(&env, &issuer.sign(&claims)).await, 503, "idp_unavailable").await;
    let api = env.token(Role::Viewer, "team-a").await;
    assert_eq!(whoami(&env, &api).await.status(), 200);
}

/// A full run with every kind of credential, good and bad; then not one secret or JWT may appear in
/// any log line (of the whole test process) or error body.
pub async fn logs_and_error_bodies_never_contain_a_secret_or_jwt(b: Backend) {
    let issuer = Issuer::start().await;
    let env = oidc_env(b, &issuer, &[]).await;
    let admin = env.token(Role::Admin, "*").await;
    let mut secrets = vec![admin.clone()];
    let mut bodies = Vec::new();
    let call = |method: &str, path: &str, bearer: &str, body: Option<Value>| {
        let mut req = env
            .http
            .request(method.parse().unwrap(), env.url(path))
            .header("authorization", format!("Bearer {bearer}"));
        if let Some(b) = body {
            req = req.json(&b);
        }
        req.send()
    };
    let issued: Value =
        call("POST", "/v1/tokens", &admin, Some(json!({"user": "ada", "role": "publisher", "workspace_id": "team-a"})))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
    let ada = issued["token"].as_str().unwrap().to_owned();
    secrets.push(ada.clone());
    let rotated: Value = call("POST", "/v1/tokens/rotate", &ada, None).await.unwrap().json().await.unwrap();
    let ada2 = rotated["token"].as_str().unwrap().to_owned();
    secrets.push(ada2.clone());
    let mut flipped = ada2.clone();
    flipped.replace_range(10..11, if &ada2[10..11] == "A" { "B" } else { "A" });
    let jwt = issuer.sign(&issuer.claims("publisher", "team-a"));
    let expired = issuer.sign(&json!({"iss": issuer.url, "aud": "helix", "sub": "x", "exp": now() - 600}));
    let wrong_ws = issuer.sign(&issuer.claims("publisher", "team-b"));
    secrets.extend([flipped.clone(), jwt.clone(), expired.clone(), wrong_ws.clone()]);
    let (bytes, d) = unique_blob(32);
    for bearer in [&ada, &ada2, &flipped, &jwt, &expired, &wrong_ws, &"hlx_short".to_owned()] {
        let resp = env
            .http
            .put(env.url(&format!("/v1/workspaces/team-a/blobs/{d}")))
            .header("authorization", format!("Bearer {bearer}"))
            .body(bytes.clone())
            .send()
            .await
            .unwrap();
        bodies.push(resp.text().await.unwrap());
        bodies.push(call("GET", "/v1/whoami", bearer, None).await.unwrap().text().await.unwrap());
    }
    let resp = call("GET", "/v1/tokens", &admin, None).await.unwrap();
    let request_id = resp.headers()["x-request-id"].to_str().unwrap().to_owned();
    bodies.push(resp.text().await.unwrap());

    let logs = crate::captured_logs();
    assert!(logs.contains(&request_id), "the capture sees this test's request lines");
    for secret in &secrets {
        assert!(!logs.contains(secret.as_str()), "a secret reached the logs");
        for body in &bodies {
            assert!(!body.contains(secret.as_str()), "a secret reached an error or list body: {body}");
        }
        // Not even a recognisable part of a JWT (its signature segment).
        if let Some(sig) = secret.rsplit('.').next().filter(|s| s.len() > 20) {
            assert!(!logs.contains(sig), "a JWT signature reached the logs");
        }
    }
}

/// While no key set is cached and the IdP fails, a flood of (forged) JWTs costs the IdP one request:
/// fetches are single-flight and a failure is cached for a few seconds.
pub async fn forged_jwts_during_an_idp_outage_cause_one_outbound_fetch(b: Backend) {
    let issuer = Issuer::start().await;
    issuer.failing.store(true, Ordering::SeqCst);
    let env = oidc_env(b, &issuer, &[("HELIX_OIDC_REFETCH_SECONDS", "0")]).await;
    let forger = SigningKey::generate("forged");
    let forged = issuer.sign_with(&forger, &issuer.claims("admin", "*"));
    let flood = (0..32).map(|_| {
        let (http, url, auth) = (env.http.clone(), env.url("/v1/whoami"), format!("Bearer {forged}"));
        tokio::spawn(async move { http.get(url).header("authorization", auth).send().await.unwrap() })
    });
    for resp in futures_util::future::join_all(flood).await {
        expect_problem(resp.unwrap(), 503, "idp_unavailable").await;
    }
    for _ in 0..8 {
        expect_problem(whoami(&env, &forged).await, 503, "idp_unavailable").await;
    }
    assert_eq!(issuer.jwks_fetches.load(Ordering::SeqCst), 1, "one outbound fetch for 40 requests");
}

/// With keys cached, a slow IdP and a flood of JWTs under unknown key ids (refetching allowed at any
/// time): one fetch is in flight at a time, failures are remembered, and a JWT whose key is cached
/// is answered at once, never queued behind the fetch.
pub async fn a_slow_idp_never_delays_jwts_whose_key_is_cached(b: Backend) {
    let issuer = Issuer::start().await;
    let env = oidc_env(b, &issuer, &[("HELIX_OIDC_REFETCH_SECONDS", "0")]).await;
    let valid = issuer.sign(&issuer.claims("viewer", "team-a"));
    assert_eq!(whoami(&env, &valid).await.status(), 200);
    assert_eq!(issuer.jwks_fetches.load(Ordering::SeqCst), 1);
    issuer.slow.store(true, Ordering::SeqCst);
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let forger = SigningKey::generate("unknown");
    let forged = issuer.sign_with(&forger, &issuer.claims("admin", "*"));
    let flood: Vec<_> = (0..30)
        .map(|_| {
            let (http, url, auth) = (env.http.clone(), env.url("/v1/whoami"), format!("Bearer {forged}"));
            tokio::spawn(async move { http.get(url).header("authorization", auth).send().await.unwrap() })
        })
        .collect();
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let started = std::time::Instant::now();
    assert_eq!(whoami(&env, &valid).await.status(), 200);
    assert!(
        started.elapsed() < std::time::Duration::from_secs(2),
        "queued behind a 3 s fetch: {:?}",
        started.elapsed()
    );
    for resp in futures_util::future::join_all(flood).await {
        expect_problem(resp.unwrap(), 401, "token_invalid").await;
    }
    assert_eq!(issuer.jwks_fetches.load(Ordering::SeqCst), 2, "one fetch for the whole flood");
}

/// A suspended workspace refuses JWTs as it refuses API tokens, reads included (the switch is read
/// for the JWT's workspace once it is verified); another workspace's JWTs go on; unsuspending restores.
pub async fn a_suspended_workspace_refuses_jwts_too(b: Backend) {
    let issuer = Issuer::start().await;
    let env = oidc_env(b, &issuer, &[]).await;
    let admin = env.token(Role::Admin, "*").await;
    let jwt_a = issuer.sign(&issuer.claims("publisher", "team-a"));
    let jwt_b = issuer.sign(&issuer.claims("publisher", "team-b"));
    let (bytes, d) = unique_blob(64);
    let send = |method: reqwest::Method, bearer: &str, ws: &str| {
        let req = env.http.request(method.clone(), env.url(&format!("/v1/workspaces/{ws}/blobs/{d}")));
        let req = if method == reqwest::Method::PUT { req.body(bytes.clone()) } else { req };
        req.header("authorization", format!("Bearer {bearer}")).send()
    };
    assert_eq!(send(reqwest::Method::PUT, &jwt_a, "team-a").await.unwrap().status(), 201);
    assert_eq!(send(reqwest::Method::PUT, &jwt_b, "team-b").await.unwrap().status(), 201);
    let switch = |what: &str| {
        let url = env.url(&format!("/v1/admin/workspaces/team-a/{what}"));
        env.http.post(url).header("authorization", format!("Bearer {admin}")).json(&json!({"reason": "INC-9"})).send()
    };
    assert_eq!(switch("suspend").await.unwrap().status(), 200);

    expect_problem(send(reqwest::Method::PUT, &jwt_a, "team-a").await.unwrap(), 403, "workspace_suspended").await;
    expect_problem(send(reqwest::Method::GET, &jwt_a, "team-a").await.unwrap(), 403, "workspace_suspended").await;
    expect_problem(whoami(&env, &jwt_a).await, 403, "workspace_suspended").await;
    assert_eq!(send(reqwest::Method::GET, &jwt_b, "team-b").await.unwrap().status(), 200);
    assert_eq!(whoami(&env, &jwt_b).await.status(), 200);

    assert_eq!(switch("unsuspend").await.unwrap().status(), 200);
    assert_eq!(send(reqwest::Method::GET, &jwt_a, "team-a").await.unwrap().status(), 200);
    assert_eq!(whoami(&env, &jwt_a).await.status(), 200);
}
