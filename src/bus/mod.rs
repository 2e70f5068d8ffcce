//! Replicas that agree: every cache invalidation a replica makes (a push or delete
//! through it) or learns of (its upstream's own notification) is applied locally and
//! announced on a Redis/Valkey pub/sub channel, where every other replica applies it.
//!
//! The bus is an accelerator, never a dependency: with it down, replicas serve on,
//! stale for at most the tag TTL, and flush their tag entries once it is back (they
//! may have missed messages). Messages are HMAC-authenticated ([`message`]), so a
//! stray publisher on the Redis network cannot flush caches.

pub mod config;
pub mod events;
pub mod message;
pub mod metrics;
mod worker;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;

use crate::cache::{ManifestCache, RepoKey};
pub use config::{BusConfig, EventsConfig};
pub use message::Invalidation;
use metrics::{BusMetrics, Source};
pub use worker::BusWorker;

/// Invalidations queued for the bus at most; past it they are dropped (and their
/// repositories remembered, see [`Missed`]) rather than slowing requests down.
const OUTBOX_CAPACITY: usize = 4096;
/// Repositories remembered for a recovery announcement; past it, `AllTags`.
const MAX_MISSED: usize = 1024;

/// Invalidations that never reached the bus: announced as repository flushes as soon
/// as it is reachable again, so other replicas do not wait for the TTL.
#[derive(Debug, Default)]
struct Missed {
    repositories: BTreeSet<(String, String)>,
    overflowed: bool,
}

impl Missed {
    fn remember(&mut self, inv: &Invalidation) {
        match inv.target() {
            Some(_) if self.repositories.len() >= MAX_MISSED => self.overflowed = true,
            Some((u, r)) => {
                self.repositories.insert((u.to_owned(), r.to_owned()));
            }
            None => self.overflowed = true,
        }
    }

    fn take(&mut self) -> Vec<Invalidation> {
        let missed = std::mem::take(self);
        if missed.overflowed {
            return vec![Invalidation::AllTags];
        }
        missed
            .repositories
            .into_iter()
            .map(|(upstream, repository)| Invalidation::Repository {
                upstream,
                repository,
            })
            .collect()
    }
}

/// Where a replica's bus stands, for `/readyz` and metrics.
#[derive(Debug, Default)]
pub struct BusStatus {
    enabled: bool,
    connected: AtomicBool,
}

impl BusStatus {
    /// `None` without a bus; else whether the subscription is up.
    pub fn connected(&self) -> Option<bool> {
        self.enabled.then(|| self.connected.load(Ordering::Acquire))
    }
}

/// The one place cache invalidations go through.
pub struct Coherence {
    cache: Option<Arc<ManifestCache>>,
    /// Configured upstream names: messages about others (another deployment on the
    /// same channel) match no cache entry and are skipped.
    upstreams: Vec<String>,
    outbox: Option<mpsc::Sender<Invalidation>>,
    missed: Arc<Mutex<Missed>>,
    pub status: Arc<BusStatus>,
    pub metrics: Arc<BusMetrics>,
}

impl Coherence {
    /// Without a bus config, invalidations are local only and no worker is returned.
    pub fn new(
        cache: Option<Arc<ManifestCache>>,
        upstreams: Vec<String>,
        registry: &prometheus::Registry,
        bus: Option<&BusConfig>,
    ) -> Result<(Arc<Self>, Option<BusWorker>), String> {
        let metrics = Arc::new(BusMetrics::new(registry).map_err(|e| format!("bus metrics: {e}"))?);
        let status = Arc::new(BusStatus {
            enabled: bus.is_some(),
            connected: AtomicBool::new(false),
        });
        let missed = Arc::new(Mutex::new(Missed::default()));
        let (outbox, worker) = match bus {
            None => (None, None),
            Some(cfg) => {
                let (tx, rx) = mpsc::channel(OUTBOX_CAPACITY);
                (Some(tx), Some(BusWorker::new(cfg, rx)?))
            }
        };
        let coherence = Arc::new(Self {
            cache,
            upstreams,
            outbox,
            missed,
            status,
            metrics,
        });
        Ok((coherence, worker))
    }

