//! Which upstream holds a repository, and under which name.

use std::sync::Arc;

use globset::{GlobBuilder, GlobMatcher};

use crate::config::{AdmissionMode, Config, Rewrite, RouteKind};
use crate::oci::RepoName;

/// Repository-name globs: `*` stays inside one path component, `**` spans several.
pub fn compile_pattern(pattern: &str) -> Result<GlobMatcher, String> {
    GlobBuilder::new(pattern)
        .literal_separator(true)
        .build()
        .map(|g| g.compile_matcher())
        .map_err(|e| e.to_string())
}

/// A route pattern, compiled. The shapes nearly every config uses (`**`, `apps/**`, a
/// literal name) are decided by string comparison; a glob engine runs only for the rest.
/// The fast shapes are checked against globset itself in the tests.
#[derive(Debug)]
enum NameMatcher {
    Any,
    /// `prefix/**`: everything strictly below `prefix/`.
    Under(String),
    Exact(String),
    Glob(GlobMatcher),
}

impl NameMatcher {
    fn compile(pattern: &str) -> Result<Self, String> {
        let glob = compile_pattern(pattern)?;
        let literal = |p: &str| !p.contains(['*', '?', '[', ']', '{', '}', '\\', '!']);
        Ok(match pattern.strip_suffix("/**") {
            _ if pattern == "**" => NameMatcher::Any,
            Some(prefix) if !prefix.is_empty() && literal(prefix) => {
                NameMatcher::Under(format!("{prefix}/"))
            }
            _ if literal(pattern) => NameMatcher::Exact(pattern.to_owned()),
            _ => NameMatcher::Glob(glob),
        })
    }

    fn is_match(&self, name: &str) -> bool {
        match self {
            NameMatcher::Any => true,
            NameMatcher::Under(prefix) => name.len() > prefix.len() && name.starts_with(prefix),
            NameMatcher::Exact(n) => name == n,
            NameMatcher::Glob(g) => g.is_match(name),
        }
    }
}

/// A compiled route.
#[derive(Debug)]
pub struct Route {
    pub pattern: String,
    matcher: NameMatcher,
    /// Index into the proxy's upstream list.
    pub upstream: usize,
    pub rewrite: Option<Rewrite>,
    pub kind: RouteKind,
    pub mode: AdmissionMode,
    pub extra_tags: Vec<String>,
    pub allow_index: bool,
    pub allow_referrers: bool,
    pub deviations: crate::margo::admission::Deviations,
}

/// The outcome of routing one repository name.
#[derive(Debug, Clone)]
pub struct RouteMatch {
    pub route: Arc<Route>,
    /// The repository's name at the upstream (after rewriting).
    pub upstream_name: RepoName,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RouteError {
    #[error("no route serves repository `{0}`")]
    NoRoute(String),
    #[error("repository `{0}` rewrites to an invalid upstream name")]
    BadRewrite(String),
}

#[derive(Debug, Default)]
pub struct Router {
    routes: Vec<Arc<Route>>,
    /// The staging namespace (`staging.repository`): no client name reaches it.
    reserved: Option<String>,
}

impl Router {
    pub fn from_config(config: &Config) -> Result<Self, String> {
        let mut routes = Vec::new();
        for r in &config.routes {
            let r = &r.value;
            let upstream = config
                .upstreams
                .iter()
                .position(|u| u.value.name == r.upstream.value)
                .ok_or_else(|| format!("unknown upstream `{}`", r.upstream.value))?;
            routes.push(Arc::new(Route {
                pattern: r.pattern.clone(),
                matcher: NameMatcher::compile(&r.pattern)?,
                upstream,
                rewrite: r
                    .rewrite
                    .clone()
                    .filter(|rw| !rw.strip.is_empty() || !rw.prefix.is_empty()),
                kind: r.kind,
                mode: r.mode,
                extra_tags: r.extra_tags.clone(),
                allow_index: r.allow_index,
                allow_referrers: r.allow_referrers,
                deviations: r.deviations,
            }));
        }
        Ok(Router {
            routes,
            reserved: config.staging.as_ref().map(|s| s.repository.clone()),
        })
    }

