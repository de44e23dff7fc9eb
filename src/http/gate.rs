//! The HTTP side of play tokens ([`crate::access`]): finds the caller's credential in a request
//! and asks the policy.
//!
//! - [`stream_gate`] is a `route_layer` on the router of every `/streams/{name}/...` route, so a
//!   route added there cannot skip the check. A refused read answers the JSON error and nothing
//!   else; an allowed one carries its [`Viewer`] in the request extensions ([`UrlToken`] reads
//!   it for the URLs a document lists).
//! - `/streams` and `/events` extract a [`Viewer`] and filter what they send (`/streams`
//!   becomes `private` when filtered by a header).
//! - Without `access.play_secret` nothing here parses anything.
//!
//! Where a token may be: `?token=` or `Authorization: Bearer`, exactly one of them, once. Two
//! `token=` parameters, or a query token and a bearer header, are a 400: which one counts would
//! otherwise depend on which parser a hop in front of us uses.
//!
//! Caching: an answer allowed by an `Authorization` header has its `Cache-Control: public`
//! turned into `private`, so no shared cache serves it to a request without the header (their
//! URLs are the same). Answers allowed by `?token=` stay `public`: the token is in the URL,
//! so a cache keys them apart.

use axum::extract::{FromRequestParts, Request, State};
use axum::http::{header, request::Parts, HeaderMap, HeaderValue, Uri};
use axum::middleware::Next;
use axum::response::Response;

use super::{ApiError, AppState, StreamName};
use crate::access::{Credential, Viewer};

/// Query parameter carrying a play token.
pub const TOKEN_PARAM: &str = "token";

/// Checks that the caller may read the stream of the route, before its handler runs.
pub async fn stream_gate(
    State(st): State<AppState>,
    StreamName(name): StreamName,
    mut req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    if st.access.is_open() {
        return Ok(next.run(req).await);
    }
    let query = query_token(req.uri())?;
    let credential = credential(query.as_deref(), req.headers())?;
    let viewer = st.access.authorize(&name, credential, now_s())?;
    let by_header = viewer.by_header();
    req.extensions_mut().insert(viewer);
    let mut resp = next.run(req).await;
    if by_header {
        make_private(resp.headers_mut());
    }
    Ok(resp)
}

/// The caller of a node-wide read (`/streams`, `/events`): anonymous without a credential, a
/// refusal for one that is not valid.
impl FromRequestParts<AppState> for Viewer {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, st: &AppState) -> Result<Self, ApiError> {
        if st.access.is_open() {
            return Ok(st.access.viewer(Credential::None, 0)?);
        }
        let query = query_token(&parts.uri)?;
        let credential = credential(query.as_deref(), &parts.headers)?;
        Ok(st.access.viewer(credential, now_s())?)
    }
}

/// The token to carry into the URLs a playlist or index lists: the caller's own, when the
/// stream gate allowed the request by `?token=`.
pub struct UrlToken(pub Option<std::sync::Arc<str>>);

impl<S: Send + Sync> FromRequestParts<S> for UrlToken {
    type Rejection = std::convert::Infallible;
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(UrlToken(
            parts
                .extensions
                .get::<Viewer>()
                .and_then(Viewer::query_token_shared),
        ))
    }
}

impl UrlToken {
    /// `url` with `token=..` appended, when there is a token.
    pub fn apply(&self, url: &str) -> String {
        match &self.0 {
            Some(token) => with_query_param(url, TOKEN_PARAM, token),
            None => url.to_owned(),
        }
    }
}

/// The `token=` value of the query, if any; given twice is a 400.
fn query_token(uri: &Uri) -> Result<Option<String>, ApiError> {
    let Some(q) = uri.query() else {
        return Ok(None);
    };
    // Cheap test first: most requests (segments) carry no query or no token.
    if !q.contains(TOKEN_PARAM) {
        return Ok(None);
    }
    let pairs = axum::extract::Query::<Vec<(String, String)>>::try_from_uri(uri)
        .map_err(|_| ApiError::BadRequest("malformed query string".into()))?
        .0;
    let mut tokens = pairs.into_iter().filter(|(k, _)| k == TOKEN_PARAM);
    let first = tokens.next().map(|(_, v)| v);
    if tokens.next().is_some() {
        return Err(ApiError::BadRequest("token given more than once".into()));
    }
    Ok(first)
}

