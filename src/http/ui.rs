//! The web player, embedded in the binary so that any node serves it from any directory.

use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};

/// `GET /`
pub async fn index() -> Response {
    let mut r = ([(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"))], include_str!("../../static/index.html"))
        .into_response();
    super::cache_control(&mut r, "no-cache");
    r
}
