//! One relayed stream: `proxyFrom(local, remote)`.
//!
//! A follower task keeps an in-memory index of the upstream stream: a full `index.json` when it
//! (re)connects, then `?after=&wait=` long-polls, so new segments show up here within
//! milliseconds of the upstream announcing them. Segments are pulled on demand (or ahead, for
//! the newest `prefetch`) through the node cache, once for all viewers.
//!
//! Invariants:
//! - The relay numbers its segments itself. It starts at the upstream's numbering and keeps it
//!   while it stays on one upstream; after a failover it continues its own sequence, aligning
//!   the new upstream's segments by wall-clock `time` (never by their seq), so the timeline
//!   neither repeats nor skips beyond the failover gap.
//! - `time` of a segment is the upstream's, unchanged.
//! - A new relay period (a discontinuity) starts only where the media timeline really breaks:
//!   an upstream period change, or a different init segment or media time after a failover.
//! - Every segment's bytes come from exactly one upstream URL (resumed by Range on that URL).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::failover::{Failover, Trouble};
use super::upstream::Client;
use crate::cache::{Cache, Expect, Fetched, Key, PullError};
use crate::events::{Bus, Code, Event};
use crate::store::{PeriodMeta, Record, SegmentMeta, Timeline};
use crate::wire::{parse_hash, Index as UpIndex, ProxySource};

/// How often a live upstream stream that has no segment yet is asked again.
const EMPTY_POLL: Duration = Duration::from_millis(100);
/// How often an ended upstream stream is asked whether it went live again.
const ENDED_POLL: Duration = Duration::from_secs(2);
/// Slack for aligning two upstreams' wall clocks on failover (they timestamp the same feed
/// at slightly different arrival times).
const ALIGN_SLACK_MS: u64 = 50;
/// Most segments a relay index keeps, whatever the upstream lists: bounds memory per stream.
const MAX_SEGMENTS: usize = 200_000;

/// Where a relay segment's bytes are.
#[derive(Debug, Clone)]
struct Locator {
    /// Index of the upstream that listed it, and the path below that upstream's base.
    upstream: usize,
    path: Arc<str>,
    offset: u64,
    length: u64,
    /// The content hash to verify, when the upstream publishes one.
    verify: Option<u64>,
}

