//! The catalog's HTTP answers as plain data: the proxy glue reads the request, calls
//! [`handle`] and writes the [`Reply`]. Same auth as the registry API: a caller sees
//! only repositories it may pull.

use std::sync::Arc;

use bytes::Bytes;
use serde::Serialize;
use sha2::{Digest as _, Sha256};

use super::configure::{self, BodyError};
use super::index::{Index, RepoEntry, VersionEntry};
use super::query::{self, blob_url, Query};
use super::{web, Catalog};
use crate::auth::{ActionSet, Authenticator, Principal, Scope, Target};
use crate::margo::model::ProfileType;
use crate::margo::report::Report;
use crate::margo::resources::ResourceKind;
use crate::margo::validate::RegexLimits;
use crate::oci::{OciError, OciErrorCode};

pub const API_PREFIX: &str = "/margo/v1/applications";
pub const WEB_PREFIX: &str = "/catalog";

/// Whether the catalog answers this path (the glue then reads the body, at most
/// [`configure::MAX_BODY_BYTES`] + 1 bytes).
pub fn is_catalog_path(path: &str) -> bool {
    path == API_PREFIX
        || path.starts_with("/margo/v1/applications/")
        || path == WEB_PREFIX
        || path.starts_with("/catalog/")
}

/// A request, as the glue hands it over.
pub struct Request<'a> {
    pub method: &'a http::Method,
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub headers: &'a http::HeaderMap,
    pub body: &'a [u8],
}

/// A complete answer.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(http::HeaderName, String)>,
    pub body: Bytes,
}

impl Reply {
    pub fn json<T: Serialize>(status: u16, value: &T) -> Self {
        let body = serde_json::to_vec(value).unwrap_or_else(|_| b"{}".to_vec());
        Reply {
            status,
            headers: vec![(http::header::CONTENT_TYPE, "application/json".to_owned())],
            body: Bytes::from(body),
        }
    }

    pub fn error(err: &OciError) -> Self {
        Reply {
            status: err.status,
            headers: vec![(http::header::CONTENT_TYPE, "application/json".to_owned())],
            body: Bytes::from(err.body()),
        }
    }

    fn with_header(mut self, name: http::HeaderName, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }
}

fn not_found(what: String) -> Reply {
    Reply::error(&OciError::new(OciErrorCode::NameUnknown, what).with_status(404))
}

fn bad_request(code: OciErrorCode, what: String) -> Reply {
    Reply::error(&OciError::new(code, what).with_status(400))
}

fn method_not_allowed(allow: &str) -> Reply {
    Reply::error(
        &OciError::new(
            OciErrorCode::Unsupported,
            format!("method not allowed (use {allow})"),
        )
        .with_status(405),
    )
    .with_header(http::header::ALLOW, allow)
}

/// Who is asking. `Ok(None)`: no auth configured, everything is visible.
pub enum Caller {
    Everyone,
    Principal(Arc<Principal>),
}

impl Caller {
    pub fn may_pull(&self, repo: &str) -> bool {
        match self {
            Caller::Everyone => true,
            Caller::Principal(p) => p
                .permissions
                .allows(&Scope::repository(repo, ActionSet::PULL)),
        }
    }
}

/// Authenticates like `/v2/`: a valid token, or anonymous when anonymous rules exist.
pub async fn caller(
    auth: Option<&Authenticator>,
    headers: &http::HeaderMap,
) -> Result<Caller, Reply> {
    let Some(auth) = auth else {
        return Ok(Caller::Everyone);
    };
    let header = headers
        .get(http::header::AUTHORIZATION)
        .map(|v| v.as_bytes());
    match auth
        .authorize(&http::Method::GET, &Target::Base, header)
        .await
    {
        Ok(p) => Ok(Caller::Principal(p)),
        Err(e) => {
            let r = auth.reject(&e);
            Err(Reply {
                status: r.status.as_u16(),
                headers: r.headers,
                body: Bytes::from(r.body.into_bytes()),
            })
        }
    }
}

/// Strong ETag of a body: identical answers share it, any change alters it.
pub fn etag(body: &[u8]) -> String {
    let h = Sha256::digest(body);
    format!("\"{}\"", hex::encode(&h[..16]))
}

fn with_etag(reply: Reply, headers: &http::HeaderMap) -> Reply {
    let tag = etag(&reply.body);
    let matched = headers
        .get_all(http::header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| {
            let t = t.trim();
            t == "*" || t.trim_start_matches("W/") == tag
        });
    let reply = reply.with_header(http::header::ETAG, tag);
    if matched {
        Reply {
            status: 304,
            body: Bytes::new(),
            ..reply
        }
    } else {
        reply
    }
}

