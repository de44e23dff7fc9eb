//! A stream as the read API sees it: recorded here, relayed from an upstream, or read from the
//! shared archive. All keep the same [`StreamIndex`](crate::store::StreamIndex); they differ in
//! where segment bytes come from.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;

use super::ApiError;
use crate::archive::{Archive, Followed};
use crate::cache::{Cache, Fetched, Key, Miss, PullError, Reader};
use crate::relay::Proxy;
use crate::store::{Stream, Timeline};

/// Bytes to send: in hand, or arriving from an upstream pull shared with other viewers.
pub enum Payload {
    Ready(Bytes),
    Streaming(Reader),
}

impl From<Fetched> for Payload {
    fn from(f: Fetched) -> Payload {
        match f {
            Fetched::Ready(b) => Payload::Ready(b),
            Fetched::Streaming(r) => Payload::Streaming(r),
        }
    }
}

impl Payload {
    /// A relayed answer: waits until the shared pull has its first bytes, so that a pull that
    /// fails before sending anything is still an error status (502, or 504 on a timeout), not a broken 200.
    async fn relayed(fetched: Fetched) -> Result<Payload, ApiError> {
        if let Fetched::Streaming(reader) = &fetched {
            reader.started().await.map_err(upstream_error)?;
        }
        Ok(fetched.into())
    }

    /// The whole body (waits for a streaming pull to finish; one copy of its chunks).
    pub async fn collect(self) -> Result<Bytes, ApiError> {
        match self {
            Payload::Ready(b) => Ok(b),
            Payload::Streaming(r) => {
                let mut buf = BytesMut::with_capacity(usize::try_from(r.len()).unwrap_or(0));
                let mut body = std::pin::pin!(r.all());
                while let Some(chunk) = body.next().await {
                    buf.extend_from_slice(&chunk.map_err(upstream_error)?);
                }
                Ok(buf.freeze())
            }
        }
    }
}

/// A readable stream.
#[derive(Debug, Clone)]
pub enum Feed {
    Recorded(Arc<Stream>),
    Relayed(Arc<Proxy>),
    /// In the shared archive, recorded elsewhere (or here, earlier).
    Archived(Arc<Followed>, Arc<Archive>),
}

impl Feed {
    /// The stream's index holder.
    pub fn stream(&self) -> &Arc<Timeline> {
        match self {
            Feed::Recorded(s) => s.timeline(),
            Feed::Relayed(p) => &p.stream,
            Feed::Archived(f, _) => &f.timeline,
        }
    }

    /// A media segment's bytes: from the cache, else the recording or one shared upstream pull.
    pub async fn segment(&self, cache: &Cache, seq: u64) -> Result<Payload, ApiError> {
        let name = &self.stream().name;
        let key = Key::Segment {
            stream: name.as_str().into(),
            seq,
        };
        let not_found = || ApiError::SegmentNotFound {
            stream: name.clone(),
            seq,
        };
        match self {
            Feed::Recorded(stream) => {
                let length = stream.read().segment(seq).map_or(0, |s| s.length);
                recorded(cache, key, length, stream.read_segment(seq), not_found).await
            }
            Feed::Relayed(proxy) => {
                Payload::relayed(proxy.segment(seq).await.ok_or_else(not_found)?).await
            }
            Feed::Archived(f, archive) => {
                Payload::relayed(f.segment(archive, cache, seq).await.ok_or_else(not_found)?).await
            }
        }
    }

    /// An LL-HLS part's bytes (it is listed in the index): from the cache, else the
    /// recording (the open segment's parts are in memory, a sealed one's are ranges of it).
    pub async fn part(&self, cache: &Cache, seq: u64, index: u32) -> Result<Payload, ApiError> {
        let name = &self.stream().name;
        let not_found = || ApiError::NotFound(format!("no part {seq}.{index}"));
        let key = Key::Part {
            stream: name.as_str().into(),
            seq,
            index,
        };
        match self {
            Feed::Recorded(stream) => {
                let i = usize::try_from(index).unwrap_or(usize::MAX);
                let length = stream.read().part(seq, i).map_or(0, |p| p.length);
                recorded(cache, key, length, stream.read_part(seq, i), not_found).await
            }
            Feed::Relayed(proxy) => {
                Payload::relayed(proxy.part(seq, index).await.ok_or_else(not_found)?).await
            }
            // An archive holds sealed segments only: its readers list no parts.
            Feed::Archived(..) => Err(not_found()),
        }
    }

