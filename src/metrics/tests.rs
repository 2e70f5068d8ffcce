//! Tests of the metrics registry and its agreement with the dashboard.

use std::time::Duration;

use super::dashboard::{dashboard_series, missing_from_exposition, missing_series};
use super::*;

const DASHBOARD: &str = include_str!("../../grafana/dashboard.json");

fn metrics() -> Metrics {
    Metrics::new(&MetricsConfig {
        repository_labels: vec!["apps/web".to_owned()],
    })
    .expect("metrics build")
}

#[test]
fn every_dashboard_metric_is_registered() {
    let m = metrics();
    let series = dashboard_series(DASHBOARD).expect("dashboard parses");
    assert!(series.len() >= 15, "suspiciously few series: {series:?}");
    let missing = missing_series(DASHBOARD, &m.registered_families()).expect("dashboard parses");
    assert!(
        missing.is_empty(),
        "dashboard queries unregistered metrics: {missing:?}"
    );
}

#[test]
fn every_dashboard_metric_is_in_the_first_scrape() {
    // What the integration test does against the running proxy, here against
    // a fresh registry: families with no series yet must still be declared.
    let text = metrics().encode().expect("encodes");
    let missing = missing_from_exposition(DASHBOARD, &text).expect("dashboard parses");
    assert!(missing.is_empty(), "not in /metrics: {missing:?}");
}

#[test]
fn every_registered_family_is_on_the_dashboard() {
    // Not a hard requirement in general, but today every family has a panel;
    // a new family without one is probably an oversight.
    let m = metrics();
    let queried: std::collections::BTreeSet<String> = dashboard_series(DASHBOARD)
        .expect("dashboard parses")
        .iter()
        .filter_map(|s| dashboard::resolve_family(s, &m.registered_families()).map(str::to_owned))
        .collect();
    let unused: Vec<_> = m
        .registered_families()
        .into_keys()
        .filter(|f| !queried.contains(f))
        .collect();
    assert!(unused.is_empty(), "families without a panel: {unused:?}");
}

#[test]
fn request_observation_lands_in_every_family() {
    let m = metrics();
    m.observe_request(&RequestRecord {
        operation: "manifest_get",
        method: &http::Method::GET,
        status: 200,
        duration: Duration::from_micros(150),
        upstream_duration: Some(Duration::from_millis(3)),
        bytes_received: 0,
        bytes_sent: 1234,
        repository: Some("apps/web"),
    });
    m.observe_request(&RequestRecord {
        operation: "made_up",
        method: &http::Method::from_bytes(b"BREW").expect("token"),
        status: 418,
        duration: Duration::from_secs(2),
        upstream_duration: None,
        bytes_received: 10,
        bytes_sent: 0,
        repository: Some("secret/team-x"),
    });
    let text = m.encode().expect("encodes");
    for line in [
        r#"margo_proxy_requests_total{method="GET",operation="manifest_get",status="200"} 1"#,
        r#"margo_proxy_requests_total{method="other",operation="other",status="4xx"} 1"#,
        r#"margo_proxy_request_duration_seconds_bucket{operation="manifest_get",le="0.00025"} 1"#,
        r#"margo_proxy_request_duration_seconds_bucket{operation="manifest_get",le="0.0001"} 0"#,
        r#"margo_proxy_upstream_request_duration_seconds_count{operation="manifest_get"} 1"#,
        r#"margo_proxy_upstream_request_duration_seconds_count{operation="other"} 0"#,
        r#"margo_proxy_sent_bytes_total{operation="manifest_get"} 1234"#,
        r#"margo_proxy_received_bytes_total{operation="other"} 10"#,
        r#"margo_proxy_repository_requests_total{operation="manifest_get",repository="apps/web"} 1"#,
        r#"margo_proxy_repository_requests_total{operation="other",repository="other"} 1"#,
    ] {
        assert!(text.contains(line), "missing {line}\n{text}");
    }
    assert!(
        !text.contains("secret/team-x"),
        "repository leaked into labels"
    );
    assert!(!text.contains("made_up"));
}

