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

/// A proxy to an S3 server that passes requests through, or answers every request with
/// `503 Slow Down` (as S3 does when throttling) while failing is switched on.
pub struct FaultyProxy {
    pub addr: SocketAddr,
    failing: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl FaultyProxy {
    pub async fn start(target: SocketAddr) -> FaultyProxy {
        use std::sync::atomic::Ordering;
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().unwrap();
        let failing = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = failing.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let flag = flag.clone();
                tokio::spawn(async move {
                    if flag.load(Ordering::Relaxed) {
                        answer_503(client).await;
                        return;
                    }
                    let Ok(Ok(server)) =
                        tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(target))
                            .await
                    else {
                        return;
                    };
                    let (cr, cw) = client.into_split();
                    let (sr, sw) = server.into_split();
                    // A pooled connection is cut when failing starts: the client retries on a
                    // new one and gets the 503.
                    let cut = async {
                        while !flag.load(Ordering::Relaxed) {
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                    };
                    tokio::select! {
                        _ = async { tokio::join!(pump(cr, sw, Duration::ZERO), pump(sr, cw, Duration::ZERO)) } => {}
                        _ = cut => {}
                    }
                });
            }
        });
        FaultyProxy { addr, failing }
    }

    pub fn set_failing(&self, on: bool) {
        self.failing.store(on, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Reads one request head (bounded) and answers 503, closing the connection.
async fn answer_503(mut client: TcpStream) {
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    let read_head = async {
        while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 64 << 10 {
            match client.read(&mut buf).await {
                Ok(n) if n > 0 => head.extend_from_slice(&buf[..n]),
                _ => break,
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(5), read_head).await;
    let body = "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>";
    let answer = format!(
        "HTTP/1.1 503 Slow Down\r\nContent-Type: application/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = client.write_all(answer.as_bytes()).await;
    let _ = client.shutdown().await;
}
