//! The web console (issue 18): static assets compiled into the binary (`shared/console/`: one HTML
//! page, plain ES modules and a style sheet; no build step, nothing from another origin), served under
//! `/console/` by `helix serve` and the `console` function with a strict Content-Security-Policy on
//! every answer. The page signs in with the OIDC issuer (authorization code with PKCE, when
//! HELIX_OIDC_CLIENT_ID is set) or a pasted API token (sessionStorage only) and calls the API on the
//! same origin; everything it shows comes from the public API. Its one answer of its own is
//! `/console/config.json`: how to sign in (docs/console.md, docs/decisions.md).

use lambda_http::Body;

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::{Config, ConfigError, SignIn};
use crate::http::Response;
use crate::oidc::check_url;

/// On every console answer: only this origin's scripts, styles and connections, no inline code, no
/// framing, no `<base>`, forms only to this origin. connect-src also names, and nothing else: with
/// OIDC sign-in, the issuer's origin (the page reads its discovery document and redeems the code at its
/// token endpoint); with an S3 blob store, the origin of its presigned GETs (where a proof URL of a
/// file above HELIX_INLINE_MAX redirects the evidence pack's download).
pub const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                       connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

/// The console as served: its policy and its sign-in settings, fixed for the life of the process.
#[derive(Clone, Debug)]
pub struct Console {
    csp: String,
    config_json: Vec<u8>,
}

impl Console {
    /// `sign_in`: `None` for sign-in by pasted API token only. `connect`: further origins the page
    /// fetches from (the blob store's presigned GETs; `blob_download_origin`).
    pub fn new(sign_in: Option<&SignIn>, connect: &[String]) -> Console {
        let issuer = sign_in.and_then(|s| origin_of(&s.issuer));
        let mut origins: Vec<String> = Vec::new();
        for o in issuer.into_iter().chain(connect.iter().filter_map(|c| origin_of(c))) {
            if !origins.contains(&o) {
                origins.push(o);
            }
        }
        let csp = if origins.is_empty() {
            CSP.to_owned()
        } else {
            CSP.replace("connect-src 'self'", &format!("connect-src 'self' {}", origins.join(" ")))
        };
        let oidc = sign_in.map(|s| {
            serde_json::json!({"issuer": s.issuer, "client_id": s.client_id, "audience": s.audience, "scope": "openid"})
        });
        let config_json = serde_json::to_vec(&serde_json::json!({ "oidc": oidc })).expect("json");
        Console { csp, config_json }
    }

    pub fn csp(&self) -> &str {
        &self.csp
    }

    /// The answer to GET `path` (the request path, `/console` or under `/console/`). The page is the
    /// same at `/console` and `/console/`: it names its assets by absolute path.
    pub fn serve(&self, path: &str) -> Response {
        let file = if path == "/console" { "" } else { path.strip_prefix("/console/").unwrap_or("\u{0}") };
        let found = match file {
            "config.json" => Some(("application/json", self.config_json.clone())),
            _ => ASSETS.iter().find(|(name, _, _)| *name == file).map(|(_, t, b)| (*t, b.to_vec())),
        };
        match found {
            Some((content_type, bytes)) => with_headers(http::Response::builder().status(200), &self.csp)
                .header("content-type", content_type)
                .body(Body::Binary(bytes))
                .expect("valid response"),
            None => with_headers(http::Response::builder().status(404), &self.csp)
                .header("content-type", "text/plain; charset=utf-8")
                .body(Body::Text("not found\n".into()))
                .expect("valid response"),
        }
    }
}

/// The console as a host (`helix serve`, the `console` function) serves it, from the registry's
/// configuration: its sign-in settings and the origins its page connects to. With OIDC sign-in, the
/// issuer's token endpoint may be on another origin than the issuer (Cognito, Google): the host reads
/// the issuer's discovery document at start and puts that origin in connect-src too. A discovery that
/// fails leaves the policy without it (sign-in with such an issuer then fails on the page, saying so)
/// and is tried again at a request at most every `DISCOVERY_RETRY`.
pub struct Host {
    sign_in: Option<SignIn>,
    store: Option<String>,
    http: reqwest::Client,
    state: std::sync::RwLock<HostState>,
    /// Single flight: one discovery at a time; a request never waits for another's.
    resolving: tokio::sync::Mutex<()>,
}

