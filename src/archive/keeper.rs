//! Keeping a held lease: a task of its own renews it every `renew_every` (see `lease`), so that
//! slow uploads never delay a renewal. The writer asks [`Keeper::may_write`] before each
//! chunk: a renewal that has not answered within `valid_for` of being sent means "write
//! nothing" (a standby may be about to take over); a CAS that fails means the lease is gone.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::bucket::{Bucket, Version};
use super::keys;
use super::lease::{Lease, Timing};

/// What the keeper knows of the lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Standing {
    /// Renewed in time: the holder may write.
    Valid,
    /// The last renewal is overdue (the store is slow or away): write nothing for now.
    Lapsed,
    /// Another node holds it now (or it was released).
    Lost(String),
}

#[derive(Debug)]
struct Held {
    lease: Lease,
    version: Version,
    valid_until: Instant,
    lost: Option<String>,
}

/// A held lease and its renewal task (aborted on drop).
#[derive(Debug)]
pub struct Keeper {
    held: Arc<Mutex<Held>>,
    task: tokio::task::JoinHandle<()>,
    bucket: Bucket,
    key: String,
}

impl Drop for Keeper {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Keeper {
    /// Starts keeping `lease`, acquired with a request sent at `sent`.
    pub fn start(
        bucket: Bucket,
        stream: &str,
        lease: Lease,
        version: Version,
        sent: Instant,
        timing: Timing,
    ) -> Keeper {
        let key = keys::lease(stream);
        let held = Arc::new(Mutex::new(Held {
            lease,
            version,
            valid_until: sent + timing.valid_for,
            lost: None,
        }));
        let task = tokio::spawn(renew(
            bucket.clone(),
            key.clone(),
            held.clone(),
            timing,
            sent,
        ));
        Keeper {
            held,
            task,
            bucket,
            key,
        }
    }

    pub fn epoch(&self) -> u64 {
        self.held.lock().map_or(0, |h| h.lease.epoch)
    }

    pub fn standing(&self) -> Standing {
        let Ok(h) = self.held.lock() else {
            return Standing::Lost("lease state poisoned".into());
        };
        match &h.lost {
            Some(why) => Standing::Lost(why.clone()),
            None if Instant::now() >= h.valid_until => Standing::Lapsed,
            None => Standing::Valid,
        }
    }

    pub fn may_write(&self) -> bool {
        self.standing() == Standing::Valid
    }

    /// Releases the lease (CAS to no writer), so a standby may take over at once.
    pub async fn release(self) -> Result<(), super::Error> {
        self.task.abort();
        let (released, version) = {
            let Ok(h) = self.held.lock() else {
                return Ok(());
            };
            (
                Lease {
                    writer: None,
                    epoch: h.lease.epoch,
                    beat: h.lease.beat + 1,
                },
                h.version.clone(),
            )
        };
        self.bucket
            .put_update(&self.key, released.to_bytes(), version)
            .await
            .map(drop)
    }
}

/// Renews until the lease is lost (or the task is aborted).
async fn renew(bucket: Bucket, key: String, held: Arc<Mutex<Held>>, timing: Timing, sent: Instant) {
    let mut next = sent + timing.renew_every;
    loop {
        tokio::time::sleep_until(next.into()).await;
        let Ok((renewed, version)) = held.lock().map(|h| (h.lease.renewed(), h.version.clone()))
        else {
            return;
        };
        let sent = Instant::now();
        let answer = tokio::time::timeout(
            timing.valid_for,
            bucket.put_update(&key, renewed.to_bytes(), version),
        )
        .await;
        let outcome = match answer {
            Ok(Ok(Some(v))) => Some(Ok(v)),
            // Our own renewal may have landed with its answer lost: look.
            Ok(Ok(None)) => match bucket.get_versioned(&key, None).await {
                Ok(Some((b, v))) if Lease::parse(&b).ok().as_ref() == Some(&renewed) => Some(Ok(v)),
                Ok(_) => Some(Err("another origin holds it now".to_owned())),
                Err(_) => None,
            },
            // The store did not answer: try again soon; the holder writes nothing once
            // `valid_until` passes, and a later CAS from the same version proves nobody took
            // over meanwhile.
            Ok(Err(_)) | Err(_) => None,
        };
        let Ok(mut h) = held.lock() else { return };
        match outcome {
            Some(Ok(v)) => {
                h.lease = renewed;
                h.version = v;
                h.valid_until = sent + timing.valid_for;
                next = sent + timing.renew_every;
            }
            Some(Err(why)) => {
                h.lost = Some(why);
                return;
            }
            None => next = Instant::now() + timing.poll_every,
        }
    }
}
