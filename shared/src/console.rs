//! The web console (issue 18): static assets compiled into the binary (`shared/console/`: one HTML
//! page, plain ES modules and a style sheet; no build step, nothing from another origin), served under
//! `/console/` by `helix serve` with a strict Content-Security-Policy on every answer. The page signs
//! in with a pasted API token (sessionStorage only) and calls the API on the same origin; everything it
//! shows comes from the public API, so it needs no route of its own (docs/console.md).

use lambda_http::Body;

use crate::http::Response;

/// On every console answer: only this origin's scripts, styles and connections, no inline code, no
/// framing, no `<base>`, forms only to this origin.
pub const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                       connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

/// The assets: path under `/console/`, content type, bytes.
pub const ASSETS: &[(&str, &str, &[u8])] = &[
    ("", "text/html; charset=utf-8", include_bytes!("../console/index.html")),
    ("app.js", "text/javascript; charset=utf-8", include_bytes!("../console/app.js")),
    ("verify.js", "text/javascript; charset=utf-8", include_bytes!("../console/verify.js")),
    ("style.css", "text/css; charset=utf-8", include_bytes!("../console/style.css")),
];

fn with_headers(builder: http::response::Builder) -> http::response::Builder {
    builder
        .header("content-security-policy", CSP)
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

/// The answer to GET `path` (the request path, `/console` or under `/console/`). The page is the same
/// at `/console` and `/console/`: it names its assets by absolute path.
pub fn serve(path: &str) -> Response {
    let file = if path == "/console" { "" } else { path.strip_prefix("/console/").unwrap_or("\u{0}") };
    match ASSETS.iter().find(|(name, _, _)| *name == file) {
        Some((_, content_type, bytes)) => with_headers(http::Response::builder().status(200))
            .header("content-type", *content_type)
            .body(Body::Binary(bytes.to_vec()))
            .expect("valid response"),
        None => with_headers(http::Response::builder().status(404))
            .header("content-type", "text/plain; charset=utf-8")
            .body(Body::Text("not found\n".into()))
            .expect("valid response"),
    }
}

/// Total size of the assets, raw.
pub fn assets_bytes() -> usize {
    ASSETS.iter().map(|(_, _, b)| b.len()).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_answer_carries_the_strict_policy_and_the_page_loads_nothing_inline() {
        for path in
            ["/console", "/console/", "/console/app.js", "/console/verify.js", "/console/style.css", "/console/nope"]
        {
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
    }
}
