//! What a cached blob answers with besides its bytes: the upstream's
//! `Content-Type`, `Docker-Content-Digest`, `ETag` and `Content-Length`, as it gave them.

use http::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_LENGTH, CONTENT_TYPE, ETAG};
use pingora::http::ResponseHeader;
use serde::{Deserialize, Serialize};

use super::range::RangeAnswer;
use crate::cache::entry::{DOCKER_CONTENT_DIGEST, REQUEST_ID_HEADER};
use crate::oci::Digest;

/// Longest header value kept (a content type or an ETag is far shorter).
const MAX_VALUE: usize = 512;

/// The answer head of one blob, independent of the request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobHead {
    /// `Content-Type` as the upstream sent it (registries send `application/octet-stream`).
    pub content_type: String,
    /// `Docker-Content-Digest` as the upstream sent it; always equal to the blob's digest
    /// (a head naming another digest is never cached).
    pub digest: String,
    /// `ETag`, when the upstream sent one.
    pub etag: Option<String>,
    /// Blob length: the upstream's `Content-Length`, checked against the bytes received.
    pub len: u64,
}

/// Why an upstream answer cannot be cached.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeadError {
    #[error("no Content-Length")]
    NoLength,
    #[error("Content-Encoding {0:?}: the bytes sent are not the blob")]
    Encoded(String),
    #[error("Docker-Content-Digest {0:?} is not the digest asked for")]
    OtherDigest(String),
    #[error("header value too long or not text")]
    BadValue,
}

impl BlobHead {
    /// The head of an upstream `200` for `digest`, or why it must not be cached.
    pub fn from_upstream(digest: &Digest, headers: &HeaderMap) -> Result<Self, HeadError> {
        let text = |name: &HeaderName| -> Result<Option<String>, HeadError> {
            match headers.get(name) {
                None => Ok(None),
                Some(v) if v.len() <= MAX_VALUE => v
                    .to_str()
                    .map(|s| Some(s.to_owned()))
                    .map_err(|_| HeadError::BadValue),
                Some(_) => Err(HeadError::BadValue),
            }
        };
        if let Some(enc) = text(&http::header::CONTENT_ENCODING)? {
            if !enc.eq_ignore_ascii_case("identity") {
                return Err(HeadError::Encoded(enc));
            }
        }
        let len = text(&CONTENT_LENGTH)?
            .and_then(|l| l.trim().parse::<u64>().ok())
            .ok_or(HeadError::NoLength)?;
        let wanted = digest.to_string();
        let named = text(&DOCKER_CONTENT_DIGEST)?;
        if let Some(d) = &named {
            if d.trim() != wanted {
                return Err(HeadError::OtherDigest(d.clone()));
            }
        }
        Ok(Self {
            content_type: text(&CONTENT_TYPE)?
                .unwrap_or_else(|| "application/octet-stream".to_owned()),
            digest: named.map_or(wanted, |d| d.trim().to_owned()),
            etag: text(&ETAG)?,
            len,
        })
    }

