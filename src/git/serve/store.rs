//! Where the Git endpoint reads packages: a small trait, so the history and protocol
//! code is tested without a network, and so Git-backed routes can be served through an
//! adapter. [`RegistryStore`] reads the `app` routes' upstreams through the one
//! registry client (by way of the catalog's [`UpstreamSource`]).

use async_trait::async_trait;
use bytes::Bytes;

use crate::catalog::source::{PackageSource, SourceError, UpstreamSource};
use crate::git::source::{GitSources, Mirror};
use crate::oci::{Digest, Reference};
use std::sync::Arc;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    #[error("repository or version not found")]
    NotFound,
    #[error("`{0}` is not a repository of an `app` route")]
    NotAnApp(String),
    #[error("upstream: {0}")]
    Upstream(String),
    #[error("{what} is larger than {limit} bytes")]
    TooLarge { what: &'static str, limit: u64 },
}

/// Read access to the packages of one kind of route, by client repository name.
#[async_trait]
pub trait PackageStore: Send + Sync {
    async fn tags(&self, repo: &str) -> Result<Vec<String>, StoreError>;
    /// The manifest a tag points at, with the digest of its bytes.
    async fn manifest(&self, repo: &str, tag: &str) -> Result<(Digest, Bytes), StoreError>;
    /// A blob, verified against its digest, refused past `max` bytes.
    async fn blob(&self, repo: &str, digest: &Digest, max: u64) -> Result<Bytes, StoreError>;
}

/// [`PackageStore`] over the upstream registries of the `app` routes.
pub struct RegistryStore {
    pub source: UpstreamSource,
    /// Git-backed routes are read from their mirrors (valid versions only), not over HTTP.
    pub git: Option<Arc<GitSources>>,
}

impl RegistryStore {
    fn mirror(&self, repo: &str) -> Option<(Arc<Mirror>, String)> {
        self.git.as_ref()?.resolve(&self.source.router, repo)
    }
}

fn from_source(e: SourceError) -> StoreError {
    match e {
        SourceError::NotFound => StoreError::NotFound,
        SourceError::NotAnApp(r) => StoreError::NotAnApp(r),
        SourceError::Upstream(s) => StoreError::Upstream(s),
        SourceError::TooLarge { what, limit } => StoreError::TooLarge { what, limit },
    }
}

#[async_trait]
impl PackageStore for RegistryStore {
    async fn tags(&self, repo: &str) -> Result<Vec<String>, StoreError> {
        if let Some((mirror, name)) = self.mirror(repo) {
            return mirror.tags(&name).ok_or(StoreError::NotFound);
        }
        self.source.tags(repo).await.map_err(from_source)
    }

    async fn manifest(&self, repo: &str, tag: &str) -> Result<(Digest, Bytes), StoreError> {
        if let Some((mirror, name)) = self.mirror(repo) {
            let reference = Reference::parse(tag).map_err(|_| StoreError::NotFound)?;
            let m = mirror
                .manifest(&name, &reference)
                .ok_or(StoreError::NotFound)?;
            return Ok((m.digest, m.bytes));
        }
        let m = self.source.manifest(repo, tag).await.map_err(from_source)?;
        Ok((m.digest, m.bytes))
    }

    async fn blob(&self, repo: &str, digest: &Digest, max: u64) -> Result<Bytes, StoreError> {
        if let Some((mirror, name)) = self.mirror(repo) {
            let b = mirror.blob(&name, digest).ok_or(StoreError::NotFound)?;
            if b.len() as u64 > max {
                return Err(StoreError::TooLarge {
                    what: "blob",
                    limit: max,
                });
            }
            return Ok(b);
        }
        self.source
            .blob(repo, digest, max)
            .await
            .map_err(from_source)
    }
}
