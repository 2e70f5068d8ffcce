//! The express lane: warm-cache pulls answered at the connection, before Pingora.
//!
//! A cached manifest or small blob is the bulk of what a fleet of WFMs asks for, and
//! its answer is already built. Going through Pingora's proxy for it costs more than
//! the answer itself: per request, Pingora boxes a 13 KB future (and copies it), parses
//! the head into an `http` request, builds and serializes a response header, runs every
//! phase through a boxed `async_trait` call and arms a keep-alive timer. Under load
//! that was the difference between margo-proxy and nginx's `proxy_cache` (README,
//! performance). This lane answers such hits from the complete head that
//! [`crate::downstream::guard`] already holds, with the same bytes the proxy would
//! have sent, the same access-log line and the same metrics.
//!
//! It only runs where a hit needs no per-request decision besides the route and the
//! caller's grant: no policies, no trust policy, no Git upstreams, no staging (see
//! [`Express::for_state`]); and only for the plainest requests ([`request`]). With
//! client auth on, the grant is the one [`crate::auth::Authenticator::authorize`]
//! gives, taken only when memory decides it (an anonymous pull, or a token verified
//! before): authorization still runs before the cache. Anything else, refusals and
//! every miss included, is Pingora's: the lane declines and Pingora reads the same
//! head as if the lane did not exist.

pub mod request;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::HeaderMap;

use crate::auth::{Principal, Target};
use crate::cache::{negotiate_values, CacheResult, Negotiation};
use crate::logging::access::AccessRecord;
use crate::metrics::RequestRecord;
use crate::oci::{OciRoute, Operation, Reference};
use crate::proxy::ctx::{request_id_from_bytes, RequestId};
use crate::proxy::ProxyState;
use request::Method;

/// Answers cache hits for one proxy's state.
pub struct Express {
    state: Arc<ProxyState>,
}

/// An answer written into the caller's buffer, and what its log line and metrics need.
pub struct Answered {
    /// The body to send after the head (empty for `HEAD`).
    pub body: Bytes,
    method: Method,
    operation: Operation,
    route: OciRoute,
    matched: crate::upstream::routing::RouteMatch,
    request_id: RequestId,
    cache: CacheResult,
    /// Who was let through, when client auth is on.
    principal: Option<Arc<Principal>>,
}

impl Express {
    /// The lane for `state`, when `enabled` and nothing configured needs a per-request
    /// decision on a cache hit beyond the auth grant.
    pub fn for_state(state: &Arc<ProxyState>, enabled: bool) -> Option<Self> {
        let s = state;
        let caches = s.cache.is_some() || s.blobs.is_some();
        let decisions =
            s.policy.is_some() || s.trust.is_some() || s.git.is_some() || s.staging.is_some();
        (enabled && caches && !decisions).then(|| Express {
            state: state.clone(),
        })
    }

    /// The answer to one complete request head, written to `out` (status line and
    /// header fields; the body is [`Answered::body`]), when it is a hit of this
    /// thread's cache fronts. `None`: Pingora's to answer; `out` is then untouched.
    pub fn answer(&self, head: &[u8], out: &mut Vec<u8>) -> Option<Answered> {
        let req = request::parse(head)?;
        let parsed = OciRoute::parse(req.path);
        let operation = Operation::of(&parsed, &req.method.http());
        let route = parsed.ok()?;
        let name = route.name()?;
        let principal = match &self.state.auth {
            // Without proxy auth, a client's own credentials go upstream, where they
            // may see what others may not: never answered from the shared cache.
            None if req.authorization.is_some() => return None,
            None => None,
            Some(auth) => {
                let target = Target::Repository {
                    name: name.as_str(),
                    mount_from: None,
                };
                Some(auth.authorize_cached(&req.method.http(), &target, req.authorization)?)
            }
        };
        let matched = self.state.router.route(name).ok()?;
        let upstream = self.state.upstreams.get(matched.route.upstream)?;
        let upstream_name = matched.upstream_name.as_str();
        let (head_fields, body, cache) = match &route {
            OciRoute::Manifest { reference, .. } => {
                let cache = self.state.cache.as_ref()?;
                // An `Accept` that rules the entry out is Pingora's (it proxies), and
                // must not count as a hit here too.
                let serves = |m: &crate::cache::CachedManifest| {
                    negotiate_values(|| req.accept(), m.content_type()) == Negotiation::Serve
                };
                let hit = match reference {
                    Reference::Tag(tag) => {
                        cache.front_hit_if(&upstream.name, upstream_name, &[tag.as_str()], serves)
                    }
                    Reference::Digest(d) => {
                        let parts = [d.algorithm().as_str(), ":", d.encoded()];
                        cache.front_hit_if(&upstream.name, upstream_name, &parts, serves)
                    }
                }?;
                let head = hit.answer_head().clone();
                (head, hit.body().clone(), CacheResult::Hit)
            }
            OciRoute::Blob { digest, .. } => {
                let blobs = self.state.blobs.as_ref()?;
                let head_only = req.method == Method::Head;
                let hit = blobs.front_hit(&upstream.name, upstream_name, digest, |len| {
                    if head_only {
                        0
                    } else {
                        len
                    }
                })?;
                (hit.head, hit.body, CacheResult::BlobMemory)
            }
            _ => return None,
        };
        let request_id = request_id_from_bytes(req.request_id);
        write_head(&head_fields, &request_id, out);
        Some(Answered {
            body: if req.method == Method::Head {
                Bytes::new()
            } else {
                body
            },
            method: req.method,
            operation,
            matched,
            route,
            request_id,
            cache,
            principal,
        })
    }

