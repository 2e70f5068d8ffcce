//! The whole OCI Distribution API through the proxy against a real `docker-registry`,
//! with raw HTTP so every header and status is visible.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test and tooling code: a panic is a failure report

mod common;

use common::*;

fn setup() -> (Registry, Proxy, reqwest::blocking::Client) {
    let reg = Registry::start();
    let proxy = Proxy::in_front_of(&reg.url());
    (reg, proxy, http())
}

#[test]
fn ping_answers_with_api_version() {
    let (_reg, proxy, c) = setup();
    let r = c.get(format!("{}/v2/", proxy.url())).send().unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["docker-distribution-api-version"],
        "registry/2.0"
    );
    assert!(r.headers().contains_key("x-request-id"));
}

#[test]
fn request_id_is_echoed_back() {
    let (_reg, proxy, c) = setup();
    let r = c
        .get(format!("{}/v2/", proxy.url()))
        .header("X-Request-Id", "test-id-42")
        .send()
        .unwrap();
    assert_eq!(r.headers()["x-request-id"], "test-id-42");
}

#[test]
fn monolithic_push_then_pull_by_tag_and_digest() {
    let (_reg, proxy, c) = setup();
    let base = proxy.url();
    let layer = b"hello margo".to_vec();
    let ld = push_blob(&c, &base, "apps/hello", &layer);
    push_blob(&c, &base, "apps/hello", EMPTY_CONFIG.as_bytes());
    let manifest = image_manifest(
        &[(ld.clone(), layer.len(), "application/octet-stream")],
        None,
    );
    let md = sha256(&manifest);
    let r = put_manifest(&c, &base, "apps/hello", "1.0.0", &manifest);
    assert_eq!(r.status(), 201);
    assert_eq!(r.headers()["docker-content-digest"], md.as_str());
    let loc = r.headers()["location"].to_str().unwrap().to_owned();
    assert!(loc.contains("/v2/apps/hello/manifests/"), "{loc}");

    for reference in ["1.0.0", md.as_str()] {
        let r = c
            .get(format!("{base}/v2/apps/hello/manifests/{reference}"))
            .header("Accept", "application/vnd.oci.image.manifest.v1+json")
            .send()
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["docker-content-digest"], md.as_str());
        assert_eq!(
            r.headers()["content-type"],
            "application/vnd.oci.image.manifest.v1+json"
        );
        assert_eq!(r.bytes().unwrap().as_ref(), manifest.as_slice());
        let r = c
            .head(format!("{base}/v2/apps/hello/manifests/{reference}"))
            .header("Accept", "application/vnd.oci.image.manifest.v1+json")
            .send()
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(
            r.headers()["content-length"],
            manifest.len().to_string().as_str()
        );
    }
    let r = c
        .get(format!("{base}/v2/apps/hello/blobs/{ld}"))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["docker-content-digest"], ld.as_str());
    assert_eq!(r.bytes().unwrap().as_ref(), layer.as_slice());
}

#[test]
fn chunked_upload_with_patches() {
    let (_reg, proxy, c) = setup();
    let base = proxy.url();
    let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let digest = sha256(&data);
    let r = c
        .post(format!("{base}/v2/chunky/blobs/uploads/"))
        .send()
        .unwrap();
    assert_eq!(r.status(), 202);
    let mut loc = location(&base, &r);
    assert!(
        loc.starts_with(&base),
        "Location must point at the proxy: {loc}"
    );
    let mut offset = 0;
    for chunk in data.chunks(100_000) {
        let r = c
            .patch(&loc)
            .header("Content-Type", "application/octet-stream")
            .header(
                "Content-Range",
                format!("{}-{}", offset, offset + chunk.len() - 1),
            )
            .header("Content-Length", chunk.len().to_string())
            .body(chunk.to_vec())
            .send()
            .unwrap();
        assert_eq!(r.status(), 202, "{}", r.text().unwrap_or_default());
        assert_eq!(
            r.headers()["range"],
            format!("0-{}", offset + chunk.len() - 1).as_str()
        );
        offset += chunk.len();
        loc = location(&base, &r);
        assert!(loc.starts_with(&base), "{loc}");
    }
    // Upload status.
    let r = c.get(&loc).send().unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(
        r.headers()["range"],
        format!("0-{}", data.len() - 1).as_str()
    );
    let sep = if loc.contains('?') { '&' } else { '?' };
    let r = c.put(format!("{loc}{sep}digest={digest}")).send().unwrap();
    assert_eq!(r.status(), 201);
    let r = c
        .get(format!("{base}/v2/chunky/blobs/{digest}"))
        .send()
        .unwrap();
    assert_eq!(r.bytes().unwrap().as_ref(), data.as_slice());
}

