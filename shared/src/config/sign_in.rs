//! Sign-in with an OIDC issuer: the API's bearer JWTs (HELIX_OIDC_ISSUER, HELIX_OIDC_AUDIENCE,
//! HELIX_OIDC_JWKS and the claims) and the console's sign-in (HELIX_OIDC_CLIENT_ID).

use super::{ConfigError, err};
use crate::oidc::{OidcConfig, check_url};

/// What the web console needs to sign in with the OIDC issuer (authorization code with PKCE): the
/// issuer, the console's client id at the issuer (a public client: no secret), and the audience the
/// registry accepts (the console picks the token carrying it). Served at `/console/config.json`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignIn {
    pub issuer: String,
    pub client_id: String,
    pub audience: String,
}

/// HELIX_OIDC_ISSUER, HELIX_OIDC_AUDIENCE and HELIX_OIDC_CLIENT_ID from any variable source (the
/// `console` function reads only these): `None` without a client id (the console then signs in by
/// pasted token only); a client id without the issuer and audience is an error.
pub fn sign_in_from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Option<SignIn>, ConfigError> {
    sign_in(&|k: &str| lookup(k).filter(|v| !v.trim().is_empty()))
}

pub(super) fn sign_in(get: &dyn Fn(&str) -> Option<String>) -> Result<Option<SignIn>, ConfigError> {
    let Some(client_id) = get("HELIX_OIDC_CLIENT_ID") else { return Ok(None) };
    let (Some(issuer), Some(audience)) = (get("HELIX_OIDC_ISSUER"), get("HELIX_OIDC_AUDIENCE")) else {
        return Err(err("HELIX_OIDC_CLIENT_ID", "needs HELIX_OIDC_ISSUER and HELIX_OIDC_AUDIENCE"));
    };
    check_url(&issuer).map_err(|m| err("HELIX_OIDC_ISSUER", m))?;
    if !client_id.chars().all(|c| c.is_ascii_graphic()) || client_id.len() > 256 {
        return Err(err("HELIX_OIDC_CLIENT_ID", "is at most 256 printable ASCII characters"));
    }
    Ok(Some(SignIn { issuer, client_id, audience }))
}

/// The API's JWT sign-in: None without an issuer and audience (bearer tokens only); one without the
/// other is an error.
pub(super) fn oidc(get: &dyn Fn(&str) -> Option<String>) -> Result<Option<OidcConfig>, ConfigError> {
    Ok(match (get("HELIX_OIDC_ISSUER"), get("HELIX_OIDC_AUDIENCE")) {
        (None, None) => None,
        (Some(issuer), Some(audience)) => {
            check_url(&issuer).map_err(|m| err("HELIX_OIDC_ISSUER", m))?;
            let jwks = get("HELIX_OIDC_JWKS");
            match jwks.as_deref() {
                Some(u) if u.starts_with("http://") || u.starts_with("https://") => {
                    check_url(u).map_err(|m| err("HELIX_OIDC_JWKS", m))?
                }
                Some(path) if !std::path::Path::new(path).is_file() => {
                    return Err(err("HELIX_OIDC_JWKS", format!("{path:?} is neither an http(s) URL nor a file")));
                }
                _ => {}
            }
            let refetch = match get("HELIX_OIDC_REFETCH_SECONDS") {
                None => 60,
                Some(v) => {
                    v.parse::<u64>().map_err(|_| err("HELIX_OIDC_REFETCH_SECONDS", format!("{v:?} is not seconds")))?
                }
            };
            Some(OidcConfig {
                issuer,
                audience,
                jwks,
                user_claim: get("HELIX_OIDC_USER_CLAIM").unwrap_or_else(|| "sub".into()),
                role_claim: get("HELIX_OIDC_ROLE_CLAIM").unwrap_or_else(|| "helix_role".into()),
                workspace_claim: get("HELIX_OIDC_WORKSPACE_CLAIM").unwrap_or_else(|| "helix_workspace".into()),
                refetch_interval: std::time::Duration::from_secs(refetch),
            })
        }
        (None, Some(_)) => return Err(err("HELIX_OIDC_ISSUER", "must be set with HELIX_OIDC_AUDIENCE")),
        (Some(_), None) => return Err(err("HELIX_OIDC_AUDIENCE", "must be set with HELIX_OIDC_ISSUER")),
    })
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::super::{Mode, from_pairs};
    use super::*;

    #[test]
    fn console_sign_in_needs_a_client_id_and_the_issuer() {
        let issuer = [("HELIX_OIDC_ISSUER", "https://idp.example"), ("HELIX_OIDC_AUDIENCE", "helix")];
        assert_eq!(from_pairs(Mode::Serve, &issuer).unwrap().console_sign_in, None, "no client id: pasted tokens only");
        let with_client = [issuer[0], issuer[1], ("HELIX_OIDC_CLIENT_ID", "helix-console")];
        let s = from_pairs(Mode::Serve, &with_client).unwrap().console_sign_in.unwrap();
        assert_eq!(
            (s.issuer.as_str(), s.client_id.as_str(), s.audience.as_str()),
            ("https://idp.example", "helix-console", "helix")
        );
        let e = from_pairs(Mode::Serve, &[("HELIX_OIDC_CLIENT_ID", "helix-console")]).unwrap_err();
        assert_eq!(e.var, "HELIX_OIDC_CLIENT_ID");
        let e = from_pairs(Mode::Serve, &[issuer[0], issuer[1], ("HELIX_OIDC_CLIENT_ID", "a b")]).unwrap_err();
        assert_eq!(e.var, "HELIX_OIDC_CLIENT_ID");
        // The console function reads the same three variables alone.
        let map: HashMap<&str, &str> = with_client.into_iter().collect();
        assert_eq!(sign_in_from_lookup(|k| map.get(k).map(|v| v.to_string())).unwrap(), Some(s));
    }
}
