//! Manifest cache: the reason a polling fleet costs the upstream almost nothing.
//!
//! What is cached, per upstream and upstream-side repository:
//! - manifests by digest (immutable, kept until evicted by the byte budget);
//! - tag → digest mappings (trusted for `tag_ttl`, then revalidated with a
//!   HEAD; served stale for `stale_grace` while the upstream is unreachable);
//! - optionally 404s (`negative_ttl`, off by default).
//!
//! Tags lists, referrers and blobs are never cached here. Authorization must
//! run before any call into this module: the cache does not know who asks.
//!
//! Typical GET/HEAD flow in the proxy:
//! 1. by tag: [`ManifestCache::resolve_tag`] (HEAD upstream with
//!    [`accept::FULL_ACCEPT`] when stale or missing) gives a digest;
//! 2. [`ManifestCache::get_or_fetch`] with that digest (GET upstream with
//!    [`accept::FULL_ACCEPT`] on a miss) gives a verified manifest;
//! 3. [`accept::negotiate`] with the client's `Accept`: `Serve` → answer with
//!    [`CachedManifest::headers`] (+ body for GET); `Bypass` → forward the
//!    original request upstream as if there were no cache.
//!
//! Pushes and deletes call [`ManifestCache::on_manifest_put`] /
//! [`ManifestCache::on_manifest_delete`] after the upstream accepted them.

pub mod accept;
pub mod blob;
pub mod config;
pub mod entry;
pub mod error;
pub mod freshness;
mod front;
pub mod key;
pub mod stats;

#[cfg(test)]
mod tests;

use std::future::Future;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::HeaderMap;
use moka::future::Cache;
use moka::notification::RemovalCause;
use moka::ops::compute::Op;
use moka::Expiry;

pub use crate::oci::digest::{
    parse_digest, sha256_digest, verify_digest, Algorithm as DigestAlgorithm,
};
pub use accept::{negotiate, negotiate_values, Negotiation, FULL_ACCEPT};
pub use config::CacheConfig;
pub use entry::{CachedManifest, TagEntry};
pub use error::{
    ConfigError, DigestError, FetchError, ManifestError, ResolveError, UncacheableReason,
};
pub use freshness::{decide, freshness, Freshness, TagDecision, TagPolicy, UpstreamState};
pub use key::{is_digest_reference, DigestKey, RepoKey, TagKey};
pub use stats::CacheStats;

use entry::{Value, ENTRY_OVERHEAD};
use key::Key;
use stats::{bump, Counters};

/// How the cache answered a manifest read (the `X-Margo-Cache` header, the access
/// log's `cache` field and the pull policy's `cache_hit`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheResult {
    /// Served from the cache without asking the upstream.
    Hit,
    /// Fetched from the upstream just now (and cached when it could be).
    Miss,
    /// A stale tag mapping served because the upstream is unreachable.
    Stale,
    /// A blob served from the blob cache's memory tier.
    BlobMemory,
    /// A blob served from the blob cache's disk tier.
    BlobDisk,
}

impl CacheResult {
    pub fn as_str(self) -> &'static str {
        match self {
            CacheResult::Hit => "hit",
            CacheResult::Miss => "miss",
            CacheResult::Stale => "stale",
            CacheResult::BlobMemory => "memory",
            CacheResult::BlobDisk => "disk",
        }
    }
}

/// What a fetcher learnt from an upstream manifest GET.
#[derive(Debug, Clone)]
pub enum Fetched {
    /// 200: the body and the upstream's response headers.
    Manifest {
        /// Complete body (the proxy buffers manifests, never blobs).
        body: Bytes,
        /// Upstream response headers.
        headers: HeaderMap,
    },
    /// 404 (manifest unknown).
    NotFound,
}

/// What a tag probe (HEAD by tag upstream) learnt.
#[derive(Debug)]
pub enum TagProbe<E> {
    /// 200 with this `Docker-Content-Digest`.
    Found(String),
    /// 404: the tag does not exist (any more).
    NotFound,
    /// Connection refused or reset, timeout, 502/503/504: a stale mapping may cover for it.
    Unreachable(E),
    /// Anything else (401, 400...): passed to the caller, never covered by stale data.
    Failed(E),
}

