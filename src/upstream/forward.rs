//! Where a client request goes upstream: which upstream, which path, which query.
//! Pure: no I/O, so every case is unit-tested.

use super::routing::{RouteError, RouteMatch, Router};
use crate::oci::{OciRoute, RepoName};

/// The upstream half of a request.
#[derive(Debug, Clone)]
pub struct Forward {
    pub upstream: usize,
    /// Path and query to send upstream.
    pub path_and_query: String,
    pub matched: Option<RouteMatch>,
    /// Upstream name of a cross-repository mount source that stays on the same upstream.
    pub mount_from: Option<String>,
    /// The staging repository an upload goes to instead (see [`crate::staging`]).
    pub staged: Option<RepoName>,
}

impl Forward {
    /// The repository this request really reaches upstream: the staging one for staged
    /// uploads and staged blob reads, else the route's.
    pub fn repository(&self) -> Option<&str> {
        match &self.staged {
            Some(s) => Some(s.as_str()),
            None => self.matched.as_ref().map(|m| m.upstream_name.as_str()),
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ForwardError {
    #[error(transparent)]
    Route(#[from] RouteError),
    #[error("invalid `from` repository in mount: {0}")]
    BadMountFrom(String),
}

/// Plans the upstream request for a parsed client request.
///
/// `path` is the client's path (it starts with `/v2/<name>` when the route has a name).
pub fn plan(
    router: &Router,
    route: &OciRoute,
    path: &str,
    query: Option<&str>,
) -> Result<Forward, ForwardError> {
    let Some(name) = route.name() else {
        return Ok(Forward {
            upstream: router.default_upstream(),
            path_and_query: join(path.to_owned(), query),
            matched: None,
            mount_from: None,
            staged: None,
        });
    };
    let matched = router.route(name)?;
    let prefix_len = "/v2/".len() + name.as_str().len();
    let suffix = path.get(prefix_len..).unwrap_or("");
    let mut upstream_path = String::with_capacity(
        "/v2/".len()
            + matched.upstream_name.as_str().len()
            + suffix.len()
            + query.map_or(0, |q| q.len() + 1),
    );
    upstream_path.push_str("/v2/");
    upstream_path.push_str(matched.upstream_name.as_str());
    upstream_path.push_str(suffix);
    let mut mount_from = None;
    let query = match (route, query) {
        (OciRoute::UploadStart { .. }, Some(q)) if q.contains("from=") => {
            let (q, from) = plan_mount(router, &matched, q)?;
            mount_from = from;
            q
        }
        (_, q) => q.map(str::to_owned),
    };
    Ok(Forward {
        upstream: matched.route.upstream,
        path_and_query: join(upstream_path, query.as_deref()),
        matched: Some(matched),
        mount_from,
        staged: None,
    })
}

/// A mount names a source repository in the client's namespace: translate it, or, when the
/// source lives on another upstream (where no mount can work), drop the mount so the
/// upstream opens an ordinary upload session (the spec's documented fallback: 202).
fn plan_mount(
    router: &Router,
    target: &RouteMatch,
    query: &str,
) -> Result<(Option<String>, Option<String>), ForwardError> {
    let pairs: Vec<(String, String)> = url::form_urlencoded::parse(query.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let from = pairs
        .iter()
        .find(|(k, _)| k == "from")
        .map(|(_, v)| v.clone());
    let Some(from) = from else {
        return Ok((Some(query.to_owned()), None));
    };
    let from_name =
        RepoName::parse(&from).map_err(|e| ForwardError::BadMountFrom(e.to_string()))?;
    let source = router.route(&from_name)?;
    let same_upstream = source.route.upstream == target.route.upstream;
    let mut out = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in &pairs {
        match k.as_str() {
            "from" if same_upstream => {
                out.append_pair(k, source.upstream_name.as_str());
            }
            "from" | "mount" if !same_upstream => {}
            _ => {
                out.append_pair(k, v);
            }
        }
    }
    let q = out.finish();
    let mount_from = same_upstream.then(|| source.upstream_name.to_string());
    Ok(((!q.is_empty()).then_some(q), mount_from))
}

/// Runs on every request: appends in place rather than formatting anew.
fn join(mut path: String, query: Option<&str>) -> String {
    if let Some(q) = query.filter(|q| !q.is_empty()) {
        path.push('?');
        path.push_str(q);
    }
    path
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn router() -> Router {
        let c = Config::parse(
            r#"
listeners: [{address: "127.0.0.1:1"}]
upstreams:
  - {name: a, url: "http://127.0.0.1:5000"}
  - {name: b, url: "http://127.0.0.1:5001"}
routes:
  - {match: "apps/**", upstream: a, rewrite: {strip: "apps/", prefix: "m/apps/"}}
  - {match: "other/**", upstream: b}
  - {match: "**", upstream: a}
"#,
        )
        .unwrap();
        Router::from_config(&c).unwrap()
    }

    fn plan_str(path: &str, query: Option<&str>) -> Result<Forward, ForwardError> {
        let route = OciRoute::parse(path).unwrap();
        plan(&router(), &route, path, query)
    }

    #[test]
    fn rewrites_the_name_and_keeps_the_query() {
        let f = plan_str("/v2/apps/x/tags/list", Some("n=2&last=b")).unwrap();
        assert_eq!(f.path_and_query, "/v2/m/apps/x/tags/list?n=2&last=b");
        assert_eq!(f.upstream, 0);
        let f = plan_str("/v2/other/y/blobs/uploads/abc", Some("_state=q%3D")).unwrap();
        assert_eq!(
            f.path_and_query,
            "/v2/other/y/blobs/uploads/abc?_state=q%3D"
        );
        assert_eq!(f.upstream, 1);
    }

    #[test]
    fn ping_goes_to_default_upstream() {
        let f = plan_str("/v2/", None).unwrap();
        assert_eq!((f.upstream, f.path_and_query.as_str()), (0, "/v2/"));
    }

    #[test]
    fn mount_source_is_translated_on_the_same_upstream() {
        let d = "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a";
        let f = plan_str(
            "/v2/apps/x/blobs/uploads/",
            Some(&format!("mount={d}&from=apps/y")),
        )
        .unwrap();
        assert_eq!(
            f.path_and_query,
            format!(
                "/v2/m/apps/x/blobs/uploads/?mount={}&from=m%2Fapps%2Fy",
                d.replace(':', "%3A")
            )
        );
        assert_eq!(f.mount_from.as_deref(), Some("m/apps/y"));
    }

    #[test]
    fn mount_across_upstreams_becomes_a_plain_upload() {
        let f = plan_str(
            "/v2/apps/x/blobs/uploads/",
            Some("mount=sha256:ab&from=other/z"),
        )
        .unwrap();
        assert_eq!(f.path_and_query, "/v2/m/apps/x/blobs/uploads/");
        assert_eq!(f.mount_from, None);
    }

    #[test]
    fn bad_mount_source_is_refused() {
        assert!(matches!(
            plan_str(
                "/v2/apps/x/blobs/uploads/",
                Some("mount=sha256:ab&from=BAD")
            ),
            Err(ForwardError::BadMountFrom(_))
        ));
    }
}
