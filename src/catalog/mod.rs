//! The application catalog: what the registry holds, for WFMs (JSON under
//! `/margo/v1/`) and operators (HTML under `/catalog/`), and the parameter step of the
//! specification (`configuration:validate`).
//!
//! - [`index`]: repository → versions, built from the upstream through a
//!   [`source::PackageSource`], with the same margo checks as admission;
//! - [`query`]: search, filters, pagination;
//! - [`configure`]: values against `configuration.schema`, resolved targets;
//! - [`api`] and [`web`]: the answers, as plain data for the proxy glue to write;
//! - [`markdown`]: release notes rendered with raw HTML escaped.
//!
//! Freshness: pushes and deletes through the proxy update the index at once
//! ([`Catalog::on_manifest_put`], [`Catalog::on_manifest_delete`]); a crawl at start-up
//! and every `crawl_interval` picks up what was pushed to the upstream directly.

pub mod api;
pub mod config;
pub mod configure;
pub mod index;
pub mod markdown;
pub mod pack;
pub mod push;
pub mod query;
pub mod source;
pub mod web;

use std::sync::{Arc, RwLock};

pub use config::CatalogConfig;
use index::{load_version, Index};
use source::{PackageSource, SourceError};

use crate::oci::Digest;

/// The catalog service: the index and where it comes from.
pub struct Catalog {
    index: RwLock<Arc<Index>>,
    source: Arc<dyn PackageSource>,
    config: CatalogConfig,
}

/// What a crawl did, for the log and tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CrawlStats {
    pub repositories: usize,
    pub versions: usize,
    pub errors: usize,
}

/// The catalog the config asks for (`None` when off), reading the proxy's upstreams.
pub fn from_config(
    config: &crate::config::Config,
    upstreams: &[Arc<crate::upstream::Upstream>],
    git: Option<Arc<crate::git::source::GitSources>>,
) -> Result<Option<Arc<Catalog>>, String> {
    if !config.catalog.enabled {
        return Ok(None);
    }
    let source = source::UpstreamSource {
        upstreams: upstreams.to_vec(),
        router: Arc::new(crate::upstream::routing::Router::from_config(config)?),
        git,
    };
    Ok(Some(Arc::new(Catalog::new(
        config.catalog.clone(),
        Arc::new(source),
    ))))
}

impl Catalog {
    pub fn new(config: CatalogConfig, source: Arc<dyn PackageSource>) -> Self {
        Self {
            index: RwLock::new(Arc::new(Index::default())),
            source,
            config,
        }
    }

    /// A consistent snapshot for one request.
    pub fn snapshot(&self) -> Arc<Index> {
        match self.index.read() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    fn update(&self, f: impl FnOnce(&mut Index)) {
        let mut guard = match self.index.write() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        let mut next = (**guard).clone();
        f(&mut next);
        *guard = Arc::new(next);
    }

    /// A manifest was pushed through the proxy under `reference` (a tag: a package
    /// version; a digest: not listed until tagged).
    pub async fn on_manifest_put(&self, repo: &str, reference: &str) {
        if self.source.app_options(repo).is_none() || reference.parse::<Digest>().is_ok() {
            return;
        }
        match load_version(self.source.as_ref(), repo, reference).await {
            Ok(Some(entry)) => self.update(|i| i.upsert(entry)),
            Ok(None) => self.update(|i| i.remove_tag(repo, reference)),
            Err(e) => {
                tracing::warn!(repository = repo, reference, error = %e, "catalog: could not index a pushed package")
            }
        }
    }

    /// A manifest was deleted through the proxy.
    pub fn on_manifest_delete(&self, repo: &str, reference: &str) {
        match reference.parse::<Digest>() {
            Ok(d) => self.update(|i| i.remove_digest(repo, &d)),
            Err(_) => self.update(|i| i.remove_tag(repo, reference)),
        }
    }

    /// Reads every app repository from the upstream, at most `crawl_rps` requests per
    /// second, and replaces the index with what it found. A repository that fails to
    /// list keeps what the index had.
    pub async fn crawl(&self) -> Result<CrawlStats, SourceError> {
        let pause = self.config.crawl_pause();
        let pace = || tokio::time::sleep(pause);
        let mut stats = CrawlStats::default();
        let repos = self.source.repositories().await?;
        let mut found = std::collections::BTreeSet::new();
        for repo in &repos {
            pace().await;
            let tags = match self.source.tags(repo).await {
                Ok(t) => t,
                Err(SourceError::NotFound) => Vec::new(),
                Err(e) => {
                    tracing::warn!(repository = %repo, error = %e, "catalog crawl: tags");
                    stats.errors += 1;
                    found.insert(repo.clone());
                    continue;
                }
            };
            let mut versions = Vec::new();
            for tag in tags {
                pace().await;
                match load_version(self.source.as_ref(), repo, &tag).await {
                    Ok(Some(v)) => versions.push(v),
                    Ok(None) | Err(SourceError::NotFound) => {}
                    Err(e) => {
                        tracing::warn!(repository = %repo, tag, error = %e, "catalog crawl: version");
                        stats.errors += 1;
                        // Keep what we had for this tag rather than drop it on a glitch.
                        if let Some(old) = self
                            .snapshot()
                            .repos
                            .get(repo)
                            .and_then(|r| r.version(&tag))
                        {
                            versions.push((**old).clone());
                        }
                    }
                }
            }
            if !versions.is_empty() {
                stats.repositories += 1;
                stats.versions += versions.len();
            }
            found.insert(repo.clone());
            self.update(|i| i.replace_repo(repo, versions));
        }
        self.update(|i| i.repos.retain(|name, _| found.contains(name)));
        Ok(stats)
    }

    /// Crawls now and then every `crawl_interval`, for the life of the process, on a
    /// thread and runtime of its own (it starts before Pingora's runtimes exist).
    pub fn spawn_crawler(self: &Arc<Self>) -> std::io::Result<()> {
        let me = self.clone();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        std::thread::Builder::new()
            .name("catalog-crawl".into())
            .spawn(move || {
                rt.block_on(async move {
                    loop {
                        match me.crawl().await {
                            Ok(s) => tracing::info!(
                                repositories = s.repositories,
                                versions = s.versions,
                                errors = s.errors,
                                "catalog crawl done"
                            ),
                            Err(e) => tracing::warn!(error = %e, "catalog crawl failed"),
                        }
                        tokio::time::sleep(me.config.crawl_interval).await;
                    }
                })
            })?;
        Ok(())
    }
}
