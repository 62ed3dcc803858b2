//! HTTP plumbing shared by every function and by `helix serve`: the route table, problem+json,
//! the per-request context (request id, authorization, the one log line), response builders.

pub mod ctx;
pub mod problem;
pub mod range;
pub mod route;

pub use ctx::{Ctx, RequestId, new_request_id};
pub use route::{Function, Route};

pub type Request = lambda_http::Request;
pub type Response = lambda_http::Response<lambda_http::Body>;

use serde::Serialize;

/// The whole life of one request in one function: context, route (404 if another function owns
/// it), the function's `dispatch`, then problem+json mapping and the log line.
pub async fn serve<F>(app: &crate::App, req: Request, owner: Function, dispatch: F) -> Response
where
    F: AsyncFn(&crate::App, &Ctx, Route, &Request) -> crate::Result<Response>,
{
    let ctx = Ctx::begin(&req);
    // No flush on liveness (it touches no dependency) nor on an answer that carries a new secret (a
    // slow flush must never cost a client the only copy of its token).
    let mut no_flush = false;
    let result = match ctx.route(&req, owner) {
        Ok(route) => {
            no_flush = matches!(route, Route::Healthz | Route::IssueToken | Route::RotateToken);
            dispatch(app, &ctx, route, &req).await
        }
        Err(e) => Err(e),
    };
    let (reason, dependency) = match &result {
        Ok(_) => ("", None),
        Err(e) => {
            let dep = match e {
                crate::Error::Unavailable { dep, .. } => Some(*dep),
                _ => None,
            };
            (problem::classify(e).1, dep)
        }
    };
    let response = ctx.finish(result);
    app.metrics.record(owner.as_str(), ctx.route_key(), response.status().as_u16(), reason, dependency);
    // At most a second: a flush that takes longer is abandoned (its counts are lost, within the bound
    // docs/architecture.md states) rather than delaying the answer.
    if !no_flush {
        let flush = app.metrics.flush_if_due(app.meta.as_ref());
        let _ = tokio::time::timeout(std::time::Duration::from_secs(1), flush).await;
    }
    response
}

pub fn json(status: u16, value: &impl Serialize) -> Response {
    let body = serde_json::to_string(value).expect("serializable response");
    http::Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(lambda_http::Body::Text(body))
        .expect("valid response")
}

/// The body of a request as bytes, whatever form Lambda or the local server delivered it in.
pub fn body_bytes(req: &Request) -> &[u8] {
    req.body().as_ref()
}

/// Parse a JSON request body into `T`; a malformed body is a 400 `invalid_request`.
pub fn json_body<T: serde::de::DeserializeOwned>(req: &Request) -> crate::Result<T> {
    serde_json::from_slice(body_bytes(req)).map_err(|e| crate::Error::BadRequest(format!("invalid JSON body: {e}")))
}

/// Value of a query-string parameter (from the URI, identical in Lambda and locally).
pub fn query_param(req: &Request, name: &str) -> Option<String> {
    url::form_urlencoded::parse(req.uri().query()?.as_bytes()).find(|(k, _)| k == name).map(|(_, v)| v.into_owned())
}

/// Serde helper for integer body fields: a JSON integer, or a number with no fractional part (`3.0`),
/// which JSON Schema's `integer` (and so the API description) also calls an integer. A fraction, or a
/// value outside the field's type, is a 400 naming the field.
pub fn whole_number<'de, D, T>(d: D) -> std::result::Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: TryFrom<i128>,
{
    use serde::Deserialize;
    use serde::de::Error;
    let n = serde_json::Number::deserialize(d)?;
    let whole = match (n.as_i64(), n.as_u64(), n.as_f64()) {
        (Some(i), _, _) => i128::from(i),
        (_, Some(u), _) => i128::from(u),
        (_, _, Some(f)) if f.fract() == 0.0 && f.abs() < 1e18 => f as i128,
        _ => return Err(D::Error::custom(format!("{n} is not an integer"))),
    };
    T::try_from(whole).map_err(|_| D::Error::custom(format!("{n} is out of range")))
}

/// `whole_number` for an optional field (use with `#[serde(default)]`).
pub fn optional_whole_number<'de, D, T>(d: D) -> std::result::Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: TryFrom<i128>,
{
    whole_number(d).map(Some)
}

#[cfg(test)]
mod tests {
    #[derive(serde::Deserialize, Debug)]
    struct Body {
        #[serde(deserialize_with = "super::whole_number")]
        size: u64,
        #[serde(default, deserialize_with = "super::optional_whole_number")]
        ttl: Option<i64>,
    }

    #[test]
    fn integer_fields_take_whole_numbers_in_either_json_form_and_refuse_the_rest() {
        let parse = |s: &str| serde_json::from_str::<Body>(s);
        assert_eq!(parse(r#"{"size": 3}"#).unwrap().size, 3);
        assert_eq!(parse(r#"{"size": 3.0, "ttl": 60.0}"#).unwrap().ttl, Some(60));
        assert_eq!(parse(r#"{"size": 1e3}"#).unwrap().size, 1000);
        assert!(parse(r#"{"size": 3}"#).unwrap().ttl.is_none());
        for bad in [
            r#"{"size": 3.5}"#,
            r#"{"size": -1}"#,
            r#"{"size": "3"}"#,
            r#"{"size": 1e300}"#,
            r#"{"size": 1, "ttl": 1e19}"#,
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