    /// The head to answer with (`200`, `206` or `416`), with `X-Margo-Cache: hit` and
    /// `X-Margo-Cache-Tier` (`memory` or `disk`).
    pub fn response(
        &self,
        range: RangeAnswer,
        tier: &'static str,
        request_id: &HeaderValue,
    ) -> pingora::Result<ResponseHeader> {
        let (status, length) = match range {
            RangeAnswer::Partial { start, end } => (206, end - start + 1),
            RangeAnswer::Unsatisfiable => (416, 0),
            RangeAnswer::Whole | RangeAnswer::PassThrough => (200, self.len),
        };
        let mut resp = ResponseHeader::build(status, Some(9))?;
        if status != 416 {
            resp.insert_header(CONTENT_TYPE, self.content_type.as_str())?;
        }
        resp.insert_header(CONTENT_LENGTH, length.to_string())?;
        resp.insert_header(&DOCKER_CONTENT_DIGEST, self.digest.as_str())?;
        if let Some(e) = &self.etag {
            resp.insert_header(ETAG, e.as_str())?;
        }
        resp.insert_header(http::header::ACCEPT_RANGES, "bytes")?;
        match range {
            RangeAnswer::Partial { start, end } => resp.insert_header(
                http::header::CONTENT_RANGE,
                format!("bytes {start}-{end}/{}", self.len),
            )?,
            RangeAnswer::Unsatisfiable => {
                resp.insert_header(http::header::CONTENT_RANGE, format!("bytes */{}", self.len))?
            }
            _ => {}
        }
        resp.insert_header(
            crate::oci::headers::DOCKER_DISTRIBUTION_API_VERSION.as_str(),
            crate::oci::headers::API_VERSION_VALUE,
        )?;
        // Spelled as the per-thread front spells them (lowercase), so that a hit reads
        // the same whichever tier answered it.
        resp.insert_header(&crate::oci::headers::X_MARGO_CACHE, "hit")?;
        resp.insert_header(&crate::oci::headers::X_MARGO_CACHE_TIER, tier)?;
        resp.insert_header(&REQUEST_ID_HEADER, request_id.clone())?;
        Ok(resp)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest() -> Digest {
        Digest::sha256_of(b"hello")
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).expect("value"));
        }
        h
    }

    #[test]
    fn keeps_the_upstream_values() {
        let d = digest();
        let h = headers(&[
            ("content-type", "application/vnd.margo.app.icon.v1+png"),
            ("content-length", "5"),
            ("docker-content-digest", &d.to_string()),
            ("etag", "\"x\""),
        ]);
        let head = BlobHead::from_upstream(&d, &h).expect("cacheable");
        assert_eq!(head.content_type, "application/vnd.margo.app.icon.v1+png");
        assert_eq!(head.len, 5);
        let r = head
            .response(
                RangeAnswer::Whole,
                "memory",
                &HeaderValue::from_static("id"),
            )
            .expect("head");
        assert_eq!(r.status, 200);
        assert_eq!(r.headers["content-length"], "5");
        assert_eq!(r.headers["docker-content-digest"], d.to_string().as_str());
        assert_eq!(
            r.headers["content-type"],
            "application/vnd.margo.app.icon.v1+png"
        );
        let r = head
            .response(
                RangeAnswer::Partial { start: 1, end: 2 },
                "memory",
                &HeaderValue::from_static("id"),
            )
            .expect("head");
        assert_eq!(r.status, 206);
        assert_eq!(r.headers["content-length"], "2");
        assert_eq!(r.headers["content-range"], "bytes 1-2/5");
        let r = head
            .response(
                RangeAnswer::Unsatisfiable,
                "memory",
                &HeaderValue::from_static("id"),
            )
            .expect("head");
        assert_eq!(r.status, 416);
        assert_eq!(r.headers["content-range"], "bytes */5");
    }

    #[test]
    fn refuses_what_is_not_the_blob() {
        let d = digest();
        assert_eq!(
            BlobHead::from_upstream(&d, &headers(&[])),
            Err(HeadError::NoLength)
        );
        let other = Digest::sha256_of(b"other").to_string();
        assert!(matches!(
            BlobHead::from_upstream(
                &d,
                &headers(&[("content-length", "5"), ("docker-content-digest", &other)])
            ),
            Err(HeadError::OtherDigest(_))
        ));
        assert!(matches!(
            BlobHead::from_upstream(
                &d,
                &headers(&[("content-length", "5"), ("content-encoding", "gzip")])
            ),
            Err(HeadError::Encoded(_))
        ));
        let plain =
            BlobHead::from_upstream(&d, &headers(&[("content-length", "5")])).expect("cacheable");
        assert_eq!(plain.content_type, "application/octet-stream");
        assert_eq!(plain.digest, d.to_string());
    }
}
