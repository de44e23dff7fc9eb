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
//! LL-HLS: when the upstream has parts, the long-poll also wakes per part (`&part=K`). The
//! follow task pulls each new part of the open segment once (through the cache, verified
//! against the upstream's hash) and only then announces it, in order; a segment whose parts
//! all passed through here is joined from them rather than pulled again.
//!
//! Invariants:
//! - The follow task alone writes the relay's timeline, and a segment's (or part's) locator is
//!   in the proxy's map before the segment is in the timeline (nothing listed is unfetchable).
//! - An open segment's part is announced only when its bytes are whole and verified here.
//! - `time` of a segment is the upstream's, unchanged.
//! - Every segment's bytes come from exactly one upstream URL (resumed by Range on that URL).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::failover::{Failover, Trouble};
use super::mirror::{Locator, Mirror, OpenParts, Tail};
use super::upstream::Client;
use super::upstream::Small;
use crate::cache::{Cache, Expect, Fetched, Key, Miss, PullError};
use crate::events::{Bus, Code, Event};
use crate::store::{Record, Timeline};
use crate::wire::{Index, ProxySource};

/// How often a live upstream stream that has no segment yet is asked again.
const EMPTY_POLL: Duration = Duration::from_millis(100);
/// A long-poll answered faster than this with nothing new did not wait.
const FAST_ANSWER: Duration = Duration::from_millis(20);
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
    crate::names::decimal(n)?;
    Some(format!("{stream_dir}thumbs/{n}.jpg"))
}

/// Mutable state of a proxy. std `Mutex`: short sections, never held across `.await`.
#[derive(Debug, Default)]
struct State {
    current: usize,
    state: &'static str,
    segments: BTreeMap<u64, Locator>,
    inits: HashMap<u32, Locator>,
    /// LL-HLS parts by (relay seq, index): the open segment's and the newest sealed ones'.
    parts: BTreeMap<(u64, u32), Locator>,
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

    /// An LL-HLS part's bytes (it is listed in the relay's index).
    pub async fn part(self: &Arc<Self>, seq: u64, index: u32) -> Option<Fetched> {
        let (loc, segment) = {
            let st = self.lock();
            let loc = st.parts.get(&(seq, index)).cloned()?;
            let segment = st.segments.get(&seq).cloned();
            (loc, segment)
        };
        // A sealed segment's part is a range of it: sliced from the segment when that is
        // cached (verified as a whole), else pulled as that range.
        if let Some(s) = segment.filter(|s| s.path == loc.path) {
            let key = Key::Segment {
                stream: self.cache_name.clone(),
                seq,
            };
            let at = loc
                .offset
                .checked_sub(s.offset)
                .and_then(|a| usize::try_from(a).ok());
            let end = at.and_then(|a| a.checked_add(usize::try_from(loc.length).ok()?));
            if let (Some(at), Some(end), Some(whole)) = (at, end, self.ctx.cache.peek(&key).await) {
                if end <= whole.len() {
                    return Some(Fetched::Ready(whole.slice(at..end)));
                }
            }
        }
        Some(self.fetch(self.part_key(seq, index), loc).await)
    }

