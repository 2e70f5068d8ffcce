//! The CNCF App Registry API (`/cnr/...`) against a real docker-registry, side by side
//! with the appr 0.7.4 reference server (Python, redis backend), driven by appr's own
//! client library; Margo packages through it; `appr login` through the token bridge.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test and tooling code: a panic is a failure report

mod common;

use std::collections::BTreeMap;
use std::io::Read;
use std::process::Command;

use base64::Engine;
use common::*;
use serde_json::{json, Value};

fn python() -> std::path::PathBuf {
    let py = repo_root().join(".venv-appr/bin/python");
    assert!(
        py.exists(),
        "{} is missing: run scripts/setup (the appr reference venv)",
        py.display()
    );
    py
}

fn config(reg: &Registry, extra: &str) -> String {
    format!(
        r#"listeners: [{{address: "{{listen}}"}}]
admin: {{address: "{{admin}}"}}
upstreams: [{{name: main, url: "{}"}}]
routes:
  - {{match: "cnr/margo/**", upstream: main, kind: app, mode: enforce}}
  - {{match: "**", upstream: main}}
appr: {{enabled: true, prefix: cnr}}
{extra}"#,
        reg.url()
    )
}

/// The package directory as a `.tar.gz` (files at their relative paths).
fn tarball_of(dir: &std::path::Path) -> Vec<u8> {
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    let mut tar = tar::Builder::new(gz);
    tar.append_dir_all(".", dir).unwrap();
    tar.into_inner().unwrap().finish().unwrap()
}

fn unpack(blob: &[u8]) -> BTreeMap<String, Vec<u8>> {
    let mut a = tar::Archive::new(flate2::read::GzDecoder::new(blob));
    let mut out = BTreeMap::new();
    for e in a.entries().unwrap() {
        let mut e = e.unwrap();
        let path = e.path().unwrap().to_string_lossy().into_owned();
        let mut data = Vec::new();
        e.read_to_end(&mut data).unwrap();
        out.insert(path, data);
    }
    out
}

fn files_of(dir: &std::path::Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let rel = p.strip_prefix(dir).unwrap().to_string_lossy().into_owned();
                out.insert(rel, std::fs::read(&p).unwrap());
            }
        }
    }
    out
}

fn b64(b: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(b)
}

