//! Manifest GET/HEAD answered from the in-memory cache. Anything the cache cannot answer
//! with certainty (upstream errors other than "gone", `Accept` mismatches) falls back to
//! plain proxying, so the client never gets a worse answer than going direct.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use pingora::proxy::Session;
use pingora::Result;

use super::ctx::RequestCtx;
use super::{respond, MargoProxy};
use crate::cache::{
    negotiate, CacheResult, CachedManifest, FetchError, Fetched, ManifestCache, Negotiation,
    RepoKey, ResolveError, TagProbe, TagSource,
};
use crate::metrics::UpstreamErrorKind;
use crate::oci::{OciError, OciErrorCode, OciRoute, Reference};
use crate::upstream::registry::{Caller, Registry, RegistryError};
use crate::upstream::Upstream;

/// The cache key of the repository a request addresses, at its upstream.
pub fn repo_key(ctx: &RequestCtx, upstream: &Upstream) -> Option<RepoKey> {
    let matched = ctx.forward.as_ref()?.matched.as_ref()?;
    Some(RepoKey::new(
        upstream.name.as_str(),
        matched.upstream_name.as_str(),
    ))
}

/// Why the cache did not answer.
enum NotServed {
    /// Let Pingora proxy the request: the upstream's own answer is the best one.
    Proxy,
    /// Answer this error: proxying could only fail the same way, once more (an
    /// upstream that timed out would time out again, doubling the client's wait).
    Answer(OciError, Option<CacheResult>),
    /// The upstream failed the side call: answer this error, and count the failure
    /// as the streamed path's `fail_to_proxy` does.
    Failed(OciError, UpstreamErrorKind),
}

/// What the cache should make of a failed side call.
fn side_call_failed(e: &RegistryError) -> NotServed {
    match e {
        RegistryError::Status { .. }
        | RegistryError::TooLarge { .. }
        | RegistryError::Invalid { .. } => NotServed::Proxy,
        RegistryError::Timeout { .. } => NotServed::Failed(e.to_oci(), UpstreamErrorKind::Timeout),
        RegistryError::Unreachable { .. } => {
            NotServed::Failed(e.to_oci(), UpstreamErrorKind::Connect)
        }
        RegistryError::Credentials { .. }
        | RegistryError::Unauthorized { .. }
        | RegistryError::DigestMismatch { .. } => {
            NotServed::Failed(e.to_oci(), UpstreamErrorKind::Other)
        }
    }
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
            return answer(proxy, session, ctx, &manifest, CacheResult::Hit).await;
        }
    }
    let Some(key) = repo_key(ctx, upstream) else {
        return Ok(false);
    };
    let reference = reference.clone();
    let max = proxy.state.cache_max_manifest;
    let outcome = {
        let method = &session.req_header().method;
        let caller = proxy.caller(session, ctx, upstream, method);
        // Boxed: the miss path's state (moka's fill included) is 14 KB, and would
        // otherwise be part of every request's future.
        Box::pin(lookup(
            cache,
            upstream.registry(),
            &caller,
            &key,
            &reference,
            max,
        ))
        .await
    };
    match outcome {
        Ok((manifest, result)) => {
            if result == CacheResult::Miss {
                // The blobs a freshly fetched manifest lists are in this repository.
                super::blob::link_manifest(proxy, ctx, manifest.body());
            }
            answer(proxy, session, ctx, &manifest, result).await
        }
        Err(NotServed::Proxy) => Ok(false),
        Err(NotServed::Answer(e, result)) => {
            ctx.cache_result = result;
            respond::oci_error(session, ctx, &e).await?;
            Ok(true)
        }
        Err(NotServed::Failed(e, kind)) => {
            proxy.state.metrics.upstream_error(&upstream.name, kind);
            respond::oci_error(session, ctx, &e).await?;
            Ok(true)
        }
    }
}

