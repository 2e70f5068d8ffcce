//! `n`/`last` pagination of the merged `_catalog` (in the client's namespace) and of tags
//! lists the proxy answers itself, and the RFC 5988 `Link` to the next page. Pure: the
//! caller hands in the sorted list.

use crate::oci::{OciError, OciErrorCode};

/// Largest `n` honoured; a larger one is read as this (distribution 2.8 clamps too).
pub const MAX_N: usize = 10_000;
/// Longest `last` accepted: longer than any repository name can be.
pub const MAX_LAST_BYTES: usize = 1024;

/// What one client request asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageRequest {
    pub n: usize,
    /// Names after this one (a client name: what an earlier page ended with).
    pub last: Option<String>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PageError {
    #[error("query parameter `n` must be a non-negative integer, got `{0}`")]
    BadN(String),
    #[error("query parameter `last` is longer than {MAX_LAST_BYTES} bytes")]
    LastTooLong,
}

impl PageError {
    pub fn to_oci(&self) -> OciError {
        let code = match self {
            PageError::BadN(_) => OciErrorCode::PaginationNumberInvalid,
            PageError::LastTooLong => OciErrorCode::NameInvalid,
        };
        OciError::new(code, self.to_string())
    }
}

impl PageRequest {
    /// Reads `n` and `last` from a query string (percent-decoded, so a `last` with `/`
    /// written `%2F`, as the proxy's own links write it, is the same name); other
    /// parameters are ignored. No `n`: `default_n`.
    pub fn parse(query: Option<&str>, default_n: usize) -> Result<Self, PageError> {
        let mut n = default_n.min(MAX_N);
        let mut last = None;
        for (k, v) in url::form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
            match k.as_ref() {
                "n" => {
                    let parsed: usize = v
                        .parse()
                        .map_err(|_| PageError::BadN(v.chars().take(40).collect()))?;
                    n = parsed.min(MAX_N);
                }
                "last" if v.len() > MAX_LAST_BYTES => return Err(PageError::LastTooLong),
                "last" if !v.is_empty() => last = Some(v.into_owned()),
                _ => {}
            }
        }
        Ok(PageRequest { n, last })
    }
}

/// One answer: the names, and the `Link` header value when more follow.
#[derive(Debug, PartialEq, Eq)]
pub struct Page<'a> {
    pub items: Vec<&'a str>,
    pub link: Option<String>,
}

impl Page<'_> {
    /// `{"repositories":[…]}`.
    pub fn catalog_body(&self) -> Vec<u8> {
        let v = serde_json::json!({ "repositories": self.items });
        serde_json::to_vec(&v).unwrap_or_else(|_| br#"{"repositories":[]}"#.to_vec())
    }

    /// `{"name":"…","tags":[…]}`.
    pub fn tags_body(&self, name: &str) -> Vec<u8> {
        let v = serde_json::json!({ "name": name, "tags": self.items });
        serde_json::to_vec(&v).unwrap_or_default()
    }
}

/// The page of `sorted` (sorted, deduplicated names) that `req` asks for, counting only
/// the names `visible` lets the caller see: a page is never short because of names it
/// hides, and a `Link` (to `path`, e.g. `/v2/_catalog`) is given only when a visible
/// name follows.
pub fn page<'a>(
    sorted: &'a [String],
    req: &PageRequest,
    path: &str,
    visible: impl Fn(&str) -> bool,
) -> Page<'a> {
    let start = match &req.last {
        Some(last) => sorted.partition_point(|n| n.as_str() <= last.as_str()),
        None => 0,
    };
    let mut shown = sorted[start..]
        .iter()
        .map(String::as_str)
        .filter(|n| visible(n));
    let items: Vec<&str> = shown.by_ref().take(req.n).collect();
    let more = req.n > 0 && shown.next().is_some();
    let link = match (more, items.last()) {
        (true, Some(last)) => Some(next_link(path, req.n, last)),
        _ => None,
    };
    Page { items, link }
}

/// `</v2/_catalog?n=2&last=apps%2Fweb>; rel="next"`: relative, as distribution writes it
/// (clients resolve it against the proxy), `last` percent-encoded.
pub fn next_link(path: &str, n: usize, last: &str) -> String {
    let query = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("n", &n.to_string())
        .append_pair("last", last)
        .finish();
    format!("<{path}?{query}>; rel=\"next\"")
}

#[cfg(test)]
mod tests {
    use super::*;

    const C: &str = "/v2/_catalog";

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    fn req(q: &str) -> PageRequest {
        PageRequest::parse(Some(q), 100).unwrap()
    }

