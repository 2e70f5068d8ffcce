//! Signature-required pulls (issue #15), end to end: docker-registry 2.8 behind
//! margo-proxy with trust policies, signatures made by `tests/python/sign_tool.py`
//! (the `cryptography` package) in the wire formats of their specifications:
//! cosign simple signing (sigstore/cosign specs/SIGNATURE_SPEC.md, cosign v2), the
//! Sigstore bundle v0.3 (sigstore/protobuf-specs sigstore_bundle.proto) as an OCI 1.1
//! referrer (cosign specs/BUNDLE_SPEC.md), and Notary Project JWS envelopes
//! (notaryproject/specifications v1.1.0, signature-envelope-jws.md). Artifacts are
//! attached with the `oras` Python package and pulled with skopeo.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test and tooling code: a panic is a failure report

mod common;

use std::path::Path;
use std::process::Command;

use common::*;
use reqwest::blocking::Client;
use serde_json::{json, Value};

const MANIFEST_MT: &str = "application/vnd.oci.image.manifest.v1+json";
const SIMPLE_SIGNING_MT: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
const BUNDLE_MT: &str = "application/vnd.dev.sigstore.bundle.v0.3+json";
const NOTARY_AT: &str = "application/vnd.cncf.notary.signature";

fn python() -> std::path::PathBuf {
    let py = repo_root().join(".venv/bin/python");
    assert!(py.exists(), "the test venv is missing: run scripts/setup");
    py
}

/// Runs `tests/python/<script>` with `args`, returns its JSON answer.
fn py(script: &str, args: &[&str]) -> Value {
    let out = Command::new(python())
        .arg(repo_root().join("tests/python").join(script))
        .args(args)
        .output()
        .expect("python");
    assert!(
        out.status.success(),
        "{script} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("json from the python tool")
}

fn b64d(v: &Value) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(v.as_str().expect("string"))
        .expect("base64")
}

/// A package: one layer, an image manifest under `tag`. Returns (digest, size).
fn push_package(c: &Client, base: &str, repo: &str, tag: &str, content: &[u8]) -> (String, usize) {
    push_blob(c, base, repo, EMPTY_CONFIG.as_bytes());
    let layer = push_blob(c, base, repo, content);
    let m = image_manifest(
        &[(
            layer,
            content.len(),
            "application/vnd.oci.image.layer.v1.tar",
        )],
        None,
    );
    let r = put_manifest(c, base, repo, tag, &m);
    assert!(r.status().is_success(), "push package: {}", r.status());
    (sha256(&m), m.len())
}

/// cosign's tag layout: payload blob, a config, the manifest under `sha256-<hex>.sig`.
fn attach_cosign(c: &Client, base: &str, repo: &str, subject: &str, signed: &Value) {
    let payload = b64d(&signed["payload"]);
    let pd = push_blob(c, base, repo, &payload);
    let config = serde_json::to_vec(&json!({
        "architecture": "", "os": "", "config": {},
        "rootfs": {"type": "layers", "diff_ids": [pd]},
    }))
    .expect("json");
    let cd = push_blob(c, base, repo, &config);
    let m = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST_MT,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": config.len()},
        "layers": [{
            "mediaType": SIMPLE_SIGNING_MT, "digest": pd, "size": payload.len(),
            "annotations": {"dev.cosignproject.cosign/signature": signed["signature"]},
        }],
    }))
    .expect("json");
    let tag = format!("{}.sig", subject.replacen(':', "-", 1));
    let r = put_manifest(c, base, repo, &tag, &m);
    assert!(
        r.status().is_success(),
        "push cosign signature: {}",
        r.status()
    );
}

/// An OCI 1.1 referrer of `subject` holding `blob`, pushed with the `oras` package.
fn attach_with_oras(
    proxy: &Proxy,
    repo: &str,
    subject: (&str, usize),
    artifact_type: &str,
    media_type: &str,
    blob: &[u8],
) -> Value {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("artifact.json");
    std::fs::write(&file, blob).expect("write");
    let size = subject.1.to_string();
    let out = py(
        "attach_tool.py",
        &[
            "--registry",
            &proxy.host(),
            "--repo",
            repo,
            "--subject-digest",
            subject.0,
            "--subject-size",
            &size,
            "--artifact-type",
            artifact_type,
            "--media-type",
            media_type,
            "--file",
            file.to_str().expect("path"),
        ],
    );
    assert!(
        matches!(out["status"].as_u64(), Some(200..=299)),
        "oras attach: {out}"
    );
    assert_eq!(
        out["oci_subject"], subject.0,
        "the proxy indexed the referrer: {out}"
    );
    out
}