    /// Applies an invalidation to this replica's caches only.
    pub async fn apply(&self, inv: &Invalidation, source: Source) {
        let Some(cache) = &self.cache else {
            return;
        };
        let repo = match inv.target() {
            Some((u, r)) if self.upstreams.iter().any(|n| n == u) => Some(RepoKey::new(u, r)),
            Some(_) => return,
            None => None,
        };
        match (inv, repo) {
            (Invalidation::ManifestPut { reference, .. }, Some(repo)) => {
                cache.on_manifest_put(&repo, reference).await
            }
            (Invalidation::ManifestDelete { reference, .. }, Some(repo)) => {
                cache.on_manifest_delete(&repo, reference).await
            }
            (_, repo) => cache.flush_tags(repo.as_ref()).await,
        }
        self.metrics.invalidated(source, 1);
    }

    /// Applies an invalidation here and announces it to the other replicas. Never
    /// waits for the bus: a full outbox drops the message and remembers its
    /// repository for the recovery announcement.
    pub async fn announce(&self, inv: Invalidation) {
        self.apply(&inv, Source::Local).await;
        self.publish(inv);
    }

    fn publish(&self, inv: Invalidation) {
        let Some(outbox) = &self.outbox else {
            return;
        };
        if let Err(e) = outbox.try_send(inv) {
            let inv = match e {
                mpsc::error::TrySendError::Full(i) | mpsc::error::TrySendError::Closed(i) => i,
            };
            self.remember_missed(&inv);
            self.metrics.message("sent", "dropped");
        }
    }

    fn remember_missed(&self, inv: &Invalidation) {
        if let Ok(mut m) = self.missed.lock() {
            m.remember(inv);
        }
    }

    fn take_missed(&self) -> Vec<Invalidation> {
        self.missed.lock().map(|mut m| m.take()).unwrap_or_default()
    }

    /// An upstream's notification: every invalidation it implies, applied and
    /// announced. Returns how many were applied.
    pub async fn upstream_event(
        &self,
        format: events::EventFormat,
        upstream: &str,
        ce_type: Option<&str>,
        body: &[u8],
    ) -> Result<usize, events::EventError> {
        let parsed = match events::parse(format, upstream, ce_type, body) {
            Ok(p) => p,
            Err(e) => {
                self.metrics.event(format.as_str(), "rejected");
                return Err(e);
            }
        };
        let n = parsed.invalidations.len();
        for inv in parsed.invalidations {
            self.apply(&inv, Source::Event).await;
            self.publish(inv);
        }
        self.metrics
            .event(format.as_str(), if n == 0 { "ignored" } else { "applied" });
        Ok(n)
    }

    /// Whether `upstream` is one of the config's upstream names.
    pub fn knows_upstream(&self, upstream: &str) -> bool {
        self.upstreams.iter().any(|n| n == upstream)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missed_repositories_become_flushes_or_all_tags() {
        let mut m = Missed::default();
        let put = |r: &str| Invalidation::ManifestPut {
            upstream: "hub".into(),
            repository: r.into(),
            reference: "1".into(),
        };
        m.remember(&put("a"));
        m.remember(&put("a"));
        m.remember(&put("b"));
        assert_eq!(
            m.take(),
            vec![
                Invalidation::Repository {
                    upstream: "hub".into(),
                    repository: "a".into()
                },
                Invalidation::Repository {
                    upstream: "hub".into(),
                    repository: "b".into()
                },
            ]
        );
        assert!(m.take().is_empty());
        for i in 0..=MAX_MISSED {
            m.remember(&put(&format!("r{i}")));
        }
        assert_eq!(m.take(), vec![Invalidation::AllTags]);
    }

    #[tokio::test]
    async fn a_full_outbox_drops_without_blocking() {
        let registry = prometheus::Registry::new();
        let cfg: BusConfig = serde_saphyr::from_str(
            "url: redis://127.0.0.1:1\nsecret: 0123456789abcdef0123456789abcdef\n",
        )
        .expect("parses");
        let (c, _worker) =
            Coherence::new(None, vec!["hub".into()], &registry, Some(&cfg)).expect("builds");
        // The worker never runs: the outbox fills, then drops and remembers.
        for i in 0..OUTBOX_CAPACITY + 10 {
            c.announce(Invalidation::ManifestPut {
                upstream: "hub".into(),
                repository: format!("r{}", i % 3),
                reference: "1".into(),
            })
            .await;
        }
        assert_eq!(c.take_missed().len(), 3);
    }
}
