//! The one client for every request the proxy makes upstream on its own (cache fills and
//! tag probes, admission blob reads, re-issued manifest pushes, policy inputs, and later
//! catalog crawls, trust checks, referrers). Streamed client traffic goes through Pingora
//! instead; both share the forwarding headers ([`super::forwarded`]).
//!
//! Why one client: the hand-built copies had drifted (one overwrote `X-Forwarded-For`,
//! one forgot every token on a 401, one cut answers silently at 64 KiB, none bounded a
//! whole exchange in time). Here, every call:
//! - resolves the proxy's credentials only when it really goes upstream (a cache hit
//!   never waits for a token service);
//! - on a 401 tells the credentials which scopes were refused
//!   ([`UpstreamCredentials::rejected`]) and retries once;
//! - has ONE deadline covering credentials, headers and body, so an upstream trickling
//!   one byte a second is cut like a silent one;
//! - refuses a body past its limit with [`RegistryError::TooLarge`] instead of
//!   truncating it.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use tokio::time::Instant;

use super::credentials::{CredentialError, Scopes, UpstreamCredentials};
use super::forwarded::Forwarded;
use super::Upstream;
use crate::oci::headers::{DOCKER_CONTENT_DIGEST, X_REQUEST_ID};
use crate::oci::{Digest, OciError, OciErrorCode};

/// `Accept` for manifest reads: every manifest type a registry may hold, so what the
/// cache stores is what the upstream has, whatever the client asked for.
pub use crate::cache::FULL_ACCEPT as MANIFEST_ACCEPT;

/// Largest answer body read by default (error bodies, push answers, tag pages).
pub const DEFAULT_MAX_BODY: u64 = 1 << 20;
/// Most pages of a tags list followed.
const MAX_TAG_PAGES: usize = 100;
/// Page size asked for when following a tags list.
const TAG_PAGE: usize = 1000;

/// Why an upstream call failed. [`RegistryError::to_oci`] says what the client gets.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The deadline passed before the whole answer arrived (headers or body).
    #[error("upstream `{upstream}` did not answer within {after:?}")]
    Timeout { upstream: String, after: Duration },
    /// Connecting, sending or reading failed.
    #[error("upstream `{upstream}` unreachable: {message}")]
    Unreachable { upstream: String, message: String },
    /// The proxy's own account could not be used (token service down or refusing).
    #[error("upstream `{upstream}` credentials: {source}")]
    Credentials {
        upstream: String,
        source: CredentialError,
    },
    /// The upstream answered 401 to the proxy's account, also after a retry.
    #[error("upstream `{upstream}` refused the proxy's account")]
    Unauthorized { upstream: String },
    /// A status the call does not expect.
    #[error("upstream `{upstream}` answered {status}")]
    Status { upstream: String, status: u16 },
    /// A body larger than the call accepts: refused, never truncated.
    #[error("upstream `{upstream}` answered more than {limit} bytes")]
    TooLarge { upstream: String, limit: u64 },
    /// A body that does not hash to the digest it was asked by.
    #[error("upstream `{upstream}` answered content that does not match {digest}")]
    DigestMismatch { upstream: String, digest: String },
    /// Something the protocol does not allow (a redirect without `Location`...).
    #[error("upstream `{upstream}`: {message}")]
    Invalid { upstream: String, message: String },
}

impl RegistryError {
    /// The OCI error a client gets for this failure. Timeouts are `504` with code
    /// `UNAVAILABLE` (the spec has no code for it; distribution uses this one for
    /// upstream trouble); every other upstream failure is `502 UNAVAILABLE`, except a
    /// refused proxy account (`403 DENIED`, as on the streamed path) and an answer too
    /// large (`502 SIZE_INVALID`).
    pub fn to_oci(&self) -> OciError {
        let msg = self.to_string();
        match self {
            RegistryError::Timeout { .. } => {
                OciError::new(OciErrorCode::Unavailable, msg).with_status(504)
            }
            RegistryError::Unauthorized { .. } => OciError::new(OciErrorCode::Denied, msg),
            RegistryError::TooLarge { .. } => {
                OciError::new(OciErrorCode::SizeInvalid, msg).with_status(502)
            }
            RegistryError::Unreachable { .. }
            | RegistryError::Credentials { .. }
            | RegistryError::Status { .. }
            | RegistryError::DigestMismatch { .. }
            | RegistryError::Invalid { .. } => {
                OciError::new(OciErrorCode::Unavailable, msg).with_status(502)
            }
        }
    }

    /// The upstream could not be reached at all (as opposed to answering something
    /// unwelcome): a stale cached answer may cover for it.
    pub fn is_unreachable(&self) -> bool {
        match self {
            RegistryError::Timeout { .. } | RegistryError::Unreachable { .. } => true,
            RegistryError::Credentials { source, .. } => matches!(
                source,
                CredentialError::Unreachable(_) | CredentialError::Refused(500..=599)
            ),
            RegistryError::Status { status, .. } => matches!(status, 502..=504),
            _ => false,
        }
    }

