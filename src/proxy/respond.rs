//! The proxy's own answers (errors, re-issued upstream responses, token and auth
//! answers) go out through [`answer`], which stamps the headers every answer carries;
//! answers the proxy streams from the upstream get the same in `response_filter`.

use bytes::Bytes;
use pingora::http::ResponseHeader;
use pingora::proxy::Session;
use pingora::Result;

use super::ctx::RequestCtx;
use crate::oci::headers::{
    API_VERSION_VALUE, DOCKER_DISTRIBUTION_API_VERSION, X_MARGO_POLICY_DENIED, X_REQUEST_ID,
};
use crate::oci::OciError;

/// The whole request body, or `None` when it is larger than `limit` bytes (reading
/// stops there, and the connection is not kept alive: the rest was never read).
pub async fn read_body(session: &mut Session, limit: usize) -> Result<Option<Bytes>> {
    let mut body = bytes::BytesMut::new();
    while let Some(chunk) = session.read_request_body().await? {
        if body.len() + chunk.len() > limit {
            session.set_keepalive(None);
            return Ok(None);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Some(body.freeze()))
}

/// Sends an OCI error body (headers only for HEAD, which must not have a body).
pub async fn oci_error(session: &mut Session, ctx: &mut RequestCtx, err: &OciError) -> Result<()> {
    let body = err.body();
    let mut resp = ResponseHeader::build(err.status, Some(5))?;
    resp.insert_header(http::header::CONTENT_TYPE, "application/json")?;
    if let Some(first) = err.errors.first() {
        ctx.refusal = Some(first.message.clone());
    }
    answer(session, ctx, resp, Bytes::from(body)).await
}

/// Sends a complete answer of the proxy's own: `Content-Length` from `body`, the
/// request id, the registry API version, the denying policy rule if any; records the
/// status for the access log.
pub async fn answer(
    session: &mut Session,
    ctx: &mut RequestCtx,
    mut resp: ResponseHeader,
    body: Bytes,
) -> Result<()> {
    resp.insert_header(http::header::CONTENT_LENGTH, body.len().to_string())?;
    stamp(&mut resp, ctx)?;
    resp.insert_header(&DOCKER_DISTRIBUTION_API_VERSION, API_VERSION_VALUE)?;
    ctx.answered_status = Some(resp.status.as_u16());
    write(session, resp, body).await
}

/// The headers every answer carries, also those streamed from the upstream.
pub fn stamp(resp: &mut ResponseHeader, ctx: &RequestCtx) -> Result<()> {
    resp.insert_header(&X_REQUEST_ID, ctx.request_id.header_value().clone())?;
    if let Some(rule) = &ctx.policy_denied_rule {
        resp.insert_header(&X_MARGO_POLICY_DENIED, rule.as_str())?;
    }
    Ok(())
}

/// Sends a head built complete (a cache hit's, stamped when it was built) and its
/// body; the body is dropped for HEAD.
pub async fn write(session: &mut Session, resp: ResponseHeader, body: Bytes) -> Result<()> {
    let head = session.req_header().method == http::Method::HEAD;
    let end = head || body.is_empty();
    session.write_response_header(Box::new(resp), end).await?;
    if !end {
        session.write_response_body(Some(body), true).await?;
    }
    Ok(())
}
