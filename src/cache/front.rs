//! Per-thread front for cache hits: the hot path of a polling fleet.
//!
//! A manifest found by digest, or through a fresh tag mapping that carries it, is
//! copied into a small map owned by the worker thread, keyed by the reference
//! the client used (tags cannot contain `:`, digests always do, so the two never
//! collide). A hit there skips moka's lookup and read recording, and
//! touches no memory another core writes: the manifest's body and header values
//! are this thread's own copies, so the reference counts an answer bumps stay in
//! this core's cache. On two cores, those shared counters and moka's bookkeeping
//! cost a cache hit more than its own logic did.
//!
//! A front entry is served only while all of these hold, else the caller takes
//! the normal path through moka (which refills the front):
//! - it was filled by this very cache (tests build many caches in one process);
//! - the invalidation epoch of its repository's stripe is the one it was filled
//!   under: pushes and deletes bump it before and after removing moka entries;
//! - for a tag, the mapping is within its TTL (`fresh_until`, from the moka
//!   entry; manifests by digest are immutable);
//! - it was confirmed in moka less than [`CONFIRM_EVERY`] ago. This bounds how
//!   long a front entry can outlive a moka entry removed by any other path, and
//!   keeps moka's recency and frequency view of hot entries current.
//!
//! Memory: at most [`MAX_ENTRIES`] entries and [`MAX_BYTES`] of manifest bodies
//! per worker thread, outside the cache's `max_bytes` budget. A full front admits
//! nothing new until a sweep (at most every [`SWEEP_EVERY`]) has dropped entries
//! no longer servable; so with more hot manifests than fit, the front keeps the
//! ones it has and the rest are served from moka as without a front, instead of
//! every request copying a manifest in and another out.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::entry::CachedManifest;
use super::FetchTicket;

/// How long a front entry is served without looking at moka again.
pub(crate) const CONFIRM_EVERY: Duration = Duration::from_secs(1);
/// Entries per thread.
pub(crate) const MAX_ENTRIES: usize = 256;
/// Manifest bytes per thread.
pub(crate) const MAX_BYTES: usize = 4 << 20;
/// Larger manifests are not copied into the front.
pub(crate) const MAX_MANIFEST: usize = 256 << 10;
/// How often a full front looks for entries it can drop.
pub(crate) const SWEEP_EVERY: Duration = Duration::from_millis(250);

/// Which cache an entry was filled by, and the invalidation ticket of its
/// repository taken before the fill (the same ticket upstream fetches take).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stamp {
    pub(crate) cache: u64,
    pub(crate) ticket: FetchTicket,
}

/// A servable front entry.
pub(crate) struct Hit {
    pub(crate) manifest: Arc<CachedManifest>,
    /// Found through a tag mapping (else by digest).
    pub(crate) by_tag: bool,
}

struct Entry {
    manifest: Arc<CachedManifest>,
    stamp: Stamp,
    /// `None` for a manifest by digest.
    fresh_until: Option<Instant>,
    confirmed: Instant,
}

#[derive(Default)]
struct Front {
    /// Reused to build lookup keys without allocating.
    key: String,
    map: HashMap<Box<str>, Entry, ahash::RandomState>,
    bytes: usize,
    last_sweep: Option<Instant>,
}

impl Front {
    /// Whether `size` more bytes fit, after dropping unservable entries if full
    /// and a sweep is due.
    fn room_for(&mut self, size: usize, now: Instant) -> bool {
        let fits = |f: &Self| f.map.len() < MAX_ENTRIES && f.bytes + size <= MAX_BYTES;
        if fits(self) {
            return true;
        }
        let due = self
            .last_sweep
            .is_none_or(|t| now.saturating_duration_since(t) >= SWEEP_EVERY);
        if !due {
            return false;
        }
        self.last_sweep = Some(now);
        let mut freed = 0;
        self.map.retain(|_, e| {
            let keep = now.saturating_duration_since(e.confirmed) < CONFIRM_EVERY
                && e.fresh_until.is_none_or(|until| now < until);
            if !keep {
                freed += e.manifest.body().len();
            }
            keep
        });
        self.bytes = self.bytes.saturating_sub(freed);
        fits(self)
    }

