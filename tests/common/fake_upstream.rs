//! A faulty HTTP/1.1 upstream on raw TCP, so that every byte, header and close is under the
//! test's control. It serves what a real origin recorded from the fixture (index, init and
//! segments fetched from a real node once, [`record_source`]) and injects faults per segment
//! ([`Fault`]: early closes, short and long bodies, wrong ranges, stalls, 5xx, garbage bytes) and
//! per stream ([`Listing`]: garbage, hostile and oversized `index.json` answers). It logs every
//! request it gets ([`Seen`]).

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::{get_bytes, index, publish_and_end, TestNode};

/// Size of every thumbnail the fake serves: above the 256 KiB a relay accepts.
pub const OVERSIZED_THUMB: usize = 300 << 10;

/// What a real origin recorded from the fixture: the source of truth for the fake upstream.
pub struct Source {
    pub index: serde_json::Value,
    pub init: Bytes,
    pub segments: BTreeMap<u64, Bytes>,
}

impl Source {
    pub fn seqs(&self) -> Vec<u64> {
        self.segments.keys().copied().collect()
    }
}

/// Records the fixture on a real origin and reads back everything a relay would pull.
pub async fn record_source() -> Source {
    let origin = TestNode::origin();
    publish_and_end(&origin, "cam").await;
    let index = index(&origin, "cam").await;
    let init = get_bytes(&origin.url("/streams/cam/init/0.mp4")).await;
    let mut segments = BTreeMap::new();
    for s in index["segments"].as_array().unwrap() {
        assert_eq!(s["offset"], 0, "one file per segment at the origin");
        let url = origin.url(&format!("/streams/cam/{}", s["url"].as_str().unwrap()));
        segments.insert(s["seq"].as_u64().unwrap(), get_bytes(&url).await);
    }
    assert!(segments.len() >= 3, "the fixture makes several segments");
    Source {
        index,
        init,
        segments,
    }
}

/// How the fake answers one segment request.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Fault {
    /// Honest headers for the asked range, then the connection closes after `n` body bytes,
    /// on every request (resumes make progress but never finish).
    DropAlways(usize),
    /// Like `DropAlways` on the first request only; honest afterwards (resumable).
    DropOnce(usize),
    /// Closes after `n` bytes the first time, then answers the resume with a 200 whole body.
    DropThen200(usize),
    /// A 206 with the honest Content-Range but only `n` bytes (Content-Length `n`).
    Short(usize),
    /// A 206 with the honest Content-Range and `n` extra bytes after the asked ones.
    Longer(usize),
    /// A 206 whose Content-Range starts one byte after the asked offset.
    WrongRange,
    /// A 200 with a whole body 10 bytes longer than the segment.
    WholeWrongSize,
    /// Honest headers, then silence beyond the relay's stall timeout.
    Stall,
    /// The request is read, nothing is answered.
    NoHeaders,
    /// HTTP 500.
    Status500,
    /// Right length, wrong bytes (sent in several pieces).
    Garbage,
    /// Honest, but the second half comes 1.5 s after the first.
    SlowHalf,
}

/// How the fake answers `index.json` of a stream.
#[derive(Debug, Clone)]
pub enum Listing {
    /// The recorded index (ended stream), honouring `?after=`.
    Good,
    /// These bytes as a 200 `application/json` body.
    Body(Bytes),
    /// A syntactically plausible index larger than the relay's 64 MiB cap.
    Oversized,
}

/// A request the fake received.
#[derive(Debug, Clone)]
pub struct Seen {
    pub path: String,
    /// The request target as sent, query included.
    pub target: String,
    pub range: Option<(u64, Option<u64>)>,
    /// The `Authorization` header, if any.
    pub authorization: Option<String>,
}

#[derive(Default)]
struct FakeState {
    streams: HashMap<String, Listing>,
    faults: HashMap<(String, u64), Fault>,
    /// Requests per segment so far (for faults that change after the first request).
    served: HashMap<(String, u64), u32>,
    log: Vec<Seen>,
}

/// The faulty upstream.
pub struct Fake {
    addr: SocketAddr,
    source: Arc<Source>,
    state: Arc<Mutex<FakeState>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Fake {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Longer than the relay's stall and first-byte timeouts (5 s).
pub const SILENCE: Duration = Duration::from_secs(8);

impl Fake {
    pub async fn start(source: Arc<Source>) -> Fake {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(FakeState::default()));
        let (src, st) = (source.clone(), state.clone());
        let task = tokio::spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                tokio::spawn(handle(sock, src.clone(), st.clone()));
            }
        });
        Fake {
            addr,
            source,
            state,
            task,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, FakeState> {
        self.state.lock().unwrap()
    }

    pub fn list(&self, stream: &str, listing: Listing) {
        self.lock().streams.insert(stream.to_owned(), listing);
    }

    pub fn fault(&self, stream: &str, seq: u64, fault: Fault) {
        self.lock().faults.insert((stream.to_owned(), seq), fault);
    }

    /// Removes every segment fault.
    pub fn heal(&self) {
        self.lock().faults.clear();
    }

    pub fn log(&self) -> Vec<Seen> {
        self.lock().log.clone()
    }

    /// The recorded index renamed to `stream`, as JSON to mutate.
    pub fn index_of(&self, stream: &str) -> serde_json::Value {
        let mut ix = self.source.index.clone();
        ix["stream"] = stream.into();
        ix
    }
}