/// The credential of a request: its query token or its bearer header, not both.
fn credential<'a>(
    query: Option<&'a str>,
    headers: &'a HeaderMap,
) -> Result<Credential<'a>, ApiError> {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim);
    match (query, bearer) {
        (Some(_), Some(_)) => Err(ApiError::BadRequest(
            "token given both as ?token= and as Authorization: Bearer".into(),
        )),
        (Some(t), None) => Ok(Credential::Query(t)),
        (None, Some(t)) => Ok(Credential::Bearer(t)),
        (None, None) => Ok(Credential::None),
    }
}

/// `public` in `Cache-Control` becomes `private` (other directives kept): for answers that
/// depend on an `Authorization` header.
pub fn make_private(headers: &mut HeaderMap) {
    let private = headers
        .get(header::CACHE_CONTROL)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("public"))
        .and_then(|rest| HeaderValue::from_str(&format!("private{rest}")).ok());
    if let Some(v) = private {
        headers.insert(header::CACHE_CONTROL, v);
    }
}

fn now_s() -> u64 {
    u64::try_from(crate::time::now_ms() / 1000).unwrap_or(0)
}

/// `url` with `key=value` appended to its query (`?` or `&`), the value percent-encoded
/// outside RFC 3986's unreserved characters (a JWT is all unreserved; this keeps it so
/// whatever it holds).
pub fn with_query_param(url: &str, key: &str, value: &str) -> String {
    let mut out = String::with_capacity(url.len() + key.len() + value.len() + 2);
    out.push_str(url);
    out.push(if url.contains('?') { '&' } else { '?' });
    out.push_str(key);
    out.push('=');
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_params_are_appended_and_encoded() {
        assert_eq!(
            with_query_param("segments/1.m4s", "token", "a.b-c_d"),
            "segments/1.m4s?token=a.b-c_d"
        );
        assert_eq!(
            with_query_param("index.m3u8?start=-30s", "token", "t"),
            "index.m3u8?start=-30s&token=t"
        );
        assert_eq!(
            with_query_param("x", "token", "a b&c=/é"),
            "x?token=a%20b%26c%3D%2F%C3%A9"
        );
    }

    #[test]
    fn the_token_is_found_once_in_one_place() {
        let uri = |s: &str| s.parse::<Uri>().unwrap();
        assert_eq!(query_token(&uri("/s/x/index.m3u8")).unwrap(), None);
        assert_eq!(query_token(&uri("/s?start=1&tokens=2")).unwrap(), None);
        assert_eq!(
            query_token(&uri("/s?start=1&token=abc"))
                .unwrap()
                .as_deref(),
            Some("abc")
        );
        assert!(query_token(&uri("/s?token=a&token=b")).is_err());
        assert!(query_token(&uri("/s?token=a&token=a")).is_err());

        let mut h = HeaderMap::new();
        assert_eq!(credential(None, &h).unwrap(), Credential::None);
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Basic eA=="),
        );
        assert_eq!(credential(None, &h).unwrap(), Credential::None);
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer t1"));
        assert_eq!(credential(None, &h).unwrap(), Credential::Bearer("t1"));
        assert!(credential(Some("t2"), &h).is_err());
        assert_eq!(
            credential(Some("t2"), &HeaderMap::new()).unwrap(),
            Credential::Query("t2")
        );
    }

    #[test]
    fn header_grants_are_not_shared_cached() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static(super::super::IMMUTABLE),
        );
        make_private(&mut h);
        assert_eq!(
            h[header::CACHE_CONTROL],
            "private, max-age=31536000, immutable"
        );
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        make_private(&mut h);
        assert_eq!(h[header::CACHE_CONTROL], "no-store");
    }
}
