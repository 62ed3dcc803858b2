//! The route table of SPEC §2 (the routes that exist so far). Each route is one line of `routes!`:
//! its variant and typed path parameters, method, path, owning function and minimum role. Everything
//! else is derived from that line: the `Route` enum the handlers match on, the `ROUTES` table that
//! documentation, the RBAC matrix and the IaC test read, path matching (matchit, the router axum
//! uses), the 405 `Allow` list, and the workspace a route acts on. Path parameters are validated here,
//! so a malformed workspace id or digest is a 400 before any handler or store is reached.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use http::Method;

use crate::domain::{BundleName, Digest, Role, WorkspaceId};
use crate::error::{Error, Result};
use crate::ports::Prefetch;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Function {
    Publish,
    Fetch,
    Health,
    Token,
    Waive,
    Audit,
    Metrics,
}

impl Function {
    pub fn as_str(self) -> &'static str {
        match self {
            Function::Publish => "publish",
            Function::Fetch => "fetch",
            Function::Health => "health",
            Function::Token => "token",
            Function::Waive => "waive",
            Function::Audit => "audit",
            Function::Metrics => "metrics",
        }
    }
}

/// One row of the route table: documentation, the RBAC matrix and the IaC wiring read it.
pub struct RouteSpec {
    pub method: &'static str,
    pub path: &'static str,
    pub function: Function,
    pub min_role: Option<Role>,
}

/// A typed path parameter: parsed (after percent-decoding) and validated from its path segment.
pub trait PathParam: Sized {
    fn from_segment(segment: &str) -> Result<Self>;

    /// The workspace this parameter names, if it names one.
    fn workspace(&self) -> Option<&WorkspaceId> {
        None
    }
}

impl PathParam for WorkspaceId {
    fn from_segment(segment: &str) -> Result<Self> {
        WorkspaceId::parse(segment)
    }

    fn workspace(&self) -> Option<&WorkspaceId> {
        Some(self)
    }
}

impl PathParam for Digest {
    fn from_segment(segment: &str) -> Result<Self> {
        Digest::parse(segment)
    }
}

impl PathParam for BundleName {
    fn from_segment(segment: &str) -> Result<Self> {
        BundleName::parse(segment)
    }
}

/// A token id: `tok_` + 16 lowercase hex.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenId(pub String);

impl PathParam for TokenId {
    fn from_segment(segment: &str) -> Result<Self> {
        let ok = segment
            .strip_prefix("tok_")
            .is_some_and(|h| h.len() == 16 && h.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
        if ok {
            Ok(TokenId(segment.to_owned()))
        } else {
            Err(Error::BadRequest("a token id is tok_ + 16 lowercase hex".into()))
        }
    }
}

fn decode(segment: &str) -> Result<String> {
    percent_encoding::percent_decode_str(segment)
        .decode_utf8()
        .map(|s| s.into_owned())
        .map_err(|_| Error::BadRequest("path is not valid UTF-8".into()))
}

/// The matched path's raw parameters.
struct Params<'a>(BTreeMap<&'a str, &'a str>);

impl Params<'_> {
    fn get<T: PathParam>(&self, name: &str) -> Result<T> {
        let raw = self.0.get(name).ok_or_else(|| Error::Internal(format!("route has no parameter {name}")))?;
        T::from_segment(&decode(raw)?)
    }
}

