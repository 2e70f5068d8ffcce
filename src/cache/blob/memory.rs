//! The memory tier: small blobs, whole, in a byte-bounded moka cache.

use std::sync::Arc;

use bytes::Bytes;
use moka::notification::RemovalCause;
use moka::sync::Cache;

use super::head::BlobHead;
use super::stats::Counters;

/// Bookkeeping bytes per entry on top of the blob (key, head, moka's node).
const ENTRY_OVERHEAD: usize = 256;

/// A blob held in memory, verified against its digest before it was kept.
#[derive(Debug)]
pub struct MemBlob {
    pub head: BlobHead,
    pub body: Bytes,
}

pub struct MemoryTier {
    inner: Cache<String, Arc<MemBlob>, ahash::RandomState>,
}

impl MemoryTier {
    pub fn new(max_bytes: u64, counters: Arc<Counters>) -> Self {
        let inner = Cache::builder()
            .max_capacity(max_bytes)
            .weigher(|k: &String, v: &Arc<MemBlob>| {
                u32::try_from(ENTRY_OVERHEAD + k.len() + v.body.len()).unwrap_or(u32::MAX)
            })
            .eviction_listener(move |_k, _v, cause| {
                if cause == RemovalCause::Size {
                    counters.memory_evictions.bump();
                }
            })
            .build_with_hasher(ahash::RandomState::new());
        Self { inner }
    }

    pub fn get(&self, digest: &str) -> Option<Arc<MemBlob>> {
        self.inner.get(digest)
    }

    pub fn insert(&self, digest: String, blob: MemBlob) {
        self.inner.insert(digest, Arc::new(blob));
    }

    /// (entries, bytes) after moka's pending maintenance.
    pub fn size(&self) -> (u64, u64) {
        self.inner.run_pending_tasks();
        (self.inner.entry_count(), self.inner.weighted_size())
    }
}
