//! A Git repository as an upstream (`upstreams[].git`): mirrored (on start, every
//! `fetch_interval`, and on a webhook), read into a [`snapshot::Snapshot`] of Margo
//! Application Packages, and served read-only through the OCI API by the proxy
//! itself (`crate::proxy::git`), without an HTTP upstream.
//!
//! The read API ([`GitSources::repositories`], [`GitSources::tags`],
//! [`GitSources::manifest`], [`GitSources::blob`]) speaks in the upstream's repository
//! names (routes rewrite client names to them, as for registries); the catalog reads
//! [`GitSources::catalog_tags`] and [`GitSources::refusals`], which include the versions
//! refused, with their violations.

pub mod config;
pub mod fetch;
pub mod hook;
pub mod metrics;
pub mod snapshot;

use std::sync::mpsc;
use std::sync::{Arc, Mutex, RwLock};

use bytes::Bytes;

pub use config::GitConfig;
use snapshot::{Refusal, Snapshot, MANIFEST_MEDIA_TYPE};

use crate::auth::secret::Secret;
use crate::oci::{Digest, Reference};

/// A manifest as served.
#[derive(Debug, Clone)]
pub struct Manifest {
    pub digest: Digest,
    pub media_type: &'static str,
    pub bytes: Bytes,
}

/// One Git upstream: its configuration, its latest snapshot, and the trigger of its
/// fetch thread.
pub struct Mirror {
    pub upstream: String,
    config: GitConfig,
    source: fetch::Source,
    snapshot: RwLock<Arc<Snapshot>>,
    /// `true` once a first snapshot was read (readiness).
    ready: std::sync::atomic::AtomicBool,
    trigger: Mutex<Option<mpsc::SyncSender<()>>>,
    pub webhook_secret: Option<Secret>,
    metrics: metrics::GitMetrics,
    /// Called (on the fetch thread) after a refresh changed what the tags point at.
    listeners: Mutex<Vec<ChangeListener>>,
}

/// What wants to hear that a mirror's versions changed (the catalog re-indexes).
pub type ChangeListener = Arc<dyn Fn() + Send + Sync>;

impl Mirror {
    fn new(
        upstream: &str,
        config: &GitConfig,
        metrics: metrics::GitMetrics,
    ) -> Result<Self, String> {
        config
            .validate()
            .map_err(|e| format!("upstream `{upstream}`: {e}"))?;
        Ok(Self {
            upstream: upstream.to_owned(),
            source: fetch::Source::new(config, upstream).map_err(|e| e.to_string())?,
            webhook_secret: config.webhook_secret()?,
            config: config.clone(),
            snapshot: RwLock::new(Arc::new(Snapshot::default())),
            ready: Default::default(),
            trigger: Mutex::new(None),
            metrics,
            listeners: Mutex::new(Vec::new()),
        })
    }

    /// The repository name of a single-application repository.
    fn single_name(&self) -> &str {
        self.config.name.as_deref().unwrap_or(&self.upstream)
    }

