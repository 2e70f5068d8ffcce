//! Where the catalog reads packages from: the upstream registries, in the names clients
//! use. A trait so the index and crawl logic are tested without a network, and so the
//! implementation can move onto the shared upstream registry client without touching
//! them. Every request goes through the shared upstream registry client
//! ([`crate::upstream::registry`]).

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;

use crate::config::RouteKind;
use crate::margo::manifest::ManifestOptions;
use crate::oci::{Digest, RepoName};
use crate::upstream::registry::{Caller, RegistryError, Request};
use crate::upstream::routing::Router;
use crate::upstream::{credentials, Upstream};

/// Most pages of `_catalog` followed in one listing.
const MAX_PAGES: usize = 1000;
/// Largest listing page read.
const MAX_LISTING_BYTES: usize = 4 << 20;
/// Largest manifest read.
pub const MAX_MANIFEST_BYTES: u64 = 4 << 20;
/// Most tags read per repository.
const MAX_TAGS: usize = 100_000;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SourceError {
    #[error("not found")]
    NotFound,
    #[error("upstream: {0}")]
    Upstream(String),
    #[error("{what} is larger than {limit} bytes")]
    TooLarge { what: &'static str, limit: u64 },
    #[error("no app route serves `{0}`")]
    NotAnApp(String),
}

/// A manifest as fetched, with the digest of its bytes (computed, not trusted).
#[derive(Debug, Clone)]
pub struct FetchedManifest {
    pub bytes: Bytes,
    pub digest: Digest,
}

/// Read access to the packages of the `app` routes, by client repository name.
#[async_trait]
pub trait PackageSource: Send + Sync {
    /// Every repository of an `app` route the upstreams hold.
    async fn repositories(&self) -> Result<Vec<String>, SourceError>;
    async fn tags(&self, repo: &str) -> Result<Vec<String>, SourceError>;
    async fn manifest(&self, repo: &str, reference: &str) -> Result<FetchedManifest, SourceError>;
    /// A blob, refused past `max` bytes.
    async fn blob(&self, repo: &str, digest: &Digest, max: u64) -> Result<Bytes, SourceError>;
    /// The admission options of the route serving `repo`; `None` when it is not an
    /// `app` route.
    fn app_options(&self, repo: &str) -> Option<ManifestOptions>;
}

/// [`PackageSource`] over the proxy's upstreams and routes, with the proxy's own
/// upstream account.
pub struct UpstreamSource {
    pub upstreams: Vec<Arc<Upstream>>,
    pub router: Arc<Router>,
    /// Git upstreams are read from their mirrors, refused versions included (listed
    /// with their violations).
    pub git: Option<Arc<crate::git::source::GitSources>>,
}

impl UpstreamSource {
    /// The Git mirror behind `repo`'s route, and the repository's name there.
    fn git_mirror(&self, repo: &str) -> Option<(Arc<crate::git::source::Mirror>, String)> {
        let name = RepoName::parse(repo).ok()?;
        let m = self.router.route(&name).ok()?;
        let mirror = self.git.as_ref()?.of(m.route.upstream)?.clone();
        Some((mirror, m.upstream_name.as_str().to_owned()))
    }

    fn resolve(&self, repo: &str) -> Result<(Arc<Upstream>, String), SourceError> {
        let name = RepoName::parse(repo).map_err(|_| SourceError::NotAnApp(repo.to_owned()))?;
        let m = self
            .router
            .route(&name)
            .map_err(|_| SourceError::NotAnApp(repo.to_owned()))?;
        if m.route.kind != RouteKind::App {
            return Err(SourceError::NotAnApp(repo.to_owned()));
        }
        let upstream = self
            .upstreams
            .get(m.route.upstream)
            .cloned()
            .ok_or_else(|| SourceError::NotAnApp(repo.to_owned()))?;
        Ok((upstream, m.upstream_name.as_str().to_owned()))
    }

    /// The proxy's own account for reading `repo` (or the catalog when `None`).
    fn caller(repo: Option<&str>) -> Caller<'static> {
        Caller::proxy(credentials::scopes_for(
            &http::Method::GET,
            repo,
            None,
            repo.is_none(),
        ))
    }

    /// Follows `Link: <…>; rel="next"` pages of `_catalog`, collecting the names.
    async fn catalog(&self, upstream: &Upstream) -> Result<Vec<String>, SourceError> {
        let mut out = Vec::new();
        let mut next = Some("/v2/_catalog?n=1000".to_owned());
        let mut pages = 0;
        let caller = Self::caller(None);
        while let Some(path) = next.take() {
            pages += 1;
            if pages > MAX_PAGES {
                break;
            }
            let req = Request::new(http::Method::GET, path).max_body(MAX_LISTING_BYTES as u64);
            let resp = upstream
                .registry()
                .send(&caller, req)
                .await
                .map_err(upstream_error)?;
            match resp.status.as_u16() {
                200 => {}
                404 => return Ok(out),
                s => return Err(SourceError::Upstream(format!("_catalog: status {s}"))),
            }
            next = resp
                .headers
                .get(http::header::LINK)
                .and_then(|v| v.to_str().ok())
                .and_then(next_link);
            let v: serde_json::Value = serde_json::from_slice(&resp.body)
                .map_err(|e| SourceError::Upstream(format!("_catalog: {e}")))?;
            if let Some(items) = v.get("repositories").and_then(|x| x.as_array()) {
                out.extend(items.iter().filter_map(|i| i.as_str().map(str::to_owned)));
            }
        }
        Ok(out)
    }
}

