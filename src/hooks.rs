//! The hooks of `[access]`. The publish hook ([`PublishHook`]): asked before a publish is
//! accepted; a 2xx within [`PUBLISH_HOOK_TIMEOUT`] allows it, anything else refuses it.
//!
//! The event hook (`access.event_hook`): every status event POSTed as JSON to an operator's
//! URL, in order, retried with backoff. A bounded queue sits between the node's event bus and
//! the hook: when the hook is down for long, the oldest events are dropped (and counted), so a
//! dead hook never holds more than [`QUEUE_CAPACITY`] events of memory and never slows the node.
//!
//! Two tasks: a collector moves events from the bus into the [`Queue`]; a sender delivers the
//! queue's front, one at a time (so in order), and removes it only once delivered. An answer
//! of 4xx other than 408/429 means the hook refuses that event: it is counted and skipped
//! (retrying would block every later event forever).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::events::{Bus, Event};

/// Events kept for a hook that does not answer; older ones are dropped.
pub const QUEUE_CAPACITY: usize = 4096;
/// One delivery attempt may take this long.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);
/// Backoff between attempts: from this, doubling...
const BACKOFF_FIRST: Duration = Duration::from_millis(200);
/// ...up to this.
const BACKOFF_MAX: Duration = Duration::from_secs(10);

/// A bounded FIFO of events, each with a number (so the sender removes exactly what it
/// delivered even if the collector dropped it meanwhile).
#[derive(Debug)]
pub struct Queue {
    items: VecDeque<(u64, Arc<Event>)>,
    capacity: usize,
    next_id: u64,
}

impl Queue {
    pub fn new(capacity: usize) -> Queue {
        Queue {
            items: VecDeque::new(),
            capacity: capacity.max(1),
            next_id: 0,
        }
    }

    /// Adds an event; returns how many old ones were dropped to make room (0 or 1).
    pub fn push(&mut self, event: Arc<Event>) -> u64 {
        let mut dropped = 0;
        if self.items.len() == self.capacity {
            self.items.pop_front();
            dropped = 1;
        }
        self.items.push_back((self.next_id, event));
        self.next_id += 1;
        dropped
    }

    /// The oldest event and its number.
    pub fn front(&self) -> Option<(u64, Arc<Event>)> {
        self.items.front().cloned()
    }

    /// Removes event `id` if it is still the oldest.
    pub fn done(&mut self, id: u64) {
        if self.items.front().is_some_and(|(i, _)| *i == id) {
            self.items.pop_front();
        }
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}

crate::counters! {
    /// Counters of the event hook.
    pub struct Stats {
        delivered => "counter" "dvrgate_event_hook_delivered_total", "Status events delivered to access.event_hook.";
        refused => "counter" "dvrgate_event_hook_refused_total", "Status events the hook answered with a 4xx (skipped).";
        failures => "counter" "dvrgate_event_hook_failures_total", "Failed delivery attempts (retried with backoff).";
        dropped => "counter" "dvrgate_event_hook_dropped_total", "Status events dropped because the queue for a hook that does not answer was full.";
    }
}

/// The event hook of a node.
#[derive(Debug)]
pub struct EventHook {
    url: reqwest::Url,
    client: reqwest::Client,
    queue: Mutex<Queue>,
    wake: Notify,
    pub stats: Stats,
}

/// What one attempt came to.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Delivered,
    Refused(u16),
    Retry(String),
}

impl EventHook {
    /// A hook posting to `url` (already validated by the config); an https hook's certificate
    /// is checked against the system roots and `extra_ca` (PEM, `relay.ca_file`).
    pub fn new(url: &str, capacity: usize, extra_ca: Option<&[u8]>) -> Result<EventHook, String> {
        let url = reqwest::Url::parse(url).map_err(|e| format!("access.event_hook: {e}"))?;
        let client = hook_client(ATTEMPT_TIMEOUT, Duration::from_secs(2), extra_ca)?;
        Ok(EventHook {
            url,
            client,
            queue: Mutex::new(Queue::new(capacity)),
            wake: Notify::new(),
            stats: Stats::default(),
        })
    }

    /// Starts delivering the events of `bus` until `shutdown`.
    pub fn spawn(self: &Arc<Self>, bus: &Bus, shutdown: CancellationToken) {
        let mut rx = bus.subscribe();
        let me = self.clone();
        let stop = shutdown.clone();
        tokio::spawn(async move {
            loop {
                let ev = tokio::select! {
                    ev = rx.recv() => ev,
                    _ = stop.cancelled() => return,
                };
                match ev {
                    Ok(ev) => {
                        let dropped = me.queue.lock().map_or(0, |mut q| q.push(ev));
                        crate::metrics::add(&me.stats.dropped, dropped);
                        me.wake.notify_one();
                    }
                    // The collector itself fell behind the bus: those are lost too.
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                        crate::metrics::add(&me.stats.dropped, n)
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                }
            }
        });
        let me = self.clone();
        tokio::spawn(async move { me.send_loop(shutdown).await });
    }

