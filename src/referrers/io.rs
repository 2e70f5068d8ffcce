//! The few registry calls the referrers and trust logic make, behind a small trait so
//! the logic does not depend on how the upstream is reached. [`UpstreamIo`] is the
//! implementation over the one registry client (`upstream::registry`): credentials
//! resolved when a call is sent, 401 handling, one deadline, loud body limits.

use async_trait::async_trait;
use bytes::Bytes;
use http::{HeaderValue, Method};

use crate::oci::Digest;
use crate::upstream::credentials::Scopes;
use crate::upstream::registry::{Auth, Caller, RegistryError, Request};
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

/// On whose behalf the referrers and trust side calls go upstream.
#[derive(Debug, Clone)]
pub enum IoAuth {
    /// The proxy's own account (scopes for the repository asked per call).
    Account,
    /// The client's own `Authorization`, passed on (no proxy account, no proxy auth).
    Client(HeaderValue),
    /// No credentials at all.
    Anonymous,
}

/// [`RegistryIo`] over the registry client of one upstream.
pub struct UpstreamIo<'a> {
    pub upstream: &'a Upstream,
    pub auth: IoAuth,
}

impl UpstreamIo<'_> {
    fn caller(&self, repo: &str, push: bool) -> Caller<'_> {
        match &self.auth {
            IoAuth::Account => {
                let actions = if push { "pull,push" } else { "pull" };
                Caller {
                    auth: Auth::Account(Scopes::Listed(vec![format!(
                        "repository:{repo}:{actions}"
                    )])),
                    ..Caller::default()
                }
            }
            IoAuth::Client(h) => Caller {
                auth: Auth::Client(h),
                ..Caller::default()
            },
            IoAuth::Anonymous => Caller::default(),
        }
    }
}

fn io_error(e: RegistryError) -> IoError {
    match e {
        RegistryError::Status { status, .. } => IoError::Status(status),
        RegistryError::TooLarge { limit, .. } => IoError::TooLarge(limit),
        e => IoError::Unreachable(e.to_string()),
    }
}

#[async_trait]
impl RegistryIo for UpstreamIo<'_> {
    async fn get_manifest(
        &self,
        repo: &str,
        reference: &str,
        max: u64,
    ) -> Result<Option<FetchedManifest>, IoError> {
        let caller = self.caller(repo, false);
        let m = self
            .upstream
            .registry()
            .manifest_get(&caller, repo, reference, max)
            .await
            .map_err(io_error)?;
        Ok(m.map(|m| FetchedManifest {
            content_type: m
                .headers
                .get(http::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned(),
            body: m.body,
        }))
    }

    async fn put_manifest(
        &self,
        repo: &str,
        reference: &str,
        media_type: &str,
        body: Bytes,
    ) -> Result<(), IoError> {
        let caller = self.caller(repo, true);
        let ct = HeaderValue::from_str(media_type)
            .map_err(|_| IoError::Unreachable(format!("media type `{media_type}`")))?;
        let r = self
            .upstream
            .registry()
            .manifest_put(
                &caller,
                &format!("/v2/{repo}/manifests/{reference}"),
                Some(&ct),
                body,
                64 * 1024,
            )
            .await
            .map_err(io_error)?;
        if r.status.is_success() {
            Ok(())
        } else {
            Err(IoError::Status(r.status.as_u16()))
        }
    }

    async fn get_blob(
        &self,
        repo: &str,
        digest: &Digest,
        max: u64,
    ) -> Result<Option<Bytes>, IoError> {
        let caller = self.caller(repo, false);
        self.upstream
            .registry()
            .blob_bytes(&caller, repo, digest, max)
            .await
            .map_err(io_error)
    }

    async fn get_referrers(
        &self,
        repo: &str,
        subject: &Digest,
        artifact_type: Option<&str>,
        max: u64,
    ) -> Result<UpstreamReferrers, IoError> {
        let caller = self.caller(repo, false);
        let mut path = format!("/v2/{repo}/referrers/{subject}");
        if let Some(t) = artifact_type {
            path.push_str("?artifactType=");
            path.extend(url::form_urlencoded::byte_serialize(t.as_bytes()));
        }
        let r = self
            .upstream
            .registry()
            .send(&caller, Request::new(Method::GET, path).max_body(max))
            .await
            .map_err(io_error)?;
        let is_index = r
            .headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|ct| ct.starts_with(INDEX_MEDIA_TYPE));
        let filtered = r
            .headers
            .get("oci-filters-applied")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.split(',').any(|f| f.trim() == "artifactType"));
        match r.status.as_u16() {
            200 if is_index => Ok(UpstreamReferrers::Supported {
                body: r.body,
                filtered,
            }),
            // Distribution 2.8 answers 404 `page not found` for the unknown route; some
            // registries answer 405 or 400 UNSUPPORTED. None of them is an index.
            200 | 400 | 404 | 405 => Ok(UpstreamReferrers::Unsupported),
            s => Err(IoError::Status(s)),
        }
    }
}
