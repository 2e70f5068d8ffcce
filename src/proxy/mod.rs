//! The Pingora `ProxyHttp` glue: each phase hands the request to the pure logic in the
//! other modules and applies the answer. Nothing here decides policy on its own.

mod access;
mod admission;
mod appr;
pub mod blob;
mod blob_follow;
mod catalog;
pub mod ctx;
mod downstream;
mod git;
mod git_endpoint;
mod manifest_get;
mod manifest_put;
mod policy;
mod referrers;
mod registry_catalog;
pub mod respond;
mod rewrite;
mod staging;
mod trust;

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::HttpPeer;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::{Error, ErrorType, Result};

use crate::auth::Authenticator;
use crate::cache::ManifestCache;
use crate::config::{Config, Limits};
use crate::metrics::{Metrics, RequestRecord, UpstreamErrorKind};
use crate::oci::headers::DOCKER_CONTENT_DIGEST;
use crate::oci::path::PathError;
use crate::oci::{OciError, OciErrorCode, OciRoute, Operation};
use crate::policy::PolicyService;
use crate::upstream::credentials::{self, Scopes};
use crate::upstream::deadline::HeaderDeadline;
use crate::upstream::forward::{self, Forward, ForwardError};
use crate::upstream::registry::{Auth, Caller};
use crate::upstream::routing::{RouteError, Router};
use crate::upstream::Upstream;
use ctx::RequestCtx;

/// Everything requests share, built once from the config.
pub struct ProxyState {
    pub upstreams: Vec<Arc<Upstream>>,
    /// `None` when `cache.enabled` is false.
    pub cache: Option<Arc<ManifestCache>>,
    /// `None` when `cache.enabled` is false or `cache.blobs` has no tier.
    pub blobs: Option<Arc<crate::cache::blob::BlobCache>>,
    pub cache_max_manifest: u64,
    pub metrics: Arc<Metrics>,
    /// `None` when the config has no `auth:` section: clients are not authenticated.
    pub auth: Option<Arc<Authenticator>>,
    /// `None` when the config has no `policy:` section.
    pub policy: Option<Arc<PolicyService>>,
    /// `None` when `catalog.enabled` is false.
    pub catalog: Option<Arc<crate::catalog::Catalog>>,
    /// The `/git/` endpoint (OCI packages to `git clone`); `None` when `git.enabled` is false.
    pub git_endpoint: Option<Arc<crate::git::serve::GitServe>>,
    /// `None` when `appr.enabled` is false.
    pub appr: Option<crate::appr::ApprConfig>,
    pub router: Router,
    /// Referrers API on every upstream (native or emulated).
    pub referrers: Arc<crate::referrers::ReferrerService>,
    /// `None` when the config has no `trust:` section.
    pub trust: Option<Arc<crate::trust::TrustService>>,
    pub public_url: Option<String>,
    pub limits: Limits,
    pub downstream_keepalive_secs: u64,
    /// Every cache invalidation goes through here, so other replicas hear of it.
    pub coherence: Arc<crate::bus::Coherence>,
    /// Longest wait for an upstream's response head once the request was sent.
    pub upstream_header_timeout: std::time::Duration,
    /// The Git upstreams' mirrors; `None` when no upstream is a Git one.
    pub git: Option<Arc<crate::git::source::GitSources>>,
    /// `None` when the config has no `staging:` section.
    pub staging: Option<Arc<crate::staging::Staging>>,
    /// `/v2/_catalog`, merged from every upstream.
    pub registry_catalog: crate::registry_catalog::RegistryCatalog,
}