/// Where a resolved digest came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TagSource {
    /// Fresh cached mapping (or one refreshed by a concurrent caller).
    Fresh,
    /// Stale mapping confirmed or replaced by a HEAD just now.
    Revalidated,
    /// No usable mapping; a HEAD just now found it.
    Fetched,
    /// Stale mapping served because the upstream is unreachable: flag it to
    /// the client (e.g. a `Warning`/`X-Cache: STALE` header) and in metrics.
    Stale,
}

/// A resolved tag.
#[derive(Debug, Clone)]
pub struct TagResolution {
    /// The digest to serve.
    pub digest: Arc<str>,
    /// How fresh it is.
    pub source: TagSource,
    /// The manifest itself, when a fresh mapping already carries it (see
    /// [`ManifestCache::attach_manifest`]): no digest lookup needed.
    pub manifest: Option<Arc<CachedManifest>>,
}

/// A digest lookup that does not go upstream.
#[derive(Debug, Clone)]
enum Lookup {
    /// Cached manifest.
    Hit(Arc<CachedManifest>),
    /// Cached 404.
    NotFound,
    /// Nothing cached.
    Miss,
}

/// What the cached state of a tag says to do: the [`TagDecision`] without asking.
#[derive(Debug, Clone, PartialEq, Eq)]
enum TagLookup {
    /// Use this digest.
    Fresh(Arc<str>),
    /// Ask the upstream (HEAD) whether it still holds.
    Revalidate(Arc<str>),
    /// The upstream failed moments ago; serve this stale digest without probing.
    ServeStale(Arc<str>),
    /// Cached 404.
    NotFound,
    /// Nothing usable cached.
    Miss,
}

/// Outcome of offering a manifest to the cache.
#[derive(Debug, Clone)]
enum Admission {
    /// Stored.
    Cached(Arc<CachedManifest>),
    /// Valid, served, not stored.
    Uncached {
        /// Why.
        reason: UncacheableReason,
        /// What to serve.
        manifest: Arc<CachedManifest>,
    },
}

/// Taken before an upstream request whose answer will be inserted; the insert
/// is dropped if a push or delete touched the repository meanwhile, so an
/// answer from before the change can never outlive it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FetchTicket {
    stripe: usize,
    epoch: u64,
}

/// Invalidation epochs are striped by repository so that a push to one
/// repository does not void in-flight fetches everywhere.
const EPOCH_STRIPES: usize = 64;

/// Per-entry lifetimes: manifests live until evicted, tags until TTL + grace
/// (measured from when they were fetched, not written), 404s for the negative TTL.
struct EntryExpiry {
    tag_lifetime: Duration,
    negative_ttl: Duration,
}

impl EntryExpiry {
    fn lifetime(&self, value: &Value, now: Instant) -> Option<Duration> {
        match value {
            Value::Manifest(_) => None,
            Value::Tag(t) => {
                Some((t.fetched_at + self.tag_lifetime).saturating_duration_since(now))
            }
            Value::NotFound => Some(self.negative_ttl),
        }
    }
}

impl Expiry<Key, Value> for EntryExpiry {
    fn expire_after_create(
        &self,
        _key: &Key,
        value: &Value,
        created_at: Instant,
    ) -> Option<Duration> {
        self.lifetime(value, created_at)
    }

    fn expire_after_update(
        &self,
        _key: &Key,
        value: &Value,
        updated_at: Instant,
        _duration_until_expiry: Option<Duration>,
    ) -> Option<Duration> {
        // A failed revalidation rewrites the entry; its lifetime must still
        // count from the original fetch, or the grace window would never end.
        self.lifetime(value, updated_at)
    }
}

