//! Manifest GET/HEAD answered from the in-memory cache. Anything the cache cannot answer
//! with certainty (upstream errors other than "gone", `Accept` mismatches) falls back to
//! plain proxying, so the client never gets a worse answer than going direct.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use pingora::proxy::Session;
use pingora::Result;

use super::ctx::RequestCtx;
use super::{respond, MargoProxy};
use crate::cache::{
    negotiate, CachedManifest, FetchError, Fetched, Negotiation, RepoKey, ResolveError, TagProbe,
    TagSource, FULL_ACCEPT,
};
use crate::oci::{OciError, OciErrorCode, OciRoute, Reference};
use crate::upstream::Upstream;

/// Why an upstream side call failed (for the cache's stale-serving decision).
#[derive(Debug, thiserror::Error)]
pub enum SideCallError {
    #[error("upstream unreachable: {0}")]
    Unreachable(String),
    #[error("upstream answered {0}")]
    Status(u16),
    #[error("manifest larger than {0} bytes")]
    TooLarge(u64),
    #[error("upstream answered a manifest that does not match {0}")]
    Mismatch(String),
    #[error("request was not routed")]
    NotRouted,
}

/// The cache key of the repository a request addresses, at its upstream.
pub fn repo_key(ctx: &RequestCtx, upstream: &Upstream) -> Option<RepoKey> {
    let matched = ctx.forward.as_ref()?.matched.as_ref()?;
    Some(RepoKey::new(
        upstream.name.as_str(),
        matched.upstream_name.as_str(),
    ))
}

/// Answers from the cache when it can; `Ok(false)` means "proxy it normally".
pub async fn try_serve(
    proxy: &MargoProxy,
    session: &mut Session,
    ctx: &mut RequestCtx,
) -> Result<bool> {
    let Some(cache) = proxy.state.cache.as_ref() else {
        return Ok(false);
    };
    let Some(upstream) = proxy.upstream_of(ctx) else {
        return Ok(false);
    };
    // A client that brings its own upstream credentials (no proxy account, no proxy
    // auth) may see things others may not: never answer it from, or fill, the shared
    // cache. With proxy auth on, authorization already ran for this request.
    if proxy.forwards_client_credentials(upstream)
        && session
            .req_header()
            .headers
            .contains_key(http::header::AUTHORIZATION)
    {
        return Ok(false);
    }
    let (Some(OciRoute::Manifest { reference, .. }), Some(fwd)) =
        (ctx.route.as_ref(), ctx.forward.as_ref())
    else {
        return Ok(false);
    };
    if let Some(matched) = fwd.matched.as_ref() {
        let name = matched.upstream_name.as_str();
        let hot = match reference {
            Reference::Tag(tag) => cache.front_hit(&upstream.name, name, &[tag.as_str()]),
            Reference::Digest(d) => {
                let parts = [d.algorithm().as_str(), ":", d.encoded()];
                cache.front_hit(&upstream.name, name, &parts)
            }
        };
        if let Some(manifest) = hot {
            return answer(proxy, session, ctx, &manifest, "hit").await;
        }
    }
    let Some(key) = repo_key(ctx, upstream) else {
        return Ok(false);
    };
    let reference = reference.clone();
    let auth = ctx.upstream_authorization.clone();
    let name = key.repository();
    let max = proxy.state.cache_max_manifest;

    let mut stale = false;
    let mut attached = None;
    let mut tag_key = None;
    let digest: Arc<str> = match &reference {
        Reference::Digest(d) => Arc::from(d.to_string()),
        Reference::Tag(tag) => {
            let k = key.tag(tag.as_str());
            // The probe (an upstream HEAD) is built only when the mapping needs it.
            let resolved = cache
                .resolve_tag(&k, |_| probe_tag(upstream, name, tag, auth.clone()))
                .await;
            tag_key = Some(k);
            match resolved {
                Ok(r) => {
                    stale = r.source == TagSource::Stale;
                    attached = r.manifest;
                    r.digest
                }
                Err(ResolveError::NotFound { .. }) => {
                    let e = OciError::new(
                        OciErrorCode::ManifestUnknown,
                        format!("manifest unknown: tag `{tag}`"),
                    );
                    ctx.cache_result = Some("miss");
                    respond::oci_error(session, ctx, &e).await?;
                    return Ok(true);
                }
                Err(_) => return Ok(false),
            }
        }
    };

    let fetched = AtomicBool::new(false);
    let flag = &fetched;
    let up = upstream.clone();
    let (name_ref, digest_ref) = (name, &*digest);
    let result = match attached {
        Some(m) => Ok(m),
        None => {
            let result = cache
                .get_or_fetch(&key.digest(digest.clone()), || async move {
                    // Built only on a miss: hits stay allocation-light.
                    flag.store(true, Ordering::Relaxed);
                    let path = format!("/v2/{name_ref}/manifests/{digest_ref}");
                    fetch_manifest(&up, &path, auth, max).await
                })
                .await;
            if let (Ok(m), Some(k), false) = (&result, &tag_key, stale) {
                cache.attach_manifest(k, m).await;
            }
            result
        }
    };
    let manifest: Arc<CachedManifest> = match result {
        Ok(m) => m,
        Err(FetchError::Uncacheable { manifest, .. }) => manifest,
        Err(FetchError::NotFound { .. }) => {
            let e = OciError::new(
                OciErrorCode::ManifestUnknown,
                format!("manifest unknown: {digest}"),
            );
            respond::oci_error(session, ctx, &e).await?;
            return Ok(true);
        }
        Err(FetchError::Invalid(e)) => {
            tracing::warn!(upstream = %upstream.name, repository = %name, %digest, error = %e,
                "upstream served a manifest that does not match its digest");
            let e = OciError::new(
                OciErrorCode::Unavailable,
                format!("upstream answered a manifest that does not match {digest}"),
            );
            respond::oci_error(session, ctx, &e).await?;
            return Ok(true);
        }
        Err(FetchError::Upstream(_)) => return Ok(false),
    };
    let result = if stale {
        "stale"
    } else if fetched.load(Ordering::Relaxed) {
        "miss"
    } else {
        "hit"
    };
    answer(proxy, session, ctx, &manifest, result).await
}

