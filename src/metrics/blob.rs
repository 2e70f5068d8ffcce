//! Blob cache families: hits, misses and bytes per tier, fills, evictions, sizes.
//! Copied from the cache's own counters at scrape time, like the manifest cache's.

use prometheus::{IntCounterVec, IntGaugeVec};

use super::{Builder, MetricsError};
use crate::cache::blob::BlobStats;

pub(super) struct BlobMetrics {
    hits: IntCounterVec,
    served_bytes: IntCounterVec,
    misses: IntCounterVec,
    fills: IntCounterVec,
    evictions: IntCounterVec,
    entries: IntGaugeVec,
    bytes: IntGaugeVec,
}

const TIERS: [&str; 2] = ["memory", "disk"];

impl BlobMetrics {
    pub(super) fn new(b: &mut Builder) -> Result<Self, MetricsError> {
        let m = Self {
            hits: b.counter(
                "blob_cache_hits_total",
                "Blob GET/HEAD answered from the blob cache, by tier.",
                &["tier"],
            )?,
            served_bytes: b.counter(
                "blob_cache_served_bytes_total",
                "Blob body bytes answered from the blob cache, by tier.",
                &["tier"],
            )?,
            misses: b.counter(
                "blob_cache_misses_total",
                "Blob requests the cache could not answer: upstream (went upstream) or coalesced (waited for another request's fill first).",
                &["result"],
            )?,
            fills: b.counter(
                "blob_cache_fills_total",
                "Blobs kept after a verified fill (tier memory or disk), or fills that kept nothing (tier none: wrong bytes, cut bodies, slow disk).",
                &["tier"],
            )?,
            evictions: b.counter(
                "blob_cache_evictions_total",
                "Blobs removed to stay within a tier's byte budget.",
                &["tier"],
            )?,
            entries: b.gauge_vec("blob_cache_entries", "Blobs held, by tier.", &["tier"])?,
            bytes: b.gauge_vec(
                "blob_cache_bytes",
                "Bytes held by the blob cache, by tier (memory as weighed, disk as files).",
                &["tier"],
            )?,
        };
        for t in TIERS {
            for f in [&m.hits, &m.served_bytes, &m.fills, &m.evictions] {
                f.with_label_values(&[t]);
            }
            m.entries.with_label_values(&[t]);
            m.bytes.with_label_values(&[t]);
        }
        m.fills.with_label_values(&["none"]);
        m.misses.with_label_values(&["upstream"]);
        m.misses.with_label_values(&["coalesced"]);
        Ok(m)
    }

    pub(super) fn sync(&self, s: &BlobStats) {
        let advance = |c: &IntCounterVec, label: &str, total: u64| {
            let c = c.with_label_values(&[label]);
            c.inc_by(total.saturating_sub(c.get()));
        };
        let gauge = |g: &IntGaugeVec, label: &str, v: u64| {
            g.with_label_values(&[label])
                .set(i64::try_from(v).unwrap_or(i64::MAX));
        };
        advance(&self.hits, "memory", s.memory_hits);
        advance(&self.hits, "disk", s.disk_hits);
        advance(&self.served_bytes, "memory", s.memory_bytes_served);
        advance(&self.served_bytes, "disk", s.disk_bytes_served);
        advance(&self.misses, "upstream", s.misses);
        advance(&self.misses, "coalesced", s.coalesced);
        advance(&self.fills, "memory", s.memory_fills);
        advance(&self.fills, "disk", s.disk_fills);
        advance(&self.fills, "none", s.failed_fills);
        advance(&self.evictions, "memory", s.memory_evictions);
        advance(&self.evictions, "disk", s.disk_evictions);
        gauge(&self.entries, "memory", s.memory_entries);
        gauge(&self.entries, "disk", s.disk_entries);
        gauge(&self.bytes, "memory", s.memory_bytes);
        gauge(&self.bytes, "disk", s.disk_bytes);
    }
}
