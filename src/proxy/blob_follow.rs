//! `blob_redirects: follow`: a blob GET/HEAD the blob cache did not answer is fetched by
//! the proxy itself through the one registry client, which follows the registry's
//! redirect to object storage ([`crate::upstream::redirect`]); the answer is streamed to
//! the client and, for the leading miss, fills the blob cache on the way.

use pingora::http::ResponseHeader;
use pingora::proxy::Session;
use pingora::{Error, ErrorType, Result};

use super::ctx::RequestCtx;
use super::{respond, MargoProxy};
use crate::oci::headers::{
    API_VERSION_VALUE, DOCKER_CONTENT_DIGEST, DOCKER_DISTRIBUTION_API_VERSION,
};
use crate::oci::{OciError, OciErrorCode, OciRoute};
use crate::upstream::redirect::{self, BlobRedirects, BLOB_DEADLINE};
use crate::upstream::registry::Request;

/// Answers the blob request when its upstream's redirects are followed; `Ok(false)`:
/// proxy it as usual.
/// Whether this request's upstream has redirects followed (checked before the handler
/// is boxed).
pub fn applies(proxy: &MargoProxy, ctx: &RequestCtx) -> bool {
    proxy
        .upstream_of(ctx)
        .is_some_and(|u| u.blob_redirects == BlobRedirects::Follow)
}

pub async fn serve(
    proxy: &MargoProxy,
    session: &mut Session,
    ctx: &mut RequestCtx,
) -> Result<bool> {
    let Some(upstream) = proxy.upstream_of(ctx).cloned() else {
        return Ok(false);
    };
    if upstream.blob_redirects != BlobRedirects::Follow {
        return Ok(false);
    }
    let (Some(OciRoute::Blob { digest, .. }), Some(name)) = (
        ctx.route.clone(),
        ctx.forward
            .as_ref()
            .and_then(|f| f.matched.as_ref())
            .map(|m| m.upstream_name.clone()),
    ) else {
        return Ok(false);
    };
    let method = session.req_header().method.clone();
    let mut req = Request::new(method.clone(), format!("/v2/{name}/blobs/{digest}"))
        .max_body(u64::MAX)
        .deadline(BLOB_DEADLINE);
    if let Some(range) = session.req_header().headers.get(http::header::RANGE) {
        req = req.header(http::header::RANGE, range.clone());
    }
    let started = std::time::Instant::now();
    let result = {
        let caller = proxy.caller(session, ctx, &upstream, &method);
        upstream.registry().blob_following(&caller, req).await
    };
    ctx.upstream_elapsed = Some(started.elapsed());
    let (mut answer, followed) = match result {
        Ok(a) => a,
        Err(e) => {
            ctx.blob_lead = None;
            tracing::warn!(upstream = %upstream.name, error = %e, "blob redirect not followed");
            respond::oci_error(session, ctx, &e.to_oci()).await?;
            return Ok(true);
        }
    };
    if followed && !answer.status.is_success() {
        ctx.blob_lead = None;
        let e = OciError::new(
            OciErrorCode::Unavailable,
            format!(
                "upstream `{}`: object storage answered {} to the redirected blob request",
                upstream.name,
                answer.status.as_u16()
            ),
        );
        respond::oci_error(session, ctx, &e).await?;
        return Ok(true);
    }
    let mut resp = ResponseHeader::build(answer.status, Some(8))?;
    for (k, v) in redirect::relayed_headers(&answer.headers) {
        resp.insert_header(k, v)?;
    }
    if answer.status.is_success() && !answer.headers.contains_key(&DOCKER_CONTENT_DIGEST) {
        resp.insert_header(&DOCKER_CONTENT_DIGEST, digest.to_string())?;
    }
    resp.insert_header(&DOCKER_DISTRIBUTION_API_VERSION, API_VERSION_VALUE)?;
    if followed {
        resp.insert_header(redirect::FOLLOWED_HEADER, "followed")?;
    }
    super::blob::on_response(ctx, &resp);
    respond::stamp(&mut resp, ctx)?;
    ctx.answered_status = Some(answer.status.as_u16());
    let no_body = method == http::Method::HEAD
        || answer.status == http::StatusCode::NO_CONTENT
        || answer.status == http::StatusCode::NOT_MODIFIED;
    session
        .write_response_header(Box::new(resp), no_body)
        .await?;
    if no_body {
        ctx.blob_fill = None;
        return Ok(true);
    }
    loop {
        match answer.body.next_chunk().await {
            Ok(Some(chunk)) => {
                let mut body = Some(chunk);
                super::blob::on_body(ctx, &mut body, false)?;
                if body.is_some() {
                    session.write_response_body(body, false).await?;
                }
            }
            Ok(None) => {
                let mut body = None;
                super::blob::on_body(ctx, &mut body, true)?;
                session.write_response_body(body, true).await?;
                return Ok(true);
            }
            // The head is out: all that is left is to cut the body short.
            Err(e) => return Error::e_explain(ErrorType::ReadError, e.to_string()),
        }
    }
}
