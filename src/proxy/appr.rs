//! Glue for the App Registry API (`crate::appr`): reads the request, authenticates it
//! like `/v2/` (appr sends the token bare in `Authorization`; a bare token is read as
//! a bearer token), answers `appr login` through the token bridge, and implements the
//! service's [`Store`] over the one upstream client, with the route's Margo admission
//! and the push policies on release pushes, and cache/catalog updates after writes.

use std::sync::Arc;

use async_trait::async_trait;
use base64::Engine;
use bytes::Bytes;
use http::{HeaderValue, Method};
use pingora::http::ResponseHeader;
use pingora::proxy::Session;
use pingora::Result;
use serde_json::json;

use super::ctx::RequestCtx;
use super::{respond, MargoProxy};
use crate::appr::error::{ApprError, ErrorCode};
use crate::appr::route::{self, ApprRoute};
use crate::appr::service::{self, Reply};
use crate::appr::store::{Fetched, Store, StoreError};
use crate::auth::{ActionSet, Principal, Scope, Target};
use crate::oci::{Digest, OciRoute, Operation, Reference, RepoName};
use crate::upstream::credentials::{self, Scopes};
use crate::upstream::registry::{Auth, Caller, RegistryError, Request};
use crate::upstream::Upstream;

/// Largest manifest read (the OCI limit registries apply).
const MAX_MANIFEST: u64 = 4 << 20;
/// Most tags of one package read.
const MAX_TAGS: usize = 10_000;
/// Most `_catalog` pages followed for a listing.
const MAX_CATALOG_PAGES: usize = 100;

/// Whether this request is for the App Registry API (checked before its handler is boxed).
pub fn claims(proxy: &MargoProxy, session: &Session) -> bool {
    proxy.state.appr.is_some() && route::is_appr_path(session.req_header().uri.path())
}

/// Answers `/cnr/...` and the discovery document when the API is on; `Ok(false)` for
/// every other request.
pub async fn serve(
    proxy: &MargoProxy,
    session: &mut Session,
    ctx: &mut RequestCtx,
) -> Result<bool> {
    let Some(cfg) = proxy.state.appr.as_ref() else {
        return Ok(false);
    };
    if !route::is_appr_path(session.req_header().uri.path()) {
        return Ok(false);
    }
    ctx.operation = Operation::Other;
    // A base64 package plus its JSON envelope.
    let limit = cfg.max_package_bytes.saturating_mul(4) / 3 + (64 << 10);
    let max = usize::try_from(limit).unwrap_or(usize::MAX);
    let reply = match super::respond::read_body(session, max).await? {
        Some(body) => answer(proxy, session, ctx, cfg, &body).await,
        None => Reply::error(&ApprError::new(
            ErrorCode::PayloadTooLarge,
            format!("the body is larger than {limit} bytes"),
            json!({}),
        )),
    };
    let mut resp = ResponseHeader::build(reply.status, Some(reply.headers.len() + 2))?;
    for (name, value) in &reply.headers {
        resp.insert_header(name.clone(), value.as_str())?;
    }
    respond::answer(session, ctx, resp, reply.body).await?;
    Ok(true)
}