#[test]
fn side_by_side_with_the_reference_server_and_margo_packages() {
    let py = python();
    let reg = Registry::start();
    let redis = Redis::start();
    let ref_port = free_port();
    let mut cmd = Command::new(&py);
    cmd.arg(repo_root().join("tests/appr/reference_server.py"))
        .arg(ref_port.to_string())
        .arg(redis.port.to_string());
    let _reference = Proc::spawn_public(cmd, ref_port, "appr reference server");
    let proxy = Proxy::start(&config(&reg, ""));

    // Every endpoint, success and error cases, against both; then ApprClient.
    let out = Command::new(&py)
        .arg(repo_root().join("tests/appr/side_by_side.py"))
        .arg(format!("http://127.0.0.1:{ref_port}"))
        .arg(proxy.url())
        .output()
        .expect("run side_by_side.py");
    let text = String::from_utf8_lossy(&out.stdout);
    println!("{text}");
    assert!(
        out.status.success(),
        "side by side failed:\n{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("ALL SAME") && text.contains("CLIENT") && text.contains("CONCURRENT"));

    let c = http();
    let api = format!("{}/cnr/api/v1/packages", proxy.url());
    // An OCI-pushed Margo app is listed and pulled with identical files.
    let dir = repo_root().join("examples/packages/line-monitor");
    let pushed = Command::new(env!("CARGO_BIN_EXE_margo-proxy"))
        .arg("push")
        .arg(&dir)
        .arg(format!("{}/cnr/margo/line-monitor:1.4.0", proxy.host()))
        .arg("--plain-http")
        .output()
        .unwrap();
    assert!(
        pushed.status.success(),
        "{}",
        String::from_utf8_lossy(&pushed.stderr)
    );
    let list: Value = c
        .get(format!("{api}?namespace=margo"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(list[0]["name"], "margo/line-monitor", "{list}");
    assert_eq!(list[0]["manifests"], json!(["margo"]));
    assert_eq!(list[0]["releases"], json!(["1.4.0"]));
    let r = c
        .get(format!("{api}/margo/line-monitor/1.4.0/margo/pull"))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    let first = r.bytes().unwrap().to_vec();
    assert_eq!(
        unpack(&first),
        files_of(&dir),
        "pulled files differ from the package"
    );
    // Deterministic: the same bytes again, by the release's digest.
    let shown: Value = c
        .get(format!("{api}/margo/line-monitor/1.4.0/margo"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let digest = shown["content"]["digest"].as_str().unwrap();
    let again = c
        .get(format!("{api}/margo/line-monitor/blobs/sha256/{digest}"))
        .send()
        .unwrap()
        .bytes()
        .unwrap();
    assert_eq!(again.as_ref(), first.as_slice());

    // A Margo push over appr becomes an OCI Margo package, admitted like any push.
    let body = json!({"release": "1.4.0", "media_type": "margo", "blob": b64(&tarball_of(&dir))});
    let r = c
        .post(format!("{api}/margo/lm-copy"))
        .json(&body)
        .send()
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().unwrap_or_default());
    let m: Value = c
        .get(format!(
            "{}/v2/cnr/margo/lm-copy/manifests/1.4.0",
            proxy.url()
        ))
        .header("Accept", "application/vnd.oci.image.manifest.v1+json")
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(m["artifactType"], "application/vnd.margo.app.v1+json");
    let r = c
        .get(format!("{api}/margo/lm-copy/1.4.0/margo/pull"))
        .send()
        .unwrap();
    assert_eq!(unpack(&r.bytes().unwrap()), files_of(&dir));

    // An invalid Margo push is refused with the rule named, and nothing is tagged.
    let broken = repo_root().join("examples/packages/broken-app");
    let body =
        json!({"release": "1.0.0", "media_type": "margo", "blob": b64(&tarball_of(&broken))});
    let r = c
        .post(format!("{api}/margo/broken-app"))
        .json(&body)
        .send()
        .unwrap();
    assert_eq!(r.status(), 422);
    let e: Value = r.json().unwrap();
    assert_eq!(e["code"], "invalid-release", "{e}");
    let messages: Vec<&str> = e["details"]["errors"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|x| x["message"].as_str())
        .collect();
    assert!(
        messages
            .iter()
            .any(|m| m.contains("margo.pattern") && m.contains("id")),
        "{e}"
    );
    let tags: Value = c
        .get(format!("{}/v2/cnr/margo/broken-app/tags/list", reg.url()))
        .send()
        .unwrap()
        .json()
        .unwrap_or(Value::Null);
    assert!(
        tags["tags"].as_array().is_none_or(|t| t.is_empty()),
        "a refused push was tagged: {tags}"
    );
    // A non-Margo package under an app route is refused by the same admission.
    let body = json!({"release": "1.0.0", "media_type": "kpm", "blob": b64(&tarball_of(&broken))});
    let r = c
        .post(format!("{api}/margo/kpm-here"))
        .json(&body)
        .send()
        .unwrap();
    assert_eq!(r.status(), 422, "{}", r.text().unwrap_or_default());
}

#[test]
fn appr_login_through_the_token_bridge() {
    const RESOURCE: &str = "http://margo-proxy.test";
    let py = python();
    let idp = Idp::start(RESOURCE);
    let reg = Registry::start();
    let auth = format!(
        r#"auth:
  realm: "{{proxy_url}}/token"
  service: margo-it
  issuers:
    - issuer: "{issuer}"
      audiences: ["{RESOURCE}"]
      require_at_jwt_typ: true
  rules:
    - match: [{{claim: groups, values: [wfm]}}]
      grant: {{"cnr/**": [pull]}}
    - match: [{{claim: groups, values: [dev-acme]}}]
      grant: {{"cnr/acme/**": [pull, push, delete]}}
  token_endpoint:
    idp_token_url: "{token_url}"
    resource: "{RESOURCE}"
    idp_scope: registry
"#,
        issuer = idp.get("issuer"),
        token_url = idp.get("token_endpoint"),
    );
    let proxy = Proxy::start(&config(&reg, &auth));
    let run = |user: &str, ns: &str| {
        let out = Command::new(&py)
            .arg(repo_root().join("tests/appr/side_by_side.py"))
            .args(["login", &proxy.url(), user, &format!("{user}-secret"), ns])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "{text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        text
    };
    assert_eq!(run("developer", "acme"), "push ok\npull ok\n");
    // A WFM reads what the developer pushed and may not push.
    let wfm = run("wfm", "acme");
    assert!(wfm.starts_with("push 403 forbidden"), "{wfm}");
    assert!(wfm.ends_with("pull ok\n"), "{wfm}");
    // Without a token: the reference's error shape, with the challenge.
    let r = http()
        .get(format!("{}/cnr/api/v1/packages/acme/app", proxy.url()))
        .send()
        .unwrap();
    assert_eq!(r.status(), 401);
    assert!(r.headers().contains_key("www-authenticate"));
    let e: Value = r.json().unwrap();
    assert_eq!(e["code"], "unauthorized-access");
    // A bad login is refused in that shape too.
    let r = http()
        .post(format!("{}/cnr/api/v1/users/login", proxy.url()))
        .json(&json!({"user": {"username": "developer", "password": "wrong"}}))
        .send()
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.json::<Value>().unwrap()["code"], "unauthorized-access");
}
