//! A TCP proxy on loopback that delays every chunk in both directions: a slow object store
//! (or a slow link to it) for one node while others reach the store directly.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Starts a proxy to `target` adding `delay` to each chunk; returns its address. It runs until
/// the test's runtime ends.
pub async fn slow_proxy(target: SocketAddr, delay: Duration) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(Ok(server)) =
                    tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(target)).await
                else {
                    return;
                };
                let (cr, cw) = client.into_split();
                let (sr, sw) = server.into_split();
                tokio::join!(pump(cr, sw, delay), pump(sr, cw, delay));
            });
        }
    });
    addr
}

/// Copies `from` to `to`, each chunk after `delay` (the first byte of a request or answer is
/// late by `delay`; a connection idle for 60 s is closed).
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    delay: Duration,
) {
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = match tokio::time::timeout(Duration::from_secs(60), from.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => n,
            _ => break,
        };
        tokio::time::sleep(delay).await;
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}