async fn answer(
    proxy: &MargoProxy,
    session: &Session,
    ctx: &mut RequestCtx,
    cfg: &crate::appr::ApprConfig,
    body: &[u8],
) -> Reply {
    let req = session.req_header();
    let Some(route) = ApprRoute::parse(req.uri.path()) else {
        return Reply::error(&ApprError::new(
            ErrorCode::ResourceNotFound,
            format!("no App Registry resource at {}", req.uri.path()),
            json!({"path": req.uri.path()}),
        ));
    };
    if route == ApprRoute::Login && req.method == Method::POST {
        return login(proxy, body).await;
    }
    let principal = match &proxy.state.auth {
        None => None,
        Some(auth) => {
            let repo = route
                .package()
                .map(|p| cfg.repository(&p.namespace, &p.name));
            let target = match &repo {
                Some(name) => Target::Repository {
                    name,
                    mount_from: None,
                },
                None => Target::Base,
            };
            let header = bearer(req.headers.get(http::header::AUTHORIZATION));
            match auth
                .authorize(&req.method, &target, header.as_ref().map(|h| h.as_bytes()))
                .await
            {
                Ok(p) => Some(p),
                Err(e) => {
                    proxy.state.metrics.auth_denied(e.reason());
                    ctx.refusal = Some(format!("auth: {}", e.reason()));
                    let r = auth.reject(&e);
                    let code = if r.status.as_u16() == 403 {
                        ErrorCode::Forbidden
                    } else {
                        ErrorCode::UnauthorizedAccess
                    };
                    let mut reply = Reply::error(&ApprError::new(code, e.to_string(), json!({})));
                    reply.status = r.status.as_u16();
                    reply.headers.extend(
                        r.headers
                            .into_iter()
                            .filter(|(n, _)| *n == http::header::WWW_AUTHENTICATE),
                    );
                    return reply;
                }
            }
        }
    };
    ctx.principal = principal.clone();
    let host = ctx.client_host().unwrap_or("localhost").to_owned();
    let base_url = match proxy.state.public_url.as_deref() {
        Some(u) => u.to_owned(),
        None => format!("{}://{host}", if ctx.client_tls { "https" } else { "http" }),
    };
    let store = UpstreamStore {
        proxy,
        principal,
        request_id: ctx.request_id.header_value().clone(),
        client_auth: req.headers.get(http::header::AUTHORIZATION).cloned(),
    };
    let now_unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let request = service::Request {
        method: &req.method,
        route: &route,
        query: req.uri.query(),
        body,
        base_url: &base_url,
        now_unix,
    };
    service::handle(cfg, &store, &request).await
}

/// appr sends the token as the whole `Authorization` value; the login answer below
/// hands it out as `Bearer <token>`, but older logins stored it bare.
fn bearer(v: Option<&HeaderValue>) -> Option<HeaderValue> {
    let v = v?;
    let s = v.to_str().ok()?;
    if s.contains(' ') {
        return Some(v.clone());
    }
    let mut h = HeaderValue::from_str(&format!("Bearer {s}")).ok()?;
    h.set_sensitive(true);
    Some(h)
}

/// `appr login`: `{"user": {"username", "password"}}` exchanged at the token bridge as
/// a registry client's Basic login would be; the token comes back as `Bearer <token>`,
/// which appr then sends as it is.
async fn login(proxy: &MargoProxy, body: &[u8]) -> Reply {
    let Some(bridge) = proxy.state.auth.as_ref().and_then(|a| a.token_endpoint()) else {
        return Reply::error(&ApprError::new(
            ErrorCode::Unsupported,
            "login needs the proxy's token endpoint (auth.token_endpoint)",
            json!({}),
        ));
    };
    #[derive(serde::Deserialize)]
    struct User {
        username: String,
        password: String,
    }
    #[derive(serde::Deserialize)]
    struct Login {
        user: User,
    }
    let Ok(l) = serde_json::from_slice::<Login>(body) else {
        return Reply::error(&ApprError::usage(
            "expected {\"user\": {\"username\": ..., \"password\": ...}}",
        ));
    };
    let basic = base64::engine::general_purpose::STANDARD
        .encode(format!("{}:{}", l.user.username, l.user.password));
    let mut headers = http::HeaderMap::new();
    if let Ok(v) = HeaderValue::from_str(&format!("Basic {basic}")) {
        headers.insert(http::header::AUTHORIZATION, v);
    }
    let answer = bridge.handle(&Method::GET, &headers, None, b"").await;
    let token = serde_json::from_str::<serde_json::Value>(&answer.body)
        .ok()
        .and_then(|v| {
            v.get("token")
                .or_else(|| v.get("access_token"))
                .and_then(|t| t.as_str())
                .map(str::to_owned)
        });
    match token {
        Some(t) if answer.status.is_success() => {
            let mut r = Reply::json(200, &json!({"token": format!("Bearer {t}")}));
            r.headers
                .push((http::header::CACHE_CONTROL, "no-store".to_owned()));
            r
        }
        _ => Reply::error(&ApprError::new(
            ErrorCode::UnauthorizedAccess,
            "login refused",
            json!({"status": answer.status.as_u16()}),
        )),
    }
}