#[test]
fn labels_are_normalised() {
    assert_eq!(status_label(404), "404");
    assert_eq!(status_label(418), "4xx");
    assert_eq!(status_label(599), "5xx");
    assert_eq!(status_label(999), "invalid");
    assert_eq!(status_label(0), "invalid");
    assert_eq!(normalize_operation("blob_get"), "blob_get");
    assert_eq!(normalize_operation("nonsense"), "other");
    assert_eq!(normalize_method(&http::Method::PATCH), "PATCH");
    assert_eq!(normalize_method(&http::Method::TRACE), "other");
    let m = metrics();
    assert_eq!(m.repository_label("apps/web"), "apps/web");
    assert_eq!(m.repository_label("apps/webx"), "other");
}

#[test]
fn decision_and_upstream_recorders() {
    let m = metrics();
    m.upstream_error("hub", UpstreamErrorKind::Timeout);
    m.set_upstream_up("hub", true);
    m.set_upstream_up("mirror", false);
    m.admission_decision("max-size", super::AdmissionDecision::Reject);
    m.auth_denied("expired_token");
    m.auth_granted(false);
    m.auth_granted(false);
    m.auth_granted(true);
    // Grants counted on another thread (another shard) add up at the scrape.
    std::thread::scope(|s| {
        s.spawn(|| m.auth_granted(false));
    });
    m.jwks_fetch("success");
    m.introspection("inactive");
    m.policy_decision("allow");
    let text = m.encode().expect("encodes");
    for line in [
        r#"margo_proxy_upstream_errors_total{kind="timeout",upstream="hub"} 1"#,
        r#"margo_proxy_upstream_up{upstream="hub"} 1"#,
        r#"margo_proxy_upstream_up{upstream="mirror"} 0"#,
        r#"margo_proxy_admission_decisions_total{decision="reject",rule="max-size"} 1"#,
        r#"margo_proxy_auth_decisions_total{reason="expired_token",result="deny"} 1"#,
        r#"margo_proxy_auth_decisions_total{reason="token",result="allow"} 3"#,
        r#"margo_proxy_auth_decisions_total{reason="anonymous",result="allow"} 1"#,
        r#"margo_proxy_jwks_fetches_total{result="success"} 1"#,
        r#"margo_proxy_introspection_requests_total{result="inactive"} 1"#,
        r#"margo_proxy_policy_decisions_total{outcome="allow"} 1"#,
    ] {
        assert!(text.contains(line), "missing {line}\n{text}");
    }
    // Declared once, not twice, now that they have series.
    assert_eq!(
        text.matches("# TYPE margo_proxy_jwks_fetches_total")
            .count(),
        1
    );
}

#[test]
fn empty_families_are_declared_in_the_exposition() {
    let text = metrics().encode().expect("encodes");
    assert!(text.contains("# TYPE margo_proxy_admission_decisions_total counter"));
    assert!(text.contains("# TYPE margo_proxy_request_duration_seconds histogram"));
    assert!(text.contains("margo_proxy_build_info{git_sha="));
    assert!(text.contains(&format!("version=\"{}\"", env!("CARGO_PKG_VERSION"))));
}

#[test]
fn cache_stats_sync_is_monotonic_and_idempotent() {
    let m = metrics();
    let mut stats = crate::cache::CacheStats {
        hits: 10,
        misses: 2,
        stale_serves: 1,
        evictions: 3,
        entries: 5,
        weighted_bytes: 4096,
        ..Default::default()
    };
    m.sync_cache(&stats);
    m.sync_cache(&stats);
    stats.hits = 15;
    m.sync_cache(&stats);
    let text = m.encode().expect("encodes");
    for line in [
        r#"margo_proxy_cache_requests_total{result="hit"} 15"#,
        r#"margo_proxy_cache_requests_total{result="miss"} 2"#,
        r#"margo_proxy_cache_requests_total{result="stale"} 1"#,
        r#"margo_proxy_cache_evictions_total{cause="size"} 3"#,
        "margo_proxy_cache_entries 5",
        "margo_proxy_cache_weighted_bytes 4096",
    ] {
        assert!(text.contains(line), "missing {line}\n{text}");
    }
}

