//! The referrers API through margo-proxy in front of docker-registry 2.8, which has
//! none (OCI distribution spec v1.1, "Listing Referrers" and "Referrers Tag Schema"):
//! emulated from the `<alg>-<hex>` tag, kept current on pushes and deletes through the
//! proxy, picking up what clients wrote to the fallback tag themselves, filtered by
//! `artifactType`, with the bookkeeping tags hidden from `tags/list`.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test and tooling code: a panic is a failure report

mod common;

use common::*;
use reqwest::blocking::Client;
use serde_json::{json, Value};

const MANIFEST_MT: &str = "application/vnd.oci.image.manifest.v1+json";
const INDEX_MT: &str = "application/vnd.oci.image.index.v1+json";
const REPO: &str = "apps/referred";

fn push_subject(c: &Client, base: &str) -> (String, usize) {
    push_blob(c, base, REPO, EMPTY_CONFIG.as_bytes());
    let layer = push_blob(c, base, REPO, b"the subject's layer");
    let m = image_manifest(
        &[(layer, 19, "application/vnd.oci.image.layer.v1.tar")],
        None,
    );
    let r = put_manifest(c, base, REPO, "1.0.0", &m);
    assert!(r.status().is_success());
    (sha256(&m), m.len())
}

fn referrer_body(subject: &(String, usize), artifact_type: &str, n: usize) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST_MT,
        "artifactType": artifact_type,
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": EMPTY_DIGEST, "size": 2},
        "layers": [{"mediaType": "application/vnd.oci.empty.v1+json", "digest": EMPTY_DIGEST, "size": 2}],
        "subject": {"mediaType": MANIFEST_MT, "digest": subject.0, "size": subject.1},
        "annotations": {"org.example.n": n.to_string()},
    }))
    .expect("json")
}

fn list(
    c: &Client,
    base: &str,
    subject: &str,
    query: &str,
) -> (reqwest::header::HeaderMap, Vec<Value>) {
    let r = c
        .get(format!("{base}/v2/{REPO}/referrers/{subject}{query}"))
        .send()
        .expect("referrers");
    assert_eq!(r.status(), 200);
    let headers = r.headers().clone();
    assert_eq!(
        headers.get("content-type").and_then(|v| v.to_str().ok()),
        Some(INDEX_MT)
    );
    let v: Value = r.json().expect("index");
    (
        headers,
        v["manifests"].as_array().cloned().unwrap_or_default(),
    )
}

fn digests(list: &[Value]) -> Vec<String> {
    let mut d: Vec<String> = list
        .iter()
        .map(|m| m["digest"].as_str().unwrap_or_default().to_owned())
        .collect();
    d.sort();
    d
}

