//! Glue for Git upstreams: a request routed to one is answered here from its mirror
//! (`crate::git::source`), never proxied. Reads get the OCI answers a registry gives;
//! writes get `405 UNSUPPORTED` (the route is read-only and Git-backed).

use bytes::Bytes;
use pingora::http::ResponseHeader;
use pingora::proxy::Session;
use pingora::Result;

use super::ctx::RequestCtx;
use super::{respond, MargoProxy};
use crate::cache::blob::range::{self, RangeAnswer};
use crate::oci::headers::DOCKER_CONTENT_DIGEST;
use crate::oci::{OciError, OciErrorCode, OciRoute, Operation};

const EMPTY_INDEX: &str =
    r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}"#;

/// Answers a request routed to a Git upstream; `Ok(false)` for every other request.
pub async fn serve(
    proxy: &MargoProxy,
    session: &mut Session,
    ctx: &mut RequestCtx,
) -> Result<bool> {
    let (Some(git), Some(fwd)) = (proxy.state.git.as_ref(), ctx.forward.as_ref()) else {
        return Ok(false);
    };
    let Some(mirror) = git.of(fwd.upstream).cloned() else {
        return Ok(false);
    };
    let repo = fwd
        .matched
        .as_ref()
        .map(|m| m.upstream_name.as_str().to_owned())
        .unwrap_or_default();
    let client_repo = ctx.repository().unwrap_or_default().to_owned();
    let json = |body: String| -> Result<(ResponseHeader, Bytes)> {
        let mut resp = ResponseHeader::build(200, Some(4))?;
        resp.insert_header(http::header::CONTENT_TYPE, "application/json")?;
        Ok((resp, Bytes::from(body)))
    };
    let answer = match (ctx.operation, ctx.route.clone()) {
        (Operation::Ping, _) => Ok(json("{}".into())?),
        (Operation::TagsList, _) => match mirror.tags(&repo) {
            Some(tags) => {
                Ok(json(serde_json::json!({ "name": client_repo, "tags": tags }).to_string())?)
            }
            None => Err(unknown_repo(&client_repo)),
        },
        (Operation::ManifestGet | Operation::ManifestHead, Some(OciRoute::Manifest { reference, .. })) => {
            match mirror.manifest(&repo, &reference) {
                Some(m) => {
                    let mut resp = ResponseHeader::build(200, Some(4))?;
                    resp.insert_header(http::header::CONTENT_TYPE, m.media_type)?;
                    resp.insert_header(&DOCKER_CONTENT_DIGEST, m.digest.to_string())?;
                    resp.insert_header(http::header::ETAG, format!("\"{}\"", m.digest))?;
                    Ok((resp, m.bytes))
                }
                None => Err(OciError::new(
                    OciErrorCode::ManifestUnknown,
                    format!("manifest `{reference}` is not served from repository `{client_repo}` (Git-backed: only valid tagged versions are)"),
                )
                .with_status(404)),
            }
        }
        (Operation::BlobGet | Operation::BlobHead, Some(OciRoute::Blob { digest, .. })) => {
            match mirror.blob(&repo, &digest) {
                Some(b) => {
                    let len = b.len() as u64;
                    let header = session
                        .req_header()
                        .headers
                        .get(http::header::RANGE)
                        .map(|v| v.as_bytes());
                    let (status, body, content_range) = match range::decide(header, len) {
                        RangeAnswer::Partial { start, end } => (
                            206,
                            b.slice(start as usize..end as usize + 1),
                            Some(format!("bytes {start}-{end}/{len}")),
                        ),
                        RangeAnswer::Unsatisfiable => {
                            (416, Bytes::new(), Some(format!("bytes */{len}")))
                        }
                        RangeAnswer::Whole | RangeAnswer::PassThrough => (200, b, None),
                    };
                    let mut resp = ResponseHeader::build(status, Some(5))?;
                    resp.insert_header(http::header::CONTENT_TYPE, "application/octet-stream")?;
                    resp.insert_header(&DOCKER_CONTENT_DIGEST, digest.to_string())?;
                    resp.insert_header(http::header::ACCEPT_RANGES, "bytes")?;
                    if let Some(cr) = content_range {
                        resp.insert_header(http::header::CONTENT_RANGE, cr)?;
                    }
                    Ok((resp, body))
                }
                None => Err(OciError::new(
                    OciErrorCode::BlobUnknown,
                    format!("blob {digest} is not in repository `{client_repo}`"),
                )
                .with_status(404)),
            }
        }
        (Operation::Referrers, _) => {
            let mut resp = ResponseHeader::build(200, Some(4))?;
            resp.insert_header(
                http::header::CONTENT_TYPE,
                "application/vnd.oci.image.index.v1+json",
            )?;
            Ok((resp, Bytes::from_static(EMPTY_INDEX.as_bytes())))
        }
        (op, _) => Err(read_only(op, &mirror.upstream)),
    };
    match answer {
        Ok((resp, body)) => respond::answer(session, ctx, resp, body).await?,
        Err(e) => respond::oci_error(session, ctx, &e).await?,
    }
    Ok(true)
}

fn unknown_repo(repo: &str) -> OciError {
    OciError::new(
        OciErrorCode::NameUnknown,
        format!("repository `{repo}` has no served version in its Git upstream"),
    )
    .with_status(404)
}

/// Pushes, deletes and uploads on a Git-backed route.
fn read_only(op: Operation, upstream: &str) -> OciError {
    OciError::new(
        OciErrorCode::Unsupported,
        format!(
            "this route is read-only and Git-backed (upstream `{upstream}`): publish by tagging the Git repository"
        ),
    )
    .with_detail(serde_json::json!({ "operation": op.as_str(), "upstream": upstream }))
    .with_status(405)
}
