//! `git clone http(s)://<proxy>/git/<repository>.git`: the OCI packages of an `app`
//! route as a Git repository, one commit per version and a tag each
//! ([`history`]), over smart HTTP `git-upload-pack`, protocol v0 and v2
//! ([`protocol`]). Read-only: `git push` is refused. Nothing is kept but a bounded cache
//! of built package trees by manifest digest; tags and manifests are read from the
//! upstream on every request, so `git fetch` sees a new version at once.
//!
//! The proxy glue hands every request under [`PREFIX`] to [`GitServe::handle`] and
//! writes the [`Reply`].

pub mod auth;
pub mod config;
pub mod history;
pub mod pack;
pub mod package;
pub mod pktline;
pub mod protocol;
pub mod store;

use std::io::Read as _;
use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;

pub use config::GitServeConfig;
use history::{BuiltTree, History, PackageVersion};
use store::{PackageStore, StoreError};

use crate::auth::Authenticator;
use crate::oci::Digest;

/// Where the Git endpoint answers.
pub const PREFIX: &str = "/git/";
/// Largest request body the glue reads (compressed, as sent).
pub const MAX_BODY_BYTES: usize = 1 << 20;
/// Largest request body once gzip is undone (a fetch of many haves).
const MAX_INFLATED_BYTES: u64 = 8 << 20;
/// Versions read from the upstream at once.
const UPSTREAM_CONCURRENCY: usize = 8;

/// Whether the Git endpoint answers this path.
pub fn is_git_path(path: &str) -> bool {
    path.starts_with(PREFIX)
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
    /// Git prints a `text/plain` error body to the user (`remote: …` / `fatal: …`).
    pub fn text(status: u16, message: &str) -> Self {
        Reply {
            status,
            headers: vec![(
                http::header::CONTENT_TYPE,
                "text/plain; charset=utf-8".to_owned(),
            )],
            body: Bytes::from(format!("{message}\n")),
        }
    }

    fn git(content_type: &str, body: Vec<u8>) -> Self {
        Reply {
            status: 200,
            headers: vec![
                (http::header::CONTENT_TYPE, content_type.to_owned()),
                (http::header::CACHE_CONTROL, "no-cache".to_owned()),
            ],
            body: Bytes::from(body),
        }
    }

    pub fn with_header(mut self, name: http::HeaderName, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }
}

/// What a path under `/git/<repository>[.git]/` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Endpoint {
    InfoRefs,
    UploadPack,
    ReceivePack,
}

fn parse_path(path: &str) -> Option<(String, Endpoint)> {
    let rest = path.strip_prefix(PREFIX)?;
    let (repo, endpoint) = [
        ("/info/refs", Endpoint::InfoRefs),
        ("/git-upload-pack", Endpoint::UploadPack),
        ("/git-receive-pack", Endpoint::ReceivePack),
    ]
    .into_iter()
    .find_map(|(suffix, e)| rest.strip_suffix(suffix).map(|r| (r, e)))?;
    let repo = repo.strip_suffix(".git").unwrap_or(repo);
    crate::oci::RepoName::parse(repo).ok()?;
    Some((repo.to_owned(), endpoint))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Protocol {
    V0,
    V2,
}

fn protocol(headers: &http::HeaderMap) -> Protocol {
    let v2 = headers
        .get_all("git-protocol")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(':'))
        .any(|p| p.trim() == "version=2");
    if v2 {
        Protocol::V2
    } else {
        Protocol::V0
    }
}

const PUSH_REFUSED: &str = "margo-proxy: git push is not supported: this repository is a read-only view of OCI packages (push packages with oras or `margo-proxy push` to /v2/)";

/// A built version, or why a manifest gives none (both are facts of the manifest, so
/// both are cached).
#[derive(Clone)]
enum Built {
    Tree { tree: Arc<BuiltTree>, created: i64 },
    Skipped(Arc<str>),
}

/// The Git endpoint.
pub struct GitServe {
    config: GitServeConfig,
    store: Arc<dyn PackageStore>,
    trees: moka::sync::Cache<Digest, Built>,
    auth: auth::GitAuth,
}

/// The endpoint the config asks for (`None` when off), over the proxy's upstreams.
pub fn from_config(
    config: &crate::config::Config,
    upstreams: &[Arc<crate::upstream::Upstream>],
    git: Option<Arc<crate::git::source::GitSources>>,
) -> Result<Option<Arc<GitServe>>, String> {
    if !config.git.enabled {
        return Ok(None);
    }
    let store = store::RegistryStore {
        source: crate::catalog::source::UpstreamSource {
            upstreams: upstreams.to_vec(),
            router: Arc::new(crate::upstream::routing::Router::from_config(config)?),
            git: None,
        },
        git,
    };
    Ok(Some(Arc::new(GitServe::new(
        config.git.clone(),
        Arc::new(store),
    ))))
}

