//! One relayed stream: `proxyFrom(local, remote)`.
//!
//! A follower task keeps an in-memory index of the upstream stream: a full `index.json` when it
//! (re)connects, then `?after=&wait=` long-polls, so new segments show up here within
//! milliseconds of the upstream announcing them. Segments are pulled on demand (or ahead, for
//! the newest `prefetch`) through the node cache, once for all viewers.
//!
//! How upstream answers map onto the relay's timeline (numbering, wall-clock alignment,
//! continuity across failover) is decided by the pure [`Mirror`]; this module does the I/O
//! around it: polling, failover ([`Failover`]), pulls and the retention window.
//!
//! Invariants:
//! - The follow task alone writes the relay's timeline, and a segment's locator is in the
//!   proxy's map before the segment is in the timeline (nothing listed is unfetchable).
//! - `time` of a segment is the upstream's, unchanged.
//! - Every segment's bytes come from exactly one upstream URL (resumed by Range on that URL).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::failover::{Failover, Trouble};
use super::mirror::{Locator, Mirror, Tail};
use super::upstream::Client;
use super::upstream::Small;
use crate::cache::{Cache, Expect, Fetched, Key, Miss, PullError};
use crate::events::{Bus, Code, Event};
use crate::store::{Record, Timeline};
use crate::wire::{Index, ProxySource};

/// How often a live upstream stream that has no segment yet is asked again.
const EMPTY_POLL: Duration = Duration::from_millis(100);
/// How often an ended upstream stream is asked whether it went live again.
const ENDED_POLL: Duration = Duration::from_secs(2);
/// Most segments a relay index keeps, whatever the upstream lists: bounds memory per stream.
const MAX_SEGMENTS: usize = 200_000;

/// The upstream path of a segment's thumbnail, from the path of the segment:
/// `streams/cam/segments/41.m4s` -> `streams/cam/thumbs/41.jpg` (the upstream's own seq).
pub fn thumb_path(segment_path: &str) -> Option<String> {
    let (dir, file) = segment_path.rsplit_once('/')?;
    let stream_dir = dir.strip_suffix("segments")?;
    if !(stream_dir.is_empty() || stream_dir.ends_with('/')) {
        return None;
    }
    let n = file.strip_suffix(".m4s")?;
    if n.is_empty() || n.len() > 20 || !n.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(format!("{stream_dir}thumbs/{n}.jpg"))
}

/// Mutable state of a proxy. std `Mutex`: short sections, never held across `.await`.
#[derive(Debug, Default)]
struct State {
    current: usize,
    state: &'static str,
    segments: BTreeMap<u64, Locator>,
    inits: HashMap<u32, Locator>,
}

/// What the relay has heard from its upstreams so far.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Contact {
    /// Nothing yet.
    Pending,
    /// An upstream gave an index (stays so for the life of the proxy).
    Indexed,
    /// Every answer so far was trouble; the latest.
    Failed { why: String, timed_out: bool },
}

/// What a proxy needs from its node.
#[derive(Debug, Clone)]
pub struct Context {
    pub client: Client,
    pub cache: Cache,
    pub bus: Bus,
    pub idle_timeout: Duration,
    pub prefetch: u32,
    pub retention_ms: i64,
}

/// A relayed stream.
#[derive(Debug)]
pub struct Proxy {
    pub local: String,
    pub remote: String,
    pub upstreams: Vec<String>,
    /// Created on demand by a viewer (reaped when unused), not by config or the API.
    pub on_demand: bool,
    /// The relay's own index of the stream.
    pub stream: Arc<Timeline>,
    /// Cache namespace: unique per proxy instance, so a re-created proxy never sees another
    /// instance's entries under the same seq.
    cache_name: Arc<str>,
    state: Mutex<State>,
    /// Last time a viewer asked for this stream (unix ms).
    last_access_ms: AtomicI64,
    cancel: CancellationToken,
    /// Whether an upstream has ever given this relay an index (see [`Contact`]).
    contact: tokio::sync::watch::Sender<Contact>,
    ctx: Context,
}

static GENERATION: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

