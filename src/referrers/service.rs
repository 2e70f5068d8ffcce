//! Keeping and answering referrers indexes for every upstream.
//!
//! An upstream either has the referrers API (probed once, remembered) and then keeps
//! its indexes itself, or it has not, and the proxy keeps each subject's index under
//! the referrers tag schema's `<alg>-<hex>` tag, where clients of the fallback (oras,
//! older cosign) write too, so both kinds of writers end up in one index.
//!
//! The upstream has no compare-and-swap, so index updates are read-modify-write with a
//! read-back check and retries. Updates through one proxy are also serialised per
//! subject, so concurrent pushes through the proxy never lose each other; a writer
//! going straight to the upstream between our write and our read-back makes us retry,
//! one overwriting us after that is beyond what an upstream without CAS allows.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use super::index::{self, IndexError, PushedReferrer, ReferrerDescriptor, INDEX_MEDIA_TYPE};
use super::io::{IoError, RegistryIo, UpstreamReferrers};
use crate::oci::Digest;

/// Attempts of one read-modify-write before giving up.
const MAX_ATTEMPTS: u32 = 8;

/// Largest index read from the upstream.
pub const MAX_INDEX_BYTES: u64 = 4 << 20;

const UNKNOWN: u8 = 0;
const SUPPORTED: u8 = 1;
const UNSUPPORTED: u8 = 2;

#[derive(Debug, thiserror::Error)]
pub enum ReferrersError {
    #[error(transparent)]
    Io(#[from] IoError),
    #[error(transparent)]
    Index(#[from] IndexError),
    #[error("the referrers index of {0} kept changing under concurrent writers")]
    Conflict(String),
}

/// Whether an upstream has the referrers API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Support {
    Native,
    Emulated,
}

/// A referrers listing, as the proxy answers it.
#[derive(Debug, Clone)]
pub struct Listing {
    pub manifests: Vec<ReferrerDescriptor>,
    /// `artifactType` filtering was applied (`OCI-Filters-Applied: artifactType`).
    pub filtered: bool,
}

impl Listing {
    pub fn body(&self) -> Bytes {
        Bytes::from(index::render(&self.manifests))
    }
}

pub struct ReferrerService {
    /// Per upstream (by index in the config), what the probe found.
    support: Vec<AtomicU8>,
    /// One lock per subject index being updated through this proxy.
    locks: moka::sync::Cache<String, Arc<tokio::sync::Mutex<()>>>,
    /// Emulated indexes, like manifests by tag: fresh for `ttl`, dropped on every update
    /// made through the proxy.
    cache: moka::future::Cache<String, Arc<Vec<ReferrerDescriptor>>>,
}

/// `upstream/repository/subject`: one index.
fn key(upstream: &str, repo: &str, subject: &Digest) -> String {
    format!("{upstream}/{repo}@{subject}")
}

impl ReferrerService {
    pub fn new(upstreams: usize, ttl: Duration, cache_enabled: bool) -> Self {
        ReferrerService {
            support: (0..upstreams).map(|_| AtomicU8::new(UNKNOWN)).collect(),
            locks: moka::sync::Cache::builder()
                .max_capacity(10_000)
                .time_to_idle(Duration::from_secs(60))
                .build(),
            cache: moka::future::Cache::builder()
                .max_capacity(if cache_enabled { 10_000 } else { 0 })
                .time_to_live(ttl.max(Duration::from_millis(1)))
                .build(),
        }
    }

    /// What the upstream (`idx`) can do, probing it with `subject` the first time.
    /// A failed probe is not remembered: the next request probes again.
    pub async fn support(
        &self,
        idx: usize,
        io: &dyn RegistryIo,
        repo: &str,
        subject: &Digest,
    ) -> Result<Support, ReferrersError> {
        let Some(slot) = self.support.get(idx) else {
            return Ok(Support::Emulated);
        };
        match slot.load(Ordering::Relaxed) {
            SUPPORTED => return Ok(Support::Native),
            UNSUPPORTED => return Ok(Support::Emulated),
            _ => {}
        }
        let found = match io
            .get_referrers(repo, subject, None, MAX_INDEX_BYTES)
            .await?
        {
            UpstreamReferrers::Supported { .. } => SUPPORTED,
            UpstreamReferrers::Unsupported => UNSUPPORTED,
        };
        slot.store(found, Ordering::Relaxed);
        Ok(if found == SUPPORTED {
            Support::Native
        } else {
            Support::Emulated
        })
    }