impl GitServe {
    pub fn new(config: GitServeConfig, store: Arc<dyn PackageStore>) -> Self {
        let trees = moka::sync::Cache::builder()
            .max_capacity(config.cache_bytes)
            .weigher(|_: &Digest, b: &Built| match b {
                Built::Tree { tree, .. } => u32::try_from(tree.weight()).unwrap_or(u32::MAX),
                Built::Skipped(why) => why.len() as u32 + 64,
            })
            .build();
        Self {
            config,
            store,
            trees,
            auth: auth::GitAuth::default(),
        }
    }

    /// Answers one request under [`PREFIX`].
    pub async fn handle(&self, auth: Option<&Authenticator>, req: &Request<'_>) -> Reply {
        let Some((repo, endpoint)) = parse_path(req.path) else {
            return Reply::text(
                404,
                "margo-proxy: not found (only smart HTTP: /git/<repository>.git/info/refs and git-upload-pack)",
            );
        };
        let service = req.query.and_then(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .find(|(k, _)| k == "service")
                .map(|(_, v)| v.into_owned())
        });
        match (endpoint, req.method, service.as_deref()) {
            (Endpoint::ReceivePack, _, _) | (Endpoint::InfoRefs, _, Some("git-receive-pack")) => {
                return Reply::text(403, PUSH_REFUSED)
            }
            (Endpoint::InfoRefs, &http::Method::GET, Some("git-upload-pack")) => {}
            (Endpoint::InfoRefs, &http::Method::GET, _) => {
                return Reply::text(
                    403,
                    "margo-proxy: only the smart HTTP protocol is served (git 1.6.6 or later)",
                )
            }
            (Endpoint::UploadPack, &http::Method::POST, _) => {}
            (Endpoint::InfoRefs, _, _) => {
                return Reply::text(405, "margo-proxy: use GET")
                    .with_header(http::header::ALLOW, "GET")
            }
            (Endpoint::UploadPack, _, _) => {
                return Reply::text(405, "margo-proxy: use POST")
                    .with_header(http::header::ALLOW, "POST")
            }
        }
        if let Some(a) = auth {
            if let Err(reply) = self.auth.authorize(a, &repo, req.headers).await {
                return reply;
            }
        }
        let proto = protocol(req.headers);
        if endpoint == Endpoint::InfoRefs && proto == Protocol::V2 {
            // The v2 advertisement names no refs: knowing the repository exists is enough.
            let tags =
                tokio::time::timeout(self.config.request_timeout, self.store.tags(&repo)).await;
            return match tags {
                Ok(Ok(_)) => Reply::git(
                    "application/x-git-upload-pack-advertisement",
                    protocol::advertise_v2(),
                ),
                Ok(Err(e)) => store_error(&repo, &e),
                Err(_) => timed_out(&repo),
            };
        }
        let built = tokio::time::timeout(self.config.request_timeout, self.history(&repo)).await;
        let history = match built {
            Ok(Ok(h)) => h,
            Ok(Err(e)) => return store_error(&repo, &e),
            Err(_) => return timed_out(&repo),
        };
        if endpoint == Endpoint::InfoRefs {
            return Reply::git(
                "application/x-git-upload-pack-advertisement",
                protocol::advertise_v0(&history),
            );
        }
        let body = match inflate(req) {
            Ok(b) => b,
            Err(r) => return r,
        };
        let max = self.config.max_response_bytes;
        let answer = match proto {
            Protocol::V2 => protocol::handle_v2(&history, &body, max),
            Protocol::V0 => protocol::handle_v0(&history, &body, max),
        };
        let out = answer.unwrap_or_else(|e| {
            tracing::info!(repository = %repo, error = %e, "git: fetch refused");
            e.to_err_pkt()
        });
        Reply::git("application/x-git-upload-pack-result", out)
    }

    /// Every version of `repo` as history. Versions whose manifest cannot become a
    /// tree (not a package, too large, unsafe paths) are left out, as a fact of the
    /// manifest; an upstream failure fails the request instead, since leaving a version
    /// out would change the commits above it.
    async fn history(&self, repo: &str) -> Result<History, StoreError> {
        let mut tags: Vec<(semver::Version, String)> = self
            .store
            .tags(repo)
            .await?
            .into_iter()
            .filter_map(|t| t.replace('_', "+").parse().ok().map(|v| (v, t)))
            .collect();
        tags.sort();
        if tags.len() > self.config.max_versions {
            tags.drain(..tags.len() - self.config.max_versions);
        }
        let mut versions = Vec::with_capacity(tags.len());
        // Every version's objects are held while the request is answered: bounded.
        let mut held = 0u64;
        // A few versions at a time: a repository of many versions is read in a fraction
        // of the round trips, without a burst at the upstream.
        let mut read = futures::stream::iter(tags)
            .map(|(version, tag)| async move {
                let r = self.version(repo, &tag).await;
                (version, tag, r)
            })
            .buffered(UPSTREAM_CONCURRENCY);
        while let Some((version, tag, r)) = read.next().await {
            let Some((digest, built)) = r? else { continue };
            match built {
                Built::Tree { tree, created } => {
                    held = held.saturating_add(tree.weight());
                    if held > self.config.max_response_bytes {
                        return Err(StoreError::TooLarge {
                            what: "the repository (all its versions)",
                            limit: self.config.max_response_bytes,
                        });
                    }
                    versions.push(PackageVersion {
                        version,
                        manifest: digest,
                        created,
                        tree,
                    })
                }
                Built::Skipped(why) => {
                    tracing::warn!(repository = repo, tag, reason = %why, "git: version left out")
                }
            }
        }
        history::assemble(repo, versions).map_err(|e| StoreError::Upstream(e.to_string()))
    }

    /// The manifest `tag` points at and what it builds (`None`: the tag is gone).
    async fn version(&self, repo: &str, tag: &str) -> Result<Option<(Digest, Built)>, StoreError> {
        let (digest, manifest) = match self.store.manifest(repo, tag).await {
            Ok(m) => m,
            Err(StoreError::NotFound) => return Ok(None),
            Err(e) => return Err(e),
        };
        if let Some(b) = self.trees.get(&digest) {
            return Ok(Some((digest, b)));
        }
        let b = self.build(repo, &manifest).await?;
        self.trees.insert(digest.clone(), b.clone());
        Ok(Some((digest, b)))
    }

    async fn build(&self, repo: &str, manifest: &[u8]) -> Result<Built, StoreError> {
        let skipped = |why: String| Ok(Built::Skipped(Arc::from(why)));
        let (refs, created) = match package::files(
            manifest,
            self.config.max_package_files,
            self.config.max_package_bytes,
        ) {
            Ok(f) => f,
            Err(e) => return skipped(e.to_string()),
        };
        let mut files = Vec::with_capacity(refs.len());
        for f in refs {
            if let Err(e) = history::check_path(&f.path) {
                return skipped(e.to_string());
            }
            match self.store.blob(repo, &f.digest, f.size).await {
                Ok(b) => files.push((f.path, b)),
                Err(StoreError::NotFound) => return skipped(format!("blob {} missing", f.digest)),
                Err(StoreError::TooLarge { .. }) => {
                    return skipped(format!("blob {} larger than its descriptor says", f.digest))
                }
                Err(e) => return Err(e),
            }
        }
        match history::build_tree(&files) {
            Ok(tree) => Ok(Built::Tree {
                tree: Arc::new(tree),
                created: history::created_seconds(created.as_deref()),
            }),
            Err(e) => skipped(e.to_string()),
        }
    }
}

