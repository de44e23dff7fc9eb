//! The control API (`/api/*`): create, list and stop relays at run time.
//!
//! Access: with `http.admin_token` set, every caller needs `Authorization: Bearer <token>`;
//! without it, only loopback clients are answered. Upstreams must start with one of
//! `http.allow_upstreams` when that list is set.

use axum::extract::{ConnectInfo, FromRequestParts, State};
use axum::http::{header, request::Parts, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::{ApiError, AppState, FileParam};
use crate::events::Code;

/// Proof that the caller may use `/api/*`.
pub struct Admin;

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, st: &AppState) -> Result<Self, ApiError> {
        match &st.admin_token {
            Some(token) => {
                let given = parts
                    .headers
                    .get(header::AUTHORIZATION)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.strip_prefix("Bearer "));
                // Compare in constant time: the token is a secret.
                let ok = given.is_some_and(|g| {
                    g.len() == token.len()
                        && g.bytes()
                            .zip(token.bytes())
                            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                            == 0
                });
                if ok {
                    Ok(Admin)
                } else {
                    Err(ApiError::Unauthorized)
                }
            }
            None => {
                let peer = parts
                    .extensions
                    .get::<ConnectInfo<super::conn::Peer>>()
                    .map(|c| c.0 .0.ip());
                if peer.is_some_and(|ip| ip.is_loopback()) {
                    Ok(Admin)
                } else {
                    Err(ApiError::Unauthorized)
                }
            }
        }
    }
}

/// Body of `POST /api/proxies`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewProxy {
    pub local: String,
    pub remote: String,
    pub upstreams: Vec<String>,
}

/// An entry of `GET /api/proxies`: the status `source` of the relayed stream, its local name
/// and whether it is live.
fn proxy_json(p: &crate::relay::Proxy) -> serde_json::Value {
    let mut v = serde_json::to_value(crate::wire::Source::Proxy(p.source())).unwrap_or_default();
    v["local"] = p.local.clone().into();
    v["live"] = p.stream.read().live.into();
    v
}

/// `GET /api/proxies`
pub async fn list(State(st): State<AppState>, _: Admin) -> Response {
    let all: Vec<_> = st.relays.list().iter().map(|p| proxy_json(p)).collect();
    let mut r = axum::Json(all).into_response();
    super::cache_control(&mut r, "no-store");
    r
}

/// `POST /api/proxies`
pub async fn create(
    State(st): State<AppState>,
    _: Admin,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let req: NewProxy = serde_json::from_slice(&body).map_err(|e| {
        ApiError::BadRequest(format!(
            "expected {{\"local\",\"remote\",\"upstreams\":[..]}}: {e}"
        ))
    })?;
    if !crate::names::is_valid(&req.local)
        || st.store.get(&req.local).is_some()
        || st.relays.get(&req.local).is_some()
    {
        return Err(ApiError::ProxyBadName(format!(
            "local name {:?} is invalid or taken",
            req.local
        )));
    }
    if !crate::names::is_valid(&req.remote) {
        return Err(ApiError::ProxyBadName(format!(
            "remote name {:?} is invalid",
            req.remote
        )));
    }
    if req.upstreams.is_empty() || req.upstreams.len() > 16 {
        return Err(ApiError::BadRequest(
            "upstreams must list 1 to 16 URLs".into(),
        ));
    }
    for u in &req.upstreams {
        crate::relay::upstream::check_upstream_url(u)
            .map_err(|why| ApiError::BadRequest(format!("upstream {why}")))?;
        if let Some(allowed) = &st.allow_upstreams {
            if !allowed.iter().any(|prefix| u.starts_with(prefix.as_str())) {
                return Err(ApiError::UpstreamNotAllowed(u.clone()));
            }
        }
    }
    let proxy = st
        .relays
        .add(&req.local, &req.remote, req.upstreams, false)?;
    let mut v = proxy_json(&proxy);
    v["code"] = Code::ProxyStart.as_str().into();
    v["level"] = "status".into();
    v["description"] = format!("relaying {} as {}", proxy.remote, proxy.local).into();
    Ok((StatusCode::CREATED, axum::Json(v)).into_response())
}

/// `DELETE /api/proxies/{local}`
pub async fn delete(
    State(st): State<AppState>,
    _: Admin,
    FileParam(local): FileParam,
) -> Result<Response, ApiError> {
    if !st.relays.remove(&local) {
        return Err(ApiError::NotFound(format!("no proxy {local:?}")));
    }
    let v = serde_json::json!({
        "code": Code::ProxyStop.as_str(), "level": "status", "local": local,
        "description": format!("stopped relaying {local}"),
    });
    Ok(axum::Json(v).into_response())
}
