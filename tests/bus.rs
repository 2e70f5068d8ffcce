//! Replicas that agree: three margo-proxy processes, Debian's `redis-server` and
//! `docker-registry` (with `notifications` pointed at a proxy's admin listener), all on
//! 127.0.0.1. Tag TTLs are long unless a test is about TTLs, so only the bus or an
//! upstream event can explain a replica changing its answer.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test and tooling code: a panic is a failure report

mod common;

use std::time::{Duration, Instant};

use common::{
    free_port, http, metric, push_blob, put_manifest, sha256, Proxy, Redis, Registry,
    RegistryOptions,
};
use margo_proxy::bus::message::{self, Invalidation, Message};

const SECRET: &str = "test-bus-secret-0123456789abcdef-0123456789";
const EVENTS_TOKEN: &str = "events-token-0123456789";
const REPO: &str = "apps/x";
const TAG: &str = "stable";

fn replica(reg: &Registry, redis: Option<&Redis>, tag_ttl: &str, admin_port: u16) -> Proxy {
    let bus = redis
        .map(|r| format!("bus:\n  url: {}\n  secret: {SECRET}\n", r.url()))
        .unwrap_or_default();
    Proxy::start_on(
        &format!(
            "listeners:\n  - address: \"{{listen}}\"\nadmin:\n  address: \"{{admin}}\"\nupstreams:\n  - name: hub\n    url: {}\ncache:\n  tag_ttl: {tag_ttl}\nserver:\n  threads: 2\n{bus}events:\n  token: {EVENTS_TOKEN}\n",
            reg.url()
        ),
        admin_port,
    )
}

/// A manifest whose digest differs for every `n` (an annotation), over one layer.
fn manifest(layer: &str, n: usize) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": common::EMPTY_DIGEST, "size": 2},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer, "size": 5}],
        "annotations": {"n": n.to_string()},
    }))
    .expect("json")
}

/// Uploads the blobs the manifests use; returns the layer digest.
fn seed(base: &str) -> String {
    let c = http();
    push_blob(&c, base, REPO, common::EMPTY_CONFIG.as_bytes());
    push_blob(&c, base, REPO, b"hello")
}

/// Pushes manifest `n` under [`TAG`] at `base` and returns its digest.
fn push(base: &str, layer: &str, n: usize) -> String {
    let body = manifest(layer, n);
    let r = put_manifest(&http(), base, REPO, TAG, &body);
    assert_eq!(
        r.status(),
        201,
        "push {n}: {}",
        r.text().unwrap_or_default()
    );
    sha256(&body)
}