    /// A period's init segment, like [`Feed::segment`].
    pub async fn init(&self, cache: &Cache, period: u32) -> Result<Payload, ApiError> {
        let key = Key::Init {
            stream: self.stream().name.as_str().into(),
            period,
        };
        let not_found = || ApiError::NotFound(format!("no init segment {period}"));
        match self {
            Feed::Recorded(stream) => {
                let length = stream.read().period(period).map_or(0, |p| p.init_length);
                recorded(cache, key, length, stream.read_init(period), not_found).await
            }
            Feed::Relayed(proxy) => {
                Payload::relayed(proxy.init(period).await.ok_or_else(not_found)?).await
            }
            Feed::Archived(f, archive) => {
                Payload::relayed(f.init(archive, cache, period).await.ok_or_else(not_found)?).await
            }
        }
    }

    /// A segment's thumbnail (at most [`crate::thumbs::MAX_BYTES`]), through the cache: from
    /// the recording, or pulled once from the upstream for all concurrent requests. Missing
    /// (not made yet, skipped, audio-only, not in the index) is a `no-store` 404, never cached.
    /// Archived streams read it from the archive, where origins upload them best effort.
    pub async fn thumb(&self, cache: &Cache, seq: u64) -> Result<Bytes, ApiError> {
        let max = crate::thumbs::MAX_BYTES;
        let not_found = || ApiError::NotFound(format!("no thumbnail {seq}"));
        let loaded = match self {
            Feed::Recorded(stream) => {
                let key = Key::Thumb {
                    stream: stream.name.as_str().into(),
                    seq,
                };
                if !stream.thumbs().contains(seq) {
                    return Err(not_found());
                }
                return cache
                    .get_or_load(key, max, stream.read_thumb(seq, max))
                    .await
                    .map_err(|e| match &*e {
                        Miss::Absent => not_found(),
                        Miss::Failed(err) => ApiError::Internal(err.to_string()),
                    });
            }
            Feed::Relayed(proxy) => proxy.thumb(seq, max).await.ok_or_else(not_found)?,
            Feed::Archived(f, archive) => {
                return f
                    .thumb(archive, cache, seq, max)
                    .await
                    .ok_or_else(not_found)?
                    .map_err(|e| match &*e {
                        Miss::Absent => not_found(),
                        Miss::Failed(err) => ApiError::Upstream(err.to_string()),
                    });
            }
        };
        loaded.map_err(|e| match &*e {
            Miss::Absent => not_found(),
            Miss::Failed(err) => upstream_error(err.clone()),
        })
    }

    /// `source` of the status JSON.
    pub fn source(&self) -> crate::wire::Source {
        match self {
            Feed::Recorded(_) => crate::wire::Source::Ingest,
            Feed::Relayed(p) => crate::wire::Source::Proxy(p.source()),
            Feed::Archived(..) => crate::wire::Source::Archive,
        }
    }
}

/// Recorded bytes through the cache: one read of the recording (of about `length` bytes) for
/// all concurrent misses.
async fn recorded(
    cache: &Cache,
    key: Key,
    length: u64,
    load: impl std::future::Future<Output = Result<Option<Bytes>, crate::store::Error>>,
    not_found: impl Fn() -> ApiError,
) -> Result<Payload, ApiError> {
    cache
        .get_or_load(key, length, load)
        .await
        .map(Payload::Ready)
        .map_err(|e| match &*e {
            Miss::Absent => not_found(),
            Miss::Failed(err) => ApiError::Internal(err.to_string()),
        })
}

/// A failed upstream pull as an HTTP error: 504 when it timed out, else 502.
fn upstream_error(e: PullError) -> ApiError {
    if e.is_timeout() {
        ApiError::UpstreamTimeout(e.to_string())
    } else {
        ApiError::Upstream(e.to_string())
    }
}
