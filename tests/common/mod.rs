//! Test harness, one helper per job: nodes on ephemeral loopback ports (in-process, or the
//! real `dvrgate` binary where a test needs a process), an RTMP test publisher (rml_rtmp's
//! client session, an implementation independent of ours), FLV fixture reading, HTTP and
//! stream helpers, MP4 checks with mp4-atom, external tools, and a faulty fake upstream.
//! Every wait is bounded.
#![allow(dead_code)]

mod client;
pub mod fake_upstream;
mod mp4;
mod node;
mod rtmp;
pub mod s3;
mod slow_proxy;
mod streams;
mod tls;
mod tools;

#[allow(unused_imports)]
pub use client::*;
#[allow(unused_imports)]
pub use mp4::*;
#[allow(unused_imports)]
pub use node::*;
#[allow(unused_imports)]
pub use rtmp::*;
#[allow(unused_imports)]
pub use s3::*;
#[allow(unused_imports)]
pub use slow_proxy::*;
#[allow(unused_imports)]
pub use streams::*;
#[allow(unused_imports)]
pub use tls::*;
#[allow(unused_imports)]
pub use tools::*;