/// Answers with `manifest` (`result`: `hit`, `miss` or `stale`) unless the client's
/// `Accept` rules it out (`Ok(false)`: proxy it) or a pull policy denies it.
async fn answer(
    proxy: &MargoProxy,
    session: &mut Session,
    ctx: &mut RequestCtx,
    manifest: &CachedManifest,
    result: &'static str,
) -> Result<bool> {
    if negotiate(&session.req_header().headers, manifest.content_type()) == Negotiation::Bypass {
        return Ok(false);
    }
    if proxy.state.trust.is_some() {
        let denied =
            super::trust::check_pull(proxy, session, ctx, manifest.digest(), manifest.body()).await;
        if let Some(e) = denied {
            respond::oci_error(session, ctx, &e).await?;
            return Ok(true);
        }
    }
    if proxy.state.policy.is_some() {
        let method = session.req_header().method.clone();
        let denied = super::policy::pull(
            proxy,
            ctx,
            &method,
            manifest.content_type(),
            manifest.digest(),
            manifest.body(),
            result != "miss",
        )
        .await;
        if let Some(e) = denied {
            respond::oci_error(session, ctx, &e).await?;
            return Ok(true);
        }
    }
    ctx.cache_result = Some(result);
    let resp = manifest.response_head(result, ctx.request_id.header_value());
    ctx.answered_status = Some(200);
    respond::write(session, resp, manifest.body().clone()).await?;
    Ok(true)
}

