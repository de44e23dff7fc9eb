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
            Code::ProxyFailover => "warning",
            _ => "status",
        }
    }
}

impl Serialize for Code {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}