fn get(c: &Client, base: &str, repo: &str, reference: &str) -> reqwest::blocking::Response {
    c.get(format!("{base}/v2/{repo}/manifests/{reference}"))
        .header("Accept", MANIFEST_MT)
        .send()
        .expect("GET manifest")
}

fn head_status(c: &Client, base: &str, repo: &str, reference: &str) -> u16 {
    c.head(format!("{base}/v2/{repo}/manifests/{reference}"))
        .header("Accept", MANIFEST_MT)
        .send()
        .expect("HEAD manifest")
        .status()
        .as_u16()
}

/// The pull is refused with an OCI `DENIED` naming the policy and `why`.
fn assert_denied(c: &Client, base: &str, repo: &str, reference: &str, why: &str) {
    let r = get(c, base, repo, reference);
    let status = r.status().as_u16();
    let body: Value = r.json().unwrap_or(Value::Null);
    assert_eq!(status, 403, "{repo}:{reference} must be refused: {body}");
    let e = &body["errors"][0];
    assert_eq!(e["code"], "DENIED", "{body}");
    let msg = e["message"].as_str().unwrap_or_default();
    assert!(
        msg.contains("trust policy `vendor`"),
        "names the policy: {msg}"
    );
    assert!(msg.contains(why), "says `{why}`: {msg}");
    assert_eq!(head_status(c, base, repo, reference), 403, "HEAD too");
}

fn assert_served(c: &Client, base: &str, repo: &str, reference: &str) {
    let r = get(c, base, repo, reference);
    let status = r.status().as_u16();
    assert_eq!(
        status,
        200,
        "{repo}:{reference}: {}",
        r.text().unwrap_or_default()
    );
    assert_eq!(
        head_status(c, base, repo, reference),
        200,
        "HEAD {repo}:{reference}"
    );
}

struct Keys {
    p256: Value,
    ed25519: Value,
    rsa: Value,
    stranger: Value,
    pki: Value,
    expired_pki: Value,
}

fn keys(dir: &Path) -> Keys {
    let kg = |kind: &str, name: &str| {
        py(
            "sign_tool.py",
            &[
                "keygen",
                "--kind",
                kind,
                "--out",
                dir.join(name).to_str().expect("path"),
            ],
        )
    };
    Keys {
        p256: kg("p256", "vendor"),
        ed25519: kg("ed25519", "ci"),
        rsa: kg("rsa", "ops"),
        stranger: kg("p256", "stranger"),
        pki: py(
            "sign_tool.py",
            &["pki", "--out", dir.join("pki").to_str().expect("p")],
        ),
        expired_pki: py(
            "sign_tool.py",
            &[
                "pki",
                "--expired",
                "--out",
                dir.join("old").to_str().expect("p"),
            ],
        ),
    }
}

fn proxy_config(registry: &str, k: &Keys, mode: &str) -> String {
    format!(
        r#"listeners:
  - address: "{{listen}}"
admin:
  address: "{{admin}}"
upstreams:
  - name: main
    url: {registry}
server:
  threads: 2
trust:
  policies:
    - name: vendor
      match: ["signed/**"]
      mode: {mode}
      keys:
        - {{name: vendor-p256, path: {}}}
        - {{name: ci-ed25519, path: {}}}
        - {{name: ops-rsa, path: {}}}
      trust_store: [{}, {}]
      trusted_identities: ["O=Margo Tests"]
"#,
        k.p256["pub"].as_str().expect("p"),
        k.ed25519["pub"].as_str().expect("p"),
        k.rsa["pub"].as_str().expect("p"),
        k.pki["ca"].as_str().expect("p"),
        k.expired_pki["ca"].as_str().expect("p"),
    )
}