/// The body of a manifest being passed through, read again from the upstream so a pull
/// policy can see its annotations and artifact type. By the digest the upstream answered
/// with (checked against the body), else by the reference the client asked for; with the
/// credentials the pass-through request used.
pub async fn body_for_policy(
    proxy: &MargoProxy,
    session: &Session,
    ctx: &RequestCtx,
    answered_digest: &str,
) -> std::result::Result<Bytes, SideCallError> {
    let (Some(upstream), Some(matched)) = (
        proxy.upstream_of(ctx),
        ctx.forward.as_ref().and_then(|f| f.matched.as_ref()),
    ) else {
        return Err(SideCallError::NotRouted);
    };
    let digest = answered_digest.parse::<crate::oci::Digest>().ok();
    let reference = match (&digest, ctx.reference()) {
        (Some(d), _) => d.to_string(),
        (None, Some(r)) => r,
        (None, None) => return Err(SideCallError::NotRouted),
    };
    let auth = if proxy.forwards_client_credentials(upstream) {
        session
            .req_header()
            .headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    } else {
        ctx.upstream_authorization.clone()
    };
    let path = format!(
        "/v2/{}/manifests/{reference}",
        matched.upstream_name.as_str()
    );
    let max = proxy.state.limits.max_manifest_bytes;
    match fetch_manifest(upstream, &path, auth, max).await? {
        Fetched::NotFound => Err(SideCallError::Status(404)),
        Fetched::Manifest { body, .. } => match digest {
            Some(d) if !d.verifies(&body) => Err(SideCallError::Mismatch(d.to_string())),
            _ => Ok(body),
        },
    }
}

fn side_request(
    upstream: &Upstream,
    method: reqwest::Method,
    path: &str,
    auth: Option<String>,
) -> reqwest::RequestBuilder {
    let mut r = upstream
        .http
        .request(method, upstream.url(path))
        .header(http::header::ACCEPT, FULL_ACCEPT);
    if let Some(a) = auth {
        r = r.header(http::header::AUTHORIZATION, a);
    }
    r
}

fn unreachable_status(s: u16) -> bool {
    matches!(s, 502..=504)
}

async fn probe_tag(
    upstream: &Upstream,
    name: &str,
    tag: &str,
    auth: Option<String>,
) -> TagProbe<SideCallError> {
    let path = format!("/v2/{name}/manifests/{tag}");
    match side_request(upstream, reqwest::Method::HEAD, &path, auth)
        .send()
        .await
    {
        Err(e) => TagProbe::Unreachable(SideCallError::Unreachable(e.to_string())),
        Ok(r) => {
            let status = r.status().as_u16();
            match status {
                200 => match r
                    .headers()
                    .get("docker-content-digest")
                    .and_then(|v| v.to_str().ok())
                    .filter(|d| d.parse::<crate::oci::Digest>().is_ok())
                {
                    Some(d) => TagProbe::Found(d.to_owned()),
                    None => TagProbe::Failed(SideCallError::Status(status)),
                },
                404 => TagProbe::NotFound,
                s if unreachable_status(s) => TagProbe::Unreachable(SideCallError::Status(s)),
                s => TagProbe::Failed(SideCallError::Status(s)),
            }
        }
    }
}

async fn fetch_manifest(
    upstream: &Upstream,
    path: &str,
    auth: Option<String>,
    max: u64,
) -> std::result::Result<Fetched, SideCallError> {
    let mut r = side_request(upstream, reqwest::Method::GET, path, auth)
        .send()
        .await
        .map_err(|e| SideCallError::Unreachable(e.to_string()))?;
    match r.status().as_u16() {
        200 => {}
        404 => return Ok(Fetched::NotFound),
        s => return Err(SideCallError::Status(s)),
    }
    let headers = r.headers().clone();
    let mut body = BytesMut::new();
    while let Some(chunk) = r
        .chunk()
        .await
        .map_err(|e| SideCallError::Unreachable(e.to_string()))?
    {
        if (body.len() + chunk.len()) as u64 > max {
            return Err(SideCallError::TooLarge(max));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Fetched::Manifest {
        body: Bytes::from(body),
        headers,
    })
}