    /// Events waiting for delivery.
    pub fn queued(&self) -> usize {
        self.queue.lock().map_or(0, |q| q.len())
    }

    async fn send_loop(&self, shutdown: CancellationToken) {
        let mut backoff = BACKOFF_FIRST;
        loop {
            let front = self.queue.lock().ok().and_then(|q| q.front());
            let Some((id, ev)) = front else {
                tokio::select! {
                    _ = self.wake.notified() => continue,
                    _ = shutdown.cancelled() => return,
                }
            };
            let outcome = tokio::select! {
                o = self.deliver(&ev) => o,
                _ = shutdown.cancelled() => return,
            };
            match outcome {
                Outcome::Delivered => {
                    crate::metrics::inc(&self.stats.delivered);
                    backoff = BACKOFF_FIRST;
                }
                Outcome::Refused(status) => {
                    crate::metrics::inc(&self.stats.refused);
                    tracing::warn!(url = %self.shown_url(), status, code = ev.code.as_str(), "event hook refused an event; skipped");
                    backoff = BACKOFF_FIRST;
                }
                Outcome::Retry(why) => {
                    crate::metrics::inc(&self.stats.failures);
                    tracing::debug!(url = %self.shown_url(), %why, "event hook did not take the event; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = shutdown.cancelled() => return,
                    }
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                    continue;
                }
            }
            if let Ok(mut q) = self.queue.lock() {
                q.done(id);
            }
        }
    }

    async fn deliver(&self, ev: &Event) -> Outcome {
        let sent = self.client.post(self.url.clone()).json(ev).send().await;
        match sent {
            Ok(r) => classify(r.status().as_u16()),
            Err(e) if e.is_timeout() => Outcome::Retry("no answer in time".into()),
            Err(e) => match crate::tls::failure_of(&e) {
                Some(why) => Outcome::Retry(format!("TLS handshake failed: {why}")),
                None if e.is_connect() => Outcome::Retry("cannot connect".into()),
                None => Outcome::Retry(first_line(&e.to_string())),
            },
        }
    }

    /// The hook URL for logs: without userinfo and query (they may carry a secret).
    fn shown_url(&self) -> String {
        let mut u = self.url.clone();
        let _ = u.set_username("");
        let _ = u.set_password(None);
        u.set_query(None);
        u.to_string()
    }

    /// Writes the hook's metrics.
    pub fn render(&self, t: &mut crate::metrics::Text) {
        self.stats.render(t);
        t.metric(
            "dvrgate_event_hook_queued",
            "gauge",
            "Status events waiting for access.event_hook.",
            &[("", self.queued() as f64)],
        );
    }
}

/// How long the publish hook may take to answer (SPEC: 3 s); the publisher waits, no one else.
pub const PUBLISH_HOOK_TIMEOUT: Duration = Duration::from_secs(3);

/// The body POSTed to the publish hook.
#[derive(Debug, serde::Serialize)]
pub struct PublishAsk<'a> {
    pub action: &'static str,
    pub app: &'a str,
    pub name: &'a str,
    /// The `key` the publisher gave (`NAME?key=...`), empty when none.
    pub key: &'a str,
    pub addr: String,
    pub node: &'a str,
}

/// `access.publish_hook`.
#[derive(Debug, Clone)]
pub struct PublishHook {
    url: reqwest::Url,
    client: reqwest::Client,
}

impl PublishHook {
    /// A hook asked at `url` (already validated by the config); `extra_ca` as for
    /// [`EventHook::new`].
    pub fn new(url: &str, extra_ca: Option<&[u8]>) -> Result<PublishHook, String> {
        let url = reqwest::Url::parse(url).map_err(|e| format!("access.publish_hook: {e}"))?;
        let client = hook_client(PUBLISH_HOOK_TIMEOUT, PUBLISH_HOOK_TIMEOUT, extra_ca)?;
        Ok(PublishHook { url, client })
    }