#[test]
fn allow_list_is_capped() {
    let cfg = MetricsConfig {
        repository_labels: (0..=MAX_REPOSITORY_LABELS)
            .map(|i| format!("r{i}"))
            .collect(),
    };
    assert!(matches!(
        Metrics::new(&cfg),
        Err(MetricsError::TooManyRepositoryLabels(_))
    ));
    assert!(serde_json::from_str::<MetricsConfig>(r#"{"repository_label":[]}"#).is_err());
}

#[test]
fn buckets_are_sorted_and_span_sub_ms_to_a_minute() {
    assert!(LATENCY_BUCKETS.windows(2).all(|w| w[0] < w[1]));
    const { assert!(LATENCY_BUCKETS[0] < 0.001) };
    const { assert!(LATENCY_BUCKETS[LATENCY_BUCKETS.len() - 1] >= 60.0) };
}

#[test]
fn counts_from_every_worker_thread_are_exact_at_each_scrape() {
    let m = std::sync::Arc::new(metrics());
    let observe = |m: &Metrics, method: &http::Method| {
        m.observe_request(&RequestRecord {
            operation: "manifest_get",
            method,
            status: 200,
            duration: Duration::from_micros(80),
            upstream_duration: None,
            bytes_received: 0,
            bytes_sent: 10,
            repository: Some("apps/other"),
        })
    };
    let round = |threads: usize| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                let m = std::sync::Arc::clone(&m);
                std::thread::spawn(move || {
                    (0..500).for_each(|_| observe(&m, &http::Method::GET));
                    observe(&m, &http::Method::HEAD);
                })
            })
            .collect();
        for h in handles {
            h.join().expect("worker");
        }
    };
    let value = |text: &str, series: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {series} in:\n{text}"))
    };
    // More threads than shards, so some share one; then a second round on top.
    round(crate::shard::SHARDS + 4);
    let first = m.encode().expect("encodes");
    let n = (crate::shard::SHARDS + 4) as u64;
    let get = r#"margo_proxy_requests_total{method="GET",operation="manifest_get",status="200"}"#;
    let head = r#"margo_proxy_requests_total{method="HEAD",operation="manifest_get",status="200"}"#;
    assert_eq!(value(&first, get), n * 500);
    assert_eq!(value(&first, head), n);
    let count = r#"margo_proxy_request_duration_seconds_count{operation="manifest_get"}"#;
    let fast =
        r#"margo_proxy_request_duration_seconds_bucket{operation="manifest_get",le="0.0001"}"#;
    assert_eq!(value(&first, count), n * 501);
    assert_eq!(value(&first, fast), n * 501);
    let sent = r#"margo_proxy_sent_bytes_total{operation="manifest_get"}"#;
    assert_eq!(value(&first, sent), n * 501 * 10);
    let other =
        r#"margo_proxy_repository_requests_total{operation="manifest_get",repository="other"}"#;
    assert_eq!(value(&first, other), n * 501);

    round(2);
    let second = m.encode().expect("encodes");
    assert_eq!(value(&second, get), (n + 2) * 500);
    assert_eq!(value(&second, count), (n + 2) * 501);
}

#[test]
fn every_dashboard_label_value_can_be_emitted() {
    let bad = dashboard::impossible_matchers(DASHBOARD, super::emitted_label_values)
        .expect("dashboard parses");
    assert!(
        bad.is_empty(),
        "dashboard matchers that can never match: {bad:#?}"
    );
    // The check has teeth: the value the shipped dashboard once used is refused.
    let old = DASHBOARD.replace(r#"decision=\"reject\""#, r#"decision=\"deny\""#);
    assert_ne!(old, DASHBOARD);
    assert_eq!(
        dashboard::impossible_matchers(&old, super::emitted_label_values)
            .expect("parses")
            .len(),
        1
    );
}