/// Mutable state of a proxy. std `Mutex`: short sections, never held across `.await`.
#[derive(Debug, Default)]
struct State {
    current: usize,
    state: &'static str,
    segments: BTreeMap<u64, Locator>,
    inits: HashMap<u32, Locator>,
    /// Upstream (index, period id) -> relay period id, for the upstream in use.
    periods: HashMap<u32, u32>,
    /// Last upstream seq taken from the current upstream; `None` = (re)sync by time.
    cursor: Option<u64>,
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
                let mut order = vec![loc.upstream];
                if loc.verify.is_some() {
                    let current = me.lock().current;
                    for i in std::iter::once(current).chain(0..me.upstreams.len()) {
                        if !order.contains(&i) {
                            order.push(i);
                        }
                    }
                }
                let mut last = PullError::new("no upstream");
                for i in order {
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

    #[tracing::instrument(name = "proxy", skip_all, fields(local = %self.local, remote = %self.remote))]
    async fn follow(self: Arc<Self>) {
        let mut failover = Failover::new(
            self.upstreams.len(),
            self.cache_name.len() as u64 ^ crate::time::now_ms() as u64,
        );
        let mut last_new = Instant::now();
        let idle = self.ctx.idle_timeout;
        while !self.cancel.is_cancelled() {
            let up = failover.current();
            let base = self.upstreams[up].clone();
            let cursor = self.lock().cursor;
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
                    let added = self.apply(up, &ix);
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
                    if self.lock().cursor.is_none() {
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
            {
                let mut st = self.lock();
                st.current = switch.to;
                st.cursor = None;
                st.periods.clear();
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

    /// Maps an upstream index answer into the relay index. Returns how many segments were added.
    fn apply(self: &Arc<Self>, up: usize, ix: &UpIndex) -> usize {
        let root = format!("streams/{}/", self.remote);
        let (last, next_period, current_period) = {
            let r = self.stream.read();
            (
                r.segments.back().cloned(),
                r.periods.last().map_or(0, |p| p.id + 1),
                r.periods.last().cloned(),
            )
        };
        let mut st = self.lock();
        let resync = st.cursor.is_none();
        let mut records = Vec::new();
        let mut next_seq = self.stream.read().next_seq;
        if last.is_none() {
            if let Some(first) = ix.segments.first() {
                // Mirror the upstream's numbering while nothing else has been relayed.
                self.stream.start_seq_at(first.seq);
                next_seq = next_seq.max(first.seq);
            }
        }
        let mut prev = last.clone();
        let mut cur_period = current_period;
        let mut next_period = next_period;
        let mut added = 0;
        let mut newest = Vec::new();
        for s in &ix.segments {
            if st.cursor.is_some_and(|c| s.seq <= c) {
                continue;
            }
            let Some(time_ms) = crate::time::parse_rfc3339(&s.time) else {
                continue;
            };
            if let Some(p) = &prev {
                // Align by wall clock: skip what the relay already has. Not only at a resync:
                // a new upstream that lags behind the old one lists the relay's newest
                // segments again in its next answers. (One upstream's times only grow, so
                // this never drops a segment of a stream that stays on one upstream.)
                let mid = p.time_ms + (p.duration_ms / 2) as i64;
                if time_ms <= mid {
                    st.cursor = Some(s.seq);
                    continue;
                }
            }
            let Some(up_period) = ix.periods.iter().find(|p| p.id == s.period) else {
                continue;
            };
            let relay_period = match st.periods.get(&s.period) {
                Some(&id) => id,
                None => {
                    let init_hash = parse_hash(up_period.hash.as_deref());
                    let continues = match (&cur_period, &prev) {
                        (Some(cp), Some(p)) => {
                            Some(cp.init_hash) == init_hash
                                && (p.start_ms + p.duration_ms).abs_diff(s.start_ms)
                                    <= ALIGN_SLACK_MS
                                && cp.codecs == up_period.codecs
                        }
                        _ => false,
                    };
                    let id = if continues {
                        cur_period.as_ref().map_or(next_period, |p| p.id)
                    } else {
                        let Some(length) = up_period.length else {
                            tracing::warn!(
                                period = up_period.id,
                                "upstream period without init length; skipped"
                            );
                            continue;
                        };
                        let meta = PeriodMeta {
                            id: next_period,
                            codecs: up_period.codecs.clone(),
                            width: up_period.width,
                            height: up_period.height,
                            start_ms: s.start_ms,
                            time_ms,
                            init_hash: init_hash
                                .unwrap_or_else(|| pseudo_hash(&up_period.init, length, up)),
                            init_length: length,
                        };
                        st.inits.insert(
                            meta.id,
                            Locator {
                                upstream: up,
                                path: format!("{root}{}", up_period.init).into(),
                                offset: 0,
                                length,
                                verify: init_hash,
                            },
                        );
                        next_period += 1;
                        cur_period = Some(meta.clone());
                        records.push(Record::Period(meta));
                        next_period - 1
                    };
                    st.periods.insert(s.period, id);
                    id
                }
            };
            let verify = parse_hash(s.hash.as_deref());
            let hash = verify.unwrap_or_else(|| pseudo_hash(&s.url, s.length, up));
            let meta = SegmentMeta {
                seq: next_seq,
                period: relay_period,
                start_ms: s.start_ms,
                duration_ms: s.duration_ms,
                time_ms,
                length: s.length,
                hash,
            };
            st.segments.insert(
                next_seq,
                Locator {
                    upstream: up,
                    path: format!("{root}{}", s.url).into(),
                    offset: s.offset,
                    length: s.length,
                    verify,
                },
            );
            newest.push(next_seq);
            next_seq += 1;
            st.cursor = Some(s.seq);
            prev = Some(meta.clone());
            records.push(Record::Segment(meta));
            added += 1;
        }
        if resync && st.cursor.is_none() {
            // Nothing listed yet: follow from the start.
            st.cursor = ix.segments.last().map(|s| s.seq);
        }
        drop(st);
        if !records.is_empty() {
            self.stream.apply(records);
        }
        self.stream.raise_target(ix.target_duration_ms);
        self.enforce_window();
        if ix.live {
            // The cache runs each pull as its own task: dropping the result does not cancel it.
            for seq in newest.into_iter().rev().take(self.ctx.prefetch as usize) {
                let me = self.clone();
                tokio::spawn(async move { drop(me.segment(seq).await) });
            }
        }
        added
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
        let gone = self.stream.apply(vec![Record::Drop { before }]);
        let mut st = self.lock();
        for s in gone {
            st.segments.remove(&s.seq);
        }
    }
}

/// A stand-in content hash for an upstream that does not publish one: changes whenever the
/// URL, length or upstream does, so ETags never name two different bodies.
fn pseudo_hash(url: &str, length: u64, upstream: usize) -> u64 {
    xxhash_rust::xxh3::xxh3_64(format!("{url}|{length}|{upstream}").as_bytes())
}
