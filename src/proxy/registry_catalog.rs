//! Glue for the listings the proxy pages itself (`crate::registry_catalog`): `_catalog`,
//! merged from every upstream, and tags lists asked for by page; here only who asks,
//! with which credentials, and the answer.

use bytes::Bytes;
use pingora::http::ResponseHeader;
use pingora::proxy::Session;
use pingora::Result;

use super::ctx::RequestCtx;
use super::{respond, rewrite, MargoProxy};
use crate::auth::{ActionSet, Scope};
use crate::oci::Operation;
use crate::registry_catalog::{tags, Answer, ListingKey, Source};
use crate::upstream::credentials::Scopes;
use crate::upstream::registry::{Auth, Caller};

/// Answers a catalog read (after authorization); `Ok(false)` for every other request.
pub async fn serve(
    proxy: &MargoProxy,
    session: &mut Session,
    ctx: &mut RequestCtx,
) -> Result<bool> {
    let method = &session.req_header().method;
    if ctx.operation != Operation::Catalog
        || !(method == http::Method::GET || method == http::Method::HEAD)
    {
        return Ok(false);
    }
    let state = &proxy.state;
    let req = session.req_header();
    let client_auth = req.headers.get(http::header::AUTHORIZATION);
    let mut key = ListingKey::shared();
    let mut sources = Vec::new();
    for index in state.router.routed_upstreams() {
        let Some(upstream) = state.upstreams.get(index) else {
            continue;
        };
        let auth = match (proxy.forwards_client_credentials(upstream), client_auth) {
            (true, Some(v)) => {
                key = ListingKey::client(v);
                Auth::Client(v)
            }
            (true, None) => Auth::Anonymous,
            (false, _) => Auth::Account(Scopes::Listed(vec!["registry:catalog:*".into()])),
        };
        sources.push(Source {
            index,
            upstream,
            mirror: state.git.as_ref().and_then(|g| g.of(index)).map(|m| &**m),
            caller: Caller {
                request_id: Some(ctx.request_id.header_value()),
                forwarded: Some(rewrite::forwarded(session, ctx)),
                auth,
            },
        });
    }
    let principal = ctx.principal.as_deref();
    let visible = |name: &str| {
        principal.is_none_or(|p| {
            p.permissions
                .allows(&Scope::repository(name, ActionSet::PULL))
        })
    };
    let answer = state
        .registry_catalog
        .answer(key, &sources, &state.router, req.uri.query(), visible)
        .await;
    drop(sources);
    send(session, ctx, answer).await
}

/// Answers a tags list that asks for a page (`n`, `last`), after policies; `Ok(false)`
/// for every other request (a whole list streams from the upstream).
pub async fn serve_tags(
    proxy: &MargoProxy,
    session: &mut Session,
    ctx: &mut RequestCtx,
) -> Result<bool> {
    let req = session.req_header();
    if ctx.operation != Operation::TagsList
        || !(req.method == http::Method::GET || req.method == http::Method::HEAD)
        || !tags::wants_page(req.uri.query())
    {
        return Ok(false);
    }
    let (Some(upstream), Some(matched), Some(client_name)) = (
        proxy.upstream_of(ctx),
        ctx.forward.as_ref().and_then(|f| f.matched.as_ref()),
        ctx.repository(),
    ) else {
        return Ok(false);
    };
    let caller = proxy.caller(session, ctx, upstream, &http::Method::GET);
    let answer = tags::answer(
        upstream,
        &caller,
        matched.upstream_name.as_str(),
        client_name,
        req.uri.query(),
        proxy.state.registry_catalog.page_size(),
    )
    .await;
    drop(caller);
    send(session, ctx, answer).await
}

async fn send(session: &mut Session, ctx: &mut RequestCtx, answer: Answer) -> Result<bool> {
    let mut resp = ResponseHeader::build(answer.status, Some(answer.headers.len() + 4))?;
    for (name, value) in answer.headers {
        resp.append_header(name, value)?;
    }
    if answer.status != 200 {
        if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&answer.body) {
            ctx.refusal = v["errors"][0]["message"].as_str().map(str::to_owned);
        }
    }
    respond::answer(session, ctx, resp, Bytes::from(answer.body)).await?;
    Ok(true)
}
