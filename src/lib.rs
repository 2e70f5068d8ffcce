//! margo-proxy: a Pingora reverse proxy that fronts an OCI registry and adds Margo semantics.
//!
//! Where to look:
//! - [`oci`]: the OCI Distribution vocabulary (paths, names, digests, error bodies);
//! - [`margo`]: the Margo rules: `margo.yaml` model and validator, package and component
//!   manifest rules, Compose archive safety, the offline `validate` command;
//! - [`config`]: the YAML file and its checks;
//! - [`upstream`]: reaching upstream registries, routing names to them, rewriting URLs;
//! - [`policy`]: security teams' Rego policies (regorus), audit or enforce;
//! - [`proxy`]: the Pingora `ProxyHttp` glue that ties it together per request;
//! - [`auth`]: bearer tokens from an external auth service, per-repository access;
//! - [`catalog`]: the application catalog (JSON API, web pages, configuration check);
//! - [`git`]: OCI packages as Git repositories for `git clone` (`/git/`);
//! - [`cache`]: the in-memory manifest cache (moka) that spares the upstream;
//! - [`metrics`]: Prometheus metric families, rendered on the admin listener;
//! - [`admin`]: health, readiness and metrics on their own listener;
//! - [`server`]: turning a config into running Pingora services;
//! - [`shard`]: per-thread counter shards for what every request counts;
//! - [`startup`], [`signals`]: checks before serving, SIGHUP.

pub mod admin;
pub mod appr;
pub mod auth;
pub mod bus;
pub mod cache;
pub mod catalog;
pub mod config;
pub mod downstream;
pub mod express;
pub mod git;
pub mod logging;
pub mod margo;
pub mod metrics;
pub mod oci;
pub mod policy;
pub mod proxy;
pub mod referrers;
pub mod registry_catalog;
pub mod server;
pub mod shard;
pub mod signals;
pub mod staging;
pub mod startup;
pub mod trust;
pub mod upstream;

/// Selects the process-wide rustls crypto provider (ring, the one Pingora uses) so that
/// every TLS client in the process shares a single backend. Idempotent.
pub fn install_crypto_provider() {
    pingora::tls::install_default_crypto_provider();
}