impl ProxyState {
    /// The state, and the bus worker to start when the config has a bus.
    pub fn from_config(
        config: &Config,
    ) -> std::result::Result<(Self, Option<crate::bus::BusWorker>), String> {
        let upstreams = config
            .upstreams
            .iter()
            .map(|u| Upstream::from_config(&u.value, &config.timeouts).map(Arc::new))
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| e.to_string())?;
        let cache = ManifestCache::from_config(&config.cache)
            .map_err(|e| e.to_string())?
            .map(Arc::new);
        let blobs = match config.cache.enabled {
            true => crate::cache::blob::BlobCache::from_config(&config.cache.blobs)
                .map_err(|e| e.to_string())?
                .map(Arc::new),
            false => None,
        };
        let metrics = Metrics::new(&config.metrics).map_err(|e| e.to_string())?;
        crate::upstream::aws::ecr::register_metrics(metrics.registry());
        let (coherence, bus_worker) = crate::bus::Coherence::new(
            cache.clone(),
            upstreams.iter().map(|u| u.name.clone()).collect(),
            metrics.registry(),
            config.bus.as_ref(),
        )?;
        let auth = match &config.auth {
            Some(a) => Some(Arc::new(
                Authenticator::from_config(a).map_err(|e| format!("auth: {e}"))?,
            )),
            None => None,
        };
        let policy = match &config.policy {
            Some(p) => Some(Arc::new(
                PolicyService::new(p.clone()).map_err(|e| format!("policy: {e}"))?,
            )),
            None => None,
        };
        let trust = match &config.trust {
            Some(t) => Some(Arc::new(
                crate::trust::TrustService::from_config(t, metrics.registry())
                    .map_err(|e| format!("trust: {e}"))?,
            )),
            None => None,
        };
        let referrers = Arc::new(crate::referrers::ReferrerService::new(
            upstreams.len(),
            config.cache.tag_ttl,
            config.cache.enabled,
        ));
        let git = crate::git::source::GitSources::from_config(config, metrics.registry())?;
        let catalog = crate::catalog::from_config(config, &upstreams, git.clone())?;
        let git_endpoint = crate::git::serve::from_config(config, &upstreams, git.clone())?;
        let staging = match &config.staging {
            Some(s) => Some(Arc::new(
                crate::staging::Staging::from_config(s).map_err(|e| e.to_string())?,
            )),
            None => None,
        };
        let registry_catalog = crate::registry_catalog::RegistryCatalog::new(
            &config.registry_catalog,
            metrics.registry(),
        )?;
        let state = ProxyState {
            staging,
            registry_catalog,
            coherence,
            policy,
            catalog,
            git_endpoint,
            appr: config.appr.enabled.then(|| config.appr.clone()),
            referrers,
            trust,
            upstreams,
            cache,
            blobs,
            cache_max_manifest: config.cache.max_manifest_bytes,
            metrics: Arc::new(metrics),
            auth,
            router: Router::from_config(config)?,
            public_url: config
                .public_url
                .as_ref()
                .map(|u| u.value.trim_end_matches('/').to_owned()),
            limits: config.limits.clone(),
            downstream_keepalive_secs: config.timeouts.downstream_keepalive.as_secs(),
            upstream_header_timeout: config.timeouts.read,
            git,
        };
        Ok((state, bus_worker))
    }
}

pub struct MargoProxy {
    pub state: Arc<ProxyState>,
}

impl MargoProxy {
    /// Parses the request path; fills `ctx.operation` or says why the proxy refuses it.
    fn parse(
        &self,
        session: &Session,
        ctx: &mut RequestCtx,
    ) -> std::result::Result<OciRoute, OciError> {
        let req = session.req_header();
        let parsed = OciRoute::parse(req.uri.path());
        ctx.operation = Operation::of(&parsed, &req.method);
        parsed.map_err(|e| path_error(e, &req.method))
    }

    /// Routes the request to an upstream. Credentials come later, and only for what
    /// really goes upstream: a cache hit must not wait for a token service.
    fn plan(
        &self,
        session: &Session,
        ctx: &mut RequestCtx,
        route: OciRoute,
    ) -> std::result::Result<(), OciError> {
        let req = session.req_header();
        let fwd = forward::plan(&self.state.router, &route, req.uri.path(), req.uri.query())
            .map_err(forward_error)?;
        ctx.route = Some(route);
        ctx.forward = Some(fwd);
        staging::plan(self, ctx)
    }

