//! The byte budget for entry bytes that moka's weight does not count: fetches in flight (upstream
//! pulls, disk-tier and recording reads), entries queued for the disk tier, and evicted entries
//! that responses are still sending. Together with the memory tier's own bound this keeps the
//! process near `cache.memory` under any load (SPEC: at most the budget + 64 MiB).
//!
//! Invariants:
//! - `used` is the sum of the live [`Charge`]s; a charge gives its bytes back when dropped.
//! - [`Budget::acquire`] is fair: requests are granted in arrival order, each only when it fits
//!   (a request larger than the whole budget is clamped to it, so it goes alone). Nobody is
//!   overtaken, so nobody waits forever while charges keep being released.
//! - A request dropped before its grant (the client went away) leaves the queue at once and
//!   wakes the next; one dropped just after its grant gives the bytes back.
//! - [`Budget::force`] charges bytes that already exist (an evicted entry still being sent): it
//!   never waits, may go past the limit, and new requests wait until it is released.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::oneshot;

#[derive(Debug, Default)]
struct State {
    used: u64,
    queue: VecDeque<Waiter>,
    next_id: u64,
    /// Requests that had to queue (for `/metrics`).
    waited: u64,
}

#[derive(Debug)]
struct Waiter {
    id: u64,
    bytes: u64,
    grant: oneshot::Sender<()>,
}

#[derive(Debug)]
struct Shared {
    limit: u64,
    state: Mutex<State>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Grants queued requests, in order, while the head fits.
fn grant(limit: u64, st: &mut State) {
    while let Some(head) = st.queue.front() {
        if st.used.saturating_add(head.bytes) > limit {
            return;
        }
        let Some(w) = st.queue.pop_front() else {
            return;
        };
        st.used += w.bytes;
        if w.grant.send(()).is_err() {
            // Its request is being dropped right now and will not see the grant.
            st.used -= w.bytes;
        }
    }
}

/// A fair byte budget (cheap to clone).
#[derive(Debug, Clone)]
pub struct Budget {
    shared: Arc<Shared>,
}

/// Bytes held against a [`Budget`]; released on drop.
#[derive(Debug)]
pub struct Charge {
    shared: Arc<Shared>,
    bytes: u64,
}

impl Drop for Charge {
    fn drop(&mut self) {
        let mut st = self.shared.lock();
        st.used = st.used.saturating_sub(self.bytes);
        grant(self.shared.limit, &mut st);
    }
}

/// A queued request; leaves the queue (or gives back its grant) if dropped before completing.
struct Pending<'a> {
    shared: &'a Shared,
    id: u64,
    bytes: u64,
    done: bool,
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let mut st = self.shared.lock();
        match st.queue.iter().position(|w| w.id == self.id) {
            Some(i) => {
                st.queue.remove(i);
            }
            None => st.used = st.used.saturating_sub(self.bytes),
        }
        grant(self.shared.limit, &mut st);
    }
}

impl Budget {
    /// A budget of `limit` bytes (at least 1).
    pub fn new(limit: u64) -> Budget {
        Budget {
            shared: Arc::new(Shared {
                limit: limit.max(1),
                state: Mutex::default(),
            }),
        }
    }

    pub fn limit(&self) -> u64 {
        self.shared.limit
    }

    /// Bytes charged now (may exceed the limit after [`Budget::force`]).
    pub fn used(&self) -> u64 {
        self.shared.lock().used
    }

    /// Requests waiting for their turn.
    pub fn queued(&self) -> usize {
        self.shared.lock().queue.len()
    }

    /// Requests that ever had to wait.
    pub fn waited(&self) -> u64 {
        self.shared.lock().waited
    }

    /// Charges `bytes` (clamped to the limit) once it is this request's turn and they fit.
    /// Cancel-safe: dropping the future gives up the place in the queue.
    pub async fn acquire(&self, bytes: u64) -> Charge {
        let bytes = bytes.min(self.shared.limit);
        loop {
            let (id, rx) = {
                let mut st = self.shared.lock();
                if st.queue.is_empty() && st.used.saturating_add(bytes) <= self.shared.limit {
                    st.used += bytes;
                    return self.charge(bytes);
                }
                let (tx, rx) = oneshot::channel();
                let id = st.next_id;
                st.next_id += 1;
                st.waited += 1;
                st.queue.push_back(Waiter {
                    id,
                    bytes,
                    grant: tx,
                });
                (id, rx)
            };
            let mut pending = Pending {
                shared: &self.shared,
                id,
                bytes,
                done: false,
            };
            // The sender stays in the queue until it is granted, so this cannot fail while
            // the request is alive; if it ever does, the request simply queues again.
            let granted = rx.await.is_ok();
            pending.done = true;
            if granted {
                return self.charge(bytes);
            }
        }
    }