impl Route {
    /// The item a route reads first, read with the credential in one round trip where the store can
    /// (docs/decisions.md "Fewest round trips"): a blob route's link, a decision's or an export's
    /// bundle version.
    pub fn prefetch(&self) -> Option<Prefetch<'_>> {
        match self {
            Route::GetBlob { ws, digest }
            | Route::HeadBlob { ws, digest }
            | Route::PutBlob { ws, digest }
            | Route::CompleteUpload { ws, digest } => Some(Prefetch::Link { ws, digest }),
            Route::Approve { ws, name, version }
            | Route::Reject { ws, name, version }
            | Route::Waive { ws, name, version }
            | Route::Export { ws, name, version }
            | Route::GetBundleVersion { ws, name, version }
            | Route::GetGovernance { ws, name, version } => {
                Some(Prefetch::Version { ws, name: name.as_str(), version: version.as_str() })
            }
            _ => None,
        }
    }

    /// Refused with 503 `registry_frozen` while the registry is frozen: every change (any method but
    /// GET and HEAD, and the batch reads that are POSTs only to carry their digests), except the switch
    /// itself and token revocation (it only takes access away: it is what a freeze buys time for).
    pub fn refused_while_frozen(&self) -> bool {
        !matches!(self.spec().method, "GET" | "HEAD")
            && !self.is_batch_read()
            && !matches!(
                self,
                Route::Freeze
                    | Route::Unfreeze
                    | Route::RevokeToken { .. }
                    | Route::Suspend { .. }
                    | Route::Unsuspend { .. }
            )
    }

    /// A read that is a POST only because its body names many digests (a missing query, a batch fetch).
    pub fn is_batch_read(&self) -> bool {
        matches!(self, Route::MissingBlobs { .. } | Route::FetchBatch { .. })
    }

    /// The workspace whose suspension refuses this route with 403 `workspace_suspended` (besides the
    /// one a credential of a single workspace is limited to): the workspace the route acts on, except
    /// for the suspension switches themselves, whose `{ws}` is the tenant being switched.
    pub fn suspension_scope(&self) -> Option<&WorkspaceId> {
        match self {
            Route::Suspend { .. } | Route::Unsuspend { .. } => None,
            other => other.workspace(),
        }
    }
}

