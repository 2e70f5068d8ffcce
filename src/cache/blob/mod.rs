//! Blob cache: blobs are content-addressed, so a verified copy never goes stale.
//!
//! - Memory tier for small blobs (`cache.blobs.max_blob_bytes`, default 1 MiB), whole,
//!   byte-bounded ([`memory`]); optional disk tier for larger ones ([`disk`]).
//! - Bytes are shared by digest, but a blob is served for a repository only when a
//!   [`links`] record says the upstream confirmed that repository holds it (a 200 to a
//!   GET or HEAD there, or a manifest there that lists it). Anything else goes upstream.
//! - A miss streams to its client while it fills ([`fill`]): hashed on the way, kept only
//!   when complete and verified. Concurrent misses for one blob wait for that fill
//!   ([`inflight`]) instead of each going upstream.
//! - Hits answer `GET`, `HEAD` and single-range `Range` requests ([`range`]) with the
//!   upstream's own head ([`head`]).
//!
//! Authorization runs before any call into this module, as for manifests.

pub mod config;
pub mod disk;
pub mod fill;
pub(crate) mod front;
pub mod head;
pub mod inflight;
pub mod links;
pub mod memory;
pub mod range;
pub mod stats;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

pub use config::{BlobCacheConfig, BlobConfigError, DiskConfig};
pub use disk::DiskBlob;
pub use fill::{Fill, FillError};
pub use head::{BlobHead, HeadError};
pub use inflight::{Lead, LeadGuard};
pub use memory::MemBlob;
pub use range::RangeAnswer;
pub use stats::BlobStats;

use crate::oci::Digest;
use disk::DiskTier;
use inflight::Inflight;
use links::Links;
use memory::MemoryTier;
use stats::Counters;

/// A blob found in a tier.
#[derive(Debug)]
pub enum Cached {
    Memory(Arc<MemBlob>),
    Disk(DiskBlob),
}

impl Cached {
    pub fn head(&self) -> &BlobHead {
        match self {
            Self::Memory(m) => &m.head,
            Self::Disk(d) => &d.head,
        }
    }

    /// Which tier answered, for the access log and `X-Margo-Cache-Tier`.
    pub fn tier(&self) -> crate::cache::CacheResult {
        match self {
            Self::Memory(_) => crate::cache::CacheResult::BlobMemory,
            Self::Disk(_) => crate::cache::CacheResult::BlobDisk,
        }
    }
}

/// The blob cache. Share it behind an `Arc`.
pub struct BlobCache {
    memory: Option<MemoryTier>,
    disk: Option<Arc<DiskTier>>,
    links: Links,
    inflight: Arc<Inflight>,
    counters: Arc<Counters>,
    max_blob_bytes: u64,
    /// Tells this cache's per-thread front entries from other caches' (tests).
    id: u64,
}

/// Source of [`BlobCache`] ids.
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// Why the blob cache could not start.
#[derive(Debug, thiserror::Error)]
pub enum BlobCacheError {
    #[error(transparent)]
    Config(#[from] BlobConfigError),
    #[error("cache.blobs.disk.dir {dir}: {source}")]
    Disk { dir: String, source: std::io::Error },
}

impl BlobCache {
    /// `Ok(None)` when no tier is configured.
    pub fn from_config(cfg: &BlobCacheConfig) -> Result<Option<Self>, BlobCacheError> {
        cfg.validate()?;
        if !cfg.any_tier() {
            return Ok(None);
        }
        let counters = Arc::new(Counters::default());
        let memory = (cfg.memory_max_bytes > 0)
            .then(|| MemoryTier::new(cfg.memory_max_bytes, Arc::clone(&counters)));
        let disk = match &cfg.disk {
            Some(d) => Some(Arc::new(
                DiskTier::open(&d.dir, d.max_bytes, Arc::clone(&counters)).map_err(|e| {
                    BlobCacheError::Disk {
                        dir: d.dir.display().to_string(),
                        source: e,
                    }
                })?,
            )),
            None => None,
        };
        Ok(Some(Self {
            memory,
            disk,
            links: Links::default(),
            inflight: Arc::default(),
            counters,
            max_blob_bytes: cfg.max_blob_bytes,
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
        }))
    }

