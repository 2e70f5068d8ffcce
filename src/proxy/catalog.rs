//! Glue for the application catalog: its HTTP answers, and the index updates after a
//! manifest push or delete through the proxy. The logic is in `crate::catalog`.

use bytes::Bytes;
use pingora::http::ResponseHeader;
use pingora::proxy::Session;
use pingora::Result;

use super::ctx::RequestCtx;
use super::{respond, MargoProxy};
use crate::catalog::api::{self, Reply, Request};
use crate::catalog::configure::MAX_BODY_BYTES;

/// Whether this request is for the catalog (checked before its handler is boxed).
pub fn claims(proxy: &MargoProxy, session: &Session) -> bool {
    proxy.state.catalog.is_some() && api::is_catalog_path(session.req_header().uri.path())
}

/// Answers `/margo/v1/applications…` and `/catalog/…` when the catalog is on;
/// `Ok(false)` for every other request.
pub async fn serve(
    proxy: &MargoProxy,
    session: &mut Session,
    ctx: &mut RequestCtx,
) -> Result<bool> {
    let Some(catalog) = proxy.state.catalog.as_ref() else {
        return Ok(false);
    };
    if !api::is_catalog_path(session.req_header().uri.path()) {
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
        match api::handle(catalog, proxy.state.auth.as_deref(), &request).await {
            Some(r) => r,
            None => return Ok(false),
        }
    } else {
        Reply::error(
            &crate::oci::OciError::new(
                crate::oci::OciErrorCode::SizeInvalid,
                format!("the body is larger than {MAX_BODY_BYTES} bytes"),
            )
            .with_status(413),
        )
    };
    let mut resp = ResponseHeader::build(reply.status, Some(reply.headers.len() + 2))?;
    for (name, value) in &reply.headers {
        resp.insert_header(name.clone(), value.as_str())?;
    }
    resp.insert_header("Content-Length", reply.body.len().to_string())?;
    resp.insert_header("X-Request-Id", ctx.request_id.header_value().clone())?;
    ctx.answered_status = Some(reply.status);
    let body: Bytes = if reply.status == 304 {
        Bytes::new()
    } else {
        reply.body
    };
    respond::write(session, resp, body).await?;
    Ok(true)
}

/// After a successful manifest PUT: index the version before the client hears back,
/// so a catalog read right after a push sees it.
pub async fn after_put(proxy: &MargoProxy, ctx: &RequestCtx) {
    if let (Some(c), Some(repo), Some(reference)) =
        (&proxy.state.catalog, ctx.repository(), ctx.reference())
    {
        c.on_manifest_put(repo, &reference).await;
    }
}

/// After a successful manifest DELETE.
pub fn after_delete(proxy: &MargoProxy, ctx: &RequestCtx) {
    if let (Some(c), Some(repo), Some(reference)) =
        (&proxy.state.catalog, ctx.repository(), ctx.reference())
    {
        c.on_manifest_delete(repo, &reference);
    }
}
