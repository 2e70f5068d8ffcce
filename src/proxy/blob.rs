//! Blob GET/HEAD answered from the blob cache (`crate::cache::blob`), and the hooks
//! that feed it: links from upstream answers, fills teed from the first client's
//! response, links dropped by deletes. Authorization and policies ran before any of it.

use std::io::SeekFrom;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use pingora::http::ResponseHeader;
use pingora::proxy::Session;
use pingora::{Error, ErrorType, Result};
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use super::ctx::RequestCtx;
use super::{respond, MargoProxy};
use crate::cache::blob::{front, range, BlobCache, BlobHead, Cached, Lead, RangeAnswer};
use crate::cache::entry::REQUEST_ID_HEADER;
use crate::cache::CacheResult;
use crate::oci::OciRoute;

/// How long a miss waits for another request's fill of the same blob before going
/// upstream itself.
const FOLLOW_TIMEOUT: Duration = Duration::from_secs(60);
/// Read size when streaming from the disk tier.
const DISK_CHUNK: usize = 256 * 1024;

/// What the later phases need: the blob cache, upstream name, upstream-side
/// repository and digest of a blob request the cache may learn from.
pub struct BlobRequest {
    cache: Arc<BlobCache>,
    upstream: Arc<str>,
    repository: String,
    digest: crate::oci::Digest,
    key: String,
}

fn blob_request(proxy: &MargoProxy, session: &Session, ctx: &RequestCtx) -> Option<BlobRequest> {
    let cache = proxy.state.blobs.clone()?;
    let upstream = proxy.upstream_of(ctx)?;
    // As for manifests: a client with its own upstream credentials may see what others
    // may not; it neither reads nor feeds the shared cache.
    if proxy.forwards_client_credentials(upstream)
        && session
            .req_header()
            .headers
            .contains_key(http::header::AUTHORIZATION)
    {
        return None;
    }
    let Some(OciRoute::Blob { digest, .. }) = ctx.route.as_ref() else {
        return None;
    };
    let repository = ctx.forward.as_ref()?.repository()?.to_owned();
    Some(BlobRequest {
        cache,
        upstream: Arc::from(upstream.name.as_str()),
        repository,
        key: digest.to_string(),
        digest: digest.clone(),
    })
}

/// Answers a blob GET/HEAD from the cache when it can; `Ok(false)`: proxy it (and, for
/// the first miss of a blob, fill the cache from the answer).
pub async fn try_serve(
    proxy: &MargoProxy,
    session: &mut Session,
    ctx: &mut RequestCtx,
) -> Result<bool> {
    if let Some(hit) = front_hit(proxy, session, ctx) {
        ctx.cache_result = Some(CacheResult::BlobMemory);
        ctx.answered_status = Some(200);
        let mut head = hit.head;
        head.insert(&REQUEST_ID_HEADER, ctx.request_id.header_value().clone());
        let (mut parts, ()) = http::Response::new(()).into_parts();
        parts.headers = head;
        respond::write(session, ResponseHeader::from(parts), hit.body).await?;
        return Ok(true);
    }
    if let Some((cache, cached)) = linked_hit(proxy, session, ctx) {
        if serve(session, ctx, &cache, cached).await? {
            return Ok(true);
        }
    }
    let Some(req) = blob_request(proxy, session, ctx) else {
        return Ok(false);
    };
    let plain_get = session.req_header().method == http::Method::GET
        && !session
            .req_header()
            .headers
            .contains_key(http::header::RANGE);
    let mut followed = false;
    loop {
        let linked = req
            .cache
            .links()
            .linked(&req.upstream, &req.repository, &req.key);
        let cached = req.cache.get(&req.key);
        match (linked, cached) {
            (true, Some(c)) => {
                if serve(session, ctx, &req.cache, c).await? {
                    return Ok(true);
                }
                break;
            }
            // Cached, but not known to be in this repository: ask the upstream, which
            // links it on a 200; nothing to fill.
            (false, Some(_)) => break,
            (_, None) if !plain_get || followed => break,
            (_, None) => match req.cache.lead(&req.key) {
                Lead::Leader(guard) => {
                    ctx.blob_lead = Some(guard);
                    break;
                }
                Lead::Follower(rx) => {
                    req.cache.record_coalesced();
                    followed = true;
                    let _ = tokio::time::timeout(
                        FOLLOW_TIMEOUT,
                        crate::cache::blob::inflight::wait(rx),
                    )
                    .await;
                }
            },
        }
    }
    req.cache.record_miss();
    ctx.blob = Some(req);
    Ok(false)
}