    /// The link records.
    pub fn links(&self) -> &Links {
        &self.links
    }

    /// The blob `digest` (`algorithm:hex`), from whichever tier holds it. Callers check
    /// the link first: this knows nothing about repositories.
    pub fn get(&self, digest: &str) -> Option<Cached> {
        if let Some(m) = self.memory.as_ref().and_then(|m| m.get(digest)) {
            return Some(Cached::Memory(m));
        }
        self.disk.as_ref()?.get(digest).map(Cached::Disk)
    }

    /// What a front entry filled now is stamped with: take it before checking the link.
    pub(crate) fn front_stamp(&self) -> front::Stamp {
        front::Stamp {
            cache: self.id,
            links_epoch: self.links.epoch(),
        }
    }

    /// The blob `digest` of `repository`, from this worker thread's front: linked and
    /// confirmed in moka within the last second, no link dropped since (see [`front`]).
    /// Counted as a memory-tier hit of `body_bytes(len)`.
    pub(crate) fn front_hit(
        &self,
        upstream: &str,
        repository: &str,
        digest: &Digest,
        body_bytes: impl FnOnce(u64) -> u64,
    ) -> Option<front::Hit> {
        let parts = [digest.algorithm().as_str(), ":", digest.encoded()];
        let hit = front::get(
            upstream,
            repository,
            &parts,
            Instant::now(),
            self.front_stamp(),
        )?;
        self.counters.memory_hits.bump();
        self.counters
            .memory_bytes
            .add(body_bytes(hit.body.len() as u64));
        Some(hit)
    }

    /// Copies a linked memory-tier blob into this thread's front (`stamp` taken before
    /// the link was checked).
    pub(crate) fn front_put(
        &self,
        upstream: &str,
        repository: &str,
        blob: &MemBlob,
        stamp: front::Stamp,
    ) {
        front::put(
            upstream,
            repository,
            &blob.head,
            &blob.body,
            stamp,
            Instant::now(),
        );
    }

    /// Counts a hit of `bytes` body bytes from `cached`'s tier.
    pub fn record_hit(&self, cached: &Cached, bytes: u64) {
        match cached {
            Cached::Memory(_) => {
                self.counters.memory_hits.bump();
                self.counters.memory_bytes.add(bytes);
            }
            Cached::Disk(_) => {
                self.counters.disk_hits.bump();
                self.counters.disk_bytes.add(bytes);
            }
        }
    }

    pub fn record_miss(&self) {
        self.counters.misses.bump();
    }

    pub fn record_coalesced(&self) {
        self.counters.coalesced.bump();
    }

    /// Leads the fill of `digest`, or follows the one in progress.
    pub fn lead(&self, digest: &str) -> Lead {
        self.inflight.lead(digest)
    }

    /// Starts the fill of an upstream `200` for `digest`; `None` (dropping the lead,
    /// which wakes followers) when no tier takes a blob that large.
    pub fn fill(self: &Arc<Self>, lead: LeadGuard, digest: Digest, head: BlobHead) -> Option<Fill> {
        if self.memory.is_some() && head.len <= self.max_blob_bytes {
            return Some(Fill::memory(Arc::clone(self), lead, digest, head));
        }
        let disk = self.disk.as_ref().filter(|d| d.fits(head.len))?;
        match disk.writer(&digest, head.clone()) {
            Ok(w) => Some(Fill::disk(Arc::clone(self), lead, digest, head, w)),
            Err(e) => {
                tracing::warn!(error = %e, "blob cache: cannot start a disk fill");
                None
            }
        }
    }

    fn keep_in_memory(&self, digest: String, blob: MemBlob) {
        if let Some(m) = &self.memory {
            m.insert(digest, blob);
            self.counters.memory_fills.bump();
        }
    }

    /// Counters and sizes for metrics.
    pub fn stats(&self) -> BlobStats {
        let mut s = self.counters.snapshot();
        if let Some(m) = &self.memory {
            (s.memory_entries, s.memory_bytes) = m.size();
        }
        if let Some(d) = &self.disk {
            (s.disk_entries, s.disk_bytes) = d.size();
        }
        s
    }
}

#[cfg(test)]
mod tests;