    /// Charges `bytes` now if nobody is waiting and they fit.
    pub fn try_charge(&self, bytes: u64) -> Option<Charge> {
        let bytes = bytes.min(self.shared.limit);
        let mut st = self.shared.lock();
        if st.queue.is_empty() && st.used.saturating_add(bytes) <= self.shared.limit {
            st.used += bytes;
            Some(self.charge(bytes))
        } else {
            None
        }
    }

    /// Charges bytes that already exist in memory, whatever the limit (see the module doc).
    pub fn force(&self, bytes: u64) -> Charge {
        self.shared.lock().used += bytes;
        self.charge(bytes)
    }

    fn charge(&self, bytes: u64) -> Charge {
        Charge {
            shared: self.shared.clone(),
            bytes,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    async fn pending<F: std::future::Future>(f: std::pin::Pin<&mut F>) -> bool {
        tokio::time::timeout(Duration::from_millis(20), f)
            .await
            .is_err()
    }

    #[tokio::test]
    async fn grants_in_order_when_bytes_fit() {
        let b = Budget::new(100);
        let first = b.acquire(60).await;
        let mut big = std::pin::pin!(b.acquire(50));
        assert!(pending(big.as_mut()).await, "does not fit yet");
        // A small request that would fit must not overtake the queued one.
        let mut small = std::pin::pin!(b.acquire(10));
        assert!(pending(small.as_mut()).await, "no overtaking");
        assert!(b.try_charge(1).is_none(), "try_charge respects the queue");
        drop(first);
        let big = big.await;
        let small = small.await;
        assert_eq!(b.used(), 60);
        drop((big, small));
        assert_eq!(b.used(), 0);
        assert_eq!(b.waited(), 2);
    }

    #[tokio::test]
    async fn abandoned_request_frees_its_place() {
        let b = Budget::new(100);
        let hold = b.acquire(100).await;
        {
            let mut gone = std::pin::pin!(b.acquire(80));
            assert!(pending(gone.as_mut()).await);
        }
        assert_eq!(b.queued(), 0, "left the queue when dropped");
        let mut next = std::pin::pin!(b.acquire(30));
        assert!(pending(next.as_mut()).await);
        drop(hold);
        let c = next.await;
        assert_eq!(b.used(), 30);
        drop(c);
    }

    #[tokio::test]
    async fn oversized_requests_go_alone_and_force_counts() {
        let b = Budget::new(100);
        let huge = b.acquire(1_000).await;
        assert_eq!(b.used(), 100, "clamped to the limit");
        drop(huge);
        let forced = b.force(150);
        assert_eq!(b.used(), 150);
        let mut waiting = std::pin::pin!(b.acquire(10));
        assert!(
            pending(waiting.as_mut()).await,
            "forced bytes block new requests"
        );
        drop(forced);
        drop(waiting.await);
        assert_eq!(b.used(), 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn many_concurrent_requests_never_exceed_the_limit() {
        let b = Budget::new(1000);
        let peak = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let mut tasks = Vec::new();
        for i in 0..200u64 {
            let b = b.clone();
            let peak = peak.clone();
            tasks.push(tokio::spawn(async move {
                let c = b.acquire(100 + i % 300).await;
                peak.fetch_max(b.used(), std::sync::atomic::Ordering::Relaxed);
                tokio::task::yield_now().await;
                drop(c);
            }));
        }
        for t in tasks {
            tokio::time::timeout(Duration::from_secs(10), t)
                .await
                .expect("every request is granted")
                .unwrap();
        }
        assert!(peak.load(std::sync::atomic::Ordering::Relaxed) <= 1000);
        assert_eq!(b.used(), 0);
    }
}