fn timed_out(repo: &str) -> Reply {
    Reply::text(
        504,
        &format!("margo-proxy: reading {repo} took longer than git.request_timeout"),
    )
}

fn store_error(repo: &str, e: &StoreError) -> Reply {
    match e {
        StoreError::NotFound => {
            Reply::text(404, &format!("margo-proxy: repository {repo} not found"))
        }
        StoreError::NotAnApp(_) => Reply::text(
            404,
            &format!("margo-proxy: {repo} is not a repository of an app route"),
        ),
        StoreError::TooLarge { .. } => {
            Reply::text(413, &format!("margo-proxy: {e} (git.max_response_bytes)"))
        }
        StoreError::Upstream(_) => {
            tracing::warn!(repository = repo, error = %e, "git: upstream failed");
            Reply::text(502, "margo-proxy: the upstream registry failed; try again")
        }
    }
}

/// The request body, gunzipped when git sent it compressed (it does past 1 KiB).
fn inflate(req: &Request<'_>) -> Result<Vec<u8>, Reply> {
    let gzip = req
        .headers
        .get(http::header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().eq_ignore_ascii_case("gzip") || v.trim().eq_ignore_ascii_case("x-gzip"));
    match gzip {
        None => Ok(req.body.to_vec()),
        Some(false) => Err(Reply::text(
            415,
            "margo-proxy: unsupported Content-Encoding",
        )),
        Some(true) => {
            let mut out = Vec::new();
            let mut d = flate2::read::GzDecoder::new(req.body).take(MAX_INFLATED_BYTES + 1);
            d.read_to_end(&mut out)
                .map_err(|_| Reply::text(400, "margo-proxy: bad gzip body"))?;
            if out.len() as u64 > MAX_INFLATED_BYTES {
                return Err(Reply::text(413, "margo-proxy: request too large"));
            }
            Ok(out)
        }
    }
}

#[cfg(test)]
mod tests;
