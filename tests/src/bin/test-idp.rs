//! A small OIDC identity provider on 127.0.0.1 for the console's browser suite
//! (tests/browser/console.py): discovery, JWKS (the RSA key helper of the JWT tests,
//! `helix_tests::cases::SigningKey`), an authorization endpoint whose sign-in page lets the test choose
//! the user, role and workspace, and a token endpoint that redeems a code once, only with the client
//! id and redirect URI it was issued for and the PKCE verifier (S256) of its challenge. It issues an
//! ID token (audience: the client id, with the nonce) and an access token (audience: the registry's).
//!
//! Its end_session_endpoint (`/logout`, OpenID Connect RP-Initiated Logout) checks the ID token hint
//! it issued and the loopback return address, records who signed out (`GET /logouts`) and redirects
//! back. With `--token-elsewhere` the token endpoint is on another origin (a second port), as Cognito's
//! and Google's are.
//!
//!     test-idp --client-id helix-console --audience helix [--token-elsewhere]
//!
//! prints `issuer: http://127.0.0.1:PORT` (and `token endpoint: URL`) and serves until killed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use helix_tests::cases::SigningKey;
use jsonwebtoken::{Algorithm, Header};
use serde_json::{Value, json};
use sha2::Digest;

struct Grant {
    client_id: String,
    redirect_uri: String,
    challenge: String,
    nonce: String,
    user: String,
    role: String,
    workspace: String,
}

struct Idp {
    issuer: String,
    token_endpoint: String,
    /// The subjects signed out at the end_session_endpoint, in order.
    logouts: Mutex<Vec<String>>,
    client_id: String,
    audience: String,
    key: SigningKey,
    codes: Mutex<HashMap<String, Grant>>,
}

type Params = HashMap<String, String>;

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn random() -> String {
    let mut bytes = [0u8; 24];
    aws_lc_rs::rand::fill(&mut bytes).unwrap();
    b64(&bytes)
}

/// Every answer may be read by the console's origin (discovery and the token endpoint are fetched).
fn cors(body: impl IntoResponse) -> Response {
    ([(header::ACCESS_CONTROL_ALLOW_ORIGIN, "*")], body).into_response()
}

fn json_answer(status: StatusCode, body: Value) -> Response {
    cors((status, [(header::CONTENT_TYPE, "application/json"), (header::CACHE_CONTROL, "no-store")], body.to_string()))
}

fn oauth_error(error: &str, description: &str) -> Response {
    json_answer(StatusCode::BAD_REQUEST, json!({"error": error, "error_description": description}))
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

async fn discovery(State(idp): State<Arc<Idp>>) -> Response {
    let i = &idp.issuer;
    json_answer(
        StatusCode::OK,
        json!({
            "issuer": i, "jwks_uri": format!("{i}/jwks.json"), "authorization_endpoint": format!("{i}/authorize"),
            "token_endpoint": idp.token_endpoint, "end_session_endpoint": format!("{i}/logout"),
            "response_types_supported": ["code"],
            "code_challenge_methods_supported": ["S256"], "id_token_signing_alg_values_supported": ["RS256"],
            "subject_types_supported": ["public"],
        }),
    )
}

async fn jwks(State(idp): State<Arc<Idp>>) -> Response {
    json_answer(StatusCode::OK, json!({"keys": [idp.key.jwk]}))
}

/// The sign-in page: the request is checked, then a form to choose who signs in.
async fn authorize(State(idp): State<Arc<Idp>>, Query(q): Query<Params>) -> Response {
    let get = |k: &str| q.get(k).cloned().unwrap_or_default();
    if get("client_id") != idp.client_id || !get("redirect_uri").starts_with("http://127.0.0.1:") {
        return (StatusCode::BAD_REQUEST, "unknown client or redirect URI\n").into_response();
    }
    if get("response_type") != "code" || get("code_challenge_method") != "S256" || get("code_challenge").len() < 43 {
        return (StatusCode::BAD_REQUEST, "authorization code with PKCE S256 only\n").into_response();
    }
    let hidden: String = ["client_id", "redirect_uri", "state", "nonce", "code_challenge"]
        .iter()
        .map(|k| format!(r#"<input type="hidden" name="{k}" value="{}">"#, escape(&get(k))))
        .collect();
    let page = format!(
        r#"<!doctype html><html lang="en"><head><meta charset="utf-8"><link rel="icon" href="data:,"><title>Test identity provider</title></head>
<body><main><h1>Test identity provider</h1><form method="post" action="/login">{hidden}
<label>User <input id="idp-user" name="user" value="oidc-user"></label>
<label>Role <input id="idp-role" name="role" value="approver"></label>
<label>Workspace <input id="idp-workspace" name="workspace" value="team-a"></label>
<button type="submit" id="idp-continue">Continue</button></form></main></body></html>"#
    );
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], page).into_response()
}

/// The sign-in form: a one-time code, and back to the client with it and its state.
async fn login(State(idp): State<Arc<Idp>>, body: String) -> Response {
    let q: Params = url::form_urlencoded::parse(body.as_bytes()).into_owned().collect();
    let get = |k: &str| q.get(k).cloned().unwrap_or_default();
    let code = random();
    let redirect_uri = get("redirect_uri");
    let mut back = url::Url::parse(&redirect_uri).unwrap();
    back.query_pairs_mut().append_pair("code", &code).append_pair("state", &get("state"));
    idp.codes.lock().unwrap().insert(
        code,
        Grant {
            client_id: get("client_id"),
            redirect_uri,
            challenge: get("code_challenge"),
            nonce: get("nonce"),
            user: get("user"),
            role: get("role"),
            workspace: get("workspace"),
        },
    );
    (StatusCode::SEE_OTHER, [(header::LOCATION, back.to_string())]).into_response()
}

/// Redeem a code (once): the client, the redirect URI and BASE64URL(SHA-256(verifier)) must match.
async fn token(State(idp): State<Arc<Idp>>, headers: HeaderMap, body: String) -> Response {
    let form = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok());
    if !form.is_some_and(|t| t.starts_with("application/x-www-form-urlencoded")) {
        return oauth_error("invalid_request", "a form body is expected");
    }
    let q: Params = url::form_urlencoded::parse(body.as_bytes()).into_owned().collect();
    let get = |k: &str| q.get(k).cloned().unwrap_or_default();
    if get("grant_type") != "authorization_code" {
        return oauth_error("unsupported_grant_type", "authorization_code only");
    }
    let Some(grant) = idp.codes.lock().unwrap().remove(&get("code")) else {
        return oauth_error("invalid_grant", "unknown or already redeemed code");
    };
    if grant.client_id != get("client_id") || grant.redirect_uri != get("redirect_uri") {
        return oauth_error("invalid_grant", "the code was issued to another client or redirect URI");
    }
    if b64(&sha2::Sha256::digest(get("code_verifier").as_bytes())) != grant.challenge {
        return oauth_error("invalid_grant", "PKCE verification failed");
    }
    let now = helix_core::domain::time::now_unix();
    let common = json!({
        "iss": idp.issuer, "sub": grant.user, "iat": now, "nbf": now - 5, "exp": now + 600,
        "helix_role": grant.role, "helix_workspace": grant.workspace,
    });
    let sign = |extra: Value| {
        let mut claims = common.clone();
        claims.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(idp.key.kid.clone());
        jsonwebtoken::encode(&header, &claims, &idp.key.encoding).unwrap()
    };
    json_answer(
        StatusCode::OK,
        json!({
            "token_type": "Bearer", "expires_in": 600,
            "access_token": sign(json!({"aud": idp.audience})),
            "id_token": sign(json!({"aud": idp.client_id, "nonce": grant.nonce})),
        }),
    )
}