    pub fn snapshot(&self) -> Arc<Snapshot> {
        match self.snapshot.read() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Fetches and reads the repository once, replacing the snapshot; a failure keeps
    /// the previous one (a remote that is down does not empty the registry).
    pub fn refresh(&self) -> Result<(), String> {
        let started = std::time::Instant::now();
        let result = self
            .source
            .update()
            .map_err(|e| e.to_string())
            .and_then(|repo| snapshot::read(&repo, &self.config, self.single_name()));
        let snap = match result {
            Ok(s) => s,
            Err(e) => {
                self.metrics.fetch(&self.upstream, "error");
                tracing::warn!(upstream = %self.upstream, remote = %self.source.shown(), error = %e, "git: refresh failed; serving the previous snapshot");
                return Err(e);
            }
        };
        self.metrics.fetch(&self.upstream, "ok");
        let old = self.snapshot();
        for r in &snap.refused {
            let known = old
                .refused
                .iter()
                .any(|o| o.git_tag == r.git_tag && o.reason == r.reason);
            if !known {
                self.metrics.refused(&self.upstream, r);
                tracing::warn!(
                    upstream = %self.upstream, repository = %r.repository, git_tag = %r.git_tag,
                    reason = %r.reason,
                    violations = ?r.violations.iter().map(|v| v.message.as_str()).collect::<Vec<_>>(),
                    "git: version not served"
                );
            }
        }
        let served: usize = snap.repos.values().map(|r| r.tags.len()).sum();
        self.metrics
            .versions(&self.upstream, served, snap.refused.len());
        tracing::info!(upstream = %self.upstream, served, refused = snap.refused.len(),
            elapsed_ms = started.elapsed().as_millis() as u64, "git: snapshot read");
        match self.snapshot.write() {
            Ok(mut g) => *g = Arc::new(snap),
            Err(p) => *p.into_inner() = Arc::new(snap),
        }
        self.ready.store(true, std::sync::atomic::Ordering::Release);
        Ok(())
    }

    /// Asks the fetch thread for a refresh now (a webhook); `false` when one is
    /// already queued (it will see the new state anyway).
    pub fn trigger(&self) -> bool {
        let guard = match self.trigger.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        match guard.as_ref() {
            Some(tx) => tx.try_send(()).is_ok(),
            None => false,
        }
    }

    /// Refreshes now, then every `fetch_interval` or when triggered, on a thread of
    /// its own (fetching and reading are blocking work).
    fn spawn(self: &Arc<Self>) -> std::io::Result<()> {
        let (tx, rx) = mpsc::sync_channel::<()>(1);
        match self.trigger.lock() {
            Ok(mut g) => *g = Some(tx),
            Err(p) => *p.into_inner() = Some(tx),
        }
        let me = self.clone();
        std::thread::Builder::new()
            .name(format!("git-{}", self.upstream))
            .spawn(move || loop {
                let _ = me.refresh();
                match rx.recv_timeout(me.config.fetch_interval) {
                    Ok(()) | Err(mpsc::RecvTimeoutError::Timeout) => {}
                    Err(mpsc::RecvTimeoutError::Disconnected) => return,
                }
            })?;
        Ok(())
    }
}

/// Every Git upstream, by the proxy's upstream index.
#[derive(Default)]
pub struct GitSources {
    mirrors: Vec<Option<Arc<Mirror>>>,
}

impl GitSources {
    /// The mirrors the config asks for (`None` when no upstream is a Git one).
    pub fn from_config(
        config: &crate::config::Config,
        registry: &prometheus::Registry,
    ) -> Result<Option<Arc<Self>>, String> {
        if config.upstreams.iter().all(|u| u.value.git.is_none()) {
            return Ok(None);
        }
        let metrics =
            metrics::GitMetrics::new(registry).map_err(|e| format!("git metrics: {e}"))?;
        let mirrors = config
            .upstreams
            .iter()
            .map(|u| match &u.value.git {
                Some(g) => Mirror::new(&u.value.name, g, metrics.clone())
                    .map(Arc::new)
                    .map(Some),
                None => Ok(None),
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Some(Arc::new(Self { mirrors })))
    }

    /// Registers `f` with every mirror (before [`Self::spawn`]).
    pub fn on_change(&self, f: ChangeListener) {
        for m in self.mirrors.iter().flatten() {
            match m.listeners.lock() {
                Ok(mut g) => g.push(f.clone()),
                Err(p) => p.into_inner().push(f.clone()),
            }
        }
    }

    /// Starts every mirror's fetch thread.
    pub fn spawn(&self) -> std::io::Result<()> {
        for m in self.mirrors.iter().flatten() {
            m.spawn()?;
        }
        Ok(())
    }

    /// The mirror behind upstream `index`, if it is a Git one.
    pub fn of(&self, index: usize) -> Option<&Arc<Mirror>> {
        self.mirrors.get(index).and_then(Option::as_ref)
    }

    pub fn by_name(&self, upstream: &str) -> Option<&Arc<Mirror>> {
        self.mirrors
            .iter()
            .flatten()
            .find(|m| m.upstream == upstream)
    }

    pub fn mirrors(&self) -> impl Iterator<Item = &Arc<Mirror>> {
        self.mirrors.iter().flatten()
    }

    /// The mirror serving a client repository name and the name there (`None`: not
    /// routed to a Git upstream). For callers holding client names (`git clone`).
    pub fn resolve(
        &self,
        router: &crate::upstream::routing::Router,
        client_repo: &str,
    ) -> Option<(Arc<Mirror>, String)> {
        let name = crate::oci::RepoName::parse(client_repo).ok()?;
        let m = router.route(&name).ok()?;
        let mirror = self.of(m.route.upstream)?.clone();
        Some((mirror, m.upstream_name.as_str().to_owned()))
    }

    /// Every served repository of every Git upstream, in client names.
    pub fn client_repositories(&self, router: &crate::upstream::routing::Router) -> Vec<String> {
        let mut out: Vec<String> = self
            .mirrors
            .iter()
            .enumerate()
            .filter_map(|(i, m)| Some((i, m.as_ref()?)))
            .flat_map(|(i, m)| {
                m.repositories()
                    .into_iter()
                    .filter_map(move |n| router.client_name(i, &n))
            })
            .collect();
        out.sort();
        out
    }
}

/// The read API of one mirror, in upstream repository names.
impl Mirror {
    /// Repositories with at least one served version.
    pub fn repositories(&self) -> Vec<String> {
        self.snapshot().repos.keys().cloned().collect()
    }