    fn set_key(&mut self, upstream: &str, repository: &str, reference: &[&str]) {
        self.key.clear();
        // NUL cannot occur in upstream names, repository names, tags or digests.
        for part in [upstream, "\0", repository, "\0"].iter().chain(reference) {
            self.key.push_str(part);
        }
    }
}

thread_local! {
    static FRONT: RefCell<Front> = RefCell::new(Front::default());
}

/// The manifest a reference (a tag, or a digest in parts that concatenate to it)
/// names, if this thread's front holds a servable entry. `current` says whether a
/// stamp's epoch is still the cache's.
pub(crate) fn get(
    cache: u64,
    upstream: &str,
    repository: &str,
    reference: &[&str],
    now: Instant,
    current: impl Fn(&Stamp) -> bool,
) -> Option<Hit> {
    FRONT.with(|front| {
        let mut front = front.try_borrow_mut().ok()?;
        front.set_key(upstream, repository, reference);
        let front = &mut *front;
        let entry = front.map.get(front.key.as_str())?;
        let servable = entry.stamp.cache == cache
            && entry.fresh_until.is_none_or(|until| now < until)
            && now.saturating_duration_since(entry.confirmed) < CONFIRM_EVERY
            && current(&entry.stamp);
        if servable {
            return Some(Hit {
                manifest: Arc::clone(&entry.manifest),
                by_tag: entry.fresh_until.is_some(),
            });
        }
        if let Some(gone) = front.map.remove(front.key.as_str()) {
            front.bytes = front.bytes.saturating_sub(gone.manifest.body().len());
        }
        None
    })
}

/// Copies a manifest into this thread's front, under the reference that found it
/// (`fresh_until`: the tag mapping's TTL end; `None` for a digest).
pub(crate) fn put(
    upstream: &str,
    repository: &str,
    reference: &str,
    manifest: &CachedManifest,
    stamp: Stamp,
    fresh_until: Option<Instant>,
    now: Instant,
) {
    let size = manifest.body().len();
    if size > MAX_MANIFEST {
        return;
    }
    FRONT.with(|front| {
        let Ok(mut front) = front.try_borrow_mut() else {
            return;
        };
        front.set_key(upstream, repository, &[reference]);
        let front = &mut *front;
        if let Some(old) = front.map.remove(front.key.as_str()) {
            front.bytes = front.bytes.saturating_sub(old.manifest.body().len());
        }
        if !front.room_for(size, now) {
            return;
        }
        front.bytes += size;
        front.map.insert(
            front.key.as_str().into(),
            Entry {
                manifest: Arc::new(manifest.thread_copy()),
                stamp,
                fresh_until,
                confirmed: now,
            },
        );
    });
}