impl Proxy {
    /// Creates the proxy and starts following its first upstream.
    pub fn start(
        local: &str,
        remote: &str,
        upstreams: Vec<String>,
        on_demand: bool,
        ctx: Context,
    ) -> Arc<Proxy> {
        let gen = GENERATION.fetch_add(1, Ordering::Relaxed);
        let proxy = Arc::new(Proxy {
            local: local.to_owned(),
            remote: remote.to_owned(),
            upstreams,
            on_demand,
            stream: Arc::new(Timeline::new(local)),
            cache_name: format!("{local}#{gen}").into(),
            state: Mutex::new(State {
                state: "connecting",
                ..State::default()
            }),
            last_access_ms: AtomicI64::new(crate::time::now_ms()),
            cancel: CancellationToken::new(),
            contact: tokio::sync::watch::channel(Contact::Pending).0,
            ctx,
        });
        proxy.stream.set_live(true);
        tokio::spawn(proxy.clone().follow());
        proxy
    }

    /// Waits (at most `limit`) until the relay has heard from an upstream once, so that a
    /// viewer's first request sees the upstream's index rather than an empty one. `Err` while
    /// no upstream has ever given an index: the relay has nothing to serve (never an empty 200).
    pub async fn reachable(&self, limit: Duration) -> Result<(), super::Error> {
        let mut rx = self.contact.subscribe();
        let answered = tokio::time::timeout(limit, rx.wait_for(|c| *c != Contact::Pending)).await;
        let contact = self.contact.borrow().clone();
        match contact {
            Contact::Indexed => Ok(()),
            Contact::Failed { why, timed_out } => Err(super::Error::Upstream { why, timed_out }),
            Contact::Pending => Err(super::Error::Upstream {
                why: format!(
                    "no answer from {} within {} s",
                    self.upstreams.join(", "),
                    limit.as_secs()
                ),
                timed_out: answered.is_err(),
            }),
        }
    }

    /// Stops following; pending requests still finish.
    pub fn stop(&self) {
        self.cancel.cancel();
    }

    /// Records a viewer's interest (for reaping idle on-demand proxies).
    pub fn touch(&self) {
        self.last_access_ms
            .store(crate::time::now_ms(), Ordering::Relaxed);
    }

