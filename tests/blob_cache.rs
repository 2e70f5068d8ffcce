//! The blob cache against a real docker-registry and real clients: warm pulls spare the
//! upstream and are byte-identical, a blob is never served for a repository the
//! upstream did not confirm holds it, lying and cut upstreams leave nothing cached, the
//! disk tier survives a restart, ranges are answered from the cache, and concurrent
//! misses make one upstream GET.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test and tooling code: a panic is a failure report

mod common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;

const OCTET: &str = "application/octet-stream";

fn proxy_with(upstream: &str, blobs: &str) -> Proxy {
    Proxy::start(&format!(
        "listeners: [{{address: \"{{listen}}\"}}]\nadmin: {{address: \"{{admin}}\"}}\nupstreams: [{{name: main, url: \"{upstream}\"}}]\nserver: {{threads: 2}}\ncache: {{tag_ttl: 60s, blobs: {blobs}}}\n"
    ))
}

/// Deterministic bytes that differ per seed.
fn bytes(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u32).wrapping_mul(2654435761).to_le_bytes()[i % 4] ^ seed)
        .collect()
}

fn blob_url(base: &str, repo: &str, digest: &str) -> String {
    format!("{base}/v2/{repo}/blobs/{digest}")
}

fn blob_gets(reg: &Registry, repo: &str, digest: &str) -> usize {
    reg.requests_matching("GET", &format!("/v2/{repo}/blobs/{digest}"))
}

/// Waits (up to 10 s: the registry logs after answering, and the machine is shared) for
/// `want` GETs of a blob; returns how many the registry logged.
fn wait_gets(reg: &Registry, repo: &str, digest: &str, want: usize) -> usize {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let n = blob_gets(reg, repo, digest);
        if n >= want || std::time::Instant::now() > deadline {
            return n;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Pushes a small package directly to the registry: image config, a 3 KiB description,
/// a 10 KiB icon and a 2 MiB layer, each with a title (for oras). Returns the blobs.
fn push_package(
    c: &reqwest::blocking::Client,
    reg: &Registry,
    repo: &str,
) -> Vec<(String, Vec<u8>)> {
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": []}, "config": {}
    }))
    .unwrap();
    let files = [
        ("margo.yaml", bytes(1, 3 * 1024)),
        ("icon.png", bytes(2, 10 * 1024)),
        ("payload.bin", bytes(3, 2 << 20)),
    ];
    let config_d = push_blob(c, &reg.url(), repo, &config);
    let mut layers = Vec::new();
    let mut out = vec![(config_d.clone(), config.clone())];
    for (title, data) in files {
        let d = push_blob(c, &reg.url(), repo, &data);
        layers.push(serde_json::json!({
            "mediaType": "application/vnd.oci.image.layer.v1.tar",
            "digest": d, "size": data.len(),
            "annotations": {"org.opencontainers.image.title": title}
        }));
        out.push((d, data));
    }
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_d, "size": config.len()},
        "layers": layers,
    }))
    .unwrap();
    let r = put_manifest(c, &reg.url(), repo, "1.0.0", &manifest);
    assert_eq!(r.status(), 201, "{}", r.text().unwrap_or_default());
    out
}