/// The service's registry: the proxy's upstreams, in client names, on behalf of the
/// caller of this request.
struct UpstreamStore<'a> {
    proxy: &'a MargoProxy,
    principal: Option<Arc<Principal>>,
    request_id: HeaderValue,
    client_auth: Option<HeaderValue>,
}

fn upstream_error(e: RegistryError) -> StoreError {
    match e {
        RegistryError::TooLarge { limit, .. } => StoreError::TooLarge {
            what: "an upstream answer",
            limit,
        },
        e => StoreError::Upstream {
            status: e.to_oci().status,
            message: e.to_string(),
        },
    }
}

impl UpstreamStore<'_> {
    /// The upstream and upstream name of a client repository name, with the forward
    /// plan a manifest request for it would have.
    fn resolve(
        &self,
        repo: &str,
        reference: &str,
    ) -> std::result::Result<(Arc<Upstream>, RequestCtx), StoreError> {
        let bad = |m: String| StoreError::Upstream {
            status: 404,
            message: m,
        };
        let name = RepoName::parse(repo).map_err(|e| bad(format!("`{repo}`: {e}")))?;
        let reference = Reference::parse(reference).map_err(|e| bad(format!("{e:?}")))?;
        let route = OciRoute::Manifest { name, reference };
        let path = format!("/v2/{repo}/manifests/{}", route_reference(&route));
        let fwd = crate::upstream::forward::plan(&self.proxy.state.router, &route, &path, None)
            .map_err(|e| bad(e.to_string()))?;
        let upstream = self
            .proxy
            .state
            .upstreams
            .get(fwd.upstream)
            .cloned()
            .ok_or_else(|| bad(format!("no upstream for `{repo}`")))?;
        let mut ctx = RequestCtx::new();
        ctx.operation = Operation::ManifestPut;
        ctx.route = Some(route);
        ctx.forward = Some(fwd);
        ctx.principal = self.principal.clone();
        ctx.request_id = super::ctx::request_id(Some(&self.request_id));
        Ok((upstream, ctx))
    }

    fn caller<'c>(
        &'c self,
        upstream: &Upstream,
        ctx: &'c RequestCtx,
        method: &'c Method,
    ) -> Caller<'c> {
        let auth = if self.proxy.forwards_client_credentials(upstream) {
            match &self.client_auth {
                Some(v) => Auth::Client(v),
                None => Auth::Anonymous,
            }
        } else {
            Auth::Account(Scopes::Request {
                method,
                repository: upstream_name(ctx),
                mount_from: None,
                catalog: false,
            })
        };
        Caller {
            request_id: Some(&self.request_id),
            forwarded: None,
            auth,
        }
    }

    async fn catalog(
        &self,
        index: usize,
        upstream: &Upstream,
    ) -> std::result::Result<Vec<String>, StoreError> {
        let caller = Caller {
            request_id: Some(&self.request_id),
            forwarded: None,
            auth: if self.proxy.forwards_client_credentials(upstream) {
                match &self.client_auth {
                    Some(v) => Auth::Client(v),
                    None => Auth::Anonymous,
                }
            } else {
                Auth::Account(Scopes::Listed(credentials::scopes_for(
                    &Method::GET,
                    None,
                    None,
                    true,
                )))
            },
        };
        let mut names = Vec::new();
        let mut next = Some("/v2/_catalog?n=1000".to_owned());
        for _ in 0..MAX_CATALOG_PAGES {
            let Some(path) = next.take() else { break };
            let r = upstream
                .registry()
                .send(&caller, Request::new(Method::GET, path).max_body(4 << 20))
                .await
                .map_err(upstream_error)?;
            if r.status != http::StatusCode::OK {
                break;
            }
            #[derive(serde::Deserialize)]
            struct Page {
                #[serde(default)]
                repositories: Option<Vec<String>>,
            }
            let page: Page = serde_json::from_slice(&r.body).map_err(|e| StoreError::Upstream {
                status: 502,
                message: format!("_catalog is not JSON: {e}"),
            })?;
            for n in page.repositories.unwrap_or_default() {
                if let Some(c) = self.proxy.state.router.client_name(index, &n) {
                    names.push(c);
                }
            }
            next = r
                .headers
                .get(http::header::LINK)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.split_once('<'))
                .and_then(|(_, rest)| rest.split_once('>'))
                .map(|(p, _)| p.to_owned())
                .filter(|p| p.starts_with("/v2/_catalog"));
        }
        Ok(names)
    }

    /// Cache and catalog learn of a write, as after one through the OCI API.
    async fn after_write(&self, upstream: &Upstream, ctx: &RequestCtx, deleted: bool) {
        let Some(key) = super::manifest_get::repo_key(ctx, upstream) else {
            return;
        };
        let Some(reference) = ctx.reference() else {
            return;
        };
        let inv = if deleted {
            crate::bus::Invalidation::ManifestDelete {
                upstream: key.upstream().to_owned(),
                repository: key.repository().to_owned(),
                reference,
            }
        } else {
            crate::bus::Invalidation::ManifestPut {
                upstream: key.upstream().to_owned(),
                repository: key.repository().to_owned(),
                reference,
            }
        };
        self.proxy.state.coherence.announce(inv).await;
        if deleted {
            super::catalog::after_delete(self.proxy, ctx);
        } else {
            super::catalog::after_put(self.proxy, ctx).await;
        }
    }
}

