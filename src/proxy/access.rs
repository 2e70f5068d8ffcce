//! Authentication at the proxy: the token endpoint bridge and the per-request decision,
//! which always runs before the cache so that a cache hit never lets anyone read.

use bytes::Bytes;
use pingora::http::ResponseHeader;
use pingora::proxy::Session;
use pingora::Result;

use super::ctx::RequestCtx;
use super::{respond, MargoProxy};
use crate::auth::{Authenticator, Target};
use crate::oci::{OciRoute, Operation};

/// Largest token request body (a form with a few fields).
const MAX_TOKEN_REQUEST: usize = 16 * 1024;

/// Whether this request is for the token bridge (checked before its handler is boxed).
pub fn claims_token_endpoint(proxy: &MargoProxy, session: &Session) -> bool {
    proxy
        .state
        .auth
        .as_ref()
        .and_then(|a| a.token_endpoint())
        .is_some_and(|bridge| session.req_header().uri.path() == bridge.path())
}

/// Answers the token endpoint when the request is for it; `Ok(false)` otherwise.
pub async fn token_endpoint(
    proxy: &MargoProxy,
    session: &mut Session,
    ctx: &mut RequestCtx,
) -> Result<bool> {
    let Some(bridge) = proxy.state.auth.as_ref().and_then(|a| a.token_endpoint()) else {
        return Ok(false);
    };
    if session.req_header().uri.path() != bridge.path() {
        return Ok(false);
    }
    ctx.operation = Operation::Token;
    let Some(body) = respond::read_body(session, MAX_TOKEN_REQUEST).await? else {
        let resp = ResponseHeader::build(413, Some(4))?;
        respond::answer(session, ctx, resp, Bytes::new()).await?;
        return Ok(true);
    };
    let req = session.req_header();
    let answer = bridge
        .handle(&req.method, &req.headers, req.uri.query(), &body)
        .await;
    let mut resp = ResponseHeader::build(answer.status.as_u16(), Some(6))?;
    for (name, value) in &answer.headers {
        resp.insert_header(name.clone(), value.as_str())?;
    }
    respond::answer(session, ctx, resp, Bytes::from(answer.body.into_bytes())).await?;
    Ok(true)
}

/// The auth decision for a parsed request; answers the refusal itself and returns
/// `Ok(true)` when the request must stop here.
pub async fn authorize(
    auth: &Authenticator,
    proxy: &MargoProxy,
    session: &mut Session,
    ctx: &mut RequestCtx,
    route: &OciRoute,
) -> Result<bool> {
    let req = session.req_header();
    let mount_from = match route {
        OciRoute::UploadStart { .. } => req.uri.query().and_then(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .find(|(k, _)| k == "from")
                .map(|(_, v)| v.into_owned())
        }),
        _ => None,
    };
    let target = match route {
        OciRoute::Ping => Target::Base,
        OciRoute::Catalog => Target::Catalog,
        other => match other.name() {
            Some(name) => Target::Repository {
                name: name.as_str(),
                mount_from: mount_from.as_deref(),
            },
            None => Target::Base,
        },
    };
    let header = req
        .headers
        .get(http::header::AUTHORIZATION)
        .map(|v| v.as_bytes());
    match auth.authorize(&req.method, &target, header).await {
        Ok(principal) => {
            proxy.state.metrics.auth_granted(principal.anonymous);
            ctx.principal = Some(principal);
            Ok(false)
        }
        Err(e) => {
            proxy.state.metrics.auth_denied(e.reason());
            let rejection = auth.reject(&e);
            let mut resp = ResponseHeader::build(rejection.status.as_u16(), Some(6))?;
            for (name, value) in &rejection.headers {
                resp.insert_header(name.clone(), value.as_str())?;
            }
            ctx.refusal = Some(format!("auth: {}", e.reason()));
            respond::answer(session, ctx, resp, Bytes::from(rejection.body.into_bytes())).await?;
            Ok(true)
        }
    }
}
