//! Per-thread front for small-blob hits, as [`crate::cache::front`] is for manifests.
//!
//! A memory-tier blob served whole for a linked (upstream, repository, digest) is
//! copied into a small map owned by the worker thread, together with the head of its
//! `200` answer, built once. A hit there skips both moka lookups (link and bytes), the
//! digest's formatting and the head's construction, and touches no reference count
//! another core writes. Authorization and policies ran before, as on every path.
//!
//! An entry is served only while all of these hold, else the caller takes the normal
//! path (which refills the front):
//! - it was filled by this very blob cache (tests build many in one process);
//! - the cache's link epoch is the one it was read under before the link was checked:
//!   every unlink (a blob DELETE) bumps it, so a dropped link is never served from here;
//! - it was confirmed in moka (link and bytes) less than [`CONFIRM_EVERY`] ago, which
//!   bounds how long it outlives an evicted link or blob.
//!
//! Memory: at most [`MAX_ENTRIES`] entries and [`MAX_BYTES`] of blob bytes per worker
//! thread, outside the memory tier's budget; blobs above [`MAX_BLOB`] are not copied.
//! A full front admits nothing new until a sweep (at most every [`SWEEP_EVERY`]) has
//! dropped entries no longer servable.

use std::cell::RefCell;
use std::collections::HashMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, HeaderValue};

use super::head::BlobHead;

/// How long a front entry is served without looking at moka again.
pub(crate) const CONFIRM_EVERY: Duration = Duration::from_secs(1);
/// Entries per thread.
pub(crate) const MAX_ENTRIES: usize = 256;
/// Blob bytes per thread.
pub(crate) const MAX_BYTES: usize = 4 << 20;
/// Larger blobs are not copied into the front.
pub(crate) const MAX_BLOB: usize = 256 << 10;
/// How often a full front looks for entries it can drop.
pub(crate) const SWEEP_EVERY: Duration = Duration::from_millis(250);

/// Which blob cache filled an entry, and its link epoch read before the link check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stamp {
    pub(crate) cache: u64,
    pub(crate) links_epoch: u64,
}

/// A servable entry: this thread's own copies of the body and of the whole-blob head.
#[derive(Clone)]
pub(crate) struct Hit {
    pub(crate) body: Bytes,
    /// `Content-Type`, `Content-Length`, `Docker-Content-Digest`, `ETag`,
    /// `Accept-Ranges`, the API version and the cache headers of a `200`.
    pub(crate) head: HeaderMap,
}

struct Entry {
    hit: Hit,
    stamp: Stamp,
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
    fn set_key(&mut self, upstream: &str, repository: &str, digest: &[&str]) {
        self.key.clear();
        // NUL cannot occur in upstream names, repository names or digests.
        for part in [upstream, "\0", repository, "\0"].iter().chain(digest) {
            self.key.push_str(part);
        }
    }

    fn remove_key(&mut self) {
        if let Some(gone) = self.map.remove(self.key.as_str()) {
            self.bytes = self.bytes.saturating_sub(gone.hit.body.len());
        }
    }

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
            let keep = now.saturating_duration_since(e.confirmed) < CONFIRM_EVERY;
            if !keep {
                freed += e.hit.body.len();
            }
            keep
        });
        self.bytes = self.bytes.saturating_sub(freed);
        fits(self)
    }
}

thread_local! {
    static FRONT: RefCell<Front> = RefCell::new(Front::default());
}

/// The blob `digest` (in parts that concatenate to it) of `repository`, if this
/// thread's front holds a servable entry; `current` is the stamp the cache would give
/// now.
pub(crate) fn get(
    upstream: &str,
    repository: &str,
    digest: &[&str],
    now: Instant,
    current: Stamp,
) -> Option<Hit> {
    FRONT.with(|front| {
        let mut front = front.try_borrow_mut().ok()?;
        front.set_key(upstream, repository, digest);
        let entry = front.map.get(front.key.as_str())?;
        if entry.stamp == current && now.saturating_duration_since(entry.confirmed) < CONFIRM_EVERY
        {
            return Some(entry.hit.clone());
        }
        front.remove_key();
        None
    })
}

/// Copies a linked memory-tier blob into this thread's front. `stamp` must have been
/// taken before the link was checked.
pub(crate) fn put(
    upstream: &str,
    repository: &str,
    head: &BlobHead,
    body: &Bytes,
    stamp: Stamp,
    now: Instant,
) {
    let size = body.len();
    if size > MAX_BLOB {
        return;
    }
    let Some(head) = whole_head(head) else {
        return;
    };
    FRONT.with(|front| {
        let Ok(mut front) = front.try_borrow_mut() else {
            return;
        };
        front.set_key(upstream, repository, &[head_digest(&head)]);
        front.remove_key();
        if !front.room_for(size, now) {
            return;
        }
        front.bytes += size;
        let key: Box<str> = front.key.as_str().into();
        front.map.insert(
            key,
            Entry {
                hit: Hit {
                    body: Bytes::copy_from_slice(body),
                    head,
                },
                stamp,
                confirmed: now,
            },
        );
    });
}

