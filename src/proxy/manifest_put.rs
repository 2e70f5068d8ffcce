//! Manifest pushes are answered by the proxy itself: the body is read whole (manifests are
//! small and bounded), checked, and only then re-issued to the upstream. A push that fails
//! admission therefore never reaches the upstream at all, not even as a broken request.

use bytes::{Bytes, BytesMut};
use pingora::http::ResponseHeader;
use pingora::proxy::Session;
use pingora::Result;

use super::ctx::RequestCtx;
use super::{respond, MargoProxy};
use crate::oci::headers::{DOCKER_CONTENT_DIGEST, DOCKER_DISTRIBUTION_API_VERSION, OCI_SUBJECT};
use crate::oci::{OciError, OciErrorCode};
use crate::staging::promote::PutOutcome;
use crate::upstream::location::UrlRewrite;
use crate::upstream::registry::RegistryError;

/// Largest upstream answer to a manifest PUT we relay (they are tiny JSON bodies); a
/// bigger one is answered as an upstream failure, never cut.
const MAX_UPSTREAM_ANSWER: u64 = 64 * 1024;

/// Response headers of a manifest PUT worth passing on to the client.
fn relayed() -> [&'static http::HeaderName; 7] {
    [
        &http::header::CONTENT_TYPE,
        &DOCKER_CONTENT_DIGEST,
        &DOCKER_DISTRIBUTION_API_VERSION,
        &OCI_SUBJECT,
        &http::header::WWW_AUTHENTICATE,
        &http::header::LINK,
        &http::header::LOCATION,
    ]
}

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
    let admitted = {
        let caller = proxy.caller(session, ctx, &upstream, &session.req_header().method);
        super::admission::admit(proxy, ctx, &upstream, &caller, &body).await
    };
    let admitted = match admitted {
        Ok(a) => a,
        Err(e) => {
            super::staging::discard(proxy, session, ctx, &upstream, &body).await;
            return respond::oci_error(session, ctx, &e).await;
        }
    };
    let warnings = crate::margo::admission::warning_headers(&admitted);
    let method = session.req_header().method.clone();
    if let Some(e) = super::policy::push(proxy, ctx, &method, &body, admitted).await {
        super::staging::discard(proxy, session, ctx, &upstream, &body).await;
        return respond::oci_error(session, ctx, &e).await;
    }
    let forwards_client = proxy.forwards_client_credentials(&upstream);
    let content_type = session
        .req_header()
        .headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    // Accepted: the blobs staged for it move into the repository first.
    let promotion = {
        let caller = proxy.caller(session, ctx, &upstream, &method);
        super::staging::promote(proxy, ctx, &upstream, &caller, &content_type, &body).await
    };
    let promotion = match promotion {
        Ok(p) => p,
        Err(e) => return respond::oci_error(session, ctx, &e).await,
    };
    ctx.upstream_started = Some(std::time::Instant::now());
    let sent = {
        let req = session.req_header();
        let caller = proxy.caller(session, ctx, &upstream, &req.method);
        let answer = upstream
            .registry()
            .manifest_put(
                &caller,
                &fwd.path_and_query,
                req.headers.get(http::header::CONTENT_TYPE),
                body.clone(),
                MAX_UPSTREAM_ANSWER,
            )
            .await;
        let answer = match answer {
            // The proxy's account was refused even after a fresh token: say so, as
            // the streamed path does (the upstream's challenge is not the client's).
            Ok(a) if a.status == http::StatusCode::UNAUTHORIZED && !forwards_client => {
                Err(RegistryError::Unauthorized {
                    upstream: upstream.name.clone(),
                })
            }
            other => other,
        };
        let outcome = match &answer {
            Ok(a) if a.status.is_success() => PutOutcome::Stored,
            Ok(_) => PutOutcome::Refused,
            Err(_) => PutOutcome::Unknown,
        };
        super::staging::settle(promotion, &upstream, &caller, outcome).await;
        answer
    };
    ctx.upstream_elapsed = ctx.upstream_started.map(|s| s.elapsed());
    let answer = match sent {
        Ok(a) => a,
        Err(e) => {
            tracing::warn!(upstream = %upstream.name, error = %e, "manifest push to upstream failed");
            return respond::oci_error(session, ctx, &e.to_oci()).await;
        }
    };
    if answer.status.is_success() {
        if let (Some(key), Some(reference)) = (
            super::manifest_get::repo_key(ctx, &upstream),
            ctx.reference(),
        ) {
            let inv = crate::bus::Invalidation::ManifestPut {
                upstream: key.upstream().to_owned(),
                repository: key.repository().to_owned(),
                reference,
            };
            proxy.state.coherence.announce(inv).await;
        }
        super::catalog::after_put(proxy, ctx).await;
    }
    if answer.status.is_success() {
        super::blob::link_manifest(proxy, ctx, &body);
    }
    let oci_subject = if answer.status.is_success() && !answer.headers.contains_key("oci-subject") {
        // The referrers index is kept by the proxy (the side calls need the proxy's
        // upstream credentials for this request).
        if proxy.authorize_upstream(session, ctx).await.is_ok() {
            super::referrers::after_push(proxy, session, ctx, &body, &content_type).await
        } else {
            None
        }
    } else {
        None
    };
    let mut resp = ResponseHeader::build(answer.status, Some(10))?;
    let public_base = ctx.public_base(proxy.state.public_url.as_deref());
    let rw = UrlRewrite {
        upstream: &upstream.base,
        client_host: ctx.client_host(),
        public_base: &public_base,
        upstream_name: fwd.matched.as_ref().map(|m| m.upstream_name.as_str()),
        client_name: ctx.repository(),
    };
    for name in relayed() {
        if *name == http::header::WWW_AUTHENTICATE && !forwards_client {
            continue;
        }
        for v in answer.headers.get_all(name) {
            let Ok(s) = v.to_str() else { continue };
            let value = if *name == http::header::LOCATION {
                rw.location(s).unwrap_or_else(|| s.to_owned())
            } else if *name == http::header::LINK {
                rw.link(s)
            } else {
                s.to_owned()
            };
            resp.append_header(name.clone(), value)?;
        }
    }
    for w in warnings {
        resp.append_header(http::header::WARNING, w)?;
    }
    if let Some(subject) = oci_subject {
        resp.insert_header("OCI-Subject", subject)?;
    }
    respond::answer(session, ctx, resp, answer.body).await
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
