//! Glue for the Git endpoint (`/git/…`): reads the body, hands the request to
//! `crate::git::serve`, writes its answer.

use pingora::http::ResponseHeader;
use pingora::proxy::Session;
use pingora::Result;

use super::ctx::RequestCtx;
use super::{respond, MargoProxy};
use crate::git::serve::{self as git, Reply, Request, MAX_BODY_BYTES};

/// Whether this request is for the Git endpoint (checked before its handler is boxed).
pub fn claims(proxy: &MargoProxy, session: &Session) -> bool {
    proxy.state.git_endpoint.is_some() && git::is_git_path(session.req_header().uri.path())
}

/// Answers requests under `/git/` when the endpoint is on; `Ok(false)` otherwise.
pub async fn serve(
    proxy: &MargoProxy,
    session: &mut Session,
    ctx: &mut RequestCtx,
) -> Result<bool> {
    let Some(service) = proxy.state.git_endpoint.as_ref() else {
        return Ok(false);
    };
    if !git::is_git_path(session.req_header().uri.path()) {
        return Ok(false);
    }
    ctx.operation = crate::oci::operation::Operation::Other;
    let reply = if let Some(body) = respond::read_body(session, MAX_BODY_BYTES).await? {
        let req = session.req_header();
        let request = Request {
            method: &req.method,
            path: req.uri.path(),
            query: req.uri.query(),
            headers: &req.headers,
            body: &body,
        };
        service.handle(proxy.state.auth.as_deref(), &request).await
    } else {
        Reply::text(413, "margo-proxy: request body too large")
    };
    let mut resp = ResponseHeader::build(reply.status, Some(reply.headers.len() + 2))?;
    for (name, value) in &reply.headers {
        resp.insert_header(name.clone(), value.as_str())?;
    }
    respond::answer(session, ctx, resp, reply.body).await?;
    Ok(true)
}
