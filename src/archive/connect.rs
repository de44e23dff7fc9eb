//! Reaching the store: the S3 client built from `[storage]` and the credentials of the
//! environment, and the start-up probe that refuses a store which ignores conditional writes.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use super::bucket::{self, Bucket};
use super::{first_line, keys, Error};
use crate::config::StorageConfig;

/// Builds the S3 client of `config`. Credentials come from the environment
/// (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`), else from the AWS
/// credentials file (`AWS_SHARED_CREDENTIALS_FILE` or `~/.aws/credentials`, profile
/// `AWS_PROFILE` or `default`), else (AWS only) the instance's role. They are never logged.
pub fn connect(config: &StorageConfig) -> Result<Bucket, Error> {
    use object_store::aws::{AmazonS3Builder, S3ConditionalPut};
    use object_store::{BackoffConfig, ClientOptions, RetryConfig};
    let (bucket, prefix) = config
        .bucket_and_prefix()
        .map_err(|e| Error::Config(e.to_string()))?;
    let mut b = AmazonS3Builder::new()
        .with_bucket_name(&bucket)
        .with_region(&config.region)
        .with_conditional_put(S3ConditionalPut::ETagMatch)
        .with_retry(RetryConfig {
            backoff: BackoffConfig {
                init_backoff: Duration::from_millis(100),
                max_backoff: Duration::from_secs(1),
                base: 2.0,
            },
            max_retries: 2,
            retry_timeout: Duration::from_secs(5),
        })
        .with_client_options(
            ClientOptions::new()
                .with_timeout(Duration::from_secs(8))
                .with_connect_timeout(Duration::from_secs(2)),
        );
    if let Some(endpoint) = &config.endpoint {
        b = b
            .with_endpoint(endpoint.trim_end_matches('/'))
            .with_allow_http(endpoint.starts_with("http://"))
            .with_virtual_hosted_style_request(false);
    }
    match credentials() {
        Some(c) => {
            b = b
                .with_access_key_id(c.key_id)
                .with_secret_access_key(c.secret);
            if let Some(t) = c.token {
                b = b.with_token(t);
            }
        }
        None if config.endpoint.is_some() => {
            return Err(Error::Config(
                "no credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or write them to ~/.aws/credentials".into(),
            ))
        }
        None => {}
    }
    let store = b
        .build()
        .map_err(|e| Error::Config(first_line(&e.to_string())))?;
    Ok(Bucket::new(Arc::new(store), &prefix))
}

struct Credentials {
    key_id: String,
    secret: String,
    token: Option<String>,
}

fn credentials() -> Option<Credentials> {
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    if let (Some(key_id), Some(secret)) = (env("AWS_ACCESS_KEY_ID"), env("AWS_SECRET_ACCESS_KEY")) {
        return Some(Credentials {
            key_id,
            secret,
            token: env("AWS_SESSION_TOKEN"),
        });
    }
    let path = env("AWS_SHARED_CREDENTIALS_FILE")
        .map(std::path::PathBuf::from)
        .or_else(|| env("HOME").map(|h| std::path::Path::new(&h).join(".aws/credentials")))?;
    let text = std::fs::read_to_string(path).ok()?;
    credentials_file(
        &text,
        &env("AWS_PROFILE").unwrap_or_else(|| "default".into()),
    )
}

/// The keys of `profile` in an AWS credentials file (INI).
fn credentials_file(text: &str, profile: &str) -> Option<Credentials> {
    let mut in_profile = false;
    let (mut key_id, mut secret, mut token) = (None, None, None);
    for line in text.lines().map(str::trim) {
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            in_profile = name.trim() == profile;
            continue;
        }
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        if !in_profile {
            continue;
        }
        let v = v.trim().to_owned();
        match k.trim() {
            "aws_access_key_id" => key_id = Some(v),
            "aws_secret_access_key" => secret = Some(v),
            "aws_session_token" => token = Some(v),
            _ => {}
        }
    }
    Some(Credentials {
        key_id: key_id?,
        secret: secret?,
        token,
    })
}

