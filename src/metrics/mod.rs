//! Prometheus metrics for the admin listener's `/metrics`.
//!
//! Every label has a bounded value set: operations, methods and statuses are
//! normalised here; upstream names and admission rule ids come from the
//! config; reasons and results are `&'static str` so only code can add
//! values. Repository names are never labels unless the operator lists them
//! in `metrics.repository_labels`; everything else is counted as `other`.
//!
//! Status is recorded as the exact code for the codes a registry really uses
//! (401 vs 403 vs 404 vs 416 mean very different things to an operator), and
//! as a class (`2xx`...`5xx`) for anything else, so a misbehaving upstream
//! cannot create hundreds of series.

mod blob;
pub mod dashboard;
mod local;

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use prometheus::core::Collector;
use prometheus::local::{LocalHistogram, LocalIntCounter};
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::cache::CacheStats;

/// Prefix of every family, so dashboards and alerts can find them all.
pub const PREFIX: &str = "margo_proxy";

/// OCI operations, as the `operation` label values. Anything else is `other`.
pub const OPERATIONS: [&str; 18] = [
    "ping",
    "catalog",
    "manifest_get",
    "manifest_head",
    "manifest_put",
    "manifest_delete",
    "blob_get",
    "blob_head",
    "blob_delete",
    "upload_start",
    "upload_chunk",
    "upload_complete",
    "upload_status",
    "upload_cancel",
    "tags_list",
    "referrers",
    "token",
    "other",
];

/// From a cache hit (~50 µs) to a large blob streamed over a slow link.
pub const LATENCY_BUCKETS: [f64; 18] = [
    0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0, 60.0,
];

/// More repository label values than this defeats the point of the allow-list.
pub const MAX_REPOSITORY_LABELS: usize = 200;

/// Label value for repositories not in the allow-list.
pub const OTHER: &str = "other";

/// The `metrics:` config section.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Upstream-side repository names that get their own `repository` label
    /// value on `margo_proxy_repository_requests_total`.
    pub repository_labels: Vec<String>,
}

/// Errors building or encoding metrics.
#[derive(Debug, Error)]
pub enum MetricsError {
    /// A family could not be created or registered (duplicate name, bad label).
    #[error("metric registration failed: {0}")]
    Prometheus(#[from] prometheus::Error),
    /// The allow-list is too long to keep cardinality low.
    #[error(
        "metrics.repository_labels has {0} entries; at most {MAX_REPOSITORY_LABELS} are allowed"
    )]
    TooManyRepositoryLabels(usize),
    /// The text encoder produced invalid UTF-8 (cannot happen with valid names).
    #[error("metrics encoding failed: {0}")]
    Utf8(#[from] std::string::FromUtf8Error),
}

/// Type of a metric family, as in the exposition's `# TYPE` line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MetricKind {
    /// Monotonic counter.
    Counter,
    /// Gauge.
    Gauge,
    /// Histogram (`_bucket`, `_sum`, `_count` series).
    Histogram,
    /// Summary (`_sum`, `_count`, quantiles).
    Summary,
    /// Untyped.
    Untyped,
}

impl MetricKind {
    /// The word used in `# TYPE` lines.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Counter => "counter",
            Self::Gauge => "gauge",
            Self::Histogram => "histogram",
            Self::Summary => "summary",
            Self::Untyped => "untyped",
        }
    }

    /// Parses a `# TYPE` word.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "counter" => Self::Counter,
            "gauge" => Self::Gauge,
            "histogram" => Self::Histogram,
            "summary" => Self::Summary,
            "untyped" => Self::Untyped,
            _ => return None,
        })
    }
}

/// What admission made of a manifest push, the `decision` label of
/// `margo_proxy_admission_decisions_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdmissionDecision {
    /// No violation: forwarded.
    Accept,
    /// Violations on an `enforce` route: refused.
    Reject,
    /// Violations on an `audit` route: forwarded and logged.
    Audit,
    /// A known deviation of the reference tooling on a tolerant route: forwarded with a
    /// `Warning` header (counted per deviation rule, beside the push's own decision).
    Warn,
}