#[test]
fn streamed_upload_without_content_length() {
    let (_reg, proxy, c) = setup();
    let base = proxy.url();
    let data: Vec<u8> = (0..2_000_000u32).map(|i| (i * 7 % 256) as u8).collect();
    let digest = sha256(&data);
    let r = c
        .post(format!("{base}/v2/streamed/blobs/uploads/"))
        .send()
        .unwrap();
    let loc = location(&base, &r);
    // A reader body is sent with chunked transfer encoding.
    let body = reqwest::blocking::Body::new(std::io::Cursor::new(data.clone()));
    let r = c
        .patch(&loc)
        .header("Content-Type", "application/octet-stream")
        .body(body)
        .send()
        .unwrap();
    assert_eq!(r.status(), 202, "{}", r.text().unwrap_or_default());
    let loc = location(&base, &r);
    let sep = if loc.contains('?') { '&' } else { '?' };
    let r = c.put(format!("{loc}{sep}digest={digest}")).send().unwrap();
    assert_eq!(r.status(), 201);
    let r = c
        .head(format!("{base}/v2/streamed/blobs/{digest}"))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["content-length"],
        data.len().to_string().as_str()
    );
}

#[test]
fn cancel_upload() {
    let (_reg, proxy, c) = setup();
    let base = proxy.url();
    let r = c
        .post(format!("{base}/v2/cancel/blobs/uploads/"))
        .send()
        .unwrap();
    let loc = location(&base, &r);
    let r = c.delete(&loc).send().unwrap();
    assert_eq!(r.status(), 204);
    let r = c.get(&loc).send().unwrap();
    assert_eq!(r.status(), 404);
    let v: serde_json::Value = r.json().unwrap();
    assert_eq!(v["errors"][0]["code"], "BLOB_UPLOAD_UNKNOWN");
}

#[test]
fn cross_repository_mount() {
    let (_reg, proxy, c) = setup();
    let base = proxy.url();
    let data = b"mount me".to_vec();
    let digest = push_blob(&c, &base, "source/repo", &data);
    let r = c
        .post(format!(
            "{base}/v2/target/repo/blobs/uploads/?mount={digest}&from=source/repo"
        ))
        .send()
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().unwrap_or_default());
    assert_eq!(r.headers()["docker-content-digest"], digest.as_str());
    let loc = location(&base, &r);
    assert!(
        loc.starts_with(&format!("{base}/v2/target/repo/blobs/")),
        "{loc}"
    );
    let r = c
        .get(format!("{base}/v2/target/repo/blobs/{digest}"))
        .send()
        .unwrap();
    assert_eq!(r.bytes().unwrap().as_ref(), data.as_slice());
}

#[test]
fn range_reads_on_blobs() {
    let (_reg, proxy, c) = setup();
    let base = proxy.url();
    let data: Vec<u8> = (0..10_000u32).map(|i| (i % 256) as u8).collect();
    let digest = push_blob(&c, &base, "ranged", &data);
    let r = c
        .get(format!("{base}/v2/ranged/blobs/{digest}"))
        .header("Range", "bytes=100-199")
        .send()
        .unwrap();
    assert_eq!(r.status(), 206);
    assert_eq!(r.headers()["content-range"], "bytes 100-199/10000");
    assert_eq!(r.bytes().unwrap().as_ref(), &data[100..200]);
}

