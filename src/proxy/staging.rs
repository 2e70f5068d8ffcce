//! Glue of [`crate::staging`]: blob reads that fall back to staging, the promotion
//! around an accepted manifest PUT, and the ledger of completed staged uploads.

use pingora::http::ResponseHeader;
use pingora::proxy::Session;

use super::ctx::RequestCtx;
use super::MargoProxy;
use crate::oci::headers::DOCKER_CONTENT_DIGEST;
use crate::oci::{OciError, OciErrorCode, OciRoute, Operation};
use crate::staging::promote::{self, Promotion, Push, PutOutcome};
use crate::upstream::registry::Caller;
use crate::upstream::Upstream;

/// An upload staging cannot take (its staging name would be too long) is refused.
pub fn plan(proxy: &MargoProxy, ctx: &mut RequestCtx) -> Result<(), OciError> {
    let (Some(staging), Some(fwd), Some(route)) = (
        proxy.state.staging.as_ref(),
        ctx.forward.as_mut(),
        ctx.route.as_ref(),
    ) else {
        return Ok(());
    };
    staging.plan_upload(fwd, route).map_err(|name| {
        OciError::new(
            OciErrorCode::NameInvalid,
            format!("repository `{name}` is too long to be staged under `staging.repository`"),
        )
    })
}

/// A blob GET/HEAD on an admission-controlled repository that lacks the blob while its
/// staging repository has it goes to staging (a push in progress checks and reads what
/// it uploaded). Such reads neither feed nor link the blob cache.
pub async fn blob_fallback(proxy: &MargoProxy, session: &Session, ctx: &mut RequestCtx) {
    let (Some(staging), Some(fwd), Some(route @ OciRoute::Blob { digest, .. })) = (
        proxy.state.staging.as_ref(),
        ctx.forward.as_ref(),
        ctx.route.as_ref(),
    ) else {
        return;
    };
    let Some((real, staged)) = staging.fallback_for(fwd, route) else {
        return;
    };
    let digest = digest.clone();
    let Some(upstream) = proxy.upstream_of(ctx).cloned() else {
        return;
    };
    let method = session.req_header().method.clone();
    let found = {
        let caller = proxy.caller(session, ctx, &upstream, &method);
        promote::blob_fallback(&upstream, &caller, real.as_str(), staged.as_str(), &digest).await
    };
    if !found {
        return;
    }
    ctx.blob = None;
    ctx.blob_lead = None;
    if let Some(fwd) = ctx.forward.as_mut() {
        let old = format!("/v2/{}/", real.as_str());
        if let Some(rest) = fwd.path_and_query.strip_prefix(&old) {
            fwd.path_and_query = format!("/v2/{}/{rest}", staged.as_str());
            fwd.staged = Some(staged);
        }
    }
}

/// Before an accepted manifest PUT goes upstream: its blobs are mounted from staging
/// into the real repository. `Ok(None)`: the route does not stage.
pub async fn promote<'p>(
    proxy: &'p MargoProxy,
    ctx: &RequestCtx,
    upstream: &Upstream,
    caller: &Caller<'_>,
    content_type: &str,
    body: &bytes::Bytes,
) -> Result<Option<Promotion<'p>>, OciError> {
    let (Some(staging), Some(fwd), Some(reference)) = (
        proxy.state.staging.as_deref(),
        ctx.forward.as_ref(),
        ctx.reference(),
    ) else {
        return Ok(None);
    };
    let Some(matched) = fwd.matched.as_ref().filter(|_| staging.applies(fwd)) else {
        return Ok(None);
    };
    let Some(staged) = staging.staged_name(&matched.upstream_name) else {
        return Ok(None);
    };
    let push = Push {
        real: matched.upstream_name.as_str(),
        staged: staged.as_str(),
        reference: &reference,
        content_type: (!content_type.is_empty()).then_some(content_type),
        manifest: body,
    };
    match promote::promote(staging, upstream, caller, &push).await {
        Ok(p) => Ok(Some(p)),
        Err(e) => {
            tracing::warn!(upstream = %upstream.name, repository = %push.real, error = %e,
                "staging: could not move the accepted blobs into the repository");
            Err(match e {
                promote::PromoteError::Upstream(e) => e.to_oci(),
                promote::PromoteError::Journal(_) => OciError::new(
                    OciErrorCode::Unavailable,
                    "the proxy cannot write its staging journal",
                ),
            })
        }
    }
}

/// Settles a promotion once the manifest PUT was answered (or not).
pub async fn settle(
    promotion: Option<Promotion<'_>>,
    upstream: &Upstream,
    caller: &Caller<'_>,
    outcome: PutOutcome,
) {
    if let Some(p) = promotion {
        p.settle(upstream, caller, outcome).await;
    }
}

/// A completed upload into a staging repository (the final PUT, a monolithic POST, a
/// mount) is noted with its time, for the cleanup by age.
pub fn on_response(proxy: &MargoProxy, ctx: &RequestCtx, resp: &ResponseHeader) {
    let (Some(staging), Some(fwd)) = (proxy.state.staging.as_ref(), ctx.forward.as_ref()) else {
        return;
    };
    let Some(staged) = fwd.staged.as_ref() else {
        return;
    };
    if resp.status != http::StatusCode::CREATED
        || !matches!(
            ctx.operation,
            Operation::UploadComplete | Operation::UploadStart
        )
    {
        return;
    }
    let digest = resp
        .headers
        .get(&DOCKER_CONTENT_DIGEST)
        .and_then(|v| v.to_str().ok())
        .and_then(|d| d.parse::<crate::oci::Digest>().ok());
    if let (Some(d), Some(upstream)) = (digest, proxy.upstream_of(ctx)) {
        staging.ledger.record(&upstream.name, staged.as_str(), &d);
    }
}

/// A refused push: the blobs it staged are deleted from staging (see
/// [`promote::discard`]).
pub async fn discard(
    proxy: &MargoProxy,
    session: &Session,
    ctx: &RequestCtx,
    upstream: &Upstream,
    body: &bytes::Bytes,
) {
    let (Some(staging), Some(fwd)) = (proxy.state.staging.as_ref(), ctx.forward.as_ref()) else {
        return;
    };
    let Some(staged) = fwd
        .matched
        .as_ref()
        .filter(|_| staging.applies(fwd))
        .and_then(|m| staging.staged_name(&m.upstream_name))
    else {
        return;
    };
    let method = session.req_header().method.clone();
    let caller = proxy.caller(session, ctx, upstream, &method);
    promote::discard(upstream, &caller, staged.as_str(), body).await;
}
