//! Several upstreams' `_catalog` listings into one list in the client's namespace. Pure.

/// The client names of every listed repository: each upstream name mapped by
/// `client_name(upstream, name)` (the inverse of the routes' rewrites, `None` for a
/// repository no route exposes, which is dropped), sorted by bytes as distribution sorts,
/// duplicates removed.
pub fn merge<'a>(
    listings: impl IntoIterator<Item = (usize, &'a [String])>,
    client_name: impl Fn(usize, &str) -> Option<String>,
) -> Vec<String> {
    let mut out: Vec<String> = listings
        .into_iter()
        .flat_map(|(upstream, names)| {
            let client_name = &client_name;
            names.iter().filter_map(move |n| client_name(upstream, n))
        })
        .collect();
    out.sort_unstable();
    out.dedup();
    out
}

/// Whether the next page an upstream's `Link` names is worth asking for: a different
/// request than the one just made (an upstream repeating its own page would loop).
pub fn follows(previous: &str, next: &str) -> bool {
    previous != next
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::upstream::routing::Router;

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    /// Two upstreams with rewrites, as the README's example: each name appears under the
    /// name clients use, names no route exposes are left out.
    #[test]
    fn merges_through_the_routes() {
        let c = Config::parse(
            r#"
listeners: [{address: "127.0.0.1:1"}]
upstreams:
  - {name: a, url: "http://127.0.0.1:5000"}
  - {name: b, url: "http://127.0.0.1:5001"}
routes:
  - {match: "apps/**", upstream: a, rewrite: {strip: "apps/", prefix: "margo/apps/"}}
  - {match: "team/**", upstream: b, rewrite: {strip: "team/", prefix: "x/"}}
  - {match: "**", upstream: a}
"#,
        )
        .unwrap();
        let router = Router::from_config(&c).unwrap();
        let a = names(&["margo/apps/web", "library/nginx", "apps/shadowed", "team/y"]);
        let b = names(&["x/tool", "x/alpha", "other", "margo/apps/web"]);
        let merged = merge([(0, a.as_slice()), (1, b.as_slice())], |u, n| {
            router.client_name(u, n)
        });
        assert_eq!(
            merged,
            // `apps/shadowed` on a: clients asking for it are rewritten to
            // `margo/apps/shadowed`; `team/y` on a: routed to b; `other` and
            // `margo/apps/web` on b: no route reaches them there.
            names(&["apps/web", "library/nginx", "team/alpha", "team/tool"])
        );
    }

    #[test]
    fn sorted_by_bytes_and_deduplicated() {
        let a = names(&["b", "a-b", "a/b", "A"]);
        let again = names(&["a/b"]);
        let merged = merge([(0, a.as_slice()), (0, again.as_slice())], |_, n| {
            Some(n.to_owned())
        });
        assert_eq!(merged, names(&["A", "a-b", "a/b", "b"]));
    }

    #[test]
    fn a_repeated_page_is_not_followed() {
        assert!(follows("/v2/_catalog?n=2", "/v2/_catalog?n=2&last=b"));
        assert!(!follows(
            "/v2/_catalog?n=2&last=b",
            "/v2/_catalog?n=2&last=b"
        ));
    }
}
