//! Cached values.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::header::{
    HeaderMap, HeaderName, HeaderValue, CONTENT_LENGTH, CONTENT_TYPE, ETAG, LAST_MODIFIED,
};
use pingora::http::ResponseHeader;

use super::error::ManifestError;
use crate::oci::digest::{sha256_digest, verify_digest};

pub use crate::oci::headers::{
    DOCKER_CONTENT_DIGEST, DOCKER_DISTRIBUTION_API_VERSION, X_MARGO_CACHE as CACHE_STATUS_HEADER,
    X_REQUEST_ID as REQUEST_ID_HEADER,
};

/// Upstream response headers replayed on a hit, besides `Content-Length`
/// (always recomputed from the body). Everything else (dates, connection
/// management, upstream auth challenges) is per-response, not per-manifest.
pub fn replayed_headers() -> [&'static HeaderName; 5] {
    [
        &CONTENT_TYPE,
        &DOCKER_CONTENT_DIGEST,
        &ETAG,
        &DOCKER_DISTRIBUTION_API_VERSION,
        &LAST_MODIFIED,
    ]
}

/// A manifest as the upstream served it, verified against its digest.
///
/// The only constructors verify, so holding one (outside
/// [`super::UncacheableReason::UnsupportedAlgorithm`]) means the body matches
/// [`CachedManifest::digest`].
#[derive(Debug, Clone)]
pub struct CachedManifest {
    body: Bytes,
    digest: String,
    content_type: String,
    headers: HeaderMap,
    /// The 200 answer's headers, built once: a hit clones them instead of parsing
    /// and inserting each header again (a fifth of a hit's CPU otherwise). They
    /// hold `X-Margo-Cache: hit` and an `X-Request-Id` placeholder, so an answer
    /// replaces values in place and the map never grows.
    head: HeaderMap,
}

impl CachedManifest {
    /// Builds an entry from an upstream GET answer for `expected_digest`,
    /// refusing a body that hashes differently or has no content type.
    pub fn from_upstream(
        expected_digest: &str,
        body: Bytes,
        upstream_headers: &HeaderMap,
    ) -> Result<Self, ManifestError> {
        verify_digest(expected_digest, &body)?;
        Self::build(expected_digest.to_owned(), body, upstream_headers)
    }

