//! A blob being filled while it streams to the first client.
//!
//! Each upstream body chunk is hashed and handed to the tier's sink, and goes on to the
//! client one chunk late: the last chunk is released only once the whole body has the
//! right length and digest. So a lying upstream (wrong bytes) or one that cuts the body
//! leaves nothing in the cache, and its client gets a short, broken body, never a
//! complete wrong one.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use sha2::Digest as _;
use tokio::sync::mpsc;

use super::disk::DiskWriter;
use super::head::BlobHead;
use super::inflight::LeadGuard;
use super::memory::MemBlob;
use super::BlobCache;
use crate::oci::digest::Algorithm;
use crate::oci::Digest;

/// Chunks queued for the disk writer; a writer this far behind abandons the fill
/// rather than hold the client back.
const DISK_QUEUE: usize = 256;

/// Why a fill kept nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FillError {
    #[error("upstream sent more than its Content-Length of {0} bytes")]
    TooLong(u64),
    #[error("upstream body ended after {got} of {want} bytes")]
    Short { got: u64, want: u64 },
    #[error("upstream bytes do not match digest {0}")]
    Mismatch(String),
}

enum Hasher {
    Sha256(sha2::Sha256),
    Sha512(sha2::Sha512),
}

impl Hasher {
    fn new(alg: Algorithm) -> Self {
        match alg {
            Algorithm::Sha256 => Self::Sha256(sha2::Sha256::new()),
            Algorithm::Sha512 => Self::Sha512(sha2::Sha512::new()),
        }
    }

    fn update(&mut self, data: &[u8]) {
        match self {
            Self::Sha256(h) => h.update(data),
            Self::Sha512(h) => h.update(data),
        }
    }

    fn hex(self) -> String {
        match self {
            Self::Sha256(h) => hex::encode(h.finalize()),
            Self::Sha512(h) => hex::encode(h.finalize()),
        }
    }
}

pub(super) enum DiskMsg {
    Data(Bytes),
    Commit(LeadGuard),
}

enum Sink {
    Memory(BytesMut),
    /// `None` once the writer fell behind or failed: the body is still verified.
    Disk(Option<mpsc::Sender<DiskMsg>>),
}

/// One fill; see the module doc. Dropped before the end (upstream failure, client
/// gone), it keeps nothing and wakes the requests waiting for it.
pub struct Fill {
    cache: Arc<BlobCache>,
    digest: Digest,
    head: BlobHead,
    hasher: Option<Hasher>,
    received: u64,
    held: Option<Bytes>,
    sink: Sink,
    lead: Option<LeadGuard>,
    done: bool,
}

impl Fill {
    pub(super) fn memory(
        cache: Arc<BlobCache>,
        lead: LeadGuard,
        digest: Digest,
        head: BlobHead,
    ) -> Self {
        let cap = usize::try_from(head.len).unwrap_or(0);
        Self::new(
            cache,
            lead,
            digest,
            head,
            Sink::Memory(BytesMut::with_capacity(cap)),
        )
    }

    /// Starts a disk fill: the writer runs on a blocking thread, fed through a queue.
    pub(super) fn disk(
        cache: Arc<BlobCache>,
        lead: LeadGuard,
        digest: Digest,
        head: BlobHead,
        mut writer: DiskWriter,
    ) -> Self {
        let (tx, mut rx) = mpsc::channel::<DiskMsg>(DISK_QUEUE);
        let counters = Arc::clone(&cache.counters);
        tokio::task::spawn_blocking(move || {
            while let Some(msg) = rx.blocking_recv() {
                match msg {
                    DiskMsg::Data(b) => {
                        if let Err(e) = writer.write(&b) {
                            tracing::warn!(error = %e, "blob cache: disk fill failed");
                            counters.failed_fills.bump();
                            return;
                        }
                    }
                    DiskMsg::Commit(lead) => {
                        match writer.commit() {
                            Ok(()) => counters.disk_fills.bump(),
                            Err(e) => {
                                tracing::warn!(error = %e, "blob cache: disk commit failed");
                                counters.failed_fills.bump();
                            }
                        }
                        // Followers wake only once the blob is visible.
                        drop(lead);
                        return;
                    }
                }
            }
            // Queue closed without a commit: the writer's drop deletes the file.
        });
        Self::new(cache, lead, digest, head, Sink::Disk(Some(tx)))
    }

    fn new(
        cache: Arc<BlobCache>,
        lead: LeadGuard,
        digest: Digest,
        head: BlobHead,
        sink: Sink,
    ) -> Self {
        Self {
            cache,
            hasher: Some(Hasher::new(digest.algorithm())),
            digest,
            head,
            received: 0,
            held: None,
            sink,
            lead: Some(lead),
            done: false,
        }
    }

    /// Tees one chunk of the upstream body. Replaces `body` with what may go to the
    /// client now. An error means the body is not the blob: send nothing more.
    pub fn on_body(&mut self, body: &mut Option<Bytes>, end: bool) -> Result<(), FillError> {
        if let Some(chunk) = body.take() {
            self.received += chunk.len() as u64;
            if self.received > self.head.len {
                self.done = true;
                return Err(FillError::TooLong(self.head.len));
            }
            if let Some(h) = self.hasher.as_mut() {
                h.update(&chunk);
            }
            match &mut self.sink {
                Sink::Memory(buf) => buf.extend_from_slice(&chunk),
                Sink::Disk(tx) => {
                    if let Some(sender) = tx.as_ref() {
                        if sender.try_send(DiskMsg::Data(chunk.clone())).is_err() {
                            tracing::debug!(digest = %self.digest, "blob cache: disk writer behind, fill abandoned");
                            *tx = None;
                        }
                    }
                }
            }
            *body = self.held.replace(chunk);
        }
        if !end {
            return Ok(());
        }
        self.done = true;
        if self.received != self.head.len {
            return Err(FillError::Short {
                got: self.received,
                want: self.head.len,
            });
        }
        let hex = self.hasher.take().map(Hasher::hex).unwrap_or_default();
        if hex != self.digest.encoded() {
            return Err(FillError::Mismatch(self.digest.to_string()));
        }
        // Verified: release the held chunk together with whatever is still pending.
        *body = match (body.take(), self.held.take()) {
            (Some(prev), Some(last)) => {
                let mut both = BytesMut::with_capacity(prev.len() + last.len());
                both.extend_from_slice(&prev);
                both.extend_from_slice(&last);
                Some(both.freeze())
            }
            (a, b) => a.or(b),
        };
        self.commit();
        Ok(())
    }

    fn commit(&mut self) {
        let lead = self.lead.take();
        match std::mem::replace(&mut self.sink, Sink::Disk(None)) {
            Sink::Memory(buf) => {
                self.cache.keep_in_memory(
                    self.digest.to_string(),
                    MemBlob {
                        head: self.head.clone(),
                        body: buf.freeze(),
                    },
                );
                drop(lead);
            }
            Sink::Disk(Some(tx)) => {
                if let Some(lead) = lead {
                    // The writer commits, then drops the lead (waking followers).
                    if tx.try_send(DiskMsg::Commit(lead)).is_err() {
                        self.cache.counters.failed_fills.bump();
                    }
                }
            }
            Sink::Disk(None) => self.cache.counters.failed_fills.bump(),
        }
    }
}

impl Drop for Fill {
    fn drop(&mut self) {
        let failed = !self.done || self.lead.is_some();
        if failed {
            self.cache.counters.failed_fills.bump();
        }
    }
}