    pub fn route(&self, name: &RepoName) -> Result<RouteMatch, RouteError> {
        let route = self
            .routes
            .iter()
            .find(|r| r.matcher.is_match(name.as_str()))
            .ok_or_else(|| RouteError::NoRoute(name.to_string()))?;
        let upstream_name = match &route.rewrite {
            None => name.clone(),
            Some(rw) => {
                let rest = name
                    .as_str()
                    .strip_prefix(rw.strip.as_str())
                    .unwrap_or(name.as_str());
                RepoName::parse(&format!("{}{rest}", rw.prefix))
                    .map_err(|_| RouteError::BadRewrite(name.to_string()))?
            }
        };
        if self.is_reserved(upstream_name.as_str()) {
            return Err(RouteError::NoRoute(name.to_string()));
        }
        Ok(RouteMatch {
            route: route.clone(),
            upstream_name,
        })
    }

    /// The name clients use for repository `upstream_name` of upstream `upstream`, for
    /// listings (`_catalog`): the first route whose inverse rewrite gives a name that
    /// routes back to that very repository. `None`: no client name reaches it.
    pub fn client_name(&self, upstream: usize, upstream_name: &str) -> Option<String> {
        if self.is_reserved(upstream_name) {
            return None;
        }
        self.routes
            .iter()
            .filter(|r| r.upstream == upstream)
            .find_map(|r| {
                let candidate = match &r.rewrite {
                    None => upstream_name.to_owned(),
                    Some(rw) => format!(
                        "{}{}",
                        rw.strip,
                        upstream_name.strip_prefix(rw.prefix.as_str())?
                    ),
                };
                let back = self.route(&RepoName::parse(&candidate).ok()?).ok()?;
                (back.route.upstream == upstream && back.upstream_name.as_str() == upstream_name)
                    .then_some(candidate)
            })
    }

    fn is_reserved(&self, upstream_name: &str) -> bool {
        self.reserved
            .as_deref()
            .is_some_and(|p| crate::staging::is_under(p, upstream_name))
    }

    /// Every upstream some route leads to, each once, in config order: the ones a
    /// merged `_catalog` lists.
    pub fn routed_upstreams(&self) -> Vec<usize> {
        let mut v: Vec<usize> = self.routes.iter().map(|r| r.upstream).collect();
        v.sort_unstable();
        v.dedup();
        v
    }