    /// The proxy's `Authorization` for a request about to be streamed upstream.
    async fn authorize_upstream(
        &self,
        session: &Session,
        ctx: &mut RequestCtx,
    ) -> std::result::Result<(), OciError> {
        let (Some(fwd), Some(upstream)) = (ctx.forward.as_ref(), self.upstream_of(ctx)) else {
            return Ok(());
        };
        let Some(creds) = &upstream.credentials else {
            return Ok(());
        };
        if self.forwards_client_credentials(upstream) {
            // The client's own header (or none) goes upstream; its challenge reaches it.
            return Ok(());
        }
        let catalog = matches!(ctx.route, Some(OciRoute::Catalog));
        let scopes = upstream_scopes(&session.req_header().method, fwd, catalog);
        ctx.upstream_authorization = creds.authorization(&scopes).await.map_err(|e| {
            tracing::warn!(upstream = %upstream.name, error = %e, "upstream credentials failed");
            OciError::new(
                OciErrorCode::Unavailable,
                format!("upstream `{}`: {e}", upstream.name),
            )
        })?;
        Ok(())
    }

    /// On whose behalf the proxy's own upstream calls for this request are made:
    /// borrowed parts only, so building it costs nothing until a call is sent.
    /// `method` is the one the scopes are asked for (the request's, unless a call
    /// needs another, like the read before a delete).
    fn caller<'a>(
        &self,
        session: &'a Session,
        ctx: &'a RequestCtx,
        upstream: &Upstream,
        method: &'a http::Method,
    ) -> Caller<'a> {
        let auth = if self.forwards_client_credentials(upstream) {
            match (
                session
                    .req_header()
                    .headers
                    .get(http::header::AUTHORIZATION),
                &ctx.forward,
            ) {
                (Some(v), _) => Auth::Client(v),
                // No account here: "the proxy's account" is the anonymous token flow,
                // which gives the proxy no more than this anonymous client may read.
                (None, Some(fwd)) => Auth::Account(Scopes::Request {
                    method,
                    repository: fwd.matched.as_ref().map(|m| m.upstream_name.as_str()),
                    mount_from: fwd.mount_from.as_deref(),
                    catalog: matches!(ctx.route, Some(OciRoute::Catalog)),
                }),
                (None, None) => Auth::Anonymous,
            }
        } else {
            match &ctx.forward {
                Some(fwd) => Auth::Account(Scopes::Request {
                    method,
                    repository: fwd.repository(),
                    mount_from: fwd.mount_from.as_deref(),
                    catalog: matches!(ctx.route, Some(OciRoute::Catalog)),
                }),
                None => Auth::Anonymous,
            }
        };
        Caller {
            request_id: Some(ctx.request_id.header_value()),
            forwarded: Some(rewrite::forwarded(session, ctx)),
            auth,
        }
    }

    /// The client's own `Authorization` may go upstream only when the proxy neither
    /// authenticates clients itself nor has an account of its own there.
    fn forwards_client_credentials(&self, upstream: &Upstream) -> bool {
        self.state.auth.is_none() && !upstream.has_account()
    }

    async fn invalidate_after_delete(&self, ctx: &RequestCtx, upstream: &Upstream) {
        if let (Some(key), Some(reference)) =
            (manifest_get::repo_key(ctx, upstream), ctx.reference())
        {
            let inv = crate::bus::Invalidation::ManifestDelete {
                upstream: key.upstream().to_owned(),
                repository: key.repository().to_owned(),
                reference,
            };
            self.state.coherence.announce(inv).await;
        }
    }

    /// A manifest pulled through (not from the cache): before its headers go out, the
    /// proxy reads the same manifest by digest (see [`manifest_get::body_for_policy`]) so
    /// the policy sees what it would see on a cache hit. A denial, or a manifest the
    /// proxy cannot read, replaces the response with an error: deny when unsure.
    async fn pull_policy_on_response(
        &self,
        session: &Session,
        resp: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let header = |n: &str| {
            resp.headers
                .get(n)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned()
        };
        let (content_type, digest) = (
            header(http::header::CONTENT_TYPE.as_str()),
            header(DOCKER_CONTENT_DIGEST.as_str()),
        );
        let body = match manifest_get::body_for_policy(self, session, ctx, &digest).await {
            Ok(body) => body,
            Err(e) => {
                tracing::warn!(error = ?e.errors.first().map(|e| &e.message),
                    "pull policy: could not read the manifest passed through");
                let mut err = e;
                if let Some(first) = err.errors.first_mut() {
                    first.message = format!(
                        "the pull policy could not inspect the manifest: {}",
                        first.message
                    );
                }
                return replace_response(resp, ctx, &err);
            }
        };
        if let Some(err) = trust::check_pull(self, session, ctx, &digest, &body).await {
            return replace_response(resp, ctx, &err);
        }
        let method = session.req_header().method.clone();
        let Some(err) =
            policy::pull(self, ctx, &method, &content_type, &digest, &body, false).await
        else {
            return Ok(());
        };
        replace_response(resp, ctx, &err)
    }

    fn upstream_of(&self, ctx: &RequestCtx) -> Option<&Arc<Upstream>> {
        ctx.forward
            .as_ref()
            .and_then(|f| self.state.upstreams.get(f.upstream))
    }
}

