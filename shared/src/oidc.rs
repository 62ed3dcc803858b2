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

use crate::domain::principal::{Principal, PrincipalKind};
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

#[derive(Default)]
struct Cache {
    keys: Option<JwkSet>,
    /// The last successful fetch.
    fetched_at: Option<Instant>,
    /// The last fetch started (successful or not): refetches for unknown kids are spaced from it.
    attempted_at: Option<Instant>,
    /// The last failed fetch (the negative cache).
    failed_at: Option<Instant>,
}

/// What to do for a kid, given the cache.
enum Plan {
    Use(jsonwebtoken::jwk::Jwk),
    /// Fetch, then look again; `fallback` is a stale key to use if the fetch fails.
    Fetch {
        fallback: Option<jsonwebtoken::jwk::Jwk>,
    },
    Refuse(Error),
}

pub struct OidcVerifier {
    config: OidcConfig,
    http: reqwest::Client,
    /// Held only to read or update, never across a fetch.
    cache: std::sync::Mutex<Cache>,
    /// Single flight: held across a fetch, so at most one is in flight.
    fetching: Mutex<()>,
}

/// Cached keys older than this are refreshed on use (a failed refresh keeps the old set).
const MAX_KEY_AGE: Duration = Duration::from_secs(3600);

/// A failed fetch is remembered this long: meanwhile JWTs with an unknown key id are refused (503
/// while no key set is cached, 401 otherwise) without another outbound call, so a flood of forged
/// JWTs during an IdP outage costs the IdP one request per window. Fetches are single-flight, and a
/// JWT whose key is cached never waits for one.
pub const NEGATIVE_CACHE: Duration = Duration::from_secs(5);

/// Least time between two fetches for unknown key ids, whatever HELIX_OIDC_REFETCH_SECONDS says.
const MIN_REFETCH: Duration = Duration::from_secs(1);

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
        OidcVerifier { config, http, cache: std::sync::Mutex::new(Cache::default()), fetching: Mutex::new(()) }
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

    fn plan(&self, kid: &str) -> Plan {
        let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        let elapsed = |t: Option<Instant>| t.map(|t| t.elapsed());
        let failed_recently = elapsed(cache.failed_at).is_some_and(|e| e < NEGATIVE_CACHE);
        let known = cache.keys.as_ref().and_then(|k| k.find(kid)).cloned();
        let stale = elapsed(cache.fetched_at).is_none_or(|e| e > MAX_KEY_AGE);
        let spacing = self.config.refetch_interval.max(MIN_REFETCH);
        let may_refetch = !failed_recently && elapsed(cache.attempted_at).is_none_or(|e| e >= spacing);
        match (known, cache.keys.is_some()) {
            (Some(jwk), _) if !stale || failed_recently => Plan::Use(jwk),
            (Some(jwk), _) => Plan::Fetch { fallback: Some(jwk) },
            (None, false) if failed_recently => Plan::Refuse(idp("no key set: the last fetch failed moments ago")),
            (None, false) => Plan::Fetch { fallback: None },
            (None, true) if may_refetch => Plan::Fetch { fallback: None },
            (None, true) => Plan::Refuse(Error::TokenInvalid),
        }
    }

    /// The key for `kid`: from the cache, or after a single-flight, rate-limited fetch. A cached key
    /// never waits for a fetch in flight (a stale one is used meanwhile).
    async fn key(&self, kid: &str) -> Result<DecodingKey> {
        let jwk = match self.plan(kid) {
            Plan::Use(jwk) => jwk,
            Plan::Refuse(e) => return Err(e),
            Plan::Fetch { fallback } => {
                let _flight = match (self.fetching.try_lock(), &fallback) {
                    (Ok(guard), _) => guard,
                    (Err(_), Some(stale)) => return decoding_key(stale),
                    (Err(_), None) => self.fetching.lock().await,
                };
                // Another request may have fetched while this one waited.
                match self.plan(kid) {
                    Plan::Use(jwk) => jwk,
                    Plan::Refuse(e) => return Err(e),
                    Plan::Fetch { fallback } => self.fetch_for(kid, fallback).await?,
                }
            }
        };
        decoding_key(&jwk)
    }

    /// Fetch the key set (the caller holds the single-flight guard) and look `kid` up in it.
    async fn fetch_for(&self, kid: &str, fallback: Option<jsonwebtoken::jwk::Jwk>) -> Result<jsonwebtoken::jwk::Jwk> {
        self.cache.lock().unwrap_or_else(|p| p.into_inner()).attempted_at = Some(Instant::now());
        let fetched = self.fetch().await;
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        match fetched {
            Ok(keys) => {
                cache.keys = Some(keys);
                cache.fetched_at = Some(Instant::now());
                cache.failed_at = None;
            }
            Err(e) => {
                cache.failed_at = Some(Instant::now());
                if let Some(stale) = fallback {
                    tracing::warn!(error = %e, "JWKS refresh failed; using the cached key set");
                    return Ok(stale);
                }
                if cache.keys.is_none() {
                    return Err(e);
                }
                tracing::warn!(error = %e, "JWKS refresh for an unknown key id failed");
            }
        }
        cache.keys.as_ref().and_then(|k| k.find(kid)).cloned().ok_or(Error::TokenInvalid)
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

fn decoding_key(jwk: &jsonwebtoken::jwk::Jwk) -> Result<DecodingKey> {
    DecodingKey::from_jwk(jwk).map_err(|_| Error::TokenInvalid)
}