/// The manifest cache. Share it behind an `Arc`.
pub struct ManifestCache {
    inner: Cache<Key, Value, ahash::RandomState>,
    policy: TagPolicy,
    negative_ttl: Duration,
    max_manifest_bytes: u64,
    counters: Arc<Counters>,
    epochs: [AtomicU64; EPOCH_STRIPES],
    hasher: std::collections::hash_map::RandomState,
    /// Tells this cache's entries in the per-thread fronts from other caches'.
    id: u64,
}

/// Source of [`ManifestCache`] ids.
static NEXT_CACHE_ID: AtomicU64 = AtomicU64::new(1);

impl std::fmt::Debug for ManifestCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ManifestCache")
            .field("policy", &self.policy)
            .field("negative_ttl", &self.negative_ttl)
            .field("max_manifest_bytes", &self.max_manifest_bytes)
            .field("entries", &self.inner.entry_count())
            .finish()
    }
}

impl ManifestCache {
    /// Builds the cache if `config.enabled`; `Ok(None)` means "no cache".
    pub fn from_config(config: &CacheConfig) -> Result<Option<Self>, ConfigError> {
        if config.enabled {
            Self::new(config).map(Some)
        } else {
            config.validate().map(|()| None)
        }
    }

    /// Builds the cache regardless of `config.enabled`.
    pub fn new(config: &CacheConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        let policy = TagPolicy {
            ttl: config.tag_ttl,
            stale_grace: config.stale_grace,
            unreachable_backoff: freshness::DEFAULT_UNREACHABLE_BACKOFF,
        };
        let counters = Arc::new(Counters::default());
        let listener_counters = Arc::clone(&counters);
        let inner = Cache::builder()
            .max_capacity(config.max_bytes)
            .weigher(|k: &Key, v: &Value| {
                u32::try_from(ENTRY_OVERHEAD + k.weight() + v.weight()).unwrap_or(u32::MAX)
            })
            .expire_after(EntryExpiry {
                tag_lifetime: policy.lifetime(),
                negative_ttl: config.negative_ttl,
            })
            .eviction_listener(move |_k, _v, cause| match cause {
                RemovalCause::Size => bump(&listener_counters.evictions),
                RemovalCause::Expired => bump(&listener_counters.expirations),
                RemovalCause::Explicit | RemovalCause::Replaced => {}
            })
            // Keyed with per-process random seeds like std's SipHash (keys carry client
            // repository names and tags), at a fraction of its cost on every hit.
            .build_with_hasher(ahash::RandomState::new());
        Ok(Self {
            inner,
            policy,
            negative_ttl: config.negative_ttl,
            max_manifest_bytes: config.max_manifest_bytes,
            counters,
            epochs: std::array::from_fn(|_| AtomicU64::new(0)),
            hasher: std::collections::hash_map::RandomState::new(),
            id: NEXT_CACHE_ID.fetch_add(1, Ordering::Relaxed),
        })
    }

    /// The tag timing policy in force.
    pub fn policy(&self) -> &TagPolicy {
        &self.policy
    }

    /// Counters and sizes for metrics.
    pub fn stats(&self) -> CacheStats {
        self.counters
            .snapshot(self.inner.entry_count(), self.inner.weighted_size())
    }

    /// Runs moka's deferred maintenance (evictions, expirations, listener
    /// calls, size accounting). moka does this on its own as traffic flows;
    /// call it before reading [`Self::stats`] when exact numbers matter.
    pub async fn run_pending_tasks(&self) {
        self.inner.run_pending_tasks().await;
    }

    // ---- invalidation epochs -------------------------------------------

    fn stripe(&self, repo: &RepoKey) -> usize {
        // Truncation is fine: only the low bits pick a stripe.
        (self.hasher.hash_one(repo) as usize) % EPOCH_STRIPES
    }

    /// Takes a ticket for an upstream request about `repo`.
    pub fn ticket(&self, repo: &RepoKey) -> FetchTicket {
        let stripe = self.stripe(repo);
        FetchTicket {
            stripe,
            epoch: self.epochs[stripe].load(Ordering::Acquire),
        }
    }

