//! Header rewriting in both directions: forwarding headers going up, URLs coming back.

use pingora::http::{RequestHeader, ResponseHeader};
use pingora::proxy::Session;
use pingora::Result;

use super::ctx::RequestCtx;
use crate::oci::headers::{X_FORWARDED_FOR, X_REQUEST_ID};
use crate::oci::Operation;
use crate::upstream::forwarded::Forwarded;
use crate::upstream::location::UrlRewrite;
use crate::upstream::Upstream;

/// `X-Forwarded-For/Proto/Host` and the request id, so upstream logs and URL building know
/// who really asked. The same values as the proxy's own calls send ([`forwarded`]).
pub fn forwarded_headers(
    session: &Session,
    req: &mut RequestHeader,
    ctx: &RequestCtx,
) -> Result<()> {
    for (name, value) in forwarded(session, ctx).headers() {
        req.insert_header(name, value)?;
    }
    req.insert_header(&X_REQUEST_ID, ctx.request_id.header_value().clone())?;
    Ok(())
}

/// The client side of this request, as the upstream is told about it.
pub fn forwarded<'a>(session: &'a Session, ctx: &'a RequestCtx) -> Forwarded<'a> {
    Forwarded {
        previous_for: session.req_header().headers.get(&X_FORWARDED_FOR),
        client_ip: session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip()),
        tls: ctx.client_tls,
        host: ctx.client_host.as_ref(),
    }
}

/// Points `Location` and `Link` back at the proxy under the client's repository name.
/// `public_url` is the configured one, if any (see [`RequestCtx::public_base`]).
pub fn response_urls(
    resp: &mut ResponseHeader,
    ctx: &RequestCtx,
    upstream: &Upstream,
    public_url: Option<&str>,
) -> Result<()> {
    if !resp.headers.contains_key(http::header::LOCATION)
        && !resp.headers.contains_key(http::header::LINK)
    {
        return Ok(());
    }
    let public_base = ctx.public_base(public_url);
    let client_name = ctx.repository();
    let rw = UrlRewrite {
        upstream: &upstream.base,
        client_host: ctx.client_host(),
        public_base: &public_base,
        // A staged upload's URLs name the staging repository: mapped back the same way.
        upstream_name: ctx.forward.as_ref().and_then(|f| f.repository()),
        client_name,
    };
    if let Some(loc) = resp
        .headers
        .get(http::header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| rw.location(v))
    {
        resp.insert_header(http::header::LOCATION, loc)?;
    }
    let links: Vec<String> = resp
        .headers
        .get_all(http::header::LINK)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(|v| rw.link(v))
        .collect();
    if !links.is_empty() {
        resp.remove_header(&http::header::LINK);
        for l in links {
            resp.append_header(http::header::LINK, l)?;
        }
    }
    Ok(())
}

/// Largest tags-list body held back for rewriting.
pub const MAX_REWRITTEN_BODY: usize = 16 << 20;

/// A successful tags list of a repository whose name the route rewrites.
/// Always: besides renamed repositories, every list loses the referrers-schema tags
/// (`sha256-<hex>`), the proxy's bookkeeping now that it answers the referrers API.
pub fn wants_tags_body_rewrite(ctx: &RequestCtx, resp: &ResponseHeader) -> bool {
    ctx.operation == Operation::TagsList && resp.status == http::StatusCode::OK
}

/// Puts the client's repository name into a tags-list body; anything unexpected is
/// passed on untouched rather than broken.
pub fn tags_body(raw: bytes::Bytes, client_name: &str) -> bytes::Bytes {
    let Ok(mut v) = serde_json::from_slice::<serde_json::Value>(&raw) else {
        return raw;
    };
    match v.get_mut("name") {
        Some(name) => *name = serde_json::Value::String(client_name.to_owned()),
        None => return raw,
    }
    if let Some(tags) = v.get_mut("tags").and_then(|t| t.as_array_mut()) {
        tags.retain(|t| !t.as_str().is_some_and(crate::referrers::is_fallback_tag));
    }
    serde_json::to_vec(&v)
        .map(bytes::Bytes::from)
        .unwrap_or(raw)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_lists_hide_referrers_schema_tags() {
        let fallback = format!("sha256-{}", "a".repeat(64));
        let raw = bytes::Bytes::from(format!(
            r#"{{"name":"margo/apps/x","tags":["1.0.0","{fallback}","{fallback}.sig"]}}"#
        ));
        let v: serde_json::Value = serde_json::from_slice(&tags_body(raw, "apps/x")).expect("json");
        assert_eq!(v["name"], "apps/x");
        assert_eq!(
            v["tags"],
            serde_json::json!(["1.0.0", format!("{fallback}.sig")])
        );
    }
}
