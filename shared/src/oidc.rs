//! OIDC bearer JWTs (SPEC §3): RS256 only, verified against the issuer's JWKS (from a file, a URL,
//! or the issuer's discovery document). `iss`, `aud`, `exp` and `nbf` are checked with 60 s leeway;
//! user, role and workspace come from configurable claims. The key set is cached for the life of the
//! process (warm Lambda invocations reuse it) and refetched on an unknown `kid` at most once per
//! interval, so a flood of made-up kids cannot hammer the IdP. When no key set can be had, JWT callers
//! get 503 `idp_unavailable` (one fetch in flight at a time, and a failure is cached for a few
//! seconds); API tokens never depend on the IdP.

use std::time::{Duration, Instant};

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;
use tokio::sync::Mutex;

use crate::auth::{Principal, PrincipalKind};
use crate::domain::{Role, Scope};
use crate::error::{Dependency, Error, Result};

pub const LEEWAY_SECONDS: u64 = 60;

#[derive(Clone, Debug)]
pub struct OidcConfig {
    pub issuer: String,
    pub audience: String,
    /// A file path or an http(s) URL; `None`: discover `jwks_uri` from the issuer.
    pub jwks: Option<String>,
    pub user_claim: String,
    pub role_claim: String,
    pub workspace_claim: String,
    /// Least time between two refetches caused by unknown key ids.
    pub refetch_interval: Duration,
}

struct Cache {
    keys: Option<JwkSet>,
    fetched_at: Option<Instant>,
    /// When a fetch last failed while no key set was cached (the negative cache).
    failed_at: Option<Instant>,
}

pub struct OidcVerifier {
    config: OidcConfig,
    http: reqwest::Client,
    cache: Mutex<Cache>,
}

/// Cached keys older than this are refreshed on use (a failed refresh keeps the old set).
const MAX_KEY_AGE: Duration = Duration::from_secs(3600);

/// With no key set cached, a failed fetch is remembered this long: JWTs are refused with 503 meanwhile
/// without another outbound call, so a flood of (forged) JWTs during an IdP outage costs the IdP one
/// request per window. Fetches are single-flight: the cache lock is held across the fetch.
pub const NEGATIVE_CACHE: Duration = Duration::from_secs(5);

fn idp(e: impl std::fmt::Display) -> Error {
    Error::unavailable(Dependency::IdentityProvider, e)
}

/// Plain http is allowed only for loopback issuers (tests, local IdPs); anything else must be https.
pub fn check_url(url: &str) -> std::result::Result<(), String> {
    let parsed = url::Url::parse(url).map_err(|e| format!("{url:?}: {e}"))?;
    match (parsed.scheme(), parsed.host_str()) {
        ("https", Some(_)) => Ok(()),
        ("http", Some("127.0.0.1" | "localhost" | "[::1]")) => Ok(()),
        _ => Err(format!("{url:?} must be https (http only for loopback)")),
    }
}

impl OidcVerifier {
    pub fn new(config: OidcConfig) -> OidcVerifier {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(3))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("http client");
        OidcVerifier { config, http, cache: Mutex::new(Cache { keys: None, fetched_at: None, failed_at: None }) }
    }

    async fn get_json(&self, url: &str) -> Result<Value> {
        check_url(url).map_err(idp)?;
        let resp = self.http.get(url).send().await.map_err(idp)?;
        if !resp.status().is_success() {
            return Err(idp(format!("{url} answered {}", resp.status())));
        }
        resp.json().await.map_err(idp)
    }

    async fn fetch(&self) -> Result<JwkSet> {
        let doc = match &self.config.jwks {
            Some(src) if src.starts_with("http://") || src.starts_with("https://") => self.get_json(src).await?,
            Some(path) => {
                let text = tokio::fs::read_to_string(path).await.map_err(|e| idp(format!("{path}: {e}")))?;
                serde_json::from_str(&text).map_err(idp)?
            }
            None => {
                let discovery =
                    format!("{}/.well-known/openid-configuration", self.config.issuer.trim_end_matches('/'));
                let meta = self.get_json(&discovery).await?;
                if meta["issuer"].as_str() != Some(self.config.issuer.as_str()) {
                    return Err(idp("discovery document names another issuer"));
                }
                let jwks_uri = meta["jwks_uri"].as_str().ok_or_else(|| idp("discovery document has no jwks_uri"))?;
                self.get_json(jwks_uri).await?
            }
        };
        serde_json::from_value(doc).map_err(idp)
    }

    /// The key for `kid`: from the cache, or after a (rate-limited) refetch.
    async fn key(&self, kid: &str) -> Result<DecodingKey> {
        let mut cache = self.cache.lock().await;
        if cache.keys.is_none() && cache.failed_at.is_some_and(|t| t.elapsed() < NEGATIVE_CACHE) {
            return Err(idp("no key set: the last fetch failed moments ago"));
        }
        let stale = cache.fetched_at.is_none_or(|t| t.elapsed() > MAX_KEY_AGE);
        let known = cache.keys.as_ref().and_then(|k| k.find(kid)).is_some();
        let may_refetch = cache.fetched_at.is_none_or(|t| t.elapsed() >= self.config.refetch_interval);
        if stale || (!known && may_refetch) {
            match self.fetch().await {
                Ok(keys) => {
                    cache.keys = Some(keys);
                    cache.fetched_at = Some(Instant::now());
                    cache.failed_at = None;
                }
                Err(e) if cache.keys.is_some() => {
                    tracing::warn!(error = %e, "JWKS refresh failed; keeping the cached key set");
                    cache.fetched_at = Some(Instant::now());
                }
                Err(e) => {
                    cache.failed_at = Some(Instant::now());
                    return Err(e);
                }
            }
        }
        let jwk = cache.keys.as_ref().and_then(|k| k.find(kid)).ok_or(Error::TokenInvalid)?;
        DecodingKey::from_jwk(jwk).map_err(|_| Error::TokenInvalid)
    }

    pub async fn verify(&self, jwt: &str) -> Result<Principal> {
        let header = jsonwebtoken::decode_header(jwt).map_err(|_| Error::TokenInvalid)?;
        if header.alg != Algorithm::RS256 {
            return Err(Error::TokenInvalid);
        }
        let kid = header.kid.ok_or(Error::TokenInvalid)?;
        let key = self.key(&kid).await?;
        let mut validation = Validation::new(Algorithm::RS256);
        validation.algorithms = vec![Algorithm::RS256];
        validation.leeway = LEEWAY_SECONDS;
        validation.validate_nbf = true;
        validation.set_issuer(&[&self.config.issuer]);
        validation.set_audience(&[&self.config.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        let data = jsonwebtoken::decode::<Value>(jwt, &key, &validation).map_err(|e| match e.kind() {
            jsonwebtoken::errors::ErrorKind::ExpiredSignature => Error::TokenExpired,
            _ => Error::TokenInvalid,
        })?;
        let claims = data.claims;
        let claim = |name: &str| claims.get(name).and_then(Value::as_str).ok_or(Error::TokenInvalid);
        let role: Role = claim(&self.config.role_claim)?.parse().map_err(|_| Error::TokenInvalid)?;
        let workspace_id = Scope::parse(claim(&self.config.workspace_claim)?).map_err(|_| Error::TokenInvalid)?;
        Ok(Principal {
            user: claim(&self.config.user_claim)?.to_owned(),
            role,
            workspace_id,
            credential_id: format!("oidc:{}", claim("sub")?),
            kind: PrincipalKind::Oidc,
        })
    }
}
