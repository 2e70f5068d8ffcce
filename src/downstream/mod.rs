//! Client connections on the registry listeners, below the HTTP logic: request heads
//! bounded in time and size before Pingora parses them, pipelined requests answered in
//! order, request framing that could smuggle a second request refused, and the
//! shutdown drain that lets in-flight requests finish.

mod app;
pub mod drain;
pub mod framing;
pub mod guard;
pub mod head;

pub use app::DownstreamApp;