    pub fn idle_ms(&self, now_ms: i64) -> i64 {
        now_ms - self.last_access_ms.load(Ordering::Relaxed)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The upstream in use.
    pub fn current_upstream(&self) -> &str {
        let i = self.lock().current;
        self.upstreams.get(i).map_or("", String::as_str)
    }

    /// Where the stream comes from, for status JSON.
    pub fn source(&self) -> ProxySource {
        let st = self.lock();
        ProxySource {
            remote: self.remote.clone(),
            upstream: self.upstreams.get(st.current).cloned(),
            upstreams: self.upstreams.clone(),
            state: st.state.to_owned(),
            on_demand: self.on_demand,
        }
    }

    /// A segment's bytes: cached, or one shared pull from the upstream it was indexed from.
    pub async fn segment(self: &Arc<Self>, seq: u64) -> Option<Fetched> {
        let loc = self.lock().segments.get(&seq).cloned()?;
        Some(
            self.fetch(
                Key::Segment {
                    stream: self.cache_name.clone(),
                    seq,
                },
                loc,
            )
            .await,
        )
    }

    /// A period's init segment.
    pub async fn init(self: &Arc<Self>, period: u32) -> Option<Fetched> {
        let loc = self.lock().inits.get(&period).cloned()?;
        Some(
            self.fetch(
                Key::Init {
                    stream: self.cache_name.clone(),
                    period,
                },
                loc,
            )
            .await,
        )
    }

    /// One shared pull of `loc`: from the upstream that listed it; if that one fails before
    /// sending a byte and the index gave a content hash, from the same path of the current
    /// upstream, then the others (relays of one origin list the same segments under the same
    /// paths; the hash proves it is the same segment). Never resumed from another upstream.
    /// A cache hit costs no allocation here: the upstream order is worked out only on a miss.
    async fn fetch(self: &Arc<Self>, key: Key, loc: Locator) -> Fetched {
        let expect = Expect {
            length: loc.length,
            hash: loc.verify,
        };
        let me = self.clone();
        self.ctx
            .cache
            .get_or_pull(key, expect, move |mut sink| async move {
                let mut last = PullError::new("no upstream");
                for i in me.pull_order(&loc) {
                    let base = me.upstreams[i].trim_end_matches('/');
                    let url = format!("{base}/{}", loc.path);
                    match me.ctx.client.pull(&url, loc.offset, loc.length, &mut sink).await {
                        Ok(()) => return Ok(()),
                        Err(e) if sink.received() > 0 => return Err(e),
                        Err(e) => {
                            tracing::debug!(error = %e, "pull failed before its first byte; trying the next upstream");
                            last = e;
                        }
                    }
                }
                Err(last)
            })
            .await
    }

    /// Upstreams to pull `loc` from, in order: the one that listed it; when the index gave a
    /// content hash (which proves a same-path answer is the same segment), then the current
    /// upstream and the others.
    fn pull_order(&self, loc: &Locator) -> Vec<usize> {
        let mut order = vec![loc.upstream];
        if loc.verify.is_some() {
            let current = self.lock().current;
            for i in std::iter::once(current).chain(0..self.upstreams.len()) {
                if !order.contains(&i) {
                    order.push(i);
                }
            }
        }
        order
    }

    /// A segment's thumbnail: cached, or pulled whole (at most `max` bytes) once for all
    /// concurrent requests, from the upstreams its segment would be pulled from, in the same
    /// order. `None`: the seq is not in this relay's index (nothing is asked upstream).
    /// `Err(Miss::Absent)`: the upstream has none (404); like a failure it is not cached, as
    /// the thumbnail may exist a moment later.
    pub async fn thumb(
        self: &Arc<Self>,
        seq: u64,
        max: u64,
    ) -> Option<Result<bytes::Bytes, Arc<Miss<PullError>>>> {
        let loc = self.lock().segments.get(&seq).cloned()?;
        let path = thumb_path(&loc.path)?;
        let key = Key::Thumb {
            stream: self.cache_name.clone(),
            seq,
        };
        let me = self.clone();
        let load = async move {
            me.ctx
                .cache
                .stats
                .thumb_pulls
                .fetch_add(1, Ordering::Relaxed);
            let mut last = PullError::new("no upstream");
            for i in me.pull_order(&loc) {
                let base = me.upstreams[i].trim_end_matches('/');
                match me
                    .ctx
                    .client
                    .get_small(&format!("{base}/{path}"), max)
                    .await
                {
                    Ok(Small::Found(b)) => return Ok(Some(b)),
                    Ok(Small::Absent) => return Ok(None),
                    Err(e) => {
                        tracing::debug!(error = %e, "thumbnail pull failed; trying the next upstream");
                        last = e;
                    }
                }
            }
            Err(last)
        };
        Some(self.ctx.cache.get_or_load(key, max, load).await)
    }

    #[tracing::instrument(name = "proxy", skip_all, fields(local = %self.local, remote = %self.remote))]
    async fn follow(self: Arc<Self>) {
        let mut failover = Failover::new(
            self.upstreams.len(),
            self.cache_name.len() as u64 ^ crate::time::now_ms() as u64,
        );
        let mut mirror = Mirror::new(&self.remote);
        let mut last_new = Instant::now();
        let idle = self.ctx.idle_timeout;
        while !self.cancel.is_cancelled() {
            let up = failover.current();
            let base = self.upstreams[up].clone();
            let cursor = mirror.cursor();
            let (query, timeout) = match cursor {
                None => (String::new(), Duration::from_secs(10)),
                Some(c) if self.stream.read().live => (
                    format!("?after={c}&wait={}ms", idle.as_millis()),
                    idle + Duration::from_secs(5),
                ),
                Some(c) => (format!("?after={c}"), Duration::from_secs(10)),
            };
            let answer = tokio::select! {
                a = self.ctx.client.index(&base, &self.remote, &query, timeout) => a,
                _ = self.cancel.cancelled() => break,
            };
            let trouble = match answer {
                Ok(Some(ix)) => {
                    failover.on_success();
                    let was_live = self.stream.read().live;
                    let added = self.apply(&mut mirror, up, &ix);
                    if added > 0 || cursor.is_none() {
                        last_new = Instant::now();
                    }
                    self.lock().state = if ix.live { "following" } else { "ended" };
                    self.stream.set_live(ix.live);
                    self.contact.send_replace(Contact::Indexed);
                    if !ix.live {
                        if was_live {
                            tracing::info!("upstream stream ended");
                        }
                        tokio::select! {
                            _ = tokio::time::sleep(ENDED_POLL) => {}
                            _ = self.cancel.cancelled() => break,
                        }
                        continue;
                    }
                    if mirror.cursor().is_none() {
                        // A live stream with no segment yet: nothing to long-poll after, so
                        // ask again shortly rather than in a tight loop.
                        tokio::select! {
                            _ = tokio::time::sleep(EMPTY_POLL) => {}
                            _ = self.cancel.cancelled() => break,
                        }
                        continue;
                    }
                    if last_new.elapsed() < idle {
                        continue;
                    }
                    Trouble::Idle
                }
                Ok(None) => Trouble::BadAnswer("the upstream does not have the stream".into()),
                Err(t) => t,
            };
            // Only a relay that never had an index reports the trouble to viewers; one that did
            // keeps serving what it has while it fails over.
            self.contact.send_if_modified(|c| {
                if *c == Contact::Indexed {
                    return false;
                }
                *c = Contact::Failed {
                    why: format!("{base} {trouble}"),
                    timed_out: matches!(trouble, Trouble::Timeout),
                };
                true
            });
            tracing::warn!(upstream = %base, trouble = %trouble, "upstream not responding");
            self.ctx.bus.emit(
                Event::new(
                    Code::ProxyNotResponding,
                    Some(&self.local),
                    format!("upstream {base} {trouble}"),
                )
                .with("upstream", base.clone()),
            );
            let switch = failover.on_trouble();
            mirror.resync();
            {
                let mut st = self.lock();
                st.current = switch.to;
                st.state = "failing over";
            }
            if switch.to != switch.from {
                let to = self.upstreams[switch.to].clone();
                self.ctx.bus.emit(
                    Event::new(
                        Code::ProxyFailover,
                        Some(&self.local),
                        format!("failing over from {base} to {to}"),
                    )
                    .with("from", base)
                    .with("to", to),
                );
            }
            last_new = Instant::now();
            tokio::select! {
                _ = tokio::time::sleep(switch.backoff) => {}
                _ = self.cancel.cancelled() => break,
            }
        }
        self.stream.set_live(false);
    }

    /// Maps an upstream index answer into the relay index ([`Mirror`] decides, this applies).
    /// Returns how many segments were added.
    fn apply(self: &Arc<Self>, mirror: &mut Mirror, up: usize, ix: &Index) -> usize {
        let tail = Tail::of(&self.stream.read());
        let changes = mirror.apply(&tail, up, ix);
        if let Some(seq) = changes.start_seq {
            self.stream.start_seq_at(seq);
        }
        let newest: Vec<u64> = changes.segments.iter().map(|(seq, _)| *seq).collect();
        {
            let mut st = self.lock();
            st.inits.extend(changes.inits);
            st.segments.extend(changes.segments);
        }
        if !changes.records.is_empty() {
            self.stream.apply(changes.records);
        }
        self.stream.raise_target(ix.target_duration_ms);
        self.enforce_window();
        if ix.live {
            // The cache runs each pull as its own task: dropping the result does not cancel it.
            for &seq in newest.iter().rev().take(self.ctx.prefetch as usize) {
                let me = self.clone();
                tokio::spawn(async move { drop(me.segment(seq).await) });
            }
        }
        newest.len()
    }

    /// Keeps the relay index within the retention window and `MAX_SEGMENTS`.
    fn enforce_window(&self) {
        let before = {
            let ix = self.stream.read();
            let cutoff = crate::time::now_ms().saturating_sub(self.ctx.retention_ms);
            let by_age = ix
                .segments
                .iter()
                .take_while(|s| s.end_ms() < cutoff && ix.segments.len() > 1)
                .count();
            let by_count = ix.segments.len().saturating_sub(MAX_SEGMENTS);
            let n = by_age.max(by_count);
            if n == 0 {
                return;
            }
            ix.segments.get(n).map_or(ix.next_seq, |s| s.seq)
        };
        let gone = self.stream.apply(vec![Record::drop_before(before)]);
        let mut st = self.lock();
        for s in gone {
            st.segments.remove(&s.seq);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::thumb_path;

    #[test]
    fn thumb_paths_follow_segment_paths() {
        assert_eq!(
            thumb_path("streams/cam/segments/41.m4s").as_deref(),
            Some("streams/cam/thumbs/41.jpg")
        );
        assert_eq!(
            thumb_path("segments/0.m4s").as_deref(),
            Some("thumbs/0.jpg")
        );
        for bad in [
            "streams/cam/segments/x.m4s",
            "streams/cam/mysegments/1.m4s",
            "streams/cam/parts/1.m4s",
            "streams/cam/segments/1.mp4",
            "1.m4s",
        ] {
            assert_eq!(thumb_path(bad), None, "{bad}");
        }
    }
}
