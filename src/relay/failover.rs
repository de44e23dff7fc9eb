//! The failover decision, pure: the only place that decides which upstream a relay uses.
//!
//! Upstreams are tried in order. Any trouble (connect failure, timeout, a retryable status, a
//! live stream idle for `idle_timeout`, an unusable answer) moves to the next one, wrapping
//! after the last. There is no failback: a relay stays on an upstream until that one fails.
//! After a whole round of failures the next attempt waits, with a capped backoff and jitter, so
//! a relay whose every upstream is down does not spin.

use std::time::Duration;

/// First backoff after a full round of failures.
const BASE_BACKOFF: Duration = Duration::from_millis(250);
/// Longest backoff: a recovering upstream is found again within this.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// What went wrong with the current upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trouble {
    Connect,
    Timeout,
    Status(u16),
    /// A live stream had no new segment for `idle_timeout`.
    Idle,
    /// The answer could not be used (garbage JSON, wrong lengths, missing stream).
    BadAnswer(String),
    /// The TLS handshake failed (untrusted or expired certificate, wrong host name, ...).
    Tls(String),
}

impl std::fmt::Display for Trouble {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Trouble::Connect => write!(f, "connection failed"),
            Trouble::Timeout => write!(f, "timed out"),
            Trouble::Status(s) => write!(f, "answered HTTP {s}"),
            Trouble::Idle => write!(f, "no new segment within the idle timeout"),
            Trouble::BadAnswer(why) => write!(f, "unusable answer: {why}"),
            Trouble::Tls(why) => write!(f, "TLS handshake failed: {why}"),
        }
    }
}

/// Statuses worth trying elsewhere (moq-hls `status_retryable`, plus every 5xx).
pub fn status_is_trouble(status: u16) -> bool {
    matches!(status, 408 | 429) || (500..=599).contains(&status)
}

/// The decision after a trouble report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Switch {
    pub from: usize,
    pub to: usize,
    /// Wait this long before using `to`.
    pub backoff: Duration,
}

/// Failover state of one relayed stream.
#[derive(Debug, Clone)]
pub struct Failover {
    upstreams: usize,
    current: usize,
    /// Troubles since the last success.
    failures: u32,
    /// Seed of the jitter (xorshift), so tests are deterministic.
    seed: u64,
}

impl Failover {
    /// State for `upstreams` (at least one) upstreams, starting with the first.
    pub fn new(upstreams: usize, seed: u64) -> Failover {
        Failover {
            upstreams: upstreams.max(1),
            current: 0,
            failures: 0,
            seed: seed | 1,
        }
    }

    pub fn current(&self) -> usize {
        self.current
    }

    /// The current upstream answered usefully.
    pub fn on_success(&mut self) {
        self.failures = 0;
    }

    /// The current upstream failed: move on.
    pub fn on_trouble(&mut self) -> Switch {
        let from = self.current;
        self.current = (self.current + 1) % self.upstreams;
        self.failures = self.failures.saturating_add(1);
        let rounds = self.failures / self.upstreams as u32;
        let backoff = if rounds == 0 {
            Duration::ZERO
        } else {
            let exp = BASE_BACKOFF
                .saturating_mul(1 << rounds.min(8).saturating_sub(1))
                .min(MAX_BACKOFF);
            // Jitter in [exp/2, exp]: relays that lost the same upstream do not retry in step.
            self.seed ^= self.seed << 13;
            self.seed ^= self.seed >> 7;
            self.seed ^= self.seed << 17;
            let half = exp / 2;
            half + Duration::from_nanos(self.seed % (half.as_nanos() as u64 + 1))
        };
        Switch {
            from,
            to: self.current,
            backoff,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotates_without_failback_and_backs_off_after_a_round() {
        let mut f = Failover::new(3, 7);
        assert_eq!(f.current(), 0);
        let s = f.on_trouble();
        assert_eq!((s.from, s.to, s.backoff), (0, 1, Duration::ZERO));
        f.on_success();
        assert_eq!(f.current(), 1, "no failback after success");
        assert_eq!(f.on_trouble().to, 2);
        assert_eq!(f.on_trouble().to, 0, "wraps after the last");
        let s = f.on_trouble();
        assert_eq!(s.to, 1);
        assert!(
            s.backoff >= BASE_BACKOFF / 2 && s.backoff <= BASE_BACKOFF,
            "{:?}",
            s.backoff
        );
        for _ in 0..100 {
            assert!(f.on_trouble().backoff <= MAX_BACKOFF);
        }
        f.on_success();
        assert_eq!(f.on_trouble().backoff, Duration::ZERO);
    }

    #[test]
    fn single_upstream_retries_itself_with_backoff() {
        let mut f = Failover::new(1, 1);
        let s = f.on_trouble();
        assert_eq!((s.from, s.to), (0, 0));
        assert!(s.backoff > Duration::ZERO);
    }

    #[test]
    fn retryable_statuses() {
        for s in [408, 429, 500, 502, 503, 504] {
            assert!(status_is_trouble(s));
        }
        for s in [200, 206, 304, 400, 403, 404, 416] {
            assert!(!status_is_trouble(s));
        }
    }
}
