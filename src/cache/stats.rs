//! Counters the cache keeps for the metrics module.
//!
//! Plain atomics owned by the cache, so the cache does not depend on how they
//! are exported; `crate::metrics::Metrics::sync_cache` copies a snapshot into
//! Prometheus at scrape time.

use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug, Default)]
pub(crate) struct Counters {
    /// Bumped by every hit, from every worker thread: sharded.
    pub(crate) hits: crate::shard::Counter,
    pub(crate) misses: AtomicU64,
    pub(crate) coalesced: AtomicU64,
    pub(crate) negative_hits: AtomicU64,
    pub(crate) revalidations: AtomicU64,
    pub(crate) stale_serves: AtomicU64,
    pub(crate) rejections: AtomicU64,
    pub(crate) uncacheable: AtomicU64,
    pub(crate) evictions: AtomicU64,
    pub(crate) expirations: AtomicU64,
}

pub(crate) fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// A point-in-time copy of the cache's counters. Counters only grow.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Answered from memory (fresh tag, cached manifest).
    pub hits: u64,
    /// Went upstream and got an answer (fetcher or tag probe ran).
    pub misses: u64,
    /// Waited for another caller's in-flight fetch instead of going upstream.
    pub coalesced: u64,
    /// Answered 404 from a negative entry.
    pub negative_hits: u64,
    /// Stale tag confirmed or updated by a HEAD upstream.
    pub revalidations: u64,
    /// Stale tag served because the upstream was unreachable.
    pub stale_serves: u64,
    /// Upstream bodies refused (digest mismatch, no content type).
    pub rejections: u64,
    /// Valid answers served but not kept (too large, unknown algorithm, raced
    /// with an invalidation).
    pub uncacheable: u64,
    /// Entries removed to stay under `max_bytes`.
    pub evictions: u64,
    /// Tag and negative entries removed at the end of their lifetime.
    pub expirations: u64,
    /// Entries currently held (approximate between maintenance runs).
    pub entries: u64,
    /// Weighted bytes currently held (approximate between maintenance runs).
    pub weighted_bytes: u64,
}

impl Counters {
    pub(crate) fn snapshot(&self, entries: u64, weighted_bytes: u64) -> CacheStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        CacheStats {
            hits: self.hits.get(),
            misses: get(&self.misses),
            coalesced: get(&self.coalesced),
            negative_hits: get(&self.negative_hits),
            revalidations: get(&self.revalidations),
            stale_serves: get(&self.stale_serves),
            rejections: get(&self.rejections),
            uncacheable: get(&self.uncacheable),
            evictions: get(&self.evictions),
            expirations: get(&self.expirations),
            entries,
            weighted_bytes,
        }
    }
}