    /// Asks the hook; `Err` is the refusal's description (never the key).
    pub async fn ask(&self, ask: &PublishAsk<'_>) -> Result<(), String> {
        let sent = self.client.post(self.url.clone()).json(ask).send();
        // The whole exchange is bounded, whatever the hook does with its answer's body: only
        // the status line is waited for, and the body is never read.
        match tokio::time::timeout(PUBLISH_HOOK_TIMEOUT, sent).await {
            Err(_) => Err(format!(
                "publish hook did not answer within {PUBLISH_HOOK_TIMEOUT:?}"
            )),
            Ok(Err(e)) => Err(if e.is_timeout() {
                format!("publish hook did not answer within {PUBLISH_HOOK_TIMEOUT:?}")
            } else if let Some(why) = crate::tls::failure_of(&e) {
                format!("publish hook TLS handshake failed: {why}")
            } else if e.is_connect() {
                "publish hook unreachable".into()
            } else {
                "publish hook answered something that is not HTTP".into()
            }),
            Ok(Ok(r)) if r.status().is_success() => Ok(()),
            Ok(Ok(r)) => Err(format!(
                "publish hook refused (HTTP {})",
                r.status().as_u16()
            )),
        }
    }
}

/// The HTTP client of a hook: bounded, and never following redirects (a hook that redirects
/// is misconfigured; its answer is its status). https hooks are verified against the system
/// roots and `extra_ca`.
fn hook_client(
    timeout: Duration,
    connect: Duration,
    extra_ca: Option<&[u8]>,
) -> Result<reqwest::Client, String> {
    let mut builder = reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(connect)
        .redirect(reqwest::redirect::Policy::none());
    if let Some(pem) = extra_ca {
        let certs = reqwest::Certificate::from_pem_bundle(pem)
            .map_err(|e| format!("relay.ca_file: {e}"))?;
        builder = builder.tls_certs_merge(certs);
    }
    builder.build().map_err(|e| format!("hook client: {e}"))
}

/// What an HTTP status from the hook means for the event.
fn classify(status: u16) -> Outcome {
    match status {
        200..=299 => Outcome::Delivered,
        408 | 429 => Outcome::Retry(format!("HTTP {status}")),
        400..=499 => Outcome::Refused(status),
        _ => Outcome::Retry(format!("HTTP {status}")),
    }
}

fn first_line(s: &str) -> String {
    s.lines()
        .next()
        .unwrap_or_default()
        .chars()
        .take(200)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::Code;

    fn ev(n: u32) -> Arc<Event> {
        Arc::new(Event::new(Code::PublishStart, Some("cam"), format!("{n}")))
    }

    #[test]
    fn the_queue_drops_the_oldest_when_full_and_removes_only_what_was_delivered() {
        let mut q = Queue::new(2);
        assert_eq!(q.push(ev(0)), 0);
        assert_eq!(q.push(ev(1)), 0);
        let (id0, first) = q.front().unwrap();
        assert_eq!(first.description, "0");
        assert_eq!(q.push(ev(2)), 1, "0 dropped");
        // The sender delivered 0, which was dropped meanwhile: 1 stays.
        q.done(id0);
        assert_eq!(q.front().unwrap().1.description, "1");
        let (id1, _) = q.front().unwrap();
        q.done(id1);
        assert_eq!(q.front().unwrap().1.description, "2");
        assert_eq!(q.len(), 1);
    }

    #[test]
    fn statuses_decide_retry_or_skip() {
        assert_eq!(classify(204), Outcome::Delivered);
        assert_eq!(classify(404), Outcome::Refused(404));
        assert!(matches!(classify(429), Outcome::Retry(_)));
        assert!(matches!(classify(503), Outcome::Retry(_)));
        assert!(matches!(classify(302), Outcome::Retry(_)));
    }

    #[tokio::test]
    async fn a_dead_hook_keeps_at_most_the_queue_and_counts_what_it_dropped() {
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/hook", closed.local_addr().unwrap());
        drop(closed);
        let hook = Arc::new(EventHook::new(&url, 3, None).unwrap());
        let bus = Bus::default();
        let stop = CancellationToken::new();
        hook.spawn(&bus, stop.clone());
        for n in 0..10 {
            bus.emit((*ev(n)).clone());
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while crate::metrics::get(&hook.stats.dropped) < 7.0 {
            assert!(tokio::time::Instant::now() < deadline, "drops not counted");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(hook.queued(), 3);
        assert_eq!(crate::metrics::get(&hook.stats.delivered), 0.0);
        let front = hook
            .queue
            .lock()
            .unwrap()
            .front()
            .unwrap()
            .1
            .description
            .clone();
        assert_eq!(front, "7", "the newest three are kept");
        stop.cancel();
    }

    #[test]
    fn logs_show_the_hook_without_its_secrets() {
        let hook = EventHook::new(
            "http://user:pw@ops.internal:8080/events?key=s3cret",
            1,
            None,
        )
        .unwrap();
        assert_eq!(hook.shown_url(), "http://ops.internal:8080/events");
    }
}