fn cosign_sig(key: &Value, digest: &str, extra: &[&str]) -> Value {
    let mut args = vec![
        "cosign",
        "--key",
        key["key"].as_str().expect("k"),
        "--digest",
        digest,
    ];
    args.extend_from_slice(extra);
    py("sign_tool.py", &args)
}

fn notary_envelope(pki: &Value, digest: &str, size: usize) -> Vec<u8> {
    notary_envelope_as(pki, digest, size, "jws")
}

fn notary_envelope_as(pki: &Value, digest: &str, size: usize, envelope: &str) -> Vec<u8> {
    let size = size.to_string();
    let out = py(
        "sign_tool.py",
        &[
            "notary",
            "--key",
            pki["key"].as_str().expect("k"),
            "--leaf",
            pki["leaf"].as_str().expect("l"),
            "--ca",
            pki["ca"].as_str().expect("c"),
            "--digest",
            digest,
            "--size",
            &size,
            "--signing-time",
            pki["signing_time"].as_str().expect("t"),
            "--envelope",
            envelope,
        ],
    );
    b64d(&out["envelope"])
}

fn metrics(proxy: &Proxy) -> String {
    http()
        .get(format!("{}/metrics", proxy.admin_url()))
        .send()
        .expect("metrics")
        .text()
        .expect("text")
}

