//! Relaying: `proxyFrom(local, remote)` over HTTP.
//!
//! [`Relays`] owns every relayed stream of a node: from `[[proxy]]`, from `POST /api/proxies`,
//! and on demand from `[relay] upstreams` when a viewer asks for a stream the node does not
//! have. The relay never parses media: it knows segments only through the upstream's index.
//!
//! Bounded state: on-demand proxies nobody asked for within `relay.idle_reap` stop following
//! and are dropped; names that exist nowhere are remembered in a bounded negative cache for
//! [`NEGATIVE_TTL`], so requests for them cost no upstream traffic and no per-name state.

pub mod failover;
pub mod mirror;
pub mod proxy;
pub mod upstream;

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

pub use proxy::{Context, Proxy};

use failover::Trouble;

use crate::events::{Code, Event};
use crate::wire::{ProxySource, Source, Status};

/// How long "no upstream has this stream" is remembered.
pub const NEGATIVE_TTL: Duration = Duration::from_secs(3);
/// Most names remembered as missing.
const NEGATIVE_CAPACITY: u64 = 10_000;
/// How long the upstreams' stream list is reused for `/streams`.
const LISTING_TTL: Duration = Duration::from_secs(2);
/// How long asking an upstream for its stream list may take (bounds how long `/streams` at a
/// relay waits for a dead upstream).
const LISTING_TIMEOUT: Duration = Duration::from_secs(1);
/// How long probing the upstreams for an unknown stream may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a stream could not be relayed. Mapped to HTTP in one place (`http::ApiError`'s
/// `From`): `NotFound` 404, `Upstream` 502 or 504 when it timed out, `BadName` 409.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    #[error("no upstream has stream {0:?}")]
    NotFound(String),
    #[error("upstreams not responding: {why}")]
    Upstream { why: String, timed_out: bool },
    #[error("{0}")]
    BadName(String),
}

impl Error {
    /// An upstream failure, from what the upstream did.
    pub fn upstream(base: &str, trouble: &Trouble) -> Error {
        Error::Upstream {
            why: format!("{base} {trouble}"),
            timed_out: matches!(trouble, Trouble::Timeout),
        }
    }
}

/// All relayed streams of a node.
pub struct Relays {
    ctx: Context,
    /// On-demand upstreams (`[relay] upstreams`); empty = no on-demand relaying.
    on_demand: Vec<String>,
    /// On-demand proxies idle this long are reaped.
    idle_reap: Duration,
    /// By local name. std `RwLock`, never held across `.await`.
    proxies: RwLock<HashMap<String, Arc<Proxy>>>,
    /// Single flight of on-demand creation and the negative cache: `None` = nowhere.
    probes: moka::future::Cache<String, Option<Arc<Proxy>>>,
    /// The on-demand upstreams' stream list (one entry), for `/streams`.
    listing: moka::future::Cache<(), Arc<Vec<Status>>>,
}

impl std::fmt::Debug for Relays {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relays")
            .field("on_demand", &self.on_demand)
            .finish()
    }
}

impl Relays {
    pub fn new(ctx: Context, on_demand: Vec<String>, idle_reap: Duration) -> Relays {
        Relays {
            ctx,
            on_demand,
            idle_reap,
            proxies: RwLock::new(HashMap::new()),
            probes: moka::future::Cache::builder()
                .max_capacity(NEGATIVE_CAPACITY)
                .time_to_live(NEGATIVE_TTL)
                .build(),
            listing: moka::future::Cache::builder()
                .max_capacity(1)
                .time_to_live(LISTING_TTL)
                .build(),
        }
    }

    /// The relayed stream `local`, if it exists (marks it as used).
    pub fn get(&self, local: &str) -> Option<Arc<Proxy>> {
        let p = self.proxies.read().ok()?.get(local).cloned()?;
        p.touch();
        Some(p)
    }

    /// Every relayed stream, sorted by name.
    pub fn list(&self) -> Vec<Arc<Proxy>> {
        let mut v: Vec<_> = self
            .proxies
            .read()
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default();
        v.sort_by(|a, b| a.local.cmp(&b.local));
        v
    }

    /// Starts relaying `remote` of `upstreams` as `local`. Fails if `local` is taken.
    pub fn add(
        &self,
        local: &str,
        remote: &str,
        upstreams: Vec<String>,
        on_demand: bool,
    ) -> Result<Arc<Proxy>, Error> {
        if !crate::names::is_valid(local) || !crate::names::is_valid(remote) {
            return Err(Error::BadName(
                "names must match [A-Za-z0-9_-]{1,64}".into(),
            ));
        }
        if upstreams.is_empty() {
            return Err(Error::BadName("at least one upstream is needed".into()));
        }
        let mut map = self
            .proxies
            .write()
            .map_err(|_| Error::BadName("relay registry unavailable".into()))?;
        if map.contains_key(local) {
            return Err(Error::BadName(format!("{local:?} is already relayed")));
        }
        let proxy = Proxy::start(local, remote, upstreams, on_demand, self.ctx.clone());
        map.insert(local.to_owned(), proxy.clone());
        drop(map);
        self.ctx.bus.emit(
            Event::new(
                Code::ProxyStart,
                Some(local),
                format!("relaying {remote} as {local}"),
            )
            .with("remote", remote)
            .with("upstream", proxy.current_upstream()),
        );
        Ok(proxy)
    }

