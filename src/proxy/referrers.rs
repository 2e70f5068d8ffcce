//! Glue for the referrers API (logic in [`crate::referrers`]): answering
//! `GET /v2/<name>/referrers/<digest>` for upstreams without it, keeping the index on
//! pushes and deletes, and the side-channel access the trust checks share.

use pingora::http::ResponseHeader;
use pingora::proxy::Session;
use pingora::Result;

use super::ctx::RequestCtx;
use super::{respond, MargoProxy};
use crate::oci::{Digest, OciError, OciErrorCode, OciRoute};
use crate::referrers::{self, IoAuth, Support, UpstreamIo};
use crate::upstream::Upstream;

/// The upstream a routed request addresses, reachable for side calls with the
/// credentials this request may use there.
pub struct Side<'a> {
    pub idx: usize,
    pub upstream: &'a Upstream,
    /// The repository name at the upstream.
    pub repo: &'a str,
    pub io: UpstreamIo<'a>,
}

pub fn side<'a>(proxy: &'a MargoProxy, session: &Session, ctx: &'a RequestCtx) -> Option<Side<'a>> {
    let fwd = ctx.forward.as_ref()?;
    let matched = fwd.matched.as_ref()?;
    let upstream = proxy.state.upstreams.get(fwd.upstream)?;
    let auth = if proxy.forwards_client_credentials(upstream) {
        match session
            .req_header()
            .headers
            .get(http::header::AUTHORIZATION)
        {
            Some(h) => IoAuth::Client(h.clone()),
            None => IoAuth::Account,
        }
    } else {
        // The account, or anonymous tokens where the upstream has none.
        IoAuth::Account
    };
    Some(Side {
        idx: fwd.upstream,
        upstream,
        repo: matched.upstream_name.as_str(),
        io: UpstreamIo { upstream, auth },
    })
}

fn artifact_type_filter(session: &Session) -> Option<String> {
    let q = session.req_header().uri.query()?;
    url::form_urlencoded::parse(q.as_bytes())
        .find(|(k, _)| k == "artifactType")
        .map(|(_, v)| v.into_owned())
        .filter(|v| !v.is_empty())
}

fn unavailable(e: impl std::fmt::Display) -> OciError {
    OciError::new(
        OciErrorCode::Unavailable,
        format!("referrers: upstream registry unavailable: {e}"),
    )
    .with_status(502)
}

/// `Ok(false)`: the upstream has the API, proxy the request as it is.
pub async fn serve(
    proxy: &MargoProxy,
    session: &mut Session,
    ctx: &mut RequestCtx,
) -> Result<bool> {
    let Some(OciRoute::Referrers { digest, .. }) = ctx.route.clone() else {
        return Ok(false);
    };
    let filter = artifact_type_filter(session);
    let service = proxy.state.referrers.clone();
    let answer = {
        let Some(s) = side(proxy, session, ctx) else {
            return Ok(false);
        };
        match service.support(s.idx, &s.io, s.repo, &digest).await {
            Ok(Support::Native) => return Ok(false),
            Ok(Support::Emulated) => service
                .list(
                    s.idx,
                    &s.upstream.name,
                    &s.io,
                    s.repo,
                    &digest,
                    filter.as_deref(),
                )
                .await
                .map_err(unavailable),
            Err(e) => Err(unavailable(e)),
        }
    };
    let listing = match answer {
        Ok(l) => l,
        Err(e) => {
            respond::oci_error(session, ctx, &e).await?;
            return Ok(true);
        }
    };
    let body = listing.body();
    let mut resp = ResponseHeader::build(200, Some(6))?;
    resp.insert_header("Content-Type", referrers::index::INDEX_MEDIA_TYPE)?;
    resp.insert_header("Content-Length", body.len().to_string())?;
    resp.insert_header(
        crate::oci::headers::DOCKER_DISTRIBUTION_API_VERSION.clone(),
        crate::oci::headers::API_VERSION_VALUE,
    )?;
    if listing.filtered {
        resp.insert_header("OCI-Filters-Applied", "artifactType")?;
    }
    resp.insert_header("X-Request-Id", ctx.request_id.header_value().clone())?;
    ctx.answered_status = Some(200);
    respond::write(session, resp, body).await?;
    Ok(true)
}

