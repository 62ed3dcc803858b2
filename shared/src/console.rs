//! The web console (issue 18): static assets compiled into the binary (`shared/console/`: one HTML
//! page, plain ES modules and a style sheet; no build step, nothing from another origin), served under
//! `/console/` by `helix serve` and the `console` function with a strict Content-Security-Policy on
//! every answer. The page signs in with the OIDC issuer (authorization code with PKCE, when
//! HELIX_OIDC_CLIENT_ID is set) or a pasted API token (sessionStorage only) and calls the API on the
//! same origin; everything it shows comes from the public API. Its one answer of its own is
//! `/console/config.json`: how to sign in (docs/console.md, docs/decisions.md).

use lambda_http::Body;

use crate::config::SignIn;
use crate::http::Response;

/// On every console answer: only this origin's scripts, styles and connections, no inline code, no
/// framing, no `<base>`, forms only to this origin. With OIDC sign-in, connect-src also names the
/// issuer's origin (the page reads its discovery document and redeems the code at its token endpoint).
pub const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                       connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

/// The console as served: its policy and its sign-in settings, fixed for the life of the process.
#[derive(Clone, Debug)]
pub struct Console {
    csp: String,
    config_json: Vec<u8>,
}

impl Console {
    /// `None`: sign-in by pasted API token only.
    pub fn new(sign_in: Option<&SignIn>) -> Console {
        let origin = sign_in.and_then(|s| url::Url::parse(&s.issuer).ok()).map(|u| u.origin().ascii_serialization());
        let csp = match origin {
            Some(origin) => CSP.replace("connect-src 'self'", &format!("connect-src 'self' {origin}")),
            None => CSP.to_owned(),
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
        let console = Console::new(None);
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
        let console = Console::new(Some(&sign_in));
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
}