    /// Stops relaying `local`. Returns whether it existed.
    pub fn remove(&self, local: &str) -> bool {
        let removed = self.proxies.write().ok().and_then(|mut m| m.remove(local));
        if let Some(p) = &removed {
            p.stop();
            self.ctx.bus.emit(Event::new(
                Code::ProxyStop,
                Some(local),
                format!("stopped relaying {local}"),
            ));
        }
        removed.is_some()
    }

    /// The relayed stream `name`, created on demand from `[relay] upstreams` when one of them
    /// has it. Concurrent requests for one unknown name share one probe.
    pub async fn on_demand(&self, name: &str) -> Result<Arc<Proxy>, Error> {
        if let Some(p) = self.get(name) {
            return Ok(p);
        }
        if self.on_demand.is_empty() {
            return Err(Error::NotFound(name.to_owned()));
        }
        let probe = async {
            let mut last_trouble = None;
            for base in &self.on_demand {
                match self
                    .ctx
                    .client
                    .index(base, name, "?limit=1", PROBE_TIMEOUT)
                    .await
                {
                    Ok(Some(_)) => {
                        return match self.add(name, name, self.on_demand.clone(), true) {
                            Ok(p) => Ok(Some(p)),
                            // Created meanwhile by another path.
                            Err(_) => Ok(self.get(name)),
                        };
                    }
                    Ok(None) => {}
                    Err(t) => last_trouble = Some(Error::upstream(base, &t)),
                }
            }
            match last_trouble {
                Some(t) => Err(t),
                None => Ok(None),
            }
        };
        match self.probes.try_get_with(name.to_owned(), probe).await {
            Ok(Some(p)) => {
                p.touch();
                Ok(p)
            }
            Ok(None) => Err(Error::NotFound(name.to_owned())),
            Err(e) => Err((*e).clone()),
        }
    }

    /// Streams the on-demand upstreams offer that this node does not relay yet, as status
    /// objects whose `source` says where they would come from (`"state": "available"`): what
    /// a viewer can pick at an edge before anyone watched them. The first upstream that
    /// answers wins; the list is reused for a couple of seconds; an error is an empty list.
    pub async fn available(&self) -> Arc<Vec<Status>> {
        if self.on_demand.is_empty() {
            return Arc::default();
        }
        self.listing
            .get_with((), async {
                for base in &self.on_demand {
                    match self.ctx.client.streams(base, LISTING_TIMEOUT).await {
                        Ok(list) => {
                            let offered = list
                                .into_iter()
                                // One entry this node cannot read is left out, not the list.
                                .filter_map(|s| serde_json::from_value::<Status>(s).ok())
                                .filter(|s| crate::names::is_valid(&s.name) && self.get_quiet(&s.name).is_none())
                                .map(|mut s| {
                                    s.source = Source::Proxy(ProxySource {
                                        remote: s.name.clone(),
                                        upstream: Some(base.clone()),
                                        upstreams: self.on_demand.clone(),
                                        state: "available".into(),
                                        on_demand: true,
                                    });
                                    s
                                })
                                .collect();
                            return Arc::new(offered);
                        }
                        Err(t) => tracing::debug!(upstream = %base, trouble = %t, "no stream list from upstream"),
                    }
                }
                Arc::default()
            })
            .await
    }

    /// Like [`Relays::get`] without marking the stream as used.
    fn get_quiet(&self, local: &str) -> Option<Arc<Proxy>> {
        self.proxies.read().ok()?.get(local).cloned()
    }

    /// How often [`Relays::reap`] should run to honour `idle_reap` closely.
    pub fn reap_interval(&self) -> Duration {
        (self.idle_reap / 2).clamp(Duration::from_millis(500), Duration::from_secs(10))
    }

    /// Drops on-demand proxies nobody asked for within `idle_reap`. Returns how many.
    pub async fn reap(&self, now_ms: i64) -> usize {
        let idle: Vec<String> = self
            .list()
            .into_iter()
            .filter(|p| p.on_demand && p.idle_ms(now_ms) > self.idle_reap.as_millis() as i64)
            .map(|p| p.local.clone())
            .collect();
        for name in &idle {
            tracing::info!(stream = %name, "stopping an on-demand relay nobody watches");
            self.remove(name);
            self.probes.invalidate(name).await;
        }
        idle.len()
    }

    /// Stops every proxy (shutdown).
    pub fn stop_all(&self) {
        for p in self.list() {
            p.stop();
        }
    }
}