struct HostState {
    console: Arc<Console>,
    /// The token endpoint's origin is in the policy (or no sign-in is configured).
    resolved: bool,
    tried: Option<Instant>,
}

/// Least time between two reads of the issuer's discovery document after one failed.
pub const DISCOVERY_RETRY: Duration = Duration::from_secs(30);

impl Host {
    /// The blob store's download origin is worked out here, offline (`app::blob_download_origin`);
    /// the issuer's discovery document is read here (3 s at most).
    pub async fn from_config(config: &Config) -> Host {
        Host::new(config.console_sign_in.clone(), crate::app::blob_download_origin(config).await).await
    }

    /// For the `console` function, which reads only what it needs: the OIDC sign-in settings and the
    /// bucket's (HELIX_BLOB_BACKEND, HELIX_S3_BUCKET, the S3 endpoint and the region).
    pub async fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Host, ConfigError> {
        let get = |k: &str| lookup(k).filter(|v| !v.trim().is_empty());
        let sign_in = crate::config::sign_in_from_lookup(get)?;
        let store = match (get("HELIX_BLOB_BACKEND").as_deref(), get("HELIX_S3_BUCKET")) {
            (None | Some("s3"), Some(bucket)) => {
                let endpoint = get("HELIX_S3_ENDPOINT_URL")
                    .or_else(|| get("AWS_ENDPOINT_URL_S3"))
                    .or_else(|| get("AWS_ENDPOINT_URL"));
                let region = get("AWS_REGION").or_else(|| get("AWS_DEFAULT_REGION"));
                crate::app::bucket_download_origin(&bucket, endpoint.as_deref(), region).await
            }
            _ => None,
        };
        Ok(Host::new(sign_in, store).await)
    }

    async fn new(sign_in: Option<SignIn>, store: Option<String>) -> Host {
        let console = Arc::new(Console::new(sign_in.as_ref(), store.as_slice()));
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(3))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("http client");
        let resolved = sign_in.is_none();
        let host = Host {
            sign_in,
            store,
            http,
            state: std::sync::RwLock::new(HostState { console, resolved, tried: None }),
            resolving: tokio::sync::Mutex::new(()),
        };
        host.resolve().await;
        host
    }

    pub fn console(&self) -> Arc<Console> {
        self.state.read().unwrap_or_else(|p| p.into_inner()).console.clone()
    }

    pub async fn serve(&self, path: &str) -> Response {
        let due = {
            let st = self.state.read().unwrap_or_else(|p| p.into_inner());
            !st.resolved && st.tried.is_none_or(|t| t.elapsed() >= DISCOVERY_RETRY)
        };
        if due {
            self.resolve().await;
        }
        self.console().serve(path)
    }

    /// Read the issuer's discovery document and put its token endpoint's origin in the policy.
    async fn resolve(&self) {
        let Some(sign_in) = &self.sign_in else { return };
        let Ok(_flight) = self.resolving.try_lock() else { return };
        let found = token_endpoint(&self.http, &sign_in.issuer).await;
        let mut st = self.state.write().unwrap_or_else(|p| p.into_inner());
        match found {
            Ok(endpoint) => {
                let connect: Vec<String> = std::iter::once(endpoint).chain(self.store.clone()).collect();
                st.console = Arc::new(Console::new(Some(sign_in), &connect));
                st.resolved = true;
            }
            Err(e) => {
                tracing::warn!(issuer = %sign_in.issuer, error = %e, "console: the issuer's discovery document could not be read; its token endpoint's origin is not in connect-src yet");
                st.tried = Some(Instant::now());
            }
        }
    }
}