    fn ticket_valid(&self, ticket: FetchTicket) -> bool {
        self.epochs
            .get(ticket.stripe)
            .is_some_and(|e| e.load(Ordering::Acquire) == ticket.epoch)
    }

    fn bump_epoch(&self, repo: &RepoKey) {
        self.epochs[self.stripe(repo)].fetch_add(1, Ordering::AcqRel);
    }

    // ---- per-thread front ------------------------------------------------

    /// Taken before reading moka for a front fill: an invalidation that bumps
    /// the epoch after this (it bumps again after removing its entries) voids
    /// the filled entry.
    fn front_stamp(&self, repo: &RepoKey) -> front::Stamp {
        front::Stamp {
            cache: self.id,
            ticket: self.ticket(repo),
        }
    }

    /// A hit from this thread's front (see [`front`]): no moka lookup, no key
    /// allocation. `reference` is a tag, or a digest in parts that concatenate
    /// to it (`["sha256", ":", hex]`). `None` means "use [`Self::resolve_tag`] or
    /// [`Self::get_or_fetch`]".
    pub fn front_hit(
        &self,
        upstream: &str,
        repository: &str,
        reference: &[&str],
    ) -> Option<Arc<CachedManifest>> {
        self.front_hit_if(upstream, repository, reference, |_| true)
    }

    /// [`Self::front_hit`] for an entry `serves` accepts (e.g. the client's `Accept`);
    /// one it refuses is not counted as a hit.
    pub fn front_hit_if(
        &self,
        upstream: &str,
        repository: &str,
        reference: &[&str],
        serves: impl FnOnce(&CachedManifest) -> bool,
    ) -> Option<Arc<CachedManifest>> {
        let hit = front::get(
            self.id,
            upstream,
            repository,
            reference,
            Instant::now(),
            |stamp| self.ticket_valid(stamp.ticket),
        )
        .filter(|hit| serves(&hit.manifest))?;
        // As on the moka path: by tag with an attached manifest, tag and digest both hit.
        self.counters.hits.bump();
        if hit.by_tag {
            self.counters.hits.bump();
        }
        Some(hit.manifest)
    }

    // ---- digests ---------------------------------------------------------

    /// Looks up a manifest by digest without going upstream.
    async fn get_manifest(&self, key: &DigestKey) -> Lookup {
        let stamp = self.front_stamp(key.repo());
        match self.inner.get(&Key::Digest(key.clone())).await {
            Some(Value::Manifest(m)) => {
                self.counters.hits.bump();
                let repo = key.repo();
                let now = Instant::now();
                front::put(
                    repo.upstream(),
                    repo.repository(),
                    key.digest(),
                    &m,
                    stamp,
                    None,
                    now,
                );
                Lookup::Hit(m)
            }
            Some(Value::NotFound) => {
                bump(&self.counters.negative_hits);
                Lookup::NotFound
            }
            Some(Value::Tag(_)) | None => Lookup::Miss,
        }
    }

    /// Verifies and sizes an upstream answer without storing it.
    fn admit(
        &self,
        ticket: FetchTicket,
        key: &DigestKey,
        body: Bytes,
        headers: &HeaderMap,
    ) -> Result<Admission, ManifestError> {
        let uncached = |reason, manifest: CachedManifest| {
            bump(&self.counters.uncacheable);
            Ok(Admission::Uncached {
                reason,
                manifest: Arc::new(manifest),
            })
        };
        let manifest = match CachedManifest::from_upstream(key.digest(), body.clone(), headers) {
            Ok(m) => m,
            Err(ManifestError::Digest(DigestError::UnsupportedAlgorithm(_))) => {
                let m = CachedManifest::unverified(key.digest(), body, headers)?;
                return uncached(UncacheableReason::UnsupportedAlgorithm, m);
            }
            Err(e) => {
                bump(&self.counters.rejections);
                tracing::warn!(
                    upstream = key.repo().upstream(),
                    repository = key.repo().repository(),
                    digest = key.digest(),
                    error = %e,
                    "refusing upstream manifest"
                );
                return Err(e);
            }
        };
        if manifest.body().len() as u64 > self.max_manifest_bytes {
            return uncached(UncacheableReason::TooLarge, manifest);
        }
        if !self.ticket_valid(ticket) {
            return uncached(UncacheableReason::InvalidatedDuringFetch, manifest);
        }
        Ok(Admission::Cached(Arc::new(manifest)))
    }