macro_rules! routes {
    ($($variant:ident $({ $($field:ident: $ty:ty),* })? = $method:literal $path:literal, $function:ident, $role:expr;)*) => {
        #[derive(Clone, Debug, PartialEq)]
        pub enum Route {
            $($variant $({ $($field: $ty),* })?,)*
        }

        pub const ROUTES: &[RouteSpec] = &[
            $(RouteSpec { method: $method, path: $path, function: Function::$function, min_role: $role },)*
        ];

        /// Builds the route of `ROUTES[i]` from its parameters, in table order.
        static BUILDERS: &[fn(&Params<'_>) -> Result<Route>] = &[
            $(|_p: &Params<'_>| Ok(Route::$variant $({ $($field: _p.get::<$ty>(stringify!($field))?),* })?),)*
        ];

        impl Route {
            #[allow(unused_assignments)]
            fn index(&self) -> usize {
                let mut i = 0usize;
                $(
                    if matches!(self, Route::$variant { .. }) {
                        return i;
                    }
                    i += 1;
                )*
                unreachable!("{i} routes, none matched")
            }

            /// The workspace the route acts on (from its `WorkspaceId` parameter), if any.
            pub fn workspace(&self) -> Option<&WorkspaceId> {
                match self {
                    $(Route::$variant $({ $($field),* })? => {
                        let found: Option<&WorkspaceId> = None;
                        $($(let found = found.or_else(|| PathParam::workspace($field));)*)?
                        found
                    })*
                }
            }
        }
    };
}

routes! {
    Healthz = "GET" "/healthz", Health, None;
    Readyz = "GET" "/readyz", Health, None;
    Status = "GET" "/v1/status", Health, Some(Role::Viewer);
    Metrics = "GET" "/metrics", Metrics, None;
    PutBlob { ws: WorkspaceId, digest: Digest } = "PUT" "/v1/workspaces/{ws}/blobs/{digest}", Publish, Some(Role::Publisher);
    CreateUpload { ws: WorkspaceId } = "POST" "/v1/workspaces/{ws}/uploads", Publish, Some(Role::Publisher);
    CompleteUpload { ws: WorkspaceId, digest: Digest } = "POST" "/v1/workspaces/{ws}/uploads/{digest}/complete", Publish, Some(Role::Publisher);
    UploadStatus { ws: WorkspaceId, digest: Digest } = "GET" "/v1/workspaces/{ws}/uploads/{digest}/status", Publish, Some(Role::Publisher);
    GetBlob { ws: WorkspaceId, digest: Digest } = "GET" "/v1/workspaces/{ws}/blobs/{digest}", Fetch, Some(Role::Viewer);
    HeadBlob { ws: WorkspaceId, digest: Digest } = "HEAD" "/v1/workspaces/{ws}/blobs/{digest}", Fetch, Some(Role::Viewer);
    MissingBlobs { ws: WorkspaceId } = "POST" "/v1/workspaces/{ws}/missing-blobs", Fetch, Some(Role::Viewer);
    PublishBatch { ws: WorkspaceId } = "POST" "/v1/workspaces/{ws}/blob-batches", Publish, Some(Role::Publisher);
    FetchBatch { ws: WorkspaceId } = "POST" "/v1/workspaces/{ws}/blob-fetches", Fetch, Some(Role::Viewer);
    GetProof { ws: WorkspaceId, digest: Digest } = "GET" "/v1/proofs/{ws}/{digest}", Fetch, None;
    PutBundleVersion { ws: WorkspaceId, name: BundleName, version: BundleName } = "PUT" "/v1/workspaces/{ws}/bundles/{name}/versions/{version}", Publish, Some(Role::Publisher);
    GetBundleVersion { ws: WorkspaceId, name: BundleName, version: BundleName } = "GET" "/v1/workspaces/{ws}/bundles/{name}/versions/{version}", Fetch, Some(Role::Viewer);
    ListBundles { ws: WorkspaceId } = "GET" "/v1/workspaces/{ws}/bundles", Fetch, Some(Role::Viewer);
    ListWorkspaces = "GET" "/v1/workspaces", Fetch, Some(Role::Viewer);
    PendingDecisions = "GET" "/v1/governance/pending", Fetch, Some(Role::Approver);
    GetGovernance { ws: WorkspaceId, name: BundleName, version: BundleName } = "GET" "/v1/workspaces/{ws}/bundles/{name}/versions/{version}/governance", Fetch, Some(Role::Viewer);
    Approve { ws: WorkspaceId, name: BundleName, version: BundleName } = "POST" "/v1/workspaces/{ws}/bundles/{name}/versions/{version}/approve", Waive, Some(Role::Approver);
    Reject { ws: WorkspaceId, name: BundleName, version: BundleName } = "POST" "/v1/workspaces/{ws}/bundles/{name}/versions/{version}/reject", Waive, Some(Role::Approver);
    Waive { ws: WorkspaceId, name: BundleName, version: BundleName } = "POST" "/v1/workspaces/{ws}/bundles/{name}/versions/{version}/waivers", Waive, Some(Role::SafetyReviewer);
    GovernancePublicKey = "GET" "/v1/governance/public-key", Waive, None;
    Export { ws: WorkspaceId, name: BundleName, version: BundleName } = "POST" "/v1/workspaces/{ws}/bundles/{name}/versions/{version}/export", Waive, Some(Role::Publisher);
    ReportUnregisteredExport { ws: WorkspaceId, name: BundleName, version: BundleName } = "POST" "/v1/workspaces/{ws}/bundles/{name}/versions/{version}/unregistered-exports", Waive, Some(Role::Publisher);
    IssueToken = "POST" "/v1/tokens", Token, Some(Role::Admin);
    ListTokens = "GET" "/v1/tokens", Token, Some(Role::Admin);
    RevokeToken { id: TokenId } = "POST" "/v1/tokens/{id}/revoke", Token, Some(Role::Admin);
    RotateToken = "POST" "/v1/tokens/rotate", Token, Some(Role::Viewer);
    Whoami = "GET" "/v1/whoami", Token, Some(Role::Viewer);
    Freeze = "POST" "/v1/admin/freeze", Token, Some(Role::Admin);
    Unfreeze = "POST" "/v1/admin/unfreeze", Token, Some(Role::Admin);
    Suspend { ws: WorkspaceId } = "POST" "/v1/admin/workspaces/{ws}/suspend", Token, Some(Role::Admin);
    Unsuspend { ws: WorkspaceId } = "POST" "/v1/admin/workspaces/{ws}/unsuspend", Token, Some(Role::Admin);
    SearchAudit = "GET" "/v1/audit", Audit, Some(Role::Approver);
}

/// Every path of the table, with the methods it takes (`ROUTES` indexes), for matching.
struct Table {
    router: matchit::Router<Vec<usize>>,
    allow: Vec<&'static [&'static str]>,
}

fn table() -> &'static Table {
    static TABLE: OnceLock<Table> = OnceLock::new();
    TABLE.get_or_init(|| {
        let mut paths: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
        for (i, spec) in ROUTES.iter().enumerate() {
            paths.entry(spec.path).or_default().push(i);
        }
        let mut router = matchit::Router::new();
        let mut allow = vec![&[][..]; ROUTES.len()];
        for (path, indexes) in paths {
            let mut methods: Vec<&'static str> = indexes.iter().map(|&i| ROUTES[i].method).collect();
            methods.sort_unstable();
            let methods: &'static [&'static str] = Box::leak(methods.into_boxed_slice());
            for &i in &indexes {
                allow[i] = methods;
            }
            router.insert(path, indexes).expect("the route table's paths do not conflict");
        }
        Table { router, allow }
    })
}

