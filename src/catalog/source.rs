//! Where the catalog reads packages from: the upstream registries, in the names clients
//! use. A trait so the index and crawl logic are tested without a network, and so the
//! implementation can move onto the shared upstream registry client without touching
//! them.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};

use crate::config::RouteKind;
use crate::margo::manifest::ManifestOptions;
use crate::oci::{Digest, RepoName};
use crate::upstream::routing::Router;
use crate::upstream::{credentials, Upstream};

/// Most pages of `_catalog` or `tags/list` followed in one listing.
const MAX_PAGES: usize = 1000;
/// Largest listing page read.
const MAX_LISTING_BYTES: usize = 4 << 20;
/// Largest manifest read.
pub const MAX_MANIFEST_BYTES: u64 = 4 << 20;

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
}

impl UpstreamSource {
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

    async fn get(
        &self,
        upstream: &Upstream,
        path_and_query: &str,
        scope_repo: Option<&str>,
        accept: Option<&str>,
    ) -> Result<reqwest::Response, SourceError> {
        let mut req = upstream.http.get(upstream.url(path_and_query));
        if let Some(a) = accept {
            req = req.header(http::header::ACCEPT, a);
        }
        if let Some(creds) = &upstream.credentials {
            let scopes =
                credentials::scopes_for(&http::Method::GET, scope_repo, None, scope_repo.is_none());
            if let Some(a) = creds
                .authorization(&scopes)
                .await
                .map_err(|e| SourceError::Upstream(e.to_string()))?
            {
                req = req.header(http::header::AUTHORIZATION, a);
            }
        }
        let resp = req
            .send()
            .await
            .map_err(|e| SourceError::Upstream(e.to_string()))?;
        match resp.status().as_u16() {
            200..=299 | 307 | 302 => Ok(resp),
            404 => Err(SourceError::NotFound),
            s => Err(SourceError::Upstream(format!(
                "status {s} for {path_and_query}"
            ))),
        }
    }

    /// Follows `Link: <…>; rel="next"` pages of a listing, collecting `field`.
    async fn listing(
        &self,
        upstream: &Upstream,
        first: String,
        scope_repo: Option<&str>,
        field: &str,
    ) -> Result<Vec<String>, SourceError> {
        let mut out = Vec::new();
        let mut next = Some(first);
        let mut pages = 0;
        while let Some(path) = next.take() {
            pages += 1;
            if pages > MAX_PAGES {
                break;
            }
            let resp = self.get(upstream, &path, scope_repo, None).await?;
            next = resp
                .headers()
                .get(http::header::LINK)
                .and_then(|v| v.to_str().ok())
                .and_then(next_link);
            let body = read_capped(resp, MAX_LISTING_BYTES as u64, "listing").await?;
            let v: serde_json::Value = serde_json::from_slice(&body)
                .map_err(|e| SourceError::Upstream(format!("listing: {e}")))?;
            if let Some(items) = v.get(field).and_then(|x| x.as_array()) {
                out.extend(items.iter().filter_map(|i| i.as_str().map(str::to_owned)));
            }
        }
        Ok(out)
    }
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

async fn read_capped(
    mut resp: reqwest::Response,
    max: u64,
    what: &'static str,
) -> Result<Bytes, SourceError> {
    if resp.content_length().is_some_and(|l| l > max) {
        return Err(SourceError::TooLarge { what, limit: max });
    }
    let mut buf = BytesMut::new();
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| SourceError::Upstream(e.to_string()))?
    {
        if (buf.len() + chunk.len()) as u64 > max {
            return Err(SourceError::TooLarge { what, limit: max });
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf.freeze())
}

#[async_trait]
impl PackageSource for UpstreamSource {
    async fn repositories(&self) -> Result<Vec<String>, SourceError> {
        let mut out = Vec::new();
        for (i, upstream) in self.upstreams.iter().enumerate() {
            let names = self
                .listing(upstream, "/v2/_catalog?n=1000".into(), None, "repositories")
                .await?;
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
        self.listing(
            &upstream,
            format!("/v2/{name}/tags/list?n=1000"),
            Some(&name),
            "tags",
        )
        .await
    }

    async fn manifest(&self, repo: &str, reference: &str) -> Result<FetchedManifest, SourceError> {
        let (upstream, name) = self.resolve(repo)?;
        let resp = self
            .get(
                &upstream,
                &format!("/v2/{name}/manifests/{reference}"),
                Some(&name),
                Some("application/vnd.oci.image.manifest.v1+json"),
            )
            .await?;
        let bytes = read_capped(resp, MAX_MANIFEST_BYTES, "manifest").await?;
        let digest = Digest::sha256_of(&bytes);
        Ok(FetchedManifest { bytes, digest })
    }

    async fn blob(&self, repo: &str, digest: &Digest, max: u64) -> Result<Bytes, SourceError> {
        let (upstream, name) = self.resolve(repo)?;
        let mut resp = self
            .get(
                &upstream,
                &format!("/v2/{name}/blobs/{digest}"),
                Some(&name),
                None,
            )
            .await?;
        if resp.status().is_redirection() {
            // Object storage behind the registry: follow once, without our credentials.
            let to = resp
                .headers()
                .get(http::header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
                .ok_or_else(|| SourceError::Upstream("redirect without Location".into()))?;
            resp = upstream
                .http
                .get(to)
                .send()
                .await
                .map_err(|e| SourceError::Upstream(e.to_string()))?;
        }
        let bytes = read_capped(resp, max, "blob").await?;
        if !digest.verifies(&bytes) {
            return Err(SourceError::Upstream(format!(
                "blob {digest} does not match its digest"
            )));
        }
        Ok(bytes)
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
