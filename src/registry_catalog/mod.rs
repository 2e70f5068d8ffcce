//! `GET /v2/_catalog` over every upstream: each routed upstream's own `_catalog` is read
//! (all its pages, through the one registry client with that upstream's credentials),
//! mapped into the client's namespace by the routes' rewrites, merged and paginated by
//! the proxy itself. A distribution-style `n`/`last` walk therefore sees one registry.
//!
//! Why the proxy paginates: each upstream's `last` is in its own namespace and its own
//! order (a rewrite changes prefixes, so sort orders differ); only the merged list has
//! one order a client's `last` can point into.
//!
//! The merged list is cached for `cache_ttl` (single-flight: concurrent misses wait for
//! one read), per upstream credentials: when a client's own `Authorization` goes to
//! some upstream, the listing is kept under a hash of that header, never shared.
//! Authorization filters each answer, not the cache: a caller sees the names it may pull.
//!
//! An upstream that fails (down, slow, refusing, answering garbage or too many names)
//! leaves the others' names answered, with a `Warning: 299` header naming it, a warning
//! log line and `margo_proxy_registry_catalog_upstream_failures_total{upstream}`; when
//! every upstream fails the answer is the OCI error of that failure (one upstream) or
//! `502 UNAVAILABLE` naming each (several; `504` if all of them timed out).

pub mod config;
pub mod merge;
pub mod page;
pub mod tags;

use http::HeaderValue;
use prometheus::{IntCounterVec, Opts};
use sha2::{Digest as _, Sha256};
use std::sync::Arc;

pub use config::RegistryCatalogConfig;
use page::{PageError, PageRequest};

use crate::oci::{OciError, OciErrorCode};
use crate::upstream::registry::{Caller, RegistryError, DEFAULT_MAX_BODY};
use crate::upstream::routing::Router;
use crate::upstream::Upstream;

/// Bytes a repository name may take in an upstream's page, JSON quoting included.
const BYTES_PER_NAME: u64 = 300;

/// Whose view of the upstreams a listing is: the proxy's accounts (shared by every
/// caller), or a client's own credentials where those go upstream.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ListingKey(Option<[u8; 32]>);

impl ListingKey {
    /// Every upstream is read with the proxy's account, or anonymously.
    pub fn shared() -> Self {
        ListingKey(None)
    }

    /// Some upstream is read with this client `Authorization` (kept as a hash only).
    pub fn client(authorization: &HeaderValue) -> Self {
        ListingKey(Some(Sha256::digest(authorization.as_bytes()).into()))
    }
}

/// One upstream to list, and on whose behalf.
pub struct Source<'a> {
    /// Index in the proxy's upstream list (what routes name).
    pub index: usize,
    pub upstream: &'a Upstream,
    pub caller: Caller<'a>,
    /// A Git upstream is listed from its mirror, not over HTTP.
    pub mirror: Option<&'a crate::git::source::Mirror>,
}

/// An upstream that could not be listed.
#[derive(Debug)]
pub struct Failure {
    pub upstream: String,
    pub error: RegistryError,
}

/// The merged names (sorted client names) and the upstreams missing from them.
#[derive(Debug)]
pub struct Listing {
    pub names: Vec<String>,
    pub failures: Vec<Failure>,
}

/// What the client gets.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(http::HeaderName, String)>,
    pub body: Vec<u8>,
}

impl Answer {
    pub fn error(e: &OciError) -> Self {
        Answer {
            status: e.status,
            headers: vec![(http::header::CONTENT_TYPE, "application/json".into())],
            body: e.body(),
        }
    }
}

/// The merged `_catalog`, shared by every request.
pub struct RegistryCatalog {
    config: RegistryCatalogConfig,
    /// `None` with `cache_ttl: 0s`.
    listings: Option<moka::future::Cache<ListingKey, Arc<Listing>>>,
    failures: IntCounterVec,
}

impl RegistryCatalog {
    pub fn new(
        config: &RegistryCatalogConfig,
        registry: &prometheus::Registry,
    ) -> Result<Self, String> {
        for (key, value) in [
            ("page_size", config.page_size),
            ("upstream_page_size", config.upstream_page_size),
            ("max_repositories", config.max_repositories),
        ] {
            if value == 0 {
                return Err(format!("registry_catalog.{key} must be at least 1"));
            }
        }
        if config.timeout.is_zero() {
            return Err("registry_catalog.timeout must be longer than 0s".into());
        }
        let failures = IntCounterVec::new(
            Opts::new(
                format!(
                    "{}_registry_catalog_upstream_failures_total",
                    crate::metrics::PREFIX
                ),
                "Upstreams missing from a merged /v2/_catalog (down, refusing, too large)",
            ),
            &["upstream"],
        )
        .map_err(|e| e.to_string())?;
        // A registry already holding the family (a second service in tests) is fine.
        let _ = registry.register(Box::new(failures.clone()));
        let listings = (!config.cache_ttl.is_zero()).then(|| {
            moka::future::Cache::builder()
                .max_capacity(1024)
                .time_to_live(config.cache_ttl)
                .build()
        });
        Ok(RegistryCatalog {
            config: config.clone(),
            listings,
            failures,
        })
    }