    pub fn is_timeout(&self) -> bool {
        matches!(self, RegistryError::Timeout { .. })
    }
}

/// Whose `Authorization` goes upstream.
#[derive(Debug, Clone, Default)]
pub enum Auth<'a> {
    /// The proxy's own account at this upstream for these scopes (nothing when the
    /// upstream has no credentials configured). Resolved only when the call is sent.
    Account(Scopes<'a>),
    /// The client's own header, passed on (no proxy account, no proxy auth).
    Client(&'a HeaderValue),
    /// None at all.
    #[default]
    Anonymous,
}

/// On whose behalf a call is made: borrowed from the client request, formatted only
/// when the call is sent.
#[derive(Debug, Clone, Default)]
pub struct Caller<'a> {
    /// Propagated as `X-Request-Id`, so the upstream's log lines match ours.
    pub request_id: Option<&'a HeaderValue>,
    /// `X-Forwarded-*`; `None` for calls the proxy makes for itself.
    pub forwarded: Option<Forwarded<'a>>,
    pub auth: Auth<'a>,
}

impl Caller<'_> {
    /// A call the proxy makes for itself with its own account.
    pub fn proxy(scopes: Vec<String>) -> Caller<'static> {
        Caller {
            auth: Auth::Account(Scopes::Listed(scopes)),
            ..Caller::default()
        }
    }
}

/// One upstream request.
#[derive(Debug, Clone)]
pub struct Request {
    method: Method,
    path_and_query: String,
    headers: HeaderMap,
    body: Option<Bytes>,
    max_body: u64,
    deadline: Option<Duration>,
}

impl Request {
    /// `path_and_query` is relative to the upstream's base, e.g. `/v2/a/tags/list?n=10`.
    pub fn new(method: Method, path_and_query: impl Into<String>) -> Self {
        Request {
            method,
            path_and_query: path_and_query.into(),
            headers: HeaderMap::new(),
            body: None,
            max_body: DEFAULT_MAX_BODY,
            deadline: None,
        }
    }

    pub fn header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.insert(name, value);
        self
    }

    pub fn body(mut self, body: Bytes) -> Self {
        self.body = Some(body);
        self
    }

    /// Largest answer body accepted ([`RegistryError::TooLarge`] past it).
    pub fn max_body(mut self, max: u64) -> Self {
        self.max_body = max;
        self
    }

    /// The whole call's deadline (default: the upstream's `timeouts.read`).
    pub fn deadline(mut self, d: Duration) -> Self {
        self.deadline = Some(d);
        self
    }
}

/// A complete answer.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// A manifest as read from the upstream.
#[derive(Debug, Clone)]
pub struct Manifest {
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// An answer whose body is read chunk by chunk, under the call's deadline and limit.
pub struct BodyStream {
    resp: reqwest::Response,
    upstream: String,
    deadline: Instant,
    after: Duration,
    limit: u64,
    seen: u64,
}

impl BodyStream {
    /// The next chunk; `None` at the end. A body announced larger than the limit is
    /// refused before any of it is read.
    pub async fn next_chunk(&mut self) -> Result<Option<Bytes>, RegistryError> {
        if self.seen == 0 && self.resp.content_length().is_some_and(|l| l > self.limit) {
            return Err(RegistryError::TooLarge {
                upstream: self.upstream.clone(),
                limit: self.limit,
            });
        }
        let chunk = match tokio::time::timeout_at(self.deadline, self.resp.chunk()).await {
            Err(_) => {
                return Err(RegistryError::Timeout {
                    upstream: self.upstream.clone(),
                    after: self.after,
                })
            }
            Ok(r) => r.map_err(|e| transport_error(&self.upstream, self.after, &e))?,
        };
        if let Some(c) = &chunk {
            self.seen += c.len() as u64;
            if self.seen > self.limit {
                return Err(RegistryError::TooLarge {
                    upstream: self.upstream.clone(),
                    limit: self.limit,
                });
            }
        }
        Ok(chunk)
    }

    /// The whole body.
    pub async fn collect(mut self) -> Result<Bytes, RegistryError> {
        let mut buf = BytesMut::new();
        while let Some(c) = self.next_chunk().await? {
            buf.extend_from_slice(&c);
        }
        Ok(buf.freeze())
    }
}

/// An answer whose headers arrived.
pub struct Streamed {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: BodyStream,
}

/// The client for one upstream; cheap to make (see [`Upstream::registry`]).
#[derive(Clone, Copy)]
pub struct Registry<'u> {
    upstream: &'u Upstream,
}

impl Upstream {
    /// The client for the proxy's own calls to this upstream.
    pub fn registry(&self) -> Registry<'_> {
        Registry { upstream: self }
    }
}

