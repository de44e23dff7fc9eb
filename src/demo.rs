//! `dvrgate demo`: a whole node chain in one process, fed by the built-in test source.
//!
//! The test source replays the embedded FLV clip (`tests/fixtures/testsrc.flv`) in real time,
//! forever, with timestamps that keep growing across loops, into [`PublishHandler::publish`]:
//! the same tag pipeline RTMP publishers feed, not a side door.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::media::flv::{self, Tag, TagKind};
use crate::node::{self, Listeners};
use crate::rtmp::PublishHandler;

/// The embedded test clip: 10 s of H.264 + AAC (see tests/fixtures/README.md).
pub const CLIP: &[u8] = include_bytes!("../tests/fixtures/testsrc.flv");

/// True for AVC/AAC sequence headers and metadata: sent once per publish, not per loop.
fn is_header(tag: &Tag) -> bool {
    match tag.kind {
        TagKind::Script => true,
        TagKind::Video => tag.body.len() >= 2 && tag.body[0] & 0x0f == 7 && tag.body[1] == 0,
        TagKind::Audio => tag.body.len() >= 2 && tag.body[0] >> 4 == 10 && tag.body[1] == 0,
    }
}

/// Replays `clip` as stream `name` until `shutdown`. Returns an error only if the clip is bad.
pub async fn test_source<H: PublishHandler>(
    handler: Arc<H>,
    app: &str,
    name: &str,
    clip: &[u8],
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let tags = flv::parse_file(clip)?;
    let (headers, media): (Vec<Tag>, Vec<Tag>) = tags.into_iter().partition(is_header);
    anyhow::ensure!(!media.is_empty(), "test clip has no media tags");
    // Loop length: the last frame of each track plus one frame interval, whichever ends later.
    let end_of = |kind: TagKind| {
        let ts: Vec<u32> = media
            .iter()
            .filter(|t| t.kind == kind)
            .map(|t| t.timestamp_ms)
            .collect();
        match ts.as_slice() {
            [.., a, b] => b + (b - a),
            [b] => *b,
            [] => 0,
        }
    };
    let loop_ms = end_of(TagKind::Video).max(end_of(TagKind::Audio)).max(1);
    let first_ts = media[0].timestamp_ms;
    let peer = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
    'publish: while !shutdown.is_cancelled() {
        let tx = match handler.publish(app, name, peer) {
            Ok(tx) => tx,
            Err(refusal) => {
                tracing::warn!(stream = name, reason = %refusal.description, "test source cannot publish; retrying in 1 s");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                    _ = shutdown.cancelled() => return Ok(()),
                }
            }
        };
        for h in &headers {
            if tx.send(h.clone()).await.is_err() {
                continue 'publish;
            }
        }
        let started = Instant::now();
        for n in 0u64.. {
            let offset = n * u64::from(loop_ms);
            for tag in &media {
                let ts = offset + u64::from(tag.timestamp_ms - first_ts);
                tokio::select! {
                    _ = tokio::time::sleep_until(started + Duration::from_millis(ts)) => {}
                    _ = shutdown.cancelled() => return Ok(()),
                }
                let tag = Tag {
                    timestamp_ms: ts as u32,
                    ..tag.clone()
                };
                if tx.send(tag).await.is_err() {
                    tracing::warn!(
                        stream = name,
                        "recorder stopped; republishing the test source"
                    );
                    continue 'publish;
                }
            }
        }
    }
    Ok(())
}

/// Options of `dvrgate demo`.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    pub base_port: u16,
    pub rtmp_port: u16,
    pub bind: std::net::IpAddr,
}

/// Runs the demo until `shutdown`: origin (base port, RTMP) -> intermediate (base + 1) ->
/// edge (base + 2), the relays following on demand.
pub async fn run(opts: DemoOptions, shutdown: CancellationToken) -> anyhow::Result<()> {
    let data = std::env::temp_dir().join(format!("dvrgate-demo-{}", std::process::id()));
    let http = |offset: u16| SocketAddr::new(opts.bind, opts.base_port + offset).to_string();
    let upstream = |offset: u16| {
        let host = if opts.bind.is_unspecified() {
            Ipv4Addr::LOCALHOST.into()
        } else {
            opts.bind
        };
        format!("http://{}", SocketAddr::new(host, opts.base_port + offset))
    };
    let mut origin = Config::default();
    origin.node.name = "origin".into();
    origin.http.listen = http(0);
    origin.rtmp.listen = SocketAddr::new(opts.bind, opts.rtmp_port).to_string();
    origin.record.dir = data.join("origin");
    origin.record.retention = crate::config::Dur::secs(3600);
    let relay = |name: &str, offset: u16, up: String| {
        let mut c = Config::default();
        c.node.name = name.into();
        c.http.listen = http(offset);
        c.rtmp.listen = "off".into();
        c.record.dir = data.join(name);
        c.record.retention = crate::config::Dur::secs(3600);
        c.cache.memory = crate::config::ByteSize(64 << 20);
        c.cache.disk_dir = Some(data.join(name).join("cache"));
        c.cache.disk = crate::config::ByteSize(256 << 20);
        c.relay.upstreams = vec![up];
        c
    };
    let intermediate = relay("intermediate", 1, upstream(0));
    let edge = relay("edge", 2, upstream(1));
    let mut nodes = Vec::new();
    for config in [origin, intermediate, edge] {
        let listeners = Listeners::bind(&config).await?;
        nodes.push(node::start(config, listeners, shutdown.clone()).await?);
    }
    let source = tokio::spawn(test_source(
        nodes[0].ingest.clone(),
        "live",
        "demo",
        CLIP,
        shutdown.clone(),
    ));
    let host = if opts.bind.is_unspecified() {
        "localhost".to_owned()
    } else {
        opts.bind.to_string()
    };
    let url = |port: u16| format!("http://{host}:{port}");
    let (o, i, e) = (
        nodes[0].http_addr.port(),
        nodes[1].http_addr.port(),
        nodes[2].http_addr.port(),
    );
    println!("dvrgate demo is running (Ctrl-C to stop): origin -> intermediate -> edge");
    println!("  watch (edge):   {}/?stream=demo", url(e));
    println!("  playlist:       {}/streams/demo/index.m3u8", url(e));
    println!(
        "  status:         {}/streams/demo   (origin {}, intermediate {})",
        url(e),
        url(o),
        url(i)
    );
    if let Some(rtmp) = nodes[0].rtmp_addr {
        println!("  publish more:   rtmp://{host}:{}/live/NAME", rtmp.port());
    }
    let mut result = Ok(());
    for n in nodes {
        if let Err(err) = n.join().await {
            result = Err(err);
        }
    }
    source.abort();
    if let Err(e) = std::fs::remove_dir_all(&data) {
        tracing::warn!(dir = %data.display(), error = %e, "cannot remove demo data");
    }
    result
}