    fn part_key(&self, seq: u64, index: u32) -> Key {
        Key::Part {
            stream: self.cache_name.clone(),
            seq,
            index,
        }
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
        // The upstream has LL-HLS parts (its last answer said so): long-poll for them too.
        let mut parts_on = false;
        while !self.cancel.is_cancelled() {
            let up = failover.current();
            let base = self.upstreams[up].clone();
            let cursor = mirror.cursor();
            let (query, timeout) = match cursor {
                None => (String::new(), Duration::from_secs(10)),
                Some(c) if self.stream.read().live => {
                    let part = if parts_on {
                        format!("&part={}", mirror.known_parts())
                    } else {
                        String::new()
                    };
                    (
                        format!("?after={c}{part}&wait={}ms", idle.as_millis()),
                        idle + Duration::from_secs(5),
                    )
                }
                Some(c) => (format!("?after={c}"), Duration::from_secs(10)),
            };
            let asked = Instant::now();
            let answer = tokio::select! {
                a = self.ctx.client.index(&base, &self.remote, &query, timeout) => a,
                _ = self.cancel.cancelled() => break,
            };
            let answered_at_once = asked.elapsed() < FAST_ANSWER;
            let trouble = match answer {
                Ok(Some(ix)) => {
                    failover.on_success();
                    let was_live = self.stream.read().live;
                    parts_on = ix.part_target_ms.is_some();
                    let added = tokio::select! {
                        n = self.apply(&mut mirror, up, &ix) => n,
                        _ = self.cancel.cancelled() => break,
                    };
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
                        // Not idle: a publisher may come back, and its first answers then
                        // must not count as an upstream that stopped sending.
                        last_new = Instant::now();
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
                        if added == 0 && answered_at_once && cursor.is_some() {
                            // A long-poll that came back at once with nothing new (an
                            // upstream that does not wait): do not spin on it.
                            tokio::select! {
                                _ = tokio::time::sleep(EMPTY_POLL) => {}
                                _ = self.cancel.cancelled() => break,
                            }
                        }
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

    /// Maps an upstream index answer into the relay index ([`Mirror`] decides, this applies),
    /// then pulls and announces the open segment's new parts. Returns how many segments and
    /// parts were added.
    async fn apply(self: &Arc<Self>, mirror: &mut Mirror, up: usize, ix: &Index) -> usize {
        let tail = Tail::of(&self.stream.read());
        let changes = mirror.apply(&tail, up, ix);
        if let Some(seq) = changes.start_seq {
            self.stream.start_seq_at(seq);
        }
        let newest: Vec<u64> = changes.segments.iter().map(|(seq, _)| *seq).collect();
        let mut sealed_parts = Vec::with_capacity(changes.sealed_parts.len());
        {
            let mut st = self.lock();
            st.inits.extend(changes.inits);
            st.segments.extend(changes.segments);
            for (seq, parts) in changes.sealed_parts {
                let mut metas = Vec::with_capacity(parts.len());
                for (i, (meta, loc)) in (0u32..).zip(parts) {
                    st.parts.insert((seq, i), loc);
                    metas.push(meta);
                }
                sealed_parts.push((seq, metas));
            }
        }
        let part_target = ix.part_target_ms.filter(|_| ix.live);
        if self.stream.read().part_target_ms != part_target {
            self.stream.set_part_target(part_target);
        }
        if !changes.records.is_empty() || !sealed_parts.is_empty() {
            self.stream.apply_relayed(changes.records, sealed_parts);
        }
        self.stream.raise_target(ix.target_duration_ms);
        self.enforce_window();
        for &seq in &newest {
            self.join_parts(seq).await;
        }
        if ix.live {
            // The cache runs each pull as its own task: dropping the result does not cancel it.
            for &seq in newest.iter().rev().take(self.ctx.prefetch as usize) {
                let me = self.clone();
                tokio::spawn(async move { drop(me.segment(seq).await) });
            }
        }
        let parts = match changes.open {
            Some(open) if ix.live => self.announce_parts(mirror, open).await,
            _ => 0,
        };
        self.forget_old_parts();
        newest.len() + parts
    }

    /// Pulls the open segment's new parts in order, each once for all (verified by the
    /// cache), and announces each as soon as it is whole. A part that fails is not announced,
    /// nor any after it (parts are announced in order; the sealed segment still comes).
    async fn announce_parts(self: &Arc<Self>, mirror: &mut Mirror, open: OpenParts) -> usize {
        let OpenParts {
            segment,
            first,
            parts,
        } = open;
        let mut announced = 0;
        for (i, (meta, loc)) in (first..).zip(parts) {
            let Ok(index) = u32::try_from(i) else { break };
            self.lock().parts.insert((segment.seq, index), loc.clone());
            let outcome = match self.fetch(self.part_key(segment.seq, index), loc).await {
                Fetched::Ready(_) => Ok(()),
                Fetched::Streaming(r) => r.finished().await,
            };
            if let Err(e) = outcome {
                tracing::warn!(seq = segment.seq, part = index, error = %e, "part pull failed; not announced");
                self.lock().parts.remove(&(segment.seq, index));
                break;
            }
            self.stream.add_part(&segment, meta.clone());
            let listed = self
                .stream
                .read()
                .parts_of(segment.seq)
                .map_or(0, <[_]>::len);
            if listed != i + 1 {
                // The index's open segment is not this one's continuation (it was closed
                // meanwhile): the rest of this segment comes sealed.
                self.lock().parts.remove(&(segment.seq, index));
                break;
            }
            mirror.announced(segment.seq, meta);
            announced += 1;
        }
        announced
    }

    /// A segment whose parts are all in the memory cache (verified when pulled) is joined from
    /// them and checked against the segment's hash, instead of being pulled again.
    async fn join_parts(&self, seq: u64) {
        let (parts, length) = {
            let ix = self.stream.read();
            let (Some(parts), Some(s)) = (ix.parts_of(seq), ix.segment(seq)) else {
                return;
            };
            (parts.len(), s.length)
        };
        let Some(verify) = self.lock().segments.get(&seq).and_then(|l| l.verify) else {
            return;
        };
        let key = Key::Segment {
            stream: self.cache_name.clone(),
            seq,
        };
        if parts == 0 || self.ctx.cache.peek(&key).await.is_some() {
            return;
        }
        let mut whole = bytes::BytesMut::with_capacity(usize::try_from(length).unwrap_or(0));
        for i in 0..parts {
            let Ok(index) = u32::try_from(i) else { return };
            match self.ctx.cache.peek(&self.part_key(seq, index)).await {
                Some(b) => whole.extend_from_slice(&b),
                None => return,
            }
        }
        if whole.len() as u64 != length || xxhash_rust::xxh3::xxh3_64(&whole) != verify {
            tracing::warn!(
                seq,
                "parts do not join into the listed segment; it will be pulled"
            );
            return;
        }
        self.ctx.cache.insert_relayed(key, whole.freeze()).await;
        self.ctx
            .cache
            .stats
            .assembled
            .fetch_add(1, Ordering::Relaxed);
    }

    /// Drops part locators of segments the index no longer lists parts for.
    fn forget_old_parts(&self) {
        let oldest = {
            let ix = self.stream.read();
            let open = ix.open.as_ref().map(|o| o.seq);
            ix.sealed_parts.front().map(|(s, _)| *s).or(open)
        };
        let mut st = self.lock();
        match oldest {
            Some(seq) => st.parts = st.parts.split_off(&(seq, 0)),
            None => st.parts.clear(),
        }
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
