//! Manifest pushes are answered by the proxy itself: the body is read whole (manifests are
//! small and bounded), checked, and only then re-issued to the upstream. A push that fails
//! admission therefore never reaches the upstream at all, not even as a broken request.

use bytes::{Bytes, BytesMut};
use pingora::http::ResponseHeader;
use pingora::proxy::Session;
use pingora::Result;

use super::ctx::RequestCtx;
use super::{respond, MargoProxy};
use crate::oci::{OciError, OciErrorCode};
use crate::upstream::location::UrlRewrite;

/// Largest upstream answer to a manifest PUT we relay (they are tiny JSON bodies).
const MAX_UPSTREAM_ANSWER: usize = 64 * 1024;

/// Response headers of a manifest PUT worth passing on to the client.
const RELAYED: &[&str] = &[
    "content-type",
    "docker-content-digest",
    "docker-distribution-api-version",
    "oci-subject",
    "www-authenticate",
    "link",
    "location",
];

pub async fn handle(proxy: &MargoProxy, session: &mut Session, ctx: &mut RequestCtx) -> Result<()> {
    let limit = proxy.state.limits.max_manifest_bytes;
    let body = match read_body(session, limit).await? {
        Ok(b) => b,
        Err(e) => return respond::oci_error(session, ctx, &e).await,
    };
    let (Some(fwd), Some(upstream)) = (ctx.forward.clone(), proxy.upstream_of(ctx).cloned()) else {
        let e = OciError::new(OciErrorCode::Unavailable, "request was not routed");
        return respond::oci_error(session, ctx, &e).await;
    };
    // Admission sees the body before the upstream does; a refusal ends the push here.
    let admitted = match super::admission::admit(proxy, ctx, &upstream, &body).await {
        Ok(a) => a,
        Err(e) => return respond::oci_error(session, ctx, &e).await,
    };
    let method = session.req_header().method.clone();
    if let Some(e) = super::policy::push(proxy, ctx, &method, &body, admitted).await {
        return respond::oci_error(session, ctx, &e).await;
    }
    let req = session.req_header();
    let content_type = req
        .headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let mut out = upstream
        .http
        .put(upstream.url(&fwd.path_and_query))
        .header("X-Request-Id", ctx.request_id.header_value().clone())
        .header(
            "X-Forwarded-Proto",
            if ctx.client_tls { "https" } else { "http" },
        )
        .body(body.clone());
    if let Some(ct) = req.headers.get(http::header::CONTENT_TYPE) {
        out = out.header(http::header::CONTENT_TYPE, ct.clone());
    }
    if let Some(h) = &ctx.client_host {
        out = out.header("X-Forwarded-Host", h.clone());
    }
    if let Some(ip) = session
        .client_addr()
        .and_then(|a| a.as_inet())
        .map(|a| a.ip())
    {
        out = out.header("X-Forwarded-For", ip.to_string());
    }
    if let Some(a) = &ctx.upstream_authorization {
        out = out.header(http::header::AUTHORIZATION, a.as_str());
    } else if proxy.forwards_client_credentials(&upstream) {
        if let Some(a) = req.headers.get(http::header::AUTHORIZATION) {
            out = out.header(http::header::AUTHORIZATION, a.clone());
        }
    }
    ctx.upstream_started = Some(std::time::Instant::now());
    let answer = match out.send().await {
        Ok(a) => a,
        Err(e) => {
            tracing::warn!(upstream = %upstream.name, error = %e, "manifest push to upstream failed");
            let e = OciError::new(OciErrorCode::Unavailable, "upstream registry unavailable");
            return respond::oci_error(session, ctx, &e).await;
        }
    };
    ctx.upstream_elapsed = ctx.upstream_started.map(|s| s.elapsed());
    let status = answer.status().as_u16();
    if status == 401 {
        if let Some(c) = &upstream.credentials {
            c.forget().await;
        }
    }
    if answer.status().is_success() {
        if let (Some(cache), Some(key), Some(reference)) = (
            &proxy.state.cache,
            super::manifest_get::repo_key(ctx, &upstream),
            ctx.reference(),
        ) {
            cache.on_manifest_put(&key, &reference).await;
        }
    }
    let headers = answer.headers().clone();
    let answer_body = read_limited(answer).await;
    let oci_subject = match answer_status_ok(status) {
        true if !headers.contains_key("oci-subject") => {
            super::referrers::after_push(proxy, session, ctx, &body, &content_type).await
        }
        _ => None,
    };
    let mut resp = ResponseHeader::build(status, Some(8))?;
    let public_base = ctx.public_base(proxy.state.public_url.as_deref());
    let rw = UrlRewrite {
        upstream: &upstream.base,
        client_host: ctx.client_host(),
        public_base: &public_base,
        upstream_name: fwd.matched.as_ref().map(|m| m.upstream_name.as_str()),
        client_name: ctx.repository(),
    };
    for name in RELAYED {
        if *name == "www-authenticate" && !proxy.forwards_client_credentials(&upstream) {
            continue;
        }
        for v in headers.get_all(*name) {
            let Ok(s) = v.to_str() else { continue };
            let value = match *name {
                "location" => rw.location(s).unwrap_or_else(|| s.to_owned()),
                "link" => rw.link(s),
                _ => s.to_owned(),
            };
            resp.append_header(*name, value)?;
        }
    }
    if let Some(subject) = oci_subject {
        resp.insert_header("OCI-Subject", subject)?;
    }
    resp.insert_header("Content-Length", answer_body.len().to_string())?;
    resp.insert_header("X-Request-Id", ctx.request_id.header_value().clone())?;
    ctx.answered_status = Some(status);
    respond::write(session, resp, answer_body).await
}

fn answer_status_ok(status: u16) -> bool {
    (200..300).contains(&status)
}

/// Most bytes of an oversized body read and thrown away so that the client, still sending,
/// gets to read our 413 instead of a reset connection. Past this we just close.
const MAX_DRAIN: u64 = 64 << 20;

/// Reads the whole request body, refusing it past `limit` bytes.
async fn read_body(
    session: &mut Session,
    limit: u64,
) -> Result<std::result::Result<Bytes, OciError>> {
    let too_big = OciError::new(
        OciErrorCode::SizeInvalid,
        format!("manifest is larger than the {limit} bytes this registry accepts"),
    )
    .with_status(413);
    let mut buf = BytesMut::new();
    let mut seen: u64 = 0;
    while let Some(chunk) = session.read_request_body().await? {
        seen += chunk.len() as u64;
        if seen > limit {
            if seen > MAX_DRAIN {
                session.set_keepalive(None);
                return Ok(Err(too_big));
            }
            buf.clear();
            continue;
        }
        buf.extend_from_slice(&chunk);
    }
    if seen > limit {
        return Ok(Err(too_big));
    }
    Ok(Ok(buf.freeze()))
}

async fn read_limited(mut answer: reqwest::Response) -> Bytes {
    let mut buf = BytesMut::new();
    while let Ok(Some(chunk)) = answer.chunk().await {
        if buf.len() + chunk.len() > MAX_UPSTREAM_ANSWER {
            break;
        }
        buf.extend_from_slice(&chunk);
    }
    buf.freeze()
}