fn upstream_error(e: RegistryError) -> SourceError {
    SourceError::Upstream(e.to_string())
}

/// The path of a `rel="next"` link (absolute URLs are reduced to path and query).
pub fn next_link(header: &str) -> Option<String> {
    let part = header.split(',').find(|p| p.contains("rel=\"next\""))?;
    let url = part.split_once('<')?.1.split_once('>')?.0;
    if url.starts_with('/') {
        return Some(url.to_owned());
    }
    let parsed = url::Url::parse(url).ok()?;
    Some(match parsed.query() {
        Some(q) => format!("{}?{q}", parsed.path()),
        None => parsed.path().to_owned(),
    })
}

#[async_trait]
impl PackageSource for UpstreamSource {
    async fn repositories(&self) -> Result<Vec<String>, SourceError> {
        let mut out = Vec::new();
        for (i, upstream) in self.upstreams.iter().enumerate() {
            let names = match self.git.as_ref().and_then(|g| g.of(i)) {
                Some(mirror) => mirror.catalog_repositories(),
                None => self.catalog(upstream).await?,
            };
            for n in names {
                if let Some(client) = self.router.client_name(i, &n) {
                    if self.resolve(&client).is_ok() {
                        out.push(client);
                    }
                }
            }
        }
        out.sort();
        out.dedup();
        Ok(out)
    }

    async fn tags(&self, repo: &str) -> Result<Vec<String>, SourceError> {
        let (upstream, name) = self.resolve(repo)?;
        if let Some((mirror, name)) = self.git_mirror(repo) {
            let tags: Vec<String> = mirror
                .catalog_tags(&name)
                .into_iter()
                .map(|t| t.0)
                .collect();
            return if tags.is_empty() {
                Err(SourceError::NotFound)
            } else {
                Ok(tags)
            };
        }
        upstream
            .registry()
            .tags_list(&Self::caller(Some(&name)), &name, MAX_TAGS)
            .await
            .map_err(upstream_error)?
            .ok_or(SourceError::NotFound)
    }

    async fn manifest(&self, repo: &str, reference: &str) -> Result<FetchedManifest, SourceError> {
        let (upstream, name) = self.resolve(repo)?;
        if let Some((mirror, name)) = self.git_mirror(repo) {
            return mirror
                .catalog_tags(&name)
                .into_iter()
                .find(|(t, d, _)| t == reference || d.to_string() == reference)
                .map(|(_, digest, bytes)| FetchedManifest { bytes, digest })
                .ok_or(SourceError::NotFound);
        }
        let m = upstream
            .registry()
            .manifest_get(
                &Self::caller(Some(&name)),
                &name,
                reference,
                MAX_MANIFEST_BYTES,
            )
            .await
            .map_err(upstream_error)?
            .ok_or(SourceError::NotFound)?;
        let digest = Digest::sha256_of(&m.body);
        Ok(FetchedManifest {
            bytes: m.body,
            digest,
        })
    }

    async fn blob(&self, repo: &str, digest: &Digest, max: u64) -> Result<Bytes, SourceError> {
        let (upstream, name) = self.resolve(repo)?;
        if let Some((mirror, _)) = self.git_mirror(repo) {
            let b = mirror.catalog_blob(digest).ok_or(SourceError::NotFound)?;
            if b.len() as u64 > max {
                return Err(SourceError::TooLarge {
                    what: "blob",
                    limit: max,
                });
            }
            return Ok(b);
        }
        upstream
            .registry()
            .blob_bytes(&Self::caller(Some(&name)), &name, digest, max)
            .await
            .map_err(upstream_error)?
            .ok_or(SourceError::NotFound)
    }

    fn app_options(&self, repo: &str) -> Option<ManifestOptions> {
        let name = RepoName::parse(repo).ok()?;
        let m = self.router.route(&name).ok()?;
        (m.route.kind == RouteKind::App).then(|| ManifestOptions {
            allow_index: m.route.allow_index,
            allow_referrers: m.route.allow_referrers,
            extra_tags: m.route.extra_tags.clone(),
            max_manifest_bytes: MAX_MANIFEST_BYTES as usize,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_link_forms() {
        assert_eq!(
            next_link(r#"</v2/_catalog?last=b&n=2>; rel="next""#),
            Some("/v2/_catalog?last=b&n=2".into())
        );
        assert_eq!(
            next_link(r#"<http://h:5000/v2/x/tags/list?last=1>; rel="next""#),
            Some("/v2/x/tags/list?last=1".into())
        );
        assert_eq!(next_link(r#"</v2/a>; rel="prev""#), None);
    }
}