    /// Closes the window between "ticket still valid" and the insert: an
    /// invalidation that bumped the epoch in between removes its entries only
    /// after the bump, but may have run before our insert landed.
    async fn undo_if_invalidated(&self, ticket: FetchTicket, k: &Key) {
        if !self.ticket_valid(ticket) {
            self.inner.invalidate(k).await;
        }
    }

    /// Returns the manifest for `key`, calling `fetch` (an upstream GET by
    /// digest with [`FULL_ACCEPT`]) only on a miss. Concurrent misses for the
    /// same key share one `fetch` call (moka `try_get_with`); every waiter
    /// gets the same result or error.
    pub async fn get_or_fetch<F, Fut, E>(
        &self,
        key: &DigestKey,
        fetch: F,
    ) -> Result<Arc<CachedManifest>, FetchError<E>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Fetched, E>>,
        E: Send + Sync + 'static,
    {
        match self.get_manifest(key).await {
            Lookup::Hit(m) => return Ok(m),
            Lookup::NotFound => return Err(FetchError::NotFound { cached: true }),
            Lookup::Miss => {}
        }
        let k = Key::Digest(key.clone());
        let ticket = self.ticket(key.repo());
        let ran = AtomicBool::new(false);
        let init = async {
            ran.store(true, Ordering::Relaxed);
            match fetch().await {
                Err(e) => Err(FetchError::Upstream(Arc::new(e))),
                Ok(Fetched::NotFound) => {
                    if !self.negative_ttl.is_zero() && self.ticket_valid(ticket) {
                        Ok(Value::NotFound)
                    } else {
                        Err(FetchError::NotFound { cached: false })
                    }
                }
                Ok(Fetched::Manifest { body, headers }) => {
                    match self.admit(ticket, key, body, &headers) {
                        Ok(Admission::Cached(m)) => Ok(Value::Manifest(m)),
                        Ok(Admission::Uncached { reason, manifest }) => {
                            Err(FetchError::Uncacheable { reason, manifest })
                        }
                        Err(e) => Err(FetchError::Invalid(e)),
                    }
                }
            }
        };
        let result = self.inner.try_get_with(k.clone(), init).await;
        let fetched_here = ran.load(Ordering::Relaxed);
        if fetched_here {
            bump(&self.counters.misses);
            if result.is_ok() {
                self.undo_if_invalidated(ticket, &k).await;
            }
        } else {
            bump(&self.counters.coalesced);
        }
        match result {
            Ok(Value::Manifest(m)) => Ok(m),
            Ok(Value::NotFound) => Err(FetchError::NotFound {
                cached: !fetched_here,
            }),
            Ok(Value::Tag(_)) => {
                // Keys are typed, so a tag value under a digest key cannot be
                // stored; if it ever were, drop it rather than serve it.
                tracing::error!(digest = key.digest(), "tag value under a digest key");
                self.inner.invalidate(&k).await;
                Err(FetchError::NotFound { cached: false })
            }
            Err(shared) => Err((*shared).clone()),
        }
    }

    // ---- tags ------------------------------------------------------------

    fn tag_lookup(&self, value: Option<Value>, now: Instant) -> TagLookup {
        match value {
            Some(Value::NotFound) => TagLookup::NotFound,
            Some(Value::Tag(t)) => {
                match decide(Some(&t), now, &self.policy, UpstreamState::NotAsked) {
                    TagDecision::Use(d) => TagLookup::Fresh(d),
                    TagDecision::Revalidate(d) => TagLookup::Revalidate(d),
                    TagDecision::ServeStale(d) => TagLookup::ServeStale(d),
                    TagDecision::Fetch | TagDecision::Fail => TagLookup::Miss,
                }
            }
            Some(Value::Manifest(_)) | None => TagLookup::Miss,
        }
    }