impl AdmissionDecision {
    pub const ALL: [AdmissionDecision; 4] = [Self::Accept, Self::Reject, Self::Audit, Self::Warn];

    /// Label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Accept => "accept",
            Self::Reject => "reject",
            Self::Audit => "audit",
            Self::Warn => "warn",
        }
    }
}

/// Every value the code can put in `label` of `family`, for labels with a closed set;
/// `None` for labels whose values come from the config or the traffic (rule ids,
/// upstream names, repositories, reasons) and for labels Prometheus adds. The dashboard
/// test holds every label matcher of every panel to these sets.
pub fn emitted_label_values(family: &str, label: &str) -> Option<Vec<&'static str>> {
    let family = family.strip_prefix(PREFIX)?.strip_prefix('_')?;
    let values: Vec<&'static str> = match (family, label) {
        (_, "operation") => OPERATIONS.to_vec(),
        ("requests_total", "method") => {
            vec![
                "GET", "HEAD", "PUT", "POST", "PATCH", "DELETE", "OPTIONS", "other",
            ]
        }
        ("requests_total", "status") => (100..=599)
            .map(status_label)
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect(),
        ("cache_requests_total", "result") => CACHE_RESULTS.to_vec(),
        ("cache_rejections_total", "reason") => vec!["invalid", "uncacheable"],
        ("cache_evictions_total", "cause") => vec!["size", "expired"],
        ("upstream_errors_total", "kind") => [
            UpstreamErrorKind::Connect,
            UpstreamErrorKind::Timeout,
            UpstreamErrorKind::Tls,
            UpstreamErrorKind::Protocol,
            UpstreamErrorKind::Status5xx,
            UpstreamErrorKind::Other,
        ]
        .iter()
        .map(|k| k.as_str())
        .collect(),
        ("admission_decisions_total", "decision") => {
            AdmissionDecision::ALL.iter().map(|d| d.as_str()).collect()
        }
        ("auth_decisions_total", "result") => vec!["allow", "deny"],
        ("policy_decisions_total", "outcome") => [
            crate::policy::Outcome::Allow,
            crate::policy::Outcome::Warn,
            crate::policy::Outcome::Deny,
        ]
        .iter()
        .map(|o| o.as_str())
        .collect(),
        ("jwks_fetches_total" | "introspection_requests_total", "result") => {
            vec!["success", "error"]
        }
        _ => return None,
    };
    Some(values)
}

/// The `result` values of `margo_proxy_cache_requests_total`.
const CACHE_RESULTS: [&str; 6] = [
    "hit",
    "miss",
    "coalesced",
    "negative_hit",
    "revalidated",
    "stale",
];

/// Kind of upstream failure, the `kind` label of `margo_proxy_upstream_errors_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamErrorKind {
    /// TCP connect failed or was refused.
    Connect,
    /// Connect, read or idle timeout.
    Timeout,
    /// TLS handshake or certificate verification.
    Tls,
    /// Malformed HTTP, reset mid-response.
    Protocol,
    /// The upstream answered 5xx.
    Status5xx,
    /// Anything else.
    Other,
}

impl UpstreamErrorKind {
    /// Label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Connect => "connect",
            Self::Timeout => "timeout",
            Self::Tls => "tls",
            Self::Protocol => "protocol",
            Self::Status5xx => "status_5xx",
            Self::Other => "other",
        }
    }
}

/// The series of one operation (`other` last), created when first used so the
/// exposition shows only what happened.
#[derive(Default)]
struct OperationSeries {
    /// `requests_total` for GET and HEAD answered 200, nearly every request of a pull:
    /// resolved once instead of hashing three labels under the vec's lock per request.
    get_ok: std::sync::OnceLock<prometheus::IntCounter>,
    head_ok: std::sync::OnceLock<prometheus::IntCounter>,
    duration: std::sync::OnceLock<prometheus::Histogram>,
    upstream: std::sync::OnceLock<prometheus::Histogram>,
    received: std::sync::OnceLock<prometheus::IntCounter>,
    sent: std::sync::OnceLock<prometheus::IntCounter>,
    other_repository: std::sync::OnceLock<prometheus::IntCounter>,
}