fn transport_error(upstream: &str, after: Duration, e: &reqwest::Error) -> RegistryError {
    if e.is_timeout() {
        RegistryError::Timeout {
            upstream: upstream.to_owned(),
            after,
        }
    } else {
        RegistryError::Unreachable {
            upstream: upstream.to_owned(),
            message: e.to_string(),
        }
    }
}

impl<'u> Registry<'u> {
    fn name(&self) -> String {
        self.upstream.name.clone()
    }

    fn credentials(&self) -> Option<&'u UpstreamCredentials> {
        self.upstream.credentials.as_ref()
    }

    /// Sends `req` and reads the whole answer (any status).
    pub async fn send(&self, caller: &Caller<'_>, req: Request) -> Result<Response, RegistryError> {
        let s = self.open(caller, req).await?;
        let body = s.body.collect().await?;
        Ok(Response {
            status: s.status,
            headers: s.headers,
            body,
        })
    }

    /// Sends `req` and returns once the headers are in; the body is read under the same
    /// deadline and limit. A 401 to the proxy's account is retried once after telling
    /// the credentials which scopes were refused.
    pub async fn open(&self, caller: &Caller<'_>, req: Request) -> Result<Streamed, RegistryError> {
        let after = req.deadline.unwrap_or(self.upstream.timeouts.read);
        let deadline = Instant::now() + after;
        let timeout = || RegistryError::Timeout {
            upstream: self.name(),
            after,
        };
        // Scopes are built only when the proxy's account is really used.
        let scopes = match (&caller.auth, self.credentials()) {
            (Auth::Account(s), Some(_)) => Some(s.to_vec()),
            _ => None,
        };
        let mut retried = false;
        loop {
            let authorization =
                tokio::time::timeout_at(deadline, self.authorization(caller, scopes.as_deref()))
                    .await
                    .map_err(|_| timeout())??;
            let sent =
                tokio::time::timeout_at(deadline, self.build(caller, &req, authorization).send())
                    .await
                    .map_err(|_| timeout())?
                    .map_err(|e| transport_error(&self.upstream.name, after, &e))?;
            let status = sent.status();
            if status == StatusCode::UNAUTHORIZED {
                if let (Some(scopes), Some(creds)) = (&scopes, self.credentials()) {
                    let challenge = sent
                        .headers()
                        .get(http::header::WWW_AUTHENTICATE)
                        .and_then(|v| v.to_str().ok());
                    creds.rejected(scopes, challenge).await;
                    if !retried {
                        retried = true;
                        continue;
                    }
                }
            }
            // An error answer is read whole for the caller to relay or report; its
            // size has nothing to do with what a successful answer may be.
            let limit = if status.is_success() {
                req.max_body
            } else {
                req.max_body.max(DEFAULT_MAX_BODY)
            };
            return Ok(Streamed {
                status,
                headers: sent.headers().clone(),
                body: BodyStream {
                    resp: sent,
                    upstream: self.name(),
                    deadline,
                    after,
                    limit,
                    seen: 0,
                },
            });
        }
    }

    async fn authorization(
        &self,
        caller: &Caller<'_>,
        scopes: Option<&[String]>,
    ) -> Result<Option<HeaderValue>, RegistryError> {
        match &caller.auth {
            Auth::Anonymous => Ok(None),
            Auth::Client(v) => Ok(Some((*v).clone())),
            Auth::Account(_) => {
                let (Some(creds), Some(scopes)) = (self.credentials(), scopes) else {
                    return Ok(None);
                };
                let value = creds
                    .authorization_for_call(scopes)
                    .await
                    .map_err(|source| RegistryError::Credentials {
                        upstream: self.name(),
                        source,
                    })?;
                Ok(value.and_then(|v| {
                    let mut v = HeaderValue::from_str(&v).ok()?;
                    v.set_sensitive(true);
                    Some(v)
                }))
            }
        }
    }

    fn build(
        &self,
        caller: &Caller<'_>,
        req: &Request,
        authorization: Option<HeaderValue>,
    ) -> reqwest::RequestBuilder {
        let mut headers = req.headers.clone();
        if let Some(f) = &caller.forwarded {
            for (name, value) in f.headers() {
                headers.insert(name, value);
            }
        }
        if let Some(id) = caller.request_id {
            headers.insert(&X_REQUEST_ID, id.clone());
        }
        if let Some(a) = authorization {
            headers.insert(http::header::AUTHORIZATION, a);
        }
        let mut b = self
            .upstream
            .http
            .request(req.method.clone(), self.upstream.url(&req.path_and_query))
            .headers(headers);
        if let Some(body) = &req.body {
            b = b.body(body.clone());
        }
        b
    }

    fn status(&self, status: StatusCode, caller: &Caller<'_>) -> RegistryError {
        let proxy_account = matches!(caller.auth, Auth::Account(_)) && self.credentials().is_some();
        if status == StatusCode::UNAUTHORIZED && proxy_account {
            RegistryError::Unauthorized {
                upstream: self.name(),
            }
        } else {
            RegistryError::Status {
                upstream: self.name(),
                status: status.as_u16(),
            }
        }
    }

    /// `HEAD /v2/<name>/manifests/<reference>`: the answer's headers, `None` for 404.
    pub async fn manifest_head(
        &self,
        caller: &Caller<'_>,
        name: &str,
        reference: &str,
    ) -> Result<Option<HeaderMap>, RegistryError> {
        let req = Request::new(Method::HEAD, format!("/v2/{name}/manifests/{reference}")).header(
            http::header::ACCEPT,
            HeaderValue::from_static(MANIFEST_ACCEPT),
        );
        let r = self.open(caller, req).await?;
        match r.status {
            StatusCode::OK => Ok(Some(r.headers)),
            StatusCode::NOT_FOUND => Ok(None),
            s => Err(self.status(s, caller)),
        }
    }

    /// The digest a HEAD by tag answered, checked to be one.
    pub async fn manifest_digest(
        &self,
        caller: &Caller<'_>,
        name: &str,
        reference: &str,
    ) -> Result<Option<Digest>, RegistryError> {
        let Some(headers) = self.manifest_head(caller, name, reference).await? else {
            return Ok(None);
        };
        headers
            .get(&DOCKER_CONTENT_DIGEST)
            .and_then(|v| v.to_str().ok())
            .and_then(|d| d.parse::<Digest>().ok())
            .map(Some)
            .ok_or_else(|| RegistryError::Invalid {
                upstream: self.name(),
                message: "manifest HEAD answered without a valid Docker-Content-Digest".into(),
            })
    }

    /// `GET /v2/<name>/manifests/<reference>` with every manifest type accepted, at
    /// most `max` bytes; `None` for 404. By digest, the body is checked against it.
    pub async fn manifest_get(
        &self,
        caller: &Caller<'_>,
        name: &str,
        reference: &str,
        max: u64,
    ) -> Result<Option<Manifest>, RegistryError> {
        let req = Request::new(Method::GET, format!("/v2/{name}/manifests/{reference}"))
            .header(
                http::header::ACCEPT,
                HeaderValue::from_static(MANIFEST_ACCEPT),
            )
            .max_body(max);
        let r = self.send(caller, req).await?;
        match r.status {
            StatusCode::OK => {}
            StatusCode::NOT_FOUND => return Ok(None),
            s => return Err(self.status(s, caller)),
        }
        if let Ok(d) = reference.parse::<Digest>() {
            if !d.verifies(&r.body) {
                return Err(RegistryError::DigestMismatch {
                    upstream: self.name(),
                    digest: d.to_string(),
                });
            }
        }
        Ok(Some(Manifest {
            headers: r.headers,
            body: r.body,
        }))
    }

    /// `PUT /v2/<name>/manifests/<reference>`: the upstream's answer, whatever its
    /// status, for the proxy to relay (its body at most `max_answer` bytes).
    pub async fn manifest_put(
        &self,
        caller: &Caller<'_>,
        path_and_query: &str,
        content_type: Option<&HeaderValue>,
        body: Bytes,
        max_answer: u64,
    ) -> Result<Response, RegistryError> {
        let mut req = Request::new(Method::PUT, path_and_query)
            .body(body)
            .max_body(max_answer);
        if let Some(ct) = content_type {
            req = req.header(http::header::CONTENT_TYPE, ct.clone());
        }
        self.send(caller, req).await
    }

    /// One page of a tags list (`path_and_query` as the client asked for it, e.g.
    /// `/v2/a/tags/list?n=10&last=b`): its tags and the answer's headers (`Link` to the
    /// next page); `None` when the repository is unknown.
    pub async fn tags_page(
        &self,
        caller: &Caller<'_>,
        path_and_query: &str,
        max: u64,
    ) -> Result<Option<(Vec<String>, HeaderMap)>, RegistryError> {
        #[derive(serde::Deserialize)]
        struct Page {
            #[serde(default)]
            tags: Option<Vec<String>>,
        }
        let req = Request::new(Method::GET, path_and_query).max_body(max);
        let r = self.send(caller, req).await?;
        match r.status {
            StatusCode::OK => {}
            StatusCode::NOT_FOUND => return Ok(None),
            s => return Err(self.status(s, caller)),
        }
        let page: Page = serde_json::from_slice(&r.body).map_err(|e| RegistryError::Invalid {
            upstream: self.name(),
            message: format!("tags list is not JSON: {e}"),
        })?;
        Ok(Some((page.tags.unwrap_or_default(), r.headers)))
    }

    /// Every tag of `name` (following `Link: <...>; rel="next"` pages on this upstream),
    /// at most `max_tags`: more is [`RegistryError::TooLarge`], never a silent cut.
    /// `None` when the repository is unknown.
    pub async fn tags_list(
        &self,
        caller: &Caller<'_>,
        name: &str,
        max_tags: usize,
    ) -> Result<Option<Vec<String>>, RegistryError> {
        let mut tags = Vec::new();
        let mut path = format!("/v2/{name}/tags/list?n={TAG_PAGE}");
        let own_pages = format!("/v2/{name}/tags/list");
        let base = self.upstream.base.to_string();
        let max_page = DEFAULT_MAX_BODY.max(TAG_PAGE as u64 * 256);
        for _ in 0..MAX_TAG_PAGES {
            let Some((page, headers)) = self.tags_page(caller, &path, max_page).await? else {
                return Ok(if tags.is_empty() { None } else { Some(tags) });
            };
            tags.extend(page);
            if tags.len() > max_tags {
                return Err(RegistryError::TooLarge {
                    upstream: self.name(),
                    limit: max_tags as u64,
                });
            }
            match next_page(&headers, &base) {
                Some(next) if next.starts_with(&own_pages) => path = next,
                _ => return Ok(Some(tags)),
            }
        }
        Err(RegistryError::TooLarge {
            upstream: self.name(),
            limit: max_tags as u64,
        })
    }

    /// One page of this upstream's `_catalog` (`path_and_query` like
    /// `/v2/_catalog?n=1000&last=b`): its repository names and the path of the next page,
    /// when its `Link` names one on this upstream's `_catalog` (another origin or
    /// endpoint is not followed).
    pub async fn catalog_page(
        &self,
        caller: &Caller<'_>,
        path_and_query: &str,
        max: u64,
        deadline: Duration,
    ) -> Result<(Vec<String>, Option<String>), RegistryError> {
        #[derive(serde::Deserialize)]
        struct Page {
            #[serde(default)]
            repositories: Option<Vec<String>>,
        }
        let req = Request::new(Method::GET, path_and_query)
            .max_body(max)
            .deadline(deadline);
        let r = self.send(caller, req).await?;
        if r.status != StatusCode::OK {
            return Err(self.status(r.status, caller));
        }
        let page: Page = serde_json::from_slice(&r.body).map_err(|e| RegistryError::Invalid {
            upstream: self.name(),
            message: format!("_catalog is not JSON: {e}"),
        })?;
        let next = next_page(&r.headers, &self.upstream.base.to_string()).filter(|p| {
            p.strip_prefix("/v2/_catalog")
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('?'))
        });
        Ok((page.repositories.unwrap_or_default(), next))
    }

    /// `GET /v2/<name>/referrers/<digest>` (optionally filtered by artifact type): the
    /// image index body, `None` for 404 (an upstream without the referrers API).
    pub async fn referrers(
        &self,
        caller: &Caller<'_>,
        name: &str,
        digest: &Digest,
        artifact_type: Option<&str>,
        max: u64,
    ) -> Result<Option<Response>, RegistryError> {
        let mut path = format!("/v2/{name}/referrers/{digest}");
        if let Some(t) = artifact_type {
            path.push_str("?artifactType=");
            path.extend(url::form_urlencoded::byte_serialize(t.as_bytes()));
        }
        let r = self
            .send(caller, Request::new(Method::GET, path).max_body(max))
            .await?;
        match r.status {
            StatusCode::OK => Ok(Some(r)),
            StatusCode::NOT_FOUND => Ok(None),
            s => Err(self.status(s, caller)),
        }
    }

    /// `GET /v2/<name>/blobs/<digest>`, streamed, at most `max` bytes; `None` for 404.
    /// A redirect (object storage behind the registry) is followed without the proxy's
    /// credentials and under the same deadline ([`super::redirect`]'s limits).
    pub async fn blob(
        &self,
        caller: &Caller<'_>,
        name: &str,
        digest: &Digest,
        max: u64,
    ) -> Result<Option<BodyStream>, RegistryError> {
        let req = Request::new(Method::GET, format!("/v2/{name}/blobs/{digest}")).max_body(max);
        let (r, _) = self.blob_following(caller, req).await?;
        match r.status {
            StatusCode::OK => Ok(Some(r.body)),
            StatusCode::NOT_FOUND => Ok(None),
            s => Err(self.status(s, caller)),
        }
    }

    /// A blob request (`GET`/`HEAD`, maybe with `Range`) whose redirects to object
    /// storage the proxy follows itself: at most [`super::redirect::MAX_REDIRECTS`] hops,
    /// http(s) only, each carrying only the request's `Range` (never an
    /// `Authorization`), all under the request's deadline. The answer of the last hop,
    /// and whether any redirect was followed.
    pub async fn blob_following(
        &self,
        caller: &Caller<'_>,
        req: Request,
    ) -> Result<(Streamed, bool), RegistryError> {
        let after = req.deadline.unwrap_or(self.upstream.timeouts.read);
        let deadline = Instant::now() + after;
        let method = req.method.clone();
        let range = req.headers.get(http::header::RANGE).cloned();
        let limit = req.max_body;
        let mut from = url::Url::parse(&self.upstream.url(&req.path_and_query)).map_err(|e| {
            RegistryError::Invalid {
                upstream: self.name(),
                message: e.to_string(),
            }
        })?;
        let mut r = self.open(caller, req).await?;
        let client = self.upstream.storage().unwrap_or(&self.upstream.http);
        let invalid = |message: String| RegistryError::Invalid {
            upstream: self.name(),
            message,
        };
        let mut hops = 0;
        while r.status.is_redirection() && r.status != StatusCode::NOT_MODIFIED {
            if hops == super::redirect::MAX_REDIRECTS {
                return Err(invalid(format!(
                    "more than {} redirects",
                    super::redirect::MAX_REDIRECTS
                )));
            }
            hops += 1;
            let location = r
                .headers
                .get(http::header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .ok_or_else(|| invalid("redirect without Location".into()))?;
            let to = super::redirect::next_hop(&from, location).map_err(invalid)?;
            let mut next = client.request(method.clone(), to.as_str());
            if let Some(range) = &range {
                next = next.header(http::header::RANGE, range.clone());
            }
            let sent = tokio::time::timeout_at(deadline, next.send())
                .await
                .map_err(|_| RegistryError::Timeout {
                    upstream: self.name(),
                    after,
                })?
                .map_err(|e| transport_error(&self.upstream.name, after, &e))?;
            let status = sent.status();
            r = Streamed {
                status,
                headers: sent.headers().clone(),
                body: BodyStream {
                    resp: sent,
                    upstream: self.name(),
                    deadline,
                    after,
                    limit: if status.is_success() {
                        limit
                    } else {
                        limit.max(DEFAULT_MAX_BODY)
                    },
                    seen: 0,
                },
            };
            from = to;
        }
        Ok((r, hops > 0))
    }

    /// Uploads a blob monolithically (`POST` then `PUT ?digest=`), unless the
    /// repository has it already. For content the proxy makes itself (App Registry
    /// packages); client uploads stream through Pingora.
    pub async fn blob_upload(
        &self,
        caller: &Caller<'_>,
        name: &str,
        digest: &Digest,
        data: Bytes,
    ) -> Result<(), RegistryError> {
        let head = Request::new(Method::HEAD, format!("/v2/{name}/blobs/{digest}"));
        if self.send(caller, head).await?.status == StatusCode::OK {
            return Ok(());
        }
        let start = self
            .send(
                caller,
                Request::new(Method::POST, format!("/v2/{name}/blobs/uploads/")),
            )
            .await?;
        if start.status != StatusCode::ACCEPTED {
            return Err(self.status(start.status, caller));
        }
        let location = start
            .headers
            .get(http::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| RegistryError::Invalid {
                upstream: self.name(),
                message: "upload start without Location".into(),
            })?;
        let base = self.upstream.base.to_string();
        let base = base.trim_end_matches('/');
        let path = match location.strip_prefix(base) {
            Some(p) => p.to_owned(),
            None if location.starts_with('/') && !location.starts_with("//") => location.to_owned(),
            None => {
                return Err(RegistryError::Invalid {
                    upstream: self.name(),
                    message: "upload Location on another origin".into(),
                })
            }
        };
        let sep = if path.contains('?') { '&' } else { '?' };
        let put = Request::new(Method::PUT, format!("{path}{sep}digest={digest}"))
            .header(
                http::header::CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            )
            .body(data);
        let done = self.send(caller, put).await?;
        if done.status != StatusCode::CREATED {
            return Err(self.status(done.status, caller));
        }
        Ok(())
    }

    /// The whole blob, checked against its digest; `None` for 404.
    pub async fn blob_bytes(
        &self,
        caller: &Caller<'_>,
        name: &str,
        digest: &Digest,
        max: u64,
    ) -> Result<Option<Bytes>, RegistryError> {
        let Some(stream) = self.blob(caller, name, digest, max).await? else {
            return Ok(None);
        };
        let body = stream.collect().await?;
        if !digest.verifies(&body) {
            return Err(RegistryError::DigestMismatch {
                upstream: self.name(),
                digest: digest.to_string(),
            });
        }
        Ok(Some(body))
    }
}

