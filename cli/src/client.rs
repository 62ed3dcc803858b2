//! The `helix` client commands: a registry over HTTPS (`HELIX_URL`, alias `HELIX_REGISTRY_URL`; http
//! only on loopback) with `HELIX_TOKEN`. Errors are one line with the registry's stable reason, and the
//! exit status says whose fault it was: 1 the registry refused (a 4xx, its `reason`), 3 the registry
//! could not be reached or was unavailable (`registry_unreachable`, or a 5xx and its reason); clap's own
//! usage errors are 2, and so is a registry URL that cannot be used (unparseable, a scheme other than
//! https, http off loopback) or a missing `HELIX_URL`.

use std::fmt;

use helix_core::domain::{BundleName, WorkspaceId};
use serde_json::Value;

/// A refusal, or no answer.
#[derive(Debug)]
pub enum ClientError {
    /// No answer from the registry (connection refused, DNS, TLS, timeout).
    Unreachable(String),
    /// A problem+json answer.
    Refused { status: u16, reason: String, detail: String },
    /// Anything else (configuration, an answer that is not what the API describes).
    Other(String),
    /// The command was given something it cannot use (an unparseable or non-https `HELIX_URL`): exit 2,
    /// like clap's own usage errors.
    Usage(String),
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::Unreachable(detail) => write!(f, "registry_unreachable: {detail}"),
            ClientError::Refused { status, reason, detail } => write!(f, "{reason} ({status}): {detail}"),
            ClientError::Other(detail) | ClientError::Usage(detail) => f.write_str(detail),
        }
    }
}

impl std::error::Error for ClientError {}

impl ClientError {
    pub fn exit_code(&self) -> u8 {
        match self {
            ClientError::Refused { status, .. } if *status < 500 => 1,
            ClientError::Unreachable(_) | ClientError::Refused { .. } => 3,
            ClientError::Other(_) => 1,
            ClientError::Usage(_) => 2,
        }
    }
}

pub struct Registry {
    pub url: String,
    token: Option<String>,
    http: reqwest::Client,
    /// Sent as `x-helix-operation` (the registry keeps it in read records: `via`).
    operation: Option<&'static str>,
    /// Where a push keeps the ids of its chunked uploads, to resume them (`export::state_dir`).
    state_dir: Option<std::path::PathBuf>,
}

impl Registry {
    /// From `HELIX_URL` (or `HELIX_REGISTRY_URL`) and `HELIX_TOKEN`.
    pub fn from_env() -> Result<Registry, ClientError> {
        let url = std::env::var("HELIX_URL")
            .or_else(|_| std::env::var("HELIX_REGISTRY_URL"))
            .map_err(|_| ClientError::Usage("HELIX_URL is not set (the registry's base URL)".into()))?;
        let token = std::env::var("HELIX_TOKEN").ok().filter(|t| !t.is_empty());
        Registry::new(&url, token).map_err(|e| ClientError::Usage(format!("HELIX_URL: {e}")))
    }