/// Everything known about one finished request, for [`Metrics::observe_request`].
#[derive(Debug, Clone)]
pub struct RequestRecord<'a> {
    /// One of [`OPERATIONS`]; anything else is counted as `other`.
    pub operation: &'static str,
    /// The client's method.
    pub method: &'a http::Method,
    /// Status sent to the client.
    pub status: u16,
    /// From request start to last byte sent.
    pub duration: Duration,
    /// Time spent waiting on the upstream, if it was contacted.
    pub upstream_duration: Option<Duration>,
    /// Request body bytes read from the client.
    pub bytes_received: u64,
    /// Response body bytes sent to the client.
    pub bytes_sent: u64,
    /// Upstream-side repository, if the request named one.
    pub repository: Option<&'a str>,
}

/// Owns the registry and every metric family of the proxy.
pub struct Metrics {
    registry: Registry,
    families: BTreeMap<String, (String, MetricKind)>,
    repository_allow: HashSet<String>,

    requests: IntCounterVec,
    /// Per-operation series, resolved on first use: `with_label_values` hashes
    /// labels and takes a lock on every call, which showed on cache hits.
    per_operation: Vec<OperationSeries>,
    shards: local::Shards,
    request_duration: HistogramVec,
    upstream_duration: HistogramVec,
    received_bytes: IntCounterVec,
    sent_bytes: IntCounterVec,
    repository_requests: IntCounterVec,