/// Reads the request head (bounded).
async fn read_head(sock: &mut TcpStream) -> Option<String> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        if buf.len() > 16 << 10 {
            return None;
        }
        let n = sock.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    String::from_utf8(buf).ok()
}

fn parse_range(v: &str) -> Option<(u64, Option<u64>)> {
    let (a, b) = v.trim().strip_prefix("bytes=")?.split_once('-')?;
    Some((a.parse().ok()?, b.parse().ok()))
}

/// A response head with `Connection: close`.
fn response_head(status: u16, headers: &[(&str, String)], content_length: usize) -> String {
    let mut head =
        format!("HTTP/1.1 {status} X\r\nContent-Length: {content_length}\r\nConnection: close\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    head
}

/// Writes a response head and `body`, in `pieces` writes a few ms apart, then closes.
async fn reply(
    sock: &mut TcpStream,
    status: u16,
    headers: &[(&str, String)],
    content_length: usize,
    body: &[u8],
    pieces: usize,
) {
    let head = response_head(status, headers, content_length);
    if sock.write_all(head.as_bytes()).await.is_err() {
        return;
    }
    let piece = body.len().div_ceil(pieces.max(1)).max(1);
    for part in body.chunks(piece) {
        if sock.write_all(part).await.is_err() || sock.flush().await.is_err() {
            return;
        }
        if pieces > 1 {
            tokio::time::sleep(Duration::from_millis(15)).await;
        }
    }
    let _ = sock.shutdown().await;
}

async fn handle(mut sock: TcpStream, source: Arc<Source>, state: Arc<Mutex<FakeState>>) {
    sock.set_nodelay(true).ok();
    let Ok(Some(head)) = tokio::time::timeout(Duration::from_secs(5), read_head(&mut sock)).await
    else {
        return;
    };
    let mut lines = head.split("\r\n");
    let target = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .unwrap_or("")
        .to_owned();
    let headers: Vec<(&str, &str)> = lines.filter_map(|l| l.split_once(':')).collect();
    let header = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim())
    };
    let range = header("range").and_then(parse_range);
    let authorization = header("authorization").map(str::to_owned);
    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    state.lock().unwrap().log.push(Seen {
        path: path.to_owned(),
        target: target.clone(),
        range,
        authorization,
    });
    let parts: Vec<&str> = path.split('/').collect();
    let (stream, rest) = match parts.as_slice() {
        ["", "streams", name, rest @ ..] => (name.to_string(), rest.join("/")),
        _ => return reply(&mut sock, 404, &[], 0, b"", 1).await,
    };
    let Some(listing) = state.lock().unwrap().streams.get(&stream).cloned() else {
        return reply(&mut sock, 404, &[], 0, b"", 1).await;
    };
    if rest == "index.json" {
        return serve_index(&mut sock, &source, &stream, listing, query).await;
    }
    if let Some(seq) = rest
        .strip_prefix("thumbs/")
        .and_then(|f| f.strip_suffix(".jpg"))
        .and_then(|n| n.parse::<u64>().ok())
    {
        // Every thumbnail is an oversized answer (more than a relay accepts).
        if source.segments.contains_key(&seq) {
            let body = vec![0xffu8; OVERSIZED_THUMB];
            let jpeg = [("Content-Type", "image/jpeg".to_owned())];
            return reply(&mut sock, 200, &jpeg, body.len(), &body, 1).await;
        }
        return reply(&mut sock, 404, &[], 0, b"", 1).await;
    }
    let (bytes, seq) = if rest == "init/0.mp4" {
        (source.init.clone(), None)
    } else if let Some(seq) = rest
        .strip_prefix("segments/")
        .and_then(|f| f.strip_suffix(".m4s"))
        .and_then(|n| n.parse::<u64>().ok())
    {
        match source.segments.get(&seq) {
            Some(b) => (b.clone(), Some(seq)),
            None => return reply(&mut sock, 404, &[], 0, b"", 1).await,
        }
    } else {
        return reply(&mut sock, 404, &[], 0, b"", 1).await;
    };
    let (fault, nth) = match seq {
        None => (None, 0),
        Some(seq) => {
            let mut st = state.lock().unwrap();
            let key = (stream.clone(), seq);
            let n = st.served.entry(key.clone()).or_default();
            let nth = *n;
            *n += 1;
            (st.faults.get(&key).copied(), nth)
        }
    };
    serve_bytes(&mut sock, &bytes, range, fault, nth).await;
}