/// Turns an upstream response into the proxy's own error: status and headers now,
/// the body in `response_body_filter` (the upstream's is swallowed).
fn replace_response(resp: &mut ResponseHeader, ctx: &mut RequestCtx, err: &OciError) -> Result<()> {
    let body = err.body();
    resp.set_status(err.status)?;
    for h in [
        &http::header::CONTENT_TYPE,
        &http::header::CONTENT_LENGTH,
        &http::header::TRANSFER_ENCODING,
        &DOCKER_CONTENT_DIGEST,
        &http::header::ETAG,
    ] {
        resp.remove_header(h);
    }
    resp.insert_header(http::header::CONTENT_TYPE, "application/json")?;
    resp.insert_header(http::header::CONTENT_LENGTH, body.len().to_string())?;
    ctx.refusal = err.errors.first().map(|e| e.message.clone());
    ctx.body_replacement = Some(bytes::Bytes::from(body));
    Ok(())
}

/// The scopes the proxy's upstream token was asked for (see [`MargoProxy::plan`]).
fn upstream_scopes(method: &http::Method, fwd: &Forward, catalog: bool) -> Vec<String> {
    credentials::scopes_for(method, fwd.repository(), fwd.mount_from.as_deref(), catalog)
}

fn path_error(e: PathError, method: &http::Method) -> OciError {
    match e {
        PathError::NotOci => OciError::new(
            OciErrorCode::Unsupported,
            "not an OCI distribution API endpoint",
        )
        .with_status(404),
        PathError::Name(e) => OciError::new(OciErrorCode::NameInvalid, e.to_string()),
        PathError::Digest(e) => OciError::new(OciErrorCode::DigestInvalid, e.to_string()),
        PathError::BadTag(t) if method == http::Method::PUT => {
            OciError::new(OciErrorCode::ManifestInvalid, format!("invalid tag `{t}`"))
        }
        PathError::BadTag(t) => {
            OciError::new(OciErrorCode::ManifestUnknown, format!("invalid tag `{t}`"))
        }
    }
}

fn forward_error(e: ForwardError) -> OciError {
    match e {
        ForwardError::Route(RouteError::NoRoute(n)) => OciError::new(
            OciErrorCode::NameUnknown,
            format!("no route serves repository `{n}`"),
        ),
        ForwardError::Route(e @ RouteError::BadRewrite(_)) => {
            OciError::new(OciErrorCode::NameInvalid, e.to_string())
        }
        e @ ForwardError::BadMountFrom(_) => {
            OciError::new(OciErrorCode::NameInvalid, e.to_string())
        }
    }
}

fn upstream_error_kind(e: &Error) -> UpstreamErrorKind {
    match e.etype() {
        ErrorType::ConnectTimedout | ErrorType::ReadTimedout | ErrorType::WriteTimedout => {
            UpstreamErrorKind::Timeout
        }
        ErrorType::ConnectRefused | ErrorType::ConnectNoRoute | ErrorType::ConnectError => {
            UpstreamErrorKind::Connect
        }
        ErrorType::TLSHandshakeFailure
        | ErrorType::InvalidCert
        | ErrorType::TLSHandshakeTimedout => UpstreamErrorKind::Tls,
        ErrorType::InvalidHTTPHeader | ErrorType::H1Error | ErrorType::H2Error => {
            UpstreamErrorKind::Protocol
        }
        _ => UpstreamErrorKind::Other,
    }
}

#[async_trait]
impl ProxyHttp for MargoProxy {
    /// Boxed: Pingora keeps the context inside its per-request future, which it
    /// moves and boxes; a pointer moves cheaper than 400 bytes.
    type CTX = Box<RequestCtx>;

    fn new_ctx(&self) -> Box<RequestCtx> {
        Box::new(RequestCtx::new())
    }

