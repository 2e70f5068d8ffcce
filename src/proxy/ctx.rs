//! What the proxy learns about one request as it passes the Pingora phases.

use std::time::Instant;

use http::HeaderValue;

use crate::cache::CacheResult;
use crate::oci::{OciRoute, Operation};
use crate::upstream::deadline::HeaderDeadline;
use crate::upstream::forward::Forward;

/// Per-request state. Fields are filled phase by phase; `None` means "not reached".
pub struct RequestCtx {
    pub started: Instant,
    pub request_id: RequestId,
    pub operation: Operation,
    pub route: Option<OciRoute>,
    pub forward: Option<Forward>,
    /// The `Host` the client used (for `X-Forwarded-Host` and URL rewriting); a
    /// header value, so keeping it costs no allocation on requests that never use it.
    pub client_host: Option<HeaderValue>,
    /// `https` when the client came in over TLS.
    pub client_tls: bool,
    /// Replacement `Authorization` for the upstream (the proxy's own credentials).
    pub upstream_authorization: Option<String>,
    /// Set when the proxy answered itself (no upstream involved, or re-issued).
    pub answered_status: Option<u16>,
    /// Why the proxy refused, for the access log.
    pub refusal: Option<String>,
    pub upstream_started: Option<Instant>,
    pub upstream_elapsed: Option<std::time::Duration>,
    /// Response body held back to be rewritten (tags list of a renamed repository).
    pub body_rewrite: Option<bytes::BytesMut>,
    /// How the manifest cache or the blob cache answered, when one did.
    pub cache_result: Option<CacheResult>,
    /// Who is asking, once the auth layer has decided (absent when auth is off).
    pub principal: Option<std::sync::Arc<crate::auth::Principal>>,
    /// The policy rule that denied the request (sent as a header, for HEAD).
    pub policy_denied_rule: Option<String>,
    /// A body that replaces the upstream's (a policy denial after the headers came).
    pub body_replacement: Option<bytes::Bytes>,
    /// The streamed upstream exchange's response-head deadline (see [`HeaderDeadline`]).
    pub header_deadline: Option<HeaderDeadline>,
    /// A blob GET/HEAD the blob cache learns from (see `proxy::blob`).
    pub blob: Option<super::blob::BlobRequest>,
    /// This request leads the fill of its blob until its answer is known.
    pub blob_lead: Option<crate::cache::blob::LeadGuard>,
    /// The fill being teed from this response's body.
    pub blob_fill: Option<crate::cache::blob::Fill>,
    /// The subject of a referrer being deleted (its index drops it after the delete).
    pub referrer_subject: Option<crate::oci::Digest>,
    /// What the trust policy found for the manifest pulled (for the pull policy).
    pub trust_verdict: Option<std::sync::Arc<crate::trust::Verdict>>,
}

impl RequestCtx {
    pub fn new() -> Self {
        RequestCtx {
            started: Instant::now(),
            request_id: RequestId::default(),
            operation: Operation::Other,
            route: None,
            forward: None,
            client_host: None,
            client_tls: false,
            upstream_authorization: None,
            answered_status: None,
            refusal: None,
            upstream_started: None,
            upstream_elapsed: None,
            body_rewrite: None,
            cache_result: None,
            principal: None,
            policy_denied_rule: None,
            body_replacement: None,
            header_deadline: None,
            blob: None,
            blob_lead: None,
            blob_fill: None,
            referrer_subject: None,
            trust_verdict: None,
        }
    }

    /// Where clients reach the proxy, e.g. `https://registry.example.com`: the
    /// configured public URL, else scheme and `Host` as the client used them.
    /// Built only when a URL is rewritten, not on every request.
    pub fn public_base(&self, configured: Option<&str>) -> String {
        match (configured, self.client_host()) {
            (Some(u), _) => u.to_owned(),
            (None, Some(h)) => {
                format!("{}://{h}", if self.client_tls { "https" } else { "http" })
            }
            (None, None) => String::new(),
        }
    }

    /// The client's `Host`, if it is text.
    pub fn client_host(&self) -> Option<&str> {
        self.client_host.as_ref().and_then(|h| h.to_str().ok())
    }

    pub fn repository(&self) -> Option<&str> {
        self.route
            .as_ref()
            .and_then(|r| r.name())
            .map(|n| n.as_str())
    }

    pub fn reference(&self) -> Option<String> {
        match &self.route {
            Some(OciRoute::Manifest { reference, .. }) => Some(reference.to_string()),
            Some(OciRoute::Blob { digest, .. }) | Some(OciRoute::Referrers { digest, .. }) => {
                Some(digest.to_string())
            }
            _ => None,
        }
    }
}

impl Default for RequestCtx {
    fn default() -> Self {
        Self::new()
    }
}

/// A request's id: short printable ASCII, so it is a valid header value and a safe log
/// field. Kept as a header value because every answer carries it.
#[derive(Debug, Clone)]
pub struct RequestId(HeaderValue);

impl RequestId {
    pub fn as_str(&self) -> &str {
        // Only ever built from printable ASCII, which `to_str` accepts.
        self.0.to_str().unwrap_or_default()
    }

    pub fn header_value(&self) -> &HeaderValue {
        &self.0
    }
}

impl Default for RequestId {
    fn default() -> Self {
        RequestId(HeaderValue::from_static("-"))
    }
}

impl std::fmt::Display for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Accept a caller's request id when it is short and printable, else make one: ids end up
/// in logs and headers, so they must not carry control characters or megabytes.
pub fn request_id(incoming: Option<&HeaderValue>) -> RequestId {
    match incoming {
        Some(id) if kept(id.as_bytes()) => RequestId(id.clone()),
        _ => new_request_id(),
    }
}

/// [`request_id`] for an id read from a raw head.
pub fn request_id_from_bytes(incoming: Option<&[u8]>) -> RequestId {
    match incoming
        .filter(|id| kept(id))
        .and_then(|id| HeaderValue::from_bytes(id).ok())
    {
        Some(id) => RequestId(id),
        None => new_request_id(),
    }
}

fn kept(id: &[u8]) -> bool {
    !id.is_empty() && id.len() <= 128 && id.iter().all(|b| b.is_ascii_graphic())
}

fn new_request_id() -> RequestId {
    let mut buf = uuid::Uuid::encode_buffer();
    let id = uuid::Uuid::new_v4().hyphenated().encode_lower(&mut buf);
    // A hyphenated UUID is always a valid header value.
    RequestId(HeaderValue::from_str(id).unwrap_or_else(|_| HeaderValue::from_static("-")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_sanitised() {
        let id = |s: &str| request_id(Some(&HeaderValue::from_str(s).expect("valid header")));
        assert_eq!(id("abc-123").as_str(), "abc-123");
        assert_ne!(id("evil log line").as_str(), "evil log line");
        assert_eq!(id(&"x".repeat(500)).as_str().len(), 36);
        assert_eq!(request_id(None).as_str().len(), 36);
        assert_eq!(request_id_from_bytes(Some(b"abc-123")).as_str(), "abc-123");
        assert_eq!(request_id_from_bytes(Some(b"a b")).as_str().len(), 36);
        assert_eq!(request_id_from_bytes(None).as_str().len(), 36);
        assert_ne!(request_id(None).as_str(), request_id(None).as_str());
    }
}