fn head_digest(head: &HeaderMap) -> &str {
    head.get(&crate::cache::entry::DOCKER_CONTENT_DIGEST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
}

/// The head of a `200` for the whole blob, as [`BlobHead::response`] builds it, from
/// values copied for this thread. `None` if a value is not a valid header value.
fn whole_head(head: &BlobHead) -> Option<HeaderMap> {
    let value = |s: &str| HeaderValue::from_maybe_shared(Bytes::copy_from_slice(s.as_bytes())).ok();
    let mut map = HeaderMap::with_capacity(10);
    let mut put = |name: HeaderName, v: HeaderValue| {
        map.insert(name, v);
    };
    put(http::header::CONTENT_TYPE, value(&head.content_type)?);
    put(http::header::CONTENT_LENGTH, HeaderValue::from(head.len));
    put(
        crate::cache::entry::DOCKER_CONTENT_DIGEST.clone(),
        value(&head.digest)?,
    );
    if let Some(etag) = &head.etag {
        put(http::header::ETAG, value(etag)?);
    }
    put(
        http::header::ACCEPT_RANGES,
        HeaderValue::from_static("bytes"),
    );
    put(
        crate::oci::headers::DOCKER_DISTRIBUTION_API_VERSION.clone(),
        HeaderValue::from_static(crate::oci::headers::API_VERSION_VALUE),
    );
    put(
        crate::oci::headers::X_MARGO_CACHE.clone(),
        HeaderValue::from_static("hit"),
    );
    put(
        crate::oci::headers::X_MARGO_CACHE_TIER.clone(),
        HeaderValue::from_static("memory"),
    );
    Some(map)
}

/// Entries and blob bytes in this thread's front (for tests).
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
    use crate::oci::Digest;

    const STAMP: Stamp = Stamp {
        cache: 7,
        links_epoch: 3,
    };

    fn blob(bytes: &[u8]) -> (BlobHead, Bytes) {
        let head = BlobHead {
            content_type: "application/vnd.margo.app.icon.v1+png".into(),
            digest: Digest::sha256_of(bytes).to_string(),
            etag: Some(format!("\"{}\"", Digest::sha256_of(bytes))),
            len: bytes.len() as u64,
        };
        (head, Bytes::copy_from_slice(bytes))
    }

    fn fill(repo: &str, bytes: &[u8], now: Instant) -> String {
        let (head, body) = blob(bytes);
        put("up", repo, &head, &body, STAMP, now);
        head.digest
    }

    fn get(repo: &str, digest: &str, at: Instant, stamp: Stamp) -> Option<Hit> {
        let (alg, hex) = digest.split_once(':').expect("digest");
        super::get("up", repo, &[alg, ":", hex], at, stamp)
    }

    // Each #[test] runs on its own thread, so each starts with an empty front.

    #[test]
    fn serves_a_private_copy_with_the_upstream_s_head() {
        let now = Instant::now();
        let (head, body) = blob(b"icon bytes");
        put("up", "apps/a", &head, &body, STAMP, now);
        let hit = get("apps/a", &head.digest, now, STAMP).expect("front hit");
        assert_eq!(hit.body, body);
        assert_ne!(hit.body.as_ptr(), body.as_ptr(), "this thread's own copy");
        // The same head the moka path answers a whole GET with.
        let full = head
            .response(
                super::super::RangeAnswer::Whole,
                "memory",
                &HeaderValue::from_static("id"),
            )
            .expect("head");
        for (name, value) in &hit.head {
            assert_eq!(full.headers.get(name), Some(value), "{name}");
        }
        assert_eq!(
            hit.head.len() + 1,
            full.headers.len(),
            "all but X-Request-Id"
        );
    }

    #[test]
    fn links_are_per_repository_and_upstream() {
        let now = Instant::now();
        let d = fill("apps/a", b"x", now);
        assert!(get("apps/a", &d, now, STAMP).is_some());
        assert!(
            get("apps/b", &d, now, STAMP).is_none(),
            "no cross-repository hit"
        );
        let (alg, hex) = d.split_once(':').expect("digest");
        assert!(super::get("other", "apps/a", &[alg, ":", hex], now, STAMP).is_none());
        assert!(super::get("up\0apps", "a", &[alg, ":", hex], now, STAMP).is_none());
    }

    #[test]
    fn refuses_other_caches_moved_link_epochs_and_unconfirmed_entries() {
        let now = Instant::now();
        let other_cache = Stamp { cache: 8, ..STAMP };
        let unlinked = Stamp {
            links_epoch: 4,
            ..STAMP
        };
        for (at, stamp) in [
            (now, other_cache),
            (now, unlinked),
            (now + CONFIRM_EVERY, STAMP),
        ] {
            let d = fill("apps/a", b"x", now);
            assert!(get("apps/a", &d, at, stamp).is_none());
            // A refused entry is dropped, not kept for later.
            assert!(get("apps/a", &d, now, STAMP).is_none());
        }
        assert_eq!(usage(), (0, 0));
    }

    #[test]
    fn stays_within_its_bounds_and_skips_large_blobs() {
        let now = Instant::now();
        for i in 0..(MAX_ENTRIES * 2) {
            fill("apps/a", format!("blob {i}").as_bytes(), now);
            assert!(usage().0 <= MAX_ENTRIES);
        }
        assert_eq!(usage().0, MAX_ENTRIES);
        let big = vec![b'b'; MAX_BLOB + 1];
        let d = fill("apps/a", &big, now);
        assert!(get("apps/a", &d, now, STAMP).is_none());
        // Once entries are due for confirmation, a sweep makes room.
        let later = now + CONFIRM_EVERY;
        let (head, body) = blob(b"late");
        put("up", "apps/a", &head, &body, STAMP, later);
        assert!(get("apps/a", &head.digest, later, STAMP).is_some());
        assert_eq!(usage().0, 1);
        let many = MAX_BYTES / MAX_BLOB + 2;
        for i in 0..many {
            let mut b = vec![b'x'; MAX_BLOB];
            b[..8].copy_from_slice(&(i as u64).to_le_bytes());
            let (head, body) = blob(&b);
            put("up", "apps/a", &head, &body, STAMP, later);
            assert!(usage().1 <= MAX_BYTES);
        }
    }
}