    /// No downstream modules. Pingora's default adds a response-compression module at
    /// level 0 (off), which still costs every request a module context and two filter
    /// calls; registry payloads are digested bytes that must not be re-encoded anyway.
    fn init_downstream_modules(&self, _modules: &mut pingora::modules::http::HttpModules) {}

    async fn request_filter(
        &self,
        session: &mut Session,
        ctx: &mut Box<RequestCtx>,
    ) -> Result<bool> {
        session.set_keepalive(Some(self.state.downstream_keepalive_secs));
        ctx.request_id = ctx::request_id(
            session
                .req_header()
                .headers
                .get(&crate::oci::headers::X_REQUEST_ID),
        );
        ctx.client_tls = session
            .digest()
            .and_then(|d| d.ssl_digest.as_ref())
            .is_some();
        let req = session.req_header();
        ctx.client_host = match req.headers.get(http::header::HOST) {
            Some(host) if host.to_str().is_ok() => Some(host.clone()),
            _ => req
                .uri
                .authority()
                .and_then(|a| http::HeaderValue::from_str(a.as_str()).ok()),
        };
        if downstream::refuse_bad_framing(session, ctx).await? {
            return Ok(true);
        }
        // Every handler whose future is large (or rarely needed) runs boxed, behind a
        // cheap check that it applies: an awaited future is part of this one, which
        // Pingora boxes for every request, so one 14 KB cache-miss path inline cost
        // each cached manifest GET a 15 KB copy (a third of its instructions under
        // callgrind). Only the hit paths and the error answer stay inline.
        if access::claims_token_endpoint(self, session)
            && Box::pin(access::token_endpoint(self, session, ctx)).await?
        {
            return Ok(true);
        }
        if catalog::claims(self, session) && Box::pin(catalog::serve(self, session, ctx)).await? {
            return Ok(true);
        }
        if git_endpoint::claims(self, session)
            && Box::pin(git_endpoint::serve(self, session, ctx)).await?
        {
            return Ok(true);
        }
        if appr::claims(self, session) && Box::pin(appr::serve(self, session, ctx)).await? {
            return Ok(true);
        }
        let route = match self.parse(session, ctx) {
            Ok(r) => r,
            Err(e) => {
                respond::oci_error(session, ctx, &e).await?;
                return Ok(true);
            }
        };
        if let Some(auth) = self.state.auth.clone() {
            if Box::pin(access::authorize(&auth, self, session, ctx, &route)).await? {
                return Ok(true);
            }
        }
        if ctx.operation == Operation::Catalog
            && Box::pin(registry_catalog::serve(self, session, ctx)).await?
        {
            return Ok(true);
        }
        if let Err(e) = self.plan(session, ctx, route) {
            respond::oci_error(session, ctx, &e).await?;
            return Ok(true);
        }
        if self.state.git.is_some() && Box::pin(git::serve(self, session, ctx)).await? {
            return Ok(true);
        }
        if self.state.policy.is_some() {
            if let Some(err) = Box::pin(policy::before_proxying(self, session, ctx)).await {
                respond::oci_error(session, ctx, &err).await?;
                return Ok(true);
            }
        }
        let operation = ctx.operation;
        if operation == Operation::TagsList
            && Box::pin(registry_catalog::serve_tags(self, session, ctx)).await?
        {
            return Ok(true);
        }
        if operation == Operation::ManifestPut {
            Box::pin(manifest_put::handle(self, session, ctx)).await?;
            return Ok(true);
        }
        if operation.is_manifest_read() && manifest_get::try_serve(self, session, ctx).await? {
            return Ok(true);
        }
        if matches!(operation, Operation::BlobGet | Operation::BlobHead) {
            if blob::try_serve(self, session, ctx).await? {
                return Ok(true);
            }
            if self.state.staging.is_some() {
                Box::pin(staging::blob_fallback(self, session, ctx)).await;
            }
            if blob_follow::applies(self, ctx)
                && Box::pin(blob_follow::serve(self, session, ctx)).await?
            {
                return Ok(true);
            }
        }
        // Going upstream through Pingora: now the proxy's credentials are needed.
        if let Err(e) = Box::pin(self.authorize_upstream(session, ctx)).await {
            respond::oci_error(session, ctx, &e).await?;
            return Ok(true);
        }
        match operation {
            Operation::Referrers => return Box::pin(referrers::serve(self, session, ctx)).await,
            Operation::ManifestDelete => {
                ctx.referrer_subject = referrers::before_delete(self, session, ctx).await;
            }
            _ => {}
        }
        Ok(false)
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        ctx: &mut Box<RequestCtx>,
    ) -> Result<Box<HttpPeer>> {
        let upstream = self
            .upstream_of(ctx)
            .ok_or_else(|| Error::explain(ErrorType::InternalError, "request was not routed"))?;
        let peer = upstream
            .peer()
            .await
            .map_err(|e| Error::explain(ErrorType::ConnectNoRoute, e.to_string()))?;
        ctx.upstream_started = Some(Instant::now());
        Ok(Box::new(peer))
    }

