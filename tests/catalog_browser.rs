//! The web catalog in a real browser: headless Debian `chromium` driven by the
//! `playwright-core` npm package (tests/browser/catalog.mjs) against the proxy in front
//! of docker-registry, with the examples pushed and one package whose margo.yaml and
//! release notes carry script tags. Screenshots go to target/catalog-screenshots/.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test and tooling code: a panic is a failure report

mod common;

use std::process::Command;

use common::*;

fn push(host: &str, dir: &std::path::Path, reference: &str) {
    let out = Command::new(env!("CARGO_BIN_EXE_margo-proxy"))
        .arg("push")
        .arg(dir)
        .arg(format!("{host}/{reference}"))
        .arg("--plain-http")
        .output()
        .expect("run margo-proxy push");
    assert!(
        out.status.success(),
        "push {reference}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A valid package whose texts try to inject markup.
fn xss_package(dir: &std::path::Path) {
    let yaml = r#"apiVersion: margo.to/v1-alpha1
kind: ApplicationDescription
id: xss
metadata:
  name: "<b>Bold</b> name"
  description: "<script>window.__xss=1</script><img src=x onerror=window.__xss=2>"
  version: 1.0.0
  catalog:
    application:
      releaseNotes: notes.md
      tagline: "<script>window.__xss=3</script>"
    organization:
      - name: "<i>Evil</i> Corp"
deploymentProfiles:
  - type: compose
    id: p
    components:
      - name: web
        properties:
          packageLocation: https://example.com/x.tar.gz
"#;
    std::fs::write(dir.join("margo.yaml"), yaml).expect("write");
    std::fs::write(
        dir.join("notes.md"),
        "# Notes\n\n<script>window.__xss=4</script>\n\n<img src=x onerror=\"window.__xss=5\">\n\n[click](javascript:window.__xss=6)\n",
    )
    .expect("write");
}

#[test]
fn web_catalog_in_headless_chromium() {
    assert!(
        std::path::Path::new("/usr/bin/chromium").exists(),
        "Debian's chromium is needed (apt-get install chromium; .ci/run installs it)"
    );
    let browser_dir = repo_root().join("tests/browser");
    assert!(
        browser_dir.join("node_modules/playwright-core").exists(),
        "playwright-core is needed (scripts/setup runs npm ci in tests/browser)"
    );
    let reg = Registry::start();
    let proxy = Proxy::start(&format!(
        r#"listeners: [{{address: "{{listen}}"}}]
admin: {{address: "{{admin}}"}}
upstreams: [{{name: main, url: "{}"}}]
routes:
  - {{match: "apps/**", upstream: main, kind: app, mode: enforce}}
  - {{match: "**", upstream: main}}
catalog: {{enabled: true}}
"#,
        reg.url()
    ));
    let examples = repo_root().join("examples/packages");
    push(
        &proxy.host(),
        &examples.join("line-monitor"),
        "apps/northwind/line-monitor:1.4.0",
    );
    push(
        &proxy.host(),
        &examples.join("sensor-gateway"),
        "apps/contoso/sensor-gateway:0.9.2",
    );
    let evil = tempfile::tempdir().expect("tempdir");
    xss_package(evil.path());
    push(&proxy.host(), evil.path(), "apps/evil/xss:1.0.0");

    let shots = repo_root().join("target/catalog-screenshots");
    let out = Command::new("node")
        .arg("catalog.mjs")
        .current_dir(&browser_dir)
        .env("CATALOG_URL", proxy.url())
        .env("SCREENSHOTS", &shots)
        .output()
        .expect("run node (Debian nodejs)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    for what in [
        "list shows the demo apps",
        "search 'mqtt' finds only sensor-gateway",
        "app page icon rendered",
        "release notes rendered",
        "form shows the regexMatch violation",
        "valid value clears the violation",
        "description shown as text",
        "no injected script ran",
    ] {
        assert!(stdout.contains(&format!("ok - {what}")), "{what}: {stdout}");
    }
    assert!(shots.join("app.png").exists());
}
