//! The OCI 1.1 referrers API on every upstream: passed through where the upstream has
//! it, emulated from the referrers tag schema where it has not, with the index kept
//! current for referrers pushed and deleted through the proxy.
//!
//! - [`index`]: the index document (pure logic);
//! - [`service`]: probing upstreams, listing, read-modify-write of emulated indexes;
//! - [`io`]: the registry calls it makes.

pub mod index;
pub mod io;
pub mod service;

pub use index::{fallback_tag, is_fallback_tag, pushed_referrer, ReferrerDescriptor};
pub use io::{IoAuth, RegistryIo, UpstreamIo};
pub use service::{Listing, ReferrerService, ReferrersError, Support};
