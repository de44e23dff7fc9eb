//! The HTTP read API of SPEC.md (every node), as an axum router.
//!
//! Handlers are thin: they extract, call pure helpers (`range`, `etag`, `playlist`, `time`) or
//! the store, and map failures through [`ApiError`]. One middleware adds what every response
//! carries (`Via`, CORS) and counts responses; OPTIONS preflights are answered there too.
//! Long-lived responses (SSE, long-polls) end when the node's shutdown token fires.
//!
//! Every `/streams/{name}/...` route lives in one sub-router behind [`gate::stream_gate`] (play
//! tokens): a route added there is checked by construction. `/streams` and `/events` filter by
//! the caller's [`crate::access::Viewer`]; `/api/*`, `/metrics`, `/healthz` and the player keep
//! their own rules.

pub mod api;
pub mod conn;
pub mod dvr;
pub mod error;
pub mod etag;
pub mod events;
pub mod feed;
pub mod gate;
pub mod hls;
pub mod llhls;
pub mod metrics;
pub mod playlist;
pub mod range;
pub mod segments;
pub mod streams;
pub mod ui;
pub mod vtt;

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{FromRequestParts, Path, Request, State};
use axum::http::{header, request::Parts, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use tokio_util::sync::CancellationToken;

pub use error::ApiError;
pub use feed::Feed;

use crate::cache::Cache;
use crate::events::Bus;
use crate::metrics::Metrics;
use crate::relay::Relays;
use crate::store::Store;

/// Longest a request for a relayed stream waits for the relay's first upstream answer.
pub const RELAY_SYNC_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Longest `?wait=` of a long-poll: bounds how long a request (and its task) can be parked.
pub const MAX_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// Everything handlers need, behind one `Arc`. axum clones the state for every request, route
/// and layer, so a clone must be one atomic increment: cloning the fields themselves (strings,
/// a `CancellationToken`, the access policy) was about 10 % of the CPU of a cached 16 KiB
/// answer (perf, `bench/edge_hit.sh 64 10 16384`).
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl std::ops::Deref for AppState {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.0
    }
}

impl From<Shared> for AppState {
    fn from(shared: Shared) -> AppState {
        AppState(Arc::new(shared))
    }
}

/// The state's contents: built once ([`Shared::new`], then its optional fields set), then
/// shared read-only by every request.
pub struct Shared {
    pub node_name: Arc<str>,
    pub store: Arc<Store>,
    pub relays: Arc<Relays>,
    pub cache: Cache,
    pub bus: Bus,
    /// `http.admin_token`: when set, `/api/*` needs it; else loopback only.
    pub admin_token: Option<String>,
    /// `http.allow_upstreams`.
    pub allow_upstreams: Option<Vec<String>>,
    pub metrics: Arc<Metrics>,
    /// `http.max_clip`: longest `clip.mp4`.
    pub max_clip_ms: u64,
    /// Configured segment target (floor of playlist target durations).
    pub segment_target_ms: u64,
    /// How much of the DVR window a live playlist lists.
    pub playlist_window_ms: u64,
    /// Fires when the node shuts down: long-lived responses end.
    pub shutdown: CancellationToken,
    /// The last rendered live playlist per stream, with the stream version it was rendered at:
    /// every viewer polling between two segments gets the same bytes without a re-render.
    /// std `Mutex`, held only to clone or swap an entry; one entry per stream.
    pub live_playlists: Arc<std::sync::Mutex<hls::RenderCache>>,
    /// The shared archive (`[storage]`), if any.
    pub archive: Option<Arc<crate::archive::Archive>>,
    /// `access.event_hook`, if set (its metrics).
    pub event_hook: Option<Arc<crate::hooks::EventHook>>,
    /// Play tokens (`access.play_secret`, `access.public`); open unless configured.
    pub access: crate::access::Access,
    via: HeaderValue,
}

impl Shared {
    /// Builds the state; `node_name` must be a valid header value (config validation ensures it).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        node_name: &str,
        store: Arc<Store>,
        relays: Arc<Relays>,
        cache: Cache,
        bus: Bus,
        metrics: Arc<Metrics>,
        segment_target_ms: u64,
        playlist_window_ms: u64,
        shutdown: CancellationToken,
    ) -> Shared {
        let via = HeaderValue::from_str(&format!("1.1 {node_name}"))
            .unwrap_or(HeaderValue::from_static("1.1 dvrgate"));
        Shared {
            node_name: node_name.into(),
            store,
            relays,
            cache,
            bus,
            admin_token: None,
            allow_upstreams: None,
            max_clip_ms: 3_600_000,
            metrics,
            segment_target_ms,
            playlist_window_ms,
            shutdown,
            live_playlists: Arc::default(),
            archive: None,
            event_hook: None,
            access: crate::access::Access::open(),
            via,
        }
    }

    /// The stream `name`: recorded here, relayed, or relayed on demand from `[relay]
    /// upstreams` (the first request for it probes them). Recorded streams win over relays.
    ///
    /// With `[storage]`, a stream not live here is served from the archive when the archive
    /// has it and holds everything recorded here (the archive has the whole story: other
    /// origins' segments too); a local recording not yet uploaded is served from the disk.
    pub async fn feed(&self, name: &str) -> Result<Feed, ApiError> {
        let local = self.store.get(name);
        if let Some(archive) = &self.archive {
            let archive_first = match &local {
                None => true,
                Some(s) => {
                    !s.read().live
                        && archive.writer(name).is_some_and(|w| {
                            let r = w.report();
                            r.backlog.0 == 0 && r.archived_seq.is_some()
                        })
                }
            };
            if archive_first {
                if let Some(f) = archive.follow(name, &self.shutdown).await {
                    return Ok(Feed::Archived(f, archive.clone()));
                }
            }
        }
        if let Some(s) = local {
            return Ok(Feed::Recorded(s));
        }
        let proxy = self.relays.on_demand(name).await?;
        proxy.reachable(RELAY_SYNC_WAIT).await?;
        Ok(Feed::Relayed(proxy))
    }

    /// Every stream this node serves (recorded, then relayed), sorted by name.
    pub fn feeds(&self) -> Vec<Feed> {
        let mut all: Vec<Feed> = self.store.list().into_iter().map(Feed::Recorded).collect();
        all.extend(
            self.relays
                .list()
                .into_iter()
                .filter(|p| self.store.get(&p.local).is_none())
                .map(Feed::Relayed),
        );
        all.sort_by(|a, b| a.stream().name.cmp(&b.stream().name));
        all
    }
}