    cache_requests: IntCounterVec,
    cache_rejections: IntCounterVec,
    cache_evictions: IntCounterVec,
    cache_entries: IntGauge,
    cache_bytes: IntGauge,
    cache_sync: Mutex<()>,
    blob: blob::BlobMetrics,
    /// Requests the express lane answered, counted per thread (every one is a hit)
    /// and copied into `express_answers` when scraped.
    express_local: crate::shard::Counter,
    express_answers: IntCounter,
    /// Allowed requests (with a token, anonymous), counted per thread as every pull
    /// with auth on is one, and copied into `auth_decisions_total` when scraped.
    auth_grants: [(crate::shard::Counter, &'static str); 2],

    upstream_errors: IntCounterVec,
    upstream_up: IntGaugeVec,

    admission: IntCounterVec,
    auth: IntCounterVec,
    jwks: IntCounterVec,
    introspection: IntCounterVec,
    policy: IntCounterVec,
    build_info: IntGaugeVec,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics")
            .field("families", &self.families.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

struct Builder {
    registry: Registry,
    families: BTreeMap<String, (String, MetricKind)>,
}

impl Builder {
    fn register<C: Collector + Clone + 'static>(
        &mut self,
        collector: C,
        kind: MetricKind,
    ) -> Result<C, MetricsError> {
        for desc in collector.desc() {
            self.families
                .insert(desc.fq_name.clone(), (desc.help.clone(), kind));
        }
        self.registry.register(Box::new(collector.clone()))?;
        Ok(collector)
    }

    fn counter(
        &mut self,
        name: &str,
        help: &str,
        labels: &[&str],
    ) -> Result<IntCounterVec, MetricsError> {
        let c = IntCounterVec::new(Opts::new(format!("{PREFIX}_{name}"), help), labels)?;
        self.register(c, MetricKind::Counter)
    }

    fn gauge_vec(
        &mut self,
        name: &str,
        help: &str,
        labels: &[&str],
    ) -> Result<IntGaugeVec, MetricsError> {
        let g = IntGaugeVec::new(Opts::new(format!("{PREFIX}_{name}"), help), labels)?;
        self.register(g, MetricKind::Gauge)
    }

    fn gauge(&mut self, name: &str, help: &str) -> Result<IntGauge, MetricsError> {
        let g = IntGauge::with_opts(Opts::new(format!("{PREFIX}_{name}"), help))?;
        self.register(g, MetricKind::Gauge)
    }

    fn histogram(
        &mut self,
        name: &str,
        help: &str,
        labels: &[&str],
    ) -> Result<HistogramVec, MetricsError> {
        let opts =
            HistogramOpts::new(format!("{PREFIX}_{name}"), help).buckets(LATENCY_BUCKETS.to_vec());
        let h = HistogramVec::new(opts, labels)?;
        self.register(h, MetricKind::Histogram)
    }
}

impl Metrics {
    /// Builds the registry with every family, zero-valued series for the
    /// label values known in advance (so dashboards show 0 rather than "no
    /// data"), and `build_info`.
    pub fn new(config: &MetricsConfig) -> Result<Self, MetricsError> {
        if config.repository_labels.len() > MAX_REPOSITORY_LABELS {
            return Err(MetricsError::TooManyRepositoryLabels(
                config.repository_labels.len(),
            ));
        }
        let mut b = Builder {
            registry: Registry::new(),
            families: BTreeMap::new(),
        };
        let op = &["operation"];
        let m = Self {
            requests: b.counter(
                "requests_total",
                "Requests answered, by OCI operation, method and status (code for common codes, class otherwise).",
                &["operation", "method", "status"],
            )?,
            request_duration: b.histogram(
                "request_duration_seconds",
                "Time from request start to the last byte sent to the client.",
                op,
            )?,
            upstream_duration: b.histogram(
                "upstream_request_duration_seconds",
                "Time spent on the upstream request, for requests that reached the upstream.",
                op,
            )?,
            received_bytes: b.counter(
                "received_bytes_total",
                "Request body bytes read from clients.",
                op,
            )?,
            sent_bytes: b.counter("sent_bytes_total", "Response body bytes sent to clients.", op)?,
            repository_requests: b.counter(
                "repository_requests_total",
                "Requests by repository (allow-listed names, others as \"other\") and operation.",
                &["repository", "operation"],
            )?,
            cache_requests: b.counter(
                "cache_requests_total",
                "Manifest cache lookups by result: hit, miss, coalesced, negative_hit, revalidated, stale.",
                &["result"],
            )?,
            cache_rejections: b.counter(
                "cache_rejections_total",
                "Upstream manifests not cached: invalid (digest mismatch, no content type; not served) or uncacheable (served once).",
                &["reason"],
            )?,
            cache_evictions: b.counter(
                "cache_evictions_total",
                "Manifest cache entries removed by the cache itself: size (over budget) or expired.",
                &["cause"],
            )?,
            cache_entries: b.gauge("cache_entries", "Entries in the manifest cache.")?,
            cache_bytes: b.gauge(
                "cache_weighted_bytes",
                "Bytes held by the manifest cache, as weighed for its budget.",
            )?,
            cache_sync: Mutex::new(()),
            blob: blob::BlobMetrics::new(&mut b)?,
            express_local: crate::shard::Counter::default(),
            auth_grants: [
                (crate::shard::Counter::default(), "token"),
                (crate::shard::Counter::default(), "anonymous"),
            ],
            express_answers: b
                .counter(
                    "express_answers_total",
                    "Warm-cache pulls answered by the express lane, at the connection before Pingora's proxy (also counted in requests_total).",
                    &[],
                )?
                .with_label_values::<&str>(&[]),
            upstream_errors: b.counter(
                "upstream_errors_total",
                "Failed upstream requests by upstream (config name) and kind.",
                &["upstream", "kind"],
            )?,
            upstream_up: b.gauge_vec(
                "upstream_up",
                "1 if the upstream's last health check succeeded, else 0.",
                &["upstream"],
            )?,
            admission: b.counter(
                "admission_decisions_total",
                "Admission rule decisions by rule id and decision.",
                &["rule", "decision"],
            )?,
            auth: b.counter(
                "auth_decisions_total",
                "Client authentication/authorization decisions by result and reason.",
                &["result", "reason"],
            )?,
            jwks: b.counter("jwks_fetches_total", "JWKS fetches by result.", &["result"])?,
            introspection: b.counter(
                "introspection_requests_total",
                "Token introspection calls by result.",
                &["result"],
            )?,
            policy: b.counter(
                "policy_decisions_total",
                "Policy evaluation outcomes.",
                &["outcome"],
            )?,
            build_info: b.gauge_vec(
                "build_info",
                "Always 1; labels carry the version and git commit of the running binary.",
                &["version", "git_sha"],
            )?,
            per_operation: (0..=OPERATIONS.len())
                .map(|_| OperationSeries::default())
                .collect(),
            shards: local::Shards::new(OPERATIONS.len() + 1),
            registry: b.registry,
            families: b.families,
            repository_allow: config.repository_labels.iter().cloned().collect(),
        };
        for op in OPERATIONS {
            m.request_duration.with_label_values(&[op]);
            m.upstream_duration.with_label_values(&[op]);
        }
        for result in CACHE_RESULTS {
            m.cache_requests.with_label_values(&[result]);
        }
        for reason in ["invalid", "uncacheable"] {
            m.cache_rejections.with_label_values(&[reason]);
        }
        for cause in ["size", "expired"] {
            m.cache_evictions.with_label_values(&[cause]);
        }
        m.build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION"), env!("MARGO_PROXY_GIT_SHA")])
            .set(1);
        Ok(m)
    }

    /// The underlying registry, for adding process metrics or tests.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Every registered family name with its type, including families that
    /// have no series yet.
    pub fn registered_families(&self) -> BTreeMap<String, MetricKind> {
        self.families
            .iter()
            .map(|(name, (_, kind))| (name.clone(), *kind))
            .collect()
    }

    /// Label value for a repository: itself if allow-listed, else `other`.
    pub fn repository_label<'a>(&self, repository: &'a str) -> &'a str {
        if self.repository_allow.contains(repository) {
            repository
        } else {
            OTHER
        }
    }

    /// Records one finished request. The series every request touches are
    /// counted in this thread's shard (see [`local`]); rarer ones directly.
    pub fn observe_request(&self, r: &RequestRecord<'_>) {
        let op = normalize_operation(r.operation);
        let method = normalize_method(r.method);
        let index = OPERATIONS
            .iter()
            .position(|o| *o == op)
            .unwrap_or(OPERATIONS.len());
        let Some(series) = self.per_operation.get(index) else {
            return;
        };
        let listed_repository = r
            .repository
            .filter(|_| !self.repository_allow.is_empty())
            .map(|repo| self.repository_label(repo))
            .filter(|label| *label != OTHER);
        let mut shard = self.shards.mine();
        let Some(local) = shard.get_mut(index) else {
            return;
        };
        let counter = |slot: &mut Option<LocalIntCounter>,
                       shared: &OnceLock<IntCounter>,
                       make: &dyn Fn() -> IntCounter| {
            slot.get_or_insert_with(|| shared.get_or_init(make).local())
                .inc_by(1);
        };
        match (r.status, method) {
            (200, "GET") => counter(&mut local.get_ok, &series.get_ok, &|| {
                self.requests.with_label_values(&[op, "GET", "200"])
            }),
            (200, "HEAD") => counter(&mut local.head_ok, &series.head_ok, &|| {
                self.requests.with_label_values(&[op, "HEAD", "200"])
            }),
            _ => self
                .requests
                .with_label_values(&[op, method, status_label(r.status)])
                .inc(),
        }
        let histogram = |slot: &mut Option<LocalHistogram>,
                         shared: &OnceLock<Histogram>,
                         vec: &HistogramVec,
                         value: Duration| {
            slot.get_or_insert_with(|| shared.get_or_init(|| vec.with_label_values(&[op])).local())
                .observe(value.as_secs_f64());
        };
        histogram(
            &mut local.duration,
            &series.duration,
            &self.request_duration,
            r.duration,
        );
        if let Some(up) = r.upstream_duration {
            histogram(
                &mut local.upstream,
                &series.upstream,
                &self.upstream_duration,
                up,
            );
        }
        let bytes = |slot: &mut Option<LocalIntCounter>,
                     shared: &OnceLock<IntCounter>,
                     vec: &IntCounterVec,
                     n: u64| {
            if n > 0 {
                slot.get_or_insert_with(|| {
                    shared.get_or_init(|| vec.with_label_values(&[op])).local()
                })
                .inc_by(n);
            }
        };
        bytes(
            &mut local.received,
            &series.received,
            &self.received_bytes,
            r.bytes_received,
        );
        bytes(
            &mut local.sent,
            &series.sent,
            &self.sent_bytes,
            r.bytes_sent,
        );
        match listed_repository {
            Some(repo) => self
                .repository_requests
                .with_label_values(&[repo, op])
                .inc(),
            None => counter(
                &mut local.other_repository,
                &series.other_repository,
                &|| self.repository_requests.with_label_values(&[OTHER, op]),
            ),
        }
    }

    /// Records a failed upstream request.
    pub fn upstream_error(&self, upstream: &str, kind: UpstreamErrorKind) {
        self.upstream_errors
            .with_label_values(&[upstream, kind.as_str()])
            .inc();
    }

    /// Sets an upstream's health from the readiness checker.
    pub fn set_upstream_up(&self, upstream: &str, up: bool) {
        self.upstream_up
            .with_label_values(&[upstream])
            .set(i64::from(up));
    }

    /// Records an admission rule decision (`rule` is a rule id, `none` for a clean push).
    pub fn admission_decision(&self, rule: &str, decision: AdmissionDecision) {
        self.admission
            .with_label_values(&[rule, decision.as_str()])
            .inc();
    }

    /// Records a refusal (`reason` e.g. `no_token`, `expired`, `scope`).
    pub fn auth_denied(&self, reason: &'static str) {
        self.auth.with_label_values(&["deny", reason]).inc();
    }

    /// Records an allowed request: `anonymous`, or with a token.
    pub fn auth_granted(&self, anonymous: bool) {
        self.auth_grants[usize::from(anonymous)].0.bump();
    }

    /// Records a JWKS fetch (`success`, `error`...).
    pub fn jwks_fetch(&self, result: &'static str) {
        self.jwks.with_label_values(&[result]).inc();
    }

    /// Records a token introspection call (`active`, `inactive`, `error`...).
    pub fn introspection(&self, result: &'static str) {
        self.introspection.with_label_values(&[result]).inc();
    }

    /// Records a policy outcome (`allow`, `deny`, `error`...).
    pub fn policy_decision(&self, outcome: &'static str) {
        self.policy.with_label_values(&[outcome]).inc();
    }

    /// Copies the cache's counters into the Prometheus families. Call before
    /// encoding; counters advance by the difference since the last sync, so
    /// they stay monotonic even if called from several scrapes at once.
    pub fn sync_cache(&self, stats: &CacheStats) {
        // A poisoned lock only means another sync panicked mid-way; the
        // counters are still consistent enough to continue.
        let _guard = self.cache_sync.lock().unwrap_or_else(|p| p.into_inner());
        let advance = |c: IntCounter, total: u64| c.inc_by(total.saturating_sub(c.get()));
        for (result, total) in [
            ("hit", stats.hits),
            ("miss", stats.misses),
            ("coalesced", stats.coalesced),
            ("negative_hit", stats.negative_hits),
            ("revalidated", stats.revalidations),
            ("stale", stats.stale_serves),
        ] {
            advance(self.cache_requests.with_label_values(&[result]), total);
        }
        advance(
            self.cache_rejections.with_label_values(&["invalid"]),
            stats.rejections,
        );
        advance(
            self.cache_rejections.with_label_values(&["uncacheable"]),
            stats.uncacheable,
        );
        advance(
            self.cache_evictions.with_label_values(&["size"]),
            stats.evictions,
        );
        advance(
            self.cache_evictions.with_label_values(&["expired"]),
            stats.expirations,
        );
        self.cache_entries
            .set(i64::try_from(stats.entries).unwrap_or(i64::MAX));
        self.cache_bytes
            .set(i64::try_from(stats.weighted_bytes).unwrap_or(i64::MAX));
    }

    /// Copies the blob cache's counters in (same monotonic scheme as the manifest cache's).
    pub fn sync_blobs(&self, stats: &crate::cache::blob::BlobStats) {
        let _guard = self.cache_sync.lock().unwrap_or_else(|p| p.into_inner());
        self.blob.sync(stats);
    }

    /// Copies the authenticator's counters in (same monotonic scheme as the cache's).
    pub fn sync_auth(&self, c: &crate::auth::metrics::CounterSnapshot) {
        let _guard = self.cache_sync.lock().unwrap_or_else(|p| p.into_inner());
        let advance = |c: IntCounter, total: u64| c.inc_by(total.saturating_sub(c.get()));
        advance(
            self.jwks.with_label_values(&["success"]),
            c.jwks_fetches.saturating_sub(c.jwks_fetch_errors),
        );
        advance(self.jwks.with_label_values(&["error"]), c.jwks_fetch_errors);
        advance(
            self.introspection.with_label_values(&["success"]),
            c.introspection_calls.saturating_sub(c.introspection_errors),
        );
        advance(
            self.introspection.with_label_values(&["error"]),
            c.introspection_errors,
        );
    }

    /// Counts one answer of the express lane (`crate::express`).
    pub fn express_answer(&self) {
        self.express_local.bump();
    }

    /// Text exposition (format 0.0.4) for `/metrics`. Families without any
    /// series yet still get their `# HELP`/`# TYPE` lines, so a scraper (and
    /// the dashboard check) sees every family from the first scrape.
    pub fn encode(&self) -> Result<String, MetricsError> {
        self.shards.flush();
        {
            let _guard = self.cache_sync.lock().unwrap_or_else(|p| p.into_inner());
            let advance = |c: &IntCounter, total: u64| c.inc_by(total.saturating_sub(c.get()));
            advance(&self.express_answers, self.express_local.get());
            for (count, reason) in &self.auth_grants {
                if count.get() > 0 {
                    advance(
                        &self.auth.with_label_values(&["allow", reason]),
                        count.get(),
                    );
                }
            }
        }
        let gathered = self.registry.gather();
        let mut buf = Vec::with_capacity(16 * 1024);
        TextEncoder::new().encode(&gathered, &mut buf)?;
        let mut text = String::from_utf8(buf)?;
        let present: BTreeSet<&str> = gathered.iter().map(|mf| mf.name()).collect();
        for (name, (help, kind)) in &self.families {
            if !present.contains(name.as_str()) {
                text.push_str(&format!(
                    "# HELP {name} {}\n# TYPE {name} {}\n",
                    escape_help(help),
                    kind.as_str()
                ));
            }
        }
        Ok(text)
    }

    /// Content type of [`Self::encode`]'s output.
    pub fn content_type(&self) -> &'static str {
        prometheus::TEXT_FORMAT
    }
}