    /// Logs and counts an answer as the proxy's `logging` phase does. `sent`: the
    /// whole answer went out.
    pub fn finished(
        &self,
        answered: Answered,
        peer: Option<SocketAddr>,
        started: Instant,
        sent: bool,
    ) {
        let total = started.elapsed();
        let bytes_out = if sent { answered.body.len() } else { 0 };
        self.state.metrics.express_answer();
        if let (Some(auth), Some(principal)) = (&self.state.auth, &answered.principal) {
            auth.count_cached_grant(principal);
            self.state.metrics.auth_granted(principal.anonymous);
        }
        let method = answered.method.http();
        self.state.metrics.observe_request(&RequestRecord {
            operation: answered.operation.as_str(),
            method: &method,
            status: 200,
            duration: total,
            upstream_duration: None,
            bytes_received: 0,
            bytes_sent: bytes_out as u64,
            repository: Some(answered.matched.upstream_name.as_str()),
        });
        if crate::logging::access_enabled() {
            crate::logging::log_access(AccessRecord {
                at: std::time::SystemTime::now(),
                request_id: answered.request_id,
                client_ip: peer.map(|p| p.ip()),
                principal: answered.principal,
                method,
                operation: answered.operation,
                route: Some(answered.route),
                status: 200,
                bytes_in: 0,
                bytes_out,
                total,
                upstream: None,
                cache: Some(answered.cache),
                refusal: None,
                error: (!sent).then(|| "client connection failed mid-answer".to_owned()),
            });
        }
    }
}

/// A `200` head as Pingora writes the proxy's cached answers: the entry's fields, the
/// request id, `Date` and `Connection`, names title-cased as Pingora does for the
/// standard ones it knows.
fn write_head(fields: &HeaderMap, request_id: &RequestId, out: &mut Vec<u8>) {
    out.extend_from_slice(b"HTTP/1.1 200 OK\r\n");
    let mut field = |name: &[u8], value: &[u8]| {
        out.extend_from_slice(name);
        out.extend_from_slice(b": ");
        out.extend_from_slice(value);
        out.extend_from_slice(b"\r\n");
    };
    let mut id_written = false;
    for (name, value) in fields {
        if name == crate::cache::entry::REQUEST_ID_HEADER {
            // As `HeaderMap::insert` does on the Pingora path: ours replaces it, in place.
            id_written = true;
            field(
                name.as_str().as_bytes(),
                request_id.header_value().as_bytes(),
            );
            continue;
        }
        field(titled(name).as_bytes(), value.as_bytes());
    }
    if !id_written {
        field(
            crate::cache::entry::REQUEST_ID_HEADER.as_str().as_bytes(),
            request_id.header_value().as_bytes(),
        );
    }
    let date = pingora::protocols::http::date::get_cached_date();
    field(b"Date", date.as_bytes());
    field(b"Connection", b"keep-alive");
    out.extend_from_slice(b"\r\n");
}

/// Pingora's title case for the standard names it knows (`pingora_http`); others go
/// out as stored (lowercase).
fn titled(name: &http::HeaderName) -> &str {
    use http::header as h;
    match *name {
        h::ACCEPT_RANGES => "Accept-Ranges",
        h::AGE => "Age",
        h::CACHE_CONTROL => "Cache-Control",
        h::CONNECTION => "Connection",
        h::CONTENT_TYPE => "Content-Type",
        h::CONTENT_ENCODING => "Content-Encoding",
        h::CONTENT_LENGTH => "Content-Length",
        h::DATE => "Date",
        h::TRANSFER_ENCODING => "Transfer-Encoding",
        h::HOST => "Host",
        h::SERVER => "Server",
        h::SET_COOKIE => "Set-Cookie",
        _ => name.as_str(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn heads_are_written_as_pingora_writes_them() {
        let mut fields = HeaderMap::new();
        fields.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        fields.insert(
            "docker-content-digest",
            HeaderValue::from_static("sha256:00"),
        );
        fields.insert(http::header::CONTENT_LENGTH, HeaderValue::from(2));
        let id = request_id_from_bytes(Some(b"r-1"));
        let mut out = Vec::new();
        write_head(&fields, &id, &mut out);
        let text = String::from_utf8(out).expect("ascii");
        let lines: Vec<&str> = text.split("\r\n").collect();
        assert_eq!(lines[0], "HTTP/1.1 200 OK");
        assert_eq!(lines[1], "Content-Type: application/json");
        assert_eq!(lines[2], "docker-content-digest: sha256:00");
        assert_eq!(lines[3], "Content-Length: 2");
        assert_eq!(lines[4], "x-request-id: r-1");
        assert!(lines[5].starts_with("Date: ") && lines[5].ends_with(" GMT"));
        assert_eq!(lines[6], "Connection: keep-alive");
        assert!(text.ends_with("\r\n\r\n"));
    }

    #[test]
    fn a_stored_request_id_is_replaced_in_place() {
        let mut fields = HeaderMap::new();
        fields.insert(
            &crate::cache::entry::REQUEST_ID_HEADER,
            HeaderValue::from_static("old"),
        );
        fields.insert(http::header::CONTENT_LENGTH, HeaderValue::from(0));
        let mut out = Vec::new();
        write_head(&fields, &request_id_from_bytes(Some(b"new")), &mut out);
        let text = String::from_utf8(out).expect("ascii");
        assert!(text.contains("\r\nx-request-id: new\r\nContent-Length: 0\r\n"));
        assert!(!text.contains("old"));
    }
}
