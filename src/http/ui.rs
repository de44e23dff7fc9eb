//! The web player, embedded in the binary so that any node serves it from any directory.

use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};

use super::{ApiError, FileParam};

/// `GET /`
pub async fn index() -> Response {
    asset(
        "text/html; charset=utf-8",
        include_str!("../../static/index.html"),
    )
}

/// `GET /{file}` for the player's other files.
pub async fn file(FileParam(file): FileParam) -> Result<Response, ApiError> {
    match file.as_str() {
        // The player's ES modules (`<script type="module">` needs a JavaScript MIME type).
        "main.js" => Ok(js(include_str!("../../static/main.js"))),
        "player.js" => Ok(js(include_str!("../../static/player.js"))),
        "engine-mse.js" => Ok(js(include_str!("../../static/engine-mse.js"))),
        "engine-hls.js" => Ok(js(include_str!("../../static/engine-hls.js"))),
        "mseplan.js" => Ok(js(include_str!("../../static/mseplan.js"))),
        "ui.js" => Ok(js(include_str!("../../static/ui.js"))),
        "net.js" => Ok(js(include_str!("../../static/net.js"))),
        "time.js" => Ok(js(include_str!("../../static/time.js"))),
        "timeindex.js" => Ok(js(include_str!("../../static/timeindex.js"))),
        "timeline.js" => Ok(js(include_str!("../../static/timeline.js"))),
        "thumbs.js" => Ok(js(include_str!("../../static/thumbs.js"))),
        "clip.js" => Ok(js(include_str!("../../static/clip.js"))),
        "clippanel.js" => Ok(js(include_str!("../../static/clippanel.js"))),
        "home.js" => Ok(js(include_str!("../../static/home.js"))),
        "player.css" => Ok(asset(
            "text/css; charset=utf-8",
            include_str!("../../static/player.css"),
        )),
        _ => Err(ApiError::NotFound("no such resource".into())),
    }
}

fn js(body: &'static str) -> Response {
    asset("text/javascript; charset=utf-8", body)
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    let mut r = (
        [(header::CONTENT_TYPE, HeaderValue::from_static(content_type))],
        body,
    )
        .into_response();
    // Revalidated on every load: the binary (and so the player) may have been upgraded.
    super::cache_control(&mut r, "no-cache");
    r
}
