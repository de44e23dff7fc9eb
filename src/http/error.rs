//! `ApiError`: every HTTP error of the read and control API, mapped to a status and a SPEC code
//! in one `match`, rendered as `{"code","level":"error","description"}`.
//!
//! Bad input is a 4xx and is not logged; internal errors are logged once here and their details
//! are not echoed to the client.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::events::Code;

/// An error answered over HTTP.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("invalid stream name: names are 1 to 64 characters of A-Z a-z 0-9 _ -")]
    BadName,
    #[error("stream {0:?} not found")]
    StreamNotFound(String),
    #[error("{0}")]
    NotFound(String),
    /// A segment that does not exist (yet): also `no-store`, so caches ask again.
    #[error("segment {seq} of stream {stream:?} not found")]
    SegmentNotFound { stream: String, seq: u64 },
    #[error("{0}")]
    BadTime(#[from] crate::time::TimeError),
    #[error("{0}")]
    BadRequest(String),
    #[error("time {time} is outside the DVR window {start} .. {end}")]
    SeekOutside {
        time: String,
        start: String,
        end: String,
    },
    #[error("range not satisfiable: the resource has {len} bytes")]
    RangeNotSatisfiable { len: u64 },
    #[error("upstream not responding: {0}")]
    Upstream(String),
    #[error("upstream timed out: {0}")]
    UpstreamTimeout(String),
    #[error("missing or wrong admin token (or not a loopback client)")]
    Unauthorized,
    #[error("{0}")]
    ProxyBadName(String),
    #[error("upstream {0:?} is not in http.allow_upstreams")]
    UpstreamNotAllowed(String),
    #[error("method not allowed")]
    MethodNotAllowed,
    /// A read refused by the play-token policy: 401 without a usable token, else 403.
    #[error("{0}")]
    Refused(#[from] crate::access::Refusal),
    /// A blocking request (LL-HLS playlist or part) whose object did not come in time.
    #[error("{0}")]
    NotYet(String),
    #[error("internal error")]
    Internal(String),
}

impl ApiError {
    /// Status and `code` of the error: the single mapping.
    fn status_and_code(&self) -> (StatusCode, Code) {
        match self {
            ApiError::BadName => (StatusCode::BAD_REQUEST, Code::PlayBadName),
            ApiError::StreamNotFound(_) => (StatusCode::NOT_FOUND, Code::PlayStreamNotFound),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, Code::PlayNotFound),
            ApiError::SegmentNotFound { .. } => (StatusCode::NOT_FOUND, Code::PlaySegmentNotFound),
            ApiError::BadTime(_) => (StatusCode::BAD_REQUEST, Code::SeekInvalidTime),
            ApiError::BadRequest(_) => (StatusCode::BAD_REQUEST, Code::PlayBadRequest),
            ApiError::SeekOutside { .. } => (StatusCode::NOT_FOUND, Code::SeekInvalidTime),
            ApiError::RangeNotSatisfiable { .. } => (
                StatusCode::RANGE_NOT_SATISFIABLE,
                Code::PlayRangeNotSatisfiable,
            ),
            ApiError::Upstream(_) => (StatusCode::BAD_GATEWAY, Code::ProxyNotResponding),
            ApiError::UpstreamTimeout(_) => (StatusCode::GATEWAY_TIMEOUT, Code::ProxyNotResponding),
            ApiError::Unauthorized => (StatusCode::UNAUTHORIZED, Code::ConnectRejected),
            ApiError::ProxyBadName(_) => (StatusCode::CONFLICT, Code::ProxyBadName),
            ApiError::UpstreamNotAllowed(_) => (StatusCode::FORBIDDEN, Code::ConnectRejected),
            ApiError::MethodNotAllowed => {
                (StatusCode::METHOD_NOT_ALLOWED, Code::PlayMethodNotAllowed)
            }
            ApiError::Refused(r) if r.needs_credential() => {
                (StatusCode::UNAUTHORIZED, Code::PlayFailed)
            }
            ApiError::Refused(_) => (StatusCode::FORBIDDEN, Code::PlayFailed),
            ApiError::NotYet(_) => (StatusCode::SERVICE_UNAVAILABLE, Code::PlaySegmentNotFound),
            ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, Code::PlayFailed),
        }
    }
}

impl From<crate::relay::Error> for ApiError {
    fn from(e: crate::relay::Error) -> Self {
        use crate::relay::Error;
        match e {
            Error::NotFound(name) => ApiError::StreamNotFound(name),
            Error::BadName(why) => ApiError::ProxyBadName(why),
            Error::Upstream {
                why,
                timed_out: true,
            } => ApiError::UpstreamTimeout(why),
            Error::Upstream { why, .. } => ApiError::Upstream(why),
        }
    }
}

impl From<crate::store::Error> for ApiError {
    fn from(e: crate::store::Error) -> Self {
        ApiError::Internal(e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        if let ApiError::Internal(detail) = &self {
            tracing::error!(%detail, "request failed");
        }
        let mut body = serde_json::json!({"code": code, "level": code.level(), "description": self.to_string()});
        if let ApiError::SeekOutside { start, end, .. } = &self {
            body["dvr"] = serde_json::json!({"start": start, "end": end});
        }
        let mut resp = (status, axum::Json(body)).into_response();
        let h = resp.headers_mut();
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if status == StatusCode::UNAUTHORIZED {
            // RFC 6750 for play tokens; also right for `/api/*`, which takes a bearer token.
            h.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if let ApiError::RangeNotSatisfiable { len } = self {
            if let Ok(v) = HeaderValue::from_str(&format!("bytes */{len}")) {
                h.insert(header::CONTENT_RANGE, v);
            }
        }
        resp
    }
}