/// The hot case: a whole small blob from this worker thread's front (see
/// `cache::blob::front`), checked for its link as every hit is.
fn front_hit(proxy: &MargoProxy, session: &Session, ctx: &RequestCtx) -> Option<front::Hit> {
    let cache = proxy.state.blobs.as_ref()?;
    let upstream = proxy.upstream_of(ctx)?;
    let req = session.req_header();
    if req.headers.contains_key(http::header::RANGE)
        || (proxy.forwards_client_credentials(upstream)
            && req.headers.contains_key(http::header::AUTHORIZATION))
    {
        return None;
    }
    let (Some(OciRoute::Blob { digest, .. }), Some(matched)) = (
        ctx.route.as_ref(),
        ctx.forward.as_ref().and_then(|f| f.matched.as_ref()),
    ) else {
        return None;
    };
    let head_only = req.method == http::Method::HEAD;
    cache.front_hit(
        &upstream.name,
        matched.upstream_name.as_str(),
        digest,
        |len| if head_only { 0 } else { len },
    )
}

/// The common case, without building a [`BlobRequest`]: linked and cached. A
/// memory-tier blob is also copied into this thread's front.
fn linked_hit(
    proxy: &MargoProxy,
    session: &Session,
    ctx: &RequestCtx,
) -> Option<(Arc<BlobCache>, Cached)> {
    let cache = proxy.state.blobs.as_ref()?;
    let upstream = proxy.upstream_of(ctx)?;
    if proxy.forwards_client_credentials(upstream)
        && session
            .req_header()
            .headers
            .contains_key(http::header::AUTHORIZATION)
    {
        return None;
    }
    let (Some(OciRoute::Blob { digest, .. }), Some(repository)) = (
        ctx.route.as_ref(),
        ctx.forward.as_ref().and_then(|f| f.repository()),
    ) else {
        return None;
    };
    let key = digest.to_string();
    let stamp = cache.front_stamp();
    if !cache.links().linked(&upstream.name, repository, &key) {
        return None;
    }
    let cached = cache.get(&key)?;
    if let Cached::Memory(blob) = &cached {
        cache.front_put(&upstream.name, repository, blob, stamp);
    }
    Some((Arc::clone(cache), cached))
}