    #[test]
    fn query_parsing() {
        assert_eq!(
            PageRequest::parse(None, 100).unwrap(),
            PageRequest { n: 100, last: None }
        );
        assert_eq!(
            req("n=2&last=apps%2Fweb"),
            PageRequest {
                n: 2,
                last: Some("apps/web".into())
            }
        );
        assert_eq!(req("last=apps/web&x=1").last.as_deref(), Some("apps/web"));
        assert_eq!(req("n=999999").n, MAX_N);
        assert_eq!(req("last=").last, None);
        for bad in ["n=-1", "n=x", "n=", "n=1.5"] {
            let e = PageRequest::parse(Some(bad), 100).unwrap_err();
            assert!(matches!(e, PageError::BadN(_)), "{bad}");
            assert_eq!(e.to_oci().status, 400);
            assert_eq!(
                e.to_oci().code(),
                Some(OciErrorCode::PaginationNumberInvalid)
            );
        }
        let long = format!("last={}", "a".repeat(MAX_LAST_BYTES + 1));
        assert_eq!(
            PageRequest::parse(Some(&long), 100),
            Err(PageError::LastTooLong)
        );
    }

    /// Walking every page size via the links yields the whole list, once, in order.
    #[test]
    fn walking_the_links_gives_the_whole_list() {
        let all = names(&["a", "apps/web", "apps/x", "b/c", "lib/nginx", "z"]);
        for n in 1..=all.len() + 1 {
            let mut seen = Vec::new();
            let mut r = PageRequest { n, last: None };
            let mut pages = 0;
            loop {
                pages += 1;
                let p = page(&all, &r, C, |_| true);
                assert!(p.items.len() <= n);
                seen.extend(p.items.iter().map(|s| s.to_string()));
                let Some(link) = p.link else { break };
                let target = link
                    .strip_prefix("</v2/_catalog?")
                    .and_then(|l| l.strip_suffix(">; rel=\"next\""))
                    .unwrap();
                r = PageRequest::parse(Some(target), 100).unwrap();
                assert_eq!(r.n, n);
            }
            assert_eq!(seen, all, "n={n}");
            assert_eq!(pages, all.len().div_ceil(n).max(1), "n={n}");
        }
    }

    #[test]
    fn last_is_a_position_not_a_member() {
        let all = names(&["a", "c", "e"]);
        // A name that is not listed (deleted meanwhile, or never there) still places the
        // page: what follows it.
        assert_eq!(page(&all, &req("last=b"), C, |_| true).items, ["c", "e"]);
        assert_eq!(
            page(&all, &req("last=e"), C, |_| true).items,
            Vec::<&str>::new()
        );
        assert_eq!(
            page(&all, &req("last=0"), C, |_| true).items,
            ["a", "c", "e"]
        );
        assert_eq!(
            page(&all, &req("n=0"), C, |_| true),
            Page {
                items: vec![],
                link: None
            }
        );
    }

    #[test]
    fn hidden_names_neither_fill_pages_nor_make_links() {
        let all = names(&["a", "secret/1", "b", "secret/2"]);
        let mut all = all;
        all.sort();
        let visible = |n: &str| !n.starts_with("secret/");
        let p = page(&all, &req("n=1"), C, visible);
        assert_eq!(p.items, ["a"]);
        assert_eq!(
            p.link.as_deref(),
            Some("</v2/_catalog?n=1&last=a>; rel=\"next\"")
        );
        let p = page(&all, &req("n=1&last=a"), C, visible);
        assert_eq!(p.items, ["b"]);
        // Only hidden names follow `b`: no link to an empty page.
        assert_eq!(p.link, None);
    }

    #[test]
    fn links_encode_names() {
        assert_eq!(
            next_link(C, 2, "apps/web"),
            "</v2/_catalog?n=2&last=apps%2Fweb>; rel=\"next\""
        );
        let body = page(&names(&["a/b"]), &req("n=5"), C, |_| true).catalog_body();
        assert_eq!(body, br#"{"repositories":["a/b"]}"#);
        let tags = names(&["1.0.0", "1.1.0", "2.0.0"]);
        let p = page(
            &tags,
            &req("n=1&last=1.0.0"),
            "/v2/apps/web/tags/list",
            |_| true,
        );
        assert_eq!(
            p.tags_body("apps/web"),
            br#"{"name":"apps/web","tags":["1.1.0"]}"#
        );
        assert_eq!(
            p.link.as_deref(),
            Some("</v2/apps/web/tags/list?n=1&last=1.1.0>; rel=\"next\"")
        );
    }
}