    /// Builds an entry from an upstream GET by tag: the digest is the
    /// upstream's `Docker-Content-Digest` (verified) or, when absent, the
    /// canonical sha256 of the body.
    pub fn from_tag_response(
        body: Bytes,
        upstream_headers: &HeaderMap,
    ) -> Result<Self, ManifestError> {
        let named = upstream_headers
            .get(&DOCKER_CONTENT_DIGEST)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|s| !s.is_empty());
        match named {
            Some(d) => Self::from_upstream(d, body, upstream_headers),
            None => Self::build(sha256_digest(&body), body, upstream_headers),
        }
    }

    /// Builds without verification; only for answers that are served once and
    /// never cached (an algorithm we cannot compute).
    pub(crate) fn unverified(
        digest: &str,
        body: Bytes,
        upstream_headers: &HeaderMap,
    ) -> Result<Self, ManifestError> {
        Self::build(digest.to_owned(), body, upstream_headers)
    }

    fn build(digest: String, body: Bytes, upstream: &HeaderMap) -> Result<Self, ManifestError> {
        let content_type = upstream
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|s| s.contains('/'))
            .ok_or(ManifestError::MissingContentType)?
            .to_owned();
        let mut headers = HeaderMap::with_capacity(6);
        for name in replayed_headers() {
            for value in upstream.get_all(name) {
                headers.append(name.clone(), value.clone());
            }
        }
        headers.insert(CONTENT_LENGTH, HeaderValue::from(body.len()));
        let head = answer_headers(&headers);
        Ok(Self {
            body,
            digest,
            content_type,
            headers,
            head,
        })
    }

    /// The manifest bytes, exactly as received.
    pub fn body(&self) -> &Bytes {
        &self.body
    }

    /// The verified digest.
    pub fn digest(&self) -> &str {
        &self.digest
    }

    /// The upstream's `Content-Type`, used for Accept negotiation.
    pub fn content_type(&self) -> &str {
        &self.content_type
    }

    /// The upstream's `ETag`, if it sent one.
    pub fn etag(&self) -> Option<&HeaderValue> {
        self.headers.get(ETAG)
    }

    /// Headers to answer GET and HEAD hits with: the upstream's
    /// `Content-Type`, `Docker-Content-Digest`, `ETag`,
    /// `Docker-Distribution-Api-Version`, `Last-Modified` as received, and
    /// `Content-Length` of the body.
    pub fn headers(&self) -> &HeaderMap {
        &self.headers
    }

    /// The 200 head of one answer: [`Self::headers`], `X-Margo-Cache` (`hit`,
    /// `miss` or `stale`) and the request's `X-Request-Id`. Built from plain
    /// `http` parts, without a case map: names go out lowercase, as HTTP/2 sends
    /// them anyway, and HTTP header names are case-insensitive.
    pub fn response_head(
        &self,
        cache_status: super::CacheResult,
        request_id: &HeaderValue,
    ) -> ResponseHeader {
        let mut headers = self.head.clone();
        if cache_status != super::CacheResult::Hit {
            headers.insert(
                &CACHE_STATUS_HEADER,
                HeaderValue::from_static(cache_status.as_str()),
            );
        }
        headers.insert(&REQUEST_ID_HEADER, request_id.clone());
        let (mut parts, ()) = http::Response::new(()).into_parts();
        parts.headers = headers;
        ResponseHeader::from(parts)
    }

    /// The head of a `200` hit, with the placeholder request id [`Self::response_head`]
    /// replaces.
    pub fn answer_head(&self) -> &HeaderMap {
        &self.head
    }

    /// A deep copy whose body and header values share no reference counts with
    /// `self`: for [`super::front`], so that answering from it on one core does not
    /// write to memory other cores are reading.
    pub(crate) fn thread_copy(&self) -> Self {
        let copy_map = |map: &HeaderMap| {
            let mut out = HeaderMap::with_capacity(map.len());
            for (name, value) in map {
                let mut v =
                    HeaderValue::from_maybe_shared(Bytes::copy_from_slice(value.as_bytes()))
                        .unwrap_or_else(|_| value.clone());
                v.set_sensitive(value.is_sensitive());
                out.append(name.clone(), v);
            }
            out
        };
        Self {
            body: Bytes::copy_from_slice(&self.body),
            digest: self.digest.clone(),
            content_type: self.content_type.clone(),
            headers: copy_map(&self.headers),
            head: copy_map(&self.head),
        }
    }

    /// Bytes this entry accounts for in the cache budget.
    pub fn weight(&self) -> usize {
        let headers: usize = self
            .headers
            .iter()
            .map(|(n, v)| n.as_str().len() + v.len() + 32)
            .sum();
        self.body.len() + self.digest.len() + self.content_type.len() + headers
    }
}

fn answer_headers(headers: &HeaderMap) -> HeaderMap {
    let mut head = HeaderMap::with_capacity(headers.len() + 2);
    for (name, value) in headers {
        head.append(name.clone(), value.clone());
    }
    head.insert(&CACHE_STATUS_HEADER, HeaderValue::from_static("hit"));
    head.insert(&REQUEST_ID_HEADER, HeaderValue::from_static("-"));
    head
}

/// A cached tag → digest mapping.
#[derive(Debug, Clone)]
pub struct TagEntry {
    /// The digest the upstream last said the tag points to.
    pub digest: Arc<str>,
    /// When the upstream said so.
    pub fetched_at: Instant,
    /// When the last revalidation failed because the upstream was
    /// unreachable; used to avoid probing a dead upstream once per request.
    pub failed_at: Option<Instant>,
    /// The manifest `digest` names, once it has been served through this tag:
    /// a pull by tag then costs one cache lookup instead of two. Dropped with
    /// the mapping (digest invalidation removes every tag pointing at it).
    pub manifest: Option<Arc<CachedManifest>>,
}

impl PartialEq for TagEntry {
    /// The attached manifest is a shortcut to what `digest` names already.
    fn eq(&self, other: &Self) -> bool {
        self.digest == other.digest
            && self.fetched_at == other.fetched_at
            && self.failed_at == other.failed_at
    }
}

