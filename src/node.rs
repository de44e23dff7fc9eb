//! A running node: wires config to the store, cache, ingest, RTMP and HTTP servers, and owns
//! their tasks and their shutdown.
//!
//! Listeners are bound by the caller and passed in (tests bind `127.0.0.1:0`: no fixed ports,
//! no probe-then-bind race). Shutdown order: stop accepting RTMP and close publishers, wait for
//! the recorders to write their last segment and index line, then let HTTP finish in-flight
//! requests (SSE and long-polls end on the same token).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::cache::{Cache, DiskTier};
use crate::config::Config;
use crate::events::Bus;
use crate::http::{self, AppState};
use crate::ingest::Ingest;
use crate::metrics::Metrics;
use crate::relay::{self, Relays};
use crate::rtmp::server::Transport;
use crate::store::{Policy, Store};
use crate::tls::Certs;

/// How often ended streams are checked against the retention policy (live streams are checked
/// after every segment).
const RETENTION_INTERVAL: Duration = Duration::from_secs(10);

/// How long shutdown waits for recorders to flush before giving up on them.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(15);

/// Pre-bound sockets of a node.
#[derive(Debug)]
pub struct Listeners {
    pub http: TcpListener,
    /// `None` when ingest is off.
    pub rtmp: Option<TcpListener>,
    /// RTMPS ingest (`rtmp.tls_listen`); `None` when off.
    pub rtmps: Option<TcpListener>,
}

impl Listeners {
    /// Binds the addresses of `config` (RTMP only when not `off`).
    pub async fn bind(config: &Config) -> anyhow::Result<Listeners> {
        let http = TcpListener::bind(&config.http.listen)
            .await
            .with_context(|| format!("cannot listen on http.listen {}", config.http.listen))?;
        let rtmp = match config.rtmp.listen_addr() {
            Some(addr) => Some(
                TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("cannot listen on rtmp.listen {addr}"))?,
            ),
            None => None,
        };
        let rtmps = match config.rtmp.tls_listen_addr() {
            Some(addr) => Some(
                TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("cannot listen on rtmp.tls_listen {addr}"))?,
            ),
            None => None,
        };
        Ok(Listeners { http, rtmp, rtmps })
    }
}

/// A started node.
#[derive(Debug)]
pub struct NodeHandle {
    pub http_addr: SocketAddr,
    pub rtmp_addr: Option<SocketAddr>,
    pub rtmps_addr: Option<SocketAddr>,
    /// The certificate of HTTPS and RTMPS, when TLS is on (reloaded on SIGHUP).
    pub tls: Option<Arc<Certs>>,
    /// The ingest side (the demo's test source publishes through it).
    pub ingest: Arc<Ingest>,
    task: JoinHandle<anyhow::Result<()>>,
}

impl NodeHandle {
    /// Waits until the node has shut down (after `shutdown` fired).
    pub async fn join(self) -> anyhow::Result<()> {
        self.task.await.context("node task panicked")?
    }
}