/// Entries and manifest bytes in this thread's front (for tests).
#[cfg(test)]
pub(crate) fn usage() -> (usize, usize) {
    FRONT.with(|f| {
        let f = f.borrow();
        (f.map.len(), f.bytes)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::accept::OCI_MANIFEST;
    use crate::oci::digest::sha256_digest;
    use bytes::Bytes;
    use http::{header::CONTENT_TYPE, HeaderMap, HeaderValue};

    fn manifest(body: Vec<u8>) -> CachedManifest {
        let body = Bytes::from(body);
        let mut h = HeaderMap::new();
        h.insert(CONTENT_TYPE, HeaderValue::from_static(OCI_MANIFEST));
        CachedManifest::from_upstream(&sha256_digest(&body), body, &h).expect("valid")
    }

    const STAMP: Stamp = Stamp {
        cache: 7,
        ticket: FetchTicket {
            stripe: 3,
            epoch: 1,
        },
    };

    fn fill(tag: &str, m: &CachedManifest, now: Instant) {
        let until = Some(now + Duration::from_secs(30));
        put("up", "repo", tag, m, STAMP, until, now);
    }

    fn get(
        cache: u64,
        repo: &str,
        tag: &str,
        at: Instant,
        current: bool,
    ) -> Option<Arc<CachedManifest>> {
        super::get(cache, "up", repo, &[tag], at, |_| current).map(|h| h.manifest)
    }

    // Each #[test] runs on its own thread, so each starts with an empty front.

    #[test]
    fn serves_a_private_copy_while_every_check_holds() {
        let now = Instant::now();
        let m = manifest(b"{\"a\":1}".to_vec());
        fill("v1", &m, now);
        let got = get(7, "repo", "v1", now, true).expect("front hit");
        assert_eq!(got.body(), m.body());
        assert_eq!(got.digest(), m.digest());
        assert_eq!(got.headers(), m.headers());
        assert_ne!(
            got.body().as_ptr(),
            m.body().as_ptr(),
            "the front holds this thread's own copy"
        );
        assert!(get(7, "repo", "v2", now, true).is_none());
        assert!(get(7, "other", "v1", now, true).is_none());
    }

    #[test]
    fn digests_are_found_by_their_parts_and_never_expire_by_time() {
        let now = Instant::now();
        let m = manifest(b"{}".to_vec());
        let (algorithm, encoded) = m.digest().split_once(':').expect("digest");
        put("up", "repo", m.digest(), &m, STAMP, None, now);
        let later = now + Duration::from_secs(3600);
        let at = |t| super::get(7, "up", "repo", &[algorithm, ":", encoded], t, |_| true);
        assert!(at(now).is_some_and(|h| !h.by_tag));
        assert!(at(later).is_none(), "still confirmed in moka every second");
    }

    #[test]
    fn refuses_other_caches_moved_epochs_expired_and_unconfirmed_entries() {
        let now = Instant::now();
        let m = manifest(b"{}".to_vec());
        let cases: [(u64, Instant, bool); 4] = [
            (8, now, true),                           // another cache
            (7, now, false),                          // epoch moved
            (7, now + Duration::from_secs(31), true), // past the TTL
            (7, now + CONFIRM_EVERY, true),           // not confirmed lately
        ];
        for (cache, at, epoch_current) in cases {
            fill("t", &m, now);
            assert!(get(cache, "repo", "t", at, epoch_current).is_none());
        }
        // A refused entry is dropped, not kept for later.
        fill("t", &m, now);
        assert!(get(7, "repo", "t", now, false).is_none());
        assert!(get(7, "repo", "t", now, true).is_none());
        assert_eq!(usage(), (0, 0));
    }

    #[test]
    fn stays_within_its_entry_bound() {
        let now = Instant::now();
        let small = manifest(vec![b' '; 10]);
        for i in 0..(MAX_ENTRIES * 3) {
            fill(&format!("t{i}"), &small, now);
            assert!(usage().0 <= MAX_ENTRIES);
        }
        assert_eq!(usage().0, MAX_ENTRIES);
        // Replacing an entry of a full front works, and does not count it twice.
        let before = usage();
        fill("t0", &small, now);
        assert_eq!(usage(), before);
        assert!(get(7, "repo", "t0", now, true).is_some());
    }

    #[test]
    fn stays_within_its_byte_bound_and_skips_huge_manifests() {
        let now = Instant::now();
        let big = manifest(vec![b' '; MAX_MANIFEST]);
        for i in 0..(MAX_BYTES / MAX_MANIFEST * 3) {
            fill(&format!("b{i}"), &big, now);
            assert!(usage().1 <= MAX_BYTES);
        }
        assert_eq!(usage().1, MAX_BYTES);
        let huge = manifest(vec![b' '; MAX_MANIFEST + 1]);
        fill("huge", &huge, now);
        assert!(get(7, "repo", "huge", now, true).is_none());
    }

    #[test]
    fn a_full_front_keeps_its_entries_until_they_can_no_longer_be_served() {
        let now = Instant::now();
        let small = manifest(vec![b' '; 10]);
        for i in 0..MAX_ENTRIES {
            fill(&format!("t{i}"), &small, now);
        }
        fill("late", &small, now);
        assert!(get(7, "repo", "late", now, true).is_none(), "not admitted");
        assert!(get(7, "repo", "t1", now, true).is_some(), "nothing evicted");
        // Once they are due for confirmation in moka, a sweep drops them.
        let later = now + CONFIRM_EVERY;
        fill("late", &small, later);
        assert!(get(7, "repo", "late", later, true).is_some());
        assert_eq!(usage().0, 1);
    }
}