impl Route {
    /// Match `method` and `path`: 404 for an unknown path, 405 (with the path's methods) for a known
    /// path with another method, 400 for a malformed parameter. The method is checked before any
    /// parameter, so a wrong method is 405 whatever the path holds.
    pub fn parse(method: &Method, path: &str) -> Result<Route> {
        let table = table();
        let matched = table.router.at(path).map_err(|_| Error::NotFound)?;
        let indexes = matched.value;
        let Some(&i) = indexes.iter().find(|&&i| ROUTES[i].method == method.as_str()) else {
            return Err(Error::MethodNotAllowed { allow: table.allow[indexes[0]] });
        };
        let params = Params(matched.params.iter().collect());
        BUILDERS[i](&params)
    }

    pub fn spec(&self) -> &'static RouteSpec {
        &ROUTES[self.index()]
    }

    pub fn function(&self) -> Function {
        self.spec().function
    }

    /// `GET /v1/workspaces/{ws}/blobs/{digest}`: the route key API Gateway would log.
    pub fn key(&self) -> String {
        format!("{} {}", self.spec().method, self.spec().path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae";

    fn example(spec: &RouteSpec) -> String {
        spec.path
            .replace("{ws}", "team-a")
            .replace("{digest}", D)
            .replace("{id}", "tok_0123456789abcdef")
            .replace("{name}", "model")
            .replace("{version}", "1.0")
    }

    #[test]
    fn every_route_in_the_table_parses_to_itself_and_knows_its_workspace() {
        assert_eq!(BUILDERS.len(), ROUTES.len());
        for spec in ROUTES {
            let route = Route::parse(&spec.method.parse().unwrap(), &example(spec)).unwrap();
            assert_eq!(route.key(), format!("{} {}", spec.method, spec.path));
            let ws = route.workspace().map(WorkspaceId::as_str);
            assert_eq!(ws, spec.path.contains("{ws}").then_some("team-a"), "{}", spec.path);
        }
    }

    #[test]
    fn parameters_are_validated_and_percent_decoded() {
        let get = Method::GET;
        assert!(Route::parse(&get, &format!("/v1/workspaces/team-a/blobs/{}", D.replace(':', "%3A"))).is_ok());
        assert!(matches!(
            Route::parse(&get, &format!("/v1/workspaces/Team/blobs/{D}")),
            Err(Error::InvalidWorkspace(_))
        ));
        assert!(matches!(
            Route::parse(&get, "/v1/workspaces/a/blobs/sha256:..%2F..%2Fetc"),
            Err(Error::InvalidDigest(_))
        ));
        assert!(matches!(
            Route::parse(&get, "/v1/workspaces/a%2Fb/uploads/x/complete"),
            Err(Error::MethodNotAllowed { .. })
        ));
        assert!(matches!(Route::parse(&get, "/v1/nothing"), Err(Error::NotFound)));
        assert!(matches!(
            Route::parse(&Method::DELETE, &format!("/v1/workspaces/a/blobs/{D}")),
            Err(Error::MethodNotAllowed { allow: ["GET", "HEAD", "PUT"] })
        ));
        assert!(matches!(
            Route::parse(&get, "/v1/workspaces/a/uploads"),
            Err(Error::MethodNotAllowed { allow: ["POST"] })
        ));
        assert!(matches!(
            Route::parse(&Method::DELETE, "/v1/workspaces/BAD/blobs/x"),
            Err(Error::MethodNotAllowed { .. })
        ));
        assert!(matches!(Route::parse(&get, "/v1/tokens/nope/revoke"), Err(Error::MethodNotAllowed { .. })));
        assert!(matches!(Route::parse(&Method::POST, "/v1/tokens/nope/revoke"), Err(Error::BadRequest(_))));
        assert!(matches!(Route::parse(&Method::POST, "/v1/tokens/rotate"), Ok(Route::RotateToken)));
    }
}