fn route_reference(route: &OciRoute) -> String {
    match route {
        OciRoute::Manifest { reference, .. } => match reference {
            Reference::Tag(t) => t.clone(),
            Reference::Digest(d) => d.to_string(),
        },
        _ => String::new(),
    }
}

fn upstream_name(ctx: &RequestCtx) -> Option<&str> {
    ctx.forward
        .as_ref()
        .and_then(|f| f.matched.as_ref())
        .map(|m| m.upstream_name.as_str())
}

#[async_trait]
impl Store for UpstreamStore<'_> {
    async fn repositories(&self) -> std::result::Result<Vec<String>, StoreError> {
        let mut all = Vec::new();
        // Git-backed upstreams have no HTTP registry behind them: their packages are
        // served over OCI and `git clone`, not this API.
        for (i, u) in self.proxy.state.upstreams.iter().enumerate() {
            if u.git {
                continue;
            }
            all.extend(self.catalog(i, u).await?);
        }
        all.sort();
        all.dedup();
        Ok(all)
    }

    async fn tags(&self, repo: &str) -> std::result::Result<Vec<String>, StoreError> {
        let (upstream, ctx) = self.resolve(repo, "latest")?;
        let name = upstream_name(&ctx).unwrap_or(repo).to_owned();
        let caller = self.caller(&upstream, &ctx, &Method::GET);
        Ok(upstream
            .registry()
            .tags_list(&caller, &name, MAX_TAGS)
            .await
            .map_err(upstream_error)?
            .unwrap_or_default())
    }

    async fn manifest(
        &self,
        repo: &str,
        reference: &str,
    ) -> std::result::Result<Option<Fetched>, StoreError> {
        let (upstream, ctx) = self.resolve(repo, reference)?;
        let name = upstream_name(&ctx).unwrap_or(repo).to_owned();
        let caller = self.caller(&upstream, &ctx, &Method::GET);
        let m = upstream
            .registry()
            .manifest_get(&caller, &name, reference, MAX_MANIFEST)
            .await
            .map_err(upstream_error)?;
        Ok(m.map(|m| Fetched {
            digest: Digest::sha256_of(&m.body),
            body: m.body,
        }))
    }

    async fn blob(
        &self,
        repo: &str,
        digest: &Digest,
        max: u64,
    ) -> std::result::Result<Option<Bytes>, StoreError> {
        let (upstream, ctx) = self.resolve(repo, &digest.to_string())?;
        let name = upstream_name(&ctx).unwrap_or(repo).to_owned();
        let caller = self.caller(&upstream, &ctx, &Method::GET);
        upstream
            .registry()
            .blob_bytes(&caller, &name, digest, max)
            .await
            .map_err(upstream_error)
    }

    async fn put_blob(
        &self,
        repo: &str,
        digest: &Digest,
        data: Bytes,
    ) -> std::result::Result<(), StoreError> {
        let (upstream, ctx) = self.resolve(repo, &digest.to_string())?;
        let name = upstream_name(&ctx).unwrap_or(repo).to_owned();
        let caller = self.caller(&upstream, &ctx, &Method::POST);
        upstream
            .registry()
            .blob_upload(&caller, &name, digest, data)
            .await
            .map_err(upstream_error)
    }

    async fn put_manifest(
        &self,
        repo: &str,
        tag: &str,
        body: Bytes,
        release: bool,
    ) -> std::result::Result<Digest, StoreError> {
        let (upstream, mut ctx) = self.resolve(repo, tag)?;
        let path = ctx
            .forward
            .as_ref()
            .map(|f| f.path_and_query.clone())
            .unwrap_or_default();
        if release {
            let admitted = {
                let caller = self.caller(&upstream, &ctx, &Method::PUT);
                super::admission::admit(self.proxy, &ctx, &upstream, &caller, &body).await
            };
            let admitted = admitted.map_err(StoreError::Refused)?;
            if let Some(e) =
                super::policy::push(self.proxy, &mut ctx, &Method::PUT, &body, admitted).await
            {
                return Err(StoreError::Refused(e));
            }
        }
        let content_type = HeaderValue::from_static("application/vnd.oci.image.manifest.v1+json");
        let answer = {
            let caller = self.caller(&upstream, &ctx, &Method::PUT);
            upstream
                .registry()
                .manifest_put(&caller, &path, Some(&content_type), body.clone(), 64 << 10)
                .await
                .map_err(upstream_error)?
        };
        if !answer.status.is_success() {
            let why = String::from_utf8_lossy(&answer.body)
                .chars()
                .take(500)
                .collect::<String>();
            return Err(StoreError::Upstream {
                status: 502,
                message: format!("upstream refused the manifest ({}): {why}", answer.status),
            });
        }
        self.after_write(&upstream, &ctx, false).await;
        if release {
            super::blob::link_manifest(self.proxy, &ctx, &body);
        }
        Ok(Digest::sha256_of(&body))
    }

    async fn delete_manifest(
        &self,
        repo: &str,
        digest: &Digest,
    ) -> std::result::Result<bool, StoreError> {
        let (upstream, ctx) = self.resolve(repo, &digest.to_string())?;
        let path = ctx
            .forward
            .as_ref()
            .map(|f| f.path_and_query.clone())
            .unwrap_or_default();
        let r = {
            let caller = self.caller(&upstream, &ctx, &Method::DELETE);
            upstream
                .registry()
                .send(&caller, Request::new(Method::DELETE, path))
                .await
                .map_err(upstream_error)?
        };
        match r.status.as_u16() {
            200..=299 => {
                self.after_write(&upstream, &ctx, true).await;
                Ok(true)
            }
            404 => Ok(false),
            s => Err(StoreError::Upstream {
                status: 502,
                message: format!("upstream answered {s} to the delete"),
            }),
        }
    }

    fn may_pull(&self, repo: &str) -> bool {
        match &self.principal {
            None => true,
            Some(p) => p
                .permissions
                .allows(&Scope::repository(repo, ActionSet::PULL)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bare_token_is_read_as_a_bearer_token() {
        let bare = HeaderValue::from_static("abc.def.ghi");
        assert_eq!(
            bearer(Some(&bare)).map(|v| v.to_str().map(str::to_owned).unwrap_or_default()),
            Some("Bearer abc.def.ghi".to_owned())
        );
        let full = HeaderValue::from_static("Bearer abc");
        assert_eq!(bearer(Some(&full)), Some(full.clone()));
        let basic = HeaderValue::from_static("Basic dTpw");
        assert_eq!(bearer(Some(&basic)), Some(basic.clone()));
        assert_eq!(bearer(None), None);
    }
}
