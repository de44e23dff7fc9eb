//! A stream as the read API sees it: recorded here, or relayed from an upstream. Both keep the
//! same [`StreamIndex`]; they differ in where segment bytes come from.

use std::sync::Arc;

use crate::relay::Proxy;
use crate::store::Stream;

/// A readable stream.
#[derive(Debug, Clone)]
pub enum Feed {
    Recorded(Arc<Stream>),
    Relayed(Arc<Proxy>),
}

impl Feed {
    /// The stream's index holder.
    pub fn stream(&self) -> &Arc<Stream> {
        match self {
            Feed::Recorded(s) => s,
            Feed::Relayed(p) => &p.stream,
        }
    }

    /// `source` of the status JSON.
    pub fn source_json(&self) -> serde_json::Value {
        match self {
            Feed::Recorded(_) => serde_json::json!({"kind": "ingest"}),
            Feed::Relayed(p) => p.source_json(),
        }
    }
}