#[test]
fn referrers_are_emulated_and_kept_current_through_the_proxy() {
    let registry = Registry::start();
    let proxy = Proxy::in_front_of(&registry.url());
    let c = http();
    let (direct, base) = (registry.url(), proxy.url());
    // Direct, 2.8 has no referrers API: the proxy's answers below are its own.
    let d = c
        .get(format!("{direct}/v2/{REPO}/referrers/{EMPTY_DIGEST}"))
        .send()
        .expect("direct");
    assert_eq!(d.status(), 404);

    let subject = push_subject(&c, &base);
    let (_, none) = list(&c, &base, &subject.0, "");
    assert!(none.is_empty(), "no referrers yet");

    // 20 referrer pushes to one subject at once: all 20 listed.
    let pushed: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..20)
            .map(|n| {
                let (c, base, subject) = (&c, &base, &subject);
                s.spawn(move || {
                    let at = if n % 2 == 0 {
                        "application/vnd.example.sbom"
                    } else {
                        "application/vnd.example.sig"
                    };
                    let body = referrer_body(subject, at, n);
                    let digest = sha256(&body);
                    let r = put_manifest(c, base, REPO, &digest, &body);
                    assert!(r.status().is_success(), "push {n}: {}", r.status());
                    assert_eq!(
                        r.headers().get("oci-subject").and_then(|v| v.to_str().ok()),
                        Some(subject.0.as_str()),
                        "push {n} answered with OCI-Subject"
                    );
                    digest
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("push thread"))
            .collect()
    });
    let mut want = pushed.clone();
    want.sort();
    let (_, all) = list(&c, &base, &subject.0, "");
    assert_eq!(
        digests(&all),
        want,
        "every concurrent referrer is listed exactly once"
    );
    let sample = all
        .iter()
        .find(|m| m["digest"] == pushed[3])
        .expect("listed");
    assert_eq!(sample["artifactType"], "application/vnd.example.sig");
    assert_eq!(sample["annotations"]["org.example.n"], "3");
    assert_eq!(sample["mediaType"], MANIFEST_MT);

    // artifactType filtering.
    let (h, sboms) = list(
        &c,
        &base,
        &subject.0,
        "?artifactType=application%2Fvnd.example.sbom",
    );
    assert_eq!(
        h.get("oci-filters-applied").and_then(|v| v.to_str().ok()),
        Some("artifactType")
    );
    assert_eq!(sboms.len(), 10);
    assert!(sboms
        .iter()
        .all(|m| m["artifactType"] == "application/vnd.example.sbom"));

    // The fallback tag is the proxy's bookkeeping: in the upstream's tag list, not in
    // the proxy's.
    let fallback = subject.0.replacen(':', "-", 1);
    let tags = |b: &str| -> Vec<String> {
        let v: Value = c
            .get(format!("{b}/v2/{REPO}/tags/list"))
            .send()
            .expect("tags")
            .json()
            .expect("json");
        v["tags"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .filter_map(|t| t.as_str().map(str::to_owned))
            .collect()
    };
    assert!(
        tags(&direct).contains(&fallback),
        "upstream holds the fallback index"
    );
    assert_eq!(
        tags(&base),
        vec!["1.0.0".to_owned()],
        "hidden through the proxy"
    );

    // Deleting a referrer removes it from the index.
    let r = c
        .delete(format!("{base}/v2/{REPO}/manifests/{}", pushed[0]))
        .send()
        .expect("delete");
    assert!(r.status().is_success(), "delete: {}", r.status());
    let (_, after) = list(&c, &base, &subject.0, "");
    assert_eq!(after.len(), 19);
    assert!(
        !digests(&after).contains(&pushed[0]),
        "deleted referrer gone"
    );

    // A client that wrote the fallback itself, straight to the upstream (as oras and
    // older cosign do against a registry without the API): found through the proxy.
    let own = referrer_body(&subject, "application/vnd.example.attestation", 99);
    let own_digest = sha256(&own);
    assert!(put_manifest(&c, &direct, REPO, &own_digest, &own)
        .status()
        .is_success());
    let index: Value = c
        .get(format!("{direct}/v2/{REPO}/manifests/{fallback}"))
        .header("Accept", INDEX_MT)
        .send()
        .expect("fallback")
        .json()
        .expect("index");
    let mut manifests = index["manifests"].as_array().cloned().unwrap_or_default();
    manifests.push(
        json!({"mediaType": MANIFEST_MT, "digest": own_digest, "size": own.len(),
        "artifactType": "application/vnd.example.attestation"}),
    );
    let body = serde_json::to_vec(
        &json!({"schemaVersion": 2, "mediaType": INDEX_MT, "manifests": manifests}),
    )
    .expect("json");
    let r = c
        .put(format!("{direct}/v2/{REPO}/manifests/{fallback}"))
        .header("Content-Type", INDEX_MT)
        .body(body)
        .send()
        .expect("PUT fallback");
    assert!(
        r.status().is_success(),
        "fallback written directly: {}",
        r.status()
    );
    // The proxy's listing is cached like a tag (cache.tag_ttl, 30 s by default); a push
    // through the proxy invalidates it, and the index then holds both writers' entries.
    let extra = referrer_body(&subject, "application/vnd.example.sbom", 100);
    let extra_digest = sha256(&extra);
    assert!(put_manifest(&c, &base, REPO, &extra_digest, &extra)
        .status()
        .is_success());
    let (_, merged) = list(&c, &base, &subject.0, "");
    let ds = digests(&merged);
    assert!(
        ds.contains(&own_digest),
        "the client's own fallback entry is listed"
    );
    assert!(ds.contains(&extra_digest), "and the proxy's newest");
    assert_eq!(merged.len(), 21);

    // A subject never pushed still gets its referrers.
    let ghost = ("sha256:".to_owned() + &"ab".repeat(32), 10);
    let orphan = referrer_body(&ghost, "application/vnd.example.sig", 7);
    let r = put_manifest(&c, &base, REPO, &sha256(&orphan), &orphan);
    assert_eq!(
        r.headers().get("oci-subject").and_then(|v| v.to_str().ok()),
        Some(ghost.0.as_str())
    );
    let (_, orphans) = list(&c, &base, &ghost.0, "");
    assert_eq!(digests(&orphans), vec![sha256(&orphan)]);
}
