//! The bucket: the few object-store operations the archive needs, over `object_store`, with
//! every key under the configured prefix and every call bounded in time.
//!
//! Create-only puts answer [`Put::Existed`] when the key is taken: for content-named keys
//! (segments, init segments) that means the same bytes are there already (our own earlier
//! attempt whose answer was lost, or a peer's identical copy); for index chunks the caller
//! reads what is there. Compare-and-swap puts (the lease) answer `None` when the version moved.

use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use object_store::path::Path;
use object_store::{
    GetOptions, GetRange, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload,
    UpdateVersion,
};

use super::Error;

/// How long one store call may take (object_store's own retries included).
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// What a create-only put found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Put {
    Created,
    Existed,
}

/// An object's version, for compare-and-swap.
pub type Version = UpdateVersion;

/// A bucket and a key prefix.
#[derive(Debug, Clone)]
pub struct Bucket {
    store: Arc<dyn ObjectStore>,
    /// `""` or `"site-a"` (no slashes at the ends).
    prefix: String,
    timeout: Duration,
}

impl Bucket {
    pub fn new(store: Arc<dyn ObjectStore>, prefix: &str) -> Bucket {
        Bucket {
            store,
            prefix: prefix.trim_matches('/').to_owned(),
            timeout: CALL_TIMEOUT,
        }
    }

    /// The same bucket with another bound on each call (tests).
    pub fn with_timeout(mut self, timeout: Duration) -> Bucket {
        self.timeout = timeout;
        self
    }

    /// The full object path of `key` (relative to the prefix).
    pub fn path(&self, key: &str) -> Path {
        if self.prefix.is_empty() {
            Path::from(key)
        } else {
            Path::from(format!("{}/{key}", self.prefix))
        }
    }

    async fn bounded<T>(
        &self,
        op: &'static str,
        key: &str,
        f: impl std::future::Future<Output = object_store::Result<T>>,
    ) -> Result<object_store::Result<T>, Error> {
        tokio::time::timeout(self.timeout, f)
            .await
            .map_err(|_| Error::timeout(op, key, self.timeout))
    }

    /// One bounded PUT in `mode`; the store's own answer for the caller to judge.
    async fn put(
        &self,
        key: &str,
        bytes: Bytes,
        mode: PutMode,
    ) -> Result<object_store::Result<object_store::PutResult>, Error> {
        let path = self.path(key);
        let opts = PutOptions::from(mode);
        self.bounded(
            "put",
            key,
            self.store.put_opts(&path, PutPayload::from(bytes), opts),
        )
        .await
    }

    /// Stores `bytes` at `key` unless the key exists.
    pub async fn put_create(&self, key: &str, bytes: Bytes) -> Result<Put, Error> {
        match self.put(key, bytes, PutMode::Create).await? {
            Ok(_) => Ok(Put::Created),
            Err(object_store::Error::AlreadyExists { .. }) => Ok(Put::Existed),
            // Some stores answer a create-only race with 412.
            Err(object_store::Error::Precondition { .. }) => Ok(Put::Existed),
            Err(e) => Err(Error::store("put", key, e)),
        }
    }

    /// Replaces `key` if its version is still `version`: the new version, or `None` when
    /// another writer moved it first.
    pub async fn put_update(
        &self,
        key: &str,
        bytes: Bytes,
        version: Version,
    ) -> Result<Option<Version>, Error> {
        match self.put(key, bytes, PutMode::Update(version)).await? {
            Ok(r) => Ok(Some(r.into())),
            Err(
                object_store::Error::Precondition { .. } | object_store::Error::NotFound { .. },
            ) => Ok(None),
            Err(e) => Err(Error::store("put", key, e)),
        }
    }

    /// The object's bytes (`range` of them), or `None` when it does not exist.
    pub async fn get(&self, key: &str, range: Option<Range<u64>>) -> Result<Option<Bytes>, Error> {
        Ok(self.get_versioned(key, range).await?.map(|(b, _)| b))
    }

    /// The object's bytes and version, or `None` when it does not exist.
    pub async fn get_versioned(
        &self,
        key: &str,
        range: Option<Range<u64>>,
    ) -> Result<Option<(Bytes, Version)>, Error> {
        let path = self.path(key);
        let opts = GetOptions {
            range: range.map(GetRange::Bounded),
            ..GetOptions::default()
        };
        let read = async {
            let r = self.store.get_opts(&path, opts).await?;
            let version = Version {
                e_tag: r.meta.e_tag.clone(),
                version: r.meta.version.clone(),
            };
            Ok((r.bytes().await?, version))
        };
        match self.bounded("get", key, read).await? {
            Ok(v) => Ok(Some(v)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(Error::store("get", key, e)),
        }
    }

    /// Deletes `key`; a missing key is not an error.
    pub async fn delete(&self, key: &str) -> Result<(), Error> {
        let path = self.path(key);
        match self
            .bounded("delete", key, self.store.delete(&path))
            .await?
        {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(Error::store("delete", key, e)),
        }
    }

    /// The object names directly in folder `key` (with their sizes). Not for the playback
    /// path: it is a LIST (paged by the client).
    pub async fn files(&self, key: &str) -> Result<Vec<String>, Error> {
        let base = self.path(key);
        let listed = self
            .bounded("list", key, self.store.list_with_delimiter(Some(&base)))
            .await?
            .map_err(|e| Error::store("list", key, e))?;
        Ok(listed
            .objects
            .iter()
            .filter_map(|o| o.location.filename().map(str::to_owned))
            .collect())
    }

    /// The names one level below `key` (a folder), e.g. the streams of the archive. Not for the
    /// playback path: it is a LIST.
    pub async fn folders(&self, key: &str) -> Result<Vec<String>, Error> {
        let base = if key.is_empty() {
            (!self.prefix.is_empty()).then(|| Path::from(self.prefix.as_str()))
        } else {
            Some(self.path(key))
        };
        let listed = self
            .bounded("list", key, self.store.list_with_delimiter(base.as_ref()))
            .await?
            .map_err(|e| Error::store("list", key, e))?;
        Ok(listed
            .common_prefixes
            .iter()
            .filter_map(|p| p.filename().map(str::to_owned))
            .collect())
    }
}