/// The token endpoint the issuer's discovery document names: https (http only on loopback), and the
/// document must name this issuer.
async fn token_endpoint(http: &reqwest::Client, issuer: &str) -> Result<String, String> {
    let url = format!("{}/.well-known/openid-configuration", issuer.trim_end_matches('/'));
    check_url(&url)?;
    let resp = http.get(&url).send().await.map_err(|e| format!("{url}: {e}"))?;
    if !resp.status().is_success() {
        return Err(format!("{url} answered {}", resp.status()));
    }
    let meta: serde_json::Value = resp.json().await.map_err(|e| format!("{url}: {e}"))?;
    if meta["issuer"].as_str() != Some(issuer) {
        return Err("the discovery document names another issuer".into());
    }
    let endpoint = meta["token_endpoint"].as_str().ok_or("the discovery document has no token_endpoint")?;
    check_url(endpoint)?;
    Ok(endpoint.to_owned())
}

/// The origin (`scheme://host[:port]`) of an http(s) URL; nothing for anything else, so nothing but an
/// origin ever enters the policy.
fn origin_of(url: &str) -> Option<String> {
    let u = url::Url::parse(url).ok()?;
    matches!(u.scheme(), "https" | "http").then(|| u.origin().ascii_serialization())
}

/// The assets: path under `/console/`, content type, bytes.
pub const ASSETS: &[(&str, &str, &[u8])] = &[
    ("", "text/html; charset=utf-8", include_bytes!("../console/index.html")),
    ("app.js", "text/javascript; charset=utf-8", include_bytes!("../console/app.js")),
    ("verify.js", "text/javascript; charset=utf-8", include_bytes!("../console/verify.js")),
    ("oidc.js", "text/javascript; charset=utf-8", include_bytes!("../console/oidc.js")),
    ("pack.js", "text/javascript; charset=utf-8", include_bytes!("../console/pack.js")),
    ("style.css", "text/css; charset=utf-8", include_bytes!("../console/style.css")),
];

fn with_headers(builder: http::response::Builder, csp: &str) -> http::response::Builder {
    builder
        .header("content-security-policy", csp)
        .header("x-content-type-options", "nosniff")
        .header("x-frame-options", "DENY")
        .header("referrer-policy", "no-referrer")
        .header("cross-origin-opener-policy", "same-origin")
        .header("cache-control", "no-cache")
}

/// The console's routes on API Gateway (the `console` function): the page at `/console` (no trailing
/// slash: API Gateway's documentation does not say whether `/console/` matches a greedy variable), its
/// assets below it. The route table of the API (`http::route`) does not hold them: they are no API.
pub const ROUTES: &[(&str, &str)] = &[("GET", "/console"), ("GET", "/console/{asset+}")];