    /// `n` when a client gives none.
    pub fn page_size(&self) -> usize {
        self.config.page_size
    }

    /// Answers one `_catalog` request: `query` is the client's, `visible` says which
    /// client names the caller may see.
    pub async fn answer(
        &self,
        key: ListingKey,
        sources: &[Source<'_>],
        router: &Router,
        query: Option<&str>,
        visible: impl Fn(&str) -> bool,
    ) -> Answer {
        let req = match PageRequest::parse(query, self.config.page_size) {
            Ok(r) => r,
            Err(e @ (PageError::BadN(_) | PageError::LastTooLong)) => {
                return Answer::error(&e.to_oci())
            }
        };
        let listing = match self.listing(key, sources, router).await {
            Ok(l) => l,
            Err(e) => return Answer::error(&e),
        };
        let p = page::page(&listing.names, &req, "/v2/_catalog", visible);
        let mut headers = vec![(http::header::CONTENT_TYPE, "application/json".to_owned())];
        if let Some(link) = p.link.clone() {
            headers.push((http::header::LINK, link));
        }
        for f in &listing.failures {
            headers.push((http::header::WARNING, warning(f)));
        }
        Answer {
            status: 200,
            headers,
            body: p.catalog_body(),
        }
    }

    /// The merged listing, from the cache or read now (one read for concurrent misses).
    /// A listing where every upstream failed is not kept.
    async fn listing(
        &self,
        key: ListingKey,
        sources: &[Source<'_>],
        router: &Router,
    ) -> Result<Arc<Listing>, OciError> {
        let read = async {
            let l = self.read(sources, router).await;
            match all_failed(&l, sources.len()) {
                Some(e) => Err(e),
                None => Ok(Arc::new(l)),
            }
        };
        match &self.listings {
            Some(cache) => cache
                .try_get_with(key, read)
                .await
                .map_err(|e| (*e).clone()),
            None => read.await,
        }
    }

    /// Every source listed concurrently, the whole under `timeout`.
    async fn read(&self, sources: &[Source<'_>], router: &Router) -> Listing {
        let lists = futures::future::join_all(sources.iter().map(|s| async move {
            let started = tokio::time::Instant::now();
            let r = tokio::time::timeout(self.config.timeout, self.list_one(s, started)).await;
            let r = r.unwrap_or_else(|_| {
                Err(RegistryError::Timeout {
                    upstream: s.upstream.name.clone(),
                    after: self.config.timeout,
                })
            });
            (s, r)
        }))
        .await;
        let mut failures = Vec::new();
        let mut ok = Vec::new();
        for (s, r) in lists {
            match r {
                Ok(names) => ok.push((s.index, names)),
                Err(error) => {
                    tracing::warn!(upstream = %s.upstream.name, %error,
                        "_catalog: upstream left out of the merged listing");
                    self.failures
                        .with_label_values(&[s.upstream.name.as_str()])
                        .inc();
                    failures.push(Failure {
                        upstream: s.upstream.name.clone(),
                        error,
                    });
                }
            }
        }
        let names = merge::merge(ok.iter().map(|(i, n)| (*i, n.as_slice())), |u, n| {
            router.client_name(u, n)
        });
        Listing { names, failures }
    }

    /// One upstream's whole `_catalog`, following its own pages, at most
    /// `max_repositories` names: more is [`RegistryError::TooLarge`].
    async fn list_one(
        &self,
        s: &Source<'_>,
        started: tokio::time::Instant,
    ) -> Result<Vec<String>, RegistryError> {
        let c = &self.config;
        if let Some(mirror) = s.mirror {
            return Ok(mirror.repositories());
        }
        let page_size = c.upstream_page_size.max(1);
        let max_body = DEFAULT_MAX_BODY.max(page_size as u64 * BYTES_PER_NAME);
        let too_large = || RegistryError::TooLarge {
            upstream: s.upstream.name.clone(),
            limit: c.max_repositories as u64,
        };
        let mut path = format!("/v2/_catalog?n={page_size}");
        let mut names = Vec::new();
        // An upstream giving fewer names per page than asked still ends within the bound.
        for _ in 0..=c.max_repositories / page_size + 1 {
            let left = c.timeout.saturating_sub(started.elapsed());
            if left.is_zero() {
                return Err(RegistryError::Timeout {
                    upstream: s.upstream.name.clone(),
                    after: c.timeout,
                });
            }
            let (page, next) = s
                .upstream
                .registry()
                .catalog_page(&s.caller, &path, max_body, left)
                .await?;
            let empty = page.is_empty();
            names.extend(page);
            if names.len() > c.max_repositories {
                return Err(too_large());
            }
            match next {
                Some(next) if !empty && merge::follows(&path, &next) => path = next,
                _ => return Ok(names),
            }
        }
        Err(too_large())
    }
}

/// The error when no upstream could be listed; `None` when some could (or none is routed).
fn all_failed(l: &Listing, sources: usize) -> Option<OciError> {
    if sources == 0 || l.failures.len() < sources {
        return None;
    }
    if let [only] = l.failures.as_slice() {
        return Some(only.error.to_oci());
    }
    let message = l
        .failures
        .iter()
        .map(|f| f.error.to_string())
        .collect::<Vec<_>>()
        .join("; ");
    let status = if l.failures.iter().all(|f| f.error.is_timeout()) {
        504
    } else {
        502
    };
    Some(
        OciError::new(
            OciErrorCode::Unavailable,
            format!("no upstream could list its repositories: {message}"),
        )
        .with_status(status),
    )
}

/// `299 margo-proxy "…"` (RFC 7234 §5.5): the listing lacks this upstream's names.
fn warning(f: &Failure) -> String {
    let text: String = format!(
        "catalog incomplete: upstream `{}` left out: {}",
        f.upstream, f.error
    )
    .chars()
    .map(|c| match c {
        '"' | '\\' => '\'',
        c if c.is_ascii_graphic() || c == ' ' => c,
        _ => '?',
    })
    .take(300)
    .collect();
    format!("299 margo-proxy \"{text}\"")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn failure(upstream: &str, timeout: bool) -> Failure {
        Failure {
            upstream: upstream.into(),
            error: if timeout {
                RegistryError::Timeout {
                    upstream: upstream.into(),
                    after: Duration::from_secs(1),
                }
            } else {
                RegistryError::Unreachable {
                    upstream: upstream.into(),
                    message: "connection refused \"x\"\n".into(),
                }
            },
        }
    }

    #[test]
    fn partial_listings_are_answered_and_total_failures_are_errors() {
        let l = |failures| Listing {
            names: vec![],
            failures,
        };
        assert!(all_failed(&l(vec![failure("a", false)]), 2).is_none());
        assert!(all_failed(&l(vec![]), 0).is_none());
        let one = all_failed(&l(vec![failure("a", true)]), 1).unwrap();
        assert_eq!(
            (one.status, one.code()),
            (504, Some(OciErrorCode::Unavailable))
        );
        let two = all_failed(&l(vec![failure("a", true), failure("b", false)]), 2).unwrap();
        assert_eq!(two.status, 502);
        let msg = &two.errors[0].message;
        assert!(msg.contains("`a`") && msg.contains("`b`"), "{msg}");
        let slow = all_failed(&l(vec![failure("a", true), failure("b", true)]), 2).unwrap();
        assert_eq!(slow.status, 504);
    }

    #[test]
    fn unusable_bounds_are_refused() {
        let registry = prometheus::Registry::new();
        assert!(RegistryCatalog::new(&RegistryCatalogConfig::default(), &registry).is_ok());
        let zero = RegistryCatalogConfig {
            page_size: 0,
            ..RegistryCatalogConfig::default()
        };
        let e = RegistryCatalog::new(&zero, &registry)
            .err()
            .unwrap_or_default();
        assert!(e.contains("registry_catalog.page_size"), "{e}");
        let instant = RegistryCatalogConfig {
            timeout: std::time::Duration::ZERO,
            ..RegistryCatalogConfig::default()
        };
        assert!(RegistryCatalog::new(&instant, &registry).is_err());
    }

    #[test]
    fn warnings_are_header_safe() {
        let w = warning(&failure("b", false));
        assert!(
            w.starts_with("299 margo-proxy \"catalog incomplete: upstream `b`"),
            "{w}"
        );
        assert!(HeaderValue::from_str(&w).is_ok(), "{w}");
        assert_eq!(w.matches('"').count(), 2, "{w}");
    }

    #[test]
    fn keys_separate_credentials_and_never_hold_them() {
        let a = ListingKey::client(&HeaderValue::from_static("Basic YTpi"));
        let b = ListingKey::client(&HeaderValue::from_static("Basic YzpkCg"));
        assert_ne!(a, b);
        assert_ne!(a, ListingKey::shared());
        assert!(!format!("{a:?}").contains("YTpi"));
    }
}