fn skopeo_pull(proxy: &Proxy, repo: &str, dest: &std::path::Path) {
    let out = Command::new("skopeo")
        .args([
            "copy",
            "--src-tls-verify=false",
            &format!("docker://{}/{repo}:1.0.0", proxy.host()),
            &format!("dir:{}", dest.display()),
        ])
        .output()
        .expect("skopeo is required (scripts/setup installs it)");
    assert!(
        out.status.success(),
        "skopeo: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn oras_pull(proxy: &Proxy, repo: &str, outdir: &std::path::Path) {
    let out = Command::new(repo_root().join(".venv/bin/python"))
        .arg(repo_root().join("tests/python/oras_tool.py"))
        .args([
            "pull",
            "--registry",
            &proxy.host(),
            "--repo",
            repo,
            "--tag",
            "1.0.0",
        ])
        .arg("--outdir")
        .arg(outdir)
        .output()
        .expect("the oras venv is required (scripts/setup creates it)");
    assert!(
        out.status.success(),
        "oras: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn warm_pulls_by_skopeo_and_oras_are_byte_identical_and_spare_the_upstream() {
    let reg = Registry::start();
    let disk = tempfile::tempdir().unwrap();
    let proxy = proxy_with(
        &reg.url(),
        &format!(
            "{{max_blob_bytes: 64KiB, disk: {{dir: \"{}\", max_bytes: 64MiB}}}}",
            disk.path().display()
        ),
    );
    let c = http();
    let repo = "pkgs/app";
    let blobs = push_package(&c, &reg, repo);
    let work = tempfile::tempdir().unwrap();
    // Cold: the first pull fills the cache while it streams.
    skopeo_pull(&proxy, repo, &work.path().join("cold"));
    for (d, _) in &blobs {
        assert_eq!(wait_gets(&reg, repo, d, 1), 1);
    }
    // Warm: two more pulls with different clients reach the upstream for no blob.
    skopeo_pull(&proxy, repo, &work.path().join("warm"));
    oras_pull(&proxy, repo, &work.path().join("oras"));
    std::thread::sleep(Duration::from_millis(300));
    for (d, data) in &blobs {
        assert_eq!(blob_gets(&reg, repo, d), 1, "{d} went upstream again");
        let in_layout = work.path().join("warm").join(&d[7..]);
        let copied = std::fs::read(&in_layout).unwrap_or_else(|e| {
            let listing: Vec<_> = std::fs::read_dir(work.path().join("warm"))
                .map(|r| r.flatten().map(|e| e.file_name()).collect())
                .unwrap_or_default();
            panic!("{}: {e}; layout holds {listing:?}", in_layout.display())
        });
        assert_eq!(&copied, data, "skopeo copy of {d}");
    }
    for (title, (_, data)) in ["margo.yaml", "icon.png", "payload.bin"]
        .iter()
        .zip(&blobs[1..])
    {
        assert_eq!(
            &std::fs::read(work.path().join("oras").join(title)).unwrap(),
            data
        );
    }
    // Hits keep the upstream's answer head (memory tier and disk tier alike).
    for (d, _) in [&blobs[1], &blobs[3]] {
        let direct = c.head(blob_url(&reg.url(), repo, d)).send().unwrap();
        let cached = c.head(blob_url(&proxy.url(), repo, d)).send().unwrap();
        assert_eq!(cached.headers()["x-margo-cache"], "hit");
        for h in ["docker-content-digest", "content-type", "content-length"] {
            assert_eq!(cached.headers()[h], direct.headers()[h], "{h} of {d}");
        }
    }
    let metrics = c
        .get(format!("{}/metrics", proxy.admin_url()))
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(
        metrics.contains("margo_proxy_blob_cache_fills_total{tier=\"disk\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("margo_proxy_blob_cache_fills_total{tier=\"memory\"} 3"));
}

#[test]
fn a_blob_cached_for_one_repository_is_not_served_for_another() {
    let reg = Registry::start();
    let proxy = proxy_with(&reg.url(), "{}");
    let c = http();
    let secret = bytes(9, 4096);
    let d = push_blob(&c, &reg.url(), "team-a/app", &secret);
    let r = c
        .get(blob_url(&proxy.url(), "team-a/app", &d))
        .send()
        .unwrap();
    assert_eq!(r.bytes().unwrap(), secret);
    let r = c
        .get(blob_url(&proxy.url(), "team-a/app", &d))
        .send()
        .unwrap();
    assert_eq!(r.headers()["x-margo-cache-tier"], "memory");
    assert_eq!(blob_gets(&reg, "team-a/app", &d), 1);
    // Repository B does not hold it: the upstream is asked, and says so.
    let r = c
        .get(blob_url(&proxy.url(), "team-b/app", &d))
        .send()
        .unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(wait_gets(&reg, "team-b/app", &d, 1), 1);
    let r = c
        .head(blob_url(&proxy.url(), "team-b/app", &d))
        .send()
        .unwrap();
    assert_eq!(r.status(), 404);
    // Once B really holds it, the upstream confirms it once, then B is served from cache.
    push_blob(&c, &reg.url(), "team-b/app", &secret);
    let r = c
        .get(blob_url(&proxy.url(), "team-b/app", &d))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.headers().get("x-margo-cache").is_none(),
        "confirmed upstream"
    );
    assert_eq!(r.bytes().unwrap(), secret);
    let r = c
        .get(blob_url(&proxy.url(), "team-b/app", &d))
        .send()
        .unwrap();
    assert_eq!(r.headers()["x-margo-cache-tier"], "memory");
    assert_eq!(wait_gets(&reg, "team-b/app", &d, 2), 2);
    // Hits on fresh connections, so every worker thread's front holds the blob; HEAD
    // answers from there with the blob's length and no body.
    for _ in 0..20 {
        let r = http()
            .get(blob_url(&proxy.url(), "team-b/app", &d))
            .send()
            .unwrap();
        assert_eq!(r.headers()["x-margo-cache-tier"], "memory");
        assert_eq!(r.bytes().unwrap(), secret);
        let r = http()
            .head(blob_url(&proxy.url(), "team-b/app", &d))
            .send()
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(
            r.headers()["content-length"],
            secret.len().to_string().as_str()
        );
        assert_eq!(r.headers()["docker-content-digest"], d.as_str());
    }
    assert_eq!(
        blob_gets(&reg, "team-b/app", &d),
        2,
        "all served from the cache"
    );

    // A blob DELETE through the proxy drops the link: the next GET asks the upstream,
    // on every thread at once (no front entry outlives the link).
    let r = c
        .delete(blob_url(&proxy.url(), "team-b/app", &d))
        .send()
        .unwrap();
    assert_eq!(r.status(), 202);
    for _ in 0..20 {
        let r = http()
            .get(blob_url(&proxy.url(), "team-b/app", &d))
            .send()
            .unwrap();
        assert_eq!(r.status(), 404, "a deleted link must not be served");
    }
    let r = c
        .get(blob_url(&proxy.url(), "team-b/app", &d))
        .send()
        .unwrap();
    assert_eq!(r.status(), 404);
    // Repository A still holds it and is still served from the cache.
    let r = c
        .get(blob_url(&proxy.url(), "team-a/app", &d))
        .send()
        .unwrap();
    assert_eq!(r.headers()["x-margo-cache-tier"], "memory");
}

#[test]
fn a_manifest_links_the_blobs_it_lists() {
    let reg = Registry::start();
    let proxy = proxy_with(&reg.url(), "{}");
    let c = http();
    let data = bytes(4, 2048);
    let d = push_blob(&c, &reg.url(), "one/app", &data);
    push_blob(&c, &reg.url(), "two/app", EMPTY_CONFIG.as_bytes());
    push_blob(&c, &reg.url(), "two/app", &data);
    let m = image_manifest(&[(d.clone(), data.len(), OCTET)], None);
    assert_eq!(
        put_manifest(&c, &reg.url(), "two/app", "v", &m).status(),
        201
    );
    // Cached through repository one...
    c.get(blob_url(&proxy.url(), "one/app", &d))
        .send()
        .unwrap()
        .bytes()
        .unwrap();
    // ...then repository two's manifest, pulled through the proxy, lists it.
    let r = c
        .get(format!("{}/v2/two/app/manifests/v", proxy.url()))
        .header("Accept", "application/vnd.oci.image.manifest.v1+json")
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = c.get(blob_url(&proxy.url(), "two/app", &d)).send().unwrap();
    assert_eq!(r.headers()["x-margo-cache-tier"], "memory");
    assert_eq!(r.bytes().unwrap(), data);
    assert_eq!(blob_gets(&reg, "two/app", &d), 0);
}

/// An upstream that answers every blob GET with `body` under `Content-Length: len`
/// (closing after `body` if it is shorter) and counts the blob GETs.
fn fake_upstream(digest: String, body: Vec<u8>, len: usize) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(64) {
            let Ok(mut s) = stream else { continue };
            s.set_read_timeout(Some(Duration::from_secs(5))).ok();
            let mut buf = [0u8; 8192];
            let n = s.read(&mut buf).unwrap_or(0);
            let req = String::from_utf8_lossy(&buf[..n]);
            if req.starts_with("GET") && req.contains("/blobs/") {
                counter.fetch_add(1, Ordering::SeqCst);
            }
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: {OCTET}\r\nContent-Length: {len}\r\nDocker-Content-Digest: {digest}\r\nConnection: close\r\n\r\n"
            );
            let _ = s.write_all(head.as_bytes());
            let _ = s.write_all(&body);
            let _ = s.flush();
        }
    });
    (url, hits)
}

