//! The writer's lease on a stream: one small JSON object, `<stream>/lease`, the only object of
//! the archive replaced in place, and only by compare-and-swap (`If-Match` on its ETag).
//!
//! Protocol (all times are durations measured on the local monotonic clock; no two machines'
//! wall clocks are ever compared, and the store's versions are the one arbiter):
//! - The writer renews every [`Timing::renew_every`] (CAS from the version it wrote last). It
//!   considers itself the writer only until [`Timing::valid_for`] after it *sent* its last
//!   successful renewal, and writes nothing (no chunk) after that.
//! - A standby reads the lease every [`Timing::poll_every`]. It takes over when it has seen the
//!   same version for [`Timing::expire_after`]: CAS from that version to `epoch + 1`. The store
//!   lets exactly one CAS from a version win.
//! - Safety: the standby first saw a version after the store wrote it, which is after the
//!   writer sent it; so a takeover happens at least `expire_after` after the send, later than
//!   the writer's own deadline `valid_for` (margin: `expire_after - valid_for` for clock-rate
//!   differences and scheduling). A chunk write already in flight at the deadline is fenced by
//!   its older epoch (see `chunk`).
//! - Liveness: a writer killed right after a renewal is replaced within
//!   `poll_every + expire_after` plus one store round trip: less than `storage.lease`.
//! - Release (a writer whose publish ended and whose backlog is uploaded): CAS to
//!   `writer: null`, so a standby still recording takes over at once.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// The lease object's content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// `node.name` of the writer; `None` when released.
    pub writer: Option<String>,
    /// Grows by one with every acquisition; index chunks carry it (fencing).
    pub epoch: u64,
    /// Grows by one with every renewal (so each renewal is a new version with new bytes).
    pub beat: u64,
}

impl Lease {
    pub fn to_bytes(&self) -> bytes::Bytes {
        super::chunk::to_doc(self)
    }

    pub fn parse(bytes: &[u8]) -> Result<Lease, String> {
        super::chunk::parse_doc(bytes, 4096, "archive lease")
    }

    /// The lease a node takes over from this one.
    pub fn next(&self, writer: &str) -> Lease {
        Lease {
            writer: Some(writer.to_owned()),
            epoch: self.epoch + 1,
            beat: 0,
        }
    }

    /// This lease renewed.
    pub fn renewed(&self) -> Lease {
        Lease {
            beat: self.beat + 1,
            ..self.clone()
        }
    }
}

/// The lease's periods, derived from `storage.lease`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    pub renew_every: Duration,
    pub valid_for: Duration,
    pub poll_every: Duration,
    pub expire_after: Duration,
}

impl Timing {
    pub fn of(lease: Duration) -> Timing {
        Timing {
            renew_every: lease / 4,
            valid_for: lease / 2,
            poll_every: (lease / 8).max(Duration::from_millis(100)),
            expire_after: lease * 5 / 8,
        }
    }
}

/// A standby's observation of someone else's lease: which version it saw and since when.
#[derive(Debug, Clone, Default)]
pub struct Watch {
    seen: Option<(Lease, Instant)>,
}

impl Watch {
    /// Records the lease read at `now`; returns how long this exact version has been seen.
    pub fn observe(&mut self, lease: &Lease, now: Instant) -> Duration {
        match &self.seen {
            Some((l, since)) if l == lease => now.saturating_duration_since(*since),
            _ => {
                self.seen = Some((lease.clone(), now));
                Duration::ZERO
            }
        }
    }

    pub fn reset(&mut self) {
        self.seen = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timing_keeps_the_safety_margin_and_replaces_within_the_lease() {
        let lease = Duration::from_secs(6);
        let t = Timing::of(lease);
        assert!(
            t.expire_after > t.valid_for,
            "takeover after the writer's own deadline"
        );
        assert!(t.renew_every < t.valid_for, "renewed before it lapses");
        assert!(
            t.poll_every + t.expire_after < lease,
            "replaced within storage.lease"
        );
    }

    #[test]
    fn a_version_counts_from_when_it_was_first_seen() {
        let mut w = Watch::default();
        let t0 = Instant::now();
        let l = Lease {
            writer: Some("a".into()),
            epoch: 1,
            beat: 4,
        };
        assert_eq!(w.observe(&l, t0), Duration::ZERO);
        assert_eq!(
            w.observe(&l, t0 + Duration::from_secs(3)),
            Duration::from_secs(3)
        );
        let renewed = l.renewed();
        assert_eq!(
            w.observe(&renewed, t0 + Duration::from_secs(4)),
            Duration::ZERO
        );
        assert_eq!(l.next("b").epoch, 2);
        assert_eq!(Lease::parse(&l.to_bytes()).unwrap(), l);
        assert!(Lease::parse(b"[]").is_err());
    }
}