fn escape_help(help: &str) -> String {
    help.replace('\\', "\\\\").replace('\n', "\\n")
}

/// Maps any operation string to one of [`OPERATIONS`].
pub fn normalize_operation(op: &'static str) -> &'static str {
    if OPERATIONS.contains(&op) {
        op
    } else {
        "other"
    }
}

/// Methods a registry sees keep their name; anything else is `other`.
pub fn normalize_method(method: &http::Method) -> &'static str {
    match *method {
        http::Method::GET => "GET",
        http::Method::HEAD => "HEAD",
        http::Method::PUT => "PUT",
        http::Method::POST => "POST",
        http::Method::PATCH => "PATCH",
        http::Method::DELETE => "DELETE",
        http::Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// The `status` label: the code if common for a registry, else its class.
pub fn status_label(status: u16) -> &'static str {
    match status {
        200 => "200",
        201 => "201",
        202 => "202",
        204 => "204",
        206 => "206",
        301 => "301",
        302 => "302",
        304 => "304",
        307 => "307",
        308 => "308",
        400 => "400",
        401 => "401",
        403 => "403",
        404 => "404",
        405 => "405",
        409 => "409",
        413 => "413",
        416 => "416",
        429 => "429",
        500 => "500",
        502 => "502",
        503 => "503",
        _ => match status / 100 {
            1 => "1xx",
            2 => "2xx",
            3 => "3xx",
            4 => "4xx",
            5 => "5xx",
            _ => "invalid",
        },
    }
}

#[cfg(test)]
mod tests;
