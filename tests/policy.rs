//! Rego admission policies through the proxy against a real docker-registry: a shipped
//! policy refuses a push with its own message, audit mode forwards and logs, a pull is
//! refused (with a header on HEAD), and a hot reload changes the outcome without restart.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test and tooling code: a panic is a failure report

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;

const APP: &str = "application/vnd.margo.app.v1+json";
const DESCRIPTION: &str = "application/vnd.margo.app.description.v1+yaml";

fn proxy(reg: &Registry, dir: &std::path::Path, mode: &str) -> Proxy {
    Proxy::start(&format!(
        r#"listeners: [{{address: "{{listen}}"}}]
upstreams: [{{name: main, url: "{}"}}]
routes:
  - {{match: "apps/**", upstream: main, kind: app}}
  - {{match: "**", upstream: main}}
policy:
  directories: ["{}"]
  default_mode: {mode}
  reload: {{watch: true, interval_ms: 200}}
"#,
        reg.url(),
        dir.display()
    ))
}

fn push_minimal_package(host: &str, repo: &str) -> serde_json::Value {
    let out = Command::new(repo_root().join(".venv/bin/python"))
        .arg(repo_root().join("tests/python/oras_tool.py"))
        .args([
            "push",
            "--registry",
            host,
            "--repo",
            repo,
            "--tag",
            "0.1.0",
            "--artifact-type",
            APP,
        ])
        .arg("--file")
        .arg(format!(
            "{}|{DESCRIPTION}|margo.yaml",
            repo_root()
                .join("tests/fixtures/margo/valid-minimal.yaml")
                .display()
        ))
        .output()
        .expect("oras venv");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The same package pushed with raw HTTP (oras-py retries a 403 as an auth problem).
fn push_minimal_package_raw(base: &str, repo: &str) -> (u16, serde_json::Value) {
    let c = http();
    let yaml = std::fs::read(repo_root().join("tests/fixtures/margo/valid-minimal.yaml")).unwrap();
    let d = push_blob(&c, base, repo, &yaml);
    push_blob(&c, base, repo, EMPTY_CONFIG.as_bytes());
    let mut m: serde_json::Value =
        serde_json::from_slice(&image_manifest(&[(d, yaml.len(), DESCRIPTION)], Some(APP)))
            .unwrap();
    m["layers"][0]["annotations"] =
        serde_json::json!({"org.opencontainers.image.title": "margo.yaml"});
    let r = put_manifest(&c, base, repo, "0.1.0", &serde_json::to_vec(&m).unwrap());
    let status = r.status().as_u16();
    (status, r.json().unwrap_or_default())
}

#[test]
fn shipped_policy_refuses_a_push_with_its_message() {
    let reg = Registry::start();
    let p = proxy(&reg, &repo_root().join("policies"), "enforce");
    let (status, body) = push_minimal_package_raw(&p.url(), "apps/hello");
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["errors"][0]["code"], "DENIED");
    let messages: Vec<&str> = body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["message"].as_str())
        .collect();
    assert!(
        messages.iter().any(|m| m.contains("license file")),
        "{messages:?}"
    );
    let direct = http()
        .get(format!("{}/v2/apps/hello/manifests/0.1.0", reg.url()))
        .send()
        .unwrap();
    assert_eq!(direct.status(), 404, "nothing stored upstream");
}

#[test]
fn audit_mode_forwards_and_logs_the_decision() {
    let reg = Registry::start();
    let p = proxy(&reg, &repo_root().join("policies"), "audit");
    let r = push_minimal_package(&p.host(), "apps/hello");
    assert_eq!(r["status"], 201, "{r}");
    std::thread::sleep(Duration::from_millis(200));
    let lines = p.proc.log_lines();
    assert!(
        lines
            .iter()
            .any(|l| l.contains("policy") && l.contains("license file")),
        "decision logged: {lines:?}"
    );
}

const DENY_PULLS: &str = r#"package margo.admission.secrets

decision_points := {"pull"}

deny contains msg if {
    startswith(input.request.repository, "secret/")
    msg := sprintf("pulls from %s are not allowed", [input.request.repository])
}
"#;

