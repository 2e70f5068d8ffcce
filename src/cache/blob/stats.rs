//! Counters the blob cache keeps; the metrics module copies a snapshot at scrape time.

use crate::shard::Counter;

/// Hits and bytes are bumped by every hit from every worker thread: sharded.
#[derive(Debug, Default)]
pub struct Counters {
    pub memory_hits: Counter,
    pub disk_hits: Counter,
    pub memory_bytes: Counter,
    pub disk_bytes: Counter,
    /// Lookups that found no usable blob (not cached, or cached without a link).
    pub misses: Counter,
    /// Misses that waited for another request's fill instead of going upstream.
    pub coalesced: Counter,
    pub memory_fills: Counter,
    pub disk_fills: Counter,
    /// Fills that kept nothing: wrong bytes, short or long bodies, upstream failures.
    pub failed_fills: Counter,
    pub memory_evictions: Counter,
    pub disk_evictions: Counter,
}

/// A point-in-time copy; counters only grow.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BlobStats {
    pub memory_hits: u64,
    pub disk_hits: u64,
    pub memory_bytes_served: u64,
    pub disk_bytes_served: u64,
    pub misses: u64,
    pub coalesced: u64,
    pub memory_fills: u64,
    pub disk_fills: u64,
    pub failed_fills: u64,
    pub memory_evictions: u64,
    pub disk_evictions: u64,
    pub memory_entries: u64,
    pub memory_bytes: u64,
    pub disk_entries: u64,
    pub disk_bytes: u64,
}

impl Counters {
    pub fn snapshot(&self) -> BlobStats {
        BlobStats {
            memory_hits: self.memory_hits.get(),
            disk_hits: self.disk_hits.get(),
            memory_bytes_served: self.memory_bytes.get(),
            disk_bytes_served: self.disk_bytes.get(),
            misses: self.misses.get(),
            coalesced: self.coalesced.get(),
            memory_fills: self.memory_fills.get(),
            disk_fills: self.disk_fills.get(),
            failed_fills: self.failed_fills.get(),
            memory_evictions: self.memory_evictions.get(),
            disk_evictions: self.disk_evictions.get(),
            ..BlobStats::default()
        }
    }
}