/// Proves the store fit for the archive: a create-only write of a key that exists must be
/// refused, and a compare-and-swap from a stale version too. Some S3 clones ignore both
/// conditions (every writer "wins"); two origins would then overwrite each other's archive.
pub async fn probe(bucket: &Bucket, node: &str) -> Result<(), Error> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let key = keys::probe(node, nanos);
    let first = bucket.put_create(&key, Bytes::from_static(b"1")).await?;
    let result = async {
        if first != bucket::Put::Created {
            return Err(Error::Unsafe(format!(
                "the store says the fresh key {key} exists; refusing [storage]"
            )));
        }
        if bucket.put_create(&key, Bytes::from_static(b"2")).await? != bucket::Put::Existed {
            return Err(Error::Unsafe(
                "the store accepted a second create-only write (If-None-Match: *) of the same key: \
                 it does not honour conditional writes, so two origins could overwrite each other's \
                 archive; refusing [storage] (AWS S3, MinIO, Ceph RGW and SeaweedFS honour them)"
                    .into(),
            ));
        }
        let stale = bucket::Version {
            e_tag: Some("\"0000000000000000\"".into()),
            version: None,
        };
        if bucket
            .put_update(&key, Bytes::from_static(b"3"), stale)
            .await?
            .is_some()
        {
            return Err(Error::Unsafe(
                "the store accepted a compare-and-swap write (If-Match) from a stale version: \
                 it does not honour conditional writes; refusing [storage]"
                    .into(),
            ));
        }
        match bucket.get(&key, None).await? {
            Some(b) if b.as_ref() == b"1" => Ok(()),
            other => Err(Error::Unsafe(format!(
                "the probe object {key} holds {:?} after refused overwrites; refusing [storage]",
                other.map(|b| String::from_utf8_lossy(&b).into_owned())
            ))),
        }
    }
    .await;
    if let Err(e) = bucket.delete(&key).await {
        tracing::warn!(error = %e, "cannot delete the storage probe object");
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::memory::InMemory;

    #[tokio::test]
    async fn an_honest_store_passes_the_probe() {
        let bucket = Bucket::new(Arc::new(InMemory::new()), "site-a");
        probe(&bucket, "origin-a").await.unwrap();
    }

    /// A store that ignores conditions, like some S3 clones.
    #[derive(Debug)]
    struct Careless(InMemory);

    impl std::fmt::Display for Careless {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "Careless")
        }
    }

    #[async_trait::async_trait]
    impl object_store::ObjectStore for Careless {
        async fn put_opts(
            &self,
            location: &object_store::path::Path,
            payload: object_store::PutPayload,
            _opts: object_store::PutOptions,
        ) -> object_store::Result<object_store::PutResult> {
            self.0.put_opts(location, payload, Default::default()).await
        }
        async fn put_multipart_opts(
            &self,
            location: &object_store::path::Path,
            opts: object_store::PutMultipartOptions,
        ) -> object_store::Result<Box<dyn object_store::MultipartUpload>> {
            self.0.put_multipart_opts(location, opts).await
        }
        async fn get_opts(
            &self,
            location: &object_store::path::Path,
            options: object_store::GetOptions,
        ) -> object_store::Result<object_store::GetResult> {
            self.0.get_opts(location, options).await
        }
        fn delete_stream(
            &self,
            locations: futures_util::stream::BoxStream<
                'static,
                object_store::Result<object_store::path::Path>,
            >,
        ) -> futures_util::stream::BoxStream<'static, object_store::Result<object_store::path::Path>>
        {
            self.0.delete_stream(locations)
        }
        fn list(
            &self,
            prefix: Option<&object_store::path::Path>,
        ) -> futures_util::stream::BoxStream<'static, object_store::Result<object_store::ObjectMeta>>
        {
            self.0.list(prefix)
        }
        async fn list_with_delimiter(
            &self,
            prefix: Option<&object_store::path::Path>,
        ) -> object_store::Result<object_store::ListResult> {
            self.0.list_with_delimiter(prefix).await
        }
        async fn copy_opts(
            &self,
            from: &object_store::path::Path,
            to: &object_store::path::Path,
            options: object_store::CopyOptions,
        ) -> object_store::Result<()> {
            self.0.copy_opts(from, to, options).await
        }
    }

    #[tokio::test]
    async fn a_store_that_ignores_conditions_is_refused() {
        let bucket = Bucket::new(Arc::new(Careless(InMemory::new())), "");
        let err = probe(&bucket, "origin-a").await.unwrap_err();
        assert!(matches!(err, Error::Unsafe(_)), "{err}");
        assert!(
            err.to_string()
                .contains("does not honour conditional writes"),
            "{err}"
        );
    }

    #[test]
    fn credentials_come_from_the_profile_asked_for() {
        let text = "[default]\naws_access_key_id = A\naws_secret_access_key = B\n\n[ops]\naws_access_key_id=C\naws_secret_access_key=D\naws_session_token=T\n";
        let d = credentials_file(text, "default").unwrap();
        assert_eq!((d.key_id.as_str(), d.secret.as_str()), ("A", "B"));
        let o = credentials_file(text, "ops").unwrap();
        assert_eq!((o.key_id.as_str(), o.token.as_deref()), ("C", Some("T")));
        assert!(credentials_file(text, "nope").is_none());
        assert!(credentials_file("[default]\naws_access_key_id=A\n", "default").is_none());
    }
}