/// GETs through the proxy; true when the client saw the whole `want` (it must not).
fn got_whole(c: &reqwest::blocking::Client, url: &str, want: &[u8]) -> bool {
    let r = c.get(url).send().unwrap();
    assert_eq!(r.status(), 200);
    match r.bytes() {
        Ok(b) => b.len() == want.len(),
        Err(_) => false,
    }
}

#[test]
fn wrong_bytes_from_a_lying_upstream_are_not_cached_and_never_complete() {
    let real = bytes(5, 200 * 1024);
    let d = sha256(&real);
    let mut lie = real.clone();
    lie[150 * 1024] ^= 0xff;
    let (url, hits) = fake_upstream(d.clone(), lie.clone(), lie.len());
    let proxy = proxy_with(&url, "{}");
    let c = http();
    let target = blob_url(&proxy.url(), "liar/app", &d);
    for round in 1..=2 {
        assert!(
            !got_whole(&c, &target, &lie),
            "round {round}: a wrong body completed"
        );
        assert_eq!(hits.load(Ordering::SeqCst), round, "nothing was cached");
    }
}

#[test]
fn a_fill_cut_mid_way_keeps_nothing_and_the_client_sees_a_broken_body() {
    let real = bytes(6, 300 * 1024);
    let d = sha256(&real);
    let (url, hits) = fake_upstream(d.clone(), real[..100 * 1024].to_vec(), real.len());
    let disk = tempfile::tempdir().unwrap();
    let proxy = proxy_with(
        &url,
        &format!(
            "{{max_blob_bytes: 16KiB, disk: {{dir: \"{}\", max_bytes: 16MiB}}}}",
            disk.path().display()
        ),
    );
    let c = http();
    let target = blob_url(&proxy.url(), "cut/app", &d);
    for round in 1..=2 {
        assert!(!got_whole(&c, &target, &real), "round {round}");
        assert_eq!(hits.load(Ordering::SeqCst), round, "nothing was cached");
    }
    std::thread::sleep(Duration::from_millis(200));
    let kept = std::fs::read_dir(disk.path().join("blobs/sha256"))
        .unwrap()
        .count()
        + std::fs::read_dir(disk.path().join("tmp")).unwrap().count();
    assert_eq!(kept, 0, "no file left behind");
}