async fn serve_index(
    sock: &mut TcpStream,
    source: &Source,
    stream: &str,
    listing: Listing,
    query: &str,
) {
    let json = [("Content-Type", "application/json".to_owned())];
    match listing {
        Listing::Good => {
            let mut ix = source.index.clone();
            ix["stream"] = stream.into();
            let after = query
                .split('&')
                .find_map(|kv| kv.strip_prefix("after="))
                .and_then(|v| v.parse::<u64>().ok());
            if let Some(after) = after {
                ix["segments"]
                    .as_array_mut()
                    .unwrap()
                    .retain(|s| s["seq"].as_u64().unwrap() > after);
            }
            let body = serde_json::to_vec(&ix).unwrap();
            reply(sock, 200, &json, body.len(), &body, 1).await;
        }
        Listing::Body(body) => reply(sock, 200, &json, body.len(), &body, 1).await,
        Listing::Oversized => {
            // Valid JSON whitespace beyond the cap; the relay must stop reading, not buffer it all.
            let (open, close) = (
                &br#"{"live":false,"periods":[],"segments":["#[..],
                &b"]}"[..],
            );
            let fill = (65 << 20) - open.len();
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                open.len() + fill + close.len()
            );
            let spaces = vec![b' '; 64 << 10];
            let send = async {
                sock.write_all(head.as_bytes()).await?;
                sock.write_all(open).await?;
                let mut left = fill;
                while left > 0 {
                    let n = left.min(spaces.len());
                    sock.write_all(&spaces[..n]).await?;
                    left -= n;
                }
                sock.write_all(close).await?;
                sock.shutdown().await
            };
            let _ = tokio::time::timeout(Duration::from_secs(20), send).await;
        }
    }
}

/// Answers a request for `bytes` (Range honoured), with `fault` injected.
async fn serve_bytes(
    sock: &mut TcpStream,
    bytes: &Bytes,
    range: Option<(u64, Option<u64>)>,
    fault: Option<Fault>,
    nth: u32,
) {
    let len = bytes.len() as u64;
    let (first, last) = match range {
        None => (0, len - 1),
        Some((a, b)) => (a, b.unwrap_or(len - 1).min(len - 1)),
    };
    if first > last {
        let cr = [("Content-Range", format!("bytes */{len}"))];
        return reply(sock, 416, &cr, 0, b"", 1).await;
    }
    let part = &bytes[first as usize..=last as usize];
    let cl = part.len();
    let status = if range.is_some() { 206 } else { 200 };
    let cr = |a: u64, b: u64| {
        if range.is_some() {
            vec![("Content-Range", format!("bytes {a}-{b}/{len}"))]
        } else {
            vec![]
        }
    };
    let honest = cr(first, last);
    match fault {
        None => reply(sock, status, &honest, cl, part, 1).await,
        Some(Fault::DropOnce(n) | Fault::DropThen200(n)) if nth == 0 => {
            reply(sock, status, &honest, cl, &part[..n.min(cl)], 1).await
        }
        Some(Fault::DropOnce(_)) => reply(sock, status, &honest, cl, part, 1).await,
        Some(Fault::DropThen200(_)) => reply(sock, 200, &[], bytes.len(), bytes, 1).await,
        Some(Fault::DropAlways(n)) => reply(sock, status, &honest, cl, &part[..n.min(cl)], 1).await,
        Some(Fault::Short(n)) => {
            let n = n.min(cl);
            reply(sock, status, &honest, n, &part[..n], 1).await
        }
        Some(Fault::Longer(n)) => {
            let mut body = part.to_vec();
            body.extend(std::iter::repeat_n(0u8, n));
            reply(sock, status, &honest, body.len(), &body, 1).await
        }
        Some(Fault::WrongRange) => {
            let body = &part[1..];
            reply(sock, 206, &cr(first + 1, last), body.len(), body, 1).await
        }
        Some(Fault::WholeWrongSize) => {
            let mut body = bytes.to_vec();
            body.extend_from_slice(&[0; 10]);
            reply(sock, 200, &[], body.len(), &body, 1).await
        }
        Some(Fault::Stall) => {
            let head = response_head(status, &honest, cl);
            let _ = sock.write_all(head.as_bytes()).await;
            tokio::time::sleep(SILENCE).await;
        }
        Some(Fault::NoHeaders) => tokio::time::sleep(SILENCE).await,
        Some(Fault::SlowHalf) => {
            let head = response_head(status, &honest, cl);
            let half = cl / 2;
            if sock.write_all(head.as_bytes()).await.is_ok()
                && sock.write_all(&part[..half]).await.is_ok()
            {
                let _ = sock.flush().await;
                tokio::time::sleep(SLOW_HALF).await;
                let _ = sock.write_all(&part[half..]).await;
            }
        }
        Some(Fault::Status500) => {
            let body = br#"{"code":"boom","level":"error","description":"boom"}"#;
            reply(sock, 500, &[], body.len(), body, 1).await
        }
        Some(Fault::Garbage) => {
            let body: Vec<u8> = part.iter().map(|b| b ^ 0x5a).collect();
            reply(sock, status, &honest, cl, &body, 4).await
        }
    }
}
/// The pause in the middle of a [`Fault::SlowHalf`] answer.
pub const SLOW_HALF: Duration = Duration::from_millis(1500);
