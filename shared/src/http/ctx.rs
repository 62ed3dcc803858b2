//! Per-request context: the request id (API Gateway's, else Lambda's, else the local server's),
//! route matching for the function that owns the route, authorization, and the one JSON log line
//! per request (request id, route, status, latency, principal id — never a token).

use std::sync::OnceLock;
use std::time::Instant;

use lambda_http::RequestExt;
use lambda_http::request::RequestContext;

use super::route::{Function, Route};
use super::{Request, Response, problem};
use crate::App;
use crate::auth::Principal;
use crate::domain::{Digest, WorkspaceId};
use crate::error::Result;
use crate::ports::{BlobLink, BundleVersion, Prefetch, Prefetched};

/// Set by the local server on each request it forwards (Lambda requests carry their own ids).
#[derive(Clone, Debug)]
pub struct RequestId(pub String);

pub struct Ctx {
    pub request_id: String,
    lambda_request_id: Option<String>,
    method: String,
    started: Instant,
    route_key: OnceLock<String>,
    principal: OnceLock<String>,
    /// The authenticated actor (`user@credential`), set before authorization: a refusal for role or
    /// workspace is audited under it.
    actor: OnceLock<String>,
    /// The item the route reads first as read with the credential (`Route::prefetch`), kept once the
    /// principal was authorized.
    prefetched: std::sync::Mutex<Option<Held>>,
}

/// An item read with the credential: the key it was read under, and what was read (None: none).
enum Held {
    Link(WorkspaceId, Digest, Option<BlobLink>),
    Version(WorkspaceId, String, String, Option<BundleVersion>),
}

impl Held {
    fn of(asked: Prefetch<'_>, read: Prefetched) -> Option<Held> {
        match (asked, read) {
            (Prefetch::Link { ws, digest }, Prefetched::Link(l)) => Some(Held::Link(ws.clone(), digest.clone(), l)),
            (Prefetch::Version { ws, name, version }, Prefetched::Version(v)) => {
                Some(Held::Version(ws.clone(), name.to_owned(), version.to_owned(), v))
            }
            // A store answering with another kind than asked for: not used (the route reads it).
            _ => None,
        }
    }
}

pub fn new_request_id() -> String {
    crate::domain::random_hex::<12>()
}

impl Ctx {
    pub fn begin(req: &Request) -> Ctx {
        let apigw = match req.request_context_ref() {
            Some(RequestContext::ApiGatewayV2(c)) => c.request_id.clone(),
            _ => None,
        };
        let lambda_request_id = req.lambda_context_ref().map(|c| c.request_id.clone());
        let local = req.extensions().get::<RequestId>().map(|r| r.0.clone());
        Ctx {
            request_id: apigw.or(local).or_else(|| lambda_request_id.clone()).unwrap_or_else(new_request_id),
            lambda_request_id,
            method: req.method().to_string(),
            started: Instant::now(),
            route_key: OnceLock::new(),
            principal: OnceLock::new(),
            actor: OnceLock::new(),
            prefetched: std::sync::Mutex::new(None),
        }
    }

    /// The route of this request, if `owner` serves it (a route of another function is a 404).
    pub fn route(&self, req: &Request, owner: Function) -> Result<Route> {
        let route = Route::parse(req.method(), req.uri().path())?;
        let _ = self.route_key.set(route.key());
        if route.function() != owner {
            return Err(crate::Error::NotFound);
        }
        Ok(route)
    }

    /// The authenticated actor (`user@credential`), once the credential was verified (authorized or not).
    pub fn actor(&self) -> Option<&str> {
        self.actor.get().map(String::as_str)
    }

    /// The matched route's key (`GET /v1/audit`), or `-` when none matched.
    pub fn route_key(&self) -> &str {
        self.route_key.get().map(String::as_str).unwrap_or("-")
    }

    /// Authenticate and authorize for `route`'s minimum role and workspace.
    /// A request scoped to a suspended workspace (`Route::suspension_scope`, or the credential's own
    /// single workspace) is refused with 403 `workspace_suspended`, after authorization (so a refusal
    /// for role or workspace stays what it is, and an outsider learns nothing of the switch).
    /// A change (any method but GET and HEAD) is refused with 503 `registry_frozen` while the registry
    /// is frozen; freeze, unfreeze, the suspension switches and token revocation pass. A request already
    /// past these checks when a switch lands may still complete: the switch holds for every request that
    /// begins after it.
    pub async fn authorize(&self, app: &App, req: &Request, route: &Route) -> Result<Principal> {
        let min = route.spec().min_role.unwrap_or(crate::domain::Role::Viewer);
        let frozen_out = route.refused_while_frozen();
        let prefetch = route.prefetch();
        let (principal, gate) =
            self.authorized(app, req, min, route.workspace(), route.suspension_scope(), frozen_out, prefetch).await?;
        if frozen_out {
            crate::freeze::refuse_if_frozen(app.meta.as_ref(), gate.freeze).await?;
        }
        // Only now, authorized, not suspended and (on a change) not frozen, is the item read with the
        // credential kept for the route.
        if let (Some(asked), Some(read)) = (prefetch, gate.prefetched) {
            *self.prefetched.lock().unwrap_or_else(|p| p.into_inner()) = Held::of(asked, read);
        }
        Ok(principal)
    }

