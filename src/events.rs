//! Status events: the onStatus codes of SPEC.md and a per-node event bus.
//!
//! Invariant: every status object a client sees (SSE, RTMP onStatus, JSON error bodies that carry
//! a status code) takes its `code` string from [`Code::as_str`], the single place they are spelled.

use serde::Serialize;

/// Declares [`Code`]: each code once, with its wire spelling and its onStatus `level`.
macro_rules! codes {
    ($($(#[$doc:meta])* $name:ident = $wire:literal, $level:literal;)*) => {
        /// A status code of SPEC.md ("Status events", and the `code` of HTTP error bodies and
        /// RTMP replies).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Code {
            $($(#[$doc])* $name,)*
        }

        impl Code {
            /// Every code.
            pub const ALL: &'static [Code] = &[$(Code::$name),*];

            /// The wire spelling, e.g. `"NetStream.Publish.Start"`.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Code::$name => $wire,)*
                }
            }

            /// `"status"` for normal transitions, `"warning"` for trouble that was handled,
            /// `"error"` for failures (the onStatus `level`).
            pub fn level(self) -> &'static str {
                match self {
                    $(Code::$name => $level,)*
                }
            }
        }
    };
}

codes! {
    PublishStart = "NetStream.Publish.Start", "status";
    PublishBadName = "NetStream.Publish.BadName", "error";
    UnpublishSuccess = "NetStream.Unpublish.Success", "status";
    RecordStart = "NetStream.Record.Start", "status";
    RecordStop = "NetStream.Record.Stop", "status";
    RecordNoAccess = "NetStream.Record.NoAccess", "error";
    /// Segments deleted to keep `record.min_free`.
    RecordTrimmed = "NetStream.Record.Trimmed", "warning";
    ProxyStart = "ProxyStream.Proxy.Start", "status";
    ProxyStop = "ProxyStream.Proxy.Stop", "status";
    ProxyBadName = "ProxyStream.Proxy.BadName", "error";
    ProxyNotResponding = "NetConnection.Proxy.NotResponding", "error";
    ProxyFailover = "ProxyStream.Proxy.Failover", "warning";
    SeekNotify = "NetStream.Seek.Notify", "status";
    SeekInvalidTime = "NetStream.Seek.InvalidTime", "error";
    ConnectRejected = "NetConnection.Connect.Rejected", "error";
    /// RTMP `connect` accepted.
    ConnectSuccess = "NetConnection.Connect.Success", "status";
    /// RTMP command this server does not answer otherwise.
    CallFailed = "NetConnection.Call.Failed", "error";
    /// HTTP: the stream name is not valid.
    PlayBadName = "NetStream.Play.BadName", "error";
    /// HTTP: no such stream.
    PlayStreamNotFound = "NetStream.Play.StreamNotFound", "error";
    /// HTTP: no such resource of a stream.
    PlayNotFound = "NetStream.Play.NotFound", "error";
    /// HTTP: no such segment (yet).
    PlaySegmentNotFound = "NetStream.Play.SegmentNotFound", "error";
    /// HTTP: a malformed request.
    PlayBadRequest = "NetStream.Play.BadRequest", "error";
    PlayRangeNotSatisfiable = "NetStream.Play.RangeNotSatisfiable", "error";
    PlayMethodNotAllowed = "NetStream.Play.MethodNotAllowed", "error";
    /// HTTP: an internal error (details are logged, not sent).
    PlayFailed = "NetStream.Play.Failed", "error";
    ArchiveTakeover = "ProxyStream.Archive.Takeover", "warning";
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_distinct_and_well_formed() {
        let mut seen = std::collections::HashSet::new();
        for &c in Code::ALL {
            let s = c.as_str();
            assert!(seen.insert(s), "{s} twice");
            let parts: Vec<&str> = s.split('.').collect();
            assert_eq!(parts.len(), 3, "{s}");
            assert!(
                parts
                    .iter()
                    .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_alphabetic())),
                "{s}"
            );
            assert!(["status", "warning", "error"].contains(&c.level()), "{s}");
            assert_eq!(serde_json::to_value(c).ok(), Some(s.into()));
        }
    }
}