    /// Resolves a tag to a digest, calling `probe` (an upstream HEAD by tag
    /// with [`FULL_ACCEPT`]; it receives the digest believed so far) only when
    /// the mapping is missing or stale. Concurrent resolutions of one tag run
    /// one at a time (moka `and_compute_with`), so a stale tag polled by a
    /// whole fleet costs one HEAD: later callers find the refreshed entry.
    pub async fn resolve_tag<F, Fut, E>(
        &self,
        key: &TagKey,
        probe: F,
    ) -> Result<TagResolution, ResolveError<E>>
    where
        F: FnOnce(Option<Arc<str>>) -> Fut,
        Fut: Future<Output = TagProbe<E>>,
    {
        let k = Key::Tag(key.clone());
        let stamp = self.front_stamp(key.repo());
        // Fast path without the per-key lock.
        let value = self.inner.get(&k).await;
        let (attached, fetched_at) = match &value {
            Some(Value::Tag(t)) => (t.manifest.clone(), Some(t.fetched_at)),
            _ => (None, None),
        };
        let now = Instant::now();
        match self.tag_lookup(value, now) {
            TagLookup::Fresh(digest) => {
                self.counters.hits.bump();
                if attached.is_some() {
                    // The digest lookup this saves would have been a hit too.
                    self.counters.hits.bump();
                }
                let fresh_until = fetched_at.and_then(|at| at.checked_add(self.policy.ttl));
                if let (Some(m), Some(until)) = (&attached, fresh_until) {
                    let repo = key.repo();
                    front::put(
                        repo.upstream(),
                        repo.repository(),
                        key.tag(),
                        m,
                        stamp,
                        Some(until),
                        now,
                    );
                }
                return Ok(TagResolution {
                    digest,
                    source: TagSource::Fresh,
                    manifest: attached,
                });
            }
            TagLookup::NotFound => {
                bump(&self.counters.negative_hits);
                return Err(ResolveError::NotFound { cached: true });
            }
            TagLookup::Revalidate(_) | TagLookup::ServeStale(_) | TagLookup::Miss => {}
        }

        let ticket = self.ticket(key.repo());
        let mut outcome: Option<Result<TagResolution, ResolveError<E>>> = None;
        let out = &mut outcome;
        let counters = &self.counters;
        let policy = self.policy;
        let negative = !self.negative_ttl.is_zero();
        let comp = self
            .inner
            .entry(k.clone())
            .and_compute_with(|existing| async move {
                let current = existing.map(|e| e.into_value());
                let tag = match &current {
                    Some(Value::NotFound) => {
                        bump(&counters.negative_hits);
                        *out = Some(Err(ResolveError::NotFound { cached: true }));
                        return Op::Nop;
                    }
                    Some(Value::Tag(t)) => Some(t.clone()),
                    Some(Value::Manifest(_)) | None => None,
                };
                let resolved = |digest, source| {
                    Some(Ok(TagResolution {
                        digest,
                        source,
                        manifest: None,
                    }))
                };
                match decide(
                    tag.as_ref(),
                    Instant::now(),
                    &policy,
                    UpstreamState::NotAsked,
                ) {
                    TagDecision::Use(d) => {
                        // Another caller refreshed it while we waited for the lock.
                        bump(&counters.coalesced);
                        *out = resolved(d, TagSource::Fresh);
                        return Op::Nop;
                    }
                    TagDecision::ServeStale(d) => {
                        bump(&counters.stale_serves);
                        *out = resolved(d, TagSource::Stale);
                        return Op::Nop;
                    }
                    TagDecision::Revalidate(_) | TagDecision::Fetch | TagDecision::Fail => {}
                }
                let known = tag.as_ref().map(|t| Arc::clone(&t.digest));
                match probe(known.clone()).await {
                    TagProbe::Found(d) => {
                        let digest: Arc<str> = Arc::from(d.trim());
                        let source = if known.as_deref() == Some(&*digest) {
                            bump(&counters.revalidations);
                            TagSource::Revalidated
                        } else {
                            bump(&counters.misses);
                            if known.is_some() {
                                bump(&counters.revalidations);
                            }
                            TagSource::Fetched
                        };
                        *out = resolved(Arc::clone(&digest), source);
                        let storable =
                            !matches!(parse_digest(&digest), Err(DigestError::Malformed(_)));
                        if storable && self.ticket_valid(ticket) {
                            Op::Put(Value::Tag(TagEntry::new(digest, Instant::now())))
                        } else {
                            Op::Remove
                        }
                    }
                    TagProbe::NotFound => {
                        bump(&counters.misses);
                        *out = Some(Err(ResolveError::NotFound { cached: false }));
                        if negative && self.ticket_valid(ticket) {
                            Op::Put(Value::NotFound)
                        } else {
                            Op::Remove
                        }
                    }
                    TagProbe::Unreachable(e) => {
                        let now = Instant::now();
                        match (
                            decide(tag.as_ref(), now, &policy, UpstreamState::Unreachable),
                            tag,
                        ) {
                            (TagDecision::ServeStale(d), Some(t)) => {
                                bump(&counters.stale_serves);
                                *out = resolved(d, TagSource::Stale);
                                Op::Put(Value::Tag(TagEntry {
                                    failed_at: Some(now),
                                    ..t
                                }))
                            }
                            _ => {
                                *out = Some(Err(ResolveError::Upstream(e)));
                                Op::Nop
                            }
                        }
                    }
                    TagProbe::Failed(e) => {
                        *out = Some(Err(ResolveError::Upstream(e)));
                        Op::Nop
                    }
                }
            })
            .await;
        if matches!(
            comp,
            moka::ops::compute::CompResult::Inserted(_)
                | moka::ops::compute::CompResult::ReplacedWith(_)
        ) && !self.ticket_valid(ticket)
        {
            self.remove_tag_if(&k, |_| true).await;
        }
        outcome.unwrap_or_else(|| {
            // Every path of the closure sets the outcome; a miss here would be
            // a bug, answered as "not found" rather than a panic.
            tracing::error!(tag = key.tag(), "tag resolution produced no outcome");
            Err(ResolveError::NotFound { cached: false })
        })
    }