/// After the upstream accepted a manifest push: a referrer goes into its subject's
/// index (emulated upstreams); verdicts about the subject are forgotten. Returns the
/// `OCI-Subject` to answer with, when the proxy indexed it.
pub async fn after_push(
    proxy: &MargoProxy,
    session: &Session,
    ctx: &RequestCtx,
    body: &[u8],
    content_type: &str,
) -> Option<String> {
    let s = side(proxy, session, ctx)?;
    let service = &proxy.state.referrers;
    let tag = match &ctx.route {
        Some(OciRoute::Manifest { reference, .. }) => reference.as_tag().map(str::to_owned),
        _ => None,
    };
    // A cosign signature tag or a client-written fallback index for some digest.
    if let Some(tag) = &tag {
        let base = tag.strip_suffix(".sig").unwrap_or(tag);
        if let Some(d) = digest_of_tag(base) {
            if let Some(trust) = &proxy.state.trust {
                trust.invalidate(&s.upstream.name, s.repo, &d).await;
            }
            service.invalidate(&s.upstream.name, s.repo, &d).await;
        }
    }
    let pushed = referrers::pushed_referrer(body, content_type)?;
    if let Some(trust) = &proxy.state.trust {
        trust
            .invalidate(&s.upstream.name, s.repo, &pushed.subject)
            .await;
    }
    match service.support(s.idx, &s.io, s.repo, &pushed.subject).await {
        Ok(Support::Native) => return None,
        Ok(Support::Emulated) => {}
        Err(e) => {
            tracing::warn!(upstream = %s.upstream.name, error = %e, "referrers probe failed; the client keeps its own fallback");
            return None;
        }
    }
    match service.add(&s.upstream.name, &s.io, s.repo, &pushed).await {
        Ok(()) => {
            invalidate_fallback_tag(proxy, ctx, s.upstream, &pushed.subject).await;
            Some(pushed.subject.to_string())
        }
        Err(e) => {
            // Without `OCI-Subject` the client updates the fallback tag itself.
            tracing::warn!(upstream = %s.upstream.name, subject = %pushed.subject, error = %e, "referrers index update failed");
            None
        }
    }
}

/// Before a manifest DELETE by digest goes upstream: the subject it refers to, so the
/// index can drop it once the delete succeeded (emulated upstreams only).
pub async fn before_delete(
    proxy: &MargoProxy,
    session: &Session,
    ctx: &RequestCtx,
) -> Option<Digest> {
    let Some(OciRoute::Manifest { reference, .. }) = &ctx.route else {
        return None;
    };
    let digest = reference.as_digest()?;
    let s = side(proxy, session, ctx)?;
    let max = proxy.state.limits.max_manifest_bytes;
    let m = s.io_get(digest, max).await?;
    let subject = referrers::index::subject_of(&m)?;
    match proxy
        .state
        .referrers
        .support(s.idx, &s.io, s.repo, &subject)
        .await
    {
        Ok(Support::Emulated) => Some(subject),
        _ => None,
    }
}

impl Side<'_> {
    async fn io_get(&self, digest: &Digest, max: u64) -> Option<bytes::Bytes> {
        use crate::referrers::RegistryIo as _;
        let m = self
            .io
            .get_manifest(self.repo, &digest.to_string(), max)
            .await
            .ok()??;
        digest.verifies(&m.body).then_some(m.body)
    }
}

/// After a successful delete of a referrer of `subject`.
pub async fn after_delete(
    proxy: &MargoProxy,
    session: &Session,
    ctx: &RequestCtx,
    subject: &Digest,
) {
    let (Some(s), Some(OciRoute::Manifest { reference, .. })) =
        (side(proxy, session, ctx), &ctx.route)
    else {
        return;
    };
    let referrer = reference.to_string();
    if let Err(e) = proxy
        .state
        .referrers
        .remove(&s.upstream.name, &s.io, s.repo, subject, &referrer)
        .await
    {
        tracing::warn!(upstream = %s.upstream.name, %subject, error = %e, "referrers index update after delete failed");
    }
    if let Some(trust) = &proxy.state.trust {
        trust.invalidate(&s.upstream.name, s.repo, subject).await;
    }
    invalidate_fallback_tag(proxy, ctx, s.upstream, subject).await;
}

/// The proxy wrote the fallback tag itself: the manifest cache must not serve the old one.
async fn invalidate_fallback_tag(
    proxy: &MargoProxy,
    ctx: &RequestCtx,
    upstream: &Upstream,
    subject: &Digest,
) {
    if let (Some(cache), Some(key)) = (
        &proxy.state.cache,
        super::manifest_get::repo_key(ctx, upstream),
    ) {
        cache
            .on_manifest_put(&key, &referrers::fallback_tag(subject))
            .await;
    }
}

/// `sha256-<hex>` back to its digest.
fn digest_of_tag(tag: &str) -> Option<Digest> {
    if !referrers::is_fallback_tag(tag) {
        return None;
    }
    tag.replacen('-', ":", 1).parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fallback_tags_name_their_digest() {
        let d = Digest::sha256_of(b"x");
        assert_eq!(digest_of_tag(&referrers::fallback_tag(&d)), Some(d));
        assert_eq!(digest_of_tag("latest"), None);
    }
}
