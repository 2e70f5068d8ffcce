//! `registry_catalog:` in the config file: how `/v2/_catalog` is merged from every
//! upstream.

use std::time::Duration;

use serde::Deserialize;

/// Bounds and caching of the merged `_catalog`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RegistryCatalogConfig {
    /// How long a merged listing is reused (`0s`: every request reads the upstreams).
    /// Short: a few seconds keep a client walking the pages from reading every upstream
    /// once per page, yet a push shows up almost at once.
    #[serde(with = "crate::config::duration")]
    pub cache_ttl: Duration,
    /// Repositories per answer when the client gives no `n` (distribution's default).
    pub page_size: usize,
    /// `n` asked of each upstream while following its own pages.
    pub upstream_page_size: usize,
    /// Most repositories read from one upstream; more is that upstream's failure
    /// (reported, never a silent cut).
    pub max_repositories: usize,
    /// The whole listing of every upstream, all pages and tokens included.
    #[serde(with = "crate::config::duration")]
    pub timeout: Duration,
}

impl Default for RegistryCatalogConfig {
    fn default() -> Self {
        Self {
            cache_ttl: Duration::from_secs(5),
            page_size: 100,
            upstream_page_size: 1000,
            max_repositories: 100_000,
            timeout: Duration::from_secs(10),
        }
    }
}
