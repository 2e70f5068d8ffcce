//! Tags lists with `n`/`last` answered by the proxy: upstreams that ignore both (Debian's
//! distribution 2.8 lists every tag, unsorted) or order tags otherwise would break a
//! client's walk. The proxy reads the whole list (following the upstream's own pages,
//! bounded), hides the referrers-schema tags, sorts, and pages it as `_catalog` is paged.

use super::page::{self, PageRequest};
use super::Answer;
use crate::oci::{OciError, OciErrorCode};
use crate::upstream::registry::{Caller, RegistryError};
use crate::upstream::Upstream;

/// Most tags read for one paged answer (more: `502 SIZE_INVALID`, never a silent cut).
pub const MAX_TAGS: usize = 100_000;

/// Whether a tags-list query asks for a page (`n` or `last`); without either the list
/// streams from the upstream as it is.
pub fn wants_page(query: Option<&str>) -> bool {
    url::form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .any(|(k, _)| k == "n" || k == "last")
}

/// The page of `client_name`'s tags (`upstream_name` at `upstream`) that `query` asks for.
pub async fn answer(
    upstream: &Upstream,
    caller: &Caller<'_>,
    upstream_name: &str,
    client_name: &str,
    query: Option<&str>,
    default_n: usize,
) -> Answer {
    let req = match PageRequest::parse(query, default_n) {
        Ok(r) => r,
        Err(e) => return Answer::error(&e.to_oci()),
    };
    let tags = match read_sorted(upstream, caller, upstream_name).await {
        Ok(Some(t)) => t,
        Ok(None) => {
            return Answer::error(&OciError::new(
                OciErrorCode::NameUnknown,
                format!("repository `{client_name}` is not known"),
            ))
        }
        Err(e) => return Answer::error(&e.to_oci()),
    };
    let path = format!("/v2/{client_name}/tags/list");
    let p = page::page(&tags, &req, &path, |_| true);
    let mut headers = vec![(http::header::CONTENT_TYPE, "application/json".to_owned())];
    if let Some(link) = p.link.clone() {
        headers.push((http::header::LINK, link));
    }
    Answer {
        status: 200,
        headers,
        body: p.tags_body(client_name),
    }
}

/// Every tag of `upstream_name` as clients see them, in the order pages are cut from;
/// `None` when the repository is unknown. Also what a tags policy is shown, so that it
/// decides on the page the client gets.
pub async fn read_sorted(
    upstream: &Upstream,
    caller: &Caller<'_>,
    upstream_name: &str,
) -> Result<Option<Vec<String>>, RegistryError> {
    Ok(upstream
        .registry()
        .tags_list(caller, upstream_name, MAX_TAGS)
        .await?
        .map(sorted_visible))
}

/// Lexical order, as the distribution specification pages tags; without the proxy's
/// referrers bookkeeping (`sha256-<hex>`), which clients never see in a list.
fn sorted_visible(mut tags: Vec<String>) -> Vec<String> {
    tags.retain(|t| !crate::referrers::is_fallback_tag(t));
    tags.sort_unstable();
    tags.dedup();
    tags
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_are_asked_by_n_or_last() {
        assert!(wants_page(Some("n=1")));
        assert!(wants_page(Some("last=1.0.0")));
        assert!(wants_page(Some("x=1&n=")));
        assert!(!wants_page(None));
        assert!(!wants_page(Some("x=n")));
    }

    #[test]
    fn tags_sort_without_bookkeeping() {
        let fallback = format!("sha256-{}", "a".repeat(64));
        let got = sorted_visible(vec![
            "2.0.0".into(),
            fallback.clone(),
            "1.1.0".into(),
            "1.0.0".into(),
            format!("{fallback}.sig"),
            "1.0.0".into(),
        ]);
        assert_eq!(got, ["1.0.0", "1.1.0", "2.0.0", &format!("{fallback}.sig")]);
    }
}