#[test]
fn tag_and_catalog_pagination_with_link_header() {
    let (reg, proxy, c) = setup();
    let base = proxy.url();
    push_blob(&c, &base, "paged", EMPTY_CONFIG.as_bytes());
    let manifest = image_manifest(&[], None);
    for t in ["a", "b", "c", "d", "e"] {
        assert_eq!(put_manifest(&c, &base, "paged", t, &manifest).status(), 201);
    }
    // Tags: distribution 2.8 ignores `n`/`last` (it answers every tag, unsorted); the
    // proxy pages them itself, in lexical order, with a `Link` while more follow
    // (`tests/registry_catalog.rs` walks them under a rewrite). Without either, the
    // client sees what the upstream answers.
    for (q, want, link) in [
        ("n=2", serde_json::json!(["a", "b"]), true),
        ("n=2&last=b", serde_json::json!(["c", "d"]), true),
        ("n=2&last=d", serde_json::json!(["e"]), false),
    ] {
        let r = c
            .get(format!("{base}/v2/paged/tags/list?{q}"))
            .send()
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers().contains_key("link"), link, "?{q}");
        let p: serde_json::Value = r.json().unwrap();
        assert_eq!(
            p,
            serde_json::json!({"name": "paged", "tags": want}),
            "?{q}"
        );
    }
    let direct: serde_json::Value = c
        .get(format!("{}/v2/paged/tags/list", reg.url()))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let proxied: serde_json::Value = c
        .get(format!("{base}/v2/paged/tags/list"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(direct, proxied);
    // The catalog paginates in 2.8: the Link header must come back pointing at the proxy.
    for r in ["paged2", "paged3"] {
        push_blob(&c, &base, r, EMPTY_CONFIG.as_bytes());
        assert_eq!(put_manifest(&c, &base, r, "t", &manifest).status(), 201);
    }
    let r = c.get(format!("{base}/v2/_catalog?n=2")).send().unwrap();
    assert_eq!(r.status(), 200);
    let link = r.headers()["link"].to_str().unwrap().to_owned();
    assert!(
        link.contains("/v2/_catalog?") && link.contains("rel=\"next\""),
        "{link}"
    );
    assert!(
        !link.contains(&format!(":{}", reg.port)),
        "Link leaks the upstream: {link}"
    );
    let v: serde_json::Value = r.json().unwrap();
    assert_eq!(v["repositories"], serde_json::json!(["paged", "paged2"]));
    let next = link
        .split(['<', '>'])
        .nth(1)
        .map(|u| {
            if u.starts_with('/') {
                format!("{base}{u}")
            } else {
                u.to_owned()
            }
        })
        .unwrap();
    let v: serde_json::Value = c.get(next).send().unwrap().json().unwrap();
    assert_eq!(v["repositories"], serde_json::json!(["paged3"]));
}

#[test]
fn deletes_of_manifests_and_blobs() {
    let (_reg, proxy, c) = setup();
    let base = proxy.url();
    let data = b"delete me".to_vec();
    let ld = push_blob(&c, &base, "del", &data);
    push_blob(&c, &base, "del", EMPTY_CONFIG.as_bytes());
    let manifest = image_manifest(
        &[(ld.clone(), data.len(), "application/octet-stream")],
        None,
    );
    let md = sha256(&manifest);
    assert_eq!(
        put_manifest(&c, &base, "del", "v1", &manifest).status(),
        201
    );
    let r = c
        .delete(format!("{base}/v2/del/manifests/{md}"))
        .send()
        .unwrap();
    assert_eq!(r.status(), 202);
    let r = c
        .get(format!("{base}/v2/del/manifests/{md}"))
        .send()
        .unwrap();
    assert_eq!(r.status(), 404);
    let r = c
        .delete(format!("{base}/v2/del/blobs/{ld}"))
        .send()
        .unwrap();
    assert_eq!(r.status(), 202);
    let r = c.head(format!("{base}/v2/del/blobs/{ld}")).send().unwrap();
    assert_eq!(r.status(), 404);
}

#[test]
fn catalog_passes_through() {
    let (_reg, proxy, c) = setup();
    let base = proxy.url();
    push_blob(&c, &base, "cat/one", b"x");
    push_blob(&c, &base, "cat/one", EMPTY_CONFIG.as_bytes());
    assert_eq!(
        put_manifest(&c, &base, "cat/one", "t", &image_manifest(&[], None)).status(),
        201
    );
    let v: serde_json::Value = c
        .get(format!("{base}/v2/_catalog"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert!(v["repositories"]
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r == "cat/one"));
}

#[test]
fn referrers_are_answered_even_where_the_upstream_has_none() {
    // distribution 2.8 has no referrers API (404 direct); issue #15: through the proxy
    // every upstream has it, emulated from the referrers tag schema: an empty index here,
    // with the filter acknowledged.
    let (reg, proxy, c) = setup();
    let path = format!("/v2/r/referrers/{EMPTY_DIGEST}?artifactType=application%2Fexample");
    let direct = c
        .get(format!("{}{path}", reg.url()))
        .send()
        .unwrap()
        .status();
    assert_eq!(direct, 404);
    let proxied = c.get(format!("{}{path}", proxy.url())).send().unwrap();
    assert_eq!(proxied.status(), 200);
    assert_eq!(
        proxied
            .headers()
            .get("oci-filters-applied")
            .and_then(|v| v.to_str().ok()),
        Some("artifactType")
    );
    let v: serde_json::Value = proxied.json().unwrap();
    assert_eq!(v["mediaType"], "application/vnd.oci.image.index.v1+json");
    assert_eq!(v["manifests"], serde_json::json!([]));
}

#[test]
fn invalid_names_get_oci_errors_from_the_proxy() {
    let (reg, proxy, c) = setup();
    let r = c
        .get(format!("{}/v2/UPPER/tags/list", proxy.url()))
        .send()
        .unwrap();
    assert_eq!(r.status(), 400);
    let v: serde_json::Value = r.json().unwrap();
    assert_eq!(v["errors"][0]["code"], "NAME_INVALID");
    let r = c
        .get(format!("{}/v2/x/blobs/sha256:nothex", proxy.url()))
        .send()
        .unwrap();
    assert_eq!(r.status(), 400);
    let v: serde_json::Value = r.json().unwrap();
    assert_eq!(v["errors"][0]["code"], "DIGEST_INVALID");
    // Nothing of it reached the upstream.
    assert_eq!(reg.wait_for_requests("GET", "UPPER", 1), 0);
}

#[test]
fn oversized_manifest_is_refused_before_the_upstream() {
    let (reg, proxy, c) = setup();
    let big = vec![b' '; 5 << 20];
    let r = put_manifest(&c, &proxy.url(), "big", "v1", &big);
    assert_eq!(r.status(), 413);
    let v: serde_json::Value = r.json().unwrap();
    assert_eq!(v["errors"][0]["code"], "SIZE_INVALID");
    assert_eq!(reg.wait_for_requests("PUT", "/v2/big/manifests", 1), 0);
}

#[test]
fn upstream_down_gives_an_oci_error() {
    let port = free_port();
    let proxy = Proxy::in_front_of(&format!("http://127.0.0.1:{port}"));
    let c = http();
    let r = c
        .get(format!("{}/v2/x/tags/list", proxy.url()))
        .send()
        .unwrap();
    assert_eq!(r.status(), 502);
    let v: serde_json::Value = r.json().unwrap();
    assert!(v["errors"][0]["code"].is_string());
    let r = c
        .get(format!("{}/readyz", proxy.admin_url()))
        .send()
        .unwrap();
    assert_eq!(r.status(), 503);
}

#[test]
fn health_endpoints_on_admin_listener() {
    let (_reg, proxy, c) = setup();
    assert_eq!(
        c.get(format!("{}/healthz", proxy.admin_url()))
            .send()
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        c.get(format!("{}/readyz", proxy.admin_url()))
            .send()
            .unwrap()
            .status(),
        200
    );
    // Not on the registry port.
    assert_eq!(
        c.get(format!("{}/healthz", proxy.url()))
            .send()
            .unwrap()
            .status(),
        404
    );
}

#[test]
fn forwarded_headers_reach_the_upstream() {
    // distribution builds upload URLs from X-Forwarded-Proto/Host: with them set by the
    // proxy, the URL it hands out names the proxy even before rewriting.
    let (reg, proxy, c) = setup();
    let r = c
        .post(format!("{}/v2/fwd/blobs/uploads/", proxy.url()))
        .send()
        .unwrap();
    let loc = r.headers()["location"].to_str().unwrap();
    assert!(loc.starts_with(&proxy.url()), "{loc}");
    assert!(
        reg.wait_for_requests("POST", "/v2/fwd/blobs/uploads/", 1) >= 1,
        "upstream saw the request"
    );
}