    /// Lets a tag mapping carry the manifest it points at, after that
    /// manifest was served through it. Only a mapping that still names the
    /// same digest is touched: one invalidated or moved meanwhile stays as it
    /// is, so this can never resurrect or redirect a tag.
    pub async fn attach_manifest(&self, key: &TagKey, manifest: &Arc<CachedManifest>) {
        self.inner
            .entry(Key::Tag(key.clone()))
            .and_compute_with(|existing| {
                let op = match existing.map(|e| e.into_value()) {
                    Some(Value::Tag(t))
                        if t.manifest.is_none() && *t.digest == *manifest.digest() =>
                    {
                        Op::Put(Value::Tag(TagEntry {
                            manifest: Some(Arc::clone(manifest)),
                            ..t
                        }))
                    }
                    _ => Op::Nop,
                };
                std::future::ready(op)
            })
            .await;
    }

    // ---- invalidation ----------------------------------------------------

    /// Removes a tag key (mapping or 404) through the per-key lock, so it
    /// takes effect after any in-flight [`Self::resolve_tag`] of that tag.
    async fn remove_tag_if(&self, k: &Key, pred: impl FnOnce(&Value) -> bool) {
        self.inner
            .entry(k.clone())
            .and_compute_with(|existing| {
                let op = match existing {
                    Some(e) if pred(e.value()) => Op::Remove,
                    _ => Op::Nop,
                };
                std::future::ready(op)
            })
            .await;
    }

    /// Forgets a tag mapping (or cached 404).
    pub async fn invalidate_tag(&self, key: &TagKey) {
        self.bump_epoch(key.repo());
        self.remove_tag_if(&Key::Tag(key.clone()), |_| true).await;
        // Again after the removal: a front fill that read the epoch between the
        // first bump and the removal may have seen the old entry.
        self.bump_epoch(key.repo());
    }