    /// The referrers of `subject`, filtered by `artifact_type` when given.
    pub async fn list(
        &self,
        idx: usize,
        upstream: &str,
        io: &dyn RegistryIo,
        repo: &str,
        subject: &Digest,
        artifact_type: Option<&str>,
    ) -> Result<Listing, ReferrersError> {
        let all = match self.support(idx, io, repo, subject).await? {
            Support::Native => {
                match io
                    .get_referrers(repo, subject, artifact_type, MAX_INDEX_BYTES)
                    .await?
                {
                    UpstreamReferrers::Supported { body, filtered } => {
                        let manifests = index::parse(&body)?;
                        return Ok(match artifact_type {
                            Some(at) if !filtered => Listing {
                                manifests: index::filter(&manifests, at),
                                filtered: true,
                            },
                            _ => Listing {
                                manifests,
                                filtered,
                            },
                        });
                    }
                    UpstreamReferrers::Unsupported => Arc::new(Vec::new()),
                }
            }
            Support::Emulated => {
                let k = key(upstream, repo, subject);
                let tag = index::fallback_tag(subject);
                self.cache
                    .try_get_with(k, async { read_index(io, repo, &tag).await.map(Arc::new) })
                    .await
                    .map_err(|e: Arc<ReferrersError>| clone_error(&e))?
            }
        };
        Ok(match artifact_type {
            Some(at) => Listing {
                manifests: index::filter(&all, at),
                filtered: true,
            },
            None => Listing {
                manifests: all.as_ref().clone(),
                filtered: false,
            },
        })
    }

    /// Records a referrer pushed through the proxy in its subject's index (emulated
    /// upstreams only; a native one indexes its own pushes).
    pub async fn add(
        &self,
        upstream: &str,
        io: &dyn RegistryIo,
        repo: &str,
        pushed: &PushedReferrer,
    ) -> Result<(), ReferrersError> {
        let entry = pushed.descriptor.clone();
        self.update(upstream, io, repo, &pushed.subject, move |list| {
            index::upsert(list, &entry)
        })
        .await
    }

    /// Drops a deleted referrer from its subject's index.
    pub async fn remove(
        &self,
        upstream: &str,
        io: &dyn RegistryIo,
        repo: &str,
        subject: &Digest,
        referrer: &str,
    ) -> Result<(), ReferrersError> {
        let referrer = referrer.to_owned();
        self.update(upstream, io, repo, subject, move |list| {
            index::remove(list, &referrer)
        })
        .await
    }

    /// Forgets the cached index of `subject` (a referrer was written or deleted).
    pub async fn invalidate(&self, upstream: &str, repo: &str, subject: &Digest) {
        self.cache.invalidate(&key(upstream, repo, subject)).await;
    }

    /// Read, apply `op`, write, read back until the read-back already satisfies `op`
    /// (`op` changes nothing).
    async fn update<F>(
        &self,
        upstream: &str,
        io: &dyn RegistryIo,
        repo: &str,
        subject: &Digest,
        op: F,
    ) -> Result<(), ReferrersError>
    where
        F: Fn(&mut Vec<ReferrerDescriptor>) -> bool + Send + Sync,
    {
        let k = key(upstream, repo, subject);
        let lock = self
            .locks
            .get_with(k.clone(), || Arc::new(tokio::sync::Mutex::new(())));
        let _held = lock.lock().await;
        let tag = index::fallback_tag(subject);
        let result = async {
            let mut current = read_index(io, repo, &tag).await?;
            for attempt in 0..MAX_ATTEMPTS {
                if !op(&mut current) {
                    return Ok(());
                }
                io.put_manifest(
                    repo,
                    &tag,
                    INDEX_MEDIA_TYPE,
                    Bytes::from(index::render(&current)),
                )
                .await?;
                current = read_index(io, repo, &tag).await?;
                if !op(&mut current.clone()) {
                    return Ok(());
                }
                // Someone else wrote in between: back off a little (jittered by the
                // attempt and the subject, so two proxies do not retry in lock-step).
                let jitter = u64::from(subject.encoded().as_bytes()[0] % 7);
                tokio::time::sleep(Duration::from_millis(5 * u64::from(attempt + 1) + jitter))
                    .await;
            }
            Err(ReferrersError::Conflict(subject.to_string()))
        }
        .await;
        self.cache.invalidate(&k).await;
        result
    }
}

/// The index under `tag`; none yet is an empty index.
async fn read_index(
    io: &dyn RegistryIo,
    repo: &str,
    tag: &str,
) -> Result<Vec<ReferrerDescriptor>, ReferrersError> {
    match io.get_manifest(repo, tag, MAX_INDEX_BYTES).await? {
        None => Ok(Vec::new()),
        Some(m) => Ok(index::parse(&m.body)?),
    }
}

fn clone_error(e: &ReferrersError) -> ReferrersError {
    match e {
        ReferrersError::Io(e) => ReferrersError::Io(e.clone()),
        ReferrersError::Index(e) => ReferrersError::Index(e.clone()),
        ReferrersError::Conflict(s) => ReferrersError::Conflict(s.clone()),
    }
}