    /// A registry at `url` (https, or http on loopback), with `token` when there is one.
    pub fn new(url: &str, token: Option<String>) -> Result<Registry, ClientError> {
        helix_core::oidc::check_url(url).map_err(|e| ClientError::Usage(e.to_string()))?;
        // No total timeout (a 1 GiB upload takes what it takes); a stalled connection fails.
        let http = reqwest::Client::builder()
            .connect_timeout(std::time::Duration::from_secs(10))
            .read_timeout(std::time::Duration::from_secs(60))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| ClientError::Other(e.to_string()))?;
        Ok(Registry {
            url: url.trim_end_matches('/').to_owned(),
            token,
            http,
            operation: None,
            state_dir: crate::export::state_dir(),
        })
    }

    /// The same registry with another token.
    pub fn with_token(&self, token: &str) -> Registry {
        Registry {
            url: self.url.clone(),
            token: Some(token.to_owned()),
            http: self.http.clone(),
            operation: self.operation,
            state_dir: self.state_dir.clone(),
        }
    }

    /// The same registry, its requests marked as part of `operation` (`pull`).
    pub fn for_operation(&self, operation: &'static str) -> Registry {
        Registry {
            url: self.url.clone(),
            token: self.token.clone(),
            http: self.http.clone(),
            operation: Some(operation),
            state_dir: self.state_dir.clone(),
        }
    }

    /// The same registry, keeping the client's records (the chunked uploads a push may resume) in
    /// `dir` instead of HELIX_STATE_DIR's folder.
    pub fn with_state_dir(mut self, dir: Option<std::path::PathBuf>) -> Registry {
        self.state_dir = dir;
        self
    }

    pub fn state_dir(&self) -> Option<&std::path::Path> {
        self.state_dir.as_deref()
    }

    pub fn has_token(&self) -> bool {
        self.token.is_some()
    }

    /// GET `path` (with its query), as JSON, with the token when there is one.
    pub async fn get(&self, path: &str) -> Result<Value, ClientError> {
        self.send(self.request(reqwest::Method::GET, path)).await
    }

    /// POST `body` as JSON to `path`.
    pub async fn post(&self, path: &str, body: &Value) -> Result<Value, ClientError> {
        self.send(self.request(reqwest::Method::POST, path).json(body)).await
    }

    /// A request to the registry with the token; `answer` sends it.
    pub fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let mut req = self.http.request(method, format!("{}{path}", self.url));
        if let Some(op) = self.operation {
            req = req.header(helix_core::read_records::OPERATION_HEADER, op);
        }
        match &self.token {
            Some(t) => req.bearer_auth(t),
            None => req,
        }
    }

    /// A request to a presigned URL the registry handed out: never with the token (the URL carries
    /// its own authorization, and the token must not travel to the store).
    pub fn presigned(&self, method: &str, url: &str) -> Result<reqwest::RequestBuilder, ClientError> {
        let method = reqwest::Method::from_bytes(method.as_bytes())
            .map_err(|_| ClientError::Other(format!("the registry planned an unknown method {method:?}")))?;
        Ok(self.http.request(method, url))
    }

    /// Send `req`; a 2xx answer is returned, anything else is the registry's refusal (a redirect
    /// too: only a blob GET is ever redirected, and it asks for that with `answer_or_redirect`).
    pub async fn answer(&self, req: reqwest::RequestBuilder) -> Result<reqwest::Response, ClientError> {
        let resp = self.answer_or_redirect(req).await?;
        if resp.status().is_redirection() {
            let status = resp.status().as_u16();
            return Err(ClientError::Refused {
                status,
                reason: format!("http_{status}"),
                detail: format!("an unexpected redirect to {:?}", resp.headers().get("location")),
            });
        }
        Ok(resp)
    }

    /// `answer`, with a 3xx returned as it is.
    pub async fn answer_or_redirect(&self, req: reqwest::RequestBuilder) -> Result<reqwest::Response, ClientError> {
        let resp = req.send().await.map_err(|e| ClientError::Unreachable(format!("{}: {}", self.url, chain(&e))))?;
        let status = resp.status().as_u16();
        if status < 400 {
            return Ok(resp);
        }
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        let text = |k: &str| body[k].as_str().unwrap_or_default().to_owned();
        let reason = if text("reason").is_empty() { format!("http_{status}") } else { text("reason") };
        Err(ClientError::Refused { status, reason, detail: text("detail") })
    }

    /// Send a request made by `request` and read its JSON answer.
    async fn send(&self, req: reqwest::RequestBuilder) -> Result<Value, ClientError> {
        let resp = self.answer(req).await?;
        let status = resp.status().as_u16();
        // An answer that is not the API's JSON (a proxy's page, a captive portal) is nobody's success.
        resp.json().await.map_err(|e| ClientError::Refused {
            status,
            reason: "invalid_answer".into(),
            detail: format!("{}: the answer is not JSON: {e}", self.url),
        })
    }
}

impl Registry {
    /// The keys the registry publishes at /v1/governance/public-key: the current one, then the
    /// earlier ones (receipts and audit days signed before a rotation).
    pub async fn public_keys(&self) -> Result<Vec<helix_core::ports::PublicKeyInfo>, ClientError> {
        keys_of_document(&self.get("/v1/governance/public-key").await?, &self.url)
    }
}

/// The keys of a GET /v1/governance/public-key answer (the current key and `previous`), each with the
/// validity window the registry's key history gives it (a retired key signs nothing later).
fn keys_of_document(doc: &Value, source: &str) -> Result<Vec<helix_core::ports::PublicKeyInfo>, ClientError> {
    helix_core::keys::keys_of_document(doc).map_err(|e| ClientError::Other(format!("{source}: {e}")))
}

/// Keys to trust: those `registry` publishes, else the files given: a PEM each, or a saved answer of
/// GET /v1/governance/public-key (`keys.json`: the current key and every previous one).
pub async fn load_keys(
    registry: Option<&str>,
    files: &[std::path::PathBuf],
) -> Result<Vec<helix_core::ports::PublicKeyInfo>, ClientError> {
    if let Some(url) = registry {
        return Registry::new(url, None)?.public_keys().await;
    }
    let mut keys = Vec::new();
    for path in files {
        let text = std::fs::read_to_string(path).map_err(|e| ClientError::Other(format!("{}: {e}", path.display())))?;
        if text.trim_start().starts_with('{') {
            // A saved answer of GET /v1/governance/public-key (keys.json): every key, with its window.
            let doc: Value = serde_json::from_str(&text)
                .map_err(|e| ClientError::Other(format!("{}: not a PEM, nor JSON: {e}", path.display())))?;
            keys.extend(keys_of_document(&doc, &path.display().to_string())?);
        } else {
            keys.push(
                helix_core::keys::public_key_from_pem(&text)
                    .map_err(|e| ClientError::Other(format!("{}: {e}", path.display())))?,
            );
        }
    }
    Ok(keys)
}