/// Starts a node; it runs until `shutdown` is cancelled.
pub async fn start(
    config: Config,
    listeners: Listeners,
    shutdown: CancellationToken,
) -> anyhow::Result<NodeHandle> {
    config.validate()?;
    let policy = Policy {
        retention_ms: i64::try_from(config.record.retention.0.as_millis()).unwrap_or(i64::MAX),
        max_bytes: config.record.max_bytes.0,
    };
    let dir = config.record.dir.clone();
    let min_free = config.record.min_free.0;
    let (store, recovered) =
        tokio::task::spawn_blocking(move || Store::open(&dir, policy, min_free))
            .await
            .context("store open task")?
            .with_context(|| format!("cannot open record.dir {}", config.record.dir.display()))?;
    tracing::info!(
        node = %config.node.name,
        dir = %config.record.dir.display(),
        streams = recovered.streams,
        segments = recovered.segments,
        removed_files = recovered.removed_files,
        torn_index_tails = recovered.torn_index_tails,
        "recordings opened"
    );
    let store = Arc::new(store);
    let bus = Bus::default();
    let metrics = Arc::new(Metrics::default());
    let disk = config.cache.disk_dir.clone().map(|dir| DiskTier {
        dir,
        max_bytes: config.cache.disk.0,
    });
    let cache = Cache::with_disk(config.cache.memory.0, disk).await;
    let extra_ca = read_ca_file(&config).await?;
    let client = relay::upstream::Client::with_options(&relay::upstream::ClientOptions {
        token: config.relay.token.clone(),
        ca_pem: extra_ca.clone(),
    })
    .map_err(anyhow::Error::msg)?;
    let tls = match config.http.tls_files() {
        Some((cert, key)) => {
            let (cert, key) = (cert.to_owned(), key.to_owned());
            let certs = tokio::task::spawn_blocking(move || Certs::load(&cert, &key))
                .await
                .context("certificate load task")??;
            certs.reload_on_sighup(shutdown.clone());
            Some(certs)
        }
        None => None,
    };
    let relays = Arc::new(Relays::new(
        relay::Context {
            client,
            cache: cache.clone(),
            bus: bus.clone(),
            idle_timeout: config.relay.idle_timeout.0,
            prefetch: config.relay.prefetch,
            retention_ms: policy.retention_ms,
        },
        config.relay.upstreams.clone(),
        config.relay.idle_reap.0,
    ));
    for p in &config.proxy {
        relays
            .add(&p.local, &p.remote, p.upstreams.clone(), false)
            .map_err(|e| anyhow::anyhow!("[[proxy]] {}: {e}", p.local))?;
    }
    let archive = match &config.storage {
        Some(storage) => {
            let archive =
                crate::archive::Archive::open(storage, &config.node.name, policy, bus.clone())
                    .await
                    .with_context(|| format!("[storage] {}", storage.url))?;
            tracing::info!(url = %storage.url, endpoint = storage.endpoint.as_deref().unwrap_or("AWS"), "shared archive on");
            Some(Arc::new(archive))
        }
        None => None,
    };
    let segment_target_ms = config.record.segment_target.0.as_millis() as u64;
    let publish_hook = match config
        .access
        .as_ref()
        .and_then(|a| a.publish_hook.as_deref())
    {
        Some(url) => Some(
            crate::hooks::PublishHook::new(url, extra_ca.as_deref()).map_err(anyhow::Error::msg)?,
        ),
        None => None,
    };
    let ingest = Arc::new(Ingest {
        archive: archive.clone(),
        publish_hook,
        node: config.node.name.clone(),
        store: store.clone(),
        bus: bus.clone(),
        cache: cache.clone(),
        metrics: metrics.clone(),
        app: config.rtmp.app.clone(),
        publish_key: config.rtmp.publish_key.clone(),
        segment_target_ms,
        part_target_ms: config.record.part_target.ms(),
        tasks: TaskTracker::new(),
        thumbs: if config.record.thumbnails {
            Some(crate::thumbs::Thumbnailer::start(metrics.clone())?)
        } else {
            None
        },
    });
    let mut state = crate::http::Shared::new(
        &config.node.name,
        store.clone(),
        relays.clone(),
        cache,
        bus.clone(),
        metrics.clone(),
        segment_target_ms,
        config.record.playlist_window.0.as_millis() as u64,
        shutdown.clone(),
    );
    state.admin_token = config.http.admin_token.clone();
    state.allow_upstreams = config.http.allow_upstreams.clone();
    state.max_clip_ms = u64::try_from(config.http.max_clip.0.as_millis()).unwrap_or(u64::MAX);
    state.archive = archive.clone();
    state.access =
        crate::access::Access::new(config.access.as_ref(), config.http.admin_token.as_deref());
    if let Some(url) = config.access.as_ref().and_then(|a| a.event_hook.as_deref()) {
        let hook = Arc::new(
            crate::hooks::EventHook::new(url, crate::hooks::QUEUE_CAPACITY, extra_ca.as_deref())
                .map_err(anyhow::Error::msg)?,
        );
        hook.spawn(&bus, shutdown.clone());
        state.event_hook = Some(hook);
    }
    let state = AppState::from(state);
    let writers_task = archive
        .as_ref()
        .map(|a| a.spawn_writers(store.clone(), shutdown.clone()));

    let http_addr = listeners.http.local_addr()?;
    let rtmp_addr = listeners
        .rtmp
        .as_ref()
        .map(|l| l.local_addr())
        .transpose()?;
    let rtmps_addr = listeners
        .rtmps
        .as_ref()
        .map(|l| l.local_addr())
        .transpose()?;
    let rtmp_text = rtmp_addr.map_or_else(|| "off".to_owned(), |a| a.to_string());
    let rtmps_text = rtmps_addr.map_or_else(|| "off".to_owned(), |a| a.to_string());
    let scheme = if tls.is_some() { "https" } else { "http" };
    // Tests read the ports from this line: keep "node started", "http=" and "rtmp=".
    tracing::info!(node = %config.node.name, http = %http_addr, rtmp = %rtmp_text, rtmps = %rtmps_text, scheme, "node started");

    let app = http::router(state);
    let http_shutdown = shutdown.clone();
    let stopped = async move { http_shutdown.cancelled().await };
    let http_task = match &tls {
        None => tokio::spawn(serve_http(
            http::conn::Listener::new(listeners.http, http::conn::WRITE_STALL),
            app,
            stopped,
        )),
        Some(certs) => {
            let listener = http::conn::TlsListener::new(
                listeners.http,
                certs.server_config(&crate::tls::HTTP_ALPN)?,
                http::conn::WRITE_STALL,
                metrics.clone(),
            )?;
            tokio::spawn(serve_http(listener, app, stopped))
        }
    };

    let mut ingest_servers = Vec::new();
    let transports = [
        (listeners.rtmp, Transport::Plain),
        (
            listeners.rtmps,
            match &tls {
                Some(certs) => {
                    Transport::Tls(tokio_rustls::TlsAcceptor::from(certs.server_config(&[])?))
                }
                None => Transport::Plain,
            },
        ),
    ];
    for (listener, transport) in transports {
        let Some(listener) = listener else { continue };
        let handler = ingest.clone();
        let token = shutdown.clone();
        ingest_servers.push(tokio::spawn(crate::rtmp::server::serve_on(
            listener,
            transport,
            handler,
            crate::rtmp::server::Limits::default(),
            async move { token.cancelled().await },
        )));
    }

    let retention_store = store.clone();
    let retention_metrics = metrics.clone();
    let retention_token = shutdown.clone();
    let reaper = relays.clone();
    let reaper_token = shutdown.clone();
    let reaper_task = tokio::spawn(async move {
        let mut tick = tokio::time::interval(reaper.reap_interval());
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = reaper_token.cancelled() => return,
            }
            reaper.reap(crate::time::now_ms()).await;
        }
    });
    let retention_task = tokio::spawn(async move {
        let mut tick = tokio::time::interval(RETENTION_INTERVAL);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = retention_token.cancelled() => return,
            }
            for s in retention_store.list() {
                match retention_store
                    .enforce_retention(&s, crate::time::now_ms())
                    .await
                {
                    Ok(n) => crate::metrics::add(&retention_metrics.segments_deleted, n as u64),
                    Err(e) => tracing::warn!(stream = %s.name, error = %e, "retention failed"),
                }
            }
        }
    });

    let tasks = ingest.tasks.clone();
    let task = tokio::spawn(async move {
        shutdown.cancelled().await;
        tracing::info!("shutting down: closing publishers");
        relays.stop_all();
        for t in ingest_servers {
            let _ = t.await;
        }
        tasks.close();
        if tokio::time::timeout(FLUSH_TIMEOUT, tasks.wait())
            .await
            .is_err()
        {
            tracing::error!("recorders did not finish in time; their last segment may be lost");
        }
        let _ = retention_task.await;
        let _ = reaper_task.await;
        if let Some(t) = writers_task {
            let _ = t.await;
        }
        http_task
            .await
            .context("http task")?
            .context("http server")?;
        tracing::info!("shut down cleanly");
        Ok(())
    });
    Ok(NodeHandle {
        http_addr,
        rtmp_addr,
        rtmps_addr,
        tls,
        ingest,
        task,
    })
}

/// Serves the read/control API on `listener` (plain or TLS) until `stopped` completes.
async fn serve_http<L>(
    listener: L,
    app: axum::Router,
    stopped: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()>
where
    L: axum::serve::Listener<Addr = SocketAddr>,
    for<'a> http::conn::Peer:
        axum::extract::connect_info::Connected<axum::serve::IncomingStream<'a, L>>,
{
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<http::conn::Peer>(),
    )
    .with_graceful_shutdown(stopped)
    .await
}

/// `relay.ca_file`: extra CA certificates (PEM) trusted for https upstreams and hooks.
async fn read_ca_file(config: &Config) -> anyhow::Result<Option<Vec<u8>>> {
    match &config.relay.ca_file {
        Some(path) => Ok(Some(tokio::fs::read(path).await.with_context(|| {
            format!("cannot read relay.ca_file {}", path.display())
        })?)),
        None => Ok(None),
    }
}
