//! The few registry calls the referrers and trust logic make, behind a small trait so
//! the logic does not depend on how the upstream is reached. [`UpstreamIo`] is the
//! implementation over the upstream's side-channel HTTP client (the one admission and
//! the manifest cache use); it is the one place to re-point at the shared registry
//! client of `src/upstream/` once that exists.

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};

use crate::oci::Digest;
use crate::upstream::Upstream;

use super::index::INDEX_MEDIA_TYPE;

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum IoError {
    #[error("upstream unreachable: {0}")]
    Unreachable(String),
    #[error("upstream answered {0}")]
    Status(u16),
    #[error("upstream answer larger than {0} bytes")]
    TooLarge(u64),
}

/// A manifest as the upstream served it.
#[derive(Debug, Clone)]
pub struct FetchedManifest {
    pub content_type: String,
    pub body: Bytes,
}

/// The upstream's answer to `GET /v2/<name>/referrers/<digest>`.
#[derive(Debug, Clone)]
pub enum UpstreamReferrers {
    /// It has the API: the index it answered, and whether it applied the filter.
    Supported { body: Bytes, filtered: bool },
    /// `404` (or another answer that is not an index): no referrers API.
    Unsupported,
}

#[async_trait]
pub trait RegistryIo: Send + Sync {
    /// `Ok(None)` for 404.
    async fn get_manifest(
        &self,
        repo: &str,
        reference: &str,
        max: u64,
    ) -> Result<Option<FetchedManifest>, IoError>;
    async fn put_manifest(
        &self,
        repo: &str,
        reference: &str,
        media_type: &str,
        body: Bytes,
    ) -> Result<(), IoError>;
    /// `Ok(None)` for 404.
    async fn get_blob(
        &self,
        repo: &str,
        digest: &Digest,
        max: u64,
    ) -> Result<Option<Bytes>, IoError>;
    async fn get_referrers(
        &self,
        repo: &str,
        subject: &Digest,
        artifact_type: Option<&str>,
        max: u64,
    ) -> Result<UpstreamReferrers, IoError>;
}

/// [`RegistryIo`] over an upstream's side-channel client, with the `Authorization`
/// the request at hand may use there (the proxy's account, or the client's own).
pub struct UpstreamIo<'a> {
    pub upstream: &'a Upstream,
    pub authorization: Option<String>,
}

impl UpstreamIo<'_> {
    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let mut r = self.upstream.http.request(method, self.upstream.url(path));
        if let Some(a) = &self.authorization {
            r = r.header(http::header::AUTHORIZATION, a.as_str());
        }
        r
    }
}

async fn read_capped(mut r: reqwest::Response, max: u64) -> Result<Bytes, IoError> {
    let mut body = BytesMut::new();
    while let Some(chunk) = r
        .chunk()
        .await
        .map_err(|e| IoError::Unreachable(e.to_string()))?
    {
        if (body.len() + chunk.len()) as u64 > max {
            return Err(IoError::TooLarge(max));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

fn send_error(e: reqwest::Error) -> IoError {
    IoError::Unreachable(e.to_string())
}

#[async_trait]
impl RegistryIo for UpstreamIo<'_> {
    async fn get_manifest(
        &self,
        repo: &str,
        reference: &str,
        max: u64,
    ) -> Result<Option<FetchedManifest>, IoError> {
        let r = self
            .request(
                reqwest::Method::GET,
                &format!("/v2/{repo}/manifests/{reference}"),
            )
            .header(http::header::ACCEPT, crate::cache::FULL_ACCEPT)
            .send()
            .await
            .map_err(send_error)?;
        match r.status().as_u16() {
            200 => {}
            404 => return Ok(None),
            s => return Err(IoError::Status(s)),
        }
        let content_type = r
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        Ok(Some(FetchedManifest {
            content_type,
            body: read_capped(r, max).await?,
        }))
    }

    async fn put_manifest(
        &self,
        repo: &str,
        reference: &str,
        media_type: &str,
        body: Bytes,
    ) -> Result<(), IoError> {
        let r = self
            .request(
                reqwest::Method::PUT,
                &format!("/v2/{repo}/manifests/{reference}"),
            )
            .header(http::header::CONTENT_TYPE, media_type)
            .body(body)
            .send()
            .await
            .map_err(send_error)?;
        if r.status().is_success() {
            Ok(())
        } else {
            Err(IoError::Status(r.status().as_u16()))
        }
    }

    async fn get_blob(
        &self,
        repo: &str,
        digest: &Digest,
        max: u64,
    ) -> Result<Option<Bytes>, IoError> {
        let r = self
            .request(reqwest::Method::GET, &format!("/v2/{repo}/blobs/{digest}"))
            .send()
            .await
            .map_err(send_error)?;
        match r.status().as_u16() {
            200 => {}
            404 => return Ok(None),
            s => return Err(IoError::Status(s)),
        }
        if r.content_length().is_some_and(|l| l > max) {
            return Err(IoError::TooLarge(max));
        }
        Ok(Some(read_capped(r, max).await?))
    }

    async fn get_referrers(
        &self,
        repo: &str,
        subject: &Digest,
        artifact_type: Option<&str>,
        max: u64,
    ) -> Result<UpstreamReferrers, IoError> {
        let mut req = self.request(
            reqwest::Method::GET,
            &format!("/v2/{repo}/referrers/{subject}"),
        );
        if let Some(at) = artifact_type {
            req = req.query(&[("artifactType", at)]);
        }
        let r = req.send().await.map_err(send_error)?;
        let status = r.status().as_u16();
        let is_index = r
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|ct| ct.starts_with(INDEX_MEDIA_TYPE));
        let filtered = r
            .headers()
            .get("oci-filters-applied")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.split(',').any(|f| f.trim() == "artifactType"));
        match status {
            200 if is_index => Ok(UpstreamReferrers::Supported {
                body: read_capped(r, max).await?,
                filtered,
            }),
            // Distribution 2.8 answers 404 `page not found` for the unknown route; some
            // registries answer 405 or 400 UNSUPPORTED. None of them is an index.
            200 | 400 | 404 | 405 => Ok(UpstreamReferrers::Unsupported),
            s => Err(IoError::Status(s)),
        }
    }
}
