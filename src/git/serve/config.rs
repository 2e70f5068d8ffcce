//! `git:` in the config file: the Git endpoint under `/git/`.

use std::time::Duration;

use serde::Deserialize;

/// Where `git clone http(s)://<proxy>/git/<repository>.git` is answered, and its limits.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GitServeConfig {
    /// Off by default: an operator opts into a second way of reading packages.
    pub enabled: bool,
    /// Largest package (the sum of its layer sizes, as its manifest declares them): a
    /// bigger version is left out of the repository and logged.
    #[serde(with = "crate::config::size")]
    pub max_package_bytes: u64,
    /// Most layers (files) in one package.
    pub max_package_files: usize,
    /// Most versions (SemVer tags) one repository shows; beyond it the highest are kept.
    pub max_versions: usize,
    /// Largest answer (the objects of one pack, uncompressed): a bigger fetch is refused
    /// with a Git `ERR` line saying so (a shallow clone needs less).
    #[serde(with = "crate::config::size")]
    pub max_response_bytes: u64,
    /// Longest time one request may take reading the upstream and building its answer.
    #[serde(with = "crate::config::duration")]
    pub request_timeout: Duration,
    /// Bytes of built package trees kept in memory (by manifest digest), so a fetch
    /// reads the upstream's manifests and tags only.
    #[serde(with = "crate::config::size")]
    pub cache_bytes: u64,
}

impl Default for GitServeConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            max_package_bytes: 64 << 20,
            max_package_files: 256,
            max_versions: 1000,
            max_response_bytes: 256 << 20,
            request_timeout: Duration::from_secs(60),
            cache_bytes: 64 << 20,
        }
    }
}