/// RP-Initiated Logout: the hint must be an ID token this provider issued to the client, the return
/// address a loopback one; then the subject is signed out and the browser sent back.
async fn logout(State(idp): State<Arc<Idp>>, Query(q): Query<Params>) -> Response {
    let get = |k: &str| q.get(k).cloned().unwrap_or_default();
    let mut validation = jsonwebtoken::Validation::new(Algorithm::RS256);
    validation.set_issuer(&[&idp.issuer]);
    validation.set_audience(&[&idp.client_id]);
    validation.validate_exp = false;
    let jwk: jsonwebtoken::jwk::Jwk = serde_json::from_value(idp.key.jwk.clone()).unwrap();
    let key = jsonwebtoken::DecodingKey::from_jwk(&jwk).unwrap();
    let Ok(hint) = jsonwebtoken::decode::<Value>(get("id_token_hint"), &key, &validation) else {
        return (StatusCode::BAD_REQUEST, "id_token_hint is not an ID token of this provider\n").into_response();
    };
    let back = get("post_logout_redirect_uri");
    if !back.starts_with("http://127.0.0.1:") || get("client_id") != idp.client_id {
        return (StatusCode::BAD_REQUEST, "unknown client or post_logout_redirect_uri\n").into_response();
    }
    idp.logouts.lock().unwrap().push(hint.claims["sub"].as_str().unwrap_or_default().to_owned());
    (StatusCode::SEE_OTHER, [(header::LOCATION, back)]).into_response()
}

async fn logouts(State(idp): State<Arc<Idp>>) -> Response {
    json_answer(StatusCode::OK, json!(*idp.logouts.lock().unwrap()))
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str, default: &str| {
        args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned().unwrap_or_else(|| default.into())
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let issuer = format!("http://{}", listener.local_addr().unwrap());
    let elsewhere = match args.iter().any(|a| a == "--token-elsewhere") {
        true => Some(tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap()),
        false => None,
    };
    let token_endpoint = match &elsewhere {
        Some(l) => format!("http://{}/token", l.local_addr().unwrap()),
        None => format!("{issuer}/token"),
    };
    let idp = Arc::new(Idp {
        issuer: issuer.clone(),
        token_endpoint: token_endpoint.clone(),
        logouts: Mutex::new(Vec::new()),
        client_id: arg("--client-id", "helix-console"),
        audience: arg("--audience", "helix"),
        key: SigningKey::generate("test-idp-1"),
        codes: Mutex::new(HashMap::new()),
    });
    let app = axum::Router::new()
        .route("/.well-known/openid-configuration", axum::routing::get(discovery))
        .route("/jwks.json", axum::routing::get(jwks))
        .route("/authorize", axum::routing::get(authorize))
        .route("/login", axum::routing::post(login))
        .route("/logout", axum::routing::get(logout))
        .route("/logouts", axum::routing::get(logouts));
    let token_app = axum::Router::new().route("/token", axum::routing::post(token));
    println!("issuer: {issuer}");
    println!("token endpoint: {token_endpoint}");
    match elsewhere {
        Some(l) => {
            let token_app = token_app.with_state(idp.clone());
            tokio::spawn(async move { axum::serve(l, token_app).await.unwrap() });
            axum::serve(listener, app.with_state(idp)).await.unwrap();
        }
        None => axum::serve(listener, app.merge(token_app).with_state(idp)).await.unwrap(),
    }
}