impl Eq for TagEntry {}

impl TagEntry {
    /// A mapping fetched just now.
    pub fn new(digest: impl Into<Arc<str>>, fetched_at: Instant) -> Self {
        Self {
            digest: digest.into(),
            fetched_at,
            failed_at: None,
            manifest: None,
        }
    }
}

/// What moka stores.
#[derive(Debug, Clone)]
pub(crate) enum Value {
    Manifest(Arc<CachedManifest>),
    Tag(TagEntry),
    /// A remembered 404, under either a digest or a tag key.
    NotFound,
}

/// Fixed cost per entry (moka node, Arc headers, hash table slot), so that a
/// flood of tiny tag or 404 entries is still bounded by `max_bytes`.
pub(crate) const ENTRY_OVERHEAD: usize = 128;

impl Value {
    pub(crate) fn weight(&self) -> usize {
        match self {
            Self::Manifest(m) => m.weight(),
            // An attached manifest is shared with its digest entry, but may
            // outlive it (eviction): count it, so the budget stays a bound.
            Self::Tag(t) => t.digest.len() + t.manifest.as_ref().map_or(0, |m| m.weight()),
            Self::NotFound => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::accept::OCI_MANIFEST;
    use crate::cache::error::DigestError;

    fn upstream_headers(digest: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(CONTENT_TYPE, HeaderValue::from_static(OCI_MANIFEST));
        h.insert(
            &DOCKER_CONTENT_DIGEST,
            HeaderValue::from_str(digest).expect("ascii"),
        );
        h.insert(
            ETAG,
            HeaderValue::from_str(&format!("\"{digest}\"")).expect("ascii"),
        );
        h.insert(CONTENT_LENGTH, HeaderValue::from_static("999"));
        h.insert(
            "date",
            HeaderValue::from_static("Mon, 01 Jan 2024 00:00:00 GMT"),
        );
        h
    }

    #[test]
    fn keeps_exactly_the_replayed_headers() {
        let body = Bytes::from_static(b"{\"schemaVersion\":2}");
        let d = sha256_digest(&body);
        let m = CachedManifest::from_upstream(&d, body.clone(), &upstream_headers(&d))
            .expect("valid manifest");
        assert_eq!(m.digest(), d);
        assert_eq!(m.content_type(), OCI_MANIFEST);
        assert_eq!(m.body(), &body);
        let h = m.headers();
        assert_eq!(
            h.get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()),
            Some("19")
        );
        assert!(h.get("date").is_none());
        assert_eq!(
            h.get(&DOCKER_CONTENT_DIGEST).and_then(|v| v.to_str().ok()),
            Some(d.as_str())
        );
        assert!(m.etag().is_some());
        assert_eq!(h.len(), 4);
        assert!(m.weight() > body.len());
    }

    #[test]
    fn refuses_mismatch_and_missing_content_type() {
        let body = Bytes::from_static(b"{}");
        let other = sha256_digest(b"other");
        assert!(matches!(
            CachedManifest::from_upstream(&other, body.clone(), &upstream_headers(&other)),
            Err(ManifestError::Digest(DigestError::Mismatch { .. }))
        ));
        let d = sha256_digest(&body);
        assert!(matches!(
            CachedManifest::from_upstream(&d, body, &HeaderMap::new()),
            Err(ManifestError::MissingContentType)
        ));
    }

    #[test]
    fn tag_response_uses_and_checks_the_upstream_digest() {
        let body = Bytes::from_static(b"{\"a\":1}");
        let d = sha256_digest(&body);
        let m = CachedManifest::from_tag_response(body.clone(), &upstream_headers(&d)).expect("ok");
        assert_eq!(m.digest(), d);
        let lying = upstream_headers(&sha256_digest(b"x"));
        assert!(CachedManifest::from_tag_response(body.clone(), &lying).is_err());
        let mut no_digest = HeaderMap::new();
        no_digest.insert(CONTENT_TYPE, HeaderValue::from_static(OCI_MANIFEST));
        let m = CachedManifest::from_tag_response(body, &no_digest).expect("ok");
        assert_eq!(m.digest(), d);
    }
}