/// What a `/margo/v1/applications/...` path addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiPath {
    List,
    Version {
        repo: String,
        version: String,
    },
    Validate {
        repo: String,
        version: String,
    },
    Resource {
        repo: String,
        version: String,
        kind: ResourceKind,
    },
}

impl ApiPath {
    pub fn parse(path: &str) -> Option<Self> {
        if path == API_PREFIX {
            return Some(ApiPath::List);
        }
        let rest = path.strip_prefix(API_PREFIX)?.strip_prefix('/')?;
        let (repo, tail) = rest.rsplit_once("/versions/")?;
        if repo.is_empty() {
            return None;
        }
        let (version, action) = match tail.split_once('/') {
            Some((v, a)) => (v, Some(a)),
            None => (tail, None),
        };
        if version.is_empty() || !crate::oci::path::valid_tag(version) {
            return None;
        }
        let (repo, version) = (repo.to_owned(), version.to_owned());
        match action {
            None => Some(ApiPath::Version { repo, version }),
            Some("configuration:validate") => Some(ApiPath::Validate { repo, version }),
            Some(a) => {
                let kind = ResourceKind::parse(a.strip_prefix("resources/")?)?;
                Some(ApiPath::Resource {
                    repo,
                    version,
                    kind,
                })
            }
        }
    }
}

/// A component of a deployment profile, with where to pull it from.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ComponentRef {
    pub profile: String,
    pub profile_type: ProfileType,
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repository: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub package_location: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ResourceLink {
    #[serde(flatten)]
    pub layer: super::index::ResourceLayer,
    /// The blob through the proxy.
    pub url: String,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Admission {
    /// No violation at all (packages of audit-mode routes may have some).
    pub clean: bool,
    pub report: Report,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VersionDetail<'a> {
    pub repository: &'a str,
    pub version: &'a str,
    pub manifest_digest: String,
    pub description_digest: &'a str,
    pub versions: Vec<&'a str>,
    pub description: &'a crate::margo::model::ApplicationDescription,
    pub resources: Vec<ResourceLink>,
    pub components: Vec<ComponentRef>,
    pub admission: Admission,
}

pub fn components(v: &VersionEntry) -> Vec<ComponentRef> {
    v.description
        .deployment_profiles
        .iter()
        .flat_map(|p| {
            p.components.iter().map(move |c| ComponentRef {
                profile: p.id.clone(),
                profile_type: p.profile_type,
                name: c.name.clone(),
                repository: c.properties.repository.clone(),
                revision: c.properties.revision.clone(),
                package_location: c.properties.package_location.clone(),
            })
        })
        .collect()
}

pub fn detail<'a>(repo: &'a RepoEntry, v: &'a VersionEntry) -> VersionDetail<'a> {
    VersionDetail {
        repository: &v.repository,
        version: &v.tag,
        manifest_digest: v.manifest_digest.to_string(),
        description_digest: &v.description_digest,
        versions: repo.versions.iter().map(|x| x.tag.as_str()).collect(),
        description: &v.description,
        resources: v
            .resources
            .iter()
            .map(|r| ResourceLink {
                url: blob_url(&v.repository, &r.digest),
                layer: r.clone(),
            })
            .collect(),
        components: components(v),
        admission: Admission {
            clean: v.report.is_empty(),
            report: v.report.clone(),
        },
    }
}

/// Finds a version the caller may see; a repository it may not pull is "unknown",
/// like one that does not exist (no existence oracle).
fn find<'a>(
    index: &'a Index,
    caller: &Caller,
    repo: &str,
    version: &str,
) -> Result<(&'a RepoEntry, &'a Arc<VersionEntry>), Reply> {
    let unknown = || {
        not_found(format!(
            "no application version {repo}:{version} in the catalog"
        ))
    };
    if !caller.may_pull(repo) {
        return Err(unknown());
    }
    let r = index.repos.get(repo).ok_or_else(unknown)?;
    let v = r.version(version).ok_or_else(unknown)?;
    Ok((r, v))
}

