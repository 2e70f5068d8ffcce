//! The manifest cache against a real docker-registry: hits spare the upstream, tags
//! revalidate after their TTL, pushes and deletes invalidate at once, concurrent misses
//! coalesce, and a lying upstream is never cached.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test and tooling code: a panic is a failure report

mod common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;

const OCI: &str = "application/vnd.oci.image.manifest.v1+json";

fn proxy_with_cache(upstream: &str, cache: &str) -> Proxy {
    Proxy::start(&format!(
        "listeners: [{{address: \"{{listen}}\"}}]\nadmin: {{address: \"{{admin}}\"}}\nupstreams: [{{name: main, url: \"{upstream}\"}}]\ncache: {cache}\n"
    ))
}

fn get(c: &reqwest::blocking::Client, url: &str) -> reqwest::blocking::Response {
    c.get(url).header("Accept", OCI).send().unwrap()
}

/// Pushes a manifest (with a distinguishing annotation) directly or via `base`.
fn push_tagged(
    c: &reqwest::blocking::Client,
    base: &str,
    repo: &str,
    tag: &str,
    marker: &str,
) -> String {
    push_blob(c, base, repo, EMPTY_CONFIG.as_bytes());
    let mut m: serde_json::Value = serde_json::from_slice(&image_manifest(&[], None)).unwrap();
    m["annotations"] = serde_json::json!({ "marker": marker });
    let body = serde_json::to_vec(&m).unwrap();
    let r = put_manifest(c, base, repo, tag, &body);
    assert_eq!(r.status(), 201, "{}", r.text().unwrap_or_default());
    sha256(&body)
}

#[test]
fn second_get_is_a_hit_and_spares_the_upstream() {
    let reg = Registry::start();
    let proxy = proxy_with_cache(&reg.url(), "{tag_ttl: 60s}");
    let c = http();
    let d = push_tagged(&c, &proxy.url(), "fleet/app", "1.0.0", "a");
    let url = format!("{}/v2/fleet/app/manifests/1.0.0", proxy.url());
    let first = get(&c, &url);
    assert_eq!(first.status(), 200);
    assert_eq!(first.headers()["x-margo-cache"], "miss");
    let manifests_before = reg.wait_for_requests("GET", "/v2/fleet/app/manifests/", 1);
    let heads_before = reg.requests_matching("HEAD", "/v2/fleet/app/manifests/");
    for _ in 0..5 {
        let r = get(&c, &url);
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["x-margo-cache"], "hit");
        assert_eq!(r.headers()["docker-content-digest"], d.as_str());
        assert_eq!(r.headers()["content-type"], OCI);
        assert_eq!(sha256(&r.bytes().unwrap()), d);
    }
    // HEAD is answered from memory too, with the same headers and no body.
    let r = c.head(&url).header("Accept", OCI).send().unwrap();
    assert_eq!(r.headers()["x-margo-cache"], "hit");
    assert_eq!(r.headers()["docker-content-digest"], d.as_str());
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        reg.requests_matching("GET", "/v2/fleet/app/manifests/"),
        manifests_before
    );
    assert_eq!(
        reg.requests_matching("HEAD", "/v2/fleet/app/manifests/"),
        heads_before
    );
}

#[test]
fn tag_moved_upstream_is_seen_after_the_ttl() {
    let reg = Registry::start();
    let proxy = proxy_with_cache(&reg.url(), "{tag_ttl: 1s}");
    let c = http();
    let old = push_tagged(&c, &reg.url(), "moving/app", "stable", "old");
    let url = format!("{}/v2/moving/app/manifests/stable", proxy.url());
    assert_eq!(
        get(&c, &url).headers()["docker-content-digest"],
        old.as_str()
    );
    // Move the tag behind the proxy's back.
    let new = push_tagged(&c, &reg.url(), "moving/app", "stable", "new");
    assert_ne!(old, new);
    assert_eq!(
        get(&c, &url).headers()["docker-content-digest"],
        old.as_str(),
        "within TTL"
    );
    std::thread::sleep(Duration::from_millis(1300));
    assert_eq!(
        get(&c, &url).headers()["docker-content-digest"],
        new.as_str(),
        "after TTL"
    );
}

#[test]
fn push_and_delete_through_the_proxy_invalidate_at_once() {
    let reg = Registry::start();
    let proxy = proxy_with_cache(&reg.url(), "{tag_ttl: 1h}");
    let c = http();
    let base = proxy.url();
    let first = push_tagged(&c, &base, "inval/app", "1", "one");
    let url = format!("{base}/v2/inval/app/manifests/1");
    assert_eq!(
        get(&c, &url).headers()["docker-content-digest"],
        first.as_str()
    );
    let second = push_tagged(&c, &base, "inval/app", "1", "two");
    let r = get(&c, &url);
    assert_eq!(r.headers()["docker-content-digest"], second.as_str());
    // Delete by digest: neither the digest nor the tag pointing at it survive.
    let by_digest = format!("{base}/v2/inval/app/manifests/{second}");
    assert_eq!(get(&c, &by_digest).status(), 200);
    assert_eq!(c.delete(&by_digest).send().unwrap().status(), 202);
    assert_eq!(get(&c, &by_digest).status(), 404);
    assert_eq!(get(&c, &url).status(), 404);
}

#[test]
fn concurrent_misses_make_one_upstream_request() {
    let reg = Registry::start();
    let proxy = proxy_with_cache(&reg.url(), "{tag_ttl: 60s}");
    let c = http();
    let d = push_tagged(&c, &reg.url(), "herd/app", "v", "x");
    let url = format!("{}/v2/herd/app/manifests/{d}", proxy.url());
    let threads: Vec<_> = (0..16)
        .map(|_| {
            let url = url.clone();
            std::thread::spawn(move || {
                let r = get(&http(), &url);
                (r.status().as_u16(), sha256(&r.bytes().unwrap()))
            })
        })
        .collect();
    for t in threads {
        let (status, got) = t.join().unwrap();
        assert_eq!(status, 200);
        assert_eq!(got, d);
    }
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        reg.requests_matching("GET", &format!("/v2/herd/app/manifests/{d}")),
        1
    );
}

