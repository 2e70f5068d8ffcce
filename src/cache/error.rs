//! Error types of the cache module.

use std::sync::Arc;

use thiserror::Error;

use super::entry::CachedManifest;

/// A `cache:` section that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ConfigError {
    /// Nothing could ever be cached.
    #[error("cache.max_manifest_bytes must be greater than 0")]
    ZeroMaxManifestBytes,
    /// The weigher works in `u32`; bigger entries cannot be weighed.
    #[error("cache.max_manifest_bytes {value} exceeds the limit of {limit} bytes")]
    MaxManifestBytesTooLarge {
        /// Configured value.
        value: u64,
        /// Largest accepted value.
        limit: u64,
    },
    /// `cache.blobs` cannot work.
    #[error(transparent)]
    Blobs(#[from] super::blob::BlobConfigError),
    /// A cache that cannot hold even one maximal manifest is a misconfiguration.
    #[error("cache.max_bytes ({max_bytes}) is smaller than cache.max_manifest_bytes ({max_manifest_bytes})")]
    CapacityBelowManifestLimit {
        /// Configured capacity.
        max_bytes: u64,
        /// Configured per-manifest limit.
        max_manifest_bytes: u64,
    },
}

/// Why a digest string or a body failed verification: the crate's one digest error.
pub use crate::oci::DigestError;

/// Why an upstream answer could not become a [`CachedManifest`].
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ManifestError {
    /// See [`DigestError`].
    #[error(transparent)]
    Digest(#[from] DigestError),
    /// Without a content type the Accept negotiation cannot be done.
    #[error("upstream manifest response has no usable Content-Type")]
    MissingContentType,
}

/// Why a verified manifest is served but not kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UncacheableReason {
    /// Larger than `max_manifest_bytes`.
    TooLarge,
    /// The digest algorithm is not one we can verify (see [`DigestError::UnsupportedAlgorithm`]).
    UnsupportedAlgorithm,
    /// A push or delete for this repository happened while the fetch was in
    /// flight, so the answer may already be outdated; serving it once is fine,
    /// keeping it is not.
    InvalidatedDuringFetch,
}

/// Result of a coalesced fetch that did not produce a cached manifest.
///
/// `Clone` because moka hands the same error to every coalesced waiter; the
/// caller's own error is therefore shared behind an `Arc`.
#[derive(Debug, Error)]
pub enum FetchError<E> {
    /// The fetcher failed (connection error, unexpected status...).
    #[error("upstream fetch failed: {0}")]
    Upstream(Arc<E>),
    /// The manifest does not exist (upstream 404, or a cached negative answer).
    #[error("manifest not found upstream")]
    NotFound {
        /// True when answered from a negative cache entry.
        cached: bool,
    },
    /// The upstream's body does not match the requested digest (or lacks a
    /// content type); it was not cached and must not be served.
    #[error("refusing upstream manifest: {0}")]
    Invalid(ManifestError),
    /// The manifest is fine to serve once but was not cached; the caller answers
    /// with it as if it were a miss.
    #[error("manifest served uncached ({reason:?})")]
    Uncacheable {
        /// Why it was not cached.
        reason: UncacheableReason,
        /// The answer to serve.
        manifest: Arc<CachedManifest>,
    },
}

impl<E> Clone for FetchError<E> {
    fn clone(&self) -> Self {
        match self {
            Self::Upstream(e) => Self::Upstream(Arc::clone(e)),
            Self::NotFound { cached } => Self::NotFound { cached: *cached },
            Self::Invalid(e) => Self::Invalid(e.clone()),
            Self::Uncacheable { reason, manifest } => Self::Uncacheable {
                reason: *reason,
                manifest: Arc::clone(manifest),
            },
        }
    }
}

/// Result of a coalesced tag resolution that produced no digest.
#[derive(Debug, Error)]
pub enum ResolveError<E> {
    /// The tag does not exist upstream (or a cached negative answer says so).
    #[error("tag not found upstream")]
    NotFound {
        /// True when answered from a negative cache entry.
        cached: bool,
    },
    /// The probe failed and no stale mapping within the grace period exists.
    #[error("upstream tag probe failed: {0}")]
    Upstream(E),
}