/// The router of the read API.
pub fn router(state: AppState) -> Router {
    // Every read of one stream: behind the play-token gate, whatever the route.
    let stream_reads = Router::new()
        .route("/streams/{name}", get(streams::status_handler))
        .route("/streams/{name}/index.json", get(streams::index_json))
        .route("/streams/{name}/index.m3u8", get(hls::playlist))
        .route("/streams/{name}/init/{file}", get(segments::init))
        .route("/streams/{name}/segments/{file}", get(segments::segment))
        .route("/streams/{name}/parts/{file}", get(llhls::part))
        .route("/streams/{name}/thumbs/{file}", get(segments::thumb))
        .route("/streams/{name}/thumbs.vtt", get(vtt::track))
        .route("/streams/{name}/seek", get(dvr::seek))
        .route("/streams/{name}/clip.mp4", get(dvr::clip))
        .route("/streams/{name}/events", get(events::stream_events))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            gate::stream_gate,
        ));
    Router::new()
        .route("/", get(ui::index))
        .route("/{file}", get(ui::file))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics::metrics))
        .route("/events", get(events::node_events))
        .route("/streams", get(streams::list))
        .merge(stream_reads)
        .route("/api/proxies", get(api::list).post(api::create))
        .route("/api/proxies/{file}", axum::routing::delete(api::delete))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            common_headers,
        ))
        .with_state(state)
}

async fn healthz(State(st): State<AppState>) -> Response {
    let mut r =
        axum::Json(serde_json::json!({"status": "ok", "node": &*st.node_name})).into_response();
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

async fn not_found() -> ApiError {
    ApiError::NotFound("no such resource".into())
}

async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

/// Adds `Via` and CORS to every response, answers preflights, counts responses by class.
async fn common_headers(State(st): State<AppState>, req: Request, next: Next) -> Response {
    let mut resp = if req.method() == Method::OPTIONS {
        let mut r = StatusCode::NO_CONTENT.into_response();
        let h = r.headers_mut();
        h.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("GET, HEAD, OPTIONS"),
        );
        h.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static("Range, If-None-Match, If-Range, Authorization, Content-Type"),
        );
        h.insert(
            header::ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from_static("86400"),
        );
        r
    } else {
        next.run(req).await
    };
    let h = resp.headers_mut();
    h.insert(header::VIA, st.via.clone());
    h.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    h.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static("Content-Length, Content-Range, ETag, Via, Accept-Ranges"),
    );
    st.metrics.http_responses.count(resp.status().as_u16());
    resp
}

/// A validated stream name from the `{name}` path parameter (400 otherwise).
pub struct StreamName(pub String);

impl<S: Send + Sync> FromRequestParts<S> for StreamName {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Path(params) = Path::<HashMap<String, String>>::from_request_parts(parts, state)
            .await
            .map_err(|_| ApiError::BadName)?;
        match params.get("name") {
            Some(n) if crate::names::is_valid(n) => Ok(StreamName(n.clone())),
            _ => Err(ApiError::BadName),
        }
    }
}

/// The `{file}` path parameter.
pub struct FileParam(pub String);

impl<S: Send + Sync> FromRequestParts<S> for FileParam {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Path(params) = Path::<HashMap<String, String>>::from_request_parts(parts, state)
            .await
            .map_err(|_| ApiError::BadRequest("invalid path".into()))?;
        params
            .get("file")
            .cloned()
            .map(FileParam)
            .ok_or_else(|| ApiError::BadRequest("invalid path".into()))
    }
}

/// Query parameters; a malformed query string is a 400.
pub struct QueryParams(pub HashMap<String, String>);

impl<S: Send + Sync> FromRequestParts<S> for QueryParams {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Query::<HashMap<String, String>>::from_request_parts(parts, state)
            .await
            .map(|q| QueryParams(q.0))
            .map_err(|_| ApiError::BadRequest("malformed query string".into()))
    }
}

impl QueryParams {
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    /// A parsed time parameter.
    pub fn time(&self, key: &str) -> Result<Option<crate::time::At>, ApiError> {
        self.get(key)
            .map(crate::time::parse)
            .transpose()
            .map_err(ApiError::from)
    }

    /// An unsigned integer parameter.
    pub fn u64(&self, key: &str) -> Result<Option<u64>, ApiError> {
        self.get(key)
            .map(|v| {
                v.parse::<u64>().map_err(|_| {
                    ApiError::BadRequest(format!("{key} must be a non-negative integer, got {v:?}"))
                })
            })
            .transpose()
    }
}

/// Sets `Cache-Control` on a response.
pub fn cache_control(resp: &mut Response, value: &'static str) {
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static(value));
}

/// `Cache-Control` of live documents (playlists, index).
pub const LIVE: &str = "public, max-age=1";
/// `Cache-Control` of documents describing a window wholly in the past.
pub const PAST: &str = "public, max-age=3600";
/// `Cache-Control` of immutable segments.
pub const IMMUTABLE: &str = "public, max-age=31536000, immutable";