#[test]
fn accept_mismatch_is_not_served_from_cache() {
    let reg = Registry::start();
    let proxy = proxy_with_cache(&reg.url(), "{tag_ttl: 60s}");
    let c = http();
    let d = push_tagged(&c, &proxy.url(), "acc/app", "v", "x");
    let url = format!("{}/v2/acc/app/manifests/{d}", proxy.url());
    assert_eq!(get(&c, &url).status(), 200);
    let r = c
        .get(&url)
        .header(
            "Accept",
            "application/vnd.docker.distribution.manifest.v2+json",
        )
        .send()
        .unwrap();
    assert!(r.headers().get("x-margo-cache").is_none(), "went upstream");
}

/// An upstream that answers every manifest GET with a body that does not hash to the
/// digest asked for (and counts how often it was asked).
fn lying_upstream() -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    std::thread::spawn(move || {
        listener.set_nonblocking(false).ok();
        for stream in listener.incoming().take(64) {
            let Ok(mut s) = stream else { continue };
            s.set_read_timeout(Some(Duration::from_secs(5))).ok();
            let mut buf = [0u8; 8192];
            let n = s.read(&mut buf).unwrap_or(0);
            let req = String::from_utf8_lossy(&buf[..n]);
            if req.contains("/manifests/") {
                counter.fetch_add(1, Ordering::SeqCst);
            }
            let body = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.empty.v1+json","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2},"layers":[],"annotations":{"evil":"yes"}}"#;
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: {OCI}\r\nContent-Length: {}\r\nDocker-Content-Digest: {EMPTY_DIGEST}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = s.write_all(head.as_bytes());
            let _ = s.write_all(body);
        }
    });
    (url, hits)
}

#[test]
fn digest_mismatch_from_a_lying_upstream_is_refused_and_not_cached() {
    let (url, hits) = lying_upstream();
    let proxy = proxy_with_cache(&url, "{tag_ttl: 60s}");
    let c = http();
    let target = format!("{}/v2/liar/app/manifests/{EMPTY_DIGEST}", proxy.url());
    for round in 1..=2 {
        let r = get(&c, &target);
        assert_eq!(r.status(), 502, "round {round}");
        let v: serde_json::Value = r.json().unwrap();
        assert!(v["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("does not match"));
        assert_eq!(hits.load(Ordering::SeqCst), round, "nothing was cached");
    }
}

#[test]
fn with_policies_loaded_a_lying_upstream_cannot_pass_a_manifest_through() {
    // Cache off, a policy that allows everything: the pull policy still reads the
    // manifest by the digest the upstream named, finds it does not match, and refuses.
    let (url, hits) = lying_upstream();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("allow.rego"),
        "package margo.admission.allow\n",
    )
    .unwrap();
    let proxy = Proxy::start(&format!(
        "listeners: [{{address: \"{{listen}}\"}}]\nupstreams: [{{name: main, url: \"{url}\"}}]\ncache: {{enabled: false}}\npolicy: {{directories: [\"{}\"]}}\n",
        dir.path().display()
    ));
    let r = get(
        &http(),
        &format!("{}/v2/liar/app/manifests/v1", proxy.url()),
    );
    assert_eq!(r.status(), 502);
    let v: serde_json::Value = r.json().unwrap();
    let message = v["errors"][0]["message"].as_str().unwrap_or_default();
    assert!(message.contains("does not match"), "{message}");
    assert_eq!(
        hits.load(Ordering::SeqCst),
        2,
        "passed through, then read for the policy"
    );
}

#[test]
fn cache_off_goes_upstream_every_time() {
    let reg = Registry::start();
    let proxy = proxy_with_cache(&reg.url(), "{enabled: false}");
    let c = http();
    let d = push_tagged(&c, &proxy.url(), "nocache/app", "v", "x");
    for _ in 0..3 {
        let r = get(&c, &format!("{}/v2/nocache/app/manifests/v", proxy.url()));
        assert_eq!(r.headers()["docker-content-digest"], d.as_str());
        assert!(r.headers().get("x-margo-cache").is_none());
    }
    assert_eq!(
        reg.wait_for_requests("GET", "/v2/nocache/app/manifests/v", 3),
        3
    );
}

#[test]
fn every_dashboard_metric_is_exported() {
    let reg = Registry::start();
    let proxy = proxy_with_cache(&reg.url(), "{tag_ttl: 60s}");
    let c = http();
    push_tagged(&c, &proxy.url(), "metrics/app", "v", "x");
    get(&c, &format!("{}/v2/metrics/app/manifests/v", proxy.url()));
    c.get(format!("{}/readyz", proxy.admin_url()))
        .send()
        .unwrap();
    let text = c
        .get(format!("{}/metrics", proxy.admin_url()))
        .send()
        .unwrap()
        .text()
        .unwrap();
    let dashboard = std::fs::read_to_string(repo_root().join("grafana/dashboard.json")).unwrap();
    let missing =
        margo_proxy::metrics::dashboard::missing_from_exposition(&dashboard, &text).unwrap();
    assert!(
        missing.is_empty(),
        "dashboard queries metrics the proxy does not export: {missing:?}"
    );
    assert!(
        text.contains("margo_proxy_requests_total{"),
        "requests are counted"
    );
    assert!(text.contains("operation=\"manifest_get\""));
}