/// The digest `base` answers for the tag.
fn digest_at(base: &str) -> String {
    let r = http()
        .head(format!("{base}/v2/{REPO}/manifests/{TAG}"))
        .header("Accept", "application/vnd.oci.image.manifest.v1+json")
        .send()
        .expect("HEAD");
    assert_eq!(r.status(), 200, "HEAD through {base}");
    r.headers()
        .get("docker-content-digest")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

/// Waits until `base` answers `want`; returns how long that took.
fn until_serves(base: &str, want: &str, limit: Duration) -> Duration {
    let start = Instant::now();
    loop {
        if digest_at(base) == want {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < limit,
            "{base} still serves an old digest after {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn wait_metric(p: &Proxy, series: &str, want: f64, limit: Duration) {
    let start = Instant::now();
    while metric(p, series) != want {
        assert!(
            start.elapsed() < limit,
            "{series} is {} after {limit:?}, want {want}",
            metric(p, series)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

#[test]
fn a_push_through_one_replica_reaches_the_others_over_the_bus() {
    let redis = Redis::start();
    let reg = Registry::start();
    let [a, b, c] = [0; 3].map(|_| replica(&reg, Some(&redis), "1h", free_port()));
    // The control: a replica without the bus keeps what it cached for the whole TTL.
    let lone = replica(&reg, None, "1h", free_port());
    for p in [&a, &b, &c, &lone] {
        wait_metric(
            p,
            "margo_proxy_bus_connected",
            if p.port == lone.port { 0.0 } else { 1.0 },
            Duration::from_secs(10),
        );
    }
    let layer = seed(&a.url());
    let first = push(&a.url(), &layer, 0);
    for p in [&b, &c, &lone] {
        assert_eq!(digest_at(&p.url()), first);
    }

    let mut latencies = Vec::new();
    for n in 1..=100 {
        let want = push(&a.url(), &layer, n);
        let pushed = Instant::now();
        let (mut seen_b, mut seen_c) = (None, None);
        while seen_b.is_none() || seen_c.is_none() {
            for (p, seen) in [(&b, &mut seen_b), (&c, &mut seen_c)] {
                if seen.is_none() && digest_at(&p.url()) == want {
                    *seen = Some(pushed.elapsed());
                }
            }
            assert!(
                pushed.elapsed() < Duration::from_secs(5),
                "push {n}: replicas did not converge within 5 s (tag TTL is 1 h)"
            );
        }
        latencies.extend(seen_b.into_iter().chain(seen_c));
        if n == 1 {
            assert_eq!(
                digest_at(&lone.url()),
                first,
                "without the bus the old tag stays cached"
            );
        }
    }
    latencies.sort();
    eprintln!(
        "bus: replica-to-replica invalidation over {} observations: p50 {:?}, p90 {:?}, p99 {:?}, max {:?}",
        latencies.len(),
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.9),
        percentile(&latencies, 0.99),
        latencies[latencies.len() - 1],
    );
    // A's own messages come back to it on the channel and are skipped, not applied.
    assert!(
        metric(
            &a,
            "margo_proxy_bus_messages_total{direction=\"received\",result=\"own\"}"
        ) >= 1.0
    );
    assert!(metric(&b, "margo_proxy_invalidations_total{source=\"bus\"}") >= 100.0);
    assert_eq!(
        metric(&a, "margo_proxy_invalidations_total{source=\"bus\"}"),
        0.0
    );
}

#[test]
fn a_push_straight_to_the_upstream_reaches_every_replica_through_its_webhook() {
    let redis = Redis::start();
    // Only replica A hears from the registry; B and C learn it over the bus.
    let a_admin = free_port();
    let reg = Registry::start_with(RegistryOptions {
        extra_yaml: Some(format!(
            "notifications:\n  endpoints:\n    - name: margo\n      url: http://127.0.0.1:{a_admin}/events/hub/distribution\n      headers:\n        Authorization: [\"Bearer {EVENTS_TOKEN}\"]\n      timeout: 2s\n      threshold: 3\n      backoff: 1s\n"
        )),
        ..Default::default()
    });
    let a = replica(&reg, Some(&redis), "1h", a_admin);
    let [b, c] = [0; 2].map(|_| replica(&reg, Some(&redis), "1h", free_port()));
    for p in [&a, &b, &c] {
        wait_metric(p, "margo_proxy_bus_connected", 1.0, Duration::from_secs(10));
    }
    let layer = seed(&reg.url());
    let first = push(&reg.url(), &layer, 0);
    for p in [&a, &b, &c] {
        assert_eq!(digest_at(&p.url()), first);
    }
    let second = push(&reg.url(), &layer, 1);
    let mut took = Vec::new();
    for p in [&a, &b, &c] {
        took.push(until_serves(&p.url(), &second, Duration::from_secs(10)));
    }
    eprintln!("bus: upstream push to replicas (webhook + bus): {took:?}");
    assert!(
        metric(
            &a,
            "margo_proxy_upstream_events_total{format=\"distribution\",result=\"applied\"}"
        ) >= 1.0
    );
    assert!(metric(&b, "margo_proxy_invalidations_total{source=\"bus\"}") >= 1.0);

    // The endpoint wants the token.
    let r = http()
        .post(format!("{}/events/hub/distribution", a.admin_url()))
        .header("Authorization", "Bearer wrong-token-0123456789")
        .body(r#"{"events":[]}"#)
        .send()
        .expect("POST");
    assert_eq!(r.status(), 401);
    let r = http()
        .post(format!("{}/events/nope/distribution", a.admin_url()))
        .header("Authorization", format!("Bearer {EVENTS_TOKEN}"))
        .body(r#"{"events":[]}"#)
        .send()
        .expect("POST");
    assert_eq!(r.status(), 404, "unknown upstream");
}

#[test]
fn with_redis_down_replicas_serve_and_converge_by_ttl_then_flush_once() {
    let mut redis = Redis::start();
    let reg = Registry::start();
    let [a, b] = [0; 2].map(|_| replica(&reg, Some(&redis), "3s", free_port()));
    for p in [&a, &b] {
        wait_metric(p, "margo_proxy_bus_connected", 1.0, Duration::from_secs(10));
    }
    let layer = seed(&a.url());
    let first = push(&a.url(), &layer, 0);

    redis.stop();
    wait_metric(
        &b,
        "margo_proxy_bus_connected",
        0.0,
        Duration::from_secs(10),
    );
    let ready = http()
        .get(format!("{}/readyz", b.admin_url()))
        .send()
        .expect("readyz");
    assert_eq!(
        ready.status(),
        200,
        "a down bus degrades, it does not make a replica unready"
    );
    assert!(ready
        .text()
        .unwrap_or_default()
        .contains("bus: disconnected"));

    assert_eq!(digest_at(&b.url()), first);
    let second = push(&a.url(), &layer, 1);
    assert_eq!(
        digest_at(&b.url()),
        first,
        "no bus: B serves its cached tag"
    );
    let took = until_serves(&b.url(), &second, Duration::from_secs(10));
    eprintln!("bus down: B converged by TTL after {took:?}");

    redis.restart();
    wait_metric(
        &b,
        "margo_proxy_bus_connected",
        1.0,
        Duration::from_secs(20),
    );
    wait_metric(
        &b,
        "margo_proxy_bus_tag_flushes_total",
        1.0,
        Duration::from_secs(5),
    );
    wait_metric(
        &a,
        "margo_proxy_bus_connected",
        1.0,
        Duration::from_secs(20),
    );

    // The bus works again: B refreshes its entry, so only a message can change it
    // within the next 3 s.
    assert_eq!(digest_at(&b.url()), second);
    std::thread::sleep(Duration::from_millis(100));
    let third = push(&a.url(), &layer, 2);
    let took = until_serves(&b.url(), &third, Duration::from_secs(2));
    eprintln!("bus back: B saw the new digest after {took:?}");
    assert_eq!(
        metric(&b, "margo_proxy_bus_tag_flushes_total"),
        1.0,
        "flushed once"
    );
}

#[test]
fn forged_bus_messages_are_ignored_and_counted() {
    let redis = Redis::start();
    let reg = Registry::start();
    let b = replica(&reg, Some(&redis), "1h", free_port());
    wait_metric(
        &b,
        "margo_proxy_bus_connected",
        1.0,
        Duration::from_secs(10),
    );
    let layer = seed(&reg.url());
    let first = push(&reg.url(), &layer, 0);
    assert_eq!(digest_at(&b.url()), first);
    let second = push(&reg.url(), &layer, 1);

    let client = redis::Client::open(redis.url()).expect("client");
    let mut conn = client.get_connection().expect("redis");
    let msg = Message {
        origin: "attacker".into(),
        seq: 1,
        ts: message::now_secs(),
        invalidations: vec![Invalidation::ManifestPut {
            upstream: "hub".into(),
            repository: REPO.into(),
            reference: TAG.into(),
        }],
    };
    let forged = message::seal(&msg, b"not-the-secret-0123456789abcdef-xyz").expect("seal");
    let unsigned = format!(
        "v1.{}.{}",
        "0".repeat(64),
        serde_json::to_string(&msg).expect("json")
    );
    for payload in [forged, unsigned, "garbage".to_owned()] {
        redis::cmd("PUBLISH")
            .arg("margo-proxy:invalidations")
            .arg(payload)
            .query::<i64>(&mut conn)
            .expect("PUBLISH");
    }
    wait_metric(
        &b,
        "margo_proxy_bus_messages_total{direction=\"received\",result=\"forged\"}",
        2.0,
        Duration::from_secs(5),
    );
    wait_metric(
        &b,
        "margo_proxy_bus_messages_total{direction=\"received\",result=\"malformed\"}",
        1.0,
        Duration::from_secs(5),
    );
    assert_eq!(
        digest_at(&b.url()),
        first,
        "a forged message flushed nothing"
    );

    // The same message sealed with the real key is applied.
    let genuine = message::seal(&msg, SECRET.as_bytes()).expect("seal");
    redis::cmd("PUBLISH")
        .arg("margo-proxy:invalidations")
        .arg(genuine)
        .query::<i64>(&mut conn)
        .expect("PUBLISH");
    until_serves(&b.url(), &second, Duration::from_secs(5));
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .expect("VmRSS")
}

#[test]
fn a_flood_of_events_keeps_memory_bounded_and_requests_flowing() {
    let redis = Redis::start();
    let reg = Registry::start();
    let a = replica(&reg, Some(&redis), "1h", free_port());
    wait_metric(
        &a,
        "margo_proxy_bus_connected",
        1.0,
        Duration::from_secs(10),
    );
    let layer = seed(&reg.url());
    let first = push(&reg.url(), &layer, 0);
    assert_eq!(digest_at(&a.url()), first);
    let before = rss_kib(a.proc.pid());

    // Pulls go on while 10,000 events (one repository each) arrive in 10 deliveries.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let puller = {
        let (base, stop) = (a.url(), stop.clone());
        std::thread::spawn(move || {
            let mut worst = Duration::ZERO;
            let mut n = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let t = Instant::now();
                digest_at(&base);
                worst = worst.max(t.elapsed());
                n += 1;
            }
            (n, worst)
        })
    };
    let c = http();
    for batch in 0..10 {
        let events: Vec<String> = (0..1000)
            .map(|i| {
                format!(
                    r#"{{"action":"push","target":{{"mediaType":"application/vnd.oci.image.manifest.v1+json","repository":"flood/r{}","tag":"v1"}}}}"#,
                    batch * 1000 + i
                )
            })
            .collect();
        let r = c
            .post(format!("{}/events/hub/distribution", a.admin_url()))
            .header("Authorization", format!("Bearer {EVENTS_TOKEN}"))
            .header(
                "Content-Type",
                "application/vnd.docker.distribution.events.v1+json",
            )
            .body(format!(r#"{{"events":[{}]}}"#, events.join(",")))
            .send()
            .expect("POST events");
        assert_eq!(r.status(), 200, "{}", r.text().unwrap_or_default());
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (pulls, worst) = puller.join().expect("puller");
    let after = rss_kib(a.proc.pid());
    eprintln!("flood: {pulls} pulls during it, slowest {worst:?}; RSS {before} -> {after} KiB");
    assert!(pulls > 0);
    assert!(
        worst < Duration::from_secs(2),
        "a pull stalled for {worst:?}"
    );
    assert!(
        after < before + 64 * 1024,
        "RSS grew from {before} to {after} KiB"
    );
    assert_eq!(
        metric(&a, "margo_proxy_invalidations_total{source=\"event\"}"),
        10_000.0
    );
    // A request cached before the flood is still served (the flood named other repositories).
    assert_eq!(digest_at(&a.url()), first);
}
