//! Rewriting the URLs an upstream hands out (`Location`, `Link`) so that clients come back
//! to the proxy under their own repository name, never to the upstream directly.

use super::url::BaseUrl;

/// What a rewrite needs to know about the request.
pub struct UrlRewrite<'a> {
    /// The upstream's base URL.
    pub upstream: &'a BaseUrl,
    /// The host the client used, which the upstream may have echoed back
    /// (distribution builds URLs from `X-Forwarded-Host`).
    pub client_host: Option<&'a str>,
    /// Where clients reach the proxy, e.g. `https://registry.example.com`.
    pub public_base: &'a str,
    /// The repository name at the upstream and at the client (equal unless rewritten).
    pub upstream_name: Option<&'a str>,
    pub client_name: Option<&'a str>,
}

impl UrlRewrite<'_> {
    /// Rewrites a `Location` value. URLs on other hosts (object storage redirects) are left
    /// alone: the client must follow those itself.
    pub fn location(&self, value: &str) -> Option<String> {
        if value.starts_with('/') {
            return Some(self.map_path(value));
        }
        let url = url::Url::parse(value).ok()?;
        let authority = match (url.host_str(), url.port()) {
            (Some(h), Some(p)) => format!("{h}:{p}"),
            (Some(h), None) => h.to_owned(),
            _ => return None,
        };
        let ours = authority == self.upstream.authority()
            || authority == format!("{}:{}", self.upstream.host, self.upstream.port)
            || self
                .client_host
                .is_some_and(|h| h.eq_ignore_ascii_case(&authority));
        if !ours {
            return None;
        }
        let mut path_and_query = url.path().to_owned();
        if let Some(q) = url.query() {
            path_and_query.push('?');
            path_and_query.push_str(q);
        }
        Some(format!(
            "{}{}",
            self.public_base.trim_end_matches('/'),
            self.map_path(&path_and_query)
        ))
    }

    /// Rewrites every `<url>` of a `Link` header value.
    pub fn link(&self, value: &str) -> String {
        let mut out = String::with_capacity(value.len());
        let mut rest = value;
        while let Some(start) = rest.find('<') {
            let Some(end) = rest[start..].find('>') else {
                break;
            };
            let target = &rest[start + 1..start + end];
            out.push_str(&rest[..=start]);
            // Links stay relative when they were: clients resolve them against the proxy.
            let mapped = if target.starts_with('/') {
                self.map_path(target)
            } else {
                self.location(target).unwrap_or_else(|| target.to_owned())
            };
            out.push_str(&mapped);
            out.push('>');
            rest = &rest[start + end + 1..];
        }
        out.push_str(rest);
        out
    }

    fn map_path(&self, path: &str) -> String {
        if let (Some(up), Some(client)) = (self.upstream_name, self.client_name) {
            if up != client {
                let prefix = format!("/v2/{up}/");
                if let Some(rest) = path.strip_prefix(&prefix) {
                    return format!("/v2/{client}/{rest}");
                }
            }
        }
        path.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::url::parse_base;

    fn rw<'a>(up: &'a BaseUrl, names: Option<(&'a str, &'a str)>) -> UrlRewrite<'a> {
        UrlRewrite {
            upstream: up,
            client_host: Some("proxy.local:8080"),
            public_base: "https://registry.example.com",
            upstream_name: names.map(|n| n.0),
            client_name: names.map(|n| n.1),
        }
    }

    #[test]
    fn absolute_upstream_location_points_at_proxy_with_query_kept() {
        let up = parse_base("http://127.0.0.1:5000").unwrap();
        let r = rw(&up, None);
        assert_eq!(
            r.location("http://127.0.0.1:5000/v2/a/blobs/uploads/u1?_state=xyz%3D&n=1")
                .as_deref(),
            Some("https://registry.example.com/v2/a/blobs/uploads/u1?_state=xyz%3D&n=1")
        );
        // distribution echoes X-Forwarded-Host: also ours.
        assert_eq!(
            r.location("http://proxy.local:8080/v2/a/blobs/uploads/u1")
                .as_deref(),
            Some("https://registry.example.com/v2/a/blobs/uploads/u1")
        );
    }

    #[test]
    fn object_storage_redirects_are_untouched() {
        let up = parse_base("http://127.0.0.1:5000").unwrap();
        assert_eq!(
            rw(&up, None).location("https://bucket.s3.amazonaws.com/x?X-Amz-Signature=1"),
            None
        );
    }

    #[test]
    fn names_are_mapped_back() {
        let up = parse_base("https://ghcr.io").unwrap();
        let r = rw(&up, Some(("org/apps/web", "apps/web")));
        assert_eq!(
            r.location("https://ghcr.io/v2/org/apps/web/blobs/uploads/x")
                .as_deref(),
            Some("https://registry.example.com/v2/apps/web/blobs/uploads/x")
        );
        assert_eq!(
            r.location("/v2/org/apps/web/manifests/sha256:ab")
                .as_deref(),
            Some("/v2/apps/web/manifests/sha256:ab")
        );
        assert_eq!(
            r.link(r#"</v2/org/apps/web/tags/list?last=b&n=2>; rel="next""#),
            r#"</v2/apps/web/tags/list?last=b&n=2>; rel="next""#
        );
    }
}
