//! The SeaweedFS harness itself (tests/common/s3.rs): signed put and get, create-only puts of
//! an existing key, an outage while stopped, and data surviving a restart on the same ports and
//! data dir.

mod common;

use std::time::Duration;

use futures_util::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutPayload};

use common::S3Server;

async fn read(store: &dyn ObjectStore, key: &Path) -> Vec<u8> {
    store
        .get(key)
        .await
        .unwrap_or_else(|e| panic!("get {key}: {e}"))
        .bytes()
        .await
        .unwrap_or_else(|e| panic!("body of {key}: {e}"))
        .to_vec()
}

#[tokio::test]
async fn seaweedfs_serves_signed_requests_and_keeps_data_across_restart() {
    let Some(mut s3) = S3Server::start().await else {
        return;
    };
    let store = s3.client();
    let key = Path::from("harness/first.bin");
    store
        .put(&key, PutPayload::from_static(b"first"))
        .await
        .expect("put");
    assert_eq!(read(store.as_ref(), &key).await, b"first");

    let err = store
        .put_opts(
            &key,
            PutPayload::from_static(b"second"),
            PutMode::Create.into(),
        )
        .await
        .expect_err("a create-only put of an existing key fails");
    assert!(
        matches!(err, object_store::Error::AlreadyExists { .. }),
        "create-only put of an existing key: {err:?}"
    );
    assert_eq!(
        read(store.as_ref(), &key).await,
        b"first",
        "not overwritten"
    );

    s3.stop();
    // Err (connection refused, after the client's short retries) or a timeout: either way no
    // object comes back from a stopped server.
    if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_secs(10), store.get(&key)).await {
        panic!("get succeeded with the server stopped");
    }

    s3.restart().await;
    assert_eq!(
        read(store.as_ref(), &key).await,
        b"first",
        "data survives stop + restart"
    );
    // Only the test's object is in the bucket: the readiness probe cleans up after itself.
    let listed = store
        .list(None)
        .map_ok(|m| m.location.to_string())
        .try_collect::<Vec<_>>()
        .await
        .expect("list");
    assert_eq!(listed, vec!["harness/first.bin".to_string()]);

    let toml = s3.storage_toml("rec");
    assert!(toml.contains("url = \"s3://dvr/rec\""), "{toml}");
    assert!(
        toml.contains(&format!("endpoint = \"{}\"", s3.endpoint)),
        "{toml}"
    );
    assert_eq!(s3.env().len(), 2);
}