/// Total size of the assets, raw.
pub fn assets_bytes() -> usize {
    ASSETS.iter().map(|(_, _, b)| b.len()).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_answer_carries_the_strict_policy_and_the_page_loads_nothing_inline() {
        let console = Console::new(None, &[]);
        let serve = |path| console.serve(path);
        for path in [
            "/console",
            "/console/",
            "/console/app.js",
            "/console/verify.js",
            "/console/oidc.js",
            "/console/pack.js",
            "/console/style.css",
            "/console/config.json",
            "/console/nope",
        ] {
            let resp = serve(path);
            assert_eq!(resp.headers()["content-security-policy"], CSP, "{path}");
            assert_eq!(resp.headers()["x-content-type-options"], "nosniff");
        }
        assert_eq!(serve("/console").status(), 200, "the page without the slash (API Gateway's route)");
        assert_eq!(serve("/console").body().as_ref(), serve("/console/").body().as_ref());
        assert_eq!(serve("/console/nope").status(), 404);
        assert_eq!(serve("/console/").headers()["content-type"], "text/html; charset=utf-8");
        assert!(!CSP.contains("unsafe"), "no unsafe-inline, no unsafe-eval");
        let page = std::str::from_utf8(ASSETS[0].2).unwrap();
        // No inline script or style, and nothing from another origin.
        assert!(!page.contains("<script>") && !page.contains("style=") && !page.contains("<style"));
        for (name, _, bytes) in ASSETS {
            let text = std::str::from_utf8(bytes).unwrap();
            assert!(!text.contains("http://") && !text.contains("https://"), "{name} names no other origin");
            assert!(!text.contains("eval(") && !text.contains("innerHTML"), "{name}: no eval, no HTML strings");
            assert!(!text.contains("localStorage"), "{name}: the credential lives in sessionStorage only");
        }
        assert_eq!(serve("/console/config.json").body().as_ref(), br#"{"oidc":null}"#, "no OIDC sign-in configured");
    }

    #[test]
    fn oidc_sign_in_names_the_issuer_in_config_and_only_its_origin_in_connect_src() {
        let sign_in = SignIn {
            issuer: "https://idp.example/realms/helix".into(),
            client_id: "helix-console".into(),
            audience: "helix".into(),
        };
        let console = Console::new(Some(&sign_in), &[]);
        let resp = console.serve("/console/config.json");
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["content-type"], "application/json");
        let config: serde_json::Value = serde_json::from_slice(resp.body().as_ref()).unwrap();
        assert_eq!(config["oidc"]["issuer"], "https://idp.example/realms/helix");
        assert_eq!(config["oidc"]["client_id"], "helix-console");
        assert_eq!(config["oidc"]["audience"], "helix");
        let csp = console.serve("/console/").headers()["content-security-policy"].to_str().unwrap().to_owned();
        assert_eq!(csp, CSP.replace("connect-src 'self'", "connect-src 'self' https://idp.example"));
        assert!(csp.starts_with("default-src 'self';") && csp.contains("frame-ancestors 'none'"), "{csp}");
        assert!(!csp.contains("unsafe") && !csp.contains('*'), "{csp}");
    }

    fn s3_config(vars: &[(&str, &str)]) -> Config {
        let mut all = vec![
            ("HELIX_BLOB_BACKEND", "s3"),
            ("HELIX_S3_BUCKET", "helix-blobs-1a2b"),
            ("HELIX_META_BACKEND", "dynamodb"),
            ("HELIX_TABLE", "t"),
            ("HELIX_AUDIT_TABLE", "a"),
            ("HELIX_SIGNER_BACKEND", "kms"),
            ("HELIX_KMS_KEY_ID", "k"),
            ("AWS_REGION", "eu-west-1"),
        ];
        all.splice(0..0, vars.iter().copied());
        Config::from_lookup(crate::Mode::Lambda, |k| all.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string()))
            .unwrap()
    }

    /// A file above HELIX_INLINE_MAX reaches the page by a redirect to a presigned GET of the bucket:
    /// the console's connect-src names that origin (and only it) when the blob store is S3, here an
    /// S3-compatible endpoint (path style), exactly where the blob store's presigned URLs point.
    #[tokio::test]
    async fn with_an_s3_store_connect_src_names_the_origin_of_its_presigned_downloads() {
        let config = s3_config(&[("HELIX_S3_ENDPOINT_URL", "http://127.0.0.1:45123")]);
        let host = Host::from_config(&config).await;
        let csp = host.serve("/console/").await.headers()["content-security-policy"].to_str().unwrap().to_owned();
        assert_eq!(csp, CSP.replace("connect-src 'self'", "connect-src 'self' http://127.0.0.1:45123"));
        // The blob store's own presigned GET (its client as the app builds it, with credentials).
        let client = crate::app::s3_client(&config).await;
        let creds = aws_sdk_s3::config::Credentials::new("AKID", "secret", None, None, "test");
        let client = aws_sdk_s3::Client::from_conf(client.config().to_builder().credentials_provider(creds).build());
        let store =
            crate::adapters::s3::S3BlobStore::new(client, "helix-blobs-1a2b".into(), String::new(), true, false);
        let key = crate::ports::BlobKey::primary(&crate::domain::Digest::of(b"x"));
        let url =
            crate::ports::BlobStore::presign_get(&store, &key, std::time::Duration::from_secs(60)).await.unwrap().url;
        assert!(url.starts_with("http://127.0.0.1:45123/helix-blobs-1a2b/"), "{url}");

        // Sign-in and the store together: the issuer's origin, then the store's.
        let with_oidc = s3_config(&[
            ("HELIX_S3_ENDPOINT_URL", "http://127.0.0.1:45123"),
            // Nothing listens there: discovery fails at once, and the policy keeps what it knows.
            ("HELIX_OIDC_ISSUER", "http://127.0.0.1:9/realms/helix"),
            ("HELIX_OIDC_AUDIENCE", "helix"),
            ("HELIX_OIDC_CLIENT_ID", "helix-console"),
        ]);
        let csp = Host::from_config(&with_oidc).await.console().csp().to_owned();
        assert!(csp.contains("connect-src 'self' http://127.0.0.1:9 http://127.0.0.1:45123; "), "{csp}");

        // The embedded store's presigned URLs are on the registry's own origin: nothing added.
        let fs = s3_config(&[("HELIX_BLOB_BACKEND", "fs")]);
        assert_eq!(Host::from_config(&fs).await.console().csp(), CSP);
    }

    /// Cognito and Google redeem codes on another origin than the issuer's: the host reads the
    /// discovery document and names the token endpoint's origin; a failed read is tried again later.
    #[tokio::test]
    async fn a_token_endpoint_on_another_origin_is_read_from_discovery_and_named_in_connect_src() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let issuer = format!("http://{}", listener.local_addr().unwrap());
        let doc = serde_json::json!({"issuer": issuer, "token_endpoint": "http://127.0.0.1:4444/oauth2/token",
            "authorization_endpoint": format!("{issuer}/authorize")})
        .to_string();
        tokio::spawn(async move {
            for n in 0.. {
                let (mut conn, _) = listener.accept().await.unwrap();
                let mut buf = vec![0u8; 4096];
                let _ = conn.read(&mut buf).await.unwrap();
                // The first read fails (the issuer is down at start); later ones answer the document.
                let (status, body) = if n == 0 { ("503 Service Unavailable", "") } else { ("200 OK", doc.as_str()) };
                let head = format!(
                    "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                    body.len()
                );
                conn.write_all(format!("{head}{body}").as_bytes()).await.unwrap();
            }
        });
        let config = s3_config(&[
            ("HELIX_BLOB_BACKEND", "fs"),
            ("HELIX_OIDC_ISSUER", issuer.as_str()),
            ("HELIX_OIDC_AUDIENCE", "helix"),
            ("HELIX_OIDC_CLIENT_ID", "helix-console"),
        ]);
        let host = Host::from_config(&config).await;
        let csp = |resp: Response| resp.headers()["content-security-policy"].to_str().unwrap().to_owned();
        let only_issuer = CSP.replace("connect-src 'self'", &format!("connect-src 'self' {issuer}"));
        assert_eq!(csp(host.serve("/console/").await), only_issuer, "discovery failed: the issuer's origin alone");
        // Within DISCOVERY_RETRY of the failure nothing is read again; past it (moved here), it is.
        host.state.write().unwrap().tried = Some(Instant::now() - DISCOVERY_RETRY);
        let both = CSP.replace("connect-src 'self'", &format!("connect-src 'self' {issuer} http://127.0.0.1:4444"));
        assert_eq!(csp(host.serve("/console/").await), both);
        assert!(host.state.read().unwrap().resolved);
        assert_eq!(csp(host.serve("/console/app.js").await), both, "read once, kept");
    }

    /// On AWS the SDK presigns virtual-hosted URLs (`https://BUCKET.s3.REGION.amazonaws.com`), path
    /// style for a bucket name with dots (not valid in a TLS wildcard host); the origin follows.
    #[tokio::test]
    async fn on_aws_the_origin_is_the_bucket_s_regional_virtual_host() {
        let sdk = aws_config::SdkConfig::builder()
            .behavior_version(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new("eu-west-1"))
            .build();
        let client = aws_sdk_s3::Client::new(&sdk);
        let origin = |b: &'static str| crate::app::presigned_get_origin(&client, b, "blobs/origin");
        assert_eq!(
            origin("helix-blobs-1a2b").await.as_deref(),
            Some("https://helix-blobs-1a2b.s3.eu-west-1.amazonaws.com")
        );
        assert_eq!(origin("helix.blobs").await.as_deref(), Some("https://s3.eu-west-1.amazonaws.com"));
        let csp = Console::new(None, &["https://helix-blobs-1a2b.s3.eu-west-1.amazonaws.com".into()]).csp().to_owned();
        assert!(csp.contains("connect-src 'self' https://helix-blobs-1a2b.s3.eu-west-1.amazonaws.com; "), "{csp}");
        assert!(!csp.contains('*') && !csp.contains("unsafe"), "{csp}");
    }
}