    /// Forgets a digest (manifest or cached 404) and every tag of the same
    /// repository that points at it. Scans the cache: deletes are rare and
    /// the cache holds at most a few hundred thousand entries.
    pub async fn invalidate_digest(&self, key: &DigestKey) {
        self.bump_epoch(key.repo());
        self.inner.invalidate(&Key::Digest(key.clone())).await;
        let pointing: Vec<Key> = self
            .inner
            .iter()
            .filter_map(|(k, v)| match (&*k, &v) {
                (Key::Tag(t), Value::Tag(e))
                    if t.repo() == key.repo() && &*e.digest == key.digest() =>
                {
                    Some(Key::clone(&k))
                }
                _ => None,
            })
            .collect();
        for k in pointing {
            self.remove_tag_if(
                &k,
                |v| matches!(v, Value::Tag(e) if &*e.digest == key.digest()),
            )
            .await;
        }
        // See `invalidate_tag`.
        self.bump_epoch(key.repo());
    }

    /// Call after the upstream accepted a manifest PUT for `reference` (tag
    /// or digest): the tag's mapping or 404 is dropped, and a cached 404 for
    /// the digest is dropped (a cached manifest by digest cannot be wrong).
    pub async fn on_manifest_put(&self, repo: &RepoKey, reference: &str) {
        if is_digest_reference(reference) {
            self.bump_epoch(repo);
            let k = Key::Digest(repo.digest(reference));
            self.remove_tag_if(&k, |v| matches!(v, Value::NotFound))
                .await;
        } else {
            self.invalidate_tag(&repo.tag(reference)).await;
        }
    }

    /// Call after the upstream accepted a manifest DELETE for `reference`:
    /// a tag delete drops the tag; a digest delete drops the manifest and
    /// every tag of the repository pointing at it.
    pub async fn on_manifest_delete(&self, repo: &RepoKey, reference: &str) {
        if is_digest_reference(reference) {
            self.invalidate_digest(&repo.digest(reference)).await;
        } else {
            self.invalidate_tag(&repo.tag(reference)).await;
        }
    }

    /// Forgets every tag mapping and remembered 404 of `repo`, or of every
    /// repository with `None`. For invalidations that name no reference (an
    /// upstream event about a whole repository) and for a replica that may
    /// have missed invalidations while its bus was down. Manifests by digest
    /// are immutable and stay.
    pub async fn flush_tags(&self, repo: Option<&RepoKey>) {
        let bump_all = |cache: &Self| match repo {
            Some(r) => cache.bump_epoch(r),
            None => cache
                .epochs
                .iter()
                .for_each(|e| _ = e.fetch_add(1, Ordering::AcqRel)),
        };
        bump_all(self);
        let doomed: Vec<Key> = self
            .inner
            .iter()
            .filter_map(|(k, v)| {
                let of_repo = |r: &RepoKey| repo.is_none_or(|want| want == r);
                match (&*k, &v) {
                    (Key::Tag(t), _) if of_repo(t.repo()) => Some(Key::clone(&k)),
                    (Key::Digest(d), Value::NotFound) if of_repo(d.repo()) => Some(Key::clone(&k)),
                    _ => None,
                }
            })
            .collect();
        for k in doomed {
            self.remove_tag_if(&k, |v| !matches!(v, Value::Manifest(_)))
                .await;
        }
        // See `invalidate_tag`.
        bump_all(self);
    }

    /// Whether anything (manifest, mapping or 404) is cached under the key;
    /// for tests and debugging.
    pub fn contains_digest(&self, key: &DigestKey) -> bool {
        self.inner.contains_key(&Key::Digest(key.clone()))
    }

    /// See [`Self::contains_digest`].
    pub fn contains_tag(&self, key: &TagKey) -> bool {
        self.inner.contains_key(&Key::Tag(key.clone()))
    }
}
