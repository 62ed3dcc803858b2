//! The route table of SPEC §2 (the routes that exist so far), in one place: path shape, method,
//! owning function and minimum role. Path parameters are validated here, so a malformed workspace
//! id or digest is a 400 before any handler or store is reached.

use http::Method;

use crate::domain::{Digest, Role, WorkspaceId};
use crate::error::{Error, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Function {
    Publish,
    Fetch,
    Health,
    Token,
}

impl Function {
    pub fn as_str(self) -> &'static str {
        match self {
            Function::Publish => "publish",
            Function::Fetch => "fetch",
            Function::Health => "health",
            Function::Token => "token",
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum Route {
    Healthz,
    Readyz,
    Status,
    PutBlob { ws: WorkspaceId, digest: Digest },
    CreateUpload { ws: WorkspaceId },
    CompleteUpload { ws: WorkspaceId, digest: Digest },
    GetBlob { ws: WorkspaceId, digest: Digest },
    HeadBlob { ws: WorkspaceId, digest: Digest },
    IssueToken,
    ListTokens,
    RevokeToken { id: String },
    RotateToken,
    Whoami,
}

/// One row of the route table: documentation, the RBAC matrix and the IaC wiring read it.
pub struct RouteSpec {
    pub method: &'static str,
    pub path: &'static str,
    pub function: Function,
    pub min_role: Option<Role>,
}

pub const ROUTES: &[RouteSpec] = &[
    RouteSpec { method: "GET", path: "/healthz", function: Function::Health, min_role: None },
    RouteSpec { method: "GET", path: "/readyz", function: Function::Health, min_role: None },
    RouteSpec { method: "GET", path: "/v1/status", function: Function::Health, min_role: Some(Role::Viewer) },
    RouteSpec {
        method: "PUT",
        path: "/v1/workspaces/{ws}/blobs/{digest}",
        function: Function::Publish,
        min_role: Some(Role::Publisher),
    },
    RouteSpec {
        method: "POST",
        path: "/v1/workspaces/{ws}/uploads",
        function: Function::Publish,
        min_role: Some(Role::Publisher),
    },
    RouteSpec {
        method: "POST",
        path: "/v1/workspaces/{ws}/uploads/{digest}/complete",
        function: Function::Publish,
        min_role: Some(Role::Publisher),
    },
    RouteSpec {
        method: "GET",
        path: "/v1/workspaces/{ws}/blobs/{digest}",
        function: Function::Fetch,
        min_role: Some(Role::Viewer),
    },
    RouteSpec {
        method: "HEAD",
        path: "/v1/workspaces/{ws}/blobs/{digest}",
        function: Function::Fetch,
        min_role: Some(Role::Viewer),
    },
    RouteSpec { method: "POST", path: "/v1/tokens", function: Function::Token, min_role: Some(Role::Admin) },
    RouteSpec { method: "GET", path: "/v1/tokens", function: Function::Token, min_role: Some(Role::Admin) },
    RouteSpec {
        method: "POST",
        path: "/v1/tokens/{id}/revoke",
        function: Function::Token,
        min_role: Some(Role::Admin),
    },
    RouteSpec { method: "POST", path: "/v1/tokens/rotate", function: Function::Token, min_role: Some(Role::Viewer) },
    RouteSpec { method: "GET", path: "/v1/whoami", function: Function::Token, min_role: Some(Role::Viewer) },
];

/// Token ids are `tok_` + 16 lowercase hex.
fn token_id(segment: &str) -> Result<String> {
    let ok = segment
        .strip_prefix("tok_")
        .is_some_and(|h| h.len() == 16 && h.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
    if ok { Ok(segment.to_owned()) } else { Err(Error::BadRequest("a token id is tok_ + 16 lowercase hex".into())) }
}

fn decode(segment: &str) -> Result<String> {
    percent_encoding::percent_decode_str(segment)
        .decode_utf8()
        .map(|s| s.into_owned())
        .map_err(|_| Error::BadRequest("path is not valid UTF-8".into()))
}

impl Route {
    /// Match `method` and `path`: 404 for an unknown path, 405 for a known path with another
    /// method, 400 for a malformed parameter.
    pub fn parse(method: &Method, path: &str) -> Result<Route> {
        let segs: Vec<&str> = path.strip_prefix('/').unwrap_or(path).split('/').collect();
        let m = method.as_str();
        // The method is checked before any parameter, so a wrong method is 405 whatever the path holds.
        let allow = |ok: &'static [&'static str], build: &dyn Fn() -> Result<Route>| {
            if ok.contains(&m) { build() } else { Err(Error::MethodNotAllowed { allow: ok }) }
        };
        let ws = |seg: &str| WorkspaceId::parse(&decode(seg)?);
        let digest = |seg: &str| Digest::parse(&decode(seg)?);
        match segs.as_slice() {
            ["healthz"] => allow(&["GET"], &|| Ok(Route::Healthz)),
            ["readyz"] => allow(&["GET"], &|| Ok(Route::Readyz)),
            ["v1", "status"] => allow(&["GET"], &|| Ok(Route::Status)),
            ["v1", "workspaces", w, "blobs", d] => allow(&["GET", "HEAD", "PUT"], &|| {
                let (ws, digest) = (ws(w)?, digest(d)?);
                Ok(match m {
                    "PUT" => Route::PutBlob { ws, digest },
                    "HEAD" => Route::HeadBlob { ws, digest },
                    _ => Route::GetBlob { ws, digest },
                })
            }),
            ["v1", "workspaces", w, "uploads"] => allow(&["POST"], &|| Ok(Route::CreateUpload { ws: ws(w)? })),
            ["v1", "workspaces", w, "uploads", d, "complete"] => {
                allow(&["POST"], &|| Ok(Route::CompleteUpload { ws: ws(w)?, digest: digest(d)? }))
            }
            ["v1", "tokens"] => {
                allow(&["GET", "POST"], &|| Ok(if m == "POST" { Route::IssueToken } else { Route::ListTokens }))
            }
            ["v1", "tokens", "rotate"] => allow(&["POST"], &|| Ok(Route::RotateToken)),
            ["v1", "tokens", id, "revoke"] => {
                allow(&["POST"], &|| Ok(Route::RevokeToken { id: token_id(&decode(id)?)? }))
            }
            ["v1", "whoami"] => allow(&["GET"], &|| Ok(Route::Whoami)),
            _ => Err(Error::NotFound),
        }
    }

    pub fn spec(&self) -> &'static RouteSpec {
        let i = match self {
            Route::Healthz => 0,
            Route::Readyz => 1,
            Route::Status => 2,
            Route::PutBlob { .. } => 3,
            Route::CreateUpload { .. } => 4,
            Route::CompleteUpload { .. } => 5,
            Route::GetBlob { .. } => 6,
            Route::HeadBlob { .. } => 7,
            Route::IssueToken => 8,
            Route::ListTokens => 9,
            Route::RevokeToken { .. } => 10,
            Route::RotateToken => 11,
            Route::Whoami => 12,
        };
        &ROUTES[i]
    }

    pub fn function(&self) -> Function {
        self.spec().function
    }

    /// `GET /v1/workspaces/{ws}/blobs/{digest}`: the route key API Gateway would log.
    pub fn key(&self) -> String {
        format!("{} {}", self.spec().method, self.spec().path)
    }

    pub fn workspace(&self) -> Option<&WorkspaceId> {
        match self {
            Route::Healthz
            | Route::Readyz
            | Route::Status
            | Route::IssueToken
            | Route::ListTokens
            | Route::RevokeToken { .. }
            | Route::RotateToken
            | Route::Whoami => None,
            Route::PutBlob { ws, .. }
            | Route::CreateUpload { ws }
            | Route::CompleteUpload { ws, .. }
            | Route::GetBlob { ws, .. }
            | Route::HeadBlob { ws, .. } => Some(ws),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae";

    #[test]
    fn every_route_in_the_table_parses_to_itself() {
        for spec in ROUTES {
            let path =
                spec.path.replace("{ws}", "team-a").replace("{digest}", D).replace("{id}", "tok_0123456789abcdef");
            let route = Route::parse(&spec.method.parse().unwrap(), &path).unwrap();
            assert_eq!(route.key(), format!("{} {}", spec.method, spec.path));
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
        assert!(matches!(Route::parse(&get, "/v1/nothing"), Err(Error::NotFound)));
        assert!(matches!(
            Route::parse(&Method::DELETE, &format!("/v1/workspaces/a/blobs/{D}")),
            Err(Error::MethodNotAllowed { allow: ["GET", "HEAD", "PUT"] })
        ));
        assert!(matches!(Route::parse(&get, "/v1/workspaces/a/uploads"), Err(Error::MethodNotAllowed { .. })));
        assert!(matches!(
            Route::parse(&Method::DELETE, "/v1/workspaces/BAD/blobs/x"),
            Err(Error::MethodNotAllowed { .. })
        ));
        assert!(matches!(Route::parse(&get, "/v1/tokens/nope/revoke"), Err(Error::MethodNotAllowed { .. })));
    }
}