    /// The upstream of the route a repository-free request (ping, catalog) goes to:
    /// the catch-all route's, else the first route's.
    pub fn default_upstream(&self) -> usize {
        self.routes
            .iter()
            .find(|r| r.pattern == "**")
            .or_else(|| self.routes.first())
            .map(|r| r.upstream)
            .unwrap_or(0)
    }
}

impl Route {
    /// Maps a repository name as the upstream knows it back to the client's name.
    pub fn to_client_name(&self, upstream_name: &str) -> Option<String> {
        match &self.rewrite {
            None => Some(upstream_name.to_owned()),
            Some(rw) => upstream_name
                .strip_prefix(rw.prefix.as_str())
                .map(|rest| format!("{}{rest}", rw.strip)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_names_invert_rewrites_and_drop_unreachable_names() {
        let r = router_with(
            r#"
  - {match: "apps/**", upstream: a, rewrite: {strip: "apps/", prefix: "margo/apps/"}}
  - {match: "other/**", upstream: b}
  - {match: "**", upstream: a}
"#,
        );
        assert_eq!(
            r.client_name(0, "margo/apps/web").as_deref(),
            Some("apps/web")
        );
        assert_eq!(
            r.client_name(0, "library/nginx").as_deref(),
            Some("library/nginx")
        );
        // Routed to upstream b, so a client can never reach `other/x` on a.
        assert_eq!(r.client_name(0, "other/x"), None);
        assert_eq!(r.client_name(1, "other/x").as_deref(), Some("other/x"));
        // `apps/web` on a would be rewritten, so that repository is unreachable as is.
        assert_eq!(r.client_name(0, "apps/web"), None);
    }

    /// The string fast paths decide exactly as globset does.
    #[test]
    fn fast_matchers_agree_with_globset() {
        let patterns = [
            "**",
            "apps/**",
            "apps/team/**",
            "apps",
            "apps/x",
            "apps/*",
            "a?c/**",
        ];
        let names = [
            "apps",
            "apps/x",
            "apps/x/y",
            "apps/team",
            "apps/team/x",
            "appsx",
            "appsx/y",
            "x/apps/y",
            "abc/d",
            "a",
            "library/nginx",
        ];
        for p in patterns {
            let fast = NameMatcher::compile(p).expect("compiles");
            let glob = compile_pattern(p).expect("compiles");
            for n in names {
                assert_eq!(
                    fast.is_match(n),
                    glob.is_match(n),
                    "pattern {p:?}, name {n:?}"
                );
            }
        }
        assert!(matches!(NameMatcher::compile("**"), Ok(NameMatcher::Any)));
        assert!(matches!(
            NameMatcher::compile("apps/**"),
            Ok(NameMatcher::Under(_))
        ));
        assert!(matches!(
            NameMatcher::compile("apps/x"),
            Ok(NameMatcher::Exact(_))
        ));
        assert!(matches!(
            NameMatcher::compile("apps/*"),
            Ok(NameMatcher::Glob(_))
        ));
    }

    /// A router over upstreams `a` and `b` with the given `routes:` entries.
    fn router_with(routes: &str) -> Router {
        let yaml = format!(
            "listeners: [{{address: \"127.0.0.1:1\"}}]\nupstreams:\n  - {{name: a, url: \"http://127.0.0.1:5000\"}}\n  - {{name: b, url: \"http://127.0.0.1:5001\"}}\nroutes:{routes}"
        );
        Router::from_config(&Config::parse(&yaml).expect("valid config")).expect("router")
    }

    fn router() -> Router {
        router_with(
            r#"
  - match: "apps/*"
    upstream: a
    kind: app
    rewrite: {strip: "apps/", prefix: "margo/packages/"}
  - match: "components/**"
    upstream: b
  - match: "**"
    upstream: a
"#,
        )
    }

    fn n(s: &str) -> RepoName {
        RepoName::parse(s).unwrap()
    }

    #[test]
    fn first_match_wins_and_rewrites() {
        let r = router();
        let m = r.route(&n("apps/web")).unwrap();
        assert_eq!(m.route.kind, RouteKind::App);
        assert_eq!(m.upstream_name.as_str(), "margo/packages/web");
        assert_eq!(
            m.route.to_client_name("margo/packages/web").as_deref(),
            Some("apps/web")
        );
        // `*` does not cross a `/`: this falls through to the catch-all.
        let m = r.route(&n("apps/acme/web")).unwrap();
        assert_eq!(m.route.pattern, "**");
        assert_eq!(m.upstream_name.as_str(), "apps/acme/web");
        let m = r.route(&n("components/x/y")).unwrap();
        assert_eq!(m.route.upstream, 1);
    }

    /// The staging namespace is neither listed nor addressable, whatever the routes.
    #[test]
    fn staging_repositories_are_hidden_from_clients() {
        let yaml = "listeners: [{address: \"127.0.0.1:1\"}]\nupstreams:\n  - {name: a, url: \"http://127.0.0.1:5000\"}\nroutes:\n  - {match: \"apps/**\", upstream: a, kind: app, rewrite: {strip: \"apps/\", prefix: \"m/\"}}\n  - {match: \"**\", upstream: a}\nstaging: {repository: stage, state_dir: /tmp/x}\n";
        let r = Router::from_config(&Config::parse(yaml).expect("valid config")).expect("router");
        assert_eq!(r.client_name(0, "stage/m/x"), None);
        assert_eq!(r.client_name(0, "stage"), None);
        assert_eq!(r.client_name(0, "stagex/y").as_deref(), Some("stagex/y"));
        assert!(matches!(
            r.route(&n("stage/m/x")),
            Err(RouteError::NoRoute(_))
        ));
        assert!(matches!(r.route(&n("stage")), Err(RouteError::NoRoute(_))));
        assert_eq!(
            r.route(&n("apps/x"))
                .expect("routed")
                .upstream_name
                .as_str(),
            "m/x"
        );
    }

    #[test]
    fn default_upstream_is_catch_all() {
        assert_eq!(router().default_upstream(), 0);
        assert_eq!(router().routed_upstreams(), [0, 1]);
    }

    #[test]
    fn no_route_is_an_error() {
        let r = router_with("\n  - {match: \"apps/**\", upstream: a}\n");
        assert_eq!(
            r.route(&n("other")).unwrap_err(),
            RouteError::NoRoute("other".into())
        );
    }
}
