//! Status events: the onStatus codes of SPEC.md and a per-node event bus.
//!
//! Invariant: every status object a client sees (SSE, RTMP onStatus, JSON error bodies that carry
//! a status code) takes its `code` string from [`Code::as_str`], the single place they are spelled.

use serde::Serialize;

/// A status code of SPEC.md ("Status events").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Code {
    PublishStart,
    PublishBadName,
    UnpublishSuccess,
    RecordStart,
    RecordStop,
    RecordNoAccess,
    RecordTrimmed,
    ProxyStart,
    ProxyStop,
    ProxyBadName,
    ProxyNotResponding,
    ProxyFailover,
    SeekNotify,
    SeekInvalidTime,
    ConnectRejected,
}

impl Code {
    /// The wire spelling, e.g. `"NetStream.Publish.Start"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Code::PublishStart => "NetStream.Publish.Start",
            Code::PublishBadName => "NetStream.Publish.BadName",
            Code::UnpublishSuccess => "NetStream.Unpublish.Success",
            Code::RecordStart => "NetStream.Record.Start",
            Code::RecordStop => "NetStream.Record.Stop",
            Code::RecordNoAccess => "NetStream.Record.NoAccess",
            Code::RecordTrimmed => "NetStream.Record.Trimmed",
            Code::ProxyStart => "ProxyStream.Proxy.Start",
            Code::ProxyStop => "ProxyStream.Proxy.Stop",
            Code::ProxyBadName => "ProxyStream.Proxy.BadName",
            Code::ProxyNotResponding => "NetConnection.Proxy.NotResponding",
            Code::ProxyFailover => "ProxyStream.Proxy.Failover",
            Code::SeekNotify => "NetStream.Seek.Notify",
            Code::SeekInvalidTime => "NetStream.Seek.InvalidTime",
            Code::ConnectRejected => "NetConnection.Connect.Rejected",
        }
    }

    /// `"status"` for normal transitions, `"error"` for failures (the onStatus `level`).
    pub fn level(self) -> &'static str {
        match self {
            Code::PublishBadName
            | Code::RecordNoAccess
            | Code::ProxyBadName
            | Code::ProxyNotResponding
            | Code::SeekInvalidTime
            | Code::ConnectRejected => "error",
            Code::ProxyFailover | Code::RecordTrimmed => "warning",
            _ => "status",
        }
    }
}

impl Serialize for Code {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// One status event: `{"code","level","stream","time","description"}` plus fields of its own.
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    pub code: Code,
    pub level: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stream: Option<String>,
    /// RFC 3339 wall clock of the event.
    pub time: String,
    pub description: String,
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

impl Event {
    /// A new event at the current time.
    pub fn new(code: Code, stream: Option<&str>, description: impl Into<String>) -> Event {
        Event {
            code,
            level: code.level(),
            stream: stream.map(str::to_owned),
            time: crate::time::format_rfc3339(crate::time::now_ms()),
            description: description.into(),
            extra: serde_json::Map::new(),
        }
    }

    /// Adds a field of the event's own (e.g. `upstream`, `from`, `to`).
    pub fn with(mut self, key: &str, value: impl Into<serde_json::Value>) -> Event {
        self.extra.insert(key.to_owned(), value.into());
        self
    }
}

/// How many events a slow SSE subscriber may fall behind before it skips ahead: bounds memory
/// per subscriber; a lagging subscriber loses old events, never blocks the publisher.
const BUS_CAPACITY: usize = 256;

/// The per-node event bus. Cloning shares it. Sending never blocks.
#[derive(Debug, Clone)]
pub struct Bus {
    tx: tokio::sync::broadcast::Sender<std::sync::Arc<Event>>,
}

impl Default for Bus {
    fn default() -> Self {
        Bus {
            tx: tokio::sync::broadcast::channel(BUS_CAPACITY).0,
        }
    }
}

impl Bus {
    /// Logs the event and delivers it to current subscribers.
    pub fn emit(&self, event: Event) {
        tracing::info!(
            code = event.code.as_str(),
            stream = event.stream.as_deref().unwrap_or(""),
            "{}",
            event.description
        );
        let _ = self.tx.send(std::sync::Arc::new(event));
    }

    /// A receiver of every event emitted from now on.
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<std::sync::Arc<Event>> {
        self.tx.subscribe()
    }
}