/// The `rel="next"` target of a `Link` header, as a path on `base` (absolute URLs on
/// another origin are not followed: the proxy's credentials must not travel there).
fn next_page(headers: &HeaderMap, base: &str) -> Option<String> {
    for v in headers.get_all(http::header::LINK) {
        let Ok(v) = v.to_str() else { continue };
        for part in v.split(',') {
            let (target, params) = part.split_once(';').unwrap_or((part, ""));
            let is_next = params.split(';').any(|p| {
                let p = p.trim().replace(' ', "");
                p.eq_ignore_ascii_case("rel=\"next\"") || p.eq_ignore_ascii_case("rel=next")
            });
            if !is_next {
                continue;
            }
            let target = target.trim().trim_start_matches('<').trim_end_matches('>');
            let path = match target.strip_prefix(base) {
                Some(p) => p,
                None if target.starts_with('/') && !target.starts_with("//") => target,
                None => return None,
            };
            return Some(path.to_owned());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A raw HTTP/1.1 server on 127.0.0.1 that answers each connection with the next
    /// of `answers`, written `step` bytes at a time with `pause` between steps.
    /// Returns the upstream and the request heads it received.
    async fn server(
        answers: Vec<Vec<u8>>,
        step: usize,
        pause: Duration,
        timeouts: crate::config::Timeouts,
        credentials: bool,
    ) -> (Upstream, Arc<std::sync::Mutex<Vec<String>>>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let log = seen.clone();
        let next = Arc::new(AtomicUsize::new(0));
        tokio::spawn(async move {
            loop {
                let Ok((mut sock, _)) = listener.accept().await else {
                    return;
                };
                let answers = answers.clone();
                let (log, next) = (log.clone(), next.clone());
                tokio::spawn(async move {
                    loop {
                        let mut head = Vec::new();
                        let mut b = [0u8; 1];
                        while !head.ends_with(b"\r\n\r\n") {
                            if sock.read(&mut b).await.unwrap_or(0) == 0 {
                                return;
                            }
                            head.push(b[0]);
                        }
                        let text = String::from_utf8_lossy(&head).to_string();
                        let len = text
                            .lines()
                            .find_map(|l| {
                                l.to_ascii_lowercase()
                                    .strip_prefix("content-length:")
                                    .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                            })
                            .unwrap_or(0);
                        let mut body = vec![0u8; len];
                        let _ = sock.read_exact(&mut body).await;
                        log.lock().unwrap().push(text);
                        let i = next.fetch_add(1, Ordering::SeqCst);
                        let Some(a) = answers.get(i.min(answers.len() - 1)) else {
                            return;
                        };
                        for chunk in a.chunks(step) {
                            if sock.write_all(chunk).await.is_err() {
                                return;
                            }
                            tokio::time::sleep(pause).await;
                        }
                    }
                });
            }
        });
        let yaml = if credentials {
            format!("name: up\nurl: http://{addr}\ncredentials: {{username: u, password: p}}\n")
        } else {
            format!("name: up\nurl: http://{addr}\n")
        };
        let cfg: crate::config::UpstreamConfig = serde_saphyr::from_str(&yaml).unwrap();
        (Upstream::from_config(&cfg, &timeouts).unwrap(), seen)
    }

    fn timeouts(read: Duration) -> crate::config::Timeouts {
        crate::config::Timeouts {
            read,
            ..crate::config::Timeouts::default()
        }
    }

    fn answer(status: &str, headers: &str, body: &str) -> Vec<u8> {
        format!(
            "HTTP/1.1 {status}\r\nContent-Length: {}\r\n{headers}\r\n{body}",
            body.len()
        )
        .into_bytes()
    }

    #[tokio::test]
    async fn headers_trickled_byte_by_byte_are_cut_at_the_deadline() {
        let ans = answer(
            "200 OK",
            "X-Pad: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n",
            "{}",
        );
        // One byte every 50 ms: each read is quick, the whole head takes seconds.
        let (up, _) = server(
            vec![ans],
            1,
            Duration::from_millis(50),
            timeouts(Duration::from_millis(600)),
            false,
        )
        .await;
        let started = std::time::Instant::now();
        let err = up
            .registry()
            .manifest_get(&Caller::default(), "a", "t", 1024)
            .await
            .unwrap_err();
        assert!(err.is_timeout(), "{err}");
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(err.to_oci().status, 504);
    }

    #[tokio::test]
    async fn a_body_past_the_limit_is_refused_not_cut() {
        let big = "x".repeat(5000);
        let chunked = format!(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{big}\r\n0\r\n\r\n",
            big.len()
        );
        let (up, _) = server(
            vec![answer("201 Created", "", &big), chunked.into_bytes()],
            1 << 16,
            Duration::ZERO,
            timeouts(Duration::from_secs(5)),
            false,
        )
        .await;
        let reg = up.registry();
        // Announced by Content-Length, and then without one (chunked).
        for _ in 0..2 {
            let err = reg
                .manifest_put(
                    &Caller::default(),
                    "/v2/a/manifests/t",
                    None,
                    Bytes::from_static(b"{}"),
                    4096,
                )
                .await
                .unwrap_err();
            assert!(
                matches!(err, RegistryError::TooLarge { limit: 4096, .. }),
                "{err}"
            );
        }
    }

    #[tokio::test]
    async fn forwarded_headers_and_request_id_go_upstream() {
        let (up, seen) = server(
            vec![answer("201 Created", "", "")],
            1 << 16,
            Duration::ZERO,
            timeouts(Duration::from_secs(5)),
            false,
        )
        .await;
        let prev = HeaderValue::from_static("203.0.113.7");
        let host = HeaderValue::from_static("registry.example");
        let id = HeaderValue::from_static("req-42");
        let client_auth = HeaderValue::from_static("Bearer client");
        let caller = Caller {
            request_id: Some(&id),
            forwarded: Some(Forwarded {
                previous_for: Some(&prev),
                client_ip: Some("192.0.2.1".parse().unwrap()),
                tls: true,
                host: Some(&host),
            }),
            auth: Auth::Client(&client_auth),
        };
        let r = up
            .registry()
            .manifest_put(
                &caller,
                "/v2/a/manifests/t",
                None,
                Bytes::from_static(b"{}"),
                1024,
            )
            .await
            .unwrap();
        assert_eq!(r.status, 201);
        let head = seen.lock().unwrap()[0].to_ascii_lowercase();
        for want in [
            "x-forwarded-for: 203.0.113.7, 192.0.2.1",
            "x-forwarded-proto: https",
            "x-forwarded-host: registry.example",
            "x-request-id: req-42",
            "authorization: bearer client",
        ] {
            assert!(head.contains(want), "{want} missing in {head}");
        }
    }

    #[tokio::test]
    async fn a_401_to_the_proxy_account_is_retried_once_then_reported() {
        let refuse = answer(
            "401 Unauthorized",
            "WWW-Authenticate: Basic realm=\"r\"\r\n",
            "",
        );
        // The first request is the challenge ping (/v2/), then the call and its retry.
        let (up, seen) = server(
            vec![refuse.clone(), refuse.clone(), refuse],
            1 << 16,
            Duration::ZERO,
            timeouts(Duration::from_secs(5)),
            true,
        )
        .await;
        let caller = Caller::proxy(vec!["repository:a:pull".into()]);
        let err = up
            .registry()
            .manifest_get(&caller, "a", "t", 1024)
            .await
            .unwrap_err();
        assert!(matches!(err, RegistryError::Unauthorized { .. }), "{err}");
        let heads = seen.lock().unwrap().clone();
        let calls = heads
            .iter()
            .filter(|h| h.starts_with("GET /v2/a/manifests/t"))
            .count();
        assert_eq!(calls, 2, "{heads:?}");
        assert!(heads
            .iter()
            .skip(1)
            .all(|h| h.to_ascii_lowercase().contains("authorization: basic")));
    }

    fn link(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(http::header::LINK, HeaderValue::from_str(v).unwrap());
        h
    }

    #[test]
    fn next_page_follows_only_this_upstream() {
        let base = "http://127.0.0.1:5000";
        assert_eq!(
            next_page(&link(r#"</v2/a/tags/list?n=2&last=b>; rel="next""#), base).as_deref(),
            Some("/v2/a/tags/list?n=2&last=b")
        );
        assert_eq!(
            next_page(
                &link(r#"<http://127.0.0.1:5000/v2/a/tags/list?last=b>; rel=next"#),
                base
            )
            .as_deref(),
            Some("/v2/a/tags/list?last=b")
        );
        assert_eq!(
            next_page(
                &link(r#"<https://evil.example/v2/a/tags/list>; rel="next""#),
                base
            ),
            None
        );
        assert_eq!(
            next_page(&link(r#"<//evil.example/v2/x>; rel="next""#), base),
            None
        );
        assert_eq!(
            next_page(&link(r#"</v2/a/tags/list>; rel="prev""#), base),
            None
        );
        assert_eq!(next_page(&HeaderMap::new(), base), None);
    }

    #[test]
    fn errors_map_to_oci_statuses() {
        let u = || "up".to_owned();
        let t = RegistryError::Timeout {
            upstream: u(),
            after: Duration::from_secs(1),
        };
        assert_eq!(t.to_oci().status, 504);
        assert_eq!(t.to_oci().code(), Some(OciErrorCode::Unavailable));
        assert!(t.is_unreachable() && t.is_timeout());
        let big = RegistryError::TooLarge {
            upstream: u(),
            limit: 10,
        };
        assert_eq!(big.to_oci().status, 502);
        assert_eq!(big.to_oci().code(), Some(OciErrorCode::SizeInvalid));
        assert!(!big.is_unreachable());
        assert_eq!(
            RegistryError::Unauthorized { upstream: u() }
                .to_oci()
                .status,
            403
        );
        let s = |status| RegistryError::Status {
            upstream: u(),
            status,
        };
        assert!(s(503).is_unreachable());
        assert!(!s(401).is_unreachable());
        let creds = RegistryError::Credentials {
            upstream: u(),
            source: CredentialError::Unreachable("down".into()),
        };
        assert!(creds.is_unreachable());
        assert_eq!(creds.to_oci().status, 502);
    }
}