    /// Served tags, sorted; `None`: no such repository.
    pub fn tags(&self, repo: &str) -> Option<Vec<String>> {
        self.snapshot()
            .repos
            .get(repo)
            .map(|r| r.tags.keys().cloned().collect())
    }

    pub fn manifest(&self, repo: &str, reference: &Reference) -> Option<Manifest> {
        let snap = self.snapshot();
        let r = snap.repos.get(repo)?;
        let digest = match reference {
            Reference::Tag(t) => r.tags.get(t)?.clone(),
            Reference::Digest(d) => r.tags.values().find(|x| *x == d)?.clone(),
        };
        let bytes = snap.manifests.get(&digest)?.clone();
        Some(Manifest {
            digest,
            media_type: MANIFEST_MEDIA_TYPE,
            bytes,
        })
    }

    /// A blob one of the repository's served manifests names.
    pub fn blob(&self, repo: &str, digest: &Digest) -> Option<Bytes> {
        let snap = self.snapshot();
        if !snap.repos.get(repo)?.blobs.contains(digest) {
            return None;
        }
        snap.blobs.get(digest).cloned()
    }

    /// Versions refused, with why (log, metrics, catalog, admin status).
    pub fn refusals(&self) -> Vec<Refusal> {
        self.snapshot().refused.clone()
    }

    /// For the catalog: served tags and refused ones that got as far as a manifest
    /// (tag → manifest digest and bytes), so refused versions are listed with their
    /// violations.
    pub fn catalog_tags(&self, repo: &str) -> Vec<(String, Digest, Bytes)> {
        let snap = self.snapshot();
        let mut out: Vec<(String, Digest, Bytes)> = Vec::new();
        if let Some(r) = snap.repos.get(repo) {
            for (t, d) in &r.tags {
                if let Some(b) = snap.manifests.get(d) {
                    out.push((t.clone(), d.clone(), b.clone()));
                }
            }
        }
        for f in snap.refused.iter().filter(|f| f.repository == repo) {
            if let Some((d, b)) = &f.manifest {
                out.push((f.tag.clone(), d.clone(), b.clone()));
            }
        }
        out
    }

    /// For the catalog: repositories with a served version or a refused one that got
    /// as far as a manifest.
    pub fn catalog_repositories(&self) -> Vec<String> {
        let snap = self.snapshot();
        let mut out: Vec<String> = snap.repos.keys().cloned().collect();
        out.extend(
            snap.refused
                .iter()
                .filter(|r| r.manifest.is_some())
                .map(|r| r.repository.clone()),
        );
        out.sort();
        out.dedup();
        out
    }

    /// For the catalog: any blob of the snapshot (served or refused packages).
    pub fn catalog_blob(&self, digest: &Digest) -> Option<Bytes> {
        self.snapshot().blobs.get(digest).cloned()
    }
}