/// The manifest for `reference` from the cache, filled from the upstream on a miss.
async fn lookup(
    cache: &ManifestCache,
    registry: Registry<'_>,
    caller: &Caller<'_>,
    key: &RepoKey,
    reference: &Reference,
    max: u64,
) -> std::result::Result<(Arc<CachedManifest>, CacheResult), NotServed> {
    let name = key.repository();
    let mut stale = false;
    let mut attached = None;
    let mut tag_key = None;
    let digest: Arc<str> = match reference {
        Reference::Digest(d) => Arc::from(d.to_string()),
        Reference::Tag(tag) => {
            let k = key.tag(tag.as_str());
            // The probe (an upstream HEAD) is built only when the mapping needs it.
            let resolved = cache
                .resolve_tag(&k, |_| probe_tag(registry, caller, name, tag))
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
                    return Err(NotServed::Answer(e, Some(CacheResult::Miss)));
                }
                Err(ResolveError::Upstream(e)) => return Err(side_call_failed(&e)),
            }
        }
    };

    let fetched = AtomicBool::new(false);
    let flag = &fetched;
    let digest_ref = &*digest;
    let result = match attached {
        Some(m) => Ok(m),
        None => {
            let result = cache
                .get_or_fetch(&key.digest(digest.clone()), || async move {
                    // Built only on a miss: hits stay allocation-light.
                    flag.store(true, Ordering::Relaxed);
                    fetch_manifest(registry, caller, name, digest_ref, max).await
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
            return Err(NotServed::Answer(e, None));
        }
        Err(FetchError::Invalid(e)) => {
            tracing::warn!(repository = %name, %digest, error = %e,
                "upstream served a manifest that does not match its digest");
            let e = OciError::new(
                OciErrorCode::Unavailable,
                format!("upstream answered a manifest that does not match {digest}"),
            );
            return Err(NotServed::Answer(e, None));
        }
        Err(FetchError::Upstream(e)) => return Err(side_call_failed(&e)),
    };
    let result = if stale {
        CacheResult::Stale
    } else if fetched.load(Ordering::Relaxed) {
        CacheResult::Miss
    } else {
        CacheResult::Hit
    };
    Ok((manifest, result))
}

/// Answers with `manifest` unless the client's
/// `Accept` rules it out (`Ok(false)`: proxy it) or a pull policy denies it.
async fn answer(
    proxy: &MargoProxy,
    session: &mut Session,
    ctx: &mut RequestCtx,
    manifest: &CachedManifest,
    result: CacheResult,
) -> Result<bool> {
    if negotiate(&session.req_header().headers, manifest.content_type()) == Negotiation::Bypass {
        return Ok(false);
    }
    if proxy.state.trust.is_some() {
        // Boxed: only proxies that check signatures pay for this state.
        let denied = Box::pin(super::trust::check_pull(
            proxy,
            session,
            ctx,
            manifest.digest(),
            manifest.body(),
        ))
        .await;
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
            result != CacheResult::Miss,
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
/// credentials the pass-through request used. The error is the answer to send.
pub async fn body_for_policy(
    proxy: &MargoProxy,
    session: &Session,
    ctx: &RequestCtx,
    answered_digest: &str,
) -> std::result::Result<Bytes, OciError> {
    let not_routed = || OciError::new(OciErrorCode::Unavailable, "request was not routed");
    let (Some(upstream), Some(matched)) = (
        proxy.upstream_of(ctx),
        ctx.forward.as_ref().and_then(|f| f.matched.as_ref()),
    ) else {
        return Err(not_routed());
    };
    let reference = match (
        answered_digest.parse::<crate::oci::Digest>(),
        ctx.reference(),
    ) {
        (Ok(d), _) => d.to_string(),
        (Err(_), Some(r)) => r,
        (Err(_), None) => return Err(not_routed()),
    };
    let caller = proxy.caller(session, ctx, upstream, &session.req_header().method);
    let max = proxy.state.limits.max_manifest_bytes;
    match upstream
        .registry()
        .manifest_get(&caller, matched.upstream_name.as_str(), &reference, max)
        .await
    {
        Ok(Some(m)) => Ok(m.body),
        Ok(None) => Err(OciError::new(
            OciErrorCode::ManifestUnknown,
            format!("manifest unknown: {reference}"),
        )
        .with_status(502)),
        Err(e) => Err(e.to_oci()),
    }
}

async fn probe_tag(
    registry: Registry<'_>,
    caller: &Caller<'_>,
    name: &str,
    tag: &str,
) -> TagProbe<RegistryError> {
    match registry.manifest_digest(caller, name, tag).await {
        Ok(Some(d)) => TagProbe::Found(d.to_string()),
        Ok(None) => TagProbe::NotFound,
        Err(e) if e.is_unreachable() => TagProbe::Unreachable(e),
        Err(e) => TagProbe::Failed(e),
    }
}

async fn fetch_manifest(
    registry: Registry<'_>,
    caller: &Caller<'_>,
    name: &str,
    digest: &str,
    max: u64,
) -> std::result::Result<Fetched, RegistryError> {
    Ok(
        match registry.manifest_get(caller, name, digest, max).await? {
            Some(m) => Fetched::Manifest {
                body: m.body,
                headers: m.headers,
            },
            None => Fetched::NotFound,
        },
    )
}