/// Answers a catalog request; `None` when the path is not the catalog's.
pub async fn handle(
    catalog: &Catalog,
    auth: Option<&Authenticator>,
    req: &Request<'_>,
) -> Option<Reply> {
    if !is_catalog_path(req.path) {
        return None;
    }
    if req.path == WEB_PREFIX || req.path.starts_with("/catalog/") {
        return Some(web::handle(catalog, auth, req).await);
    }
    let Some(route) = ApiPath::parse(req.path) else {
        return Some(not_found(format!("no catalog resource at {}", req.path)));
    };
    let caller = match caller(auth, req.headers).await {
        Ok(c) => c,
        Err(reply) => return Some(reply),
    };
    let index = catalog.snapshot();
    let is_get = matches!(*req.method, http::Method::GET | http::Method::HEAD);
    Some(match route {
        ApiPath::List if is_get => match Query::parse(req.query) {
            Ok(q) => with_etag(
                Reply::json(200, &query::list(&index, &q, |r| caller.may_pull(r))),
                req.headers,
            ),
            Err(e) => bad_request(OciErrorCode::Unsupported, e.to_string()),
        },
        ApiPath::Version { repo, version } if is_get => {
            match find(&index, &caller, &repo, &version) {
                Ok((r, v)) => with_etag(Reply::json(200, &detail(r, v)), req.headers),
                Err(reply) => reply,
            }
        }
        ApiPath::Resource {
            repo,
            version,
            kind,
        } if is_get => match find(&index, &caller, &repo, &version) {
            Ok((_, v)) => resource(v, kind, req.headers),
            Err(reply) => reply,
        },
        ApiPath::Validate { repo, version } if *req.method == http::Method::POST => {
            match find(&index, &caller, &repo, &version) {
                Ok((_, v)) => validate(v, req.body),
                Err(reply) => reply,
            }
        }
        ApiPath::Validate { .. } => method_not_allowed("POST"),
        _ => method_not_allowed("GET, HEAD"),
    })
}

fn validate(v: &VersionEntry, body: &[u8]) -> Reply {
    match configure::parse_body(body) {
        Ok(input) => {
            let outcome = configure::validate(&v.description, &input, &RegexLimits::default());
            Reply::json(if outcome.valid { 200 } else { 422 }, &outcome)
        }
        Err(e @ BodyError::TooLarge) => {
            Reply::error(&OciError::new(OciErrorCode::SizeInvalid, e.to_string()).with_status(413))
        }
        Err(e) => bad_request(OciErrorCode::Unsupported, e.to_string()),
    }
}

/// The icon (served formats only) or a text resource, from the index.
fn resource(v: &VersionEntry, kind: ResourceKind, headers: &http::HeaderMap) -> Reply {
    let (body, media_type) = match kind {
        ResourceKind::Icon => match &v.icon {
            Some((b, mt)) => (b.clone(), (*mt).to_owned()),
            None => return not_found("this version has no icon the catalog serves".into()),
        },
        k => match v.texts.get(&k) {
            Some(t) => (
                Bytes::from(t.clone().into_bytes()),
                "text/plain; charset=utf-8".to_owned(),
            ),
            None => return not_found(format!("this version has no {} text", k.as_str())),
        },
    };
    let reply = Reply {
        status: 200,
        headers: vec![
            (http::header::CONTENT_TYPE, media_type),
            (
                http::header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; sandbox".to_owned(),
            ),
            (http::header::X_CONTENT_TYPE_OPTIONS, "nosniff".to_owned()),
        ],
        body,
    };
    with_etag(reply, headers)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_paths() {
        let cases = [
            ("/margo/v1/applications", Some(ApiPath::List)),
            (
                "/margo/v1/applications/apps/a/b/versions/1.0.0",
                Some(ApiPath::Version {
                    repo: "apps/a/b".into(),
                    version: "1.0.0".into(),
                }),
            ),
            (
                "/margo/v1/applications/apps/x/versions/1.0.0/configuration:validate",
                Some(ApiPath::Validate {
                    repo: "apps/x".into(),
                    version: "1.0.0".into(),
                }),
            ),
            (
                "/margo/v1/applications/apps/x/versions/2.0.0-rc.1/resources/icon",
                Some(ApiPath::Resource {
                    repo: "apps/x".into(),
                    version: "2.0.0-rc.1".into(),
                    kind: ResourceKind::Icon,
                }),
            ),
            ("/margo/v1/applications/apps/x/versions/", None),
            ("/margo/v1/applications/apps/x/versions/1.0.0/other", None),
            ("/margo/v1/applications/apps/x", None),
            ("/margo/v1/applications/versions/1.0.0", None),
        ];
        for (p, want) in cases {
            assert_eq!(ApiPath::parse(p), want, "{p}");
        }
    }

    #[test]
    fn etag_and_if_none_match() {
        let body = Reply::json(200, &serde_json::json!({"a": 1}));
        let tag = etag(&body.body);
        let mut h = http::HeaderMap::new();
        assert_eq!(with_etag(body.clone(), &h).status, 200);
        h.insert(
            http::header::IF_NONE_MATCH,
            http::HeaderValue::from_str(&format!("\"x\", {tag}"))
                .unwrap_or(http::HeaderValue::from_static("")),
        );
        let r = with_etag(body, &h);
        assert_eq!(r.status, 304);
        assert!(r.body.is_empty());
    }
}