#[test]
fn enforcing_route_serves_only_manifests_with_a_trusted_signature() {
    let dir = tempfile::tempdir().expect("tempdir");
    let k = keys(dir.path());
    let registry = Registry::start();
    let proxy = Proxy::start(&proxy_config(&registry.url(), &k, "enforce"));
    let c = http();
    let (direct, base) = (registry.url(), proxy.url());

    // Signed by a trusted key (cosign tag layout, pushed straight to the upstream):
    // served, by tag and by digest, GET and HEAD.
    let (d1, _) = push_package(&c, &direct, "signed/p256", "1.0.0", b"package one");
    attach_cosign(
        &c,
        &direct,
        "signed/p256",
        &d1,
        &cosign_sig(&k.p256, &d1, &[]),
    );
    assert_served(&c, &base, "signed/p256", "1.0.0");
    assert_served(&c, &base, "signed/p256", &d1);
    // The signature itself stays readable for verifiers.
    let sig_tag = format!("{}.sig", d1.replacen(':', "-", 1));
    assert_eq!(get(&c, &base, "signed/p256", &sig_tag).status(), 200);

    // Ed25519 and RSA keys, same layout.
    let (d2, _) = push_package(&c, &direct, "signed/ed", "1.0.0", b"package ed");
    attach_cosign(
        &c,
        &direct,
        "signed/ed",
        &d2,
        &cosign_sig(&k.ed25519, &d2, &[]),
    );
    assert_served(&c, &base, "signed/ed", "1.0.0");
    let (d3, _) = push_package(&c, &direct, "signed/rsa", "1.0.0", b"package rsa");
    attach_cosign(
        &c,
        &direct,
        "signed/rsa",
        &d3,
        &cosign_sig(&k.rsa, &d3, &[]),
    );
    assert_served(&c, &base, "signed/rsa", "1.0.0");

    // Unsigned: 403 naming the policy and why.
    push_package(&c, &direct, "signed/none", "1.0.0", b"unsigned");
    assert_denied(&c, &base, "signed/none", "1.0.0", "no signature");
    // Blobs are content-addressed and not refused (documented).
    let blob = c
        .get(format!(
            "{base}/v2/signed/none/blobs/{}",
            sha256(b"unsigned")
        ))
        .send()
        .expect("blob");
    assert_eq!(blob.status(), 200);

    // Signed by an untrusted key.
    let (d4, _) = push_package(&c, &direct, "signed/stranger", "1.0.0", b"stranger");
    attach_cosign(
        &c,
        &direct,
        "signed/stranger",
        &d4,
        &cosign_sig(&k.stranger, &d4, &[]),
    );
    assert_denied(&c, &base, "signed/stranger", "1.0.0", "untrusted key");

    // Tampered payload (changed after signing).
    let (d5, _) = push_package(&c, &direct, "signed/tampered", "1.0.0", b"tampered");
    attach_cosign(
        &c,
        &direct,
        "signed/tampered",
        &d5,
        &cosign_sig(&k.p256, &d5, &["--tamper"]),
    );
    assert_denied(
        &c,
        &base,
        "signed/tampered",
        "1.0.0",
        "no trusted key verifies it",
    );

    // A valid signature, but for another digest, attached to this one.
    let (d6, _) = push_package(&c, &direct, "signed/other", "1.0.0", b"other digest");
    attach_cosign(
        &c,
        &direct,
        "signed/other",
        &d6,
        &cosign_sig(&k.p256, &d1, &[]),
    );
    assert_denied(&c, &base, "signed/other", "1.0.0", "another digest");

    // Notary JWS with a trusted chain, attached with oras through the proxy: served.
    let (d7, s7) = push_package(&c, &direct, "signed/notary", "1.0.0", b"notary signed");
    let env = notary_envelope(&k.pki, &d7, s7);
    attach_with_oras(
        &proxy,
        "signed/notary",
        (&d7, s7),
        NOTARY_AT,
        "application/jose+json",
        &env,
    );
    assert_served(&c, &base, "signed/notary", "1.0.0");

    // Notary COSE_Sign1 envelope (signature-envelope-cose.md), trusted chain: served;
    // with the expired certificate: refused.
    let (dc, sc) = push_package(&c, &direct, "signed/cose", "1.0.0", b"notary cose signed");
    let env = notary_envelope_as(&k.pki, &dc, sc, "cose");
    attach_with_oras(
        &proxy,
        "signed/cose",
        (&dc, sc),
        NOTARY_AT,
        "application/cose",
        &env,
    );
    assert_served(&c, &base, "signed/cose", "1.0.0");
    let (dx, sx) = push_package(&c, &direct, "signed/cose-old", "1.0.0", b"cose expired");
    let env = notary_envelope_as(&k.expired_pki, &dx, sx, "cose");
    attach_with_oras(
        &proxy,
        "signed/cose-old",
        (&dx, sx),
        NOTARY_AT,
        "application/cose",
        &env,
    );
    assert_denied(&c, &base, "signed/cose-old", "1.0.0", "expired certificate");

    // Notary JWS whose signing certificate has expired.
    let (d8, s8) = push_package(&c, &direct, "signed/expired", "1.0.0", b"expired cert");
    let env = notary_envelope(&k.expired_pki, &d8, s8);
    attach_with_oras(
        &proxy,
        "signed/expired",
        (&d8, s8),
        NOTARY_AT,
        "application/jose+json",
        &env,
    );
    assert_denied(&c, &base, "signed/expired", "1.0.0", "expired certificate");

    // Refused first, then a Sigstore bundle (ECDSA P-256 public key) is attached through
    // the proxy: served at once (the push re-evaluates the digest).
    let (d9, s9) = push_package(&c, &direct, "signed/later", "1.0.0", b"signed later");
    assert_denied(&c, &base, "signed/later", "1.0.0", "no signature");
    let manifest_file = dir.path().join("later.json");
    let manifest_body = get(&c, &direct, "signed/later", &d9).bytes().expect("body");
    std::fs::write(&manifest_file, &manifest_body).expect("write");
    let bundle = py(
        "sign_tool.py",
        &[
            "bundle",
            "--key",
            k.p256["key"].as_str().expect("k"),
            "--manifest",
            manifest_file.to_str().expect("p"),
        ],
    );
    attach_with_oras(
        &proxy,
        "signed/later",
        (&d9, s9),
        BUNDLE_MT,
        BUNDLE_MT,
        &b64d(&bundle["bundle"]),
    );
    assert_served(&c, &base, "signed/later", "1.0.0");

    // skopeo copies the signed package through the proxy, and not the unsigned one.
    assert!(tool_available("skopeo"), "skopeo is required");
    let layout = dir.path().join("layout");
    let copy = |repo: &str| {
        Command::new("skopeo")
            .args(["copy", "--src-tls-verify=false", "--retry-times", "0"])
            .arg(format!("docker://{}/{repo}:1.0.0", proxy.host()))
            .arg(format!(
                "oci:{}:{}",
                layout.display(),
                repo.replace('/', "-")
            ))
            .output()
            .expect("skopeo")
    };
    let ok = copy("signed/p256");
    assert!(
        ok.status.success(),
        "skopeo copy of the signed package: {}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let refused = copy("signed/none");
    assert!(
        !refused.status.success(),
        "skopeo copy of the unsigned package must fail"
    );
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        err.contains("denied") || err.contains("403"),
        "skopeo says why: {err}"
    );

    // Metrics: verifications by format and result, the latency histogram, decisions.
    let m = metrics(&proxy);
    for want in [
        r#"margo_proxy_trust_verifications_total{format="cosign",result="verified"}"#,
        r#"margo_proxy_trust_verifications_total{format="cosign",result="untrusted_key"}"#,
        r#"margo_proxy_trust_verifications_total{format="cosign",result="wrong_digest"}"#,
        r#"margo_proxy_trust_verifications_total{format="notary",result="verified"}"#,
        r#"margo_proxy_trust_verifications_total{format="notary",result="expired_certificate"}"#,
        r#"margo_proxy_trust_verifications_total{format="cosign-bundle",result="verified"}"#,
        r#"margo_proxy_trust_verifications_total{format="none",result="no_signature"}"#,
        r#"margo_proxy_trust_decisions_total{decision="deny",policy="vendor"}"#,
        "margo_proxy_trust_verification_seconds_bucket",
    ] {
        assert!(
            m.contains(want),
            "metric {want} missing:\n{}",
            m.lines()
                .filter(|l| l.contains("trust"))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
}

#[test]
fn audit_mode_logs_and_counts_but_serves() {
    let dir = tempfile::tempdir().expect("tempdir");
    let k = keys(dir.path());
    let registry = Registry::start();
    let proxy = Proxy::start(&proxy_config(&registry.url(), &k, "audit"));
    let c = http();
    push_package(
        &c,
        &registry.url(),
        "signed/unsigned",
        "1.0.0",
        b"unsigned, audited",
    );
    assert_served(&c, &proxy.url(), "signed/unsigned", "1.0.0");
    let m = metrics(&proxy);
    assert!(
        m.contains(r#"margo_proxy_trust_decisions_total{decision="audit",policy="vendor"}"#),
        "audit decision counted"
    );
    assert!(
        proxy
            .proc
            .log_lines()
            .iter()
            .any(|l| l.contains("manifest has no valid signature") && l.contains("no signature")),
        "audit decision logged"
    );
}

#[test]
fn rego_pull_policies_see_input_signatures() {
    let dir = tempfile::tempdir().expect("tempdir");
    let k = keys(dir.path());
    let registry = Registry::start();
    let rego_dir = dir.path().join("rego");
    std::fs::create_dir_all(&rego_dir).expect("mkdir");
    std::fs::write(
        rego_dir.join("two.rego"),
        r#"package margo.admission.two_signers
decision_points := {"pull"}
signed_by(id) if { some s in input.signatures; s.verified; s.identity == id }
deny contains "needs the CI signature too" if {
  count(input.signatures) > 0
  not signed_by("ci-ed25519")
}
"#,
    )
    .expect("write rego");
    let config = format!(
        "{}policy:\n  directories: [\"{}\"]\n",
        proxy_config(&registry.url(), &k, "enforce"),
        rego_dir.display()
    );
    let proxy = Proxy::start(&config);
    let c = http();
    let (direct, base) = (registry.url(), proxy.url());
    // Vendor signature only: the trust policy passes it, the Rego rule wants CI's too.
    let (d1, _) = push_package(&c, &direct, "signed/one", "1.0.0", b"vendor only");
    attach_cosign(
        &c,
        &direct,
        "signed/one",
        &d1,
        &cosign_sig(&k.p256, &d1, &[]),
    );
    let r = get(&c, &base, "signed/one", "1.0.0");
    assert_eq!(r.status(), 403);
    let body = r.text().unwrap_or_default();
    assert!(
        body.contains("needs the CI signature too"),
        "the Rego denial: {body}"
    );
    // Signed by the CI key: served.
    let (d2, _) = push_package(&c, &direct, "signed/two", "1.0.0", b"ci signed");
    attach_cosign(
        &c,
        &direct,
        "signed/two",
        &d2,
        &cosign_sig(&k.ed25519, &d2, &[]),
    );
    assert_served(&c, &base, "signed/two", "1.0.0");
}