#[test]
fn pull_refused_with_header_on_head_and_hot_reload() {
    let reg = Registry::start();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("empty.rego"),
        "package margo.admission.empty\n",
    )
    .unwrap();
    let p = proxy(&reg, dir.path(), "enforce");
    let c = http();
    push_blob(&c, &p.url(), "secret/app", EMPTY_CONFIG.as_bytes());
    assert_eq!(
        put_manifest(&c, &p.url(), "secret/app", "v1", &image_manifest(&[], None)).status(),
        201
    );
    let url = format!("{}/v2/secret/app/manifests/v1", p.url());
    let accept = "application/vnd.oci.image.manifest.v1+json";
    assert_eq!(
        c.get(&url)
            .header("Accept", accept)
            .send()
            .unwrap()
            .status(),
        200
    );

    // Hot reload: a new policy file takes effect without a restart.
    std::fs::write(dir.path().join("secrets.rego"), DENY_PULLS).unwrap();
    let mut status = 0;
    for _ in 0..50 {
        status = c
            .get(&url)
            .header("Accept", accept)
            .send()
            .unwrap()
            .status()
            .as_u16();
        if status == 403 {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(status, 403, "reloaded policy denies");
    let r = c.get(&url).header("Accept", accept).send().unwrap();
    let v: serde_json::Value = r.json().unwrap();
    assert_eq!(v["errors"][0]["code"], "DENIED");
    assert_eq!(
        v["errors"][0]["message"],
        "pulls from secret/app are not allowed"
    );
    let r = c.head(&url).header("Accept", accept).send().unwrap();
    assert_eq!(r.status(), 403);
    assert!(
        r.headers().contains_key("x-margo-policy-denied"),
        "{:?}",
        r.headers()
    );

    // A broken file keeps the previous set: pulls stay denied.
    std::fs::write(
        dir.path().join("broken.rego"),
        "package margo.admission.broken\ndeny contains x if {",
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(
        c.get(&url)
            .header("Accept", accept)
            .send()
            .unwrap()
            .status(),
        403
    );
    // Other repositories are unaffected.
    push_blob(&c, &p.url(), "public/app", EMPTY_CONFIG.as_bytes());
    assert_eq!(
        put_manifest(&c, &p.url(), "public/app", "v1", &image_manifest(&[], None)).status(),
        201
    );
    assert_eq!(
        c.get(format!("{}/v2/public/app/manifests/v1", p.url()))
            .header("Accept", accept)
            .send()
            .unwrap()
            .status(),
        200
    );
}

const QUARANTINE: &str = r#"package margo.admission.quarantine

decision_points := {"pull"}

deny contains msg if {
    input.descriptor.artifactType == "application/vnd.example.quarantined"
    msg := sprintf("%s is quarantined", [input.descriptor.digest])
}
"#;

#[test]
fn pull_policy_sees_the_manifest_when_the_cache_does_not_answer() {
    let reg = Registry::start();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("quarantine.rego"), QUARANTINE).unwrap();
    // No cache: every pull is passed through, and the policy must still see the body.
    let p = Proxy::start(&format!(
        r#"listeners: [{{address: "{{listen}}"}}]
upstreams: [{{name: main, url: "{}"}}]
cache: {{enabled: false}}
policy:
  directories: ["{}"]
  default_mode: enforce
"#,
        reg.url(),
        dir.path().display()
    ));
    let c = http();
    push_blob(&c, &p.url(), "lib/app", EMPTY_CONFIG.as_bytes());
    let bad = image_manifest(&[], Some("application/vnd.example.quarantined"));
    let good = image_manifest(&[], Some("application/vnd.example.fine"));
    assert_eq!(
        put_manifest(&c, &p.url(), "lib/app", "bad", &bad).status(),
        201
    );
    assert_eq!(
        put_manifest(&c, &p.url(), "lib/app", "good", &good).status(),
        201
    );
    let bad_digest = sha256(&bad);
    let accept = "application/vnd.oci.image.manifest.v1+json";
    let get = |reference: &str| {
        c.get(format!("{}/v2/lib/app/manifests/{reference}", p.url()))
            .header("Accept", accept)
            .send()
            .unwrap()
    };

    for reference in ["bad", bad_digest.as_str()] {
        let r = get(reference);
        assert_eq!(r.status(), 403, "{reference}");
        assert!(!r.headers().contains_key("x-margo-cache"), "passed through");
        let v: serde_json::Value = r.json().unwrap();
        assert_eq!(v["errors"][0]["code"], "DENIED");
        assert_eq!(
            v["errors"][0]["message"],
            format!("{bad_digest} is quarantined")
        );
    }
    let head = c
        .head(format!("{}/v2/lib/app/manifests/bad", p.url()))
        .header("Accept", accept)
        .send()
        .unwrap();
    assert_eq!(head.status(), 403);
    let ok = get("good");
    assert_eq!(ok.status(), 200);
    assert_eq!(ok.bytes().unwrap().as_ref(), good.as_slice());
}

#[test]
fn a_policy_that_does_not_compile_stops_the_start() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("bad.rego"),
        "package margo.admission.bad\n\ndeny contains x if {\n",
    )
    .unwrap();
    let cfg = dir.path().join("proxy.yaml");
    std::fs::write(
        &cfg,
        format!(
            "listeners: [{{address: \"127.0.0.1:{}\"}}]\nupstreams: [{{name: m, url: \"http://127.0.0.1:1\"}}]\npolicy: {{directories: [\"{}\"]}}\n",
            free_port(),
            dir.path().display()
        ),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_margo-proxy"))
        .args(["serve", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.rego:"), "names file and line: {err}");
}

const TAGS_AND_DELETES: &str = r#"package margo.admission.inputs

decision_points := {"tag", "delete"}

deny contains msg if {
    input.kind == "tag"
    some t in input.tags
    t == "forbidden"
    msg := sprintf("%s lists the tag %s", [input.request.repository, t])
}

deny contains msg if {
    input.kind == "delete"
    input.descriptor.artifactType == "application/vnd.example.protected"
    msg := sprintf("%s is protected", [input.descriptor.digest])
}
"#;

/// `TagInput.tags` and `DeleteInput.descriptor` carry what `policies/README.md` says
/// (the upstream's tags; the deleted manifest's descriptor), so a policy on them fires.
#[test]
fn tag_and_delete_policies_see_the_tags_and_the_descriptor() {
    let reg = Registry::start();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("inputs.rego"), TAGS_AND_DELETES).unwrap();
    let p = proxy(&reg, dir.path(), "enforce");
    let c = http();
    let base = p.url();
    push_blob(&c, &base, "lib/listed", EMPTY_CONFIG.as_bytes());
    push_blob(&c, &base, "lib/clean", EMPTY_CONFIG.as_bytes());
    let plain = image_manifest(&[], None);
    let protected = image_manifest(&[], Some("application/vnd.example.protected"));
    for (repo, tag, body) in [
        ("lib/listed", "1.0.0", &plain),
        ("lib/listed", "forbidden", &plain),
        ("lib/clean", "1.0.0", &plain),
        ("lib/clean", "keep", &protected),
    ] {
        let r = put_manifest(&c, &base, repo, tag, body);
        assert_eq!(r.status(), 201, "{repo}:{tag}");
    }

    let r = c
        .get(format!("{base}/v2/lib/listed/tags/list"))
        .send()
        .unwrap();
    assert_eq!(r.status(), 403);
    let v: serde_json::Value = r.json().unwrap();
    assert_eq!(v["errors"][0]["code"], "DENIED");
    assert_eq!(
        v["errors"][0]["message"],
        "lib/listed lists the tag forbidden"
    );
    let r = c
        .get(format!("{base}/v2/lib/clean/tags/list"))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r.json().unwrap();
    assert_eq!(v["tags"], serde_json::json!(["1.0.0", "keep"]));

    let protected_digest = sha256(&protected);
    let r = c
        .delete(format!("{base}/v2/lib/clean/manifests/{protected_digest}"))
        .send()
        .unwrap();
    assert_eq!(r.status(), 403);
    let v: serde_json::Value = r.json().unwrap();
    assert_eq!(
        v["errors"][0]["message"],
        format!("{protected_digest} is protected")
    );
    let still = c
        .head(format!("{}/v2/lib/clean/manifests/keep", reg.url()))
        .header("Accept", "application/vnd.oci.image.manifest.v1+json")
        .send()
        .unwrap();
    assert_eq!(
        still.status(),
        200,
        "the refused delete never reached the upstream"
    );
    let r = c
        .delete(format!("{base}/v2/lib/clean/manifests/{}", sha256(&plain)))
        .send()
        .unwrap();
    assert_eq!(r.status(), 202, "a plain manifest may be deleted");
}