    /// The held item if it is the one `wanted` (else it stays held); taken once.
    fn take_if(&self, wanted: impl FnOnce(&Held) -> bool) -> Option<Held> {
        let mut held = self.prefetched.lock().unwrap_or_else(|p| p.into_inner());
        if held.as_ref().is_some_and(wanted) { held.take() } else { None }
    }

    /// The link of `digest` in `ws` as read with the credential of this (authorized) request, if it
    /// was (`Route::prefetch`, on a store that reads it in the same round trip); taken once.
    pub fn read_link(&self, ws: &WorkspaceId, digest: &Digest) -> Option<Option<BlobLink>> {
        match self.take_if(|h| matches!(h, Held::Link(w, d, _) if w == ws && d == digest)) {
            Some(Held::Link(_, _, link)) => Some(link),
            _ => None,
        }
    }

    /// The bundle version `name`@`version` of `ws` as read with the credential of this (authorized)
    /// request, if it was (`Route::prefetch`, on a store that reads it in the same round trip); taken
    /// once.
    pub fn read_version(&self, ws: &WorkspaceId, name: &str, version: &str) -> Option<Option<BundleVersion>> {
        match self.take_if(|h| matches!(h, Held::Version(w, n, v, _) if w == ws && n == name && v == version)) {
            Some(Held::Version(_, _, _, read)) => Some(read),
            _ => None,
        }
    }

    /// Authenticate and require at least `min` (and `ws`, if given, within the grant); refused while
    /// the workspace the request is scoped to is suspended.
    pub async fn authorize_with(
        &self,
        app: &App,
        req: &Request,
        min: crate::domain::Role,
        ws: Option<&WorkspaceId>,
    ) -> Result<Principal> {
        self.authorized(app, req, min, ws, ws, false, None).await.map(|(p, _)| p)
    }

    /// The principal of the request's credential, authorized and not suspended, and the switches read
    /// with it (the freeze switch when asked for with `with_freeze`; the item `prefetch` names).
    #[allow(clippy::too_many_arguments)]
    async fn authorized(
        &self,
        app: &App,
        req: &Request,
        min: crate::domain::Role,
        ws: Option<&WorkspaceId>,
        suspension_ws: Option<&WorkspaceId>,
        with_freeze: bool,
        prefetch: Option<Prefetch<'_>>,
    ) -> Result<(Principal, crate::ports::Gate)> {
        let header = req.headers().get(http::header::AUTHORIZATION).and_then(|v| v.to_str().ok());
        let (principal, mut gate) = app.auth.authenticate(header, with_freeze, suspension_ws, prefetch).await?;
        let _ = self.principal.set(principal.credential_id.clone());
        let _ = self.actor.set(principal.actor());
        let scoped = crate::suspension::scope_of(suspension_ws, &principal).cloned();
        // The credential's own workspace suspended: refused before its role is judged (a refusal such
        // as insufficient_role would still be audited in the suspended stream). Saying so reveals
        // nothing the credential's holder does not already own. Any other workspace's suspension is
        // told only to who may act there, after authorization.
        let own = scoped.as_ref().is_some_and(|w| principal.workspace_id == crate::domain::Scope::One(w.clone()));
        if let (true, Some(w)) = (own, &scoped) {
            crate::suspension::refuse_if_suspended(app.meta.as_ref(), w, gate.suspension.clone()).await?;
        }
        principal.authorize(min, ws)?;
        if let (false, Some(w)) = (own, &scoped) {
            crate::suspension::refuse_if_suspended(app.meta.as_ref(), w, gate.suspension.take()).await?;
        }
        Ok((principal, gate))
    }

    /// Map an error to problem+json, stamp the request id, and log the request's one line.
    pub fn finish(&self, result: Result<Response>) -> Response {
        let (mut response, error) = match result {
            Ok(r) => (r, None),
            Err(e) => (problem::problem(&e, &self.request_id), Some(e)),
        };
        if let Ok(v) = http::HeaderValue::from_str(&self.request_id) {
            response.headers_mut().insert("x-request-id", v);
        }
        let status = response.status().as_u16();
        let latency_ms = self.started.elapsed().as_secs_f64() * 1000.0;
        let route = self.route_key.get().map(String::as_str).unwrap_or("-");
        let principal = self.principal.get().map(String::as_str).unwrap_or("-");
        let lambda_request_id = self.lambda_request_id.as_deref().unwrap_or("-");
        match &error {
            // A freeze refusal is the switch working, not a fault (no 5xx alarm on it).
            Some(e @ crate::Error::RegistryFrozen(_)) => {
                tracing::info!(request_id = %self.request_id, method = %self.method, route, status, latency_ms, principal, lambda_request_id, reason = problem::classify(e).1, "request")
            }
            Some(e) if status >= 500 => {
                tracing::error!(request_id = %self.request_id, method = %self.method, route, status, latency_ms, principal, lambda_request_id, error = %e, "request")
            }
            Some(e) => {
                tracing::info!(request_id = %self.request_id, method = %self.method, route, status, latency_ms, principal, lambda_request_id, reason = problem::classify(e).1, "request")
            }
            None => {
                tracing::info!(request_id = %self.request_id, method = %self.method, route, status, latency_ms, principal, lambda_request_id, "request")
            }
        }
        response
    }
}