    /// Starts the response-head watchdog for this exchange (see [`HeaderDeadline`]).
    async fn connected_to_upstream(
        &self,
        _session: &mut Session,
        _reused: bool,
        _peer: &HttpPeer,
        #[cfg(unix)] fd: std::os::unix::io::RawFd,
        #[cfg(windows)] _sock: std::os::windows::io::RawSocket,
        _digest: Option<&pingora::protocols::Digest>,
        ctx: &mut Box<RequestCtx>,
    ) -> Result<()> {
        #[cfg(unix)]
        {
            ctx.header_deadline = HeaderDeadline::watch(fd, self.state.upstream_header_timeout);
        }
        Ok(())
    }

    async fn request_body_filter(
        &self,
        _session: &mut Session,
        _body: &mut Option<bytes::Bytes>,
        end_of_stream: bool,
        ctx: &mut Box<RequestCtx>,
    ) -> Result<()> {
        if end_of_stream {
            if let Some(d) = &ctx.header_deadline {
                d.request_sent();
            }
        }
        Ok(())
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        req: &mut RequestHeader,
        ctx: &mut Box<RequestCtx>,
    ) -> Result<()> {
        let (Some(fwd), Some(upstream)) = (ctx.forward.as_ref(), self.upstream_of(ctx)) else {
            return Error::e_explain(ErrorType::InternalError, "request was not routed");
        };
        let uri: http::Uri = fwd
            .path_and_query
            .parse()
            .map_err(|_| Error::explain(ErrorType::InternalError, "bad upstream path"))?;
        req.set_uri(uri);
        req.insert_header(http::header::HOST, upstream.base.authority())?;
        rewrite::forwarded_headers(session, req, ctx)?;
        if !self.forwards_client_credentials(upstream) {
            // The client's credentials are for the proxy; the upstream gets the proxy's own.
            req.remove_header(&http::header::AUTHORIZATION);
            if let Some(a) = &ctx.upstream_authorization {
                req.insert_header(http::header::AUTHORIZATION, a.as_str())?;
            }
        }
        Ok(())
    }

    async fn upstream_response_filter(
        &self,
        session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut Box<RequestCtx>,
    ) -> Result<()> {
        ctx.upstream_elapsed = ctx.upstream_started.map(|s| s.elapsed());
        if let Some(d) = &ctx.header_deadline {
            d.headers_arrived();
        }
        let Some(upstream) = self.upstream_of(ctx).cloned() else {
            return Ok(());
        };
        let refused = resp.status == http::StatusCode::UNAUTHORIZED;
        if let (Some(creds), true) = (&upstream.credentials, refused) {
            let challenge = resp
                .headers
                .get(http::header::WWW_AUTHENTICATE)
                .and_then(|v| v.to_str().ok());
            if let Some(fwd) = &ctx.forward {
                let catalog = matches!(ctx.route, Some(OciRoute::Catalog));
                let scopes = upstream_scopes(&session.req_header().method, fwd, catalog);
                creds.rejected(&scopes, challenge).await;
            }
        }
        if !self.forwards_client_credentials(&upstream) {
            // The upstream's challenge is about the proxy's account, not the client's.
            resp.remove_header(&http::header::WWW_AUTHENTICATE);
            if refused {
                // A 401 without a challenge tells the client nothing it could answer;
                // what happened is that the proxy's account was refused.
                let err = OciError::new(
                    OciErrorCode::Denied,
                    format!(
                        "upstream `{}` refused the proxy's account for this request",
                        upstream.name
                    ),
                );
                replace_response(resp, ctx, &err)?;
            }
        }
        Ok(())
    }