#[test]
fn the_disk_tier_survives_a_restart_and_serves_ranges() {
    let reg = Registry::start();
    let disk = tempfile::tempdir().unwrap();
    let blobs = format!(
        "{{max_blob_bytes: 16KiB, disk: {{dir: \"{}\", max_bytes: 64MiB}}}}",
        disk.path().display()
    );
    let c = http();
    let data = bytes(7, 1 << 20);
    let d = push_blob(&c, &reg.url(), "disk/app", &data);
    {
        let proxy = proxy_with(&reg.url(), &blobs);
        let r = c
            .get(blob_url(&proxy.url(), "disk/app", &d))
            .send()
            .unwrap();
        assert_eq!(r.bytes().unwrap(), data);
        let r = c
            .get(blob_url(&proxy.url(), "disk/app", &d))
            .send()
            .unwrap();
        assert_eq!(r.headers()["x-margo-cache-tier"], "disk");
        assert_eq!(r.bytes().unwrap(), data);
    }
    assert_eq!(wait_gets(&reg, "disk/app", &d, 1), 1);
    let proxy = proxy_with(&reg.url(), &blobs);
    // Links live in memory: after the restart a HEAD confirms the repository...
    let r = c
        .head(blob_url(&proxy.url(), "disk/app", &d))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    // ...and the bytes come from the disk the previous process filled.
    let url = blob_url(&proxy.url(), "disk/app", &d);
    let r = c.get(&url).send().unwrap();
    assert_eq!(r.headers()["x-margo-cache-tier"], "disk");
    assert_eq!(r.bytes().unwrap(), data);
    // Single ranges from the cache: start-end, open-ended, suffix; past the end is a 416.
    for (range, start, end) in [
        ("bytes=10-19", 10, 19),
        ("bytes=1048000-", 1048000, (1 << 20) - 1),
        ("bytes=-100", (1 << 20) - 100, (1 << 20) - 1),
    ] {
        let r = c.get(&url).header("Range", range).send().unwrap();
        assert_eq!(r.status(), 206, "{range}");
        assert_eq!(r.headers()["x-margo-cache-tier"], "disk");
        assert_eq!(
            r.headers()["content-range"],
            format!("bytes {start}-{end}/{}", 1 << 20).as_str()
        );
        assert_eq!(&r.bytes().unwrap()[..], &data[start..=end], "{range}");
    }
    let r = c
        .get(&url)
        .header("Range", "bytes=2000000-")
        .send()
        .unwrap();
    assert_eq!(r.status(), 416);
    // Several ranges go upstream as sent.
    let r = c.get(&url).header("Range", "bytes=0-1,5-6").send().unwrap();
    assert!(r.headers().get("x-margo-cache").is_none());
    assert_eq!(wait_gets(&reg, "disk/app", &d, 2), 2);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(blob_gets(&reg, "disk/app", &d), 2);
    // The memory tier answers ranges too.
    let small = bytes(8, 4096);
    let sd = push_blob(&c, &reg.url(), "disk/app", &small);
    let surl = blob_url(&proxy.url(), "disk/app", &sd);
    c.get(&surl).send().unwrap().bytes().unwrap();
    let r = c
        .get(&surl)
        .header("Range", "bytes=100-199")
        .send()
        .unwrap();
    assert_eq!(r.status(), 206);
    assert_eq!(r.headers()["x-margo-cache-tier"], "memory");
    assert_eq!(&r.bytes().unwrap()[..], &small[100..200]);
}

#[test]
fn concurrent_misses_for_one_blob_make_one_upstream_get() {
    let reg = Registry::start();
    let disk = tempfile::tempdir().unwrap();
    let c = http();
    let small = bytes(10, 512 * 1024);
    let large = bytes(11, 4 << 20);
    let sd = push_blob(&c, &reg.url(), "herd/app", &small);
    let ld = push_blob(&c, &reg.url(), "herd/app", &large);
    let proxy = proxy_with(
        &reg.url(),
        &format!(
            "{{disk: {{dir: \"{}\", max_bytes: 64MiB}}}}",
            disk.path().display()
        ),
    );
    for (d, data) in [(&sd, &small), (&ld, &large)] {
        let url = blob_url(&proxy.url(), "herd/app", d);
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let url = url.clone();
                std::thread::spawn(move || http().get(url).send().unwrap().bytes().unwrap())
            })
            .collect();
        for t in threads {
            assert_eq!(&t.join().unwrap()[..], &data[..]);
        }
        assert!(wait_gets(&reg, "herd/app", d, 1) >= 1);
        std::thread::sleep(Duration::from_millis(500));
        assert_eq!(
            blob_gets(&reg, "herd/app", d),
            1,
            "one upstream GET for {d}"
        );
    }
}
