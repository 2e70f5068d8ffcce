//! What an App Registry path addresses, as the reference server's Flask routes
//! (appr/api/registry.py, info.py) match them: segments never hold `/`, a trailing
//! slash is allowed, static segments (`channels`, `blobs`, `search`) win over names.

use percent_encoding::percent_decode_str;

pub const PREFIX: &str = "/cnr";
pub const DISCOVERY: &str = "/.well-known/app-registry-uri.json";
/// Longest path segment accepted (names, releases, queries).
const MAX_SEGMENT: usize = 256;

/// Whether the App Registry answers this path.
pub fn is_appr_path(path: &str) -> bool {
    path == DISCOVERY || path == PREFIX || path.starts_with("/cnr/")
}

/// A package: namespace and name, as in the path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackageName {
    pub namespace: String,
    pub name: String,
}

impl PackageName {
    /// `namespace/name`, as the reference names packages.
    pub fn full(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApprRoute {
    Discovery,
    Version,
    Login,
    List,
    Search,
    /// `GET`: every release; `POST`: push.
    Package(PackageName),
    /// The manifests of one release.
    Release(PackageName, String),
    /// `GET`: show; `DELETE`: delete.
    Manifest(PackageName, String, String),
    Pull {
        package: PackageName,
        release: String,
        media_type: String,
        json: bool,
    },
    Blob {
        package: PackageName,
        digest: String,
        json: bool,
    },
    Channels(PackageName),
    /// `GET`: show; `DELETE`: delete.
    Channel(PackageName, String),
    /// `POST`: add; `DELETE`: remove.
    ChannelRelease(PackageName, String, String),
}

impl ApprRoute {
    /// `None`: no route (the reference answers 404).
    pub fn parse(path: &str) -> Option<Self> {
        if path == DISCOVERY {
            return Some(ApprRoute::Discovery);
        }
        let rest = path.strip_prefix(PREFIX)?;
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        let mut segs = Vec::new();
        for raw in rest.split('/').skip(1) {
            let s = percent_decode_str(raw).decode_utf8().ok()?;
            if s.is_empty() || s.len() > MAX_SEGMENT || s.contains('/') {
                return None;
            }
            segs.push(s.into_owned());
        }
        let s: Vec<&str> = segs.iter().map(String::as_str).collect();
        let pkg = |ns: &str, n: &str| PackageName {
            namespace: ns.to_owned(),
            name: n.to_owned(),
        };
        Some(match s.as_slice() {
            ["version"] => ApprRoute::Version,
            ["api", "v1", "users", "login"] => ApprRoute::Login,
            ["api", "v1", "packages"] => ApprRoute::List,
            ["api", "v1", "packages", "search"] => ApprRoute::Search,
            ["api", "v1", "packages", ns, n] => ApprRoute::Package(pkg(ns, n)),
            ["api", "v1", "packages", ns, n, "channels"] => ApprRoute::Channels(pkg(ns, n)),
            ["api", "v1", "packages", ns, n, "channels", c] => {
                ApprRoute::Channel(pkg(ns, n), (*c).to_owned())
            }
            ["api", "v1", "packages", ns, n, "channels", c, r] => {
                ApprRoute::ChannelRelease(pkg(ns, n), (*c).to_owned(), (*r).to_owned())
            }
            ["api", "v1", "packages", ns, n, "blobs", "sha256", d] => ApprRoute::Blob {
                package: pkg(ns, n),
                digest: (*d).to_owned(),
                json: false,
            },
            ["api", "v1", "packages", ns, n, "blobs", "sha256", d, "json"] => ApprRoute::Blob {
                package: pkg(ns, n),
                digest: (*d).to_owned(),
                json: true,
            },
            ["api", "v1", "packages", ns, n, r] => ApprRoute::Release(pkg(ns, n), (*r).to_owned()),
            ["api", "v1", "packages", ns, n, r, m] => {
                ApprRoute::Manifest(pkg(ns, n), (*r).to_owned(), (*m).to_owned())
            }
            ["api", "v1", "packages", ns, n, r, m, "pull"] => ApprRoute::Pull {
                package: pkg(ns, n),
                release: (*r).to_owned(),
                media_type: (*m).to_owned(),
                json: false,
            },
            ["api", "v1", "packages", ns, n, r, m, "pull", "json"] => ApprRoute::Pull {
                package: pkg(ns, n),
                release: (*r).to_owned(),
                media_type: (*m).to_owned(),
                json: true,
            },
            _ => return None,
        })
    }

    /// The methods the route answers (anything else is 405, as Flask does).
    pub fn allows(&self, method: &http::Method) -> bool {
        use http::Method;
        let m = method.clone();
        match self {
            ApprRoute::Login => m == Method::POST,
            ApprRoute::Package(_) => matches!(m, Method::GET | Method::HEAD | Method::POST),
            ApprRoute::Manifest(..) | ApprRoute::Channel(..) => {
                matches!(m, Method::GET | Method::HEAD | Method::DELETE)
            }
            ApprRoute::ChannelRelease(..) => matches!(m, Method::POST | Method::DELETE),
            _ => matches!(m, Method::GET | Method::HEAD),
        }
    }

    /// The package the route is about (its repository's access rules apply).
    pub fn package(&self) -> Option<&PackageName> {
        match self {
            ApprRoute::Package(p)
            | ApprRoute::Release(p, _)
            | ApprRoute::Manifest(p, ..)
            | ApprRoute::Channels(p)
            | ApprRoute::Channel(p, _)
            | ApprRoute::ChannelRelease(p, ..) => Some(p),
            ApprRoute::Pull { package, .. } | ApprRoute::Blob { package, .. } => Some(package),
            _ => None,
        }
    }
}

/// Query parameters, decoded (later keys win, as `request.values.to_dict()` keeps the
/// first; appr clients never repeat one).
pub fn query_param(query: Option<&str>, key: &str) -> Option<String> {
    url::form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p() -> PackageName {
        PackageName {
            namespace: "ns".into(),
            name: "p".into(),
        }
    }

    #[test]
    fn routes_as_flask_matches_them() {
        let cases = [
            ("/cnr/version", Some(ApprRoute::Version)),
            (
                "/.well-known/app-registry-uri.json",
                Some(ApprRoute::Discovery),
            ),
            ("/cnr/api/v1/packages", Some(ApprRoute::List)),
            ("/cnr/api/v1/packages/", Some(ApprRoute::List)),
            ("/cnr/api/v1/packages/search", Some(ApprRoute::Search)),
            ("/cnr/api/v1/packages/ns/p", Some(ApprRoute::Package(p()))),
            (
                "/cnr/api/v1/packages/ns/p/channels",
                Some(ApprRoute::Channels(p())),
            ),
            (
                "/cnr/api/v1/packages/ns/p/channels/stable",
                Some(ApprRoute::Channel(p(), "stable".into())),
            ),
            (
                "/cnr/api/v1/packages/ns/p/channels/stable/1.0.0",
                Some(ApprRoute::ChannelRelease(
                    p(),
                    "stable".into(),
                    "1.0.0".into(),
                )),
            ),
            (
                "/cnr/api/v1/packages/ns/p/blobs/sha256/abc/json",
                Some(ApprRoute::Blob {
                    package: p(),
                    digest: "abc".into(),
                    json: true,
                }),
            ),
            (
                "/cnr/api/v1/packages/ns/p/1.0.0",
                Some(ApprRoute::Release(p(), "1.0.0".into())),
            ),
            (
                "/cnr/api/v1/packages/ns/p/%3E%3D1.0/kpm",
                Some(ApprRoute::Manifest(p(), ">=1.0".into(), "kpm".into())),
            ),
            (
                "/cnr/api/v1/packages/ns/p/1.0.0/kpm/pull",
                Some(ApprRoute::Pull {
                    package: p(),
                    release: "1.0.0".into(),
                    media_type: "kpm".into(),
                    json: false,
                }),
            ),
            (
                "/cnr/api/v1/packages/ns/p/1.0.0/kpm/pull/json",
                Some(ApprRoute::Pull {
                    package: p(),
                    release: "1.0.0".into(),
                    media_type: "kpm".into(),
                    json: true,
                }),
            ),
            ("/cnr/api/v1/packages/ns//p", None),
            ("/cnr/api/v1/packages/ns/p/1/2/3/4/5", None),
            ("/cnr/api/v1/packages/ns/%2F/x", None),
            ("/cnr/api/v2/packages", None),
            ("/cnrx", None),
        ];
        for (path, want) in cases {
            assert_eq!(ApprRoute::parse(path), want, "{path}");
        }
        assert!(is_appr_path("/cnr/anything"));
        assert!(!is_appr_path("/v2/cnr"));
    }

    #[test]
    fn methods() {
        use http::Method;
        assert!(ApprRoute::Package(p()).allows(&Method::POST));
        assert!(!ApprRoute::List.allows(&Method::POST));
        assert!(ApprRoute::ChannelRelease(p(), "c".into(), "1".into()).allows(&Method::DELETE));
        assert!(!ApprRoute::ChannelRelease(p(), "c".into(), "1".into()).allows(&Method::GET));
        assert!(ApprRoute::Login.allows(&Method::POST));
    }

    #[test]
    fn query_params() {
        assert_eq!(
            query_param(Some("a=1&force=true"), "force").as_deref(),
            Some("true")
        );
        assert_eq!(query_param(Some("q=a%20b"), "q").as_deref(), Some("a b"));
        assert_eq!(query_param(None, "q"), None);
    }
}
