//! Prometheus families of the Git upstreams, registered with the proxy's registry.

use prometheus::{IntCounterVec, IntGaugeVec, Opts};

use super::snapshot::Refusal;

#[derive(Clone)]
pub struct GitMetrics {
    fetches: IntCounterVec,
    refusals: IntCounterVec,
    versions: IntGaugeVec,
}

impl GitMetrics {
    pub fn new(registry: &prometheus::Registry) -> Result<Self, prometheus::Error> {
        let fetches = IntCounterVec::new(
            Opts::new(
                "margo_proxy_git_fetches_total",
                "Refreshes of Git upstreams (fetch and read), by result",
            ),
            &["upstream", "result"],
        )?;
        let refusals = IntCounterVec::new(
            Opts::new(
                "margo_proxy_git_refused_versions_total",
                "Git tags not served, by reason (counted once per tag and reason)",
            ),
            &["upstream", "reason"],
        )?;
        let versions = IntGaugeVec::new(
            Opts::new(
                "margo_proxy_git_versions",
                "Versions of Git upstreams in the current snapshot, served or refused",
            ),
            &["upstream", "state"],
        )?;
        // Registering twice (tests building several states in one process) keeps the
        // first registration.
        for c in [
            Box::new(fetches.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(refusals.clone()),
            Box::new(versions.clone()),
        ] {
            let _ = registry.register(c);
        }
        Ok(Self {
            fetches,
            refusals,
            versions,
        })
    }

    pub fn fetch(&self, upstream: &str, result: &str) {
        self.fetches.with_label_values(&[upstream, result]).inc();
    }

    pub fn refused(&self, upstream: &str, r: &Refusal) {
        self.refusals.with_label_values(&[upstream, r.code]).inc();
    }

    pub fn versions(&self, upstream: &str, served: usize, refused: usize) {
        self.versions
            .with_label_values(&[upstream, "served"])
            .set(served as i64);
        self.versions
            .with_label_values(&[upstream, "refused"])
            .set(refused as i64);
    }
}