    async fn response_filter(
        &self,
        session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut Box<RequestCtx>,
    ) -> Result<()> {
        if let Some(upstream) = self.upstream_of(ctx).cloned() {
            rewrite::response_urls(resp, ctx, &upstream, self.state.public_url.as_deref())?;
            if ctx.operation == Operation::ManifestDelete && resp.status.is_success() {
                self.invalidate_after_delete(ctx, &upstream).await;
                catalog::after_delete(self, ctx);
                if let Some(subject) = ctx.referrer_subject.clone() {
                    referrers::after_delete(self, session, ctx, &subject).await;
                }
            }
            if ctx.operation == Operation::BlobDelete && resp.status.is_success() {
                blob::on_delete(self, ctx);
            }
        }
        blob::on_response(ctx, resp);
        staging::on_response(self, ctx, resp);
        if (self.state.policy.is_some() || trust::applies(self, ctx))
            && ctx.cache_result.is_none()
            && ctx.operation.is_manifest_read()
            && resp.status == http::StatusCode::OK
        {
            self.pull_policy_on_response(session, resp, ctx).await?;
        }
        if rewrite::wants_tags_body_rewrite(ctx, resp) {
            // The body names repositories as the upstream knows them: it will be rewritten,
            // so its length changes and the response goes out chunked. Said explicitly:
            // without either header a keep-alive response has no framing at all (the
            // pipelining test caught a tags list that way).
            resp.remove_header(&http::header::CONTENT_LENGTH);
            resp.insert_header(http::header::TRANSFER_ENCODING, "chunked")?;
            ctx.body_rewrite = Some(bytes::BytesMut::new());
        }
        respond::stamp(resp, ctx)
    }

    fn response_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<bytes::Bytes>,
        end_of_stream: bool,
        ctx: &mut Box<RequestCtx>,
    ) -> Result<Option<std::time::Duration>> {
        if let Some(replacement) = &ctx.body_replacement {
            // The upstream's body is swallowed; ours goes out at its end.
            *body = end_of_stream.then(|| replacement.clone());
            return Ok(None);
        }
        blob::on_body(ctx, body, end_of_stream)?;
        if let Some(buf) = ctx.body_rewrite.as_mut() {
            if let Some(chunk) = body.take() {
                if buf.len() + chunk.len() > rewrite::MAX_REWRITTEN_BODY {
                    return Error::e_explain(
                        ErrorType::InternalError,
                        "tags list too large to rewrite",
                    );
                }
                buf.extend_from_slice(&chunk);
            }
            if end_of_stream {
                let raw = std::mem::take(buf).freeze();
                *body = Some(rewrite::tags_body(
                    raw,
                    ctx.repository().unwrap_or_default(),
                ));
            }
        }
        Ok(None)
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut Box<RequestCtx>,
    ) -> FailToProxy {
        downstream::fail_to_proxy(self, session, e, ctx).await
    }

    fn suppress_error_log(&self, session: &Session, ctx: &Box<RequestCtx>, e: &Error) -> bool {
        downstream::quiet_disconnect(session, ctx, e)
    }

    async fn early_request_filter(
        &self,
        session: &mut Session,
        _ctx: &mut Box<RequestCtx>,
    ) -> Result<()> {
        downstream::head_read(session);
        Ok(())
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut Box<RequestCtx>) {
        let status = session
            .response_written()
            .map(|r| r.status.as_u16())
            .or(ctx.answered_status)
            .unwrap_or(0);
        let duration = ctx.started.elapsed();
        crate::logging::access(session, e, ctx, status, duration);
        let upstream_repo = ctx
            .forward
            .as_ref()
            .and_then(|f| f.matched.as_ref())
            .map(|m| m.upstream_name.as_str());
        self.state.metrics.observe_request(&RequestRecord {
            operation: ctx.operation.as_str(),
            method: &session.req_header().method,
            status,
            duration,
            upstream_duration: ctx.upstream_elapsed,
            bytes_received: session.body_bytes_read() as u64,
            bytes_sent: session.body_bytes_sent() as u64,
            repository: upstream_repo,
        });
    }
}