/// A key id as `--key-fingerprint` takes it: `sha256:` and 64 lowercase hex digits.
pub fn key_fingerprint(value: &str) -> Result<String, String> {
    let hex = value.strip_prefix("sha256:").unwrap_or_default();
    if hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
        Ok(value.to_owned())
    } else {
        Err("a key id: sha256: and 64 lowercase hex digits (the key_id of GET /v1/governance/public-key)".into())
    }
}

/// An error and its causes on one line (reqwest's own message stops at "error sending request").
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// `7d`, `12h`, `30m` (optionally followed by ` ago`) before `now`, or an RFC 3339 time or a day as given.
pub fn since(value: &str, now: time::OffsetDateTime) -> Result<String, ClientError> {
    let bad =
        || ClientError::Other(format!("{value:?}: a duration (7d, 12h, 30m, \"30m ago\"), an RFC 3339 time or a day"));
    let value = value.trim();
    let value = value.strip_suffix(" ago").map(str::trim_end).unwrap_or(value);
    match value.chars().last() {
        None => Err(bad()),
        // A duration, read as token lifetimes are (up to ten years).
        Some('d' | 'h' | 'm') => {
            let seconds = helix_core::domain::token::parse_ttl(value).map_err(|_| bad())?;
            Ok(helix_core::domain::time::rfc3339_ms(now - time::Duration::seconds(seconds)))
        }
        Some(_) => Ok(value.to_owned()),
    }
}

/// `WS/NAME@VERSION`, each part checked as the registry would.
pub fn bundle_parts(bundle: &str) -> Result<(WorkspaceId, BundleName, BundleName), ClientError> {
    let bad = |why: String| ClientError::Other(format!("{bundle:?}: {why} (expected WORKSPACE/NAME@VERSION)"));
    let (ws, rest) = bundle.split_once('/').ok_or_else(|| bad("no workspace".into()))?;
    let (name, version) = rest.split_once('@').ok_or_else(|| bad("no @version".into()))?;
    Ok((
        WorkspaceId::parse(ws).map_err(|e| bad(e.to_string()))?,
        BundleName::parse(name).map_err(|e| bad(e.to_string()))?,
        BundleName::parse(version).map_err(|e| bad(e.to_string()))?,
    ))
}

/// `WS/NAME@VERSION` as the path of that bundle version.
pub fn version_path(bundle: &str) -> Result<String, ClientError> {
    let (ws, name, version) = bundle_parts(bundle)?;
    Ok(version_path_of(&ws, &name, &version))
}

/// The API path of a bundle version.
pub fn version_path_of(ws: &WorkspaceId, name: &BundleName, version: &BundleName) -> String {
    format!("/v1/workspaces/{ws}/bundles/{}/versions/{}", name.as_str(), version.as_str())
}

/// `90s`, `45m`, `12h`, `7d` as seconds.
pub fn duration_seconds(value: &str) -> Result<i64, ClientError> {
    helix_core::domain::token::parse_ttl(value).map_err(|e| ClientError::Other(format!("{value:?}: {e}")))
}

/// Percent-encode a query value.
pub fn q(value: &str) -> String {
    url::form_urlencoded::byte_serialize(value.as_bytes()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_takes_durations_times_and_days() {
        let now = time::macros::datetime!(2026-12-01 12:00 UTC);
        assert_eq!(since("7d", now).unwrap(), "2026-11-24T12:00:00.000Z");
        assert_eq!(since("90m", now).unwrap(), "2026-12-01T10:30:00.000Z");
        assert_eq!(since("30m ago", now).unwrap(), "2026-12-01T11:30:00.000Z");
        assert_eq!(since("2026-11-30", now).unwrap(), "2026-11-30");
        assert!(since("xd", now).is_err() && since("", now).is_err() && since("-1d", now).is_err());
        // A value ending in a character of more than one byte is a time or day for the registry to
        // judge, not a panic.
        assert_eq!(since("7µ", now).unwrap(), "7µ");
        let refused = ClientError::Refused { status: 403, reason: "insufficient_role".into(), detail: "x".into() };
        assert_eq!((refused.exit_code(), ClientError::Unreachable("x".into()).exit_code()), (1, 3));
    }
}
