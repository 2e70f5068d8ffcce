//! Writing the proxy's own answers (errors and re-issued upstream responses) to a client.

use bytes::Bytes;
use pingora::http::ResponseHeader;
use pingora::proxy::Session;
use pingora::Result;

use super::ctx::RequestCtx;
use crate::oci::OciError;

pub const API_VERSION: (&str, &str) = ("Docker-Distribution-Api-Version", "registry/2.0");

/// Sends an OCI error body (headers only for HEAD, which must not have a body).
pub async fn oci_error(session: &mut Session, ctx: &mut RequestCtx, err: &OciError) -> Result<()> {
    let body = err.body();
    let mut resp = ResponseHeader::build(err.status, Some(4))?;
    resp.insert_header("Content-Type", "application/json")?;
    resp.insert_header("Content-Length", body.len().to_string())?;
    resp.insert_header(API_VERSION.0, API_VERSION.1)?;
    resp.insert_header("X-Request-Id", ctx.request_id.header_value().clone())?;
    if let Some(rule) = &ctx.policy_denied_rule {
        resp.insert_header("X-Margo-Policy-Denied", rule.as_str())?;
    }
    if let Some(first) = err.errors.first() {
        ctx.refusal = Some(first.message.clone());
    }
    ctx.answered_status = Some(err.status);
    write(session, resp, Bytes::from(body)).await
}

/// Sends a complete response; the body is dropped for HEAD.
pub async fn write(session: &mut Session, resp: ResponseHeader, body: Bytes) -> Result<()> {
    let head = session.req_header().method == http::Method::HEAD;
    let end = head || body.is_empty();
    session.write_response_header(Box::new(resp), end).await?;
    if !end {
        session.write_response_body(Some(body), true).await?;
    }
    Ok(())
}