/// Writes a hit; `Ok(false)` when the request's `Range` is one to pass through.
async fn serve(
    session: &mut Session,
    ctx: &mut RequestCtx,
    cache: &BlobCache,
    cached: Cached,
) -> Result<bool> {
    let head: &BlobHead = cached.head();
    let answer = range::decide(
        session
            .req_header()
            .headers
            .get(http::header::RANGE)
            .map(|v| v.as_bytes()),
        head.len,
    );
    let (start, len) = match answer {
        RangeAnswer::PassThrough => return Ok(false),
        RangeAnswer::Partial { start, end } => (start, end - start + 1),
        RangeAnswer::Unsatisfiable => (0, 0),
        RangeAnswer::Whole => (0, head.len),
    };
    let resp: ResponseHeader = head.response(
        answer,
        cached.tier().as_str(),
        ctx.request_id.header_value(),
    )?;
    ctx.cache_result = Some(cached.tier());
    ctx.answered_status = Some(resp.status.as_u16());
    let body_len = if session.req_header().method == http::Method::HEAD {
        0
    } else {
        len
    };
    cache.record_hit(&cached, body_len);
    session
        .write_response_header(Box::new(resp), body_len == 0)
        .await?;
    if body_len == 0 {
        return Ok(true);
    }
    match cached {
        Cached::Memory(m) => {
            // Bounded by the blob's length: `decide` only returns ranges inside it.
            let (s, e) = (start as usize, (start + len) as usize);
            session
                .write_response_body(Some(m.body.slice(s..e)), true)
                .await?;
        }
        Cached::Disk(d) => {
            let mut file = tokio::fs::File::from_std(d.file);
            file.seek(SeekFrom::Start(d.data_offset + start))
                .await
                .map_err(|e| Error::because(ErrorType::ReadError, "blob cache seek", e))?;
            let mut left = len;
            while left > 0 {
                let want = DISK_CHUNK.min(usize::try_from(left).unwrap_or(DISK_CHUNK));
                let mut buf = BytesMut::with_capacity(want);
                let n = file
                    .read_buf(&mut buf)
                    .await
                    .map_err(|e| Error::because(ErrorType::ReadError, "blob cache read", e))?;
                if n == 0 {
                    return Error::e_explain(ErrorType::ReadError, "blob cache file truncated");
                }
                buf.truncate(n.min(want));
                left -= buf.len() as u64;
                session
                    .write_response_body(Some(Bytes::from(buf)), left == 0)
                    .await?;
            }
        }
    }
    Ok(true)
}

/// `response_filter` hook: a 200 links the blob to the repository, and the leading
/// miss starts its fill when the answer is cacheable.
pub fn on_response(ctx: &mut RequestCtx, resp: &ResponseHeader) {
    let lead = ctx.blob_lead.take();
    let Some(req) = ctx.blob.as_ref() else {
        return;
    };
    if resp.status != http::StatusCode::OK {
        return;
    }
    req.cache
        .links()
        .link(&req.upstream, &req.repository, &req.key);
    let Some(lead) = lead else {
        return;
    };
    match BlobHead::from_upstream(&req.digest, &resp.headers) {
        Ok(head) => ctx.blob_fill = req.cache.fill(lead, req.digest.clone(), head),
        Err(e) => {
            tracing::debug!(digest = %req.key, error = %e, "blob cache: answer not cacheable")
        }
    }
}

/// `response_body_filter` hook: tees the body into the fill; an error stops the body.
pub fn on_body(ctx: &mut RequestCtx, body: &mut Option<Bytes>, end: bool) -> Result<()> {
    let Some(fill) = ctx.blob_fill.as_mut() else {
        return Ok(());
    };
    let result = fill.on_body(body, end);
    if end || result.is_err() {
        ctx.blob_fill = None;
    }
    result.map_err(|e| {
        tracing::warn!(error = %e, "blob cache: upstream body refused");
        Error::explain(ErrorType::InternalError, e.to_string())
    })
}

/// A blob DELETE the upstream accepted: the repository no longer holds it, whoever
/// deleted it (also a client with its own upstream credentials).
pub fn on_delete(proxy: &MargoProxy, ctx: &RequestCtx) {
    let (Some(cache), Some(upstream), Some(OciRoute::Blob { digest, .. }), Some(matched)) = (
        proxy.state.blobs.as_ref(),
        proxy.upstream_of(ctx),
        ctx.route.as_ref(),
        ctx.forward.as_ref().and_then(|f| f.matched.as_ref()),
    ) else {
        return;
    };
    cache.links().unlink(
        &upstream.name,
        matched.upstream_name.as_str(),
        &digest.to_string(),
    );
}

/// A manifest the upstream served or accepted in a repository links its blobs there.
pub fn link_manifest(proxy: &MargoProxy, ctx: &RequestCtx, body: &[u8]) {
    let (Some(cache), Some(upstream), Some(matched)) = (
        proxy.state.blobs.as_ref(),
        proxy.upstream_of(ctx),
        ctx.forward.as_ref().and_then(|f| f.matched.as_ref()),
    ) else {
        return;
    };
    cache
        .links()
        .link_manifest(&upstream.name, matched.upstream_name.as_str(), body);
}
